//! Graceful shutdown (docs/protocol.md) in every mode: nothing read is lost,
//! nothing holds the shutdown past its timeout, and the drain delay, the
//! hooks and the report do what they say.

mod util;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use syncrpc::server::{ServingStatus, Timeouts};
use syncrpc::{Code, Context, Service, Status};
use util::{echo_service, say, Load, Mode, RawClient, WAIT};

per_mode!(
    no_request_is_lost_when_the_handle_shuts_down_under_load,
    a_handler_that_ignores_cancellation_does_not_hold_up_the_shutdown,
    an_idle_connection_does_not_hold_up_the_shutdown,
    the_drain_delay_serves_normally_while_health_says_not_serving,
    a_short_drain_delay_is_waited_out,
    hooks_run_newest_first_after_the_last_handler,
    every_trigger_waits_for_the_same_shutdown,
);

/// Room for the steps after the shutdown timeout (final flush, the
/// workers' grace after cancellation, joins) on a loaded machine.
const MARGIN: Duration = Duration::from_secs(5);

/// A thread-name prefix of this test's own, so it can check its threads
/// are gone while other tests run.
fn prefix(test: &str, mode: Mode) -> String {
    let m = match mode {
        Mode::Event => 'E',
        Mode::Thread => 'T',
    };
    format!("{test}{m}")
}

fn timeouts(shutdown: Duration) -> Timeouts {
    Timeouts {
        shutdown,
        ..Timeouts::default()
    }
}

/// `load.Load/Hit`: counts its executions and takes a moment, so that
/// requests are queued and running when the GOAWAY goes out.
fn load_service(executions: Arc<AtomicU64>) -> Service {
    Service::new("load.Load").method("Hit", move |_: &Context, _: ()| {
        executions.fetch_add(1, Ordering::SeqCst);
        thread::sleep(Duration::from_micros(50));
        Ok::<_, Status>(())
    })
}

fn no_request_is_lost_when_the_handle_shuts_down_under_load(mode: Mode) {
    let prefix = prefix("nl", mode);
    let executions = Arc::new(AtomicU64::new(0));
    let timeout = Duration::from_secs(5);
    let server = util::builder(mode)
        .thread_name(prefix.as_str())
        .timeouts(timeouts(timeout))
        .service(load_service(executions.clone()))
        .bind("127.0.0.1:0")
        .unwrap();
    let load = Load::start(server.local_addr(), 4, 64, "/load.Load/Hit", 1000);
    load.midway.recv_timeout(WAIT).expect("load under way");
    let stop = server.shutdown_handle();
    let started = Instant::now();
    stop.trigger();
    let report = server.run();
    let took = started.elapsed();
    let outcome = load.finish();

    let (ok, unavailable) = outcome.assert_no_loss();
    assert_eq!(ok + unavailable, outcome.sent());
    assert_eq!(ok, executions.load(Ordering::SeqCst), "ran = answered OK");
    assert_eq!(unavailable, report.refused, "{report:?}");
    assert!(report.drained <= ok, "{report:?}");
    assert!(report.is_clean(), "{report:?}");
    assert!(!report.timed_out, "the clients closed: {report:?}");
    assert!(took < timeout + MARGIN, "took {took:?}");
    util::no_threads_left(&prefix);
}

fn a_handler_that_ignores_cancellation_does_not_hold_up_the_shutdown(mode: Mode) {
    let prefix = prefix("ig", mode);
    let (started_tx, started) = crossbeam_channel::unbounded();
    let (release, release_rx) = crossbeam_channel::bounded::<()>(0);
    let svc = Service::new("stubborn.Stubborn").method("Run", move |_: &Context, _: ()| {
        started_tx.send(()).unwrap();
        // Ignores its context: only the test lets it go.
        let _ = release_rx.recv_timeout(3 * WAIT);
        Ok::<_, Status>(())
    });
    let timeout = Duration::from_millis(300);
    let server = util::builder(mode)
        .workers(1)
        .thread_name(prefix.as_str())
        .timeouts(timeouts(timeout))
        .service(svc)
        .bind("127.0.0.1:0")
        .unwrap();
    let mut c = RawClient::connect(server.local_addr());
    c.call(1, "/stubborn.Stubborn/Run", &());
    started.recv_timeout(WAIT).unwrap();
    let began = Instant::now();
    // Would wait for the handler (30 s) without the cut-off.
    let report = server.shutdown();
    let took = began.elapsed();
    assert!(took < timeout + MARGIN, "took {took:?}");
    assert_eq!(report.cancelled, 1, "{report:?}");
    assert_eq!(report.stuck_threads, [format!("{prefix}-worker-0")]);
    assert_eq!(report.exit_code(), 1);
    assert_eq!(c.goaway().0, Code::UNAVAILABLE);
    c.response().expect_code(Code::CANCELLED, "shutting down");
    c.expect_closed();
    release.send(()).unwrap();
    util::no_threads_left(&prefix);
}

fn an_idle_connection_does_not_hold_up_the_shutdown(mode: Mode) {
    let prefix = prefix("id", mode);
    let timeout = Duration::from_millis(300);
    let server = util::builder(mode)
        .thread_name(prefix.as_str())
        .timeouts(timeouts(timeout)) // idle: the default 60 s
        .service(echo_service())
        .bind("127.0.0.1:0")
        .unwrap();
    let mut c = RawClient::connect(server.local_addr());
    c.call(1, "/echo.Echo/Say", &say("then nothing"));
    assert_eq!(c.response().code, Code::OK);
    let began = Instant::now();
    // In thread mode the connection's thread sits in `read`: without the
    // wake-up it would stay there until the 60 s idle timeout.
    let report = server.shutdown();
    let took = began.elapsed();
    assert!(took < timeout + MARGIN, "took {took:?}");
    assert!(report.timed_out, "the client never closed: {report:?}");
    assert!(report.is_clean(), "{report:?}");
    assert_eq!(c.goaway().0, Code::UNAVAILABLE);
    c.expect_closed();
    util::no_threads_left(&prefix);
}

#[track_caller]
fn check_health(c: &mut RawClient, id: u32) -> ServingStatus {
    c.call(
        id,
        syncrpc::server::HEALTH_CHECK_METHOD,
        &syncrpc::server::HealthCheckRequest::server(),
    );
    c.response()
        .decode::<syncrpc::server::HealthCheckResponse>()
        .status
}

fn the_drain_delay_serves_normally_while_health_says_not_serving(mode: Mode) {
    let server = util::builder(mode)
        .timeouts(Timeouts {
            drain_delay: 3 * WAIT,
            ..Timeouts::default()
        })
        .service(echo_service())
        .bind("127.0.0.1:0")
        .unwrap();
    let mut c = RawClient::connect(server.local_addr());
    assert_eq!(check_health(&mut c, 1), ServingStatus::Serving);
    let stop = server.shutdown_handle();
    stop.trigger();
    let health = server.health().clone();
    util::eventually("health to say NOT_SERVING", || !health.is_serving());
    assert_eq!(check_health(&mut c, 2), ServingStatus::NotServing);
    // Everything else goes on: old connections, new ones, no GOAWAY.
    c.call(3, "/echo.Echo/Say", &say("still served"));
    assert_eq!(c.response().code, Code::OK);
    let mut late = RawClient::connect(server.local_addr());
    late.call(1, "/echo.Echo/Say", &say("new connection"));
    assert_eq!(late.response().code, Code::OK);
    assert!(stop.report().is_none(), "still in the drain delay");
    // The delay is long; a forced stop cuts it short.
    stop.force();
    assert_eq!(c.goaway().0, Code::UNAVAILABLE);
    let report = server.run();
    assert!(report.forced, "{report:?}");
    assert_eq!(report.exit_code(), 1);
    assert!(report.elapsed < WAIT, "{report:?}");
}

fn a_short_drain_delay_is_waited_out(mode: Mode) {
    let delay = Duration::from_millis(200);
    let server = util::builder(mode)
        .timeouts(Timeouts {
            drain_delay: delay,
            ..Timeouts::default()
        })
        .service(echo_service())
        .bind("127.0.0.1:0")
        .unwrap();
    let report = server.shutdown();
    assert!(report.elapsed >= delay, "{report:?}");
    assert!(report.is_clean(), "{report:?}");
}

fn hooks_run_newest_first_after_the_last_handler(mode: Mode) {
    let log = Arc::new(Mutex::new(Vec::<(String, Duration)>::new()));
    let (started_tx, started) = crossbeam_channel::unbounded();
    let (release, release_rx) = crossbeam_channel::unbounded::<()>();
    let l = log.clone();
    let svc = Service::new("slow.Slow").method("Run", move |_: &Context, _: ()| {
        started_tx.send(()).unwrap();
        release_rx.recv_timeout(WAIT).unwrap();
        l.lock().unwrap().push(("handler".into(), Duration::ZERO));
        Ok::<_, Status>(())
    });
    let hook = |name: &'static str| {
        let log = log.clone();
        move |left: Duration| log.lock().unwrap().push((name.into(), left))
    };
    let budget = Duration::from_secs(5);
    let server = util::builder(mode)
        .timeouts(Timeouts {
            hooks: budget,
            ..timeouts(WAIT)
        })
        .on_shutdown(hook("registered first"))
        .on_shutdown(|_| panic!("a broken hook"))
        .on_shutdown(hook("registered last"))
        .service(svc)
        .bind("127.0.0.1:0")
        .unwrap();
    let mut c = RawClient::connect(server.local_addr());
    c.call(1, "/slow.Slow/Run", &());
    started.recv_timeout(WAIT).unwrap();
    let handle = server.handle();
    let stopper = thread::spawn(move || handle.shutdown());
    assert_eq!(c.goaway().0, Code::UNAVAILABLE);
    release.send(()).unwrap();
    assert_eq!(c.response().code, Code::OK);
    drop(c);
    let report = stopper.join().unwrap();
    assert_eq!((report.hooks_run, report.hooks_panicked), (2, 1));
    assert_eq!(report.exit_code(), 1, "a hook panicked: {report:?}");
    let log = log.lock().unwrap().clone();
    let names: Vec<&str> = log.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(names, ["handler", "registered last", "registered first"]);
    // Each hook is told the time left, which only shrinks.
    assert!(log[1].1 <= budget && log[2].1 <= log[1].1, "{log:?}");
    drop(server);
}

fn every_trigger_waits_for_the_same_shutdown(mode: Mode) {
    let hooks = Arc::new(AtomicU64::new(0));
    let h = hooks.clone();
    let server = util::builder(mode)
        .on_shutdown(move |_| {
            h.fetch_add(1, Ordering::SeqCst);
        })
        .service(echo_service())
        .bind("127.0.0.1:0")
        .unwrap();
    let handle = server.handle();
    let stop = server.shutdown_handle();
    let mut callers = Vec::new();
    for i in 0..4 {
        let (handle, stop) = (handle.clone(), stop.clone());
        callers.push(thread::spawn(move || match i {
            0 => handle.shutdown(),
            1 => handle.shutdown_timeout(Duration::from_secs(1)),
            2 => stop.shutdown(),
            _ => stop.wait(),
        }));
    }
    let report = server.run();
    for c in callers {
        assert_eq!(c.join().unwrap(), report);
    }
    assert!(handle.is_shutting_down());
    assert_eq!(hooks.load(Ordering::SeqCst), 1);
    assert_eq!(report.hooks_run, 1);
    // A trigger after the end changes nothing.
    assert_eq!(stop.shutdown(), report);
}

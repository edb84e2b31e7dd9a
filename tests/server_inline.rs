//! Inline handlers: each handler runs on the thread that read its request,
//! the connection's thread in thread mode, the event loop in event mode.

mod util;

use std::time::Duration;

use syncrpc::codec::{Flags, FrameType, RequestId, RequestMeta};
use syncrpc::server::Mode;
use syncrpc::{CancelReason, Code, Context, Service, Status};
use util::{echo_service, encode, gate_service, say, RawClient, Say, WAIT};

fn inline(mode: Mode) -> syncrpc::ServerBuilder {
    util::init_logging();
    util::builder(mode).inline_handlers(true)
}

fn whoami() -> Service {
    Service::new("who.Who").method("Am", |_: &Context, _: ()| {
        Ok::<_, Status>(std::thread::current().name().unwrap_or("").to_owned())
    })
}

#[test]
fn inline_handlers_run_on_the_reading_thread_without_workers() {
    for (mode, prefix, reader) in [
        (Mode::Thread, "inlt", "inlt-conn-"),
        (Mode::Event, "inle", "inle-loop-"),
    ] {
        let server = inline(mode)
            .thread_name(prefix)
            .service(whoami())
            .bind("127.0.0.1:0")
            .unwrap();
        let mut c = RawClient::connect(server.local_addr());
        c.call(1, "/who.Who/Am", &());
        let name = c.response().decode::<String>();
        assert!(name.starts_with(reader), "{mode:?}: {name}");
        assert!(!name.ends_with("-w"), "{mode:?}: {name}");
        assert_eq!(server.stats().pool.workers, 0);
        assert!(util::threads_named(&format!("{prefix}-worker")).is_empty());
        drop(c);
        let report = server.shutdown();
        assert!(report.is_clean(), "{mode:?}: {report:?}");
        util::no_threads_left(&format!("{prefix}-"));
    }
}

#[test]
fn an_event_loop_answers_a_pipelined_burst_in_order_and_survives_a_panic() {
    let (gate, _g) = gate_service();
    let server = inline(Mode::Event)
        .service(echo_service())
        .service(gate)
        .bind("127.0.0.1:0")
        .unwrap();
    let mut c = RawClient::connect(server.local_addr());
    // 200 requests in one write, one of them panicking, and a PING.
    for id in 0..200u32 {
        if id == 100 {
            c.push_request(
                id,
                &RequestMeta::new("/gate.Gate/Panic"),
                Flags::default(),
                &encode(&()),
            );
        } else {
            let body = encode(&say(&format!("m{id}")));
            c.push_request(
                id,
                &RequestMeta::new("/echo.Echo/Say"),
                Flags::default(),
                &body,
            );
        }
    }
    c.flush();
    c.ping(7);
    for id in 0..200u32 {
        let r = c.response();
        assert_eq!(r.id, id, "answered out of order");
        if id == 100 {
            r.expect_code(Code::INTERNAL, "panicked");
        } else {
            assert_eq!(r.code, Code::OK, "{r:?}");
            assert_eq!(r.decode::<Say>().text, format!("m{id}"));
        }
    }
    let pong = c.frame();
    assert_eq!(pong.frame_type(), FrameType::Pong);
    assert_eq!(pong.request_id(), RequestId(7));
    // Another connection is served as before.
    let mut d = RawClient::connect(server.local_addr());
    d.call(1, "/echo.Echo/Say", &say("after"));
    assert_eq!(d.response().decode::<Say>().text, "after");
    drop((c, d));
    assert!(server.shutdown().is_clean());
}

/// Calls a handler that waits for its context with a 100 ms deadline, and
/// checks the answer and the reason the handler saw.
fn outlive_the_deadline(c: &mut RawClient, g: &util::Gate) {
    let meta = RequestMeta {
        timeout_ms: 100,
        ..RequestMeta::new("/gate.Gate/Wait")
    };
    c.call_meta(1, &meta, Flags::default(), &encode(&()));
    g.wait_started(1);
    c.response()
        .expect_code(Code::DEADLINE_EXCEEDED, "did not finish within 100 ms");
    assert_eq!(
        g.cancelled.recv_timeout(WAIT).unwrap(),
        Some(CancelReason::DeadlineExceeded)
    );
}

#[test]
fn an_event_loop_answers_a_late_inline_handler_when_it_returns() {
    let (gate, g) = gate_service();
    let server = inline(Mode::Event)
        .service(gate)
        .bind("127.0.0.1:0")
        .unwrap();
    let mut c = RawClient::connect(server.local_addr());
    // The handler waits for its context, which its deadline cancels; the
    // loop answers once the handler is back.
    outlive_the_deadline(&mut c, &g);
    c.call(2, "/gate.Gate/Count", &());
    assert_eq!(c.response().code, Code::OK);
    assert_eq!(g.calls(), 1);
    drop(c);
    assert!(server.shutdown().is_clean());
}

#[test]
fn a_connection_thread_meets_its_inline_handlers_deadlines_and_the_shutdown() {
    let (gate, g) = gate_service();
    let server = inline(Mode::Thread)
        .service(gate)
        .bind("127.0.0.1:0")
        .unwrap();
    let mut c = RawClient::connect(server.local_addr());
    // The deadline fires on the writing thread while the reading thread
    // is inside the handler.
    outlive_the_deadline(&mut c, &g);
    // A handler still running when the shutdown timeout runs out is
    // cancelled through its context.
    c.call(2, "/gate.Gate/Wait", &());
    g.wait_started(1);
    let report = server.handle().shutdown_timeout(Duration::from_millis(200));
    assert_eq!(c.goaway().0, Code::UNAVAILABLE);
    c.response().expect_code(Code::CANCELLED, "shutting down");
    assert_eq!(
        g.cancelled.recv_timeout(WAIT).unwrap(),
        Some(CancelReason::Shutdown)
    );
    assert_eq!(report.cancelled, 1, "{report:?}");
    assert!(report.stuck_threads.is_empty(), "{report:?}");
}

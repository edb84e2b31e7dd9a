//! What only thread mode has: its threads, inline handlers, and a
//! connection whose thread cannot be started.

mod util;

use std::time::Duration;

use syncrpc::codec::{Flags, RequestMeta};
use syncrpc::server::{Mode, ServerConfig};
use syncrpc::{CancelReason, Code, Context, ErrorKind, Server, Service, Status};
use util::{echo_service, encode, gate_service, say, RawClient, WAIT};

fn thread_mode() -> syncrpc::ServerBuilder {
    util::init_logging();
    util::builder(Mode::Thread)
}

fn whoami() -> Service {
    Service::new("who.Who").method("Am", |_: &Context, _: ()| {
        Ok::<_, Status>(std::thread::current().name().unwrap_or("").to_owned())
    })
}

#[test]
fn each_connection_has_a_reading_and_a_writing_thread_and_both_end() {
    let server = thread_mode()
        .thread_name("two")
        .service(echo_service())
        .bind("127.0.0.1:0")
        .unwrap();
    let mut clients: Vec<RawClient> = (0..3)
        .map(|_| RawClient::connect(server.local_addr()))
        .collect();
    for c in clients.iter_mut() {
        c.call(1, "/echo.Echo/Say", &say("hi"));
        assert_eq!(c.response().code, Code::OK);
    }
    assert_eq!(util::threads_named("two-accept").len(), 1);
    util::eventually("two threads per connection", || {
        util::threads_named("two-conn-").len() == 6
    });
    // A client that leaves takes its two threads with it.
    drop(clients.pop());
    util::eventually("the leaving connection's threads to end", || {
        util::threads_named("two-conn-").len() == 4
    });
    drop(clients);
    let report = server.shutdown();
    assert!(report.is_clean() && !report.timed_out, "{report:?}");
    util::no_threads_left("two-");
}

#[test]
fn inline_handlers_run_on_the_connection_thread_without_workers() {
    let server = thread_mode()
        .thread_name("inl")
        .inline_handlers(true)
        .service(whoami())
        .bind("127.0.0.1:0")
        .unwrap();
    let mut c = RawClient::connect(server.local_addr());
    c.call(1, "/who.Who/Am", &());
    let name = c.response().decode::<String>();
    assert!(name.starts_with("inl-conn-"), "{name}");
    assert!(!name.ends_with("-w"), "{name}");
    assert_eq!(server.stats().pool.workers, 0);
    assert!(util::threads_named("inl-worker").is_empty());
}

#[test]
fn inline_handlers_still_meet_their_deadlines_and_the_shutdown() {
    let (gate, g) = gate_service();
    let server = thread_mode()
        .inline_handlers(true)
        .service(gate)
        .bind("127.0.0.1:0")
        .unwrap();
    let mut c = RawClient::connect(server.local_addr());
    // The deadline fires on the writing thread while the reading thread
    // is inside the handler.
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

#[test]
fn a_connection_whose_thread_cannot_start_gets_goaway_resource_exhausted() {
    // No machine can map a stack this large: every spawn fails.
    let server = Server::builder()
        .config(ServerConfig {
            mode: Mode::Thread,
            workers: 1,
            connection_stack_size: Some(1 << 50),
            ..ServerConfig::default()
        })
        .thread_name("nost")
        .service(echo_service())
        .bind("127.0.0.1:0")
        .unwrap();
    for _ in 0..3 {
        let mut c = RawClient::connect(server.local_addr());
        let (code, message) = c.goaway();
        assert_eq!(code, Code::RESOURCE_EXHAUSTED);
        assert!(
            message.contains("cannot start a thread for the connection"),
            "{message}"
        );
        c.expect_closed();
    }
    assert_eq!(server.stats().connections, 0);
    let report = server.shutdown();
    assert!(report.is_clean(), "{report:?}");
    util::no_threads_left("nost-");
}

#[test]
fn inline_handlers_need_thread_mode() {
    let err = Server::builder()
        .inline_handlers(true)
        .bind("127.0.0.1:0")
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Usage);
    assert!(
        err.to_string().contains("inline handlers need thread mode"),
        "{err}"
    );
}

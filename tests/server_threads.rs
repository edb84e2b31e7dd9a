//! What only thread mode has: its threads, and a connection whose thread
//! cannot be started.

mod util;

use syncrpc::server::{Mode, ServerConfig};
use syncrpc::{Code, Server};
use util::{echo_service, say, RawClient};

fn thread_mode() -> syncrpc::ServerBuilder {
    util::init_logging();
    util::builder(Mode::Thread)
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

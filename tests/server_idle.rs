//! The idle timeout counts from the last answer written, not from the last
//! read: a call that runs longer than the idle timeout leaves its
//! connection a whole idle period after its answer (docs/protocol.md,
//! "Limits"), in both wire protocols and every server mode.

mod util;

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::thread;
use std::time::{Duration, Instant};

use syncrpc::codec::{Flags, RequestMeta};
use syncrpc::server::Timeouts;
use syncrpc::{Code, Context, Server, Service, Status};
use util::{encode, Mode, RawClient, WAIT};

per_mode!(
    native_idle_period_starts_at_the_answer,
    native_idle_period_starts_when_a_oneway_call_ends,
    msgpack_rpc_idle_period_starts_at_the_answer,
    msgpack_rpc_idle_period_starts_when_a_notification_ends,
);

const IDLE: Duration = Duration::from_millis(500);
/// Three idle periods: without the rule, the connection would be idle by
/// the read's clock the moment the call ends.
const CALL: Duration = Duration::from_millis(1500);

/// A server with a 500 ms idle timeout and `slow.Slow`: `Sleep` answers
/// after 1,500 ms; `SleepThenSay`, one-way, sleeps as long and then says
/// on the returned channel that it has returned.
fn server(mode: Mode) -> (Server, crossbeam_channel::Receiver<Instant>) {
    let (done_tx, done) = crossbeam_channel::unbounded();
    let slow = Service::new("slow.Slow")
        .method("Sleep", |_: &Context, _: ()| {
            thread::sleep(CALL);
            Ok::<_, Status>("slept")
        })
        .method("SleepThenSay", move |_: &Context, _: ()| {
            thread::sleep(CALL);
            // A moment before the server counts the call as ended: the
            // interval measured from here can only come out longer.
            done_tx.send(Instant::now()).unwrap();
            Ok::<_, Status>(())
        });
    let server = util::builder(mode)
        .timeouts(Timeouts {
            idle: IDLE,
            shutdown: Duration::from_secs(2),
            ..Timeouts::default()
        })
        .service(slow)
        .bind("127.0.0.1:0")
        .unwrap();
    (server, done)
}

/// Asserts the connection ended (by `what`) no sooner than the idle
/// timeout after `since`.
#[track_caller]
fn assert_a_whole_idle_period(since: Instant, what: &str) {
    let after = since.elapsed();
    assert!(
        after >= IDLE,
        "{what} came {after:?} after the call ended, sooner than the idle timeout {IDLE:?}"
    );
}

fn native_idle_period_starts_at_the_answer(mode: Mode) {
    let (server, _) = server(mode);
    let mut c = RawClient::connect(server.local_addr());
    c.call(1, "/slow.Slow/Sleep", &());
    let r = c.response();
    let answered = Instant::now();
    assert_eq!(r.decode::<String>(), "slept");
    // The read timeout is WAIT: the GOAWAY must come, and within it.
    let (code, message) = c.goaway();
    assert_a_whole_idle_period(answered, "GOAWAY");
    assert_eq!(code, Code::UNAVAILABLE);
    assert!(message.contains("idle"), "{message}");
    c.expect_closed();
    server.shutdown();
}

fn native_idle_period_starts_when_a_oneway_call_ends(mode: Mode) {
    let (server, done) = server(mode);
    let mut c = RawClient::connect(server.local_addr());
    c.push_oneway(
        1,
        &RequestMeta::new("/slow.Slow/SleepThenSay"),
        Flags::default(),
        &encode(&()),
    );
    c.flush();
    let ended = done.recv_timeout(WAIT).expect("the one-way call to end");
    let (code, _) = c.goaway();
    assert_a_whole_idle_period(ended, "GOAWAY");
    assert_eq!(code, Code::UNAVAILABLE);
    c.expect_closed();
    server.shutdown();
}

/// A MessagePack-RPC connection, which has no GOAWAY: the idle timeout
/// shows as the server closing it.
fn msgpack_rpc_connect(addr: SocketAddr) -> TcpStream {
    let stream = TcpStream::connect(addr).expect("connect");
    stream.set_read_timeout(Some(WAIT)).unwrap();
    stream.set_nodelay(true).unwrap();
    stream
}

/// Reads until the server closes the connection; fails on any byte or a
/// read timeout.
#[track_caller]
fn expect_closed(mut stream: &TcpStream) {
    let mut byte = [0u8; 1];
    match stream.read(&mut byte) {
        Ok(0) => {}
        Ok(_) => panic!("expected the connection to close, got {byte:02x?}"),
        Err(e) => assert!(
            matches!(
                e.kind(),
                io::ErrorKind::ConnectionReset | io::ErrorKind::ConnectionAborted
            ),
            "expected the connection to close, got {e}"
        ),
    }
}

fn msgpack_rpc_idle_period_starts_at_the_answer(mode: Mode) {
    let (server, _) = server(mode);
    let mut c = msgpack_rpc_connect(server.local_addr());
    let request = rmp_serde::to_vec(&(0u8, 1u32, "slow.Slow.Sleep", ((),))).unwrap();
    c.write_all(&request).unwrap();
    type Answer = (u8, u32, Option<(u32, String)>, Option<String>);
    let answer: Answer = rmp_serde::from_read(&mut c).expect("an answer");
    let answered = Instant::now();
    assert_eq!(answer, (1, 1, None, Some("slept".to_owned())));
    expect_closed(&c);
    assert_a_whole_idle_period(answered, "the close");
    server.shutdown();
}

fn msgpack_rpc_idle_period_starts_when_a_notification_ends(mode: Mode) {
    let (server, done) = server(mode);
    let mut c = msgpack_rpc_connect(server.local_addr());
    let notification = rmp_serde::to_vec(&(2u8, "slow.Slow.SleepThenSay", ((),))).unwrap();
    c.write_all(&notification).unwrap();
    let ended = done.recv_timeout(WAIT).expect("the notification to end");
    expect_closed(&c);
    assert_a_whole_idle_period(ended, "the close");
    server.shutdown();
}

//! Thread mode's short paths: a lone request of a quick method runs on its
//! connection's thread (and so do the requests of a read while every
//! worker is busy), and answers are written by the thread that makes
//! them. Each test checks that a guarantee of the long path (reader, worker,
//! writer) still holds on the short one.

mod util;

use std::io::Read;
use std::thread;
use std::time::{Duration, Instant};

use bytes::Bytes;
use crossbeam_channel::{Receiver, Sender};
use syncrpc::codec::{Flags, FrameType, RequestMeta};
use syncrpc::server::Mode;
use syncrpc::{Code, Context, Service, Status};
use util::{encode, gate_service, RawClient, WAIT};

/// What `lone.Lone/Step` does, by its body.
const QUICK: u32 = 0;
const BLOCK: u32 = 1;
const UNTIL_CANCELLED: u32 = 2;

/// `lone.Lone/Step`: answers the name of the thread it ran on; `BLOCK`
/// first says it started (with that name) and waits for a release,
/// `UNTIL_CANCELLED` waits for its context to be cancelled. One method,
/// so that the slow calls come after quick ones of the same method.
fn lone_service() -> (Service, Receiver<String>, Sender<()>) {
    let (started_tx, started) = crossbeam_channel::unbounded();
    let (release, release_rx) = crossbeam_channel::unbounded::<()>();
    let svc = Service::new("lone.Lone").method("Step", move |ctx: &Context, what: u32| {
        let me = thread::current().name().unwrap_or("").to_owned();
        match what {
            BLOCK => {
                started_tx.send(me.clone()).unwrap();
                release_rx
                    .recv_timeout(WAIT)
                    .map_err(|_| Status::aborted("never released"))?;
            }
            UNTIL_CANCELLED => {
                started_tx.send(me.clone()).unwrap();
                ctx.wait_cancelled(WAIT);
            }
            _ => {}
        }
        Ok::<_, Status>(me)
    });
    (svc, started, release)
}

fn thread_mode(prefix: &str) -> syncrpc::ServerBuilder {
    util::init_logging();
    util::builder(Mode::Thread).workers(1).thread_name(prefix)
}

fn step(c: &mut RawClient, id: u32, what: u32) {
    c.call(id, "/lone.Lone/Step", &what);
}

/// Quick calls, one at a time, until they run on the connection's thread
/// (the method's pace is known after the first); returns that thread's
/// name. On a loaded machine a quick call can be timed long (the thread
/// was descheduled while it ran) and send the next ones to the worker for
/// a while, so it takes the first of a bounded number that runs there.
#[track_caller]
fn warm_up(c: &mut RawClient, prefix: &str) -> String {
    let mut name = String::new();
    for id in 1..=200 {
        step(c, id, QUICK);
        name = c.response().decode::<String>();
        if id >= 3 && name.starts_with(&format!("{prefix}-conn-")) && !name.ends_with("-w") {
            return name;
        }
    }
    panic!("a lone quick request runs on its connection's thread, not on {name}")
}

/// Reads frames until the PONG for `token`; returns the responses read
/// before it.
#[track_caller]
fn until_pong(c: &mut RawClient, token: u32) -> Vec<util::Resp> {
    let mut before = Vec::new();
    loop {
        let f = c.frame();
        match f.frame_type() {
            FrameType::Pong if f.request_id().0 == token => return before,
            FrameType::Response => before.push(util::to_resp(&f)),
            other => panic!("unexpected {other:?} frame"),
        }
    }
}

#[test]
fn a_slow_call_of_a_quick_method_holds_up_nothing_on_its_connection() {
    let (svc, started, release) = lone_service();
    let server = thread_mode("slowq")
        .service(svc)
        .bind("127.0.0.1:0")
        .unwrap();
    let mut c = RawClient::connect(server.local_addr());
    let conn_thread = warm_up(&mut c, "slowq");

    // The same method, quick until now, blocks this time, on the
    // connection's thread; its deadline is 300 ms.
    let meta = RequestMeta {
        timeout_ms: 300,
        ..RequestMeta::new("/lone.Lone/Step")
    };
    let sent = Instant::now();
    c.call_meta(100, &meta, Flags::default(), &encode(&BLOCK));
    assert_eq!(started.recv_timeout(WAIT).unwrap(), conn_thread);

    // The connection is still read: a PING and another call are answered
    // while the handler blocks, and the deadline fires on time.
    c.ping(7);
    step(&mut c, 101, QUICK);
    let mut answers = until_pong(&mut c, 7);
    while answers.len() < 2 {
        answers.push(c.response());
    }
    answers.sort_by_key(|r| r.id);
    assert_eq!(answers[0].id, 100);
    answers[0].expect_code(Code::DEADLINE_EXCEEDED, "did not finish within 300 ms");
    assert!(
        sent.elapsed() < Duration::from_secs(3),
        "{:?}",
        sent.elapsed()
    );
    assert_eq!(answers[1].id, 101);
    // That call went to the worker: the writing thread, reading in the
    // connection thread's place, runs nothing itself.
    let name = answers[1].decode::<String>();
    assert!(name.starts_with("slowq-worker"), "{name}");

    // The handler's late result is dropped: the next frame is the PONG.
    release.send(()).unwrap();
    c.ping(8);
    assert!(until_pong(&mut c, 8).is_empty());
    // The long call made the method slow: its next call, alone, goes to
    // the worker too.
    step(&mut c, 102, QUICK);
    let name = c.response().decode::<String>();
    assert!(name.starts_with("slowq-worker"), "{name}");
    drop(c);
    assert!(server.shutdown().is_clean());
}

#[test]
fn a_cancel_read_while_the_connection_thread_runs_the_call_drops_its_answer() {
    let (svc, started, _release) = lone_service();
    let server = thread_mode("cancq")
        .service(svc)
        .bind("127.0.0.1:0")
        .unwrap();
    let mut c = RawClient::connect(server.local_addr());
    let conn_thread = warm_up(&mut c, "cancq");

    // The handler runs on the connection's thread and returns only once
    // cancelled: the CANCEL must be read by another thread, and the
    // answer the handler then writes itself must not go out.
    step(&mut c, 100, UNTIL_CANCELLED);
    assert_eq!(started.recv_timeout(WAIT).unwrap(), conn_thread);
    c.cancel(100);
    c.ping(7);
    assert!(until_pong(&mut c, 7).is_empty());
    c.ping(8);
    assert!(
        until_pong(&mut c, 8).is_empty(),
        "no answer to a cancelled call"
    );

    // Cancels racing quick calls the connection thread runs and writes:
    // each call is answered once or not at all, and the stream stays whole.
    for id in 1000..1200u32 {
        c.push_request(
            id,
            &RequestMeta::new("/lone.Lone/Step"),
            Flags::default(),
            &encode(&QUICK),
        );
        c.flush();
        c.cancel(id);
        c.ping(id);
        let answers = until_pong(&mut c, id);
        assert!(answers.len() <= 1, "{answers:?}");
        assert!(answers.iter().all(|r| r.id == id && r.code == Code::OK));
    }
    drop(c);
    assert!(server.shutdown().is_clean());
}

#[test]
fn answers_made_while_the_socket_is_full_go_out_whole_once_the_client_reads() {
    let (gate, _g) = gate_service();
    let server = thread_mode("stall")
        .service(gate)
        .bind("127.0.0.1:0")
        .unwrap();
    let mut c = RawClient::connect(server.local_addr());
    // 64 answers of 256 KiB: far more than the socket buffers hold. The
    // worker's writes stop on a full buffer; the writing thread must take
    // over while the worker goes on appending.
    const N: u32 = 64;
    const SIZE: u32 = 256 * 1024;
    let flags = Flags::new(
        syncrpc::codec::Compression::None,
        syncrpc::codec::Encoding::Raw,
    );
    for id in 1..=N {
        c.push_request(
            id,
            &RequestMeta::new("/gate.Gate/Big"),
            flags,
            &SIZE.to_be_bytes(),
        );
    }
    c.flush();
    // Not reading until the server has answered everything it can.
    util::eventually("every request to be answered", || {
        server.stats().requests_in_flight == 0
    });
    let mut seen = vec![false; N as usize + 1];
    for _ in 1..=N {
        let r = c.response();
        assert_eq!(r.code, Code::OK, "{r:?}");
        assert_eq!(r.body.len(), SIZE as usize);
        assert!(
            !std::mem::replace(&mut seen[r.id as usize], true),
            "{} twice",
            r.id
        );
    }
    c.ping(1);
    assert!(until_pong(&mut c, 1).is_empty());
    drop(c);
    assert!(server.shutdown().is_clean());
}

#[test]
fn a_shutdown_while_an_answer_is_half_written_sends_it_whole_then_goaway() {
    let (gate, g) = gate_service();
    let server = thread_mode("halfw")
        .workers(2)
        .service(gate)
        .bind("127.0.0.1:0")
        .unwrap();
    let mut c = RawClient::connect(server.local_addr());
    // Request 2 runs until cancelled, so the shutdown has it in flight.
    c.call(2, "/gate.Gate/Wait", &());
    g.wait_started(1);
    // An answer of 16 MiB: the worker writes part of it, the writing
    // thread blocks on the rest while the client does not read.
    const SIZE: u32 = 16 * 1024 * 1024;
    let flags = Flags::new(
        syncrpc::codec::Compression::None,
        syncrpc::codec::Encoding::Raw,
    );
    c.call_meta(
        1,
        &RequestMeta::new("/gate.Gate/Big"),
        flags,
        &SIZE.to_be_bytes(),
    );
    // Its first bytes arrive: it is made, and the rest waits for room.
    c.stream.peek(&mut [0u8; 1]).unwrap();
    assert_eq!(server.stats().requests_in_flight, 1);
    // The shutdown's GOAWAY is made while the answer is half written, and
    // its timeout ends request 2.
    let handle = server.handle();
    let stopper = thread::spawn(move || handle.shutdown_timeout(Duration::from_millis(300)));
    let watcher = server.handle();
    util::eventually("the shutdown to begin", || watcher.is_shutting_down());

    let big = c.response();
    assert_eq!((big.id, big.code), (1, Code::OK));
    assert_eq!(big.body, Bytes::from(vec![7u8; SIZE as usize]));
    let (code, _) = c.goaway();
    assert_eq!(code, Code::UNAVAILABLE);
    let r = c.response();
    assert_eq!(r.id, 2);
    assert_eq!(r.code, Code::CANCELLED, "{r:?}");
    // Exactly one answer each: nothing follows but the end.
    let mut rest = Vec::new();
    let _ = c.stream.read_to_end(&mut rest);
    assert!(rest.is_empty(), "{} more bytes", rest.len());
    let report = stopper.join().unwrap();
    assert_eq!(report.cancelled, 1, "{report:?}");
    drop(server);
}

/// Holds the only worker: a BLOCK call and a quick one, in one write from
/// a connection of their own, so that neither is a lone request (which
/// would run on that connection's thread); the quick one waits in the
/// queue, so the workers are behind. Returns the connection, whose two
/// answers come once `release` is sent.
fn block_the_worker(addr: std::net::SocketAddr, started: &Receiver<String>) -> RawClient {
    let mut blocker = RawClient::connect(addr);
    let meta = RequestMeta::new("/lone.Lone/Step");
    blocker.push_request(1, &meta, Flags::default(), &encode(&BLOCK));
    blocker.push_request(2, &meta, Flags::default(), &encode(&QUICK));
    blocker.flush();
    let on = started.recv_timeout(WAIT).unwrap();
    assert!(on.contains("-worker"), "{on}");
    // The quick call has waited for the worker longer than makes the
    // workers count as behind (1 ms) once this returns.
    thread::sleep(Duration::from_millis(2));
    blocker
}

fn release_the_worker(blocker: &mut RawClient, release: &Sender<()>) {
    release.send(()).unwrap();
    for _ in 0..2 {
        let name = blocker.response().decode::<String>();
        assert!(name.contains("-worker"), "{name}");
    }
}

#[test]
fn pipelined_quick_requests_run_on_the_connection_thread_while_the_workers_are_behind() {
    let (svc, started, release) = lone_service();
    let server = thread_mode("pipeq")
        .service(svc)
        .bind("127.0.0.1:0")
        .unwrap();
    let mut c = RawClient::connect(server.local_addr());
    for attempt in 0..5 {
        let conn_thread = warm_up(&mut c, "pipeq");
        let mut blocker = block_the_worker(server.local_addr(), &started);
        // Four quick calls in one write, with the workers behind: the
        // connection's thread runs them itself, and writes their answers
        // together once done with them; a PING sent after the first
        // answer is answered after all of them.
        let meta = RequestMeta {
            timeout_ms: 2000,
            ..RequestMeta::new("/lone.Lone/Step")
        };
        for id in 10..14 {
            c.push_request(id, &meta, Flags::default(), &encode(&QUICK));
        }
        c.flush();
        let first = c.response();
        if first.code != Code::OK {
            // Timed slow on a loaded machine: they waited for the worker.
            release_the_worker(&mut blocker, &release);
            let rest: Vec<Code> = (0..3).map(|_| c.response().code).collect();
            assert!(
                rest.iter().all(|&code| code == Code::DEADLINE_EXCEEDED),
                "{rest:?}"
            );
            assert!(
                attempt < 4,
                "the calls never ran on the connection's thread"
            );
            continue;
        }
        assert_eq!(first.decode::<String>(), conn_thread);
        c.ping(7);
        let mut on_thread = vec![first];
        on_thread.extend(until_pong(&mut c, 7));
        for r in &on_thread {
            assert_eq!(r.decode::<String>(), conn_thread);
        }
        release_the_worker(&mut blocker, &release);
        // What did not fit in the thread's time went to the worker.
        let mut ids: Vec<u32> = on_thread.iter().map(|r| r.id).collect();
        while ids.len() < 4 {
            let r = c.response();
            assert!(r.decode::<String>().contains("-worker"));
            ids.push(r.id);
        }
        ids.sort_unstable();
        assert_eq!(ids, vec![10, 11, 12, 13]);
        // The first at least: a read of more than one request is not a
        // lone one, yet it runs here. (A loaded machine can make the first
        // outlast the thread's time for the read, sending the others to
        // the worker.)
        break;
    }
    drop(c);
    assert!(server.shutdown().is_clean());
}

#[test]
fn requests_kept_behind_a_call_that_runs_long_go_to_the_workers() {
    let (svc, started, release) = lone_service();
    let server = thread_mode("keptl")
        .service(svc)
        .bind("127.0.0.1:0")
        .unwrap();
    let mut c = RawClient::connect(server.local_addr());
    let conn_thread = warm_up(&mut c, "keptl");
    let mut blocker = block_the_worker(server.local_addr(), &started);

    // Two calls in one write, kept by the connection's thread since the
    // worker is busy; the first runs until cancelled.
    let meta = RequestMeta::new("/lone.Lone/Step");
    c.push_request(50, &meta, Flags::default(), &encode(&UNTIL_CANCELLED));
    c.push_request(51, &meta, Flags::default(), &encode(&QUICK));
    c.flush();
    assert_eq!(started.recv_timeout(WAIT).unwrap(), conn_thread);

    // Once the worker is free, the call waiting behind the long one is
    // taken from the connection's thread and answered by the worker,
    // while the long one still runs.
    release_the_worker(&mut blocker, &release);
    let r = c.response();
    assert_eq!(r.id, 51);
    let name = r.decode::<String>();
    assert!(name.starts_with("keptl-worker"), "{name}");

    // The long one ends when cancelled, unanswered.
    c.cancel(50);
    c.ping(9);
    assert!(until_pong(&mut c, 9).is_empty());
    drop(c);
    drop(blocker);
    assert!(server.shutdown().is_clean());
}

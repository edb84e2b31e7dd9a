//! The client against a scripted fake server: multiplexing, deadlines,
//! cancellation, broken and restarted servers, GOAWAY failover, retries,
//! and a server that sends bad or oversized frames.

mod client_util;

use std::net::{SocketAddr, TcpListener};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{mpsc, Arc, Barrier};
use std::thread;
use std::time::{Duration, Instant};

use client_util::{init_logging, Event, FakeServer, Request, Responder, EVENT_WAIT};
use serde::{Deserialize, Serialize};
use syncrpc::client::{CallOptions, Client, RetryPolicy};
use syncrpc::codec::{Compression, Flags, FrameType, ResponseMeta, HEADER_LEN};
use syncrpc::{Code, Context, ErrorKind, Execution, Metadata, TaskGroup, TraceId};

#[derive(Serialize, Deserialize, PartialEq, Debug, Clone)]
struct Msg {
    thread: u32,
    seq: u32,
    text: String,
}

fn msg(text: &str) -> Msg {
    Msg {
        thread: 0,
        seq: 0,
        text: text.to_owned(),
    }
}

fn client_for(addrs: &[SocketAddr]) -> Client {
    Client::builder()
        .addrs(addrs)
        .backoff(Duration::from_millis(20), Duration::from_millis(200))
        .build()
        .unwrap()
}

fn bg() -> Context {
    Context::background()
}

/// Runs `f` on a thread and waits at most `limit` for it: a hang fails the
/// test instead of stalling the suite.
#[track_caller]
fn within<T: Send + 'static>(limit: Duration, f: impl FnOnce() -> T + Send + 'static) -> T {
    let (tx, rx) = mpsc::channel();
    let t = thread::spawn(move || tx.send(f()).unwrap());
    let v = rx
        .recv_timeout(limit)
        .unwrap_or_else(|_| panic!("did not return within {limit:?}"));
    t.join().unwrap();
    v
}

#[test]
fn multiplexes_16_threads_x_1000_calls_on_one_connection() {
    init_logging();
    let server = FakeServer::echo();
    let client = client_for(&[server.addr()]);
    let barrier = Arc::new(Barrier::new(16));
    let threads: Vec<_> = (0..16u32)
        .map(|t| {
            let client = client.clone();
            let barrier = barrier.clone();
            thread::spawn(move || {
                barrier.wait();
                for seq in 0..1000u32 {
                    let req = Msg {
                        thread: t,
                        seq,
                        text: format!("t{t}-s{seq}"),
                    };
                    let resp: Msg = client.call(&bg(), "/echo.Echo/Say", &req).unwrap();
                    assert_eq!(resp, req, "a response was matched to the wrong call");
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    assert_eq!(server.connections(), 1);
}

#[test]
fn metadata_trace_id_timeout_and_caller_reach_the_server() {
    init_logging();
    let server = FakeServer::start(|req: &Request, r: &Responder| {
        let mut md = Metadata::new();
        md.insert("served-by", "fake");
        let meta = ResponseMeta {
            trace_id: Some(req.trace_id.as_deref().unwrap_or("assigned-by-server")),
            md,
            ..ResponseMeta::new(Code::OK)
        };
        r.reply_meta(req.id, req.flags, &meta, &req.body);
    });
    let client = Client::builder()
        .addr(server.addr())
        .caller("tester")
        .build()
        .unwrap();
    let trace = TraceId::new("trace-1").unwrap();
    let opts = CallOptions::new()
        .timeout(Duration::from_secs(5))
        .metadata("tenant", "acme")
        .trace_id(trace);
    let resp = client
        .call_with::<Msg, Msg>(&bg(), "/echo.Echo/Say", &msg("hi"), &opts)
        .unwrap();
    assert_eq!(resp.body().text, "hi");
    assert_eq!(resp.trace_id(), Some(trace));
    assert_eq!(resp.metadata().get_str("served-by"), Some("fake"));
    assert_eq!(resp.peer(), server.addr());
    let req = server.wait_request();
    assert!(
        req.timeout_ms > 0 && req.timeout_ms <= 5000,
        "{}",
        req.timeout_ms
    );
    assert_eq!(req.trace_id.as_deref(), Some("trace-1"));
    assert_eq!(req.caller.as_deref(), Some("tester"));
    assert_eq!(req.md.get_str("tenant"), Some("acme"));

    // No trace id and no deadline: neither is sent, and the server's
    // trace id comes back.
    let resp = client
        .call_with::<Msg, Msg>(&bg(), "/echo.Echo/Say", &msg("x"), &CallOptions::new())
        .unwrap();
    assert_eq!(resp.trace_id().unwrap().as_str(), "assigned-by-server");
    let req = server.wait_request();
    assert_eq!((req.timeout_ms, req.trace_id), (0, None));

    // The context's trace id and deadline are used when the options set none.
    let ctx = bg()
        .with_trace_id(TraceId::new("from-ctx").unwrap())
        .with_timeout(Duration::from_secs(3));
    let _: Msg = client.call(&ctx, "/echo.Echo/Say", &msg("y")).unwrap();
    let req = server.wait_request();
    assert_eq!(req.trace_id.as_deref(), Some("from-ctx"));
    assert!(req.timeout_ms > 0 && req.timeout_ms <= 3000);
}

#[test]
fn deadline_is_honoured_when_the_server_never_answers_and_cancel_is_sent() {
    init_logging();
    let server = FakeServer::start(|_: &Request, _: &Responder| {});
    let client = client_for(&[server.addr()]);
    let timeout = Duration::from_millis(200);
    let start = Instant::now();
    let err = client
        .call_timeout::<Msg, Msg>(&bg(), "/echo.Echo/Say", &msg("hi"), timeout)
        .unwrap_err();
    let elapsed = start.elapsed();
    assert_eq!(err.code(), Code::DEADLINE_EXCEEDED, "{err}");
    assert!(err.is_timeout());
    assert_eq!(err.execution(), Execution::MayHaveRun);
    assert_eq!(err.trace_id(), None, "none sent, none answered");
    assert!(elapsed >= timeout, "returned early: {elapsed:?}");
    assert!(
        elapsed < timeout + Duration::from_secs(2),
        "returned late: {elapsed:?}"
    );
    let req = server.wait_request();
    assert!(req.timeout_ms <= 200);
    let cancelled = server.wait_for("CANCEL", |ev| match ev {
        Event::Cancel { id, .. } => Some(*id),
        _ => None,
    });
    assert_eq!(cancelled, req.id);

    // A local deadline error names the trace the call was sent under.
    let traced = bg().with_trace_id(TraceId::new("late-1").unwrap());
    let err = client
        .call_timeout::<Msg, Msg>(&traced, "/echo.Echo/Say", &msg("hi"), timeout)
        .unwrap_err();
    assert_eq!(err.trace_id().unwrap().as_str(), "late-1");
    server.wait_request();
}

#[test]
fn cancelling_the_context_ends_the_call_and_sends_cancel() {
    init_logging();
    let server = FakeServer::start(|_: &Request, _: &Responder| {});
    let client = client_for(&[server.addr()]);
    let (ctx, cancel) = bg().with_cancel();
    let call = {
        let client = client.clone();
        thread::spawn(move || client.call::<Msg, Msg>(&ctx, "/echo.Echo/Say", &msg("hi")))
    };
    let req = server.wait_request();
    cancel.cancel();
    // The call has no deadline: only the cancellation can end it.
    let err = call.join().unwrap().unwrap_err();
    assert_eq!(err.code(), Code::CANCELLED);
    assert_eq!(err.kind(), ErrorKind::Cancelled);
    let id = server.wait_for("CANCEL", |ev| match ev {
        Event::Cancel { id, .. } => Some(*id),
        _ => None,
    });
    assert_eq!(id, req.id);
}

#[test]
fn server_killed_mid_call_gives_unavailable_promptly() {
    init_logging();
    let mut server = FakeServer::start(|_: &Request, _: &Responder| {});
    let client = client_for(&[server.addr()]);
    let c = client.clone();
    // No deadline at all: only the broken connection can end these calls.
    let calls: Vec<_> = (0..4)
        .map(|_| {
            let c = c.clone();
            thread::spawn(move || c.call::<Msg, Msg>(&bg(), "/echo.Echo/Say", &msg("hi")))
        })
        .collect();
    for _ in 0..4 {
        server.wait_request();
    }
    server.kill();
    let errs = within(EVENT_WAIT, move || {
        calls
            .into_iter()
            .map(|t| t.join().unwrap().unwrap_err())
            .collect::<Vec<_>>()
    });
    for err in errs {
        assert_eq!(err.code(), Code::UNAVAILABLE, "{err}");
        assert_eq!(err.execution(), Execution::MayHaveRun);
        assert!(err.is_io());
        assert!(
            err.to_string().contains("broke after the request was sent"),
            "{err}"
        );
    }
}

#[test]
fn restarted_server_is_reconnected_to() {
    init_logging();
    let mut server = FakeServer::echo();
    let addr = server.addr();
    let handler = server.handler();
    let client = client_for(&[addr]);
    let _: Msg = client
        .call(&bg(), "/echo.Echo/Say", &msg("before"))
        .unwrap();
    server.kill();
    drop(server);

    // The client may not have seen the close yet, so this call can go out
    // on the dead connection and fail as may-have-run; either way it fails
    // as UNAVAILABLE and leaves the connection known to be dead.
    let err = client
        .call::<Msg, Msg>(&bg(), "/echo.Echo/Say", &msg("down"))
        .unwrap_err();
    assert_eq!(err.code(), Code::UNAVAILABLE, "{err}");
    let err = client
        .call::<Msg, Msg>(&bg(), "/echo.Echo/Say", &msg("still down"))
        .unwrap_err();
    assert_eq!(err.code(), Code::UNAVAILABLE, "{err}");
    assert!(err.is_not_run(), "a refused connection never ran: {err:?}");

    let server = FakeServer::start_on(addr, handler);
    // Waits out the backoff instead of polling.
    let opts = CallOptions::new()
        .wait_for_ready(true)
        .timeout(Duration::from_secs(10));
    let resp = client
        .call_with::<Msg, Msg>(&bg(), "/echo.Echo/Say", &msg("after"), &opts)
        .unwrap();
    assert_eq!(resp.body().text, "after");
    assert_eq!(server.connections(), 1);
}

#[test]
fn goaway_fails_over_without_failing_calls() {
    init_logging();
    let mut a = FakeServer::echo();
    let b = FakeServer::echo();
    let client = client_for(&[a.addr(), b.addr()]);
    let done = Arc::new(AtomicUsize::new(0));
    let (halfway_tx, halfway_rx) = mpsc::channel();
    let threads: Vec<_> = (0..4u32)
        .map(|t| {
            let client = client.clone();
            let done = done.clone();
            let halfway = halfway_tx.clone();
            thread::spawn(move || {
                for seq in 0..300u32 {
                    let req = Msg {
                        thread: t,
                        seq,
                        text: String::new(),
                    };
                    let resp: Msg = client
                        .call(&bg(), "/echo.Echo/Say", &req)
                        .unwrap_or_else(|e| panic!("call {t}/{seq} failed: {e:?}"));
                    assert_eq!(resp, req);
                    if done.fetch_add(1, Ordering::SeqCst) == 200 {
                        halfway.send(()).unwrap();
                    }
                }
            })
        })
        .collect();
    halfway_rx.recv_timeout(EVENT_WAIT).unwrap();
    a.goaway();
    for t in threads {
        t.join().unwrap();
    }
    // The client closes the drained connection to A by itself.
    a.wait_for("A's connection closed", |ev| match ev {
        Event::Closed(_) => Some(()),
        _ => None,
    });
    // Everything now goes to B.
    for _ in 0..10 {
        let resp = client
            .call_with::<Msg, Msg>(&bg(), "/echo.Echo/Say", &msg("b"), &CallOptions::new())
            .unwrap();
        assert_eq!(resp.peer(), b.addr());
    }
}

#[test]
fn malformed_frame_fails_the_connection_and_its_calls() {
    init_logging();
    let server = FakeServer::start(|req: &Request, r: &Responder| match req.method.as_str() {
        "/t.T/Garbage" => r.raw(b"HTTP/1.1 400 Bad Request\r\n\r\n"),
        "/t.T/Hang" => {}
        _ => r.echo(req),
    });
    let client = client_for(&[server.addr()]);
    let hanging = {
        let c = client.clone();
        thread::spawn(move || c.call::<Msg, Msg>(&bg(), "/t.T/Hang", &msg("x")))
    };
    server.wait_request();
    let err = client
        .call::<Msg, Msg>(&bg(), "/t.T/Garbage", &msg("x"))
        .unwrap_err();
    assert_eq!(err.code(), Code::UNAVAILABLE);
    assert!(err.is_protocol(), "{err:?}");
    assert_eq!(err.execution(), Execution::MayHaveRun);
    assert!(err.to_string().contains("bad magic"), "{err}");
    // The other call on the connection fails too, instead of hanging.
    let other = within(EVENT_WAIT, move || hanging.join().unwrap().unwrap_err());
    assert!(other.is_protocol(), "{other:?}");
    // The broken connection counts as a failed attempt (no reconnect loop
    // against a server that sends garbage); once the short backoff is
    // over, a new connection serves the next call.
    let err = client
        .call::<Msg, Msg>(&bg(), "/t.T/Echo", &msg("ok"))
        .unwrap_err();
    assert!(err.is_not_run());
    assert!(err.to_string().contains("bad magic"), "{err}");
    let opts = CallOptions::new().wait_for_ready(true).timeout(EVENT_WAIT);
    client
        .call_with::<Msg, Msg>(&bg(), "/t.T/Echo", &msg("ok"), &opts)
        .unwrap();
    assert_eq!(server.connections(), 2);
}

#[test]
fn response_meta_over_the_limit_fails_the_connection() {
    init_logging();
    let server = FakeServer::start(|req: &Request, r: &Responder| {
        // A RESPONSE header declaring 20000 bytes of meta; none follow.
        let mut h = [0u8; HEADER_LEN];
        syncrpc::codec::Header {
            frame_type: FrameType::Response,
            flags: Flags::default(),
            meta_len: 20000,
            request_id: req.id,
            body_len: 0,
        }
        .encode(&mut h);
        r.raw(&h);
    });
    let client = client_for(&[server.addr()]);
    let err = client
        .call::<Msg, Msg>(&bg(), "/echo.Echo/Say", &msg("x"))
        .unwrap_err();
    assert!(err.is_protocol(), "{err:?}");
    assert!(
        err.to_string().contains("meta too large: 20000 > 16384"),
        "{err}"
    );
}

#[test]
fn response_meta_that_is_not_a_map_fails_the_connection() {
    init_logging();
    let server = FakeServer::start(|req: &Request, r: &Responder| {
        let meta = [0x92, 0x00, 0x00]; // [0, 0]
        let mut frame = vec![0u8; HEADER_LEN];
        syncrpc::codec::Header {
            frame_type: FrameType::Response,
            flags: Flags::default(),
            meta_len: meta.len() as u16,
            request_id: req.id,
            body_len: 0,
        }
        .encode(&mut frame);
        frame.extend_from_slice(&meta);
        r.raw(&frame);
    });
    let client = client_for(&[server.addr()]);
    let err = client
        .call::<Msg, Msg>(&bg(), "/echo.Echo/Say", &msg("x"))
        .unwrap_err();
    assert!(err.is_protocol(), "{err:?}");
    assert!(err.to_string().contains("bad meta"), "{err}");
}

#[test]
fn oversized_response_fails_the_call_but_not_the_connection() {
    init_logging();
    let server = FakeServer::start(|req: &Request, r: &Responder| {
        if req.method == "/t.T/Big" {
            r.reply(req, Code::OK, None, &vec![7u8; 2048]);
        } else {
            r.echo(req);
        }
    });
    let client = Client::builder()
        .addr(server.addr())
        .max_body(1024)
        .build()
        .unwrap();
    let err = client
        .call_raw(&bg(), "/t.T/Big", b"x", &CallOptions::new())
        .unwrap_err();
    assert_eq!(err.code(), Code::RESOURCE_EXHAUSTED, "{err}");
    assert_eq!(err.execution(), Execution::Ran);
    assert!(
        err.to_string()
            .contains("response body too large: 2048 > 1024"),
        "{err}"
    );
    let resp = client
        .call_raw(&bg(), "/t.T/Echo", b"small", &CallOptions::new())
        .unwrap();
    assert_eq!(&resp.body()[..], b"small");
    assert_eq!(server.connections(), 1, "the connection survived");
}

#[test]
fn decompression_bomb_response_is_refused() {
    init_logging();
    let server = FakeServer::start(|req: &Request, r: &Responder| {
        let mut bomb = Vec::new();
        syncrpc::codec::compress(Compression::Gzip, &vec![0u8; 10 * 1024 * 1024], &mut bomb);
        r.reply(req, Code::OK, None, &bomb);
    });
    let client = Client::builder()
        .addr(server.addr())
        .max_body(64 * 1024)
        .compression(Compression::Gzip)
        .compress_min_size(0)
        .build()
        .unwrap();
    let err = client
        .call_raw(&bg(), "/t.T/Bomb", b"x", &CallOptions::new())
        .unwrap_err();
    assert_eq!(err.code(), Code::RESOURCE_EXHAUSTED, "{err}");
    assert!(err.to_string().contains("after decompression"), "{err}");
    assert_eq!(err.execution(), Execution::Ran);
    assert_eq!(
        server.wait_request().flags.compression(),
        Ok(Compression::Gzip)
    );
}

#[test]
fn compressed_calls_round_trip_and_small_bodies_stay_plain() {
    init_logging();
    let server = FakeServer::echo();
    let client = Client::builder()
        .addr(server.addr())
        .compression(Compression::Zlib)
        .compress_min_size(100)
        .build()
        .unwrap();
    let big = msg(&"compressible ".repeat(100));
    let back: Msg = client.call(&bg(), "/echo.Echo/Say", &big).unwrap();
    assert_eq!(back, big);
    let req = server.wait_request();
    assert_eq!(req.flags.compression(), Ok(Compression::Zlib));
    assert!(req.body.len() < 200, "sent {} bytes", req.body.len());

    let _: Msg = client.call(&bg(), "/echo.Echo/Say", &msg("tiny")).unwrap();
    assert_eq!(
        server.wait_request().flags.compression(),
        Ok(Compression::None)
    );

    let opts = CallOptions::new()
        .compression(Compression::Gzip)
        .compress_min_size(0);
    let back = client
        .call_with::<Msg, Msg>(&bg(), "/echo.Echo/Say", &msg("tiny"), &opts)
        .unwrap();
    assert_eq!(back.body().text, "tiny");
    assert_eq!(
        server.wait_request().flags.compression(),
        Ok(Compression::Gzip)
    );
}

#[test]
fn refused_connection_is_not_run_and_backs_off() {
    init_logging();
    let addr = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let client = Client::builder()
        .addr(addr)
        .backoff(Duration::from_secs(30), Duration::from_secs(60))
        .build()
        .unwrap();
    let err = client
        .call::<Msg, Msg>(&bg(), "/echo.Echo/Say", &msg("x"))
        .unwrap_err();
    assert_eq!(err.code(), Code::UNAVAILABLE);
    assert!(err.is_not_run());
    assert!(err.to_string().contains("cannot connect"), "{err}");
    // While backing off, calls fail at once without connecting.
    for _ in 0..50 {
        let err = client
            .call::<Msg, Msg>(&bg(), "/echo.Echo/Say", &msg("x"))
            .unwrap_err();
        assert!(err.is_not_run());
        assert!(
            err.to_string().contains("next connection attempt in"),
            "{err}"
        );
    }
    // A waiting call gives up at its deadline, not at the backoff's end.
    let start = Instant::now();
    let opts = CallOptions::new()
        .wait_for_ready(true)
        .timeout(Duration::from_millis(100));
    let err = client
        .call_with::<Msg, Msg>(&bg(), "/echo.Echo/Say", &msg("x"), &opts)
        .unwrap_err();
    assert_eq!(err.code(), Code::DEADLINE_EXCEEDED, "{err}");
    assert!(start.elapsed() < Duration::from_secs(2) + Duration::from_millis(100));
}

#[test]
fn a_server_that_drops_new_connections_is_backed_off_from() {
    init_logging();
    let server = FakeServer::start(|_: &Request, r: &Responder| r.close());
    let client = Client::builder()
        .addr(server.addr())
        .backoff(Duration::from_secs(30), Duration::from_secs(60))
        .build()
        .unwrap();
    let err = client
        .call::<Msg, Msg>(&bg(), "/echo.Echo/Say", &msg("x"))
        .unwrap_err();
    assert_eq!(err.execution(), Execution::MayHaveRun);
    for _ in 0..20 {
        let err = client
            .call::<Msg, Msg>(&bg(), "/echo.Echo/Say", &msg("x"))
            .unwrap_err();
        assert!(err.is_not_run(), "{err:?}");
    }
    assert_eq!(server.connections(), 1, "no tight reconnect loop");
}

#[test]
fn round_robin_spreads_calls_over_endpoints() {
    init_logging();
    let a = FakeServer::echo();
    let b = FakeServer::echo();
    let client = client_for(&[a.addr(), b.addr()]);
    let mut by_peer = std::collections::HashMap::new();
    for _ in 0..10 {
        let resp = client
            .call_with::<Msg, Msg>(&bg(), "/echo.Echo/Say", &msg("x"), &CallOptions::new())
            .unwrap();
        *by_peer.entry(resp.peer()).or_insert(0) += 1;
    }
    assert_eq!(by_peer.get(&a.addr()), Some(&5));
    assert_eq!(by_peer.get(&b.addr()), Some(&5));
}

#[test]
fn connections_per_endpoint_spreads_calls_over_that_many_connections() {
    init_logging();
    let server = FakeServer::echo();
    let client = Client::builder()
        .addr(server.addr())
        .connections_per_endpoint(3)
        .build()
        .unwrap();
    for _ in 0..9 {
        let _: Msg = client.call(&bg(), "/echo.Echo/Say", &msg("x")).unwrap();
    }
    assert_eq!(server.connections(), 3);
    let mut per_conn = [0; 3];
    for _ in 0..9 {
        per_conn[server.wait_request().conn] += 1;
    }
    assert_eq!(per_conn, [3, 3, 3]);
}

#[test]
fn host_name_resolving_to_several_addresses_works() {
    init_logging();
    let server = FakeServer::echo();
    let client = Client::connect(format!("localhost:{}", server.addr().port())).unwrap();
    assert!(client.endpoints().contains(
        &format!("127.0.0.1:{}", server.addr().port())
            .parse()
            .unwrap()
    ));
    // If localhost also resolves to ::1, where nothing listens, the call
    // fails over to 127.0.0.1.
    for _ in 0..4 {
        let _: Msg = client.call(&bg(), "/echo.Echo/Say", &msg("x")).unwrap();
    }
}

#[test]
fn not_run_call_is_retried_once_on_another_endpoint() {
    init_logging();
    let unavailable = |req: &Request, r: &Responder| {
        r.reply(req, Code::UNAVAILABLE, Some("not now"), &[]);
    };
    let a = FakeServer::start(unavailable);
    let b = FakeServer::echo();
    let client = client_for(&[a.addr(), b.addr()]);
    for _ in 0..10 {
        let resp = client
            .call_with::<Msg, Msg>(&bg(), "/echo.Echo/Say", &msg("x"), &CallOptions::new())
            .unwrap();
        assert_eq!(resp.peer(), b.addr());
    }
    // With a single endpoint that keeps refusing: exactly two attempts.
    let only = FakeServer::start(unavailable);
    let client = client_for(&[only.addr()]);
    let err = client
        .call::<Msg, Msg>(&bg(), "/echo.Echo/Say", &msg("x"))
        .unwrap_err();
    assert_eq!(err.code(), Code::UNAVAILABLE);
    assert_eq!(err.status().message(), "not now");
    assert!(err.is_not_run());
    only.wait_request();
    only.wait_request();
    let no_more = client
        .call_with::<Msg, Msg>(
            &bg(),
            "/echo.Echo/Say",
            &msg("x"),
            &CallOptions::new().retry(RetryPolicy::never()),
        )
        .unwrap_err();
    assert!(no_more.is_not_run());
    only.wait_request();
    assert!(only.events().try_recv().is_err(), "no retry with never()");
}

#[test]
fn may_have_run_is_retried_only_when_the_caller_opts_in() {
    init_logging();
    let seen = Arc::new(AtomicUsize::new(0));
    let s = seen.clone();
    // Requests 2 and 4 break the connection after they were sent.
    let server = FakeServer::start(move |req: &Request, r: &Responder| {
        match s.fetch_add(1, Ordering::SeqCst) + 1 {
            2 | 4 => r.close(),
            _ => r.echo(req),
        }
    });
    let client = client_for(&[server.addr()]);
    let call =
        |opts: &CallOptions| client.call_with::<Msg, Msg>(&bg(), "/echo.Echo/Say", &msg("x"), opts);
    call(&CallOptions::new()).unwrap();
    let err = call(&CallOptions::new()).unwrap_err();
    assert_eq!(err.execution(), Execution::MayHaveRun);
    call(&CallOptions::new()).unwrap();
    let resp = call(&CallOptions::new().retry(RetryPolicy::idempotent(1))).unwrap();
    assert_eq!(resp.body().text, "x");
    assert_eq!(seen.load(Ordering::SeqCst), 5);
}

#[test]
fn server_ping_is_answered_and_client_ping_measures_a_round_trip() {
    init_logging();
    let server = FakeServer::echo();
    server.greet_with_ping();
    let client = client_for(&[server.addr()]);
    let rtt = client.ping(&bg().with_timeout(EVENT_WAIT)).unwrap();
    assert!(rtt < EVENT_WAIT);
    let token = server.wait_for("PONG", |ev| match ev {
        Event::Pong { token, .. } => Some(token.0),
        _ => None,
    });
    assert_eq!(token, 77);
}

#[test]
fn oneway_reaches_the_server() {
    init_logging();
    let server = FakeServer::echo();
    let client = client_for(&[server.addr()]);
    client
        .oneway(&bg(), "/log.Log/Append", &msg("note"))
        .unwrap();
    let req = server.wait_request();
    assert_eq!(req.frame_type, FrameType::Oneway);
    assert_eq!(req.method, "/log.Log/Append");
}

#[test]
fn server_status_is_the_callers_error() {
    init_logging();
    let server = FakeServer::start(|req: &Request, r: &Responder| {
        let meta = ResponseMeta {
            message: Some("no such user"),
            trace_id: Some("srv-1"),
            ..ResponseMeta::new(Code::NOT_FOUND)
        };
        r.reply_meta(req.id, req.flags, &meta, &[]);
    });
    let client = client_for(&[server.addr()]);
    let err = client
        .call::<Msg, Msg>(&bg(), "/users.Users/Get", &msg("bob"))
        .unwrap_err();
    assert!(err.is_status());
    assert_eq!(err.code(), Code::NOT_FOUND);
    assert_eq!(err.status().message(), "no such user");
    assert_eq!(err.execution(), Execution::Ran);
    assert_eq!(err.trace_id().unwrap().as_str(), "srv-1");
}

#[test]
fn local_limits_and_usage_errors_never_reach_the_server() {
    init_logging();
    let server = FakeServer::echo();
    let client = Client::builder()
        .addr(server.addr())
        .max_body(1024)
        .build()
        .unwrap();
    let err = client
        .call_raw(&bg(), "/t.T/Put", &[0u8; 2048], &CallOptions::new())
        .unwrap_err();
    assert_eq!(err.code(), Code::RESOURCE_EXHAUSTED);
    assert!(err.is_not_run());
    assert!(
        err.to_string()
            .contains("request body too large: 2048 > 1024"),
        "{err}"
    );
    let err = client
        .call::<Msg, Msg>(&bg(), "not-a-method", &msg("x"))
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Usage);
    let done = bg().with_timeout(Duration::ZERO);
    let err = client
        .call::<Msg, Msg>(&done, "/echo.Echo/Say", &msg("x"))
        .unwrap_err();
    assert!(err.is_timeout() && err.is_not_run(), "{err:?}");
    assert_eq!(server.connections(), 0);
}

#[test]
fn task_group_stops_the_other_calls_when_one_fails() {
    init_logging();
    let server = FakeServer::start(|req: &Request, r: &Responder| {
        if req.method == "/t.T/Fail" {
            r.reply(req, Code::NOT_FOUND, Some("gone"), &[]);
        }
    });
    let client = client_for(&[server.addr()]);
    let group: TaskGroup = TaskGroup::new(&bg());
    for _ in 0..3 {
        let c = client.clone();
        group.spawn(move |ctx| c.call::<Msg, Msg>(ctx, "/t.T/Hang", &msg("x")));
    }
    for _ in 0..3 {
        server.wait_request();
    }
    let c = client.clone();
    group.spawn(move |ctx| c.call::<Msg, Msg>(ctx, "/t.T/Fail", &msg("x")));
    // The hanging calls have no deadline: only the group's cancellation
    // ends them.
    let err = within(EVENT_WAIT, move || group.wait().unwrap_err());
    assert_eq!(err.code(), Code::NOT_FOUND);
    for _ in 0..3 {
        server.wait_for("CANCEL", |ev| match ev {
            Event::Cancel { .. } => Some(()),
            _ => None,
        });
    }
}

#[test]
fn dropping_the_client_closes_its_connections() {
    init_logging();
    let server = FakeServer::echo();
    let client = client_for(&[server.addr()]);
    let _: Msg = client.call(&bg(), "/echo.Echo/Say", &msg("x")).unwrap();
    let clone = client.clone();
    drop(client);
    let _: Msg = clone.call(&bg(), "/echo.Echo/Say", &msg("x")).unwrap();
    drop(clone);
    server.wait_for("close", |ev| match ev {
        Event::Closed(_) => Some(()),
        _ => None,
    });
}

/// A server that accepts and never reads: the client's writes fill the
/// socket and the rest waits in its queue.
fn deaf_server() -> (SocketAddr, mpsc::Sender<()>, thread::JoinHandle<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop_tx, stop_rx) = mpsc::channel::<()>();
    let t = thread::spawn(move || {
        let (stream, _) = listener.accept().unwrap();
        // Holds the connection open, unread, until the test ends.
        let _ = stop_rx.recv();
        drop(stream);
    });
    (addr, stop_tx, t)
}

#[test]
fn a_server_that_stops_reading_cannot_hold_callers_past_their_deadline_or_the_stall_limit() {
    init_logging();
    let (addr, stop, server) = deaf_server();
    let client = Client::builder()
        .addr(addr)
        .write_stall_timeout(Duration::from_millis(500))
        .build()
        .unwrap();
    // More than the socket buffers on both sides can hold.
    let body = vec![1u8; 9 * 1024 * 1024];
    let start = Instant::now();
    let err = client
        .call_raw(
            &bg(),
            "/t.T/Put",
            &body,
            &CallOptions::new().timeout(Duration::from_millis(200)),
        )
        .unwrap_err();
    assert_eq!(err.code(), Code::DEADLINE_EXCEEDED, "{err}");
    assert!(start.elapsed() < Duration::from_millis(200) + Duration::from_secs(2));

    // Without a deadline, the write-stall limit ends the call.
    let c = client.clone();
    let err = within(EVENT_WAIT, move || {
        c.call_raw(&bg(), "/t.T/Put", b"small", &CallOptions::new())
            .unwrap_err()
    });
    assert_eq!(err.code(), Code::UNAVAILABLE, "{err}");
    assert!(err.to_string().contains("accepted no bytes"), "{err}");
    stop.send(()).unwrap();
    server.join().unwrap();
}

#[test]
fn a_close_that_arrives_with_the_last_response_still_fails_the_other_calls() {
    init_logging();
    let server = FakeServer::start(|req: &Request, r: &Responder| {
        if req.method == "/t.T/LastWords" {
            // The response and the end of the stream leave together.
            r.echo(req);
            r.close();
        }
    });
    for _ in 0..20 {
        let client = client_for(&[server.addr()]);
        let c = client.clone();
        let hanging = thread::spawn(move || c.call::<Msg, Msg>(&bg(), "/t.T/Hang", &msg("x")));
        server.wait_request();
        // Answered or broken, depending on timing; either way it returns.
        let _ = client.call::<Msg, Msg>(&bg(), "/t.T/LastWords", &msg("bye"));
        server.wait_request();
        // No deadline: only noticing the closed stream ends this call.
        let err = within(EVENT_WAIT, move || hanging.join().unwrap().unwrap_err());
        assert_eq!(err.code(), Code::UNAVAILABLE, "{err}");
    }
}

/// Frames of the given type and id with `meta` and `body`, as raw bytes.
fn raw_frame(frame_type: FrameType, id: u32, meta: &[u8], body: &[u8]) -> Vec<u8> {
    let mut out = vec![0u8; HEADER_LEN];
    syncrpc::codec::Header {
        frame_type,
        flags: Flags::default(),
        meta_len: meta.len() as u16,
        request_id: syncrpc::codec::RequestId(id),
        body_len: body.len() as u32,
    }
    .encode(&mut out);
    out.extend_from_slice(meta);
    out.extend_from_slice(body);
    out
}

/// This client opens no streams, so every MESSAGE and WINDOW a server
/// sends names an id that is not an open stream (one that crossed a
/// stream's RESPONSE, in a later client): ignored, whether the id is
/// unknown or a unary call's in flight, and over the body limit or not.
/// The calls are answered and the connection stays.
#[test]
fn stream_frames_for_ids_not_open_as_streams_are_ignored() {
    init_logging();
    let server = FakeServer::start(|req: &Request, r: &Responder| {
        let grant = b"\x81\xa5bytes\xce\x00\x01\x00\x00";
        let mut frames = Vec::new();
        frames.extend(raw_frame(
            FrameType::Message,
            req.id.0,
            &[],
            b"\x81\xa1n\x02",
        ));
        frames.extend(raw_frame(FrameType::Window, req.id.0, grant, &[]));
        frames.extend(raw_frame(FrameType::Message, 999, &[], &[0xab; 2048]));
        frames.extend(raw_frame(FrameType::Window, 999, grant, &[]));
        r.raw(&frames);
        r.echo(req);
    });
    let client = Client::builder()
        .addr(server.addr())
        .max_body(1024)
        .build()
        .unwrap();
    for text in ["one", "two"] {
        let resp = client
            .call_raw(&bg(), "/t.T/Echo", text.as_bytes(), &CallOptions::new())
            .unwrap();
        assert_eq!(&resp.body()[..], text.as_bytes());
    }
    assert_eq!(server.connections(), 1, "the connection survived");
}

/// A WINDOW whose grant is not from 1 to 2^31-1 is malformed whatever
/// stream it names: the connection fails with the reason.
#[test]
fn bad_window_from_the_server_fails_the_connection() {
    init_logging();
    let server = FakeServer::start(|req: &Request, r: &Responder| {
        r.raw(&raw_frame(
            FrameType::Window,
            req.id.0,
            b"\x81\xa5bytes\x00",
            &[],
        ));
    });
    let client = client_for(&[server.addr()]);
    let err = client
        .call::<Msg, Msg>(&bg(), "/echo.Echo/Say", &msg("x"))
        .unwrap_err();
    assert!(err.is_protocol(), "{err:?}");
    assert!(
        err.to_string()
            .contains("bad WINDOW frame: invalid meta: key `bytes`: invalid value: integer `0`"),
        "{err}"
    );
}

/// END goes only from client to server.
#[test]
fn end_from_the_server_fails_the_connection() {
    init_logging();
    let server = FakeServer::start(|req: &Request, r: &Responder| {
        r.raw(&raw_frame(FrameType::End, req.id.0, &[], &[]));
    });
    let client = client_for(&[server.addr()]);
    let err = client
        .call::<Msg, Msg>(&bg(), "/echo.Echo/Say", &msg("x"))
        .unwrap_err();
    assert!(err.is_protocol(), "{err:?}");
    assert!(
        err.to_string()
            .contains("END frame sent in the wrong direction"),
        "{err}"
    );
}

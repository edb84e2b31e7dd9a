//! Streaming methods on the server, driven frame by frame with a raw
//! client: server, client and bidirectional streams, flow control, the
//! connection errors of streams, cancellation, deadlines, the stream
//! limit and shutdown, each in both I/O modes.

mod util;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{mpsc, Arc};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use syncrpc::codec::{Flags, FrameType, RequestId, RequestMeta, WindowMeta};
use syncrpc::flow_control::INITIAL_WINDOW;
use syncrpc::server::{Incoming, Sink};
use syncrpc::{Code, Context, Service, Status};
use util::{encode, Mode, RawClient, Resp};

per_mode!(
    server_stream_sends_each_message_then_ends_ok,
    client_stream_answers_one_message_then_ends,
    bidi_stream_echoes_as_messages_arrive,
    stream_on_unary_method_and_unary_on_stream_method_are_invalid,
    the_server_stops_at_its_window_and_resumes_on_grants,
    message_after_end_is_a_connection_error,
    end_after_end_is_a_connection_error,
    window_overflow_is_a_connection_error,
    message_beyond_the_servers_window_is_a_connection_error,
    oversized_message_ends_the_stream_resource_exhausted,
    undecodable_message_ends_the_stream_invalid_argument,
    a_second_request_message_of_a_server_stream_is_invalid,
    cancel_before_the_first_message_answers_cancelled,
    cancel_mid_stream_stops_the_handler,
    cancel_after_end_is_answered_once,
    cancel_racing_the_response_gets_one_answer,
    deadline_mid_stream_ends_it_and_drops_later_messages,
    connection_reset_mid_stream_cancels_the_handler,
    stream_limit_refuses_streams_and_unary_calls_go_on,
    a_thousand_streams_opened_and_never_fed,
    streams_interleave_with_unary_calls_in_order,
    a_slow_reader_holds_the_server_to_its_window,
    shutdown_lets_open_streams_finish_and_refuses_new_ones,
    shutdown_timeout_ends_a_stream_cancelled,
    filters_see_the_opening_and_the_end_status,
    handler_error_after_messages_ends_the_stream_with_it,
    metrics_show_the_open_streams_and_their_limit,
);

#[derive(Serialize, Deserialize, Debug)]
struct CountReq {
    n: u32,
    #[serde(default)]
    ms: u64,
}

#[derive(Serialize, Deserialize, Debug, PartialEq)]
struct Tick {
    i: u32,
}

#[derive(Serialize, Deserialize, Debug)]
struct Value {
    v: i64,
}

#[derive(Serialize, Deserialize, Debug, PartialEq)]
struct Total {
    sum: i64,
    count: u64,
}

/// What the stream service's handlers report to the test.
#[derive(Default)]
struct Probe {
    /// Handlers running now.
    running: AtomicUsize,
    /// Messages the `Big` handlers sent.
    sent: AtomicUsize,
    /// Every handler that ended reports its end here.
    ended: std::sync::Mutex<Option<mpsc::Sender<Result<(), Status>>>>,
}

impl Probe {
    /// A channel that gets each handler's outcome as it returns.
    fn ends(&self) -> mpsc::Receiver<Result<(), Status>> {
        let (tx, rx) = mpsc::channel();
        *self.ended.lock().unwrap() = Some(tx);
        rx
    }

    fn report(&self, outcome: &Result<(), Status>) {
        if let Some(tx) = &*self.ended.lock().unwrap() {
            let _ = tx.send(outcome.clone());
        }
    }
}

/// `n` messages of `size` bytes each, as the raw request of `Big`.
fn big(n: u32, size: u32) -> Vec<u8> {
    let mut b = n.to_be_bytes().to_vec();
    b.extend_from_slice(&size.to_be_bytes());
    b
}

fn stream_service(probe: &Arc<Probe>) -> Service {
    let p = probe.clone();
    Service::new("st.S")
        .server_stream(
            "Count",
            move |ctx: &Context, req: CountReq, sink: &Sink<Tick>| {
                p.running.fetch_add(1, Ordering::SeqCst);
                let _running = Dec(&p.running);
                for i in 0..req.n {
                    if req.ms > 0 {
                        ctx.wait_cancelled(Duration::from_millis(req.ms));
                    }
                    if let Err(status) = sink.send(&Tick { i }) {
                        p.report(&Err(status.clone()));
                        return Err(status);
                    }
                }
                p.report(&Ok(()));
                Ok(())
            },
        )
        .client_stream("Sum", |_ctx: &Context, msgs: Incoming<Value>| {
            let mut t = Total { sum: 0, count: 0 };
            for m in msgs {
                t.sum += m?.v;
                t.count += 1;
            }
            Ok::<_, Status>(t)
        })
        .bidi_stream(
            "Chat",
            |_ctx: &Context, msgs: Incoming<String>, sink: &Sink<String>| {
                for m in msgs {
                    sink.send(&m?)?;
                }
                Ok(())
            },
        )
        .method("Unary", |_ctx: &Context, x: u32| Ok::<_, Status>(x + 1))
        .raw_server_stream("Big", {
            let p = probe.clone();
            move |_ctx: &Context, req: bytes::Bytes, sink: &syncrpc::server::RawSink| {
                let n = u32::from_be_bytes(req[..4].try_into().unwrap());
                let size = u32::from_be_bytes(req[4..8].try_into().unwrap()) as usize;
                let body = vec![7u8; size];
                let outcome = (0..n).try_for_each(|_| {
                    sink.send(&body)?;
                    p.sent.fetch_add(1, Ordering::SeqCst);
                    Ok(())
                });
                p.report(&outcome);
                outcome
            }
        })
        .bidi_stream("Hold", {
            let p = probe.clone();
            // Reads nothing until cancelled: what the client sends stays
            // queued in the stream.
            move |ctx: &Context, _msgs: Incoming<String>, _sink: &Sink<String>| {
                p.running.fetch_add(1, Ordering::SeqCst);
                let _running = Dec(&p.running);
                ctx.wait_cancelled(Duration::from_secs(30));
                let outcome = ctx.check();
                p.report(&outcome);
                outcome
            }
        })
        .server_stream("Fails", |_ctx: &Context, n: u32, sink: &Sink<u32>| {
            for i in 0..n {
                sink.send(&i)?;
            }
            Err(Status::aborted("gave up after the messages"))
        })
}

struct Dec<'a>(&'a AtomicUsize);
impl Drop for Dec<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

fn open_meta(method: &str) -> RequestMeta<'_> {
    RequestMeta {
        stream: true,
        ..RequestMeta::new(method)
    }
}

/// Opens stream `id` of `method` and sends `msgs`, then END if `end`.
fn open<T: Serialize>(c: &mut RawClient, id: u32, method: &str, msgs: &[T], end: bool) {
    c.push_request(id, &open_meta(method), Flags::default(), &[]);
    for m in msgs {
        c.enc
            .message(RequestId(id), Flags::default(), &encode(m))
            .unwrap();
    }
    if end {
        c.enc.end(RequestId(id));
    }
    c.flush();
}

/// Reads frames of stream `id` until its RESPONSE: the messages, decoded,
/// and the RESPONSE.
fn read_stream<T: serde::de::DeserializeOwned>(c: &mut RawClient, id: u32) -> (Vec<T>, Resp) {
    let mut msgs = Vec::new();
    loop {
        let f = c.frame();
        assert_eq!(f.request_id(), RequestId(id), "{f:?}");
        match f.frame_type() {
            FrameType::Message => msgs.push(syncrpc::codec::decode_body(&f.body, 64).unwrap()),
            FrameType::Response => return (msgs, util::to_resp(&f)),
            other => panic!("unexpected {other:?}"),
        }
    }
}

fn server_stream_sends_each_message_then_ends_ok(mode: Mode) {
    let probe = Arc::new(Probe::default());
    let server = util::builder(mode)
        .service(stream_service(&probe))
        .bind("127.0.0.1:0")
        .unwrap();
    let mut c = RawClient::connect(server.local_addr());
    open(&mut c, 9, "/st.S/Count", &[CountReq { n: 5, ms: 0 }], true);
    let (ticks, end): (Vec<Tick>, _) = read_stream(&mut c, 9);
    assert_eq!(ticks, (0..5).map(|i| Tick { i }).collect::<Vec<_>>());
    assert_eq!(end.code, Code::OK, "{end:?}");
    assert!(end.body.is_empty());
}

fn client_stream_answers_one_message_then_ends(mode: Mode) {
    let probe = Arc::new(Probe::default());
    let server = util::builder(mode)
        .service(stream_service(&probe))
        .bind("127.0.0.1:0")
        .unwrap();
    let mut c = RawClient::connect(server.local_addr());
    let vals: Vec<Value> = (1..=10).map(|v| Value { v }).collect();
    open(&mut c, 3, "/st.S/Sum", &vals, true);
    let (totals, end): (Vec<Total>, _) = read_stream(&mut c, 3);
    assert_eq!(totals, [Total { sum: 55, count: 10 }]);
    assert_eq!(end.code, Code::OK, "{end:?}");
}

fn bidi_stream_echoes_as_messages_arrive(mode: Mode) {
    let probe = Arc::new(Probe::default());
    let server = util::builder(mode)
        .service(stream_service(&probe))
        .bind("127.0.0.1:0")
        .unwrap();
    let mut c = RawClient::connect(server.local_addr());
    open::<String>(&mut c, 5, "/st.S/Chat", &[], false);
    for word in ["one", "two", "three"] {
        c.enc
            .message(RequestId(5), Flags::default(), &encode(&word))
            .unwrap();
        c.flush();
        // Each echo comes before the next message is sent.
        let f = c.frame();
        assert_eq!(f.frame_type(), FrameType::Message, "{f:?}");
        let back: String = syncrpc::codec::decode_body(&f.body, 64).unwrap();
        assert_eq!(back, word);
    }
    c.enc.end(RequestId(5));
    c.flush();
    let end = c.response();
    assert_eq!((end.id, end.code), (5, Code::OK), "{end:?}");
}

fn stream_on_unary_method_and_unary_on_stream_method_are_invalid(mode: Mode) {
    let probe = Arc::new(Probe::default());
    let server = util::builder(mode)
        .service(stream_service(&probe))
        .bind("127.0.0.1:0")
        .unwrap();
    let mut c = RawClient::connect(server.local_addr());
    open::<u32>(&mut c, 1, "/st.S/Unary", &[], true);
    c.response()
        .expect_code(Code::INVALID_ARGUMENT, "not a streaming method");
    c.call(2, "/st.S/Count", &CountReq { n: 1, ms: 0 });
    c.response()
        .expect_code(Code::INVALID_ARGUMENT, "is a streaming method");
    c.call(3, "/st.S/Unary", &41u32);
    assert_eq!(c.response().decode::<u32>(), 42);
}

/// Skips the stream's messages up to its RESPONSE, and returns that.
#[track_caller]
fn until_end(c: &mut RawClient) -> Resp {
    loop {
        let f = c.frame();
        if f.frame_type() == FrameType::Response {
            return util::to_resp(&f);
        }
    }
}

/// Opens a `Count` of many messages 5 ms apart, as id 1, END sent.
fn open_long_count(c: &mut RawClient) {
    open(c, 1, "/st.S/Count", &[CountReq { n: 100_000, ms: 5 }], true);
}

fn server(mode: Mode, probe: &Arc<Probe>) -> syncrpc::Server {
    util::builder(mode)
        .service(stream_service(probe))
        .bind("127.0.0.1:0")
        .unwrap()
}

/// Reads `n` MESSAGE frames of stream `id`; returns their body lengths.
#[track_caller]
fn messages(c: &mut RawClient, id: u32, n: usize) -> Vec<usize> {
    (0..n)
        .map(|_| {
            let f = c.frame();
            assert_eq!(
                (f.frame_type(), f.request_id()),
                (FrameType::Message, RequestId(id)),
                "{f:?}"
            );
            f.body.len()
        })
        .collect()
}

/// A PING answered by the very next frame: nothing else came before it.
#[track_caller]
fn nothing_else_was_sent(c: &mut RawClient) {
    c.ping(4242);
    let f = c.frame();
    assert_eq!(
        (f.frame_type(), f.request_id()),
        (FrameType::Pong, RequestId(4242)),
        "{f:?}"
    );
}

fn grant(c: &mut RawClient, id: u32, bytes: u32) {
    c.enc.window(RequestId(id), WindowMeta::new(bytes).unwrap());
    c.flush();
}

fn open_raw(c: &mut RawClient, id: u32, method: &str, body: &[u8]) {
    let flags = Flags::new(
        syncrpc::codec::Compression::None,
        syncrpc::codec::Encoding::Raw,
    );
    c.push_request(id, &open_meta(method), flags, &[]);
    c.enc.message(RequestId(id), flags, body).unwrap();
    c.enc.end(RequestId(id));
    c.flush();
}

fn the_server_stops_at_its_window_and_resumes_on_grants(mode: Mode) {
    let probe = Arc::new(Probe::default());
    let server = server(mode, &probe);
    let mut c = RawClient::connect(server.local_addr());
    let ends = probe.ends();
    // 100 KiB messages against a 256 KiB window: three go (the third
    // overdraws it to -44 KiB), then the server waits.
    const KIB100: u32 = 100 * 1024;
    open_raw(&mut c, 1, "/st.S/Big", &big(10, KIB100));
    assert_eq!(messages(&mut c, 1, 3), [KIB100 as usize; 3]);
    util::eventually("the third send", || probe.sent.load(Ordering::SeqCst) == 3);
    nothing_else_was_sent(&mut c);
    assert_eq!(probe.sent.load(Ordering::SeqCst), 3);
    // 100 KiB more opens the window to 56 KiB: one message, overdrawn again.
    grant(&mut c, 1, KIB100);
    assert_eq!(messages(&mut c, 1, 1), [KIB100 as usize]);
    util::eventually("the fourth send", || probe.sent.load(Ordering::SeqCst) == 4);
    nothing_else_was_sent(&mut c);
    // Enough for all the rest.
    grant(&mut c, 1, 10 * KIB100);
    assert_eq!(messages(&mut c, 1, 6).len(), 6);
    assert_eq!(c.response().code, Code::OK);
    assert_eq!(ends.recv_timeout(util::WAIT).unwrap(), Ok(()));
    let _ = INITIAL_WINDOW;
}

/// Opens a `Hold` stream (its handler reads nothing) as id `id`.
fn open_hold(c: &mut RawClient, id: u32) {
    open::<String>(c, id, "/st.S/Hold", &[], false);
}

/// The connection error: stream 1, which can go no further, is answered
/// CANCELLED, then GOAWAY, then the connection closes.
#[track_caller]
fn expect_goaway(c: &mut RawClient, part: &str) {
    c.response().expect_code(Code::CANCELLED, part);
    let (code, message) = c.goaway();
    assert_eq!(code, Code::INTERNAL, "{message}");
    assert!(message.contains(part), "{message:?} lacks {part:?}");
    c.expect_closed();
}

/// Another connection is served while the first breaks the rules.
#[track_caller]
fn bystander_is_served(server: &syncrpc::Server) {
    let mut other = RawClient::connect(server.local_addr());
    other.call(1, "/st.S/Unary", &1u32);
    assert_eq!(other.response().decode::<u32>(), 2);
}

fn message_after_end_is_a_connection_error(mode: Mode) {
    let probe = Arc::new(Probe::default());
    let server = server(mode, &probe);
    let mut c = RawClient::connect(server.local_addr());
    open(&mut c, 1, "/st.S/Hold", &["a"], true);
    c.enc
        .message(RequestId(1), Flags::default(), &encode(&"late"))
        .unwrap();
    c.flush();
    expect_goaway(&mut c, "stream 1: MESSAGE after the client's END");
    bystander_is_served(&server);
    util::eventually("the handler to be cancelled", || {
        probe.running.load(Ordering::SeqCst) == 0
    });
}

fn end_after_end_is_a_connection_error(mode: Mode) {
    let probe = Arc::new(Probe::default());
    let server = server(mode, &probe);
    let mut c = RawClient::connect(server.local_addr());
    open(&mut c, 1, "/st.S/Hold", &["a"], true);
    c.enc.end(RequestId(1));
    c.flush();
    expect_goaway(&mut c, "stream 1: END after the client's END");
    bystander_is_served(&server);
}

fn window_overflow_is_a_connection_error(mode: Mode) {
    let probe = Arc::new(Probe::default());
    let server = server(mode, &probe);
    let mut c = RawClient::connect(server.local_addr());
    open_hold(&mut c, 1);
    // 256 KiB + (2^31 - 1) is past the largest window.
    grant(&mut c, 1, syncrpc::codec::MAX_WINDOW);
    expect_goaway(&mut c, "pushes the stream's window past");
    bystander_is_served(&server);
}

fn message_beyond_the_servers_window_is_a_connection_error(mode: Mode) {
    let probe = Arc::new(Probe::default());
    let server = server(mode, &probe);
    let mut c = RawClient::connect(server.local_addr());
    open_hold(&mut c, 1);
    // One message may overdraw the window (300 KiB into 256 KiB): the
    // server holds it; the next, sent with the window below 0, breaks
    // the rule.
    let big = vec![b'x'; 300 * 1024];
    c.enc
        .message(
            RequestId(1),
            Flags::default(),
            &encode(&String::from_utf8(big).unwrap()),
        )
        .unwrap();
    c.flush();
    nothing_else_was_sent(&mut c);
    c.enc
        .message(RequestId(1), Flags::default(), &encode(&"one too many"))
        .unwrap();
    c.flush();
    expect_goaway(&mut c, "sent with the stream's window at");
    bystander_is_served(&server);
}

fn oversized_message_ends_the_stream_resource_exhausted(mode: Mode) {
    let probe = Arc::new(Probe::default());
    let server = util::builder(mode)
        .service(stream_service(&probe))
        .limits(syncrpc::server::Limits {
            max_body: 1024,
            ..util::limits()
        })
        .bind("127.0.0.1:0")
        .unwrap();
    let mut c = RawClient::connect(server.local_addr());
    open::<String>(
        &mut c,
        1,
        "/st.S/Chat",
        &["small".into(), "x".repeat(4000)],
        false,
    );
    // The first message may be echoed before the second ends the stream.
    let end = until_end(&mut c);
    end.expect_code(
        Code::RESOURCE_EXHAUSTED,
        "stream message too large: 4003 > 1024",
    );
    // Later frames of the ended stream are ignored; the connection goes on.
    c.enc
        .message(RequestId(1), Flags::default(), &encode(&"after"))
        .unwrap();
    c.enc.end(RequestId(1));
    c.flush();
    c.call(2, "/st.S/Unary", &1u32);
    assert_eq!(c.response().decode::<u32>(), 2);
    nothing_else_was_sent(&mut c);
}

fn undecodable_message_ends_the_stream_invalid_argument(mode: Mode) {
    let probe = Arc::new(Probe::default());
    let server = server(mode, &probe);
    let mut c = RawClient::connect(server.local_addr());
    open::<Value>(&mut c, 1, "/st.S/Sum", &[Value { v: 1 }], false);
    c.enc
        .message(RequestId(1), Flags::default(), &encode(&"not a value"))
        .unwrap();
    c.flush();
    c.response().expect_code(
        Code::INVALID_ARGUMENT,
        "cannot decode a message of /st.S/Sum",
    );
    c.call(2, "/st.S/Unary", &1u32);
    assert_eq!(c.response().decode::<u32>(), 2);
    nothing_else_was_sent(&mut c);
}

fn a_second_request_message_of_a_server_stream_is_invalid(mode: Mode) {
    let probe = Arc::new(Probe::default());
    let server = server(mode, &probe);
    let mut c = RawClient::connect(server.local_addr());
    // A slow count, so the second message comes while it runs.
    open(
        &mut c,
        1,
        "/st.S/Count",
        &[CountReq { n: 1000, ms: 20 }, CountReq { n: 1, ms: 0 }],
        false,
    );
    until_end(&mut c).expect_code(Code::INVALID_ARGUMENT, "takes one request message");
    util::eventually("the handler to stop", || {
        probe.running.load(Ordering::SeqCst) == 0
    });
}

fn cancel_before_the_first_message_answers_cancelled(mode: Mode) {
    let probe = Arc::new(Probe::default());
    let server = server(mode, &probe);
    let mut c = RawClient::connect(server.local_addr());
    c.push_request(1, &open_meta("/st.S/Count"), Flags::default(), &[]);
    c.cancel(1);
    c.response().expect_code(Code::CANCELLED, "cancelled");
    nothing_else_was_sent(&mut c);
    // The id is free again.
    open(&mut c, 1, "/st.S/Count", &[CountReq { n: 2, ms: 0 }], true);
    let (ticks, end): (Vec<Tick>, _) = read_stream(&mut c, 1);
    assert_eq!((ticks.len(), end.code), (2, Code::OK));
}

fn cancel_mid_stream_stops_the_handler(mode: Mode) {
    let probe = Arc::new(Probe::default());
    let server = server(mode, &probe);
    let ends = probe.ends();
    let mut c = RawClient::connect(server.local_addr());
    open_long_count(&mut c);
    messages(&mut c, 1, 2);
    c.cancel(1);
    until_end(&mut c).expect_code(Code::CANCELLED, "cancelled");
    let outcome = ends.recv_timeout(util::WAIT).unwrap();
    assert_eq!(outcome.unwrap_err().code(), Code::CANCELLED);
    nothing_else_was_sent(&mut c);
}

fn cancel_after_end_is_answered_once(mode: Mode) {
    let probe = Arc::new(Probe::default());
    let server = server(mode, &probe);
    let mut c = RawClient::connect(server.local_addr());
    // END sent, the handler still running (Hold reads nothing).
    open(&mut c, 1, "/st.S/Hold", &["a"], true);
    util::eventually("the handler to start", || {
        probe.running.load(Ordering::SeqCst) == 1
    });
    c.cancel(1);
    c.response().expect_code(Code::CANCELLED, "cancelled");
    util::eventually("the handler to stop", || {
        probe.running.load(Ordering::SeqCst) == 0
    });
    nothing_else_was_sent(&mut c);
}

fn cancel_racing_the_response_gets_one_answer(mode: Mode) {
    let probe = Arc::new(Probe::default());
    // A handler gives its stream slot back when it returns, which may be
    // just after a CANCELLED answer: a slot per stream keeps the test
    // from racing that.
    let server = util::builder(mode)
        .service(stream_service(&probe))
        .limits(syncrpc::server::Limits {
            max_streams: Some(50),
            ..util::limits()
        })
        .bind("127.0.0.1:0")
        .unwrap();
    let mut c = RawClient::connect(server.local_addr());
    for id in 1..=50 {
        // The stream may end before or after the CANCEL arrives: either
        // way exactly one RESPONSE, OK or CANCELLED, then nothing.
        open(&mut c, id, "/st.S/Count", &[CountReq { n: 1, ms: 0 }], true);
        c.cancel(id);
        let end = loop {
            let f = c.frame();
            assert_eq!(f.request_id(), RequestId(id), "{f:?}");
            if f.frame_type() == FrameType::Response {
                break util::to_resp(&f);
            }
        };
        assert!(matches!(end.code, Code::OK | Code::CANCELLED), "{end:?}");
    }
    nothing_else_was_sent(&mut c);
}

fn deadline_mid_stream_ends_it_and_drops_later_messages(mode: Mode) {
    let probe = Arc::new(Probe::default());
    let server = server(mode, &probe);
    let ends = probe.ends();
    let mut c = RawClient::connect(server.local_addr());
    let meta = RequestMeta {
        timeout_ms: 150,
        ..open_meta("/st.S/Count")
    };
    c.push_request(1, &meta, Flags::default(), &[]);
    c.enc
        .message(
            RequestId(1),
            Flags::default(),
            &encode(&CountReq { n: 100_000, ms: 10 }),
        )
        .unwrap();
    c.enc.end(RequestId(1));
    c.flush();
    let mut got = 0;
    let end = loop {
        let f = c.frame();
        match f.frame_type() {
            FrameType::Message => got += 1,
            FrameType::Response => break util::to_resp(&f),
            other => panic!("{other:?}"),
        }
    };
    end.expect_code(Code::DEADLINE_EXCEEDED, "deadline exceeded");
    assert!(got >= 1, "messages came before the deadline");
    let outcome = ends.recv_timeout(util::WAIT).unwrap();
    assert_eq!(outcome.unwrap_err().code(), Code::DEADLINE_EXCEEDED);
    nothing_else_was_sent(&mut c);
}

fn connection_reset_mid_stream_cancels_the_handler(mode: Mode) {
    let probe = Arc::new(Probe::default());
    let server = server(mode, &probe);
    let ends = probe.ends();
    let mut c = RawClient::connect(server.local_addr());
    open_long_count(&mut c);
    messages(&mut c, 1, 1);
    drop(c);
    let outcome = ends.recv_timeout(util::WAIT).unwrap();
    assert_eq!(outcome.unwrap_err().code(), Code::CANCELLED);
    util::eventually("the handler to stop", || {
        probe.running.load(Ordering::SeqCst) == 0
    });
    bystander_is_served(&server);
}

fn stream_limit_refuses_streams_and_unary_calls_go_on(mode: Mode) {
    let probe = Arc::new(Probe::default());
    // Two workers: one stream slot by default.
    let server = server(mode, &probe);
    let mut c = RawClient::connect(server.local_addr());
    open_hold(&mut c, 1);
    util::eventually("the first stream to run", || {
        probe.running.load(Ordering::SeqCst) == 1
    });
    let mut other = RawClient::connect(server.local_addr());
    open_hold(&mut other, 2);
    other.response().expect_code(
        Code::RESOURCE_EXHAUSTED,
        "too many streams open on the server (limit 1)",
    );
    other.call(3, "/st.S/Unary", &1u32);
    assert_eq!(other.response().decode::<u32>(), 2);
    c.call(4, "/st.S/Unary", &5u32);
    assert_eq!(c.response().decode::<u32>(), 6);
    // The slot comes back when the stream ends.
    c.cancel(1);
    c.response().expect_code(Code::CANCELLED, "cancelled");
    util::eventually("the first stream to end", || {
        probe.running.load(Ordering::SeqCst) == 0
    });
    let mut again = RawClient::connect(server.local_addr());
    open(
        &mut again,
        5,
        "/st.S/Count",
        &[CountReq { n: 1, ms: 0 }],
        true,
    );
    let (ticks, end): (Vec<Tick>, _) = read_stream(&mut again, 5);
    assert_eq!((ticks.len(), end.code), (1, Code::OK));
}

fn a_thousand_streams_opened_and_never_fed(mode: Mode) {
    let probe = Arc::new(Probe::default());
    let server = util::builder(mode)
        .service(stream_service(&probe))
        .limits(syncrpc::server::Limits {
            max_streams: Some(8),
            ..util::limits()
        })
        .workers(10)
        .bind("127.0.0.1:0")
        .unwrap();
    let mut c = RawClient::connect(server.local_addr());
    for id in 1..=1000 {
        c.push_request(id, &open_meta("/st.S/Sum"), Flags::default(), &[]);
    }
    c.flush();
    // Eight run (waiting for messages that never come); the rest are
    // refused at once.
    let mut refused = 0;
    for _ in 0..992 {
        let r = c.response();
        r.expect_code(Code::RESOURCE_EXHAUSTED, "too many streams");
        refused += 1;
    }
    assert_eq!(refused, 992);
    c.call(2000, "/st.S/Unary", &1u32);
    assert_eq!(c.response().decode::<u32>(), 2);
    bystander_is_served(&server);
    // Closing the connection frees all eight.
    drop(c);
    let mut again = RawClient::connect(server.local_addr());
    util::eventually("the stream slots to come back", || {
        open(
            &mut again,
            1,
            "/st.S/Count",
            &[CountReq { n: 1, ms: 0 }],
            true,
        );
        let (_, end): (Vec<Tick>, _) = read_stream(&mut again, 1);
        end.code == Code::OK
    });
}

fn streams_interleave_with_unary_calls_in_order(mode: Mode) {
    let probe = Arc::new(Probe::default());
    let server = server(mode, &probe);
    let mut c = RawClient::connect(server.local_addr());
    open::<String>(&mut c, 1, "/st.S/Chat", &[], false);
    for i in 0..200u32 {
        c.enc
            .message(RequestId(1), Flags::default(), &encode(&i.to_string()))
            .unwrap();
        c.push_request(
            1000 + i,
            &RequestMeta::new("/st.S/Unary"),
            Flags::default(),
            &encode(&i),
        );
    }
    c.enc.end(RequestId(1));
    c.flush();
    let mut echoed = Vec::new();
    let mut answered = 0;
    let mut ended = false;
    while !ended || answered < 200 {
        let f = c.frame();
        match (f.frame_type(), f.request_id().0) {
            (FrameType::Message, 1) => {
                echoed.push(syncrpc::codec::decode_body::<String>(&f.body, 64).unwrap())
            }
            (FrameType::Response, 1) => {
                assert_eq!(util::to_resp(&f).code, Code::OK);
                ended = true;
            }
            (FrameType::Response, id) => {
                let r = util::to_resp(&f);
                assert_eq!(r.decode::<u32>(), id - 1000 + 1);
                answered += 1;
            }
            other => panic!("{other:?}"),
        }
    }
    let want: Vec<String> = (0..200).map(|i: u32| i.to_string()).collect();
    assert_eq!(echoed, want, "the stream's messages in order");
}

fn a_slow_reader_holds_the_server_to_its_window(mode: Mode) {
    let probe = Arc::new(Probe::default());
    let server = server(mode, &probe);
    let ends = probe.ends();
    let mut c = RawClient::connect(server.local_addr());
    // 64 KiB messages, a 1 GiB worth, to a client that reads nothing and
    // grants nothing: the handler blocks after the window (4 messages,
    // the fourth overdrawing it... exactly 4 = 256 KiB, then closed).
    open_raw(&mut c, 1, "/st.S/Big", &big(16 * 1024, 64 * 1024));
    util::eventually("the window to fill", || {
        probe.sent.load(Ordering::SeqCst) == 4
    });
    // Other connections and unary calls meanwhile.
    for _ in 0..3 {
        bystander_is_served(&server);
    }
    assert_eq!(
        probe.sent.load(Ordering::SeqCst),
        4,
        "no send past the window"
    );
    // Reading and granting lets it go on.
    assert_eq!(messages(&mut c, 1, 4), [64 * 1024; 4]);
    grant(&mut c, 1, 64 * 1024);
    assert_eq!(messages(&mut c, 1, 1), [64 * 1024]);
    c.cancel(1);
    let outcome = ends.recv_timeout(util::WAIT).unwrap();
    assert_eq!(outcome.unwrap_err().code(), Code::CANCELLED);
}

fn shutdown_lets_open_streams_finish_and_refuses_new_ones(mode: Mode) {
    let probe = Arc::new(Probe::default());
    let server = util::builder(mode)
        .service(stream_service(&probe))
        .timeouts(syncrpc::server::Timeouts {
            shutdown: Duration::from_secs(10),
            ..syncrpc::server::Timeouts::default()
        })
        .workers(4)
        .bind("127.0.0.1:0")
        .unwrap();
    let mut c = RawClient::connect(server.local_addr());
    // A client stream, open before the GOAWAY, still fed after it.
    open::<Value>(&mut c, 1, "/st.S/Sum", &[Value { v: 1 }], false);
    // The handler reads the first message before the shutdown starts.
    c.call(9, "/st.S/Unary", &1u32);
    assert_eq!(c.response().decode::<u32>(), 2);
    let handle = server.handle();
    let stopper = std::thread::spawn(move || handle.shutdown());
    assert_eq!(c.goaway().0, Code::UNAVAILABLE);
    // A stream opened after the GOAWAY never runs.
    open(&mut c, 3, "/st.S/Count", &[CountReq { n: 1, ms: 0 }], true);
    c.response().expect_code(Code::UNAVAILABLE, "shutting down");
    // The open one takes its remaining messages and ends OK.
    for v in 2..=4 {
        c.enc
            .message(RequestId(1), Flags::default(), &encode(&Value { v }))
            .unwrap();
    }
    c.enc.end(RequestId(1));
    c.flush();
    let (totals, end): (Vec<Total>, _) = read_stream(&mut c, 1);
    assert_eq!(totals, [Total { sum: 10, count: 4 }]);
    assert_eq!(end.code, Code::OK);
    drop(c);
    let report = stopper.join().unwrap();
    assert!(report.is_clean(), "{report:?}");
}

fn shutdown_timeout_ends_a_stream_cancelled(mode: Mode) {
    let probe = Arc::new(Probe::default());
    let server = util::builder(mode)
        .service(stream_service(&probe))
        .timeouts(syncrpc::server::Timeouts {
            shutdown: Duration::from_millis(200),
            ..syncrpc::server::Timeouts::default()
        })
        .bind("127.0.0.1:0")
        .unwrap();
    let ends = probe.ends();
    let mut c = RawClient::connect(server.local_addr());
    open_hold(&mut c, 1);
    util::eventually("the stream to run", || {
        probe.running.load(Ordering::SeqCst) == 1
    });
    let handle = server.handle();
    let stopper = std::thread::spawn(move || handle.shutdown());
    assert_eq!(c.goaway().0, Code::UNAVAILABLE);
    c.response().expect_code(Code::CANCELLED, "shutting down");
    let outcome = ends.recv_timeout(util::WAIT).unwrap();
    assert_eq!(outcome.unwrap_err().code(), Code::CANCELLED);
    let report = stopper.join().unwrap();
    assert!(!report.is_clean(), "{report:?}");
}

fn filters_see_the_opening_and_the_end_status(mode: Mode) {
    let (tx, rx) = mpsc::channel();
    let tx = std::sync::Mutex::new(tx);
    let probe = Arc::new(Probe::default());
    let server = util::builder(mode)
        .service(stream_service(&probe))
        .filter(
            move |ctx: &Context, req: syncrpc::Request, next: syncrpc::Next<'_>| {
                let opening = (
                    ctx.method().to_owned(),
                    req.is_stream(),
                    ctx.metadata()
                        .get("who")
                        .and_then(|v| v.as_str().map(str::to_owned)),
                    ctx.peer_addr().is_some(),
                );
                let reply = next.run(ctx, req);
                let end = reply.as_ref().err().map(Status::code);
                tx.lock().unwrap().send((opening, end)).unwrap();
                reply
            },
        )
        .bind("127.0.0.1:0")
        .unwrap();
    let mut c = RawClient::connect(server.local_addr());
    let mut meta = open_meta("/st.S/Fails");
    meta.md.insert("who", "tester");
    c.push_request(1, &meta, Flags::default(), &[]);
    c.enc
        .message(RequestId(1), Flags::default(), &encode(&2u32))
        .unwrap();
    c.enc.end(RequestId(1));
    c.flush();
    let (ticks, end): (Vec<u32>, _) = read_stream(&mut c, 1);
    assert_eq!(ticks, [0, 1]);
    end.expect_code(Code::ABORTED, "gave up");
    let ((method, is_stream, who, peer), status) = rx.recv_timeout(util::WAIT).unwrap();
    assert_eq!(method, "/st.S/Fails");
    assert!(is_stream && peer);
    assert_eq!(who.as_deref(), Some("tester"));
    assert_eq!(status, Some(Code::ABORTED));
}

fn handler_error_after_messages_ends_the_stream_with_it(mode: Mode) {
    let probe = Arc::new(Probe::default());
    let server = server(mode, &probe);
    let mut c = RawClient::connect(server.local_addr());
    open(&mut c, 1, "/st.S/Fails", &[3u32], true);
    let (ticks, end): (Vec<u32>, _) = read_stream(&mut c, 1);
    assert_eq!(ticks, [0, 1, 2]);
    end.expect_code(Code::ABORTED, "gave up after the messages");
    assert!(end.trace_id.is_some(), "an error carries its trace id");
}

/// With inline handlers there are no workers: each stream runs on a
/// thread of its own, so the reading thread keeps routing its messages.
#[test]
fn inline_handlers_run_each_stream_on_its_own_thread() {
    util::init_logging();
    for mode in [Mode::Event, Mode::Thread] {
        let probe = Arc::new(Probe::default());
        let server = util::builder(mode)
            .service(stream_service(&probe))
            .inline_handlers(true)
            .bind("127.0.0.1:0")
            .unwrap();
        let mut c = RawClient::connect(server.local_addr());
        open::<String>(&mut c, 1, "/st.S/Chat", &[], false);
        for word in ["a", "b"] {
            c.enc
                .message(RequestId(1), Flags::default(), &encode(&word))
                .unwrap();
            c.flush();
            let f = c.frame();
            assert_eq!(f.frame_type(), FrameType::Message, "{mode:?} {f:?}");
        }
        // Unary calls are served inline meanwhile.
        c.call(2, "/st.S/Unary", &1u32);
        assert_eq!(c.response().decode::<u32>(), 2);
        c.enc.end(RequestId(1));
        c.flush();
        assert_eq!(c.response().code, Code::OK);
    }
}

/// The value of gauge `name` in a `/metrics` scrape of `addr`.
fn gauge(addr: std::net::SocketAddr, name: &str) -> i64 {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(util::WAIT)).unwrap();
    s.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .unwrap();
    let mut text = String::new();
    s.read_to_string(&mut text).unwrap();
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' '))
        .unwrap_or_else(|| panic!("no {name} in {text}"))
        .trim()
        .parse()
        .unwrap()
}

fn metrics_show_the_open_streams_and_their_limit(mode: Mode) {
    let probe = Arc::new(Probe::default());
    let server = server(mode, &probe);
    let addr = server.local_addr();
    assert_eq!(gauge(addr, "syncrpc_streams_max"), 1);
    assert_eq!(gauge(addr, "syncrpc_streams_open"), 0);
    let mut c = RawClient::connect(addr);
    open_hold(&mut c, 1);
    util::eventually("the stream to run", || {
        probe.running.load(Ordering::SeqCst) == 1
    });
    assert_eq!(gauge(addr, "syncrpc_streams_open"), 1);
    c.cancel(1);
    c.response().expect_code(Code::CANCELLED, "cancelled");
    util::eventually("the stream's slot to come back", || {
        gauge(addr, "syncrpc_streams_open") == 0
    });
}

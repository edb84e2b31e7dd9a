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
                    sink.send(&Tick { i })?;
                }
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
    let _ = (WindowMeta::new(1), INITIAL_WINDOW, mpsc::channel::<()>());
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

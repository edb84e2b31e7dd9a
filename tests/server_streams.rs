//! The stream frames of protocol revision 1.1 around unary methods: a
//! REQUEST with `stream: true` for a unary method is refused
//! INVALID_ARGUMENT and never run (for an unknown one, UNIMPLEMENTED), MESSAGE, END and WINDOW for ids that are
//! not open streams are ignored, and a malformed stream frame is still a
//! connection error. Every other call on the connection is served.

mod util;

use std::collections::HashMap;
use std::thread;
use std::time::Duration;

use syncrpc::codec::{Encoder, Flags, FrameType, RequestId, RequestMeta, WindowMeta};
use syncrpc::server::{Limits, Timeouts};
use syncrpc::Code;
use util::{echo_service, encode, gate_service, say, Mode, RawClient, Resp};

per_mode!(
    stream_request_is_refused_and_not_run,
    stream_request_after_refusal_frames_are_ignored,
    stream_frames_for_unknown_ids_are_ignored,
    stream_frames_for_a_unary_call_in_flight_are_ignored,
    oneway_with_stream_is_not_run,
    malformed_stream_frames_are_connection_errors,
    stream_after_goaway_is_refused_unrun,
);

/// `{"method": method, "stream": true}`.
fn stream_meta(method: &str) -> RequestMeta<'_> {
    RequestMeta {
        stream: true,
        ..RequestMeta::new(method)
    }
}

/// Reads `n` RESPONSE frames, keyed by id; fails on any other frame.
#[track_caller]
fn responses(c: &mut RawClient, n: usize) -> HashMap<u32, Resp> {
    let mut by_id = HashMap::new();
    for _ in 0..n {
        let r = c.response();
        assert!(by_id.insert(r.id, r).is_none(), "two answers for one id");
    }
    by_id
}

/// A PING answered by the very next frame: nothing else was sent before it.
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

fn stream_request_is_refused_and_not_run(mode: Mode) {
    let (gate, g) = gate_service();
    let server = util::builder(mode)
        .service(gate)
        .bind("127.0.0.1:0")
        .unwrap();
    let mut c = RawClient::connect(server.local_addr());

    // A known method (once with the empty body a stream opens with, once
    // with a body the method would take), an unknown one, and a unary call
    // of the known one, in one write.
    c.push_request(9, &stream_meta("/gate.Gate/Count"), Flags::default(), &[]);
    c.push_request(
        13,
        &stream_meta("/gate.Gate/Count"),
        Flags::default(),
        &encode(&()),
    );
    c.push_request(10, &stream_meta("/gate.Gate/Nope"), Flags::default(), &[]);
    c.push_request(
        11,
        &RequestMeta::new("/gate.Gate/Count"),
        Flags::default(),
        &encode(&()),
    );
    c.flush();
    let r = responses(&mut c, 4);
    r[&9].expect_code(
        Code::INVALID_ARGUMENT,
        "method /gate.Gate/Count is not a streaming method",
    );
    assert!(r[&9].body.is_empty());
    r[&13].expect_code(Code::INVALID_ARGUMENT, "not a streaming method");
    r[&10].expect_code(Code::UNIMPLEMENTED, "unknown method /gate.Gate/Nope");
    assert_eq!(r[&11].code, Code::OK, "{:?}", r[&11]);
    assert_eq!(g.calls(), 1, "only the unary call ran");

    // `stream: false` is a unary call like any other.
    let unary = RequestMeta {
        stream: false,
        ..RequestMeta::new("/gate.Gate/Count")
    };
    c.call_meta(12, &unary, Flags::default(), &encode(&()));
    assert_eq!(c.response().code, Code::OK);
    assert_eq!(g.calls(), 2);
    nothing_else_was_sent(&mut c);
}

/// A client that opened a stream sends its messages before it learns the
/// stream was refused: they cross the RESPONSE and are ignored, and the
/// connection goes on.
fn stream_request_after_refusal_frames_are_ignored(mode: Mode) {
    let server = util::builder(mode)
        .service(echo_service())
        .bind("127.0.0.1:0")
        .unwrap();
    let mut c = RawClient::connect(server.local_addr());
    let mut enc = Encoder::new();
    let id = RequestId(9);
    enc.request(id, Flags::default(), &stream_meta("/echo.Echo/Say"), &[])
        .unwrap();
    enc.message(id, Flags::default(), &encode(&say("one")))
        .unwrap();
    enc.window(id, WindowMeta::new(65536).unwrap());
    enc.message(id, Flags::default(), &encode(&say("two")))
        .unwrap();
    enc.end(id);
    c.write_bytes(enc.as_slice());
    c.response()
        .expect_code(Code::INVALID_ARGUMENT, "not a streaming method");
    nothing_else_was_sent(&mut c);
    // The id is free again for a unary call.
    c.call(9, "/echo.Echo/Say", &say("after"));
    assert_eq!(c.response().decode::<util::Say>(), say("after"));
}

/// MESSAGE, END and WINDOW for ids never opened, including a MESSAGE over
/// the body limit, which is skipped as it arrives: nothing is answered and
/// the call sent after them is served.
fn stream_frames_for_unknown_ids_are_ignored(mode: Mode) {
    let server = util::builder(mode)
        .limits(Limits {
            max_body: 1024,
            ..Limits::default()
        })
        .service(echo_service())
        .bind("127.0.0.1:0")
        .unwrap();
    let mut c = RawClient::connect(server.local_addr());
    let mut enc = Encoder::new();
    enc.message(RequestId(5), Flags::default(), &encode(&say("stray")))
        .unwrap();
    enc.message(RequestId(6), Flags::default(), &[0xab; 4096])
        .unwrap();
    enc.window(RequestId(7), WindowMeta::new(1).unwrap());
    enc.end(RequestId(8));
    enc.end(RequestId(8));
    enc.request(
        RequestId(1),
        Flags::default(),
        &RequestMeta::new("/echo.Echo/Say"),
        &encode(&say("served")),
    )
    .unwrap();
    c.write_bytes(enc.as_slice());
    let r = c.response();
    assert_eq!(r.id, 1);
    assert_eq!(r.decode::<util::Say>(), say("served"));
    nothing_else_was_sent(&mut c);
}

/// An id in flight as a unary call is not an open stream either: stream
/// frames naming it change nothing, and the call is answered once.
fn stream_frames_for_a_unary_call_in_flight_are_ignored(mode: Mode) {
    let (gate, g) = gate_service();
    let server = util::builder(mode)
        .service(gate)
        .bind("127.0.0.1:0")
        .unwrap();
    let mut c = RawClient::connect(server.local_addr());
    c.call(3, "/gate.Gate/Block", &());
    g.wait_started(1);
    let mut enc = Encoder::new();
    enc.message(RequestId(3), Flags::default(), &encode(&()))
        .unwrap();
    enc.window(RequestId(3), WindowMeta::new(100).unwrap());
    enc.end(RequestId(3));
    c.write_bytes(enc.as_slice());
    nothing_else_was_sent(&mut c);
    g.release(1);
    let r = c.response();
    assert_eq!((r.id, r.decode::<String>().as_str()), (3, "done"));
    nothing_else_was_sent(&mut c);
}

/// A ONEWAY is never answered, so one with `stream: true` is dropped
/// unrun; the connection goes on.
fn oneway_with_stream_is_not_run(mode: Mode) {
    let (gate, g) = gate_service();
    let server = util::builder(mode)
        .service(gate)
        .bind("127.0.0.1:0")
        .unwrap();
    let mut c = RawClient::connect(server.local_addr());
    // With a body the method would take, so that running it would count.
    c.push_oneway(
        1,
        &stream_meta("/gate.Gate/Count"),
        Flags::default(),
        &encode(&()),
    );
    c.push_request(
        2,
        &RequestMeta::new("/gate.Gate/Count"),
        Flags::default(),
        &encode(&()),
    );
    c.flush();
    let r = c.response();
    assert_eq!((r.id, r.code), (2, Code::OK));
    nothing_else_was_sent(&mut c);
    assert_eq!(g.calls(), 1, "the ONEWAY stream did not run");
}

/// A malformed stream frame breaks the framing rules whatever the stream
/// state: GOAWAY INTERNAL with the reason, then the connection closes,
/// and other connections go on.
fn malformed_stream_frames_are_connection_errors(mode: Mode) {
    let server = util::builder(mode)
        .service(echo_service())
        .bind("127.0.0.1:0")
        .unwrap();
    let mut bystander = RawClient::connect(server.local_addr());
    let frame = |frame_type: FrameType, meta: &[u8], body: &[u8]| {
        let mut out = vec![0u8; syncrpc::codec::HEADER_LEN];
        syncrpc::codec::Header {
            frame_type,
            flags: Flags::default(),
            meta_len: meta.len() as u16,
            request_id: RequestId(9),
            body_len: body.len() as u32,
        }
        .encode(&mut out);
        out.extend_from_slice(meta);
        out.extend_from_slice(body);
        out
    };
    let cases = [
        (
            frame(FrameType::Window, b"\x81\xa5bytes\x00", &[]),
            "bad WINDOW frame: invalid meta: key `bytes`: invalid value: integer `0`, \
             expected an integer from 1 to 2147483647",
        ),
        (
            frame(FrameType::Window, b"\x81\xa5bytes\xce\x80\x00\x00\x00", &[]),
            "bad WINDOW frame: invalid meta: key `bytes`: invalid value: \
             integer `2147483648`, expected an integer from 1 to 2147483647",
        ),
        (
            frame(FrameType::Window, b"\x80", &[]),
            "bad WINDOW frame: invalid meta: missing field `bytes`",
        ),
        (
            frame(FrameType::Window, b"\x81\xa5bytes\x01", b"\x00"),
            "WINDOW frame must have no body, has body_len 1",
        ),
        (
            frame(FrameType::Message, b"\x80", b"\x00"),
            "MESSAGE frame must have no meta, has meta_len 1",
        ),
        (
            frame(FrameType::End, &[], b"\x00"),
            "END frame must be empty, has meta_len 0 and body_len 1",
        ),
    ];
    for (bytes, text) in cases {
        let mut c = RawClient::connect(server.local_addr());
        c.write_bytes(&bytes);
        let (code, message) = c.goaway();
        assert_eq!((code, message.as_str()), (Code::INTERNAL, text));
        c.expect_closed();
    }
    bystander.call(1, "/echo.Echo/Say", &say("fine"));
    assert_eq!(bystander.response().decode::<util::Say>(), say("fine"));
}

/// A stream read after the GOAWAY is refused like any other: no server
/// of this version could run it, so it gets the same INVALID_ARGUMENT
/// rather than UNAVAILABLE, which would invite a retry elsewhere that
/// fails the same way. It is not run, and not counted as refused by the
/// shutdown.
fn stream_after_goaway_is_refused_unrun(mode: Mode) {
    let (gate, g) = gate_service();
    let server = util::builder(mode)
        .service(gate)
        .timeouts(Timeouts {
            shutdown: Duration::from_secs(5),
            ..Timeouts::default()
        })
        .bind("127.0.0.1:0")
        .unwrap();
    let mut c = RawClient::connect(server.local_addr());
    c.call(1, "/gate.Gate/Block", &());
    g.wait_started(1);
    let handle = server.handle();
    let stopper = thread::spawn(move || handle.shutdown());
    assert_eq!(c.goaway().0, Code::UNAVAILABLE);

    c.call_meta(
        2,
        &stream_meta("/gate.Gate/Count"),
        Flags::default(),
        &encode(&()),
    );
    c.response()
        .expect_code(Code::INVALID_ARGUMENT, "not a streaming method");
    c.call(3, "/gate.Gate/Count", &());
    c.response().expect_code(Code::UNAVAILABLE, "shutting down");
    assert_eq!(g.calls(), 0);

    g.release(1);
    let r = c.response();
    assert_eq!((r.id, r.code), (1, Code::OK));
    drop(c);
    let report = stopper.join().unwrap();
    assert_eq!((report.drained, report.refused), (1, 1), "{report:?}");
    drop(server);
}

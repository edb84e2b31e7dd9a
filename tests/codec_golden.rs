//! The example frames of `docs/protocol.md`, as literal wire bytes: each is
//! decoded to exactly the values it stands for, and encoding those values
//! gives the same bytes back. A client in another language can be checked
//! against the same hex.

mod codec;

use bytes::BytesMut;
use serde::{Deserialize, Serialize};
use syncrpc::codec::{
    decode_body, encode_body, Decoded, Decoder, Encoder, Flags, Frame, FrameLimits, FrameType,
    GoawayMeta, ProtocolError, RequestId, RequestMeta, ResponseMeta, Side, WindowMeta,
    DEFAULT_MAX_BODY_DEPTH,
};
use syncrpc::Code;

use codec::hex;

/// REQUEST id 7, `/echo.Echo/Say`, timeout 250 ms, body `{"text": "hi"}`.
const REQUEST: &str = "5352010100000024000000070000000982a66d6574686f64ae2f6563686f2e4563686f2f536179aa74696d656f75745f6d73ccfa81a474657874a26869";
/// RESPONSE id 7, OK, body `{"text": "hi"}`.
const RESPONSE_OK: &str = "5352010200000007000000070000000981a4636f64650081a474657874a26869";
/// RESPONSE id 7, UNIMPLEMENTED, with a message and no body.
const RESPONSE_UNIMPLEMENTED: &str = "535201020000002e000000070000000082a4636f64650ca76d657373616765be756e6b6e6f776e206d6574686f64202f6563686f2e4563686f2f4e6f7065";
/// PING carrying token 42.
const PING: &str = "53520105000000000000002a00000000";
/// GOAWAY UNAVAILABLE, "server shutting down".
const GOAWAY: &str = "5352010700000024000000000000000082a4636f64650ea76d657373616765b4736572766572207368757474696e6720646f776e";

/// REQUEST id 9 opening a stream on `/echo.Echo/Count` (revision 1.1).
const STREAM_REQUEST: &str = "5352010100000021000000090000000082a66d6574686f64b02f6563686f2e4563686f2f436f756e74a673747265616dc3";
/// MESSAGE of stream 9, body `{"n": 2}`.
const MESSAGE: &str = "5352010800000000000000090000000481a16e02";
/// END of stream 9.
const END: &str = "53520109000000000000000900000000";
/// WINDOW of stream 9, granting 65536 bytes.
const WINDOW: &str = "5352010a0000000c000000090000000081a56279746573ce00010000";

/// The body of the echo examples.
#[derive(Serialize, Deserialize, Debug, PartialEq)]
struct Say {
    text: String,
}

/// Decodes `bytes` as exactly one whole frame.
#[track_caller]
fn decode_one(side: Side, bytes: &[u8]) -> Frame {
    let mut dec = Decoder::new(side, FrameLimits::default());
    let mut buf = BytesMut::from(bytes);
    let frame = match dec.decode(&mut buf) {
        Ok(Some(Decoded::Frame(f))) => f,
        other => panic!("expected a frame, got {other:?}"),
    };
    assert!(buf.is_empty(), "{} bytes left over", buf.len());
    assert_eq!(dec.finish(&buf), Ok(()));
    frame
}

fn say_hi() -> Vec<u8> {
    let mut body = Vec::new();
    encode_body(&Say { text: "hi".into() }, &mut body).unwrap();
    body
}

#[test]
fn request() {
    let wire = hex(REQUEST);
    let frame = decode_one(Side::Server, &wire);
    assert_eq!(frame.frame_type(), FrameType::Request);
    assert_eq!(frame.request_id(), RequestId(7));
    assert_eq!(frame.header.flags, Flags::default());
    assert_eq!(frame.header.meta_len, 36);
    assert_eq!(frame.header.body_len, 9);

    let meta = RequestMeta::decode(&frame.meta).unwrap();
    assert_eq!(meta.method, "/echo.Echo/Say");
    assert_eq!(meta.timeout_ms, 250);
    assert_eq!(meta.trace_id, None);
    assert_eq!(meta.caller, None);
    assert!(meta.md.is_empty());
    let body: Say = decode_body(&frame.body, DEFAULT_MAX_BODY_DEPTH).unwrap();
    assert_eq!(body.text, "hi");

    // From values, not from the decoded sections: the field order of
    // RequestMeta (method, then timeout_ms) must be the wire's.
    let meta = RequestMeta {
        timeout_ms: 250,
        ..RequestMeta::new("/echo.Echo/Say")
    };
    let mut enc = Encoder::new();
    enc.request(RequestId(7), Flags::default(), &meta, &say_hi())
        .unwrap();
    assert_eq!(enc.as_slice(), &wire[..]);
}

#[test]
fn response_ok() {
    let wire = hex(RESPONSE_OK);
    let frame = decode_one(Side::Client, &wire);
    assert_eq!(frame.frame_type(), FrameType::Response);
    assert_eq!(frame.request_id(), RequestId(7));
    assert_eq!(frame.header.flags, Flags::default());

    let meta = ResponseMeta::decode(&frame.meta).unwrap();
    assert_eq!(meta.code(), Code::OK);
    assert_eq!(meta.message, None);
    assert_eq!(meta.trace_id, None);
    assert!(meta.md.is_empty());
    let body: Say = decode_body(&frame.body, DEFAULT_MAX_BODY_DEPTH).unwrap();
    assert_eq!(body.text, "hi");

    let mut enc = Encoder::new();
    enc.response(
        RequestId(7),
        Flags::default(),
        &ResponseMeta::new(Code::OK),
        &say_hi(),
    )
    .unwrap();
    assert_eq!(enc.as_slice(), &wire[..]);
}

#[test]
fn response_unimplemented() {
    let wire = hex(RESPONSE_UNIMPLEMENTED);
    let frame = decode_one(Side::Client, &wire);
    assert_eq!(frame.frame_type(), FrameType::Response);
    assert_eq!(frame.request_id(), RequestId(7));
    assert!(frame.body.is_empty());

    let meta = ResponseMeta::decode(&frame.meta).unwrap();
    assert_eq!(meta.code(), Code::UNIMPLEMENTED);
    assert_eq!(meta.message, Some("unknown method /echo.Echo/Nope"));
    let status = meta.to_status();
    assert_eq!(
        status.to_string(),
        "UNIMPLEMENTED (12): unknown method /echo.Echo/Nope"
    );

    let meta = ResponseMeta {
        message: Some("unknown method /echo.Echo/Nope"),
        ..ResponseMeta::new(Code::UNIMPLEMENTED)
    };
    let mut enc = Encoder::new();
    enc.response(RequestId(7), Flags::default(), &meta, &[])
        .unwrap();
    assert_eq!(enc.as_slice(), &wire[..]);
}

#[test]
fn ping_is_accepted_by_both_sides() {
    let wire = hex(PING);
    for side in [Side::Server, Side::Client] {
        let frame = decode_one(side, &wire);
        assert_eq!(frame.frame_type(), FrameType::Ping, "{side:?}");
        assert_eq!(frame.request_id(), RequestId(42), "{side:?}");
        assert!(frame.meta.is_empty() && frame.body.is_empty(), "{side:?}");
    }
    let mut enc = Encoder::new();
    enc.ping(RequestId(42));
    assert_eq!(enc.as_slice(), &wire[..]);
}

#[test]
fn goaway() {
    let wire = hex(GOAWAY);
    let frame = decode_one(Side::Client, &wire);
    assert_eq!(frame.frame_type(), FrameType::Goaway);
    assert_eq!(frame.request_id(), RequestId(0));
    assert!(frame.body.is_empty());

    let meta = GoawayMeta::decode(&frame.meta).unwrap();
    assert_eq!(meta.code(), Code::UNAVAILABLE);
    assert_eq!(meta.message, "server shutting down");

    let mut enc = Encoder::new();
    enc.goaway(&GoawayMeta::new(Code::UNAVAILABLE, "server shutting down"))
        .unwrap();
    assert_eq!(enc.as_slice(), &wire[..]);
}

/// A server's side of the examples, back to back in one read and in one
/// encoder buffer, as they would share a connection.
#[test]
fn server_frames_back_to_back() {
    let wire: Vec<u8> = [RESPONSE_OK, RESPONSE_UNIMPLEMENTED, PING, GOAWAY]
        .iter()
        .flat_map(|h| hex(h))
        .collect();

    let mut dec = Decoder::new(Side::Client, FrameLimits::default());
    let mut buf = BytesMut::from(&wire[..]);
    let mut types = Vec::new();
    while let Some(decoded) = dec.decode(&mut buf).unwrap() {
        match decoded {
            Decoded::Frame(f) => types.push(f.frame_type()),
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(
        types,
        [
            FrameType::Response,
            FrameType::Response,
            FrameType::Ping,
            FrameType::Goaway
        ]
    );
    assert!(buf.is_empty());

    let mut enc = Encoder::new();
    enc.response(
        RequestId(7),
        Flags::default(),
        &ResponseMeta::new(Code::OK),
        &say_hi(),
    )
    .unwrap();
    let nope = ResponseMeta {
        message: Some("unknown method /echo.Echo/Nope"),
        ..ResponseMeta::new(Code::UNIMPLEMENTED)
    };
    enc.response(RequestId(7), Flags::default(), &nope, &[])
        .unwrap();
    enc.ping(RequestId(42));
    enc.goaway(&GoawayMeta::new(Code::UNAVAILABLE, "server shutting down"))
        .unwrap();
    assert_eq!(enc.as_slice(), &wire[..]);
}

/// The body of the stream examples.
#[derive(Serialize, Deserialize, Debug, PartialEq)]
struct Count {
    n: u32,
}

#[test]
fn stream_request() {
    let wire = hex(STREAM_REQUEST);
    let frame = decode_one(Side::Server, &wire);
    assert_eq!(frame.frame_type(), FrameType::Request);
    assert_eq!(frame.request_id(), RequestId(9));
    assert_eq!(frame.header.meta_len, 33);
    assert!(frame.body.is_empty(), "a stream opens with an empty body");

    let meta = RequestMeta::decode(&frame.meta).unwrap();
    assert_eq!(meta.method, "/echo.Echo/Count");
    assert!(meta.stream);
    assert_eq!(meta.timeout_ms, 0);

    let meta = RequestMeta {
        stream: true,
        ..RequestMeta::new("/echo.Echo/Count")
    };
    let mut enc = Encoder::new();
    enc.request(RequestId(9), Flags::default(), &meta, &[])
        .unwrap();
    assert_eq!(enc.as_slice(), &wire[..]);
}

/// `stream: false` is written as no key at all, so a unary REQUEST is the
/// bytes it was before revision 1.1.
#[test]
fn a_unary_request_has_no_stream_key() {
    let meta = RequestMeta {
        timeout_ms: 250,
        stream: false,
        ..RequestMeta::new("/echo.Echo/Say")
    };
    let mut enc = Encoder::new();
    enc.request(RequestId(7), Flags::default(), &meta, &say_hi())
        .unwrap();
    assert_eq!(enc.as_slice(), &hex(REQUEST)[..]);
}

#[test]
fn message_is_accepted_by_both_sides() {
    let wire = hex(MESSAGE);
    for side in [Side::Server, Side::Client] {
        let frame = decode_one(side, &wire);
        assert_eq!(frame.frame_type(), FrameType::Message, "{side:?}");
        assert_eq!(frame.request_id(), RequestId(9), "{side:?}");
        assert_eq!(frame.header.flags, Flags::default(), "{side:?}");
        assert!(frame.meta.is_empty(), "{side:?}");
        let body: Count = decode_body(&frame.body, DEFAULT_MAX_BODY_DEPTH).unwrap();
        assert_eq!(body, Count { n: 2 });
    }
    let mut body = Vec::new();
    encode_body(&Count { n: 2 }, &mut body).unwrap();
    let mut enc = Encoder::new();
    enc.message(RequestId(9), Flags::default(), &body).unwrap();
    assert_eq!(enc.as_slice(), &wire[..]);
}

#[test]
fn end_goes_only_from_client_to_server() {
    let wire = hex(END);
    let frame = decode_one(Side::Server, &wire);
    assert_eq!(frame.frame_type(), FrameType::End);
    assert_eq!(frame.request_id(), RequestId(9));
    assert!(frame.meta.is_empty() && frame.body.is_empty());

    let mut dec = Decoder::new(Side::Client, FrameLimits::default());
    assert_eq!(
        dec.decode(&mut BytesMut::from(&wire[..])),
        Err(ProtocolError::WrongDirection(FrameType::End))
    );

    let mut enc = Encoder::new();
    enc.end(RequestId(9));
    assert_eq!(enc.as_slice(), &wire[..]);
}

#[test]
fn window_is_accepted_by_both_sides() {
    let wire = hex(WINDOW);
    for side in [Side::Server, Side::Client] {
        let frame = decode_one(side, &wire);
        assert_eq!(frame.frame_type(), FrameType::Window, "{side:?}");
        assert_eq!(frame.request_id(), RequestId(9), "{side:?}");
        assert!(frame.body.is_empty(), "{side:?}");
        let meta = WindowMeta::decode(&frame.meta).unwrap();
        assert_eq!(meta.bytes(), 65536, "{side:?}");
    }
    let mut enc = Encoder::new();
    enc.window(RequestId(9), WindowMeta::new(65536).unwrap());
    assert_eq!(enc.as_slice(), &wire[..]);
}

/// A client's side of a stream, back to back in one read: open, one
/// message, a grant for the server's messages, end.
#[test]
fn client_stream_frames_back_to_back() {
    let wire: Vec<u8> = [STREAM_REQUEST, MESSAGE, WINDOW, END]
        .iter()
        .flat_map(|h| hex(h))
        .collect();
    let mut dec = Decoder::new(Side::Server, FrameLimits::default());
    let mut buf = BytesMut::from(&wire[..]);
    let mut seen = Vec::new();
    while let Some(decoded) = dec.decode(&mut buf).unwrap() {
        match decoded {
            Decoded::Frame(f) => seen.push((f.frame_type(), f.request_id())),
            other => panic!("unexpected {other:?}"),
        }
    }
    let id = RequestId(9);
    assert_eq!(
        seen,
        [
            (FrameType::Request, id),
            (FrameType::Message, id),
            (FrameType::Window, id),
            (FrameType::End, id)
        ]
    );
    assert!(buf.is_empty());
}

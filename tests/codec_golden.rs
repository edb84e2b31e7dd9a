//! The example frames of `docs/protocol.md`, as literal wire bytes: each is
//! decoded to exactly the values it stands for, and encoding those values
//! gives the same bytes back. A client in another language can be checked
//! against the same hex.

mod codec;

use bytes::BytesMut;
use serde::{Deserialize, Serialize};
use syncrpc::codec::{
    decode_body, encode_body, Decoded, Decoder, Encoder, Flags, Frame, FrameLimits, FrameType,
    GoawayMeta, RequestId, RequestMeta, ResponseMeta, Side, DEFAULT_MAX_BODY_DEPTH,
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

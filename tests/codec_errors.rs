//! Connection errors, as literal wire bytes, each with its exact text: the
//! text is what the server puts in its GOAWAY INTERNAL, so it must say what
//! was wrong.
//!
//! Headers are written field by field:
//! `magic version type flags reserved meta_len request_id body_len`.

mod codec;

use bytes::BytesMut;
use syncrpc::codec::{
    Compression, Decoded, Decoder, Encoding, FrameLimits, FrameType, ProtocolError, RequestId,
    RequestMeta, Side, WindowMeta,
};

use codec::hex;

/// Feeds `wire` to a fresh decoder for `side` and returns the error it must
/// raise, with the error's text.
#[track_caller]
fn error(side: Side, wire: &str) -> (ProtocolError, String) {
    let mut dec = Decoder::new(side, FrameLimits::default());
    let mut buf = BytesMut::from(&hex(wire)[..]);
    match dec.decode(&mut buf) {
        Err(e) => {
            let text = e.to_string();
            (e, text)
        }
        Ok(other) => panic!("expected a connection error, got {other:?}"),
    }
}

/// The text of the error `wire` raises on `side`.
#[track_caller]
fn error_text(side: Side, wire: &str) -> String {
    error(side, wire).1
}

#[test]
fn bad_magic() {
    assert_eq!(
        error_text(Side::Server, "5351 01 05 00 00 0000 00000000 00000000"),
        "bad magic 0x5351, expected 0x5352 (\"SR\")"
    );
    // A client that speaks HTTP to the port.
    let http = b"GET / HTTP/1.1\r\nHost: x\r\n\r\n";
    let http: String = http.iter().map(|b| format!("{b:02x}")).collect();
    assert_eq!(
        error_text(Side::Server, &http),
        "bad magic 0x4745, expected 0x5352 (\"SR\")"
    );
}

#[test]
fn bad_version() {
    assert_eq!(
        error_text(Side::Server, "5352 02 05 00 00 0000 00000000 00000000"),
        "unsupported version 2, expected 1"
    );
    assert_eq!(
        error_text(Side::Client, "5352 00 05 00 00 0000 00000000 00000000"),
        "unsupported version 0, expected 1"
    );
}

#[test]
fn frame_type_zero() {
    let (e, text) = error(Side::Server, "5352 01 00 00 00 0000 00000000 00000000");
    assert_eq!(e, ProtocolError::BadFrameType(0));
    assert_eq!(text, "invalid frame type 0, expected 1 to 10");
}

/// 8 to 10 are the stream frames of revision 1.1; 11 and up do not exist.
#[test]
fn frame_type_eleven() {
    assert_eq!(
        error_text(Side::Server, "5352 01 0b 00 00 0000 00000000 00000000"),
        "invalid frame type 11, expected 1 to 10"
    );
    assert_eq!(
        error_text(Side::Client, "5352 01 0b 00 00 0000 00000000 00000000"),
        "invalid frame type 11, expected 1 to 10"
    );
    assert_eq!(
        error_text(Side::Client, "5352 01 ff 00 00 0000 00000000 00000000"),
        "invalid frame type 255, expected 1 to 10"
    );
}

#[test]
fn reserved_flag_bits() {
    for (flags, text) in [
        ("10", "reserved flag bits set: flags 0x10"),
        ("80", "reserved flag bits set: flags 0x80"),
        // Valid low bits do not mask a reserved high one.
        ("f5", "reserved flag bits set: flags 0xf5"),
    ] {
        let wire = format!("5352 01 01 {flags} 00 0000 00000001 00000000");
        assert_eq!(error_text(Side::Server, &wire), text);
    }
}

#[test]
fn reserved_byte() {
    assert_eq!(
        error_text(Side::Server, "5352 01 05 00 01 0000 00000000 00000000"),
        "reserved header byte is 0x01, expected 0"
    );
    assert_eq!(
        error_text(Side::Client, "5352 01 02 00 ff 0000 00000001 00000000"),
        "reserved header byte is 0xff, expected 0"
    );
}

/// Meta over its limit is refused from the header alone, before any meta
/// byte arrives; at the limit the decoder just waits for the bytes.
#[test]
fn meta_over_the_limit() {
    // 16385 = 0x4001; the default limit is 16 KiB.
    let (e, text) = error(Side::Server, "5352 01 01 00 00 4001 00000001 00000000");
    assert_eq!(
        e,
        ProtocolError::MetaTooLarge {
            len: 16385,
            limit: 16384
        }
    );
    assert_eq!(text, "meta too large: 16385 > 16384 bytes");

    let mut dec = Decoder::new(Side::Server, FrameLimits::default());
    let mut buf = BytesMut::from(&hex("5352 01 01 00 00 4000 00000001 00000000")[..]);
    assert_eq!(dec.decode(&mut buf), Ok(None));

    // A configured limit is reported as configured.
    let limits = FrameLimits {
        max_meta: 100,
        ..FrameLimits::default()
    };
    let mut dec = Decoder::new(Side::Client, limits);
    let mut buf = BytesMut::from(&hex("5352 01 02 00 00 0065 00000001 00000000")[..]);
    assert_eq!(
        dec.decode(&mut buf).unwrap_err().to_string(),
        "meta too large: 101 > 100 bytes"
    );
}

#[test]
fn response_sent_to_a_server() {
    let (e, text) = error(Side::Server, "5352 01 02 00 00 0000 00000007 00000000");
    assert_eq!(e, ProtocolError::WrongDirection(FrameType::Response));
    assert_eq!(text, "RESPONSE frame sent in the wrong direction");
    assert_eq!(
        error_text(Side::Server, "5352 01 07 00 00 0000 00000000 00000000"),
        "GOAWAY frame sent in the wrong direction"
    );
}

#[test]
fn request_sent_to_a_client() {
    assert_eq!(
        error_text(Side::Client, "5352 01 01 00 00 0000 00000007 00000000"),
        "REQUEST frame sent in the wrong direction"
    );
    assert_eq!(
        error_text(Side::Client, "5352 01 03 00 00 0000 00000007 00000000"),
        "ONEWAY frame sent in the wrong direction"
    );
    assert_eq!(
        error_text(Side::Client, "5352 01 04 00 00 0000 00000007 00000000"),
        "CANCEL frame sent in the wrong direction"
    );
}

#[test]
fn non_empty_ping() {
    let (e, text) = error(Side::Server, "5352 01 05 00 00 0000 0000002a 00000001");
    assert_eq!(
        e,
        ProtocolError::NotEmpty {
            frame_type: FrameType::Ping,
            meta_len: 0,
            body_len: 1
        }
    );
    assert_eq!(
        text,
        "PING frame must be empty, has meta_len 0 and body_len 1"
    );
    assert_eq!(
        error_text(Side::Client, "5352 01 05 00 00 0001 0000002a 00000000"),
        "PING frame must be empty, has meta_len 1 and body_len 0"
    );
}

/// CANCEL and PONG are bare too: a section on either breaks the framing
/// rule, whichever side receives it.
#[test]
fn non_empty_cancel_and_pong() {
    assert_eq!(
        error_text(Side::Server, "5352 01 04 00 00 0002 00000007 00000000"),
        "CANCEL frame must be empty, has meta_len 2 and body_len 0"
    );
    assert_eq!(
        error_text(Side::Client, "5352 01 06 00 00 0000 0000002a ffffffff"),
        "PONG frame must be empty, has meta_len 0 and body_len 4294967295"
    );
}

#[test]
fn end_sent_to_a_client() {
    let (e, text) = error(Side::Client, "5352 01 09 00 00 0000 00000009 00000000");
    assert_eq!(e, ProtocolError::WrongDirection(FrameType::End));
    assert_eq!(text, "END frame sent in the wrong direction");
}

/// END is bare, like CANCEL.
#[test]
fn non_empty_end() {
    let (e, text) = error(Side::Server, "5352 01 09 00 00 0000 00000009 00000001");
    assert_eq!(
        e,
        ProtocolError::NotEmpty {
            frame_type: FrameType::End,
            meta_len: 0,
            body_len: 1
        }
    );
    assert_eq!(
        text,
        "END frame must be empty, has meta_len 0 and body_len 1"
    );
    assert_eq!(
        error_text(Side::Server, "5352 01 09 00 00 0001 00000009 00000000"),
        "END frame must be empty, has meta_len 1 and body_len 0"
    );
}

/// A MESSAGE is all body; a meta section on one is refused on either side,
/// as soon as its header is in.
#[test]
fn message_with_meta() {
    for side in [Side::Server, Side::Client] {
        let (e, text) = error(side, "5352 01 08 00 00 0001 00000009 00000004");
        assert_eq!(
            e,
            ProtocolError::MessageWithMeta { meta_len: 1 },
            "{side:?}"
        );
        assert_eq!(text, "MESSAGE frame must have no meta, has meta_len 1");
    }
}

/// A WINDOW is all meta; a body on one is refused on either side, before
/// its meta is looked at.
#[test]
fn window_with_body() {
    for side in [Side::Server, Side::Client] {
        let (e, text) = error(side, "5352 01 0a 00 00 0000 00000009 00000001");
        assert_eq!(e, ProtocolError::WindowWithBody { body_len: 1 }, "{side:?}");
        assert_eq!(text, "WINDOW frame must have no body, has body_len 1");
    }
}

/// A WINDOW frame of stream 9 with `meta` (hex) as its meta section.
fn window_frame(meta: &str) -> String {
    let meta = hex(meta);
    let meta_hex: String = meta.iter().map(|b| format!("{b:02x}")).collect();
    format!(
        "5352 01 0a 00 00 {:04x} 00000009 00000000 {meta_hex}",
        meta.len()
    )
}

/// A grant must be an integer from 1 to 2^31-1 under `bytes`, in a meta
/// that is otherwise well-formed: anything else is a connection error on
/// either side, whatever stream the frame names.
#[test]
fn bad_window_meta() {
    let range = "expected an integer from 1 to 2147483647";
    let cases = [
        // {"bytes": 0}, {"bytes": -1}, {"bytes": 2^31}, {"bytes": 2^32}
        (
            "81 a5 6279746573 00",
            format!("invalid value: integer `0`, {range}"),
        ),
        (
            "81 a5 6279746573 ff",
            format!("invalid value: integer `-1`, {range}"),
        ),
        (
            "81 a5 6279746573 ce 80000000",
            format!("invalid value: integer `2147483648`, {range}"),
        ),
        (
            "81 a5 6279746573 cf 0000000100000000",
            format!("invalid value: integer `4294967296`, {range}"),
        ),
        // {"bytes": nil}, {"bytes": "1"}, {"bytes": 1.0}
        (
            "81 a5 6279746573 c0",
            format!("invalid type: unit value, {range}"),
        ),
        (
            "81 a5 6279746573 a1 31",
            format!("invalid type: string \"1\", {range}"),
        ),
        (
            "81 a5 6279746573 cb 3ff0000000000000",
            format!("invalid type: floating point `1.0`, {range}"),
        ),
    ];
    for (meta, want) in cases {
        for side in [Side::Server, Side::Client] {
            let (e, text) = error(side, &window_frame(meta));
            assert!(matches!(e, ProtocolError::BadWindow(_)), "{meta}: {e:?}");
            assert_eq!(
                text,
                format!("bad WINDOW frame: invalid meta: key `bytes`: {want}"),
                "{meta} {side:?}"
            );
        }
    }
    // No meta, an empty map, a repeated key, a byte after the map.
    for (meta, want) in [
        ("", "invalid meta: truncated MessagePack at byte 0"),
        ("80", "invalid meta: missing field `bytes`"),
        (
            "82 a5 6279746573 01 a5 6279746573 02",
            "invalid meta: duplicate key \"bytes\"",
        ),
        (
            "81 a5 6279746573 01 00",
            "invalid meta: 1 trailing bytes after the MessagePack value",
        ),
    ] {
        assert_eq!(
            error_text(Side::Server, &window_frame(meta)),
            format!("bad WINDOW frame: {want}"),
            "{meta}"
        );
    }
}

/// The bounds themselves are fine, and a key the receiver does not know is
/// skipped, as in every meta.
#[test]
fn window_meta_at_the_bounds() {
    for (meta, bytes) in [
        ("81 a5 6279746573 01", 1),
        ("81 a5 6279746573 ce 7fffffff", 2_147_483_647),
        ("82 a5 6279746573 05 a4 6e657874 c3", 5),
    ] {
        let wire = hex(&window_frame(meta));
        for side in [Side::Server, Side::Client] {
            let mut dec = Decoder::new(side, FrameLimits::default());
            match dec.decode(&mut BytesMut::from(&wire[..])) {
                Ok(Some(Decoded::Frame(f))) => {
                    assert_eq!(f.frame_type(), FrameType::Window);
                    assert_eq!(WindowMeta::decode(&f.meta).unwrap().bytes(), bytes);
                }
                other => panic!("{meta}: {other:?}"),
            }
        }
    }
}

/// A WINDOW's meta is judged once the whole frame is in: a bad grant split
/// across reads raises its error only with its last byte.
#[test]
fn window_meta_waits_for_the_whole_frame() {
    let wire = hex(&window_frame("81 a5 6279746573 00"));
    let mut dec = Decoder::new(Side::Client, FrameLimits::default());
    let mut buf = BytesMut::new();
    for &b in &wire[..wire.len() - 1] {
        buf.extend_from_slice(&[b]);
        assert_eq!(dec.decode(&mut buf), Ok(None));
    }
    buf.extend_from_slice(&wire[wire.len() - 1..]);
    assert!(matches!(
        dec.decode(&mut buf),
        Err(ProtocolError::BadWindow(_))
    ));
}

/// The header is judged once all 16 bytes are in, not before: a header
/// split across reads raises the same error as a whole one.
#[test]
fn errors_wait_for_the_whole_header() {
    let wire = hex("5351 01 05 00 00 0000 00000000 00000000");
    let mut dec = Decoder::new(Side::Server, FrameLimits::default());
    let mut buf = BytesMut::new();
    for &b in &wire[..15] {
        buf.extend_from_slice(&[b]);
        assert_eq!(dec.decode(&mut buf), Ok(None));
    }
    buf.extend_from_slice(&wire[15..]);
    assert_eq!(
        dec.decode(&mut buf),
        Err(ProtocolError::BadMagic([0x53, 0x51]))
    );
}

/// Frames before a broken one are delivered; the error is the next call's.
#[test]
fn error_after_good_frames() {
    let wire = hex("5352 01 05 00 00 0000 00000001 00000000
         5352 01 06 00 00 0000 00000002 00000000
         5352 01 0c 00 00 0000 00000003 00000000");
    let mut dec = Decoder::new(Side::Server, FrameLimits::default());
    let mut buf = BytesMut::from(&wire[..]);
    for (ft, id) in [(FrameType::Ping, 1), (FrameType::Pong, 2)] {
        match dec.decode(&mut buf) {
            Ok(Some(Decoded::Frame(f))) => {
                assert_eq!(f.frame_type(), ft);
                assert_eq!(f.request_id(), RequestId(id));
            }
            other => panic!("expected {ft}, got {other:?}"),
        }
    }
    assert_eq!(
        dec.decode(&mut buf).unwrap_err().to_string(),
        "invalid frame type 12, expected 1 to 10"
    );
}

/// Compression 3 and encodings 2 and 3 are reserved values, not broken
/// framing: the frame decodes, and the flags report the value so the
/// request can be answered UNIMPLEMENTED on a connection that stays open.
#[test]
fn reserved_compression_and_encoding_decode_as_frames() {
    let meta = RequestMeta::new("/echo.Echo/Say").to_vec();
    for (flags, compression, encoding) in [
        (0x03u8, Err(3), Ok(Encoding::MsgPack)),
        (0x08, Ok(Compression::None), Err(2)),
        (0x0c, Ok(Compression::None), Err(3)),
        (0x0f, Err(3), Err(3)),
    ] {
        let mut wire = hex(&format!("5352 01 01 {flags:02x} 00 0000 00000005 00000002"));
        wire[6..8].copy_from_slice(&(meta.len() as u16).to_be_bytes());
        wire.extend_from_slice(&meta);
        wire.extend_from_slice(b"\x01\x02");

        let mut dec = Decoder::new(Side::Server, FrameLimits::default());
        let mut buf = BytesMut::from(&wire[..]);
        let frame = match dec.decode(&mut buf) {
            Ok(Some(Decoded::Frame(f))) => f,
            other => panic!("flags {flags:#04x}: expected a frame, got {other:?}"),
        };
        assert_eq!(frame.header.flags.bits(), flags);
        assert_eq!(
            frame.header.flags.compression(),
            compression,
            "{flags:#04x}"
        );
        assert_eq!(frame.header.flags.encoding(), encoding, "{flags:#04x}");
        assert_eq!(
            RequestMeta::decode(&frame.meta).unwrap().method,
            "/echo.Echo/Say"
        );
        assert_eq!(&frame.body[..], b"\x01\x02");
        assert!(buf.is_empty());
    }
}

#[test]
fn finish_mid_frame_is_truncated() {
    let ping = hex("5352 01 05 00 00 0000 0000002a 00000000");
    let dec = Decoder::new(Side::Server, FrameLimits::default());

    let mut buf = BytesMut::from(&ping[..5]);
    assert!(dec.is_mid_frame(&buf));
    let e = dec.finish(&buf).unwrap_err();
    assert_eq!(e, ProtocolError::Truncated { have: 5 });
    assert_eq!(
        e.to_string(),
        "connection closed in the middle of a frame (5 bytes received)"
    );

    // A whole header with its payload still missing.
    let request = hex("5352 01 01 00 00 0010 00000001 00000004 82");
    let mut dec = Decoder::new(Side::Server, FrameLimits::default());
    buf = BytesMut::from(&request[..]);
    assert_eq!(dec.decode(&mut buf), Ok(None));
    assert_eq!(dec.finish(&buf), Err(ProtocolError::Truncated { have: 17 }));

    // Between frames the close is clean.
    buf = BytesMut::from(&ping[..]);
    assert!(matches!(dec.decode(&mut buf), Ok(Some(Decoded::Frame(_)))));
    assert!(!dec.is_mid_frame(&buf));
    assert_eq!(dec.finish(&buf), Ok(()));
}

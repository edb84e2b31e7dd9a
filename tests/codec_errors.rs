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
    RequestMeta, Side,
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
    assert_eq!(text, "invalid frame type 0, expected 1 to 7");
}

#[test]
fn frame_type_eight() {
    assert_eq!(
        error_text(Side::Server, "5352 01 08 00 00 0000 00000000 00000000"),
        "invalid frame type 8, expected 1 to 7"
    );
    assert_eq!(
        error_text(Side::Client, "5352 01 ff 00 00 0000 00000000 00000000"),
        "invalid frame type 255, expected 1 to 7"
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
         5352 01 09 00 00 0000 00000003 00000000");
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
        "invalid frame type 9, expected 1 to 7"
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

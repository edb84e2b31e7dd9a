//! Writing HTTP/1.1 answers: the status mapping, the headers every
//! answer carries, and a MessagePack answer shown as JSON.

use std::io::Write;

use bytes::{BufMut, BytesMut};

use super::{Format, Hints};
use crate::codec::{Encoder, Encoding, Flags};
use crate::metadata::Metadata;
use crate::status::{Code, Status};
use crate::trace::TraceId;

/// The HTTP status of a status code: the mapping grpc-gateway and Google
/// APIs use (`google/rpc/code.proto`).
pub(super) fn http_status(code: Code) -> u16 {
    match code {
        Code::OK => 200,
        Code::CANCELLED => 499,
        Code::INVALID_ARGUMENT => 400,
        Code::DEADLINE_EXCEEDED => 504,
        Code::NOT_FOUND => 404,
        Code::ALREADY_EXISTS => 409,
        Code::PERMISSION_DENIED => 403,
        Code::RESOURCE_EXHAUSTED => 429,
        Code::FAILED_PRECONDITION => 400,
        Code::ABORTED => 409,
        Code::OUT_OF_RANGE => 400,
        Code::UNIMPLEMENTED => 501,
        Code::UNAVAILABLE => 503,
        Code::UNAUTHENTICATED => 401,
        // UNKNOWN, INTERNAL, DATA_LOSS and numbers without a name.
        _ => 500,
    }
}

/// The reason phrase of the statuses this server sends.
pub(crate) fn reason(status: u16) -> &'static str {
    match status {
        100 => "Continue",
        200 => "OK",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        409 => "Conflict",
        411 => "Length Required",
        413 => "Content Too Large",
        415 => "Unsupported Media Type",
        429 => "Too Many Requests",
        431 => "Request Header Fields Too Large",
        499 => "Client Closed Request",
        500 => "Internal Server Error",
        501 => "Not Implemented",
        503 => "Service Unavailable",
        504 => "Gateway Timeout",
        505 => "HTTP Version Not Supported",
        _ => "Unknown",
    }
}

/// Appends a successful answer; an error if the body cannot be shown in
/// the format asked for (nothing is appended then).
pub(super) fn write_ok(
    out: &mut Encoder,
    hints: Hints,
    flags: Flags,
    body: &[u8],
    md: &Metadata,
    ending: bool,
) -> Result<(), String> {
    let msgpack = flags.encoding() == Ok(Encoding::MsgPack);
    let (content_type, json);
    let body = match hints.format() {
        Format::Json if msgpack => {
            json = msgpack_to_json(body)?;
            content_type = "application/json";
            &json[..]
        }
        // A raw handler's bytes cannot be JSON: they go as they are.
        Format::Json | Format::Octet => {
            content_type = if msgpack {
                "application/msgpack"
            } else {
                "application/octet-stream"
            };
            body
        }
        Format::Msgpack => {
            content_type = if msgpack {
                "application/msgpack"
            } else {
                "application/octet-stream"
            };
            body
        }
        Format::Text => {
            content_type = "text/plain; charset=utf-8";
            body
        }
        Format::JsonDocument => {
            content_type = "application/json";
            body
        }
        Format::Metrics => {
            content_type = "text/plain; version=0.0.4; charset=utf-8";
            body
        }
    };
    let buf = out.buf_mut();
    head(
        buf,
        hints,
        200,
        Code::OK,
        content_type,
        Some(body.len()),
        md,
        ending,
    );
    buf.extend_from_slice(body);
    Ok(())
}

/// Appends the answer carrying `status`: its HTTP status, and a JSON body
/// `{"code", "name", "message", "trace_id"}` (the message alone, as plain
/// text, for a built-in endpoint).
pub(super) fn write_status(
    out: &mut Encoder,
    hints: Hints,
    status: &Status,
    trace: Option<&TraceId>,
    md: &Metadata,
    ending: bool,
) {
    let code = status.code();
    let (content_type, body) = match hints.format() {
        Format::Text | Format::Metrics | Format::JsonDocument => (
            "text/plain; charset=utf-8",
            format!("{}\n", status.message()).into_bytes(),
        ),
        _ => {
            let mut doc = serde_json::json!({
                "code": code.as_u32(),
                "name": code.name(),
                "message": status.message(),
            });
            if let Some(t) = trace {
                doc["trace_id"] = serde_json::Value::from(t.as_str());
            }
            ("application/json", doc.to_string().into_bytes())
        }
    };
    let buf = out.buf_mut();
    let http = http_status(code);
    head(
        buf,
        hints,
        http,
        code,
        content_type,
        Some(body.len()),
        md,
        ending,
    );
    buf.extend_from_slice(&body);
}

/// Appends an answer the decoder makes itself, before any request reaches
/// the dispatcher: a `405`, a `413`, a `431`. `close` ends the connection
/// after it; `extra` is more header lines, each ending in CRLF.
pub(super) fn refusal(
    http: u16,
    status: &Status,
    extra: &str,
    close: bool,
    http10: bool,
) -> BytesMut {
    let mut doc = serde_json::json!({
        "code": status.code().as_u32(),
        "name": status.code().name(),
        "message": status.message(),
    })
    .to_string()
    .into_bytes();
    doc.push(b'\n');
    let mut buf = BytesMut::with_capacity(256 + doc.len());
    let version = if http10 { "1.0" } else { "1.1" };
    let _ = write!(
        (&mut buf).writer(),
        "HTTP/{version} {http} {}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nx-syncrpc-code: {}\r\n{extra}",
        reason(http),
        doc.len(),
        status.code().as_u32(),
    );
    if close {
        buf.extend_from_slice(b"connection: close\r\n");
    }
    buf.extend_from_slice(b"\r\n");
    buf.extend_from_slice(&doc);
    buf
}

/// The interim answer to `Expect: 100-continue`.
pub(super) const CONTINUE: &[u8] = b"HTTP/1.1 100 Continue\r\n\r\n";

/// Appends an answer's head. `len`: the body's length, or `None` for a
/// body of unknown length (a stream), sent chunked with the status
/// code's number as the trailer `x-syncrpc-code`, or over HTTP/1.0 up to
/// the connection's close.
#[allow(clippy::too_many_arguments)]
pub(super) fn head(
    buf: &mut BytesMut,
    hints: Hints,
    http: u16,
    code: Code,
    content_type: &str,
    len: Option<usize>,
    md: &Metadata,
    ending: bool,
) {
    let version = if hints.http10() { "1.0" } else { "1.1" };
    let _ = write!(
        buf.writer(),
        "HTTP/{version} {http} {}\r\ncontent-type: {content_type}\r\n",
        reason(http),
    );
    match len {
        Some(len) => {
            let _ = write!(
                buf.writer(),
                "content-length: {len}\r\nx-syncrpc-code: {}\r\n",
                code.as_u32()
            );
        }
        None if hints.http10() => {}
        None => buf.extend_from_slice(b"transfer-encoding: chunked\r\ntrailer: x-syncrpc-code\r\n"),
    }
    for (key, value) in md.iter() {
        // Only what a header can carry as is; the rest is not sent.
        let Some(value) = value.as_str().filter(|v| is_header_value(v)) else {
            continue;
        };
        if !is_token(key) {
            continue;
        }
        let _ = write!(buf.writer(), "x-md-{key}: {value}\r\n");
    }
    if ending || hints.close() || (len.is_none() && hints.http10()) {
        buf.extend_from_slice(b"connection: close\r\n");
    } else if hints.http10() {
        buf.extend_from_slice(b"connection: keep-alive\r\n");
    }
    buf.extend_from_slice(b"\r\n");
}

/// A header name's characters (RFC 9110 `token`).
pub(super) fn is_token(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

/// Visible ASCII and inner spaces: what a header value carries safely.
fn is_header_value(s: &str) -> bool {
    s.bytes()
        .all(|b| b == b' ' || b == b'\t' || b.is_ascii_graphic())
}

/// A MessagePack value shown as JSON.
pub(super) fn msgpack_to_json(body: &[u8]) -> Result<Vec<u8>, String> {
    if body.is_empty() {
        return Ok(b"null".to_vec());
    }
    let value: serde_json::Value = rmp_serde::from_slice(body)
        .map_err(|e| format!("the answer cannot be shown as JSON: {e}"))?;
    serde_json::to_vec(&value).map_err(|e| format!("the answer cannot be shown as JSON: {e}"))
}

/// A JSON document as MessagePack, maps with string keys.
pub(super) fn json_to_msgpack(body: &[u8]) -> Result<Vec<u8>, String> {
    let value: serde_json::Value = if body.iter().all(u8::is_ascii_whitespace) {
        serde_json::Value::Null
    } else {
        serde_json::from_slice(body).map_err(|e| format!("the body is not valid JSON: {e}"))?
    };
    rmp_serde::to_vec_named(&value).map_err(|e| format!("the body cannot be MessagePack: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_code_has_the_gateway_status() {
        let want = [
            200, 499, 500, 400, 504, 404, 409, 403, 429, 400, 409, 400, 501, 500, 503, 500, 401,
        ];
        for (code, want) in Code::ALL.iter().zip(want) {
            assert_eq!(http_status(*code), want, "{code}");
        }
        assert_eq!(http_status(Code::from(99)), 500);
    }

    #[test]
    fn json_and_msgpack_round_trip() {
        let mp = json_to_msgpack(br#"{"text":"hi","n":[1,2.5,null,true]}"#).unwrap();
        assert_eq!(
            msgpack_to_json(&mp).unwrap(),
            br#"{"n":[1,2.5,null,true],"text":"hi"}"#
        );
        assert_eq!(json_to_msgpack(b"").unwrap(), [0xc0]);
        assert!(json_to_msgpack(b"{")
            .unwrap_err()
            .starts_with("the body is not valid JSON"));
    }

    #[test]
    fn an_error_answer_names_the_code() {
        let mut out = Encoder::new();
        let hints = Hints::new(Format::Json, false, false, 1);
        let trace = TraceId::new("t-1").unwrap();
        write_status(
            &mut out,
            hints,
            &Status::not_found("no such user"),
            Some(&trace),
            &Metadata::new(),
            true,
        );
        let text = String::from_utf8(out.as_slice().to_vec()).unwrap();
        assert!(text.starts_with("HTTP/1.1 404 Not Found\r\n"), "{text}");
        assert!(text.contains("x-syncrpc-code: 5\r\n"), "{text}");
        assert!(text.contains("connection: close\r\n"), "{text}");
        assert!(
            text.ends_with(
                r#"{"code":5,"message":"no such user","name":"NOT_FOUND","trace_id":"t-1"}"#
            ),
            "{text}"
        );
    }
}

//! A server stream answered over HTTP/1.1: one chunked answer of
//! newline-delimited JSON (`application/x-ndjson`), as grpc-gateway
//! streams (`docs/http.md`, "Server streams").
//!
//! Each message is one line `{"result": <message>}`; the last line says
//! how the stream ended: `{"status": {...}}` when it ended OK,
//! `{"error": {...}}` otherwise. The answer's head goes out with the
//! first message, when the stream's status is not yet known, so it is
//! always `200`; the status code's number comes again as the trailer
//! `x-syncrpc-code`. A stream that ends before its first message is
//! answered as a unary call would be: `200` with the status line alone
//! when OK, else the plain HTTP error.
//!
//! HTTP/1.0 has no chunked coding: there the lines go unframed, and the
//! answer ends when the connection closes (so only a request that closes
//! its connection may open a stream).

use std::io::Write;

use base64::Engine as _;
use bytes::BufMut;
use serde_json::Value;

use super::answer::{self, head, msgpack_to_json};
use super::Hints;
use crate::codec::{Encoder, Encoding, Flags};
use crate::metadata::Metadata;
use crate::status::{Code, Status};
use crate::trace::TraceId;

/// The media type of a streamed answer.
pub(super) const NDJSON: &str = "application/x-ndjson";

/// Why a request that would open a stream is refused, if it is: an
/// HTTP/1.0 request that keeps its connection alive cannot be told where
/// a streamed answer ends.
pub(super) fn refusal(hints: Hints) -> Option<&'static str> {
    (hints.http10() && !hints.close()).then_some(
        "a streamed answer over HTTP/1.0 ends when the connection closes: \
         call it over HTTP/1.1, or without `Connection: keep-alive`",
    )
}

/// Appends one message of a stream: the answer's head first if `first`,
/// then the line `{"result": <message>}` as one chunk. A MessagePack
/// message is shown as JSON; a raw one as a base64 string (the JSON
/// mapping of protobuf `bytes`). An error if the message cannot be shown
/// as JSON; the head is written even then, so the stream's end follows
/// it.
pub(super) fn write_message(
    out: &mut Encoder,
    hints: Hints,
    flags: Flags,
    body: &[u8],
    first: bool,
    ending: bool,
) -> Result<(), Status> {
    let buf = out.buf_mut();
    if first {
        stream_head(buf, hints, ending);
    }
    let msg = if flags.encoding() == Ok(Encoding::MsgPack) {
        let json = msgpack_to_json(body).map_err(|why| {
            log::error!("cannot write a stream message as JSON: {why}");
            Status::internal(format!("cannot send the message: {why}"))
        })?;
        // Valid JSON by construction: it was just written.
        serde_json::from_slice(&json).unwrap_or(Value::Null)
    } else {
        Value::String(base64::engine::general_purpose::STANDARD.encode(body))
    };
    let line = line(&serde_json::json!({ "result": msg }));
    write_chunk(buf, hints, &line);
    Ok(())
}

/// Appends the end of a stream carrying `status`, and trailing `md`:
/// after messages, the status line as the last chunk, then the chunked
/// body's end with the trailer `x-syncrpc-code`; before any, a whole
/// answer (`200` with the status line alone if OK, else the error a
/// unary call gets).
#[allow(clippy::too_many_arguments)]
pub(super) fn write_end(
    out: &mut Encoder,
    hints: Hints,
    status: &Status,
    trace: Option<&TraceId>,
    md: &Metadata,
    ending: bool,
    sent_any: bool,
) {
    let code = status.code();
    if !sent_any && code != Code::OK {
        answer::write_status(out, hints, status, trace, md, ending);
        return;
    }
    let line = line(&status_line(status, trace, md));
    let buf = out.buf_mut();
    if !sent_any {
        head(buf, hints, 200, code, NDJSON, Some(line.len()), md, ending);
        buf.extend_from_slice(&line);
        return;
    }
    write_chunk(buf, hints, &line);
    if !hints.http10() {
        let _ = write!(
            buf.writer(),
            "0\r\nx-syncrpc-code: {}\r\n\r\n",
            code.as_u32()
        );
    }
}

/// The head of a streamed answer: `200`, chunked (unframed over
/// HTTP/1.0, which closes the connection after it).
fn stream_head(buf: &mut bytes::BytesMut, hints: Hints, ending: bool) {
    head(
        buf,
        hints,
        200,
        Code::OK,
        NDJSON,
        None,
        &Metadata::new(),
        ending,
    );
}

/// The last line of a stream: `{"status": {...}}` if it ended OK, else
/// `{"error": {...}}`, each with the code's number and name, the
/// message, the trace id of an error and the trailing metadata.
fn status_line(status: &Status, trace: Option<&TraceId>, md: &Metadata) -> Value {
    let code = status.code();
    let mut doc = serde_json::json!({
        "code": code.as_u32(),
        "name": code.name(),
        "message": status.message(),
    });
    if let Some(t) = trace {
        doc["trace_id"] = Value::from(t.as_str());
    }
    let text: serde_json::Map<String, Value> = md
        .iter()
        .filter_map(|(k, v)| Some((k.to_owned(), Value::from(v.as_str()?))))
        .collect();
    if !text.is_empty() {
        doc["md"] = Value::Object(text);
    }
    let key = if code == Code::OK { "status" } else { "error" };
    serde_json::json!({ key: doc })
}

/// `value` as one line of JSON, newline included.
fn line(value: &Value) -> Vec<u8> {
    let mut line = value.to_string().into_bytes();
    line.push(b'\n');
    line
}

/// Appends `data` as one chunk (as is over HTTP/1.0).
fn write_chunk(buf: &mut bytes::BytesMut, hints: Hints, data: &[u8]) {
    if hints.http10() {
        buf.extend_from_slice(data);
        return;
    }
    let _ = write!(buf.writer(), "{:x}\r\n", data.len());
    buf.extend_from_slice(data);
    buf.extend_from_slice(b"\r\n");
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::Compression;
    use crate::server::protocol::http::Format;

    fn written(out: &Encoder) -> String {
        String::from_utf8(out.as_slice().to_vec()).unwrap()
    }

    const JSON: Flags = Flags::new(Compression::None, Encoding::MsgPack);

    #[test]
    fn messages_then_the_status_in_chunks() {
        let hints = Hints::new(Format::Json, false, false, 1);
        let mut out = Encoder::new();
        let msg = rmp_serde::to_vec_named(&serde_json::json!({"i": 0})).unwrap();
        write_message(&mut out, hints, JSON, &msg, true, false).unwrap();
        write_message(&mut out, hints, JSON, &msg, false, false).unwrap();
        let mut md = Metadata::new();
        md.insert("k", "v");
        write_end(
            &mut out,
            hints,
            &Status::new(Code::OK, ""),
            None,
            &md,
            false,
            true,
        );
        let text = written(&out);
        let (head, body) = text.split_once("\r\n\r\n").unwrap();
        assert!(head.starts_with("HTTP/1.1 200 OK\r\n"), "{head}");
        assert!(
            head.contains("content-type: application/x-ndjson"),
            "{head}"
        );
        assert!(head.contains("transfer-encoding: chunked"), "{head}");
        assert!(head.contains("trailer: x-syncrpc-code"), "{head}");
        assert!(!head.contains("content-length"), "{head}");
        assert!(!head.contains("connection: close"), "{head}");
        assert_eq!(
            body,
            "13\r\n{\"result\":{\"i\":0}}\n\r\n\
             13\r\n{\"result\":{\"i\":0}}\n\r\n\
             3e\r\n{\"status\":{\"code\":0,\"md\":{\"k\":\"v\"},\"message\":\"\",\"name\":\"OK\"}}\n\r\n\
             0\r\nx-syncrpc-code: 0\r\n\r\n"
        );
    }

    #[test]
    fn raw_messages_are_base64_and_errors_end_with_an_error_line() {
        let hints = Hints::new(Format::Octet, true, false, 1);
        let mut out = Encoder::new();
        let raw = Flags::new(Compression::None, Encoding::Raw);
        write_message(&mut out, hints, raw, b"\x00\xff", true, false).unwrap();
        let trace = TraceId::new("t-1").unwrap();
        let status = Status::deadline_exceeded("too late");
        write_end(
            &mut out,
            hints,
            &status,
            Some(&trace),
            &Metadata::new(),
            false,
            true,
        );
        let text = written(&out);
        assert!(text.contains("connection: close\r\n"), "{text}");
        assert!(text.contains("\r\n{\"result\":\"AP8=\"}\n\r\n"), "{text}");
        assert!(
            text.ends_with(
                "{\"error\":{\"code\":4,\"message\":\"too late\",\"name\":\"DEADLINE_EXCEEDED\",\"trace_id\":\"t-1\"}}\n\r\n\
                 0\r\nx-syncrpc-code: 4\r\n\r\n"
            ),
            "{text}"
        );
    }

    #[test]
    fn an_end_before_any_message_is_a_whole_answer() {
        let hints = Hints::new(Format::Json, false, false, 1);
        let mut out = Encoder::new();
        write_end(
            &mut out,
            hints,
            &Status::new(Code::OK, ""),
            None,
            &Metadata::new(),
            false,
            false,
        );
        let text = written(&out);
        assert!(text.starts_with("HTTP/1.1 200 OK\r\n"), "{text}");
        assert!(text.contains("content-length: 47\r\n"), "{text}");
        assert!(text.contains("x-syncrpc-code: 0\r\n"), "{text}");
        assert!(
            text.ends_with("\r\n\r\n{\"status\":{\"code\":0,\"message\":\"\",\"name\":\"OK\"}}\n"),
            "{text}"
        );

        let mut out = Encoder::new();
        let status = Status::not_found("nothing to stream");
        write_end(
            &mut out,
            hints,
            &status,
            None,
            &Metadata::new(),
            true,
            false,
        );
        let text = written(&out);
        assert!(text.starts_with("HTTP/1.1 404 Not Found\r\n"), "{text}");
        assert!(
            text.contains("content-type: application/json\r\n"),
            "{text}"
        );
        assert!(text.contains("connection: close\r\n"), "{text}");
    }

    #[test]
    fn http_1_0_gets_unframed_lines_and_a_close() {
        let hints = Hints::new(Format::Json, true, true, 1);
        assert_eq!(refusal(hints), None);
        assert!(refusal(Hints::new(Format::Json, false, true, 1)).is_some());
        assert_eq!(refusal(Hints::new(Format::Json, false, false, 1)), None);
        let mut out = Encoder::new();
        let msg = rmp_serde::to_vec_named(&1).unwrap();
        write_message(&mut out, hints, JSON, &msg, true, false).unwrap();
        write_end(
            &mut out,
            hints,
            &Status::new(Code::OK, ""),
            None,
            &Metadata::new(),
            false,
            true,
        );
        let text = written(&out);
        let (head, body) = text.split_once("\r\n\r\n").unwrap();
        assert!(head.starts_with("HTTP/1.0 200 OK\r\n"), "{head}");
        assert!(head.contains("connection: close"), "{head}");
        assert!(!head.contains("transfer-encoding"), "{head}");
        assert_eq!(
            body,
            "{\"result\":1}\n{\"status\":{\"code\":0,\"message\":\"\",\"name\":\"OK\"}}\n"
        );
    }

    #[test]
    fn a_message_that_is_not_json_fails_after_the_head() {
        let hints = Hints::new(Format::Json, false, false, 1);
        let mut out = Encoder::new();
        // MessagePack `bin`, which JSON has no form for.
        let err = write_message(&mut out, hints, JSON, b"\xc4\x01\x00", true, false).unwrap_err();
        assert_eq!(err.code(), Code::INTERNAL);
        assert!(err.message().contains("cannot be shown as JSON"), "{err}");
        let text = written(&out);
        assert!(text.starts_with("HTTP/1.1 200 OK\r\n"), "{text}");
        assert!(text.ends_with("\r\n\r\n"), "{text}");
    }
}

//! MessagePack-RPC: requests `[0, msgid, method, params]`, notifications
//! `[2, method, params]`, responses `[1, msgid, error, result]`, as
//! back-to-back MessagePack arrays with no length prefix.
//!
//! The decoder finds a message's end with a resumable [`Scanner`], which
//! also checks the structure (nesting depth, declared lengths, invalid
//! markers) once per byte however the message is split across reads. The
//! mapping to services is described in `docs/msgpack-rpc.md`.
//!
//! The message writers and [`parse_response`] also serve the Rust client's
//! MessagePack-RPC mode.

use std::borrow::Cow;
use std::sync::Arc;

use bytes::{BufMut, Bytes, BytesMut};

use super::{DecodeConfig, Message, MessageDecoder, Protocol, RequestHead};
use crate::codec::cursor::Cursor;
use crate::codec::msgpack::Scanner;
use crate::codec::{EncodeError, Encoder, Encoding, Flags, ProtocolError, RequestId};
use crate::metadata::Metadata;
use crate::status::{Code, Status};
use crate::trace::TraceId;

/// Message type of a request.
const REQUEST: u64 = 0;
/// Message type of a response, which a server never receives.
const RESPONSE: u64 = 1;
/// Message type of a notification.
const NOTIFICATION: u64 = 2;

/// MessagePack-RPC, served on the same services as the native protocol.
#[derive(Debug)]
pub(crate) struct MsgpackRpc;

impl Protocol for MsgpackRpc {
    fn name(&self) -> &'static str {
        "MessagePack-RPC"
    }

    fn alpn(&self) -> Option<&'static [u8]> {
        Some(b"msgpack-rpc")
    }

    fn label(&self) -> &'static str {
        "msgpack_rpc"
    }

    fn index(&self) -> usize {
        1
    }

    fn claims(&self, first: u8) -> bool {
        is_array_header(first)
    }

    fn decoder(&self, config: &DecodeConfig) -> Box<dyn MessageDecoder> {
        Box::new(MsgpackRpcDecoder::new(config))
    }

    /// `[1, msgid, nil, result]`; the wire has no metadata. A body in
    /// MessagePack (a typed handler's) goes out as the result unchecked.
    fn write_ok(
        &self,
        out: &mut Encoder,
        id: RequestId,
        flags: Flags,
        body: &[u8],
        _md: Metadata,
        _ending: bool,
    ) -> Result<(), EncodeError> {
        let one_value = flags.encoding() == Ok(Encoding::MsgPack);
        write_result(out.buf_mut(), id, body, one_value);
        Ok(())
    }

    /// `[1, msgid, [code, message], nil]`; the wire has no trace id or
    /// metadata.
    fn write_status(
        &self,
        out: &mut Encoder,
        id: RequestId,
        _flags: Flags,
        status: &Status,
        _trace: Option<&TraceId>,
        _md: Metadata,
        _ending: bool,
    ) {
        write_error(out.buf_mut(), id, status);
    }

    fn has_goaway(&self) -> bool {
        false
    }

    fn write_goaway(&self, _out: &mut Encoder, _code: Code, _message: &str) -> bool {
        false
    }

    /// Without a GOAWAY, this answer is all a client learns of the
    /// shutdown.
    fn shutting_down_message(&self) -> &'static str {
        "server shutting down"
    }
}

/// Whether `b` starts a MessagePack array (fixarray, array16, array32).
fn is_array_header(b: u8) -> bool {
    matches!(b, 0x90..=0x9f | 0xdc | 0xdd)
}

/// A request or notification, cut off the read buffer.
#[derive(Debug)]
struct Call {
    /// The msgid of a request; `None` for a notification.
    msgid: Option<RequestId>,
    /// The method name as sent: UTF-8, checked by the decoder (kept as
    /// a slice of the message so a call allocates no string).
    method: Bytes,
    /// The MessagePack bytes a handler decodes: the single element of
    /// `params`, or the whole `params` array.
    body: Bytes,
    /// The message's length on the wire.
    len: usize,
}

/// The incremental decoder of one MessagePack-RPC connection.
#[derive(Debug)]
struct MsgpackRpcDecoder {
    scan: Scanner,
    max_message: usize,
    max_depth: usize,
    /// The service of bare method names.
    default_service: Option<Arc<str>>,
}

impl MessageDecoder for MsgpackRpcDecoder {
    fn decode(
        &mut self,
        buf: &mut BytesMut,
        on_message: &mut dyn FnMut(Message<'_>),
    ) -> Result<bool, ProtocolError> {
        let Some(mut call) = self.next_call(buf)? else {
            return Ok(false);
        };
        let body = std::mem::take(&mut call.body);
        let path = method_path(call.method(), self.default_service.as_deref());
        on_message(Message::Request {
            head: RequestHead {
                id: call.msgid.unwrap_or(RequestId(0)),
                flags: Flags::default(),
                oneway: call.msgid.is_none(),
                method: &path,
                timeout_ms: 0,
                trace_id: None,
                caller: None,
                md: Metadata::new(),
                overhead: call.len - body.len(),
                any_encoding: true,
                stream: false,
            },
            body,
        });
        Ok(true)
    }
}

impl MsgpackRpcDecoder {
    fn new(config: &DecodeConfig) -> MsgpackRpcDecoder {
        // The message array and `params` wrap the body.
        let max_depth = config.max_body_depth.saturating_add(2);
        MsgpackRpcDecoder {
            scan: Scanner::new(max_depth),
            max_message: config.frame.max_body.saturating_add(config.frame.max_meta),
            max_depth,
            default_service: config.msgpack_rpc_default_service.clone(),
        }
    }

    /// Cuts the next message off `buf`. The scan resumes where the last
    /// call stopped, so a message arriving in pieces is read once.
    fn next_call(&mut self, buf: &mut BytesMut) -> Result<Option<Call>, ProtocolError> {
        let Some(&first) = buf.first() else {
            return Ok(None);
        };
        if !is_array_header(first) {
            return Err(ProtocolError::BadMessage("not an array"));
        }
        let end = match self.scan.advance(buf) {
            Ok(Some(end)) => end,
            Ok(None) => {
                if buf.len() > self.max_message {
                    return Err(ProtocolError::MessageTooLarge {
                        len: buf.len(),
                        limit: self.max_message,
                    });
                }
                return Ok(None);
            }
            Err(e) => return Err(ProtocolError::Msgpack(e)),
        };
        if end > self.max_message {
            return Err(ProtocolError::MessageTooLarge {
                len: end,
                limit: self.max_message,
            });
        }
        self.scan = Scanner::new(self.max_depth);
        let msg = buf.split_to(end).freeze();
        parse(msg).map(Some)
    }
}

/// Reads the parts of a message the scanner found complete and well-formed.
fn parse(msg: Bytes) -> Result<Call, ProtocolError> {
    let len = msg.len();
    let mut r = Cursor::new(&msg);
    let n = r
        .array_len()
        .ok_or(ProtocolError::BadMessage("not an array"))?;
    let kind = r
        .uint()
        .ok_or(ProtocolError::BadMessage("the type is not an integer"))?;
    let msgid = match (kind, n) {
        (REQUEST, 4) => {
            let id =
                r.uint()
                    .and_then(|v| u32::try_from(v).ok())
                    .ok_or(ProtocolError::BadMessage(
                        "the msgid is not a 32-bit unsigned integer",
                    ))?;
            Some(RequestId(id))
        }
        (NOTIFICATION, 3) => None,
        (REQUEST, _) => return Err(ProtocolError::BadMessage("a request has 4 elements")),
        (NOTIFICATION, _) => {
            return Err(ProtocolError::BadMessage("a notification has 3 elements"))
        }
        (RESPONSE, _) => return Err(ProtocolError::BadMessage("a response sent to the server")),
        _ => return Err(ProtocolError::BadMessage("unknown message type")),
    };
    let n = {
        // A string, or a binary of UTF-8: some clients pack method names
        // as bytes (`docs/msgpack-rpc.md`, "Method names").
        let method = r
            .str_bytes(true)
            .ok_or(ProtocolError::BadMessage("the method is not a string"))?;
        std::str::from_utf8(method)
            .map_err(|_| ProtocolError::BadMessage("the method is not UTF-8"))?;
        method.len()
    };
    let method = msg.slice(r.pos - n..r.pos);
    let params_at = r.pos;
    let count = r
        .array_len()
        .ok_or(ProtocolError::BadMessage("params is not an array"))?;
    let body = if count == 1 {
        msg.slice(r.pos..)
    } else {
        msg.slice(params_at..)
    };
    Ok(Call {
        msgid,
        method,
        body,
        len,
    })
}

impl Call {
    /// The method name as sent.
    fn method(&self) -> &str {
        // Checked by `parse`; a failure here would be a bug, not bad input.
        std::str::from_utf8(&self.method).unwrap_or_default()
    }
}

/// Appends a request `[0, msgid, method, [body]]`, or a notification
/// `[2, method, [body]]` without a msgid: what the Rust client sends.
/// `body` goes as the single param when it is one MessagePack value, else
/// (raw bytes) as a binary.
pub(crate) fn write_request(
    out: &mut BytesMut,
    msgid: Option<RequestId>,
    method: &str,
    body: &[u8],
) {
    match msgid {
        Some(id) => {
            out.put_u8(0x94);
            out.put_u8(REQUEST as u8);
            put_uint(out, u64::from(id.0));
        }
        None => {
            out.put_u8(0x93);
            out.put_u8(NOTIFICATION as u8);
        }
    }
    put_str(out, method);
    out.put_u8(0x91);
    if !body.is_empty() && crate::codec::msgpack::check(body, usize::MAX).is_ok() {
        out.put_slice(body);
    } else {
        put_bin(out, body);
    }
}

/// A response the client read: its msgid, and the result's bytes or the
/// error's code and message.
pub(crate) struct Answer {
    pub msgid: RequestId,
    pub outcome: Result<Bytes, (u32, String)>,
}

/// Reads a response `[1, msgid, error, result]` the scanner found complete
/// and well-formed.
pub(crate) fn parse_response(msg: Bytes) -> Result<Answer, ProtocolError> {
    let mut r = Cursor::new(&msg);
    if r.array_len() != Some(4) || r.uint() != Some(RESPONSE) {
        return Err(ProtocolError::BadMessage("not a response"));
    }
    let msgid = r
        .uint()
        .and_then(|v| u32::try_from(v).ok())
        .map(RequestId)
        .ok_or(ProtocolError::BadMessage(
            "the msgid is not a 32-bit unsigned integer",
        ))?;
    let err_at = r.pos;
    let result_at = crate::codec::msgpack::skip_value(&msg, err_at, usize::MAX)
        .map_err(ProtocolError::Msgpack)?;
    let outcome = if msg[err_at] == 0xc0 {
        Ok(msg.slice(result_at..))
    } else {
        // syncrpc sends [code, message]; other servers send anything.
        Err(
            match rmp_serde::from_slice::<(u32, String)>(&msg[err_at..result_at]) {
                Ok(pair) => pair,
                Err(_) => match rmp_serde::from_slice::<String>(&msg[err_at..result_at]) {
                    Ok(text) => (crate::status::Code::UNKNOWN.as_u32(), text),
                    Err(_) => (
                        crate::status::Code::UNKNOWN.as_u32(),
                        "the server answered an error this client cannot read".to_owned(),
                    ),
                },
            },
        )
    };
    Ok(Answer { msgid, outcome })
}

/// The full `/service/method` path a MessagePack-RPC method name stands
/// for: the name itself if it starts with `/`, else `service.method` split
/// at the last dot, else a bare method of `default_service`.
fn method_path<'a>(name: &'a str, default_service: Option<&str>) -> Cow<'a, str> {
    if name.starts_with('/') {
        return Cow::Borrowed(name);
    }
    match (name.rsplit_once('.'), default_service) {
        (Some((service, method)), _) => Cow::Owned(format!("/{service}/{method}")),
        (None, Some(service)) => Cow::Owned(format!("/{service}/{name}")),
        // Routes nowhere; the registry says so in its own words.
        (None, None) => Cow::Borrowed(name),
    }
}

/// Appends `[1, msgid, nil, result]`. `result` goes as is when it is one
/// MessagePack value (known to be when `one_value`, else checked); other
/// bytes (a raw handler's) are sent as a binary.
fn write_result(out: &mut BytesMut, id: RequestId, result: &[u8], one_value: bool) {
    out.put_u8(0x94);
    out.put_u8(0x01);
    put_uint(out, u64::from(id.0));
    out.put_u8(0xc0);
    if result.is_empty() {
        out.put_u8(0xc0);
    } else if one_value || crate::codec::msgpack::check(result, usize::MAX).is_ok() {
        out.put_slice(result);
    } else {
        put_bin(out, result);
    }
}

/// Appends `[1, msgid, [code, message], nil]`.
fn write_error(out: &mut BytesMut, id: RequestId, status: &Status) {
    out.put_u8(0x94);
    out.put_u8(0x01);
    put_uint(out, u64::from(id.0));
    out.put_u8(0x92);
    put_uint(out, u64::from(status.code().as_u32()));
    put_str(out, status.message());
    out.put_u8(0xc0);
}

// rmp picks the shortest marker for each value; writing into a BytesMut
// cannot fail, and bodies over 4 GiB never get this far (body limit).
fn put_uint(out: &mut BytesMut, v: u64) {
    rmp::encode::write_uint(&mut out.writer(), v).expect("in-memory write");
}

fn put_str(out: &mut BytesMut, s: &str) {
    rmp::encode::write_str(&mut out.writer(), s).expect("in-memory write");
}

fn put_bin(out: &mut BytesMut, b: &[u8]) {
    rmp::encode::write_bin(&mut out.writer(), b).expect("in-memory write");
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::FrameLimits;

    fn decoder() -> MsgpackRpcDecoder {
        MsgpackRpcDecoder::new(&DecodeConfig {
            frame: FrameLimits {
                max_body: 64,
                max_meta: 16,
            },
            max_body_depth: 4,
            msgpack_rpc_default_service: None,
        })
    }

    #[test]
    fn request_in_pieces() {
        // [0, 7, "a.B", [{"x": 1}]]
        let msg = [
            0x94, 0x00, 0x07, 0xa3, b'a', b'.', b'B', 0x91, 0x81, 0xa1, b'x', 0x01,
        ];
        let mut dec = decoder();
        let mut buf = BytesMut::new();
        for b in &msg[..msg.len() - 1] {
            buf.put_u8(*b);
            assert!(dec.next_call(&mut buf).unwrap().is_none());
        }
        buf.put_u8(msg[msg.len() - 1]);
        buf.put_u8(0x93); // the start of the next message stays
        let call = dec.next_call(&mut buf).unwrap().unwrap();
        assert_eq!(call.msgid, Some(RequestId(7)));
        assert_eq!(call.method(), "a.B");
        assert_eq!(&call.body[..], &[0x81, 0xa1, b'x', 0x01]);
        assert_eq!(&buf[..], &[0x93]);
    }

    #[test]
    fn a_method_name_may_be_a_bin_of_utf8() {
        // [0, 1, bin "a.B", [nil]]
        let msg = [0x94, 0x00, 0x01, 0xc4, 0x03, b'a', b'.', b'B', 0x91, 0xc0];
        let call = decoder()
            .next_call(&mut BytesMut::from(&msg[..]))
            .unwrap()
            .unwrap();
        assert_eq!(call.method(), "a.B");
        // The same, not UTF-8.
        let msg = [0x94, 0x00, 0x01, 0xc4, 0x02, 0xff, 0xfe, 0x91, 0xc0];
        let e = decoder()
            .next_call(&mut BytesMut::from(&msg[..]))
            .unwrap_err();
        assert_eq!(
            e.to_string(),
            "bad MessagePack-RPC message: the method is not UTF-8"
        );
    }

    #[test]
    fn notification_with_two_params_keeps_the_array() {
        let msg = [0x93, 0x02, 0xa1, b'm', 0x92, 0x01, 0x02];
        let call = decoder()
            .next_call(&mut BytesMut::from(&msg[..]))
            .unwrap()
            .unwrap();
        assert_eq!(call.msgid, None);
        assert_eq!(&call.body[..], &[0x92, 0x01, 0x02]);
    }

    #[test]
    fn errors_name_the_problem() {
        let cases: &[(&[u8], &str)] = &[
            (&[0x01], "bad MessagePack-RPC message: not an array"),
            (
                &[0x94, 0x01, 0x01, 0xc0, 0xc0],
                "bad MessagePack-RPC message: a response sent to the server",
            ),
            (
                &[0x93, 0x00, 0x01, 0xa1, b'm'],
                "bad MessagePack-RPC message: a request has 4 elements",
            ),
            (
                &[0x94, 0x00, 0xcf, 1, 0, 0, 0, 0, 0, 0, 0, 0xa1, b'm', 0x90],
                "bad MessagePack-RPC message: the msgid is not a 32-bit unsigned integer",
            ),
            (
                &[0x94, 0x00, 0x01, 0xa1, b'm', 0x01],
                "bad MessagePack-RPC message: params is not an array",
            ),
            (
                &[0x94, 0x00, 0x01, 0x07, 0x90],
                "bad MessagePack-RPC message: the method is not a string",
            ),
            (
                &[0x94, 0x00, 0x01, 0xc1],
                "bad MessagePack-RPC message: invalid MessagePack marker 0xc1 at byte 3",
            ),
            (
                &[
                    0x94, 0x00, 0x01, 0xa1, b'm', 0x91, 0x91, 0x91, 0x91, 0x91, 0x91, 0x01,
                ],
                "bad MessagePack-RPC message: MessagePack nested deeper than 6 levels",
            ),
        ];
        for (bytes, want) in cases {
            let e = decoder()
                .next_call(&mut BytesMut::from(*bytes))
                .unwrap_err();
            assert_eq!(e.to_string(), *want, "{bytes:02x?}");
        }
        let mut big = BytesMut::from(&[0x94, 0x00, 0x01, 0xa1, b'm', 0x91, 0xc5, 0x01, 0x00][..]);
        big.extend_from_slice(&[0; 80]);
        assert_eq!(
            decoder().next_call(&mut big).unwrap_err().to_string(),
            "MessagePack-RPC message too large: 89 > 80 bytes"
        );
    }

    #[test]
    fn method_names_map_to_paths() {
        assert_eq!(method_path("/a.B/C", None), "/a.B/C");
        assert_eq!(method_path("echo.Echo.Say", None), "/echo.Echo/Say");
        assert_eq!(method_path("Say", Some("echo.Echo")), "/echo.Echo/Say");
        assert_eq!(method_path("Say", None), "Say");
    }

    #[test]
    fn responses_are_msgpack_rpc_arrays() {
        let mut out = BytesMut::new();
        write_result(&mut out, RequestId(300), &[0x01], false);
        assert_eq!(&out[..], &[0x94, 0x01, 0xcd, 0x01, 0x2c, 0xc0, 0x01]);
        out.clear();
        write_result(&mut out, RequestId(1), b"\xc1", false);
        assert_eq!(&out[..], &[0x94, 0x01, 0x01, 0xc0, 0xc4, 0x01, 0xc1]);
        out.clear();
        // A typed handler's body is taken for one value, unchecked.
        write_result(&mut out, RequestId(1), &[0x92, 0x01, 0x02], true);
        assert_eq!(&out[..], &[0x94, 0x01, 0x01, 0xc0, 0x92, 0x01, 0x02]);
        out.clear();
        write_error(&mut out, RequestId(2), &Status::unavailable("x"));
        assert_eq!(&out[..], &[0x94, 0x01, 0x02, 0x92, 0x0e, 0xa1, b'x', 0xc0]);
    }
}

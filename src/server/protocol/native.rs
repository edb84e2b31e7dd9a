//! The native protocol of `docs/protocol.md`: 16-byte headers, a
//! MessagePack meta and a body, answered with RESPONSE frames.
//!
//! The framing itself is [`crate::codec`]'s; this module reads a request's
//! meta into a [`RequestHead`] and writes the server's frames.

use bytes::{Bytes, BytesMut};

use super::{
    DecodeConfig, Message, MessageDecoder, Protocol, RequestHead, StreamFrame, StreamSupport,
};
use crate::codec::{
    Decoder, EncodeError, Encoder, Flags, FrameType, GoawayMeta, Header, ProtocolError, RequestId,
    RequestMeta, ResponseMeta, Side, WindowMeta, HEADER_LEN, MAGIC,
};
use crate::metadata::Metadata;
use crate::status::{Code, Status};
use crate::trace::TraceId;

/// The native protocol.
#[derive(Debug)]
pub(crate) struct Native;

impl Protocol for Native {
    fn name(&self) -> &'static str {
        "the native protocol"
    }

    fn alpn(&self) -> Option<&'static [u8]> {
        Some(b"syncrpc")
    }

    fn label(&self) -> &'static str {
        "native"
    }

    fn index(&self) -> usize {
        0
    }

    fn claims(&self, first: u8) -> bool {
        first == MAGIC[0]
    }

    fn decoder(&self, config: &DecodeConfig) -> Box<dyn MessageDecoder> {
        Box::new(NativeDecoder {
            frames: Decoder::new(Side::Server, config.frame),
            meta: Vec::new(),
        })
    }

    /// The trace id goes only with errors, where it helps find the
    /// server's logs; on every successful response it would cost 45 bytes
    /// that nobody reads.
    fn write_ok(
        &self,
        out: &mut Encoder,
        id: RequestId,
        flags: Flags,
        body: &[u8],
        md: Metadata,
        _ending: bool,
    ) -> Result<(), EncodeError> {
        let meta = ResponseMeta {
            md,
            ..ResponseMeta::new(Code::OK)
        };
        out.response(id, flags, &meta, body)
    }

    /// A RESPONSE with an empty body.
    fn write_status(
        &self,
        out: &mut Encoder,
        id: RequestId,
        flags: Flags,
        status: &Status,
        trace: Option<&TraceId>,
        md: Metadata,
        _ending: bool,
    ) {
        let message = status.message();
        let mut meta = ResponseMeta {
            message: (!message.is_empty()).then_some(message),
            trace_id: trace.map(TraceId::as_str),
            md,
            ..ResponseMeta::new(status.code())
        };
        if meta.md.is_empty() && !status.metadata().is_empty() {
            meta.md = status.metadata().clone();
        }
        if let Err(e) = out.response(id, flags, &meta, &[]) {
            // Only a message or metadata over 64 KiB gets here.
            log::error!("cannot encode the response to request {id}: {e}");
            let fallback = ResponseMeta {
                message: Some("the response meta was too large to encode"),
                trace_id: trace.map(TraceId::as_str),
                ..ResponseMeta::new(Code::INTERNAL)
            };
            let _ = out.response(id, flags, &fallback, &[]);
        }
    }

    fn streams(&self) -> StreamSupport {
        StreamSupport::Frames
    }

    fn write_message(
        &self,
        out: &mut Encoder,
        id: RequestId,
        flags: Flags,
        body: &[u8],
        _first: bool,
        _ending: bool,
    ) -> Result<(), Status> {
        out.message(id, flags, body)
            .map_err(|e| Status::internal(format!("cannot send the message: {e}")))
    }

    fn write_window(&self, out: &mut Encoder, id: RequestId, grant: WindowMeta) {
        out.window(id, grant);
    }

    fn write_pong(&self, out: &mut Encoder, token: RequestId) {
        out.pong(token);
    }

    fn has_goaway(&self) -> bool {
        true
    }

    fn write_goaway(&self, out: &mut Encoder, code: Code, message: &str) -> bool {
        // A GOAWAY meta is a code and a message: it fits unless the
        // message is over 64 KiB, which ours never are.
        let _ = out.goaway(&GoawayMeta::new(code, message));
        true
    }

    fn shutting_down_message(&self) -> &'static str {
        "the server is shutting down; the request was not run"
    }
}

/// The frame decoder of one native connection, and the reading of the
/// frames' metas.
#[derive(Debug)]
struct NativeDecoder {
    frames: Decoder,
    /// The current frame's meta, copied out of the read buffer: it is read
    /// at once, and sharing the buffer would cost two reference counts.
    meta: Vec<u8>,
}

impl MessageDecoder for NativeDecoder {
    fn decode(
        &mut self,
        buf: &mut BytesMut,
        on_message: &mut dyn FnMut(Message<'_>),
    ) -> Result<bool, ProtocolError> {
        let Some((header, body)) = self.frames.decode_copying_meta(buf, &mut self.meta)? else {
            return Ok(false);
        };
        let Some(body) = body else {
            if header.frame_type == FrameType::Message {
                on_message(Message::Stream(StreamFrame::Oversized {
                    id: header.request_id,
                    len: u64::from(header.body_len),
                }));
            } else if let Some(refusal) =
                body_too_large(header, &self.meta, self.frames.limits().max_body)
            {
                on_message(refusal);
            }
            return Ok(true);
        };
        match header.frame_type {
            FrameType::Request | FrameType::Oneway => request(header, &self.meta, body, on_message),
            FrameType::Cancel => on_message(Message::Cancel(header.request_id)),
            FrameType::Ping => on_message(Message::Ping(header.request_id)),
            // An answer to a PING the server never sends: nothing to do.
            FrameType::Pong => {}
            // Frames of a stream, for the connection to route.
            FrameType::Message => on_message(Message::Stream(StreamFrame::Message {
                id: header.request_id,
                flags: header.flags,
                body,
            })),
            FrameType::End => on_message(Message::Stream(StreamFrame::End(header.request_id))),
            FrameType::Window => {
                // The frame decoder checked the meta already.
                let grant = WindowMeta::decode(&self.meta).map_err(ProtocolError::BadWindow)?;
                on_message(Message::Stream(StreamFrame::Window {
                    id: header.request_id,
                    grant,
                }));
            }
            // The decoder refuses frames sent in the wrong direction.
            FrameType::Response | FrameType::Goaway => {}
        }
        Ok(true)
    }

    fn is_mid_message(&self, buf: &BytesMut) -> bool {
        self.frames.is_mid_frame(buf)
    }

    fn finish(&self, buf: &BytesMut) -> Result<(), ProtocolError> {
        self.frames.finish(buf)
    }
}

/// Hands on a REQUEST or ONEWAY, its meta read in place (the strings of
/// the head borrow the frame), or its refusal if the meta is bad.
fn request(header: Header, meta: &[u8], body: Bytes, on_message: &mut dyn FnMut(Message<'_>)) {
    let oneway = header.frame_type == FrameType::Oneway;
    match RequestMeta::decode(meta) {
        // A ONEWAY has no RESPONSE to end a stream with.
        Ok(m) if m.stream && oneway => on_message(Message::Refuse {
            id: header.request_id,
            flags: header.flags,
            oneway,
            status: Status::invalid_argument(format!(
                "a ONEWAY cannot open a stream (method {})",
                m.method
            )),
            trace: m.trace_id.and_then(TraceId::new),
        }),
        Ok(m) => on_message(Message::Request {
            head: RequestHead {
                id: header.request_id,
                flags: header.flags,
                oneway,
                method: m.method,
                timeout_ms: m.timeout_ms,
                trace_id: m.trace_id,
                caller: m.caller,
                md: m.md,
                overhead: HEADER_LEN + meta.len(),
                any_encoding: false,
                stream: m.stream,
            },
            body,
        }),
        Err(e) => on_message(Message::Refuse {
            id: header.request_id,
            flags: header.flags,
            oneway,
            status: e.to_status(),
            trace: None,
        }),
    }
}

/// The refusal of a request whose body is over `limit`, with the trace id
/// of its meta if it has a readable one; none for other frames.
fn body_too_large(header: Header, meta: &[u8], limit: usize) -> Option<Message<'static>> {
    let oneway = match header.frame_type {
        FrameType::Request => false,
        FrameType::Oneway => true,
        _ => return None,
    };
    let trace = RequestMeta::decode(meta)
        .ok()
        .and_then(|m| m.trace_id.and_then(TraceId::new));
    Some(Message::Refuse {
        id: header.request_id,
        flags: header.flags,
        oneway,
        status: Status::resource_exhausted(format!(
            "body too large: {} > {limit} bytes",
            header.body_len
        )),
        trace,
    })
}

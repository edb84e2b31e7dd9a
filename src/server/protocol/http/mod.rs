//! HTTP/1.1 with JSON, on the same port as the other protocols
//! (`docs/http.md`): `POST /<service>/<Method>` runs a method, and `GET`
//! on `/healthz`, `/livez`, `/metrics` and `/` reads the built-in
//! endpoints.
//!
//! The decoder ([`decode`]) cuts requests with `httparse`, reads
//! `Content-Length` and chunked bodies, turns a JSON body into
//! MessagePack for the handler, and answers the requests it refuses
//! itself (a `431`, a `413`, a `405`) with ready-made bytes. The writer
//! ([`answer`]) maps status codes to HTTP statuses and a MessagePack
//! answer back to JSON. A server-streaming method is called like any
//! other, its body the one request message, and answered by [`stream`]
//! with one chunked answer of newline-delimited JSON; client and
//! bidirectional streams are `501`.
//!
//! HTTP/1.1 answers go out in request order and carry no request id, so a
//! connection runs one request at a time ([`Protocol::max_in_flight`]):
//! pipelined requests wait, read but undecoded, until the one before is
//! answered. How a request is to be answered (its body's encoding,
//! whether the connection closes after it) travels in its
//! [`RequestId`], which nothing else reads on this protocol: see
//! [`Hints`].

mod answer;
mod decode;
mod stream;

use super::{DecodeConfig, MessageDecoder, Protocol, StreamSupport};
use crate::codec::{EncodeError, Encoder, Flags, RequestId};
use crate::metadata::Metadata;
use crate::status::{Code, Status};
use crate::trace::TraceId;

/// HTTP/1.1.
#[derive(Debug)]
pub(crate) struct Http;

impl Protocol for Http {
    fn name(&self) -> &'static str {
        "HTTP/1.1"
    }

    fn label(&self) -> &'static str {
        "http"
    }

    fn alpn(&self) -> Option<&'static [u8]> {
        Some(b"http/1.1")
    }

    fn index(&self) -> usize {
        2
    }

    /// A method token starts with a letter; HTTP's own methods are capital
    /// letters, none of them `S` (`0x53`, the native magic).
    fn claims(&self, first: u8) -> bool {
        first.is_ascii_uppercase() && first != crate::codec::MAGIC[0]
    }

    fn decoder(&self, config: &DecodeConfig) -> Box<dyn MessageDecoder> {
        Box::new(decode::HttpDecoder::new(config))
    }

    fn max_in_flight(&self) -> usize {
        1
    }

    fn write_ok(
        &self,
        out: &mut Encoder,
        id: RequestId,
        flags: Flags,
        body: &[u8],
        md: Metadata,
        ending: bool,
    ) -> Result<(), EncodeError> {
        let hints = Hints(id.0);
        if let Err(why) = answer::write_ok(out, hints, flags, body, &md, ending) {
            log::error!("cannot write the answer to an HTTP request: {why}");
            let status = Status::internal(why);
            answer::write_status(out, hints, &status, None, &Metadata::new(), ending);
        }
        Ok(())
    }

    fn write_status(
        &self,
        out: &mut Encoder,
        id: RequestId,
        _flags: Flags,
        status: &Status,
        trace: Option<&TraceId>,
        md: Metadata,
        ending: bool,
    ) {
        let md = if md.is_empty() {
            status.metadata().clone()
        } else {
            md
        };
        answer::write_status(out, Hints(id.0), status, trace, &md, ending);
    }

    /// A server stream is opened by a plain `POST`, its body the one
    /// request message, and answered with newline-delimited JSON
    /// ([`stream`]); client and bidirectional streams are `501`.
    fn streams(&self) -> StreamSupport {
        StreamSupport::ServerFromBody
    }

    fn refuses_stream(&self, id: RequestId) -> Option<&'static str> {
        stream::refusal(Hints(id.0))
    }

    fn write_message(
        &self,
        out: &mut Encoder,
        id: RequestId,
        flags: Flags,
        body: &[u8],
        first: bool,
        ending: bool,
    ) -> Result<(), Status> {
        stream::write_message(out, Hints(id.0), flags, body, first, ending)
    }

    fn write_stream_end(
        &self,
        out: &mut Encoder,
        id: RequestId,
        _flags: Flags,
        status: &Status,
        trace: Option<&TraceId>,
        md: Metadata,
        ending: bool,
        sent_any: bool,
    ) {
        let md = if md.is_empty() {
            status.metadata().clone()
        } else {
            md
        };
        stream::write_end(out, Hints(id.0), status, trace, &md, ending, sent_any);
    }

    /// HTTP/1.1 has no message to send unasked: a connection ends by
    /// answering `Connection: close`, or by closing when idle.
    fn has_goaway(&self) -> bool {
        false
    }

    fn write_goaway(&self, _out: &mut Encoder, _code: Code, _message: &str) -> bool {
        false
    }

    fn shutting_down_message(&self) -> &'static str {
        "the server is shutting down; the request was not run"
    }
}

/// How a request's answer is written, packed into its [`RequestId`]:
/// the body's format in the low three bits, then whether the connection
/// closes after it and whether the request was HTTP/1.0; the request's
/// number on the connection above, for logs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Hints(pub u32);

/// What an answer's body is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Format {
    /// JSON, transcoded from a MessagePack answer.
    Json = 0,
    /// MessagePack as the handler made it.
    Msgpack = 1,
    /// A raw handler's bytes.
    Octet = 2,
    /// A built-in endpoint's plain text.
    Text = 3,
    /// A built-in endpoint's JSON document, as made.
    JsonDocument = 4,
    /// The Prometheus text exposition.
    Metrics = 5,
}

const FORMAT_MASK: u32 = 0b111;
const CLOSE: u32 = 1 << 3;
const HTTP_10: u32 = 1 << 4;
const SEQ_SHIFT: u32 = 8;

impl Hints {
    pub fn new(format: Format, close: bool, http10: bool, seq: u32) -> Hints {
        let mut bits = format as u32;
        if close {
            bits |= CLOSE;
        }
        if http10 {
            bits |= HTTP_10;
        }
        Hints(bits | (seq << SEQ_SHIFT))
    }

    pub fn format(self) -> Format {
        match self.0 & FORMAT_MASK {
            1 => Format::Msgpack,
            2 => Format::Octet,
            3 => Format::Text,
            4 => Format::JsonDocument,
            5 => Format::Metrics,
            _ => Format::Json,
        }
    }

    pub fn close(self) -> bool {
        self.0 & CLOSE != 0
    }

    pub fn http10(self) -> bool {
        self.0 & HTTP_10 != 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hints_round_trip() {
        let h = Hints::new(Format::Metrics, true, false, 0xff_ffff);
        assert_eq!(h.format(), Format::Metrics);
        assert!(h.close());
        assert!(!h.http10());
        let h = Hints::new(Format::Octet, false, true, 7);
        assert_eq!(h.format(), Format::Octet);
        assert!(!h.close());
        assert!(h.http10());
    }

    #[test]
    fn claims_capital_letters_but_the_native_magic() {
        assert!(Http.claims(b'G'));
        assert!(Http.claims(b'P'));
        assert!(!Http.claims(b'S'));
        assert!(!Http.claims(0x93));
        assert!(!Http.claims(b'g'));
    }
}

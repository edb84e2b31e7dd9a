//! The frame encoder: appends frames to a reusable output buffer.
//!
//! Meta is serialized straight into the buffer behind a placeholder header
//! whose lengths are patched afterwards, so a frame costs no allocation once
//! the buffer has grown to the connection's usual batch size.

use std::fmt;

use bytes::{BufMut, BytesMut};
use serde::Serialize;

use super::header::{Flags, FrameType, Header, RequestId, HEADER_LEN};
use super::meta::{self, GoawayMeta, RequestMeta, ResponseMeta, WindowMeta};

/// A frame that cannot be encoded: a section longer than its length field
/// can say. Nothing is written when this is returned.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum EncodeError {
    /// The meta section is longer than 65535 bytes.
    MetaTooLarge(usize),
    /// The body is longer than 2^32-1 bytes.
    BodyTooLarge(usize),
}

impl fmt::Display for EncodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            EncodeError::MetaTooLarge(n) => {
                write!(f, "meta too large to encode: {n} > 65535 bytes")
            }
            EncodeError::BodyTooLarge(n) => {
                write!(f, "body too large to encode: {n} > 4294967295 bytes")
            }
        }
    }
}

impl std::error::Error for EncodeError {}

/// Encodes frames into an output buffer that is reused across frames.
///
/// Frames are appended; the owner writes [`Encoder::as_slice`] to the
/// socket and calls [`Encoder::consume`] with what the socket took, so
/// several frames go out in one write.
///
/// # Examples
///
/// ```
/// use syncrpc::codec::{Encoder, Flags, RequestId, RequestMeta};
///
/// let mut enc = Encoder::new();
/// let meta = RequestMeta { timeout_ms: 250, ..RequestMeta::new("/echo.Echo/Say") };
/// enc.request(RequestId(7), Flags::default(), &meta, b"\x81\xa4text\xa2hi").unwrap();
/// enc.ping(RequestId(42));
/// assert_eq!(enc.len(), (16 + 36 + 9) + 16); // header + meta + body, then a PING
/// enc.consume(enc.len()); // as if the socket took it all
/// assert!(enc.is_empty());
/// ```
#[derive(Debug, Default)]
pub struct Encoder {
    buf: BytesMut,
}

impl Encoder {
    /// An encoder with an empty buffer.
    pub fn new() -> Encoder {
        Encoder::default()
    }

    /// An encoder whose buffer starts with `capacity` bytes.
    pub fn with_capacity(capacity: usize) -> Encoder {
        Encoder {
            buf: BytesMut::with_capacity(capacity),
        }
    }

    /// The output buffer, for messages of another wire protocol written
    /// to the same connection.
    pub(crate) fn buf_mut(&mut self) -> &mut BytesMut {
        &mut self.buf
    }

    /// Appends a REQUEST frame.
    pub fn request(
        &mut self,
        id: RequestId,
        flags: Flags,
        meta: &RequestMeta<'_>,
        body: &[u8],
    ) -> Result<(), EncodeError> {
        self.frame(FrameType::Request, flags, id, meta, body)
    }

    /// Appends a ONEWAY frame.
    pub fn oneway(
        &mut self,
        id: RequestId,
        flags: Flags,
        meta: &RequestMeta<'_>,
        body: &[u8],
    ) -> Result<(), EncodeError> {
        self.frame(FrameType::Oneway, flags, id, meta, body)
    }

    /// Appends a RESPONSE frame.
    pub fn response(
        &mut self,
        id: RequestId,
        flags: Flags,
        meta: &ResponseMeta<'_>,
        body: &[u8],
    ) -> Result<(), EncodeError> {
        match meta {
            // The meta of nearly every answer, {"code": n}, without serde.
            ResponseMeta {
                code: code @ 0..=0x7f,
                message: None,
                trace_id: None,
                md,
            } if md.is_empty() => {
                let meta = [0x81, 0xa4, b'c', b'o', b'd', b'e', *code as u8];
                self.frame_with(FrameType::Response, flags, id, body, |buf| {
                    buf.extend_from_slice(&meta)
                })
            }
            _ => self.frame(FrameType::Response, flags, id, meta, body),
        }
    }

    /// Appends a GOAWAY frame (request id 0, empty body).
    pub fn goaway(&mut self, meta: &GoawayMeta<'_>) -> Result<(), EncodeError> {
        self.frame(FrameType::Goaway, Flags::default(), RequestId(0), meta, &[])
    }

    /// Appends a MESSAGE frame: one message of stream `id`, its body
    /// compressed and encoded as `flags` say.
    pub fn message(&mut self, id: RequestId, flags: Flags, body: &[u8]) -> Result<(), EncodeError> {
        self.frame_with(FrameType::Message, flags, id, body, |_| {})
    }

    /// Appends an END frame: the client sends no more messages on stream
    /// `id`.
    pub fn end(&mut self, id: RequestId) {
        self.bare(FrameType::End, id);
    }

    /// Appends a WINDOW frame granting the peer `grant` more bytes of
    /// messages on stream `id`.
    pub fn window(&mut self, id: RequestId, grant: WindowMeta) {
        // {"bytes": n} with n below 2^31 always fits.
        let _ = self.frame(FrameType::Window, Flags::default(), id, &grant, &[]);
    }

    /// Appends a CANCEL frame for request `id`.
    pub fn cancel(&mut self, id: RequestId) {
        self.bare(FrameType::Cancel, id);
    }

    /// Appends a PING frame carrying `token`.
    pub fn ping(&mut self, token: RequestId) {
        self.bare(FrameType::Ping, token);
    }

    /// Appends a PONG frame echoing `token`.
    pub fn pong(&mut self, token: RequestId) {
        self.bare(FrameType::Pong, token);
    }

    /// Appends a frame with any serializable meta. The meta is written with
    /// `rmp-serde` as a map keyed by field name.
    pub fn frame<M: Serialize>(
        &mut self,
        frame_type: FrameType,
        flags: Flags,
        id: RequestId,
        meta: &M,
        body: &[u8],
    ) -> Result<(), EncodeError> {
        self.frame_with(frame_type, flags, id, body, |buf| {
            meta::write_to(&mut buf.writer(), meta)
        })
    }

    /// Appends a frame whose meta `write_meta` appends in place, after a
    /// header that is filled in once the meta's length is known.
    fn frame_with(
        &mut self,
        frame_type: FrameType,
        flags: Flags,
        id: RequestId,
        body: &[u8],
        write_meta: impl FnOnce(&mut BytesMut),
    ) -> Result<(), EncodeError> {
        let body_len =
            u32::try_from(body.len()).map_err(|_| EncodeError::BodyTooLarge(body.len()))?;
        let start = self.buf.len();
        self.buf.reserve(HEADER_LEN + 64 + body.len());
        self.buf.put_bytes(0, HEADER_LEN);
        write_meta(&mut self.buf);
        let meta_len = self.buf.len() - start - HEADER_LEN;
        let Ok(meta_len) = u16::try_from(meta_len) else {
            self.buf.truncate(start);
            return Err(EncodeError::MetaTooLarge(meta_len));
        };
        self.buf.extend_from_slice(body);
        let header = Header {
            frame_type,
            flags,
            meta_len,
            request_id: id,
            body_len,
        };
        header.encode(&mut self.buf[start..]);
        Ok(())
    }

    fn bare(&mut self, frame_type: FrameType, id: RequestId) {
        let mut out = [0u8; HEADER_LEN];
        Header {
            frame_type,
            flags: Flags::default(),
            meta_len: 0,
            request_id: id,
            body_len: 0,
        }
        .encode(&mut out);
        self.buf.extend_from_slice(&out);
    }

    /// Appends bytes that are already encoded frames.
    pub fn extend_from_slice(&mut self, frames: &[u8]) {
        self.buf.extend_from_slice(frames);
    }

    /// The encoded bytes not yet consumed.
    pub fn as_slice(&self) -> &[u8] {
        &self.buf
    }

    /// Drops the first `n` bytes, which the socket has taken.
    ///
    /// # Panics
    ///
    /// If `n` is more than [`Encoder::len`].
    pub fn consume(&mut self, n: usize) {
        // BytesMut reclaims the consumed front on the next reserve, so the
        // allocation is reused rather than grown.
        bytes::Buf::advance(&mut self.buf, n);
    }

    /// Takes the encoded bytes out, leaving the encoder empty. The returned
    /// buffer shares no state with the encoder.
    pub fn split(&mut self) -> BytesMut {
        self.buf.split()
    }

    /// Bytes waiting to be written.
    pub fn len(&self) -> usize {
        self.buf.len()
    }

    /// True when nothing waits to be written.
    pub fn is_empty(&self) -> bool {
        self.buf.is_empty()
    }

    /// Drops everything, keeping the allocation.
    pub fn clear(&mut self) {
        self.buf.clear();
    }

    /// The buffer's current capacity, for memory accounting.
    pub fn capacity(&self) -> usize {
        self.buf.capacity()
    }

    /// Shrinks an idle buffer that grew past `max` bytes back to nothing,
    /// so one burst does not pin memory for the connection's lifetime.
    pub fn shrink_if_idle(&mut self, max: usize) {
        if self.buf.is_empty() && self.buf.capacity() > max {
            self.buf = BytesMut::new();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::status::Code;

    #[test]
    fn stream_frames_have_only_their_sections() {
        let mut enc = Encoder::new();
        enc.message(RequestId(3), Flags::default(), b"\x01")
            .unwrap();
        enc.end(RequestId(3));
        enc.window(RequestId(3), WindowMeta::new(1).unwrap());
        let header = |at: usize| Header::decode(&enc.as_slice()[at..]).unwrap();
        let (m, e, w) = (header(0), header(17), header(33));
        assert_eq!(
            (m.frame_type, m.meta_len, m.body_len),
            (FrameType::Message, 0, 1)
        );
        assert_eq!(
            (e.frame_type, e.meta_len, e.body_len),
            (FrameType::End, 0, 0)
        );
        assert_eq!(
            (w.frame_type, w.meta_len, w.body_len),
            (FrameType::Window, 8, 0)
        );
        assert_eq!(&enc.as_slice()[49..], b"\x81\xa5bytes\x01");
    }

    #[test]
    fn a_bare_status_meta_is_written_as_serde_writes_it() {
        for code in [0, 1, 5, 14, 16, 127, 128, 70_000] {
            let meta = ResponseMeta::new(Code::from(code));
            let mut enc = Encoder::new();
            enc.response(RequestId(9), Flags::default(), &meta, b"body")
                .unwrap();
            let mut slow = Encoder::new();
            slow.frame(
                FrameType::Response,
                Flags::default(),
                RequestId(9),
                &meta,
                b"body",
            )
            .unwrap();
            assert_eq!(enc.as_slice(), slow.as_slice(), "code {code}");
        }
    }
}

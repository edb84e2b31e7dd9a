//! The incremental frame decoder.
//!
//! Bytes are appended to a `BytesMut` as they arrive, in chunks of any size;
//! [`Decoder::decode`] cuts complete frames off its front. The decoder never
//! sizes a buffer from a declared length: the read buffer grows only with
//! bytes that actually arrived, a meta longer than its limit is a connection
//! error as soon as the header is seen, and a body longer than its limit is
//! reported once ([`Decoded::BodyTooLarge`]) and then dropped as it arrives.

use bytes::{Buf, Bytes, BytesMut};

use super::error::ProtocolError;
use super::frame::Frame;
use super::header::{FrameType, Header, HEADER_LEN};
use super::meta::WindowMeta;

/// Size limits the decoder enforces.
///
/// # Examples
///
/// ```
/// use syncrpc::codec::FrameLimits;
///
/// let limits = FrameLimits::default();
/// assert_eq!(limits.max_body, 10 * 1024 * 1024);
/// assert_eq!(limits.max_meta, 16 * 1024);
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FrameLimits {
    /// Largest body, as sent and after decompression. Default 10 MiB
    /// (`docs/protocol.md`, "Limits"). A larger body is discarded
    /// unbuffered and its request answered `RESOURCE_EXHAUSTED`.
    pub max_body: usize,
    /// Largest meta section. Default 16 KiB (`docs/protocol.md`,
    /// "Limits"). A larger one is a connection error.
    pub max_meta: usize,
}

impl Default for FrameLimits {
    fn default() -> Self {
        FrameLimits {
            max_body: 10 * 1024 * 1024,
            max_meta: 16 * 1024,
        }
    }
}

/// Which end of the connection the decoder serves: it accepts only the
/// frame types the other end may send.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Side {
    /// Decoding what a client sent.
    Server,
    /// Decoding what a server sent.
    Client,
}

/// What [`Decoder::decode`] produced.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Decoded {
    /// A complete frame.
    Frame(Frame),
    /// A frame whose body is over [`FrameLimits::max_body`]. Its header and
    /// meta are given so the request can be answered `RESOURCE_EXHAUSTED`;
    /// the body is skipped as it arrives, then decoding goes on.
    BodyTooLarge {
        /// The frame's header.
        header: Header,
        /// The frame's meta section.
        meta: bytes::Bytes,
    },
}

/// An incremental decoder for one direction of one connection.
///
/// # Examples
///
/// ```
/// use bytes::BytesMut;
/// use syncrpc::codec::{Decoded, Decoder, FrameLimits, FrameType, Side};
///
/// let ping = [0x53, 0x52, 1, 5, 0, 0, 0, 0, 0, 0, 0, 42, 0, 0, 0, 0];
/// let mut dec = Decoder::new(Side::Server, FrameLimits::default());
/// let mut buf = BytesMut::new();
/// buf.extend_from_slice(&ping[..5]);
/// assert_eq!(dec.decode(&mut buf).unwrap(), None); // needs more bytes
/// buf.extend_from_slice(&ping[5..]);
/// match dec.decode(&mut buf).unwrap() {
///     Some(Decoded::Frame(f)) => assert_eq!(f.header.frame_type, FrameType::Ping),
///     other => panic!("{other:?}"),
/// }
/// ```
#[derive(Clone, Debug)]
pub struct Decoder {
    side: Side,
    limits: FrameLimits,
    /// Body bytes of an oversized frame still to be dropped.
    skipping: u64,
}

impl Decoder {
    /// A decoder for `side` with the given limits.
    pub fn new(side: Side, limits: FrameLimits) -> Decoder {
        Decoder {
            side,
            limits,
            skipping: 0,
        }
    }

    /// The limits in force.
    pub fn limits(&self) -> FrameLimits {
        self.limits
    }

    /// Cuts the next frame off the front of `buf`.
    ///
    /// Returns `Ok(None)` when `buf` does not yet hold a whole frame (all of
    /// `buf` may have been consumed if an oversized body is being skipped).
    /// An error means the framing is broken; the connection must be closed.
    pub fn decode(&mut self, buf: &mut BytesMut) -> Result<Option<Decoded>, ProtocolError> {
        let Some((header, fits)) = self.next_header(buf)? else {
            return Ok(None);
        };
        let meta_end = HEADER_LEN + header.meta_len as usize;
        if !fits {
            let meta = buf.split_to(meta_end).split_off(HEADER_LEN).freeze();
            self.skip_body(buf, header);
            return Ok(Some(Decoded::BodyTooLarge { header, meta }));
        }
        let mut frame = buf.split_to(meta_end + header.body_len as usize).freeze();
        frame.advance(HEADER_LEN);
        let body = frame.split_off(header.meta_len as usize);
        Ok(Some(Decoded::Frame(Frame {
            header,
            meta: frame,
            body,
        })))
    }

    /// As [`Decoder::decode`], but copies the meta into `meta` instead of
    /// sharing the buffer (crate-internal): a reader that parses the meta
    /// at once and keeps only the body saves two reference counts on the
    /// buffer. The body is `None` if it is over the limit and skipped.
    pub(crate) fn decode_copying_meta(
        &mut self,
        buf: &mut BytesMut,
        meta: &mut Vec<u8>,
    ) -> Result<Option<(Header, Option<Bytes>)>, ProtocolError> {
        let Some((header, fits)) = self.next_header(buf)? else {
            return Ok(None);
        };
        let meta_end = HEADER_LEN + header.meta_len as usize;
        meta.clear();
        meta.extend_from_slice(&buf[HEADER_LEN..meta_end]);
        buf.advance(meta_end);
        if !fits {
            self.skip_body(buf, header);
            return Ok(Some((header, None)));
        }
        let body = buf.split_to(header.body_len as usize).freeze();
        Ok(Some((header, Some(body))))
    }

    /// Skips what is left of a body being skipped, then checks the next
    /// frame's header. `Some((header, fits))` once `buf` holds the whole
    /// frame, or, for a body over the limit (`fits` false), its meta.
    fn next_header(&mut self, buf: &mut BytesMut) -> Result<Option<(Header, bool)>, ProtocolError> {
        if self.skipping > 0 {
            let n = (buf.len() as u64).min(self.skipping);
            buf.advance(n as usize);
            self.skipping -= n;
            if self.skipping > 0 {
                return Ok(None);
            }
        }
        if buf.len() < HEADER_LEN {
            return Ok(None);
        }
        let header = self.check_header(&buf[..HEADER_LEN])?;
        let meta_end = HEADER_LEN + header.meta_len as usize;
        let fits = header.body_len as usize <= self.limits.max_body;
        let needed = if fits {
            meta_end + header.body_len as usize
        } else {
            meta_end
        };
        if buf.len() < needed {
            return Ok(None);
        }
        if header.frame_type == FrameType::Window {
            // A grant that no stream state could make right: refused
            // whatever the stream, like any other malformed frame.
            WindowMeta::decode(&buf[HEADER_LEN..meta_end]).map_err(ProtocolError::BadWindow)?;
        }
        Ok(Some((header, fits)))
    }

    /// Starts skipping the body of `header`, over the limit, dropping
    /// whatever part of it `buf` already holds.
    fn skip_body(&mut self, buf: &mut BytesMut, header: Header) {
        self.skipping = u64::from(header.body_len);
        let n = (buf.len() as u64).min(self.skipping);
        buf.advance(n as usize);
        self.skipping -= n;
    }

    /// True while a frame has begun but not ended: `buf` holds part of one,
    /// or an oversized body is still being skipped. The server's whole-frame
    /// timeout runs while this is true.
    pub fn is_mid_frame(&self, buf: &BytesMut) -> bool {
        self.skipping > 0 || !buf.is_empty()
    }

    /// Called when the peer closed its sending side: an error if it stopped
    /// in the middle of a frame.
    pub fn finish(&self, buf: &BytesMut) -> Result<(), ProtocolError> {
        if self.is_mid_frame(buf) {
            Err(ProtocolError::Truncated { have: buf.len() })
        } else {
            Ok(())
        }
    }

    fn check_header(&self, bytes: &[u8]) -> Result<Header, ProtocolError> {
        let header = Header::decode(bytes)?;
        let ft = header.frame_type;
        let allowed = match self.side {
            Side::Server => ft.is_client_to_server(),
            Side::Client => ft.is_server_to_client(),
        };
        if !allowed {
            return Err(ProtocolError::WrongDirection(ft));
        }
        if header.meta_len as usize > self.limits.max_meta {
            return Err(ProtocolError::MetaTooLarge {
                len: header.meta_len as usize,
                limit: self.limits.max_meta,
            });
        }
        if ft.is_bare() && (header.meta_len != 0 || header.body_len != 0) {
            return Err(ProtocolError::NotEmpty {
                frame_type: ft,
                meta_len: header.meta_len,
                body_len: header.body_len,
            });
        }
        if ft == FrameType::Message && header.meta_len != 0 {
            return Err(ProtocolError::MessageWithMeta {
                meta_len: header.meta_len,
            });
        }
        if ft == FrameType::Window && header.body_len != 0 {
            return Err(ProtocolError::WindowWithBody {
                body_len: header.body_len,
            });
        }
        Ok(header)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::{Encoder, Flags, RequestId, RequestMeta};

    /// What either way of decoding saw, frame by frame.
    type Seen = Vec<(Header, Vec<u8>, Option<Vec<u8>>)>;

    fn stream() -> BytesMut {
        let mut enc = Encoder::new();
        for (id, len) in [(1u32, 0usize), (2, 64), (3, 100), (4, 7)] {
            let meta = RequestMeta::new("/a.B/C");
            enc.request(RequestId(id), Flags::default(), &meta, &vec![id as u8; len])
                .unwrap();
            enc.ping(RequestId(id));
        }
        enc.split()
    }

    /// Feeds `stream()` in chunks of 1, 2, 3... bytes to `step`.
    fn feed(mut step: impl FnMut(&mut BytesMut) -> bool) {
        let all = stream();
        let mut buf = BytesMut::new();
        let (mut at, mut chunk) = (0, 1);
        while at < all.len() {
            let end = (at + chunk).min(all.len());
            buf.extend_from_slice(&all[at..end]);
            (at, chunk) = (end, chunk % 13 + 1);
            while step(&mut buf) {}
        }
        assert!(buf.is_empty());
    }

    #[test]
    fn copying_the_meta_decodes_what_sharing_it_does() {
        // Bodies over 64 bytes are skipped.
        let limits = FrameLimits {
            max_body: 64,
            ..FrameLimits::default()
        };
        let mut shared: Seen = Vec::new();
        let mut d = Decoder::new(Side::Server, limits);
        feed(|buf| match d.decode(buf).unwrap() {
            Some(Decoded::Frame(f)) => {
                shared.push((f.header, f.meta.to_vec(), Some(f.body.to_vec())));
                true
            }
            Some(Decoded::BodyTooLarge { header, meta }) => {
                shared.push((header, meta.to_vec(), None));
                true
            }
            None => false,
        });
        let mut copied: Seen = Vec::new();
        let mut d = Decoder::new(Side::Server, limits);
        let mut meta = Vec::new();
        feed(|buf| match d.decode_copying_meta(buf, &mut meta).unwrap() {
            Some((header, body)) => {
                copied.push((header, meta.clone(), body.map(|b| b.to_vec())));
                true
            }
            None => false,
        });
        assert_eq!(shared.len(), 8);
        assert_eq!(shared.iter().filter(|f| f.2.is_none()).count(), 1);
        assert_eq!(shared, copied);
    }
}

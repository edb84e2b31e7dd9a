//! The 16-byte frame header: magic, version, frame type, flags, reserved
//! byte, meta length, request id and body length, all big-endian.

use std::fmt;

use super::error::ProtocolError;

/// The two magic bytes every frame starts with: ASCII `"SR"`.
pub const MAGIC: [u8; 2] = [0x53, 0x52];
/// The protocol version this crate speaks.
pub const VERSION: u8 = 1;
/// Size of the fixed frame header in bytes.
pub const HEADER_LEN: usize = 16;

/// A request id, chosen by the client and unique among its requests in
/// flight on one connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct RequestId(pub u32);

impl fmt::Display for RequestId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.0, f)
    }
}

/// The kind of a frame (header byte 3).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum FrameType {
    /// Client to server: a call that wants a response.
    Request = 1,
    /// Server to client: the answer to a REQUEST.
    Response = 2,
    /// Client to server: a call that is never answered.
    Oneway = 3,
    /// Client to server: cancel the request named by the id.
    Cancel = 4,
    /// Either way: a liveness probe; the id is an opaque token.
    Ping = 5,
    /// Either way: the answer to a PING, echoing its token.
    Pong = 6,
    /// Server to client: no new requests on this connection.
    Goaway = 7,
    /// Either way: one message of the stream named by the id.
    Message = 8,
    /// Client to server: no more messages on the stream named by the id.
    End = 9,
    /// Either way: grants the peer more bytes of messages on the stream
    /// named by the id.
    Window = 10,
}

impl FrameType {
    /// Every frame type, in code order.
    pub const ALL: [FrameType; 10] = [
        FrameType::Request,
        FrameType::Response,
        FrameType::Oneway,
        FrameType::Cancel,
        FrameType::Ping,
        FrameType::Pong,
        FrameType::Goaway,
        FrameType::Message,
        FrameType::End,
        FrameType::Window,
    ];

    /// The highest frame type code.
    pub const MAX_CODE: u8 = 10;

    /// The type for a wire code, or `None` for 0 and codes above
    /// [`FrameType::MAX_CODE`].
    pub fn from_u8(code: u8) -> Option<FrameType> {
        match code {
            1..=FrameType::MAX_CODE => Some(FrameType::ALL[code as usize - 1]),
            _ => None,
        }
    }

    /// The wire code.
    pub fn as_u8(self) -> u8 {
        self as u8
    }

    /// True for the types a client may send (REQUEST, ONEWAY, CANCEL, PING,
    /// PONG, MESSAGE, END, WINDOW).
    pub fn is_client_to_server(self) -> bool {
        !matches!(self, FrameType::Response | FrameType::Goaway)
    }

    /// True for the types a server may send (RESPONSE, PING, PONG, GOAWAY,
    /// MESSAGE, WINDOW).
    pub fn is_server_to_client(self) -> bool {
        matches!(
            self,
            FrameType::Response
                | FrameType::Ping
                | FrameType::Pong
                | FrameType::Goaway
                | FrameType::Message
                | FrameType::Window
        )
    }

    /// True for the types whose meta and body must be empty (CANCEL, PING,
    /// PONG, END).
    pub fn is_bare(self) -> bool {
        matches!(
            self,
            FrameType::Cancel | FrameType::Ping | FrameType::Pong | FrameType::End
        )
    }

    /// True for the frames of a stream: MESSAGE, END and WINDOW.
    pub fn is_stream_frame(self) -> bool {
        matches!(
            self,
            FrameType::Message | FrameType::End | FrameType::Window
        )
    }

    /// The name used in `docs/protocol.md` (`"REQUEST"`, ...).
    pub fn name(self) -> &'static str {
        match self {
            FrameType::Request => "REQUEST",
            FrameType::Response => "RESPONSE",
            FrameType::Oneway => "ONEWAY",
            FrameType::Cancel => "CANCEL",
            FrameType::Ping => "PING",
            FrameType::Pong => "PONG",
            FrameType::Goaway => "GOAWAY",
            FrameType::Message => "MESSAGE",
            FrameType::End => "END",
            FrameType::Window => "WINDOW",
        }
    }
}

impl fmt::Display for FrameType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Body compression (flag bits 0-1).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub enum Compression {
    /// Not compressed.
    #[default]
    None = 0,
    /// gzip, RFC 1952, one member.
    Gzip = 1,
    /// zlib, RFC 1950.
    Zlib = 2,
}

/// Body encoding (flag bits 2-3).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub enum Encoding {
    /// One MessagePack value.
    #[default]
    MsgPack = 0,
    /// Opaque bytes the runtime passes through untouched.
    Raw = 1,
}

/// The flags byte. Bits 4-7 are reserved; a decoded header never has them
/// set. The compression value 3 and encoding values 2 and 3 are reserved
/// too, but they do not break the framing: the request is answered
/// UNIMPLEMENTED, so they are kept here and reported by
/// [`Flags::compression`] and [`Flags::encoding`].
///
/// # Examples
///
/// ```
/// use syncrpc::codec::{Compression, Encoding, Flags};
///
/// let f = Flags::new(Compression::Gzip, Encoding::Raw);
/// assert_eq!(f.bits(), 0b0101);
/// assert_eq!(f.compression(), Ok(Compression::Gzip));
/// assert_eq!(f.encoding(), Ok(Encoding::Raw));
/// assert_eq!(Flags::from_bits(0b0011).unwrap().compression(), Err(3));
/// assert!(Flags::from_bits(0x10).is_none());
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub struct Flags(u8);

impl Flags {
    /// Mask of the reserved bits 4-7.
    pub const RESERVED: u8 = 0xF0;

    /// Flags for the given compression and encoding.
    pub const fn new(compression: Compression, encoding: Encoding) -> Flags {
        Flags(compression as u8 | (encoding as u8) << 2)
    }

    /// Flags from the wire byte, or `None` if a reserved bit (4-7) is set.
    pub const fn from_bits(bits: u8) -> Option<Flags> {
        if bits & Flags::RESERVED != 0 {
            None
        } else {
            Some(Flags(bits))
        }
    }

    /// The wire byte.
    pub const fn bits(self) -> u8 {
        self.0
    }

    /// The body compression, or `Err(3)` for the reserved value.
    pub fn compression(self) -> Result<Compression, u8> {
        match self.0 & 0b11 {
            0 => Ok(Compression::None),
            1 => Ok(Compression::Gzip),
            2 => Ok(Compression::Zlib),
            v => Err(v),
        }
    }

    /// The body encoding, or `Err(2 | 3)` for a reserved value.
    pub fn encoding(self) -> Result<Encoding, u8> {
        match (self.0 >> 2) & 0b11 {
            0 => Ok(Encoding::MsgPack),
            1 => Ok(Encoding::Raw),
            v => Err(v),
        }
    }
}

/// A decoded frame header.
///
/// # Examples
///
/// ```
/// use syncrpc::codec::{FrameType, Header};
///
/// let bytes = [0x53, 0x52, 1, 5, 0, 0, 0, 0, 0, 0, 0, 42, 0, 0, 0, 0];
/// let h = Header::decode(&bytes).unwrap();
/// assert_eq!(h.frame_type, FrameType::Ping);
/// assert_eq!(h.request_id.0, 42);
/// let mut out = [0u8; 16];
/// h.encode(&mut out);
/// assert_eq!(out, bytes);
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Header {
    /// The frame type.
    pub frame_type: FrameType,
    /// Compression and encoding of the body.
    pub flags: Flags,
    /// Length of the meta section.
    pub meta_len: u16,
    /// The request this frame belongs to (or a PING token; 0 for GOAWAY).
    pub request_id: RequestId,
    /// Length of the body as sent (compressed or not).
    pub body_len: u32,
}

impl Header {
    /// Decodes and validates the first 16 bytes of `bytes`.
    ///
    /// Checks magic, version, frame type, reserved flag bits and the
    /// reserved byte, in wire order, and reports the first that is wrong.
    /// Lengths are not checked against limits here; the decoder does that.
    ///
    /// # Panics
    ///
    /// If `bytes` is shorter than [`HEADER_LEN`].
    pub fn decode(bytes: &[u8]) -> Result<Header, ProtocolError> {
        let b = &bytes[..HEADER_LEN];
        if b[0..2] != MAGIC {
            return Err(ProtocolError::BadMagic([b[0], b[1]]));
        }
        if b[2] != VERSION {
            return Err(ProtocolError::BadVersion(b[2]));
        }
        let frame_type = FrameType::from_u8(b[3]).ok_or(ProtocolError::BadFrameType(b[3]))?;
        let flags = Flags::from_bits(b[4]).ok_or(ProtocolError::ReservedFlags(b[4]))?;
        if b[5] != 0 {
            return Err(ProtocolError::ReservedByte(b[5]));
        }
        Ok(Header {
            frame_type,
            flags,
            meta_len: u16::from_be_bytes([b[6], b[7]]),
            request_id: RequestId(u32::from_be_bytes([b[8], b[9], b[10], b[11]])),
            body_len: u32::from_be_bytes([b[12], b[13], b[14], b[15]]),
        })
    }

    /// Writes the header into the first 16 bytes of `out`.
    ///
    /// # Panics
    ///
    /// If `out` is shorter than [`HEADER_LEN`].
    pub fn encode(&self, out: &mut [u8]) {
        let out = &mut out[..HEADER_LEN];
        out[0..2].copy_from_slice(&MAGIC);
        out[2] = VERSION;
        out[3] = self.frame_type.as_u8();
        out[4] = self.flags.bits();
        out[5] = 0;
        out[6..8].copy_from_slice(&self.meta_len.to_be_bytes());
        out[8..12].copy_from_slice(&self.request_id.0.to_be_bytes());
        out[12..16].copy_from_slice(&self.body_len.to_be_bytes());
    }

    /// Meta plus body length: the bytes that follow the header.
    pub fn payload_len(&self) -> u64 {
        u64::from(self.meta_len) + u64::from(self.body_len)
    }
}

//! Connection errors: bytes that break the framing, after which the next
//! frame's start is unknown and the connection must close.

use std::fmt;

use super::header::FrameType;

/// A connection-level protocol violation (`docs/protocol.md`, "Connection
/// errors"). The server answers it with GOAWAY INTERNAL carrying this
/// error's text, then closes.
///
/// # Examples
///
/// ```
/// use syncrpc::codec::ProtocolError;
///
/// let e = ProtocolError::MetaTooLarge { len: 20000, limit: 16384 };
/// assert_eq!(e.to_string(), "meta too large: 20000 > 16384 bytes");
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum ProtocolError {
    /// The first two bytes of a frame are not `"SR"`.
    BadMagic([u8; 2]),
    /// The version byte is not 1.
    BadVersion(u8),
    /// Frame type 0 or above 10.
    BadFrameType(u8),
    /// One of the reserved flag bits 4-7 is set.
    ReservedFlags(u8),
    /// The reserved header byte is not 0.
    ReservedByte(u8),
    /// The meta section is longer than the configured limit.
    MetaTooLarge {
        /// Declared length.
        len: usize,
        /// The configured limit.
        limit: usize,
    },
    /// A frame type arrived that this side never receives (a RESPONSE sent
    /// to a server, a REQUEST sent to a client, ...).
    WrongDirection(FrameType),
    /// A CANCEL, PING or PONG frame with a non-empty meta or body.
    NotEmpty {
        /// The frame's type.
        frame_type: FrameType,
        /// Its declared meta length.
        meta_len: u16,
        /// Its declared body length.
        body_len: u32,
    },
    /// A MESSAGE frame with a meta section: a message is all body.
    MessageWithMeta {
        /// Its declared meta length.
        meta_len: u16,
    },
    /// A WINDOW frame with a body: its grant is all meta.
    WindowWithBody {
        /// Its declared body length.
        body_len: u32,
    },
    /// A WINDOW frame whose meta is not `{"bytes": n}` with n from 1 to
    /// 2^31-1. It is refused whatever stream it names: no state makes it
    /// well-formed.
    BadWindow(super::meta::MetaError),
    /// The meta of a frame that needs it (RESPONSE, GOAWAY on the client
    /// side) could not be decoded.
    BadMeta(String),
    /// A MessagePack-RPC message is longer than the connection allows
    /// (`max_body + max_meta`).
    MessageTooLarge {
        /// Bytes buffered (or the message's length) when it was refused.
        len: usize,
        /// The limit.
        limit: usize,
    },
    /// A MessagePack-RPC message is not well-formed MessagePack.
    Msgpack(super::msgpack::MsgpackError),
    /// A MessagePack-RPC message is well-formed MessagePack but not a
    /// request or notification a server accepts.
    BadMessage(&'static str),
    /// A MESSAGE or WINDOW broke a stream's flow control: a message sent
    /// with the window at or below 0, or a grant past 2^31-1.
    FlowControl {
        /// The stream.
        id: u32,
        /// The rule broken.
        error: crate::flow_control::FlowControlError,
    },
    /// A MESSAGE or END on a stream whose client had already sent END.
    AfterEnd {
        /// The late frame's type.
        frame_type: FrameType,
        /// The stream.
        id: u32,
    },
    /// The connection ended in the middle of a frame.
    Truncated {
        /// Bytes of the partial frame received.
        have: usize,
    },
}

impl fmt::Display for ProtocolError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ProtocolError::BadMagic(m) => {
                write!(
                    f,
                    "bad magic 0x{:02x}{:02x}, expected 0x5352 (\"SR\")",
                    m[0], m[1]
                )
            }
            ProtocolError::BadVersion(v) => write!(f, "unsupported version {v}, expected 1"),
            ProtocolError::BadFrameType(t) => {
                write!(f, "invalid frame type {t}, expected 1 to 10")
            }
            ProtocolError::ReservedFlags(b) => {
                write!(f, "reserved flag bits set: flags 0x{b:02x}")
            }
            ProtocolError::ReservedByte(b) => {
                write!(f, "reserved header byte is 0x{b:02x}, expected 0")
            }
            ProtocolError::MetaTooLarge { len, limit } => {
                write!(f, "meta too large: {len} > {limit} bytes")
            }
            ProtocolError::WrongDirection(t) => {
                write!(f, "{t} frame sent in the wrong direction")
            }
            ProtocolError::NotEmpty {
                frame_type,
                meta_len,
                body_len,
            } => write!(
                f,
                "{frame_type} frame must be empty, has meta_len {meta_len} and body_len {body_len}"
            ),
            ProtocolError::MessageWithMeta { meta_len } => {
                write!(
                    f,
                    "MESSAGE frame must have no meta, has meta_len {meta_len}"
                )
            }
            ProtocolError::WindowWithBody { body_len } => {
                write!(f, "WINDOW frame must have no body, has body_len {body_len}")
            }
            ProtocolError::BadWindow(e) => write!(f, "bad WINDOW frame: {e}"),
            ProtocolError::BadMeta(m) => write!(f, "bad meta: {m}"),
            ProtocolError::MessageTooLarge { len, limit } => {
                write!(
                    f,
                    "MessagePack-RPC message too large: {len} > {limit} bytes"
                )
            }
            ProtocolError::Msgpack(e) => write!(f, "bad MessagePack-RPC message: {e}"),
            ProtocolError::BadMessage(what) => write!(f, "bad MessagePack-RPC message: {what}"),
            ProtocolError::FlowControl { id, error } => write!(f, "stream {id}: {error}"),
            ProtocolError::AfterEnd { frame_type, id } => {
                write!(f, "stream {id}: {frame_type} after the client's END")
            }
            ProtocolError::Truncated { have } => {
                write!(
                    f,
                    "connection closed in the middle of a frame ({have} bytes received)"
                )
            }
        }
    }
}

impl std::error::Error for ProtocolError {}

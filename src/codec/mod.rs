//! The wire protocol: frames, meta, bodies and compression.
//!
//! Every frame is a 16-byte [`Header`], a MessagePack meta map and a body:
//!
//! ```text
//! magic "SR" | version 1 | type | flags | 0 | meta_len u16 | request_id u32 | body_len u32
//! ```
//!
//! The [`Decoder`] cuts frames off a read buffer incrementally and enforces
//! the size limits without ever allocating from a declared length; the
//! [`Encoder`] appends frames to a reused write buffer. Meta sections are
//! decoded with [`RequestMeta`], [`ResponseMeta`], [`GoawayMeta`] and
//! [`WindowMeta`];
//! bodies with [`decode_body`] after [`decompress`]. The protocol is
//! described in full in `docs/protocol.md`.

mod body;
mod compress;
pub(crate) mod cursor;
mod decoder;
mod encoder;
mod error;
mod frame;
mod header;
mod meta;
pub(crate) mod meta_scan;
pub mod msgpack;

pub use body::{decode_body, encode_body, DEFAULT_MAX_BODY_DEPTH};
pub use compress::{compress, decompress, DecompressError};
pub use decoder::{Decoded, Decoder, FrameLimits, Side};
pub use encoder::{EncodeError, Encoder};
pub use error::ProtocolError;
pub use frame::Frame;
pub use header::{
    Compression, Encoding, Flags, FrameType, Header, RequestId, HEADER_LEN, MAGIC, VERSION,
};
pub use meta::{
    GoawayMeta, MetaError, RequestMeta, ResponseMeta, WindowMeta, MAX_META_DEPTH, MAX_TRACE_ID_LEN,
    MAX_WINDOW,
};

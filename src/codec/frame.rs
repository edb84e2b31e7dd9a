//! A whole frame as it came off the wire.

use bytes::Bytes;

use super::header::{FrameType, Header, RequestId};

/// A decoded frame: its header and its meta and body sections, still
/// encoded. Meta is decoded by the layer that knows which meta to expect
/// ([`super::RequestMeta`], [`super::ResponseMeta`], [`super::GoawayMeta`]);
/// the body stays compressed until a handler asks for it.
///
/// `meta` and `body` share the read buffer they were cut from: cloning a
/// frame or either section copies no bytes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Frame {
    /// The frame header.
    pub header: Header,
    /// The meta section, `header.meta_len` bytes.
    pub meta: Bytes,
    /// The body section as sent, `header.body_len` bytes.
    pub body: Bytes,
}

impl Frame {
    /// The frame type.
    pub fn frame_type(&self) -> FrameType {
        self.header.frame_type
    }

    /// The request id (or PING token).
    pub fn request_id(&self) -> RequestId {
        self.header.request_id
    }
}

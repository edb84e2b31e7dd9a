//! The seam between a connection's bytes and the protocol-neutral request
//! path.
//!
//! A connection speaks one wire protocol, chosen by its first byte (or
//! pinned by the server's [`Protocols`]): the native framing of
//! `docs/protocol.md`, or MessagePack-RPC (`docs/msgpack-rpc.md`). Its
//! [`ConnDecoder`] turns bytes into [`Inbound`] messages for the
//! dispatcher, and its [`Wire`], kept in the connection's state, tells the
//! dispatcher how to encode answers. Services, filters, the worker pool,
//! deadlines and shutdown see only requests, never the wire they came on.

pub(crate) mod msgpack_rpc;

use bytes::BytesMut;

use super::connection::ConnShared;
use crate::codec::{Decoded, Decoder, FrameLimits, ProtocolError, Side};

pub(crate) use self::msgpack_rpc::{Call, MsgpackRpcDecoder};

/// Which wire protocols a server accepts on its connections.
///
/// # Examples
///
/// ```
/// use syncrpc::server::Protocols;
/// use syncrpc::{Server, Service};
///
/// let server = Server::builder()
///     .service(Service::new("echo.Echo"))
///     .protocols(Protocols::MsgpackRpc)
///     .msgpack_rpc_default_service("echo.Echo")
///     .bind("127.0.0.1:0")?;
/// server.shutdown();
/// # Ok::<(), syncrpc::Error>(())
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum Protocols {
    /// Each connection in the protocol its first byte announces: `0x53`
    /// (the native magic) or a MessagePack array header (MessagePack-RPC).
    /// Any other first byte is a native protocol error. The default.
    #[default]
    Both,
    /// Only the native protocol of `docs/protocol.md`.
    Native,
    /// Only MessagePack-RPC.
    MsgpackRpc,
}

/// The protocol a connection speaks, as far as its answers are concerned.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) enum Wire {
    /// Native frames; also a connection whose first byte has not arrived.
    #[default]
    Native,
    MsgpackRpc,
}

impl Wire {
    /// Whether GOAWAY frames may be sent (MessagePack-RPC has none).
    pub fn has_goaway(self) -> bool {
        self == Wire::Native
    }
}

/// One message of the peer, in whatever protocol it speaks.
#[derive(Debug)]
pub(crate) enum Inbound {
    Native(Decoded),
    MsgpackRpc(Call),
}

/// Limits every protocol's decoder enforces.
#[derive(Clone, Copy, Debug)]
pub(crate) struct DecodeLimits {
    pub frame: FrameLimits,
    pub max_body_depth: usize,
}

/// A connection's decoder: undecided until the first byte, then one
/// protocol's for the connection's life.
#[derive(Debug)]
pub(crate) enum ConnDecoder {
    Detect(DecodeLimits),
    Native(Decoder),
    MsgpackRpc(MsgpackRpcDecoder),
}

/// Whether `b` starts a MessagePack array (fixarray, array16, array32).
pub(crate) fn is_array_header(b: u8) -> bool {
    matches!(b, 0x90..=0x9f | 0xdc | 0xdd)
}

impl ConnDecoder {
    /// The decoder for a new connection `conn` of a server that accepts
    /// `protocols`.
    pub fn new(protocols: Protocols, limits: DecodeLimits, conn: &ConnShared) -> ConnDecoder {
        match protocols {
            Protocols::Both => ConnDecoder::Detect(limits),
            Protocols::Native => ConnDecoder::Native(Decoder::new(Side::Server, limits.frame)),
            Protocols::MsgpackRpc => {
                conn.lock().wire = Wire::MsgpackRpc;
                ConnDecoder::MsgpackRpc(MsgpackRpcDecoder::new(limits))
            }
        }
    }

    /// Cuts the next message off the front of `buf`; `Ok(None)` while it
    /// is incomplete. An error breaks the framing: the connection closes.
    pub fn decode(
        &mut self,
        buf: &mut BytesMut,
        conn: &ConnShared,
    ) -> Result<Option<Inbound>, ProtocolError> {
        if let ConnDecoder::Detect(limits) = *self {
            let Some(&first) = buf.first() else {
                return Ok(None);
            };
            *self = if is_array_header(first) {
                conn.lock().wire = Wire::MsgpackRpc;
                log::trace!("conn {}: speaks MessagePack-RPC", conn.id);
                ConnDecoder::MsgpackRpc(MsgpackRpcDecoder::new(limits))
            } else {
                // Anything else, the magic's first byte included, is for
                // the native decoder to accept or reject.
                ConnDecoder::Native(Decoder::new(Side::Server, limits.frame))
            };
        }
        match self {
            ConnDecoder::Native(d) => Ok(d.decode(buf)?.map(Inbound::Native)),
            ConnDecoder::MsgpackRpc(d) => Ok(d.decode(buf)?.map(Inbound::MsgpackRpc)),
            ConnDecoder::Detect(_) => Ok(None),
        }
    }

    /// True while a message has begun but not ended; the frame timeout
    /// runs meanwhile.
    pub fn is_mid_frame(&self, buf: &BytesMut) -> bool {
        match self {
            ConnDecoder::Native(d) => d.is_mid_frame(buf),
            ConnDecoder::MsgpackRpc(_) | ConnDecoder::Detect(_) => !buf.is_empty(),
        }
    }

    /// Called when the peer closed its sending side: an error if it
    /// stopped in the middle of a message.
    pub fn finish(&self, buf: &BytesMut) -> Result<(), ProtocolError> {
        match self {
            ConnDecoder::Native(d) => d.finish(buf),
            ConnDecoder::MsgpackRpc(_) | ConnDecoder::Detect(_) => {
                if buf.is_empty() {
                    Ok(())
                } else {
                    Err(ProtocolError::Truncated { have: buf.len() })
                }
            }
        }
    }
}

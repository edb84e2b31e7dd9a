//! The seam between a connection's bytes and the protocol-neutral request
//! path.
//!
//! A connection speaks one wire protocol, chosen by its first byte (or
//! pinned by its listener's [`Protocols`]). Each wire protocol is one
//! implementation of [`Protocol`]: the native framing of
//! `docs/protocol.md` ([`native::Native`]), MessagePack-RPC of
//! `docs/msgpack-rpc.md` ([`msgpack_rpc::MsgpackRpc`]) and HTTP/1.1 with
//! JSON of `docs/http.md` ([`http::Http`]). A protocol is
//! stateless; it makes a [`MessageDecoder`] per connection, which cuts the
//! connection's bytes into protocol-neutral [`Message`]s, and it encodes
//! the answers: results, statuses, PONGs and GOAWAYs.
//!
//! A connection's [`ConnDecoder`] picks the protocol on the first byte and
//! records it in the connection's state, where whatever answers a request
//! (a worker, the deadline timer, the shutdown) finds it. Services,
//! filters, the worker pool, deadlines and shutdown see only messages and
//! a `&dyn Protocol`, never which wire a request came on.
//!
//! Adding a wire protocol is one more implementation of [`Protocol`] and
//! [`MessageDecoder`], and a way for [`Protocols`] to select it.

pub(crate) mod http;
pub(crate) mod msgpack_rpc;
pub(crate) mod native;

use std::fmt;
use std::sync::Arc;

use bytes::{Bytes, BytesMut};

use super::connection::ConnShared;
use crate::codec::{
    EncodeError, Encoder, Flags, FrameLimits, ProtocolError, RequestId, WindowMeta,
};
use crate::metadata::Metadata;
use crate::status::{Code, Status};
use crate::trace::TraceId;

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
    /// (the native magic), a MessagePack array header (MessagePack-RPC)
    /// or an ASCII capital letter, the start of an HTTP method (HTTP/1.1,
    /// `docs/http.md`). Any other first byte is a native protocol error.
    /// The default.
    #[default]
    All,
    /// The native protocol or MessagePack-RPC, by the first byte; not
    /// HTTP.
    Both,
    /// Only the native protocol of `docs/protocol.md`.
    Native,
    /// Only MessagePack-RPC.
    MsgpackRpc,
    /// Only HTTP/1.1: what an admin listener speaks
    /// ([`ServerBuilder::admin_on`](crate::server::ServerBuilder::admin_on)).
    Http,
}

/// The native protocol, which a connection is taken to speak until its
/// first byte says otherwise.
pub(crate) const NATIVE: &dyn Protocol = &native::Native;

/// MessagePack-RPC.
const MSGPACK_RPC: &dyn Protocol = &msgpack_rpc::MsgpackRpc;

/// HTTP/1.1.
const HTTP: &dyn Protocol = &http::Http;

/// Every protocol, in the order of [`Protocol::index`].
pub(crate) const ALL: [&dyn Protocol; 3] = [NATIVE, MSGPACK_RPC, HTTP];

impl Protocols {
    /// The protocols a connection may speak, the fallback first: the one
    /// whose decoder is given a first byte that no protocol claims.
    fn candidates(self) -> &'static [&'static dyn Protocol] {
        const EVERY: &[&dyn Protocol] = &ALL;
        const BOTH: &[&dyn Protocol] = &[NATIVE, MSGPACK_RPC];
        const NATIVE_ONLY: &[&dyn Protocol] = &[NATIVE];
        const MSGPACK_RPC_ONLY: &[&dyn Protocol] = &[MSGPACK_RPC];
        const HTTP_ONLY: &[&dyn Protocol] = &[HTTP];
        match self {
            Protocols::All => EVERY,
            Protocols::Both => BOTH,
            Protocols::Native => NATIVE_ONLY,
            Protocols::MsgpackRpc => MSGPACK_RPC_ONLY,
            Protocols::Http => HTTP_ONLY,
        }
    }

    /// The ALPN ids of the protocols a connection may speak, for a TLS
    /// listener to advertise.
    #[cfg_attr(not(feature = "tls"), allow(dead_code))]
    pub(crate) fn alpn(self) -> Vec<Vec<u8>> {
        self.candidates()
            .iter()
            .filter_map(|p| p.alpn())
            .map(<[u8]>::to_vec)
            .collect()
    }

    /// The protocol a connection is taken to speak before its first byte
    /// is read: the one the listener is pinned to, else the native one.
    /// A connection refused at accept is answered in it.
    pub(crate) fn initial(self) -> &'static dyn Protocol {
        self.candidates()[0]
    }
}

/// One wire protocol: how its connections are recognised and decoded, and
/// how answers are encoded. Stateless; the per-connection state is in the
/// [`MessageDecoder`] it makes.
pub(crate) trait Protocol: Sync + fmt::Debug {
    /// The protocol's name, for logs.
    fn name(&self) -> &'static str;

    /// The protocol's ALPN id, which a TLS listener serving it advertises.
    /// Within TLS the protocol is still told by the first byte: ALPN only
    /// lets a client check that the port serves what it speaks.
    #[cfg_attr(not(feature = "tls"), allow(dead_code))]
    fn alpn(&self) -> Option<&'static [u8]> {
        None
    }

    /// A short lowercase name, for metric labels: `native`,
    /// `msgpack_rpc`, `http`.
    fn label(&self) -> &'static str;

    /// The protocol's place in [`ALL`], for per-protocol counts.
    fn index(&self) -> usize;

    /// How many requests of one connection may be in flight at once,
    /// within the server's own limit. A protocol whose answers must go
    /// out in request order and that has no ids to pair them (HTTP/1.1)
    /// takes one at a time: the reader waits for each answer before it
    /// decodes the next request.
    fn max_in_flight(&self) -> usize {
        usize::MAX
    }

    /// Whether a connection whose first byte is `first` speaks this
    /// protocol.
    fn claims(&self, first: u8) -> bool;

    /// The decoder of a new connection.
    fn decoder(&self, config: &DecodeConfig) -> Box<dyn MessageDecoder>;

    /// Appends the successful answer to request `id`, sent with `flags`.
    /// `ending`: the connection closes once its answers are written (the
    /// server is shutting down, or the connection is closing), which a
    /// protocol may tell the client with the answer. Fails only if the
    /// answer cannot be encoded (metadata over 64 KiB, a body the
    /// protocol cannot show); the caller then answers `INTERNAL`.
    fn write_ok(
        &self,
        out: &mut Encoder,
        id: RequestId,
        flags: Flags,
        body: &[u8],
        md: Metadata,
        ending: bool,
    ) -> Result<(), EncodeError>;

    /// Appends the answer carrying `status` to request `id`; `ending` as
    /// for [`Protocol::write_ok`].
    #[allow(clippy::too_many_arguments)]
    fn write_status(
        &self,
        out: &mut Encoder,
        id: RequestId,
        flags: Flags,
        status: &Status,
        trace: Option<&TraceId>,
        md: Metadata,
        ending: bool,
    );

    /// How far the protocol carries streaming calls.
    fn streams(&self) -> StreamSupport {
        StreamSupport::None
    }

    /// Whether the request `id`, for a server-streaming method, cannot
    /// be answered with a stream on this connection although the
    /// protocol carries server streams ([`StreamSupport::ServerFromBody`]):
    /// the reason it is refused `UNIMPLEMENTED` without running.
    fn refuses_stream(&self, _id: RequestId) -> Option<&'static str> {
        None
    }

    /// Appends one MESSAGE of the server's side of stream `id`, whose
    /// body was encoded with `flags`; `first`: no message of the stream
    /// was written before (a protocol may need to start its answer);
    /// `ending` as for [`Protocol::write_ok`]. Fails only if the body
    /// cannot be shown in the protocol, with the status the send fails
    /// with; the stream stays whole, its end still to be written.
    fn write_message(
        &self,
        _out: &mut Encoder,
        _id: RequestId,
        _flags: Flags,
        _body: &[u8],
        _first: bool,
        _ending: bool,
    ) -> Result<(), Status> {
        Ok(())
    }

    /// Appends a grant of `grant` more bytes to the client's side of
    /// stream `id`; nothing for a protocol without flow control.
    fn write_window(&self, _out: &mut Encoder, _id: RequestId, _grant: WindowMeta) {}

    /// Appends the end of stream `id`, carrying `status` (OK included)
    /// and trailing `md`; `sent_any`: messages went out before it.
    #[allow(clippy::too_many_arguments)]
    fn write_stream_end(
        &self,
        out: &mut Encoder,
        id: RequestId,
        flags: Flags,
        status: &Status,
        trace: Option<&TraceId>,
        md: Metadata,
        ending: bool,
        _sent_any: bool,
    ) {
        self.write_status(out, id, flags, status, trace, md, ending);
    }

    /// Appends the answer to a [`Message::Ping`].
    fn write_pong(&self, _out: &mut Encoder, _token: RequestId) {}

    /// Whether the protocol can tell a client the connection is ending.
    fn has_goaway(&self) -> bool;

    /// Appends a message saying the connection ends, with `code` and
    /// `message`; false if the protocol has none ([`Protocol::has_goaway`]).
    fn write_goaway(&self, out: &mut Encoder, code: Code, message: &str) -> bool;

    /// The message of the UNAVAILABLE answer to a request read after the
    /// shutdown began, which is not run.
    fn shutting_down_message(&self) -> &'static str;
}

/// The stateful half of a protocol: one per connection.
pub(crate) trait MessageDecoder: Send + fmt::Debug {
    /// Cuts at most one message off the front of `buf` and hands it to
    /// `on_message`, borrowed. Returns false while the message is
    /// incomplete, true once one was cut (a message that needs nothing,
    /// such as a native PONG, is not handed on). An error breaks the
    /// framing: the connection closes.
    fn decode(
        &mut self,
        buf: &mut BytesMut,
        on_message: &mut dyn FnMut(Message<'_>),
    ) -> Result<bool, ProtocolError>;

    /// True while a message has begun but not ended; the frame timeout
    /// runs meanwhile.
    fn is_mid_message(&self, buf: &BytesMut) -> bool {
        !buf.is_empty()
    }

    /// True once the peer's last message was read: the connection reads
    /// no more, and closes once that message is answered (an HTTP request
    /// with `Connection: close`, or one refused in a way that leaves the
    /// rest of the stream unreadable).
    fn is_done(&self) -> bool {
        false
    }

    /// Called when the peer closed its sending side: an error if it
    /// stopped in the middle of a message.
    fn finish(&self, buf: &BytesMut) -> Result<(), ProtocolError> {
        if self.is_mid_message(buf) {
            Err(ProtocolError::Truncated { have: buf.len() })
        } else {
            Ok(())
        }
    }
}

/// What a request says about itself, whatever the protocol it came in.
#[derive(Debug)]
pub(crate) struct RequestHead<'a> {
    pub id: RequestId,
    pub flags: Flags,
    pub oneway: bool,
    /// The full `/service/method` path.
    pub method: &'a str,
    /// The caller's budget; 0 for none.
    pub timeout_ms: u32,
    pub trace_id: Option<&'a str>,
    pub caller: Option<&'a str>,
    pub md: Metadata,
    /// Bytes the request took on the wire, besides its body.
    pub overhead: usize,
    /// The wire does not say how the body is encoded: hand it to the
    /// handler in the encoding the handler takes.
    pub any_encoding: bool,
    /// The request opens a stream (its messages follow as
    /// [`Message::Stream`]s); only where [`Protocol::streams`] is
    /// [`StreamSupport::Frames`].
    pub stream: bool,
}

/// How far a protocol carries streaming calls.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum StreamSupport {
    /// Streams of every kind, with their own frames (the native protocol).
    Frames,
    /// Only server streams, opened by a plain request whose body is the
    /// one request message; the messages go out in one long answer
    /// (HTTP/1.1, newline-delimited JSON). Client and bidirectional
    /// streams are answered UNIMPLEMENTED.
    ServerFromBody,
    /// None: a streaming method is answered UNIMPLEMENTED.
    None,
}

/// A frame of an open stream, from the client.
#[derive(Debug)]
pub(crate) enum StreamFrame {
    /// One message, its body as sent, encoded with `flags`.
    Message {
        id: RequestId,
        flags: Flags,
        body: Bytes,
    },
    /// A message over the body limit, discarded as it arrived.
    Oversized { id: RequestId, len: u64 },
    /// The client sends no more messages.
    End(RequestId),
    /// The client may be sent `grant` more bytes.
    Window { id: RequestId, grant: WindowMeta },
}

impl StreamFrame {
    /// The stream the frame belongs to.
    pub fn id(&self) -> RequestId {
        match self {
            StreamFrame::Message { id, .. }
            | StreamFrame::Oversized { id, .. }
            | StreamFrame::End(id)
            | StreamFrame::Window { id, .. } => *id,
        }
    }
}

/// The service whose methods stand for the built-in endpoints (an HTTP
/// `GET /metrics` is a request for `/syncrpc.Endpoints/Metrics`): served
/// by a built-in service over the server's own state, and routed, limited
/// and answered like any request.
pub(crate) const ENDPOINT_SERVICE: &str = "syncrpc.Endpoints";

/// One message of the peer, in no particular protocol.
#[derive(Debug)]
pub(crate) enum Message<'a> {
    /// A request to run; `head.oneway` if it is never answered.
    Request { head: RequestHead<'a>, body: Bytes },
    /// The request with this id is no longer wanted.
    Cancel(RequestId),
    /// A liveness check, answered with the same token.
    Ping(RequestId),
    /// A frame of a stream, routed to it by the connection's decoder
    /// ([`ConnDecoder::decode`]); never seen by the dispatcher.
    Stream(StreamFrame),
    /// An answer the protocol made itself, appended as is: one that
    /// answers no request the dispatcher sees (an HTTP `405`, a `431`
    /// before closing, a `100 Continue`).
    Reply(Bytes),
    /// A request answered `status` without running: its head could not be
    /// read, or its body is over the limit.
    Refuse {
        id: RequestId,
        flags: Flags,
        oneway: bool,
        status: Status,
        trace: Option<TraceId>,
    },
}

/// What the decoders of one listener's connections need to know.
#[derive(Clone, Debug)]
pub(crate) struct DecodeConfig {
    pub frame: FrameLimits,
    pub max_body_depth: usize,
    /// The service bare MessagePack-RPC method names belong to.
    pub msgpack_rpc_default_service: Option<Arc<str>>,
}

/// A connection's decoder: undecided until the first byte, then one
/// protocol's for the connection's life.
#[derive(Debug)]
pub(crate) struct ConnDecoder {
    state: State,
}

#[derive(Debug)]
enum State {
    /// Waiting for the first byte to choose among these protocols.
    Detect(&'static [&'static dyn Protocol], DecodeConfig),
    Decode(Box<dyn MessageDecoder>),
}

impl ConnDecoder {
    /// The decoder for a new connection `conn` of a listener that accepts
    /// `protocols`.
    pub fn new(protocols: Protocols, config: &DecodeConfig, conn: &ConnShared) -> ConnDecoder {
        let state = match protocols.candidates() {
            [only] => State::Decode(choose(*only, config, conn)),
            several => State::Detect(several, config.clone()),
        };
        ConnDecoder { state }
    }

    /// Cuts at most one message off the front of `buf` and hands it to
    /// `on_message`; see [`MessageDecoder::decode`].
    pub fn decode(
        &mut self,
        buf: &mut BytesMut,
        conn: &ConnShared,
        on_message: &mut dyn FnMut(Message<'_>),
    ) -> Result<bool, ProtocolError> {
        if let State::Detect(candidates, config) = &self.state {
            let Some(&first) = buf.first() else {
                return Ok(false);
            };
            // Nobody's byte goes to the fallback, to accept or reject.
            let protocol = candidates
                .iter()
                .find(|p| p.claims(first))
                .unwrap_or(&candidates[0]);
            log::trace!("conn {}: speaks {}", conn.id, protocol.name());
            self.state = State::Decode(choose(*protocol, config, conn));
        }
        let State::Decode(d) = &mut self.state else {
            return Ok(false);
        };
        // Stream frames go to their streams here, below the drivers, so
        // a broken flow-control rule fails the decode like bad framing.
        let mut broken = None;
        let cut = d.decode(buf, &mut |msg| match msg {
            Message::Stream(frame) => {
                if let Err(e) = super::stream::deliver(conn, frame) {
                    broken.get_or_insert(e);
                }
            }
            other => on_message(other),
        });
        match (cut, broken) {
            (Ok(cut), None) => Ok(cut),
            (Err(e), _) | (Ok(_), Some(e)) => {
                // Nothing more is read: no stream can go on.
                super::stream::end_all(conn, &e.to_string(), |_| true);
                Err(e)
            }
        }
    }

    /// True while a message has begun but not ended; the frame timeout
    /// runs meanwhile.
    pub fn is_mid_message(&self, buf: &BytesMut) -> bool {
        match &self.state {
            State::Decode(d) => d.is_mid_message(buf),
            State::Detect(..) => !buf.is_empty(),
        }
    }

    /// See [`MessageDecoder::is_done`].
    pub fn is_done(&self) -> bool {
        match &self.state {
            State::Decode(d) => d.is_done(),
            State::Detect(..) => false,
        }
    }

    /// Called when the peer closed its sending side: an error if it
    /// stopped in the middle of a message. Streams still waiting for the
    /// client's messages end, since none can come; the others (the client
    /// sent END) run on and are answered.
    pub fn finish(&self, buf: &BytesMut, conn: &ConnShared) -> Result<(), ProtocolError> {
        super::stream::end_all(conn, "the client closed its side of the connection", |s| {
            !s.client_ended()
        });
        match &self.state {
            State::Decode(d) => d.finish(buf),
            State::Detect(..) if buf.is_empty() => Ok(()),
            State::Detect(..) => Err(ProtocolError::Truncated { have: buf.len() }),
        }
    }
}

/// Makes `protocol` the one `conn` speaks, answers included.
fn choose(
    protocol: &'static dyn Protocol,
    config: &DecodeConfig,
    conn: &ConnShared,
) -> Box<dyn MessageDecoder> {
    let mut st = conn.lock();
    if !st.closed && !st.protocol_counted {
        st.protocol_counted = true;
        conn.server().open_by_protocol[protocol.index()]
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }
    st.protocol = protocol;
    drop(st);
    protocol.decoder(config)
}

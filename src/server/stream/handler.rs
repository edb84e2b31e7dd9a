//! Streaming handlers, typed and raw, and the endpoint that runs them.
//!
//! As with unary handlers, each kind is a trait with a blanket impl, so
//! closures and plain `fn`s are handlers.

use bytes::Bytes;
use serde::de::DeserializeOwned;
use serde::Serialize;

use super::{Incoming, RawIncoming, RawSink, Sink, StreamIo};
use crate::codec::{encode_body, Encoding};
use crate::context::Context;
use crate::filter::{Endpoint, Reply, Request, Response};
use crate::status::Status;

/// A server-streaming handler: one request of type `Req` in, any number
/// of `Resp` messages out through the [`Sink`]. Returning ends the stream
/// with the status returned (`Ok(())` is OK).
///
/// Implemented for every `Fn(&Context, Req, &Sink<Resp>) -> Result<(), Status>`;
/// see [`Service::server_stream`](crate::Service::server_stream).
pub trait ServerStreamHandler<Req, Resp>: Send + Sync + 'static {
    /// Serves one stream.
    fn call(&self, ctx: &Context, req: Req, sink: &Sink<Resp>) -> Result<(), Status>;
}

impl<F, Req, Resp> ServerStreamHandler<Req, Resp> for F
where
    F: Fn(&Context, Req, &Sink<Resp>) -> Result<(), Status> + Send + Sync + 'static,
{
    fn call(&self, ctx: &Context, req: Req, sink: &Sink<Resp>) -> Result<(), Status> {
        self(ctx, req, sink)
    }
}

/// A client-streaming handler: any number of `Req` messages in, through
/// the [`Incoming`] iterator, one `Resp` out.
///
/// Implemented for every `Fn(&Context, Incoming<Req>) -> Result<Resp, Status>`;
/// see [`Service::client_stream`](crate::Service::client_stream).
pub trait ClientStreamHandler<Req, Resp>: Send + Sync + 'static {
    /// Serves one stream.
    fn call(&self, ctx: &Context, msgs: Incoming<Req>) -> Result<Resp, Status>;
}

impl<F, Req, Resp> ClientStreamHandler<Req, Resp> for F
where
    F: Fn(&Context, Incoming<Req>) -> Result<Resp, Status> + Send + Sync + 'static,
{
    fn call(&self, ctx: &Context, msgs: Incoming<Req>) -> Result<Resp, Status> {
        self(ctx, msgs)
    }
}

/// A bidirectional handler: `Req` messages in through [`Incoming`],
/// `Resp` messages out through [`Sink`], in any order.
///
/// Implemented for every
/// `Fn(&Context, Incoming<Req>, &Sink<Resp>) -> Result<(), Status>`;
/// see [`Service::bidi_stream`](crate::Service::bidi_stream).
pub trait BidiStreamHandler<Req, Resp>: Send + Sync + 'static {
    /// Serves one stream.
    fn call(&self, ctx: &Context, msgs: Incoming<Req>, sink: &Sink<Resp>) -> Result<(), Status>;
}

impl<F, Req, Resp> BidiStreamHandler<Req, Resp> for F
where
    F: Fn(&Context, Incoming<Req>, &Sink<Resp>) -> Result<(), Status> + Send + Sync + 'static,
{
    fn call(&self, ctx: &Context, msgs: Incoming<Req>, sink: &Sink<Resp>) -> Result<(), Status> {
        self(ctx, msgs, sink)
    }
}

/// [`ServerStreamHandler`] over raw bytes.
pub trait RawServerStreamHandler: Send + Sync + 'static {
    /// Serves one stream.
    fn call(&self, ctx: &Context, req: Bytes, sink: &RawSink) -> Result<(), Status>;
}

impl<F> RawServerStreamHandler for F
where
    F: Fn(&Context, Bytes, &RawSink) -> Result<(), Status> + Send + Sync + 'static,
{
    fn call(&self, ctx: &Context, req: Bytes, sink: &RawSink) -> Result<(), Status> {
        self(ctx, req, sink)
    }
}

/// [`ClientStreamHandler`] over raw bytes.
pub trait RawClientStreamHandler: Send + Sync + 'static {
    /// Serves one stream.
    fn call(&self, ctx: &Context, msgs: RawIncoming) -> Result<Bytes, Status>;
}

impl<F> RawClientStreamHandler for F
where
    F: Fn(&Context, RawIncoming) -> Result<Bytes, Status> + Send + Sync + 'static,
{
    fn call(&self, ctx: &Context, msgs: RawIncoming) -> Result<Bytes, Status> {
        self(ctx, msgs)
    }
}

/// [`BidiStreamHandler`] over raw bytes.
pub trait RawBidiStreamHandler: Send + Sync + 'static {
    /// Serves one stream.
    fn call(&self, ctx: &Context, msgs: RawIncoming, sink: &RawSink) -> Result<(), Status>;
}

impl<F> RawBidiStreamHandler for F
where
    F: Fn(&Context, RawIncoming, &RawSink) -> Result<(), Status> + Send + Sync + 'static,
{
    fn call(&self, ctx: &Context, msgs: RawIncoming, sink: &RawSink) -> Result<(), Status> {
        self(ctx, msgs, sink)
    }
}

/// Which side of a streaming method streams.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum StreamKind {
    /// One request message, a stream of responses.
    Server,
    /// A stream of requests, one response message.
    Client,
    /// Streams both ways.
    Bidi,
}

type RunStream = Box<dyn Fn(&Context, StreamIo) -> Result<(), Status> + Send + Sync>;

/// The innermost step of a streaming method's filter chain: runs the
/// handler over the stream the request carries. The stream's RESPONSE
/// carries what it returns; a client stream's response goes out as its
/// one message first.
pub(crate) struct StreamEndpoint {
    kind: StreamKind,
    encoding: Encoding,
    run: RunStream,
}

/// The one request message of a server stream.
fn first_message<T>(msgs: &mut impl Iterator<Item = Result<T, Status>>) -> Result<T, Status> {
    msgs.next().unwrap_or_else(|| {
        Err(Status::invalid_argument(
            "the stream ended before its request message",
        ))
    })
}

impl StreamEndpoint {
    pub(crate) fn server<Req, Resp, H>(handler: H) -> StreamEndpoint
    where
        H: ServerStreamHandler<Req, Resp>,
        Req: DeserializeOwned + 'static,
        Resp: Serialize + 'static,
    {
        let encoding = Encoding::MsgPack;
        StreamEndpoint {
            kind: StreamKind::Server,
            encoding,
            run: Box::new(move |ctx, io| {
                let mut msgs: Incoming<Req> =
                    Incoming::new(RawIncoming::new(io.clone(), ctx, encoding));
                let req = first_message(&mut msgs)?;
                drop(msgs);
                let sink = Sink::new(RawSink::new(io, ctx, encoding));
                handler.call(ctx, req, &sink)
            }),
        }
    }

    pub(crate) fn client<Req, Resp, H>(handler: H) -> StreamEndpoint
    where
        H: ClientStreamHandler<Req, Resp>,
        Req: DeserializeOwned + 'static,
        Resp: Serialize + 'static,
    {
        let encoding = Encoding::MsgPack;
        StreamEndpoint {
            kind: StreamKind::Client,
            encoding,
            run: Box::new(move |ctx, io| {
                let msgs = Incoming::new(RawIncoming::new(io.clone(), ctx, encoding));
                let resp = handler.call(ctx, msgs)?;
                let mut body = Vec::new();
                encode_body(&resp, &mut body)?;
                RawSink::new(io, ctx, encoding).send(&body)
            }),
        }
    }

    pub(crate) fn bidi<Req, Resp, H>(handler: H) -> StreamEndpoint
    where
        H: BidiStreamHandler<Req, Resp>,
        Req: DeserializeOwned + 'static,
        Resp: Serialize + 'static,
    {
        let encoding = Encoding::MsgPack;
        StreamEndpoint {
            kind: StreamKind::Bidi,
            encoding,
            run: Box::new(move |ctx, io| {
                let msgs = Incoming::new(RawIncoming::new(io.clone(), ctx, encoding));
                let sink = Sink::new(RawSink::new(io, ctx, encoding));
                handler.call(ctx, msgs, &sink)
            }),
        }
    }

    pub(crate) fn raw_server<H: RawServerStreamHandler>(handler: H) -> StreamEndpoint {
        let encoding = Encoding::Raw;
        StreamEndpoint {
            kind: StreamKind::Server,
            encoding,
            run: Box::new(move |ctx, io| {
                let mut msgs = RawIncoming::new(io.clone(), ctx, encoding);
                let req = first_message(&mut msgs)?;
                drop(msgs);
                handler.call(ctx, req, &RawSink::new(io, ctx, encoding))
            }),
        }
    }

    pub(crate) fn raw_client<H: RawClientStreamHandler>(handler: H) -> StreamEndpoint {
        let encoding = Encoding::Raw;
        StreamEndpoint {
            kind: StreamKind::Client,
            encoding,
            run: Box::new(move |ctx, io| {
                let msgs = RawIncoming::new(io.clone(), ctx, encoding);
                let resp = handler.call(ctx, msgs)?;
                RawSink::new(io, ctx, encoding).send(&resp)
            }),
        }
    }

    pub(crate) fn raw_bidi<H: RawBidiStreamHandler>(handler: H) -> StreamEndpoint {
        let encoding = Encoding::Raw;
        StreamEndpoint {
            kind: StreamKind::Bidi,
            encoding,
            run: Box::new(move |ctx, io| {
                let msgs = RawIncoming::new(io.clone(), ctx, encoding);
                handler.call(ctx, msgs, &RawSink::new(io, ctx, encoding))
            }),
        }
    }
}

impl Endpoint for StreamEndpoint {
    fn encoding(&self) -> Encoding {
        self.encoding
    }

    fn stream_kind(&self) -> Option<StreamKind> {
        Some(self.kind)
    }

    fn call(&self, ctx: &Context, req: Request) -> Reply {
        let Some(io) = req.into_stream() else {
            return Err(Status::internal(format!(
                "{} is a streaming method, called without a stream",
                ctx.method()
            )));
        };
        let _watch = io.watch(ctx);
        (self.run)(ctx, io)?;
        Ok(Response::raw(Bytes::new()))
    }
}

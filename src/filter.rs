//! Filters (interceptors) around every handler, and the request and response
//! they see.
//!
//! A server runs an ordered chain for every request: the server's filters
//! first, then the service's, then the handler. Each [`Filter`] gets the
//! [`Context`], the [`Request`] and a [`Next`] that runs the rest of the
//! chain; it may call it, or answer by itself without it. The body is still
//! as it came off the wire (compressed, encoded) while filters run: the
//! handler's own step decompresses and decodes it, so a filter that rejects
//! a request spends nothing on the body.

use std::fmt;
use std::sync::Arc;

use bytes::Bytes;
use serde::Serialize;

use crate::codec::{encode_body, Compression, Encoding, Flags};
use crate::context::Context;
use crate::server::stream::{StreamIo, StreamKind};
use crate::status::Status;

/// A request as the filter chain sees it: the body as sent, with its
/// compression and encoding. The method name, deadline, trace id, caller,
/// peer and metadata are on the [`Context`].
///
/// Cloning is cheap: the body is reference-counted.
#[derive(Clone)]
pub struct Request {
    flags: Flags,
    body: Bytes,
    oneway: bool,
    /// The stream a streaming method's request opened (boxed: a unary
    /// request carries a null pointer, not the stream's fields).
    stream: Option<Box<StreamIo>>,
}

impl Request {
    /// A request with the given flags and body as sent. Servers build these;
    /// tests of a filter can too.
    ///
    /// # Examples
    ///
    /// ```
    /// use syncrpc::codec::{Compression, Encoding, Flags};
    /// use syncrpc::Request;
    ///
    /// let req = Request::new(Flags::new(Compression::None, Encoding::Raw), b"ping".to_vec(), false);
    /// assert_eq!(req.encoding(), Encoding::Raw);
    /// assert_eq!(&req.body()[..], b"ping");
    /// ```
    pub fn new(flags: Flags, body: impl Into<Bytes>, oneway: bool) -> Request {
        Request {
            flags,
            body: body.into(),
            oneway,
            stream: None,
        }
    }

    /// The request that opens `stream`: its body is empty, its messages
    /// come through the stream.
    pub(crate) fn opening(flags: Flags, stream: Box<StreamIo>) -> Request {
        Request {
            flags,
            body: Bytes::new(),
            oneway: false,
            stream: Some(stream),
        }
    }

    /// True if the request opens a stream: the method is a streaming
    /// one, the body is empty, and the messages go through the stream.
    /// A filter sees the opening (method, metadata and peer are on the
    /// [`Context`]) and, in what [`Next::run`] returns, the status the
    /// stream ended with.
    pub fn is_stream(&self) -> bool {
        self.stream.is_some()
    }

    pub(crate) fn into_stream(self) -> Option<StreamIo> {
        self.stream.map(|s| *s)
    }

    /// The header flags of the request.
    pub fn flags(&self) -> Flags {
        self.flags
    }

    /// The body compression. Requests with a reserved compression are
    /// answered `UNIMPLEMENTED` before any filter runs, so this is always a
    /// defined value.
    pub fn compression(&self) -> Compression {
        self.flags.compression().unwrap_or_default()
    }

    /// The body encoding (always a defined value, as for
    /// [`Request::compression`]).
    pub fn encoding(&self) -> Encoding {
        self.flags.encoding().unwrap_or_default()
    }

    /// The body exactly as sent: still compressed, still encoded.
    pub fn body(&self) -> &Bytes {
        &self.body
    }

    /// Takes the body out of the request.
    pub fn into_body(self) -> Bytes {
        self.body
    }

    /// True for a ONEWAY request: its response is never sent.
    pub fn is_oneway(&self) -> bool {
        self.oneway
    }
}

impl fmt::Debug for Request {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Request")
            .field("flags", &self.flags)
            .field("body_len", &self.body.len())
            .field("oneway", &self.oneway)
            .field("stream", &self.stream.is_some())
            .finish()
    }
}

/// A successful answer: the body before compression (the server compresses
/// it the way the request was).
#[derive(Clone)]
pub struct Response {
    body: Body,
}

#[derive(Clone)]
enum Body {
    Bytes(Bytes),
    Vec(Vec<u8>),
}

impl Response {
    /// A response whose body is `body`, sent as is (after compression).
    ///
    /// # Examples
    ///
    /// ```
    /// use syncrpc::Response;
    ///
    /// let resp = Response::raw(&b"pong"[..]);
    /// assert_eq!(resp.body(), b"pong");
    /// ```
    pub fn raw(body: impl Into<Bytes>) -> Response {
        Response {
            body: Body::Bytes(body.into()),
        }
    }

    /// A response whose body is `value` as MessagePack (structs as maps
    /// keyed by field name).
    ///
    /// # Examples
    ///
    /// ```
    /// use syncrpc::Response;
    ///
    /// #[derive(serde::Serialize)]
    /// struct Say { text: String }
    ///
    /// let resp = Response::encode(&Say { text: "hi".into() }).unwrap();
    /// assert_eq!(resp.body(), b"\x81\xa4text\xa2hi");
    /// ```
    pub fn encode<T: Serialize + ?Sized>(value: &T) -> Result<Response, Status> {
        let mut out = Vec::new();
        encode_body(value, &mut out)?;
        Ok(Response::from_vec(out))
    }

    pub(crate) fn from_vec(body: Vec<u8>) -> Response {
        Response {
            body: Body::Vec(body),
        }
    }

    /// The body, before compression.
    pub fn body(&self) -> &[u8] {
        match &self.body {
            Body::Bytes(b) => b,
            Body::Vec(v) => v,
        }
    }

    /// The body's owned buffer, if it has one, so the server can reuse it.
    pub(crate) fn into_vec(self) -> Option<Vec<u8>> {
        match self.body {
            Body::Vec(v) => Some(v),
            Body::Bytes(_) => None,
        }
    }
}

impl fmt::Debug for Response {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Response")
            .field("body_len", &self.body().len())
            .finish()
    }
}

/// What a filter or handler step returns.
pub type Reply = Result<Response, Status>;

/// A step around every handler: logs, metrics, authentication, rate limits.
///
/// Plain functions and closures with the signature of [`Filter::call`] are
/// filters. Filters are shared by every worker thread, so they are
/// `Send + Sync`; keep state in atomics or behind a lock.
///
/// # Examples
///
/// ```
/// use syncrpc::{Context, Next, Reply, Request, Status};
///
/// // Refuse callers that do not say who they are, before their body is
/// // even decompressed.
/// fn require_caller(ctx: &Context, req: Request, next: Next<'_>) -> Reply {
///     if ctx.caller().is_none() {
///         return Err(Status::unauthenticated("say who you are"));
///     }
///     next.run(ctx, req)
/// }
///
/// let service = syncrpc::Service::new("echo.Echo").filter(require_caller);
/// # let _ = service;
/// ```
pub trait Filter: Send + Sync + 'static {
    /// Handles `req`, usually by calling `next.run(ctx, req)` and looking at
    /// or changing what it returns.
    fn call(&self, ctx: &Context, req: Request, next: Next<'_>) -> Reply;
}

impl<F> Filter for F
where
    F: Fn(&Context, Request, Next<'_>) -> Reply + Send + Sync + 'static,
{
    fn call(&self, ctx: &Context, req: Request, next: Next<'_>) -> Reply {
        self(ctx, req, next)
    }
}

impl<T: Filter + ?Sized> Filter for Arc<T> {
    fn call(&self, ctx: &Context, req: Request, next: Next<'_>) -> Reply {
        (**self).call(ctx, req, next)
    }
}

/// The innermost step of a chain: the handler behind its body decoding.
pub(crate) trait Endpoint: Send + Sync + 'static {
    fn call(&self, ctx: &Context, req: Request) -> Reply;

    /// The body encoding the handler takes, for protocols whose requests
    /// do not say (MessagePack-RPC).
    fn encoding(&self) -> Encoding {
        Encoding::MsgPack
    }

    /// Which side streams, for a streaming method; `None` for a unary one.
    fn stream_kind(&self) -> Option<StreamKind> {
        None
    }
}

/// The rest of a filter chain, ending in the handler.
pub struct Next<'a> {
    filters: &'a [Arc<dyn Filter>],
    endpoint: &'a dyn Endpoint,
}

impl<'a> Next<'a> {
    pub(crate) fn new(filters: &'a [Arc<dyn Filter>], endpoint: &'a dyn Endpoint) -> Next<'a> {
        Next { filters, endpoint }
    }

    /// Runs the remaining filters and then the handler.
    pub fn run(self, ctx: &Context, req: Request) -> Reply {
        match self.filters.split_first() {
            Some((first, rest)) => first.call(
                ctx,
                req,
                Next {
                    filters: rest,
                    endpoint: self.endpoint,
                },
            ),
            None => self.endpoint.call(ctx, req),
        }
    }
}

impl fmt::Debug for Next<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Next")
            .field("filters_left", &self.filters.len())
            .finish()
    }
}

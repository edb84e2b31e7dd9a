//! Handlers: typed ones over serde types, raw ones over bytes.
//!
//! Both kinds are traits with blanket impls, so closures and plain `fn`s
//! are handlers, and so is any type that implements the trait. The
//! adapters here are the innermost step of the filter chain: they
//! decompress and decode the request body, call the handler, and encode its
//! answer.

use std::marker::PhantomData;

use bytes::Bytes;
use serde::de::DeserializeOwned;
use serde::Serialize;

use super::buffer_pool;
use crate::codec::{decode_body, decompress, encode_body, Compression, Encoding};
use crate::context::Context;
use crate::filter::{Endpoint, Reply, Request, Response};
use crate::status::Status;

/// A handler over typed messages: the request body is decoded from
/// MessagePack into `Req`, and the `Resp` it returns is encoded back.
///
/// Implemented for every `Fn(&Context, Req) -> Result<Resp, Status>`.
///
/// # Examples
///
/// ```
/// use syncrpc::{Context, Service, Status};
///
/// #[derive(serde::Deserialize)]
/// struct Add { a: i64, b: i64 }
///
/// fn add(_ctx: &Context, req: Add) -> Result<i64, Status> {
///     req.a.checked_add(req.b).ok_or_else(|| Status::out_of_range("overflow"))
/// }
///
/// let svc = Service::new("calc.Calc")
///     .method("Add", add)
///     .method("Neg", |_ctx: &Context, x: i64| Ok::<_, Status>(-x));
/// # let _ = svc;
/// ```
pub trait UnaryHandler<Req, Resp>: Send + Sync + 'static {
    /// Answers one request.
    fn call(&self, ctx: &Context, req: Req) -> Result<Resp, Status>;
}

impl<F, Req, Resp> UnaryHandler<Req, Resp> for F
where
    F: Fn(&Context, Req) -> Result<Resp, Status> + Send + Sync + 'static,
{
    fn call(&self, ctx: &Context, req: Req) -> Result<Resp, Status> {
        self(ctx, req)
    }
}

/// A handler over raw bytes (body encoding 1): the runtime passes the
/// body through untouched, apart from decompressing it.
///
/// Implemented for every `Fn(&Context, Bytes) -> Result<Bytes, Status>`.
///
/// # Examples
///
/// ```
/// use bytes::Bytes;
/// use syncrpc::{Context, Service, Status};
///
/// let svc = Service::new("blob.Store")
///     .raw_method("Echo", |_ctx: &Context, body: Bytes| Ok::<_, Status>(body));
/// # let _ = svc;
/// ```
pub trait RawHandler: Send + Sync + 'static {
    /// Answers one request.
    fn call(&self, ctx: &Context, body: Bytes) -> Result<Bytes, Status>;
}

impl<F> RawHandler for F
where
    F: Fn(&Context, Bytes) -> Result<Bytes, Status> + Send + Sync + 'static,
{
    fn call(&self, ctx: &Context, body: Bytes) -> Result<Bytes, Status> {
        self(ctx, body)
    }
}

/// Limits applied to a body while it is decoded.
#[derive(Clone, Copy, Debug)]
pub(crate) struct BodyLimits {
    pub max_body: usize,
    pub max_depth: usize,
}

/// The body after decompression; borrows the wire bytes when uncompressed.
fn inflate(req: &Request, limits: BodyLimits) -> Result<Bytes, Status> {
    let body = req.body();
    match req.compression() {
        // The decoder already enforced the limit on the body as sent.
        Compression::None => Ok(body.clone()),
        c => decompress(c, body, limits.max_body)
            .map(Bytes::from)
            .map_err(|e| e.to_status()),
    }
}

pub(crate) struct Typed<H, Req, Resp> {
    handler: H,
    limits: BodyLimits,
    _types: PhantomData<fn(Req) -> Resp>,
}

impl<H, Req, Resp> Typed<H, Req, Resp> {
    pub(crate) fn new(handler: H, limits: BodyLimits) -> Self {
        Typed {
            handler,
            limits,
            _types: PhantomData,
        }
    }
}

impl<H, Req, Resp> Endpoint for Typed<H, Req, Resp>
where
    H: UnaryHandler<Req, Resp>,
    Req: DeserializeOwned + 'static,
    Resp: Serialize + 'static,
{
    fn call(&self, ctx: &Context, req: Request) -> Reply {
        if req.encoding() != Encoding::MsgPack {
            return Err(Status::invalid_argument(format!(
                "{} takes MessagePack bodies (encoding 0), got raw bytes (encoding 1)",
                ctx.method()
            )));
        }
        let body = inflate(&req, self.limits)?;
        drop(req);
        let value: Req = decode_body(&body, self.limits.max_depth)?;
        drop(body);
        let resp = self.handler.call(ctx, value)?;
        let mut out = buffer_pool::take();
        encode_body(&resp, &mut out)?;
        Ok(Response::from_vec(out))
    }
}

pub(crate) struct Raw<H> {
    handler: H,
    limits: BodyLimits,
}

impl<H> Raw<H> {
    pub(crate) fn new(handler: H, limits: BodyLimits) -> Self {
        Raw { handler, limits }
    }
}

impl<H: RawHandler> Endpoint for Raw<H> {
    fn encoding(&self) -> Encoding {
        Encoding::Raw
    }

    fn call(&self, ctx: &Context, req: Request) -> Reply {
        if req.encoding() != Encoding::Raw {
            return Err(Status::invalid_argument(format!(
                "{} takes raw bodies (encoding 1), got MessagePack (encoding 0)",
                ctx.method()
            )));
        }
        let body = inflate(&req, self.limits)?;
        drop(req);
        self.handler.call(ctx, body).map(Response::raw)
    }
}

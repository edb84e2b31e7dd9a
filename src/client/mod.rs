//! The blocking client: multiplexed connections, deadlines, metadata,
//! compression and failover.
//!
//! A [`Client`] is built once, for one service, with one or more server
//! addresses, and shared by every thread that calls the service: clones are
//! cheap and share the connections. Each call blocks its thread until the
//! response arrives, the deadline passes, the context is cancelled or the
//! connection breaks, whichever comes first: a call never hangs on a
//! broken connection, with or without a deadline.
//!
//! Every call takes a [`Context`] first. Top-level code passes
//! [`Context::background()`]; a handler passes its own, so the call
//! inherits the handler's remaining deadline, its cancellation and its
//! trace id, and a chain of services stops everywhere once the first
//! caller's budget runs out.
//!
//! Inside, each endpoint has [`ClientConfig::connections_per_endpoint`] TCP
//! connections. Calls on one connection are multiplexed: each gets its own
//! request id; frames from many threads are coalesced into few writes; one
//! IO thread per connection reads the responses and wakes the thread each
//! belongs to.
//!
//! Streams ([`Client::server_stream`], [`Client::client_stream`],
//! [`Client::bidi_stream`]) share those connections: a server stream is an
//! iterator, a client stream a sender with a blocking `send` and `finish`,
//! a bidirectional stream a [`StreamSender`] and a [`StreamReceiver`] for
//! two threads. Each direction is flow controlled per stream, so a slow
//! reader holds at most its window of messages.
//!
//! What the client does not do: service discovery beyond DNS, hedged
//! requests, client-side load reports. Timeouts and retries of calls that
//! may have run are the caller's decision.

mod balancer;
mod builder;
mod connection;
mod endpoint;
mod options;
mod retry;
mod slot;
mod stream;
mod stream_call;
mod stream_open;
mod stream_state;

use std::borrow::Cow;
use std::cell::RefCell;
use std::fmt;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use log::debug;
use serde::de::DeserializeOwned;
use serde::Serialize;

pub use builder::{Backoff, ClientBuilder, ClientConfig, ClientProtocol, Credentials, Timeouts};
pub use options::{CallOptions, Response};
pub use retry::RetryPolicy;
pub use stream::{ClientStream, ServerStream, StreamReceiver, StreamSender};

use balancer::Balancer;
use connection::Outgoing;
use retry::RetryBudget;
use slot::Reply;

use crate::codec::{self, Compression, DecompressError, Encoding, Flags, FrameType, RequestMeta};
use crate::context::{CancelReason, Context};
use crate::error::{Error, ErrorKind, Execution};
use crate::status::{Code, Status};
use crate::trace::TraceId;

/// A client for one service: a set of server addresses and the
/// connections to them.
///
/// `Client` is `Send + Sync + Clone`. Clones are cheap (one reference
/// count) and share everything: connections, endpoint health and
/// configuration. Build one client per service at start-up and hand clones
/// to every thread; any number of threads may call through one client at
/// once, and their calls are multiplexed over the same connections. The
/// connections and their IO threads close when the last clone is dropped.
///
/// Connections are opened on first use, re-opened after they break (with
/// backoff), and replaced after the server sends GOAWAY. Calls are spread
/// round-robin over the endpoints that are up. A call that is known not to
/// have run is retried once on another endpoint; one that may have run is
/// retried only if its [`RetryPolicy`] says so.
///
/// Errors are [`Error`]s carrying a [`Status`]: a server's answer keeps its
/// code and message, a connection failure is `UNAVAILABLE` with the cause,
/// a passed deadline `DEADLINE_EXCEEDED`. [`Error::execution`] tells
/// whether the request may have run, so callers can retry safely.
///
/// # Examples
///
/// ```no_run
/// use std::time::Duration;
/// use serde::{Deserialize, Serialize};
/// use syncrpc::client::{CallOptions, Client};
/// use syncrpc::Context;
///
/// #[derive(Serialize, Deserialize)]
/// struct Say {
///     text: String,
/// }
///
/// let client = Client::connect("127.0.0.1:7000")?;
/// let ctx = Context::background().with_timeout(Duration::from_secs(1));
///
/// let reply: Say = client.call(&ctx, "/echo.Echo/Say", &Say { text: "hi".into() })?;
/// println!("{}", reply.text);
///
/// // The same call with per-call options and the full response.
/// let opts = CallOptions::new()
///     .timeout(Duration::from_millis(200))
///     .metadata("tenant", "acme");
/// let resp = client.call_with::<Say, Say>(&ctx, "/echo.Echo/Say", &Say { text: "hi".into() }, &opts)?;
/// println!("{} (trace id {:?})", resp.body().text, resp.trace_id());
///
/// // Clones share the connections: hand one to every thread.
/// let c = client.clone();
/// std::thread::spawn(move || c.ping(&Context::background()));
/// # Ok::<(), syncrpc::Error>(())
/// ```
#[derive(Clone)]
pub struct Client {
    inner: Arc<Inner>,
}

struct Inner {
    config: ClientConfig,
    balancer: Balancer,
}

impl fmt::Debug for Client {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Client")
            .field("endpoints", &self.inner.balancer.addrs())
            .finish_non_exhaustive()
    }
}

thread_local! {
    /// A serialization buffer per thread, so a typed call does not allocate
    /// one for its body.
    static BODY_BUF: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
}

/// Serialization buffers that grew past this are not kept.
const BODY_BUF_KEEP: usize = 64 * 1024;

fn with_body_buf<R>(f: impl FnOnce(&mut Vec<u8>) -> R) -> R {
    // Taken out rather than borrowed: a nested call on the same thread
    // (from a Serialize impl, say) gets a fresh buffer instead of a panic.
    let mut buf = BODY_BUF.with(|b| std::mem::take(&mut *b.borrow_mut()));
    buf.clear();
    let r = f(&mut buf);
    if buf.capacity() <= BODY_BUF_KEEP {
        BODY_BUF.with(|b| *b.borrow_mut() = buf);
    }
    r
}

impl Client {
    /// A client for the server at `addr` (`host:port`), with the default
    /// configuration. The address is resolved now; the connection is
    /// opened by the first call, so the server need not be up yet.
    ///
    /// # Errors
    ///
    /// A usage error if `addr` is malformed or does not resolve.
    ///
    /// # Examples
    ///
    /// ```
    /// use syncrpc::client::Client;
    ///
    /// let client = Client::connect("127.0.0.1:7000")?;
    /// assert_eq!(client.endpoints(), vec!["127.0.0.1:7000".parse().unwrap()]);
    /// assert!(Client::connect("no port").is_err());
    /// # Ok::<(), syncrpc::Error>(())
    /// ```
    pub fn connect(addr: impl ToString) -> Result<Client, Error> {
        ClientBuilder::new().addr(addr).build()
    }

    /// A builder, to give several addresses or change the configuration.
    pub fn builder() -> ClientBuilder {
        ClientBuilder::new()
    }

    pub(crate) fn from_parts(config: ClientConfig, balancer: Balancer) -> Client {
        Client {
            inner: Arc::new(Inner { config, balancer }),
        }
    }

    /// The configuration the client was built with.
    pub fn config(&self) -> &ClientConfig {
        &self.inner.config
    }

    /// The server addresses calls are balanced over.
    pub fn endpoints(&self) -> Vec<SocketAddr> {
        self.inner.balancer.addrs()
    }

    /// Calls `method` (`/service/method`) with `req` as a MessagePack body
    /// and decodes the answer as `Resp`. Blocks until the answer arrives or
    /// the call fails; the deadline is `ctx`'s, capped by the client's
    /// default timeout.
    ///
    /// # Errors
    ///
    /// The server's status if it answered with one, `UNAVAILABLE` if no
    /// server could be reached or the connection broke,
    /// `DEADLINE_EXCEEDED` or `CANCELLED` if `ctx` ended first, a usage
    /// error for a malformed method name.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// use syncrpc::client::Client;
    /// use syncrpc::Context;
    ///
    /// #[derive(serde::Serialize, serde::Deserialize)]
    /// struct Say { text: String }
    ///
    /// let client = Client::connect("127.0.0.1:7000")?;
    /// let reply = client.call::<Say, Say>(
    ///     &Context::background(), "/echo.Echo/Say", &Say { text: "hi".into() })?;
    /// assert_eq!(reply.text, "hi");
    /// # Ok::<(), syncrpc::Error>(())
    /// ```
    pub fn call<Req, Resp>(&self, ctx: &Context, method: &str, req: &Req) -> Result<Resp, Error>
    where
        Req: Serialize + ?Sized,
        Resp: DeserializeOwned,
    {
        self.call_with(ctx, method, req, &CallOptions::new())
            .map(Response::into_body)
    }

    /// [`Client::call`] with at most `timeout` for this call (on top of the
    /// context's deadline).
    ///
    /// # Examples
    ///
    /// ```no_run
    /// use std::time::Duration;
    /// use syncrpc::client::Client;
    /// use syncrpc::Context;
    ///
    /// let client = Client::connect("127.0.0.1:7000")?;
    /// let n: u64 = client.call_timeout(
    ///     &Context::background(), "/counter.Counter/Get", &(), Duration::from_millis(100))?;
    /// # Ok::<(), syncrpc::Error>(())
    /// ```
    pub fn call_timeout<Req, Resp>(
        &self,
        ctx: &Context,
        method: &str,
        req: &Req,
        timeout: Duration,
    ) -> Result<Resp, Error>
    where
        Req: Serialize + ?Sized,
        Resp: DeserializeOwned,
    {
        match Instant::now().checked_add(timeout) {
            Some(deadline) => self.call_deadline(ctx, method, req, deadline),
            // So far off that it is no deadline at all.
            None => self.call(ctx, method, req),
        }
    }

    /// [`Client::call`] that gives up at `deadline` (or the context's
    /// deadline, if earlier).
    ///
    /// # Examples
    ///
    /// ```no_run
    /// use std::time::{Duration, Instant};
    /// use syncrpc::client::Client;
    /// use syncrpc::Context;
    ///
    /// let client = Client::connect("127.0.0.1:7000")?;
    /// let deadline = Instant::now() + Duration::from_millis(100);
    /// let n: u64 = client.call_deadline(
    ///     &Context::background(), "/counter.Counter/Get", &(), deadline)?;
    /// # Ok::<(), syncrpc::Error>(())
    /// ```
    pub fn call_deadline<Req, Resp>(
        &self,
        ctx: &Context,
        method: &str,
        req: &Req,
        deadline: Instant,
    ) -> Result<Resp, Error>
    where
        Req: Serialize + ?Sized,
        Resp: DeserializeOwned,
    {
        self.call_with(ctx, method, req, &CallOptions::new().deadline(deadline))
            .map(Response::into_body)
    }

    /// [`Client::call`] with per-call options, returning the whole
    /// [`Response`]: body, response metadata, trace id and peer.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// use syncrpc::client::{CallOptions, Client};
    /// use syncrpc::Context;
    ///
    /// let client = Client::connect("127.0.0.1:7000")?;
    /// let opts = CallOptions::new().metadata("tenant", "acme");
    /// let resp = client.call_with::<_, String>(
    ///     &Context::background(), "/echo.Echo/Name", "bob", &opts)?;
    /// println!("{} {:?}", resp.body(), resp.metadata());
    /// # Ok::<(), syncrpc::Error>(())
    /// ```
    pub fn call_with<Req, Resp>(
        &self,
        ctx: &Context,
        method: &str,
        req: &Req,
        opts: &CallOptions,
    ) -> Result<Response<Resp>, Error>
    where
        Req: Serialize + ?Sized,
        Resp: DeserializeOwned,
    {
        let (reply, peer) = with_body_buf(|buf| {
            encode_request(req, buf)?;
            self.invoke(
                ctx,
                method,
                Encoding::MsgPack,
                buf,
                opts,
                FrameType::Request,
            )
        })?;
        let body = self.inflate(method, &reply)?;
        if reply.flags.encoding() != Ok(Encoding::MsgPack) {
            return Err(peer_error(
                Status::internal(format!(
                    "{method}: the response is not MessagePack (flags 0x{:02x})",
                    reply.flags.bits()
                )),
                Execution::Ran,
            ));
        }
        let value =
            codec::decode_body::<Resp>(&body, self.inner.config.max_body_depth).map_err(|s| {
                let status = Status::internal(format!(
                    "{method}: cannot decode the response: {}",
                    s.message()
                ));
                Error::new(ErrorKind::Codec, status).with_execution(Execution::Ran)
            })?;
        Ok(Response::new(value, reply.metadata, reply.trace_id, peer))
    }

    /// Calls `method` with `body` as raw bytes (encoding 1: the runtime
    /// passes them through untouched) and returns the answer's bytes.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// use syncrpc::client::{CallOptions, Client};
    /// use syncrpc::Context;
    ///
    /// let client = Client::connect("127.0.0.1:7000")?;
    /// let resp = client.call_raw(
    ///     &Context::background(), "/blob.Store/Put", b"\x00\x01\x02", &CallOptions::new())?;
    /// println!("{} bytes back", resp.body().len());
    /// # Ok::<(), syncrpc::Error>(())
    /// ```
    pub fn call_raw(
        &self,
        ctx: &Context,
        method: &str,
        body: &[u8],
        opts: &CallOptions,
    ) -> Result<Response<Bytes>, Error> {
        let (reply, peer) =
            self.invoke(ctx, method, Encoding::Raw, body, opts, FrameType::Request)?;
        let body = match self.inflate(method, &reply)? {
            Cow::Borrowed(_) => reply.body.clone(),
            Cow::Owned(v) => Bytes::from(v),
        };
        Ok(Response::new(body, reply.metadata, reply.trace_id, peer))
    }

    /// Sends `req` to `method` as a ONEWAY frame: no response is ever sent.
    /// Returns once the frame is queued on a healthy connection; it says
    /// nothing about whether the server ran it.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// use syncrpc::client::Client;
    /// use syncrpc::Context;
    ///
    /// let client = Client::connect("127.0.0.1:7000")?;
    /// client.oneway(&Context::background(), "/log.Log/Append", "started")?;
    /// # Ok::<(), syncrpc::Error>(())
    /// ```
    pub fn oneway<Req>(&self, ctx: &Context, method: &str, req: &Req) -> Result<(), Error>
    where
        Req: Serialize + ?Sized,
    {
        self.oneway_with(ctx, method, req, &CallOptions::new())
    }

    /// [`Client::oneway`] with per-call options.
    pub fn oneway_with<Req>(
        &self,
        ctx: &Context,
        method: &str,
        req: &Req,
        opts: &CallOptions,
    ) -> Result<(), Error>
    where
        Req: Serialize + ?Sized,
    {
        with_body_buf(|buf| {
            encode_request(req, buf)?;
            self.invoke_oneway(ctx, method, Encoding::MsgPack, buf, opts)
        })
    }

    /// [`Client::oneway`] with a raw body.
    pub fn oneway_raw(
        &self,
        ctx: &Context,
        method: &str,
        body: &[u8],
        opts: &CallOptions,
    ) -> Result<(), Error> {
        self.invoke_oneway(ctx, method, Encoding::Raw, body, opts)
    }

    /// Sends a PING to the next endpoint and waits for its PONG; returns
    /// the round-trip time. Opens a connection if there is none.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// use std::time::Duration;
    /// use syncrpc::client::Client;
    /// use syncrpc::Context;
    ///
    /// let client = Client::connect("127.0.0.1:7000")?;
    /// let rtt = client.ping(&Context::background().with_timeout(Duration::from_secs(1)))?;
    /// println!("round trip {rtt:?}");
    /// # Ok::<(), syncrpc::Error>(())
    /// ```
    pub fn ping(&self, ctx: &Context) -> Result<Duration, Error> {
        let start = Instant::now();
        let deadline = self.deadline(ctx, &CallOptions::new(), start);
        check_live(ctx, deadline, start)?;
        let conn = self.inner.balancer.pick(None, deadline, ctx, false)?;
        let sent = Instant::now();
        conn.ping(deadline, ctx)?;
        Ok(sent.elapsed())
    }

    /// The earliest of the context's deadline, the call's deadline and
    /// timeout, and the client's default timeout.
    fn deadline(&self, ctx: &Context, opts: &CallOptions, now: Instant) -> Option<Instant> {
        [opts.get_timeout(), self.inner.config.timeouts.call]
            .into_iter()
            .flatten()
            .filter_map(|t| now.checked_add(t))
            .chain(ctx.deadline())
            .chain(opts.get_deadline())
            .min()
    }

    fn invoke_oneway(
        &self,
        ctx: &Context,
        method: &str,
        encoding: Encoding,
        body: &[u8],
        opts: &CallOptions,
    ) -> Result<(), Error> {
        self.invoke(ctx, method, encoding, body, opts, FrameType::Oneway)
            .map(drop)
    }

    /// Sends one request (with retries) and returns the OK answer; for
    /// ONEWAY, an empty one once the frame is queued.
    fn invoke(
        &self,
        ctx: &Context,
        method: &str,
        encoding: Encoding,
        body: &[u8],
        opts: &CallOptions,
        frame_type: FrameType,
    ) -> Result<(Reply, SocketAddr), Error> {
        let config = &self.inner.config;
        let plan = self.plan(ctx, method, opts)?;
        let deadline = plan.deadline;
        let trace_id = plan.trace_id;
        if body.len() > config.max_body {
            return Err(too_large("request body", body.len(), config.max_body));
        }
        let (body, compression) = plan.compress(body);
        let body = &body[..];
        let mut meta = self.request_meta(method, &plan, opts, false)?;
        let flags = Flags::new(compression, encoding);
        let mut budget = RetryBudget::new(opts.retry_or(config.retry));
        let mut avoid = None;
        loop {
            let conn = self
                .inner
                .balancer
                .pick(avoid, deadline, ctx, opts.is_wait_for_ready())?;
            let peer = conn.peer();
            meta.timeout_ms = deadline.map_or(0, |d| timeout_ms(d, Instant::now()));
            let out = Outgoing {
                frame_type,
                flags,
                meta: &meta,
                body,
            };
            let result = if frame_type == FrameType::Oneway {
                conn.oneway(&out).map(|()| Reply::pong())
            } else {
                conn.call(&out, deadline, ctx)
                    .and_then(|r| self.check_reply(method, r))
            };
            drop(conn);
            let err = match result {
                Ok(mut reply) => {
                    // A server may leave the trace id out of OK answers.
                    reply.trace_id = reply.trace_id.or(trace_id);
                    return Ok((reply, peer));
                }
                Err(e) => match (e.trace_id(), trace_id) {
                    (None, Some(t)) => e.with_trace_id(t),
                    _ => e,
                },
            };
            let live = check_live(ctx, deadline, Instant::now()).is_ok();
            if !live || !budget.take(&err) {
                return Err(err);
            }
            debug!("{method}: retrying after {peer} failed: {err}");
            avoid = Some(peer);
        }
    }

    /// Checks a call's method and deadline and resolves its deadline,
    /// trace id and compression: what unary calls and streams share.
    fn plan(&self, ctx: &Context, method: &str, opts: &CallOptions) -> Result<Plan, Error> {
        let config = &self.inner.config;
        check_method(method)?;
        let start = Instant::now();
        let deadline = self.deadline(ctx, opts, start);
        check_live(ctx, deadline, start)?;
        let compression = match config.protocol {
            ClientProtocol::Native => opts.get_compression().unwrap_or(config.compression),
            // The protocol has no way to say a body is compressed.
            ClientProtocol::MsgpackRpc => Compression::None,
        };
        Ok(Plan {
            deadline,
            trace_id: opts.get_trace_id().or_else(|| ctx.trace_id()),
            compression,
            compress_min_size: opts.compress_min_size_or(config.compress_min_size),
        })
    }

    /// The meta of a call's REQUEST (its `timeout_ms` is set per attempt),
    /// refused if the server would not take it.
    fn request_meta<'a>(
        &'a self,
        method: &'a str,
        plan: &'a Plan,
        opts: &CallOptions,
        stream: bool,
    ) -> Result<RequestMeta<'a>, Error> {
        let config = &self.inner.config;
        let meta = RequestMeta {
            method,
            timeout_ms: 0,
            trace_id: plan.trace_id.as_ref().map(|t| t.as_str()),
            caller: config.caller.as_deref(),
            md: with_credentials(opts.get_metadata(), config.credentials.as_ref()),
            stream,
        };
        check_meta_size(&meta, config.max_meta)?;
        Ok(meta)
    }

    /// A non-OK answer as an error; an answer whose body was too large to
    /// read as an error too.
    fn check_reply(&self, method: &str, reply: Reply) -> Result<Reply, Error> {
        if reply.code != Code::OK {
            let status = Status::new(reply.code, reply.message).with_metadata(reply.metadata);
            let err = Error::from(status);
            return Err(match reply.trace_id {
                Some(t) => err.with_trace_id(t),
                None => err,
            });
        }
        if let Some(len) = reply.body_too_large {
            let mut err = too_large(
                &format!("{method}: response body"),
                len as usize,
                self.inner.config.max_body,
            );
            err = peer_error(err.into_status(), Execution::Ran);
            return Err(err);
        }
        Ok(reply)
    }

    /// The reply's body, decompressed within the body limit.
    fn inflate<'r>(&self, method: &str, reply: &'r Reply) -> Result<Cow<'r, [u8]>, Error> {
        inflate(
            method,
            "the response",
            reply.flags,
            &reply.body,
            self.inner.config.max_body,
        )
    }
}

/// What a call sends besides its body, resolved once before its first
/// attempt.
struct Plan {
    deadline: Option<Instant>,
    trace_id: Option<TraceId>,
    /// The compression asked for; bodies shorter than
    /// `compress_min_size` go uncompressed.
    compression: Compression,
    compress_min_size: usize,
}

impl Plan {
    /// `body` as it goes on the wire, and its compression.
    fn compress<'b>(&self, body: &'b [u8]) -> (Cow<'b, [u8]>, Compression) {
        if self.compression == Compression::None || body.len() < self.compress_min_size {
            return (Cow::Borrowed(body), Compression::None);
        }
        let mut out = Vec::with_capacity(body.len() / 2 + 64);
        codec::compress(self.compression, body, &mut out);
        (Cow::Owned(out), self.compression)
    }
}

/// A body from the server, `what` (`"the response"`) of `method`,
/// decompressed within `limit` as its flags say.
fn inflate<'r>(
    method: &str,
    what: &str,
    flags: Flags,
    body: &'r [u8],
    limit: usize,
) -> Result<Cow<'r, [u8]>, Error> {
    let compression = flags.compression().map_err(|bits| {
        peer_error(
            Status::internal(format!("{method}: {what} uses reserved compression {bits}")),
            Execution::Ran,
        )
    })?;
    if compression == Compression::None {
        return Ok(Cow::Borrowed(body));
    }
    codec::decompress(compression, body, limit)
        .map(Cow::Owned)
        .map_err(|e| {
            let status = match e {
                DecompressError::TooLarge { .. } => {
                    Status::resource_exhausted(format!("{method}: {what} {e}"))
                }
                DecompressError::Corrupt(_) => {
                    Status::data_loss(format!("{method}: {what} has a {e}"))
                }
            };
            peer_error(status, Execution::Ran)
        })
}

/// An error caused by what the server sent.
fn peer_error(status: Status, execution: Execution) -> Error {
    Error::new(ErrorKind::Protocol, status).with_execution(execution)
}

fn too_large(what: &str, len: usize, limit: usize) -> Error {
    let status = Status::resource_exhausted(format!("{what} too large: {len} > {limit} bytes"));
    Error::new(ErrorKind::Usage, status).with_execution(Execution::NotRun)
}

fn encode_request<Req: Serialize + ?Sized>(req: &Req, buf: &mut Vec<u8>) -> Result<(), Error> {
    codec::encode_body(req, buf).map_err(|s| {
        Error::new(
            ErrorKind::Codec,
            Status::internal(format!("cannot encode the request: {}", s.message())),
        )
        .with_execution(Execution::NotRun)
    })
}

/// `Err` if the context is already done or the deadline already passed.
fn check_live(ctx: &Context, deadline: Option<Instant>, now: Instant) -> Result<(), Error> {
    if let Some(reason) = ctx.cancel_reason() {
        let kind = match reason {
            CancelReason::DeadlineExceeded => ErrorKind::Timeout,
            _ => ErrorKind::Cancelled,
        };
        return Err(Error::new(kind, reason.to_status()).with_execution(Execution::NotRun));
    }
    if deadline.is_some_and(|d| now >= d) {
        let status = Status::deadline_exceeded("the deadline passed before the call was sent");
        return Err(Error::new(ErrorKind::Timeout, status).with_execution(Execution::NotRun));
    }
    Ok(())
}

/// Checks that a method name is `/service/method`, as the server requires.
fn check_method(method: &str) -> Result<(), Error> {
    let ok = method
        .strip_prefix('/')
        .and_then(|rest| rest.split_once('/'))
        .is_some_and(|(service, name)| {
            !service.is_empty() && !name.is_empty() && !name.contains('/')
        });
    if ok {
        Ok(())
    } else {
        Err(Error::usage(format!(
            "invalid method name {method:?}: expected /service/method"
        )))
    }
}

/// Refuses a meta the server would answer by closing the connection.
fn check_meta_size(meta: &RequestMeta<'_>, limit: usize) -> Result<(), Error> {
    // A cheap upper bound first: MessagePack adds at most 5 bytes per
    // string and the fixed keys take 40.
    let bound = 64
        + meta.method.len()
        + meta.trace_id.map_or(0, str::len)
        + meta.caller.map_or(0, str::len)
        + meta
            .md
            .iter()
            .map(|(k, v)| k.len() + v.as_bytes().len() + 10)
            .sum::<usize>();
    if bound <= limit {
        return Ok(());
    }
    let len = meta.to_vec().len();
    if len <= limit {
        return Ok(());
    }
    Err(too_large("request meta", len, limit))
}

/// The remaining budget in whole milliseconds, rounded up so that the
/// server never sees less than is left, at least 1 (0 means none on the
/// wire) and at most what the field holds.
fn timeout_ms(deadline: Instant, now: Instant) -> u32 {
    let left = deadline.saturating_duration_since(now);
    let ms = left.as_nanos().div_ceil(1_000_000);
    ms.clamp(1, u128::from(u32::MAX)) as u32
}

/// A call's metadata with the client's credentials added, unless the call
/// sets its own.
fn with_credentials(md: &crate::Metadata, creds: Option<&Credentials>) -> crate::Metadata {
    let mut md = md.clone();
    if let Some(c) = creds {
        if md.get(Credentials::KEY).is_none() {
            md.insert(Credentials::KEY, c.header_value());
        }
    }
    md
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timeout_ms_rounds_up_and_is_never_zero() {
        let now = Instant::now();
        assert_eq!(timeout_ms(now, now), 1);
        assert_eq!(timeout_ms(now + Duration::from_micros(1), now), 1);
        assert_eq!(timeout_ms(now + Duration::from_micros(1001), now), 2);
        assert_eq!(timeout_ms(now + Duration::from_millis(250), now), 250);
        let far = now + Duration::from_secs(u64::from(u32::MAX));
        assert_eq!(timeout_ms(far, now), u32::MAX);
    }

    #[test]
    fn method_names_need_two_segments() {
        assert!(check_method("/echo.Echo/Say").is_ok());
        for bad in [
            "",
            "/",
            "echo/Say",
            "/echo.Echo",
            "/echo.Echo/",
            "//Say",
            "/a/b/c",
        ] {
            let err = check_method(bad).unwrap_err();
            assert_eq!(err.kind(), ErrorKind::Usage, "{bad}");
            assert!(err.is_not_run());
        }
    }

    #[test]
    fn deadline_is_the_earliest_of_context_options_and_default() {
        let client = Client::builder()
            .addr("127.0.0.1:1")
            .default_timeout(Duration::from_secs(10))
            .build()
            .unwrap();
        let now = Instant::now();
        let bg = Context::background();
        let none = CallOptions::new();
        let secs = |n| now + Duration::from_secs(n);
        assert_eq!(client.deadline(&bg, &none, now), Some(secs(10)));
        let opts = CallOptions::new().timeout(Duration::from_secs(1));
        assert_eq!(client.deadline(&bg, &opts, now), Some(secs(1)));
        let opts = CallOptions::new()
            .deadline(secs(2))
            .timeout(Duration::from_secs(3));
        assert_eq!(client.deadline(&bg, &opts, now), Some(secs(2)));
        let ctx = bg.with_deadline(now + Duration::from_millis(5));
        assert_eq!(
            client.deadline(&ctx, &opts, now),
            Some(now + Duration::from_millis(5))
        );
        let plain = Client::connect("127.0.0.1:1").unwrap();
        assert_eq!(plain.deadline(&bg, &none, now), None);
    }

    #[test]
    fn oversized_meta_is_refused_before_sending() {
        let mut meta = RequestMeta::new("/a.B/c");
        meta.md.insert("k", "v".repeat(20 * 1024));
        let err = check_meta_size(&meta, 16 * 1024).unwrap_err();
        assert_eq!(err.code(), Code::RESOURCE_EXHAUSTED);
        assert!(err.is_not_run());
        assert!(err.to_string().contains("request meta too large"), "{err}");
        meta.md.insert("k", "v".repeat(100));
        assert!(check_meta_size(&meta, 16 * 1024).is_ok());
    }

    #[test]
    fn client_is_send_sync_clone() {
        fn check<T: Send + Sync + Clone + 'static>() {}
        check::<Client>();
    }
}

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
mod body;
mod builder;
mod call_plan;
mod connection;
mod endpoint;
mod invoke;
mod options;
mod retry;
mod slot;
mod stream;
mod stream_call;
mod stream_open;
mod stream_state;

use std::borrow::Cow;
use std::fmt;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use serde::de::DeserializeOwned;
use serde::Serialize;

pub use builder::{Backoff, ClientBuilder, ClientConfig, ClientProtocol, Credentials, Timeouts};
pub use options::{CallOptions, Response};
pub use retry::RetryPolicy;
pub use stream::{ClientStream, ServerStream, StreamReceiver, StreamSender};

use balancer::Balancer;
use body::{encode_request, peer_error, with_body_buf};
use call_plan::check_live;

use crate::codec::{self, Encoding, FrameType};
use crate::context::Context;
use crate::error::{Error, ErrorKind, Execution};
use crate::status::Status;

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
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn client_is_send_sync_clone() {
        fn check<T: Send + Sync + Clone + 'static>() {}
        check::<Client>();
    }
}

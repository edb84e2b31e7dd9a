//! Per-call options and the response a call returns.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use super::retry::RetryPolicy;
use crate::codec::Compression;
use crate::metadata::{Metadata, MetadataValue};
use crate::trace::TraceId;

/// Options for one call, on top of its [`Context`](crate::Context) and the
/// client's configuration.
///
/// The call's deadline is the earliest of the context's deadline, this
/// deadline or timeout and the client's default timeout; the trace id is
/// this one, else the context's, else none (the server assigns one).
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use syncrpc::client::CallOptions;
/// use syncrpc::codec::Compression;
/// use syncrpc::TraceId;
///
/// let opts = CallOptions::new()
///     .timeout(Duration::from_millis(250))
///     .metadata("tenant", "acme")
///     .compression(Compression::Gzip)
///     .trace_id(TraceId::new("req-42").unwrap());
/// assert_eq!(opts.get_timeout(), Some(Duration::from_millis(250)));
/// assert_eq!(opts.get_metadata().get_str("tenant"), Some("acme"));
/// ```
#[derive(Clone, Debug, Default)]
pub struct CallOptions {
    timeout: Option<Duration>,
    deadline: Option<Instant>,
    metadata: Metadata,
    compression: Option<Compression>,
    compress_min_size: Option<usize>,
    trace_id: Option<TraceId>,
    wait_for_ready: bool,
    retry: Option<RetryPolicy>,
}

impl CallOptions {
    /// No options: everything comes from the context and the client.
    pub fn new() -> CallOptions {
        CallOptions::default()
    }

    /// Gives the call at most `timeout`, counted from when it starts. It is
    /// sent to the server as `timeout_ms` and enforced here too: the call
    /// returns `DEADLINE_EXCEEDED` on time even if the server never
    /// answers, and the server is sent CANCEL.
    pub fn timeout(mut self, timeout: Duration) -> CallOptions {
        self.timeout = Some(timeout);
        self
    }

    /// Gives the call until `deadline`; like [`CallOptions::timeout`], as
    /// an instant.
    pub fn deadline(mut self, deadline: Instant) -> CallOptions {
        self.deadline = Some(deadline);
        self
    }

    /// Adds an entry to the request's metadata (the `md` map the handler
    /// reads).
    pub fn metadata(
        mut self,
        key: impl Into<String>,
        value: impl Into<MetadataValue>,
    ) -> CallOptions {
        self.metadata.insert(key, value);
        self
    }

    /// Replaces the request's metadata.
    pub fn with_metadata(mut self, metadata: Metadata) -> CallOptions {
        self.metadata = metadata;
        self
    }

    /// Compresses the request body (and so the response, which uses the
    /// request's compression) instead of the client's default.
    pub fn compression(mut self, compression: Compression) -> CallOptions {
        self.compression = Some(compression);
        self
    }

    /// Bodies shorter than `bytes` are not compressed; overrides the
    /// client's setting for this call.
    pub fn compress_min_size(mut self, bytes: usize) -> CallOptions {
        self.compress_min_size = Some(bytes);
        self
    }

    /// Sends this trace id instead of the context's.
    pub fn trace_id(mut self, trace_id: TraceId) -> CallOptions {
        self.trace_id = Some(trace_id);
        self
    }

    /// When no server can be reached, waits (until the deadline) for one to
    /// come back instead of failing at once with `UNAVAILABLE`. Off by
    /// default, so that a caller learns quickly that its backend is down.
    pub fn wait_for_ready(mut self, wait: bool) -> CallOptions {
        self.wait_for_ready = wait;
        self
    }

    /// Uses this retry policy instead of the client's. Give an
    /// idempotent call [`RetryPolicy::idempotent`] to have it retried after
    /// a broken connection.
    pub fn retry(mut self, policy: RetryPolicy) -> CallOptions {
        self.retry = Some(policy);
        self
    }

    /// The timeout set with [`CallOptions::timeout`].
    pub fn get_timeout(&self) -> Option<Duration> {
        self.timeout
    }

    /// The deadline set with [`CallOptions::deadline`].
    pub fn get_deadline(&self) -> Option<Instant> {
        self.deadline
    }

    /// The request metadata.
    pub fn get_metadata(&self) -> &Metadata {
        &self.metadata
    }

    /// The compression set for this call, if any.
    pub fn get_compression(&self) -> Option<Compression> {
        self.compression
    }

    /// The trace id set for this call, if any.
    pub fn get_trace_id(&self) -> Option<TraceId> {
        self.trace_id
    }

    pub(crate) fn compress_min_size_or(&self, default: usize) -> usize {
        self.compress_min_size.unwrap_or(default)
    }

    pub(crate) fn is_wait_for_ready(&self) -> bool {
        self.wait_for_ready
    }

    pub(crate) fn retry_or(&self, default: RetryPolicy) -> RetryPolicy {
        self.retry.unwrap_or(default)
    }
}

/// A successful call's answer: the body, the response metadata, the trace
/// id the request ran under and the server that answered.
///
/// # Examples
///
/// ```no_run
/// use syncrpc::client::{CallOptions, Client};
/// use syncrpc::Context;
///
/// #[derive(serde::Serialize, serde::Deserialize)]
/// struct Say { text: String }
///
/// let client = Client::connect("127.0.0.1:7000")?;
/// let req = Say { text: "hi".into() };
/// let resp = client.call_with::<Say, Say>(
///     &Context::background(), "/echo.Echo/Say", &req, &CallOptions::new())?;
/// println!("{} (trace {:?}, from {})", resp.body().text, resp.trace_id(), resp.peer());
/// # Ok::<(), syncrpc::Error>(())
/// ```
#[derive(Clone, Debug)]
pub struct Response<T> {
    body: T,
    metadata: Metadata,
    trace_id: Option<TraceId>,
    peer: SocketAddr,
}

impl<T> Response<T> {
    pub(crate) fn new(
        body: T,
        metadata: Metadata,
        trace_id: Option<TraceId>,
        peer: SocketAddr,
    ) -> Response<T> {
        Response {
            body,
            metadata,
            trace_id,
            peer,
        }
    }

    /// The response body.
    pub fn body(&self) -> &T {
        &self.body
    }

    /// Takes the body, dropping the rest.
    pub fn into_body(self) -> T {
        self.body
    }

    /// Metadata the handler set on its response.
    pub fn metadata(&self) -> &Metadata {
        &self.metadata
    }

    /// The trace id the request ran under, when known: the one the server
    /// reported, else the one sent. A server may leave it out of OK
    /// answers, so a call sent without one may not learn the id the server
    /// assigned (failed calls do: see [`Error::trace_id`]).
    ///
    /// [`Error::trace_id`]: crate::Error::trace_id
    pub fn trace_id(&self) -> Option<TraceId> {
        self.trace_id
    }

    /// The address of the server that answered.
    pub fn peer(&self) -> SocketAddr {
        self.peer
    }

    /// The body transformed by `f`, with the rest kept.
    pub fn map<U>(self, f: impl FnOnce(T) -> U) -> Response<U> {
        Response {
            body: f(self.body),
            metadata: self.metadata,
            trace_id: self.trace_id,
            peer: self.peer,
        }
    }
}

//! Building a [`Client`]: addresses, limits, timeouts, backoff, retries.
//!
//! Every default lives in [`ClientConfig`]'s `impl Default`, with its unit
//! in the expression and the reason next to it.

use std::fmt;
use std::time::Duration;

use super::balancer::Balancer;
use super::retry::RetryPolicy;
use super::Client;
use crate::codec::{Compression, FrameLimits, DEFAULT_MAX_BODY_DEPTH};
use crate::error::Error;

/// The phases of a call that have their own time limit.
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use syncrpc::client::Timeouts;
///
/// let t = Timeouts::default();
/// assert_eq!(t.connect, Duration::from_secs(5));
/// assert_eq!(t.call, None);
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Timeouts {
    /// Opening a TCP connection, at most (a call's own deadline may cut
    /// it shorter). Default 5 s: far above a connect's cost in one data
    /// centre, short enough that a black-holed address is given up on.
    pub connect: Duration,
    /// A call's budget when neither its context nor its options set a
    /// shorter one. Default `None`: the context decides, as in Go and gRPC.
    /// A call without any deadline still fails as soon as its connection
    /// breaks, but waits for as long as a live server takes.
    pub call: Option<Duration>,
    /// How long bytes may wait for a connection whose socket accepts none
    /// before it is closed and its calls fail. Default 30 s, the server's
    /// own write-stall limit (docs/protocol.md, "Limits").
    pub write_stall: Duration,
}

impl Default for Timeouts {
    fn default() -> Self {
        Timeouts {
            connect: Duration::from_secs(5),
            call: None,
            write_stall: Duration::from_secs(30),
        }
    }
}

/// Reconnection backoff: after `n` failed connection attempts in a row to
/// an endpoint, the next attempt waits about `base * 2^(n-1)`, at most
/// `max`, with the upper half of that interval chosen at random so that
/// clients restarted together do not reconnect in lockstep.
///
/// While an endpoint waits, calls go to the others (or fail at once with
/// `UNAVAILABLE`, or wait if [`CallOptions::wait_for_ready`] is set): a
/// server that is down never sees a tight loop of connection attempts.
///
/// [`CallOptions::wait_for_ready`]: super::CallOptions::wait_for_ready
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use syncrpc::client::Backoff;
///
/// let b = Backoff::default();
/// assert_eq!(b.ceiling(1), Duration::from_millis(100));
/// assert_eq!(b.ceiling(3), Duration::from_millis(400));
/// assert_eq!(b.ceiling(30), Duration::from_secs(10));
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Backoff {
    /// The wait after the first failure. Default 100 ms: a restarted
    /// server is back in use almost at once.
    pub base: Duration,
    /// The longest wait. Default 10 s: a server down for minutes costs
    /// one connection attempt per client every few seconds.
    pub max: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff {
            base: Duration::from_millis(100),
            max: Duration::from_secs(10),
        }
    }
}

impl Backoff {
    /// The longest wait after `failures` failed attempts in a row
    /// (`failures` >= 1): `base * 2^(failures-1)`, capped at `max`.
    pub fn ceiling(&self, failures: u32) -> Duration {
        let exp = failures.saturating_sub(1).min(31);
        self.base
            .checked_mul(1u32 << exp)
            .map_or(self.max, |d| d.min(self.max))
    }

    /// The wait actually used: uniformly in the upper half of
    /// [`Backoff::ceiling`], drawn from `random`.
    pub(crate) fn jittered(&self, failures: u32, random: u64) -> Duration {
        let ceiling = self.ceiling(failures);
        let half = ceiling / 2;
        let span = (ceiling - half).as_nanos().max(1);
        let extra = u128::from(random) % span;
        half + Duration::from_nanos(extra as u64)
    }
}

/// Everything a [`Client`] can be configured with. Build one through
/// [`ClientBuilder`], or fill it in and pass it to
/// [`ClientBuilder::config`].
///
/// # Examples
///
/// ```
/// use syncrpc::client::ClientConfig;
///
/// let c = ClientConfig::default();
/// assert_eq!(c.max_body, 10 * 1024 * 1024);
/// assert_eq!(c.max_meta, 16 * 1024);
/// assert_eq!(c.connections_per_endpoint, 1);
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct ClientConfig {
    /// Time limits of connecting, calling and writing.
    pub timeouts: Timeouts,
    /// TCP connections kept to each endpoint; calls are spread over them.
    /// Default 1: one connection multiplexes any number of calls, and more
    /// only help when one connection's IO thread becomes the bottleneck.
    pub connections_per_endpoint: usize,
    /// Largest response body, as sent and after decompression. Default
    /// 10 MiB, the server's request limit (docs/protocol.md, "Limits"): server
    /// bytes are untrusted too. A larger response fails its call with
    /// `RESOURCE_EXHAUSTED`; request bodies over it are refused before
    /// they are sent.
    pub max_body: usize,
    /// Largest meta section. Default 16 KiB, the server's limit. A larger
    /// meta from the server is a connection error; a request whose meta
    /// would pass it is refused before it is sent, as the server would
    /// close the connection, failing the other calls on it.
    pub max_meta: usize,
    /// Deepest nesting of a typed response body. Default 128, as the
    /// server's request bodies.
    pub max_body_depth: usize,
    /// Waits between failed connection attempts to one endpoint.
    pub backoff: Backoff,
    /// Which failed calls are retried; see [`RetryPolicy`].
    pub retry: RetryPolicy,
    /// How request bodies are compressed unless a call says otherwise.
    /// Default none: compression costs CPU on both sides and pays only for
    /// large, compressible bodies on slow links.
    pub compression: Compression,
    /// Bodies shorter than this are sent uncompressed even when compression
    /// is on. Default 1 KiB: below that, gzip's framing and CPU cost
    /// outweigh what it saves.
    pub compress_min_size: usize,
    /// This service's name, sent as `caller` for the server's logs.
    /// Default none.
    pub caller: Option<String>,
    /// TCP keepalive idle time, so that a server host that vanished
    /// without closing its connections is noticed. Default 60 s.
    pub tcp_keepalive: Option<Duration>,
    /// How often host names are resolved again, to follow a service whose
    /// addresses change. Default 30 s. Addresses given as IP literals are
    /// never resolved again.
    pub resolve_interval: Duration,
    /// The wire protocol. Default [`ClientProtocol::Native`].
    pub protocol: ClientProtocol,
    /// Credentials sent with every call. Default none.
    pub credentials: Option<Credentials>,
    /// TLS to the servers. Default none: plaintext. Needs the `tls`
    /// feature.
    #[cfg(feature = "tls")]
    pub tls: Option<crate::tls::ClientTls>,
}

/// Credentials a client attaches to every call, as request metadata.
///
/// Its `Debug` does not print the secret.
///
/// # Examples
///
/// ```
/// use syncrpc::client::Credentials;
///
/// let creds = Credentials::bearer("s3cret");
/// assert_eq!(creds.header_value(), "Bearer s3cret");
/// assert!(!format!("{creds:?}").contains("s3cret"));
/// ```
#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    value: String,
}

impl Credentials {
    /// The metadata key credentials are sent under.
    pub const KEY: &'static str = "authorization";

    /// A bearer token: `authorization: Bearer <token>`.
    pub fn bearer(token: impl AsRef<str>) -> Credentials {
        Credentials {
            value: format!("Bearer {}", token.as_ref()),
        }
    }

    /// The value sent under [`Credentials::KEY`].
    pub fn header_value(&self) -> &str {
        &self.value
    }
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Credentials(..)")
    }
}

/// The wire protocol a [`Client`](super::Client) speaks.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ClientProtocol {
    /// The native protocol of `docs/protocol.md`. The default.
    #[default]
    Native,
    /// MessagePack-RPC (`docs/msgpack-rpc.md`), for servers that speak only
    /// it. Deadlines are then enforced by the client alone (the server
    /// never learns them), metadata, trace ids and the caller name are not
    /// sent, bodies are not compressed, and pings succeed without a round
    /// trip while the connection is open.
    MsgpackRpc,
}

impl Default for ClientConfig {
    fn default() -> Self {
        ClientConfig {
            timeouts: Timeouts::default(),
            connections_per_endpoint: 1,
            max_body: 10 * 1024 * 1024,
            max_meta: 16 * 1024,
            max_body_depth: DEFAULT_MAX_BODY_DEPTH,
            backoff: Backoff::default(),
            retry: RetryPolicy::default(),
            compression: Compression::None,
            compress_min_size: 1024,
            caller: None,
            tcp_keepalive: Some(Duration::from_secs(60)),
            resolve_interval: Duration::from_secs(30),
            protocol: ClientProtocol::Native,
            credentials: None,
            #[cfg(feature = "tls")]
            tls: None,
        }
    }
}

impl ClientConfig {
    pub(crate) fn frame_limits(&self) -> FrameLimits {
        FrameLimits {
            max_body: self.max_body,
            max_meta: self.max_meta,
        }
    }

    fn validate(&self) -> Result<(), Error> {
        if self.connections_per_endpoint == 0 {
            return Err(Error::usage("connections_per_endpoint must be at least 1"));
        }
        if self.max_meta > usize::from(u16::MAX) {
            return Err(Error::usage(format!(
                "max_meta {} is more than a frame can carry (65535)",
                self.max_meta
            )));
        }
        if self.max_body > u32::MAX as usize {
            return Err(Error::usage(format!(
                "max_body {} is more than a frame can carry (4294967295)",
                self.max_body
            )));
        }
        if self.backoff.base.is_zero() || self.backoff.max < self.backoff.base {
            return Err(Error::usage(format!(
                "backoff needs 0 < base <= max, got base {:?} and max {:?}",
                self.backoff.base, self.backoff.max
            )));
        }
        if self.timeouts.connect.is_zero() {
            return Err(Error::usage("the connect timeout must not be zero"));
        }
        Ok(())
    }
}

/// Builds a [`Client`].
///
/// # Examples
///
/// ```no_run
/// use std::time::Duration;
/// use syncrpc::client::{Client, RetryPolicy};
/// use syncrpc::codec::Compression;
///
/// let client = Client::builder()
///     .addr("10.0.0.1:7000")
///     .addr("10.0.0.2:7000")
///     .connections_per_endpoint(2)
///     .default_timeout(Duration::from_secs(2))
///     .compression(Compression::Gzip)
///     .caller("checkout")
///     .retry(RetryPolicy::default())
///     .build()?;
/// # Ok::<(), syncrpc::Error>(())
/// ```
#[derive(Clone, Default)]
pub struct ClientBuilder {
    addrs: Vec<String>,
    config: ClientConfig,
}

impl fmt::Debug for ClientBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClientBuilder")
            .field("addrs", &self.addrs)
            .field("config", &self.config)
            .finish()
    }
}

impl ClientBuilder {
    /// A builder with no address and the default configuration.
    pub fn new() -> ClientBuilder {
        ClientBuilder::default()
    }

    /// Adds a server address, `host:port` or `ip:port` (a `SocketAddr`
    /// works too). A host name may resolve to several addresses: each is an
    /// endpoint, and calls are balanced round-robin over healthy endpoints.
    pub fn addr(mut self, addr: impl ToString) -> ClientBuilder {
        self.addrs.push(addr.to_string());
        self
    }

    /// Sends `authorization: Bearer <token>` with every call (unless a
    /// call's own metadata sets `authorization`). Default none.
    pub fn bearer_token(mut self, token: impl AsRef<str>) -> ClientBuilder {
        self.config.credentials = Some(Credentials::bearer(token));
        self
    }

    /// Speaks TLS to every server, verified as `tls` says. Default
    /// plaintext. Needs the `tls` feature.
    ///
    /// A client set for TLS that reaches a plaintext server fails to
    /// connect with an error saying so, and a plaintext client that
    /// reaches a TLS-only server fails its call with an error that
    /// suggests TLS.
    #[cfg(feature = "tls")]
    pub fn tls(mut self, tls: crate::tls::ClientTls) -> ClientBuilder {
        self.config.tls = Some(tls);
        self
    }

    /// Adds several server addresses.
    pub fn addrs<A: ToString>(mut self, addrs: impl IntoIterator<Item = A>) -> ClientBuilder {
        self.addrs.extend(addrs.into_iter().map(|a| a.to_string()));
        self
    }

    /// Replaces the whole configuration.
    pub fn config(mut self, config: ClientConfig) -> ClientBuilder {
        self.config = config;
        self
    }

    /// Connection attempts give up after `timeout`. Default 5 s; see
    /// [`Timeouts::connect`].
    pub fn connect_timeout(mut self, timeout: Duration) -> ClientBuilder {
        self.config.timeouts.connect = timeout;
        self
    }

    /// Every call gets at most `timeout` unless its context or options set
    /// less. Default none; see [`Timeouts::call`].
    pub fn default_timeout(mut self, timeout: Duration) -> ClientBuilder {
        self.config.timeouts.call = Some(timeout);
        self
    }

    /// Closes a connection whose socket accepted no bytes for `timeout`
    /// while some were waiting. Default 30 s; see [`Timeouts::write_stall`].
    pub fn write_stall_timeout(mut self, timeout: Duration) -> ClientBuilder {
        self.config.timeouts.write_stall = timeout;
        self
    }

    /// Keeps `n` connections to each endpoint. Default 1; see
    /// [`ClientConfig::connections_per_endpoint`].
    pub fn connections_per_endpoint(mut self, n: usize) -> ClientBuilder {
        self.config.connections_per_endpoint = n;
        self
    }

    /// Largest response (and request) body. Default 10 MiB; see
    /// [`ClientConfig::max_body`].
    pub fn max_body(mut self, bytes: usize) -> ClientBuilder {
        self.config.max_body = bytes;
        self
    }

    /// Largest meta section. Default 16 KiB; see [`ClientConfig::max_meta`].
    pub fn max_meta(mut self, bytes: usize) -> ClientBuilder {
        self.config.max_meta = bytes;
        self
    }

    /// Deepest nesting of a typed response. Default 128.
    pub fn max_body_depth(mut self, depth: usize) -> ClientBuilder {
        self.config.max_body_depth = depth;
        self
    }

    /// Reconnection backoff from `base` doubling up to `max`. Default
    /// 100 ms to 10 s; see [`Backoff`].
    pub fn backoff(mut self, base: Duration, max: Duration) -> ClientBuilder {
        self.config.backoff = Backoff { base, max };
        self
    }

    /// Which failed calls are retried. Default: once if known not to have
    /// run, never otherwise; see [`RetryPolicy`].
    pub fn retry(mut self, policy: RetryPolicy) -> ClientBuilder {
        self.config.retry = policy;
        self
    }

    /// Compresses request bodies of at least
    /// [`compress_min_size`](ClientBuilder::compress_min_size) bytes.
    /// Default none. The server answers with the same compression.
    pub fn compression(mut self, compression: Compression) -> ClientBuilder {
        self.config.compression = compression;
        self
    }

    /// Bodies shorter than `bytes` are not compressed. Default 1 KiB.
    pub fn compress_min_size(mut self, bytes: usize) -> ClientBuilder {
        self.config.compress_min_size = bytes;
        self
    }

    /// Names this service in every request, for the server's logs.
    pub fn caller(mut self, name: impl Into<String>) -> ClientBuilder {
        self.config.caller = Some(name.into());
        self
    }

    /// The wire protocol; see [`ClientProtocol`]. Default
    /// [`ClientProtocol::Native`].
    pub fn protocol(mut self, protocol: ClientProtocol) -> ClientBuilder {
        self.config.protocol = protocol;
        self
    }

    /// TCP keepalive idle time, or `None` for none. Default 60 s.
    pub fn tcp_keepalive(mut self, idle: Option<Duration>) -> ClientBuilder {
        self.config.tcp_keepalive = idle;
        self
    }

    /// How often host names are resolved again. Default 30 s.
    pub fn resolve_interval(mut self, interval: Duration) -> ClientBuilder {
        self.config.resolve_interval = interval;
        self
    }

    /// Resolves the addresses and builds the client. Connections are opened
    /// on first use (and re-opened as needed), so a client can be built
    /// before its servers are up.
    ///
    /// # Errors
    ///
    /// A usage error if no address was given, an address is malformed or
    /// does not resolve, or the configuration is inconsistent.
    pub fn build(self) -> Result<Client, Error> {
        self.config.validate()?;
        if self.addrs.is_empty() {
            return Err(Error::usage("a client needs at least one server address"));
        }
        let balancer = Balancer::new(self.addrs, &self.config)?;
        Ok(Client::from_parts(self.config, balancer))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jitter_stays_in_the_upper_half_of_the_ceiling() {
        let b = Backoff::default();
        for failures in 1..40 {
            let ceiling = b.ceiling(failures);
            for random in [0, 1, u64::MAX / 3, u64::MAX] {
                let d = b.jittered(failures, random);
                assert!(d >= ceiling / 2 && d <= ceiling, "{failures}: {d:?}");
            }
        }
        assert_eq!(b.ceiling(u32::MAX), b.max);
    }

    #[test]
    fn inconsistent_configs_are_refused() {
        let err = ClientBuilder::new()
            .addr("127.0.0.1:1")
            .connections_per_endpoint(0)
            .build()
            .unwrap_err();
        assert!(
            err.to_string().contains("connections_per_endpoint"),
            "{err}"
        );
        assert!(ClientBuilder::new().build().is_err());
        let err = ClientBuilder::new()
            .addr("no port here")
            .build()
            .unwrap_err();
        assert!(err.is_not_run());
    }
}

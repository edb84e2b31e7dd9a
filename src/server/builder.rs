//! The server builder and every knob it has, with the defaults in one place.

#[cfg(feature = "tls")]
use crate::tls::ServerTls;
use std::fmt;
use std::net::{SocketAddr, ToSocketAddrs};
use std::sync::Arc;
use std::thread;
use std::time::Duration;

use super::endpoints::Endpoints;
use super::protocol::Protocols;
use super::Server;
use crate::error::Error;
use crate::filter::Filter;
use crate::server::service::Service;
use crate::shutdown::Hook;

/// Size and count limits (docs/protocol.md, "Limits"). Every limit is enforced without
/// allocating first: a declared length is checked before any buffer is
/// sized from it.
///
/// # Examples
///
/// ```
/// use syncrpc::server::Limits;
///
/// let limits = Limits { max_connections: 100, ..Limits::default() };
/// assert_eq!(limits.max_body, 10 * 1024 * 1024);
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Largest request body, as sent and after decompression. Default
    /// 10 MiB (protocol default). A larger one is answered `RESOURCE_EXHAUSTED`; on the
    /// wire it is discarded as it arrives, never buffered, and the
    /// connection stays open.
    pub max_body: usize,
    /// Largest meta section. Default 16 KiB (protocol default). A larger one is a
    /// connection error: GOAWAY `INTERNAL`, then close.
    pub max_meta: usize,
    /// Deepest nesting of a MessagePack request body. Default 128: deep
    /// enough for any sane message, shallow enough that decoding cannot
    /// exhaust a worker's stack.
    pub max_body_depth: usize,
    /// Requests (and ONEWAYs) read and not yet answered, per connection.
    /// Default 1024 (protocol default). Past it the server stops reading that
    /// connection until some finish.
    pub max_in_flight_per_connection: usize,
    /// Response bytes waiting to be written, per connection. Default
    /// 16 MiB (protocol default). Past it the server stops reading that connection
    /// until they drain: a client that does not read its responses cannot
    /// make the server buffer without bound.
    pub max_pending_response_bytes: usize,
    /// Request bytes held by the server (partial frames plus requests
    /// queued or running), all connections together. Default 256 MiB
    /// (protocol default). Past it the server stops reading until they drain.
    pub max_buffered_request_bytes: usize,
    /// Open connections. Default 10000 (protocol default). A connection past it gets
    /// GOAWAY `RESOURCE_EXHAUSTED` and is closed.
    pub max_connections: usize,
    /// TLS handshakes in progress, all listeners together. Default 1024:
    /// a flood of clients that open TLS and never finish cannot hold more
    /// than this many connections' worth of handshake state, and cannot
    /// starve established connections. A connection past it is closed at
    /// its first byte (counted as a failed handshake).
    pub max_handshakes: usize,
    /// Streams open at once, all connections together (each holds a
    /// worker for its life). `None`, the default: half the workers, at
    /// least 1, so that unary calls are still served while every stream
    /// slot is busy. A stream past it is answered `RESOURCE_EXHAUSTED`
    /// at once. With inline handlers, each stream runs on a thread of
    /// its own, and `None` means 1.
    pub max_streams: Option<usize>,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_body: 10 * 1024 * 1024,
            max_meta: 16 * 1024,
            max_body_depth: crate::codec::DEFAULT_MAX_BODY_DEPTH,
            max_in_flight_per_connection: 1024,
            max_pending_response_bytes: 16 * 1024 * 1024,
            max_buffered_request_bytes: 256 * 1024 * 1024,
            max_connections: 10_000,
            max_handshakes: 1024,
            max_streams: None,
        }
    }
}

/// Timeouts, each named after the phase it bounds (docs/protocol.md, "Limits" and "Graceful shutdown").
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use syncrpc::server::Timeouts;
///
/// let t = Timeouts { idle: Duration::from_secs(300), ..Timeouts::default() };
/// assert_eq!(t.frame, Duration::from_secs(30));
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Timeouts {
    /// A connection with nothing in flight that receives nothing for this
    /// long gets GOAWAY `UNAVAILABLE` and is closed. The period starts at
    /// the last byte received or the last answer written, whichever is
    /// later: a call that runs longer than this leaves its connection a
    /// whole period after its answer. Default 60 s (protocol default).
    pub idle: Duration,
    /// Time to receive one whole frame, from its first byte; past it the
    /// connection is closed (a slow-loris defence). Default 30 s (protocol default).
    pub frame: Duration,
    /// Time to finish a TLS handshake, from the connection's first byte
    /// (from its accept on a TLS-only listener); past it the connection is
    /// closed and the handshake counted as failed. Default 10 s: a
    /// handshake is a few round trips, and a client that opens TCP and
    /// never finishes holds a handshake slot
    /// ([`Limits::max_handshakes`]) until then.
    pub handshake: Duration,
    /// Responses are waiting and the socket has accepted no byte for this
    /// long: the connection is closed. Default 30 s (protocol default).
    pub write_stall: Duration,
    /// How long a shutdown goes on serving normally, with the health
    /// service already reporting `NOT_SERVING`, before it closes the
    /// listeners and sends GOAWAY: time for load balancers and Kubernetes
    /// endpoints to stop sending traffic. Default 0 (protocol default): set it to a
    /// few readiness-probe periods when something routes by health.
    pub drain_delay: Duration,
    /// How long shutdown waits for requests already read to finish before
    /// answering the queued ones `UNAVAILABLE` and cancelling the running
    /// ones. Counted from the GOAWAY, after the drain delay. Default 10 s
    /// (protocol default).
    pub shutdown: Duration,
    /// How long the shutdown hooks get, all together, once the workers
    /// have stopped; each hook is told what is left. Default 5 s: enough
    /// to flush a log or close a pool, short enough to fit Kubernetes'
    /// default 30 s grace period with the defaults above.
    pub hooks: Duration,
}

impl Timeouts {
    /// The whole-frame limit of a connection: the handshake's while one
    /// is in progress.
    pub(crate) fn frame_limit(&self, handshaking: bool) -> Duration {
        if handshaking {
            self.handshake
        } else {
            self.frame
        }
    }
}

impl Default for Timeouts {
    fn default() -> Self {
        Timeouts {
            idle: Duration::from_secs(60),
            frame: Duration::from_secs(30),
            handshake: Duration::from_secs(10),
            write_stall: Duration::from_secs(30),
            drain_delay: Duration::ZERO,
            shutdown: Duration::from_secs(10),
            hooks: Duration::from_secs(5),
        }
    }
}

/// How a server moves bytes between sockets and handlers. Everything else
/// (codec, filters, handlers, limits, status codes, shutdown) is the same
/// in both modes.
///
/// # Examples
///
/// ```
/// use syncrpc::server::Mode;
/// use syncrpc::Server;
///
/// let server = Server::builder().mode(Mode::Thread).bind("127.0.0.1:0")?;
/// server.shutdown();
/// # Ok::<(), syncrpc::Error>(())
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum Mode {
    /// A few mio event loops ([`ServerConfig::event_loops`]) do all the
    /// socket I/O without blocking; handlers run on the worker pool or,
    /// with [`ServerConfig::inline_handlers`], on the loops themselves.
    /// The default: connections cost no thread of their own, so tens of
    /// thousands of idle ones are cheap.
    #[default]
    Event,
    /// An acceptor thread, and per connection a thread that reads with
    /// blocking calls and one that writes. Handlers run on the worker pool
    /// or, with [`ServerConfig::inline_handlers`], on the connection's
    /// thread. Plain blocking I/O that profilers and debuggers show as it
    /// is; it costs two threads per connection.
    ///
    /// On Linux it also serves fewer connections than
    /// [`Limits::max_connections`] when `vm.max_map_count` could not
    /// hold the memory mappings of that many threads (about 6100
    /// connections with the default 65530; it warns at start): past that
    /// the standard library would abort the process on the next thread,
    /// so the connection is refused with GOAWAY `RESOURCE_EXHAUSTED`
    /// instead.
    Thread,
}

/// Everything a server is configured with.
///
/// # Examples
///
/// ```
/// use syncrpc::server::ServerConfig;
///
/// let cfg = ServerConfig { workers: 4, ..ServerConfig::default() };
/// assert_eq!(cfg.queue_capacity, 4096);
/// assert_eq!(cfg.event_loops, 1);
/// ```
#[derive(Clone, Debug)]
pub struct ServerConfig {
    /// Worker threads running handlers. Default: the number of CPUs, at
    /// least 4, since handlers may block on I/O.
    pub workers: usize,
    /// Requests that may wait for a worker. Default 4096; past it a request
    /// is answered `RESOURCE_EXHAUSTED` at once, so the event loop never
    /// blocks and a flood is refused rather than queued for seconds.
    pub queue_capacity: usize,
    /// Event-loop threads doing the socket I/O. Default 1: one loop moves
    /// several hundred thousand small requests a second, and leaves the
    /// cores to the handlers.
    pub event_loops: usize,
    /// Listen backlog. Default 1024.
    pub backlog: i32,
    /// Sets `TCP_NODELAY` on accepted sockets. Default true: responses are
    /// already batched per write, Nagle's delay only adds latency.
    pub nodelay: bool,
    /// Prefix of the threads' names. Default `"syncrpc"`: workers are
    /// `syncrpc-worker-N`, event loops `syncrpc-loop-N`; in thread mode the
    /// acceptor is `syncrpc-accept` and connection `N`'s threads are
    /// `syncrpc-conn-N` (reading) and `syncrpc-conn-N-w` (writing); the
    /// shutdown coordinator is `syncrpc-shutdown`.
    pub thread_name: String,
    /// Size and count limits.
    pub limits: Limits,
    /// Timeouts.
    pub timeouts: Timeouts,
    /// The I/O mode. Default [`Mode::Event`].
    pub mode: Mode,
    /// Runs each handler on the thread that read its request instead of
    /// the worker pool: no queue and no hand-off between threads, the
    /// fastest way to serve handlers that only compute. No workers are
    /// started. Default false.
    ///
    /// A connection's requests then run one at a time, and CANCEL frames
    /// are read only between them. In [`Mode::Thread`] the reading thread
    /// is the connection's own. In [`Mode::Event`] it is the event loop,
    /// which serves nothing else while a handler runs: every connection of
    /// that loop waits, a deadline passed meanwhile is answered when the
    /// handler returns, and the shutdown cannot cancel a handler that
    /// never does. So in event mode, set it only for handlers that never
    /// block (no I/O, no locks held long, no calls to other services), and
    /// run as many loops ([`ServerConfig::event_loops`]) as cores.
    pub inline_handlers: bool,
    /// Stack size of the connection threads of [`Mode::Thread`], or the
    /// platform's default (`None`, the default). Handlers run on these
    /// threads too: all of them with inline handlers, and without, a lone
    /// request of a method that lately returned within 50 µs (the
    /// connection's thread runs it rather than wake a worker). Leave room
    /// for them.
    pub connection_stack_size: Option<usize>,
    /// The wire protocols connections may speak. Default
    /// [`Protocols::All`]: each connection is served in the protocol its
    /// first byte announces (`docs/msgpack-rpc.md`).
    pub protocols: Protocols,
    /// The service a bare MessagePack-RPC method name (one with no `/` and
    /// no `.`) belongs to, on every listener that does not name its own
    /// ([`ServerBuilder::msgpack_rpc_default_service_on`]). Default none:
    /// such names are unknown methods.
    pub msgpack_rpc_default_service: Option<String>,
    /// The built-in HTTP endpoints served (`GET /healthz`, `/livez`,
    /// `/metrics`, `/`; `docs/http.md`). Default all.
    pub endpoints: Endpoints,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            workers: thread::available_parallelism().map_or(4, |n| n.get().max(4)),
            queue_capacity: 4096,
            event_loops: 1,
            backlog: 1024,
            nodelay: true,
            thread_name: "syncrpc".to_owned(),
            limits: Limits::default(),
            timeouts: Timeouts::default(),
            mode: Mode::Event,
            inline_handlers: false,
            connection_stack_size: None,
            protocols: Protocols::All,
            msgpack_rpc_default_service: None,
            endpoints: Endpoints::default(),
        }
    }
}

/// Where a group of services listens.
pub(crate) struct ListenerSpec {
    pub addrs: Vec<SocketAddr>,
    pub services: Vec<Service>,
    /// Overrides [`ServerConfig::protocols`] on this listener.
    pub protocols: Option<Protocols>,
    /// Overrides [`ServerConfig::msgpack_rpc_default_service`] on this
    /// listener.
    pub msgpack_rpc_default_service: Option<String>,
    /// Overrides the server-wide TLS on this listener: `Some(None)` for
    /// plaintext only.
    #[cfg(feature = "tls")]
    pub tls: Option<Option<ServerTls>>,
    /// Serves only the built-in endpoints, over HTTP.
    pub admin: bool,
}

impl ListenerSpec {
    fn new(addrs: Vec<SocketAddr>, services: Vec<Service>) -> ListenerSpec {
        ListenerSpec {
            addrs,
            services,
            protocols: None,
            msgpack_rpc_default_service: None,
            #[cfg(feature = "tls")]
            tls: None,
            admin: false,
        }
    }
}

/// A setting of the one listener at an address, which overrides the
/// server-wide one there.
enum ListenerSetting {
    Protocols(Protocols),
    MsgpackRpcDefaultService(String),
    #[cfg(feature = "tls")]
    Tls(Option<ServerTls>),
}

impl ListenerSetting {
    /// The builder method that made the setting, for errors.
    fn origin(&self) -> &'static str {
        match self {
            ListenerSetting::Protocols(_) => "protocols_on",
            ListenerSetting::MsgpackRpcDefaultService(_) => "msgpack_rpc_default_service_on",
            #[cfg(feature = "tls")]
            ListenerSetting::Tls(Some(_)) => "tls_on",
            #[cfg(feature = "tls")]
            ListenerSetting::Tls(None) => "plaintext_on",
        }
    }

    fn apply(self, spec: &mut ListenerSpec) {
        match self {
            ListenerSetting::Protocols(p) => spec.protocols = Some(p),
            ListenerSetting::MsgpackRpcDefaultService(s) => {
                spec.msgpack_rpc_default_service = Some(s)
            }
            #[cfg(feature = "tls")]
            ListenerSetting::Tls(t) => spec.tls = Some(t),
        }
    }
}

/// Builds a [`Server`]: services, filters, threads, limits and timeouts.
///
/// # Examples
///
/// ```
/// use syncrpc::{Context, Server, Service, Status};
///
/// #[derive(serde::Serialize, serde::Deserialize)]
/// struct Say { text: String }
///
/// let echo = Service::new("echo.Echo")
///     .method("Say", |_ctx: &Context, req: Say| Ok::<_, Status>(req));
///
/// let server = Server::builder()
///     .service(echo)
///     .workers(8)
///     .bind("127.0.0.1:0")?;
/// println!("listening on {}", server.local_addr());
/// server.shutdown();
/// # Ok::<(), syncrpc::Error>(())
/// ```
pub struct ServerBuilder {
    config: ServerConfig,
    services: Vec<Service>,
    own: Vec<(Vec<SocketAddr>, Service)>,
    admin: Option<Vec<SocketAddr>>,
    pinned: Vec<(Vec<SocketAddr>, ListenerSetting)>,
    filters: Vec<Arc<dyn Filter>>,
    errors: Vec<String>,
    lifecycle: LifecycleSetup,
    #[cfg(feature = "tls")]
    tls: Option<ServerTls>,
}

/// What a server does around its shutdown.
pub(crate) struct LifecycleSetup {
    pub hooks: Vec<Hook>,
    pub handle_signals: bool,
    pub health: bool,
    pub reflection: bool,
}

impl Default for ServerBuilder {
    fn default() -> Self {
        ServerBuilder::new()
    }
}

impl ServerBuilder {
    /// A builder with the default configuration and no services.
    pub fn new() -> ServerBuilder {
        ServerBuilder {
            config: ServerConfig::default(),
            services: Vec::new(),
            own: Vec::new(),
            admin: None,
            pinned: Vec::new(),
            filters: Vec::new(),
            errors: Vec::new(),
            lifecycle: LifecycleSetup {
                hooks: Vec::new(),
                handle_signals: false,
                health: true,
                reflection: true,
            },
            #[cfg(feature = "tls")]
            tls: None,
        }
    }

    /// Serves TLS on every listener that does not say otherwise
    /// ([`ServerBuilder::tls_on`], [`ServerBuilder::plaintext_on`]): TLS
    /// only, or TLS and plaintext on one port, as
    /// [`ServerTls::mode`](crate::tls::ServerTls::mode) says. Default none:
    /// plaintext. Needs the `tls` feature.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// use syncrpc::tls::{ServerTls, TlsMode};
    /// use syncrpc::{Server, Service};
    ///
    /// let tls = ServerTls::from_pem_files("server.pem", "server.key")?.mode(TlsMode::Optional);
    /// let server = Server::builder()
    ///     .service(Service::new("echo.Echo"))
    ///     .tls(tls)
    ///     .bind("0.0.0.0:7000")?;
    /// # Ok::<(), syncrpc::Error>(())
    /// ```
    #[cfg(feature = "tls")]
    pub fn tls(mut self, tls: ServerTls) -> ServerBuilder {
        self.tls = Some(tls);
        self
    }

    /// Serves TLS on the listener at `addr` alone, whatever
    /// [`ServerBuilder::tls`] says.
    #[cfg(feature = "tls")]
    pub fn tls_on(self, addr: impl ToSocketAddrs, tls: ServerTls) -> ServerBuilder {
        self.pin(addr, ListenerSetting::Tls(Some(tls)))
    }

    /// Serves plaintext only on the listener at `addr`, whatever
    /// [`ServerBuilder::tls`] says.
    #[cfg(feature = "tls")]
    pub fn plaintext_on(self, addr: impl ToSocketAddrs) -> ServerBuilder {
        self.pin(addr, ListenerSetting::Tls(None))
    }

    /// Serves `service` on the address given to [`ServerBuilder::bind`].
    pub fn service(mut self, service: Service) -> ServerBuilder {
        self.services.push(service);
        self
    }

    /// Serves `service` on a listener of its own at `addr`. Services given
    /// the same address (as resolved) share one listener.
    pub fn service_on(mut self, addr: impl ToSocketAddrs, service: Service) -> ServerBuilder {
        match resolve(addr) {
            Ok(addrs) => self.own.push((addrs, service)),
            Err(e) => self.errors.push(format!(
                "cannot resolve the address of {}: {e}",
                service.name()
            )),
        }
        self
    }

    /// Appends a filter that runs around every method of every service,
    /// before the services' own filters.
    pub fn filter(mut self, filter: impl Filter) -> ServerBuilder {
        self.filters.push(Arc::new(filter));
        self
    }

    /// Sets the number of worker threads; see [`ServerConfig::workers`].
    pub fn workers(mut self, n: usize) -> ServerBuilder {
        self.config.workers = n;
        self
    }

    /// Sets the work queue's capacity; see [`ServerConfig::queue_capacity`].
    pub fn queue_capacity(mut self, n: usize) -> ServerBuilder {
        self.config.queue_capacity = n;
        self
    }

    /// Sets the number of event-loop threads; see
    /// [`ServerConfig::event_loops`].
    pub fn event_loops(mut self, n: usize) -> ServerBuilder {
        self.config.event_loops = n;
        self
    }

    /// Sets the prefix of the server's thread names; see
    /// [`ServerConfig::thread_name`].
    pub fn thread_name(mut self, prefix: impl Into<String>) -> ServerBuilder {
        self.config.thread_name = prefix.into();
        self
    }

    /// Sets the wire protocols connections may speak; see
    /// [`ServerConfig::protocols`]. Default [`Protocols::All`].
    pub fn protocols(mut self, protocols: Protocols) -> ServerBuilder {
        self.config.protocols = protocols;
        self
    }

    /// Sets the wire protocols of the listener at `addr` alone (the
    /// address given to [`ServerBuilder::bind`] or to
    /// [`ServerBuilder::service_on`]), overriding
    /// [`ServerBuilder::protocols`] there: for instance one port for
    /// native clients and another pinned to MessagePack-RPC.
    pub fn protocols_on(self, addr: impl ToSocketAddrs, protocols: Protocols) -> ServerBuilder {
        self.pin(addr, ListenerSetting::Protocols(protocols))
    }

    /// Names the service bare MessagePack-RPC method names belong to, so a
    /// client can call `Say` rather than `echo.Echo.Say`; see
    /// [`ServerConfig::msgpack_rpc_default_service`]. Default none.
    pub fn msgpack_rpc_default_service(mut self, service: impl Into<String>) -> ServerBuilder {
        self.config.msgpack_rpc_default_service = Some(service.into());
        self
    }

    /// Names the service bare MessagePack-RPC method names belong to on
    /// the listener at `addr` alone (the address given to
    /// [`ServerBuilder::bind`] or to [`ServerBuilder::service_on`]),
    /// overriding [`ServerBuilder::msgpack_rpc_default_service`] there.
    /// [`ServerBuilder::bind`] fails if no listener has that address.
    ///
    /// # Examples
    ///
    /// Two ports, each calling its own service by bare method names:
    ///
    /// ```
    /// use syncrpc::{Server, Service};
    ///
    /// let server = Server::builder()
    ///     .service(Service::new("calc.Calc"))
    ///     .service_on("127.0.0.1:0", Service::new("echo.Echo"))
    ///     .msgpack_rpc_default_service("echo.Echo")
    ///     // The first listener at this address: the main one, which
    ///     // `bind` makes. Its bare names are calc.Calc's methods.
    ///     .msgpack_rpc_default_service_on("127.0.0.1:0", "calc.Calc")
    ///     .bind("127.0.0.1:0")?;
    /// assert_ne!(server.addr_of("echo.Echo"), Some(server.local_addr()));
    /// server.shutdown();
    /// # Ok::<(), syncrpc::Error>(())
    /// ```
    pub fn msgpack_rpc_default_service_on(
        self,
        addr: impl ToSocketAddrs,
        service: impl Into<String>,
    ) -> ServerBuilder {
        self.pin(
            addr,
            ListenerSetting::MsgpackRpcDefaultService(service.into()),
        )
    }

    /// Sets which built-in HTTP endpoints are served (default all); see
    /// [`Endpoints`].
    pub fn endpoints(mut self, endpoints: Endpoints) -> ServerBuilder {
        self.config.endpoints = endpoints;
        self
    }

    /// Serves the built-in endpoints (`/healthz`, `/livez`, `/metrics`,
    /// `/`) on a listener of their own at `addr`, over HTTP only, and no
    /// longer on the other listeners: a private admin port, which
    /// Prometheus and the probes reach and the public does not. Default
    /// none: every listener serves them.
    ///
    /// # Examples
    ///
    /// ```
    /// use syncrpc::Server;
    ///
    /// let server = Server::builder()
    ///     .admin_on("127.0.0.1:0")
    ///     .bind("127.0.0.1:0")?;
    /// let admin = server.handle().admin_addr().expect("an admin listener");
    /// assert_ne!(admin, server.local_addr());
    /// server.shutdown();
    /// # Ok::<(), syncrpc::Error>(())
    /// ```
    pub fn admin_on(mut self, addr: impl ToSocketAddrs) -> ServerBuilder {
        match resolve(addr) {
            Ok(addrs) => self.admin = Some(addrs),
            Err(e) => self
                .errors
                .push(format!("admin_on: cannot resolve the address: {e}")),
        }
        self
    }

    /// Records `setting` for the listener at `addr`, found at `bind`.
    fn pin(mut self, addr: impl ToSocketAddrs, setting: ListenerSetting) -> ServerBuilder {
        match resolve(addr) {
            Ok(addrs) => self.pinned.push((addrs, setting)),
            Err(e) => self.errors.push(format!(
                "{}: cannot resolve the listener's address: {e}",
                setting.origin()
            )),
        }
        self
    }

    /// Sets the listen backlog; see [`ServerConfig::backlog`].
    pub fn backlog(mut self, n: i32) -> ServerBuilder {
        self.config.backlog = n;
        self
    }

    /// Sets the size and count limits.
    pub fn limits(mut self, limits: Limits) -> ServerBuilder {
        self.config.limits = limits;
        self
    }

    /// Sets the timeouts.
    pub fn timeouts(mut self, timeouts: Timeouts) -> ServerBuilder {
        self.config.timeouts = timeouts;
        self
    }

    /// Sets the I/O mode; see [`Mode`]. Default [`Mode::Event`].
    pub fn mode(mut self, mode: Mode) -> ServerBuilder {
        self.config.mode = mode;
        self
    }

    /// Runs handlers on the threads that read their requests (in event
    /// mode, the event loops) rather than the worker pool; see
    /// [`ServerConfig::inline_handlers`] for when that is safe.
    pub fn inline_handlers(mut self, inline: bool) -> ServerBuilder {
        self.config.inline_handlers = inline;
        self
    }

    /// Shuts the server down gracefully on SIGTERM or SIGINT (and SIGHUP),
    /// and forces an immediate stop on a second one. Default false: the
    /// application decides.
    ///
    /// The handler (the `ctrlc` crate's) is process-wide and installed
    /// once, on the first bind that asks for it, before that bind opens
    /// its listeners: a signal that arrives as soon as the port accepts
    /// starts the shutdown (once the server has started) rather than
    /// ending the process. Every server that asked then gets each
    /// signal. Binding fails with a usage error if the
    /// application set a `ctrlc` handler of its own, which can only be
    /// done once per process: start the shutdown from that handler with a
    /// [`ShutdownHandle`](crate::ShutdownHandle) instead.
    pub fn handle_signals(mut self, handle: bool) -> ServerBuilder {
        self.lifecycle.handle_signals = handle;
        self
    }

    /// Registers a shutdown hook. Hooks run once, in reverse order of
    /// registration (the last registered runs first), after every handler
    /// has finished and the workers have stopped, each on a thread of the
    /// shutdown's, given the time left of [`Timeouts::hooks`]. A hook that
    /// panics is logged and skipped; hooks still running when the time is
    /// up are left behind and reported.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// use syncrpc::Server;
    ///
    /// let server = Server::builder()
    ///     .on_shutdown(|left: Duration| println!("closing the database pool within {left:?}"))
    ///     .on_shutdown(|_| println!("runs first"))
    ///     .bind("127.0.0.1:0")?;
    /// let report = server.shutdown();
    /// assert_eq!(report.hooks_run, 2);
    /// # Ok::<(), syncrpc::Error>(())
    /// ```
    pub fn on_shutdown(mut self, hook: impl FnOnce(Duration) + Send + 'static) -> ServerBuilder {
        self.lifecycle.hooks.push(Box::new(hook));
        self
    }

    /// Serves the built-in health service (`/syncrpc.Health/Check`, see
    /// [`Health`](super::Health)) on every listener. Default true. A
    /// listener where the application registers a service named
    /// `syncrpc.Health` itself serves that one instead.
    pub fn health_service(mut self, serve: bool) -> ServerBuilder {
        self.lifecycle.health = serve;
        self
    }

    /// Serves the built-in reflection service (`syncrpc.Reflection`, see
    /// [`reflection`](super::reflection)) on every listener: the names,
    /// kinds, timeouts and types of the listener's methods, for tools such
    /// as the `syncrpc` command line. Default true, as a server's methods
    /// are what any client of it is written against anyway; turn it off
    /// where the list itself is not to be shown. A listener where the
    /// application registers a service named `syncrpc.Reflection` itself
    /// serves that one instead.
    pub fn reflection_service(mut self, serve: bool) -> ServerBuilder {
        self.lifecycle.reflection = serve;
        self
    }

    /// Replaces the whole configuration.
    pub fn config(mut self, config: ServerConfig) -> ServerBuilder {
        self.config = config;
        self
    }

    /// The configuration so far.
    pub fn config_ref(&self) -> &ServerConfig {
        &self.config
    }

    /// Binds the listeners, starts the event loops and the workers, and
    /// returns the running server.
    ///
    /// Fails with an [`Error`] of kind `Usage` for a bad configuration (a
    /// service registered twice on one address, a zero limit) and of kind
    /// `Io` if a listener cannot be bound.
    pub fn bind(self, addr: impl ToSocketAddrs) -> Result<Server, Error> {
        if let Some(e) = self.errors.first() {
            return Err(Error::usage(e.clone()));
        }
        let addrs = resolve(addr).map_err(|e| Error::io("cannot resolve the listen address", e))?;
        let mut specs = vec![ListenerSpec::new(addrs, self.services)];
        for (addrs, svc) in self.own {
            match specs[1..].iter_mut().find(|s| s.addrs == addrs) {
                Some(spec) => spec.services.push(svc),
                None => specs.push(ListenerSpec::new(addrs, vec![svc])),
            }
        }
        if let Some(addrs) = self.admin {
            let fixed = addrs.iter().all(|a| a.port() != 0);
            if fixed && specs.iter().any(|s| s.addrs == addrs) {
                return Err(Error::usage(format!(
                    "admin_on({addrs:?}): another listener has that address"
                )));
            }
            let mut spec = ListenerSpec::new(addrs, Vec::new());
            spec.admin = true;
            spec.protocols = Some(Protocols::Http);
            specs.push(spec);
        }
        for (addrs, setting) in self.pinned {
            match specs.iter_mut().find(|s| s.addrs == addrs) {
                Some(spec) => setting.apply(spec),
                None => {
                    return Err(Error::usage(format!(
                        "{}({addrs:?}): no listener at that address",
                        setting.origin()
                    )))
                }
            }
        }
        #[cfg(feature = "tls")]
        for spec in &mut specs {
            if spec.tls.is_none() {
                spec.tls = Some(self.tls.clone());
            }
        }
        check(&self.config, &specs)?;
        Server::start(self.config, specs, self.filters, self.lifecycle)
    }
}

fn resolve(addr: impl ToSocketAddrs) -> std::io::Result<Vec<SocketAddr>> {
    let addrs: Vec<SocketAddr> = addr.to_socket_addrs()?.collect();
    if addrs.is_empty() {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            "the address resolved to nothing",
        ));
    }
    Ok(addrs)
}

fn check(config: &ServerConfig, specs: &[ListenerSpec]) -> Result<(), Error> {
    let l = &config.limits;
    for (name, v) in [
        ("max_body", l.max_body),
        ("max_meta", l.max_meta),
        ("max_body_depth", l.max_body_depth),
        (
            "max_in_flight_per_connection",
            l.max_in_flight_per_connection,
        ),
        ("max_pending_response_bytes", l.max_pending_response_bytes),
        ("max_buffered_request_bytes", l.max_buffered_request_bytes),
        ("max_connections", l.max_connections),
        ("max_streams", l.max_streams.unwrap_or(1)),
        ("workers", config.workers),
        ("queue_capacity", config.queue_capacity),
        ("event_loops", config.event_loops),
    ] {
        if v == 0 {
            return Err(Error::usage(format!("{name} must be at least 1")));
        }
    }
    if l.max_body > u32::MAX as usize {
        return Err(Error::usage(format!(
            "max_body {} is more than a frame can carry (4294967295)",
            l.max_body
        )));
    }
    for spec in specs {
        let mut names: Vec<&str> = spec.services.iter().map(|s| s.name()).collect();
        names.sort_unstable();
        if let Some(w) = names.windows(2).find(|w| w[0] == w[1]) {
            return Err(Error::usage(format!(
                "service {} registered twice on {:?}",
                w[0], spec.addrs
            )));
        }
    }
    Ok(())
}

impl fmt::Debug for ServerBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ServerBuilder")
            .field("config", &self.config)
            .field("services", &self.services)
            .field("own", &self.own.len())
            .field("filters", &self.filters.len())
            .field("hooks", &self.lifecycle.hooks.len())
            .field("handle_signals", &self.lifecycle.handle_signals)
            .field("health", &self.lifecycle.health)
            .field("reflection", &self.lifecycle.reflection)
            .finish()
    }
}

//! What a server is configured with: its size and count limits, its
//! timeouts, its I/O mode, and the whole configuration that holds them,
//! each with its defaults.

use std::thread;
use std::time::Duration;

use super::endpoints::Endpoints;
use super::protocol::Protocols;

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
    ///
    /// [`ServerBuilder::msgpack_rpc_default_service_on`]: super::ServerBuilder::msgpack_rpc_default_service_on
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

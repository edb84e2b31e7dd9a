//! The server: services and handlers, filters, a worker pool, and the
//! threads that move the bytes, in one of two modes ([`Mode`]).
//!
//! Event mode (the default):
//!
//! ```text
//!            accept/read/decode          try_submit, one wake-up per read
//! sockets ──────────────────────▶ event loop(s) ──────────────────────────▶ worker pool
//!    ▲  ▲                            │  ▲                                     │
//!    │  │ write once the socket is   │  │ ready list + Waker (limits,        │ filters → handler
//!    │  │ writable again             │  │ closing, a full socket)            │
//!    │  └────────────────────────────┘  └──────── connection output buffer ◀──┤
//!    └──────────── the worker writes what it answered when its queue is dry ──┘
//! ```
//!
//! Thread mode: an acceptor thread, and per connection a reading thread and
//! a writing thread with blocking I/O; handlers run on the same worker pool,
//! except that a connection's thread runs a lone request of a quick method
//! itself (see `threaded`).
//!
//! In both modes, while the workers are behind (requests wait in the queue
//! that no worker has taken), the thread that read a batch of requests
//! (the event loop, the connection's thread) runs those of quick methods
//! itself, for at most 50 us of handler time, and sends the rest to the
//! workers: queued, they would wait anyway, and each would pay a hand-off
//! (`task::run_kept`).
//!
//! In either mode, handlers that never block can instead run inline on the
//! thread that read their request, the event loop or the connection's
//! reading thread ([`ServerConfig::inline_handlers`]): no hand-off, at the
//! price of a connection's (in event mode, a loop's) requests running one
//! at a time.
//!
//! Per-request work that depends neither on the I/O mode nor on the wire
//! protocol (routing, deadlines, the in-flight table, the pool task) lives
//! in `dispatch`; `event_loop` and `threaded` drive it. What depends on
//! the wire protocol (framing, the native meta, the encoding of answers
//! and GOAWAYs) is one implementation of a trait per protocol, in
//! `protocol`: the native one, MessagePack-RPC and HTTP/1.1. The
//! shutdown's steps are the coordinator's, in [`crate::shutdown`]; the
//! server carries them out. Every listener also serves the built-in health
//! service, [`Health`], the reflection service, [`reflection`], and the
//! HTTP endpoints (`/healthz`, `/livez`, `/metrics`, `/`) of `endpoints`,
//! whose metrics `telemetry` keeps.
//!
//! # A request's life
//!
//! The driver (an event loop, or the connection's reading thread) reads the
//! bytes and has the connection's protocol decode them (for a native
//! frame, its meta too) into a request; the dispatcher routes the method,
//! computes the deadline (the earliest of the caller's `timeout_ms`, the
//! method's and the service's timeouts, counted from when the request was
//! read) and queues it on the worker pool without ever blocking: a full
//! queue is answered `RESOURCE_EXHAUSTED` at once. A
//! worker that picks up a request whose deadline already passed answers
//! `DEADLINE_EXCEEDED` (saying how long it waited) without decompressing or
//! decoding the body. Otherwise the filters run, then the handler's own
//! step decompresses and decodes the body and calls the handler; a panic is
//! answered `INTERNAL` and logged with the trace id. A handler still running
//! at its deadline sees its context cancelled and its request is answered
//! `DEADLINE_EXCEEDED` right then; what it returns later is dropped.
//!
//! # Limits and what happens past them
//!
//! The same in both modes.
//!
//! | limit ([`Limits`], [`Timeouts`]) | default | past it |
//! |---|---|---|
//! | `max_body` | 10 MiB | `RESOURCE_EXHAUSTED`; the body is skipped as it arrives, never buffered |
//! | `max_meta` | 16 KiB | GOAWAY `INTERNAL`, connection closed |
//! | `max_in_flight_per_connection` | 1024 | that connection is not read until some finish |
//! | `max_pending_response_bytes` | 16 MiB | that connection is not read until they drain |
//! | `max_buffered_request_bytes` | 256 MiB | no connection is read until they drain |
//! | `max_connections` | 10000 | GOAWAY `RESOURCE_EXHAUSTED`, connection closed |
//! | `idle` | 60 s | GOAWAY `UNAVAILABLE`, connection closed |
//! | `frame` | 30 s | connection closed (slow-loris) |
//! | `write_stall` | 30 s | connection closed |
//! | `drain_delay` | 0 | (shutdown) health says `NOT_SERVING` while serving goes on |
//! | `shutdown` | 10 s | queued requests `UNAVAILABLE`, running ones `CANCELLED` |
//! | `hooks` | 5 s | shutdown hooks still running are left behind and reported |
//!
//! Any other protocol error (bad magic, version, frame type, reserved bits,
//! a frame sent in the wrong direction) is answered GOAWAY `INTERNAL` with
//! what was wrong, and the connection closes once the requests already read
//! are answered. A bad meta, a malformed or unknown method, a reserved
//! compression or encoding, or a duplicate in-flight id only fail that
//! request. Running out of file descriptors on accept pauses accepting
//! (5 ms, doubling to 1 s) instead of spinning, and accepting resumes as
//! soon as a connection closes. In thread mode, a connection whose threads
//! cannot be started is answered GOAWAY `RESOURCE_EXHAUSTED`.
//!
//! # Threads
//!
//! All named after [`ServerConfig::thread_name`]: `workers` workers (none
//! with inline handlers) and a shutdown coordinator, plus, in event mode,
//! `event_loops` loops (default 1), or, in thread mode, an acceptor and
//! two threads per connection.
//!
//! Batching is where throughput is won. The requests one read of a
//! connection yields are queued as one batch ([`crate::pool::WorkerPool::batch`]),
//! one message on the pool's channel: a sleeping worker is woken once for
//! all of them, not preempting the loop for the first, and hands part of
//! them back to the queue if another worker is idle or before a handler
//! that may take long. When the process may use only one CPU, all the
//! reads of one poll make one batch, since a worker woken earlier could
//! only take the CPU from the loop. In event mode a worker that answers while more work
//! is queued only appends to the connection's output and notes the
//! connection; when its queue runs dry (or after 64 answers or 16
//! connections under steady load, or before it starts a handler that has
//! not lately returned within 50 µs) it writes every connection it noted,
//! many responses in one `write`, and the loop is not woken at all. The loop
//! writes the answers it makes itself (refusals, PONG) and what a full
//! socket left behind, once it is writable again. In thread mode workers and the
//! connection's thread write the same way, with sends that never wait on
//! the blocking socket; the connection's writing thread writes what a full
//! socket left, so a client that does not read never blocks a worker. A response
//! never reaches another connection: it is tied to its connection's state,
//! not to a slot or descriptor number, and dropped if that connection
//! closed.

mod accept;
mod buffer_pool;
mod builder;
mod config;
mod connection;
mod deadline;
mod dispatch;
mod endpoints;
mod event_loop;
mod handle;
mod handler;
mod health;
mod listener_spec;
mod pace;
pub(crate) mod protocol;
pub mod reflection;
mod service;
pub(crate) mod stream;
mod task;
mod telemetry;
mod threaded;
mod transport;

use std::fmt;
use std::net::{SocketAddr, TcpListener as StdListener};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use socket2::{Domain, Protocol, Socket, Type};

pub use builder::ServerBuilder;
pub use config::{Limits, Mode, ServerConfig, Timeouts};
pub use endpoints::Endpoints;
pub use handle::{ServerHandle, ServerStats};
pub use handler::{RawHandler, UnaryHandler};
pub use health::{
    Health, HealthCheckRequest, HealthCheckResponse, ServingStatus, HEALTH_CHECK_METHOD,
    HEALTH_SERVICE,
};
pub use protocol::Protocols;
pub use reflection::REFLECTION_SERVICE;
pub use service::{MethodName, Service};
pub use stream::{
    BidiStreamHandler, ClientStreamHandler, Incoming, RawBidiStreamHandler, RawClientStreamHandler,
    RawIncoming, RawServerStreamHandler, RawSink, ServerStreamHandler, Sink,
};

pub use crate::shutdown::{ShutdownHandle, ShutdownReport};

use self::builder::LifecycleSetup;
use self::dispatch::{Dispatcher, ServerShared};
use self::endpoints::EndpointState;
use self::event_loop::{EventLoop, ListenerEntry, LoopShared, DRAINING, STOPPING};
use self::handler::BodyLimits;
use self::listener_spec::ListenerSpec;
use self::protocol::DecodeConfig;
use self::reflection::{Catalog, Reflection as _};
use self::service::Registry;
use self::threaded::Threaded;
use self::transport::ListenerTransport;
use crate::codec::FrameLimits;
use crate::error::Error;
use crate::filter::Filter;
use crate::latch::Latch;
use crate::pool::{PoolConfig, PoolStats, WorkerPool};
use crate::shutdown::{Lifecycle, Plan, Tally, Target, Trigger};

/// How long event loops get to flush and exit once told to stop.
const LOOP_STOP: Duration = Duration::from_secs(3);
/// The shutdown timeout when starting fails half-way.
const FAILED_START_TIMEOUT: Duration = Duration::from_secs(1);

/// A running server. Dropping it shuts it down gracefully and waits (see
/// [`ServerHandle::shutdown`]).
///
/// # Examples
///
/// ```
/// use bytes::Bytes;
/// use syncrpc::{Context, Server, Service, Status};
///
/// let svc = Service::new("blob.Blob")
///     .raw_method("Echo", |_ctx: &Context, body: Bytes| Ok::<_, Status>(body));
/// let server = Server::builder().service(svc).bind("127.0.0.1:0")?;
/// let addr = server.local_addr();
/// let handle = server.handle(); // cloneable, e.g. for an admin thread
/// assert_eq!(handle.local_addr(), addr);
/// let report = server.shutdown();
/// assert!(report.stuck_threads.is_empty());
/// # Ok::<(), syncrpc::Error>(())
/// ```
///
/// A service's `main`, stopped by SIGTERM or Ctrl-C:
///
/// ```no_run
/// use syncrpc::Server;
///
/// let server = Server::builder()
///     .handle_signals(true)
///     .bind("0.0.0.0:7000")?;
/// let report = server.run();
/// std::process::exit(report.exit_code());
/// # Ok::<(), syncrpc::Error>(())
/// ```
pub struct Server {
    handle: ServerHandle,
    coordinator: Option<JoinHandle<()>>,
}

struct Inner {
    shared: Arc<ServerShared>,
    driver: Driver,
    listeners: Vec<(SocketAddr, Vec<String>)>,
    /// The listener of [`ServerBuilder::admin_on`], if any.
    admin: Option<SocketAddr>,
    /// One count per open connection, in either mode.
    conns: Latch,
    health: Health,
    life: Arc<Lifecycle>,
}

/// The threads that move the bytes.
enum Driver {
    Event {
        loops: Vec<Arc<LoopShared>>,
        /// One count per event-loop thread, dropped when it exits.
        alive: Latch,
        threads: Mutex<Vec<(String, JoinHandle<()>)>>,
    },
    Thread(Arc<Threaded>),
}

impl Server {
    /// A builder with the default configuration.
    pub fn builder() -> ServerBuilder {
        ServerBuilder::new()
    }

    pub(crate) fn start(
        config: ServerConfig,
        specs: Vec<ListenerSpec>,
        filters: Vec<Arc<dyn Filter>>,
        setup: LifecycleSetup,
    ) -> Result<Server, Error> {
        let limits = BodyLimits {
            max_body: config.limits.max_body,
            max_depth: config.limits.max_body_depth,
        };
        let health = {
            let names = specs
                .iter()
                .flat_map(|s| s.services.iter().map(|s| s.name()));
            Health::new(
                names
                    .chain(setup.health.then_some(HEALTH_SERVICE))
                    .chain(setup.reflection.then_some(REFLECTION_SERVICE)),
            )
        };
        // Before the first listener opens: a SIGTERM that comes as soon as
        // the port accepts must start the shutdown, not kill the process
        // with connections completed in the backlog. A signal that comes
        // before the coordinator runs waits for it in the trigger queue.
        let life = Lifecycle::new();
        if setup.handle_signals {
            life.handle_signals()?;
        }
        let mut bound = Vec::with_capacity(specs.len());
        let has_admin = specs.iter().any(|s| s.admin);
        let mut endpoint_states = Vec::new();
        let mut admin_addr = None;
        for mut spec in specs {
            let listener = bind_listener(&spec.addrs, config.backlog)
                .map_err(|e| Error::io(&format!("cannot listen on {:?}", spec.addrs), e))?;
            let addr = listener
                .local_addr()
                .map_err(|e| Error::io("cannot read the listen address", e))?;
            if setup.health && spec.services.iter().all(|s| s.name() != HEALTH_SERVICE) {
                spec.services.push(health.service());
            }
            // Reflection lists what callers call: the application's
            // services, health and itself, not the HTTP endpoints' plumbing.
            if setup.reflection && spec.services.iter().all(|s| s.name() != REFLECTION_SERVICE) {
                let infos = spec.services.iter().map(|s| s.info(true)).collect();
                spec.services.push(Catalog::new(infos).into_service());
            }
            let endpoints = (spec.admin || !has_admin)
                .then(|| EndpointState::new(config.endpoints, health.clone()));
            if let Some(state) = &endpoints {
                spec.services.push(state.service());
            }
            if spec.admin {
                admin_addr = Some(addr);
            }
            let names: Vec<String> = spec.services.iter().map(|s| s.name().to_owned()).collect();
            let registry = Arc::new(Registry::new(spec.services, &filters, limits));
            let protocols = spec.protocols.unwrap_or(config.protocols);
            let decode = DecodeConfig {
                frame: FrameLimits {
                    max_body: config.limits.max_body,
                    max_meta: config.limits.max_meta,
                },
                max_body_depth: config.limits.max_body_depth,
                msgpack_rpc_default_service: spec
                    .msgpack_rpc_default_service
                    .as_deref()
                    .or(config.msgpack_rpc_default_service.as_deref())
                    .map(Arc::from),
            };
            endpoint_states.push((endpoints, registry.clone()));
            let transport = ListenerTransport {
                #[cfg(feature = "tls")]
                tls: spec
                    .tls
                    .flatten()
                    .map(|tls| Arc::new(tls.acceptor(protocols.alpn()))),
                max_handshakes: config.limits.max_handshakes,
            };
            bound.push((
                listener,
                addr,
                names,
                registry,
                (protocols, decode, transport),
            ));
        }
        let pool = if config.inline_handlers {
            None
        } else {
            let pool = WorkerPool::new(PoolConfig {
                workers: config.workers,
                queue_capacity: config.queue_capacity,
                thread_name: format!("{}-worker", config.thread_name),
                stack_size: None,
                ..PoolConfig::default()
            })
            .map_err(|e| Error::io("cannot start the workers", e))?;
            Some(pool)
        };
        let plan = Plan {
            timeout: config.timeouts.shutdown,
            drain_delay: config.timeouts.drain_delay,
            hooks_budget: config.timeouts.hooks,
            hooks: setup.hooks,
            thread_name: config.thread_name.clone(),
        };
        let mode = config.mode;
        let shared = Arc::new(ServerShared::new(config, pool));
        for (state, registry) in &endpoint_states {
            if let Some(state) = state {
                state.attach(&shared, registry);
            }
        }
        let conns = Latch::new();
        let listeners = bound
            .iter()
            .map(|(_, addr, names, _, _)| (*addr, names.clone()))
            .collect();
        let dispatchers = bound.into_iter().map(
            |(listener, _, _, registry, (protocols, decode, transport))| {
                let dispatcher = Arc::new(Dispatcher::new(
                    shared.clone(),
                    registry,
                    protocols,
                    decode,
                    transport,
                ));
                (listener, dispatcher)
            },
        );
        let (driver, started) = match mode {
            Mode::Event => start_loops(&shared, dispatchers.collect(), &conns),
            Mode::Thread => {
                match Threaded::start(shared.clone(), dispatchers.collect(), conns.clone()) {
                    Ok(t) => (Driver::Thread(t), Ok(())),
                    Err(e) => {
                        if let Some(pool) = &shared.pool {
                            pool.shutdown(FAILED_START_TIMEOUT);
                        }
                        return Err(Error::io("cannot start the acceptor", e));
                    }
                }
            }
        };
        let inner = Arc::new(Inner {
            shared,
            driver,
            listeners,
            admin: admin_addr,
            conns,
            health,
            life,
        });
        let fail = |e: Error, plan: Plan| {
            // Whatever started is stopped; the application's hooks are for
            // a server that ran, and are dropped.
            let plan = Plan {
                timeout: FAILED_START_TIMEOUT,
                drain_delay: Duration::ZERO,
                hooks: Vec::new(),
                ..plan
            };
            inner.life.execute_now(&*inner, plan);
            Err(e)
        };
        if let Err(e) = started {
            return fail(e, plan);
        }
        let name = format!("{}-shutdown", inner.shared.config.thread_name);
        let (target, slot) = (inner.clone(), Arc::new(Mutex::new(Some(plan))));
        let plan_slot = slot.clone();
        let spawned = thread::Builder::new().name(name).spawn(move || {
            let plan = plan_slot.lock().unwrap_or_else(|e| e.into_inner()).take();
            if let Some(plan) = plan {
                let run = std::panic::AssertUnwindSafe(|| target.life.coordinate(&*target, plan));
                if let Err(p) = std::panic::catch_unwind(run) {
                    // Whoever waits for the report must not wait forever.
                    target.life.fail(crate::pool::panic_message(&*p));
                }
            }
        });
        match spawned {
            Ok(coordinator) => Ok(Server {
                handle: ServerHandle { inner },
                coordinator: Some(coordinator),
            }),
            Err(e) => {
                let plan = slot.lock().unwrap_or_else(|e| e.into_inner()).take();
                let e = Error::io("cannot start the shutdown coordinator", e);
                match plan {
                    Some(plan) => fail(e, plan),
                    None => Err(e),
                }
            }
        }
    }

    /// A cloneable handle to the server.
    pub fn handle(&self) -> ServerHandle {
        self.handle.clone()
    }

    /// A cloneable handle that starts and waits for the shutdown.
    pub fn shutdown_handle(&self) -> ShutdownHandle {
        self.handle.shutdown_handle()
    }

    /// The address of the main listener (the one given to
    /// [`ServerBuilder::bind`]).
    pub fn local_addr(&self) -> SocketAddr {
        self.handle.local_addr()
    }

    /// The address a service listens on.
    pub fn addr_of(&self, service: &str) -> Option<SocketAddr> {
        self.handle.addr_of(service)
    }

    /// The server's counts.
    pub fn stats(&self) -> ServerStats {
        self.handle.stats()
    }

    /// The statuses the health service reports.
    pub fn health(&self) -> &Health {
        self.handle.health()
    }

    /// Shuts down gracefully with the configured shutdown timeout and
    /// returns the report; see [`ServerHandle::shutdown`].
    pub fn shutdown(mut self) -> ShutdownReport {
        self.handle.inner.life.trigger(Trigger::Graceful(None));
        self.finish()
    }

    /// Serves until the server is shut down (by SIGTERM or SIGINT with
    /// [`ServerBuilder::handle_signals`], or a [`ShutdownHandle`] from any
    /// thread), waits for the shutdown to finish, and returns its report.
    /// Every thread the server started has stopped by then, except those
    /// the report names as stuck.
    pub fn run(mut self) -> ShutdownReport {
        self.finish()
    }

    fn finish(&mut self) -> ShutdownReport {
        let report = self.handle.inner.life.wait();
        if let Some(coordinator) = self.coordinator.take() {
            // The report is the coordinator's last act.
            let _ = coordinator.join();
        }
        report
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if self.coordinator.is_some() {
            self.handle.inner.life.trigger(Trigger::Graceful(None));
            self.finish();
        }
    }
}

impl fmt::Debug for Server {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.handle, f)
    }
}

/// Starts the event loops, each with its own clone of every listener.
/// Returns what started, and the error if not everything did.
fn start_loops(
    shared: &Arc<ServerShared>,
    listeners: Vec<(StdListener, Arc<Dispatcher>)>,
    conns: &Latch,
) -> (Driver, Result<(), Error>) {
    let n = shared.config.event_loops;
    let prefix = &shared.config.thread_name;
    let alive = Latch::new();
    let mut loops = Vec::with_capacity(n);
    let mut threads = Vec::with_capacity(n);
    let result = (|| -> Result<(), Error> {
        for i in 0..n {
            let mut entries = Vec::with_capacity(listeners.len());
            for (listener, dispatcher) in &listeners {
                let l = listener
                    .try_clone()
                    .map_err(|e| Error::io("cannot clone a listener", e))?;
                entries.push(ListenerEntry {
                    listener: mio::net::TcpListener::from_std(l),
                    dispatcher: dispatcher.clone(),
                });
            }
            let name = format!("{prefix}-loop-{i}");
            let (lp, ls) = EventLoop::new(name.clone(), shared.clone(), entries, conns.clone())
                .map_err(|e| Error::io("cannot start an event loop", e))?;
            let guard = alive.guard();
            let handle = thread::Builder::new()
                .name(name.clone())
                .spawn(move || {
                    let _alive = guard;
                    let run = std::panic::AssertUnwindSafe(|| lp.run());
                    if let Err(p) = std::panic::catch_unwind(run) {
                        log::error!(
                            "event loop panicked, its connections are lost: {}",
                            crate::pool::panic_message(&*p)
                        );
                    }
                })
                .map_err(|e| Error::io("cannot start an event loop", e))?;
            loops.push(ls);
            threads.push((name, handle));
        }
        Ok(())
    })();
    // The loops hold their own clones of the listening sockets.
    drop(listeners);
    let driver = Driver::Event {
        loops,
        alive,
        threads: Mutex::new(threads),
    };
    (driver, result)
}

fn bind_listener(addrs: &[SocketAddr], backlog: i32) -> std::io::Result<StdListener> {
    let mut last = None;
    for addr in addrs {
        let attempt = (|| {
            let socket = Socket::new(
                Domain::for_address(*addr),
                Type::STREAM,
                Some(Protocol::TCP),
            )?;
            socket.set_reuse_address(true)?;
            socket.set_nonblocking(true)?;
            socket.bind(&(*addr).into())?;
            socket.listen(backlog)?;
            Ok(StdListener::from(socket))
        })();
        match attempt {
            Ok(l) => return Ok(l),
            Err(e) => last = Some(e),
        }
    }
    Err(last.unwrap_or_else(|| {
        std::io::Error::new(std::io::ErrorKind::InvalidInput, "no address to listen on")
    }))
}

impl Target for Inner {
    fn stop_serving(&self) {
        self.health.shut_down();
    }

    fn go_away(&self) {
        self.shared.going_away.store(true, Ordering::SeqCst);
        match &self.driver {
            Driver::Event { loops, .. } => {
                for l in loops {
                    l.set_phase(DRAINING);
                }
            }
            Driver::Thread(t) => t.go_away(),
        }
    }

    fn wait_drained(&self, until: Instant) -> bool {
        self.shared.requests.wait_deadline(until) && self.conns.wait_deadline(until)
    }

    fn stop_io(&self, forced: bool) -> Vec<String> {
        match &self.driver {
            Driver::Event {
                loops,
                alive,
                threads,
            } => {
                for l in loops {
                    l.set_phase(STOPPING);
                }
                // A loop stops within its final flush; give it that and a
                // margin.
                let done = alive.wait_timeout(LOOP_STOP);
                let threads =
                    std::mem::take(&mut *threads.lock().unwrap_or_else(|e| e.into_inner()));
                let mut stuck = Vec::new();
                for (name, t) in threads {
                    if done || t.is_finished() {
                        let _ = t.join();
                    } else {
                        stuck.push(name);
                    }
                }
                stuck
            }
            Driver::Thread(t) => t.stop(forced),
        }
    }

    fn stop_workers(&self, until: Instant) -> Vec<String> {
        match &self.shared.pool {
            Some(pool) => {
                pool.shutdown(until.saturating_duration_since(Instant::now()))
                    .stuck
            }
            None => Vec::new(),
        }
    }

    fn tally(&self) -> Tally {
        let s = &self.shared;
        Tally {
            drained: s.shutdown_drained.load(Ordering::Relaxed),
            refused: s.shutdown_refused.load(Ordering::Relaxed),
            abandoned: s.shutdown_abandoned.load(Ordering::Relaxed),
            cancelled: s.shutdown_cancelled.load(Ordering::Relaxed),
        }
    }
}

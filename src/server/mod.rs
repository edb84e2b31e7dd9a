//! The server: services and handlers, filters, a worker pool, and the mio
//! event loops that move the bytes.
//!
//! ```text
//!            accept/read/decode                 try_submit (never blocks)
//! sockets ──────────────────────▶ event loop(s) ─────────────────────────▶ worker pool
//!    ▲                               │  ▲                                    │
//!    │        write (batched)        │  │ ready list + Waker (once per batch) │ filters → handler
//!    └───────────────────────────────┘  └──────── connection output buffer ◀─┘
//! ```
//!
//! Per-request work that does not depend on the I/O mode (meta decoding,
//! routing, deadlines, the in-flight table, the pool task, response
//! encoding) lives in `dispatch`; `event_loop` is one driver of it.
//!
//! # A request's life
//!
//! The event loop reads and decodes the frame, decodes its meta, routes
//! the method, computes the deadline (the earliest of the caller's
//! `timeout_ms`, the method's and the service's timeouts, counted from when
//! the request was read) and queues it on the worker pool without ever
//! blocking: a full queue is answered `RESOURCE_EXHAUSTED` at once. A
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
//! | `shutdown` | 10 s | queued requests `UNAVAILABLE`, running ones `CANCELLED` |
//!
//! Any other protocol error (bad magic, version, frame type, reserved bits,
//! a frame sent in the wrong direction) is answered GOAWAY `INTERNAL` with
//! what was wrong, and the connection closes once the requests already read
//! are answered. A bad meta, a malformed or unknown method, a reserved
//! compression or encoding, or a duplicate in-flight id only fail that
//! request. Running out of file descriptors on accept pauses accepting
//! (5 ms, doubling to 1 s) instead of spinning, and accepting resumes as
//! soon as a connection closes.
//!
//! # Threads
//!
//! `event_loops` loops (default 1) and `workers` workers, all named after
//! [`ServerConfig::thread_name`]. A response is written by the worker that
//! produced it when it has nothing else queued, or else by the loop, woken
//! once for the whole batch; either way many responses go out in one
//! `write`. A response never reaches another connection: it is tied to its
//! connection's state, not to a slot or descriptor number, and dropped if
//! that connection closed.

mod buffer_pool;
mod builder;
mod connection;
mod dispatch;
mod event_loop;
mod handler;
mod service;

use std::fmt;
use std::net::{SocketAddr, TcpListener as StdListener};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use socket2::{Domain, Protocol, Socket, Type};

pub use builder::{Limits, ServerBuilder, ServerConfig, Timeouts};
pub use handler::{RawHandler, UnaryHandler};
pub use service::Service;

use self::builder::ListenerSpec;
use self::dispatch::{Dispatcher, ServerShared};
use self::event_loop::{EventLoop, ListenerEntry, LoopShared, DRAINING, STOPPING};
use self::handler::BodyLimits;
use self::service::Registry;
use crate::error::Error;
use crate::filter::Filter;
use crate::latch::Latch;
use crate::pool::{PoolConfig, PoolStats, WorkerPool};

/// How long handlers get to return after the shutdown cancelled them.
const CANCEL_GRACE: Duration = Duration::from_secs(1);

/// A running server. Dropping it shuts it down (see
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
/// let handle = server.handle(); // cloneable, e.g. for a signal handler
/// assert_eq!(handle.local_addr(), addr);
/// let report = server.shutdown();
/// assert!(report.stuck_threads.is_empty());
/// # Ok::<(), syncrpc::Error>(())
/// ```
pub struct Server {
    handle: ServerHandle,
}

/// A cloneable remote control for a running [`Server`]: its addresses, its
/// counts, and its shutdown. Clones share one server; it is `Send + Sync`.
#[derive(Clone)]
pub struct ServerHandle {
    inner: Arc<Inner>,
}

struct Inner {
    shared: Arc<ServerShared>,
    loops: Vec<Arc<LoopShared>>,
    threads: Mutex<Vec<(String, JoinHandle<()>)>>,
    listeners: Vec<(SocketAddr, Vec<String>)>,
    conns: Latch,
    /// One count per event-loop thread, dropped when it exits.
    loops_alive: Latch,
    report: Mutex<Option<ShutdownReport>>,
    done: std::sync::Condvar,
}

/// Counts a running server reports.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct ServerStats {
    /// Open connections.
    pub connections: usize,
    /// Requests read and not yet answered.
    pub requests_in_flight: usize,
    /// Request bytes held (partial frames, queued and running requests),
    /// counted against [`Limits::max_buffered_request_bytes`].
    pub buffered_request_bytes: usize,
    /// Handler results dropped because the request had been answered by
    /// its deadline, cancelled, or its connection had closed.
    pub dropped_responses: u64,
    /// The worker pool's counts: busy, queued, completed, expired.
    pub pool: PoolStats,
}

/// What a shutdown did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct ShutdownReport {
    /// Requests in flight when the shutdown began that finished normally.
    pub drained: usize,
    /// Requests answered UNAVAILABLE without running (still queued when
    /// the shutdown timeout ran out).
    pub unavailable: u64,
    /// Requests answered CANCELLED because they were still running when
    /// the shutdown timeout ran out.
    pub cancelled: u64,
    /// Threads that did not stop in time, by name; they are detached.
    pub stuck_threads: Vec<String>,
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
    ) -> Result<Server, Error> {
        let limits = BodyLimits {
            max_body: config.limits.max_body,
            max_depth: config.limits.max_body_depth,
        };
        let mut bound = Vec::with_capacity(specs.len());
        for spec in specs {
            let listener = bind_listener(&spec.addrs, config.backlog)
                .map_err(|e| Error::io(&format!("cannot listen on {:?}", spec.addrs), e))?;
            let addr = listener
                .local_addr()
                .map_err(|e| Error::io("cannot read the listen address", e))?;
            let names: Vec<String> = spec.services.iter().map(|s| s.name().to_owned()).collect();
            let registry = Arc::new(Registry::new(spec.services, &filters, limits));
            bound.push((listener, addr, names, registry));
        }
        let pool = WorkerPool::new(PoolConfig {
            workers: config.workers,
            queue_capacity: config.queue_capacity,
            thread_name: format!("{}-worker", config.thread_name),
            stack_size: None,
        })
        .map_err(|e| Error::io("cannot start the workers", e))?;
        let loops_n = config.event_loops;
        let thread_name = config.thread_name.clone();
        let shared = Arc::new(ServerShared::new(config, pool));
        let conns = Latch::new();
        let loops_alive = Latch::new();
        let mut loops = Vec::with_capacity(loops_n);
        let mut threads = Vec::with_capacity(loops_n);
        let result = (|| -> Result<(), Error> {
            for i in 0..loops_n {
                let mut entries = Vec::with_capacity(bound.len());
                for (listener, _, _, registry) in &bound {
                    let l = listener
                        .try_clone()
                        .map_err(|e| Error::io("cannot clone a listener", e))?;
                    entries.push(ListenerEntry {
                        listener: mio::net::TcpListener::from_std(l),
                        dispatcher: Arc::new(Dispatcher {
                            server: shared.clone(),
                            registry: registry.clone(),
                        }),
                    });
                }
                let name = format!("{thread_name}-loop-{i}");
                let (lp, ls) = EventLoop::new(name.clone(), shared.clone(), entries, conns.clone())
                    .map_err(|e| Error::io("cannot start an event loop", e))?;
                let alive = loops_alive.guard();
                let handle = thread::Builder::new()
                    .name(name.clone())
                    .spawn(move || {
                        let _alive = alive;
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
        let listeners = bound
            .iter()
            .map(|(_, addr, names, _)| (*addr, names.clone()))
            .collect();
        // The loops hold their own clones of the listening sockets.
        drop(bound);
        let handle = ServerHandle {
            inner: Arc::new(Inner {
                shared,
                loops,
                threads: Mutex::new(threads),
                listeners,
                conns,
                loops_alive,
                report: Mutex::new(None),
                done: std::sync::Condvar::new(),
            }),
        };
        if let Err(e) = result {
            handle.shutdown_timeout(Duration::from_secs(1));
            return Err(e);
        }
        Ok(Server { handle })
    }

    /// A cloneable handle to the server.
    pub fn handle(&self) -> ServerHandle {
        self.handle.clone()
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

    /// Shuts down with the configured shutdown timeout; see
    /// [`ServerHandle::shutdown`].
    pub fn shutdown(self) -> ShutdownReport {
        self.handle.shutdown()
    }

    /// Blocks until the server has been shut down (from a handle or a
    /// signal handler), and returns the shutdown's report.
    pub fn wait(self) -> ShutdownReport {
        self.handle.wait_report()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.handle.shutdown();
    }
}

impl fmt::Debug for Server {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.handle, f)
    }
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

impl ServerHandle {
    /// The address of the main listener.
    pub fn local_addr(&self) -> SocketAddr {
        self.inner.listeners[0].0
    }

    /// Every listener's address with the services it serves.
    pub fn local_addrs(&self) -> &[(SocketAddr, Vec<String>)] {
        &self.inner.listeners
    }

    /// The address `service` listens on.
    pub fn addr_of(&self, service: &str) -> Option<SocketAddr> {
        self.inner
            .listeners
            .iter()
            .find(|(_, names)| names.iter().any(|n| n == service))
            .map(|(a, _)| *a)
    }

    /// The server's counts.
    pub fn stats(&self) -> ServerStats {
        let s = &self.inner.shared;
        ServerStats {
            connections: s.connections.load(Ordering::Relaxed),
            requests_in_flight: s.requests.count(),
            buffered_request_bytes: s.buffered.load(Ordering::Relaxed),
            dropped_responses: s.dropped_responses.load(Ordering::Relaxed),
            pool: s.pool.stats(),
        }
    }

    /// True once a shutdown has begun.
    pub fn is_shutting_down(&self) -> bool {
        self.inner.shared.shutting_down.load(Ordering::SeqCst)
    }

    /// Shuts the server down gracefully, within the configured
    /// [`Timeouts::shutdown`].
    pub fn shutdown(&self) -> ShutdownReport {
        self.shutdown_timeout(self.inner.shared.config.timeouts.shutdown)
    }

    /// Shuts the server down gracefully within `timeout`, blocking until it
    /// is done:
    ///
    /// 1. closes the listeners and sends GOAWAY `UNAVAILABLE` on every
    ///    connection; requests read after that are answered `UNAVAILABLE`;
    /// 2. waits until every request already read is answered and the
    ///    clients have closed their connections, or `timeout` runs out;
    /// 3. then answers what is still queued `UNAVAILABLE`, cancels what is
    ///    running (answered `CANCELLED`), flushes and closes the
    ///    connections, and joins the loops and the workers.
    ///
    /// A second call, or a call from another clone, waits for the first
    /// and returns the same report.
    pub fn shutdown_timeout(&self, timeout: Duration) -> ShutdownReport {
        let inner = &self.inner;
        let deadline = Instant::now() + timeout;
        if inner.shared.shutting_down.swap(true, Ordering::SeqCst) {
            return self.wait_report();
        }
        let in_flight = inner.shared.requests.count();
        for l in &inner.loops {
            l.set_phase(DRAINING);
        }
        inner.shared.requests.wait_deadline(deadline);
        inner.conns.wait_deadline(deadline);
        for l in &inner.loops {
            l.set_phase(STOPPING);
        }
        let mut stuck = Vec::new();
        let threads = std::mem::take(&mut *inner.threads.lock().unwrap_or_else(|e| e.into_inner()));
        // A loop stops within its final flush; give it that and a margin.
        let loops_done = inner.loops_alive.wait_timeout(Duration::from_secs(3));
        for (name, t) in threads {
            if loops_done || t.is_finished() {
                let _ = t.join();
            } else {
                stuck.push(name);
            }
        }
        // Running handlers have just been cancelled: give them a moment to
        // notice even when the shutdown timeout is spent.
        let remaining = deadline
            .saturating_duration_since(Instant::now())
            .max(CANCEL_GRACE);
        let pool_report = inner.shared.pool.shutdown(remaining);
        stuck.extend(pool_report.stuck);
        let s = &inner.shared;
        let unavailable = s.shutdown_unavailable.load(Ordering::Relaxed);
        let cancelled = s.shutdown_cancelled.load(Ordering::Relaxed);
        let report = ShutdownReport {
            drained: in_flight.saturating_sub((unavailable + cancelled) as usize),
            unavailable,
            cancelled,
            stuck_threads: stuck,
        };
        if !report.stuck_threads.is_empty() {
            log::error!(
                "shutdown: threads did not stop in time: {:?}",
                report.stuck_threads
            );
        }
        *inner.report.lock().unwrap_or_else(|e| e.into_inner()) = Some(report.clone());
        inner.done.notify_all();
        report
    }

    fn wait_report(&self) -> ShutdownReport {
        let inner = &self.inner;
        let mut report = inner.report.lock().unwrap_or_else(|e| e.into_inner());
        loop {
            if let Some(r) = report.as_ref() {
                return r.clone();
            }
            report = inner.done.wait(report).unwrap_or_else(|e| e.into_inner());
        }
    }
}

impl fmt::Debug for ServerHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ServerHandle")
            .field("listeners", &self.inner.listeners)
            .field("stats", &self.stats())
            .finish()
    }
}

//! Per-request dispatch, independent of how the bytes are read and written.
//!
//! A driver (the mio event loop, or thread mode's connection threads)
//! decodes messages with its connection's protocol and hands each to
//! [`Dispatcher::on_message`], which routes the method, computes the
//! deadline, refuses duplicate ids, records the request in the
//! connection's in-flight table and queues a [`RequestTask`] on the worker
//! pool (or, when handlers run inline, hands it back to the driver's
//! thread to run). Everything that answers a request, the worker's result
//! (`super::task`), the deadline timer ([`DeadlineQueue`], in
//! `super::deadline`), a full queue, a refusal, appends its answer to the
//! connection's output buffer with this module's writers, encoded by the
//! connection's [`Protocol`](super::protocol::Protocol); the driver only
//! moves bytes.

use std::ops::Deref;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;

use super::config::ServerConfig;
use super::connection::{ConnShared, ConnState, InFlight};
use super::deadline::DeadlineQueue;
use super::protocol::{ConnDecoder, DecodeConfig, Message, Protocols, RequestHead};
use super::protocol::{Protocol, StreamSupport};
use super::service::{MethodEntry, MethodId, Registry};
use super::stream::{StreamIo, StreamKind, StreamShared};
use super::task::{spawn_stream, RequestTask};
use super::telemetry::{MethodMetrics, Telemetry};
use super::transport::{Handshakes, ListenerTransport};
use crate::codec::{Compression, Flags, RequestId};
use crate::context::{CancelReason, Context};
use crate::latch::Latch;
use crate::metadata::Metadata;
use crate::pool::{SubmitError, WorkerPool};
use crate::status::{Code, Status};
use crate::trace::TraceId;

/// How long requests wait to start before the workers count as behind
/// ([`Dispatcher::workers_behind`]): far longer than a worker with a CPU of
/// its own takes to start one, even on a loaded machine where it waits for
/// that CPU; only workers that are swamped leave requests waiting this long.
const BEHIND_QUEUED: Duration = Duration::from_millis(1);

/// How long the batch a reader is filling may hold requests before the
/// workers count as behind: they go out when the batch ends, which on one
/// CPU is once the whole poll is read, and a reader spends longer than this
/// on the reads of one poll.
const BEHIND_BATCHED: Duration = Duration::from_micros(20);

/// State every connection and worker of one server shares.
pub(crate) struct ServerShared {
    pub config: ServerConfig,
    /// The workers; none when handlers run inline on connection threads.
    pub pool: Option<WorkerPool<RequestTask>>,
    /// Request bytes held: partial frames in read buffers, and requests
    /// queued or running.
    pub buffered: AtomicUsize,
    pub connections: AtomicUsize,
    /// One count per request read and not yet answered; shutdown drains it.
    pub requests: Latch,
    /// Set when the shutdown sends its GOAWAYs: handlers finishing from
    /// then on count as drained.
    pub going_away: AtomicBool,
    next_conn_id: AtomicU64,
    /// Responses dropped because their request had already been answered
    /// (deadline) or cancelled, or the connection had closed.
    pub dropped_responses: AtomicU64,
    /// Requests in flight at the GOAWAY that their handlers finished.
    pub shutdown_drained: AtomicU64,
    /// Requests read after the GOAWAY, answered UNAVAILABLE unrun.
    pub shutdown_refused: AtomicU64,
    /// Bytes read from and written to connections.
    pub bytes_read: AtomicU64,
    pub bytes_written: AtomicU64,
    /// Connections refused at the connection limit.
    pub refused_connections: AtomicU64,
    /// Open connections by protocol, once their first byte chose it (an
    /// index of [`protocol::ALL`](super::protocol::ALL)).
    pub open_by_protocol: [AtomicUsize; 3],
    /// The Prometheus metrics of `GET /metrics`.
    pub telemetry: Telemetry,
    /// Requests still queued when the shutdown timeout ran out, answered
    /// UNAVAILABLE unrun.
    pub shutdown_abandoned: AtomicU64,
    /// Requests answered CANCELLED because the shutdown timeout ran out
    /// while they ran.
    pub shutdown_cancelled: AtomicU64,
    /// TLS handshakes: in progress, completed, failed.
    pub handshakes: Arc<Handshakes>,
    /// Streams open now, and how many may be ([`Limits::max_streams`](super::Limits::max_streams)).
    pub streams_open: AtomicUsize,
    pub max_streams: usize,
}

impl ServerShared {
    pub fn new(config: ServerConfig, pool: Option<WorkerPool<RequestTask>>) -> ServerShared {
        let max_streams = config.limits.max_streams.unwrap_or_else(|| {
            if config.inline_handlers {
                1
            } else {
                (config.workers / 2).max(1)
            }
        });
        ServerShared {
            streams_open: AtomicUsize::new(0),
            max_streams,
            config,
            pool,
            buffered: AtomicUsize::new(0),
            connections: AtomicUsize::new(0),
            requests: Latch::new(),
            going_away: AtomicBool::new(false),
            next_conn_id: AtomicU64::new(1),
            dropped_responses: AtomicU64::new(0),
            handshakes: Arc::default(),
            shutdown_drained: AtomicU64::new(0),
            shutdown_refused: AtomicU64::new(0),
            bytes_read: AtomicU64::new(0),
            bytes_written: AtomicU64::new(0),
            refused_connections: AtomicU64::new(0),
            open_by_protocol: Default::default(),
            telemetry: Telemetry::new(),
            shutdown_abandoned: AtomicU64::new(0),
            shutdown_cancelled: AtomicU64::new(0),
        }
    }

    pub fn next_conn_id(&self) -> u64 {
        self.next_conn_id.fetch_add(1, Ordering::Relaxed)
    }

    /// Brings a read buffer's count in the shared request-byte budget,
    /// `counted`, to the `held` bytes it now holds.
    pub fn recount_buffered(&self, counted: &mut usize, held: usize) {
        if held > *counted {
            self.buffered.fetch_add(held - *counted, Ordering::Relaxed);
        } else if held < *counted {
            self.buffered.fetch_sub(*counted - held, Ordering::Relaxed);
        }
        *counted = held;
    }

    /// True while the request-byte budget shared by all connections has
    /// room for more reading.
    pub fn has_read_budget(&self) -> bool {
        self.buffered.load(Ordering::Relaxed) < self.config.limits.max_buffered_request_bytes
    }
}

/// A request's hold on its connection, and on its bytes of the shared
/// request-byte budget, which it gives back when dropped. The budget is
/// reached through the connection, so a request costs no count on the
/// server's shared state.
pub(crate) struct Held {
    conn: Arc<ConnShared>,
    bytes: usize,
}

impl Held {
    pub fn new(conn: &Arc<ConnShared>, bytes: usize) -> Held {
        conn.server().buffered.fetch_add(bytes, Ordering::Relaxed);
        Held {
            conn: conn.clone(),
            bytes,
        }
    }
}

impl Deref for Held {
    type Target = Arc<ConnShared>;

    fn deref(&self) -> &Arc<ConnShared> {
        &self.conn
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        self.conn
            .server()
            .buffered
            .fetch_sub(self.bytes, Ordering::Relaxed);
    }
}

/// Appends the answer carrying `status` to request `id`, in the
/// connection's protocol.
pub(crate) fn write_status(
    st: &mut ConnState,
    id: RequestId,
    flags: Flags,
    status: &Status,
    trace: Option<&TraceId>,
    md: Metadata,
) {
    let ending = st.draining || st.closing;
    st.protocol
        .write_status(&mut st.out, id, flags, status, trace, md, ending);
}

/// Appends a successful answer, in the connection's protocol.
pub(super) fn write_ok(
    st: &mut ConnState,
    id: RequestId,
    flags: Flags,
    body: &[u8],
    ctx: &Context,
    md: Metadata,
) {
    let ending = st.draining || st.closing;
    if let Err(e) = st
        .protocol
        .write_ok(&mut st.out, id, flags, body, md, ending)
    {
        // Only metadata over 64 KiB gets here.
        log::error!("cannot encode the response to request {id}: {e}");
        let status = Status::internal(format!("cannot encode the response: {e}"));
        let trace = ctx.trace_id();
        write_status(st, id, flags, &status, trace.as_ref(), Metadata::new());
    }
}

/// Appends the answer carrying `status` to the request `e` of id `id`:
/// the end of its stream, if it is one (with `md` as trailing metadata).
pub(crate) fn write_end(
    st: &mut ConnState,
    id: RequestId,
    e: &InFlight,
    status: &Status,
    md: Metadata,
) {
    let trace = (status.code() != Code::OK)
        .then(|| e.ctx.trace_id())
        .flatten();
    match &e.stream {
        Some(stream) => {
            let ending = st.draining || st.closing;
            let sent_any = stream.sent_any();
            st.protocol.write_stream_end(
                &mut st.out,
                id,
                e.flags,
                status,
                trace.as_ref(),
                md,
                ending,
                sent_any,
            );
        }
        None => write_status(st, id, e.flags, status, trace.as_ref(), md),
    }
}

/// Routes the messages of the connections of one listener.
pub(crate) struct Dispatcher {
    pub server: Arc<ServerShared>,
    pub registry: Arc<Registry>,
    /// The wire protocols of this listener's connections.
    pub protocols: Protocols,
    /// What this listener's decoders are made with.
    pub decode: DecodeConfig,
    /// Plain TCP or TLS (below the protocols).
    pub transport: ListenerTransport,
    /// Each method's metrics, by [`MethodId`].
    pub metrics: Vec<MethodMetrics>,
}

impl Dispatcher {
    /// The dispatcher of a listener serving `registry`.
    pub fn new(
        server: Arc<ServerShared>,
        registry: Arc<Registry>,
        protocols: Protocols,
        decode: DecodeConfig,
        transport: ListenerTransport,
    ) -> Dispatcher {
        let metrics = registry
            .names()
            .map(|name| server.telemetry.method(name))
            .collect();
        Dispatcher {
            server,
            registry,
            protocols,
            decode,
            metrics,
            transport,
        }
    }

    /// The protocol a connection refused at accept is told why in, before
    /// its first byte is read; none on a TLS listener, whose clients
    /// expect a handshake rather than plaintext: those are only closed.
    pub fn refusal_protocol(&self) -> Option<&'static dyn super::protocol::Protocol> {
        self.transport
            .is_plaintext()
            .then(|| self.protocols.initial())
    }

    /// Counts the answer to a request for `method`, read at `read_at`,
    /// sent in `st`'s protocol.
    pub(crate) fn record(&self, st: &ConnState, method: MethodId, code: Code, read_at: Instant) {
        self.record_in(st.protocol.index(), method, code, read_at.elapsed());
    }

    /// [`Dispatcher::record`] for a protocol given by its index, of a
    /// request that `took` from its read to its answer.
    pub(crate) fn record_in(&self, protocol: usize, method: MethodId, code: Code, took: Duration) {
        if let Some(m) = self.metrics.get(method.index()) {
            m.record(protocol, code, took);
        }
    }

    /// The decoder of a new connection `conn` of this listener.
    pub fn decoder(&self, conn: &ConnShared) -> ConnDecoder {
        ConnDecoder::new(self.protocols, &self.decode, conn)
    }

    /// Handles one message of `conn`, read at `read_at`. Answers that
    /// need no handler (errors, PONG) are appended to the connection's
    /// output; the driver writes it after the batch. A server without
    /// workers runs the handler here, on the caller's thread.
    pub fn on_message(
        &self,
        conn: &Arc<ConnShared>,
        msg: Message<'_>,
        read_at: Instant,
        timers: &mut DeadlineQueue,
    ) {
        if let Some(task) = self.on_message_deferred(conn, msg, read_at, timers, false) {
            task.run_inline();
        }
    }

    /// Whether every worker is busy or requests wait for one: then an
    /// event loop runs a lone quick request itself.
    pub fn workers_saturated(&self) -> bool {
        self.server
            .pool
            .as_ref()
            .is_some_and(WorkerPool::is_saturated)
    }

    /// Whether the workers are behind at `now` ([`WorkerPool::is_behind`]:
    /// requests have waited [`BEHIND_QUEUED`] to start, or the reader's own
    /// batch has held them [`BEHIND_BATCHED`], or on one CPU every worker
    /// is busy). Then a reader runs the quick requests of its read itself
    /// (see `task::run_kept`). Where workers get CPUs of their own, they
    /// start what is queued at once and the reader's requests go to them,
    /// to run beside its reading; where they share the reader's CPU, what
    /// it queued waits until it steps aside.
    pub fn workers_behind(&self, now: Instant) -> bool {
        self.server
            .pool
            .as_ref()
            .is_some_and(|pool| pool.is_behind(now, BEHIND_QUEUED, BEHIND_BATCHED))
    }

    /// As [`Dispatcher::on_message`], but a request that a server without
    /// workers runs inline is handed back, for the driver to run once it
    /// has let go of `timers`.
    ///
    /// With `keep_quick`, a REQUEST of a [quick](super::pace) method is
    /// handed back too, counted in flight with its deadline set, for the
    /// driver to run itself or [`Dispatcher::submit`].
    pub fn on_message_deferred(
        &self,
        conn: &Arc<ConnShared>,
        msg: Message<'_>,
        read_at: Instant,
        timers: &mut DeadlineQueue,
        keep_quick: bool,
    ) -> Option<RequestTask> {
        match msg {
            Message::Request { head, body } => {
                return self.start(conn, head, body, read_at, timers, keep_quick)
            }
            Message::Cancel(id) => cancel(conn, id),
            // The connection's decoder routes these itself, so that a
            // broken rule fails the decode; one handed here is routed
            // the same way, its error logged.
            Message::Stream(frame) => {
                if let Err(e) = super::stream::deliver(conn, frame) {
                    log::debug!("conn {}: {e}", conn.id);
                }
            }
            Message::Ping(token) => {
                let mut st = conn.lock();
                if !st.closed {
                    let protocol = st.protocol;
                    protocol.write_pong(&mut st.out, token);
                }
            }
            Message::Reply(answer) => {
                let mut st = conn.lock();
                if !st.closed {
                    st.out.extend_from_slice(&answer);
                }
            }
            Message::Refuse {
                id,
                flags,
                oneway,
                status,
                trace,
            } => refuse(conn, id, flags, oneway, status, trace.as_ref()),
        }
        None
    }

    /// Routes a request, computes its deadline, records it in flight and
    /// queues it (or hands it back to run inline).
    fn start(
        &self,
        conn: &Arc<ConnShared>,
        head: RequestHead<'_>,
        body: Bytes,
        read_at: Instant,
        timers: &mut DeadlineQueue,
        keep_quick: bool,
    ) -> Option<RequestTask> {
        let RequestHead {
            id, flags, oneway, ..
        } = head;
        let refuse = |status, trace| refuse(conn, id, flags, oneway, status, trace);
        // check_trace_id in decode() bounds the length, so a given id fits.
        let given_trace = head.trace_id.and_then(TraceId::new);
        // Refusals name a trace id in their answer and the log: make one.
        let trace_id = || given_trace.unwrap_or_else(TraceId::generate);
        if let Err(v) = flags.compression() {
            refuse(
                Status::unimplemented(format!("compression {v} is reserved")),
                Some(&trace_id()),
            );
            return None;
        }
        if let Err(v) = flags.encoding() {
            refuse(
                Status::unimplemented(format!("body encoding {v} is reserved")),
                Some(&trace_id()),
            );
            return None;
        }
        let (method_id, method) = match self.registry.lookup_after(head.method, &conn.last_method) {
            Ok(m) => m,
            Err(status) => {
                refuse(status, Some(&trace_id()));
                return None;
            }
        };
        let flags = if head.any_encoding {
            Flags::new(Compression::None, method.endpoint.encoding())
        } else {
            flags
        };
        // A streaming method, or a request that says it opens a stream:
        // what the connection's protocol makes of it.
        let mut stream_open = None;
        if head.stream || method.endpoint.stream_kind().is_some() {
            let protocol = conn.lock().protocol;
            match open_stream_as(protocol, id, method, head.stream, &body) {
                Ok(open) => stream_open = Some(open),
                Err(status) => {
                    refuse(status, Some(&trace_id()));
                    return None;
                }
            }
        }
        let timeout = [
            (head.timeout_ms > 0).then(|| Duration::from_millis(u64::from(head.timeout_ms))),
            method.timeout,
        ]
        .into_iter()
        .flatten()
        .min();
        let deadline = timeout.and_then(|t| read_at.checked_add(t));
        let ctx = Context::for_request(
            method.full_name,
            deadline,
            given_trace,
            head.caller,
            conn.peer_info(),
            head.md,
        );

        let mut stream: Option<Arc<StreamShared>> = None;
        let seq = {
            let mut st = conn.lock();
            if st.closed {
                return None;
            }
            if st.draining {
                let message = st.protocol.shutting_down_message();
                drop(st);
                if !oneway {
                    self.server.shutdown_refused.fetch_add(1, Ordering::Relaxed);
                }
                refuse(Status::unavailable(message), ctx.trace_id().as_ref());
                return None;
            }
            if st.active() >= self.server.config.limits.max_in_flight_per_connection {
                // Only while streams are open does the reader read past
                // the limit (their frames must flow).
                drop(st);
                refuse(
                    Status::resource_exhausted(format!(
                        "too many requests in flight on this connection (limit {})",
                        self.server.config.limits.max_in_flight_per_connection
                    )),
                    ctx.trace_id().as_ref(),
                );
                return None;
            }
            let seq = if oneway {
                st.oneway_running += 1;
                0
            } else {
                // A refused request uses up a number: they need only be
                // unique.
                let seq = st.next_seq();
                if let Some(open) = &stream_open {
                    let flow_control = open.preload.is_none();
                    match StreamShared::open(&self.server, seq, open.single, flow_control) {
                        Some(shared) => stream = Some(shared),
                        None => {
                            drop(st);
                            refuse(
                                Status::resource_exhausted(format!(
                                    "too many streams open on the server (limit {}); \
                                     the stream was not run",
                                    self.server.max_streams
                                )),
                                ctx.trace_id().as_ref(),
                            );
                            return None;
                        }
                    }
                }
                let added = st.in_flight.insert_new(id, || InFlight {
                    seq,
                    method: method_id,
                    ctx: ctx.clone(),
                    read_at,
                    timeout,
                    flags,
                    stream: stream.clone(),
                });
                if !added {
                    drop(st);
                    refuse(
                        Status::invalid_argument(format!("request id {id} is already in flight")),
                        ctx.trace_id().as_ref(),
                    );
                    return None;
                }
                seq
            };
            // The reader's next look at the limits, while the lock is held
            // anyway (see `ConnShared::room_after`).
            let room = !st.is_full(&self.server.config.limits);
            conn.room_after.store(room, Ordering::Relaxed);
            seq
        };
        let io = stream.map(|shared| {
            if let Some(body) = stream_open.and_then(|o| o.preload) {
                shared.preload(flags, body);
            }
            // Boxed: every task moves through the queue, and a unary one
            // should not carry a stream's fields.
            Box::new(StreamIo {
                shared,
                conn: conn.clone(),
                id,
                flags,
                max_body: self.decode.frame.max_body,
                max_depth: self.decode.max_body_depth,
            })
        });
        let is_stream = io.is_some();
        let body = if is_stream { Bytes::new() } else { body };
        let task = RequestTask {
            conn: Held::new(conn, head.overhead + body.len()),
            method: method_id,
            ctx,
            id,
            seq,
            flags,
            body,
            stream: io,
            streaming: is_stream,
            oneway_count: oneway.then(|| self.server.requests.guard()),
        };
        if let (Some(at), false) = (deadline, oneway) {
            timers.push(at, conn, id, seq);
        }
        if is_stream && self.server.pool.is_none() {
            // A stream waits on its client for its whole life: never on
            // the thread that reads the connection.
            spawn_stream(task);
            return None;
        }
        let kept = keep_quick && !oneway && !is_stream && method.pace.is_quick();
        if self.server.pool.is_none() || kept {
            // The driver runs it, and the timer can end it meanwhile.
            return Some(task);
        }
        self.submit(task);
        None
    }

    /// Queues a request [`Dispatcher::on_message_deferred`] handed back on
    /// the workers; one that cannot be queued is answered at once.
    pub fn submit(&self, task: RequestTask) {
        let Some(pool) = &self.server.pool else {
            task.run_inline();
            return;
        };
        if let Err(e) = pool.try_submit(task) {
            let status = match &e {
                SubmitError::Full(_) => Status::resource_exhausted(format!(
                    "work queue full ({} requests waiting)",
                    self.server.config.queue_capacity
                )),
                SubmitError::Closed(task) => {
                    if !task.is_oneway() {
                        self.server.shutdown_refused.fetch_add(1, Ordering::Relaxed);
                    }
                    Status::unavailable("the server is shutting down; the request was not run")
                }
            };
            let task = e.into_inner();
            log::debug!(
                "conn {}: request {} not queued: {status}",
                task.conn.id,
                task.id
            );
            task.finish(Err(status), false);
        }
    }
}

/// How a stream opens, once its protocol and method agree it may.
struct StreamOpen {
    /// The client sends one message (a server stream).
    single: bool,
    /// The request message, carried in the request's body by a protocol
    /// without stream frames.
    preload: Option<Bytes>,
}

/// Whether a request for `method`, which says it opens a stream or not
/// (`stream`), opens one over `protocol`; the status that refuses it if
/// they disagree.
fn open_stream_as(
    protocol: &dyn Protocol,
    id: RequestId,
    method: &MethodEntry,
    stream: bool,
    body: &Bytes,
) -> Result<StreamOpen, Status> {
    let name = method.full_name;
    let Some(kind) = method.endpoint.stream_kind() else {
        return Err(Status::invalid_argument(format!(
            "method {name} is not a streaming method: `stream: true` is refused"
        )));
    };
    let single = kind == StreamKind::Server;
    match protocol.streams() {
        StreamSupport::Frames if !stream => Err(Status::invalid_argument(format!(
            "method {name} is a streaming method: open it with `stream: true`"
        ))),
        StreamSupport::Frames if !body.is_empty() => Err(Status::invalid_argument(format!(
            "the REQUEST that opens a stream has an empty body; {name}'s has {} bytes",
            body.len()
        ))),
        StreamSupport::Frames => Ok(StreamOpen {
            single,
            preload: None,
        }),
        StreamSupport::ServerFromBody if single => match protocol.refuses_stream(id) {
            Some(why) => Err(Status::unimplemented(format!("{name}: {why}"))),
            None => Ok(StreamOpen {
                single,
                preload: Some(body.clone()),
            }),
        },
        StreamSupport::ServerFromBody => Err(Status::unimplemented(format!(
            "{name} is a {} streaming method, which {} cannot carry; only server streams",
            if kind == StreamKind::Client {
                "client"
            } else {
                "bidirectional"
            },
            protocol.name()
        ))),
        StreamSupport::None => Err(Status::unimplemented(format!(
            "{name} is a streaming method, and {} has no streams",
            protocol.name()
        ))),
    }
}

/// Answers a request that is refused before it is in flight (a ONEWAY is
/// not answered).
fn refuse(
    conn: &ConnShared,
    id: RequestId,
    flags: Flags,
    oneway: bool,
    status: Status,
    trace: Option<&TraceId>,
) {
    log::debug!("conn {}: request {id} refused: {status}", conn.id);
    if oneway {
        return;
    }
    let mut st = conn.lock();
    conn.server()
        .telemetry
        .refused(st.protocol.index(), status.code());
    if !st.closed {
        write_status(&mut st, id, flags, &status, trace, Metadata::new());
    }
}

/// CANCEL: the request leaves the in-flight table (so it is never
/// answered) and its context is cancelled; a queued task then does not run.
fn cancel(conn: &ConnShared, id: RequestId) {
    let entry = {
        let mut st = conn.lock();
        let entry = st.in_flight.remove(&id);
        if let Some(e) = &entry {
            if !e.ctx.forbid_start() {
                if let Some(stream) = &e.stream {
                    stream.release_slot();
                }
            }
        }
        entry
    };
    match entry {
        Some(e) => {
            if e.stream.is_some() {
                // The client learns its id is free from this answer.
                let status = Status::cancelled("the stream was cancelled by the client");
                let mut st = conn.lock();
                if !st.closed {
                    conn.dispatcher
                        .record(&st, e.method, status.code(), e.read_at);
                    write_end(&mut st, id, &e, &status, Metadata::new());
                }
            }
            e.ctx.cancel(CancelReason::Cancelled)
        }
        None => log::debug!("conn {}: CANCEL for request {id}, not in flight", conn.id),
    }
}

/// Ends what is still in flight on `conn` when the shutdown timeout ran
/// out: requests a worker is running are answered CANCELLED and their
/// contexts cancelled; requests still queued are answered UNAVAILABLE (they
/// did not run, so a retry is safe).
pub(crate) fn end_for_shutdown(conn: &ConnShared, server: &ServerShared) {
    let ended = {
        let mut st = conn.lock();
        if st.closed {
            return;
        }
        let ended = st.in_flight.take_all();
        for (id, e) in &ended {
            let status = if e.ctx.forbid_start() {
                server.shutdown_cancelled.fetch_add(1, Ordering::Relaxed);
                CancelReason::Shutdown.to_status()
            } else {
                server.shutdown_abandoned.fetch_add(1, Ordering::Relaxed);
                Status::unavailable("the server is shutting down; the request was not run")
            };
            conn.dispatcher
                .record(&st, e.method, status.code(), e.read_at);
            write_end(&mut st, *id, e, &status, Metadata::new());
        }
        ended
    };
    for (_, e) in ended {
        e.ctx.cancel(CancelReason::Shutdown);
    }
}

/// Writes a connection's output from this thread (the driver takes over if
/// the socket is full), and wakes the driver if it must act.
pub(crate) fn flush(conn: &Arc<ConnShared>) {
    if conn.flush_for_driver() {
        conn.wake();
    }
}

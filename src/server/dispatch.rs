//! Per-request dispatch, independent of how the bytes are read and written.
//!
//! A driver (the mio event loop, or thread mode's connection threads)
//! decodes messages with its connection's protocol and hands each to
//! [`Dispatcher::on_message`], which routes the method, computes the
//! deadline, refuses duplicate ids, records the request in the
//! connection's in-flight table and queues a [`RequestTask`] on the worker
//! pool (or, when handlers run inline, hands it back to the driver's
//! thread to run). Everything that answers a request, the worker's result,
//! the deadline timer ([`DeadlineQueue`]), a full queue, a refusal,
//! appends its answer to the connection's output buffer here, encoded by
//! the connection's [`Protocol`](super::protocol::Protocol); the driver
//! only moves bytes.

use std::cell::RefCell;
use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::ops::Deref;
use std::panic::{self, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use bytes::Bytes;

use super::buffer_pool;
use super::builder::ServerConfig;
use super::connection::{ConnShared, ConnState, InFlight};
use super::pace::LONG;
use super::protocol::{ConnDecoder, DecodeConfig, Message, Protocols, RequestHead};
use super::protocol::{Protocol, StreamSupport};
use super::service::{MethodEntry, MethodId, Registry};
use super::stream::{StreamIo, StreamKind, StreamShared};
use super::telemetry::{MethodMetrics, Telemetry};
use super::transport::{Handshakes, ListenerTransport};
use crate::codec::{compress, Compression, Flags, RequestId};
use crate::context::{CancelReason, Context};
use crate::filter::{Next, Reply, Request};
use crate::latch::{Latch, LatchGuard};
use crate::metadata::Metadata;
use crate::pool::{panic_message, SubmitError, Task, WorkerPool};
use crate::status::{Code, Status};
use crate::trace::TraceId;

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
fn write_ok(
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
        self.record_in(st.protocol.index(), method, code, read_at);
    }

    /// [`Dispatcher::record`] for a protocol given by its index.
    pub(crate) fn record_in(
        &self,
        protocol: usize,
        method: MethodId,
        code: Code,
        read_at: Instant,
    ) {
        if let Some(m) = self.metrics.get(method.index()) {
            m.record(protocol, code, read_at.elapsed());
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
            StreamIo {
                shared,
                conn: conn.clone(),
                id,
                flags,
                max_body: self.decode.frame.max_body,
                max_depth: self.decode.max_body_depth,
            }
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

/// Runs a stream's task on a thread of its own (a server without
/// workers); one that cannot start is answered at once.
fn spawn_stream(task: RequestTask) {
    let slot = std::sync::Arc::new(std::sync::Mutex::new(Some(task)));
    let taken = slot.clone();
    let name = format!("{}-stream", taken_name(&slot));
    let spawned = std::thread::Builder::new().name(name).spawn(move || {
        let task = taken.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let Some(task) = task {
            task.run_inline();
        }
    });
    if let Err(e) = spawned {
        let task = slot.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let Some(task) = task {
            log::error!("cannot start a thread for a stream: {e}");
            task.finish(
                Err(Status::resource_exhausted(format!(
                    "cannot start a thread for the stream: {e}"
                ))),
                false,
            );
        }
    }
}

fn taken_name(slot: &std::sync::Mutex<Option<RequestTask>>) -> String {
    slot.lock()
        .unwrap_or_else(|e| e.into_inner())
        .as_ref()
        .map_or_else(String::new, |t| t.conn.server().config.thread_name.clone())
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

/// Answers request `id` DEADLINE_EXCEEDED if it is still in flight as
/// `seq`, and cancels its context: whatever its handler returns later is
/// dropped. Returns true if a response was appended.
pub(crate) fn expire(conn: &ConnShared, id: RequestId, seq: u64, now: Instant) -> bool {
    let entry = {
        let mut st = conn.lock();
        match st.in_flight.get(&id) {
            Some(e) if e.seq == seq && !st.closed => {}
            _ => return false,
        }
        let Some(e) = st.in_flight.remove(&id) else {
            return false;
        };
        let started = e.ctx.forbid_start();
        let status = deadline_status(&e, started, now);
        conn.dispatcher
            .record(&st, e.method, status.code(), e.read_at);
        write_end(&mut st, id, &e, &status, Metadata::new());
        e
    };
    entry.ctx.cancel(CancelReason::DeadlineExceeded);
    true
}

/// The DEADLINE_EXCEEDED answer to `e`, whose handler `started` or not.
fn deadline_status(e: &InFlight, started: bool, now: Instant) -> Status {
    let timeout = e.timeout.unwrap_or_default().as_millis();
    let waited = now.saturating_duration_since(e.read_at).as_millis();
    if started {
        Status::deadline_exceeded(format!(
            "deadline exceeded: the handler did not finish within {timeout} ms"
        ))
    } else {
        Status::deadline_exceeded(format!(
            "deadline exceeded after waiting {waited} ms in the queue (timeout {timeout} ms); not run"
        ))
    }
}

fn recycle(reply: Reply) {
    if let Some(buf) = reply.ok().and_then(|r| r.into_vec()) {
        buffer_pool::give(buf);
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
    conn.flush(false);
    let wake = conn.lock().should_wake();
    if wake {
        conn.wake();
    }
}

/// Connections a worker answered on and has not written yet: it writes
/// them when it runs out of work, in one write each for all the answers
/// it appended meanwhile, instead of waking their drivers to do it.
struct Unflushed {
    conns: Vec<Arc<ConnShared>>,
    /// Answers appended since the last write.
    answers: usize,
}

/// A worker under steady load writes after this many answers or
/// connections at the latest, so no answer waits for the queue to empty.
const MAX_UNFLUSHED_ANSWERS: usize = 64;
const MAX_UNFLUSHED_CONNS: usize = 16;

thread_local! {
    static UNFLUSHED: RefCell<Unflushed> = const {
        RefCell::new(Unflushed {
            conns: Vec::new(),
            answers: 0,
        })
    };
}

/// Notes that `conn` has an answer to write; writes everything noted once
/// the limits are reached.
fn flush_later(conn: &Arc<ConnShared>) {
    let full = UNFLUSHED.with(|u| {
        let mut u = u.borrow_mut();
        if !u.conns.iter().any(|c| Arc::ptr_eq(c, conn)) {
            u.conns.push(conn.clone());
        }
        u.answers += 1;
        u.answers >= MAX_UNFLUSHED_ANSWERS || u.conns.len() >= MAX_UNFLUSHED_CONNS
    });
    if full {
        flush_unflushed();
    }
}

/// Writes every connection [`flush_later`] noted on this thread.
pub(crate) fn flush_unflushed() {
    // `flush` never notes a connection, so the list can stay borrowed.
    UNFLUSHED.with(|u| {
        let mut u = u.borrow_mut();
        u.answers = 0;
        for conn in u.conns.drain(..) {
            flush(&conn);
        }
    });
}

/// One request on its way through the worker pool.
pub(crate) struct RequestTask {
    /// The connection, and the request's bytes in the shared budget.
    conn: Held,
    method: MethodId,
    ctx: Context,
    id: RequestId,
    /// 0 for a ONEWAY, which is not in the in-flight table.
    seq: u64,
    flags: Flags,
    body: Bytes,
    /// The stream the request opened, for a streaming method.
    stream: Option<StreamIo>,
    /// The request opened a stream (which then runs on a worker or a
    /// thread of its own, never on the thread that reads).
    streaming: bool,
    /// A ONEWAY's count on the drain latch (a REQUEST is counted while in
    /// its connection's in-flight table).
    oneway_count: Option<LatchGuard>,
}

impl RequestTask {
    fn method(&self) -> &MethodEntry {
        self.conn.dispatcher.registry.method(self.method)
    }

    fn is_oneway(&self) -> bool {
        self.oneway_count.is_some()
    }

    /// Marks the request started; false if it is no longer wanted
    /// (cancelled, answered by the deadline timer, or the connection closed).
    fn claim(&self) -> bool {
        if !self.is_oneway() {
            // Whatever takes the request out of the in-flight table
            // forbids the start first, under the connection's lock.
            return self.ctx.claim_start();
        }
        !self.conn.lock().closed && !self.ctx.is_cancelled()
    }

    /// Delivers the outcome: appends the RESPONSE if the request is still
    /// in flight, and wakes the driver if it needs to know.
    /// `ran`: the reply is the handler's (not an expiry or refusal), so
    /// dropping it counts in [`ServerShared::dropped_responses`].
    fn finish(self, reply: Reply, ran: bool) {
        if self.is_oneway() {
            let wake = {
                let mut st = self.conn.lock();
                st.oneway_running -= 1;
                if st.active() == 0 {
                    // Nothing is written for it: the idle period starts now.
                    st.answered_at = Instant::now();
                }
                st.should_wake()
            };
            if wake {
                self.conn.wake();
            }
            recycle(reply);
            return;
        }
        let md = self.ctx.take_response_metadata();
        // Compressing under the lock would hold up the other workers
        // answering on this connection.
        let compression = self.flags.compression().unwrap_or_default();
        let packed = match (&reply, compression) {
            (Ok(resp), c) if c != Compression::None => {
                let mut packed = buffer_pool::take();
                compress(c, resp.body(), &mut packed);
                Some(packed)
            }
            _ => None,
        };
        let mut st = self.conn.lock();
        let live = !st.closed && matches!(st.in_flight.get(&self.id), Some(e) if e.seq == self.seq);
        if !live {
            drop(st);
            if let Some(p) = packed {
                buffer_pool::give(p);
            }
            self.drop_result(reply, ran);
            return;
        }
        let entry = st.in_flight.remove(&self.id);
        // A result that comes at or after the deadline is dropped even if
        // the timer has not fired yet: the answer is DEADLINE_EXCEEDED.
        let late = match (&entry, self.ctx.deadline()) {
            (Some(e), Some(d)) => {
                let now = Instant::now();
                (now >= d).then(|| deadline_status(e, ran, now))
            }
            _ => None,
        };
        let server = self.conn.server();
        if late.is_some() && ran {
            server.dropped_responses.fetch_add(1, Ordering::Relaxed);
        } else if late.is_none() && ran && server.going_away.load(Ordering::Relaxed) {
            server.shutdown_drained.fetch_add(1, Ordering::Relaxed);
        }
        // Counted once the lock is released: the histogram's atomics are
        // shared by every worker, and nobody waits on the lock for them.
        let counted = entry.as_ref().map(|e| {
            let code = match (&reply, &late) {
                (_, Some(status)) | (Err(status), None) => status.code(),
                (Ok(_), None) => Code::OK,
            };
            (st.protocol.index(), code, e.read_at)
        });
        // Only error answers carry the trace id: a successful one never
        // makes it.
        let trace = || self.ctx.trace_id();
        if let Some(e) = entry.as_ref().filter(|e| e.stream.is_some()) {
            // A stream's messages went out already: its RESPONSE carries
            // only how it ended.
            let (status, md) = match (&reply, &late) {
                (_, Some(status)) => (status.clone(), Metadata::new()),
                (Ok(_), None) => (Status::new(Code::OK, ""), md),
                (Err(status), None) => (status.clone(), md),
            };
            write_end(&mut st, self.id, e, &status, md);
        } else {
            match (&reply, &late) {
                (_, Some(status)) => write_status(
                    &mut st,
                    self.id,
                    self.flags,
                    status,
                    trace().as_ref(),
                    Metadata::new(),
                ),
                (Ok(resp), None) => {
                    let body = packed.as_deref().unwrap_or(resp.body());
                    write_ok(&mut st, self.id, self.flags, body, &self.ctx, md);
                }
                (Err(status), None) => {
                    write_status(&mut st, self.id, self.flags, status, trace().as_ref(), md)
                }
            }
        }
        // The drain count went with the entry, but whoever waits for the
        // drain needs this lock to touch the output: the answer is in it.
        drop(st);
        drop(entry);
        if let Some((protocol, code, read_at)) = counted {
            self.conn
                .dispatcher
                .record_in(protocol, self.method, code, read_at);
        }
        if let Some(p) = packed {
            buffer_pool::give(p);
        }
        recycle(reply);
        let workers_write = self.conn.workers_write();
        if workers_write && server.pool.is_none() && !self.streaming {
            // An event loop runs handlers inline: it writes after the
            // requests of the read.
        } else if !workers_write {
            // The socket is the driver's alone: wake it, once for all the
            // answers appended until it looks.
            let wake = {
                let mut st = self.conn.lock();
                !std::mem::replace(&mut st.notified, true) && !st.closed
            };
            if wake {
                self.conn.wake();
            }
        } else if server.pool.as_ref().map_or(0, WorkerPool::queued) > 0 {
            // More requests are waiting: get on with them, and write this
            // answer with the next ones (see `Task::idle`).
            flush_later(&self.conn);
        } else {
            // Nothing else to do: write now, saving the driver a wake-up.
            flush(&self.conn);
            flush_unflushed();
        }
        self.ctx.recycle();
    }

    fn drop_result(&self, reply: Reply, ran: bool) {
        if ran {
            self.conn
                .server()
                .dropped_responses
                .fetch_add(1, Ordering::Relaxed);
        }
        recycle(reply);
        // The driver may be waiting for a slot to free up.
        let wake = self.conn.lock().should_wake();
        if wake {
            self.conn.wake();
        }
    }

    fn call(&mut self) -> Reply {
        let req = match self.stream.take() {
            Some(io) => Request::opening(self.flags, io),
            None => Request::new(self.flags, std::mem::take(&mut self.body), self.is_oneway()),
        };
        let method = self.method();
        let next = Next::new(&method.filters, &*method.endpoint);
        match panic::catch_unwind(AssertUnwindSafe(|| next.run(&self.ctx, req))) {
            Ok(reply) => reply,
            Err(payload) => {
                let msg = panic_message(&*payload);
                log::error!(
                    "handler for {} panicked (trace id {}): {msg}",
                    method.full_name,
                    self.ctx.trace_id().unwrap_or_else(TraceId::generate)
                );
                Err(Status::internal(format!("the handler panicked: {msg}")))
            }
        }
    }
}

impl RequestTask {
    /// Runs the request on this thread (handlers inline on a connection
    /// thread), with the checks the pool makes: a request whose deadline
    /// has passed is expired instead, and a panic is contained.
    pub fn run_inline(self) {
        let now = Instant::now();
        if self.ctx.deadline().is_some_and(|d| now >= d) {
            self.expire(Duration::ZERO);
            return;
        }
        if let Err(payload) = panic::catch_unwind(AssertUnwindSafe(|| self.run())) {
            log::error!(
                "request task panicked on {}: {}",
                std::thread::current().name().unwrap_or("connection thread"),
                panic_message(&*payload)
            );
        }
    }
}

impl Task for RequestTask {
    fn run(self) {
        self.run_sampled(false);
    }

    fn deadline(&self) -> Option<Instant> {
        self.ctx.deadline()
    }

    fn is_quick(&self) -> bool {
        self.stream.is_none() && self.method().pace.is_quick()
    }

    fn expire(self, queued_for: Duration) {
        let status = Status::deadline_exceeded(format!(
            "deadline exceeded after waiting {} ms in the queue; not run",
            queued_for.as_millis()
        ));
        self.ctx.cancel(CancelReason::DeadlineExceeded);
        self.finish(Err(status), false);
    }

    fn abandon(self) {
        let status = Status::unavailable("the server is shutting down; the request was not run");
        self.finish(Err(status), false);
    }

    fn idle() {
        flush_unflushed();
    }
}

impl RequestTask {
    /// Runs the request on a connection's own thread, which took it
    /// because its method is quick: timed every time, so that a call that
    /// turns out long ([`LONG`]) stops the next ones from being taken, and
    /// written from this thread before it returns.
    pub fn run_on_connection_thread(self) {
        let now = Instant::now();
        if self.ctx.deadline().is_some_and(|d| now >= d) {
            self.expire(Duration::ZERO);
        } else if let Err(payload) =
            panic::catch_unwind(AssertUnwindSafe(|| self.run_sampled(true)))
        {
            log::error!(
                "request task panicked on {}: {}",
                std::thread::current().name().unwrap_or("connection thread"),
                panic_message(&*payload)
            );
        }
        flush_unflushed();
    }

    /// Runs the request unless it is no longer wanted, timing the handler
    /// if `always_time` or it is this call's turn to be sampled.
    fn run_sampled(mut self, always_time: bool) {
        if !self.claim() {
            if self.is_oneway() {
                self.finish(Err(Status::cancelled("not run")), false);
            } else {
                self.drop_result(Err(Status::cancelled("not run")), false);
            }
            return;
        }
        // Answers held back for the next write must not wait for a
        // handler that may take long.
        if !self.is_quick() {
            flush_unflushed();
        }
        let method = self.method();
        let sampled = method.pace.sample();
        let started = (always_time || sampled).then(Instant::now);
        let reply = self.call();
        if let Some(at) = started {
            let took = at.elapsed();
            // An unsampled call still counts when it was long.
            if sampled || took >= LONG {
                self.method().pace.record(took);
            }
        }
        self.finish(reply, true);
    }
}

struct Timer {
    at: Instant,
    seq: u64,
    id: RequestId,
    conn: Weak<ConnShared>,
}

impl PartialEq for Timer {
    fn eq(&self, other: &Self) -> bool {
        (self.at, self.seq) == (other.at, other.seq)
    }
}
impl Eq for Timer {}
impl PartialOrd for Timer {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Timer {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        (self.at, self.seq).cmp(&(other.at, other.seq))
    }
}

/// Request deadlines of the connections one driver thread serves.
///
/// Entries are not removed when their request finishes; instead the heap
/// is swept of finished requests whenever it has doubled since the last
/// sweep, which keeps it proportional to the requests in flight.
pub(crate) struct DeadlineQueue {
    heap: BinaryHeap<Reverse<Timer>>,
    sweep_at: usize,
}

const MIN_SWEEP: usize = 1024;

impl DeadlineQueue {
    pub fn new() -> DeadlineQueue {
        DeadlineQueue {
            heap: BinaryHeap::new(),
            sweep_at: MIN_SWEEP,
        }
    }

    pub fn push(&mut self, at: Instant, conn: &Arc<ConnShared>, id: RequestId, seq: u64) {
        if self.heap.len() >= self.sweep_at {
            self.sweep();
        }
        self.heap.push(Reverse(Timer {
            at,
            seq,
            id,
            conn: Arc::downgrade(conn),
        }));
    }

    fn sweep(&mut self) {
        let mut timers = std::mem::take(&mut self.heap).into_vec();
        timers.retain(|Reverse(t)| {
            t.conn.upgrade().is_some_and(|c| {
                let st = c.lock();
                !st.closed && st.in_flight.get(&t.id).is_some_and(|e| e.seq == t.seq)
            })
        });
        self.heap = BinaryHeap::from(timers);
        self.sweep_at = (self.heap.len() * 2).max(MIN_SWEEP);
    }

    /// The earliest deadline, if any.
    pub fn next(&self) -> Option<Instant> {
        self.heap.peek().map(|Reverse(t)| t.at)
    }

    /// Answers DEADLINE_EXCEEDED every request whose deadline is at or
    /// before `now`, calling `touched` for each connection that got a
    /// response.
    pub fn expire_due(&mut self, now: Instant, mut touched: impl FnMut(&Arc<ConnShared>)) {
        while let Some(Reverse(t)) = self.heap.peek() {
            if t.at > now {
                break;
            }
            let Some(Reverse(t)) = self.heap.pop() else {
                break;
            };
            if let Some(conn) = t.conn.upgrade() {
                if expire(&conn, t.id, t.seq, now) {
                    touched(&conn);
                }
            }
        }
    }
}

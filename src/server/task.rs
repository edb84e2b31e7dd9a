//! A request on its way through the worker pool ([`RequestTask`]): run
//! its filters and handler, then deliver the answer to its connection,
//! written at once, later with the worker's other answers, or by the
//! connection's driver.

use std::cell::{Cell, RefCell};
use std::panic::{self, AssertUnwindSafe};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;

use super::buffer_pool;
use super::connection::ConnShared;
use super::deadline::deadline_status;
use super::dispatch::{flush, write_end, write_ok, write_status, Held};
use super::pace::LONG;
use super::service::{MethodEntry, MethodId};
use super::stream::StreamIo;
use crate::codec::{compress, Compression, Flags, RequestId};
use crate::context::{CancelReason, Context};
use crate::filter::{Next, Reply, Request};
use crate::latch::LatchGuard;
use crate::metadata::Metadata;
use crate::pool::{panic_message, Task, WorkerPool};
use crate::status::{Code, Status};
use crate::trace::TraceId;

/// Runs a stream's task on a thread of its own (a server without
/// workers); one that cannot start is answered at once.
pub(super) fn spawn_stream(task: RequestTask) {
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

fn recycle(reply: Reply) {
    if let Some(buf) = reply.ok().and_then(|r| r.into_vec()) {
        buffer_pool::give(buf);
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

/// How long the requests a reader kept may run on its thread, together,
/// before the rest of them go to the workers: a reader that runs its
/// read's requests itself is not reading meanwhile.
pub(crate) const HERE_BUDGET: Duration = Duration::from_micros(50);

thread_local! {
    /// Set while this thread runs a batch of kept requests: their answers
    /// are written together when the batch ends, not one by one.
    static HOLDING: Cell<bool> = const { Cell::new(false) };
}

/// Runs the requests a connection's reader kept rather than queue them
/// behind busy workers (a lone quick request while every worker is busy,
/// or a read's quick requests while the workers are behind: see
/// [`Dispatcher::workers_behind`](super::dispatch::Dispatcher::workers_behind)),
/// one after another on this thread, each timed, their answers written
/// together at the end. Once they have run for [`HERE_BUDGET`] together,
/// or a request's method is no longer quick (one before it turned slow),
/// the rest go to the workers.
///
/// `next` hands out the requests; a thread that can be covered while a
/// handler runs long (thread mode) keeps them where the covering thread
/// can take them too.
pub(crate) fn run_kept(mut next: impl FnMut() -> Option<RequestTask>) {
    let Some(first) = next() else {
        return;
    };
    let started = Instant::now();
    let mut now = started;
    let held = HOLDING.with(|h| h.replace(true));
    let mut task = Some(first);
    while let Some(t) = task.take().or_else(&mut next) {
        if now.saturating_duration_since(started) >= HERE_BUDGET || !t.method().pace.is_quick() {
            let dispatcher = t.conn.dispatcher.clone();
            dispatcher.submit(t);
            continue;
        }
        now = t.run_timed(now);
    }
    HOLDING.with(|h| h.set(held));
    if !held {
        flush_unflushed();
    }
}

/// One request on its way through the worker pool.
pub(crate) struct RequestTask {
    /// The connection, and the request's bytes in the shared budget.
    pub(super) conn: Held,
    pub(super) method: MethodId,
    pub(super) ctx: Context,
    pub(super) id: RequestId,
    /// 0 for a ONEWAY, which is not in the in-flight table.
    pub(super) seq: u64,
    pub(super) flags: Flags,
    pub(super) body: Bytes,
    /// The stream the request opened, for a streaming method.
    pub(super) stream: Option<Box<StreamIo>>,
    /// The request opened a stream (which then runs on a worker or a
    /// thread of its own, never on the thread that reads).
    pub(super) streaming: bool,
    /// A ONEWAY's count on the drain latch (a REQUEST is counted while in
    /// its connection's in-flight table).
    pub(super) oneway_count: Option<LatchGuard>,
}

impl RequestTask {
    fn method(&self) -> &MethodEntry {
        self.conn.dispatcher.registry.method(self.method)
    }

    pub(super) fn is_oneway(&self) -> bool {
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
    /// dropping it counts in [`ServerShared::dropped_responses`](super::dispatch::ServerShared::dropped_responses).
    pub(super) fn finish(self, reply: Reply, ran: bool) {
        self.finish_at(reply, ran, None);
    }

    /// [`RequestTask::finish`], `now` being the time if the caller just
    /// read the clock.
    fn finish_at(self, reply: Reply, ran: bool, now: Option<Instant>) {
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
        let now = now.unwrap_or_else(Instant::now);
        let late = match (&entry, self.ctx.deadline()) {
            (Some(e), Some(d)) => (now >= d).then(|| deadline_status(e, ran, now)),
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
            self.conn.dispatcher.record_in(
                protocol,
                self.method,
                code,
                now.saturating_duration_since(read_at),
            );
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
        } else if HOLDING.with(Cell::get) || server.pool.as_ref().map_or(0, WorkerPool::queued) > 0
        {
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

impl RequestTask {
    /// The connection the request came on.
    pub(crate) fn conn(&self) -> &Arc<ConnShared> {
        &self.conn
    }
}

impl Task for RequestTask {
    fn run(self) {
        self.run_sampled(None);
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
    /// Runs the request on the thread that read it, which kept it because
    /// its method is quick (see [`run_kept`]): timed every time from `now`,
    /// so that a call that turns out long ([`LONG`]) stops the next ones
    /// from being kept. Returns when it ended.
    fn run_timed(self, now: Instant) -> Instant {
        if self.ctx.deadline().is_some_and(|d| now >= d) {
            self.expire(Duration::ZERO);
            return now;
        }
        match panic::catch_unwind(AssertUnwindSafe(|| self.run_sampled(Some(now)))) {
            Ok(ended) => ended.unwrap_or(now),
            Err(payload) => {
                log::error!(
                    "request task panicked on {}: {}",
                    std::thread::current().name().unwrap_or("connection thread"),
                    panic_message(&*payload)
                );
                Instant::now()
            }
        }
    }

    /// Runs the request unless it is no longer wanted, timing the handler
    /// from `started` if given (then returning when it ended), or if it is
    /// this call's turn to be sampled.
    fn run_sampled(mut self, started: Option<Instant>) -> Option<Instant> {
        if !self.claim() {
            if self.is_oneway() {
                self.finish(Err(Status::cancelled("not run")), false);
            } else {
                self.drop_result(Err(Status::cancelled("not run")), false);
            }
            return started;
        }
        // Answers held back for the next write must not wait for a
        // handler that may take long.
        if !self.is_quick() {
            flush_unflushed();
        }
        let method = self.method();
        let sampled = method.pace.sample();
        let started = started.or_else(|| sampled.then(Instant::now));
        let reply = self.call();
        let ended = started.map(|at| {
            let now = Instant::now();
            let took = now.saturating_duration_since(at);
            // An unsampled call still counts when it was long.
            if sampled || took >= LONG {
                self.method().pace.record(took);
            }
            now
        });
        self.finish_at(reply, true, ended);
        ended
    }
}

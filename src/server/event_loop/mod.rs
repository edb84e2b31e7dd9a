//! Event mode: mio event loops that accept, read, decode and write without
//! blocking, and hand requests to the worker pool.
//!
//! Each loop owns its connections. Reads go into one loop-wide buffer and
//! are copied into an arena that complete frames are cut from, so a request
//! costs no allocation of its own; only a partial frame is kept per
//! connection, in a buffer sized to what actually arrived, which is what
//! lets thousands of stalled connections cost next to nothing. Workers
//! append responses to the connection's shared output buffer; a worker with
//! nothing else queued writes the buffer itself, otherwise it wakes the
//! loop once per batch and the loop writes every response produced
//! meanwhile in one `write`. When a socket's buffer is full the loop
//! finishes the write once the socket is writable again.

mod closing;
mod timeouts;

use std::io::{self, Read, Write};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use std::os::fd::AsRawFd;

use bytes::BytesMut;
use mio::net::{TcpListener, TcpStream};
use mio::unix::SourceFd;
use mio::{Events, Interest, Poll, Token, Waker};
use slab::Slab;

use super::accept::{AcceptBackoff, AcceptError};
use super::connection::{ConnShared, Flush, Wake};
use super::deadline::DeadlineQueue;
use super::dispatch::{self, Dispatcher, ServerShared};
use super::protocol::{ConnDecoder, Message};
use super::task::{run_kept, RequestTask};
use super::transport::TransportError;
use crate::codec::{Encoder, ProtocolError};
use crate::latch::LatchGuard;
use crate::status::Code;

const WAKER: Token = Token(usize::MAX);
/// Listener `i` has token `LISTENER_BASE - i`.
const LISTENER_BASE: usize = usize::MAX - 1;
/// One read takes at most this much.
const READ_CHUNK: usize = 64 * 1024;
/// The arena frames are cut from is replaced in steps of this size.
const ARENA_SIZE: usize = 256 * 1024;
/// A partial-frame buffer that grew past this is released once empty.
const KEEP_PARTIAL: usize = 4 * 1024;
/// Recheck interval while reading is paused for the shared byte budget.
const BUDGET_RECHECK: Duration = Duration::from_millis(5);
/// First and longest pause of accepting after an accept error (out of
/// file descriptors, out of memory).
/// How long a stopping loop keeps trying to flush before closing.
const FINAL_FLUSH: Duration = Duration::from_secs(1);

/// Lifecycle of a loop, set by the server's shutdown.
pub(crate) const RUNNING: u8 = 0;
/// Listeners closed, GOAWAY sent, new requests answered UNAVAILABLE.
pub(crate) const DRAINING: u8 = 1;
/// Answer what is left, flush, close everything, exit.
pub(crate) const STOPPING: u8 = 2;

/// What the server and the workers share with one loop.
pub(crate) struct LoopShared {
    ready: Mutex<Vec<Arc<ConnShared>>>,
    waker: Waker,
    phase: AtomicU8,
}

impl LoopShared {
    pub fn set_phase(&self, phase: u8) {
        self.phase.fetch_max(phase, Ordering::SeqCst);
        self.poke();
    }

    fn poke(&self) {
        if let Err(e) = self.waker.wake() {
            log::error!("cannot wake an event loop: {e}");
        }
    }
}

impl Wake for LoopShared {
    fn wake(&self, conn: &Arc<ConnShared>) {
        let first = {
            let mut ready = self.ready.lock().unwrap_or_else(|e| e.into_inner());
            ready.push(conn.clone());
            ready.len() == 1
        };
        // One wake-up per batch: the loop takes the whole list at once.
        if first {
            self.poke();
        }
    }
}

/// A listening socket as one loop sees it (each loop has its own clone).
pub(crate) struct ListenerEntry {
    pub listener: TcpListener,
    pub dispatcher: Arc<Dispatcher>,
}

struct Conn {
    shared: Arc<ConnShared>,
    decoder: ConnDecoder,
    /// A partial frame carried over between reads (usually empty).
    partial: BytesMut,
    /// Bytes of `partial` counted in the server's budget.
    counted: usize,
    last_activity: Instant,
    frame_started: Option<Instant>,
    closing_since: Option<Instant>,
    /// The peer may still send (no EOF, no protocol error).
    read_open: bool,
    /// Reading stopped at a limit; resume when the limit clears.
    paused: bool,
    /// Close once everything in flight is answered and written.
    closing: bool,
    _count: LatchGuard,
}

pub(crate) struct EventLoop {
    name: String,
    poll: Poll,
    shared: Arc<LoopShared>,
    server: Arc<ServerShared>,
    listeners: Vec<Option<ListenerEntry>>,
    conns: Slab<Conn>,
    timers: DeadlineQueue,
    read_buf: Vec<u8>,
    arena: BytesMut,
    /// The requests of a read that the loop runs itself (see `decode`),
    /// kept between reads so that keeping them allocates nothing.
    kept: Vec<RequestTask>,
    ready: Vec<Arc<ConnShared>>,
    touched: Vec<usize>,
    accept_backoff: AcceptBackoff,
    accept_resume: Option<Instant>,
    budget_paused: bool,
    next_sweep: Instant,
    sweep_every: Duration,
    phase: u8,
    stop_deadline: Option<Instant>,
    conn_latch: crate::latch::Latch,
}

/// Sends requests a read kept for the loop to the workers instead.
fn submit_all(kept: &mut Vec<RequestTask>) {
    for task in kept.drain(..) {
        let dispatcher = task.conn().dispatcher.clone();
        dispatcher.submit(task);
    }
}

impl EventLoop {
    pub fn new(
        name: String,
        server: Arc<ServerShared>,
        listeners: Vec<ListenerEntry>,
        conn_latch: crate::latch::Latch,
    ) -> io::Result<(EventLoop, Arc<LoopShared>)> {
        let poll = Poll::new()?;
        let waker = Waker::new(poll.registry(), WAKER)?;
        let shared = Arc::new(LoopShared {
            ready: Mutex::new(Vec::new()),
            waker,
            phase: AtomicU8::new(RUNNING),
        });
        let mut entries = Vec::with_capacity(listeners.len());
        for (i, mut l) in listeners.into_iter().enumerate() {
            poll.registry().register(
                &mut l.listener,
                Token(LISTENER_BASE - i),
                Interest::READABLE,
            )?;
            entries.push(Some(l));
        }
        let t = &server.config.timeouts;
        let shortest = t.idle.min(t.frame).min(t.handshake).min(t.write_stall);
        let sweep_every = (shortest / 8).clamp(Duration::from_millis(5), Duration::from_secs(1));
        let lp = EventLoop {
            name,
            poll,
            shared: shared.clone(),
            server,
            listeners: entries,
            conns: Slab::new(),
            timers: DeadlineQueue::new(),
            read_buf: vec![0; READ_CHUNK],
            arena: BytesMut::with_capacity(ARENA_SIZE),
            kept: Vec::new(),
            ready: Vec::new(),
            touched: Vec::new(),
            accept_backoff: AcceptBackoff::new(),
            accept_resume: None,
            budget_paused: false,
            next_sweep: Instant::now() + sweep_every,
            sweep_every,
            phase: RUNNING,
            stop_deadline: None,
            conn_latch,
        };
        Ok((lp, shared))
    }

    /// Runs until the server stops.
    pub fn run(mut self) {
        let mut events = Events::with_capacity(1024);
        loop {
            let timeout = self.poll_timeout();
            if let Err(e) = self.poll.poll(&mut events, timeout) {
                if e.kind() != io::ErrorKind::Interrupted {
                    log::error!("{}: poll failed: {e}", self.name);
                    self.phase = STOPPING;
                }
            }
            if self.on_events(&events) {
                break;
            }
        }
        self.close_all();
    }

    /// Handles one poll's events, then what workers handed back and the
    /// timers due. True when the loop is to stop.
    fn on_events(&mut self, events: &Events) -> bool {
        // On one CPU a worker woken before the loop blocks again could only
        // preempt it: every read of this poll goes to the workers in one
        // batch, and a worker is woken once, at its end. On more CPUs each
        // read is a batch of its own (see `on_readable`), so that a worker
        // elsewhere starts on the first while the loop reads the next.
        match self.server.pool.clone() {
            Some(pool) if pool.one_cpu() => pool.batch(|| self.on_poll_events(events)),
            _ => self.on_poll_events(events),
        }
        self.take_ready();
        let now = Instant::now();
        self.fire_timers(now);
        self.handle_phase(now)
    }

    fn on_poll_events(&mut self, events: &Events) {
        for event in events.iter() {
            match event.token() {
                WAKER => {}
                Token(t) if t > LISTENER_BASE - self.listeners.len() && t <= LISTENER_BASE => {
                    self.accept(LISTENER_BASE - t);
                }
                Token(slot) => {
                    if event.is_writable() {
                        self.flush_with(slot, true);
                    }
                    let closed = event.is_read_closed() || event.is_error();
                    if event.is_readable() || closed {
                        self.on_readable(slot, closed);
                    }
                }
            }
        }
    }

    fn poll_timeout(&self) -> Option<Duration> {
        let now = Instant::now();
        let mut next = Some(self.next_sweep);
        let mut at = |t: Option<Instant>| {
            if let Some(t) = t {
                next = Some(next.map_or(t, |n: Instant| n.min(t)));
            }
        };
        at(self.timers.next());
        at(self.accept_resume);
        at(self.stop_deadline);
        if self.budget_paused {
            at(Some(now + BUDGET_RECHECK));
        }
        next.map(|t| t.saturating_duration_since(now))
    }

    fn accept(&mut self, index: usize) {
        if self.accept_resume.is_some() || self.phase != RUNNING {
            return;
        }
        loop {
            let Some(Some(entry)) = self.listeners.get(index) else {
                return;
            };
            match entry.listener.accept() {
                Ok((stream, peer)) => {
                    self.accept_backoff.accepted();
                    let dispatcher = entry.dispatcher.clone();
                    self.add_conn(stream, peer, dispatcher);
                }
                Err(e) => match self.accept_backoff.failed(&self.name, &e) {
                    AcceptError::Drained => return,
                    AcceptError::Retry => {}
                    AcceptError::Pause(until) => {
                        // Until then, or until a connection closes.
                        self.accept_resume = Some(until);
                        return;
                    }
                },
            }
        }
    }

    fn resume_accepting(&mut self) {
        if self.accept_resume.take().is_some() {
            for i in 0..self.listeners.len() {
                self.accept(i);
            }
        }
    }

    fn add_conn(&mut self, mut stream: TcpStream, peer: SocketAddr, dispatcher: Arc<Dispatcher>) {
        let server = &self.server;
        let count = server.connections.fetch_add(1, Ordering::SeqCst) + 1;
        if count > server.config.limits.max_connections {
            server.connections.fetch_sub(1, Ordering::SeqCst);
            server.refused_connections.fetch_add(1, Ordering::Relaxed);
            log::debug!("{}: refusing {peer}: {count} connections", self.name);
            let mut enc = Encoder::new();
            let msg = format!(
                "too many connections (limit {})",
                server.config.limits.max_connections
            );
            // A protocol without GOAWAY is only closed.
            let refusal = dispatcher.refusal_protocol();
            if refusal.is_some_and(|p| p.write_goaway(&mut enc, Code::RESOURCE_EXHAUSTED, &msg)) {
                // Best effort: a fresh socket's send buffer takes a few bytes.
                let _ = stream.write(enc.as_slice());
            }
            let _ = stream.shutdown(std::net::Shutdown::Write);
            return;
        }
        let stream = std::net::TcpStream::from(stream);
        if server.config.nodelay {
            if let Err(e) = stream.set_nodelay(true) {
                log::debug!("{}: set_nodelay for {peer}: {e}", self.name);
            }
        }
        let entry = self.conns.vacant_entry();
        let slot = entry.key();
        if let Err(e) = self.poll.registry().register(
            &mut SourceFd(&stream.as_raw_fd()),
            Token(slot),
            Interest::READABLE | Interest::WRITABLE,
        ) {
            log::error!("{}: cannot register {peer}: {e}", self.name);
            server.connections.fetch_sub(1, Ordering::SeqCst);
            return;
        }
        let wake: Arc<dyn Wake> = self.shared.clone();
        let shared = Arc::new(ConnShared::new(
            server.next_conn_id(),
            slot,
            Some(peer),
            stream,
            dispatcher.clone(),
            wake,
        ));
        log::trace!("{}: conn {} from {peer}", self.name, shared.id);
        let now = Instant::now();
        let decoder = dispatcher.decoder(&shared);
        // A handshake is timed like a frame from the first moment.
        let frame_started = shared.is_handshaking().then_some(now);
        entry.insert(Conn {
            shared,
            decoder,
            partial: BytesMut::new(),
            counted: 0,
            last_activity: now,
            frame_started,
            closing_since: None,
            read_open: true,
            paused: false,
            closing: false,
            _count: self.conn_latch.guard(),
        });
        if self.phase != RUNNING {
            self.goaway_draining(slot);
        }
    }

    /// [`EventLoop::may_read`] after a message: when the request it carried
    /// left room (`ConnShared::room_after`), the connection's lock need not
    /// be taken again to know.
    fn may_read_on(&mut self, slot: usize) -> bool {
        let room = self.conns.get(slot).is_some_and(|c| {
            c.read_open && !c.paused && c.shared.room_after.load(Ordering::Relaxed)
        });
        if room && self.phase != STOPPING && self.server.has_read_budget() {
            return true;
        }
        self.may_read(slot)
    }

    /// Whether `slot` may read now; if not, marks it paused so that the
    /// next finished request or drained buffer resumes it.
    fn may_read(&mut self, slot: usize) -> bool {
        let budget = self.server.has_read_budget();
        let limits = &self.server.config.limits;
        let Some(conn) = self.conns.get_mut(slot) else {
            return false;
        };
        if !conn.read_open || self.phase == STOPPING {
            return false;
        }
        let mut st = conn.shared.lock();
        let full = st.is_full(limits);
        if full || !budget {
            st.read_paused = full;
            conn.paused = true;
            if !budget {
                self.budget_paused = true;
            }
            return false;
        }
        st.read_paused = false;
        conn.paused = false;
        true
    }

    /// Reads and dispatches what `slot` has to offer. With `until_blocked`
    /// false it may stop after a short read (see below).
    fn on_readable(&mut self, slot: usize, until_blocked: bool) {
        // The requests of one connection's reads go to the workers in one
        // batch: one wake-up for all of them. Waiting for every ready
        // connection would hold the first ones' requests back, which costs
        // a closed-loop client more than the wake-ups it saves.
        let server = self.server.clone();
        match &server.pool {
            Some(pool) => pool.batch(|| self.read_and_dispatch(slot, until_blocked)),
            None => self.read_and_dispatch(slot, until_blocked),
        }
    }

    fn read_and_dispatch(&mut self, slot: usize, until_blocked: bool) {
        // Frames left over from a paused batch go first.
        if !self.decode_partial(slot) {
            return;
        }
        loop {
            if !self.may_read(slot) {
                break;
            }
            let Some(conn) = self.conns.get_mut(slot) else {
                return;
            };
            let n = match (&conn.shared.stream).read(&mut self.read_buf) {
                Ok(0) => {
                    self.peer_closed(slot);
                    break;
                }
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    log::debug!("{}: conn {} read: {e}", self.name, conn.shared.id);
                    self.close(slot);
                    return;
                }
            };
            conn.last_activity = Instant::now();
            self.server
                .bytes_read
                .fetch_add(n as u64, Ordering::Relaxed);
            // Through the transport, into the arena or the partial frame.
            let from_arena = conn.partial.is_empty();
            let received = if from_arena {
                if self.arena.capacity() < n {
                    self.arena.reserve(ARENA_SIZE.max(n));
                }
                conn.shared.receive(&self.read_buf[..n], &mut self.arena)
            } else {
                conn.shared.receive(&self.read_buf[..n], &mut conn.partial)
            };
            if let Err(e) = received {
                self.transport_failed(slot, e);
                return;
            }
            let ok = self.decode(slot, from_arena);
            if !ok {
                return;
            }
            let finished = self
                .conns
                .get(slot)
                .is_some_and(|c| c.partial.is_empty() && c.shared.transport.peer_finished());
            if finished {
                // TLS close_notify: the end of the stream, as TCP EOF
                // (with frames still buffered, the TCP EOF behind it ends
                // the connection once they are decoded).
                self.peer_closed(slot);
                break;
            }
            if n < READ_CHUNK && !until_blocked {
                // A short read emptied the socket's receive queue, and
                // whatever arrives after the poll returned raises a new
                // event, so another read would only say WouldBlock (tokio
                // reasons the same way). An EOF that came before the poll
                // returned has no event of its own: then read to the end.
                break;
            }
        }
        self.flush(slot);
    }

    /// Decodes whatever the partial buffer holds; false if the connection
    /// closed.
    fn decode_partial(&mut self, slot: usize) -> bool {
        match self.conns.get(slot) {
            Some(c) if !c.partial.is_empty() => {
                // A readable event on a connection at its limits leaves
                // the leftover waiting for room, as a new read would: a
                // request decoded past the in-flight limit of an HTTP/1.1
                // connection would be answered out of order.
                let open = c.read_open && self.phase != STOPPING;
                if open && !self.may_read(slot) {
                    return true;
                }
                self.decode(slot, false)
            }
            Some(_) => true,
            None => false,
        }
    }

    /// Cuts messages off the arena (`from_arena`) or the connection's
    /// partial buffer and dispatches them, stopping early at the in-flight and
    /// pending-bytes limits. Whatever is left is kept in the partial
    /// buffer. Returns false if the connection was closed.
    fn decode(&mut self, slot: usize, from_arena: bool) -> bool {
        let now = Instant::now();
        // A read that brought one request alone, of a quick method, while
        // every worker is busy, or the quick requests of a read while the
        // workers are behind (requests wait that no worker has taken), are
        // run by the loop itself once the read is decoded, rather than
        // queued behind the others at the cost of a hand-off each (see
        // `task::run_kept`, which bounds how long). Otherwise a second
        // request sends the first to the workers in its turn, so that
        // pipelined requests do not wait behind a handler here.
        let (quick_here, behind) = self.conns.get(slot).map_or((false, false), |c| {
            let d = &c.shared.dispatcher;
            let behind = d.workers_behind(now);
            (behind || d.workers_saturated(), behind)
        });
        let mut kept = std::mem::take(&mut self.kept);
        let mut requests = 0usize;
        let mut failed = None;
        let mut ended = false;
        loop {
            let Some(conn) = self.conns.get_mut(slot) else {
                // Nothing closes a connection mid-decode, but what it kept
                // must not wait for another connection's read.
                submit_all(&mut kept);
                self.kept = kept;
                return false;
            };
            let buf = if from_arena {
                &mut self.arena
            } else {
                &mut conn.partial
            };
            if buf.is_empty() && !conn.decoder.is_mid_message(buf) {
                break;
            }
            let (shared, timers) = (&conn.shared, &mut self.timers);
            shared.room_after.store(false, Ordering::Relaxed);
            let dispatcher = &shared.dispatcher;
            let (kept, requests) = (&mut kept, &mut requests);
            let mut dispatch = |msg: Message<'_>| {
                if !matches!(msg, Message::Request { .. }) {
                    dispatcher.on_message(shared, msg, now, timers);
                    return;
                }
                *requests += 1;
                if *requests == 2 && !behind {
                    // Not a lone request, and the workers keep up: they
                    // take the read's requests.
                    for first in kept.drain(..) {
                        dispatcher.submit(first);
                    }
                }
                let keep = quick_here && (*requests == 1 || behind);
                if let Some(task) = dispatcher.on_message_deferred(shared, msg, now, timers, keep) {
                    if keep {
                        kept.push(task);
                    } else {
                        task.run_inline();
                    }
                }
            };
            match conn.decoder.decode(buf, shared, &mut dispatch) {
                Ok(true) if conn.decoder.is_done() => {
                    ended = true;
                    break;
                }
                Ok(true) => {}
                Ok(false) => break,
                Err(e) => {
                    failed = Some(e);
                    break;
                }
            }
            if !self.may_read_on(slot) {
                break;
            }
        }
        if !kept.is_empty() {
            let more = self.conns.get(slot).is_some_and(|c| {
                let buf = if from_arena { &self.arena } else { &c.partial };
                !buf.is_empty()
            });
            if failed.is_some() || ended || (more && !behind) {
                // The connection is ending, or bytes of another request
                // follow while the workers keep up: the workers take them.
                submit_all(&mut kept);
            } else {
                let mut tasks = kept.drain(..);
                run_kept(|| tasks.next());
            }
        }
        self.kept = kept;
        let Some(conn) = self.conns.get_mut(slot) else {
            return false;
        };
        if from_arena && !self.arena.is_empty() {
            // Keep the rest in a buffer of its own, sized to it, so the
            // arena stays shared by every connection.
            conn.partial.reserve(self.arena.len());
            conn.partial.extend_from_slice(&self.arena);
            self.arena.clear();
        }
        if conn.partial.is_empty() && conn.partial.capacity() > KEEP_PARTIAL {
            conn.partial = BytesMut::new();
        }
        self.server
            .recount_buffered(&mut conn.counted, conn.partial.len());
        let mid = conn.decoder.is_mid_message(&conn.partial) || conn.shared.is_handshaking();
        conn.frame_started = if mid {
            conn.frame_started.or(Some(now))
        } else {
            None
        };
        if let Some(e) = failed {
            self.protocol_error(slot, e);
            return self.conns.contains(slot);
        }
        if ended {
            // The peer's last request: answer it, then close.
            conn.read_open = false;
            self.start_closing(slot);
            return self.conns.contains(slot);
        }
        true
    }

    /// Writes what the connection has to write, until the socket would
    /// block; closes it if it is closing and done.
    fn flush(&mut self, slot: usize) {
        self.flush_with(slot, false);
    }

    /// `writable`: the poll said the socket accepts bytes again.
    fn flush_with(&mut self, slot: usize, writable: bool) {
        let Some(conn) = self.conns.get(slot) else {
            return;
        };
        if conn.shared.flush(writable) == Flush::Failed {
            self.close(slot);
            return;
        }
        let done = conn.closing && {
            let st = conn.shared.lock();
            st.active() == 0 && st.is_flushed()
        };
        if done {
            self.close(slot);
        } else if conn.paused && self.phase != STOPPING {
            // Room may have opened up; the socket will not say so again.
            self.on_readable_resume(slot);
        }
    }

    fn on_readable_resume(&mut self, slot: usize) {
        let can = match self.conns.get(slot) {
            Some(c) => c.read_open,
            None => false,
        };
        if can && self.may_read(slot) {
            self.on_readable(slot, true);
        }
    }

    /// Takes the connections workers woke the loop for, and writes their
    /// output or resumes their reading.
    fn take_ready(&mut self) {
        {
            let mut ready = self.shared.ready.lock().unwrap_or_else(|e| e.into_inner());
            if ready.is_empty() {
                return;
            }
            std::mem::swap(&mut *ready, &mut self.ready);
        }
        let mut ready = std::mem::take(&mut self.ready);
        for conn in ready.drain(..) {
            // The slot may have been reused by a newer connection: only the
            // connection the worker held is served.
            match self.conns.get(conn.slot) {
                Some(c) if Arc::ptr_eq(&c.shared, &conn) => {
                    conn.lock().notified = false;
                    self.flush(conn.slot);
                }
                _ => {}
            }
        }
        self.ready = ready;
    }
}

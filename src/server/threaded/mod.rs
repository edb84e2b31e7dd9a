//! Thread mode: an acceptor thread, and per connection a thread that reads
//! with blocking calls and a thread that writes what the others could not.
//!
//! ```text
//!              accept                 spawn
//! listeners ─────────▶ acceptor ─────────────────▶ conn-N (reads, decodes, dispatches;
//!                      (mio poll; watches          │  ▲   runs a lone quick request
//!                       conn threads that run      │  │   itself and writes its answer)
//!                       a request themselves)      ▼  │ waits for room (condvar)
//!                                   worker pool ─▶ send now ─▶ socket
//!                                                  │ socket full, deadline, closing
//!                                                  ▼
//!                                               conn-N-w (blocking writes, fires
//!                                                 deadlines, reads for conn-N
//!                                                 while its request runs long)
//! ```
//!
//! The per-request logic is `dispatch`'s, exactly as in event mode; only
//! the moving of bytes differs. A request costs as few thread wake-ups as
//! its shape allows:
//!
//! - **Answers are written by whoever makes them**, a worker or the
//!   connection's thread, with a send that never waits, even though the
//!   socket blocks (`connection::SEND_NOW`); one thread writes at a time,
//!   the others append. What a full socket buffer leaves wakes the writing
//!   thread, whose write may wait, bounded by the write-stall timeout. So
//!   a client that stops reading blocks the writing thread, never a
//!   worker, and the writing thread is otherwise asleep.
//! - **A lone quick request runs on the connection's thread.** When a read
//!   brings one request, with nothing after it, of a method whose sampled
//!   calls lately returned within 50 µs (`pace`), handing it to a worker
//!   would cost a wake-up while this thread has nothing to do until its
//!   next read: it runs it itself, after the batch of any other requests
//!   is sent. Pipelined requests, ONEWAYs and methods not known to be
//!   quick go to the workers, which bound how many handlers run at once.
//!   Every guarantee of the workers holds: the request is in the in-flight
//!   table, its deadline fires from the writing thread, CANCEL, shutdown
//!   and close forbid its start or drop its late answer.
//! - **A quick method's call that runs long does not stop the reading.**
//!   While the connection's thread runs a request, its reading side (the
//!   buffer, the decoder, the timers of the read) is lent to the writing
//!   thread. The acceptor looks every 5 ms while connection threads run
//!   requests (it sleeps when none has for a few seconds); at a handler
//!   that has run 10 ms, it has the writing thread read in the connection
//!   thread's place, sending every request to the workers and firing
//!   deadlines between reads, until the handler returns and the
//!   connection's thread takes its reading side back. The call, timed
//!   and that long, makes its method slow, so its next calls go to the
//!   workers.
//!
//! Reading happens in one place, [`Reader::read`]; writing in one,
//! `ConnShared::flush` (and below it `connection::write_out`).
//!
//! Every limit holds as in event mode. The reading thread does not call
//! `read` while the connection is at its in-flight or pending-bytes limit
//! (it waits on the condition variable) or the shared byte budget is
//! spent (it rechecks every few milliseconds). The idle and whole-frame
//! timeouts are read timeouts on the socket; the write stall is a write
//! timeout. The connection limit and a thread that cannot be started are
//! answered GOAWAY `RESOURCE_EXHAUSTED`. At shutdown the acceptor is woken
//! through its poll, and threads blocked in `read` are woken by shutting
//! down the socket's reading side, so an idle connection never holds the
//! shutdown up until its idle timeout.

use std::collections::{HashMap, VecDeque};
use std::io::{self, Write};
use std::net::{Shutdown, SocketAddr, TcpListener as StdListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicU8, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use bytes::BytesMut;
use mio::{Events, Interest, Poll, Token, Waker};

use super::accept::{AcceptBackoff, AcceptError};
use super::config::{Limits, Timeouts};
use super::connection::{ConnShared, ConnState, Flush, Received, Wake, SEND_NOW};
use super::deadline::DeadlineQueue;
use super::dispatch::{self, Dispatcher, ServerShared};
use super::event_loop::{DRAINING, RUNNING, STOPPING};
use super::protocol::{ConnDecoder, Message, Protocol};
use super::task::{self, RequestTask};
use crate::codec::{Encoder, ProtocolError};
use crate::latch::{Latch, LatchGuard};
use crate::status::Code;

const WAKER: Token = Token(usize::MAX);
/// One read takes at most this much, as in event mode, so a frame that
/// fits arrives whole even when the shared byte budget is nearly spent.
const READ_CHUNK: usize = 64 * 1024;
/// A read buffer left holding no more than this (a partial frame, or
/// nothing) is replaced by one of its own size: an idle or stalled
/// connection keeps no read-sized buffer.
const KEEP_PARTIAL: usize = 4 * 1024;
/// After a read that took less than this, the next read waits with a
/// buffer of this size rather than [`READ_CHUNK`]: a connection that sends
/// little at a time, or is idle, keeps no read-sized buffer while its
/// thread is blocked in `read`.
const SMALL_READ: usize = 4 * 1024;
/// Recheck interval while reading is paused for the shared byte budget.
const BUDGET_RECHECK: Duration = Duration::from_millis(5);
/// First and longest pause of accepting after an accept error (out of
/// file descriptors, out of memory).
/// How long a stopping connection may take to flush its last answers.
const FINAL_FLUSH: Duration = Duration::from_secs(1);
/// The same, when the shutdown is forced.
const FORCED_FLUSH: Duration = Duration::from_millis(100);
/// After the sockets are cut, how long the threads get to notice.
const STOP_MARGIN: Duration = Duration::from_secs(1);
/// How long the acceptor gets to close the listeners once woken.
const ACCEPTOR_STOP: Duration = Duration::from_secs(2);
/// Memory mappings one connection's two threads take: each thread's stack
/// and its guard page, and the signal stack and guard page the standard
/// library gives every thread.
const MAPS_PER_CONNECTION: usize = 8;
/// A refused connection's GOAWAY gets this long to reach the socket when
/// there is no writing thread.
const REFUSAL_WRITE: Duration = Duration::from_secs(1);
/// While connection threads run requests themselves, the acceptor looks
/// this often for one whose handler runs long...
const WATCH_TICK: Duration = Duration::from_millis(5);
/// ...and has the writing thread read in its place once its handler has
/// run this long. That is 200 times what counts as quick
/// (`pace::QUICK`), so that a thread merely waiting for a busy CPU is not
/// taken for one whose handler runs long.
const COVER_AFTER: Duration = super::pace::LONG;
/// While it covers, the writing thread reads with at most this timeout:
/// how long the connection's thread may wait to take its reading side
/// back once its handler returned.
const COVER_READ: Duration = Duration::from_millis(2);
/// The acceptor stops looking after this many looks without a request run
/// by a connection thread, until the next one wakes it.
const WATCH_IDLE_TICKS: u32 = 500;

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // Critical sections move buffers and table entries only.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// What the coordinator, the acceptor and the connection threads share.
pub(crate) struct Threaded {
    server: Arc<ServerShared>,
    phase: AtomicU8,
    /// Live connections, by id: for the shutdown's GOAWAYs, and to name
    /// the threads that did not stop.
    links: Mutex<HashMap<u64, Arc<Link>>>,
    /// One count per connection thread, dropped as it ends.
    conns: Latch,
    waker: Waker,
    acceptor: Mutex<Option<(String, JoinHandle<()>)>>,
    acceptor_alive: Latch,
    /// Accepting is paused after an accept error: a connection that
    /// closes wakes the acceptor to try again.
    accept_paused: AtomicBool,
    prefix: String,
    stack_size: Option<usize>,
    /// Connections served at once: `max_connections`, or fewer where the
    /// threads would run out of memory mappings (see [`map_budget`]).
    max_conns: usize,
    /// Why a connection past `max_conns` is refused.
    refusal: String,
    /// Granularity of the idle and whole-frame timeouts.
    tick: Duration,
    /// The origin of [`Threaded::clock`].
    epoch: Instant,
    /// A connection thread ran a request itself since the acceptor last
    /// looked.
    inline_seen: AtomicBool,
    /// The acceptor no longer looks (see [`WATCH_IDLE_TICKS`]): the next
    /// request a connection thread runs wakes it.
    watch_asleep: AtomicBool,
}

impl Threaded {
    /// Starts the acceptor on `listeners` (non-blocking sockets, each with
    /// the dispatcher of its services).
    pub fn start(
        server: Arc<ServerShared>,
        listeners: Vec<(StdListener, Arc<Dispatcher>)>,
        conns: Latch,
    ) -> io::Result<Arc<Threaded>> {
        let poll = Poll::new()?;
        let waker = Waker::new(poll.registry(), WAKER)?;
        let mut entries = Vec::with_capacity(listeners.len());
        for (i, (listener, dispatcher)) in listeners.into_iter().enumerate() {
            let mut listener = mio::net::TcpListener::from_std(listener);
            poll.registry()
                .register(&mut listener, Token(i), Interest::READABLE)?;
            entries.push((listener, dispatcher));
        }
        let t = &server.config.timeouts;
        let shortest = t.idle.min(t.frame).min(t.handshake);
        let tick = (shortest / 8).clamp(Duration::from_millis(5), Duration::from_secs(1));
        let prefix = server.config.thread_name.clone();
        let (max_conns, refusal) = connection_limit(server.config.limits.max_connections);
        let threaded = Arc::new(Threaded {
            stack_size: server.config.connection_stack_size,
            max_conns,
            refusal,
            server,
            phase: AtomicU8::new(RUNNING),
            links: Mutex::new(HashMap::new()),
            conns,
            waker,
            acceptor: Mutex::new(None),
            acceptor_alive: Latch::new(),
            accept_paused: AtomicBool::new(false),
            prefix,
            tick,
            epoch: Instant::now(),
            inline_seen: AtomicBool::new(false),
            watch_asleep: AtomicBool::new(true),
        });
        let name = format!("{}-accept", threaded.prefix);
        let acceptor = Acceptor {
            threaded: threaded.clone(),
            poll,
            listeners: entries,
            backoff: AcceptBackoff::new(),
            resume: None,
            idle_looks: 0,
        };
        let alive = threaded.acceptor_alive.guard();
        let handle = thread::Builder::new().name(name.clone()).spawn(move || {
            let _alive = alive;
            acceptor.run();
        })?;
        *lock(&threaded.acceptor) = Some((name, handle));
        Ok(threaded)
    }

    fn phase(&self) -> u8 {
        self.phase.load(Ordering::SeqCst)
    }

    /// Nanoseconds since the server started, never 0.
    fn clock(&self) -> u64 {
        self.epoch.elapsed().as_nanos() as u64 + 1
    }

    /// A connection thread is about to run a request itself: the acceptor
    /// must be watching.
    fn note_inline(&self) {
        if !self.inline_seen.load(Ordering::Relaxed) {
            self.inline_seen.store(true, Ordering::SeqCst);
        }
        if self.watch_asleep.load(Ordering::SeqCst)
            && self.watch_asleep.swap(false, Ordering::SeqCst)
        {
            if let Err(e) = self.waker.wake() {
                log::error!("cannot wake the acceptor: {e}");
            }
        }
    }

    /// The acceptor's look at connection threads running requests
    /// themselves: one whose handler has run for [`COVER_AFTER`] gets its
    /// writing thread to read in its place. `idle` counts the looks that
    /// found none. Returns how long until the next look, or `None` once
    /// there has been nothing to watch for a while.
    fn watch_inline(&self, idle: &mut u32) -> Option<Duration> {
        if self.watch_asleep.load(Ordering::SeqCst) {
            return None;
        }
        if self.inline_seen.swap(false, Ordering::SeqCst) {
            *idle = 0;
        } else {
            *idle += 1;
        }
        let now = self.clock();
        let after = COVER_AFTER.as_nanos() as u64;
        let mut running = false;
        for link in lock(&self.links).values() {
            let since = link.inline_since.load(Ordering::SeqCst);
            if since == 0 {
                continue;
            }
            running = true;
            if now.saturating_sub(since) >= after
                && link.cover_asked.swap(since, Ordering::SeqCst) != since
            {
                link.cover_wanted.store(true, Ordering::SeqCst);
                link.poke();
            }
        }
        if running || *idle < WATCH_IDLE_TICKS {
            return Some(WATCH_TICK);
        }
        self.watch_asleep.store(true, Ordering::SeqCst);
        // A connection thread that saw the watch awake just now.
        if self.inline_seen.load(Ordering::SeqCst) {
            self.watch_asleep.store(false, Ordering::SeqCst);
            return Some(WATCH_TICK);
        }
        None
    }

    fn links(&self) -> Vec<Arc<Link>> {
        lock(&self.links).values().cloned().collect()
    }

    /// Shutdown steps 1 and 2: the acceptor closes the listeners, and
    /// every connection gets its GOAWAY.
    pub fn go_away(&self) {
        self.phase.fetch_max(DRAINING, Ordering::SeqCst);
        if let Err(e) = self.waker.wake() {
            log::error!("cannot wake the acceptor: {e}");
        }
        // Step 1 before step 2: once the acceptor is gone its listeners are
        // closed, so no client can open a connection that misses its
        // GOAWAY. Connections it takes in meanwhile get theirs from
        // add_conn.
        if !self.acceptor_alive.wait_timeout(ACCEPTOR_STOP) {
            log::error!("the acceptor did not stop within {ACCEPTOR_STOP:?}");
        }
        for link in self.links() {
            link.go_away_draining();
        }
    }

    /// The end of the shutdown: answers what is still in flight, flushes
    /// and closes every connection, and joins the threads. Returns the
    /// names of those that did not stop.
    pub fn stop(&self, forced: bool) -> Vec<String> {
        self.go_away();
        let mut stuck = Vec::new();
        // The acceptor was woken by go_away; once it is gone no connection
        // is added, so the list below is complete.
        let acceptor_done = self.acceptor_alive.wait_timeout(ACCEPTOR_STOP);
        if let Some((name, handle)) = lock(&self.acceptor).take() {
            if acceptor_done || handle.is_finished() {
                let _ = handle.join();
            } else {
                stuck.push(name);
            }
        }
        let links = self.links();
        // Answers first, then the phase: a writer that sees STOPPING finds
        // them in its output and flushes them before it closes.
        for link in &links {
            dispatch::end_for_shutdown(&link.conn, &self.server);
        }
        self.phase.store(STOPPING, Ordering::SeqCst);
        for link in &links {
            link.poke();
            // Wakes a thread blocked in `read` (an idle connection) now,
            // rather than at its idle timeout.
            let _ = link.stream().shutdown(Shutdown::Read);
        }
        let flush = if forced { FORCED_FLUSH } else { FINAL_FLUSH };
        if !self.conns.wait_timeout(flush) {
            // A client that does not read keeps a writer blocked in
            // `write`: cut it off.
            for link in self.links() {
                let _ = link.stream().shutdown(Shutdown::Both);
                link.poke();
            }
            self.conns.wait_timeout(STOP_MARGIN);
        }
        for link in self.links() {
            stuck.push(link.reader_name.clone());
            if link.writer_alive.load(Ordering::SeqCst) {
                stuck.push(link.writer_name.clone());
            }
        }
        stuck
    }

    /// Takes a connection the acceptor accepted: checks the connection
    /// limit and starts its reading thread.
    fn add_conn(
        self: &Arc<Self>,
        stream: TcpStream,
        peer: SocketAddr,
        dispatcher: Arc<Dispatcher>,
    ) {
        let server = &self.server;
        let count = server.connections.fetch_add(1, Ordering::SeqCst) + 1;
        if count > self.max_conns {
            server.connections.fetch_sub(1, Ordering::SeqCst);
            log::debug!("refusing {peer}: {count} connections");
            server.refused_connections.fetch_add(1, Ordering::Relaxed);
            refuse(&stream, dispatcher.refusal_protocol(), &self.refusal);
            return;
        }
        // Accepted sockets may inherit the listener's non-blocking mode.
        if let Err(e) = stream.set_nonblocking(false) {
            server.connections.fetch_sub(1, Ordering::SeqCst);
            log::error!("cannot make the connection from {peer} blocking: {e}");
            return;
        }
        if server.config.nodelay {
            if let Err(e) = stream.set_nodelay(true) {
                log::debug!("set_nodelay for {peer}: {e}");
            }
        }
        let id = server.next_conn_id();
        let notify = Arc::new(Notify {
            cond: Condvar::new(),
        });
        let wake: Arc<dyn Wake> = notify.clone();
        let reader_name = format!("{}-conn-{id}", self.prefix);
        let link = Arc::new(Link {
            conn: Arc::new(ConnShared::new(
                id,
                0,
                Some(peer),
                stream,
                dispatcher.clone(),
                wake,
            )),
            notify,
            timers: Mutex::new(DeadlineQueue::new()),
            timers_changed: AtomicBool::new(false),
            reading_done: AtomicBool::new(false),
            writer_alive: AtomicBool::new(false),
            writer_name: format!("{reader_name}-w"),
            reader_name,
            lent: Mutex::new(None),
            returned: Condvar::new(),
            inline_since: AtomicU64::new(0),
            cover_asked: AtomicU64::new(0),
            cover_wanted: AtomicBool::new(false),
            owner_back: AtomicBool::new(false),
            kept: Mutex::new(VecDeque::new()),
        });
        log::trace!("conn {id} from {peer}");
        lock(&self.links).insert(id, link.clone());
        if self.phase() != RUNNING {
            // Accepted while the shutdown began (the backlog the acceptor
            // takes in before closing its listeners): go_away may already
            // have passed this connection by.
            link.go_away_draining();
        }
        let guard = self.conns.guard();
        let threaded = self.clone();
        let l = link.clone();
        let protocol = dispatcher.refusal_protocol();
        let spawned = self
            .builder(&link.reader_name)
            .spawn(move || conn_thread(threaded, l, dispatcher, guard));
        // The thread is not joined: the latch says when it has finished.
        if let Err(e) = spawned {
            log::error!("cannot start a thread for the connection from {peer}: {e}");
            lock(&self.links).remove(&id);
            server.connections.fetch_sub(1, Ordering::SeqCst);
            refuse(
                link.stream(),
                protocol,
                &format!("cannot start a thread for the connection: {e}"),
            );
        }
    }

    fn builder(&self, name: &str) -> thread::Builder {
        let b = thread::Builder::new().name(name.to_owned());
        match self.stack_size {
            Some(size) => b.stack_size(size),
            None => b,
        }
    }
}

/// The connection limit of thread mode, and the GOAWAY message past it:
/// `max_connections`, lowered to what [`map_budget`] allows.
fn connection_limit(max_connections: usize) -> (usize, String) {
    match map_budget() {
        Some((budget, max_maps)) if budget < max_connections => {
            log::warn!(
                "thread mode: vm.max_map_count {max_maps} leaves room for the threads of \
                 {budget} connections, fewer than max_connections {max_connections}: \
                 connections past {budget} are refused (raise vm.max_map_count, or use \
                 event mode)"
            );
            let why = format!(
                "too many connections (limit {budget}: thread mode, vm.max_map_count {max_maps})"
            );
            (budget, why)
        }
        _ => (
            max_connections,
            format!("too many connections (limit {max_connections})"),
        ),
    }
}

/// How many connections thread mode can start threads for before the
/// process runs out of memory mappings (Linux's `vm.max_map_count`,
/// 65530 by default), with that limit; `None` where it cannot be read.
///
/// Past the limit a new thread's signal stack cannot be mapped, and the
/// standard library aborts the whole process rather than failing the
/// spawn; heap allocations fail the same way. So thread mode stops
/// short of it: a quarter of the mappings, less what the process already
/// uses, is left for everything that is not a connection thread.
fn map_budget() -> Option<(usize, usize)> {
    let max_maps: usize = std::fs::read_to_string("/proc/sys/vm/max_map_count")
        .ok()?
        .trim()
        .parse()
        .ok()?;
    let used = std::fs::read_to_string("/proc/self/maps")
        .ok()?
        .lines()
        .count();
    Some((connections_within(max_maps, used), max_maps))
}

fn connections_within(max_maps: usize, used: usize) -> usize {
    (max_maps - max_maps / 4).saturating_sub(used) / MAPS_PER_CONNECTION
}

/// Answers a connection that will not be served with GOAWAY
/// RESOURCE_EXHAUSTED in `protocol` (if it has one), best effort, and
/// closes it.
fn refuse(stream: &TcpStream, protocol: Option<&dyn Protocol>, message: &str) {
    let mut enc = Encoder::new();
    if protocol.is_some_and(|p| p.write_goaway(&mut enc, Code::RESOURCE_EXHAUSTED, message)) {
        // A fresh socket's send buffer takes a few bytes at once.
        let _ = stream.set_write_timeout(Some(REFUSAL_WRITE));
        let _ = (&*stream).write_all(enc.as_slice());
    }
    let _ = stream.shutdown(Shutdown::Write);
}

struct Acceptor {
    threaded: Arc<Threaded>,
    poll: Poll,
    listeners: Vec<(mio::net::TcpListener, Arc<Dispatcher>)>,
    backoff: AcceptBackoff,
    resume: Option<Instant>,
    /// Looks at the connection threads that found none running a request.
    idle_looks: u32,
}

impl Acceptor {
    /// Accepts until the shutdown begins; the listeners close when it
    /// returns.
    fn run(mut self) {
        let mut events = Events::with_capacity(64);
        let mut watch = None;
        while self.threaded.phase() == RUNNING {
            let resume = self
                .resume
                .map(|at| at.saturating_duration_since(Instant::now()));
            let timeout = match (resume, watch) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            };
            if let Err(e) = self.poll.poll(&mut events, timeout) {
                if e.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                log::error!("acceptor: poll failed, no longer accepting: {e}");
                return;
            }
            if self.threaded.phase() != RUNNING {
                break;
            }
            watch = self.threaded.watch_inline(&mut self.idle_looks);
            // A closed connection freed a descriptor (it wakes us), or the
            // pause is over: accepting may work again.
            let woken = events.iter().any(|e| e.token() == WAKER);
            if self.resume.is_some_and(|at| woken || Instant::now() >= at) {
                self.resume = None;
                self.threaded.accept_paused.store(false, Ordering::SeqCst);
                for i in 0..self.listeners.len() {
                    self.accept(i);
                }
            }
            for event in events.iter() {
                if event.token() != WAKER {
                    self.accept(event.token().0);
                }
            }
        }
        // Connections the kernel completed but nobody accepted would be
        // reset when the listeners close, with any request they already
        // sent: take them in, so they are told GOAWAY instead.
        self.resume = None;
        for i in 0..self.listeners.len() {
            self.accept(i);
        }
        drop(self.listeners);
        log::debug!("acceptor: listeners closed");
    }

    fn accept(&mut self, index: usize) {
        if self.resume.is_some() {
            return;
        }
        loop {
            let Some((listener, dispatcher)) = self.listeners.get(index) else {
                return;
            };
            match listener.accept() {
                Ok((stream, peer)) => {
                    self.backoff.accepted();
                    let dispatcher = dispatcher.clone();
                    self.threaded.add_conn(stream.into(), peer, dispatcher);
                }
                Err(e) => match self.backoff.failed("acceptor", &e) {
                    AcceptError::Drained => return,
                    AcceptError::Retry => {}
                    AcceptError::Pause(until) => {
                        self.resume = Some(until);
                        self.threaded.accept_paused.store(true, Ordering::SeqCst);
                        return;
                    }
                },
            }
        }
    }
}

/// A connection's reading thread: starts the writing thread, reads until
/// the connection ends, waits for the writing thread, and cleans up.
fn conn_thread(t: Arc<Threaded>, link: Arc<Link>, dispatcher: Arc<Dispatcher>, guard: LatchGuard) {
    serve_conn(t, link, dispatcher);
    // Last, once the socket is closed: the shutdown counts this thread as
    // finished from here.
    drop(guard);
}

fn serve_conn(t: Arc<Threaded>, link: Arc<Link>, dispatcher: Arc<Dispatcher>) {
    link.writer_alive.store(true, Ordering::SeqCst);
    let writer = {
        let (t2, l2) = (t.clone(), link.clone());
        t.builder(&link.writer_name).spawn(move || {
            let mut w = Writer {
                t: t2,
                link: l2,
                closing_since: None,
            };
            w.run();
            w.link.writer_alive.store(false, Ordering::SeqCst);
        })
    };
    let mut counted = 0;
    match writer {
        Ok(writer) => {
            if t.phase() != RUNNING {
                link.go_away_draining();
            }
            let reader = Reader::new(&t, &link, &dispatcher).run();
            counted = reader.counted;
            {
                let mut st = link.conn.lock();
                link.reading_done.store(true, Ordering::SeqCst);
                // The last answer wakes the writer to close.
                st.closing = true;
            }
            link.poke();
            let _ = writer.join();
        }
        Err(e) => {
            link.writer_alive.store(false, Ordering::SeqCst);
            log::error!(
                "conn {}: cannot start its writing thread: {e}",
                link.conn.id
            );
            refuse(
                link.stream(),
                dispatcher.refusal_protocol(),
                &format!("cannot start a thread for the connection: {e}"),
            );
        }
    }
    let cancelled = link.conn.close();
    if cancelled > 0 {
        log::debug!(
            "conn {} closed with {cancelled} requests in flight",
            link.conn.id
        );
    }
    let server = &t.server;
    server.buffered.fetch_sub(counted, Ordering::Relaxed);
    server.connections.fetch_sub(1, Ordering::SeqCst);
    lock(&t.links).remove(&link.conn.id);
    log::trace!("conn {} closed", link.conn.id);
    drop(link);
    // Its descriptor is free now.
    if t.accept_paused.load(Ordering::SeqCst) {
        if let Err(e) = t.waker.wake() {
            log::error!("cannot wake the acceptor: {e}");
        }
    }
}

mod link;
mod reader;
mod writer;

use link::{Link, Notify};
use reader::Reader;
use writer::Writer;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_map_budget_leaves_a_quarter_for_the_rest() {
        // Linux's default: 65530 mappings, 300 in use at start.
        assert_eq!(connections_within(65530, 300), (65530 - 16382 - 300) / 8);
        assert_eq!(connections_within(65530, 300), 6106);
        assert_eq!(connections_within(1 << 20, 300), 98266);
        assert_eq!(connections_within(1000, 5000), 0);
    }
}

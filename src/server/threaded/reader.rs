//! A connection's reading side in thread mode: the one place its socket
//! is read, decoding, dispatch, the read-side timeouts, and the lone quick
//! request run on the connection's own thread.

use super::*;

pub(super) enum Decode {
    /// Everything complete was dispatched; more bytes are needed.
    NeedBytes,
    /// A limit was reached with bytes left to decode.
    Full,
    /// The peer's last message was read ([`ConnDecoder::is_done`]).
    Ended,
    Failed(ProtocolError),
}

/// A connection's reading side: its buffer, its decoder and its timers.
/// The connection's thread owns it, and lends it to the writing thread
/// while it runs a request itself (see [`Reader::run_kept`]).
pub(super) struct Reader {
    t: Arc<Threaded>,
    link: Arc<Link>,
    dispatcher: Arc<Dispatcher>,
    limits: Limits,
    timeouts: Timeouts,
    decoder: ConnDecoder,
    /// Bytes read and not yet cut into frames.
    buf: BytesMut,
    /// Bytes of `buf` counted in the server's budget.
    pub(super) counted: usize,
    last_activity: Instant,
    frame_started: Option<Instant>,
    /// The read timeout currently set on the socket.
    armed: Option<Duration>,
    /// How much the next read may take: [`READ_CHUNK`] while reads come
    /// back full, [`SMALL_READ`] after a short one.
    chunk: usize,
    /// Requests of this read, of quick methods, that this thread runs
    /// itself (see [`Reader::decode`]).
    kept: Vec<RequestTask>,
    /// Reading is over: the peer closed, a timeout or an error ended the
    /// connection, or the server stops.
    ended: bool,
    /// The connection was closed when the last decode looked.
    closed: bool,
}

/// What [`Reader::decode_step`] leaves to do.
pub(super) enum Next {
    Read,
    /// A limit is reached: wait for room before reading.
    Full,
    End,
}

/// Hands a message of `link`'s connection to `dispatcher`. A request of a
/// quick method is handed back if `keep_quick`, for the caller to run or
/// submit; so is every request when handlers run inline.
fn dispatch(
    link: &Link,
    dispatcher: &Dispatcher,
    msg: Message<'_>,
    now: Instant,
    keep_quick: bool,
) -> Option<RequestTask> {
    let conn = &link.conn;
    let (task, earlier) = {
        let mut timers = lock(&link.timers);
        let before = timers.next();
        let task = dispatcher.on_message_deferred(conn, msg, now, &mut timers, keep_quick);
        let after = timers.next();
        let earlier = match (before, after) {
            (None, Some(_)) => true,
            (Some(b), Some(a)) => a < b,
            _ => false,
        };
        (task, earlier)
    };
    if earlier {
        {
            let _st = conn.lock();
            link.timers_changed.store(true, Ordering::SeqCst);
        }
        link.poke();
    }
    task
}

impl Reader {
    pub(super) fn new(t: &Arc<Threaded>, link: &Arc<Link>, dispatcher: &Arc<Dispatcher>) -> Reader {
        let config = &t.server.config;
        Reader {
            t: t.clone(),
            link: link.clone(),
            dispatcher: dispatcher.clone(),
            limits: config.limits.clone(),
            timeouts: config.timeouts.clone(),
            decoder: dispatcher.decoder(&link.conn),
            buf: BytesMut::new(),
            counted: 0,
            last_activity: Instant::now(),
            // A handshake is timed like a frame from the first moment.
            frame_started: link.conn.is_handshaking().then(Instant::now),
            armed: None,
            chunk: SMALL_READ,
            kept: Vec::new(),
            ended: false,
            closed: false,
        }
    }

    /// Reads until the connection ends.
    pub(super) fn run(mut self) -> Reader {
        loop {
            match self.decode_step(true) {
                Next::Read => {}
                Next::Full => {
                    if !self.wait_for_room() {
                        break;
                    }
                    continue;
                }
                Next::End => {
                    // Answered by the workers, or dropped as the connection
                    // ends: never lost in between.
                    self.submit_kept();
                    break;
                }
            }
            if !self.kept.is_empty() {
                self = self.run_kept();
                if self.ended {
                    break;
                }
                // The writing thread may have read meanwhile.
                continue;
            }
            if !self.read(None) {
                break;
            }
        }
        self.ended = true;
        self
    }

    /// Runs the requests kept from the last read on this thread (see
    /// [`task::run_kept`]). The reading side is lent to the writing thread
    /// meanwhile: should a handler run long after all, the acceptor's
    /// watch ([`Threaded::watch_inline`]) has the writing thread read in
    /// this thread's place, so that the connection's other requests,
    /// CANCEL and PING are still read, and its deadlines still fire; the
    /// kept requests not started by then go to the workers.
    fn run_kept(mut self) -> Reader {
        let link = self.link.clone();
        let t = self.t.clone();
        // A lone request has nothing waiting behind it for the writing
        // thread to take.
        let lone = (self.kept.len() == 1).then(|| self.kept.pop()).flatten();
        if lone.is_none() {
            lock(&link.kept).extend(self.kept.drain(..));
        }
        link.inline_since.store(t.clock(), Ordering::SeqCst);
        t.note_inline();
        *lock(&link.lent) = Some(self);
        match lone {
            Some(task) => {
                let mut lone = Some(task);
                task::run_kept(|| lone.take());
            }
            None => task::run_kept(|| lock(&link.kept).pop_front()),
        }
        link.inline_since.store(0, Ordering::SeqCst);
        link.take_back()
    }

    /// Sends the requests kept to run here to the workers instead.
    fn submit_kept(&mut self) {
        for task in self.kept.drain(..) {
            self.dispatcher.submit(task);
        }
    }

    /// Decodes and dispatches what the buffer holds, the requests of one
    /// read in one batch. With `keep`, requests this thread runs itself
    /// are left in `kept`.
    fn decode_step(&mut self, keep: bool) -> Next {
        let server = self.t.server.clone();
        let decoded = match &server.pool {
            Some(pool) => pool.batch(|| self.decode(keep)),
            None => self.decode(keep),
        };
        match decoded {
            Decode::NeedBytes => {}
            Decode::Full => return Next::Full,
            Decode::Ended => return Next::End,
            Decode::Failed(e) => {
                log::debug!(
                    "conn {} ({:?}) protocol error: {e}",
                    self.link.conn.id,
                    self.link.conn.peer
                );
                self.link.goaway(Code::INTERNAL, &e.to_string());
                return Next::End;
            }
        }
        if self.t.phase() == STOPPING || self.closed {
            return Next::End;
        }
        Next::Read
    }

    /// Reads once from the socket, waiting at most `wait` if given, else
    /// until the idle or whole-frame timeout. False if reading is over.
    ///
    /// This is the one place thread mode reads a socket.
    fn read(&mut self, wait: Option<Duration>) -> bool {
        match wait {
            Some(wait) => {
                self.armed = None;
                if let Err(e) = self.link.stream().set_read_timeout(Some(wait)) {
                    log::debug!("conn {}: set_read_timeout: {e}", self.link.conn.id);
                    self.link.close_hard();
                    return false;
                }
            }
            None => {
                if !self.arm() {
                    return false;
                }
            }
        }
        // Into the frame buffer, which only holds memory while it holds
        // bytes (see `account`), through the transport.
        match self.link.conn.read_blocking(&mut self.buf, self.chunk) {
            Ok(Received::Eof) => {
                self.peer_closed();
                false
            }
            Ok(Received::Failed(e)) => {
                log::debug!(
                    "conn {} ({:?}): {e}",
                    self.link.conn.id,
                    self.link.conn.peer
                );
                // The writer sends what the transport has left to say (a
                // TLS alert), then closes.
                false
            }
            Ok(Received::Bytes(n)) => {
                self.last_activity = Instant::now();
                self.t
                    .server
                    .bytes_read
                    .fetch_add(n as u64, Ordering::Relaxed);
                self.chunk = if n < SMALL_READ {
                    SMALL_READ
                } else {
                    READ_CHUNK
                };
                true
            }
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) =>
            {
                self.on_timeout()
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => true,
            Err(e) => {
                if self.t.phase() != STOPPING {
                    log::debug!("conn {} read: {e}", self.link.conn.id);
                }
                self.link.close_hard();
                false
            }
        }
    }

    /// The writing thread reads in the place of the connection's thread,
    /// whose handler runs long, until that thread wants its reading side
    /// back: every request goes to the workers, and deadlines fire
    /// between reads.
    pub(super) fn cover(mut self) -> Reader {
        let tick = self.t.tick.min(COVER_READ);
        while !self.ended && !self.link.owner_back.load(Ordering::SeqCst) {
            let next_timer = {
                let mut timers = lock(&self.link.timers);
                timers.expire_due(Instant::now(), |_| {});
                timers.next()
            };
            self.link.flush();
            match self.decode_step(false) {
                Next::Read => {}
                // The connection's thread waits for room itself.
                Next::Full => break,
                Next::End => {
                    self.ended = true;
                    break;
                }
            }
            let wait = next_timer.map_or(tick, |at| {
                at.saturating_duration_since(Instant::now())
                    .clamp(Duration::from_millis(1), tick)
            });
            if !self.read(Some(wait)) {
                self.ended = true;
            }
        }
        // The connection's thread sets its own read timeout again.
        self.armed = None;
        self
    }

    /// Whether another request may be read now: as the dispatch of the
    /// last request found it, if that was a request, else under the lock.
    fn has_room(&self) -> bool {
        let conn = &self.link.conn;
        (conn.room_after.load(Ordering::Relaxed) || !conn.lock().is_full(&self.limits))
            && self.t.server.has_read_budget()
    }

    /// Cuts messages off the buffer and dispatches them until more bytes
    /// are needed or a limit is reached.
    ///
    /// A read that brought one request alone, of a quick method, leaves it
    /// in `kept`, for this thread to run once the batch is sent: handing
    /// it to a worker would cost a thread wake-up for no gain, since this
    /// thread has nothing else to do until the next read. A read of more
    /// requests sends them to the workers, so that none waits behind a
    /// handler here, unless the workers are behind (requests wait in the
    /// queue that no worker has taken): then they would wait anyway, and
    /// this thread runs those of quick methods itself, saving a hand-off
    /// each (for a bounded time, see [`task::run_kept`]).
    fn decode(&mut self, keep: bool) -> Decode {
        let now = Instant::now();
        let mut result = Decode::NeedBytes;
        let inline_all = self.t.server.pool.is_none();
        let behind = keep && !inline_all && self.dispatcher.workers_behind(now);
        let mut requests = 0usize;
        loop {
            if self.buf.is_empty() && !self.decoder.is_mid_message(&self.buf) {
                break;
            }
            if !self.has_room() {
                result = Decode::Full;
                break;
            }
            let (link, dispatcher) = (&*self.link, &*self.dispatcher);
            link.conn.room_after.store(false, Ordering::Relaxed);
            let kept = &mut self.kept;
            let requests = &mut requests;
            let mut dispatch = |msg: Message<'_>| {
                let is_request = matches!(msg, Message::Request { .. });
                if is_request {
                    *requests += 1;
                    if *requests == 2 && !behind {
                        for first in kept.drain(..) {
                            dispatcher.submit(first);
                        }
                    }
                }
                let keep = keep && is_request && !inline_all && (*requests == 1 || behind);
                if let Some(task) = dispatch(link, dispatcher, msg, now, keep) {
                    if inline_all {
                        task.run_inline();
                    } else {
                        kept.push(task);
                    }
                }
            };
            match self
                .decoder
                .decode(&mut self.buf, &link.conn, &mut dispatch)
            {
                Ok(true) if self.decoder.is_done() => {
                    result = Decode::Ended;
                    break;
                }
                Ok(true) => {}
                Ok(false) => break,
                Err(e) => {
                    result = Decode::Failed(e);
                    break;
                }
            }
        }
        // Only a lone request stays for this thread (or the requests of a
        // read while the workers are behind): not one followed by more
        // bytes, nor any before the connection's end or a limit.
        if (!self.buf.is_empty() && !behind) || !matches!(result, Decode::NeedBytes) {
            self.submit_kept();
        }
        self.account(now);
        // Errors, PONGs and refusals went straight into the output, and
        // the transport may have something to send (a TLS handshake).
        let (flushed, closed) = {
            let st = self.link.conn.lock();
            (st.is_flushed(), st.closed)
        };
        self.closed = closed;
        if !flushed {
            self.link.flush();
        }
        result
    }

    /// Keeps the budget's count and the frame timer in step with `buf`.
    fn account(&mut self, now: Instant) {
        // An idle connection, or one stalled on a partial frame, keeps no
        // read-sized buffer: thousands of them must cost next to nothing.
        if self.buf.capacity() > KEEP_PARTIAL && self.buf.len() <= KEEP_PARTIAL {
            self.buf = BytesMut::from(&self.buf[..]);
        }
        self.t
            .server
            .recount_buffered(&mut self.counted, self.buf.len());
        let mid = self.decoder.is_mid_message(&self.buf) || self.link.conn.is_handshaking();
        self.frame_started = if mid {
            self.frame_started.or(Some(now))
        } else {
            None
        };
    }

    /// Waits until a limit clears; false if the connection is ending.
    fn wait_for_room(&mut self) -> bool {
        let limits = &self.limits;
        let mut st = self.link.conn.lock();
        loop {
            if st.closed || self.t.phase() == STOPPING {
                return false;
            }
            // Workers wake us only when nobody else has been woken.
            st.notified = false;
            let full = st.is_full(limits);
            if !full && self.t.server.has_read_budget() {
                st.read_paused = false;
                return true;
            }
            st.read_paused = full;
            // The shared budget has no wake-up of its own: recheck it.
            let recheck = if full { self.t.tick } else { BUDGET_RECHECK };
            st = self.link.wait(st, Some(recheck));
        }
    }

    /// Sets the socket's read timeout for the next read, when it must
    /// change by more than a tick; false if the socket is gone.
    fn arm(&mut self) -> bool {
        let now = Instant::now();
        let due = match self.frame_started {
            Some(at) => at + self.frame_limit(),
            None => self.last_activity + self.timeouts.idle,
        };
        let tick = self.t.tick;
        // Past due but busy (requests in flight): look again in a tick.
        let want = if due <= now {
            tick
        } else {
            (due - now).max(Duration::from_millis(1))
        };
        let keep = self
            .armed
            .is_some_and(|armed| want + tick >= armed && want <= armed + tick);
        if keep {
            return true;
        }
        match self.link.stream().set_read_timeout(Some(want)) {
            Ok(()) => {
                self.armed = Some(want);
                true
            }
            Err(e) => {
                log::debug!("conn {}: set_read_timeout: {e}", self.link.conn.id);
                self.link.close_hard();
                false
            }
        }
    }

    /// A read timed out: enforces the whole-frame and idle timeouts.
    /// False if the connection is ending.
    fn on_timeout(&mut self) -> bool {
        let now = Instant::now();
        let t = &self.timeouts;
        if let Some(at) = self.frame_started {
            let limit = self.frame_limit();
            if now.saturating_duration_since(at) >= limit {
                log::debug!(
                    "conn {} sent no whole frame (or handshake) in {limit:?}, closing",
                    self.link.conn.id,
                );
                self.link.close_hard();
                return false;
            }
            return true;
        }
        let Some(since) = self.link.conn.lock().idle_since(self.last_activity) else {
            return true;
        };
        // The next read timeout counts from the last answer, if later.
        self.last_activity = since;
        if now.saturating_duration_since(since) < t.idle {
            return true;
        }
        let msg = format!("idle for {} ms", t.idle.as_millis());
        self.link.goaway(Code::UNAVAILABLE, &msg);
        false
    }

    /// The whole-frame limit now: the handshake's while one is under way.
    fn frame_limit(&self) -> Duration {
        self.timeouts.frame_limit(self.link.conn.is_handshaking())
    }

    fn peer_closed(&mut self) {
        if self.t.phase() == STOPPING {
            // Our own shutdown woke the read.
            return;
        }
        if let Err(e) = self.decoder.finish(&self.buf, &self.link.conn) {
            log::debug!("conn {}: {e}", self.link.conn.id);
            self.link.goaway(Code::INTERNAL, &e.to_string());
        }
    }
}

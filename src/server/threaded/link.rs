//! One connection as its two threads and the coordinator see it
//! ([`Link`]), and the wake hook that reaches its threads ([`Notify`]).

use super::*;

/// Wakes a connection's threads: the wake hook of its [`ConnShared`].
pub(super) struct Notify {
    pub(super) cond: Condvar,
}

impl Wake for Notify {
    fn wake(&self, _conn: &Arc<ConnShared>) {
        self.cond.notify_all();
    }

    /// Whoever has an answer writes it, with sends that never wait (see
    /// `connection::SEND_NOW`); the writing thread takes over only what a
    /// full socket buffer left.
    fn workers_write(&self) -> bool {
        SEND_NOW.is_some()
    }

    fn wake_when_blocked(&self) -> bool {
        true
    }
}

/// One connection as its two threads and the coordinator see it.
pub(super) struct Link {
    /// Its socket (blocking) is read by the reading thread, written by the
    /// writing thread, and shut down by the coordinator.
    pub(super) conn: Arc<ConnShared>,
    pub(super) notify: Arc<Notify>,
    /// Deadlines of the connection's requests: pushed by the reading
    /// thread, fired by the writing thread.
    pub(super) timers: Mutex<DeadlineQueue>,
    /// Set, under the connection's lock, when an earlier deadline came in.
    pub(super) timers_changed: AtomicBool,
    /// The reading thread is done: close once everything is answered.
    pub(super) reading_done: AtomicBool,
    pub(super) writer_alive: AtomicBool,
    pub(super) reader_name: String,
    pub(super) writer_name: String,
    /// The reading side, while the connection's thread runs a request
    /// itself: the writing thread may take it to read meanwhile.
    pub(super) lent: Mutex<Option<Reader>>,
    /// Notified when the writing thread gives the reading side back.
    pub(super) returned: Condvar,
    /// When ([`Threaded::clock`]) the connection's thread started the
    /// request it runs itself; 0 when it runs none.
    pub(super) inline_since: AtomicU64,
    /// The `inline_since` the acceptor already asked the writing thread to
    /// cover.
    pub(super) cover_asked: AtomicU64,
    /// The acceptor asks the writing thread to read in the connection
    /// thread's place.
    pub(super) cover_wanted: AtomicBool,
    /// The connection's thread wants its reading side back.
    pub(super) owner_back: AtomicBool,
    /// Requests the connection's thread kept to run itself and has not
    /// started: the writing thread sends them to the workers when it
    /// covers.
    pub(super) kept: Mutex<VecDeque<RequestTask>>,
}

impl Link {
    /// Takes the reading side back once the request this thread ran is
    /// done, waiting for the writing thread's current read if it covers.
    pub(super) fn take_back(&self) -> Reader {
        let mut lent = lock(&self.lent);
        loop {
            if let Some(reader) = lent.take() {
                self.owner_back.store(false, Ordering::SeqCst);
                return reader;
            }
            self.owner_back.store(true, Ordering::SeqCst);
            lent = self.returned.wait(lent).unwrap_or_else(|e| e.into_inner());
        }
    }

    /// The writing thread: reads in the connection thread's place, if the
    /// reading side is still lent.
    pub(super) fn cover(&self) {
        let Some(reader) = lock(&self.lent).take() else {
            return;
        };
        log::debug!(
            "conn {}: a quick method's handler runs long on the connection's thread; \
             its writing thread reads meanwhile",
            self.conn.id
        );
        // The requests waiting behind that handler go to the workers.
        let waiting: Vec<RequestTask> = lock(&self.kept).drain(..).collect();
        for task in waiting {
            self.conn.dispatcher.submit(task);
        }
        let reader = reader.cover();
        *lock(&self.lent) = Some(reader);
        self.returned.notify_all();
    }

    pub(super) fn wait<'a>(
        &self,
        st: MutexGuard<'a, ConnState>,
        timeout: Option<Duration>,
    ) -> MutexGuard<'a, ConnState> {
        match timeout {
            Some(t) => {
                self.notify
                    .cond
                    .wait_timeout(st, t)
                    .unwrap_or_else(|e| e.into_inner())
                    .0
            }
            None => self.notify.cond.wait(st).unwrap_or_else(|e| e.into_inner()),
        }
    }

    pub(super) fn poke(&self) {
        self.notify.cond.notify_all();
    }

    /// Writes what is pending from this thread, without waiting; the
    /// writing thread is woken for what the socket would not take.
    pub(super) fn flush(&self) {
        dispatch::flush(&self.conn);
    }

    /// Appends a GOAWAY unless the connection is closed.
    pub(super) fn goaway(&self, code: Code, message: &str) {
        {
            let mut st = self.conn.lock();
            let protocol = st.protocol;
            if st.closed || !protocol.write_goaway(&mut st.out, code, message) {
                return;
            }
        }
        self.flush();
        self.poke();
    }

    /// The shutdown's GOAWAY, once: new requests are refused from now on.
    pub(super) fn go_away_draining(&self) {
        {
            let mut st = self.conn.lock();
            if st.closed || st.draining {
                return;
            }
            st.draining = true;
            // Without a GOAWAY, the writer closes the connection once
            // nothing is in flight: the last answer wakes it.
            let protocol = st.protocol;
            if !protocol.write_goaway(&mut st.out, Code::UNAVAILABLE, "server shutting down") {
                st.closing = true;
            }
        }
        self.flush();
        self.poke();
    }

    /// Drops the connection now: in-flight requests are cancelled, both
    /// threads stop.
    pub(super) fn close_hard(&self) {
        // Also shuts the socket down, which ends a blocked read or write.
        self.conn.close();
        self.poke();
    }

    pub(super) fn stream(&self) -> &TcpStream {
        &self.conn.stream
    }
}

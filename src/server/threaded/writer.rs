//! A connection's writing thread in thread mode: what the socket would
//! not take at once, deadlines, reading in the connection thread's place
//! while it runs a long call, and the close.

use super::*;

pub(super) struct Writer {
    pub(super) t: Arc<Threaded>,
    pub(super) link: Arc<Link>,
    pub(super) closing_since: Option<Instant>,
}

pub(super) enum WriterEnd {
    /// Everything answered and written: close the connection.
    Done,
    /// Someone else closed the connection.
    Closed,
    /// Writing failed or stalled, or closing took too long: drop it.
    Abort,
}

pub(super) enum Step {
    Write,
    /// Read in the place of the connection's thread (see `Link::cover`).
    Cover,
    /// A deadline is due, or an earlier one came in.
    Timers,
    End(WriterEnd),
}

impl Writer {
    pub(super) fn run(&mut self) {
        let stall = self.t.server.config.timeouts.write_stall;
        // A write that takes no byte for this long fails with WouldBlock:
        // the write-stall limit, enforced by the socket.
        if let Err(e) = self.link.stream().set_write_timeout(Some(stall)) {
            log::debug!("conn {}: set_write_timeout: {e}", self.link.conn.id);
            self.link.close_hard();
            return;
        }
        match self.serve() {
            // Closing after the last byte sends the FIN behind it.
            WriterEnd::Done | WriterEnd::Abort => self.link.close_hard(),
            WriterEnd::Closed => {}
        }
    }

    /// Writes output as it comes, fires deadlines, and decides when the
    /// connection is over.
    fn serve(&mut self) -> WriterEnd {
        let conn = self.link.conn.clone();
        loop {
            let next_timer = {
                let mut timers = lock(&self.link.timers);
                // Expired requests are answered into the output.
                timers.expire_due(Instant::now(), |_| {});
                timers.next()
            };
            match self.next_step(next_timer) {
                Step::Write => match conn.flush(true) {
                    Flush::Done => {
                        // Room may have opened up for a reader paused on
                        // pending bytes.
                        if conn.lock().read_paused {
                            self.link.poke();
                        }
                    }
                    Flush::Blocked => {
                        log::debug!(
                            "conn {}: write stalled for {:?}, closing",
                            conn.id,
                            self.t.server.config.timeouts.write_stall
                        );
                        return WriterEnd::Abort;
                    }
                    Flush::Failed => {
                        return if conn.lock().closed {
                            WriterEnd::Closed
                        } else {
                            WriterEnd::Abort
                        };
                    }
                },
                Step::Timers => {}
                Step::Cover => self.link.cover(),
                Step::End(end) => return end,
            }
        }
    }

    /// Waits until there is something to do.
    fn next_step(&mut self, next_timer: Option<Instant>) -> Step {
        let link = self.link.clone();
        let threaded = self.t.clone();
        let t = &threaded.server.config.timeouts;
        let mut st = link.conn.lock();
        loop {
            // Whoever looks at the state takes the pending wake-up.
            st.notified = false;
            if st.closed {
                return Step::End(WriterEnd::Closed);
            }
            if st.write_failed {
                return Step::End(WriterEnd::Abort);
            }
            if !st.is_flushed() {
                return Step::Write;
            }
            let now = Instant::now();
            let mut wait = next_timer.map(|at| at.saturating_duration_since(now));
            if threaded.phase() == STOPPING {
                // The shutdown answered what was in flight before saying
                // STOPPING: with the output flushed, this is the end.
                return Step::End(WriterEnd::Done);
            }
            if st.draining && !st.protocol.has_goaway() && st.active() == 0 {
                // Without a GOAWAY, a client learns of the shutdown only
                // by the connection closing.
                return Step::End(WriterEnd::Done);
            }
            if link.reading_done.load(Ordering::SeqCst) {
                if st.active() == 0 {
                    return Step::End(WriterEnd::Done);
                }
                let since = *self.closing_since.get_or_insert(now);
                let limit = t.frame.max(t.idle);
                let left = limit.saturating_sub(now.saturating_duration_since(since));
                if left.is_zero() {
                    log::debug!(
                        "conn {}: still {} requests in flight {limit:?} after the peer finished, closing",
                        link.conn.id,
                        st.active()
                    );
                    return Step::End(WriterEnd::Abort);
                }
                wait = Some(wait.map_or(left, |w| w.min(left)));
            }
            if link.timers_changed.swap(false, Ordering::SeqCst) {
                return Step::Timers;
            }
            if link.cover_wanted.swap(false, Ordering::SeqCst) {
                return Step::Cover;
            }
            if next_timer.is_some_and(|at| now >= at) {
                return Step::Timers;
            }
            st = link.wait(st, wait);
        }
    }
}

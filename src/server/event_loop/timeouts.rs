//! What an event loop does on its clock rather than on readiness: the
//! deadlines that fell due, the sweep of idle, stalled and slow
//! connections, and the shutdown's phases.

use std::time::Instant;

use super::*;

impl EventLoop {
    pub(super) fn fire_timers(&mut self, now: Instant) {
        let mut touched = std::mem::take(&mut self.touched);
        let conns = &self.conns;
        self.timers.expire_due(now, |c| match conns.get(c.slot) {
            Some(conn) if Arc::ptr_eq(&conn.shared, c) => touched.push(c.slot),
            _ => {}
        });
        for slot in touched.drain(..) {
            self.flush(slot);
        }
        self.touched = touched;
        if self.accept_resume.is_some_and(|t| t <= now) {
            self.accept_resume = Some(now);
            self.resume_accepting();
        }
        if self.budget_paused && self.server.has_read_budget() {
            self.budget_paused = false;
            let paused: Vec<usize> = self
                .conns
                .iter()
                .filter(|(_, c)| c.paused)
                .map(|(k, _)| k)
                .collect();
            for slot in paused {
                self.on_readable_resume(slot);
            }
        }
        if now >= self.next_sweep {
            self.next_sweep = now + self.sweep_every;
            self.sweep(now);
        }
    }

    /// Enforces the idle, whole-frame, write-stall and closing timeouts.
    fn sweep(&mut self, now: Instant) {
        let t = self.server.config.timeouts.clone();
        let mut stalled = Vec::new();
        let mut idle = Vec::new();
        for (slot, c) in self.conns.iter() {
            let since = |at: Option<Instant>| at.map(|a| now.saturating_duration_since(a));
            let (blocked_since, idle_since) = {
                let st = c.shared.lock();
                (st.write_blocked_since, st.idle_since(c.last_activity))
            };
            if since(blocked_since).is_some_and(|d| d >= t.write_stall) {
                log::debug!("{}: conn {} write stalled, closing", self.name, c.shared.id);
                stalled.push(slot);
            } else if since(c.frame_started)
                .is_some_and(|d| d >= t.frame_limit(c.shared.is_handshaking()))
            {
                log::debug!(
                    "{}: conn {} sent no whole frame (or handshake) in {:?}, closing",
                    self.name,
                    c.shared.id,
                    t.frame_limit(c.shared.is_handshaking())
                );
                stalled.push(slot);
            } else if since(c.closing_since).is_some_and(|d| d >= t.frame.max(t.idle)) {
                stalled.push(slot);
            } else if !c.closing
                && c.frame_started.is_none()
                && idle_since.is_some_and(|at| now.saturating_duration_since(at) >= t.idle)
            {
                idle.push(slot);
            }
        }
        for slot in stalled {
            self.close(slot);
        }
        for slot in idle {
            if let Some(c) = self.conns.get_mut(slot) {
                c.read_open = false;
            }
            let msg = format!("idle for {} ms", t.idle.as_millis());
            self.goaway(slot, Code::UNAVAILABLE, &msg);
            self.start_closing(slot);
        }
    }

    /// Follows the server's shutdown; true when the loop should exit.
    pub(super) fn handle_phase(&mut self, now: Instant) -> bool {
        let phase = self.shared.phase.load(Ordering::SeqCst);
        if phase == self.phase {
            return self.phase == STOPPING && self.stopped(now);
        }
        if self.phase == RUNNING && phase >= DRAINING {
            // Connections the kernel has completed but nobody accepted yet
            // would be reset when the listener closes, taking any request
            // they already sent with them. Take them in first, so they are
            // told GOAWAY and their requests answered UNAVAILABLE below.
            self.accept_resume = None;
            for index in 0..self.listeners.len() {
                self.accept(index);
            }
            self.phase = DRAINING;
            for entry in self.listeners.iter_mut() {
                if let Some(mut e) = entry.take() {
                    let _ = self.poll.registry().deregister(&mut e.listener);
                }
            }
            let slots: Vec<usize> = self.conns.iter().map(|(k, _)| k).collect();
            for slot in slots {
                self.goaway_draining(slot);
            }
        }
        if phase == STOPPING {
            self.phase = STOPPING;
            self.stop_deadline = Some(now + FINAL_FLUSH);
            let slots: Vec<usize> = self.conns.iter().map(|(k, _)| k).collect();
            for slot in slots {
                if let Some(c) = self.conns.get_mut(slot) {
                    c.read_open = false;
                    c.closing = true;
                    dispatch::end_for_shutdown(&c.shared, &self.server);
                }
                self.flush(slot);
            }
            return self.stopped(now);
        }
        false
    }

    fn stopped(&self, now: Instant) -> bool {
        self.conns.is_empty() || self.stop_deadline.is_some_and(|d| now >= d)
    }

    pub(super) fn close_all(&mut self) {
        let slots: Vec<usize> = self.conns.iter().map(|(k, _)| k).collect();
        for slot in slots {
            self.close(slot);
        }
    }
}

//! One shutdown under way, as the coordinator sees it: the triggers that
//! come in meanwhile, the waits a forcing one cuts short, and the thread
//! the hooks run on.

use std::panic::{self, AssertUnwindSafe};
use std::thread;
use std::time::{Duration, Instant};

use crossbeam_channel::{select, unbounded, Receiver, RecvTimeoutError};

use super::{Hook, Target, Trigger};
use crate::pool::panic_message;

/// How often the drain wait looks for a forcing trigger.
const FORCE_POLL: Duration = Duration::from_millis(50);
/// Beyond their budget, how long the hooks are waited for before their
/// thread is reported stuck.
const HOOKS_MARGIN: Duration = Duration::from_millis(100);

/// The coordinator's view of one shutdown in progress.
pub(super) struct Run<'a> {
    pub(super) rx: &'a Receiver<Trigger>,
    pub(super) signals: u32,
    pub(super) forced: bool,
}

pub(super) struct HooksOutcome {
    pub(super) run: usize,
    pub(super) panicked: usize,
    pub(super) stuck: Option<String>,
}

impl Run<'_> {
    fn note(&mut self, trigger: Trigger) {
        match trigger {
            Trigger::Force => self.forced = true,
            Trigger::Signal => {
                self.signals += 1;
                if self.signals >= 2 {
                    self.forced = true;
                }
            }
            // The API's second call waits for this same shutdown.
            Trigger::Graceful(_) => {}
        }
        if self.forced {
            log::warn!("shutdown: forced, stopping now");
        }
    }

    /// Takes the triggers that came in meanwhile.
    pub(super) fn pump(&mut self) {
        while let Ok(t) = self.rx.try_recv() {
            self.note(t);
        }
    }

    pub(super) fn sleep_until(&mut self, until: Instant) {
        while !self.forced {
            let now = Instant::now();
            if now >= until {
                return;
            }
            match self.rx.recv_timeout(until - now) {
                Ok(t) => self.note(t),
                Err(RecvTimeoutError::Timeout) => return,
                Err(RecvTimeoutError::Disconnected) => {
                    thread::sleep(until.saturating_duration_since(Instant::now()));
                    return;
                }
            }
        }
    }

    pub(super) fn wait_drained(&mut self, target: &dyn Target, until: Instant) -> bool {
        loop {
            self.pump();
            if self.forced {
                return false;
            }
            let now = Instant::now();
            let slice = until.min(now + FORCE_POLL);
            if target.wait_drained(slice) {
                return true;
            }
            if Instant::now() >= until {
                return false;
            }
        }
    }

    /// Runs the hooks on a thread of their own, newest first, so a hook
    /// that hangs delays the shutdown by its budget at most.
    pub(super) fn run_hooks(
        &mut self,
        mut hooks: Vec<Hook>,
        budget: Duration,
        prefix: &str,
    ) -> HooksOutcome {
        let mut outcome = HooksOutcome {
            run: 0,
            panicked: 0,
            stuck: None,
        };
        if hooks.is_empty() {
            return outcome;
        }
        let until = Instant::now() + budget;
        let name = format!("{prefix}-hooks");
        let (tx, done) = unbounded::<bool>();
        let spawned = thread::Builder::new().name(name.clone()).spawn(move || {
            while let Some(hook) = hooks.pop() {
                let left = until.saturating_duration_since(Instant::now());
                let ok = match panic::catch_unwind(AssertUnwindSafe(move || hook(left))) {
                    Ok(()) => true,
                    Err(payload) => {
                        log::error!(
                            "shutdown: a shutdown hook panicked: {}",
                            panic_message(&*payload)
                        );
                        false
                    }
                };
                let _ = tx.send(ok);
            }
        });
        let handle = match spawned {
            Ok(h) => h,
            Err(e) => {
                log::error!("shutdown: cannot start the hooks thread, hooks skipped: {e}");
                return outcome;
            }
        };
        let give_up = until + HOOKS_MARGIN;
        loop {
            if self.forced {
                break;
            }
            let now = Instant::now();
            if now >= give_up {
                break;
            }
            select! {
                recv(done) -> msg => match msg {
                    Ok(true) => outcome.run += 1,
                    Ok(false) => outcome.panicked += 1,
                    // Every hook has run and the thread is ending.
                    Err(_) => {
                        let _ = handle.join();
                        return outcome;
                    }
                },
                recv(self.rx) -> t => {
                    if let Ok(t) = t {
                        self.note(t);
                    }
                }
                default(give_up - now) => {}
            }
        }
        // Count what finished meanwhile; the thread is left to itself.
        for ok in done.try_iter() {
            if ok {
                outcome.run += 1;
            } else {
                outcome.panicked += 1;
            }
        }
        if handle.is_finished() {
            let _ = handle.join();
        } else {
            log::error!("shutdown: the shutdown hooks did not finish within {budget:?}");
            outcome.stuck = Some(name);
        }
        outcome
    }
}

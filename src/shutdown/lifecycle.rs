//! The state a server's coordinator and its shutdown handles share: the
//! triggers, the report once it is out, and the steps the coordinator runs
//! between the two.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use crossbeam_channel::{bounded, unbounded, Receiver, Sender};

use super::run::Run;
use super::signals::{self, SignalSubscription};
use super::{lock, Plan, ShutdownReport, Target, Trigger};
use crate::error::Error;

/// How long handlers get to return once the shutdown cancelled them.
const CANCEL_GRACE: Duration = Duration::from_secs(1);
/// The same, when the shutdown is forced.
pub(super) const FORCE_GRACE: Duration = Duration::from_millis(100);

/// The state the coordinator and every
/// [`ShutdownHandle`](super::ShutdownHandle) share.
pub(crate) struct Lifecycle {
    triggers: Sender<Trigger>,
    receiver: Mutex<Option<Receiver<Trigger>>>,
    started: AtomicBool,
    report: Mutex<Option<ShutdownReport>>,
    done: Condvar,
    /// The subscription to SIGINT/SIGTERM, dropped when the shutdown ends.
    signals: Mutex<Option<SignalSubscription>>,
}

impl Lifecycle {
    pub fn new() -> Arc<Lifecycle> {
        let (tx, rx) = unbounded();
        Arc::new(Lifecycle {
            triggers: tx,
            receiver: Mutex::new(Some(rx)),
            started: AtomicBool::new(false),
            report: Mutex::new(None),
            done: Condvar::new(),
            signals: Mutex::new(None),
        })
    }

    /// Forwards SIGINT and SIGTERM to this server until its shutdown ends.
    pub fn handle_signals(&self) -> Result<(), Error> {
        let sub = signals::subscribe(self.triggers.clone())?;
        *lock(&self.signals) = Some(sub);
        Ok(())
    }

    pub fn trigger(&self, trigger: Trigger) {
        self.started.store(true, Ordering::SeqCst);
        // The coordinator holds the receiver until it has published its
        // report; a trigger after that has nothing left to do.
        let _ = self.triggers.send(trigger);
    }

    pub fn is_started(&self) -> bool {
        self.started.load(Ordering::SeqCst)
    }

    pub fn report(&self) -> Option<ShutdownReport> {
        lock(&self.report).clone()
    }

    pub fn wait(&self) -> ShutdownReport {
        let mut report = lock(&self.report);
        loop {
            if let Some(r) = report.as_ref() {
                return r.clone();
            }
            report = self.done.wait(report).unwrap_or_else(|e| e.into_inner());
        }
    }

    pub fn wait_timeout(&self, timeout: Duration) -> Option<ShutdownReport> {
        let until = Instant::now().checked_add(timeout);
        let mut report = lock(&self.report);
        loop {
            if let Some(r) = report.as_ref() {
                return Some(r.clone());
            }
            let now = Instant::now();
            match until {
                Some(u) if now >= u => return None,
                Some(u) => {
                    report = self
                        .done
                        .wait_timeout(report, u - now)
                        .unwrap_or_else(|e| e.into_inner())
                        .0
                }
                None => report = self.done.wait(report).unwrap_or_else(|e| e.into_inner()),
            }
        }
    }

    /// Publishes a report saying the shutdown failed, unless one is out:
    /// the coordinator panicked (a bug), and its waiters must not hang.
    pub fn fail(&self, why: &str) {
        log::error!("shutdown: the coordinator failed: {why}");
        *lock(&self.signals) = None;
        let mut report = lock(&self.report);
        if report.is_none() {
            *report = Some(ShutdownReport {
                forced: true,
                timed_out: true,
                ..ShutdownReport::default()
            });
        }
        drop(report);
        self.done.notify_all();
    }

    /// Waits for the first trigger, then runs the shutdown (on the
    /// coordinator thread).
    pub fn coordinate(&self, target: &dyn Target, plan: Plan) {
        let Some(rx) = lock(&self.receiver).take() else {
            return;
        };
        // Never disconnected: `self.triggers` is a sender.
        let first = rx.recv().unwrap_or(Trigger::Graceful(None));
        self.execute(target, plan, first, &rx);
    }

    /// Runs the shutdown on this thread, now (when the server could not
    /// start its coordinator).
    pub fn execute_now(&self, target: &dyn Target, plan: Plan) {
        let rx = lock(&self.receiver).take();
        let (_tx, fallback) = bounded(0);
        self.execute(
            target,
            plan,
            Trigger::Graceful(None),
            rx.as_ref().unwrap_or(&fallback),
        );
    }

    fn execute(&self, target: &dyn Target, plan: Plan, first: Trigger, rx: &Receiver<Trigger>) {
        self.started.store(true, Ordering::SeqCst);
        let start = Instant::now();
        let mut run = Run {
            rx,
            signals: u32::from(first == Trigger::Signal),
            forced: first == Trigger::Force,
        };
        let timeout = match first {
            Trigger::Graceful(Some(t)) => t,
            _ => plan.timeout,
        };
        log::info!("shutdown: begun ({first:?})");

        // 0. NOT_SERVING, then the drain delay with everything else as usual.
        target.stop_serving();
        if !plan.drain_delay.is_zero() {
            log::info!(
                "shutdown: draining for {:?} before going away",
                plan.drain_delay
            );
            run.sleep_until(start + plan.drain_delay);
        }
        // 1-3. Listeners closed, GOAWAY sent, new requests refused.
        target.go_away();
        let deadline = Instant::now() + timeout;
        // 4. Requests already read finish, until the timeout.
        let drained = run.wait_drained(target, deadline);
        if !drained {
            log::warn!("shutdown: the shutdown timeout ({timeout:?}) ran out");
        }
        // 4-5. What is left is refused or cancelled; connections flushed
        // and closed; I/O threads joined.
        let mut stuck = target.stop_io(run.forced);
        run.pump();
        // Running handlers have just been cancelled: give them a moment to
        // notice, even when the timeout is spent; a forced stop gives them
        // only a glimpse.
        let now = Instant::now();
        let workers_until = if run.forced {
            now + FORCE_GRACE
        } else {
            deadline.max(now + CANCEL_GRACE)
        };
        stuck.extend(target.stop_workers(workers_until));
        run.pump();
        // 6. The application's hooks, in reverse order, after the last
        // handler has finished.
        let hooks = run.run_hooks(plan.hooks, plan.hooks_budget, &plan.thread_name);
        if let Some(name) = hooks.stuck {
            stuck.push(name);
        }
        let tally = target.tally();
        let report = ShutdownReport {
            drained: tally.drained,
            refused: tally.refused,
            abandoned: tally.abandoned,
            cancelled: tally.cancelled,
            stuck_threads: stuck,
            hooks_run: hooks.run,
            hooks_panicked: hooks.panicked,
            forced: run.forced,
            timed_out: !drained,
            elapsed: start.elapsed(),
        };
        if report.stuck_threads.is_empty() {
            log::info!("shutdown: done: {report:?}");
        } else {
            log::error!(
                "shutdown: threads did not stop in time: {:?}",
                report.stuck_threads
            );
        }
        *lock(&self.signals) = None;
        *lock(&self.report) = Some(report);
        self.done.notify_all();
    }
}

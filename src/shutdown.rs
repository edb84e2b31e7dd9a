//! The shutdown coordinator: the steps of a graceful shutdown, in order,
//! whatever started it.
//!
//! A shutdown is started by a [`ShutdownHandle`] (from any thread), by
//! dropping the [`Server`](crate::Server), or by SIGTERM or SIGINT when the
//! server was built with
//! [`handle_signals`](crate::ServerBuilder::handle_signals). None of these
//! does the work: each only sends a trigger to the server's coordinator
//! thread, which runs the steps (the signal handler itself does nothing
//! else, as in crossbeam's stopwatch example). The signal handler is
//! installed before the server's listeners open, so a signal that comes
//! while the server is still starting waits in the trigger queue and
//! starts the shutdown as soon as the coordinator runs:
//!
//! 0. the health service reports `NOT_SERVING`, and for the drain delay
//!    ([`Timeouts::drain_delay`](crate::server::Timeouts::drain_delay))
//!    the server goes on serving, so load balancers stop sending it work
//!    before it refuses any;
//! 1. the listeners close;
//! 2. every connection gets GOAWAY `UNAVAILABLE`;
//! 3. every request read after that is answered `UNAVAILABLE`, not run;
//! 4. requests already read, queued or running, finish until the shutdown
//!    timeout runs out; then queued ones are answered `UNAVAILABLE` and
//!    running ones `CANCELLED` through their context;
//! 5. the connections are flushed and closed, the I/O threads and the
//!    workers are joined, the application's shutdown hooks run in reverse
//!    order of registration, and a [`ShutdownReport`] is published.
//!
//! A second trigger from the API waits for the same shutdown. A second
//! signal, or [`ShutdownHandle::force`], forces an immediate stop: every
//! wait that is left (drain delay, drain, grace periods, hooks) ends at
//! once, although every step still runs, so what was read is still
//! answered and the hooks are still started.

use std::fmt;
use std::panic::{self, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, OnceLock};
use std::thread;
use std::time::{Duration, Instant};

use crossbeam_channel::{bounded, select, unbounded, Receiver, RecvTimeoutError, Sender};

use crate::error::Error;
use crate::pool::panic_message;

/// How often the drain wait looks for a forcing trigger.
const FORCE_POLL: Duration = Duration::from_millis(50);
/// How long handlers get to return once the shutdown cancelled them.
const CANCEL_GRACE: Duration = Duration::from_secs(1);
/// The same, when the shutdown is forced.
const FORCE_GRACE: Duration = Duration::from_millis(100);
/// Beyond their budget, how long the hooks are waited for before their
/// thread is reported stuck.
const HOOKS_MARGIN: Duration = Duration::from_millis(100);

/// An application's shutdown hook: called once with the time it has left.
pub(crate) type Hook = Box<dyn FnOnce(Duration) + Send + 'static>;

/// What a shutdown did, returned by [`Server::run`](crate::Server::run)
/// and every shutdown call.
///
/// # Examples
///
/// ```
/// use syncrpc::{Server, Service};
///
/// let server = Server::builder().bind("127.0.0.1:0")?;
/// let report = server.shutdown();
/// assert!(report.is_clean());
/// assert_eq!(report.exit_code(), 0);
/// # Ok::<(), syncrpc::Error>(())
/// ```
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct ShutdownReport {
    /// Requests in flight when the GOAWAY went out that their handlers
    /// finished and that were answered.
    pub drained: u64,
    /// Requests read after the GOAWAY, answered `UNAVAILABLE` without
    /// running: the clients may send them elsewhere.
    pub refused: u64,
    /// Requests still queued when the shutdown timeout ran out, answered
    /// `UNAVAILABLE` without running.
    pub abandoned: u64,
    /// Requests still running when the shutdown timeout ran out, answered
    /// `CANCELLED` and their contexts cancelled.
    pub cancelled: u64,
    /// Threads that did not stop in time, by name. They are detached, not
    /// joined.
    pub stuck_threads: Vec<String>,
    /// Shutdown hooks that returned.
    pub hooks_run: usize,
    /// Shutdown hooks that panicked (logged, then skipped).
    pub hooks_panicked: usize,
    /// The shutdown was forced (a second signal, or
    /// [`ShutdownHandle::force`]): its waits were cut short.
    pub forced: bool,
    /// The shutdown timeout ran out before every request was answered and
    /// every client had closed its connection.
    pub timed_out: bool,
    /// How long the shutdown took, drain delay included.
    pub elapsed: Duration,
}

impl ShutdownReport {
    /// True for a clean drain: not forced, nothing abandoned or cancelled,
    /// every thread stopped, and no hook panicked. Connections that
    /// clients kept open until the timeout do not make a drain unclean.
    pub fn is_clean(&self) -> bool {
        !self.forced
            && self.abandoned == 0
            && self.cancelled == 0
            && self.stuck_threads.is_empty()
            && self.hooks_panicked == 0
    }

    /// The process exit code that tells a clean drain from the rest: 0 for
    /// a clean drain (see [`ShutdownReport::is_clean`]), 1 when the
    /// shutdown was forced, ran out of time with work left, left a thread
    /// behind, or a hook panicked.
    ///
    /// ```no_run
    /// # let server = syncrpc::Server::builder().bind("127.0.0.1:0").unwrap();
    /// let report = server.run();
    /// std::process::exit(report.exit_code());
    /// ```
    pub fn exit_code(&self) -> i32 {
        if self.is_clean() {
            0
        } else {
            1
        }
    }
}

/// What a trigger asks for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Trigger {
    /// A graceful shutdown, with the configured timeout or this one.
    Graceful(Option<Duration>),
    /// SIGINT or SIGTERM: the first is graceful, the second forces.
    Signal,
    /// An immediate stop.
    Force,
}

/// Request counts for the report, read from the server after the drain.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct Tally {
    pub drained: u64,
    pub refused: u64,
    pub abandoned: u64,
    pub cancelled: u64,
}

/// The server as the coordinator drives it: one method per step.
pub(crate) trait Target: Send + Sync + 'static {
    /// Step 0: the health service reports NOT_SERVING from now on.
    fn stop_serving(&self);
    /// Steps 1 and 2: close the listeners, send GOAWAY on every
    /// connection; from then on requests read are refused.
    fn go_away(&self);
    /// Step 4's wait: true once every request read is answered and every
    /// connection is closed; false if `until` came first.
    fn wait_drained(&self, until: Instant) -> bool;
    /// End of step 4 and step 5's first half: answer what is left, flush
    /// and close the connections, join the I/O threads. `forced` shortens
    /// the grace periods. Returns the threads that did not stop.
    fn stop_io(&self, forced: bool) -> Vec<String>;
    /// Stop and join the workers, giving running handlers until `until`.
    fn stop_workers(&self, until: Instant) -> Vec<String>;
    /// The request counts so far.
    fn tally(&self) -> Tally;
}

/// The configuration of one server's shutdown.
pub(crate) struct Plan {
    pub timeout: Duration,
    pub drain_delay: Duration,
    pub hooks_budget: Duration,
    pub hooks: Vec<Hook>,
    /// Prefix of the hooks thread's name.
    pub thread_name: String,
}

/// The state the coordinator and every [`ShutdownHandle`] share.
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

/// The coordinator's view of one shutdown in progress.
struct Run<'a> {
    rx: &'a Receiver<Trigger>,
    signals: u32,
    forced: bool,
}

struct HooksOutcome {
    run: usize,
    panicked: usize,
    stuck: Option<String>,
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
    fn pump(&mut self) {
        while let Ok(t) = self.rx.try_recv() {
            self.note(t);
        }
    }

    fn sleep_until(&mut self, until: Instant) {
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

    fn wait_drained(&mut self, target: &dyn Target, until: Instant) -> bool {
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
    fn run_hooks(&mut self, mut hooks: Vec<Hook>, budget: Duration, prefix: &str) -> HooksOutcome {
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

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // Every critical section here is an assignment or a clone.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Starts and waits for a server's shutdown, from any thread.
///
/// Clones share one server. Every method may be called any number of
/// times from any thread: the first call starts the shutdown, later ones
/// join it. Get one from [`Server::shutdown_handle`](crate::Server::shutdown_handle)
/// or [`ServerHandle::shutdown_handle`](crate::ServerHandle::shutdown_handle).
///
/// From inside a handler, use [`ShutdownHandle::trigger`]: a handler that
/// waits for the shutdown would wait for itself to finish.
///
/// # Examples
///
/// ```
/// use std::thread;
/// use syncrpc::Server;
///
/// let server = Server::builder().bind("127.0.0.1:0")?;
/// let stop = server.shutdown_handle();
/// let admin = thread::spawn(move || stop.trigger());
/// let report = server.run(); // returns once the shutdown is done
/// admin.join().unwrap();
/// assert!(report.is_clean());
/// # Ok::<(), syncrpc::Error>(())
/// ```
#[derive(Clone)]
pub struct ShutdownHandle {
    life: Arc<Lifecycle>,
}

impl ShutdownHandle {
    pub(crate) fn new(life: Arc<Lifecycle>) -> ShutdownHandle {
        ShutdownHandle { life }
    }

    /// Starts a graceful shutdown with the configured shutdown timeout, if
    /// none has started, and returns at once.
    pub fn trigger(&self) {
        self.life.trigger(Trigger::Graceful(None));
    }

    /// Starts a graceful shutdown (or joins the one under way) and waits
    /// for its report.
    pub fn shutdown(&self) -> ShutdownReport {
        self.trigger();
        self.life.wait()
    }

    /// As [`ShutdownHandle::shutdown`], with `timeout` in place of the
    /// configured shutdown timeout. A shutdown already under way keeps its
    /// own timeout.
    pub fn shutdown_timeout(&self, timeout: Duration) -> ShutdownReport {
        self.life.trigger(Trigger::Graceful(Some(timeout)));
        self.life.wait()
    }

    /// Forces an immediate stop: starts the shutdown if needed, and cuts
    /// every wait it has left short (drain delay, drain, grace periods,
    /// hooks). Requests still queued are answered `UNAVAILABLE`, running
    /// ones `CANCELLED`. Returns at once.
    pub fn force(&self) {
        self.life.trigger(Trigger::Force);
    }

    /// Waits for the shutdown, whoever starts it, and returns its report.
    pub fn wait(&self) -> ShutdownReport {
        self.life.wait()
    }

    /// Waits up to `timeout` for the shutdown's report.
    pub fn wait_timeout(&self, timeout: Duration) -> Option<ShutdownReport> {
        self.life.wait_timeout(timeout)
    }

    /// True once a shutdown has started.
    pub fn is_shutting_down(&self) -> bool {
        self.life.is_started()
    }

    /// The report, once the shutdown is over.
    pub fn report(&self) -> Option<ShutdownReport> {
        self.life.report()
    }
}

impl fmt::Debug for ShutdownHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ShutdownHandle")
            .field("shutting_down", &self.is_shutting_down())
            .field("done", &self.life.report().is_some())
            .finish()
    }
}

/// SIGINT and SIGTERM (and SIGHUP), forwarded to every server that asked.
///
/// The handler is installed once per process (`ctrlc` allows no more) and
/// stays: it sends a trigger to each subscribed server, and does nothing
/// else. A signal that arrives while no server is subscribed is logged and
/// otherwise ignored.
mod signals {
    use super::*;

    static SUBSCRIBERS: Mutex<Vec<(u64, Sender<Trigger>)>> = Mutex::new(Vec::new());
    static INSTALLED: OnceLock<Result<(), String>> = OnceLock::new();
    static NEXT_ID: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);

    /// Removes its server from the subscribers when dropped.
    pub(crate) struct SignalSubscription {
        id: u64,
    }

    impl Drop for SignalSubscription {
        fn drop(&mut self) {
            lock(&SUBSCRIBERS).retain(|(id, _)| *id != self.id);
        }
    }

    fn forward() {
        let subscribers = lock(&SUBSCRIBERS);
        if subscribers.is_empty() {
            log::warn!("signal received, but no server is handling signals; ignored");
        }
        for (_, tx) in subscribers.iter() {
            let _ = tx.send(Trigger::Signal);
        }
    }

    pub(crate) fn subscribe(tx: Sender<Trigger>) -> Result<SignalSubscription, Error> {
        // Replaces a disposition inherited as "ignore" (a process started
        // in the background ignores SIGINT; under nohup, SIGHUP), which
        // must not keep a server from handling SIGTERM.
        let installed =
            INSTALLED.get_or_init(|| ctrlc::set_handler(forward).map_err(|e| e.to_string()));
        if let Err(e) = installed {
            return Err(Error::usage(format!(
                "cannot handle SIGINT and SIGTERM: {e}; the process set a \
                 ctrlc handler of its own (start the shutdown from it with \
                 a ShutdownHandle instead)"
            )));
        }
        let id = NEXT_ID.fetch_add(1, Ordering::Relaxed);
        lock(&SUBSCRIBERS).push((id, tx));
        Ok(SignalSubscription { id })
    }
}

use signals::SignalSubscription;

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;

    #[derive(Default)]
    struct Fake {
        steps: Mutex<Vec<&'static str>>,
        drained: AtomicBool,
        workers_until: Mutex<Option<Instant>>,
    }

    impl Target for Fake {
        fn stop_serving(&self) {
            lock(&self.steps).push("not serving");
        }
        fn go_away(&self) {
            lock(&self.steps).push("goaway");
        }
        fn wait_drained(&self, until: Instant) -> bool {
            if self.drained.load(Ordering::SeqCst) {
                return true;
            }
            thread::sleep(until.saturating_duration_since(Instant::now()));
            false
        }
        fn stop_io(&self, _forced: bool) -> Vec<String> {
            lock(&self.steps).push("stop io");
            Vec::new()
        }
        fn stop_workers(&self, until: Instant) -> Vec<String> {
            lock(&self.steps).push("stop workers");
            *lock(&self.workers_until) = Some(until);
            Vec::new()
        }
        fn tally(&self) -> Tally {
            Tally::default()
        }
    }

    fn plan(hooks: Vec<Hook>) -> Plan {
        Plan {
            timeout: Duration::from_secs(10),
            drain_delay: Duration::ZERO,
            hooks_budget: Duration::from_secs(5),
            hooks,
            thread_name: "test".into(),
        }
    }

    #[test]
    fn steps_run_in_order_and_hooks_newest_first() {
        let fake = Fake::default();
        fake.drained.store(true, Ordering::SeqCst);
        let order = Arc::new(Mutex::new(Vec::new()));
        let hooks: Vec<Hook> = (0..3)
            .map(|i| {
                let order = order.clone();
                Box::new(move |_left: Duration| lock(&order).push(i)) as Hook
            })
            .collect();
        let life = Lifecycle::new();
        life.trigger(Trigger::Graceful(None));
        life.coordinate(&fake, plan(hooks));
        let report = life.wait();
        assert_eq!(
            *lock(&fake.steps),
            ["not serving", "goaway", "stop io", "stop workers"]
        );
        assert_eq!(*lock(&order), [2, 1, 0]);
        assert_eq!((report.hooks_run, report.hooks_panicked), (3, 0));
        assert!(report.is_clean(), "{report:?}");
    }

    #[test]
    fn a_panicking_hook_is_skipped_and_the_rest_run() {
        let fake = Fake::default();
        fake.drained.store(true, Ordering::SeqCst);
        let ran = Arc::new(AtomicUsize::new(0));
        let r = ran.clone();
        let hooks: Vec<Hook> = vec![
            Box::new(move |_| {
                r.fetch_add(1, Ordering::SeqCst);
            }),
            Box::new(|_| panic!("hook failed")),
        ];
        let life = Lifecycle::new();
        life.trigger(Trigger::Graceful(None));
        life.coordinate(&fake, plan(hooks));
        let report = life.wait();
        assert_eq!(ran.load(Ordering::SeqCst), 1);
        assert_eq!((report.hooks_run, report.hooks_panicked), (1, 1));
        assert_eq!(report.exit_code(), 1);
    }

    #[test]
    fn a_second_signal_forces_the_stop() {
        let fake = Fake::default(); // never drains
        let life = Lifecycle::new();
        life.trigger(Trigger::Signal);
        life.trigger(Trigger::Signal);
        let start = Instant::now();
        life.coordinate(&fake, plan(Vec::new()));
        let report = life.wait();
        assert!(report.forced && report.timed_out, "{report:?}");
        assert_eq!(report.exit_code(), 1);
        // Would take the 10 s shutdown timeout without the force.
        assert!(start.elapsed() < Duration::from_secs(5));
        // A forced stop gives the workers no more than a glimpse.
        assert!(lock(&fake.workers_until).unwrap() <= Instant::now() + FORCE_GRACE);
    }

    #[test]
    fn the_api_trigger_is_idempotent_and_waits_for_the_same_report() {
        let fake = Arc::new(Fake::default());
        fake.drained.store(true, Ordering::SeqCst);
        let life = Lifecycle::new();
        let handle = ShutdownHandle::new(life.clone());
        let (l2, f2) = (life.clone(), fake.clone());
        let coordinator = thread::spawn(move || l2.coordinate(&*f2, plan(Vec::new())));
        let waiters: Vec<_> = (0..3)
            .map(|_| {
                let h = handle.clone();
                thread::spawn(move || h.shutdown())
            })
            .collect();
        let reports: Vec<ShutdownReport> = waiters.into_iter().map(|t| t.join().unwrap()).collect();
        coordinator.join().unwrap();
        assert!(reports.windows(2).all(|w| w[0] == w[1]));
        assert_eq!(
            lock(&fake.steps).iter().filter(|s| **s == "goaway").count(),
            1
        );
        assert!(!reports[0].forced);
    }

    #[test]
    fn a_hook_that_hangs_is_reported_stuck_after_its_budget() {
        let fake = Fake::default();
        fake.drained.store(true, Ordering::SeqCst);
        let (release, gate) = bounded::<()>(0);
        let hooks: Vec<Hook> = vec![Box::new(move |_| {
            let _ = gate.recv();
        })];
        let life = Lifecycle::new();
        life.trigger(Trigger::Graceful(None));
        let p = Plan {
            hooks_budget: Duration::from_millis(50),
            ..plan(hooks)
        };
        life.coordinate(&fake, p);
        let report = life.wait();
        assert_eq!(report.stuck_threads, ["test-hooks"]);
        drop(release); // lets the hook, and its thread, end
    }
}

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

mod handle;
mod lifecycle;
mod report;
mod run;
mod signals;
#[cfg(test)]
mod tests;

use std::sync::Mutex;
use std::time::{Duration, Instant};

pub use handle::ShutdownHandle;
pub(crate) use lifecycle::Lifecycle;
pub use report::ShutdownReport;

/// An application's shutdown hook: called once with the time it has left.
pub(crate) type Hook = Box<dyn FnOnce(Duration) + Send + 'static>;

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

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // Every critical section here is an assignment or a clone.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

//! The application's handle on a server's shutdown: start it, force it,
//! wait for its report.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use super::{Lifecycle, ShutdownReport, Trigger};

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

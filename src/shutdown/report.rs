//! What a shutdown did: the report every shutdown call returns, and the
//! exit code it stands for.

use std::time::Duration;

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
    ///
    /// [`ShutdownHandle::force`]: super::ShutdownHandle::force
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

//! What to do when `accept` fails, shared by both I/O modes.
//!
//! Running out of file descriptors (or memory) makes every `accept` fail at
//! once while the listener stays readable: retrying immediately would spin.
//! Both modes pause accepting instead, doubling the pause up to a cap, and
//! resume early when a connection closes and frees a descriptor.

use std::io;
use std::time::{Duration, Instant};

/// The first pause after a failed accept.
const MIN: Duration = Duration::from_millis(5);
/// The longest pause.
const MAX: Duration = Duration::from_secs(1);

/// How an `accept` error is handled.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum AcceptError {
    /// The backlog is empty: wait for the next readiness event.
    Drained,
    /// A connection died in the backlog, or a signal interrupted the
    /// call: accept the next one at once.
    Retry,
    /// Out of descriptors or memory: accept nothing before this instant.
    Pause(Instant),
}

/// The capped, doubling pause between failed accepts.
#[derive(Debug)]
pub(crate) struct AcceptBackoff {
    delay: Duration,
}

impl AcceptBackoff {
    pub fn new() -> AcceptBackoff {
        AcceptBackoff { delay: MIN }
    }

    /// A connection was accepted: the next failure pauses briefly again.
    pub fn accepted(&mut self) {
        self.delay = MIN;
    }

    /// Classifies `e`; an exhaustion is logged (by `who`) and doubles the
    /// next pause.
    pub fn failed(&mut self, who: &str, e: &io::Error) -> AcceptError {
        match e.kind() {
            io::ErrorKind::WouldBlock => AcceptError::Drained,
            io::ErrorKind::Interrupted
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset => AcceptError::Retry,
            _ => {
                log::error!("{who}: accept failed, pausing for {:?}: {e}", self.delay);
                let until = Instant::now() + self.delay;
                self.delay = (self.delay * 2).min(MAX);
                AcceptError::Pause(until)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exhaustion_pauses_doubling_up_to_the_cap_and_success_resets() {
        let mut b = AcceptBackoff::new();
        let emfile = io::Error::from_raw_os_error(24); // EMFILE
        let mut last = Duration::ZERO;
        for _ in 0..20 {
            let before = Instant::now();
            let AcceptError::Pause(until) = b.failed("test", &emfile) else {
                panic!("EMFILE must pause");
            };
            last = until - before;
        }
        assert!(last <= MAX + Duration::from_millis(50), "{last:?}");
        assert_eq!(b.delay, MAX);
        b.accepted();
        assert_eq!(b.delay, MIN);
        let would_block = io::Error::from(io::ErrorKind::WouldBlock);
        assert_eq!(b.failed("test", &would_block), AcceptError::Drained);
        let reset = io::Error::from(io::ErrorKind::ConnectionAborted);
        assert_eq!(b.failed("test", &reset), AcceptError::Retry);
    }
}

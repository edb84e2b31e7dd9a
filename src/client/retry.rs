//! When a failed call is tried again.

use crate::error::{Error, ErrorKind, Execution};

/// Which failed calls the client tries again, on another endpoint when
/// there is one.
///
/// A call that is known not to have run (the connection was refused, the
/// request was never sent, the server answered `UNAVAILABLE` after GOAWAY)
/// is safe to repeat, and is retried [`RetryPolicy::not_run`] times (once
/// by default). A call that *may* have run (the connection broke after the
/// request was sent) is retried only [`RetryPolicy::may_have_run`] times,
/// zero by default: only the caller knows whether the method is idempotent.
/// A server's answer (other than `UNAVAILABLE`), a deadline or a
/// cancellation is never retried, and no retry starts after the deadline.
///
/// # Examples
///
/// ```
/// use syncrpc::client::{CallOptions, RetryPolicy};
///
/// // For an idempotent read: also retry twice after a broken connection.
/// let opts = CallOptions::new().retry(RetryPolicy::idempotent(2));
/// assert_eq!(RetryPolicy::default().may_have_run, 0);
/// assert_eq!(RetryPolicy::default().not_run, 1);
/// # let _ = opts;
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Retries of a call known not to have run. Default 1: failing over to
    /// a second endpoint covers a server going away; more would mostly
    /// hammer a service that is down.
    pub not_run: u32,
    /// Retries of a call that may have run. Default 0: off, because
    /// repeating a non-idempotent call (a payment, an append) is a bug the
    /// runtime cannot see.
    pub may_have_run: u32,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            not_run: 1,
            may_have_run: 0,
        }
    }
}

impl RetryPolicy {
    /// No retries at all.
    pub const fn never() -> RetryPolicy {
        RetryPolicy {
            not_run: 0,
            may_have_run: 0,
        }
    }

    /// For idempotent methods: the default retry of calls that did not run,
    /// plus up to `retries` retries of calls that may have run.
    pub const fn idempotent(retries: u32) -> RetryPolicy {
        RetryPolicy {
            not_run: 1,
            may_have_run: retries,
        }
    }
}

/// Retries left for one call.
#[derive(Debug)]
pub(crate) struct RetryBudget {
    not_run: u32,
    may_have_run: u32,
}

impl RetryBudget {
    pub(crate) fn new(policy: RetryPolicy) -> RetryBudget {
        RetryBudget {
            not_run: policy.not_run,
            may_have_run: policy.may_have_run,
        }
    }

    /// Whether `err` may be retried; uses up one retry if so.
    pub(crate) fn take(&mut self, err: &Error) -> bool {
        let left = match (err.execution(), err.kind()) {
            (_, ErrorKind::Timeout | ErrorKind::Cancelled | ErrorKind::Usage) => return false,
            (Execution::NotRun, _) => &mut self.not_run,
            (Execution::MayHaveRun, ErrorKind::Io | ErrorKind::Protocol) => &mut self.may_have_run,
            _ => return false,
        };
        if *left == 0 {
            return false;
        }
        *left -= 1;
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::status::Status;

    #[test]
    fn may_have_run_is_not_retried_by_default() {
        let broken = Error::new(ErrorKind::Io, Status::unavailable("reset"));
        let mut b = RetryBudget::new(RetryPolicy::default());
        assert!(!b.take(&broken));
        let mut b = RetryBudget::new(RetryPolicy::idempotent(1));
        assert!(b.take(&broken));
        assert!(!b.take(&broken));
    }

    #[test]
    fn not_run_is_retried_once_and_answers_never() {
        let refused = Error::from(Status::unavailable("shutting down"));
        let mut b = RetryBudget::new(RetryPolicy::default());
        assert!(b.take(&refused));
        assert!(!b.take(&refused));
        let answered = Error::from(Status::internal("boom"));
        assert!(!RetryBudget::new(RetryPolicy::idempotent(5)).take(&answered));
        let late = Error::new(ErrorKind::Timeout, Status::deadline_exceeded("late"))
            .with_execution(Execution::NotRun);
        assert!(!RetryBudget::new(RetryPolicy::default()).take(&late));
    }
}

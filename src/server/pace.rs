//! How long a method's handler usually runs, from sampled calls.
//!
//! A worker that answers while more work is queued holds the answer back,
//! to write it with the next ones (see `dispatch`). That is only right if
//! the next handler returns soon: before a method that has lately taken
//! longer than [`QUICK`], or whose pace is not known yet, the worker writes
//! what it holds first. One call in [`SAMPLE_EVERY`] is timed, so knowing
//! the pace costs next to nothing.

use std::cell::Cell;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

/// A handler that lately returned within this is quick.
pub(crate) const QUICK: Duration = Duration::from_micros(50);

/// A call that took this long is recorded even when it was not sampled:
/// no wait for a busy CPU explains it, so the method has turned slow.
/// Shorter unsampled calls are not recorded, since on a loaded machine a
/// quick handler's thread often waits longer than [`QUICK`] for a CPU.
pub(crate) const LONG: Duration = Duration::from_millis(10);

/// One call in this many is timed once a method's pace is known.
pub(crate) const SAMPLE_EVERY: u32 = 16;

const UNKNOWN: u32 = u32::MAX;

/// A method's recent handler time, in microseconds: a moving average of
/// the sampled calls.
#[derive(Debug)]
pub(crate) struct Pace {
    micros: AtomicU32,
}

thread_local! {
    static CALLS: Cell<u32> = const { Cell::new(0) };
}

impl Pace {
    pub fn new() -> Pace {
        Pace {
            micros: AtomicU32::new(UNKNOWN),
        }
    }

    /// True if the handler's sampled calls lately returned within
    /// [`QUICK`].
    pub fn is_quick(&self) -> bool {
        self.micros.load(Ordering::Relaxed) as u128 <= QUICK.as_micros()
    }

    /// Whether to time the call about to run: every call while the pace is
    /// unknown, then one in [`SAMPLE_EVERY`] on each thread.
    pub fn sample(&self) -> bool {
        if self.micros.load(Ordering::Relaxed) == UNKNOWN {
            return true;
        }
        CALLS.with(|c| {
            let n = c.get().wrapping_add(1);
            c.set(n);
            n % SAMPLE_EVERY == 0
        })
    }

    /// Records a timed call: a quarter of its weight goes into the average.
    pub fn record(&self, took: Duration) {
        let took = u32::try_from(took.as_micros()).unwrap_or(UNKNOWN - 1);
        let old = self.micros.load(Ordering::Relaxed);
        let new = if old == UNKNOWN {
            took
        } else {
            ((u64::from(old) * 3 + u64::from(took)) / 4) as u32
        };
        // Racing workers may each drop the other's sample: an average, not
        // an account, so that is fine.
        self.micros.store(new, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_until_timed_then_follows_the_samples() {
        let pace = Pace::new();
        assert!(!pace.is_quick());
        assert!(pace.sample());
        pace.record(Duration::from_micros(3));
        assert!(pace.is_quick());
        // Then one call in SAMPLE_EVERY is timed.
        let timed = (0..SAMPLE_EVERY * 4).filter(|_| pace.sample()).count();
        assert_eq!(timed, 4);
        // A handler that turns slow stops counting as quick within a few
        // samples.
        for _ in 0..4 {
            pace.record(Duration::from_millis(5));
        }
        assert!(!pace.is_quick());
        for _ in 0..16 {
            pace.record(Duration::from_micros(1));
        }
        assert!(pace.is_quick());
    }
}

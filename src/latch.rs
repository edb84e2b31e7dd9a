//! A WaitGroup-style latch: count work up and down, wait for zero.

use std::fmt;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

struct Inner {
    /// The count itself: counting up and down is one atomic operation.
    count: AtomicUsize,
    /// Threads in `wait*`: the count reaching zero with none of them
    /// waiting wakes nobody, and so makes no system call.
    waiters: AtomicUsize,
    /// Taken only to wait, and to wake the waiters when the count hits zero.
    lock: Mutex<()>,
    zero: Condvar,
}

/// Counts outstanding work and lets threads wait until it is all done, like
/// Go's `sync.WaitGroup`.
///
/// Clones share one counter. The server uses latches to join connection
/// threads, event loops and workers, and to drain requests in flight (one
/// count per request).
///
/// # Examples
///
/// ```
/// use std::thread;
/// use syncrpc::Latch;
///
/// let latch = Latch::new();
/// for _ in 0..4 {
///     let guard = latch.guard(); // add(1) now, done() when dropped
///     thread::spawn(move || {
///         let _guard = guard;
///         // ... work ...
///     });
/// }
/// latch.wait();
/// assert_eq!(latch.count(), 0);
/// ```
#[derive(Clone)]
pub struct Latch {
    inner: Arc<Inner>,
}

impl Default for Latch {
    fn default() -> Self {
        Latch::new()
    }
}

impl Latch {
    /// A latch at zero.
    pub fn new() -> Latch {
        Latch {
            inner: Arc::new(Inner {
                count: AtomicUsize::new(0),
                waiters: AtomicUsize::new(0),
                lock: Mutex::new(()),
                zero: Condvar::new(),
            }),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, ()> {
        self.inner.lock.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Adds `n` to the count.
    pub fn add(&self, n: usize) {
        self.inner.count.fetch_add(n, Ordering::SeqCst);
    }

    /// Takes one off the count, waking waiters when it reaches zero.
    ///
    /// # Panics
    ///
    /// If the count is already zero: a `done` without its `add` is a bug.
    pub fn done(&self) {
        let prev = self
            .inner
            .count
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |c| c.checked_sub(1));
        match prev {
            Err(_) => panic!("Latch::done called more times than add"),
            // A waiter announces itself before it checks the count, and
            // this looks after the count fell: either it sees zero or this
            // sees it. Taking the lock orders this wake-up after its check,
            // so it does not sleep through it.
            Ok(1) if self.inner.waiters.load(Ordering::SeqCst) > 0 => {
                drop(self.lock());
                self.inner.zero.notify_all();
            }
            Ok(_) => {}
        }
    }

    /// Adds one now and takes it off when the guard drops, even if the
    /// thread holding it panics.
    pub fn guard(&self) -> LatchGuard {
        self.add(1);
        LatchGuard {
            latch: self.clone(),
        }
    }

    /// The current count.
    pub fn count(&self) -> usize {
        self.inner.count.load(Ordering::SeqCst)
    }

    /// Blocks until the count is zero.
    pub fn wait(&self) {
        let mut g = self.lock();
        // Announced under the lock, which it keeps until it sleeps.
        let _waiting = Waiting::new(&self.inner);
        while self.count() > 0 {
            g = self.inner.zero.wait(g).unwrap_or_else(|e| e.into_inner());
        }
    }

    /// Blocks until the count is zero or `timeout` passes; true if it
    /// reached zero.
    pub fn wait_timeout(&self, timeout: Duration) -> bool {
        match Instant::now().checked_add(timeout) {
            Some(deadline) => self.wait_deadline(deadline),
            None => {
                self.wait();
                true
            }
        }
    }

    /// Blocks until the count is zero or `deadline` passes; true if it
    /// reached zero.
    pub fn wait_deadline(&self, deadline: Instant) -> bool {
        let mut g = self.lock();
        // Announced under the lock, which it keeps until it sleeps.
        let _waiting = Waiting::new(&self.inner);
        while self.count() > 0 {
            let now = Instant::now();
            if now >= deadline {
                return false;
            }
            g = self
                .inner
                .zero
                .wait_timeout(g, deadline - now)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
        true
    }
}

/// Counts a thread in [`Inner::waiters`] while it lives.
struct Waiting<'a>(&'a Inner);

impl<'a> Waiting<'a> {
    fn new(inner: &'a Inner) -> Waiting<'a> {
        inner.waiters.fetch_add(1, Ordering::SeqCst);
        Waiting(inner)
    }
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.0.waiters.fetch_sub(1, Ordering::SeqCst);
    }
}

impl fmt::Debug for Latch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Latch")
            .field("count", &self.count())
            .finish()
    }
}

/// One count on a [`Latch`], taken off when dropped.
#[must_use = "the count is taken off as soon as the guard is dropped"]
pub struct LatchGuard {
    latch: Latch,
}

impl Drop for LatchGuard {
    fn drop(&mut self) {
        self.latch.done();
    }
}

impl fmt::Debug for LatchGuard {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LatchGuard").finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::mpsc;
    use std::thread;

    #[test]
    fn wait_returns_when_the_last_guard_drops() {
        let latch = Latch::new();
        let guard = latch.guard();
        assert!(!latch.wait_timeout(Duration::from_millis(10)));
        let (done_tx, done_rx) = mpsc::channel::<()>();
        let waiter = latch.clone();
        let t = thread::spawn(move || {
            waiter.wait();
            done_tx.send(()).unwrap();
        });
        // Once the waiter has announced itself, it holds the lock from its
        // look at the count until it sleeps: taking the lock here means it
        // sleeps, and only done()'s wake-up can end its wait.
        while latch.inner.waiters.load(Ordering::SeqCst) == 0 {
            thread::yield_now();
        }
        drop(latch.lock());
        drop(guard);
        done_rx
            .recv_timeout(Duration::from_secs(10))
            .expect("the waiter was not woken");
        t.join().unwrap();
    }

    #[test]
    fn a_panicking_holder_still_counts_down() {
        let latch = Latch::new();
        let guard = latch.guard();
        let t = thread::spawn(move || {
            let _g = guard;
            panic!("worker died");
        });
        assert!(t.join().is_err());
        assert_eq!(latch.count(), 0);
    }

    #[test]
    #[should_panic(expected = "more times than add")]
    fn done_without_add_is_a_bug() {
        Latch::new().done();
    }
}

//! A worker's side of the pool: waiting for tasks, running them, handing
//! some back for others to run, and waking a sleeping worker.

use std::panic::{self, AssertUnwindSafe};
use std::sync::atomic::Ordering;
use std::thread;
use std::time::Instant;

use crossbeam_channel::TryRecvError;

use super::{panic_message, Queued, Shared, Task, TAKEN};

/// The next tasks, sleeping while there are none; `None` once the pool is
/// shut down and the queue is empty.
pub(super) fn next_batch<T: Task>(shared: &Shared<T>) -> Option<Queued<T>> {
    loop {
        match shared.receiver.try_recv() {
            Ok(q) => return Some(q),
            Err(TryRecvError::Disconnected) => {
                T::idle();
                return None;
            }
            Err(TryRecvError::Empty) => T::idle(),
        }
        let mut idle = shared.idle_lock.lock().unwrap_or_else(|e| e.into_inner());
        idle.sleepers += 1;
        shared.unwoken.fetch_add(1, Ordering::SeqCst);
        // Announced before this check: a submit that did not see us
        // queued its task before it looked, so the check sees the task.
        while !idle.closed && idle.wakeups == 0 && shared.receiver.is_empty() {
            idle = shared.idle.wait(idle).unwrap_or_else(|e| e.into_inner());
        }
        idle.sleepers -= 1;
        // Keep `unwoken == sleepers - wakeups`: leaving takes a wake-up if
        // one is pending, or else stops counting as unwoken.
        if idle.wakeups > 0 {
            idle.wakeups -= 1;
        } else {
            shared.unwoken.fetch_sub(1, Ordering::SeqCst);
        }
    }
}

/// A worker: runs batches of tasks until the pool shuts down, keeping the
/// pool's counts (queued, busy, completed, and the backlog's start).
pub(super) fn worker_loop<T: Task>(shared: &Shared<T>, _alive: crate::latch::LatchGuard) {
    while let Some(mut q) = next_batch(shared) {
        let n = q.tasks.len();
        let before = shared.queued.fetch_sub(n, Ordering::AcqRel);
        if n == 1 {
            // The rest of a batch wait in this worker's hands: the backlog
            // lasts until it is done with them (below).
            shared.note_taken(before, n);
        }
        if shared.room_waiters.load(Ordering::SeqCst) > 0 {
            drop(shared.room_lock.lock());
            shared.room.notify_all();
        }
        shared.busy.fetch_add(1, Ordering::Relaxed);
        let mut completed = 0;
        while let Some(task) = q.tasks.pop_front() {
            share(shared, &task, &mut q);
            TAKEN.with(|t| t.set(q.tasks.len()));
            if let Some(deadline) = task.deadline() {
                let now = Instant::now();
                if now >= deadline {
                    shared.expired.fetch_add(1, Ordering::Relaxed);
                    task.expire(now - q.at);
                    continue;
                }
            }
            let result = panic::catch_unwind(AssertUnwindSafe(|| task.run()));
            completed += 1;
            if let Err(payload) = result {
                shared.panicked.fetch_add(1, Ordering::Relaxed);
                log::error!(
                    "task panicked on {}: {}",
                    thread::current().name().unwrap_or("worker"),
                    panic_message(&*payload)
                );
            }
        }
        TAKEN.with(|t| t.set(0));
        if n > 1 && shared.queued.load(Ordering::Relaxed) == 0 {
            shared.backlog_since.store(0, Ordering::Relaxed);
        }
        shared.busy.fetch_sub(1, Ordering::Relaxed);
        shared.completed.fetch_add(completed, Ordering::Relaxed);
        let _ = shared.spare.0.try_send(q.tasks);
    }
}

/// Before `next` runs, hands tasks taken with it back to the queue when
/// others could run them sooner: all of them if `next` is not quick, half
/// of them if a worker sleeps and another CPU could run it (so a batch
/// spreads over the idle workers).
pub(super) fn share<T: Task>(shared: &Shared<T>, next: &T, rest: &mut Queued<T>) {
    let left = rest.tasks.len();
    if left == 0 {
        return;
    }
    let n = if !next.is_quick() {
        left
    } else if shared.parallel && shared.unwoken.load(Ordering::SeqCst) > 0 {
        left.div_ceil(2)
    } else {
        return;
    };
    let sender = shared.sender.read().unwrap_or_else(|e| e.into_inner());
    let Some(tx) = sender.as_ref() else {
        // Shutting down: this worker runs them itself.
        return;
    };
    let mut tasks = shared.spare.1.try_recv().unwrap_or_default();
    tasks.extend(rest.tasks.drain(left - n..));
    let before = shared.queued.fetch_add(n, Ordering::AcqRel);
    shared.note_queued(before, rest.at);
    match tx.try_send(Queued { tasks, at: rest.at }) {
        Ok(()) => {
            drop(sender);
            wake_one(shared);
        }
        Err(e) => {
            shared.note_taken(shared.queued.fetch_sub(n, Ordering::AcqRel), n);
            rest.tasks.extend(e.into_inner().tasks);
        }
    }
}

/// Wakes a sleeping worker, if one is not already being woken, for tasks
/// just queued. False if every sleeper was already being woken.
pub(super) fn wake_one<T>(sh: &Shared<T>) -> bool {
    // Pairs with the worker's announce-then-check in `next_batch`: either
    // the worker sees the task, or this sees the worker.
    if sh.unwoken.load(Ordering::SeqCst) > 0 {
        let mut idle = sh.idle_lock.lock().unwrap_or_else(|e| e.into_inner());
        if idle.sleepers > idle.wakeups {
            idle.wakeups += 1;
            sh.unwoken.fetch_sub(1, Ordering::SeqCst);
            // Notify after unlocking: a sleeper woken while the lock is
            // held would wake only to block on it again, which on a
            // busy core costs two more context switches.
            drop(idle);
            sh.idle.notify_one();
            return true;
        }
    }
    false
}

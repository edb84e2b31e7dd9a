//! A fixed pool of named worker threads fed by a bounded channel.
//!
//! The pool never grows: when its queue is full, [`WorkerPool::try_submit`]
//! hands the task back at once, so an event loop never blocks on it and a
//! flood of requests is answered `RESOURCE_EXHAUSTED` rather than queued
//! without bound. Every task may carry a deadline; one whose deadline passed
//! while it waited in the queue is expired instead of run. A panicking task
//! is caught and logged, and its worker goes on.

use std::any::Any;
use std::cell::Cell;
use std::fmt;
use std::io;
use std::panic::{self, AssertUnwindSafe};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, RwLock};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use crossbeam_channel::{bounded, Receiver, Sender, TryRecvError, TrySendError};

use crate::latch::Latch;

/// Work a [`WorkerPool`] runs.
///
/// Closures (`FnOnce() + Send + 'static`) are tasks. A server's request is a
/// task with a deadline, which it answers `DEADLINE_EXCEEDED` from
/// [`Task::expire`] and `UNAVAILABLE` from [`Task::abandon`].
pub trait Task: Send + 'static {
    /// Does the work, on a worker thread.
    fn run(self);

    /// When the task stops being worth running. Default: never.
    fn deadline(&self) -> Option<Instant> {
        None
    }

    /// Called instead of [`Task::run`] when the deadline passed while the
    /// task was queued; `queued_for` is how long it waited.
    fn expire(self, queued_for: Duration)
    where
        Self: Sized,
    {
        let _ = queued_for;
    }

    /// Called on a worker thread when it finds the queue empty, before it
    /// sleeps or exits: the moment to finish work that several tasks share,
    /// such as writing their results in one go. Default: nothing.
    fn idle()
    where
        Self: Sized,
    {
    }

    /// Called instead of [`Task::run`] when the pool shut down with the task
    /// still queued.
    fn abandon(self)
    where
        Self: Sized,
    {
    }
}

impl<F: FnOnce() + Send + 'static> Task for F {
    fn run(self) {
        self()
    }
}

/// A boxed closure: the task type of a general-purpose pool.
pub type Job = Box<dyn FnOnce() + Send + 'static>;

/// How a pool is built.
#[derive(Clone, Debug)]
pub struct PoolConfig {
    /// Number of worker threads. Default: the number of CPUs.
    pub workers: usize,
    /// Tasks that may wait in the queue. Default 4096: with the default
    /// 1024 requests in flight per connection, a few busy connections fit,
    /// and a flood is refused quickly rather than queued for seconds.
    pub queue_capacity: usize,
    /// Prefix of the worker threads' names (`"{prefix}-{n}"`). Default
    /// `"syncrpc-worker"`.
    pub thread_name: String,
    /// Stack size of each worker, or the platform default.
    pub stack_size: Option<usize>,
}

impl Default for PoolConfig {
    fn default() -> Self {
        PoolConfig {
            workers: thread::available_parallelism().map_or(4, |n| n.get()),
            queue_capacity: 4096,
            thread_name: "syncrpc-worker".to_owned(),
            stack_size: None,
        }
    }
}

/// Why a task was not queued; the task is handed back.
pub enum SubmitError<T> {
    /// The queue is full.
    Full(T),
    /// The pool is shutting down.
    Closed(T),
}

impl<T> SubmitError<T> {
    /// The task that was not queued.
    pub fn into_inner(self) -> T {
        match self {
            SubmitError::Full(t) | SubmitError::Closed(t) => t,
        }
    }

    /// True if the queue was full.
    pub fn is_full(&self) -> bool {
        matches!(self, SubmitError::Full(_))
    }
}

impl<T> fmt::Debug for SubmitError<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SubmitError::Full(_) => f.write_str("Full(..)"),
            SubmitError::Closed(_) => f.write_str("Closed(..)"),
        }
    }
}

impl<T> fmt::Display for SubmitError<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SubmitError::Full(_) => f.write_str("work queue full"),
            SubmitError::Closed(_) => f.write_str("worker pool shut down"),
        }
    }
}

impl<T> std::error::Error for SubmitError<T> {}

/// Counts a pool reports.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PoolStats {
    /// Worker threads.
    pub workers: usize,
    /// Workers running a task now.
    pub busy: usize,
    /// Tasks waiting in the queue.
    pub queued: usize,
    /// Tasks run to the end (or to a panic).
    pub completed: u64,
    /// Tasks expired in the queue.
    pub expired: u64,
    /// Tasks that panicked.
    pub panicked: u64,
}

/// What [`WorkerPool::shutdown`] did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PoolReport {
    /// Tasks still queued at the deadline, handed to [`Task::abandon`].
    pub abandoned: usize,
    /// Names of worker threads still running a task when the time ran out;
    /// they are detached, not joined.
    pub stuck: Vec<String>,
}

/// The batch of [`WorkerPool::batch`] open on a thread.
#[derive(Clone, Copy)]
struct Batch {
    /// Which pool's wake-ups are held back; 0 for none.
    pool: usize,
    /// Tasks queued in the batch.
    tasks: usize,
    /// The batch's reading of the clock.
    started: Option<Instant>,
}

/// A batch wakes workers for what it queued so far once it holds this
/// many tasks, so that other cores can start on them.
const WAKE_EVERY: usize = 64;

impl Batch {
    const NONE: Batch = Batch {
        pool: 0,
        tasks: 0,
        started: None,
    };

    /// Counts one more task queued in the batch open on this thread; true
    /// when [`WAKE_EVERY`] are waiting for their wake-up (the count starts
    /// again).
    fn count_one(cell: &Cell<Batch>) -> bool {
        let mut batch = cell.get();
        batch.tasks += 1;
        let due = batch.tasks >= WAKE_EVERY;
        if due {
            batch.tasks = 0;
        }
        cell.set(batch);
        due
    }
}

thread_local! {
    static BATCH: Cell<Batch> = const { Cell::new(Batch::NONE) };
}

struct Queued<T> {
    task: T,
    at: Instant,
}

#[derive(Default)]
struct Idle {
    /// The pool is shutting down: sleepers wake for good.
    closed: bool,
    sleepers: usize,
    /// Wake-ups sent and not yet taken by a sleeper.
    wakeups: usize,
}

struct Shared<T> {
    sender: RwLock<Option<Sender<Queued<T>>>>,
    receiver: Receiver<Queued<T>>,
    busy: AtomicUsize,
    /// Workers asleep waiting for work. Workers sleep on `idle` rather than
    /// in the channel's own blocking receive, whose back-off yields the CPU
    /// a few times before sleeping: on a busy core each yield can cost the
    /// worker a whole scheduler slice while a task waits.
    idle_lock: Mutex<Idle>,
    idle: Condvar,
    /// Sleeping workers not yet woken (`sleepers - wakeups`), readable
    /// without the lock: a submit with nobody to wake costs no system call,
    /// and a burst of submits wakes a sleeper once, not once per task.
    unwoken: AtomicUsize,
    completed: AtomicU64,
    expired: AtomicU64,
    panicked: AtomicU64,
    workers: usize,
    alive: Latch,
    threads: Mutex<Vec<(String, JoinHandle<()>)>>,
}

/// A fixed set of worker threads running [`Task`]s from a bounded queue.
///
/// Clones share the pool. Dropping the last clone does not stop the
/// workers; call [`WorkerPool::shutdown`].
///
/// # Examples
///
/// ```
/// use std::sync::mpsc;
/// use std::time::Duration;
/// use syncrpc::pool::{Job, PoolConfig, WorkerPool};
///
/// let pool: WorkerPool<Job> = WorkerPool::new(PoolConfig { workers: 2, ..PoolConfig::default() }).unwrap();
/// let (tx, rx) = mpsc::channel();
/// for i in 0..10 {
///     let tx = tx.clone();
///     pool.try_submit(Box::new(move || tx.send(i * i).unwrap())).unwrap();
/// }
/// let mut squares: Vec<i32> = rx.iter().take(10).collect();
/// squares.sort();
/// assert_eq!(squares[9], 81);
/// let report = pool.shutdown(Duration::from_secs(5));
/// assert!(report.stuck.is_empty());
/// ```
pub struct WorkerPool<T: Task = Job> {
    shared: Arc<Shared<T>>,
}

impl<T: Task> Clone for WorkerPool<T> {
    fn clone(&self) -> Self {
        WorkerPool {
            shared: self.shared.clone(),
        }
    }
}

impl<T: Task> WorkerPool<T> {
    /// Starts the workers. Fails if a thread cannot be spawned; the workers
    /// already started are stopped.
    pub fn new(config: PoolConfig) -> io::Result<WorkerPool<T>> {
        let workers = config.workers.max(1);
        let (tx, rx) = bounded(config.queue_capacity.max(1));
        let pool = WorkerPool {
            shared: Arc::new(Shared {
                sender: RwLock::new(Some(tx)),
                receiver: rx,
                busy: AtomicUsize::new(0),
                idle_lock: Mutex::new(Idle::default()),
                idle: Condvar::new(),
                unwoken: AtomicUsize::new(0),
                completed: AtomicU64::new(0),
                expired: AtomicU64::new(0),
                panicked: AtomicU64::new(0),
                workers,
                alive: Latch::new(),
                threads: Mutex::new(Vec::with_capacity(workers)),
            }),
        };
        for i in 0..workers {
            let name = format!("{}-{i}", config.thread_name);
            let mut builder = thread::Builder::new().name(name.clone());
            if let Some(size) = config.stack_size {
                builder = builder.stack_size(size);
            }
            let shared = pool.shared.clone();
            let guard = shared.alive.guard();
            match builder.spawn(move || worker_loop(&shared, guard)) {
                Ok(handle) => pool.lock_threads().push((name, handle)),
                Err(e) => {
                    pool.shutdown(Duration::from_secs(5));
                    return Err(e);
                }
            }
        }
        Ok(pool)
    }

    fn lock_threads(&self) -> std::sync::MutexGuard<'_, Vec<(String, JoinHandle<()>)>> {
        self.shared
            .threads
            .lock()
            .unwrap_or_else(|e| e.into_inner())
    }

    /// Queues `task` if there is room, without blocking; otherwise hands it
    /// back.
    pub fn try_submit(&self, task: T) -> Result<(), SubmitError<T>> {
        let sender = self.shared.sender.read().unwrap_or_else(|e| e.into_inner());
        let Some(tx) = sender.as_ref() else {
            return Err(SubmitError::Closed(task));
        };
        let batching = BATCH.with(|b| {
            let batch = b.get();
            (batch.pool == self.id()).then_some(batch.started)
        });
        let at = batching.flatten().unwrap_or_else(Instant::now);
        match tx.try_send(Queued { task, at }) {
            Ok(()) => {
                if batching.is_none() {
                    self.wake_one();
                } else if BATCH.with(Batch::count_one) {
                    // A long batch does not keep every worker waiting.
                    self.wake(WAKE_EVERY);
                }
                Ok(())
            }
            Err(TrySendError::Full(q)) => Err(SubmitError::Full(q.task)),
            Err(TrySendError::Disconnected(q)) => Err(SubmitError::Closed(q.task)),
        }
    }

    /// Queues `task`, blocking while the queue is full.
    pub fn submit(&self, task: T) -> Result<(), SubmitError<T>> {
        // Clone the sender so a blocked submit does not hold the lock that
        // shutdown needs.
        let tx = {
            let sender = self.shared.sender.read().unwrap_or_else(|e| e.into_inner());
            match sender.as_ref() {
                Some(tx) => tx.clone(),
                None => return Err(SubmitError::Closed(task)),
            }
        };
        tx.send(Queued {
            task,
            at: Instant::now(),
        })
        .map_err(|e| SubmitError::Closed(e.into_inner().task))?;
        self.wake_one();
        Ok(())
    }

    /// Runs `f`, holding back the wake-ups of the tasks this thread submits
    /// to this pool meanwhile; when `f` returns (or panics), as many sleeping
    /// workers as there were tasks are woken at once. A batch that grows
    /// long wakes workers every 64 tasks, so other cores need not wait for
    /// its end.
    ///
    /// A thread that decodes many requests from one read submits them
    /// inside one batch: waking a worker for the first task would let the
    /// scheduler switch to it at once, on a busy core, and it would run one
    /// task and sleep again. Tasks queued in a batch share one reading of
    /// the clock for their queueing time. Batches do not nest: an inner one
    /// just runs `f`.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::sync::mpsc;
    /// use std::time::Duration;
    /// use syncrpc::pool::{Job, PoolConfig, WorkerPool};
    ///
    /// let pool: WorkerPool<Job> = WorkerPool::new(PoolConfig { workers: 2, ..PoolConfig::default() }).unwrap();
    /// let (tx, rx) = mpsc::channel();
    /// pool.batch(|| {
    ///     for i in 0..100 {
    ///         let tx = tx.clone();
    ///         pool.try_submit(Box::new(move || tx.send(i).unwrap())).unwrap();
    ///     }
    /// });
    /// assert_eq!(rx.iter().take(100).count(), 100);
    /// pool.shutdown(Duration::from_secs(5));
    /// ```
    pub fn batch<R>(&self, f: impl FnOnce() -> R) -> R {
        if BATCH.with(|b| b.get().pool != 0) {
            return f();
        }
        struct Release<'a, T: Task>(&'a WorkerPool<T>);
        impl<T: Task> Drop for Release<'_, T> {
            fn drop(&mut self) {
                let batch = BATCH.with(|b| b.replace(Batch::NONE));
                self.0.wake(batch.tasks);
            }
        }
        BATCH.with(|b| {
            b.set(Batch {
                pool: self.id(),
                tasks: 0,
                started: Some(Instant::now()),
            })
        });
        let _release = Release(self);
        f()
    }

    /// Wakes up to `n` sleeping workers, as many as are not being woken.
    fn wake(&self, n: usize) {
        for _ in 0..n {
            if !self.wake_one() {
                break;
            }
        }
    }

    /// Tells this pool's batches from another's.
    fn id(&self) -> usize {
        Arc::as_ptr(&self.shared) as *const () as usize
    }

    /// Wakes a sleeping worker, if one is not already being woken, for a
    /// task just queued. False if every sleeper was already being woken.
    fn wake_one(&self) -> bool {
        // Pairs with the worker's announce-then-check in `next_task`: either
        // the worker sees the task, or this sees the worker.
        let sh = &self.shared;
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

    /// Tasks waiting in the queue: [`PoolStats::queued`] alone, cheaper
    /// to read.
    pub fn queued(&self) -> usize {
        self.shared.receiver.len()
    }

    /// The pool's counts.
    pub fn stats(&self) -> PoolStats {
        let s = &self.shared;
        PoolStats {
            workers: s.workers,
            busy: s.busy.load(Ordering::Relaxed),
            queued: s.receiver.len(),
            completed: s.completed.load(Ordering::Relaxed),
            expired: s.expired.load(Ordering::Relaxed),
            panicked: s.panicked.load(Ordering::Relaxed),
        }
    }

    /// Stops the pool: refuses new tasks, lets queued and running ones
    /// finish until `timeout`, abandons what is still queued then, and joins
    /// the workers. Workers still busy when the time is up are reported by
    /// name and left to finish on their own. Calling it again does nothing
    /// more and reports nothing.
    pub fn shutdown(&self, timeout: Duration) -> PoolReport {
        let deadline = Instant::now() + timeout;
        let Some(tx) = self
            .shared
            .sender
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .take()
        else {
            return PoolReport::default();
        };
        // Dropping the only sender lets the workers run the queue dry and
        // then see the channel disconnected.
        drop(tx);
        {
            let mut idle = self
                .shared
                .idle_lock
                .lock()
                .unwrap_or_else(|e| e.into_inner());
            idle.closed = true;
            self.shared.idle.notify_all();
        }
        let mut report = PoolReport::default();
        if !self.shared.alive.wait_deadline(deadline) {
            // Out of time: whatever is still queued will not run.
            while let Ok(q) = self.shared.receiver.try_recv() {
                report.abandoned += 1;
                q.task.abandon();
            }
            T::idle();
        }
        // Idle workers exit promptly now that the queue is empty. Once the
        // latch is at zero every worker is past its last task and joining
        // is immediate, even if a thread has not quite finished exiting.
        let all_done = self.shared.alive.wait_timeout(Duration::from_millis(100));
        for (name, handle) in self.lock_threads().drain(..) {
            if all_done || handle.is_finished() {
                let _ = handle.join();
            } else {
                report.stuck.push(name);
            }
        }
        report
    }
}

impl<T: Task> fmt::Debug for WorkerPool<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WorkerPool")
            .field("stats", &self.stats())
            .finish()
    }
}

/// The next task, sleeping while there is none; `None` once the pool is
/// shut down and the queue is empty.
fn next_task<T: Task>(shared: &Shared<T>) -> Option<Queued<T>> {
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

fn worker_loop<T: Task>(shared: &Shared<T>, _alive: crate::latch::LatchGuard) {
    while let Some(q) = next_task(shared) {
        if let Some(deadline) = q.task.deadline() {
            let now = Instant::now();
            if now >= deadline {
                shared.expired.fetch_add(1, Ordering::Relaxed);
                q.task.expire(now - q.at);
                continue;
            }
        }
        shared.busy.fetch_add(1, Ordering::Relaxed);
        let result = panic::catch_unwind(AssertUnwindSafe(|| q.task.run()));
        shared.busy.fetch_sub(1, Ordering::Relaxed);
        shared.completed.fetch_add(1, Ordering::Relaxed);
        if let Err(payload) = result {
            shared.panicked.fetch_add(1, Ordering::Relaxed);
            log::error!(
                "task panicked on {}: {}",
                thread::current().name().unwrap_or("worker"),
                panic_message(&*payload)
            );
        }
    }
}

/// The text of a panic payload, for logs and INTERNAL statuses.
pub(crate) fn panic_message(payload: &(dyn Any + Send)) -> &str {
    if let Some(s) = payload.downcast_ref::<&str>() {
        s
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s
    } else {
        "non-string panic payload"
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crossbeam_channel::unbounded;

    fn pool<T: Task>(workers: usize, queue: usize) -> WorkerPool<T> {
        WorkerPool::new(PoolConfig {
            workers,
            queue_capacity: queue,
            thread_name: "test-worker".into(),
            stack_size: None,
        })
        .unwrap()
    }

    #[test]
    fn full_queue_hands_the_task_back_at_once() {
        let p: WorkerPool<Job> = pool(1, 1);
        let (block_tx, block_rx) = unbounded::<()>();
        let (started_tx, started_rx) = unbounded::<()>();
        p.try_submit(Box::new(move || {
            started_tx.send(()).unwrap();
            block_rx.recv().unwrap();
        }))
        .unwrap();
        started_rx.recv().unwrap();
        p.try_submit(Box::new(|| {})).unwrap(); // fills the queue
        let err = p.try_submit(Box::new(|| {})).unwrap_err();
        assert!(err.is_full());
        assert_eq!(p.stats().busy, 1);
        assert_eq!(p.stats().queued, 1);
        block_tx.send(()).unwrap();
        assert!(p.shutdown(Duration::from_secs(10)).stuck.is_empty());
        assert_eq!(p.stats().completed, 2);
    }

    struct Timed {
        deadline: Instant,
        out: crossbeam_channel::Sender<Result<(), Duration>>,
    }

    impl Task for Timed {
        fn run(self) {
            self.out.send(Ok(())).unwrap();
        }
        fn deadline(&self) -> Option<Instant> {
            Some(self.deadline)
        }
        fn expire(self, waited: Duration) {
            self.out.send(Err(waited)).unwrap();
        }
    }

    #[test]
    fn a_task_expired_in_the_queue_is_not_run() {
        let p: WorkerPool<Timed> = pool(1, 8);
        let (tx, rx) = unbounded();
        p.try_submit(Timed {
            deadline: Instant::now() - Duration::from_millis(1),
            out: tx.clone(),
        })
        .unwrap();
        p.try_submit(Timed {
            deadline: Instant::now() + Duration::from_secs(60),
            out: tx,
        })
        .unwrap();
        assert!(rx.recv().unwrap().is_err());
        assert!(rx.recv().unwrap().is_ok());
        p.shutdown(Duration::from_secs(10));
        assert_eq!(p.stats().expired, 1);
    }

    #[test]
    fn a_panic_is_caught_and_the_worker_goes_on() {
        let p: WorkerPool<Job> = pool(1, 8);
        let (tx, rx) = unbounded();
        p.try_submit(Box::new(|| panic!("boom"))).unwrap();
        p.try_submit(Box::new(move || tx.send(()).unwrap()))
            .unwrap();
        rx.recv_timeout(Duration::from_secs(10)).unwrap();
        p.shutdown(Duration::from_secs(10));
        assert_eq!(p.stats().panicked, 1);
    }

    /// Waits until the pool's only worker has gone to sleep, so that what
    /// the test queues next runs only if something wakes it.
    fn wait_asleep<T: Task>(p: &WorkerPool<T>) {
        let until = Instant::now() + Duration::from_secs(10);
        while p.shared.unwoken.load(Ordering::SeqCst) == 0 {
            assert!(Instant::now() < until, "the worker never went to sleep");
            thread::yield_now();
        }
        // It announces itself and checks the queue under this lock, and
        // lets go of it only inside the wait.
        drop(p.shared.idle_lock.lock().unwrap());
    }

    #[test]
    fn a_batch_wakes_for_what_it_queued_even_when_it_panics() {
        let p: WorkerPool<Job> = pool(1, 2);
        let (tx, rx) = unbounded();
        wait_asleep(&p);
        let refused = p.batch(|| {
            (0..3)
                .filter(|_| {
                    let tx = tx.clone();
                    p.try_submit(Box::new(move || tx.send(()).unwrap()))
                        .is_err()
                })
                .count()
        });
        // The queue holds two, and the worker sleeps until the batch ends.
        assert_eq!(refused, 1);
        for _ in 0..2 {
            rx.recv_timeout(Duration::from_secs(10)).unwrap();
        }
        wait_asleep(&p);
        let tx2 = tx.clone();
        let panicked = panic::catch_unwind(AssertUnwindSafe(|| {
            p.batch(|| {
                p.try_submit(Box::new(move || tx2.send(()).unwrap()))
                    .unwrap();
                panic!("the batch's caller fails");
            })
        }));
        assert!(panicked.is_err());
        rx.recv_timeout(Duration::from_secs(10)).unwrap();
        // The batch is over: a plain submit wakes the worker itself.
        wait_asleep(&p);
        p.try_submit(Box::new(move || tx.send(()).unwrap()))
            .unwrap();
        rx.recv_timeout(Duration::from_secs(10)).unwrap();
        p.shutdown(Duration::from_secs(10));
    }

    #[test]
    fn a_long_batch_wakes_workers_before_it_ends() {
        let p: WorkerPool<Job> = pool(1, 2 * WAKE_EVERY);
        let (tx, rx) = unbounded();
        wait_asleep(&p);
        p.batch(|| {
            for _ in 0..WAKE_EVERY {
                let tx = tx.clone();
                p.try_submit(Box::new(move || tx.send(()).unwrap()))
                    .unwrap();
            }
            // Still inside the batch: only the early wake-up runs these.
            for _ in 0..WAKE_EVERY {
                rx.recv_timeout(Duration::from_secs(10)).unwrap();
            }
        });
        p.shutdown(Duration::from_secs(10));
    }

    struct Counted {
        started: crossbeam_channel::Sender<()>,
        abandoned: crossbeam_channel::Sender<()>,
        gate: Receiver<()>,
    }

    impl Task for Counted {
        fn run(self) {
            self.started.send(()).unwrap();
            let _ = self.gate.recv();
        }
        fn abandon(self) {
            self.abandoned.send(()).unwrap();
        }
    }

    #[test]
    fn shutdown_abandons_the_queue_and_names_stuck_workers() {
        let p: WorkerPool<Counted> = pool(1, 8);
        let (ab_tx, ab_rx) = unbounded();
        let (gate_tx, gate_rx) = unbounded();
        let (started_tx, started_rx) = unbounded();
        for _ in 0..3 {
            p.try_submit(Counted {
                started: started_tx.clone(),
                abandoned: ab_tx.clone(),
                gate: gate_rx.clone(),
            })
            .unwrap();
        }
        started_rx.recv().unwrap(); // one running, two queued
        let report = p.shutdown(Duration::from_millis(50));
        assert_eq!(report.abandoned, 2);
        assert_eq!(report.stuck, vec!["test-worker-0".to_string()]);
        assert_eq!(ab_rx.try_iter().count(), 2);
        drop(gate_tx); // lets the stuck worker finish
        assert!(p.shared.alive.wait_timeout(Duration::from_secs(10)));
        assert!(matches!(
            p.try_submit(Counted {
                started: started_tx,
                abandoned: ab_tx,
                gate: gate_rx
            }),
            Err(SubmitError::Closed(_))
        ));
    }
}

//! A fixed pool of named worker threads fed by a bounded channel.
//!
//! The pool never grows: when its queue is full, [`WorkerPool::try_submit`]
//! hands the task back at once, so an event loop never blocks on it and a
//! flood of requests is answered `RESOURCE_EXHAUSTED` rather than queued
//! without bound. Every task may carry a deadline; one whose deadline passed
//! while it waited in the queue is expired instead of run. A panicking task
//! is caught and logged, and its worker goes on.

use std::any::Any;
use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::fmt;
use std::io;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, RwLock};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use crossbeam_channel::{bounded, Receiver, Sender};

use crate::latch::Latch;

mod worker;

use worker::{wake_one, worker_loop};

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

    /// Whether the task is expected to finish soon. Tasks queued together
    /// in a [`WorkerPool::batch`] reach a worker together; before running
    /// one that is not quick, the worker hands the rest back to the queue,
    /// so no task waits behind a long one while another worker is free.
    /// Default: false.
    fn is_quick(&self) -> bool {
        false
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
    /// CPUs the process may run on. Default: what the operating system
    /// allows it (its CPU affinity and quota). With one, a long
    /// [`WorkerPool::batch`] goes out only after 1024 tasks (and the thread
    /// filling it then yields the CPU), and a worker does not share the
    /// quick tasks of a batch with idle workers: a worker woken earlier
    /// could only take the CPU from another.
    pub cpus: usize,
}

impl Default for PoolConfig {
    fn default() -> Self {
        PoolConfig {
            workers: thread::available_parallelism().map_or(4, |n| n.get()),
            queue_capacity: 4096,
            thread_name: "syncrpc-worker".to_owned(),
            stack_size: None,
            cpus: thread::available_parallelism().map_or(1, |n| n.get()),
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

/// The batch of [`WorkerPool::batch`] open on a thread: the tasks it
/// queued, which go to the workers together.
struct Stage {
    /// Which pool the batch is for; 0 for none.
    pool: usize,
    /// The batch's reading of the clock.
    started: Option<Instant>,
    /// A `VecDeque<T>` of the tasks queued and not yet sent, kept between
    /// batches so its allocation is reused.
    tasks: Option<Box<dyn Any>>,
}

/// A batch sends what it queued so far once it holds this many tasks, so
/// that other workers can start on them.
const WAKE_EVERY: usize = 64;

/// On one CPU, a batch this long goes to the workers before it ends, and
/// the thread filling it lets them run: the requests in flight between the
/// two stay few enough to be in cache.
const ONE_CPU_BATCH: usize = 1024;

thread_local! {
    static STAGE: RefCell<Stage> = const {
        RefCell::new(Stage {
            pool: 0,
            started: None,
            tasks: None,
        })
    };
    /// Tasks the worker on this thread has taken and not yet started.
    static TAKEN: Cell<usize> = const { Cell::new(0) };
}

/// What [`WorkerPool::stage`] did with a task.
enum Staged<T> {
    /// In the batch; `full` when the batch should go out now.
    Queued { full: bool },
    /// The queue is full.
    Full(T),
    /// No batch for this pool is open on this thread.
    NoBatch(T),
}

/// Tasks that travel through the channel together.
struct Queued<T> {
    tasks: VecDeque<T>,
    /// When they were queued.
    at: Instant,
}

/// Emptied task lists kept for reuse.
const SPARE_LISTS: usize = 256;

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
    /// Tasks in the queue, not yet taken by a worker: the length that
    /// `capacity` bounds. A task submitted outside a batch counts from the
    /// moment [`WorkerPool::try_submit`] accepts it; a batch's tasks count
    /// once the batch is sent (see [`WorkerPool::stage`]).
    queued: AtomicUsize,
    /// When the queue last went from empty to not, in nanoseconds since
    /// `epoch` (plus one); 0 once it is empty and no worker holds tasks
    /// of a batch it took and has not started. See [`WorkerPool::is_behind`].
    backlog_since: AtomicU64,
    epoch: Instant,
    capacity: usize,
    /// More than one CPU ([`PoolConfig::cpus`]): long batches are sent
    /// before they end, and a worker shares a batch with idle ones. On one
    /// CPU either would only add context switches.
    parallel: bool,
    /// Set once shutdown begins: no more tasks are accepted.
    closed: AtomicBool,
    /// Room in the queue for [`WorkerPool::submit`], which waits for it.
    room_lock: Mutex<()>,
    room: Condvar,
    /// Threads waiting for room: with none, taking tasks wakes nobody.
    room_waiters: AtomicUsize,
    /// Emptied task lists, so batches allocate nothing.
    spare: (Sender<VecDeque<T>>, Receiver<VecDeque<T>>),
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

impl<T> Shared<T> {
    /// `at` in the units of `backlog_since`.
    fn nanos(&self, at: Instant) -> u64 {
        at.saturating_duration_since(self.epoch).as_nanos() as u64 + 1
    }

    /// Tasks queued at `at`, onto `before` already queued.
    fn note_queued(&self, before: usize, at: Instant) {
        if before == 0 {
            self.backlog_since.store(self.nanos(at), Ordering::Relaxed);
        }
    }

    /// `n` tasks taken off the queue, which held `before`.
    fn note_taken(&self, before: usize, n: usize) {
        if before == n {
            self.backlog_since.store(0, Ordering::Relaxed);
        }
    }
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
        let capacity = config.queue_capacity.max(1);
        // Every message holds at least one task, and at most `capacity`
        // tasks are queued; a worker handing tasks back can briefly add as
        // many again.
        let (tx, rx) = bounded(2 * capacity);
        let pool = WorkerPool {
            shared: Arc::new(Shared {
                sender: RwLock::new(Some(tx)),
                receiver: rx,
                queued: AtomicUsize::new(0),
                backlog_since: AtomicU64::new(0),
                epoch: Instant::now(),
                capacity,
                parallel: config.cpus > 1,
                closed: AtomicBool::new(false),
                room_lock: Mutex::new(()),
                room: Condvar::new(),
                room_waiters: AtomicUsize::new(0),
                spare: bounded(SPARE_LISTS),
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
        let sh = &self.shared;
        if sh.closed.load(Ordering::Acquire) {
            return Err(SubmitError::Closed(task));
        }
        let task = match self.stage(task) {
            Staged::Queued { full } => {
                if full {
                    // A long batch does not keep every worker waiting.
                    self.send_staged();
                    if !sh.parallel {
                        // On one CPU they can start only if this thread
                        // steps aside.
                        thread::yield_now();
                    }
                }
                return Ok(());
            }
            Staged::Full(task) => return Err(SubmitError::Full(task)),
            Staged::NoBatch(task) => task,
        };
        let before = sh.queued.fetch_add(1, Ordering::AcqRel);
        if before >= sh.capacity {
            sh.queued.fetch_sub(1, Ordering::AcqRel);
            return Err(SubmitError::Full(task));
        }
        let at = Instant::now();
        sh.note_queued(before, at);
        let mut tasks = self.spare_list();
        tasks.push_back(task);
        self.send(Queued { tasks, at });
        Ok(())
    }

    /// Queues `task` in the batch open on this thread, if it is for this
    /// pool and the queue has room for it besides what the batch holds.
    /// The batch's tasks count in [`Shared::queued`] once it is sent: one
    /// update for all of them. Other threads' batches are not seen, so
    /// with several submitting at once the queue can exceed its capacity
    /// by what their batches hold (at most 64 tasks each on more than one
    /// CPU, 1024 on one).
    fn stage(&self, task: T) -> Staged<T> {
        STAGE.with(|stage| {
            let mut stage = stage.borrow_mut();
            if stage.pool != self.id() {
                return Staged::NoBatch(task);
            }
            let boxed = stage
                .tasks
                .get_or_insert_with(|| Box::new(VecDeque::<T>::new()));
            if !boxed.is::<VecDeque<T>>() {
                // The last batch on this thread was another kind of pool's.
                *boxed = Box::new(VecDeque::<T>::new());
            }
            let tasks = boxed.downcast_mut::<VecDeque<T>>().expect("just checked");
            if tasks.capacity() == 0 {
                *tasks = self.spare_list();
            }
            let sh = &self.shared;
            if sh.queued.load(Ordering::Acquire) + tasks.len() >= sh.capacity {
                return Staged::Full(task);
            }
            tasks.push_back(task);
            let due = if self.shared.parallel {
                WAKE_EVERY
            } else {
                ONE_CPU_BATCH
            };
            Staged::Queued {
                full: tasks.len() >= due,
            }
        })
    }

    /// Sends what the batch open on this thread has queued.
    fn send_staged(&self) {
        let taken = STAGE.with(|stage| {
            let mut stage = stage.borrow_mut();
            let at = stage.started.unwrap_or_else(Instant::now);
            let tasks = stage.tasks.as_mut()?.downcast_mut::<VecDeque<T>>()?;
            (!tasks.is_empty()).then(|| (std::mem::take(tasks), at))
        });
        if let Some((tasks, at)) = taken {
            let before = self.shared.queued.fetch_add(tasks.len(), Ordering::AcqRel);
            self.shared.note_queued(before, at);
            self.send(Queued { tasks, at });
        }
    }

    /// Puts accepted tasks on the channel and wakes a worker for them.
    fn send(&self, q: Queued<T>) {
        let sent = {
            let sender = self.shared.sender.read().unwrap_or_else(|e| e.into_inner());
            match sender.as_ref() {
                Some(tx) => tx.try_send(q).map_err(|e| e.into_inner()),
                None => Err(q),
            }
        };
        match sent {
            Ok(()) => {
                self.wake_one();
            }
            Err(q) => {
                // Shut down after the tasks were accepted (the channel has
                // room for every accepted task): they will not run.
                self.shared
                    .queued
                    .fetch_sub(q.tasks.len(), Ordering::AcqRel);
                for task in q.tasks {
                    task.abandon();
                }
            }
        }
    }

    /// An empty task list, reused if one is spare.
    fn spare_list(&self) -> VecDeque<T> {
        self.shared.spare.1.try_recv().unwrap_or_default()
    }

    /// Like [`WorkerPool::try_submit`], but waits for room in the queue
    /// when it is full. Fails only once the pool is shut down.
    pub fn submit(&self, mut task: T) -> Result<(), SubmitError<T>> {
        let sh = &self.shared;
        loop {
            task = match self.try_submit(task) {
                Err(SubmitError::Full(task)) => task,
                other => return other,
            };
            sh.room_waiters.fetch_add(1, Ordering::SeqCst);
            let mut room = sh.room_lock.lock().unwrap_or_else(|e| e.into_inner());
            while sh.queued.load(Ordering::SeqCst) >= sh.capacity
                && !sh.closed.load(Ordering::SeqCst)
            {
                room = sh.room.wait(room).unwrap_or_else(|e| e.into_inner());
            }
            drop(room);
            sh.room_waiters.fetch_sub(1, Ordering::SeqCst);
        }
    }

    /// Runs `f`, holding back the tasks this thread submits to this pool
    /// meanwhile; when `f` returns (or panics), they go to the queue
    /// together and one sleeping worker is woken for them. A batch that
    /// grows long sends what it holds every 64 tasks, so other cores need
    /// not wait for its end (on one CPU, every 1024; see
    /// [`PoolConfig::cpus`]).
    ///
    /// A thread that decodes many requests from one read submits them
    /// inside one batch: waking a worker for the first task would let the
    /// scheduler switch to it at once, on a busy core, and it would run one
    /// task and sleep again. The batch costs the queue one message instead
    /// of one per task, and its tasks share one reading of the clock for
    /// their queueing time.
    ///
    /// The worker that takes a batch runs its tasks in order, but does not
    /// keep them from others: while another worker sleeps it hands half of
    /// what is left back to the queue, and before a task that is not
    /// [quick](Task::is_quick) it hands back all of it. Tasks are accepted
    /// or refused ([`SubmitError::Full`]) as they are submitted, as outside
    /// a batch. Batches do not nest: an inner one just runs `f`.
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
        let open = STAGE.with(|stage| {
            let mut stage = stage.borrow_mut();
            if stage.pool != 0 {
                return false;
            }
            stage.pool = self.id();
            stage.started = Some(Instant::now());
            true
        });
        if !open {
            return f();
        }
        struct Release<'a, T: Task>(&'a WorkerPool<T>);
        impl<T: Task> Drop for Release<'_, T> {
            fn drop(&mut self) {
                self.0.send_staged();
                STAGE.with(|stage| {
                    let mut stage = stage.borrow_mut();
                    stage.pool = 0;
                    stage.started = None;
                });
            }
        }
        let _release = Release(self);
        f()
    }

    /// Tells this pool's batches from another's.
    fn id(&self) -> usize {
        Arc::as_ptr(&self.shared) as *const () as usize
    }

    /// Wakes a sleeping worker, if one is not already being woken, for a
    /// task just queued. False if every sleeper was already being woken.
    fn wake_one(&self) -> bool {
        wake_one(&self.shared)
    }

    /// Whether the pool was built for one CPU ([`PoolConfig::cpus`]).
    pub(crate) fn one_cpu(&self) -> bool {
        !self.shared.parallel
    }

    /// Tasks waiting in the queue: [`PoolStats::queued`] alone, cheaper
    /// to read.
    pub fn queued(&self) -> usize {
        self.shared.queued.load(Ordering::Relaxed) + TAKEN.with(Cell::get)
    }

    /// True when a task submitted now would wait for the workers to catch
    /// up: tasks have waited to start for `queued` before `now` at least
    /// (in the queue, or in the hands of a worker busy with an earlier one
    /// of their batch), the [batch](WorkerPool::batch) open on this thread
    /// has held tasks for `batched`, or, on one CPU ([`PoolConfig::cpus`]),
    /// every worker is busy, since a busy worker there runs only once the
    /// caller steps aside. Where workers get CPUs of their own they start
    /// what is queued within microseconds, and this stays false unless
    /// they are swamped. An estimate, for choosing where to run a task.
    pub fn is_behind(&self, now: Instant, queued: Duration, batched: Duration) -> bool {
        let sh = &self.shared;
        if !sh.parallel && self.is_saturated() {
            return true;
        }
        let since = sh.backlog_since.load(Ordering::Relaxed);
        if since != 0 && sh.nanos(now).saturating_sub(since) >= queued.as_nanos() as u64 {
            return true;
        }
        // What this thread's batch holds waits for the batch to end (on one
        // CPU, a whole poll's worth).
        STAGE.with(|stage| {
            let stage = stage.borrow();
            stage.pool == self.id()
                && stage
                    .started
                    .is_some_and(|at| now.saturating_duration_since(at) >= batched)
                && stage
                    .tasks
                    .as_ref()
                    .and_then(|t| t.downcast_ref::<VecDeque<T>>())
                    .is_some_and(|q| !q.is_empty())
        })
    }

    /// True when every worker is running a task or tasks wait for one:
    /// a task submitted now would wait.
    pub fn is_saturated(&self) -> bool {
        let s = &self.shared;
        s.queued.load(Ordering::Relaxed) > 0 || s.busy.load(Ordering::Relaxed) >= s.workers
    }

    /// The pool's counts.
    pub fn stats(&self) -> PoolStats {
        let s = &self.shared;
        PoolStats {
            workers: s.workers,
            busy: s.busy.load(Ordering::Relaxed),
            queued: s.queued.load(Ordering::Relaxed),
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
        self.shared.closed.store(true, Ordering::SeqCst);
        let Some(tx) = self
            .shared
            .sender
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .take()
        else {
            return PoolReport::default();
        };
        if self.shared.room_waiters.load(Ordering::SeqCst) > 0 {
            drop(self.shared.room_lock.lock());
            self.shared.room.notify_all();
        }
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
                let n = q.tasks.len();
                self.shared
                    .note_taken(self.shared.queued.fetch_sub(n, Ordering::AcqRel), n);
                report.abandoned += n;
                for task in q.tasks {
                    task.abandon();
                }
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
mod tests;

//! Task groups: Go's `errgroup` for synchronous code.
//!
//! A handler that fans out to several backends runs each call as a task of
//! a [`TaskGroup`] bound to its context. The first task that fails cancels
//! the group's context, so the calls still running stop early (their
//! contexts are children of it) and tasks not yet started are skipped;
//! [`TaskGroup::wait`] returns that first error.

use std::any::Any;
use std::collections::VecDeque;
use std::fmt;
use std::io;
use std::panic::{self, AssertUnwindSafe};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::{self, JoinHandle};

use crate::context::{CancelHandle, Context};
use crate::error::{Error, ErrorKind, Execution};
use crate::status::Status;

/// Why a task ended without returning: converted into the group's error
/// type, which must implement `From<TaskError>` ([`Error`] and [`Status`]
/// do, as `INTERNAL`).
///
/// # Examples
///
/// ```
/// use syncrpc::{Code, Context, Error, TaskGroup};
///
/// let group: TaskGroup = TaskGroup::new(&Context::background());
/// group.spawn(|_ctx| -> Result<(), Error> { panic!("out of cheese") });
/// let err = group.wait().unwrap_err();
/// assert_eq!(err.code(), Code::INTERNAL);
/// assert!(err.to_string().contains("out of cheese"));
/// ```
#[derive(Debug)]
#[non_exhaustive]
pub enum TaskError {
    /// The task panicked.
    Panicked {
        /// The task's thread name.
        task: String,
        /// The panic message, if it was a string.
        message: String,
    },
    /// The operating system refused to start a thread for the task.
    Spawn {
        /// The name the thread would have had.
        task: String,
        /// What the operating system said.
        error: io::Error,
    },
}

impl fmt::Display for TaskError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TaskError::Panicked { task, message } => write!(f, "task {task} panicked: {message}"),
            TaskError::Spawn { task, error } => {
                write!(f, "cannot start a thread for task {task}: {error}")
            }
        }
    }
}

impl std::error::Error for TaskError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            TaskError::Spawn { error, .. } => Some(error),
            TaskError::Panicked { .. } => None,
        }
    }
}

impl From<TaskError> for Status {
    fn from(e: TaskError) -> Status {
        Status::internal(e.to_string())
    }
}

impl From<TaskError> for Error {
    /// `INTERNAL`, as a handler's panic is answered by the server.
    fn from(e: TaskError) -> Error {
        let (kind, execution) = match e {
            TaskError::Panicked { .. } => (ErrorKind::Status, Execution::Ran),
            TaskError::Spawn { .. } => (ErrorKind::Io, Execution::NotRun),
        };
        Error::new(kind, Status::internal(e.to_string()))
            .with_execution(execution)
            .with_source(e)
    }
}

/// A queued task: runs it, or (with `true`) drops it unrun.
type Job = Box<dyn FnOnce(bool) + Send + 'static>;

struct State<E> {
    queue: VecDeque<Job>,
    /// Worker threads alive.
    running: usize,
    /// Workers waiting for a task.
    waiting: usize,
    /// No more tasks will come: workers exit once the queue is empty.
    closed: bool,
    /// Tasks spawned and not yet finished (queued or running).
    unfinished: usize,
    first_error: Option<E>,
    threads: Vec<JoinHandle<()>>,
    spawned: usize,
}

struct Shared<E> {
    state: Mutex<State<E>>,
    /// Signalled when the group may have become idle.
    idle: Condvar,
    /// Signalled when a task is queued or the group closes.
    work: Condvar,
}

impl<E> Shared<E> {
    fn lock(&self) -> MutexGuard<'_, State<E>> {
        // Tasks run outside the lock and panics are caught: the state is
        // never left half-updated.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn failed(&self) -> bool {
        self.lock().first_error.is_some()
    }

    /// Keeps the first error and cancels the group's context.
    fn record(&self, err: E, cancel: &CancelHandle) {
        let first = {
            let mut st = self.lock();
            let first = st.first_error.is_none();
            if first {
                st.first_error = Some(err);
            }
            first
        };
        if first {
            cancel.cancel();
        }
    }

    fn finish_one(st: &mut State<E>, idle: &Condvar) {
        st.unfinished -= 1;
        if st.unfinished == 0 {
            idle.notify_all();
        }
    }

    /// A worker: runs queued tasks, waits for more while the group is
    /// open, exits once it is closed and the queue is empty. Reusing
    /// workers keeps a group of many short tasks from starting a thread
    /// for each.
    fn work(&self) {
        let mut st = self.lock();
        loop {
            if let Some(job) = st.queue.pop_front() {
                drop(st);
                job(false);
                st = self.lock();
                Shared::finish_one(&mut st, &self.idle);
                continue;
            }
            if st.closed {
                break;
            }
            st.waiting += 1;
            st = self.work.wait(st).unwrap_or_else(|e| e.into_inner());
            st.waiting -= 1;
        }
        st.running -= 1;
        if st.running == 0 {
            self.idle.notify_all();
        }
    }
}

/// The outcome of one task, filled when it ends.
struct Outcome<T> {
    value: Mutex<Option<Option<T>>>,
    ready: Condvar,
}

impl<T> Outcome<T> {
    fn set(&self, v: Option<T>) {
        *self.value.lock().unwrap_or_else(|e| e.into_inner()) = Some(v);
        self.ready.notify_all();
    }
}

/// The value a task returns, once it has run.
///
/// # Examples
///
/// ```
/// use syncrpc::{Context, Error, TaskGroup};
///
/// let group: TaskGroup = TaskGroup::new(&Context::background());
/// let answer = group.spawn(|_ctx| Ok::<_, Error>(6 * 7));
/// group.wait()?;
/// assert_eq!(answer.join(), Some(42));
/// # Ok::<(), Error>(())
/// ```
pub struct TaskHandle<T> {
    outcome: Arc<Outcome<T>>,
}

impl<T> TaskHandle<T> {
    /// Blocks until the task has ended; its value, or `None` if it failed,
    /// panicked, or was skipped because another task had failed first.
    pub fn join(self) -> Option<T> {
        let mut v = self.outcome.value.lock().unwrap_or_else(|e| e.into_inner());
        loop {
            if let Some(v) = v.take() {
                return v;
            }
            v = self
                .outcome
                .ready
                .wait(v)
                .unwrap_or_else(|e| e.into_inner());
        }
    }

    /// True once the task has ended.
    pub fn is_finished(&self) -> bool {
        self.outcome
            .value
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .is_some()
    }
}

impl<T> fmt::Debug for TaskHandle<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TaskHandle")
            .field("finished", &self.is_finished())
            .finish()
    }
}

/// Runs closures on threads, bound to a [`Context`]; [`TaskGroup::wait`]
/// returns the first error, and that error cancels the group's context so
/// the other tasks stop early. Go's `errgroup.WithContext`, for threads.
///
/// Each task gets the group's context, a child of the one the group was
/// made from: client calls made with it inherit the deadline and trace id,
/// and stop when a sibling fails. With [`TaskGroup::limit`], at most that
/// many tasks run at once, on at most that many threads; the others wait
/// in a queue, and tasks still queued when one fails are skipped.
///
/// A task that panics ends with a [`TaskError`], converted into the
/// group's error type `E` (which is [`Error`] unless said otherwise; any
/// type implementing `From<TaskError>` works, [`Status`] included).
///
/// Dropping a group without waiting cancels its context and still waits
/// for its tasks: no task outlives its group.
///
/// # Examples
///
/// Fan out to two backends and stop both as soon as one fails:
///
/// ```no_run
/// use std::time::Duration;
/// use syncrpc::client::Client;
/// use syncrpc::{Context, Error, TaskGroup};
///
/// let users = Client::connect("127.0.0.1:7001")?;
/// let orders = Client::connect("127.0.0.1:7002")?;
/// let ctx = Context::background().with_timeout(Duration::from_secs(1));
///
/// let group: TaskGroup = TaskGroup::new(&ctx).limit(8);
/// let user = group.spawn(move |ctx| users.call::<_, String>(ctx, "/users.Users/Name", &42));
/// let count = group.spawn(move |ctx| orders.call::<_, u32>(ctx, "/orders.Orders/Count", &42));
/// group.wait()?; // the first error, if any
/// println!("{} has {} orders", user.join().unwrap(), count.join().unwrap());
/// # Ok::<(), Error>(())
/// ```
///
/// Without a client, a panic becomes the task's error:
///
/// ```
/// use syncrpc::{Context, Status, TaskGroup};
///
/// let group = TaskGroup::<Status>::new(&Context::background()).limit(2);
/// for i in 0..4 {
///     group.spawn(move |ctx| {
///         ctx.check()?; // stop early once a sibling failed
///         if i == 2 { Err(Status::not_found("no 2")) } else { Ok(()) }
///     });
/// }
/// assert_eq!(group.wait().unwrap_err().message(), "no 2");
/// ```
pub struct TaskGroup<E = Error> {
    ctx: Context,
    cancel: CancelHandle,
    shared: Arc<Shared<E>>,
    limit: usize,
    name: String,
}

impl<E> fmt::Debug for TaskGroup<E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let st = self.shared.lock();
        f.debug_struct("TaskGroup")
            .field("name", &self.name)
            .field("limit", &self.limit)
            .field("unfinished", &st.unfinished)
            .field("failed", &st.first_error.is_some())
            .finish()
    }
}

impl<E: From<TaskError> + Send + 'static> TaskGroup<E> {
    /// A group whose tasks run under a child of `ctx`, with no limit on how
    /// many run at once.
    pub fn new(ctx: &Context) -> TaskGroup<E> {
        let (ctx, cancel) = ctx.with_cancel();
        TaskGroup {
            ctx,
            cancel,
            shared: Arc::new(Shared {
                state: Mutex::new(State {
                    queue: VecDeque::new(),
                    running: 0,
                    waiting: 0,
                    closed: false,
                    unfinished: 0,
                    first_error: None,
                    threads: Vec::new(),
                    spawned: 0,
                }),
                idle: Condvar::new(),
                work: Condvar::new(),
            }),
            limit: usize::MAX,
            name: "syncrpc-task".to_owned(),
        }
    }

    /// Runs at most `n` tasks at once (0 is taken as 1); the rest wait in
    /// a queue. Default: no limit, one thread per task running at once.
    pub fn limit(mut self, n: usize) -> TaskGroup<E> {
        self.limit = n.max(1);
        self
    }

    /// Names the group's threads `{prefix}-{n}`. Default `syncrpc-task`.
    pub fn name(mut self, prefix: impl Into<String>) -> TaskGroup<E> {
        self.name = prefix.into();
        self
    }

    /// The group's context: cancelled when a task fails or the group ends.
    pub fn context(&self) -> &Context {
        &self.ctx
    }

    /// Starts `task` on a thread of the group (or queues it behind the
    /// limit). Never blocks. The task gets the group's context; its `Err`,
    /// or its panic, becomes the group's error if it is the first.
    pub fn spawn<T, F>(&self, task: F) -> TaskHandle<T>
    where
        T: Send + 'static,
        F: FnOnce(&Context) -> Result<T, E> + Send + 'static,
    {
        let outcome = Arc::new(Outcome {
            value: Mutex::new(None),
            ready: Condvar::new(),
        });
        let handle = TaskHandle {
            outcome: outcome.clone(),
        };
        let ctx = self.ctx.clone();
        let shared = self.shared.clone();
        let cancel = self.cancel.clone();
        let job: Job = Box::new(move |skip| {
            if skip || shared.failed() {
                outcome.set(None);
                return;
            }
            match panic::catch_unwind(AssertUnwindSafe(|| task(&ctx))) {
                Ok(Ok(v)) => outcome.set(Some(v)),
                Ok(Err(e)) => {
                    shared.record(e, &cancel);
                    outcome.set(None);
                }
                Err(payload) => {
                    let task = thread::current().name().unwrap_or("task").to_owned();
                    let message = panic_message(payload.as_ref());
                    shared.record(E::from(TaskError::Panicked { task, message }), &cancel);
                    outcome.set(None);
                }
            }
        });
        let mut st = self.shared.lock();
        st.unfinished += 1;
        st.queue.push_back(job);
        if st.queue.len() <= st.waiting {
            // A waiting worker takes it.
            self.shared.work.notify_one();
            return handle;
        }
        if st.running >= self.limit {
            return handle;
        }
        st.running += 1;
        let task = format!("{}-{}", self.name, st.spawned);
        st.spawned += 1;
        drop(st);
        let shared = self.shared.clone();
        match thread::Builder::new()
            .name(task.clone())
            .spawn(move || shared.work())
        {
            Ok(t) => self.shared.lock().threads.push(t),
            Err(error) => self.spawn_failed(TaskError::Spawn { task, error }),
        }
        handle
    }

    /// No thread could be started for a queued task: with other workers
    /// alive, they take it; with none, the queue is dropped unrun and the
    /// group fails.
    fn spawn_failed(&self, err: TaskError) {
        let skipped: Vec<Job> = {
            let mut st = self.shared.lock();
            st.running -= 1;
            if st.running > 0 {
                // A live worker takes the task, now or when it is free.
                self.shared.work.notify_one();
                return;
            }
            self.shared.idle.notify_all();
            st.queue.drain(..).collect()
        };
        self.shared.record(E::from(err), &self.cancel);
        for job in skipped {
            job(true);
            Shared::finish_one(&mut self.shared.lock(), &self.shared.idle);
        }
    }

    /// Blocks until every task has ended, cancels the group's context, and
    /// returns the first error.
    pub fn wait(self) -> Result<(), E> {
        self.join_all();
        match self.shared.lock().first_error.take() {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }
}

impl<E> TaskGroup<E> {
    /// Waits for every task and every worker loop, joins the threads and
    /// ends the context.
    fn join_all(&self) {
        let threads = {
            let mut st = self.shared.lock();
            st.closed = true;
            self.shared.work.notify_all();
            while st.unfinished > 0 || st.running > 0 {
                st = self.shared.idle.wait(st).unwrap_or_else(|e| e.into_inner());
            }
            std::mem::take(&mut st.threads)
        };
        // Every worker has left its loop and is exiting.
        for t in threads {
            let _ = t.join();
        }
        self.cancel.cancel();
    }
}

impl<E> Drop for TaskGroup<E> {
    fn drop(&mut self) {
        // Stop the tasks first: a dropped group is abandoned work.
        self.cancel.cancel();
        self.join_all();
    }
}

fn panic_message(payload: &(dyn Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_owned()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "a panic with a non-string payload".to_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::mpsc;
    use std::time::Duration;

    #[test]
    fn first_error_cancels_the_siblings() {
        let group: TaskGroup = TaskGroup::new(&Context::background());
        let (started_tx, started_rx) = mpsc::channel();
        let slow = group.spawn(move |ctx| {
            started_tx.send(()).unwrap();
            // Would sleep a minute unless the sibling's failure cancels.
            if ctx.wait_cancelled(Duration::from_secs(60)) {
                return Err(Error::from(ctx.check().unwrap_err()));
            }
            Ok(1)
        });
        started_rx.recv().unwrap();
        group.spawn(|_| -> Result<(), Error> { Err(Error::from(Status::not_found("gone"))) });
        let err = group.wait().unwrap_err();
        assert_eq!(err.code(), crate::Code::NOT_FOUND);
        assert_eq!(slow.join(), None);
    }

    #[test]
    fn limit_bounds_concurrency_and_threads() {
        let group = TaskGroup::<Status>::new(&Context::background())
            .limit(3)
            .name("limited");
        let running = Arc::new(AtomicUsize::new(0));
        let peak = Arc::new(AtomicUsize::new(0));
        let handles: Vec<_> = (0..40)
            .map(|i| {
                let (running, peak) = (running.clone(), peak.clone());
                group.spawn(move |_| {
                    let now = running.fetch_add(1, Ordering::SeqCst) + 1;
                    peak.fetch_max(now, Ordering::SeqCst);
                    assert!(thread::current().name().unwrap().starts_with("limited-"));
                    thread::yield_now();
                    running.fetch_sub(1, Ordering::SeqCst);
                    Ok(i)
                })
            })
            .collect();
        assert!(group.shared.lock().spawned <= 3);
        group.wait().unwrap();
        assert!(peak.load(Ordering::SeqCst) <= 3);
        let sum: usize = handles.into_iter().map(|h| h.join().unwrap()).sum();
        assert_eq!(sum, (0..40).sum::<usize>());
    }

    #[test]
    fn queued_tasks_are_skipped_after_a_failure() {
        let group = TaskGroup::<Status>::new(&Context::background()).limit(1);
        let ran = Arc::new(AtomicUsize::new(0));
        group.spawn(|_| -> Result<(), Status> { Err(Status::aborted("first")) });
        let later: Vec<_> = (0..10)
            .map(|_| {
                let ran = ran.clone();
                group.spawn(move |_| {
                    ran.fetch_add(1, Ordering::SeqCst);
                    Ok(())
                })
            })
            .collect();
        assert_eq!(group.wait().unwrap_err().message(), "first");
        assert!(later.into_iter().all(|h| h.join().is_none()));
        assert_eq!(ran.load(Ordering::SeqCst), 0);
    }

    #[test]
    fn panic_becomes_the_tasks_error_and_context_ends_with_wait() {
        let group: TaskGroup = TaskGroup::new(&Context::background());
        let ctx = group.context().clone();
        group.spawn(|_| -> Result<(), Error> { panic!("boom {}", 7) });
        let err = group.wait().unwrap_err();
        assert_eq!(err.code(), crate::Code::INTERNAL);
        assert!(err.to_string().contains("panicked: boom 7"), "{err}");
        assert!(ctx.is_cancelled(), "wait ends the group's context");
    }

    #[test]
    fn dropping_a_group_cancels_and_joins_its_tasks() {
        let (tx, rx) = mpsc::channel();
        {
            let group: TaskGroup = TaskGroup::new(&Context::background());
            group.spawn(move |ctx| {
                // Would block for a minute without the cancellation.
                let cancelled = ctx.wait_cancelled(Duration::from_secs(60));
                tx.send(cancelled).unwrap();
                Ok(())
            });
        }
        assert_eq!(
            rx.try_recv(),
            Ok(true),
            "the task ended before drop returned"
        );
    }

    #[test]
    fn parent_deadline_reaches_the_tasks() {
        let parent = Context::background().with_timeout(Duration::from_millis(20));
        let group: TaskGroup = TaskGroup::new(&parent);
        let h = group.spawn(|ctx| Ok(ctx.deadline()));
        group.wait().unwrap();
        assert_eq!(h.join().unwrap(), parent.deadline());
    }
}

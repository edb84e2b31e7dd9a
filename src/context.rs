//! The call context: deadline, cancellation, trace id and metadata.
//!
//! Every handler gets a [`Context`], and every client call takes one, so a
//! handler that calls other services passes its own and they inherit its
//! remaining deadline, its cancellation and its trace id: when the first
//! caller's budget runs out, the whole chain stops. Top-level code starts
//! from [`Context::background`].

use std::cell::RefCell;
use std::fmt;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, OnceLock, Weak};
use std::time::{Duration, Instant};

use crate::metadata::{Metadata, MetadataValue};
use crate::peer::Peer;
use crate::spare::SpareList;
use crate::status::Status;
use crate::trace::TraceId;

/// Why a context was cancelled.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum CancelReason {
    /// Cancelled explicitly: a CANCEL frame from the caller, a
    /// [`CancelHandle`], or a failed sibling in a task group.
    Cancelled,
    /// The deadline passed.
    DeadlineExceeded,
    /// The server is shutting down and its shutdown timeout ran out.
    Shutdown,
}

impl CancelReason {
    /// The status a call cancelled for this reason ends with.
    pub fn to_status(self) -> Status {
        match self {
            CancelReason::Cancelled => Status::cancelled("the request was cancelled"),
            CancelReason::DeadlineExceeded => Status::deadline_exceeded("the deadline passed"),
            CancelReason::Shutdown => Status::cancelled("the server is shutting down"),
        }
    }
}

type Listener = Box<dyn FnOnce(CancelReason) + Send>;

#[derive(Default)]
struct CancelState {
    reason: Option<CancelReason>,
    listeners: Vec<(u64, Listener)>,
    next_id: u64,
}

/// What a server knows about the request a handler serves.
struct RequestInfo {
    /// Method names are interned (`server::service`): no count to keep.
    method: &'static str,
    caller: Option<Box<str>>,
    peer: Option<Peer>,
    metadata: Metadata,
}

struct Inner {
    deadline: Option<Instant>,
    /// Set, or for a request that came without one, made on first use:
    /// most successful requests never need theirs.
    trace_id: OnceLock<TraceId>,
    /// Whether `trace_id` is made on first use when unset.
    make_trace_id: bool,
    parent: Option<Context>,
    request: Option<RequestInfo>,
    /// Fast path for `is_cancelled`.
    cancelled: AtomicBool,
    /// For a server's request: whether its handler started ([`STARTED`]),
    /// may still start ([`UNSTARTED`]) or must not ([`FORBIDDEN`]).
    start: AtomicU8,
    state: Mutex<CancelState>,
    cond: Condvar,
    response_md: Mutex<Metadata>,
    /// Whether `response_md` was ever set: most handlers set none, and
    /// then writing the response takes no lock for it.
    has_response_md: AtomicBool,
    /// Keeps this context registered with its parent's cancellation.
    parent_registration: Mutex<Option<CancelGuard>>,
}

impl Inner {
    /// Makes a blank context (as [`Context::blank`] makes it with nothing)
    /// the context of a request a server read.
    fn begin_request(
        &mut self,
        deadline: Option<Instant>,
        trace_id: Option<TraceId>,
        request: RequestInfo,
    ) {
        self.deadline = deadline;
        if let Some(id) = trace_id {
            let _ = self.trace_id.set(id);
        }
        self.make_trace_id = true;
        self.request = Some(request);
    }

    /// Makes this context blank again, in place: what it held is dropped,
    /// its allocations are kept, and nothing here needs an atomic
    /// operation, since no one else holds it.
    fn reset(&mut self) {
        self.deadline = None;
        self.trace_id = OnceLock::new();
        self.make_trace_id = false;
        self.parent = None;
        self.request = None;
        *self.cancelled.get_mut() = false;
        *self.start.get_mut() = UNSTARTED;
        let state = self.state.get_mut().unwrap_or_else(|e| e.into_inner());
        state.reason = None;
        state.listeners.clear();
        state.next_id = 0;
        self.response_md
            .get_mut()
            .unwrap_or_else(|e| e.into_inner())
            .clear();
        *self.has_response_md.get_mut() = false;
        *self
            .parent_registration
            .get_mut()
            .unwrap_or_else(|e| e.into_inner()) = None;
    }
}

/// A request's context: deadline, cancellation, trace id, the request's
/// metadata and the response's.
///
/// Cloning is cheap (one reference count) and clones share everything:
/// cancelling one cancels all. A `Context` is `Send + Sync`, so it can be
/// handed to threads a handler starts (see [`crate::TaskGroup`]).
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use syncrpc::Context;
///
/// let root = Context::background();
/// assert!(root.deadline().is_none());
///
/// let ctx = root.with_timeout(Duration::from_secs(5));
/// assert!(ctx.remaining().unwrap() <= Duration::from_secs(5));
///
/// let (child, cancel) = ctx.with_cancel();
/// assert!(!child.is_cancelled());
/// cancel.cancel();
/// assert!(child.is_cancelled());
/// assert!(!ctx.is_cancelled()); // cancellation flows down, never up
/// ```
#[derive(Clone)]
pub struct Context {
    inner: Arc<Inner>,
}

/// Cancels the context it came from (and every context derived from it).
///
/// Made by [`Context::with_cancel`]. Dropping it does not cancel.
#[derive(Clone)]
pub struct CancelHandle {
    ctx: Context,
}

impl CancelHandle {
    /// Cancels the context with [`CancelReason::Cancelled`].
    pub fn cancel(&self) {
        self.ctx.cancel(CancelReason::Cancelled);
    }

    /// Cancels the context with the given reason.
    pub fn cancel_with(&self, reason: CancelReason) {
        self.ctx.cancel(reason);
    }
}

impl fmt::Debug for CancelHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CancelHandle").finish_non_exhaustive()
    }
}

/// Keeps a cancellation listener registered; dropping it unregisters the
/// listener.
#[must_use = "the listener is removed when the guard is dropped"]
pub struct CancelGuard {
    owner: Weak<Inner>,
    id: u64,
}

impl Drop for CancelGuard {
    fn drop(&mut self) {
        if let Some(inner) = self.owner.upgrade() {
            let mut st = lock(&inner.state);
            if let Some(i) = st.listeners.iter().position(|(id, _)| *id == self.id) {
                // Dropped outside the lock: a listener may own other guards.
                let listener = st.listeners.swap_remove(i);
                drop(st);
                drop(listener);
            }
        }
    }
}

impl fmt::Debug for CancelGuard {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CancelGuard").field("id", &self.id).finish()
    }
}

/// [`Inner::start`]: the handler has not started.
const UNSTARTED: u8 = 0;
/// [`Inner::start`]: the handler started.
const STARTED: u8 = 1;
/// [`Inner::start`]: the request was answered or dropped first; the
/// handler must not start.
const FORBIDDEN: u8 = 2;

/// How many request contexts wait for reuse between threads at most.
const SPARE_CONTEXTS: usize = 4096;

/// Allocations of request contexts ready for the next request. A context
/// is made on the thread that reads its request and freed on the worker
/// that answers it; the system allocator serves that pattern slowly, and
/// reuse spares the allocation altogether.
fn spare_contexts() -> &'static SpareList<Arc<Inner>> {
    static SPARE: OnceLock<SpareList<Arc<Inner>>> = OnceLock::new();
    SPARE.get_or_init(|| SpareList::new(SPARE_CONTEXTS))
}

thread_local! {
    /// This thread's spare contexts.
    static SPARE_HERE: RefCell<Vec<Arc<Inner>>> = const { RefCell::new(Vec::new()) };
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A listener that panicked cannot leave the state inconsistent: every
    // critical section here is a few plain assignments.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Context {
    fn from_inner(inner: Inner) -> Context {
        Context {
            inner: Arc::new(inner),
        }
    }

    fn blank(
        deadline: Option<Instant>,
        trace_id: Option<TraceId>,
        parent: Option<Context>,
        request: Option<RequestInfo>,
    ) -> Inner {
        let cell = OnceLock::new();
        if let Some(id) = trace_id {
            let _ = cell.set(id);
        }
        Inner {
            deadline,
            trace_id: cell,
            make_trace_id: false,
            parent,
            request,
            cancelled: AtomicBool::new(false),
            start: AtomicU8::new(UNSTARTED),
            state: Mutex::new(CancelState::default()),
            cond: Condvar::new(),
            response_md: Mutex::new(Metadata::new()),
            has_response_md: AtomicBool::new(false),
            parent_registration: Mutex::new(None),
        }
    }

    /// The root context: no deadline, never cancelled, no trace id. Client
    /// calls made outside any handler start here.
    pub fn background() -> Context {
        static BACKGROUND: OnceLock<Context> = OnceLock::new();
        BACKGROUND
            .get_or_init(|| Context::from_inner(Context::blank(None, None, None, None)))
            .clone()
    }

    /// True for [`Context::background`] itself, which is never cancelled.
    pub(crate) fn is_background(&self) -> bool {
        Arc::ptr_eq(&self.inner, &Context::background().inner)
    }

    /// The context of a request a server read (crate-internal). Without the
    /// caller's `trace_id`, a new one is made when first asked for.
    pub(crate) fn for_request(
        method: &'static str,
        deadline: Option<Instant>,
        trace_id: Option<TraceId>,
        caller: Option<&str>,
        peer: Option<Peer>,
        metadata: Metadata,
    ) -> Context {
        let request = RequestInfo {
            method,
            caller: caller.map(Box::from),
            peer,
            metadata,
        };
        let spare = SPARE_HERE
            .try_with(|here| spare_contexts().take(here))
            .ok()
            .flatten();
        if let Some(mut spare) = spare {
            if let Some(slot) = Arc::get_mut(&mut spare) {
                // Spares are blank (`recycle`): fill in the request only.
                slot.begin_request(deadline, trace_id, request);
                return Context { inner: spare };
            }
        }
        let mut inner = Context::blank(None, None, None, None);
        inner.begin_request(deadline, trace_id, request);
        Context::from_inner(inner)
    }

    /// Gives a request's context back for reuse once the server is done
    /// with it, unless something else still holds it (a clone kept by the
    /// handler, a child context). What it held is dropped now.
    pub(crate) fn recycle(mut self) {
        if let Some(inner) = Arc::get_mut(&mut self.inner) {
            inner.reset();
            let inner = self.inner;
            // During thread exit this thread's list may be gone: just drop.
            let _ = SPARE_HERE.try_with(|here| spare_contexts().give(here, inner));
        }
    }

    /// Records that the request's handler starts (crate-internal): false
    /// if the request was answered or dropped first ([`Context::forbid_start`]).
    /// One atomic operation decides the race, so a worker never runs a
    /// request that something else has answered as not run.
    pub(crate) fn claim_start(&self) -> bool {
        self.inner
            .start
            .compare_exchange(UNSTARTED, STARTED, Ordering::AcqRel, Ordering::Acquire)
            .is_ok()
    }

    /// Keeps the request's handler from starting (crate-internal); true if
    /// it already had.
    pub(crate) fn forbid_start(&self) -> bool {
        match self.inner.start.compare_exchange(
            UNSTARTED,
            FORBIDDEN,
            Ordering::AcqRel,
            Ordering::Acquire,
        ) {
            Ok(_) => false,
            Err(state) => state == STARTED,
        }
    }

    /// A child context: inherits everything, is cancelled when this one is,
    /// and may be given an earlier deadline or another trace id.
    fn child(&self, deadline: Option<Instant>, trace_id: Option<TraceId>) -> Context {
        let deadline = match (self.inner.deadline, deadline) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        let child = Context::from_inner(Context::blank(
            deadline,
            trace_id.or_else(|| self.trace_id()),
            Some(self.clone()),
            None,
        ));
        // The listener holds only a weak reference, so a parent that lives
        // long (the background, a long handler) does not keep children alive.
        let weak = Arc::downgrade(&child.inner);
        let guard = self.on_cancel(move |reason| {
            if let Some(inner) = weak.upgrade() {
                Context { inner }.cancel(reason);
            }
        });
        *lock(&child.inner.parent_registration) = guard;
        child
    }

    /// A child context whose deadline is at most `timeout` from now.
    pub fn with_timeout(&self, timeout: Duration) -> Context {
        self.child(Instant::now().checked_add(timeout), None)
    }

    /// A child context whose deadline is at most `deadline`.
    pub fn with_deadline(&self, deadline: Instant) -> Context {
        self.child(Some(deadline), None)
    }

    /// A child context with its own trace id.
    pub fn with_trace_id(&self, trace_id: TraceId) -> Context {
        self.child(None, Some(trace_id))
    }

    /// A child context and a handle that cancels it (and only it, with its
    /// own children).
    pub fn with_cancel(&self) -> (Context, CancelHandle) {
        let ctx = self.child(None, None);
        let handle = CancelHandle { ctx: ctx.clone() };
        (ctx, handle)
    }

    /// When the work must be done, if there is a deadline.
    pub fn deadline(&self) -> Option<Instant> {
        self.inner.deadline
    }

    /// Time left before the deadline (zero once it passed), if there is one.
    pub fn remaining(&self) -> Option<Duration> {
        self.inner
            .deadline
            .map(|d| d.saturating_duration_since(Instant::now()))
    }

    /// True once the context is cancelled or its deadline has passed.
    pub fn is_cancelled(&self) -> bool {
        self.cancel_reason().is_some()
    }

    /// Why the context is cancelled, or `None` while it is live. A passed
    /// deadline counts as [`CancelReason::DeadlineExceeded`].
    pub fn cancel_reason(&self) -> Option<CancelReason> {
        if self.inner.cancelled.load(Ordering::Acquire) {
            return lock(&self.inner.state).reason;
        }
        match self.inner.deadline {
            Some(d) if Instant::now() >= d => Some(CancelReason::DeadlineExceeded),
            _ => None,
        }
    }

    /// `Err` with `CANCELLED` or `DEADLINE_EXCEEDED` once the context is
    /// done, like Go's `ctx.Err()`; handlers can end with `ctx.check()?`.
    pub fn check(&self) -> Result<(), Status> {
        match self.cancel_reason() {
            None => Ok(()),
            Some(reason) => Err(reason.to_status()),
        }
    }

    /// Blocks until the context is cancelled, its deadline passes, or
    /// `timeout` elapses. Returns true if it returned because the context
    /// is done. A handler that sleeps should sleep with this, so it wakes
    /// when its caller gives up.
    pub fn wait_cancelled(&self, timeout: Duration) -> bool {
        let now = Instant::now();
        let mut until = now.checked_add(timeout);
        if let Some(d) = self.inner.deadline {
            until = Some(until.map_or(d, |u| u.min(d)));
        }
        let mut st = lock(&self.inner.state);
        loop {
            if st.reason.is_some() {
                return true;
            }
            let now = Instant::now();
            match until {
                Some(u) if now >= u => break,
                Some(u) => {
                    st = self
                        .inner
                        .cond
                        .wait_timeout(st, u - now)
                        .unwrap_or_else(|e| e.into_inner())
                        .0
                }
                None => st = self.inner.cond.wait(st).unwrap_or_else(|e| e.into_inner()),
            }
        }
        drop(st);
        self.is_cancelled()
    }

    /// Runs `f` once when the context is cancelled (explicitly, by its
    /// parent, by a CANCEL frame or by shutdown; a deadline passing does
    /// not call listeners by itself). Runs it at once if already cancelled.
    /// The listener stays registered while the returned guard lives.
    pub fn on_cancel(&self, f: impl FnOnce(CancelReason) + Send + 'static) -> Option<CancelGuard> {
        let mut st = lock(&self.inner.state);
        if let Some(reason) = st.reason {
            drop(st);
            f(reason);
            return None;
        }
        let id = st.next_id;
        st.next_id += 1;
        st.listeners.push((id, Box::new(f)));
        Some(CancelGuard {
            owner: Arc::downgrade(&self.inner),
            id,
        })
    }

    /// Cancels this context and every context derived from it. The first
    /// reason wins; later calls do nothing.
    pub(crate) fn cancel(&self, reason: CancelReason) {
        let listeners = {
            let mut st = lock(&self.inner.state);
            if st.reason.is_some() {
                return;
            }
            st.reason = Some(reason);
            self.inner.cancelled.store(true, Ordering::Release);
            std::mem::take(&mut st.listeners)
        };
        self.inner.cond.notify_all();
        for (_, f) in listeners {
            f(reason);
        }
    }

    /// The trace id, if any: a server context always has one.
    pub fn trace_id(&self) -> Option<TraceId> {
        let cell = &self.inner.trace_id;
        if self.inner.make_trace_id {
            Some(*cell.get_or_init(TraceId::generate))
        } else {
            cell.get().copied()
        }
    }

    fn request(&self) -> Option<&RequestInfo> {
        let mut ctx = self;
        loop {
            if let Some(r) = &ctx.inner.request {
                return Some(r);
            }
            ctx = ctx.inner.parent.as_ref()?;
        }
    }

    /// The full method name (`/echo.Echo/Say`) of the request being served,
    /// or `""` outside a handler.
    pub fn method(&self) -> &str {
        self.request().map_or("", |r| r.method)
    }

    /// The calling service's name, if the caller sent one.
    pub fn caller(&self) -> Option<&str> {
        self.request().and_then(|r| r.caller.as_deref())
    }

    /// The peer's address, when serving a request over TCP.
    pub fn peer_addr(&self) -> Option<SocketAddr> {
        self.peer().map(Peer::addr)
    }

    /// The other end of the connection the request came on, when serving
    /// a request: its address, whether it is TLS, and the verified
    /// identity of a client certificate (mutual TLS).
    pub fn peer(&self) -> Option<&Peer> {
        self.request().and_then(|r| r.peer.as_ref())
    }

    /// The request's metadata (empty outside a handler).
    pub fn metadata(&self) -> &Metadata {
        static EMPTY: Metadata = Metadata::new();
        self.request().map_or(&EMPTY, |r| &r.metadata)
    }

    /// Sets a metadata entry sent back with the response.
    pub fn set_response_metadata(&self, key: impl Into<String>, value: impl Into<MetadataValue>) {
        let root = &self.root().inner;
        lock(&root.response_md).insert(key, value);
        root.has_response_md.store(true, Ordering::Release);
    }

    /// Takes the response metadata set so far (crate-internal: the server
    /// does this when it writes the response).
    pub(crate) fn take_response_metadata(&self) -> Metadata {
        let root = &self.root().inner;
        if !root.has_response_md.load(Ordering::Acquire) {
            return Metadata::new();
        }
        std::mem::take(&mut *lock(&root.response_md))
    }

    /// The context that carries the request, or the outermost one.
    fn root(&self) -> &Context {
        let mut ctx = self;
        while ctx.inner.request.is_none() {
            match &ctx.inner.parent {
                Some(p) => ctx = p,
                None => break,
            }
        }
        ctx
    }
}

impl fmt::Debug for Context {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Context")
            .field("method", &self.method())
            .field("deadline", &self.inner.deadline)
            .field("trace_id", &self.inner.trace_id.get())
            .field("cancelled", &self.cancel_reason())
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::mpsc;
    use std::thread;

    #[test]
    fn child_inherits_deadline_and_trace_id() {
        let trace = TraceId::new("t-1").unwrap();
        let root = Context::background().with_trace_id(trace);
        let a = root.with_timeout(Duration::from_secs(10));
        let b = a.with_timeout(Duration::from_secs(60));
        assert_eq!(b.deadline(), a.deadline(), "a later deadline never extends");
        assert_eq!(b.trace_id(), Some(trace));
    }

    #[test]
    fn cancellation_reaches_grandchildren_and_wakes_waiters() {
        let (ctx, cancel) = Context::background().with_cancel();
        let grandchild = ctx
            .with_timeout(Duration::from_secs(60))
            .with_trace_id(TraceId::generate());
        let (tx, rx) = mpsc::channel();
        let waiter = {
            let g = grandchild.clone();
            thread::spawn(move || tx.send(g.wait_cancelled(Duration::from_secs(60))).unwrap())
        };
        cancel.cancel();
        // Would hang for a minute without the wake-up.
        assert_eq!(rx.recv_timeout(Duration::from_secs(10)), Ok(true));
        waiter.join().unwrap();
        assert_eq!(grandchild.cancel_reason(), Some(CancelReason::Cancelled));
    }

    #[test]
    fn deadline_counts_as_cancelled() {
        let ctx = Context::background().with_timeout(Duration::from_millis(1));
        assert!(ctx.wait_cancelled(Duration::from_secs(10)));
        assert_eq!(ctx.cancel_reason(), Some(CancelReason::DeadlineExceeded));
        assert_eq!(
            ctx.check().unwrap_err().code(),
            crate::Code::DEADLINE_EXCEEDED
        );
    }

    #[test]
    fn dropped_guard_unregisters_and_children_do_not_leak() {
        let (ctx, cancel) = Context::background().with_cancel();
        let (tx, rx) = mpsc::channel();
        let guard = ctx.on_cancel(move |_| tx.send(()).unwrap());
        drop(guard);
        for _ in 0..100 {
            drop(ctx.with_timeout(Duration::from_secs(1)));
        }
        assert!(lock(&ctx.inner.state).listeners.is_empty());
        cancel.cancel();
        assert!(rx.try_recv().is_err());
    }

    #[test]
    fn a_reused_request_context_keeps_nothing_of_the_last_request() {
        let fresh = || Context::for_request("/a.B/E", None, None, None, None, Metadata::new());
        let mut reused = 0;
        for _ in 0..100 {
            let ctx = Context::for_request(
                "/a.B/C",
                Some(Instant::now()),
                Some(TraceId::new("old").unwrap()),
                Some("old-caller"),
                None,
                [("k", "v")].into_iter().collect(),
            );
            ctx.set_response_metadata("r", "x");
            drop(ctx.on_cancel(|_| {}));
            ctx.cancel(CancelReason::Cancelled);
            let old = Arc::as_ptr(&ctx.inner);
            ctx.recycle();
            let ctx = fresh();
            // This thread's own spare comes back first.
            reused += usize::from(Arc::as_ptr(&ctx.inner) == old);
            assert_eq!(ctx.method(), "/a.B/E");
            assert!(!ctx.is_cancelled());
            assert_eq!(ctx.cancel_reason(), None);
            assert_eq!(ctx.deadline(), None);
            assert_eq!(ctx.caller(), None);
            assert!(ctx.metadata().is_empty());
            assert!(ctx.take_response_metadata().is_empty());
            assert_ne!(ctx.trace_id().unwrap().as_str(), "old");
        }
        assert_eq!(reused, 100, "contexts were not reused");

        // A context something still holds is not reused.
        let held = fresh();
        let clone = held.clone();
        held.recycle();
        assert_ne!(Arc::as_ptr(&fresh().inner), Arc::as_ptr(&clone.inner));
        assert_eq!(clone.method(), "/a.B/E");
    }

    #[test]
    fn a_request_starts_or_is_forbidden_to_exactly_once() {
        let req = || Context::for_request("/a.B/C", None, None, None, None, Metadata::new());
        let ctx = req();
        assert!(ctx.claim_start());
        assert!(!ctx.claim_start(), "started twice");
        assert!(ctx.forbid_start(), "the start went unseen");
        let ctx = req();
        assert!(!ctx.forbid_start());
        assert!(!ctx.claim_start(), "started after it was answered");
        assert!(!ctx.forbid_start());
        // A reused context starts afresh.
        ctx.recycle();
        assert!(req().claim_start());
    }

    #[test]
    fn response_metadata_set_through_a_child_reaches_the_request() {
        let ctx = Context::for_request(
            "/a.B/C",
            None,
            Some(TraceId::generate()),
            Some("caller"),
            None,
            Metadata::new(),
        );
        ctx.with_timeout(Duration::from_secs(1))
            .set_response_metadata("k", "v");
        assert_eq!(ctx.take_response_metadata().get_str("k"), Some("v"));
        assert_eq!(ctx.with_cancel().0.method(), "/a.B/C");
    }
}

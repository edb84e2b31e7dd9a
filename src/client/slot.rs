//! The one-shot slot a calling thread waits on for its response.
//!
//! The caller creates the slot, registers it with the connection under a
//! request id and parks; the connection's reader thread (or a cancellation
//! listener, or a failing connection) fills it and unparks the caller.
//! Parking costs one futex wait and one wake, less than a channel or a
//! condition variable, and the slot lives in a single allocation.

use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::{self, Thread};
use std::time::Instant;

use bytes::Bytes;

use crate::codec::Flags;
use crate::context::CancelReason;
use crate::error::Error;
use crate::metadata::Metadata;
use crate::status::Code;
use crate::trace::TraceId;

/// What a slot waits for: the frame type that completes it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Kind {
    /// A REQUEST, completed by a RESPONSE.
    Call,
    /// A PING, completed by a PONG.
    Ping,
}

/// A response as the reader thread hands it over: meta decoded, body still
/// as sent (the caller decompresses and decodes it on its own thread).
#[derive(Debug)]
pub(crate) struct Reply {
    /// Compression and encoding of `body`.
    pub(crate) flags: Flags,
    /// Status code.
    pub(crate) code: Code,
    /// Error text, for a non-OK code.
    pub(crate) message: String,
    /// The trace id the request ran under.
    pub(crate) trace_id: Option<TraceId>,
    /// Application metadata from the handler.
    pub(crate) metadata: Metadata,
    /// The body as sent, or empty.
    pub(crate) body: Bytes,
    /// Set when the body was over the limit and skipped: its declared size.
    pub(crate) body_too_large: Option<u32>,
}

impl Reply {
    /// An empty reply: what a PONG completes a ping with.
    pub(crate) fn pong() -> Reply {
        Reply {
            flags: Flags::default(),
            code: Code::OK,
            message: String::new(),
            trace_id: None,
            metadata: Metadata::new(),
            body: Bytes::new(),
            body_too_large: None,
        }
    }
}

/// How a wait on a slot ended.
pub(crate) enum Wait {
    /// The connection delivered a reply or an error.
    Done(Result<Reply, Error>),
    /// The deadline passed first.
    Deadline,
    /// The caller's context was cancelled first.
    Cancelled(CancelReason),
}

#[derive(Default)]
struct State {
    result: Option<Result<Reply, Error>>,
    cancelled: Option<CancelReason>,
}

/// A one-shot slot owned by one waiting thread.
pub(crate) struct Slot {
    kind: Kind,
    state: Mutex<State>,
    waiter: Thread,
}

impl Slot {
    /// A slot that the current thread will wait on.
    pub(crate) fn new(kind: Kind) -> Arc<Slot> {
        Arc::new(Slot {
            kind,
            state: Mutex::new(State::default()),
            waiter: thread::current(),
        })
    }

    pub(crate) fn kind(&self) -> Kind {
        self.kind
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // Every critical section is a plain assignment or take.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Fills the slot and wakes its waiter. The first result wins.
    pub(crate) fn complete(&self, result: Result<Reply, Error>) {
        {
            let mut st = self.lock();
            if st.result.is_some() {
                return;
            }
            st.result = Some(result);
        }
        self.waiter.unpark();
    }

    /// Wakes the waiter because its context was cancelled.
    pub(crate) fn cancel(&self, reason: CancelReason) {
        {
            let mut st = self.lock();
            if st.cancelled.is_some() {
                return;
            }
            st.cancelled = Some(reason);
        }
        self.waiter.unpark();
    }

    /// Blocks the owning thread until the slot is filled, the context is
    /// cancelled or `deadline` passes. A reply wins over a cancellation
    /// that arrived with it.
    pub(crate) fn wait(&self, deadline: Option<Instant>) -> Wait {
        debug_assert_eq!(self.waiter.id(), thread::current().id());
        loop {
            {
                let mut st = self.lock();
                if let Some(r) = st.result.take() {
                    return Wait::Done(r);
                }
                if let Some(reason) = st.cancelled {
                    return Wait::Cancelled(reason);
                }
            }
            // park() may return spuriously (or for an unpark meant for an
            // earlier slot of this thread): the loop re-checks the state.
            match deadline {
                Some(d) => {
                    let now = Instant::now();
                    if now >= d {
                        return Wait::Deadline;
                    }
                    thread::park_timeout(d - now);
                }
                None => thread::park(),
            }
        }
    }

    /// Waits for a result that is known to be on its way: the reader thread
    /// removed the slot from the pending table and is about to fill it.
    pub(crate) fn wait_delivered(&self) -> Result<Reply, Error> {
        loop {
            if let Some(r) = self.lock().result.take() {
                return r;
            }
            thread::park();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn completion_from_another_thread_wakes_the_waiter() {
        let slot = Slot::new(Kind::Call);
        let s = slot.clone();
        let t = thread::spawn(move || s.complete(Ok(Reply::pong())));
        // Would wait the full minute without the unpark.
        let start = Instant::now();
        match slot.wait(Some(Instant::now() + Duration::from_secs(60))) {
            Wait::Done(Ok(r)) => assert_eq!(r.code, Code::OK),
            _ => panic!("expected a reply"),
        }
        assert!(start.elapsed() < Duration::from_secs(30));
        t.join().unwrap();
    }

    #[test]
    fn deadline_and_cancel_end_the_wait() {
        let slot = Slot::new(Kind::Call);
        assert!(matches!(
            slot.wait(Some(Instant::now() + Duration::from_millis(5))),
            Wait::Deadline
        ));
        slot.cancel(CancelReason::Cancelled);
        assert!(matches!(
            slot.wait(None),
            Wait::Cancelled(CancelReason::Cancelled)
        ));
        slot.complete(Ok(Reply::pong()));
        assert!(matches!(slot.wait(None), Wait::Done(Ok(_))), "a reply wins");
    }
}

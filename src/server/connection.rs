//! The part of a connection shared between its I/O driver and the workers.
//!
//! A worker that finishes a request holds the `Arc` of the connection the
//! request came from, never a slot number or token, so its response cannot
//! reach another connection, even one that reuses the same slot. Under the
//! lock it checks that the request is still in flight with the same
//! sequence number (the deadline timer, a CANCEL or the connection closing
//! may have ended it), appends the encoded RESPONSE to the connection's
//! output buffer and, only if the driver was not already told, wakes it:
//! one wake-up carries every response produced meanwhile.

use std::collections::HashMap;
use std::fmt;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use crate::codec::{Encoder, Flags, RequestId};
use crate::context::Context;
use crate::latch::LatchGuard;

/// How a driver is told that a connection has output to write or room to
/// read again. Event mode pushes the connection on its loop's ready list
/// and wakes the loop's poll.
pub(crate) trait Wake: Send + Sync {
    fn wake(&self, conn: &Arc<ConnShared>);
}

/// A request read and not yet answered.
pub(crate) struct InFlight {
    /// Tells this request apart from a later one that reuses its id.
    pub seq: u64,
    pub ctx: Context,
    /// Set when a worker picked the request up.
    pub started: bool,
    pub read_at: Instant,
    /// The effective timeout, for the DEADLINE_EXCEEDED message.
    pub timeout: Option<Duration>,
    /// The request's flags, which its RESPONSE repeats.
    pub flags: Flags,
    /// One count on the server's drain latch.
    pub _count: LatchGuard,
}

/// State guarded by the connection's lock.
pub(crate) struct ConnState {
    /// Frames waiting to be written.
    pub out: Encoder,
    pub in_flight: HashMap<RequestId, InFlight>,
    /// ONEWAY requests queued or running: they count against the
    /// in-flight limit but have no id to track.
    pub oneway_running: usize,
    /// The connection is gone: nothing more is written, results are dropped.
    pub closed: bool,
    /// The driver has been woken for this connection and has not yet
    /// looked at it; no need to wake it again.
    pub notified: bool,
    /// The driver stopped reading (a limit was reached) and wants a wake-up
    /// when a request finishes.
    pub read_paused: bool,
    /// The server is shutting down: new requests are answered UNAVAILABLE.
    pub draining: bool,
    next_seq: u64,
}

impl ConnState {
    /// Requests read and not yet finished.
    pub fn active(&self) -> usize {
        self.in_flight.len() + self.oneway_running
    }

    pub fn next_seq(&mut self) -> u64 {
        self.next_seq += 1;
        self.next_seq
    }

    /// Whether a worker that just changed this state must wake the driver:
    /// it has output to write, or is waiting for room to read.
    pub fn should_wake(&mut self) -> bool {
        if self.notified || self.closed {
            return false;
        }
        if !self.out.is_empty() || self.read_paused {
            self.notified = true;
            return true;
        }
        false
    }
}

/// One connection's shared half.
pub(crate) struct ConnShared {
    /// Unique for the server's lifetime, for logs.
    pub id: u64,
    /// The driver's slot for this connection. Only ever used together with
    /// a pointer comparison of the `Arc`, never alone.
    pub slot: usize,
    pub peer: Option<SocketAddr>,
    waker: Arc<dyn Wake>,
    state: Mutex<ConnState>,
}

impl ConnShared {
    pub fn new(id: u64, slot: usize, peer: Option<SocketAddr>, waker: Arc<dyn Wake>) -> ConnShared {
        ConnShared {
            id,
            slot,
            peer,
            waker,
            state: Mutex::new(ConnState {
                out: Encoder::new(),
                in_flight: HashMap::new(),
                oneway_running: 0,
                closed: false,
                notified: false,
                read_paused: false,
                draining: false,
                next_seq: 0,
            }),
        }
    }

    pub fn lock(&self) -> MutexGuard<'_, ConnState> {
        // Critical sections only move buffers and table entries: a panic
        // inside one (an allocation failure) leaves nothing half-done.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn wake(self: &Arc<Self>) {
        self.waker.wake(self);
    }

    /// Marks the connection closed and cancels every request still in
    /// flight on it; their results will be dropped. Returns how many were
    /// cancelled.
    pub fn close(&self) -> usize {
        let entries: Vec<InFlight> = {
            let mut st = self.lock();
            st.closed = true;
            st.out.clear();
            st.in_flight.drain().map(|(_, e)| e).collect()
        };
        let n = entries.len();
        // Outside the lock: cancelling runs the contexts' listeners.
        for e in entries {
            e.ctx.cancel(crate::context::CancelReason::Cancelled);
        }
        n
    }
}

impl fmt::Debug for ConnShared {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ConnShared")
            .field("id", &self.id)
            .field("peer", &self.peer)
            .finish_non_exhaustive()
    }
}

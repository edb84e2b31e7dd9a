//! Request deadlines: the heap of deadlines each driver thread keeps for
//! its connections, and the DEADLINE_EXCEEDED answer that ends a request
//! (unary or stream) whose deadline passed.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::sync::{Arc, Weak};
use std::time::Instant;

use super::connection::{ConnShared, InFlight};
use super::dispatch::write_end;
use crate::codec::RequestId;
use crate::context::CancelReason;
use crate::metadata::Metadata;
use crate::status::Status;

/// Answers request `id` DEADLINE_EXCEEDED if it is still in flight as
/// `seq`, and cancels its context: whatever its handler returns later is
/// dropped. Returns true if a response was appended.
pub(crate) fn expire(conn: &ConnShared, id: RequestId, seq: u64, now: Instant) -> bool {
    let entry = {
        let mut st = conn.lock();
        match st.in_flight.get(&id) {
            Some(e) if e.seq == seq && !st.closed => {}
            _ => return false,
        }
        let Some(e) = st.in_flight.remove(&id) else {
            return false;
        };
        let started = e.ctx.forbid_start();
        let status = deadline_status(&e, started, now);
        conn.dispatcher
            .record(&st, e.method, status.code(), e.read_at);
        write_end(&mut st, id, &e, &status, Metadata::new());
        e
    };
    entry.ctx.cancel(CancelReason::DeadlineExceeded);
    true
}

/// The DEADLINE_EXCEEDED answer to `e`, whose handler `started` or not.
pub(super) fn deadline_status(e: &InFlight, started: bool, now: Instant) -> Status {
    let timeout = e.timeout.unwrap_or_default().as_millis();
    let waited = now.saturating_duration_since(e.read_at).as_millis();
    if started {
        Status::deadline_exceeded(format!(
            "deadline exceeded: the handler did not finish within {timeout} ms"
        ))
    } else {
        Status::deadline_exceeded(format!(
            "deadline exceeded after waiting {waited} ms in the queue (timeout {timeout} ms); not run"
        ))
    }
}

struct Timer {
    at: Instant,
    seq: u64,
    id: RequestId,
    conn: Weak<ConnShared>,
}

impl PartialEq for Timer {
    fn eq(&self, other: &Self) -> bool {
        (self.at, self.seq) == (other.at, other.seq)
    }
}

impl Eq for Timer {}

impl PartialOrd for Timer {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Timer {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        (self.at, self.seq).cmp(&(other.at, other.seq))
    }
}

/// Request deadlines of the connections one driver thread serves.
///
/// Entries are not removed when their request finishes; instead the heap
/// is swept of finished requests whenever it has doubled since the last
/// sweep, which keeps it proportional to the requests in flight.
pub(crate) struct DeadlineQueue {
    heap: BinaryHeap<Reverse<Timer>>,
    sweep_at: usize,
}

const MIN_SWEEP: usize = 1024;

impl DeadlineQueue {
    pub fn new() -> DeadlineQueue {
        DeadlineQueue {
            heap: BinaryHeap::new(),
            sweep_at: MIN_SWEEP,
        }
    }

    pub fn push(&mut self, at: Instant, conn: &Arc<ConnShared>, id: RequestId, seq: u64) {
        if self.heap.len() >= self.sweep_at {
            self.sweep();
        }
        self.heap.push(Reverse(Timer {
            at,
            seq,
            id,
            conn: Arc::downgrade(conn),
        }));
    }

    fn sweep(&mut self) {
        let mut timers = std::mem::take(&mut self.heap).into_vec();
        timers.retain(|Reverse(t)| {
            t.conn.upgrade().is_some_and(|c| {
                let st = c.lock();
                !st.closed && st.in_flight.get(&t.id).is_some_and(|e| e.seq == t.seq)
            })
        });
        self.heap = BinaryHeap::from(timers);
        self.sweep_at = (self.heap.len() * 2).max(MIN_SWEEP);
    }

    /// The earliest deadline, if any.
    pub fn next(&self) -> Option<Instant> {
        self.heap.peek().map(|Reverse(t)| t.at)
    }

    /// Answers DEADLINE_EXCEEDED every request whose deadline is at or
    /// before `now`, calling `touched` for each connection that got a
    /// response.
    pub fn expire_due(&mut self, now: Instant, mut touched: impl FnMut(&Arc<ConnShared>)) {
        while let Some(Reverse(t)) = self.heap.peek() {
            if t.at > now {
                break;
            }
            let Some(Reverse(t)) = self.heap.pop() else {
                break;
            };
            if let Some(conn) = t.conn.upgrade() {
                if expire(&conn, t.id, t.seq, now) {
                    touched(&conn);
                }
            }
        }
    }
}

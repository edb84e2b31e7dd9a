//! Streaming calls on the server (`docs/protocol.md`, "Streams").
//!
//! A stream is a request like any other as far as dispatch goes: it is
//! routed, limited, recorded in its connection's in-flight table until its
//! RESPONSE, queued on the workers, run through the filters, ended by the
//! deadline timer, a CANCEL, the connection closing or the shutdown. What
//! a stream adds is kept here, in a [`StreamShared`] that its in-flight
//! entry and its handler share:
//!
//! - the client's messages, queued as the connection's decoder routes
//!   them ([`deliver`]), until the handler's [`Incoming`] takes them;
//! - the two windows of flow control ([`crate::flow_control`]): the
//!   server's [`Sink`] waits while the client's grants run out, and the
//!   [`Incoming`] grants back what the handler consumed;
//! - why the stream ended early, if it did, which wakes whoever waits.
//!
//! A stream holds a worker for its life, so the server caps how many are
//! open at once ([`Limits::max_streams`](super::Limits::max_streams)),
//! and answers the next one `RESOURCE_EXHAUSTED` at once: unary calls are
//! still served while every stream slot is busy.

mod handler;
mod incoming;
mod sink;

use std::collections::VecDeque;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use bytes::Bytes;

pub use handler::{
    BidiStreamHandler, ClientStreamHandler, RawBidiStreamHandler, RawClientStreamHandler,
    RawServerStreamHandler, ServerStreamHandler,
};
pub(crate) use handler::{StreamEndpoint, StreamKind};
pub use incoming::{Incoming, RawIncoming};
pub use sink::{RawSink, Sink};

use super::connection::ConnShared;
use super::dispatch::{flush, ServerShared};
use super::protocol::StreamFrame;
use crate::codec::{Flags, ProtocolError, RequestId};
use crate::context::{CancelGuard, CancelReason, Context};
use crate::flow_control::{RecvWindow, SendWindow};
use crate::metadata::Metadata;
use crate::status::Status;

/// How often a sink without flow control (a stream answered over HTTP)
/// looks whether its connection's output drained.
const OUTPUT_POLL: Duration = Duration::from_millis(2);

/// A stream's state, shared by its in-flight entry, the connection's
/// decoder and its handler.
pub(crate) struct StreamShared {
    /// The in-flight entry's sequence number: tells this stream apart
    /// from a later one that reuses its id.
    pub seq: u64,
    state: Mutex<StreamState>,
    cond: Condvar,
    /// The stream's count among the server's open streams, until its
    /// handler returns (or is known never to start).
    slot: Mutex<Option<StreamSlot>>,
}

struct StreamState {
    /// Messages received and not yet taken, with their flags.
    inbound: VecDeque<(Flags, Bytes)>,
    recv: RecvWindow,
    send: SendWindow,
    /// The protocol has flow control (WINDOW frames); without it the sink
    /// paces itself by the connection's unsent output.
    flow_control: bool,
    /// The client sent END.
    client_ended: bool,
    /// Messages received so far.
    received: usize,
    /// The request is one message (a server stream): a second one ends
    /// the stream INVALID_ARGUMENT.
    single: bool,
    /// The server sent a message.
    sent_any: bool,
    /// When the server last sent a message, to tell a burst from a
    /// message on its own (see [`RawSink::send`]).
    last_sent: Option<Instant>,
    /// The stream ended before its handler returned: the status it ended
    /// with, which the handler's next send or read gets.
    ended: Option<Status>,
}

/// A stream's count among the server's open streams, given back when the
/// stream's last holder lets go.
struct StreamSlot {
    server: Arc<ServerShared>,
}

impl Drop for StreamSlot {
    fn drop(&mut self) {
        self.server.streams_open.fetch_sub(1, Ordering::Relaxed);
    }
}

impl StreamShared {
    /// Takes a stream slot of `server` for a new stream, or `None` if
    /// every slot is taken. `single`: the client sends one message;
    /// `flow_control`: the protocol carries WINDOW frames.
    pub fn open(
        server: &Arc<ServerShared>,
        seq: u64,
        single: bool,
        flow_control: bool,
    ) -> Option<Arc<StreamShared>> {
        let max = server.max_streams;
        let taken = server
            .streams_open
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| {
                (n < max).then_some(n + 1)
            });
        taken.ok()?;
        Some(Arc::new(StreamShared {
            seq,
            state: Mutex::new(StreamState {
                inbound: VecDeque::new(),
                recv: RecvWindow::new(),
                send: SendWindow::new(),
                flow_control,
                client_ended: false,
                received: 0,
                single,
                sent_any: false,
                last_sent: None,
                ended: None,
            }),
            cond: Condvar::new(),
            slot: Mutex::new(Some(StreamSlot {
                server: server.clone(),
            })),
        }))
    }

    fn lock(&self) -> MutexGuard<'_, StreamState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Queues the request message of a protocol that carries it in the
    /// request's body, and the client's END after it.
    pub fn preload(&self, flags: Flags, body: Bytes) {
        let mut s = self.lock();
        s.inbound.push_back((flags, body));
        s.received = 1;
        s.client_ended = true;
    }

    /// Gives the stream's slot back now: the stream ended before its
    /// handler started, and it never will, so a client that opens the
    /// next stream on learning the end finds the slot free.
    pub fn release_slot(&self) {
        drop(self.slot.lock().unwrap_or_else(|e| e.into_inner()).take());
    }

    /// Whether the client sent END.
    pub fn client_ended(&self) -> bool {
        self.lock().client_ended
    }

    /// Whether the server sent a message on the stream.
    pub fn sent_any(&self) -> bool {
        self.lock().sent_any
    }

    /// Records that the stream ended with `status` before its handler
    /// returned, and wakes the handler if it waits.
    fn end(&self, status: Status) {
        let mut s = self.lock();
        if s.ended.is_none() {
            s.ended = Some(status);
        }
        drop(s);
        self.cond.notify_all();
    }

    /// Waits on the stream's condition until `deadline`, if any.
    fn wait<'a>(
        &self,
        s: MutexGuard<'a, StreamState>,
        until: Option<Instant>,
    ) -> MutexGuard<'a, StreamState> {
        match until {
            Some(at) => {
                let left = at.saturating_duration_since(Instant::now());
                self.cond
                    .wait_timeout(s, left)
                    .unwrap_or_else(|e| e.into_inner())
                    .0
            }
            None => self.cond.wait(s).unwrap_or_else(|e| e.into_inner()),
        }
    }
}

/// The status a stream that can go no further ends its handler's waits
/// with: why it ended, else why its context was cancelled or its
/// deadline passed.
fn stop_status(s: &StreamState, ctx: &Context) -> Option<Status> {
    if let Some(status) = &s.ended {
        return Some(status.clone());
    }
    if let Some(reason) = ctx.cancel_reason() {
        return Some(reason.to_status());
    }
    if ctx.deadline().is_some_and(|d| Instant::now() >= d) {
        return Some(CancelReason::DeadlineExceeded.to_status());
    }
    None
}

/// A handler's end of one stream: what the [`Request`](crate::Request)
/// of a streaming method carries to its endpoint, which makes the
/// handler's [`Sink`] and [`Incoming`] from it.
#[derive(Clone)]
pub(crate) struct StreamIo {
    pub shared: Arc<StreamShared>,
    pub conn: Arc<ConnShared>,
    pub id: RequestId,
    /// The stream's flags: how the server's messages are compressed and
    /// encoded.
    pub flags: Flags,
    /// Largest message, after decompression.
    pub max_body: usize,
    pub max_depth: usize,
}

impl StreamIo {
    /// Wakes the handler's waits when `ctx` is cancelled; the listener
    /// stays while the guard lives.
    pub(crate) fn watch(&self, ctx: &Context) -> Option<CancelGuard> {
        let shared = self.shared.clone();
        ctx.on_cancel(move |_| {
            // Taking the lock orders the wake-up after a waiter's check.
            drop(shared.lock());
            shared.cond.notify_all();
        })
    }

    /// Runs `f` on the connection's state if the stream is still in
    /// flight there; false if it is not (ended, or the connection closed).
    fn with_live_conn(&self, f: impl FnOnce(&mut super::connection::ConnState)) -> bool {
        let mut st = self.conn.lock();
        let live = !st.closed
            && st
                .in_flight
                .get(&self.id)
                .is_some_and(|e| e.seq == self.shared.seq);
        if live {
            f(&mut st);
        }
        live
    }

    /// Ends the stream with `status` now, as the runtime does for a bad
    /// message: the RESPONSE goes out, the context is cancelled, and
    /// whatever the handler sends or returns later is dropped.
    pub(crate) fn fail(&self, ctx: &Context, status: Status) {
        let answered = end_stream(&self.conn, self.id, self.shared.seq, status.clone());
        self.shared.end(status);
        ctx.cancel(CancelReason::Cancelled);
        if answered {
            send_out(&self.conn);
        }
    }
}

/// Routes a frame of a stream that `conn`'s decoder cut: a message to the
/// stream's queue, END and WINDOW to its state. A frame for an id that is
/// not an open stream is ignored (it may have crossed the RESPONSE); a
/// frame that breaks flow control, or a MESSAGE or END after END, is a
/// connection error.
pub(crate) fn deliver(conn: &ConnShared, frame: StreamFrame) -> Result<(), ProtocolError> {
    let id = frame.id();
    let stream = {
        let st = conn.lock();
        if st.closed {
            return Ok(());
        }
        st.in_flight.get(&id).and_then(|e| e.stream.clone())
    };
    let Some(stream) = stream else {
        log::trace!(
            "conn {}: stream frame for id {id}, not an open stream: ignored",
            conn.id
        );
        return Ok(());
    };
    let flow = |error| ProtocolError::FlowControl { id: id.0, error };
    let mut s = stream.lock();
    let refusal = match frame {
        StreamFrame::Message { flags, body, .. } => {
            if s.client_ended {
                return Err(ProtocolError::AfterEnd {
                    frame_type: crate::codec::FrameType::Message,
                    id: id.0,
                });
            }
            let len = u32::try_from(body.len()).unwrap_or(u32::MAX);
            if s.flow_control {
                s.recv.received(len).map_err(flow)?;
            }
            s.received += 1;
            if s.single && s.received > 1 {
                Some(Status::invalid_argument(
                    "a server-streaming call takes one request message; a second one came",
                ))
            } else if s.ended.is_none() {
                s.inbound.push_back((flags, body));
                None
            } else {
                None
            }
        }
        StreamFrame::Oversized { len, .. } => {
            if s.client_ended {
                return Err(ProtocolError::AfterEnd {
                    frame_type: crate::codec::FrameType::Message,
                    id: id.0,
                });
            }
            if s.flow_control {
                s.recv
                    .received(u32::try_from(len).unwrap_or(u32::MAX))
                    .map_err(flow)?;
                // Nothing is held for it: give its bytes back at once.
                let _ = s.recv.consumed(u32::try_from(len).unwrap_or(u32::MAX));
            }
            let limit = conn.dispatcher.decode.frame.max_body;
            Some(Status::resource_exhausted(format!(
                "stream message too large: {len} > {limit} bytes"
            )))
        }
        StreamFrame::End(_) => {
            if s.client_ended {
                return Err(ProtocolError::AfterEnd {
                    frame_type: crate::codec::FrameType::End,
                    id: id.0,
                });
            }
            s.client_ended = true;
            None
        }
        StreamFrame::Window { grant, .. } => {
            if s.flow_control {
                s.send.granted(grant).map_err(flow)?;
            }
            None
        }
    };
    drop(s);
    stream.cond.notify_all();
    if let Some(status) = refusal {
        let ctx = {
            let st = conn.lock();
            st.in_flight
                .get(&id)
                .filter(|e| e.seq == stream.seq)
                .map(|e| e.ctx.clone())
        };
        end_stream(conn, id, stream.seq, status.clone());
        stream.end(status);
        if let Some(ctx) = ctx {
            ctx.cancel(CancelReason::Cancelled);
        }
    }
    Ok(())
}

/// Ends every stream of `conn` that `which` picks, `CANCELLED` with
/// `why`: the connection reads no more, so they would wait forever.
pub(crate) fn end_all(conn: &ConnShared, why: &str, which: impl Fn(&StreamShared) -> bool) {
    let ended = {
        let mut st = conn.lock();
        if st.closed || st.in_flight.streams() == 0 {
            return;
        }
        let ids: Vec<RequestId> = st
            .in_flight
            .iter()
            .filter(|(_, e)| e.stream.as_deref().is_some_and(&which))
            .map(|(id, _)| *id)
            .collect();
        let status = Status::cancelled(format!("the stream cannot go on: {why}"));
        let mut ended = Vec::with_capacity(ids.len());
        for id in ids {
            if let Some(e) = st.in_flight.remove(&id) {
                e.ctx.forbid_start();
                conn.dispatcher
                    .record(&st, e.method, status.code(), e.read_at);
                super::dispatch::write_end(&mut st, id, &e, &status, Metadata::new());
                ended.push(e);
            }
        }
        ended
    };
    for e in ended {
        if let Some(stream) = &e.stream {
            stream.end(Status::cancelled(format!("the stream cannot go on: {why}")));
        }
        e.ctx.cancel(CancelReason::Cancelled);
    }
}

/// Answers stream `id` with `status` if it is still in flight as `seq`:
/// the stream's RESPONSE, its entry out of the in-flight table. Returns
/// true if it was.
fn end_stream(conn: &ConnShared, id: RequestId, seq: u64, status: Status) -> bool {
    let mut st = conn.lock();
    if st.closed || !st.in_flight.get(&id).is_some_and(|e| e.seq == seq) {
        return false;
    }
    let Some(e) = st.in_flight.remove(&id) else {
        return false;
    };
    e.ctx.forbid_start();
    conn.dispatcher
        .record(&st, e.method, status.code(), e.read_at);
    super::dispatch::write_end(&mut st, id, &e, &status, Metadata::new());
    drop(st);
    true
}

/// Writes `conn`'s output after a stream frame was appended.
fn send_out(conn: &Arc<ConnShared>) {
    flush(conn);
}

/// Messages sent closer together than this are a burst: each is left for
/// the connection's driver to write with the others, instead of a write
/// of its own.
const BURST_GAP: Duration = Duration::from_micros(200);

/// Has `conn`'s driver write its output, once for everything appended
/// until it looks: a sender in a burst appends many messages per write.
fn defer_out(conn: &Arc<ConnShared>) {
    let wake = {
        let mut st = conn.lock();
        !st.closed && !std::mem::replace(&mut st.notified, true)
    };
    if wake {
        conn.wake();
    }
}

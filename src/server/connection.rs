//! The part of a connection shared between its I/O driver and the workers.
//!
//! A worker that finishes a request holds the `Arc` of the connection the
//! request came from, never a slot number or token, so its response cannot
//! reach another connection, even one that reuses the same slot or file
//! descriptor number (the socket itself lives here, so its descriptor is
//! not reused while any worker still holds the connection). Under the lock
//! it checks that the request is still in flight with the same sequence
//! number (the deadline timer, a CANCEL or the connection closing may have
//! ended it) and appends the encoded RESPONSE to the output buffer.
//!
//! Output is written by whichever thread gets to it first, one at a time:
//! a worker about to go idle writes what it and others appended meanwhile
//! (many responses in one `write`); when the socket's buffer is full the
//! rest waits for the driver, which resumes once the socket is writable.
//! Those writes never wait, even on thread mode's blocking sockets (see
//! [`send_now`]); only the driver's own write may block, which in thread
//! mode is bounded by the write-stall timeout.
//!
//! Every byte a connection writes goes through [`ConnShared::flush`], and
//! from there through [`write_out`]: the one place that writes a socket.

use std::collections::hash_map::{Entry, HashMap};
use std::fmt;
use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use bytes::{Buf, BytesMut};

use super::config::Limits;
use super::dispatch::{Dispatcher, ServerShared};
use super::protocol::{Protocol, StreamSupport, NATIVE};
use super::service::MethodId;
use super::stream::StreamShared;
use super::transport::{Ingested, Transport, TransportError};
use crate::codec::{Encoder, Flags, RequestId};
use crate::context::Context;
use crate::hash::FastHash;
use crate::latch::Latch;
use crate::peer::Peer;

/// How a driver is told that a connection needs it: reading may resume,
/// a write failed, or a closing connection has nothing left in flight.
/// Event mode pushes the connection on its loop's ready list and wakes the
/// loop's poll.
pub(crate) trait Wake: Send + Sync {
    fn wake(&self, conn: &Arc<ConnShared>);

    /// Whether a worker may write the connection's output itself, which
    /// needs a non-blocking socket. When not (thread mode, whose sockets
    /// block), the driver writes everything and is woken for each batch.
    fn workers_write(&self) -> bool {
        true
    }

    /// Whether the driver must be woken to finish a write that another
    /// thread left blocked on a full socket buffer. Event mode's loop
    /// learns that the socket became writable from its poll; thread mode's
    /// writing thread sleeps until told.
    fn wake_when_blocked(&self) -> bool {
        false
    }
}

/// A request read and not yet answered.
pub(crate) struct InFlight {
    /// Tells this request apart from a later one that reuses its id.
    pub seq: u64,
    /// The method it calls, for its metrics.
    pub method: MethodId,
    /// Also says whether a worker started the request
    /// ([`Context::claim_start`]).
    pub ctx: Context,
    pub read_at: Instant,
    /// The effective timeout, for the DEADLINE_EXCEEDED message.
    pub timeout: Option<Duration>,
    /// The request's flags, which its RESPONSE repeats.
    pub flags: Flags,
    /// The stream the request opened, if it is a streaming call.
    pub stream: Option<Arc<StreamShared>>,
}

/// A connection's requests read and not yet answered, each counted on the
/// server's drain latch while it is here. The table holds the latch once
/// for all of them, so a request costs no reference count on it.
pub(crate) struct InFlightTable {
    requests: HashMap<RequestId, InFlight, FastHash>,
    drain: Latch,
    /// How many of them are streams.
    streams: usize,
}

impl InFlightTable {
    pub fn new(drain: Latch) -> InFlightTable {
        InFlightTable {
            requests: HashMap::default(),
            drain,
            streams: 0,
        }
    }

    pub fn len(&self) -> usize {
        self.requests.len()
    }

    /// How many of the requests are streams.
    pub fn streams(&self) -> usize {
        self.streams
    }

    /// Every request, in no order.
    pub fn iter(&self) -> impl Iterator<Item = (&RequestId, &InFlight)> {
        self.requests.iter()
    }

    pub fn get(&self, id: &RequestId) -> Option<&InFlight> {
        self.requests.get(id)
    }

    /// Adds request `id`, made by `entry`; false (and nothing made) if a
    /// request with that id is already in flight.
    pub fn insert_new(&mut self, id: RequestId, entry: impl FnOnce() -> InFlight) -> bool {
        match self.requests.entry(id) {
            Entry::Occupied(_) => false,
            Entry::Vacant(slot) => {
                self.drain.add(1);
                let entry = slot.insert(entry());
                self.streams += usize::from(entry.stream.is_some());
                true
            }
        }
    }

    /// Takes request `id` out. Its answer, if any, is appended under the
    /// same lock, before anyone who waited for the drain can look.
    pub fn remove(&mut self, id: &RequestId) -> Option<InFlight> {
        let entry = self.requests.remove(id)?;
        self.drain.done();
        self.streams -= usize::from(entry.stream.is_some());
        Some(entry)
    }

    /// Takes every request out.
    pub fn take_all(&mut self) -> Vec<(RequestId, InFlight)> {
        let all: Vec<(RequestId, InFlight)> = self.requests.drain().collect();
        for _ in &all {
            self.drain.done();
        }
        self.streams = 0;
        all
    }
}

impl Drop for InFlightTable {
    fn drop(&mut self) {
        for _ in self.requests.drain() {
            self.drain.done();
        }
    }
}

/// State guarded by the connection's lock.
pub(crate) struct ConnState {
    /// Frames waiting to be written, after `unsent`.
    pub out: Encoder,
    /// Bytes the socket would not take yet; they go before `out`.
    unsent: BytesMut,
    /// The transport has bytes of its own to send (a TLS handshake
    /// message, an alert): the next flush seals them in.
    transport_output: bool,
    /// Bytes a thread is writing right now, outside the lock.
    in_write: usize,
    /// A thread is writing; others only append.
    writer_active: bool,
    /// The driver learned the socket is writable while another thread was
    /// writing: that writer retries once before giving up on a full buffer,
    /// so the wake-up is not lost.
    retry_write: bool,
    /// When a write last hit a full socket buffer, while it still is.
    pub write_blocked_since: Option<Instant>,
    /// A write failed: the driver closes the connection.
    pub write_failed: bool,
    pub in_flight: InFlightTable,
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
    /// The driver closes the connection once nothing is in flight and
    /// everything is written, and wants a wake-up then.
    pub closing: bool,
    /// The server is shutting down: new requests are answered UNAVAILABLE.
    pub draining: bool,
    /// See [`Wake::wake_when_blocked`].
    wake_when_blocked: bool,
    /// The protocol the connection speaks, answers included: the native
    /// one until the first byte says otherwise.
    pub protocol: &'static dyn Protocol,
    /// The connection counts in the server's open connections of its
    /// protocol.
    pub protocol_counted: bool,
    /// When the connection last finished work: a write of its output
    /// completed, or a ONEWAY request ended. The idle timeout counts from
    /// this or the last read, whichever is later (see
    /// [`ConnState::idle_since`]).
    pub answered_at: Instant,
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

    /// Whether the connection is at its in-flight or pending-response
    /// limit: its reader waits until requests finish or output drains.
    ///
    /// While streams with frames of their own are open, the in-flight
    /// limit does not stop the reader, or their messages, ENDs and
    /// WINDOWs would wait behind it: a request past the limit is refused
    /// `RESOURCE_EXHAUSTED` instead.
    pub fn is_full(&self, limits: &Limits) -> bool {
        let counted =
            self.in_flight.streams() == 0 || self.protocol.streams() != StreamSupport::Frames;
        (counted
            && self.active()
                >= limits
                    .max_in_flight_per_connection
                    .min(self.protocol.max_in_flight()))
            || self.pending_bytes() >= limits.max_pending_response_bytes
    }

    /// Response bytes not yet accepted by the socket.
    pub fn pending_bytes(&self) -> usize {
        self.out.len() + self.unsent.len() + self.in_write
    }

    /// Nothing waits to be written and nobody is writing.
    pub fn is_flushed(&self) -> bool {
        self.out.is_empty()
            && self.unsent.is_empty()
            && !self.transport_output
            && !self.writer_active
    }

    /// Since when the connection has been idle, given when its driver last
    /// read from it; `None` while it is not (a request in flight, or
    /// output not yet written). The idle period starts at the later of the
    /// last read and the last answer written, so a call that ran longer
    /// than the idle timeout leaves its connection a whole idle period
    /// after its answer, as gRPC's `max_connection_idle` counts from the
    /// last call's end.
    pub fn idle_since(&self, last_read: Instant) -> Option<Instant> {
        (self.active() == 0 && self.is_flushed()).then(|| last_read.max(self.answered_at))
    }

    /// Whether a thread that just changed this state must wake the driver.
    pub fn should_wake(&mut self) -> bool {
        if self.notified || self.closed {
            return false;
        }
        let wanted = self.read_paused
            || self.write_failed
            || (self.closing && self.active() == 0 && self.is_flushed())
            || (self.wake_when_blocked
                && self.write_blocked_since.is_some()
                && !self.writer_active);
        if wanted {
            self.notified = true;
        }
        wanted
    }
}

/// What one [`ConnShared::read_blocking`] got.
#[derive(Debug)]
pub(crate) enum Received {
    /// This many bytes came off the socket; their plaintext, if any, is
    /// in the buffer.
    Bytes(usize),
    /// The peer closed its sending side.
    Eof,
    /// The transport failed: the connection ends, after whatever the
    /// transport still has to say (a TLS alert) is written.
    Failed(TransportError),
}

/// What [`ConnShared::flush`] achieved.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Flush {
    /// Everything was written (or another thread is writing and will
    /// write what was appended).
    Done,
    /// The socket's buffer is full; the driver resumes when it is writable.
    Blocked,
    /// The write failed, or the connection is closed.
    Failed,
}

/// One connection's shared half.
pub(crate) struct ConnShared {
    /// Unique for the server's lifetime, for logs.
    pub id: u64,
    /// The driver's slot for this connection. Only ever used together with
    /// a pointer comparison of the `Arc`, never alone.
    pub slot: usize,
    pub peer: Option<SocketAddr>,
    /// The socket, non-blocking. The driver reads it; whoever flushes
    /// writes it.
    pub stream: TcpStream,
    /// Plain TCP or TLS, below the protocol: what is read goes through
    /// [`ConnShared::receive`], what is written through `flush`.
    pub transport: Transport,
    /// The listener's services and the server's shared state.
    pub dispatcher: Arc<Dispatcher>,
    /// Set by the dispatcher, under the lock, when the request it just
    /// took left room for another (in flight, pending response bytes);
    /// cleared by the reader before each message. It spares the reader the
    /// lock to look at the limits again after each request.
    pub room_after: AtomicBool,
    /// The method this connection called last, for
    /// [`Registry::lookup_after`](super::service::Registry::lookup_after).
    pub last_method: AtomicUsize,
    waker: Arc<dyn Wake>,
    state: Mutex<ConnState>,
}

impl ConnShared {
    pub fn new(
        id: u64,
        slot: usize,
        peer: Option<SocketAddr>,
        stream: TcpStream,
        dispatcher: Arc<Dispatcher>,
        waker: Arc<dyn Wake>,
    ) -> ConnShared {
        let drain = dispatcher.server.requests.clone();
        let transport = Transport::new(id, &dispatcher.transport, &dispatcher.server.handshakes);
        let wake_when_blocked = waker.wake_when_blocked();
        ConnShared {
            id,
            slot,
            peer,
            stream,
            transport,
            dispatcher,
            last_method: AtomicUsize::new(usize::MAX),
            room_after: AtomicBool::new(false),
            waker,
            state: Mutex::new(ConnState {
                out: Encoder::new(),
                unsent: BytesMut::new(),
                transport_output: false,
                in_write: 0,
                writer_active: false,
                retry_write: false,
                write_blocked_since: None,
                write_failed: false,
                in_flight: InFlightTable::new(drain),
                oneway_running: 0,
                closed: false,
                notified: false,
                read_paused: false,
                closing: false,
                draining: false,
                wake_when_blocked,
                protocol: NATIVE,
                protocol_counted: false,
                answered_at: Instant::now(),
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

    /// The server's shared state.
    pub fn server(&self) -> &ServerShared {
        &self.dispatcher.server
    }

    /// See [`Wake::workers_write`].
    pub fn workers_write(&self) -> bool {
        self.waker.workers_write()
    }

    /// Hands bytes read off the socket to the transport, which appends
    /// the plaintext they carry to `out`. If the transport has something
    /// of its own to send (TLS handshake messages, an alert after a
    /// failure), the next flush sends it.
    pub fn receive(&self, raw: &[u8], out: &mut BytesMut) -> Result<Ingested, TransportError> {
        let got = self.transport.ingest(raw, out);
        if got.as_ref().map_or(true, |g| g.has_output) {
            self.lock().transport_output = true;
        }
        got
    }

    /// Reads the socket once, blocking (thread mode), and appends the
    /// plaintext to `buf`; at most `chunk` bytes are read.
    pub fn read_blocking(&self, buf: &mut BytesMut, chunk: usize) -> io::Result<Received> {
        if self.transport.peer_finished() {
            // TLS close_notify came with the last bytes.
            return Ok(Received::Eof);
        }
        if self.transport.is_plain() {
            // Straight into the frame buffer.
            let len = buf.len();
            buf.resize(len + chunk, 0);
            let read = (&self.stream).read(&mut buf[len..]);
            buf.truncate(len + *read.as_ref().unwrap_or(&0));
            return Ok(match read? {
                0 => Received::Eof,
                n => Received::Bytes(n),
            });
        }
        let mut raw = vec![0; chunk];
        let n = (&self.stream).read(&mut raw)?;
        if n == 0 {
            return Ok(Received::Eof);
        }
        Ok(match self.receive(&raw[..n], buf) {
            Ok(_) => Received::Bytes(n),
            Err(e) => Received::Failed(e),
        })
    }

    /// Whether the whole-frame timeout runs for the transport: a
    /// handshake is in progress.
    pub fn is_handshaking(&self) -> bool {
        self.transport.is_handshaking()
    }

    /// The peer of a request read now, for its context.
    pub fn peer_info(&self) -> Option<Peer> {
        let addr = self.peer?;
        #[cfg(feature = "tls")]
        {
            Some(Peer::new(
                addr,
                self.transport.is_tls(),
                self.transport.identity(),
            ))
        }
        #[cfg(not(feature = "tls"))]
        {
            Some(Peer::new(addr, false, None))
        }
    }

    /// Writes the pending output until the socket would block, unless
    /// another thread is writing (it will pick up what was appended) or
    /// the socket is known to be full and `writable` is false (only the
    /// driver, told the socket became writable, resumes then).
    ///
    /// `writable` also says who calls: the driver, whose write may wait
    /// for room on a blocking socket (thread mode's writing thread, within
    /// the socket's write timeout). Any other thread's write never waits.
    pub fn flush(&self, writable: bool) -> Flush {
        self.flush_locked(writable).0
    }

    /// [`ConnShared::flush`] from a thread that is not the connection's
    /// driver; true if the driver must be woken (see
    /// [`ConnState::should_wake`]), decided under the flush's last lock.
    pub fn flush_for_driver(&self) -> bool {
        self.flush_locked(false).1.should_wake()
    }

    /// [`ConnShared::flush`], handing back the lock it ends with.
    fn flush_locked(&self, writable: bool) -> (Flush, MutexGuard<'_, ConnState>) {
        let mut st = self.lock();
        if st.closed || st.write_failed {
            return (Flush::Failed, st);
        }
        if st.writer_active {
            st.retry_write |= writable;
            return (Flush::Done, st);
        }
        if st.write_blocked_since.is_some() && !writable {
            return (Flush::Blocked, st);
        }
        loop {
            let (chunk, sealed) = if st.unsent.is_empty() {
                if st.out.is_empty() && !st.transport_output {
                    st.write_blocked_since = None;
                    st.out.shrink_if_idle(KEEP_OUTPUT);
                    return (Flush::Done, st);
                }
                st.transport_output = false;
                (st.out.split(), false)
            } else {
                (std::mem::take(&mut st.unsent), true)
            };
            st.writer_active = true;
            st.in_write = chunk.len();
            drop(st);
            // Sealed by the one writer, in the order the output was
            // appended; what the socket does not take stays sealed.
            let (chunk, result) = match if sealed {
                Ok(chunk)
            } else {
                self.transport.seal(chunk)
            } {
                Ok(mut chunk) => {
                    let before = chunk.len();
                    let result = write_out(&self.stream, &mut chunk, writable);
                    self.server()
                        .bytes_written
                        .fetch_add((before - chunk.len()) as u64, Ordering::Relaxed);
                    (chunk, result)
                }
                Err(e) => (BytesMut::new(), Err(e)),
            };
            st = self.lock();
            st.writer_active = false;
            st.in_write = 0;
            match result {
                Ok((true, _)) => {
                    st.write_blocked_since = None;
                    st.answered_at = Instant::now();
                    // Dropped before the next split, so the encoder can
                    // reclaim the allocation instead of making a new one.
                    drop(chunk);
                }
                Ok((false, progressed)) => {
                    st.unsent = chunk;
                    if std::mem::take(&mut st.retry_write) {
                        continue;
                    }
                    // The stall clock counts time without a single byte
                    // accepted, so any progress restarts it.
                    if progressed || st.write_blocked_since.is_none() {
                        st.write_blocked_since = Some(Instant::now());
                    }
                    return (Flush::Blocked, st);
                }
                Err(e) => {
                    log::debug!("conn {}: write failed: {e}", self.id);
                    st.write_failed = true;
                    return (Flush::Failed, st);
                }
            }
            if st.closed {
                return (Flush::Failed, st);
            }
        }
    }

    /// Marks the connection closed, shuts the socket down and cancels every
    /// request still in flight on it; their results will be dropped.
    /// Returns how many were cancelled.
    pub fn close(&self) -> usize {
        let entries = {
            let mut st = self.lock();
            if !st.closed && st.protocol_counted {
                self.server().open_by_protocol[st.protocol.index()].fetch_sub(1, Ordering::Relaxed);
            }
            st.closed = true;
            st.out.clear();
            st.unsent = BytesMut::new();
            // Under the lock, so no worker starts one of them from now on.
            let entries = st.in_flight.take_all();
            for (_, e) in &entries {
                e.ctx.forbid_start();
            }
            entries
        };
        // The descriptor stays open while workers hold the connection;
        // shutting it down tells the peer now.
        let _ = self.stream.shutdown(Shutdown::Both);
        let n = entries.len();
        // Outside the lock: cancelling runs the contexts' listeners.
        for (_, e) in entries {
            e.ctx.cancel(crate::context::CancelReason::Cancelled);
        }
        n
    }
}

/// Output buffers that grew past this are released once drained.
const KEEP_OUTPUT: usize = 256 * 1024;

/// Writes `buf` until done or the socket would block, advancing `buf`
/// past what was written. Returns (done, whether any byte was written).
/// Unless `may_wait`, a blocking socket is written as if it did not block.
///
/// This is the one place a connection's bytes reach its socket.
fn write_out(
    mut stream: &TcpStream,
    buf: &mut BytesMut,
    may_wait: bool,
) -> io::Result<(bool, bool)> {
    let mut progressed = false;
    while !buf.is_empty() {
        let written = if may_wait {
            stream.write(buf)
        } else {
            send_now(stream, buf)
        };
        match written {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => {
                buf.advance(n);
                progressed = true;
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok((false, progressed)),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok((true, progressed))
}

/// `send(2)` flags that make one call return rather than wait for room,
/// whatever the socket's mode, and never raise `SIGPIPE`; `None` where the
/// platform has no such flag, and only non-blocking sockets may be written
/// by threads other than their driver.
#[cfg(any(target_os = "linux", target_os = "android"))]
pub(crate) const SEND_NOW: Option<std::os::raw::c_int> = Some(0x40 | 0x4000); // MSG_DONTWAIT | MSG_NOSIGNAL
#[cfg(any(
    target_os = "macos",
    target_os = "ios",
    target_os = "freebsd",
    target_os = "netbsd",
    target_os = "openbsd",
    target_os = "dragonfly"
))]
pub(crate) const SEND_NOW: Option<std::os::raw::c_int> = Some(0x80); // MSG_DONTWAIT
#[cfg(not(any(
    target_os = "linux",
    target_os = "android",
    target_os = "macos",
    target_os = "ios",
    target_os = "freebsd",
    target_os = "netbsd",
    target_os = "openbsd",
    target_os = "dragonfly"
)))]
pub(crate) const SEND_NOW: Option<std::os::raw::c_int> = None;

/// One write that does not wait for room in the socket's buffer
/// (`WouldBlock` instead), on a blocking socket too.
fn send_now(mut stream: &TcpStream, buf: &[u8]) -> io::Result<usize> {
    match SEND_NOW {
        Some(flags) => socket2::SockRef::from(stream).send_with_flags(buf, flags),
        None => stream.write(buf),
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

#[cfg(test)]
mod tests {
    use super::*;

    fn entry() -> InFlight {
        InFlight {
            seq: 1,
            method: MethodId::new(0),
            ctx: Context::background(),
            read_at: Instant::now(),
            timeout: None,
            flags: Flags::default(),
            stream: None,
        }
    }

    #[test]
    fn the_in_flight_table_counts_each_request_on_the_drain_latch() {
        let drain = Latch::new();
        let mut table = InFlightTable::new(drain.clone());
        assert!(table.insert_new(RequestId(1), entry));
        assert!(table.insert_new(RequestId(2), entry));
        assert!(!table.insert_new(RequestId(2), || unreachable!("a duplicate is not made")));
        assert_eq!(drain.count(), 2);
        assert!(table.remove(&RequestId(1)).is_some());
        assert!(table.remove(&RequestId(1)).is_none());
        assert_eq!(drain.count(), 1);
        assert!(table.insert_new(RequestId(3), entry));
        assert_eq!(table.take_all().len(), 2);
        assert_eq!(drain.count(), 0);
        assert!(table.insert_new(RequestId(4), entry));
        drop(table);
        assert_eq!(drain.count(), 0);
    }
}

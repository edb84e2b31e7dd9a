//! One TCP connection to one server, shared by every thread that calls it.
//!
//! Writes are coalesced without a writer thread. A caller appends its frame
//! to the connection's [`Encoder`] under a mutex; if nobody is writing, it
//! becomes the writer and writes everything queued, releasing the mutex
//! during the system call so that other callers append behind it. Two rules
//! make batches form when calls are pipelined, since one write per call
//! would cost most of the client's CPU (each `send` runs the kernel's TCP
//! path): while the IO thread hands out a chunk of responses, the callers
//! it wakes only queue their next requests, and it writes them together
//! afterwards; and a caller that becomes the writer while other calls are
//! in flight yields once first, so that runnable callers queue behind it.
//! A lone call writes at once. The socket is non-blocking: when it cannot
//! take more, the remaining bytes stay queued and the IO thread writes them
//! once the socket is writable again, so no caller is ever stuck in `write`
//! past its deadline.
//!
//! The IO thread reads frames with a client-side
//! [`Decoder`](crate::codec::Decoder) and hands each RESPONSE to the
//! thread waiting for it, by request id; a stream's MESSAGE, WINDOW and
//! RESPONSE go to the stream's shared state, which queues them without
//! ever making the IO thread wait. When the connection breaks it fails
//! every call and stream in flight at once with `UNAVAILABLE`, so a call
//! without a deadline still never hangs.
//!
//! The writing side is in `writer`, the IO thread in `io_thread`, and why
//! a connection ended in `broken`.

use std::collections::HashMap;
use std::fmt;
use std::io;
use std::net::{Shutdown, SocketAddr};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use bytes::BytesMut;
use log::debug;
use mio::{Interest, Poll, Token, Waker};

use super::builder::ClientProtocol;
use super::slot::{Kind, Reply, Slot, Wait};
use super::stream_state::{Failure, Received, StreamState};
use crate::codec::{
    Decoded, EncodeError, Encoder, Flags, FrameLimits, FrameType, GoawayMeta, ProtocolError,
    RequestId, RequestMeta, ResponseMeta, WindowMeta,
};
use crate::context::{CancelReason, Context};
use crate::error::{Error, ErrorKind, Execution};
use crate::hash::FastHash;
use crate::server::protocol::msgpack_rpc;
use crate::status::{Code, Status};
use crate::trace::TraceId;

mod broken;
mod io_thread;
mod writer;

pub(crate) use broken::Broken;
use io_thread::IoThread;
use writer::{SendError, Writer};

const STREAM: Token = Token(0);
const WAKE: Token = Token(1);

/// What a connection needs to know from the client's configuration.
#[derive(Clone, Debug)]
pub(crate) struct ConnOptions {
    /// Limits applied to what the server sends.
    pub(crate) limits: FrameLimits,
    /// How long queued bytes may wait for a socket that accepts none.
    pub(crate) write_stall: Duration,
    /// TCP keepalive idle time, if any.
    pub(crate) keepalive: Option<Duration>,
    pub(crate) protocol: ClientProtocol,
    /// Nesting allowed in a MessagePack-RPC result.
    pub(crate) max_depth: usize,
    /// TLS, if the client speaks it.
    #[cfg(feature = "tls")]
    pub(crate) tls: Option<crate::tls::ClientTls>,
}

/// A frame a call sends: REQUEST or ONEWAY.
pub(crate) struct Outgoing<'a> {
    pub(crate) frame_type: FrameType,
    pub(crate) flags: Flags,
    pub(crate) meta: &'a RequestMeta<'a>,
    pub(crate) body: &'a [u8],
}

/// Why a connection takes no new requests.
#[derive(Clone, Debug)]
enum State {
    Open,
    /// The server sent GOAWAY: calls in flight finish, no new ones start.
    Draining {
        code: Code,
        message: String,
    },
    Closed(Broken),
}

type Calls = HashMap<u32, Arc<Slot>, FastHash>;
type Streams = HashMap<u32, Arc<StreamState>, FastHash>;

struct Pending {
    state: State,
    calls: Calls,
    /// Open streams, until their RESPONSE arrives or the connection ends.
    streams: Streams,
    next_id: u32,
}

impl Pending {
    /// The next id not in flight; 0 is skipped, as GOAWAY uses it.
    fn next_free_id(&mut self) -> u32 {
        loop {
            let id = self.next_id;
            self.next_id = self.next_id.wrapping_add(1);
            if id != 0 && !self.calls.contains_key(&id) && !self.streams.contains_key(&id) {
                return id;
            }
        }
    }

    /// Calls and streams waiting for their RESPONSE.
    fn in_flight(&self) -> usize {
        self.calls.len() + self.streams.len()
    }

    /// The error for a request that cannot start on this connection.
    fn refusal(&self, peer: SocketAddr) -> Option<Error> {
        let message = match &self.state {
            State::Open => return None,
            State::Draining { code, message } => format!(
                "connection to {peer} is going away (GOAWAY {}: {message}); the request was not sent",
                code.name()
            ),
            State::Closed(why) => {
                format!("connection to {peer} is closed ({why}); the request was not sent")
            }
        };
        Some(
            Error::new(ErrorKind::Io, Status::unavailable(message))
                .with_execution(Execution::NotRun),
        )
    }
}

struct Shared {
    peer: SocketAddr,
    stream: mio::net::TcpStream,
    waker: Waker,
    pending: Mutex<Pending>,
    writer: Mutex<Writer>,
    /// False once GOAWAY arrived or the connection closed: read on every
    /// call's path, so kept outside the locks.
    usable: AtomicBool,
    /// Calls waiting for a response, kept outside the pending lock for the
    /// writer's batching decision.
    in_flight: AtomicUsize,
    answered: AtomicU64,
    write_stall: Duration,
    /// Speaks MessagePack-RPC rather than native frames.
    msgpack_rpc: bool,
    /// The TLS session, if the connection is TLS. Fed and drained under
    /// its lock, never across a socket call.
    #[cfg(feature = "tls")]
    tls: Option<Mutex<crate::tls::session::Session>>,
}

impl Shared {
    fn is_tls(&self) -> bool {
        #[cfg(feature = "tls")]
        if self.tls.is_some() {
            return true;
        }
        false
    }

    /// Turns queued plaintext into the bytes to write.
    fn seal(&self, plain: BytesMut) -> Result<BytesMut, Broken> {
        #[cfg(feature = "tls")]
        if let Some(tls) = &self.tls {
            return lock(tls).seal(&plain).map_err(|e| Broken::Io(Arc::new(e)));
        }
        Ok(plain)
    }

    /// Hands bytes read off the socket to the transport; the plaintext
    /// goes to `out`.
    fn receive(&self, raw: &[u8], out: &mut BytesMut) -> Result<(), Broken> {
        #[cfg(feature = "tls")]
        if let Some(tls) = &self.tls {
            let got = lock(tls).ingest(raw, out).map_err(Broken::Tls)?;
            if got.has_output {
                lock(&self.writer).transport_output = true;
            }
            return Ok(());
        }
        out.extend_from_slice(raw);
        Ok(())
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // Critical sections here do not call out to user code; a poisoned
    // lock can only come from an allocation failure, and the state it
    // guards stays consistent.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// A handle on one connection. The connection closes when the last handle
/// is dropped: the endpoint holds one, and every call in progress holds one,
/// so a connection that got GOAWAY closes once its last call returns.
pub(crate) struct Connection {
    shared: Arc<Shared>,
    io_thread: Option<JoinHandle<()>>,
}

impl fmt::Debug for Connection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Connection")
            .field("peer", &self.shared.peer)
            .field("in_flight", &self.in_flight())
            .finish_non_exhaustive()
    }
}

impl Connection {
    /// Connects to `addr` and starts the connection's IO thread.
    pub(crate) fn open(
        addr: SocketAddr,
        host: &str,
        connect_timeout: Duration,
        opts: &ConnOptions,
    ) -> io::Result<Connection> {
        let timeout = connect_timeout.max(Duration::from_millis(1));
        let started = Instant::now();
        let std_stream = std::net::TcpStream::connect_timeout(&addr, timeout)?;
        std_stream.set_nodelay(true)?;
        #[cfg(feature = "tls")]
        let tls = match &opts.tls {
            Some(tls) => {
                let left = timeout
                    .saturating_sub(started.elapsed())
                    .max(Duration::from_millis(1));
                let alpn = match opts.protocol {
                    ClientProtocol::MsgpackRpc => crate::tls::client::ALPN_MSGPACK_RPC,
                    _ => crate::tls::client::ALPN_NATIVE,
                };
                let conn = tls
                    .connect(host, alpn)
                    .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e.to_string()))?;
                Some(Mutex::new(crate::tls::handshake::run(
                    &std_stream,
                    conn,
                    left,
                )?))
            }
            None => None,
        };
        #[cfg(not(feature = "tls"))]
        let _ = (host, started);
        if let Some(idle) = opts.keepalive {
            let ka = socket2::TcpKeepalive::new().with_time(idle);
            socket2::SockRef::from(&std_stream).set_tcp_keepalive(&ka)?;
        }
        std_stream.set_nonblocking(true)?;
        let mut stream = mio::net::TcpStream::from_std(std_stream);
        let poll = Poll::new()?;
        poll.registry()
            .register(&mut stream, STREAM, Interest::READABLE | Interest::WRITABLE)?;
        let waker = Waker::new(poll.registry(), WAKE)?;
        let shared = Arc::new(Shared {
            peer: addr,
            stream,
            waker,
            pending: Mutex::new(Pending {
                state: State::Open,
                calls: Calls::default(),
                streams: Streams::default(),
                next_id: 1,
            }),
            writer: Mutex::new(Writer {
                enc: Encoder::with_capacity(4096),
                flushing: false,
                blocked: false,
                writable_edge: false,
                reader_busy: false,
                closed: false,
                last_progress: Instant::now(),
                unsent: BytesMut::new(),
                transport_output: false,
            }),
            usable: AtomicBool::new(true),
            in_flight: AtomicUsize::new(0),
            answered: AtomicU64::new(0),
            write_stall: opts.write_stall,
            msgpack_rpc: opts.protocol == ClientProtocol::MsgpackRpc,
            #[cfg(feature = "tls")]
            tls,
        });
        let io = IoThread::new(shared.clone(), poll, opts);
        let io_thread = thread::Builder::new()
            .name(format!("syncrpc-client-{addr}"))
            .spawn(move || io.run())?;
        debug!("connected to {addr}");
        Ok(Connection {
            shared,
            io_thread: Some(io_thread),
        })
    }

    /// The server's address.
    pub(crate) fn peer(&self) -> SocketAddr {
        self.shared.peer
    }

    /// True while the connection takes new requests.
    pub(crate) fn is_usable(&self) -> bool {
        self.shared.usable.load(Ordering::Acquire)
    }

    /// Why the connection takes no new requests, if it does not.
    pub(crate) fn refusal_reason(&self) -> Option<String> {
        match &lock(&self.shared.pending).state {
            State::Open => None,
            State::Draining { code, message } => Some(format!("GOAWAY {}: {message}", code.name())),
            State::Closed(why) => Some(why.to_string()),
        }
    }

    /// Calls and streams waiting for a response.
    pub(crate) fn in_flight(&self) -> usize {
        lock(&self.shared.pending).in_flight()
    }

    /// Responses delivered so far.
    pub(crate) fn answered(&self) -> u64 {
        self.shared.answered.load(Ordering::Relaxed)
    }

    /// Sends a REQUEST and waits for its RESPONSE, until `deadline` or the
    /// cancellation of `ctx`; either sends CANCEL.
    pub(crate) fn call(
        &self,
        out: &Outgoing<'_>,
        deadline: Option<Instant>,
        ctx: &Context,
    ) -> Result<Reply, Error> {
        let msgpack_rpc = self.shared.msgpack_rpc;
        self.round_trip(Kind::Call, deadline, ctx, |enc, id| {
            if msgpack_rpc {
                msgpack_rpc::write_request(enc.buf_mut(), Some(id), out.meta.method, out.body);
                return Ok(());
            }
            enc.frame(out.frame_type, out.flags, id, out.meta, out.body)
        })
    }

    /// Sends a PING and waits for its PONG.
    pub(crate) fn ping(&self, deadline: Option<Instant>, ctx: &Context) -> Result<(), Error> {
        if self.shared.msgpack_rpc {
            // No PING on this wire: an open connection is the answer.
            return match lock(&self.shared.pending).refusal(self.shared.peer) {
                Some(err) => Err(err),
                None => Ok(()),
            };
        }
        self.round_trip(Kind::Ping, deadline, ctx, |enc, id| {
            enc.ping(id);
            Ok(())
        })
        .map(drop)
    }

    /// Sends a ONEWAY frame. `Ok` means the frame is queued on a healthy
    /// connection, not that the server read it.
    pub(crate) fn oneway(&self, out: &Outgoing<'_>) -> Result<(), Error> {
        let id = {
            let mut p = lock(&self.shared.pending);
            if let Some(err) = p.refusal(self.shared.peer) {
                return Err(err);
            }
            p.next_free_id()
        };
        let msgpack_rpc = self.shared.msgpack_rpc;
        self.shared
            .send(|enc| {
                if msgpack_rpc {
                    msgpack_rpc::write_request(enc.buf_mut(), None, out.meta.method, out.body);
                    return Ok(());
                }
                enc.frame(out.frame_type, out.flags, RequestId(id), out.meta, out.body)
            })
            .map_err(|e| self.send_error(e))
    }

    /// Opens a stream: registers `stream` under a new id and queues its
    /// REQUEST, followed by whatever `more` appends (its first message and
    /// END, for a server stream), in one go. A refusal, or a frame that
    /// could not be queued, did not run.
    pub(crate) fn open_stream(
        &self,
        out: &Outgoing<'_>,
        stream: &Arc<StreamState>,
        more: impl FnOnce(&mut Encoder, RequestId) -> Result<(), EncodeError>,
    ) -> Result<RequestId, Error> {
        let shared = &self.shared;
        let id = {
            let mut p = lock(&shared.pending);
            if let Some(err) = p.refusal(shared.peer) {
                return Err(err);
            }
            let id = p.next_free_id();
            p.streams.insert(id, stream.clone());
            shared.in_flight.store(p.in_flight(), Ordering::Relaxed);
            id
        };
        let sent = shared.send(|enc| {
            let start = enc.len();
            let r = enc
                .frame(out.frame_type, out.flags, RequestId(id), out.meta, out.body)
                .and_then(|()| more(enc, RequestId(id)));
            if r.is_err() {
                // Nothing of a stream that cannot be encoded goes out.
                enc.buf_mut().truncate(start);
            }
            r
        });
        match sent {
            Ok(()) => Ok(RequestId(id)),
            // close() has failed the stream with the in-flight error.
            Err(SendError::Broken(b)) => Err(b.in_flight_error(shared.peer)),
            Err(e) => {
                let mut p = lock(&shared.pending);
                p.streams.remove(&id);
                shared.in_flight.store(p.in_flight(), Ordering::Relaxed);
                drop(p);
                Err(self.send_error(e))
            }
        }
    }

    /// Queues a frame of an open stream (MESSAGE, END, WINDOW, CANCEL).
    /// When the connection is or becomes closed, it has failed the stream
    /// already; the error says why.
    pub(crate) fn stream_frame(
        &self,
        write: impl FnOnce(&mut Encoder) -> Result<(), EncodeError>,
    ) -> Result<(), Error> {
        self.shared.send(write).map_err(|e| self.send_error(e))
    }

    fn send_error(&self, e: SendError) -> Error {
        match e {
            SendError::Encode(e) => Error::usage(e.to_string()),
            SendError::Closed => lock(&self.shared.pending)
                .refusal(self.shared.peer)
                .unwrap_or_else(|| {
                    Error::new(ErrorKind::Io, Status::unavailable("connection closed"))
                        .with_execution(Execution::NotRun)
                }),
            SendError::Broken(b) => b.in_flight_error(self.shared.peer),
        }
    }

    fn round_trip(
        &self,
        kind: Kind,
        deadline: Option<Instant>,
        ctx: &Context,
        write: impl FnOnce(&mut Encoder, RequestId) -> Result<(), EncodeError>,
    ) -> Result<Reply, Error> {
        let shared = &self.shared;
        let slot = Slot::new(kind);
        let id = {
            let mut p = lock(&shared.pending);
            if let Some(err) = p.refusal(shared.peer) {
                return Err(err);
            }
            let id = p.next_free_id();
            p.calls.insert(id, slot.clone());
            shared.in_flight.store(p.in_flight(), Ordering::Relaxed);
            id
        };
        match shared.send(|enc| write(enc, RequestId(id))) {
            Ok(()) => {}
            // close() has failed the slot with the in-flight error.
            Err(SendError::Broken(_)) => {}
            Err(e) => {
                let mut p = lock(&shared.pending);
                p.calls.remove(&id);
                shared.in_flight.store(p.in_flight(), Ordering::Relaxed);
                drop(p);
                return Err(self.send_error(e));
            }
        }
        // The background context is never cancelled: skip the listener and
        // the lock it would take on that one shared context.
        let _guard = if ctx.is_background() {
            None
        } else {
            let s = slot.clone();
            ctx.on_cancel(move |reason| s.cancel(reason))
        };
        match slot.wait(deadline) {
            Wait::Done(result) => result,
            Wait::Deadline => self.give_up(id, &slot).unwrap_or_else(|| {
                let status = Status::deadline_exceeded(format!(
                    "deadline exceeded waiting for {} from {}",
                    if kind == Kind::Call {
                        "a response"
                    } else {
                        "a PONG"
                    },
                    shared.peer
                ));
                Err(Error::new(ErrorKind::Timeout, status).with_execution(Execution::MayHaveRun))
            }),
            Wait::Cancelled(reason) => self.give_up(id, &slot).unwrap_or_else(|| {
                let kind = match reason {
                    CancelReason::DeadlineExceeded => ErrorKind::Timeout,
                    _ => ErrorKind::Cancelled,
                };
                Err(Error::new(kind, reason.to_status()).with_execution(Execution::MayHaveRun))
            }),
        }
    }

    /// Stops waiting for call `id`. Returns the result if it arrived in the
    /// meantime; otherwise tells the server with CANCEL.
    fn give_up(&self, id: u32, slot: &Slot) -> Option<Result<Reply, Error>> {
        let shared = &self.shared;
        let drained = {
            let mut p = lock(&shared.pending);
            let removed = p.calls.remove(&id);
            shared.in_flight.store(p.in_flight(), Ordering::Relaxed);
            if removed.is_none() {
                drop(p);
                // The IO thread took the slot and is filling it now.
                return Some(slot.wait_delivered());
            }
            match p.state {
                State::Closed(_) => return None,
                State::Draining { .. } => p.calls.is_empty(),
                State::Open => false,
            }
        };
        if slot.kind() == Kind::Call && !shared.msgpack_rpc {
            // Best effort: the call has failed whatever becomes of this.
            let _ = shared.send(|enc| {
                enc.cancel(RequestId(id));
                Ok(())
            });
        }
        if drained {
            // The IO thread closes a drained connection when it wakes.
            let _ = shared.waker.wake();
        }
        None
    }
}

impl Drop for Connection {
    fn drop(&mut self) {
        self.shared.close(Broken::Dropped);
        if let Some(handle) = self.io_thread.take() {
            if handle.thread().id() != thread::current().id() {
                // The IO thread ends promptly: the socket is shut down and
                // the thread woken.
                let _ = handle.join();
            }
        }
    }
}

impl Shared {
    /// Closes the connection and fails every call in flight. Only the
    /// first call has an effect.
    fn close(&self, why: Broken) {
        let (calls, streams) = {
            let mut p = lock(&self.pending);
            if matches!(p.state, State::Closed(_)) {
                return;
            }
            p.state = State::Closed(why.clone());
            self.usable.store(false, Ordering::Release);
            self.in_flight.store(0, Ordering::Relaxed);
            (std::mem::take(&mut p.calls), std::mem::take(&mut p.streams))
        };
        {
            let mut w = lock(&self.writer);
            w.closed = true;
            w.enc.clear();
            w.unsent.clear();
        }
        match &why {
            Broken::Drained | Broken::Dropped => debug!("connection to {}: {why}", self.peer),
            _ => debug!(
                "connection to {} failed with {} calls and {} streams in flight: {why}",
                self.peer,
                calls.len(),
                streams.len()
            ),
        }
        let _ = self.stream.shutdown(Shutdown::Both);
        let _ = self.waker.wake();
        for slot in calls.into_values() {
            slot.complete(Err(why.in_flight_error(self.peer)));
        }
        if !streams.is_empty() {
            let failure = Failure::from(&why.in_flight_error(self.peer));
            for stream in streams.into_values() {
                stream.on_closed(failure.clone());
            }
        }
    }

    fn is_closed(&self) -> bool {
        matches!(lock(&self.pending).state, State::Closed(_))
    }

    /// True once a GOAWAY'd connection has nothing left in flight or queued.
    fn is_drained(&self) -> bool {
        {
            let p = lock(&self.pending);
            if !matches!(p.state, State::Draining { .. }) || p.in_flight() != 0 {
                return false;
            }
        }
        let w = lock(&self.writer);
        w.is_empty() && !w.flushing
    }

    /// Hands a reply to the thread waiting for `id`, if any.
    fn deliver(&self, id: RequestId, kind: Kind, reply: Reply) {
        let slot = {
            let mut p = lock(&self.pending);
            match p.calls.get(&id.0) {
                Some(s) if s.kind() == kind => {
                    let slot = p.calls.remove(&id.0);
                    self.in_flight.store(p.in_flight(), Ordering::Relaxed);
                    slot
                }
                _ => None,
            }
        };
        match slot {
            Some(slot) => {
                self.answered.fetch_add(1, Ordering::Relaxed);
                slot.complete(Ok(reply));
            }
            // A call that gave up (deadline, cancel) or a confused server.
            None => debug!("{}: ignoring {kind:?} reply for id {id}", self.peer),
        }
    }

    /// The stream `id`, if it is open.
    fn stream(&self, id: RequestId) -> Option<Arc<StreamState>> {
        lock(&self.pending).streams.get(&id.0).cloned()
    }

    /// Removes the stream `id`, which its RESPONSE ends, if it is open.
    fn end_stream(&self, id: RequestId) -> Option<Arc<StreamState>> {
        let mut p = lock(&self.pending);
        let stream = p.streams.remove(&id.0)?;
        self.in_flight.store(p.in_flight(), Ordering::Relaxed);
        self.answered.fetch_add(1, Ordering::Relaxed);
        Some(stream)
    }

    /// Sends CANCEL from the IO thread.
    fn send_cancel(&self, id: RequestId) -> Result<(), Broken> {
        match self.send(|enc| {
            enc.cancel(id);
            Ok(())
        }) {
            Err(SendError::Broken(b)) => Err(b),
            _ => Ok(()),
        }
    }

    fn goaway(&self, code: Code, message: &str) {
        let mut p = lock(&self.pending);
        if matches!(p.state, State::Open) {
            debug!(
                "{}: GOAWAY {}: {message}; {} calls in flight",
                self.peer,
                code.name(),
                p.calls.len()
            );
            p.state = State::Draining {
                code,
                message: message.to_owned(),
            };
            self.usable.store(false, Ordering::Release);
        }
    }

    fn dispatch(&self, decoded: Decoded) -> Result<(), Broken> {
        let (header, meta, body) = match decoded {
            Decoded::Frame(f) => (f.header, f.meta, Some(f.body)),
            Decoded::BodyTooLarge { header, meta } => (header, meta, None),
        };
        match header.frame_type {
            FrameType::Response => {
                let ResponseMeta {
                    code,
                    message,
                    trace_id,
                    md,
                } = ResponseMeta::decode(&meta).map_err(bad_meta)?;
                let reply = Reply {
                    flags: header.flags,
                    code: Code::from(code),
                    message: message.unwrap_or_default().to_owned(),
                    // Length checked by decode.
                    trace_id: trace_id.and_then(TraceId::new),
                    metadata: md,
                    body_too_large: body.is_none().then_some(header.body_len),
                    body: body.unwrap_or_default(),
                };
                match self.end_stream(header.request_id) {
                    Some(stream) => stream.on_response(reply),
                    None => self.deliver(header.request_id, Kind::Call, reply),
                }
            }
            FrameType::Pong => self.deliver(header.request_id, Kind::Ping, Reply::pong()),
            FrameType::Ping => {
                let sent = self.send(|enc| {
                    enc.pong(header.request_id);
                    Ok(())
                });
                if let Err(SendError::Broken(b)) = sent {
                    return Err(b);
                }
            }
            FrameType::Goaway => {
                let meta = GoawayMeta::decode(&meta).map_err(bad_meta)?;
                self.goaway(meta.code(), meta.message);
            }
            // A MESSAGE or WINDOW for an id that is not an open stream is
            // ignored, as the protocol says: it may have crossed the
            // stream's RESPONSE. A WINDOW's meta was checked by the frame
            // decoder.
            FrameType::Message | FrameType::Window => {
                let Some(stream) = self.stream(header.request_id) else {
                    debug!(
                        "{}: ignoring {} for id {}, not an open stream",
                        self.peer, header.frame_type, header.request_id
                    );
                    return Ok(());
                };
                if header.frame_type == FrameType::Window {
                    let grant = WindowMeta::decode(&meta)
                        .map_err(|e| Broken::Protocol(ProtocolError::BadWindow(e)))?;
                    stream.on_window(grant).map_err(Broken::FlowControl)?;
                } else {
                    let got = stream
                        .on_message(header.flags, body, header.body_len)
                        .map_err(Broken::FlowControl)?;
                    if got == Received::Cancel {
                        self.send_cancel(header.request_id)?;
                    }
                }
            }
            // The client-side decoder refuses these before they get here.
            other => return Err(Broken::Protocol(ProtocolError::WrongDirection(other))),
        }
        Ok(())
    }
}

fn bad_meta(e: crate::codec::MetaError) -> Broken {
    Broken::Protocol(ProtocolError::BadMeta(e.to_string()))
}

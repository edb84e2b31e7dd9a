//! The server's sending side of a stream.

use std::fmt;
use std::marker::PhantomData;
use std::time::Instant;

use serde::Serialize;

use super::{defer_out, send_out, stop_status, StreamIo, BURST_GAP, OUTPUT_POLL};
use crate::codec::{compress, encode_body, Compression, Encoding, Flags};
use crate::context::Context;
use crate::flow_control::INITIAL_WINDOW;
use crate::status::Status;

/// Where a streaming handler sends its messages, as raw bytes (body
/// encoding 1, passed through untouched apart from compression).
///
/// [`RawSink::send`] blocks while the client's window is used up, and
/// fails once the stream can go no further: cancelled by the client,
/// past its deadline, its connection gone, or the server shutting down
/// past its timeout. The handler should then return; whatever it returns
/// is dropped, as the stream has already ended.
///
/// # Examples
///
/// ```
/// use bytes::Bytes;
/// use syncrpc::server::RawSink;
/// use syncrpc::{Context, Service, Status};
///
/// // Sends the request back in 4-byte pieces.
/// fn chunks(_ctx: &Context, req: Bytes, sink: &RawSink) -> Result<(), Status> {
///     for piece in req.chunks(4) {
///         sink.send(piece)?;
///     }
///     Ok(())
/// }
///
/// let svc = Service::new("blob.Blob").raw_server_stream("Chunks", chunks);
/// # let _ = svc;
/// ```
pub struct RawSink {
    io: StreamIo,
    ctx: Context,
    encoding: Encoding,
}

impl RawSink {
    pub(crate) fn new(io: StreamIo, ctx: &Context, encoding: Encoding) -> RawSink {
        RawSink {
            io,
            ctx: ctx.clone(),
            encoding,
        }
    }

    /// Sends one message, compressed the way the client's request was.
    /// Blocks while the client's window is used up.
    ///
    /// # Errors
    ///
    /// The status the stream ended with, if it ended: `CANCELLED` (the
    /// client cancelled, or its connection is gone), `DEADLINE_EXCEEDED`,
    /// or the status the server ended it with. `RESOURCE_EXHAUSTED` if
    /// the message is over the server's body limit.
    pub fn send(&self, body: &[u8]) -> Result<(), Status> {
        if body.len() > self.io.max_body {
            return Err(Status::resource_exhausted(format!(
                "stream message too large: {} > {} bytes",
                body.len(),
                self.io.max_body
            )));
        }
        let compression = self.io.flags.compression().unwrap_or_default();
        let packed;
        let wire: &[u8] = if compression == Compression::None {
            body
        } else {
            let mut out = Vec::with_capacity(body.len() / 2 + 64);
            compress(compression, body, &mut out);
            packed = out;
            &packed
        };
        let flags = Flags::new(compression, self.encoding);
        let (first, burst) = self.wait_for_window(wire.len())?;
        let mut failed = None;
        let live = self.io.with_live_conn(|st| {
            let ending = st.draining || st.closing;
            if let Err(status) =
                st.protocol
                    .write_message(&mut st.out, self.io.id, flags, wire, first, ending)
            {
                failed = Some(status);
            }
        });
        if let Some(status) = failed {
            return Err(status);
        }
        if !live {
            let s = self.io.shared.lock();
            return Err(stop_status(&s, &self.ctx)
                .unwrap_or_else(|| Status::cancelled("the stream has ended")));
        }
        // A message on its own goes out now. One of a burst is left for
        // the connection's driver, which writes all that were appended
        // by the time it runs in one go: a write per message would cost
        // a system call (and, on loopback, the receiver's whole TCP path)
        // per message. The burst's last message goes out with that write.
        if burst && self.io.conn.workers_write() {
            defer_out(&self.io.conn);
        } else {
            send_out(&self.io.conn);
        }
        Ok(())
    }

    /// Waits until a message of `len` bytes may go, and counts it sent.
    /// Returns whether it is the stream's first, and whether it follows
    /// the last one closely (a burst).
    fn wait_for_window(&self, len: usize) -> Result<(bool, bool), Status> {
        let shared = &self.io.shared;
        let mut s = shared.lock();
        loop {
            if let Some(status) = stop_status(&s, &self.ctx) {
                return Err(status);
            }
            if s.flow_control {
                if s.send.may_send() {
                    break;
                }
                s = shared.wait(s, self.ctx.deadline());
            } else {
                // No grants come: wait while the connection's unsent
                // output is a window's worth.
                drop(s);
                let pending = self.io.conn.lock().pending_bytes();
                s = shared.lock();
                if pending < INITIAL_WINDOW as usize {
                    break;
                }
                let poll = Instant::now() + OUTPUT_POLL;
                let until = self.ctx.deadline().map_or(poll, |d| d.min(poll));
                s = shared.wait(s, Some(until));
            }
        }
        let len = u32::try_from(len).unwrap_or(u32::MAX);
        if s.flow_control {
            // The window is open, so this cannot fail.
            let _ = s.send.sent(len);
        }
        let now = Instant::now();
        let burst = s
            .last_sent
            .replace(now)
            .is_some_and(|last| now.saturating_duration_since(last) < BURST_GAP);
        Ok((!std::mem::replace(&mut s.sent_any, true), burst))
    }

    /// The stream's context: its deadline, metadata and cancellation.
    pub fn context(&self) -> &Context {
        &self.ctx
    }

    /// True once the stream can go no further: the next send would fail.
    pub fn is_done(&self) -> bool {
        stop_status(&self.io.shared.lock(), &self.ctx).is_some()
    }
}

impl fmt::Debug for RawSink {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RawSink")
            .field("id", &self.io.id)
            .finish_non_exhaustive()
    }
}

/// Where a streaming handler sends its messages of type `T`, each encoded
/// as MessagePack. Blocks and fails as [`RawSink`] does.
///
/// # Examples
///
/// ```
/// use syncrpc::server::Sink;
/// use syncrpc::{Context, Service, Status};
///
/// #[derive(serde::Deserialize)]
/// struct Count { n: u32 }
/// #[derive(serde::Serialize)]
/// struct Tick { i: u32 }
///
/// fn count(_ctx: &Context, req: Count, sink: &Sink<Tick>) -> Result<(), Status> {
///     for i in 0..req.n {
///         sink.send(&Tick { i })?;
///     }
///     Ok(())
/// }
///
/// let svc = Service::new("echo.Echo").server_stream("Count", count);
/// # let _ = svc;
/// ```
pub struct Sink<T> {
    raw: RawSink,
    _type: PhantomData<fn(&T)>,
}

impl<T: Serialize> Sink<T> {
    pub(crate) fn new(raw: RawSink) -> Sink<T> {
        Sink {
            raw,
            _type: PhantomData,
        }
    }

    /// Sends one message; see [`RawSink::send`].
    ///
    /// # Errors
    ///
    /// As [`RawSink::send`], and `INTERNAL` if `msg` cannot be encoded.
    pub fn send(&self, msg: &T) -> Result<(), Status> {
        let mut body = Vec::new();
        encode_body(msg, &mut body)?;
        self.raw.send(&body)
    }

    /// The stream's context: its deadline, metadata and cancellation.
    pub fn context(&self) -> &Context {
        self.raw.context()
    }

    /// True once the stream can go no further: the next send would fail.
    pub fn is_done(&self) -> bool {
        self.raw.is_done()
    }
}

impl<T> fmt::Debug for Sink<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Sink")
            .field("id", &self.raw.io.id)
            .finish_non_exhaustive()
    }
}

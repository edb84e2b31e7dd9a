//! The writing side of a connection: frames queued under a lock and
//! written by whichever thread finds nobody writing (see the module
//! above for the batching rules), the rest left to the IO thread when the
//! socket is full.

use std::io::{self, Write};
use std::sync::atomic::Ordering;
use std::sync::{Arc, MutexGuard};
use std::thread;
use std::time::{Duration, Instant};

use bytes::{Buf, BytesMut};

use super::{lock, Broken, Shared};
use crate::codec::{EncodeError, Encoder};

pub(super) struct Writer {
    pub(super) enc: Encoder,
    /// A thread is writing; others only append.
    pub(super) flushing: bool,
    /// The socket was full: the IO thread writes once it is writable.
    pub(super) blocked: bool,
    /// The IO thread saw the socket become writable while a caller was
    /// writing: that caller must try again before giving up.
    pub(super) writable_edge: bool,
    /// The IO thread is handing out responses and will write what is
    /// queued when it is done with the bytes it read: callers it woke
    /// queue their next requests behind one write instead of one each.
    pub(super) reader_busy: bool,
    pub(super) closed: bool,
    /// When bytes last went out, for the write-stall limit.
    pub(super) last_progress: Instant,
    /// Bytes already through the transport that the socket did not take:
    /// they go before `enc`.
    pub(super) unsent: BytesMut,
    /// The transport has bytes of its own to send (TLS).
    pub(super) transport_output: bool,
}

impl Writer {
    pub(super) fn is_empty(&self) -> bool {
        self.enc.is_empty() && self.unsent.is_empty() && !self.transport_output
    }
}

/// Why a frame was not queued.
pub(super) enum SendError {
    /// The connection is closed: nothing was sent.
    Closed,
    /// The frame cannot be encoded: nothing was sent.
    Encode(EncodeError),
    /// Writing failed; the connection is now closed and its calls failed.
    Broken(Broken),
}

impl Shared {
    /// Appends a frame and writes what is queued unless another thread is
    /// already doing so.
    pub(super) fn send(
        &self,
        write: impl FnOnce(&mut Encoder) -> Result<(), EncodeError>,
    ) -> Result<(), SendError> {
        let mut w = lock(&self.writer);
        if w.closed {
            return Err(SendError::Closed);
        }
        write(&mut w.enc).map_err(SendError::Encode)?;
        if w.flushing || w.blocked || w.reader_busy {
            return Ok(());
        }
        if self.in_flight.load(Ordering::Relaxed) > 1 {
            // Other calls are in flight, so their callers are likely about
            // to send again: give them the CPU once and write their frames
            // with ours. Each write costs the kernel's whole loopback or
            // TCP path; one per batch instead of one per call is most of
            // what pipelining saves. A lone call writes at once.
            w.flushing = true;
            drop(w);
            thread::yield_now();
            w = lock(&self.writer);
            w.flushing = false;
            if w.closed {
                // Nobody wrote while this thread held the writer's role, so
                // the frame, cleared by close(), never left.
                return Err(SendError::Closed);
            }
        }
        match self.flush(w) {
            Ok(()) => Ok(()),
            Err(b) => {
                self.close(b.clone());
                Err(SendError::Broken(b))
            }
        }
    }

    /// Writes everything queued, as the writer. Releases the lock during
    /// each write so that other threads can queue behind it.
    pub(super) fn flush<'a>(&'a self, mut w: MutexGuard<'a, Writer>) -> Result<(), Broken> {
        w.flushing = true;
        loop {
            if w.is_empty() {
                w.flushing = false;
                return Ok(());
            }
            let mut buf = if w.unsent.is_empty() {
                // Sealed in queue order by the one writer.
                w.transport_output = false;
                let plain = w.enc.split();
                match self.seal(plain) {
                    Ok(b) => b,
                    Err(e) => {
                        w.flushing = false;
                        return Err(e);
                    }
                }
            } else {
                std::mem::take(&mut w.unsent)
            };
            w.writable_edge = false;
            drop(w);
            let res = write_some(&self.stream, &mut buf);
            w = lock(&self.writer);
            match res {
                Ok(progress) => {
                    if progress {
                        w.last_progress = Instant::now();
                    }
                    if buf.is_empty() {
                        continue;
                    }
                    // The socket is full: the rest goes before whatever
                    // was queued meanwhile.
                    w.unsent = buf;
                    if std::mem::take(&mut w.writable_edge) {
                        continue;
                    }
                    w.blocked = true;
                    w.flushing = false;
                    drop(w);
                    // The IO thread now watches for the write-stall limit.
                    let _ = self.waker.wake();
                    return Ok(());
                }
                Err(e) => {
                    w.flushing = false;
                    return Err(Broken::Io(Arc::new(e)));
                }
            }
        }
    }

    /// The IO thread starts (`true`) or stops handing out responses. When
    /// it stops, and after each chunk it read, it writes what the callers
    /// queued meanwhile, unless a caller is writing already.
    pub(super) fn set_reader_busy(&self, busy: bool) -> Result<(), Broken> {
        let mut w = lock(&self.writer);
        w.reader_busy = busy;
        if w.flushing || w.blocked || w.closed || w.is_empty() {
            return Ok(());
        }
        self.flush(w)
    }

    /// The IO thread saw the socket become writable.
    pub(super) fn on_writable(&self) -> Result<(), Broken> {
        let mut w = lock(&self.writer);
        if w.flushing {
            w.writable_edge = true;
            return Ok(());
        }
        if !w.blocked || w.closed {
            return Ok(());
        }
        w.blocked = false;
        self.flush(w)
    }

    /// How long the IO thread may sleep before checking the write-stall
    /// limit, or `Err` once the limit passed.
    pub(super) fn stall_timeout(&self) -> Result<Option<Duration>, Broken> {
        let w = lock(&self.writer);
        if !w.blocked || w.closed {
            return Ok(None);
        }
        let idle = w.last_progress.elapsed();
        if idle >= self.write_stall {
            return Err(Broken::WriteStall(idle));
        }
        Ok(Some(self.write_stall - idle))
    }
}

/// Writes as much of `buf` as the socket takes now; true if any went out.
fn write_some(stream: &mio::net::TcpStream, buf: &mut BytesMut) -> io::Result<bool> {
    let mut progress = false;
    while !buf.is_empty() {
        match (&*stream).write(buf) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => {
                buf.advance(n);
                progress = true;
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(progress)
}

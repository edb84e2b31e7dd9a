//! The connection's IO thread: reads and dispatches what the server
//! sends, finishes writes the socket could not take, closes the
//! connection when it breaks or has drained after GOAWAY.

use std::io::{self, Read};
use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use mio::{Events, Poll};

use super::super::builder::ClientProtocol;
use super::super::slot::{Kind, Reply};
use super::{Broken, ConnOptions, Shared, STREAM};
use crate::codec::msgpack::Scanner;
use crate::codec::{Decoder, ProtocolError, Side};
use crate::server::protocol::msgpack_rpc;
use crate::status::Code;

/// Bytes read per `read` call.
const READ_CHUNK: usize = 64 * 1024;
/// Bytes read in one go before the IO thread looks at its other duties
/// (writing, closing): a server that streams without pause cannot starve
/// them.
const READ_BURST: usize = 1024 * 1024;

/// The end of a MessagePack-RPC response, found as bytes arrive.
struct MsgpackRpcScan {
    scan: Scanner,
    max_message: usize,
    max_depth: usize,
}

/// The IO thread of one connection.
pub(super) struct IoThread {
    shared: Arc<Shared>,
    poll: Poll,
    decoder: Decoder,
    /// Set when the connection speaks MessagePack-RPC.
    scanner: Option<MsgpackRpcScan>,
    buf: BytesMut,
    scratch: Box<[u8]>,
    /// Any byte came from the server.
    got_bytes: bool,
}

impl IoThread {
    /// The IO thread of the connection `shared`, polling with `poll`.
    pub(super) fn new(shared: Arc<Shared>, poll: Poll, opts: &ConnOptions) -> IoThread {
        IoThread {
            shared,
            poll,
            decoder: Decoder::new(Side::Client, opts.limits),
            scanner: (opts.protocol == ClientProtocol::MsgpackRpc).then(|| MsgpackRpcScan {
                scan: Scanner::new(opts.max_depth.saturating_add(2)),
                max_message: opts.limits.max_body.saturating_add(opts.limits.max_meta),
                max_depth: opts.max_depth.saturating_add(2),
            }),
            buf: BytesMut::with_capacity(READ_CHUNK),
            scratch: vec![0u8; READ_CHUNK].into_boxed_slice(),
            got_bytes: false,
        }
    }

    pub(super) fn run(mut self) {
        let mut events = Events::with_capacity(8);
        let mut more_to_read = false;
        // Once the poll reported the end of the stream, every read goes on
        // to see it: that event does not come again.
        let mut closing = false;
        loop {
            let timeout = match self.shared.stall_timeout() {
                Ok(_) if more_to_read => Some(Duration::ZERO),
                Ok(t) => t,
                Err(b) => {
                    self.shared.close(b);
                    return;
                }
            };
            if let Err(e) = self.poll.poll(&mut events, timeout) {
                if e.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                self.shared.close(Broken::Io(Arc::new(e)));
                return;
            }
            let mut readable = std::mem::take(&mut more_to_read);
            let mut writable = false;
            for ev in events.iter() {
                if ev.token() == STREAM {
                    closing |= ev.is_read_closed() || ev.is_error();
                    readable |= ev.is_readable() || closing;
                    writable |= ev.is_writable();
                }
            }
            if writable {
                if let Err(b) = self.shared.on_writable() {
                    self.shared.close(b);
                }
            }
            if readable {
                let read = self.read(closing);
                let flushed = self.shared.set_reader_busy(false);
                match read.and_then(|more| flushed.map(|()| more)) {
                    Ok(more) => more_to_read = more,
                    Err(b) => self.shared.close(b),
                }
            }
            if self.shared.is_drained() {
                self.shared.close(Broken::Drained);
            }
            if self.shared.is_closed() {
                return;
            }
        }
    }

    /// Reads until the socket is empty or a burst is done; true if there
    /// may be more to read. With `closing` (the poll reported the end of
    /// the stream or an error), reads on until it sees it.
    fn read(&mut self, closing: bool) -> Result<bool, Broken> {
        let mut total = 0;
        loop {
            match (&self.shared.stream).read(&mut self.scratch) {
                Ok(0) => {
                    if !self.got_bytes && !self.shared.is_tls() {
                        return Err(Broken::ClosedUnanswered);
                    }
                    if self.scanner.is_some() && !self.buf.is_empty() {
                        return Err(Broken::Protocol(ProtocolError::Truncated {
                            have: self.buf.len(),
                        }));
                    }
                    self.decoder.finish(&self.buf).map_err(Broken::Protocol)?;
                    return Err(Broken::Eof);
                }
                Ok(n) => {
                    self.got_bytes = true;
                    self.shared.receive(&self.scratch[..n], &mut self.buf)?;
                    if let Some(scan) = &mut self.scanner {
                        read_msgpack_rpc(scan, &mut self.buf, &self.shared)?;
                    }
                    while let Some(d) = self
                        .decoder
                        .decode(&mut self.buf)
                        .map_err(Broken::Protocol)?
                    {
                        self.shared.dispatch(d)?;
                    }
                    total += n;
                    if total >= READ_BURST {
                        return Ok(true);
                    }
                    // With epoll and kqueue a short read proves the socket
                    // was drained, and bytes arriving later raise a new
                    // event: the read that would say WouldBlock is saved.
                    // Not when the end of the stream came with the bytes:
                    // its event is spent, so it must be read now.
                    if cfg!(unix) && !closing && n < self.scratch.len() {
                        return Ok(false);
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(false),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(Broken::Io(Arc::new(e))),
            }
        }
    }
}

/// Delivers every complete MessagePack-RPC response in `buf`.
fn read_msgpack_rpc(
    scan: &mut MsgpackRpcScan,
    buf: &mut BytesMut,
    shared: &Shared,
) -> Result<(), Broken> {
    while !buf.is_empty() {
        let end = match scan.scan.advance(buf) {
            Ok(Some(end)) => end,
            Ok(None) if buf.len() > scan.max_message => {
                return Err(Broken::Protocol(ProtocolError::MessageTooLarge {
                    len: buf.len(),
                    limit: scan.max_message,
                }))
            }
            Ok(None) => return Ok(()),
            Err(e) => return Err(Broken::Protocol(ProtocolError::Msgpack(e))),
        };
        scan.scan = Scanner::new(scan.max_depth);
        let answer =
            msgpack_rpc::parse_response(buf.split_to(end).freeze()).map_err(Broken::Protocol)?;
        let mut reply = Reply::pong();
        match answer.outcome {
            Ok(body) => reply.body = body,
            Err((code, message)) => {
                reply.code = Code::from(code);
                reply.message = message;
            }
        }
        shared.deliver(answer.msgid, Kind::Call, reply);
    }
    Ok(())
}

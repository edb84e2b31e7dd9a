//! An open stream as its handles share it: the connection it runs on, its
//! state, its deadline, and what sending and receiving one message take.
//!
//! Every public stream type holds an `Arc<StreamCall>`. When the last one
//! goes before the stream ended, the stream is cancelled: CANCEL goes to
//! the server, and the id stays taken until the server's RESPONSE
//! CANCELLED arrives or the connection ends.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use bytes::Bytes;
use serde::de::DeserializeOwned;
use serde::Serialize;

use super::body::{encode_request, inflate, peer_error};
use super::builder::ClientProtocol;
use super::call_plan::{check_live, timeout_ms, too_large, Plan};
use super::connection::{Connection, Outgoing};
use super::retry::RetryBudget;
use super::stream_state::{Failure, Next, Outcome, Reserve, StreamState};
use super::{CallOptions, Client};
use crate::codec::{self, Encoding, Flags, FrameType, RequestId};
use crate::context::{CancelGuard, CancelReason, Context};
use crate::error::{Error, ErrorKind, Execution};
use crate::metadata::Metadata;
use crate::status::{Code, Status};
use crate::trace::TraceId;

/// Turns a message's bytes (decompressed) into the receiver's type.
pub(crate) type DecodeFn<T> = fn(&StreamCall, Flags, Bytes) -> Result<T, Error>;
/// Turns the sender's value into a message's bytes.
pub(crate) type EncodeFn<T> = fn(&T, &mut Vec<u8>) -> Result<(), Error>;

/// What [`StreamCall::recv`] got.
pub(crate) enum Recv {
    /// A message, decompressed, with its flags.
    Message(Flags, Bytes),
    /// The end: the trailing metadata of an OK end, or the error.
    End(Result<Metadata, Error>),
    /// The end was reported before.
    Done,
}

/// One open stream, shared by its handles.
pub(crate) struct StreamCall {
    client: Client,
    conn: Arc<Connection>,
    state: Arc<StreamState>,
    id: RequestId,
    method: String,
    /// Deadline, trace id and compression.
    plan: Plan,
    encoding: Encoding,
    /// END was sent: nothing more may be.
    end_sent: AtomicBool,
    /// Keeps the context's cancellation listener registered.
    cancel_guard: Mutex<Option<CancelGuard>>,
}

impl StreamCall {
    /// Opens a stream on `method`. With `first`, sends it as the stream's
    /// one message and then END (a server stream). A stream refused before
    /// its REQUEST was sent is tried once more on another endpoint, as a
    /// unary call is; once the REQUEST is sent, never.
    pub(crate) fn open(
        client: &Client,
        ctx: &Context,
        method: &str,
        encoding: Encoding,
        opts: &CallOptions,
        first: Option<&[u8]>,
    ) -> Result<Arc<StreamCall>, Error> {
        let config = client.config();
        if config.protocol == ClientProtocol::MsgpackRpc {
            return Err(Error::usage(format!(
                "{method}: MessagePack-RPC has no streams; streams need the native protocol"
            )));
        }
        let plan = client.plan(ctx, method, opts)?;
        let first = match first {
            Some(body) if body.len() > config.max_body => {
                return Err(too_large("request body", body.len(), config.max_body))
            }
            Some(body) => Some(plan.compress(body)),
            None => None,
        };
        let mut meta = client.request_meta(method, &plan, opts, true)?;
        // A stream's REQUEST carries the compression and encoding of its
        // messages; each MESSAGE says its own.
        let flags = Flags::new(plan.compression, encoding);
        let mut budget = RetryBudget::new(opts.retry_or(config.retry));
        let mut avoid = None;
        loop {
            let conn =
                client
                    .inner
                    .balancer
                    .pick(avoid, plan.deadline, ctx, opts.is_wait_for_ready())?;
            meta.timeout_ms = plan.deadline.map_or(0, |d| timeout_ms(d, Instant::now()));
            let out = Outgoing {
                frame_type: FrameType::Request,
                flags,
                meta: &meta,
                body: &[],
            };
            let state = Arc::new(StreamState::new());
            if let Some((body, _)) = &first {
                // The window of a new stream is open.
                let _ = state.reserve(body.len() as u32, None);
            }
            let opened = conn.open_stream(&out, &state, |enc, id| {
                if let Some((body, compression)) = &first {
                    enc.message(id, Flags::new(*compression, encoding), body)?;
                    enc.end(id);
                }
                Ok(())
            });
            let err = match opened {
                Ok(id) => {
                    let call = Arc::new(StreamCall {
                        client: client.clone(),
                        conn,
                        state,
                        id,
                        method: method.to_owned(),
                        plan,
                        encoding,
                        end_sent: AtomicBool::new(first.is_some()),
                        cancel_guard: Mutex::new(None),
                    });
                    call.listen(ctx);
                    return Ok(call);
                }
                Err(e) => match plan.trace_id {
                    Some(t) if e.trace_id().is_none() => e.with_trace_id(t),
                    _ => e,
                },
            };
            let live = check_live(ctx, plan.deadline, Instant::now()).is_ok();
            if !err.is_not_run() || !live || !budget.take(&err) {
                return Err(err);
            }
            log::debug!(
                "{method}: opening the stream again after {} refused it: {err}",
                conn.peer()
            );
            avoid = Some(conn.peer());
        }
    }

    /// Cancels the stream when `ctx` is cancelled.
    fn listen(self: &Arc<StreamCall>, ctx: &Context) {
        if ctx.is_background() {
            return;
        }
        let weak = Arc::downgrade(self);
        let guard = ctx.on_cancel(move |reason| {
            if let Some(call) = weak.upgrade() {
                let kind = match reason {
                    CancelReason::DeadlineExceeded => ErrorKind::Timeout,
                    _ => ErrorKind::Cancelled,
                };
                call.cancel(Failure::new(
                    kind,
                    reason.to_status(),
                    Execution::MayHaveRun,
                ));
            }
        });
        *self.cancel_guard.lock().unwrap_or_else(|e| e.into_inner()) = guard;
    }

    pub(crate) fn method(&self) -> &str {
        &self.method
    }

    pub(crate) fn peer(&self) -> SocketAddr {
        self.conn.peer()
    }

    /// The trace id the server reported, else the one sent.
    pub(crate) fn trace_id(&self) -> Option<TraceId> {
        self.state.reported_trace_id().or(self.plan.trace_id)
    }

    pub(crate) fn is_ended(&self) -> bool {
        self.state.is_ended()
    }

    fn error(&self, failure: &Failure) -> Error {
        failure.to_error(self.trace_id())
    }

    /// Fails the stream here and tells the server with CANCEL, unless it
    /// had ended already.
    pub(crate) fn cancel(&self, failure: Failure) {
        self.cancel_as(failure, false);
    }

    fn cancel_as(&self, failure: Failure, reported: bool) {
        if self.state.fail(failure, reported) {
            // Best effort: if the connection is gone, so is the stream.
            let id = self.id;
            let _ = self.conn.stream_frame(|enc| {
                enc.cancel(id);
                Ok(())
            });
        }
    }

    /// Fails the stream with DEADLINE_EXCEEDED.
    fn expire(&self) {
        self.cancel(Failure::new(
            ErrorKind::Timeout,
            Status::deadline_exceeded(format!("{}: the stream's deadline passed", self.method)),
            Execution::MayHaveRun,
        ));
    }

    /// Expires the stream if its deadline passed while nobody waited.
    fn check_deadline(&self) {
        if self.plan.deadline.is_some_and(|d| Instant::now() >= d) {
            self.expire();
        }
    }

    /// The next message, or the end, waiting until the deadline. Grants
    /// back the window a message frees.
    pub(crate) fn recv(&self) -> Recv {
        self.check_deadline();
        loop {
            match self.state.next(self.plan.deadline) {
                Next::Message(m, grant) => {
                    if let Some(grant) = grant {
                        let id = self.id;
                        // A failure here has failed the stream too; the
                        // message in hand is still good.
                        let _ = self.conn.stream_frame(|enc| {
                            enc.window(id, grant);
                            Ok(())
                        });
                    }
                    let limit = self.client.config().max_body;
                    return match inflate(&self.method, "a stream message", m.flags, &m.body, limit)
                    {
                        Ok(std::borrow::Cow::Borrowed(_)) => Recv::Message(m.flags, m.body),
                        Ok(std::borrow::Cow::Owned(v)) => Recv::Message(m.flags, Bytes::from(v)),
                        Err(e) => Recv::End(Err(self.fail_with(e))),
                    };
                }
                Next::End(Outcome::Ok(md)) => return Recv::End(Ok(md)),
                Next::End(Outcome::Err(f)) => return Recv::End(Err(self.error(&f))),
                Next::Done => return Recv::Done,
                Next::Deadline => self.expire(),
            }
        }
    }

    /// Fails the stream with `err`, reported now: the receiver's next look
    /// finds the end already reported.
    pub(crate) fn fail_with(&self, err: Error) -> Error {
        self.cancel_as(Failure::from(&err), true);
        match (err.trace_id(), self.trace_id()) {
            (None, Some(t)) => err.with_trace_id(t),
            _ => err,
        }
    }

    /// Sends one message, waiting while the window is closed.
    pub(crate) fn send(&self, body: &[u8]) -> Result<(), Error> {
        let limit = self.client.config().max_body;
        if body.len() > limit {
            return Err(too_large("stream message", body.len(), limit));
        }
        if self.end_sent.load(Ordering::Acquire) {
            return Err(Error::usage(format!(
                "{}: the stream's sending side is closed",
                self.method
            )));
        }
        self.check_deadline();
        let (body, compression) = self.plan.compress(body);
        loop {
            match self.state.reserve(body.len() as u32, self.plan.deadline) {
                Reserve::Ready => break,
                Reserve::Ended(Outcome::Err(f)) => return Err(self.error(&f)),
                Reserve::Ended(Outcome::Ok(_)) => {
                    let status = Status::failed_precondition(format!(
                        "{}: the server already ended the stream with OK; \
                         the message was not sent",
                        self.method
                    ));
                    return Err(
                        Error::new(ErrorKind::Status, status).with_execution(Execution::Ran)
                    );
                }
                Reserve::Deadline => self.expire(),
            }
        }
        let (id, flags) = (self.id, Flags::new(compression, self.encoding));
        self.conn
            .stream_frame(|enc| enc.message(id, flags, &body))
            .map_err(|e| match self.state_error() {
                Some(err) => err,
                None => e,
            })
    }

    /// The stream's error, if it failed.
    fn state_error(&self) -> Option<Error> {
        self.state.failure().map(|f| self.error(&f))
    }

    /// Sends END, once: the client sends no more messages. Nothing is sent
    /// once the stream ended.
    pub(crate) fn end(&self) -> Result<(), Error> {
        if self.end_sent.swap(true, Ordering::AcqRel) || self.state.is_ended() {
            return Ok(());
        }
        let id = self.id;
        self.conn.stream_frame(|enc| {
            enc.end(id);
            Ok(())
        })
    }
}

impl Drop for StreamCall {
    fn drop(&mut self) {
        if !self.state.is_released() {
            self.cancel(Failure::new(
                ErrorKind::Cancelled,
                Status::cancelled(format!("{}: the stream was dropped", self.method)),
                Execution::MayHaveRun,
            ));
        }
    }
}

/// Decodes a MessagePack message.
pub(crate) fn decode_msgpack<T: DeserializeOwned>(
    call: &StreamCall,
    flags: Flags,
    body: Bytes,
) -> Result<T, Error> {
    let method = call.method();
    if flags.encoding() != Ok(Encoding::MsgPack) {
        let status = Status::internal(format!(
            "{method}: a stream message is not MessagePack (flags 0x{:02x})",
            flags.bits()
        ));
        return Err(peer_error(status, Execution::Ran));
    }
    codec::decode_body::<T>(&body, call.client.config().max_body_depth).map_err(|s| {
        let status = Status::internal(format!(
            "{method}: cannot decode a stream message: {}",
            s.message()
        ));
        Error::new(ErrorKind::Codec, status).with_execution(Execution::Ran)
    })
}

/// Hands a raw message over as it came.
pub(crate) fn decode_raw(_: &StreamCall, _: Flags, body: Bytes) -> Result<Bytes, Error> {
    Ok(body)
}

/// Encodes a message as MessagePack.
pub(crate) fn encode_msgpack<T: Serialize + ?Sized>(
    msg: &T,
    buf: &mut Vec<u8>,
) -> Result<(), Error> {
    encode_request(msg, buf)
}

/// Takes a raw message as it is.
pub(crate) fn encode_raw(msg: &[u8], buf: &mut Vec<u8>) -> Result<(), Error> {
    buf.extend_from_slice(msg);
    Ok(())
}

/// The status a stream ends with when its server answers OK without the
/// one message a client stream's answer is.
pub(crate) fn no_response(method: &str) -> Error {
    peer_error(
        Status::new(
            Code::INTERNAL,
            format!("{method}: the server ended the stream without a response message"),
        ),
        Execution::Ran,
    )
}

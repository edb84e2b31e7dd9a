//! The state of one open stream, shared by the connection's IO thread and
//! the stream's handles.
//!
//! The IO thread queues each MESSAGE the server sends, adds each WINDOW's
//! grant to the send window and records the RESPONSE that ends the stream;
//! it never waits, whatever the application does: the receive window
//! bounds the queue (`docs/protocol.md`, "Flow control"). The handles take
//! messages off the queue, wait for window to send, and fail the stream
//! themselves at its deadline or when it is cancelled. Everyone waits on
//! one condition variable; the two halves of a bidirectional stream may
//! wait on it from two threads at once.

use std::collections::VecDeque;
use std::sync::{Condvar, Mutex, MutexGuard};
use std::time::Instant;

use bytes::Bytes;

use super::slot::Reply;
use crate::codec::{Flags, WindowMeta};
use crate::error::{Error, ErrorKind, Execution};
use crate::flow_control::{FlowControlError, RecvWindow, SendWindow};
use crate::metadata::Metadata;
use crate::status::{Code, Status};
use crate::trace::TraceId;

/// How a stream failed, kept so that each half can be given its own
/// [`Error`].
#[derive(Clone, Debug)]
pub(crate) struct Failure {
    pub(crate) kind: ErrorKind,
    pub(crate) status: Status,
    pub(crate) execution: Execution,
}

impl Failure {
    pub(crate) fn new(kind: ErrorKind, status: Status, execution: Execution) -> Failure {
        Failure {
            kind,
            status,
            execution,
        }
    }

    /// The error a handle reports.
    pub(crate) fn to_error(&self, trace_id: Option<TraceId>) -> Error {
        let err = Error::new(self.kind, self.status.clone()).with_execution(self.execution);
        match trace_id {
            Some(t) => err.with_trace_id(t),
            None => err,
        }
    }
}

impl From<&Error> for Failure {
    fn from(e: &Error) -> Failure {
        Failure::new(e.kind(), e.status().clone(), e.execution())
    }
}

/// How a stream ended.
#[derive(Clone, Debug)]
pub(crate) enum Outcome {
    /// The server ended it with OK and these trailing metadata.
    Ok(Metadata),
    /// The server ended it with another status, or it failed here.
    Err(Failure),
}

/// A message as the server sent it: decompressed and decoded by the
/// handle that takes it, on its own thread.
#[derive(Debug)]
pub(crate) struct Message {
    pub(crate) flags: Flags,
    pub(crate) body: Bytes,
}

/// What [`StreamState::next`] found.
pub(crate) enum Next {
    /// A message, and the grant to send for it if one is due.
    Message(Message, Option<WindowMeta>),
    /// The end of the stream, reported once.
    End(Outcome),
    /// The end was reported already.
    Done,
    /// The deadline passed first.
    Deadline,
}

/// What [`StreamState::reserve`] found.
pub(crate) enum Reserve {
    /// The window was open and now counts the message.
    Ready,
    /// The stream ended: nothing more may be sent.
    Ended(Outcome),
    /// The deadline passed while the window was closed.
    Deadline,
}

/// What the IO thread must do after a MESSAGE.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Received {
    /// Nothing more.
    Queued,
    /// The message was over the body limit: the stream failed here, and
    /// the server must be sent CANCEL.
    Cancel,
}

#[derive(Debug)]
struct Inner {
    queue: VecDeque<Message>,
    recv: RecvWindow,
    send: SendWindow,
    /// A message arrived: the handler ran.
    received_any: bool,
    outcome: Option<Outcome>,
    /// The RESPONSE arrived or the connection closed: the id is no longer
    /// this stream's, so nothing more may be sent with it.
    released: bool,
    /// The end was handed to the receiving side.
    end_reported: bool,
    /// The trace id the server reported with its RESPONSE.
    trace_id: Option<TraceId>,
}

/// The shared state of one stream.
#[derive(Debug)]
pub(crate) struct StreamState {
    inner: Mutex<Inner>,
    cond: Condvar,
}

impl StreamState {
    /// A new stream: both windows at their initial size, nothing queued.
    pub(crate) fn new() -> StreamState {
        StreamState {
            inner: Mutex::new(Inner {
                queue: VecDeque::new(),
                recv: RecvWindow::new(),
                send: SendWindow::new(),
                received_any: false,
                outcome: None,
                released: false,
                end_reported: false,
                trace_id: None,
            }),
            cond: Condvar::new(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // Critical sections make no calls out; the state stays consistent.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Waits for a change until `deadline`; false once it passed.
    fn wait<'a>(
        &self,
        guard: MutexGuard<'a, Inner>,
        deadline: Option<Instant>,
    ) -> Option<MutexGuard<'a, Inner>> {
        match deadline {
            None => Some(self.cond.wait(guard).unwrap_or_else(|e| e.into_inner())),
            Some(d) => {
                let now = Instant::now();
                if now >= d {
                    return None;
                }
                let (g, _) = self
                    .cond
                    .wait_timeout(guard, d - now)
                    .unwrap_or_else(|e| e.into_inner());
                Some(g)
            }
        }
    }

    // The IO thread's side.

    /// A MESSAGE from the server: `body` is `None` when it was over the
    /// body limit and skipped; `len` is its length as sent. A message sent
    /// while the window was closed is refused: a connection error.
    pub(crate) fn on_message(
        &self,
        flags: Flags,
        body: Option<Bytes>,
        len: u32,
    ) -> Result<Received, FlowControlError> {
        let mut st = self.lock();
        st.recv.received(len)?;
        if st.outcome.is_some() {
            // It crossed our CANCEL: dropped, never granted back.
            st.recv.consumed(len);
            return Ok(Received::Queued);
        }
        let Some(body) = body else {
            st.recv.consumed(len);
            st.queue.clear();
            st.outcome = Some(Outcome::Err(Failure::new(
                ErrorKind::Protocol,
                Status::resource_exhausted(format!(
                    "a stream message of {len} bytes is over the body limit"
                )),
                Execution::Ran,
            )));
            self.cond.notify_all();
            return Ok(Received::Cancel);
        };
        st.received_any = true;
        st.queue.push_back(Message { flags, body });
        self.cond.notify_all();
        Ok(Received::Queued)
    }

    /// A WINDOW from the server. A grant past the largest window is
    /// refused: a connection error.
    pub(crate) fn on_window(&self, grant: WindowMeta) -> Result<(), FlowControlError> {
        let mut st = self.lock();
        st.send.granted(grant)?;
        self.cond.notify_all();
        Ok(())
    }

    /// The RESPONSE that ends the stream; its id is free from now on.
    pub(crate) fn on_response(&self, reply: Reply) {
        let mut st = self.lock();
        st.released = true;
        st.trace_id = reply.trace_id;
        if st.outcome.is_none() {
            st.outcome = Some(if reply.code == Code::OK {
                Outcome::Ok(reply.metadata)
            } else {
                let status = Status::new(reply.code, reply.message).with_metadata(reply.metadata);
                // UNAVAILABLE says the server did not run the stream, as
                // for a unary call, unless a message proved otherwise.
                let execution = if reply.code == Code::UNAVAILABLE && !st.received_any {
                    Execution::NotRun
                } else {
                    Execution::Ran
                };
                Outcome::Err(Failure::new(ErrorKind::Status, status, execution))
            });
        }
        self.cond.notify_all();
    }

    /// The connection closed: the stream fails unless it had ended. The
    /// messages already received are still handed out first.
    pub(crate) fn on_closed(&self, failure: Failure) {
        let mut st = self.lock();
        st.released = true;
        if st.outcome.is_none() {
            st.outcome = Some(Outcome::Err(failure));
        }
        self.cond.notify_all();
    }

    // The handles' side.

    /// Fails the stream here (deadline, cancellation, a message that would
    /// not decode), dropping what is queued. With `reported`, the caller
    /// reports the failure itself: the receiving side finds the end
    /// reported. True if the stream was still open on the server, which
    /// must then be sent CANCEL.
    pub(crate) fn fail(&self, failure: Failure, reported: bool) -> bool {
        let mut st = self.lock();
        if reported {
            st.end_reported = true;
        }
        if st.outcome.is_some() && !reported {
            return false;
        }
        while let Some(m) = st.queue.pop_front() {
            st.recv.consumed(m.body.len() as u32);
        }
        let open = st.outcome.is_none() && !st.released;
        if st.outcome.is_none() {
            st.outcome = Some(Outcome::Err(failure));
        }
        self.cond.notify_all();
        open
    }

    /// True once the stream ended, here or on the server.
    pub(crate) fn is_ended(&self) -> bool {
        self.lock().outcome.is_some()
    }

    /// How the stream failed, if it did.
    pub(crate) fn failure(&self) -> Option<Failure> {
        match &self.lock().outcome {
            Some(Outcome::Err(f)) => Some(f.clone()),
            _ => None,
        }
    }

    /// True once the id is no longer this stream's.
    pub(crate) fn is_released(&self) -> bool {
        self.lock().released
    }

    /// The trace id the server reported with its RESPONSE, if any.
    pub(crate) fn reported_trace_id(&self) -> Option<TraceId> {
        self.lock().trace_id
    }

    /// Takes the next message, or the end once every message was taken,
    /// waiting until `deadline` for either.
    pub(crate) fn next(&self, deadline: Option<Instant>) -> Next {
        let mut st = self.lock();
        loop {
            if let Some(m) = st.queue.pop_front() {
                // Held bytes were counted as they arrived: this cannot be
                // more than is held.
                let grant = st.recv.consumed(m.body.len() as u32);
                let grant = grant.filter(|_| st.outcome.is_none() && !st.released);
                return Next::Message(m, grant);
            }
            if let Some(outcome) = &st.outcome {
                if st.end_reported {
                    return Next::Done;
                }
                let outcome = outcome.clone();
                st.end_reported = true;
                return Next::End(outcome);
            }
            st = match self.wait(st, deadline) {
                Some(g) => g,
                None => return Next::Deadline,
            };
        }
    }

    /// Counts a message of `len` bytes against the send window, waiting
    /// until `deadline` while the window is closed.
    pub(crate) fn reserve(&self, len: u32, deadline: Option<Instant>) -> Reserve {
        let mut st = self.lock();
        loop {
            if let Some(outcome) = &st.outcome {
                return Reserve::Ended(outcome.clone());
            }
            if st.send.may_send() {
                // may_send() said the window is open.
                let _ = st.send.sent(len);
                return Reserve::Ready;
            }
            st = match self.wait(st, deadline) {
                Some(g) => g,
                None => return Reserve::Deadline,
            };
        }
    }

    /// The send window now.
    #[cfg(test)]
    fn send_window(&self) -> i64 {
        self.lock().send.window()
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::thread;
    use std::time::Duration;

    use super::*;
    use crate::flow_control::{GRANT_THRESHOLD, INITIAL_WINDOW};

    fn msg(len: usize) -> Option<Bytes> {
        Some(Bytes::from(vec![7u8; len]))
    }

    fn reply(code: Code) -> Reply {
        Reply {
            code,
            ..Reply::pong()
        }
    }

    fn soon() -> Option<Instant> {
        Some(Instant::now() + Duration::from_millis(5))
    }

    #[test]
    fn messages_come_out_in_order_then_the_end_once() {
        let st = StreamState::new();
        for len in [1, 2, 3] {
            st.on_message(Flags::default(), msg(len), len as u32)
                .unwrap();
        }
        st.on_response(reply(Code::OK));
        for len in [1, 2, 3] {
            match st.next(None) {
                Next::Message(m, None) => assert_eq!(m.body.len(), len),
                _ => panic!("expected message {len}"),
            }
        }
        assert!(matches!(st.next(None), Next::End(Outcome::Ok(_))));
        assert!(matches!(st.next(None), Next::Done));
    }

    #[test]
    fn consuming_grants_back_once_half_the_window_is_read() {
        let st = StreamState::new();
        let half = GRANT_THRESHOLD as usize;
        st.on_message(Flags::default(), msg(half - 1), half as u32 - 1)
            .unwrap();
        st.on_message(Flags::default(), msg(1), 1).unwrap();
        assert!(matches!(st.next(None), Next::Message(_, None)));
        match st.next(None) {
            Next::Message(_, Some(g)) => assert_eq!(g.bytes(), GRANT_THRESHOLD),
            _ => panic!("expected a grant"),
        }
    }

    #[test]
    fn a_message_on_a_closed_window_is_refused() {
        let st = StreamState::new();
        st.on_message(Flags::default(), msg(0), INITIAL_WINDOW)
            .unwrap();
        assert_eq!(
            st.on_message(Flags::default(), msg(1), 1),
            Err(FlowControlError::WindowClosed { window: 0, len: 1 })
        );
    }

    #[test]
    fn an_oversized_message_fails_the_stream_and_asks_for_cancel() {
        let st = StreamState::new();
        assert_eq!(
            st.on_message(Flags::default(), None, 100),
            Ok(Received::Cancel)
        );
        match st.next(None) {
            Next::End(Outcome::Err(f)) => {
                assert_eq!(f.status.code(), Code::RESOURCE_EXHAUSTED)
            }
            _ => panic!("expected the end"),
        }
    }

    #[test]
    fn a_sender_waits_for_a_grant_from_another_thread() {
        let st = Arc::new(StreamState::new());
        assert!(matches!(st.reserve(INITIAL_WINDOW, None), Reserve::Ready));
        assert!(matches!(st.reserve(1, soon()), Reserve::Deadline));
        let s = st.clone();
        let t = thread::spawn(move || s.on_window(WindowMeta::new(10).unwrap()).unwrap());
        let far = Some(Instant::now() + Duration::from_secs(60));
        assert!(matches!(st.reserve(20, far), Reserve::Ready));
        assert_eq!(st.send_window(), -10, "one message may overdraw");
        t.join().unwrap();
    }

    #[test]
    fn unavailable_before_any_message_did_not_run() {
        let st = StreamState::new();
        st.on_response(reply(Code::UNAVAILABLE));
        match st.next(None) {
            Next::End(Outcome::Err(f)) => assert_eq!(f.execution, Execution::NotRun),
            _ => panic!(),
        }
        let st = StreamState::new();
        st.on_message(Flags::default(), msg(1), 1).unwrap();
        st.on_response(reply(Code::UNAVAILABLE));
        let _ = st.next(None);
        match st.next(None) {
            Next::End(Outcome::Err(f)) => assert_eq!(f.execution, Execution::Ran),
            _ => panic!(),
        }
    }

    #[test]
    fn a_local_failure_drops_the_queue_and_wins_over_a_later_response() {
        let st = StreamState::new();
        st.on_message(Flags::default(), msg(5), 5).unwrap();
        let f = Failure::new(
            ErrorKind::Cancelled,
            Status::cancelled("x"),
            Execution::MayHaveRun,
        );
        assert!(
            st.fail(f.clone(), false),
            "open on the server: CANCEL is due"
        );
        assert!(!st.fail(f, false), "only once");
        st.on_response(reply(Code::CANCELLED));
        assert!(st.is_released());
        match st.next(None) {
            Next::End(Outcome::Err(f)) => assert_eq!(f.kind, ErrorKind::Cancelled),
            _ => panic!("the queue was dropped"),
        }
        assert!(matches!(st.next(soon()), Next::Done));
    }
}

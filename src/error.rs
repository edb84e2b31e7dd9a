//! The crate's error type.
//!
//! An [`Error`] says which layer failed ([`ErrorKind`]) and always carries a
//! [`Status`], so a caller can branch on a status code whatever went wrong:
//! a server's answer keeps its own code, a broken connection is
//! `UNAVAILABLE`, a body that would not decode is `INVALID_ARGUMENT`.
//! Three kinds are kept apart, as h2 does: our caller's misuse
//! ([`ErrorKind::Usage`]), a misbehaving peer ([`ErrorKind::Protocol`]) and
//! the operating system ([`ErrorKind::Io`]).

use std::error::Error as StdError;
use std::fmt;
use std::io;

use crate::codec::ProtocolError;
use crate::status::{Code, Status};
use crate::trace::TraceId;

/// Which layer an [`Error`] came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ErrorKind {
    /// The remote end answered with a non-OK status.
    Status,
    /// The peer broke the wire protocol (bad magic, a truncated or oversized
    /// frame, ...).
    Protocol,
    /// A socket or other operating-system operation failed.
    Io,
    /// A payload could not be serialized or deserialized.
    Codec,
    /// The caller misused the API: an invalid method name, a bad address or
    /// configuration.
    Usage,
    /// The call's deadline passed before an answer arrived.
    Timeout,
    /// The caller's context was cancelled before an answer arrived.
    Cancelled,
}

/// Whether the remote handler may have run when a call failed: what a
/// caller needs to decide if a retry is safe.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Execution {
    /// The request is known not to have run: it was never sent, it was
    /// refused, or the server answered `UNAVAILABLE` without running it.
    /// Retrying is safe.
    NotRun,
    /// The request may have run (the connection broke after it was sent,
    /// the deadline passed while waiting, or the server answered that a
    /// deadline or a cancellation ended the call). Retry only idempotent
    /// calls.
    MayHaveRun,
    /// The server ran the request and answered.
    Ran,
}

/// An error from syncrpc: which layer failed, the status that describes it
/// and, for calls, whether the request may have run.
///
/// # Examples
///
/// ```
/// use syncrpc::{Code, Error, ErrorKind, Status};
///
/// let err = Error::from(Status::not_found("no such user"));
/// assert_eq!(err.kind(), ErrorKind::Status);
/// assert_eq!(err.code(), Code::NOT_FOUND);
/// assert!(err.is_status());
/// ```
pub struct Error {
    kind: ErrorKind,
    status: Status,
    execution: Execution,
    // Boxed: a trace id is 65 bytes inline, and errors should stay small
    // for the Results that carry them.
    trace_id: Option<Box<TraceId>>,
    source: Option<Box<dyn StdError + Send + Sync + 'static>>,
}

impl Error {
    /// An error of the given kind described by `status`.
    pub fn new(kind: ErrorKind, status: Status) -> Error {
        Error {
            kind,
            status,
            execution: Execution::MayHaveRun,
            trace_id: None,
            source: None,
        }
    }

    /// A caller-misuse error with code `INVALID_ARGUMENT`.
    pub fn usage(message: impl Into<String>) -> Error {
        Error::new(ErrorKind::Usage, Status::invalid_argument(message))
            .with_execution(Execution::NotRun)
    }

    /// An I/O error; its status is `UNAVAILABLE` with the cause in the
    /// message.
    pub fn io(context: &str, err: io::Error) -> Error {
        let status = Status::unavailable(format!("{context}: {err}"));
        Error::new(ErrorKind::Io, status).with_source(err)
    }

    /// Sets whether the request may have run.
    pub fn with_execution(mut self, execution: Execution) -> Error {
        self.execution = execution;
        self
    }

    /// Sets the trace id of the call that failed.
    pub fn with_trace_id(mut self, trace_id: TraceId) -> Error {
        self.trace_id = Some(Box::new(trace_id));
        self
    }

    /// Attaches the underlying cause.
    pub fn with_source(mut self, source: impl StdError + Send + Sync + 'static) -> Error {
        self.source = Some(Box::new(source));
        self
    }

    /// The layer that failed.
    pub fn kind(&self) -> ErrorKind {
        self.kind
    }

    /// The status that describes the failure.
    pub fn status(&self) -> &Status {
        &self.status
    }

    /// Consumes the error, keeping its status.
    pub fn into_status(self) -> Status {
        self.status
    }

    /// Shorthand for `self.status().code()`.
    pub fn code(&self) -> Code {
        self.status.code()
    }

    /// The trace id of the call that failed, when known: the one the
    /// server reported with its answer, or the one the call sent. Search
    /// the logs for it.
    pub fn trace_id(&self) -> Option<TraceId> {
        self.trace_id.as_deref().copied()
    }

    /// Whether the request may have run on the server.
    pub fn execution(&self) -> Execution {
        self.execution
    }

    /// True when the request is known not to have run, so a retry is safe.
    pub fn is_not_run(&self) -> bool {
        self.execution == Execution::NotRun
    }

    /// True when the remote end answered with a status.
    pub fn is_status(&self) -> bool {
        self.kind == ErrorKind::Status
    }

    /// True when the peer broke the protocol.
    pub fn is_protocol(&self) -> bool {
        self.kind == ErrorKind::Protocol
    }

    /// True for operating-system I/O failures.
    pub fn is_io(&self) -> bool {
        self.kind == ErrorKind::Io
    }

    /// True when a deadline passed.
    pub fn is_timeout(&self) -> bool {
        self.kind == ErrorKind::Timeout || self.status.code() == Code::DEADLINE_EXCEEDED
    }

    /// True when the caller's context was cancelled.
    pub fn is_cancelled(&self) -> bool {
        self.kind == ErrorKind::Cancelled
    }
}

impl fmt::Debug for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut d = f.debug_struct("Error");
        d.field("kind", &self.kind)
            .field("status", &self.status)
            .field("execution", &self.execution);
        if let Some(t) = &self.trace_id {
            d.field("trace_id", t);
        }
        if let Some(s) = &self.source {
            d.field("source", s);
        }
        d.finish()
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.status, f)
    }
}

impl StdError for Error {
    fn source(&self) -> Option<&(dyn StdError + 'static)> {
        self.source
            .as_deref()
            .map(|s| s as &(dyn StdError + 'static))
    }
}

impl From<Status> for Error {
    /// A status answered by the remote end: the request ran, unless the
    /// code is `UNAVAILABLE`, which the protocol reserves for requests the
    /// server did not run, or `DEADLINE_EXCEEDED` or `CANCELLED`, which the
    /// server answers when a deadline or a cancellation ended the call
    /// before or while its handler ran: the request may have run.
    ///
    /// # Examples
    ///
    /// ```
    /// use syncrpc::{Error, Execution, Status};
    ///
    /// let late = Error::from(Status::deadline_exceeded("the handler did not finish"));
    /// assert_eq!(late.execution(), Execution::MayHaveRun);
    /// let refused = Error::from(Status::unavailable("shutting down"));
    /// assert_eq!(refused.execution(), Execution::NotRun);
    /// ```
    fn from(status: Status) -> Error {
        let execution = match status.code() {
            Code::UNAVAILABLE => Execution::NotRun,
            Code::DEADLINE_EXCEEDED | Code::CANCELLED => Execution::MayHaveRun,
            _ => Execution::Ran,
        };
        Error::new(ErrorKind::Status, status).with_execution(execution)
    }
}

impl From<ProtocolError> for Error {
    fn from(err: ProtocolError) -> Error {
        let status = Status::unavailable(format!("protocol error: {err}"));
        Error::new(ErrorKind::Protocol, status).with_source(err)
    }
}

impl From<Error> for Status {
    fn from(err: Error) -> Status {
        err.status
    }
}

//! Status codes and the `Status` a call ends with.
//!
//! The codes are gRPC's canonical codes, with the same numbers and meanings,
//! so that operators can read them without a table. [`Code`] is an open
//! newtype (as h2's `Reason`): a peer may send a number this version does not
//! name, and it is carried through rather than rejected.

use std::fmt;

use crate::metadata::Metadata;

/// A status code: one of gRPC's 17 canonical codes, or an unnamed number a
/// peer sent.
///
/// # Examples
///
/// ```
/// use syncrpc::Code;
///
/// assert_eq!(Code::UNAVAILABLE.as_u32(), 14);
/// assert_eq!(Code::from(14), Code::UNAVAILABLE);
/// assert_eq!(Code::UNAVAILABLE.name(), "UNAVAILABLE");
/// assert!(Code::OK.is_ok());
/// ```
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Code(u32);

macro_rules! codes {
    ($( $(#[$doc:meta])* ($num:expr, $konst:ident, $name:expr); )+) => {
        impl Code {
            $( $(#[$doc])* pub const $konst: Code = Code($num); )+

            /// The canonical name (`"DEADLINE_EXCEEDED"`), or `"UNKNOWN_CODE"`
            /// for a number this version does not name.
            pub fn name(self) -> &'static str {
                match self.0 {
                    $( $num => $name, )+
                    _ => "UNKNOWN_CODE",
                }
            }

            /// Every named code, in numeric order.
            pub const ALL: &'static [Code] = &[$( Code::$konst, )+];
        }
    };
}

codes! {
    /// Not an error.
    (0, OK, "OK");
    /// The request was cancelled, by the caller or by the server's shutdown.
    (1, CANCELLED, "CANCELLED");
    /// An error with no better code.
    (2, UNKNOWN, "UNKNOWN");
    /// The request's meta or body could not be decoded, or it is otherwise
    /// malformed (no method, a duplicate in-flight id).
    (3, INVALID_ARGUMENT, "INVALID_ARGUMENT");
    /// The deadline passed before or while the handler ran.
    (4, DEADLINE_EXCEEDED, "DEADLINE_EXCEEDED");
    /// Some requested entity was not found.
    (5, NOT_FOUND, "NOT_FOUND");
    /// The entity a client tried to create already exists.
    (6, ALREADY_EXISTS, "ALREADY_EXISTS");
    /// The caller may not run this operation.
    (7, PERMISSION_DENIED, "PERMISSION_DENIED");
    /// A size limit was passed, or the work queue is full.
    (8, RESOURCE_EXHAUSTED, "RESOURCE_EXHAUSTED");
    /// The system is not in a state required for the operation.
    (9, FAILED_PRECONDITION, "FAILED_PRECONDITION");
    /// The operation was aborted, typically by a concurrency conflict.
    (10, ABORTED, "ABORTED");
    /// The operation was attempted past the valid range.
    (11, OUT_OF_RANGE, "OUT_OF_RANGE");
    /// Unknown service or method, a malformed method name, or a reserved
    /// compression or encoding.
    (12, UNIMPLEMENTED, "UNIMPLEMENTED");
    /// An invariant broke; the runtime sends it when a handler panicked.
    (13, INTERNAL, "INTERNAL");
    /// The service cannot take the request now; the server did not run it,
    /// so it is safe to retry.
    (14, UNAVAILABLE, "UNAVAILABLE");
    /// Unrecoverable data loss or corruption.
    (15, DATA_LOSS, "DATA_LOSS");
    /// The request has no valid credentials.
    (16, UNAUTHENTICATED, "UNAUTHENTICATED");
}

impl Code {
    /// The code's number on the wire.
    pub const fn as_u32(self) -> u32 {
        self.0
    }

    /// True for [`Code::OK`].
    pub const fn is_ok(self) -> bool {
        self.0 == 0
    }

    /// True when this version of syncrpc has a name for the number.
    pub fn is_known(self) -> bool {
        self.0 <= 16
    }
}

impl From<u32> for Code {
    fn from(n: u32) -> Code {
        Code(n)
    }
}

impl From<Code> for u32 {
    fn from(c: Code) -> u32 {
        c.0
    }
}

impl fmt::Debug for Code {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.is_known() {
            f.write_str(self.name())
        } else {
            write!(f, "Code({})", self.0)
        }
    }
}

impl fmt::Display for Code {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.is_known() {
            write!(f, "{} ({})", self.name(), self.0)
        } else {
            write!(f, "code {}", self.0)
        }
    }
}

/// The outcome of a call that did not succeed: a code, a human-readable
/// message and optional metadata.
///
/// Handlers return `Err(Status)` to answer with an error; clients get one
/// back from every failed call.
///
/// # Examples
///
/// ```
/// use syncrpc::{Code, Status};
///
/// let st = Status::not_found("no user 42");
/// assert_eq!(st.code(), Code::NOT_FOUND);
/// assert_eq!(st.message(), "no user 42");
/// assert_eq!(st.to_string(), "NOT_FOUND (5): no user 42");
/// ```
#[derive(Clone, PartialEq, Eq)]
pub struct Status {
    code: Code,
    message: String,
    metadata: Metadata,
}

macro_rules! constructors {
    ($( ($fn:ident, $konst:ident); )+) => {
        impl Status {
            $(
                #[doc = concat!("A status with code [`Code::", stringify!($konst), "`].")]
                pub fn $fn(message: impl Into<String>) -> Status {
                    Status::new(Code::$konst, message)
                }
            )+
        }
    };
}

constructors! {
    (cancelled, CANCELLED);
    (unknown, UNKNOWN);
    (invalid_argument, INVALID_ARGUMENT);
    (deadline_exceeded, DEADLINE_EXCEEDED);
    (not_found, NOT_FOUND);
    (already_exists, ALREADY_EXISTS);
    (permission_denied, PERMISSION_DENIED);
    (resource_exhausted, RESOURCE_EXHAUSTED);
    (failed_precondition, FAILED_PRECONDITION);
    (aborted, ABORTED);
    (out_of_range, OUT_OF_RANGE);
    (unimplemented, UNIMPLEMENTED);
    (internal, INTERNAL);
    (unavailable, UNAVAILABLE);
    (data_loss, DATA_LOSS);
    (unauthenticated, UNAUTHENTICATED);
}

impl Status {
    /// A status with the given code and message.
    pub fn new(code: Code, message: impl Into<String>) -> Status {
        Status {
            code,
            message: message.into(),
            metadata: Metadata::new(),
        }
    }

    /// Attaches metadata sent to the caller along with the status.
    pub fn with_metadata(mut self, metadata: Metadata) -> Status {
        self.metadata = metadata;
        self
    }

    /// The status code.
    pub fn code(&self) -> Code {
        self.code
    }

    /// The human-readable message; may be empty.
    pub fn message(&self) -> &str {
        &self.message
    }

    /// Metadata sent along with the status.
    pub fn metadata(&self) -> &Metadata {
        &self.metadata
    }

    /// Mutable access to the metadata.
    pub fn metadata_mut(&mut self) -> &mut Metadata {
        &mut self.metadata
    }
}

impl fmt::Debug for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut d = f.debug_struct("Status");
        d.field("code", &self.code).field("message", &self.message);
        if !self.metadata.is_empty() {
            d.field("metadata", &self.metadata);
        }
        d.finish()
    }
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.message.is_empty() {
            write!(f, "{}", self.code)
        } else {
            write!(f, "{}: {}", self.code, self.message)
        }
    }
}

impl std::error::Error for Status {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seventeen_codes_with_grpc_numbers() {
        assert_eq!(Code::ALL.len(), 17);
        for (i, c) in Code::ALL.iter().enumerate() {
            assert_eq!(c.as_u32() as usize, i);
            assert_ne!(c.name(), "UNKNOWN_CODE");
        }
        assert_eq!(Code::DEADLINE_EXCEEDED.as_u32(), 4);
        assert_eq!(Code::RESOURCE_EXHAUSTED.as_u32(), 8);
        assert_eq!(Code::UNIMPLEMENTED.as_u32(), 12);
        assert_eq!(Code::UNAUTHENTICATED.as_u32(), 16);
    }

    #[test]
    fn unnamed_codes_are_carried() {
        let c = Code::from(99);
        assert!(!c.is_known());
        assert_eq!(c.as_u32(), 99);
        assert_eq!(format!("{c:?}"), "Code(99)");
    }
}

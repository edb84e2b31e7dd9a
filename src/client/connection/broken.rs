//! Why a connection ended, and the error that gives the calls and
//! streams it had in flight.

use std::error::Error as StdError;
use std::fmt;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use crate::codec::ProtocolError;
use crate::error::{Error, ErrorKind, Execution};
use crate::flow_control::FlowControlError;
use crate::status::Status;

/// Why a connection ended.
#[derive(Clone, Debug)]
pub(crate) enum Broken {
    /// A socket operation failed.
    Io(Arc<io::Error>),
    /// The server closed the connection.
    Eof,
    /// The server broke the protocol.
    Protocol(ProtocolError),
    /// The server broke a stream's flow control.
    FlowControl(FlowControlError),
    /// Queued bytes found no room in the socket for this long.
    WriteStall(Duration),
    /// Closed after a GOAWAY, once nothing was in flight.
    Drained,
    /// The client dropped the connection.
    Dropped,
    /// The server closed a plaintext connection before sending a byte.
    ClosedUnanswered,
    /// The TLS layer failed after the handshake (an alert from the server,
    /// a bad record).
    #[cfg(feature = "tls")]
    Tls(rustls::Error),
}

impl fmt::Display for Broken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Broken::Io(e) => fmt::Display::fmt(e, f),
            Broken::Eof => f.write_str("the server closed the connection"),
            Broken::Protocol(e) => write!(f, "protocol error: {e}"),
            Broken::FlowControl(e) => write!(f, "protocol error: {e}"),
            Broken::WriteStall(d) => {
                write!(f, "the server accepted no bytes for {} ms", d.as_millis())
            }
            Broken::Drained => f.write_str("closed after GOAWAY"),
            Broken::Dropped => f.write_str("the client closed the connection"),
            Broken::ClosedUnanswered => f.write_str(
                "the server closed the connection without answering; a TLS-only server \
                 does this to a plaintext client (is TLS needed?)",
            ),
            #[cfg(feature = "tls")]
            Broken::Tls(e) => write!(f, "TLS: {e}"),
        }
    }
}

impl StdError for Broken {
    fn source(&self) -> Option<&(dyn StdError + 'static)> {
        match self {
            Broken::Io(e) => Some(&**e),
            Broken::Protocol(e) => Some(e),
            Broken::FlowControl(e) => Some(e),
            _ => None,
        }
    }
}

impl Broken {
    pub(super) fn kind(&self) -> ErrorKind {
        match self {
            Broken::Protocol(_) | Broken::FlowControl(_) => ErrorKind::Protocol,
            _ => ErrorKind::Io,
        }
    }

    /// The error of a call that was in flight when the connection broke.
    pub(super) fn in_flight_error(&self, peer: SocketAddr) -> Error {
        let status = Status::unavailable(format!(
            "connection to {peer} broke after the request was sent: {self}"
        ));
        Error::new(self.kind(), status)
            .with_execution(Execution::MayHaveRun)
            .with_source(self.clone())
    }
}

//! What carries a connection's bytes: plain TCP, or TLS over it.
//!
//! A [`Transport`] sits below the protocol seam: the reader hands it what
//! the socket gave ([`Transport::ingest`]) and decodes the plaintext that
//! comes out; whoever writes hands it plaintext ([`Transport::seal`]) and
//! writes what comes out. The loops, protocols and dispatcher never learn
//! which transport a connection has. A plaintext transport passes the
//! bytes through untouched.
//!
//! A TLS connection's rustls state is under a lock of its own, taken only
//! to feed or drain it, never across a read or write of the socket, so
//! thread mode's reading thread, its writing thread and event mode's
//! workers never wait on each other's I/O.
//!
//! Handshakes are bounded: each one in progress holds one of the server's
//! [`Limits::max_handshakes`](super::Limits::max_handshakes) slots; a
//! connection that would exceed them is closed at once, and one whose
//! handshake does not finish within the whole-frame timeout is cut by the
//! loops like any stalled frame.

use std::fmt;
use std::io;
#[cfg(feature = "tls")]
use std::sync::atomic::Ordering;
use std::sync::atomic::{AtomicU64, AtomicUsize};
use std::sync::Arc;

use bytes::BytesMut;

#[cfg(feature = "tls")]
use std::sync::{Mutex, OnceLock};

#[cfg(feature = "tls")]
use crate::peer::PeerIdentity;
#[cfg(feature = "tls")]
use crate::tls::server::{Acceptor, TlsMode};
#[cfg(feature = "tls")]
use crate::tls::session::Session;

/// The first byte of a TLS record carrying a handshake message.
#[cfg(feature = "tls")]
const TLS_HANDSHAKE: u8 = 0x16;

/// Handshake counts of one server, for its stats.
#[derive(Debug, Default)]
pub(crate) struct Handshakes {
    pub in_progress: AtomicUsize,
    pub completed: AtomicU64,
    pub failed: AtomicU64,
}

/// What one listener's connections are carried by.
#[derive(Clone, Debug, Default)]
#[cfg_attr(not(feature = "tls"), allow(dead_code))]
pub(crate) struct ListenerTransport {
    #[cfg(feature = "tls")]
    pub tls: Option<Arc<Acceptor>>,
    pub max_handshakes: usize,
}

impl ListenerTransport {
    /// Whether every connection of the listener is plaintext.
    pub fn is_plaintext(&self) -> bool {
        #[cfg(feature = "tls")]
        if self.tls.is_some() {
            return false;
        }
        true
    }
}

/// What one [`Transport::ingest`] produced besides plaintext.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Ingested {
    /// The peer ended its sending side inside the transport (TLS
    /// `close_notify`).
    pub eof: bool,
    /// The transport has bytes of its own to send.
    pub has_output: bool,
}

/// Why a connection's transport failed; the connection closes.
#[derive(Debug)]
#[cfg_attr(not(feature = "tls"), allow(dead_code))]
pub(crate) enum TransportError {
    /// A plaintext connection to a TLS-only listener.
    NotTls { first: u8 },
    /// [`Limits::max_handshakes`](super::Limits::max_handshakes) are in progress.
    TooManyHandshakes(usize),
    /// The TLS layer failed (bad handshake, bad certificate, bad record).
    #[cfg(feature = "tls")]
    Tls(rustls::Error),
}

impl fmt::Display for TransportError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TransportError::NotTls { first } => write!(
                f,
                "plaintext on a TLS-only listener (first byte {first:#04x}, not a TLS handshake)"
            ),
            TransportError::TooManyHandshakes(n) => {
                write!(f, "too many TLS handshakes in progress (limit {n})")
            }
            #[cfg(feature = "tls")]
            TransportError::Tls(e) => write!(f, "TLS: {e}"),
        }
    }
}

/// One connection's transport.
pub(crate) struct Transport {
    id: u64,
    #[cfg(feature = "tls")]
    tls: Option<Arc<Acceptor>>,
    #[cfg(feature = "tls")]
    max_handshakes: usize,
    #[cfg(feature = "tls")]
    handshakes: Arc<Handshakes>,
    /// The peer ended its side inside the transport (TLS `close_notify`).
    #[cfg(feature = "tls")]
    finished: std::sync::atomic::AtomicBool,
    /// Decided on the first byte: `None` for plaintext.
    #[cfg(feature = "tls")]
    chosen: OnceLock<Option<TlsConn>>,
}

#[cfg(feature = "tls")]
struct TlsConn {
    session: Mutex<Session>,
    /// Held until the handshake ends.
    slot: Mutex<Option<HandshakeSlot>>,
    identity: OnceLock<Option<Arc<PeerIdentity>>>,
}

/// One of the server's handshake slots; gives it back when dropped, and
/// counts a handshake that never finished as failed.
#[cfg(feature = "tls")]
struct HandshakeSlot {
    id: u64,
    handshakes: Arc<Handshakes>,
    settled: bool,
}

#[cfg(feature = "tls")]
impl Drop for HandshakeSlot {
    fn drop(&mut self) {
        self.handshakes.in_progress.fetch_sub(1, Ordering::SeqCst);
        if !self.settled {
            self.handshakes.failed.fetch_add(1, Ordering::Relaxed);
            log::debug!(
                "conn {}: TLS handshake failed: closed before it finished",
                self.id
            );
        }
    }
}

impl Transport {
    #[cfg_attr(not(feature = "tls"), allow(unused_variables))]
    pub fn new(id: u64, listener: &ListenerTransport, handshakes: &Arc<Handshakes>) -> Transport {
        Transport {
            id,
            #[cfg(feature = "tls")]
            tls: listener.tls.clone(),
            #[cfg(feature = "tls")]
            max_handshakes: listener.max_handshakes,
            #[cfg(feature = "tls")]
            handshakes: handshakes.clone(),
            #[cfg(feature = "tls")]
            finished: std::sync::atomic::AtomicBool::new(false),
            #[cfg(feature = "tls")]
            chosen: match &listener.tls {
                None => OnceLock::from(None),
                Some(_) => OnceLock::new(),
            },
        }
    }

    /// Feeds bytes read off the socket in, appending the plaintext they
    /// carry to `out`.
    pub fn ingest(&self, raw: &[u8], out: &mut BytesMut) -> Result<Ingested, TransportError> {
        #[cfg(feature = "tls")]
        {
            let chosen = match self.chosen.get() {
                Some(c) => c,
                None => match raw.first() {
                    None => return Ok(Ingested::default()),
                    Some(&first) => {
                        let c = self.choose(first)?;
                        self.chosen.get_or_init(|| c)
                    }
                },
            };
            if let Some(tls) = chosen {
                return self.ingest_tls(tls, raw, out);
            }
        }
        out.extend_from_slice(raw);
        Ok(Ingested::default())
    }

    /// Turns plaintext into the bytes to write, with whatever the
    /// transport has to send of its own in front.
    pub fn seal(&self, plain: BytesMut) -> io::Result<BytesMut> {
        #[cfg(feature = "tls")]
        if let Some(Some(tls)) = self.chosen.get() {
            return lock(&tls.session).seal(&plain);
        }
        Ok(plain)
    }

    /// Whether the connection waits for a handshake to finish: the
    /// whole-frame timeout runs meanwhile. A TLS-only listener's
    /// connection waits from its first moment.
    pub fn is_handshaking(&self) -> bool {
        #[cfg(feature = "tls")]
        {
            match self.chosen.get() {
                Some(Some(tls)) => return lock(&tls.session).is_handshaking(),
                Some(None) => {}
                None => {
                    return self
                        .tls
                        .as_ref()
                        .is_some_and(|a| a.mode() == TlsMode::Required)
                }
            }
        }
        false
    }

    /// Whether the peer has ended its sending side inside the transport
    /// (TLS `close_notify`): no more plaintext comes, as at TCP EOF.
    pub fn peer_finished(&self) -> bool {
        #[cfg(feature = "tls")]
        if self.finished.load(Ordering::Relaxed) {
            return true;
        }
        false
    }

    /// Whether bytes pass through untouched: a plaintext listener, or a
    /// connection that turned out plaintext.
    pub fn is_plain(&self) -> bool {
        #[cfg(feature = "tls")]
        if !matches!(self.chosen.get(), Some(None)) {
            return false;
        }
        true
    }

    /// Whether the connection is TLS.
    pub fn is_tls(&self) -> bool {
        #[cfg(feature = "tls")]
        if let Some(Some(_)) = self.chosen.get() {
            return true;
        }
        false
    }

    /// The verified identity of the client's certificate.
    #[cfg(feature = "tls")]
    pub fn identity(&self) -> Option<Arc<PeerIdentity>> {
        match self.chosen.get() {
            Some(Some(tls)) => tls.identity.get().cloned().flatten(),
            _ => None,
        }
    }

    #[cfg(feature = "tls")]
    fn choose(&self, first: u8) -> Result<Option<TlsConn>, TransportError> {
        let Some(acceptor) = &self.tls else {
            return Ok(None);
        };
        if first != TLS_HANDSHAKE {
            if acceptor.mode() == TlsMode::Optional {
                return Ok(None);
            }
            self.handshakes.failed.fetch_add(1, Ordering::Relaxed);
            return Err(TransportError::NotTls { first });
        }
        let n = self.handshakes.in_progress.fetch_add(1, Ordering::SeqCst) + 1;
        let slot = HandshakeSlot {
            id: self.id,
            handshakes: self.handshakes.clone(),
            settled: false,
        };
        if n > self.max_handshakes {
            let mut slot = slot;
            slot.settled = true;
            self.handshakes.failed.fetch_add(1, Ordering::Relaxed);
            return Err(TransportError::TooManyHandshakes(self.max_handshakes));
        }
        // A failure here drops the slot unsettled: counted as failed.
        let conn = acceptor.session().map_err(TransportError::Tls)?;
        let tls = TlsConn {
            session: Mutex::new(Session::new(conn)),
            slot: Mutex::new(None),
            identity: OnceLock::new(),
        };
        *lock(&tls.slot) = Some(slot);
        Ok(Some(tls))
    }

    #[cfg(feature = "tls")]
    fn ingest_tls(
        &self,
        tls: &TlsConn,
        raw: &[u8],
        out: &mut BytesMut,
    ) -> Result<Ingested, TransportError> {
        let mut session = lock(&tls.session);
        match session.ingest(raw, out) {
            Ok(got) => {
                if got.handshake_done {
                    let identity = session
                        .conn()
                        .peer_certificates()
                        .and_then(|c| c.first())
                        .and_then(crate::tls::identity::of_certificate)
                        .map(Arc::new);
                    drop(session);
                    let _ = tls.identity.set(identity);
                    if let Some(mut slot) = lock(&tls.slot).take() {
                        slot.settled = true;
                        self.handshakes.completed.fetch_add(1, Ordering::Relaxed);
                    }
                }
                if got.eof {
                    self.finished.store(true, Ordering::Relaxed);
                }
                Ok(Ingested {
                    eof: got.eof,
                    has_output: got.has_output,
                })
            }
            Err(e) => {
                drop(session);
                if let Some(mut slot) = lock(&tls.slot).take() {
                    slot.settled = true;
                    self.handshakes.failed.fetch_add(1, Ordering::Relaxed);
                    log::debug!("conn {}: TLS handshake failed: {e}", self.id);
                }
                Err(TransportError::Tls(e))
            }
        }
    }
}

#[cfg(feature = "tls")]
fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // The session is only fed and drained under the lock; rustls leaves
    // it consistent (or failed) when a call returns.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl fmt::Debug for Transport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Transport")
            .field("id", &self.id)
            .field("tls", &self.is_tls())
            .finish_non_exhaustive()
    }
}

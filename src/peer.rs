//! Who is on the other end of a request's connection.

use std::fmt;
use std::net::SocketAddr;
use std::sync::Arc;

/// The other end of the connection a request came on: its address, and
/// for a TLS connection whose client presented a verified certificate, the
/// identity that certificate names.
///
/// Cloning is cheap: the identity is shared.
///
/// # Examples
///
/// ```
/// use syncrpc::{Context, Status};
///
/// fn whoami(ctx: &Context, _req: ()) -> Result<String, Status> {
///     let peer = ctx.peer().ok_or_else(|| Status::internal("not a served request"))?;
///     Ok(match peer.identity() {
///         Some(id) => format!("{} via mTLS", id.subject()),
///         None => format!("{} (tls: {})", peer.addr(), peer.is_tls()),
///     })
/// }
/// # let _ = whoami;
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Peer {
    addr: SocketAddr,
    tls: bool,
    identity: Option<Arc<PeerIdentity>>,
}

impl Peer {
    pub(crate) fn new(addr: SocketAddr, tls: bool, identity: Option<Arc<PeerIdentity>>) -> Peer {
        Peer {
            addr,
            tls,
            identity,
        }
    }

    /// The remote address of the connection.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Whether the connection is TLS.
    pub fn is_tls(&self) -> bool {
        self.tls
    }

    /// The identity of the client's verified certificate (mutual TLS), if
    /// it presented one.
    pub fn identity(&self) -> Option<&PeerIdentity> {
        self.identity.as_deref()
    }
}

/// The identity a verified client certificate names: its subject and its
/// DNS and URI subject alternative names (a SPIFFE id is a URI SAN).
#[derive(Clone, Default, PartialEq, Eq)]
pub struct PeerIdentity {
    subject: String,
    dns_names: Vec<String>,
    uris: Vec<String>,
}

impl PeerIdentity {
    /// An identity with these names; servers build these from certificates,
    /// tests of a filter can too.
    ///
    /// # Examples
    ///
    /// ```
    /// use syncrpc::PeerIdentity;
    ///
    /// let id = PeerIdentity::new("CN=billing", vec![], vec!["spiffe://prod/billing".into()]);
    /// assert!(id.has_name("spiffe://prod/billing"));
    /// assert!(id.has_name("CN=billing"));
    /// assert!(!id.has_name("billing"));
    /// ```
    pub fn new(
        subject: impl Into<String>,
        dns_names: Vec<String>,
        uris: Vec<String>,
    ) -> PeerIdentity {
        PeerIdentity {
            subject: subject.into(),
            dns_names,
            uris,
        }
    }

    /// The certificate's subject as an RFC 4514 string, e.g. `CN=billing,O=Example`.
    pub fn subject(&self) -> &str {
        &self.subject
    }

    /// The DNS subject alternative names.
    pub fn dns_names(&self) -> &[String] {
        &self.dns_names
    }

    /// The URI subject alternative names, such as a SPIFFE id.
    pub fn uris(&self) -> &[String] {
        &self.uris
    }

    /// Whether `name` is the subject, a DNS name or a URI of this identity,
    /// compared exactly.
    pub fn has_name(&self, name: &str) -> bool {
        self.subject == name
            || self.dns_names.iter().any(|n| n == name)
            || self.uris.iter().any(|n| n == name)
    }
}

impl fmt::Debug for PeerIdentity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PeerIdentity")
            .field("subject", &self.subject)
            .field("dns_names", &self.dns_names)
            .field("uris", &self.uris)
            .finish()
    }
}

//! The client's TLS settings.

use std::fmt;
use std::path::Path;
use std::sync::Arc;

use rustls::pki_types::ServerName;

use super::pem;
use crate::error::Error;

/// A client's TLS configuration: the roots that server certificates are
/// verified against (given ones, or the system's), an optional client
/// certificate for mutual TLS, and optionally the name to verify instead
/// of each endpoint's host.
///
/// The server's certificate must name the host the client connects to
/// (the endpoint's host name, or its IP address), unless
/// [`ClientTls::server_name`] says otherwise. TLS 1.2 and 1.3 only, with
/// rustls' safe defaults; sessions are resumed across reconnections.
///
/// Cloning is cheap: clones share the configuration.
///
/// # Examples
///
/// ```no_run
/// use syncrpc::tls::ClientTls;
/// use syncrpc::Client;
///
/// let tls = ClientTls::with_ca_file("ca.pem")?.client_cert_files("client.pem", "client.key")?;
/// let client = Client::builder().addr("billing.internal:7443").tls(tls).build()?;
/// # Ok::<(), syncrpc::Error>(())
/// ```
#[derive(Clone)]
pub struct ClientTls {
    config: Arc<rustls::ClientConfig>,
    roots: Arc<rustls::RootCertStore>,
    server_name: Option<ServerName<'static>>,
}

/// The ALPN ids a client offers: the native protocol, or MessagePack-RPC.
pub(crate) const ALPN_NATIVE: &[u8] = b"syncrpc";
pub(crate) const ALPN_MSGPACK_RPC: &[u8] = b"msgpack-rpc";

impl ClientTls {
    /// Verifies servers against the system's root certificates.
    pub fn with_system_roots() -> Result<ClientTls, Error> {
        let found = rustls_native_certs::load_native_certs();
        let mut roots = rustls::RootCertStore::empty();
        for cert in found.certs {
            let _ = roots.add(cert);
        }
        if roots.is_empty() {
            let why = found
                .errors
                .first()
                .map_or_else(|| "none found".to_owned(), |e| e.to_string());
            return Err(Error::usage(format!("no system root certificates: {why}")));
        }
        ClientTls::with_roots(roots)
    }

    /// Verifies servers against the CA certificates in this PEM file.
    pub fn with_ca_file(path: impl AsRef<Path>) -> Result<ClientTls, Error> {
        ClientTls::with_ca_pem(&pem::read_file(path.as_ref())?)
    }

    /// Verifies servers against the CA certificates in `pem`.
    pub fn with_ca_pem(pem: &[u8]) -> Result<ClientTls, Error> {
        ClientTls::with_roots(pem::roots(pem, "CA")?)
    }

    fn with_roots(roots: rustls::RootCertStore) -> Result<ClientTls, Error> {
        let roots = Arc::new(roots);
        Ok(ClientTls {
            config: Arc::new(build(&roots, None)?),
            roots,
            server_name: None,
        })
    }

    /// Presents this certificate chain and key (PEM files) to servers that
    /// ask for one (mutual TLS).
    pub fn client_cert_files(
        self,
        cert: impl AsRef<Path>,
        key: impl AsRef<Path>,
    ) -> Result<ClientTls, Error> {
        let cert = pem::read_file(cert.as_ref())?;
        let key = pem::read_file(key.as_ref())?;
        self.client_cert_pem(&cert, &key)
    }

    /// Presents this certificate chain and key (PEM) to servers that ask.
    pub fn client_cert_pem(mut self, cert_pem: &[u8], key_pem: &[u8]) -> Result<ClientTls, Error> {
        let chain = pem::certs(cert_pem, "client certificate")?;
        let key = pem::key(key_pem, "client key")?;
        self.config = Arc::new(build(&self.roots, Some((chain, key)))?);
        Ok(self)
    }

    /// Verifies every server's certificate against this name rather than
    /// the endpoint's host: for servers reached by an address their
    /// certificate does not name.
    pub fn server_name(mut self, name: &str) -> Result<ClientTls, Error> {
        let name = ServerName::try_from(name.to_owned())
            .map_err(|e| Error::usage(format!("TLS server name {name:?}: {e}")))?;
        self.server_name = Some(name);
        Ok(self)
    }

    /// The rustls configuration these settings make (roots, client
    /// certificate; no ALPN ids), for a program that drives rustls itself
    /// on its own sockets, such as a load generator. Connections made
    /// with it must verify the name [`ClientTls::server_name`] gave, if
    /// any, or the server's host.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// use syncrpc::tls::ClientTls;
    ///
    /// let tls = ClientTls::with_ca_file("ca.pem")?;
    /// let name = "localhost".try_into().expect("a DNS name");
    /// let conn = rustls::ClientConnection::new(tls.rustls_config(), name);
    /// # Ok::<(), syncrpc::Error>(())
    /// ```
    pub fn rustls_config(&self) -> Arc<rustls::ClientConfig> {
        self.config.clone()
    }

    /// A client connection to `host`, offering `alpn`.
    pub(crate) fn connect(
        &self,
        host: &str,
        alpn: &[u8],
    ) -> Result<rustls::ClientConnection, Error> {
        let name = match &self.server_name {
            Some(n) => n.clone(),
            None => ServerName::try_from(host.to_owned())
                .map_err(|e| Error::usage(format!("TLS server name {host:?}: {e}")))?,
        };
        let mut config = (*self.config).clone();
        config.alpn_protocols = vec![alpn.to_vec()];
        rustls::ClientConnection::new(Arc::new(config), name)
            .map_err(|e| Error::usage(format!("TLS: {e}")))
    }
}

fn build(
    roots: &Arc<rustls::RootCertStore>,
    cert: Option<(
        Vec<rustls::pki_types::CertificateDer<'static>>,
        rustls::pki_types::PrivateKeyDer<'static>,
    )>,
) -> Result<rustls::ClientConfig, Error> {
    let builder = rustls::ClientConfig::builder_with_provider(pem::provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| Error::usage(format!("TLS: {e}")))?
        .with_root_certificates(roots.clone());
    match cert {
        Some((chain, key)) => builder
            .with_client_auth_cert(chain, key)
            .map_err(|e| Error::usage(format!("client certificate and key: {e}"))),
        None => Ok(builder.with_no_client_auth()),
    }
}

impl fmt::Debug for ClientTls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClientTls")
            .field("roots", &self.roots.len())
            .field(
                "client_cert",
                &self.config.client_auth_cert_resolver.has_certs(),
            )
            .field("server_name", &self.server_name)
            .finish()
    }
}

/// Two settings are equal when they are clones of one another.
impl PartialEq for ClientTls {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.config, &other.config) && self.server_name == other.server_name
    }
}

impl Eq for ClientTls {}

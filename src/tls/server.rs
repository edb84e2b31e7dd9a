//! The server's TLS settings: certificate, key, client CA, and reloading.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};

use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{StoresServerSessions, WebPkiClientVerifier};

use super::pem;
use crate::error::Error;

/// Whether a listener also takes plaintext connections.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum TlsMode {
    /// TLS only: a connection whose first byte is not a TLS handshake
    /// record is closed, unanswered. The default.
    #[default]
    Required,
    /// TLS and plaintext on the same port: a connection starting with a
    /// TLS handshake record (byte `0x16`, which no wire protocol of the
    /// server begins with) is TLS, any other is plaintext.
    Optional,
}

/// A server's TLS configuration: a certificate chain and key, optionally
/// the CA that client certificates must be signed by (mutual TLS), and
/// whether plaintext is also served ([`TlsMode`]).
///
/// TLS 1.2 and 1.3 only, with rustls' safe defaults (ring provider).
/// Session resumption is on: a cache of recent sessions and TLS 1.3
/// tickets survive reloads.
///
/// Cloning is cheap and clones share state: [`ServerTls::reload`] on any
/// clone changes the certificate every listener using it presents to new
/// handshakes. Connections already established keep theirs.
///
/// # Examples
///
/// ```no_run
/// use syncrpc::tls::ServerTls;
/// use syncrpc::{Server, Service};
///
/// let tls = ServerTls::from_pem_files("server.pem", "server.key")?
///     .client_ca_file("clients-ca.pem")?;
/// let server = Server::builder()
///     .service(Service::new("echo.Echo"))
///     .tls(tls.clone())
///     .bind("0.0.0.0:7443")?;
/// // Later, after the files were rotated (or on SIGHUP):
/// tls.reload()?;
/// # Ok::<(), syncrpc::Error>(())
/// ```
#[derive(Clone)]
pub struct ServerTls {
    inner: Arc<Inner>,
    mode: TlsMode,
}

struct Inner {
    /// Where the material came from, for reloads; none when given as PEM.
    files: Mutex<Files>,
    material: RwLock<Arc<Material>>,
    sessions: Arc<dyn StoresServerSessions>,
    ticketer: Option<Arc<dyn rustls::server::ProducesTickets>>,
}

#[derive(Default)]
struct Files {
    cert: Option<PathBuf>,
    key: Option<PathBuf>,
    client_ca: Option<PathBuf>,
}

/// One generation of certificate, key and client CA.
struct Material {
    generation: u64,
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
    client_ca: Option<Arc<rustls::RootCertStore>>,
}

/// Sessions kept for resumption.
const SESSION_CACHE: usize = 4096;

impl ServerTls {
    /// A certificate chain (leaf first) and its private key, from PEM files.
    /// [`ServerTls::reload`] reads the files again.
    pub fn from_pem_files(
        cert: impl AsRef<Path>,
        key: impl AsRef<Path>,
    ) -> Result<ServerTls, Error> {
        let (cert, key) = (cert.as_ref(), key.as_ref());
        let tls = ServerTls::from_pem(&pem::read_file(cert)?, &pem::read_file(key)?)?;
        {
            let mut files = tls.inner.files.lock().unwrap_or_else(|e| e.into_inner());
            files.cert = Some(cert.to_owned());
            files.key = Some(key.to_owned());
        }
        Ok(tls)
    }

    /// A certificate chain (leaf first) and its private key, as PEM.
    pub fn from_pem(cert_pem: &[u8], key_pem: &[u8]) -> Result<ServerTls, Error> {
        let chain = pem::certs(cert_pem, "server certificate")?;
        let key = pem::key(key_pem, "server key")?;
        let material = Material {
            generation: 0,
            chain,
            key,
            client_ca: None,
        };
        check(&material)?;
        let ticketer = rustls::crypto::ring::Ticketer::new().ok();
        Ok(ServerTls {
            inner: Arc::new(Inner {
                files: Mutex::new(Files::default()),
                material: RwLock::new(Arc::new(material)),
                sessions: rustls::server::ServerSessionMemoryCache::new(SESSION_CACHE),
                ticketer,
            }),
            mode: TlsMode::Required,
        })
    }

    /// Requires a client certificate signed by a CA in this PEM file
    /// (mutual TLS); its identity is then on each request's
    /// [`Context::peer`](crate::Context::peer). Reloaded with the rest.
    pub fn client_ca_file(self, path: impl AsRef<Path>) -> Result<ServerTls, Error> {
        let path = path.as_ref();
        let tls = self.client_ca_pem(&pem::read_file(path)?)?;
        tls.inner
            .files
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .client_ca = Some(path.to_owned());
        Ok(tls)
    }

    /// Requires a client certificate signed by a CA in `pem` (mutual TLS).
    pub fn client_ca_pem(self, pem: &[u8]) -> Result<ServerTls, Error> {
        let roots = Arc::new(pem::roots(pem, "client CA")?);
        self.update(|m| m.client_ca = Some(roots.clone()))?;
        Ok(self)
    }

    /// Sets whether plaintext is served too. Default [`TlsMode::Required`].
    pub fn mode(mut self, mode: TlsMode) -> ServerTls {
        self.mode = mode;
        self
    }

    /// Whether plaintext is served too.
    pub fn tls_mode(&self) -> TlsMode {
        self.mode
    }

    /// Whether clients must present a certificate.
    pub fn requires_client_cert(&self) -> bool {
        self.material().client_ca.is_some()
    }

    /// Reads the PEM files given to [`ServerTls::from_pem_files`] and
    /// [`ServerTls::client_ca_file`] again. New handshakes use the new
    /// certificate; established connections are not touched. On an error
    /// (a missing file, a key that does not match) the old material stays.
    pub fn reload(&self) -> Result<(), Error> {
        let (cert, key, ca) = {
            let files = self.inner.files.lock().unwrap_or_else(|e| e.into_inner());
            (
                files.cert.clone(),
                files.key.clone(),
                files.client_ca.clone(),
            )
        };
        let (Some(cert), Some(key)) = (cert, key) else {
            return Err(Error::usage(
                "this TLS configuration was not read from files: use reload_pem",
            ));
        };
        let ca = match ca {
            Some(p) => Some(pem::read_file(&p)?),
            None => None,
        };
        self.reload_pem(
            &pem::read_file(&cert)?,
            &pem::read_file(&key)?,
            ca.as_deref(),
        )
    }

    /// Replaces the certificate chain and key (and the client CA, when
    /// given) with these PEM ones, for new handshakes.
    pub fn reload_pem(
        &self,
        cert_pem: &[u8],
        key_pem: &[u8],
        client_ca_pem: Option<&[u8]>,
    ) -> Result<(), Error> {
        let chain = pem::certs(cert_pem, "server certificate")?;
        let key = pem::key(key_pem, "server key")?;
        let ca = match client_ca_pem {
            Some(p) => Some(Arc::new(pem::roots(p, "client CA")?)),
            None => None,
        };
        self.update(|m| {
            m.chain = chain.clone();
            m.key = key.clone_key();
            if ca.is_some() {
                m.client_ca = ca.clone();
            }
        })?;
        log::info!("TLS certificate reloaded");
        Ok(())
    }

    fn update(&self, change: impl Fn(&mut Material)) -> Result<(), Error> {
        let mut slot = self
            .inner
            .material
            .write()
            .unwrap_or_else(|e| e.into_inner());
        let mut next = Material {
            generation: slot.generation + 1,
            chain: slot.chain.clone(),
            key: slot.key.clone_key(),
            client_ca: slot.client_ca.clone(),
        };
        change(&mut next);
        check(&next)?;
        *slot = Arc::new(next);
        Ok(())
    }

    fn material(&self) -> Arc<Material> {
        self.inner
            .material
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// The rustls configuration for new handshakes on a listener that
    /// advertises `alpn`, rebuilt only when the material changed.
    pub(crate) fn acceptor(&self, alpn: Vec<Vec<u8>>) -> Acceptor {
        Acceptor {
            tls: self.clone(),
            alpn,
            current: Mutex::new(None),
        }
    }

    fn build(&self, m: &Material, alpn: &[Vec<u8>]) -> Result<rustls::ServerConfig, Error> {
        let builder = rustls::ServerConfig::builder_with_provider(pem::provider())
            .with_safe_default_protocol_versions()
            .map_err(|e| Error::usage(format!("TLS: {e}")))?;
        let builder = match &m.client_ca {
            Some(roots) => {
                let verifier =
                    WebPkiClientVerifier::builder_with_provider(roots.clone(), pem::provider())
                        .build()
                        .map_err(|e| Error::usage(format!("client CA: {e}")))?;
                builder.with_client_cert_verifier(verifier)
            }
            None => builder.with_no_client_auth(),
        };
        let mut config = builder
            .with_single_cert(m.chain.clone(), m.key.clone_key())
            .map_err(|e| Error::usage(format!("server certificate and key: {e}")))?;
        config.alpn_protocols = alpn.to_vec();
        config.session_storage = self.inner.sessions.clone();
        if let Some(t) = &self.inner.ticketer {
            config.ticketer = t.clone();
        }
        Ok(config)
    }
}

/// Whether the material makes a working configuration.
fn check(m: &Material) -> Result<(), Error> {
    let provider = pem::provider();
    let key = provider
        .key_provider
        .load_private_key(m.key.clone_key())
        .map_err(|e| Error::usage(format!("server key: {e}")))?;
    let certified = rustls::sign::CertifiedKey::new(m.chain.clone(), key);
    match certified.keys_match() {
        Ok(()) | Err(rustls::Error::InconsistentKeys(rustls::InconsistentKeys::Unknown)) => Ok(()),
        Err(e) => Err(Error::usage(format!("server certificate and key: {e}"))),
    }
}

impl fmt::Debug for ServerTls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let m = self.material();
        f.debug_struct("ServerTls")
            .field("mode", &self.mode)
            .field("chain_len", &m.chain.len())
            .field("client_ca", &m.client_ca.is_some())
            .field("generation", &m.generation)
            .finish_non_exhaustive()
    }
}

/// One listener's TLS: its settings and its current rustls configuration.
pub(crate) struct Acceptor {
    tls: ServerTls,
    alpn: Vec<Vec<u8>>,
    current: Mutex<Option<(u64, Arc<rustls::ServerConfig>)>>,
}

impl Acceptor {
    pub fn mode(&self) -> TlsMode {
        self.tls.mode
    }

    /// A server connection for a new handshake.
    pub fn session(&self) -> Result<rustls::ServerConnection, rustls::Error> {
        let m = self.tls.material();
        let config = {
            let mut current = self.current.lock().unwrap_or_else(|e| e.into_inner());
            match &*current {
                Some((g, c)) if *g == m.generation => c.clone(),
                _ => {
                    let c = Arc::new(
                        self.tls
                            .build(&m, &self.alpn)
                            .map_err(|e| rustls::Error::General(e.to_string()))?,
                    );
                    *current = Some((m.generation, c.clone()));
                    c
                }
            }
        };
        rustls::ServerConnection::new(config)
    }
}

impl fmt::Debug for Acceptor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Acceptor")
            .field("tls", &self.tls)
            .finish_non_exhaustive()
    }
}

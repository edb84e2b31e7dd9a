//! Throwaway certificates for the TLS tests, made fresh by each test with
//! rcgen (nothing private is checked in), and a raw TLS socket for tests
//! that must stop half-way through a handshake.
#![allow(dead_code)]

use std::io::Write;
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use rcgen::{
    BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, KeyUsagePurpose, SanType,
};
use syncrpc::tls::{ClientTls, ServerTls};

/// A certificate and its key, as PEM.
#[derive(Clone)]
pub struct Pem {
    pub cert: String,
    pub key: String,
}

/// A throwaway CA that signs server and client certificates, and a
/// directory of its own for PEM files.
pub struct Pki {
    pub dir: PathBuf,
    ca_params: CertificateParams,
    ca_key: KeyPair,
    pub ca_pem: String,
    /// The CA's certificate, DER-encoded, for raw rustls clients.
    pub ca_der: Vec<u8>,
}

impl Pki {
    pub fn new(name: &str) -> Pki {
        static N: AtomicU64 = AtomicU64::new(0);
        let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!(
            "tls-{name}-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&dir).unwrap();
        let ca_key = KeyPair::generate().unwrap();
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params
            .distinguished_name
            .push(DnType::CommonName, format!("{name} test CA"));
        ca_params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let ca_cert = ca_params.self_signed(&ca_key).unwrap();
        Pki {
            dir,
            ca_params,
            ca_key,
            ca_pem: ca_cert.pem(),
            ca_der: ca_cert.der().to_vec(),
        }
    }

    /// A certificate for `localhost` and 127.0.0.1 with common name `cn`.
    pub fn server(&self, cn: &str) -> Pem {
        self.leaf(cn, &["localhost", "127.0.0.1"], &[], false)
    }

    /// A client certificate with common name `cn` and URI SAN `uri`.
    pub fn client(&self, cn: &str, uri: &str) -> Pem {
        self.leaf(cn, &[], &[uri], false)
    }

    /// A certificate signed by this CA.
    pub fn leaf(&self, cn: &str, names: &[&str], uris: &[&str], expired: bool) -> Pem {
        let key = KeyPair::generate().unwrap();
        let mut params =
            CertificateParams::new(names.iter().map(|s| s.to_string()).collect::<Vec<_>>())
                .unwrap();
        for u in uris {
            params
                .subject_alt_names
                .push(SanType::URI((*u).try_into().unwrap()));
        }
        params.distinguished_name.push(DnType::CommonName, cn);
        if expired {
            params.not_before = rcgen::date_time_ymd(2000, 1, 1);
            params.not_after = rcgen::date_time_ymd(2001, 1, 1);
        }
        let issuer = Issuer::from_params(&self.ca_params, &self.ca_key);
        let cert = params.signed_by(&key, &issuer).unwrap();
        Pem {
            cert: cert.pem(),
            key: key.serialize_pem(),
        }
    }

    /// Writes `contents` to a file of this PKI's directory.
    pub fn write(&self, name: &str, contents: &str) -> PathBuf {
        let path = self.dir.join(name);
        std::fs::write(&path, contents).unwrap();
        path
    }

    /// TLS for a server presenting `pem`.
    pub fn server_tls(&self, pem: &Pem) -> ServerTls {
        ServerTls::from_pem(pem.cert.as_bytes(), pem.key.as_bytes()).unwrap()
    }

    /// TLS for a server presenting a fresh `localhost` certificate.
    pub fn default_server_tls(&self) -> ServerTls {
        self.server_tls(&self.server("server"))
    }

    /// TLS for a client that trusts this CA.
    pub fn client_tls(&self) -> ClientTls {
        ClientTls::with_ca_pem(self.ca_pem.as_bytes()).unwrap()
    }
}

impl Drop for Pki {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A raw rustls client for tests that drive a handshake by hand: it
/// trusts `ca_der` (nothing if `None`), offers `alpn`, presents no
/// certificate, and checks the name `localhost`.
pub fn raw_client(ca_der: Option<&[u8]>, alpn: &[&[u8]]) -> rustls::ClientConnection {
    let mut roots = rustls::RootCertStore::empty();
    if let Some(der) = ca_der {
        roots
            .add(rustls::pki_types::CertificateDer::from(der.to_vec()))
            .unwrap();
    }
    let mut config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    rustls::ClientConnection::new(Arc::new(config), "localhost".try_into().unwrap()).unwrap()
}

/// A TCP connection that has sent a real ClientHello and nothing more.
pub fn stalled_handshake(addr: SocketAddr) -> TcpStream {
    let mut conn = raw_client(None, &[]);
    let mut hello = Vec::new();
    while conn.wants_write() {
        conn.write_tls(&mut hello).unwrap();
    }
    let mut stream = TcpStream::connect(addr).unwrap();
    stream.write_all(&hello).unwrap();
    stream
}

/// Half-open connections a test may open within the soft limit on open
/// files (each costs a descriptor on both ends, both in this process),
/// at most `want`.
pub fn connections_within_fd_limit(want: usize) -> usize {
    let soft = std::fs::read_to_string("/proc/self/limits")
        .ok()
        .and_then(|l| {
            l.lines()
                .find(|l| l.starts_with("Max open files"))
                .and_then(|l| l.split_whitespace().nth(3))
                .and_then(|n| n.parse::<usize>().ok())
        })
        .unwrap_or(usize::MAX);
    want.min(soft.saturating_sub(256) / 2)
}

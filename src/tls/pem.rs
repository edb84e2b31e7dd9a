//! Certificates and keys from PEM.

use std::path::Path;

use rustls::pki_types::{CertificateDer, PrivateKeyDer};

use crate::error::Error;

pub(crate) fn read_file(path: &Path) -> Result<Vec<u8>, Error> {
    std::fs::read(path).map_err(|e| Error::io(&format!("cannot read {}", path.display()), e))
}

/// Every certificate in `pem`; an error if there is none.
pub(crate) fn certs(pem: &[u8], what: &str) -> Result<Vec<CertificateDer<'static>>, Error> {
    let certs = rustls_pemfile::certs(&mut &pem[..])
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| Error::usage(format!("{what}: bad PEM: {e}")))?;
    if certs.is_empty() {
        return Err(Error::usage(format!("{what}: no CERTIFICATE in the PEM")));
    }
    Ok(certs)
}

/// The first private key in `pem` (PKCS#8, PKCS#1 or SEC1).
pub(crate) fn key(pem: &[u8], what: &str) -> Result<PrivateKeyDer<'static>, Error> {
    rustls_pemfile::private_key(&mut &pem[..])
        .map_err(|e| Error::usage(format!("{what}: bad PEM: {e}")))?
        .ok_or_else(|| Error::usage(format!("{what}: no PRIVATE KEY in the PEM")))
}

/// A root store of every certificate in `pem`.
pub(crate) fn roots(pem: &[u8], what: &str) -> Result<rustls::RootCertStore, Error> {
    let mut store = rustls::RootCertStore::empty();
    for cert in certs(pem, what)? {
        store
            .add(cert)
            .map_err(|e| Error::usage(format!("{what}: not a usable CA certificate: {e}")))?;
    }
    Ok(store)
}

pub(crate) fn provider() -> std::sync::Arc<rustls::crypto::CryptoProvider> {
    std::sync::Arc::new(rustls::crypto::ring::default_provider())
}

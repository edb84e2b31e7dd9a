//! TLS and bearer-token options, shared by every command that talks to a
//! server.

use std::path::PathBuf;

use clap::Args;
use syncrpc::tls::ClientTls;

use crate::exit::Failure;

/// The environment variable `--token` is read from when not given, so that
/// the token does not show in `ps`.
pub const TOKEN_ENV: &str = "SYNCRPC_TOKEN";

/// How to secure the connection and authenticate the calls.
#[derive(Args, Debug, Clone, Default)]
pub struct Security {
    /// Speak TLS, verifying the server against the system's root
    /// certificates (implied by any other --tls-* option).
    #[arg(long)]
    pub tls: bool,
    /// Speak TLS, verifying the server against the CA certificates in this
    /// PEM file rather than the system's.
    #[arg(long, value_name = "FILE")]
    pub tls_ca: Option<PathBuf>,
    /// Present this PEM certificate chain to a server that asks for one
    /// (mutual TLS); needs --tls-key.
    #[arg(long, value_name = "FILE", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// The PEM private key of --tls-cert.
    #[arg(long, value_name = "FILE", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// Verify the server's certificate against this name rather than
    /// ADDR's host: for a server reached by an IP address or a name its
    /// certificate does not carry.
    #[arg(long, value_name = "NAME")]
    pub tls_server_name: Option<String>,
    /// Send `authorization: Bearer T` with every call. Prefer the
    /// SYNCRPC_TOKEN environment variable, which `ps` does not show.
    #[arg(long, value_name = "T", env = TOKEN_ENV, hide_env_values = true)]
    pub token: Option<String>,
}

impl Security {
    /// True if any option asks for TLS.
    pub fn wants_tls(&self) -> bool {
        self.tls
            || self.tls_ca.is_some()
            || self.tls_cert.is_some()
            || self.tls_server_name.is_some()
    }

    /// The client's TLS settings, or `None` for plaintext. Unreadable or
    /// malformed files are usage errors: nothing was sent.
    pub fn client_tls(&self) -> Result<Option<ClientTls>, Failure> {
        if !self.wants_tls() {
            return Ok(None);
        }
        let bad = |e: syncrpc::Error| Failure::usage(format!("TLS: {}", e.status().message()));
        let mut tls = match &self.tls_ca {
            Some(ca) => ClientTls::with_ca_file(ca).map_err(bad)?,
            None => ClientTls::with_system_roots().map_err(bad)?,
        };
        if let (Some(cert), Some(key)) = (&self.tls_cert, &self.tls_key) {
            tls = tls.client_cert_files(cert, key).map_err(bad)?;
        }
        if let Some(name) = &self.tls_server_name {
            tls = tls.server_name(name).map_err(bad)?;
        }
        Ok(Some(tls))
    }

    /// The token, if one was given and is not empty. A token that cannot
    /// be sent as a metadata value is a usage error.
    pub fn token(&self) -> Result<Option<&str>, Failure> {
        match self.token.as_deref() {
            None | Some("") => Ok(None),
            Some(t) if t.chars().any(|c| c.is_control()) => Err(Failure::usage(format!(
                "--token (or {TOKEN_ENV}) holds a control character"
            ))),
            Some(t) => Ok(Some(t)),
        }
    }
}

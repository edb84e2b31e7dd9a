//! TLS and mutual TLS, with rustls (feature `tls`).
//!
//! A server serves TLS per listener ([`ServerBuilder::tls`],
//! [`ServerBuilder::tls_on`]): TLS only, or TLS and plaintext on one port
//! ([`TlsMode`]). TLS is a transport below the wire protocols: inside it a
//! connection is served in the protocol its first byte announces, as on
//! plaintext, and the listener advertises its protocols with ALPN
//! (`syncrpc`, `msgpack-rpc`). TLS 1.2 and 1.3 only, with rustls' safe
//! defaults and the ring provider; session resumption is on.
//!
//! With a client CA ([`ServerTls::client_ca_file`]) the server requires a
//! client certificate signed by it, and the verified identity (subject,
//! DNS and URI names) is on each request's [`Context::peer`], where the
//! [`Auth`](crate::filters::Auth) filter can allow or refuse it per
//! method. A client speaks TLS with a [`ClientTls`]
//! ([`ClientBuilder::tls`](crate::client::ClientBuilder::tls)).
//!
//! A handshake counts against the connection limit and the whole-frame
//! timeout, and handshakes in progress are capped
//! ([`Limits::max_handshakes`]); the server's stats count completed and
//! failed ones. `docs/security.md` describes the threat model, rotation
//! and deployment.
//!
//! [`ServerBuilder::tls`]: crate::ServerBuilder::tls
//! [`ServerBuilder::tls_on`]: crate::ServerBuilder::tls_on
//! [`Context::peer`]: crate::Context::peer
//! [`Limits::max_handshakes`]: crate::server::Limits::max_handshakes

pub(crate) mod client;
pub(crate) mod handshake;
pub(crate) mod identity;
mod pem;
pub(crate) mod server;
pub(crate) mod session;

pub use client::ClientTls;
pub use server::{ServerTls, TlsMode};

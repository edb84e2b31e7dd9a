//! The listeners a server binds: where each listens and what it serves,
//! the settings that override the server-wide ones at one address, and the
//! checks a configuration passes before any listener opens.

#[cfg(feature = "tls")]
use crate::tls::ServerTls;
use std::net::{SocketAddr, ToSocketAddrs};

use super::config::ServerConfig;
use super::protocol::Protocols;
use crate::error::Error;
use crate::server::service::Service;

/// Where a group of services listens.
pub(crate) struct ListenerSpec {
    pub addrs: Vec<SocketAddr>,
    pub services: Vec<Service>,
    /// Overrides [`ServerConfig::protocols`] on this listener.
    pub protocols: Option<Protocols>,
    /// Overrides [`ServerConfig::msgpack_rpc_default_service`] on this
    /// listener.
    pub msgpack_rpc_default_service: Option<String>,
    /// Overrides the server-wide TLS on this listener: `Some(None)` for
    /// plaintext only.
    #[cfg(feature = "tls")]
    pub tls: Option<Option<ServerTls>>,
    /// Serves only the built-in endpoints, over HTTP.
    pub admin: bool,
}

impl ListenerSpec {
    pub(super) fn new(addrs: Vec<SocketAddr>, services: Vec<Service>) -> ListenerSpec {
        ListenerSpec {
            addrs,
            services,
            protocols: None,
            msgpack_rpc_default_service: None,
            #[cfg(feature = "tls")]
            tls: None,
            admin: false,
        }
    }
}

/// A setting of the one listener at an address, which overrides the
/// server-wide one there.
pub(super) enum ListenerSetting {
    Protocols(Protocols),
    MsgpackRpcDefaultService(String),
    #[cfg(feature = "tls")]
    Tls(Option<ServerTls>),
}

impl ListenerSetting {
    /// The builder method that made the setting, for errors.
    pub(super) fn origin(&self) -> &'static str {
        match self {
            ListenerSetting::Protocols(_) => "protocols_on",
            ListenerSetting::MsgpackRpcDefaultService(_) => "msgpack_rpc_default_service_on",
            #[cfg(feature = "tls")]
            ListenerSetting::Tls(Some(_)) => "tls_on",
            #[cfg(feature = "tls")]
            ListenerSetting::Tls(None) => "plaintext_on",
        }
    }

    pub(super) fn apply(self, spec: &mut ListenerSpec) {
        match self {
            ListenerSetting::Protocols(p) => spec.protocols = Some(p),
            ListenerSetting::MsgpackRpcDefaultService(s) => {
                spec.msgpack_rpc_default_service = Some(s)
            }
            #[cfg(feature = "tls")]
            ListenerSetting::Tls(t) => spec.tls = Some(t),
        }
    }
}

pub(super) fn resolve(addr: impl ToSocketAddrs) -> std::io::Result<Vec<SocketAddr>> {
    let addrs: Vec<SocketAddr> = addr.to_socket_addrs()?.collect();
    if addrs.is_empty() {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            "the address resolved to nothing",
        ));
    }
    Ok(addrs)
}

pub(super) fn check(config: &ServerConfig, specs: &[ListenerSpec]) -> Result<(), Error> {
    let l = &config.limits;
    for (name, v) in [
        ("max_body", l.max_body),
        ("max_meta", l.max_meta),
        ("max_body_depth", l.max_body_depth),
        (
            "max_in_flight_per_connection",
            l.max_in_flight_per_connection,
        ),
        ("max_pending_response_bytes", l.max_pending_response_bytes),
        ("max_buffered_request_bytes", l.max_buffered_request_bytes),
        ("max_connections", l.max_connections),
        ("max_streams", l.max_streams.unwrap_or(1)),
        ("workers", config.workers),
        ("queue_capacity", config.queue_capacity),
        ("event_loops", config.event_loops),
    ] {
        if v == 0 {
            return Err(Error::usage(format!("{name} must be at least 1")));
        }
    }
    if l.max_body > u32::MAX as usize {
        return Err(Error::usage(format!(
            "max_body {} is more than a frame can carry (4294967295)",
            l.max_body
        )));
    }
    for spec in specs {
        let mut names: Vec<&str> = spec.services.iter().map(|s| s.name()).collect();
        names.sort_unstable();
        if let Some(w) = names.windows(2).find(|w| w[0] == w[1]) {
            return Err(Error::usage(format!(
                "service {} registered twice on {:?}",
                w[0], spec.addrs
            )));
        }
    }
    Ok(())
}

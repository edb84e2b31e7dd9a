//! Endpoints of a client: resolution, round-robin over the healthy ones,
//! failover past the ones that fail.

use std::collections::HashSet;
use std::net::{SocketAddr, ToSocketAddrs};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use log::debug;

use super::builder::{Backoff, ClientConfig};
use super::connection::{ConnOptions, Connection};
use super::endpoint::{Endpoint, Unreachable};
use crate::context::Context;
use crate::error::{Error, ErrorKind, Execution};
use crate::status::Status;

/// The part of the configuration endpoints and connections use.
#[derive(Clone, Debug)]
pub(crate) struct Settings {
    pub(crate) per_endpoint: usize,
    pub(crate) connect_timeout: Duration,
    pub(crate) backoff: Backoff,
    pub(crate) conn: ConnOptions,
    pub(crate) resolve_interval: Duration,
}

impl Settings {
    fn new(config: &ClientConfig) -> Settings {
        Settings {
            per_endpoint: config.connections_per_endpoint,
            connect_timeout: config.timeouts.connect,
            backoff: config.backoff,
            conn: ConnOptions {
                limits: config.frame_limits(),
                write_stall: config.timeouts.write_stall,
                keepalive: config.tcp_keepalive,
                protocol: config.protocol,
                max_depth: config.max_body_depth,
                #[cfg(feature = "tls")]
                tls: config.tls.clone(),
            },
            resolve_interval: config.resolve_interval,
        }
    }
}

/// An address as the user gave it.
#[derive(Debug)]
struct Target {
    text: String,
    /// An IP literal: resolving it again cannot change anything.
    literal: bool,
}

/// The endpoints of one client.
#[derive(Debug)]
pub(crate) struct Balancer {
    targets: Vec<Target>,
    endpoints: RwLock<Arc<[Arc<Endpoint>]>>,
    next: AtomicUsize,
    resolved_at: Mutex<Instant>,
    settings: Settings,
}

/// The host part of `host:port`, `[v6]:port` or an IP literal, which a
/// TLS connection verifies the server's certificate against.
fn host_of(text: &str) -> Arc<str> {
    let host = text.rsplit_once(':').map_or(text, |(h, _)| h);
    Arc::from(host.trim_start_matches('[').trim_end_matches(']'))
}

fn resolve(targets: &[Target]) -> Result<Vec<(SocketAddr, Arc<str>)>, Error> {
    let mut seen = HashSet::new();
    let mut out = Vec::new();
    for t in targets {
        let addrs: Vec<SocketAddr> = t
            .text
            .to_socket_addrs()
            .map_err(|e| {
                Error::usage(format!("cannot resolve server address {:?}: {e}", t.text))
                    .with_source(e)
            })?
            .collect();
        if addrs.is_empty() {
            return Err(Error::usage(format!(
                "server address {:?} resolves to nothing",
                t.text
            )));
        }
        let host = host_of(&t.text);
        out.extend(
            addrs
                .into_iter()
                .filter(|a| seen.insert(*a))
                .map(|a| (a, host.clone())),
        );
    }
    if out.is_empty() {
        return Err(Error::usage("the server addresses resolve to nothing"));
    }
    Ok(out)
}

impl Balancer {
    pub(crate) fn new(addrs: Vec<String>, config: &ClientConfig) -> Result<Balancer, Error> {
        let targets: Vec<Target> = addrs
            .into_iter()
            .map(|text| Target {
                literal: text.parse::<SocketAddr>().is_ok(),
                text,
            })
            .collect();
        let endpoints: Vec<Arc<Endpoint>> = resolve(&targets)?
            .into_iter()
            .map(|(a, host)| Arc::new(Endpoint::new(a, host)))
            .collect();
        Ok(Balancer {
            targets,
            endpoints: RwLock::new(endpoints.into()),
            next: AtomicUsize::new(0),
            resolved_at: Mutex::new(Instant::now()),
            settings: Settings::new(config),
        })
    }

    /// The endpoints' addresses, in balancing order.
    pub(crate) fn addrs(&self) -> Vec<SocketAddr> {
        self.snapshot().iter().map(|e| e.addr()).collect()
    }

    fn snapshot(&self) -> Arc<[Arc<Endpoint>]> {
        self.endpoints
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Resolves host names again once `resolve_interval` has passed. One
    /// thread does it while the others go on with the current endpoints.
    fn maybe_resolve(&self) {
        if self.targets.iter().all(|t| t.literal) {
            return;
        }
        let Ok(mut at) = self.resolved_at.try_lock() else {
            return;
        };
        if at.elapsed() < self.settings.resolve_interval {
            return;
        }
        *at = Instant::now();
        let addrs = match resolve(&self.targets) {
            Ok(a) => a,
            Err(e) => {
                debug!("keeping the current endpoints: {e}");
                return;
            }
        };
        let current = self.snapshot();
        let next: Vec<Arc<Endpoint>> = addrs
            .into_iter()
            .map(|(a, host)| {
                current
                    .iter()
                    .find(|e| e.addr() == a)
                    .cloned()
                    .unwrap_or_else(|| Arc::new(Endpoint::new(a, host)))
            })
            .collect();
        // Endpoints left out close their connections once the calls on
        // them return.
        *self.endpoints.write().unwrap_or_else(|e| e.into_inner()) = next.into();
    }

    /// A connection for the next call: round-robin over the endpoints,
    /// skipping those that are backing off or fail to connect, and trying
    /// `avoid` (where the previous attempt failed) only when nothing else
    /// works. With `wait_for_ready`, waits (until the deadline or the
    /// cancellation of `ctx`) for an endpoint to come back instead of
    /// failing at once.
    pub(crate) fn pick(
        &self,
        avoid: Option<SocketAddr>,
        deadline: Option<Instant>,
        ctx: &Context,
        wait_for_ready: bool,
    ) -> Result<Arc<Connection>, Error> {
        loop {
            self.maybe_resolve();
            let endpoints = self.snapshot();
            let n = endpoints.len();
            let start = self.next.fetch_add(1, Ordering::Relaxed);
            let order = (0..n)
                .map(|i| &endpoints[(start + i) % n])
                .filter(|e| Some(e.addr()) != avoid)
                .chain(endpoints.iter().filter(|e| Some(e.addr()) == avoid));
            let mut failures: Vec<Unreachable> = Vec::new();
            for endpoint in order {
                match endpoint.connection(&self.settings, deadline) {
                    Ok(conn) => return Ok(conn),
                    Err(u) => {
                        let timed_out = u.error.is_timeout();
                        failures.push(u);
                        if timed_out {
                            break;
                        }
                    }
                }
            }
            let retry_at = failures.iter().filter_map(|u| u.retry_at).min();
            let now = Instant::now();
            let can_wait = wait_for_ready
                && !failures.iter().any(|u| u.error.is_timeout())
                && deadline.map_or(true, |d| now < d);
            if !can_wait {
                return Err(unavailable(failures));
            }
            // Sleep until the first endpoint may be tried again, bounded
            // by the deadline; a cancelled context ends the wait.
            let mut until = retry_at.unwrap_or(now + self.settings.backoff.base);
            if let Some(d) = deadline {
                until = until.min(d);
            }
            if ctx.wait_cancelled(until.saturating_duration_since(now)) {
                if let Some(reason) = ctx.cancel_reason() {
                    let kind = match reason {
                        crate::context::CancelReason::DeadlineExceeded => ErrorKind::Timeout,
                        _ => ErrorKind::Cancelled,
                    };
                    return Err(
                        Error::new(kind, reason.to_status()).with_execution(Execution::NotRun)
                    );
                }
            }
            if deadline.is_some_and(|d| Instant::now() >= d) {
                let mut err = unavailable(failures);
                let status = Status::deadline_exceeded(format!(
                    "deadline exceeded waiting for a server: {}",
                    err.status().message()
                ));
                err = Error::new(ErrorKind::Timeout, status).with_execution(Execution::NotRun);
                return Err(err);
            }
        }
    }
}

/// One error for a call no endpoint could take: the only endpoint's error
/// as it is, or every endpoint's reason in one message.
fn unavailable(mut failures: Vec<Unreachable>) -> Error {
    if failures.len() == 1 {
        return failures.remove(0).error;
    }
    let reasons: Vec<String> = failures
        .iter()
        .map(|u| u.error.status().message().to_owned())
        .collect();
    let kind = if failures.iter().any(|u| u.error.is_timeout()) {
        ErrorKind::Timeout
    } else {
        ErrorKind::Io
    };
    let status = if kind == ErrorKind::Timeout {
        Status::deadline_exceeded(format!("no server reached in time: {}", reasons.join("; ")))
    } else {
        Status::unavailable(format!("no server is available: {}", reasons.join("; ")))
    };
    Error::new(kind, status).with_execution(Execution::NotRun)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolving_again_keeps_the_endpoints_that_remain() {
        let config = ClientConfig {
            resolve_interval: Duration::ZERO,
            ..ClientConfig::default()
        };
        let b = Balancer::new(vec!["localhost:7000".to_owned()], &config).unwrap();
        let before = b.snapshot();
        assert!(before.iter().any(|e| e.addr().ip().is_loopback()));
        b.maybe_resolve();
        let after = b.snapshot();
        assert_eq!(before.len(), after.len());
        for (x, y) in before.iter().zip(after.iter()) {
            assert!(
                Arc::ptr_eq(x, y),
                "{x:?} was replaced, losing its connections"
            );
        }
    }

    #[test]
    fn literal_addresses_are_deduplicated_and_never_resolved_again() {
        let b = Balancer::new(
            vec!["127.0.0.1:7000".to_owned(), "127.0.0.1:7000".to_owned()],
            &ClientConfig::default(),
        )
        .unwrap();
        assert_eq!(b.addrs(), vec!["127.0.0.1:7000".parse().unwrap()]);
        assert!(b.targets.iter().all(|t| t.literal));
    }
}

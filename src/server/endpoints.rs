//! The built-in endpoints an HTTP client reads with `GET`: `/healthz`,
//! `/livez`, `/metrics` and `/`.
//!
//! Each is a raw method of the service `syncrpc.Endpoints`, registered on
//! every listener (or only on the admin listener, when there is one), so
//! a `GET` is routed, limited, filtered and run by a worker like any
//! request, and answered in the protocol it came in. The methods read the
//! server's own state: the health table the shutdown turns `NOT_SERVING`
//! first thing, the counters of the connections and the worker pool, the
//! listener's routing table.

use std::sync::{Arc, OnceLock, Weak};
use std::time::Instant;

use bytes::Bytes;

use super::config::Mode;
use super::dispatch::ServerShared;
use super::health::{Health, ServingStatus};
use super::protocol::ENDPOINT_SERVICE;
use super::service::{Registry, Service};
use crate::context::Context;
use crate::descriptor::MethodKind;
use crate::status::Status;

/// Which built-in endpoints a server answers. All on by default; one
/// switched off answers `404 NOT_FOUND`.
///
/// `/metrics` and `/` tell whoever reads them the server's methods,
/// limits and load: on a port open to the internet, serve them on a
/// private admin port instead
/// ([`ServerBuilder::admin_on`](super::ServerBuilder::admin_on)), or
/// switch them off.
///
/// # Examples
///
/// ```
/// use syncrpc::server::Endpoints;
/// use syncrpc::Server;
///
/// let server = Server::builder()
///     .endpoints(Endpoints { info: false, ..Endpoints::default() })
///     .bind("127.0.0.1:0")?;
/// server.shutdown();
/// # Ok::<(), syncrpc::Error>(())
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Endpoints {
    /// `GET /healthz`: `200 SERVING`, or `503 NOT_SERVING` from the
    /// moment a shutdown starts (a Kubernetes readiness probe).
    pub healthz: bool,
    /// `GET /livez`: `200` while the process serves at all (a liveness
    /// probe).
    pub livez: bool,
    /// `GET /metrics`: the Prometheus text exposition.
    pub metrics: bool,
    /// `GET /`: a JSON document of the version, mode, uptime, services
    /// and limits.
    pub info: bool,
}

impl Default for Endpoints {
    fn default() -> Self {
        Endpoints {
            healthz: true,
            livez: true,
            metrics: true,
            info: true,
        }
    }
}

/// What the endpoints of one listener read, filled in as the server
/// starts: the server's state exists only after the listeners' routing
/// tables, which hold the endpoints.
pub(crate) struct EndpointState {
    enabled: Endpoints,
    health: Health,
    started: Instant,
    server: OnceLock<Weak<ServerShared>>,
    /// The listener's methods: full name, typed or raw, kind.
    methods: OnceLock<Vec<(&'static str, bool, MethodKind)>>,
}

impl EndpointState {
    pub fn new(enabled: Endpoints, health: Health) -> Arc<EndpointState> {
        Arc::new(EndpointState {
            enabled,
            health,
            started: Instant::now(),
            server: OnceLock::new(),
            methods: OnceLock::new(),
        })
    }

    /// Completes the state once the server and the listener's routing
    /// table exist.
    pub fn attach(&self, server: &Arc<ServerShared>, registry: &Registry) {
        let _ = self.server.set(Arc::downgrade(server));
        let _ = self.methods.set(registry.describe().collect());
    }

    fn server(&self) -> Result<Arc<ServerShared>, Status> {
        self.server
            .get()
            .and_then(Weak::upgrade)
            .ok_or_else(|| Status::unavailable("the server is not running"))
    }

    /// The service that serves them.
    pub fn service(self: &Arc<Self>) -> Service {
        let on = |enabled: bool, path: &'static str| {
            move || -> Result<(), Status> {
                if enabled {
                    Ok(())
                } else {
                    Err(Status::not_found(format!("{path} is switched off")))
                }
            }
        };
        let (s1, s2, s3, s4) = (self.clone(), self.clone(), self.clone(), self.clone());
        let (healthz, livez, metrics, info) = (
            on(self.enabled.healthz, "/healthz"),
            on(self.enabled.livez, "/livez"),
            on(self.enabled.metrics, "/metrics"),
            on(self.enabled.info, "/"),
        );
        Service::new(ENDPOINT_SERVICE)
            .raw_method("Healthz", move |_: &Context, _: Bytes| {
                healthz()?;
                match s1.health.status("") {
                    Some(ServingStatus::Serving) => Ok(Bytes::from_static(b"SERVING\n")),
                    _ => Err(Status::unavailable("NOT_SERVING")),
                }
            })
            .raw_method("Livez", move |_: &Context, _: Bytes| {
                livez()?;
                s2.server()?;
                Ok(Bytes::from_static(b"OK\n"))
            })
            .raw_method("Metrics", move |_: &Context, _: Bytes| {
                metrics()?;
                let server = s3.server()?;
                Ok(Bytes::from(server.telemetry.render(&server)))
            })
            .raw_method("Info", move |_: &Context, _: Bytes| {
                info()?;
                let server = s4.server()?;
                Ok(Bytes::from(s4.info(&server)))
            })
    }

    /// The `GET /` document.
    fn info(&self, server: &ServerShared) -> Vec<u8> {
        let c = &server.config;
        let mut services = serde_json::Map::new();
        for (name, typed, kind) in self.methods.get().into_iter().flatten() {
            let Some((service, method)) = name.strip_prefix('/').and_then(|n| n.split_once('/'))
            else {
                continue;
            };
            if service == ENDPOINT_SERVICE {
                continue;
            }
            let methods = services
                .entry(service.to_owned())
                .or_insert_with(|| serde_json::json!({}));
            methods[method] = serde_json::json!({
                "kind": kind.as_str(),
                "body": if *typed { "typed" } else { "raw" },
            });
        }
        let doc = serde_json::json!({
            "name": "syncrpc",
            "version": env!("CARGO_PKG_VERSION"),
            "mode": match c.mode { Mode::Event => "event", Mode::Thread => "thread" },
            "uptime_seconds": self.started.elapsed().as_secs_f64(),
            "status": self.health.status("").map_or("NOT_SERVING", ServingStatus::as_str),
            "services": services,
            "limits": {
                "max_body": c.limits.max_body,
                "max_meta": c.limits.max_meta,
                "max_body_depth": c.limits.max_body_depth,
                "max_in_flight_per_connection": c.limits.max_in_flight_per_connection,
                "max_pending_response_bytes": c.limits.max_pending_response_bytes,
                "max_buffered_request_bytes": c.limits.max_buffered_request_bytes,
                "max_connections": c.limits.max_connections,
            },
            "timeouts_ms": {
                "idle": c.timeouts.idle.as_millis() as u64,
                "frame": c.timeouts.frame.as_millis() as u64,
                "write_stall": c.timeouts.write_stall.as_millis() as u64,
                "drain_delay": c.timeouts.drain_delay.as_millis() as u64,
                "shutdown": c.timeouts.shutdown.as_millis() as u64,
            },
        });
        let mut out = serde_json::to_vec_pretty(&doc).unwrap_or_default();
        out.push(b'\n');
        out
    }
}

//! The built-in health service, in the spirit of gRPC's `grpc.health.v1`.
//!
//! Every listener serves `/syncrpc.Health/Check` unless the server was
//! built with [`ServerBuilder::health_service(false)`](super::ServerBuilder::health_service)
//! (or registers a service named `syncrpc.Health` of its own there). The
//! request body is `{"service": str}` (MessagePack); the answer is
//! `{"status": "SERVING" | "NOT_SERVING"}`:
//!
//! - `service` empty: the status of the whole server;
//! - `service` naming a registered service, or one the application set a
//!   status for: that service's status;
//! - any other name: the call fails with `NOT_FOUND`, as gRPC's `Check`
//!   does.
//!
//! Everything starts `SERVING`. The application changes a status with
//! [`Health::set_serving`]; a shutdown turns every status to `NOT_SERVING`
//! first thing (before its drain delay), and from then on ignores
//! changes. The health methods go through the server's filters like any
//! other method.

use std::collections::HashMap;
use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use serde::{Deserialize, Serialize};

use super::service::Service;
use crate::context::Context;
use crate::descriptor::{no_schema, BodyKind, MethodDescriptor, MethodKind};
use crate::status::Status;

/// The name of the health service.
pub const HEALTH_SERVICE: &str = "syncrpc.Health";

/// The full name of its `Check` method.
pub const HEALTH_CHECK_METHOD: &str = "/syncrpc.Health/Check";

/// Whether a server or a service takes requests, as
/// `/syncrpc.Health/Check` reports it (`"SERVING"` or `"NOT_SERVING"` on
/// the wire, gRPC's names).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum ServingStatus {
    /// Send it requests.
    Serving,
    /// Do not: it is starting, unhealthy or shutting down.
    NotServing,
}

impl ServingStatus {
    /// The wire name, `"SERVING"` or `"NOT_SERVING"`.
    pub fn as_str(self) -> &'static str {
        match self {
            ServingStatus::Serving => "SERVING",
            ServingStatus::NotServing => "NOT_SERVING",
        }
    }
}

impl fmt::Display for ServingStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The body of a `/syncrpc.Health/Check` request.
///
/// # Examples
///
/// ```
/// use syncrpc::server::HealthCheckRequest;
///
/// let mut body = Vec::new();
/// syncrpc::codec::encode_body(&HealthCheckRequest::server(), &mut body).unwrap();
/// assert_eq!(body, b"\x81\xa7service\xa0");
/// ```
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct HealthCheckRequest {
    /// The service to ask about; empty for the whole server.
    #[serde(default)]
    pub service: String,
}

impl HealthCheckRequest {
    /// A request about the whole server.
    pub fn server() -> HealthCheckRequest {
        HealthCheckRequest::default()
    }

    /// A request about one service.
    pub fn service(name: impl Into<String>) -> HealthCheckRequest {
        HealthCheckRequest {
            service: name.into(),
        }
    }
}

/// The body of a `/syncrpc.Health/Check` answer.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct HealthCheckResponse {
    /// The status asked about.
    pub status: ServingStatus,
}

struct Inner {
    statuses: Mutex<HashMap<String, ServingStatus>>,
    /// Set by the shutdown: everything stays NOT_SERVING.
    frozen: AtomicBool,
}

/// The serving statuses the health service reports: the whole server's
/// (under `""`) and each service's.
///
/// Clones share one table; it is `Send + Sync`. Get it from
/// [`Server::health`](crate::Server::health) or
/// [`ServerHandle::health`](crate::ServerHandle::health).
///
/// # Examples
///
/// ```
/// use syncrpc::server::ServingStatus;
/// use syncrpc::{Context, Server, Service, Status};
///
/// let users = Service::new("users.Users").method("Get", |_: &Context, id: u64| Ok::<_, Status>(id));
/// let server = Server::builder().service(users).bind("127.0.0.1:0")?;
/// let health = server.health().clone();
/// assert_eq!(health.status(""), Some(ServingStatus::Serving));
///
/// // The database went away: stop taking users.Users traffic.
/// health.set_serving("users.Users", false);
/// assert_eq!(health.status("users.Users"), Some(ServingStatus::NotServing));
/// assert_eq!(health.status("no.Such"), None);
///
/// server.shutdown();
/// assert_eq!(health.status(""), Some(ServingStatus::NotServing));
/// # Ok::<(), syncrpc::Error>(())
/// ```
#[derive(Clone)]
pub struct Health {
    inner: Arc<Inner>,
}

impl Health {
    /// A table where the server (`""`) and each of `services` is SERVING.
    pub(crate) fn new<'a>(services: impl IntoIterator<Item = &'a str>) -> Health {
        let mut statuses = HashMap::new();
        statuses.insert(String::new(), ServingStatus::Serving);
        for s in services {
            statuses.insert(s.to_owned(), ServingStatus::Serving);
        }
        Health {
            inner: Arc::new(Inner {
                statuses: Mutex::new(statuses),
                frozen: AtomicBool::new(false),
            }),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, ServingStatus>> {
        self.inner
            .statuses
            .lock()
            .unwrap_or_else(|e| e.into_inner())
    }

    /// Sets whether `service` (or, for `""`, the whole server) is serving.
    /// A name that is not a registered service becomes known to the
    /// health service from now on. Ignored once the server is shutting
    /// down: it then reports `NOT_SERVING` for everything.
    pub fn set_serving(&self, service: &str, serving: bool) {
        let status = if serving {
            ServingStatus::Serving
        } else {
            ServingStatus::NotServing
        };
        let mut statuses = self.lock();
        // Checked under the lock, so a change cannot slip in after the
        // shutdown's sweep.
        if self.inner.frozen.load(Ordering::SeqCst) {
            log::debug!("health: {service:?} stays NOT_SERVING, the server is shutting down");
            return;
        }
        statuses.insert(service.to_owned(), status);
    }

    /// The status of `service` (`""` for the whole server), or `None` for
    /// a name the health service does not know.
    pub fn status(&self, service: &str) -> Option<ServingStatus> {
        self.lock().get(service).copied()
    }

    /// True while the whole server reports SERVING.
    pub fn is_serving(&self) -> bool {
        self.status("") == Some(ServingStatus::Serving)
    }

    /// The answer to a `Check` for `service`.
    fn check(&self, service: &str) -> Result<HealthCheckResponse, Status> {
        match self.status(service) {
            Some(status) => Ok(HealthCheckResponse { status }),
            None => Err(Status::not_found(format!("unknown service {service:?}"))),
        }
    }

    /// Everything NOT_SERVING, for good: the shutdown's first step.
    pub(crate) fn shut_down(&self) {
        let mut statuses = self.lock();
        self.inner.frozen.store(true, Ordering::SeqCst);
        for status in statuses.values_mut() {
            *status = ServingStatus::NotServing;
        }
    }

    /// The `syncrpc.Health` service answering from this table.
    pub(crate) fn service(&self) -> Service {
        let health = self.clone();
        Service::new(HEALTH_SERVICE)
            .method("Check", move |_ctx: &Context, req: HealthCheckRequest| {
                health.check(&req.service)
            })
            .describe(MethodDescriptor {
                service: HEALTH_SERVICE,
                name: "Check",
                path: HEALTH_CHECK_METHOD,
                kind: MethodKind::Unary,
                body: BodyKind::Typed,
                request_type: "HealthCheckRequest",
                response_type: "HealthCheckResponse",
                request_schema: no_schema,
                response_schema: no_schema,
            })
    }
}

impl fmt::Debug for Health {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Health")
            .field("statuses", &*self.lock())
            .field("shutting_down", &self.inner.frozen.load(Ordering::SeqCst))
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_serialize_with_grpc_names() {
        let mut out = Vec::new();
        crate::codec::encode_body(
            &HealthCheckResponse {
                status: ServingStatus::NotServing,
            },
            &mut out,
        )
        .unwrap();
        assert_eq!(out, b"\x81\xa6status\xabNOT_SERVING");
        let back: HealthCheckResponse = crate::codec::decode_body(&out, 8).unwrap();
        assert_eq!(back.status, ServingStatus::NotServing);
        let empty: HealthCheckRequest = crate::codec::decode_body(b"\x80", 8).unwrap();
        assert_eq!(empty, HealthCheckRequest::server());
    }

    #[test]
    fn unknown_services_are_not_found_and_shutdown_freezes_everything() {
        let h = Health::new(["a.A"]);
        assert_eq!(h.check("a.A").unwrap().status, ServingStatus::Serving);
        let err = h.check("b.B").unwrap_err();
        assert_eq!(err.code(), crate::Code::NOT_FOUND);
        assert_eq!(err.message(), "unknown service \"b.B\"");
        h.set_serving("b.B", false);
        assert_eq!(h.status("b.B"), Some(ServingStatus::NotServing));
        h.shut_down();
        h.set_serving("a.A", true);
        h.set_serving("", true);
        assert_eq!(h.status("a.A"), Some(ServingStatus::NotServing));
        assert!(!h.is_serving());
    }
}

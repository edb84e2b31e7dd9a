//! The built-in reflection service, `syncrpc.Reflection`: what a listener
//! serves, for tools (the `syncrpc` command line's `list`, `describe` and
//! `call`) and for people at a shell.
//!
//! Every listener serves it unless the server was built with
//! [`ServerBuilder::reflection_service(false)`](super::ServerBuilder::reflection_service)
//! (or registers a service named `syncrpc.Reflection` of its own there).
//! It reports the services of its own listener, itself and the health
//! service included:
//!
//! | method | request | answer |
//! |---|---|---|
//! | `List` | `{"service": str}`, empty for all | `{"services": [ServiceInfo]}`, schemas left out |
//! | `Describe` | `{"method": "/service/method"}` | one [`MethodInfo`], schemas included |
//!
//! An unknown service or method is `NOT_FOUND`, with the names that do
//! exist in the message. The methods go through the server's filters like
//! any other.
//!
//! Reflection shows names, types and timeouts, nothing more; a server
//! whose method list is itself a secret turns it off.

use std::collections::HashMap;

use serde::{Deserialize, Serialize};

use crate::context::Context;
use crate::descriptor::{BodyKind, MethodKind};
use crate::status::Status;

/// The name of the reflection service.
pub const REFLECTION_SERVICE: &str = "syncrpc.Reflection";

/// One method, as reflection reports it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MethodInfo {
    /// Its name within the service, `Say`.
    pub name: String,
    /// Its full name, `/echo.Echo/Say`.
    pub path: String,
    /// How it is called.
    pub kind: MethodKind,
    /// How its bodies are encoded.
    pub body: BodyKind,
    /// Its timeout in milliseconds (the earlier of the method's and the
    /// service's), if it has one.
    pub timeout_ms: Option<u64>,
    /// The request type's name, as declared or as Rust names it.
    pub request_type: String,
    /// The response type's name.
    pub response_type: String,
    /// The request type's JSON Schema (JSON text), when it offers one.
    /// Only `Describe` sends schemas.
    #[serde(default)]
    pub request_schema: Option<String>,
    /// The response type's JSON Schema, when it offers one.
    #[serde(default)]
    pub response_schema: Option<String>,
}

/// One service, as reflection reports it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServiceInfo {
    /// Its name, `echo.Echo`.
    pub name: String,
    /// Its methods, in the order they were added.
    pub methods: Vec<MethodInfo>,
}

/// The body of a `List` request.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ListRequest {
    /// The service to list; empty for every service.
    #[serde(default)]
    pub service: String,
}

/// The answer to `List`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ListResponse {
    /// The services listed, by name.
    pub services: Vec<ServiceInfo>,
}

/// The body of a `Describe` request.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DescribeRequest {
    /// The method's full name, `/service/method`.
    pub method: String,
}

crate::service! {
    /// The reflection service's methods; the server implements them.
    pub service Reflection("syncrpc.Reflection") client ReflectionClient {
        /// The listener's services and their methods, without schemas.
        unary List => fn list(ListRequest) -> ListResponse;
        /// One method, with its schemas.
        unary Describe => fn describe(DescribeRequest) -> MethodInfo;
    }
}

/// The services of one listener, answering `syncrpc.Reflection`.
pub(crate) struct Catalog {
    /// By name, schemas included.
    services: Vec<ServiceInfo>,
    paths: HashMap<String, (usize, usize)>,
}

impl Catalog {
    /// A catalog of `services` and of the reflection service itself.
    pub(crate) fn new(mut services: Vec<ServiceInfo>) -> Catalog {
        let own = Catalog {
            services: Vec::new(),
            paths: HashMap::new(),
        };
        services.push(own.into_service().info(true));
        services.sort_by(|a, b| a.name.cmp(&b.name));
        let mut paths = HashMap::new();
        for (i, s) in services.iter().enumerate() {
            for (j, m) in s.methods.iter().enumerate() {
                paths.insert(m.path.clone(), (i, j));
            }
        }
        Catalog { services, paths }
    }

    fn names(&self) -> String {
        let names: Vec<&str> = self.services.iter().map(|s| s.name.as_str()).collect();
        names.join(", ")
    }
}

impl Reflection for Catalog {
    fn list(&self, _ctx: &Context, req: ListRequest) -> Result<ListResponse, Status> {
        let services = self
            .services
            .iter()
            .filter(|s| req.service.is_empty() || s.name == req.service)
            .map(|s| ServiceInfo {
                name: s.name.clone(),
                methods: s
                    .methods
                    .iter()
                    .map(|m| MethodInfo {
                        request_schema: None,
                        response_schema: None,
                        ..m.clone()
                    })
                    .collect(),
            })
            .collect::<Vec<_>>();
        if services.is_empty() {
            return Err(Status::not_found(format!(
                "unknown service {:?}; services: {}",
                req.service,
                self.names()
            )));
        }
        Ok(ListResponse { services })
    }

    fn describe(&self, _ctx: &Context, req: DescribeRequest) -> Result<MethodInfo, Status> {
        if let Some(&(i, j)) = self.paths.get(&req.method) {
            return Ok(self.services[i].methods[j].clone());
        }
        let service = req
            .method
            .strip_prefix('/')
            .and_then(|rest| rest.split_once('/'))
            .map(|(s, _)| s);
        match service.and_then(|name| self.services.iter().find(|s| s.name == name)) {
            Some(s) => {
                let methods: Vec<&str> = s.methods.iter().map(|m| m.name.as_str()).collect();
                Err(Status::not_found(format!(
                    "unknown method {}; {} has: {}",
                    req.method,
                    s.name,
                    methods.join(", ")
                )))
            }
            None => Err(Status::not_found(format!(
                "unknown method {:?}; services: {}",
                req.method,
                self.names()
            ))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Service;
    use std::time::Duration;

    fn catalog() -> Catalog {
        let svc = Service::new("a.A")
            .method("Get", |_: &Context, x: u64| Ok::<_, Status>(x))
            .raw_method("Blob", |_: &Context, b: bytes::Bytes| Ok::<_, Status>(b))
            .method_timeout("Get", Duration::from_millis(1500))
            .timeout(Duration::from_secs(2));
        Catalog::new(vec![svc.info(true)])
    }

    #[test]
    fn lists_every_service_sorted_with_itself() {
        let c = catalog();
        let all = c
            .list(&Context::background(), ListRequest::default())
            .unwrap();
        let names: Vec<&str> = all.services.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(names, ["a.A", REFLECTION_SERVICE]);
        let get = &all.services[0].methods[0];
        assert_eq!(get.path, "/a.A/Get");
        assert_eq!(get.kind, MethodKind::Unary);
        assert_eq!(get.body, BodyKind::Typed);
        assert_eq!(get.timeout_ms, Some(1500));
        assert_eq!(get.request_type, "u64");
        let blob = &all.services[0].methods[1];
        assert_eq!((blob.body, blob.timeout_ms), (BodyKind::Raw, Some(2000)));
        let own = &all.services[1].methods;
        assert_eq!(own[0].request_type, "ListRequest");
        assert_eq!(own[1].response_type, "MethodInfo");
    }

    #[test]
    fn unknown_names_are_not_found_with_the_known_ones() {
        let c = catalog();
        let ctx = Context::background();
        let err = c
            .list(
                &ctx,
                ListRequest {
                    service: "b.B".into(),
                },
            )
            .unwrap_err();
        assert_eq!(err.code(), crate::Code::NOT_FOUND);
        assert_eq!(
            err.message(),
            "unknown service \"b.B\"; services: a.A, syncrpc.Reflection"
        );
        let err = c
            .describe(
                &ctx,
                DescribeRequest {
                    method: "/a.A/Put".into(),
                },
            )
            .unwrap_err();
        assert_eq!(err.message(), "unknown method /a.A/Put; a.A has: Get, Blob");
        let err = c
            .describe(
                &ctx,
                DescribeRequest {
                    method: "nonsense".into(),
                },
            )
            .unwrap_err();
        assert_eq!(err.code(), crate::Code::NOT_FOUND);
    }
}

//! Services, their methods, and the registry a listener routes requests by.

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use serde::de::DeserializeOwned;
use serde::Serialize;

use super::handler::{BodyLimits, Raw, RawHandler, Typed, UnaryHandler};
use super::pace::Pace;
use super::reflection::{MethodInfo, ServiceInfo};
use super::stream::{
    BidiStreamHandler, ClientStreamHandler, RawBidiStreamHandler, RawClientStreamHandler,
    RawServerStreamHandler, ServerStreamHandler, StreamEndpoint,
};
use crate::descriptor::{no_schema, BodyKind, Method, MethodDescriptor, MethodKind, SchemaFn};
use crate::filter::{Endpoint, Filter};
use crate::hash::FastHash;
use crate::status::Status;

type MakeEndpoint = Box<dyn FnOnce(BodyLimits) -> Arc<dyn Endpoint> + Send>;

struct MethodDef {
    name: String,
    timeout: Option<Duration>,
    make: MakeEndpoint,
    shape: Shape,
}

/// What reflection says of a method, apart from its name and timeout.
#[derive(Clone, Copy)]
struct Shape {
    kind: MethodKind,
    body: BodyKind,
    request_type: &'static str,
    response_type: &'static str,
    request_schema: SchemaFn,
    response_schema: SchemaFn,
}

impl Shape {
    fn typed<Req, Resp>() -> Shape {
        Shape::typed_as::<Req, Resp>(MethodKind::Unary)
    }

    fn typed_as<Req, Resp>(kind: MethodKind) -> Shape {
        Shape {
            kind,
            body: BodyKind::Typed,
            request_type: std::any::type_name::<Req>(),
            response_type: std::any::type_name::<Resp>(),
            request_schema: no_schema,
            response_schema: no_schema,
        }
    }

    fn raw() -> Shape {
        Shape::raw_as(MethodKind::Unary)
    }

    fn raw_as(kind: MethodKind) -> Shape {
        Shape {
            kind,
            body: BodyKind::Raw,
            request_type: "bytes",
            response_type: "bytes",
            request_schema: no_schema,
            response_schema: no_schema,
        }
    }
}

/// Names a method of a [`Service`] for its options: the name (`"Say"`),
/// or the typed descriptor [`service!`](crate::service!) generates
/// (`EchoClient::Say`), which cannot name a method the service lacks.
pub trait MethodName {
    /// The method's name within its service.
    fn method_name(&self) -> &str;

    /// The service it belongs to, when known.
    fn service_name(&self) -> Option<&str> {
        None
    }
}

impl MethodName for &str {
    fn method_name(&self) -> &str {
        self
    }
}

impl MethodName for String {
    fn method_name(&self) -> &str {
        self
    }
}

impl MethodName for MethodDescriptor {
    fn method_name(&self) -> &str {
        self.name
    }

    fn service_name(&self) -> Option<&str> {
        Some(self.service)
    }
}

impl<S, Req, Resp> MethodName for Method<S, Req, Resp> {
    fn method_name(&self) -> &str {
        self.descriptor().name
    }

    fn service_name(&self) -> Option<&str> {
        Some(self.descriptor().service)
    }
}

/// A named group of methods, reached as `/{service}/{method}`.
///
/// A service carries its own timeout and filters; both apply to each of
/// its methods, after the server's.
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use syncrpc::{Context, Service, Status};
///
/// #[derive(serde::Serialize, serde::Deserialize)]
/// struct Say { text: String }
///
/// let echo = Service::new("echo.Echo")
///     .method("Say", |_ctx: &Context, req: Say| Ok::<_, Status>(req))
///     .method_timeout("Say", Duration::from_millis(500))
///     .timeout(Duration::from_secs(2));
/// assert_eq!(echo.name(), "echo.Echo");
/// assert_eq!(echo.method_names().collect::<Vec<_>>(), ["Say"]);
/// ```
pub struct Service {
    name: String,
    methods: Vec<MethodDef>,
    timeout: Option<Duration>,
    filters: Vec<Arc<dyn Filter>>,
}

fn check_name(kind: &str, name: &str) {
    assert!(
        !name.is_empty() && !name.contains('/'),
        "invalid {kind} name {name:?}: it must be non-empty and contain no '/'"
    );
}

impl Service {
    /// A service named `name` (e.g. `"echo.Echo"`), with no methods yet.
    ///
    /// # Panics
    ///
    /// If `name` is empty or contains `/`.
    pub fn new(name: impl Into<String>) -> Service {
        let name = name.into();
        check_name("service", &name);
        Service {
            name,
            methods: Vec::new(),
            timeout: None,
            filters: Vec::new(),
        }
    }

    /// The service's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The names of its methods, in the order they were added.
    pub fn method_names(&self) -> impl Iterator<Item = &str> {
        self.methods.iter().map(|m| m.name.as_str())
    }

    fn add(mut self, name: String, make: MakeEndpoint, shape: Shape) -> Service {
        check_name("method", &name);
        assert!(
            self.methods.iter().all(|m| m.name != name),
            "method {name:?} defined twice in service {:?}",
            self.name
        );
        self.methods.push(MethodDef {
            name,
            timeout: None,
            make,
            shape,
        });
        self
    }

    /// Adds a method with a typed handler: the request body is decoded
    /// from MessagePack into `Req`, the `Resp` returned is encoded back.
    ///
    /// # Panics
    ///
    /// If `name` is empty, contains `/`, or is already a method here.
    pub fn method<Req, Resp, H>(self, name: impl Into<String>, handler: H) -> Service
    where
        H: UnaryHandler<Req, Resp>,
        Req: DeserializeOwned + 'static,
        Resp: Serialize + 'static,
    {
        self.add(
            name.into(),
            Box::new(move |limits| Arc::new(Typed::new(handler, limits))),
            Shape::typed::<Req, Resp>(),
        )
    }

    /// Adds a method with a raw handler: bodies are bytes (encoding 1),
    /// passed through untouched apart from decompression.
    ///
    /// # Panics
    ///
    /// As [`Service::method`].
    pub fn raw_method<H: RawHandler>(self, name: impl Into<String>, handler: H) -> Service {
        self.add(
            name.into(),
            Box::new(move |limits| Arc::new(Raw::new(handler, limits))),
            Shape::raw(),
        )
    }

    /// Adds a server-streaming method: one request of type `Req`, then
    /// the handler sends any number of `Resp` messages through its
    /// [`Sink`](super::Sink); what it returns ends the stream. The stream
    /// holds a worker until the handler returns.
    ///
    /// # Examples
    ///
    /// ```
    /// use syncrpc::server::Sink;
    /// use syncrpc::{Context, Service, Status};
    ///
    /// let svc = Service::new("echo.Echo").server_stream(
    ///     "Count",
    ///     |_ctx: &Context, n: u32, sink: &Sink<u32>| {
    ///         for i in 0..n {
    ///             sink.send(&i)?;
    ///         }
    ///         Ok::<_, Status>(())
    ///     },
    /// );
    /// # let _ = svc;
    /// ```
    ///
    /// # Panics
    ///
    /// As [`Service::method`].
    pub fn server_stream<Req, Resp, H>(self, name: impl Into<String>, handler: H) -> Service
    where
        H: ServerStreamHandler<Req, Resp>,
        Req: DeserializeOwned + 'static,
        Resp: Serialize + 'static,
    {
        self.add(
            name.into(),
            Box::new(move |_| Arc::new(StreamEndpoint::server(handler))),
            Shape::typed_as::<Req, Resp>(MethodKind::ServerStream),
        )
    }

    /// Adds a client-streaming method: the handler reads any number of
    /// `Req` messages from its [`Incoming`](super::Incoming) and returns
    /// one `Resp`.
    ///
    /// # Examples
    ///
    /// ```
    /// use syncrpc::server::Incoming;
    /// use syncrpc::{Context, Service, Status};
    ///
    /// let svc = Service::new("echo.Echo").client_stream(
    ///     "Sum",
    ///     |_ctx: &Context, msgs: Incoming<i64>| {
    ///         msgs.sum::<Result<i64, Status>>()
    ///     },
    /// );
    /// # let _ = svc;
    /// ```
    ///
    /// # Panics
    ///
    /// As [`Service::method`].
    pub fn client_stream<Req, Resp, H>(self, name: impl Into<String>, handler: H) -> Service
    where
        H: ClientStreamHandler<Req, Resp>,
        Req: DeserializeOwned + 'static,
        Resp: Serialize + 'static,
    {
        self.add(
            name.into(),
            Box::new(move |_| Arc::new(StreamEndpoint::client(handler))),
            Shape::typed_as::<Req, Resp>(MethodKind::ClientStream),
        )
    }

    /// Adds a bidirectional streaming method: the handler reads `Req`
    /// messages from its [`Incoming`](super::Incoming) and sends `Resp`
    /// messages through its [`Sink`](super::Sink), in any order.
    ///
    /// # Examples
    ///
    /// ```
    /// use syncrpc::server::{Incoming, Sink};
    /// use syncrpc::{Context, Service, Status};
    ///
    /// let svc = Service::new("echo.Echo").bidi_stream(
    ///     "Chat",
    ///     |_ctx: &Context, msgs: Incoming<String>, sink: &Sink<String>| {
    ///         for msg in msgs {
    ///             sink.send(&msg?)?;
    ///         }
    ///         Ok::<_, Status>(())
    ///     },
    /// );
    /// # let _ = svc;
    /// ```
    ///
    /// # Panics
    ///
    /// As [`Service::method`].
    pub fn bidi_stream<Req, Resp, H>(self, name: impl Into<String>, handler: H) -> Service
    where
        H: BidiStreamHandler<Req, Resp>,
        Req: DeserializeOwned + 'static,
        Resp: Serialize + 'static,
    {
        self.add(
            name.into(),
            Box::new(move |_| Arc::new(StreamEndpoint::bidi(handler))),
            Shape::typed_as::<Req, Resp>(MethodKind::BidiStream),
        )
    }

    /// [`Service::server_stream`] over raw bytes (encoding 1).
    ///
    /// # Panics
    ///
    /// As [`Service::method`].
    pub fn raw_server_stream<H: RawServerStreamHandler>(
        self,
        name: impl Into<String>,
        handler: H,
    ) -> Service {
        self.add(
            name.into(),
            Box::new(move |_| Arc::new(StreamEndpoint::raw_server(handler))),
            Shape::raw_as(MethodKind::ServerStream),
        )
    }

    /// [`Service::client_stream`] over raw bytes (encoding 1).
    ///
    /// # Panics
    ///
    /// As [`Service::method`].
    pub fn raw_client_stream<H: RawClientStreamHandler>(
        self,
        name: impl Into<String>,
        handler: H,
    ) -> Service {
        self.add(
            name.into(),
            Box::new(move |_| Arc::new(StreamEndpoint::raw_client(handler))),
            Shape::raw_as(MethodKind::ClientStream),
        )
    }

    /// [`Service::bidi_stream`] over raw bytes (encoding 1).
    ///
    /// # Panics
    ///
    /// As [`Service::method`].
    pub fn raw_bidi_stream<H: RawBidiStreamHandler>(
        self,
        name: impl Into<String>,
        handler: H,
    ) -> Service {
        self.add(
            name.into(),
            Box::new(move |_| Arc::new(StreamEndpoint::raw_bidi(handler))),
            Shape::raw_as(MethodKind::BidiStream),
        )
    }

    /// Sets a timeout for one method, counted from when the request was
    /// read. The effective deadline is the earliest of the caller's, the
    /// method's and the service's. The method is named by its name or by
    /// its typed descriptor (see [`MethodName`]).
    ///
    /// # Panics
    ///
    /// If the service has no method `method`, or `method` is a descriptor
    /// of another service.
    pub fn method_timeout(mut self, method: impl MethodName, timeout: Duration) -> Service {
        self.def_mut(&method).timeout = Some(timeout);
        self
    }

    /// States what reflection reports of the method `descriptor` names:
    /// its kind, body and type names, and its types' JSON Schemas.
    /// [`service!`](crate::service!) does this for every method it
    /// registers; [`Service::method`] and [`Service::raw_method`] alone
    /// report a unary method with the Rust names of its types.
    ///
    /// # Panics
    ///
    /// If the service has no method `descriptor.name`, or the descriptor
    /// is of another service, or states a raw body for a typed method or
    /// the other way round.
    pub fn describe(mut self, descriptor: MethodDescriptor) -> Service {
        let def = self.def_mut(&descriptor);
        assert!(
            def.shape.body == descriptor.body,
            "method {:?} has {} bodies, not {} as its descriptor says",
            descriptor.name,
            def.shape.body,
            descriptor.body
        );
        assert!(
            def.shape.kind.is_stream() == descriptor.kind.is_stream()
                && (!def.shape.kind.is_stream() || def.shape.kind == descriptor.kind),
            "method {:?} is {}, not {} as its descriptor says",
            descriptor.name,
            def.shape.kind,
            descriptor.kind
        );
        def.shape = Shape {
            kind: descriptor.kind,
            body: descriptor.body,
            request_type: descriptor.request_type,
            response_type: descriptor.response_type,
            request_schema: descriptor.request_schema,
            response_schema: descriptor.response_schema,
        };
        self
    }

    fn def_mut(&mut self, method: &dyn MethodName) -> &mut MethodDef {
        let service = &self.name;
        if let Some(other) = method.service_name().filter(|s| s != service) {
            panic!(
                "method {other}/{} is not a method of service {service:?}",
                method.method_name()
            );
        }
        let name = method.method_name();
        self.methods
            .iter_mut()
            .find(|m| m.name == name)
            .unwrap_or_else(|| panic!("service {service:?} has no method {name:?}"))
    }

    /// What reflection reports of this service: each method's name, kind,
    /// body, timeout and types, with their schemas when `schemas`.
    pub(crate) fn info(&self, schemas: bool) -> ServiceInfo {
        let methods = self
            .methods
            .iter()
            .map(|m| {
                let s = &m.shape;
                MethodInfo {
                    name: m.name.clone(),
                    path: format!("/{}/{}", self.name, m.name),
                    kind: s.kind,
                    body: s.body,
                    timeout_ms: min_timeout(m.timeout, self.timeout)
                        .map(|t| u64::try_from(t.as_millis()).unwrap_or(u64::MAX)),
                    request_type: s.request_type.to_owned(),
                    response_type: s.response_type.to_owned(),
                    request_schema: if schemas { (s.request_schema)() } else { None },
                    response_schema: if schemas { (s.response_schema)() } else { None },
                }
            })
            .collect();
        ServiceInfo {
            name: self.name.clone(),
            methods,
        }
    }

    /// Sets a timeout for every method of the service. No timeout by
    /// default.
    pub fn timeout(mut self, timeout: Duration) -> Service {
        self.timeout = Some(timeout);
        self
    }

    /// Appends a filter that runs around every method of this service,
    /// after the server's filters.
    pub fn filter(mut self, filter: impl Filter) -> Service {
        self.filters.push(Arc::new(filter));
        self
    }
}

impl fmt::Debug for Service {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Service")
            .field("name", &self.name)
            .field("methods", &self.method_names().collect::<Vec<_>>())
            .field("timeout", &self.timeout)
            .field("filters", &self.filters.len())
            .finish()
    }
}

/// One routable method, with everything dispatch needs.
pub(crate) struct MethodEntry {
    /// `/{service}/{method}`, shared with every request's context.
    pub full_name: &'static str,
    /// The earlier of the method's and the service's timeouts.
    pub timeout: Option<Duration>,
    /// Server filters, then service filters.
    pub filters: Box<[Arc<dyn Filter>]>,
    pub endpoint: Arc<dyn Endpoint>,
    /// How it is called, as reflection says.
    pub kind: MethodKind,
    /// How long its handler usually runs.
    pub pace: Pace,
}

/// `name`, stored once for the life of the process. A request's context
/// names its method with no reference count to take and drop; the names a
/// program serves are few and fixed, so keeping each one costs little.
fn intern(name: String) -> &'static str {
    static NAMES: OnceLock<Mutex<HashSet<&'static str>>> = OnceLock::new();
    let mut names = NAMES
        .get_or_init(Mutex::default)
        .lock()
        .unwrap_or_else(|e| e.into_inner());
    if let Some(&known) = names.get(name.as_str()) {
        return known;
    }
    let name: &'static str = Box::leak(name.into_boxed_str());
    names.insert(name);
    name
}

/// A method's place in its [`Registry`]: what a request carries to the
/// worker instead of a counted reference.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct MethodId(usize);

impl MethodId {
    /// The method at `index` of its registry.
    #[cfg(test)]
    pub(crate) fn new(index: usize) -> MethodId {
        MethodId(index)
    }

    /// Its place in its registry.
    pub(crate) fn index(self) -> usize {
        self.0
    }
}

/// The methods one listener serves, by full name.
pub(crate) struct Registry {
    /// Each name's place in `entries`.
    methods: HashMap<Box<str>, MethodId, FastHash>,
    entries: Vec<MethodEntry>,
    services: Vec<String>,
}

fn min_timeout(a: Option<Duration>, b: Option<Duration>) -> Option<Duration> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

impl Registry {
    /// Builds the routing table of `services`, each method behind
    /// `server_filters` and then its service's filters.
    pub(crate) fn new(
        services: Vec<Service>,
        server_filters: &[Arc<dyn Filter>],
        limits: BodyLimits,
    ) -> Registry {
        let mut methods = HashMap::default();
        let mut entries = Vec::new();
        let mut names = Vec::with_capacity(services.len());
        for svc in services {
            let filters: Box<[Arc<dyn Filter>]> = server_filters
                .iter()
                .chain(svc.filters.iter())
                .cloned()
                .collect();
            for def in svc.methods {
                let full_name = intern(format!("/{}/{}", svc.name, def.name));
                let entry = MethodEntry {
                    full_name,
                    timeout: min_timeout(def.timeout, svc.timeout),
                    filters: filters.clone(),
                    endpoint: (def.make)(limits),
                    kind: def.shape.kind,
                    pace: Pace::new(),
                };
                methods.insert(Box::from(full_name), MethodId(entries.len()));
                entries.push(entry);
            }
            names.push(svc.name);
        }
        Registry {
            methods,
            entries,
            services: names,
        }
    }

    /// Every method's full name, in [`MethodId`] order.
    pub(crate) fn names(&self) -> impl Iterator<Item = &'static str> + '_ {
        self.entries.iter().map(|e| e.full_name)
    }

    /// Every method's full name, whether it takes MessagePack (typed) or
    /// raw bytes, and its kind, in [`MethodId`] order.
    pub(crate) fn describe(&self) -> impl Iterator<Item = (&'static str, bool, MethodKind)> + '_ {
        self.entries.iter().map(|e| {
            (
                e.full_name,
                e.endpoint.encoding() == crate::codec::Encoding::MsgPack,
                e.kind,
            )
        })
    }

    /// The method `id` names.
    pub(crate) fn method(&self, id: MethodId) -> &MethodEntry {
        &self.entries[id.0]
    }

    /// [`Registry::lookup`], trying first the method `last` remembers (and
    /// remembering the one found): a connection usually calls the same
    /// method again, and comparing one name costs less than hashing it.
    pub(crate) fn lookup_after(
        &self,
        name: &str,
        last: &AtomicUsize,
    ) -> Result<(MethodId, &MethodEntry), Status> {
        let i = last.load(Ordering::Relaxed);
        if let Some(m) = self.entries.get(i).filter(|m| m.full_name == name) {
            return Ok((MethodId(i), m));
        }
        let found = self.lookup(name)?;
        last.store(found.0 .0, Ordering::Relaxed);
        Ok(found)
    }

    /// The method named `name`, or the UNIMPLEMENTED status that answers a
    /// request for it.
    pub(crate) fn lookup(&self, name: &str) -> Result<(MethodId, &MethodEntry), Status> {
        if let Some(&id) = self.methods.get(name) {
            return Ok((id, self.method(id)));
        }
        let mut parts = name.strip_prefix('/').map(|rest| rest.split('/'));
        let well_formed = match &mut parts {
            Some(p) => {
                let segs: [Option<&str>; 3] = [p.next(), p.next(), p.next()];
                matches!(segs, [Some(s), Some(m), None] if !s.is_empty() && !m.is_empty())
            }
            None => false,
        };
        if !well_formed {
            return Err(Status::unimplemented(format!(
                "malformed method name {name:?}: expected /service/method"
            )));
        }
        let service = name[1..].split('/').next().unwrap_or_default();
        if self.services.iter().any(|s| s == service) {
            Err(Status::unimplemented(format!("unknown method {name}")))
        } else {
            Err(Status::unimplemented(format!(
                "unknown service {service} (method {name})"
            )))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::DEFAULT_MAX_BODY_DEPTH;
    use crate::context::Context;
    use crate::status::Code;

    fn registry() -> Registry {
        let svc = Service::new("echo.Echo")
            .method("Say", |_: &Context, s: String| Ok::<_, Status>(s))
            .method("Hear", |_: &Context, s: String| Ok::<_, Status>(s))
            .method_timeout("Say", Duration::from_secs(3))
            .timeout(Duration::from_secs(1));
        Registry::new(
            vec![svc],
            &[],
            BodyLimits {
                max_body: 1024,
                max_depth: DEFAULT_MAX_BODY_DEPTH,
            },
        )
    }

    #[test]
    fn a_method_name_is_stored_once() {
        let a = intern("/intern.Test/Once".to_owned());
        let b = intern(String::from("/intern.Test/Once"));
        assert!(std::ptr::eq(a, b));
        assert_eq!(a, "/intern.Test/Once");
    }

    #[test]
    fn routes_by_full_name_with_the_earliest_timeout() {
        let r = registry();
        let (id, m) = r.lookup("/echo.Echo/Say").unwrap();
        assert!(std::ptr::eq(r.method(id), m));
        // The remembered method, right or wrong, gives the same answers.
        let last = AtomicUsize::new(usize::MAX);
        for name in [
            "/echo.Echo/Say",
            "/echo.Echo/Say",
            "/echo.Echo/Hear",
            "/echo.Echo/Say",
        ] {
            let (id, m) = r.lookup_after(name, &last).unwrap();
            assert_eq!(m.full_name, name);
            assert_eq!(last.load(Ordering::Relaxed), id.0);
        }
        assert!(r.lookup_after("/echo.Echo/Nope", &last).is_err());
        assert_eq!(m.full_name, "/echo.Echo/Say");
        assert_eq!(m.timeout, Some(Duration::from_secs(1)));
    }

    #[test]
    fn unknown_and_malformed_names_are_unimplemented() {
        let r = registry();
        for (name, text) in [
            ("/echo.Echo/Nope", "unknown method /echo.Echo/Nope"),
            (
                "/other.Svc/Say",
                "unknown service other.Svc (method /other.Svc/Say)",
            ),
            ("echo.Echo/Say", "malformed method name"),
            ("/echo.Echo/Say/x", "malformed method name"),
            ("//Say", "malformed method name"),
            ("/echo.Echo/", "malformed method name"),
            ("", "malformed method name"),
        ] {
            let err = r.lookup(name).err().unwrap();
            assert_eq!(err.code(), Code::UNIMPLEMENTED, "{name}");
            assert!(err.message().starts_with(text), "{name}: {}", err.message());
        }
    }

    #[test]
    #[should_panic(expected = "defined twice")]
    fn duplicate_methods_are_refused() {
        let _ = Service::new("a.B")
            .raw_method("M", |_: &Context, b: bytes::Bytes| Ok::<_, Status>(b))
            .raw_method("M", |_: &Context, b: bytes::Bytes| Ok::<_, Status>(b));
    }
}

//! The server builder: the services, listeners, filters, hooks and
//! settings of a server, given one at a time, then bound.

#[cfg(feature = "tls")]
use crate::tls::ServerTls;
use std::fmt;
use std::net::{SocketAddr, ToSocketAddrs};
use std::sync::Arc;
use std::time::Duration;

use super::config::{Limits, Mode, ServerConfig, Timeouts};
use super::endpoints::Endpoints;
use super::listener_spec::{check, resolve, ListenerSetting, ListenerSpec};
use super::protocol::Protocols;
use super::Server;
use crate::error::Error;
use crate::filter::Filter;
use crate::server::service::Service;
use crate::shutdown::Hook;

/// Builds a [`Server`]: services, filters, threads, limits and timeouts.
///
/// # Examples
///
/// ```
/// use syncrpc::{Context, Server, Service, Status};
///
/// #[derive(serde::Serialize, serde::Deserialize)]
/// struct Say { text: String }
///
/// let echo = Service::new("echo.Echo")
///     .method("Say", |_ctx: &Context, req: Say| Ok::<_, Status>(req));
///
/// let server = Server::builder()
///     .service(echo)
///     .workers(8)
///     .bind("127.0.0.1:0")?;
/// println!("listening on {}", server.local_addr());
/// server.shutdown();
/// # Ok::<(), syncrpc::Error>(())
/// ```
pub struct ServerBuilder {
    config: ServerConfig,
    services: Vec<Service>,
    own: Vec<(Vec<SocketAddr>, Service)>,
    admin: Option<Vec<SocketAddr>>,
    pinned: Vec<(Vec<SocketAddr>, ListenerSetting)>,
    filters: Vec<Arc<dyn Filter>>,
    errors: Vec<String>,
    lifecycle: LifecycleSetup,
    #[cfg(feature = "tls")]
    tls: Option<ServerTls>,
}

/// What a server does around its shutdown.
pub(crate) struct LifecycleSetup {
    pub hooks: Vec<Hook>,
    pub handle_signals: bool,
    pub health: bool,
    pub reflection: bool,
}

impl Default for ServerBuilder {
    fn default() -> Self {
        ServerBuilder::new()
    }
}

impl ServerBuilder {
    /// A builder with the default configuration and no services.
    pub fn new() -> ServerBuilder {
        ServerBuilder {
            config: ServerConfig::default(),
            services: Vec::new(),
            own: Vec::new(),
            admin: None,
            pinned: Vec::new(),
            filters: Vec::new(),
            errors: Vec::new(),
            lifecycle: LifecycleSetup {
                hooks: Vec::new(),
                handle_signals: false,
                health: true,
                reflection: true,
            },
            #[cfg(feature = "tls")]
            tls: None,
        }
    }

    /// Serves TLS on every listener that does not say otherwise
    /// ([`ServerBuilder::tls_on`], [`ServerBuilder::plaintext_on`]): TLS
    /// only, or TLS and plaintext on one port, as
    /// [`ServerTls::mode`](crate::tls::ServerTls::mode) says. Default none:
    /// plaintext. Needs the `tls` feature.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// use syncrpc::tls::{ServerTls, TlsMode};
    /// use syncrpc::{Server, Service};
    ///
    /// let tls = ServerTls::from_pem_files("server.pem", "server.key")?.mode(TlsMode::Optional);
    /// let server = Server::builder()
    ///     .service(Service::new("echo.Echo"))
    ///     .tls(tls)
    ///     .bind("0.0.0.0:7000")?;
    /// # Ok::<(), syncrpc::Error>(())
    /// ```
    #[cfg(feature = "tls")]
    pub fn tls(mut self, tls: ServerTls) -> ServerBuilder {
        self.tls = Some(tls);
        self
    }

    /// Serves TLS on the listener at `addr` alone, whatever
    /// [`ServerBuilder::tls`] says.
    #[cfg(feature = "tls")]
    pub fn tls_on(self, addr: impl ToSocketAddrs, tls: ServerTls) -> ServerBuilder {
        self.pin(addr, ListenerSetting::Tls(Some(tls)))
    }

    /// Serves plaintext only on the listener at `addr`, whatever
    /// [`ServerBuilder::tls`] says.
    #[cfg(feature = "tls")]
    pub fn plaintext_on(self, addr: impl ToSocketAddrs) -> ServerBuilder {
        self.pin(addr, ListenerSetting::Tls(None))
    }

    /// Serves `service` on the address given to [`ServerBuilder::bind`].
    pub fn service(mut self, service: Service) -> ServerBuilder {
        self.services.push(service);
        self
    }

    /// Serves `service` on a listener of its own at `addr`. Services given
    /// the same address (as resolved) share one listener.
    pub fn service_on(mut self, addr: impl ToSocketAddrs, service: Service) -> ServerBuilder {
        match resolve(addr) {
            Ok(addrs) => self.own.push((addrs, service)),
            Err(e) => self.errors.push(format!(
                "cannot resolve the address of {}: {e}",
                service.name()
            )),
        }
        self
    }

    /// Appends a filter that runs around every method of every service,
    /// before the services' own filters.
    pub fn filter(mut self, filter: impl Filter) -> ServerBuilder {
        self.filters.push(Arc::new(filter));
        self
    }

    /// Sets the number of worker threads; see [`ServerConfig::workers`].
    pub fn workers(mut self, n: usize) -> ServerBuilder {
        self.config.workers = n;
        self
    }

    /// Sets the work queue's capacity; see [`ServerConfig::queue_capacity`].
    pub fn queue_capacity(mut self, n: usize) -> ServerBuilder {
        self.config.queue_capacity = n;
        self
    }

    /// Sets the number of event-loop threads; see
    /// [`ServerConfig::event_loops`].
    pub fn event_loops(mut self, n: usize) -> ServerBuilder {
        self.config.event_loops = n;
        self
    }

    /// Sets the prefix of the server's thread names; see
    /// [`ServerConfig::thread_name`].
    pub fn thread_name(mut self, prefix: impl Into<String>) -> ServerBuilder {
        self.config.thread_name = prefix.into();
        self
    }

    /// Sets the wire protocols connections may speak; see
    /// [`ServerConfig::protocols`]. Default [`Protocols::All`].
    pub fn protocols(mut self, protocols: Protocols) -> ServerBuilder {
        self.config.protocols = protocols;
        self
    }

    /// Sets the wire protocols of the listener at `addr` alone (the
    /// address given to [`ServerBuilder::bind`] or to
    /// [`ServerBuilder::service_on`]), overriding
    /// [`ServerBuilder::protocols`] there: for instance one port for
    /// native clients and another pinned to MessagePack-RPC.
    pub fn protocols_on(self, addr: impl ToSocketAddrs, protocols: Protocols) -> ServerBuilder {
        self.pin(addr, ListenerSetting::Protocols(protocols))
    }

    /// Names the service bare MessagePack-RPC method names belong to, so a
    /// client can call `Say` rather than `echo.Echo.Say`; see
    /// [`ServerConfig::msgpack_rpc_default_service`]. Default none.
    pub fn msgpack_rpc_default_service(mut self, service: impl Into<String>) -> ServerBuilder {
        self.config.msgpack_rpc_default_service = Some(service.into());
        self
    }

    /// Names the service bare MessagePack-RPC method names belong to on
    /// the listener at `addr` alone (the address given to
    /// [`ServerBuilder::bind`] or to [`ServerBuilder::service_on`]),
    /// overriding [`ServerBuilder::msgpack_rpc_default_service`] there.
    /// [`ServerBuilder::bind`] fails if no listener has that address.
    ///
    /// # Examples
    ///
    /// Two ports, each calling its own service by bare method names:
    ///
    /// ```
    /// use syncrpc::{Server, Service};
    ///
    /// let server = Server::builder()
    ///     .service(Service::new("calc.Calc"))
    ///     .service_on("127.0.0.1:0", Service::new("echo.Echo"))
    ///     .msgpack_rpc_default_service("echo.Echo")
    ///     // The first listener at this address: the main one, which
    ///     // `bind` makes. Its bare names are calc.Calc's methods.
    ///     .msgpack_rpc_default_service_on("127.0.0.1:0", "calc.Calc")
    ///     .bind("127.0.0.1:0")?;
    /// assert_ne!(server.addr_of("echo.Echo"), Some(server.local_addr()));
    /// server.shutdown();
    /// # Ok::<(), syncrpc::Error>(())
    /// ```
    pub fn msgpack_rpc_default_service_on(
        self,
        addr: impl ToSocketAddrs,
        service: impl Into<String>,
    ) -> ServerBuilder {
        self.pin(
            addr,
            ListenerSetting::MsgpackRpcDefaultService(service.into()),
        )
    }

    /// Sets which built-in HTTP endpoints are served (default all); see
    /// [`Endpoints`].
    pub fn endpoints(mut self, endpoints: Endpoints) -> ServerBuilder {
        self.config.endpoints = endpoints;
        self
    }

    /// Serves the built-in endpoints (`/healthz`, `/livez`, `/metrics`,
    /// `/`) on a listener of their own at `addr`, over HTTP only, and no
    /// longer on the other listeners: a private admin port, which
    /// Prometheus and the probes reach and the public does not. Default
    /// none: every listener serves them.
    ///
    /// # Examples
    ///
    /// ```
    /// use syncrpc::Server;
    ///
    /// let server = Server::builder()
    ///     .admin_on("127.0.0.1:0")
    ///     .bind("127.0.0.1:0")?;
    /// let admin = server.handle().admin_addr().expect("an admin listener");
    /// assert_ne!(admin, server.local_addr());
    /// server.shutdown();
    /// # Ok::<(), syncrpc::Error>(())
    /// ```
    pub fn admin_on(mut self, addr: impl ToSocketAddrs) -> ServerBuilder {
        match resolve(addr) {
            Ok(addrs) => self.admin = Some(addrs),
            Err(e) => self
                .errors
                .push(format!("admin_on: cannot resolve the address: {e}")),
        }
        self
    }

    /// Records `setting` for the listener at `addr`, found at `bind`.
    fn pin(mut self, addr: impl ToSocketAddrs, setting: ListenerSetting) -> ServerBuilder {
        match resolve(addr) {
            Ok(addrs) => self.pinned.push((addrs, setting)),
            Err(e) => self.errors.push(format!(
                "{}: cannot resolve the listener's address: {e}",
                setting.origin()
            )),
        }
        self
    }

    /// Sets the listen backlog; see [`ServerConfig::backlog`].
    pub fn backlog(mut self, n: i32) -> ServerBuilder {
        self.config.backlog = n;
        self
    }

    /// Sets the size and count limits.
    pub fn limits(mut self, limits: Limits) -> ServerBuilder {
        self.config.limits = limits;
        self
    }

    /// Sets the timeouts.
    pub fn timeouts(mut self, timeouts: Timeouts) -> ServerBuilder {
        self.config.timeouts = timeouts;
        self
    }

    /// Sets the I/O mode; see [`Mode`]. Default [`Mode::Event`].
    pub fn mode(mut self, mode: Mode) -> ServerBuilder {
        self.config.mode = mode;
        self
    }

    /// Runs handlers on the threads that read their requests (in event
    /// mode, the event loops) rather than the worker pool; see
    /// [`ServerConfig::inline_handlers`] for when that is safe.
    pub fn inline_handlers(mut self, inline: bool) -> ServerBuilder {
        self.config.inline_handlers = inline;
        self
    }

    /// Shuts the server down gracefully on SIGTERM or SIGINT (and SIGHUP),
    /// and forces an immediate stop on a second one. Default false: the
    /// application decides.
    ///
    /// The handler (the `ctrlc` crate's) is process-wide and installed
    /// once, on the first bind that asks for it, before that bind opens
    /// its listeners: a signal that arrives as soon as the port accepts
    /// starts the shutdown (once the server has started) rather than
    /// ending the process. Every server that asked then gets each
    /// signal. Binding fails with a usage error if the
    /// application set a `ctrlc` handler of its own, which can only be
    /// done once per process: start the shutdown from that handler with a
    /// [`ShutdownHandle`](crate::ShutdownHandle) instead.
    pub fn handle_signals(mut self, handle: bool) -> ServerBuilder {
        self.lifecycle.handle_signals = handle;
        self
    }

    /// Registers a shutdown hook. Hooks run once, in reverse order of
    /// registration (the last registered runs first), after every handler
    /// has finished and the workers have stopped, each on a thread of the
    /// shutdown's, given the time left of [`Timeouts::hooks`]. A hook that
    /// panics is logged and skipped; hooks still running when the time is
    /// up are left behind and reported.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// use syncrpc::Server;
    ///
    /// let server = Server::builder()
    ///     .on_shutdown(|left: Duration| println!("closing the database pool within {left:?}"))
    ///     .on_shutdown(|_| println!("runs first"))
    ///     .bind("127.0.0.1:0")?;
    /// let report = server.shutdown();
    /// assert_eq!(report.hooks_run, 2);
    /// # Ok::<(), syncrpc::Error>(())
    /// ```
    pub fn on_shutdown(mut self, hook: impl FnOnce(Duration) + Send + 'static) -> ServerBuilder {
        self.lifecycle.hooks.push(Box::new(hook));
        self
    }

    /// Serves the built-in health service (`/syncrpc.Health/Check`, see
    /// [`Health`](super::Health)) on every listener. Default true. A
    /// listener where the application registers a service named
    /// `syncrpc.Health` itself serves that one instead.
    pub fn health_service(mut self, serve: bool) -> ServerBuilder {
        self.lifecycle.health = serve;
        self
    }

    /// Serves the built-in reflection service (`syncrpc.Reflection`, see
    /// [`reflection`](super::reflection)) on every listener: the names,
    /// kinds, timeouts and types of the listener's methods, for tools such
    /// as the `syncrpc` command line. Default true, as a server's methods
    /// are what any client of it is written against anyway; turn it off
    /// where the list itself is not to be shown. A listener where the
    /// application registers a service named `syncrpc.Reflection` itself
    /// serves that one instead.
    pub fn reflection_service(mut self, serve: bool) -> ServerBuilder {
        self.lifecycle.reflection = serve;
        self
    }

    /// Replaces the whole configuration.
    pub fn config(mut self, config: ServerConfig) -> ServerBuilder {
        self.config = config;
        self
    }

    /// The configuration so far.
    pub fn config_ref(&self) -> &ServerConfig {
        &self.config
    }

    /// Binds the listeners, starts the event loops and the workers, and
    /// returns the running server.
    ///
    /// Fails with an [`Error`] of kind `Usage` for a bad configuration (a
    /// service registered twice on one address, a zero limit) and of kind
    /// `Io` if a listener cannot be bound.
    pub fn bind(self, addr: impl ToSocketAddrs) -> Result<Server, Error> {
        if let Some(e) = self.errors.first() {
            return Err(Error::usage(e.clone()));
        }
        let addrs = resolve(addr).map_err(|e| Error::io("cannot resolve the listen address", e))?;
        let mut specs = vec![ListenerSpec::new(addrs, self.services)];
        for (addrs, svc) in self.own {
            match specs[1..].iter_mut().find(|s| s.addrs == addrs) {
                Some(spec) => spec.services.push(svc),
                None => specs.push(ListenerSpec::new(addrs, vec![svc])),
            }
        }
        if let Some(addrs) = self.admin {
            let fixed = addrs.iter().all(|a| a.port() != 0);
            if fixed && specs.iter().any(|s| s.addrs == addrs) {
                return Err(Error::usage(format!(
                    "admin_on({addrs:?}): another listener has that address"
                )));
            }
            let mut spec = ListenerSpec::new(addrs, Vec::new());
            spec.admin = true;
            spec.protocols = Some(Protocols::Http);
            specs.push(spec);
        }
        for (addrs, setting) in self.pinned {
            match specs.iter_mut().find(|s| s.addrs == addrs) {
                Some(spec) => setting.apply(spec),
                None => {
                    return Err(Error::usage(format!(
                        "{}({addrs:?}): no listener at that address",
                        setting.origin()
                    )))
                }
            }
        }
        #[cfg(feature = "tls")]
        for spec in &mut specs {
            if spec.tls.is_none() {
                spec.tls = Some(self.tls.clone());
            }
        }
        check(&self.config, &specs)?;
        Server::start(self.config, specs, self.filters, self.lifecycle)
    }
}

impl fmt::Debug for ServerBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ServerBuilder")
            .field("config", &self.config)
            .field("services", &self.services)
            .field("own", &self.own.len())
            .field("filters", &self.filters.len())
            .field("hooks", &self.lifecycle.hooks.len())
            .field("handle_signals", &self.lifecycle.handle_signals)
            .field("health", &self.lifecycle.health)
            .field("reflection", &self.lifecycle.reflection)
            .finish()
    }
}

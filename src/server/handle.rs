//! The server's remote control ([`ServerHandle`]) and the counts it
//! reports ([`ServerStats`]).

use super::*;

/// A cloneable remote control for a running [`Server`]: its addresses, its
/// counts, its health and its shutdown. Clones share one server; it is
/// `Send + Sync`.
#[derive(Clone)]
pub struct ServerHandle {
    pub(super) inner: Arc<Inner>,
}

/// Counts a running server reports.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct ServerStats {
    /// Open connections.
    pub connections: usize,
    /// Requests read and not yet answered.
    pub requests_in_flight: usize,
    /// Request bytes held (partial frames, queued and running requests),
    /// counted against [`Limits::max_buffered_request_bytes`].
    pub buffered_request_bytes: usize,
    /// Handler results dropped because the request had been answered by
    /// its deadline, cancelled, or its connection had closed.
    pub dropped_responses: u64,
    /// The worker pool's counts: busy, queued, completed, expired (all
    /// zero when handlers run inline).
    pub pool: PoolStats,
    /// TLS handshakes in progress, counted against
    /// [`Limits::max_handshakes`].
    pub tls_handshakes_in_progress: usize,
    /// TLS handshakes completed since the server started.
    pub tls_handshakes: u64,
    /// TLS handshakes that failed: a bad or missing certificate, a
    /// protocol error, plaintext on a TLS-only listener, the handshake
    /// limit, or a connection closed or timed out before it finished.
    pub tls_handshake_failures: u64,
}

impl ServerHandle {
    /// The address of the main listener.
    pub fn local_addr(&self) -> SocketAddr {
        self.inner.listeners[0].0
    }

    /// Every listener's address with the services it serves.
    pub fn local_addrs(&self) -> &[(SocketAddr, Vec<String>)] {
        &self.inner.listeners
    }

    /// The address of the admin listener
    /// ([`ServerBuilder::admin_on`]), if there is one.
    pub fn admin_addr(&self) -> Option<SocketAddr> {
        self.inner.admin
    }

    /// The address `service` listens on.
    pub fn addr_of(&self, service: &str) -> Option<SocketAddr> {
        self.inner
            .listeners
            .iter()
            .find(|(_, names)| names.iter().any(|n| n == service))
            .map(|(a, _)| *a)
    }

    /// The server's counts.
    pub fn stats(&self) -> ServerStats {
        let s = &self.inner.shared;
        ServerStats {
            connections: s.connections.load(Ordering::Relaxed),
            requests_in_flight: s.requests.count(),
            buffered_request_bytes: s.buffered.load(Ordering::Relaxed),
            dropped_responses: s.dropped_responses.load(Ordering::Relaxed),
            pool: s.pool.as_ref().map(WorkerPool::stats).unwrap_or_default(),
            tls_handshakes_in_progress: s.handshakes.in_progress.load(Ordering::Relaxed),
            tls_handshakes: s.handshakes.completed.load(Ordering::Relaxed),
            tls_handshake_failures: s.handshakes.failed.load(Ordering::Relaxed),
        }
    }

    /// The statuses the health service reports; the application sets them
    /// with [`Health::set_serving`].
    pub fn health(&self) -> &Health {
        &self.inner.health
    }

    /// A cloneable handle that starts and waits for the shutdown.
    pub fn shutdown_handle(&self) -> ShutdownHandle {
        ShutdownHandle::new(self.inner.life.clone())
    }

    /// True once a shutdown has begun.
    pub fn is_shutting_down(&self) -> bool {
        self.inner.life.is_started()
    }

    /// Shuts the server down gracefully within the configured
    /// [`Timeouts::shutdown`], blocking until it is done; see
    /// [`ServerHandle::shutdown_timeout`].
    pub fn shutdown(&self) -> ShutdownReport {
        self.shutdown_handle().shutdown()
    }

    /// Shuts the server down gracefully within `timeout`, blocking until it
    /// is done. The steps are those of `docs/protocol.md` ("Graceful
    /// shutdown"), run by the server's coordinator thread (see
    /// [`crate::shutdown`]):
    ///
    /// 1. the health service says `NOT_SERVING`; after the drain delay,
    ///    the listeners close and every connection gets GOAWAY
    ///    `UNAVAILABLE`; requests read after that are answered
    ///    `UNAVAILABLE`;
    /// 2. requests already read finish, until they are all answered and
    ///    the clients have closed their connections, or `timeout` runs out;
    /// 3. what is still queued then is answered `UNAVAILABLE`, what is
    ///    running `CANCELLED`; the connections are flushed and closed, the
    ///    I/O threads and the workers joined, and the shutdown hooks run.
    ///
    /// A second call, or a call from another clone, waits for the first
    /// and returns the same report.
    pub fn shutdown_timeout(&self, timeout: Duration) -> ShutdownReport {
        self.shutdown_handle().shutdown_timeout(timeout)
    }
}

impl fmt::Debug for ServerHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ServerHandle")
            .field("listeners", &self.inner.listeners)
            .field("mode", &self.inner.shared.config.mode)
            .field("stats", &self.stats())
            .finish()
    }
}

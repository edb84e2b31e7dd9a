//! One server address: its connections, and its backoff after failures.

use std::fmt;
use std::hash::BuildHasher;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::Instant;

use log::debug;

use super::balancer::Settings;
use super::connection::Connection;
use crate::error::{Error, ErrorKind, Execution};
use crate::status::Status;

/// Why an endpoint gave no connection.
#[derive(Debug)]
pub(crate) struct Unreachable {
    /// The error a call would end with.
    pub(crate) error: Error,
    /// When the endpoint may be tried again, if it is backing off.
    pub(crate) retry_at: Option<Instant>,
}

#[derive(Default)]
struct State {
    conns: Vec<Arc<Connection>>,
    /// A thread is opening a connection.
    connecting: bool,
    /// Failed connection attempts in a row.
    failures: u32,
    /// No attempt before this.
    retry_at: Option<Instant>,
    last_error: String,
}

/// A server address and the connections to it.
pub(crate) struct Endpoint {
    addr: SocketAddr,
    /// The host name the address was resolved from (or the IP literal),
    /// which TLS verifies the server's certificate against.
    host: Arc<str>,
    state: Mutex<State>,
    /// Signalled when a connection attempt ends.
    attempt_done: Condvar,
    next: AtomicUsize,
}

impl fmt::Debug for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let st = self.lock();
        f.debug_struct("Endpoint")
            .field("addr", &self.addr)
            .field("connections", &st.conns.len())
            .field("failures", &st.failures)
            .finish()
    }
}

impl Endpoint {
    pub(crate) fn new(addr: SocketAddr, host: Arc<str>) -> Endpoint {
        Endpoint {
            addr,
            host,
            state: Mutex::new(State::default()),
            attempt_done: Condvar::new(),
            next: AtomicUsize::new(0),
        }
    }

    pub(crate) fn addr(&self) -> SocketAddr {
        self.addr
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // Critical sections are plain bookkeeping; connections are opened
        // and dropped outside the lock.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A connection to call on: an open one, or a new one if fewer than
    /// the configured number are open. Connects on the calling thread, so
    /// the attempt is bounded by `deadline` as well as the connect timeout.
    pub(crate) fn connection(
        &self,
        settings: &Settings,
        deadline: Option<Instant>,
    ) -> Result<Arc<Connection>, Unreachable> {
        // Declared before the guard, so dropped after it: closing a
        // connection joins its IO thread, which must not happen under the
        // lock.
        let mut dead = Vec::new();
        let mut st = self.lock();
        loop {
            self.prune(&mut st, &mut dead, settings);
            let now = Instant::now();
            let backing_off = st.retry_at.is_some_and(|at| now < at);
            let open = st.conns.len();
            if open >= settings.per_endpoint || (open > 0 && (st.connecting || backing_off)) {
                return Ok(self.pick(&st));
            }
            if backing_off {
                return Err(self.backing_off(&st, now));
            }
            if st.connecting {
                // Another thread is connecting and there is nothing to use
                // meanwhile: wait for its outcome.
                st = match deadline {
                    None => self
                        .attempt_done
                        .wait(st)
                        .unwrap_or_else(|e| e.into_inner()),
                    Some(d) if now >= d => return Err(deadline_passed(self.addr)),
                    Some(d) => {
                        self.attempt_done
                            .wait_timeout(st, d - now)
                            .unwrap_or_else(|e| e.into_inner())
                            .0
                    }
                };
                continue;
            }
            let mut timeout = settings.connect_timeout;
            let mut cut_short = false;
            if let Some(d) = deadline {
                let left = d.saturating_duration_since(now);
                if left.is_zero() {
                    return Err(deadline_passed(self.addr));
                }
                if left < timeout {
                    timeout = left;
                    cut_short = true;
                }
            }
            st.connecting = true;
            drop(st);
            let res = Connection::open(self.addr, &self.host, timeout, &settings.conn);
            st = self.lock();
            st.connecting = false;
            self.attempt_done.notify_all();
            match res {
                Ok(conn) => {
                    st.failures = 0;
                    st.retry_at = None;
                    let conn = Arc::new(conn);
                    st.conns.push(conn.clone());
                    return Ok(conn);
                }
                Err(e) => {
                    let timed_out = e.kind() == std::io::ErrorKind::TimedOut;
                    // An attempt the call's own deadline cut short says
                    // nothing about the endpoint.
                    if !(cut_short && timed_out) {
                        self.record_failure(&mut st, settings, e.to_string());
                    }
                    if !st.conns.is_empty() {
                        return Ok(self.pick(&st));
                    }
                    let status =
                        Status::unavailable(format!("cannot connect to {}: {e}", self.addr));
                    let error = Error::new(ErrorKind::Io, status)
                        .with_execution(Execution::NotRun)
                        .with_source(e);
                    return Err(Unreachable {
                        error,
                        retry_at: st.retry_at,
                    });
                }
            }
        }
    }

    /// Moves connections that take no new requests out of the list. One
    /// that closed or got GOAWAY before delivering a single response counts
    /// as a failed attempt: a server refusing connections that way (GOAWAY
    /// RESOURCE_EXHAUSTED at its connection limit) is backed off from.
    fn prune(&self, st: &mut State, dead: &mut Vec<Arc<Connection>>, settings: &Settings) {
        if st.conns.iter().all(|c| c.is_usable()) {
            return;
        }
        let mut i = 0;
        while i < st.conns.len() {
            if st.conns[i].is_usable() {
                i += 1;
                continue;
            }
            let conn = st.conns.swap_remove(i);
            if conn.answered() == 0 {
                let why = conn.refusal_reason().unwrap_or_default();
                self.record_failure(
                    st,
                    settings,
                    format!("a new connection ended before any response: {why}"),
                );
            }
            dead.push(conn);
        }
    }

    fn record_failure(&self, st: &mut State, settings: &Settings, error: String) {
        st.failures = st.failures.saturating_add(1);
        let random = std::collections::hash_map::RandomState::new().hash_one(Instant::now());
        let wait = settings.backoff.jittered(st.failures, random);
        debug!(
            "{}: attempt {} failed ({error}); next attempt in {} ms",
            self.addr,
            st.failures,
            wait.as_millis()
        );
        st.retry_at = Some(Instant::now() + wait);
        st.last_error = error;
    }

    fn pick(&self, st: &State) -> Arc<Connection> {
        let n = st.conns.len();
        if n == 1 {
            return st.conns[0].clone();
        }
        let i = self.next.fetch_add(1, Ordering::Relaxed) % n;
        st.conns[i].clone()
    }

    fn backing_off(&self, st: &State, now: Instant) -> Unreachable {
        let retry_at = st.retry_at.unwrap_or(now);
        let status = Status::unavailable(format!(
            "{} is unavailable ({}); next connection attempt in {} ms",
            self.addr,
            st.last_error,
            retry_at.saturating_duration_since(now).as_millis()
        ));
        Unreachable {
            error: Error::new(ErrorKind::Io, status).with_execution(Execution::NotRun),
            retry_at: Some(retry_at),
        }
    }
}

fn deadline_passed(addr: SocketAddr) -> Unreachable {
    let status = Status::deadline_exceeded(format!("deadline exceeded while connecting to {addr}"));
    Unreachable {
        error: Error::new(ErrorKind::Timeout, status).with_execution(Execution::NotRun),
        retry_at: None,
    }
}

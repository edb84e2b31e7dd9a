//! The server's Prometheus metrics, served by `GET /metrics`.
//!
//! One registry per server, its families registered once at start.
//! Request counts and latencies are recorded as each request is answered,
//! through handles resolved per method when the listener starts (a few
//! atomic adds, no label lookup); everything else (connections, the
//! worker pool, bytes, the shutdown's counts) is read from the server's
//! own counters when the page is made. Labels are bounded sets: service,
//! method, protocol, code, mode; never a trace id or an address.

use std::sync::atomic::Ordering;
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

use prometheus::core::Collector;
use prometheus::{
    Encoder as _, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge,
    IntGaugeVec, Opts, Registry, TextEncoder,
};

use super::config::Mode;
use super::dispatch::ServerShared;
use super::protocol::ALL;
use crate::status::Code;

/// Latency buckets, in seconds: 100 us to 10 s.
const LATENCY_BUCKETS: &[f64] = &[
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
    5.0, 10.0,
];

/// Codes with a name, and one slot for any other number.
const CODES: usize = 18;

/// The metric families of one server.
pub(crate) struct Telemetry {
    registry: Registry,
    requests: IntCounterVec,
    latency: HistogramVec,
    refused: IntCounterVec,
    in_flight: IntGauge,
    queue_depth: IntGauge,
    busy_workers: IntGauge,
    workers: IntGauge,
    connections: IntGaugeVec,
    bytes_read: IntCounter,
    bytes_written: IntCounter,
    connections_refused: IntCounter,
    dropped_responses: IntCounter,
    shutdown: IntCounterVec,
    handshakes: IntCounterVec,
    handshakes_in_progress: IntGauge,
    streams_open: IntGauge,
    streams_max: IntGauge,
    /// Counters mirrored from the server's atomics move under this lock,
    /// so two scrapes at once do not both add the same difference.
    scrape: Mutex<()>,
}

/// One method's handles: its latency histogram, and its request counter
/// for each protocol and code, made on first use.
pub(crate) struct MethodMetrics {
    service: String,
    method: String,
    latency: Histogram,
    counts: [[OnceLock<IntCounter>; CODES]; ALL.len()],
    requests: IntCounterVec,
}

fn code_slot(code: Code) -> usize {
    if code.is_known() {
        code.as_u32() as usize
    } else {
        CODES - 1
    }
}

fn code_label(slot: usize) -> &'static str {
    Code::ALL.get(slot).map_or("UNKNOWN_CODE", |c| c.name())
}

impl MethodMetrics {
    /// Counts an answer with `code`, on protocol `protocol` (an index in
    /// [`ALL`]), `took` after its request was read.
    pub fn record(&self, protocol: usize, code: Code, took: Duration) {
        self.latency.observe(took.as_secs_f64());
        let slot = code_slot(code);
        let Some(row) = self.counts.get(protocol) else {
            return;
        };
        row[slot]
            .get_or_init(|| {
                self.requests.with_label_values(&[
                    &self.service,
                    &self.method,
                    ALL[protocol].label(),
                    code_label(slot),
                ])
            })
            .inc();
    }
}

fn family<T: Collector + Clone + 'static>(
    registry: &Registry,
    metric: Result<T, prometheus::Error>,
) -> T {
    // Names and labels are constants of this file: a failure is a bug.
    let metric = metric.expect("a valid metric definition");
    registry
        .register(Box::new(metric.clone()))
        .expect("metric names registered once");
    metric
}

impl Telemetry {
    pub fn new() -> Telemetry {
        let r = Registry::new();
        let labels = ["service", "method", "protocol", "code"];
        Telemetry {
            requests: family(
                &r,
                IntCounterVec::new(
                    Opts::new(
                        "syncrpc_requests_total",
                        "Requests answered, by service, method, protocol and status code.",
                    ),
                    &labels,
                ),
            ),
            latency: family(
                &r,
                HistogramVec::new(
                    HistogramOpts::new(
                        "syncrpc_request_duration_seconds",
                        "Time from reading a request to its answer, by method.",
                    )
                    .buckets(LATENCY_BUCKETS.to_vec()),
                    &["service", "method"],
                ),
            ),
            refused: family(
                &r,
                IntCounterVec::new(
                    Opts::new(
                        "syncrpc_requests_refused_total",
                        "Requests answered without reaching a method (unknown method, bad head, duplicate id), by protocol and code.",
                    ),
                    &["protocol", "code"],
                ),
            ),
            in_flight: family(
                &r,
                IntGauge::new("syncrpc_requests_in_flight", "Requests read and not yet answered."),
            ),
            queue_depth: family(
                &r,
                IntGauge::new("syncrpc_worker_queue_depth", "Requests waiting for a worker."),
            ),
            busy_workers: family(
                &r,
                IntGauge::new("syncrpc_workers_busy", "Workers running a request now."),
            ),
            workers: family(&r, IntGauge::new("syncrpc_workers", "Worker threads.")),
            streams_open: family(
                &r,
                IntGauge::new(
                    "syncrpc_streams_open",
                    "Streams open now, each holding a worker until its handler returns.",
                ),
            ),
            streams_max: family(
                &r,
                IntGauge::new(
                    "syncrpc_streams_max",
                    "Streams that may be open at once; past it a new one is refused RESOURCE_EXHAUSTED.",
                ),
            ),
            connections: family(
                &r,
                IntGaugeVec::new(
                    Opts::new(
                        "syncrpc_connections_open",
                        "Open connections, by protocol (unknown before the first byte) and I/O mode.",
                    ),
                    &["protocol", "mode"],
                ),
            ),
            bytes_read: family(
                &r,
                IntCounter::new("syncrpc_read_bytes_total", "Bytes read from connections."),
            ),
            bytes_written: family(
                &r,
                IntCounter::new("syncrpc_written_bytes_total", "Bytes written to connections."),
            ),
            connections_refused: family(
                &r,
                IntCounter::new(
                    "syncrpc_connections_refused_total",
                    "Connections refused at the connection limit.",
                ),
            ),
            dropped_responses: family(
                &r,
                IntCounter::new(
                    "syncrpc_dropped_responses_total",
                    "Handler results dropped: their request had been answered by its deadline, cancelled, or its connection closed.",
                ),
            ),
            handshakes: family(
                &r,
                IntCounterVec::new(
                    Opts::new(
                        "syncrpc_tls_handshakes_total",
                        "TLS handshakes, by outcome: completed, or failed (a bad or missing certificate, a protocol error, plaintext on a TLS-only listener, the handshake limit, a timeout).",
                    ),
                    &["outcome"],
                ),
            ),
            handshakes_in_progress: family(
                &r,
                IntGauge::new(
                    "syncrpc_tls_handshakes_in_progress",
                    "TLS handshakes in progress, counted against the handshake limit.",
                ),
            ),
            shutdown: family(
                &r,
                IntCounterVec::new(
                    Opts::new(
                        "syncrpc_shutdown_requests_total",
                        "What the shutdown did with requests: drained, refused, abandoned, cancelled.",
                    ),
                    &["outcome"],
                ),
            ),
            registry: r,
            scrape: Mutex::new(()),
        }
    }

    /// The handles of method `full_name` (`/service/method`).
    pub fn method(&self, full_name: &str) -> MethodMetrics {
        let (service, method) = full_name
            .strip_prefix('/')
            .and_then(|n| n.split_once('/'))
            .unwrap_or(("", full_name));
        MethodMetrics {
            latency: self.latency.with_label_values(&[service, method]),
            service: service.to_owned(),
            method: method.to_owned(),
            counts: std::array::from_fn(|_| std::array::from_fn(|_| OnceLock::new())),
            requests: self.requests.clone(),
        }
    }

    /// Counts a request refused before it reached a method.
    pub fn refused(&self, protocol: usize, code: Code) {
        let label = ALL.get(protocol).map_or("unknown", |p| p.label());
        self.refused
            .with_label_values(&[label, code_label(code_slot(code))])
            .inc();
    }

    /// The text exposition of every metric, read now.
    pub fn render(&self, server: &ServerShared) -> Vec<u8> {
        {
            let _one = self.scrape.lock().unwrap_or_else(|e| e.into_inner());
            self.sample(server);
        }
        let mut out = Vec::with_capacity(8 * 1024);
        if let Err(e) = TextEncoder::new().encode(&self.registry.gather(), &mut out) {
            log::error!("cannot encode the metrics: {e}");
        }
        out
    }

    fn sample(&self, s: &ServerShared) {
        self.in_flight.set(gauge(s.requests.count()));
        let pool = s.pool.as_ref().map(|p| p.stats()).unwrap_or_default();
        self.queue_depth.set(gauge(pool.queued));
        self.busy_workers.set(gauge(pool.busy));
        self.workers.set(gauge(pool.workers));
        self.streams_open
            .set(gauge(s.streams_open.load(Ordering::Relaxed)));
        self.streams_max.set(gauge(s.max_streams));
        let mode = match s.config.mode {
            Mode::Event => "event",
            Mode::Thread => "thread",
        };
        let mut known = 0;
        for p in ALL {
            let n = s.open_by_protocol[p.index()].load(Ordering::Relaxed);
            known += n;
            self.connections
                .with_label_values(&[p.label(), mode])
                .set(gauge(n));
        }
        let total = s.connections.load(Ordering::Relaxed);
        self.connections
            .with_label_values(&["unknown", mode])
            .set(gauge(total.saturating_sub(known)));
        mirror(&self.bytes_read, s.bytes_read.load(Ordering::Relaxed));
        mirror(&self.bytes_written, s.bytes_written.load(Ordering::Relaxed));
        mirror(
            &self.connections_refused,
            s.refused_connections.load(Ordering::Relaxed),
        );
        mirror(
            &self.dropped_responses,
            s.dropped_responses.load(Ordering::Relaxed),
        );
        self.handshakes_in_progress
            .set(gauge(s.handshakes.in_progress.load(Ordering::Relaxed)));
        for (outcome, n) in [
            ("completed", &s.handshakes.completed),
            ("failed", &s.handshakes.failed),
        ] {
            mirror(
                &self.handshakes.with_label_values(&[outcome]),
                n.load(Ordering::Relaxed),
            );
        }
        for (outcome, n) in [
            ("drained", &s.shutdown_drained),
            ("refused", &s.shutdown_refused),
            ("abandoned", &s.shutdown_abandoned),
            ("cancelled", &s.shutdown_cancelled),
        ] {
            mirror(
                &self.shutdown.with_label_values(&[outcome]),
                n.load(Ordering::Relaxed),
            );
        }
    }
}

fn gauge(n: usize) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

/// Brings a counter up to `now`, a count kept elsewhere that only grows.
fn mirror(counter: &IntCounter, now: u64) {
    let had = counter.get();
    if now > had {
        counter.inc_by(now - had);
    }
}

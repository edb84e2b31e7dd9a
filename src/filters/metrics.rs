//! Request counts, errors by code and a latency histogram.

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::context::Context;
use crate::filter::{Filter, Next, Reply, Request};
use crate::status::Code;

/// Histogram buckets: bucket `i` holds latencies of at most 2^i
/// microseconds, up to 2^26 us (about 67 s); the last one holds the rest.
const BUCKETS: usize = 28;
/// Codes counted one by one; any other number is counted as `UNKNOWN_CODE`.
const NAMED: usize = 17;

struct Counters {
    requests: AtomicU64,
    by_code: [AtomicU64; NAMED + 1],
    latency: [AtomicU64; BUCKETS],
    latency_sum_us: AtomicU64,
}

/// A filter that counts requests, errors by status code, and latencies.
///
/// Clones share their counters: keep one to read [`Metrics::snapshot`]
/// and give another to the server. Counting is a few relaxed atomic adds.
///
/// # Examples
///
/// ```
/// use syncrpc::filters::Metrics;
/// use syncrpc::Server;
///
/// let metrics = Metrics::new();
/// let builder = Server::builder().filter(metrics.clone());
/// # let _ = builder;
/// let snap = metrics.snapshot();
/// assert_eq!(snap.requests, 0);
/// assert_eq!(snap.latency.quantile(0.99), None);
/// ```
#[derive(Clone)]
pub struct Metrics {
    counters: Arc<Counters>,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

impl Metrics {
    /// Metrics with every count at zero.
    pub fn new() -> Metrics {
        Metrics {
            counters: Arc::new(Counters {
                requests: AtomicU64::new(0),
                by_code: std::array::from_fn(|_| AtomicU64::new(0)),
                latency: std::array::from_fn(|_| AtomicU64::new(0)),
                latency_sum_us: AtomicU64::new(0),
            }),
        }
    }

    /// Records one request; the filter calls this, and so can code that
    /// answers requests by other means.
    pub fn record(&self, code: Code, latency: Duration) {
        let c = &self.counters;
        c.requests.fetch_add(1, Ordering::Relaxed);
        let i = (code.as_u32() as usize).min(NAMED);
        c.by_code[i].fetch_add(1, Ordering::Relaxed);
        let us = u64::try_from(latency.as_micros()).unwrap_or(u64::MAX);
        c.latency[bucket(us)].fetch_add(1, Ordering::Relaxed);
        c.latency_sum_us.fetch_add(us, Ordering::Relaxed);
    }

    /// The counts so far. Each count is read atomically; a snapshot taken
    /// while requests run may be a few requests apart between counts.
    pub fn snapshot(&self) -> MetricsSnapshot {
        let c = &self.counters;
        let by_code: Vec<(Code, u64)> = c
            .by_code
            .iter()
            .enumerate()
            .map(|(i, n)| (Code::from(i as u32), n.load(Ordering::Relaxed)))
            .filter(|(_, n)| *n > 0)
            .collect();
        let errors = by_code
            .iter()
            .filter(|(code, _)| !code.is_ok())
            .map(|(_, n)| n)
            .sum();
        MetricsSnapshot {
            requests: c.requests.load(Ordering::Relaxed),
            errors,
            by_code,
            latency: LatencyHistogram {
                counts: c
                    .latency
                    .iter()
                    .map(|n| n.load(Ordering::Relaxed))
                    .collect(),
                sum: Duration::from_micros(c.latency_sum_us.load(Ordering::Relaxed)),
            },
        }
    }
}

fn bucket(us: u64) -> usize {
    if us <= 1 {
        0
    } else {
        // ceil(log2(us))
        ((64 - (us - 1).leading_zeros()) as usize).min(BUCKETS - 1)
    }
}

impl Filter for Metrics {
    fn call(&self, ctx: &Context, req: Request, next: Next<'_>) -> Reply {
        let start = Instant::now();
        let reply = next.run(ctx, req);
        let code = match &reply {
            Ok(_) => Code::OK,
            Err(s) => s.code(),
        };
        self.record(code, start.elapsed());
        reply
    }
}

impl fmt::Debug for Metrics {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Metrics")
            .field("requests", &self.counters.requests.load(Ordering::Relaxed))
            .finish_non_exhaustive()
    }
}

/// The counts of a [`Metrics`] filter at one moment.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct MetricsSnapshot {
    /// Requests that went through the filter.
    pub requests: u64,
    /// Those that ended with a code other than OK.
    pub errors: u64,
    /// Requests by status code, codes with a zero count left out. Codes
    /// above 16 are counted together under `Code::from(17)`.
    pub by_code: Vec<(Code, u64)>,
    /// Handler latency, measured around the rest of the chain.
    pub latency: LatencyHistogram,
}

impl MetricsSnapshot {
    /// The count for `code`.
    pub fn count(&self, code: Code) -> u64 {
        self.by_code
            .iter()
            .find(|(c, _)| *c == code)
            .map_or(0, |(_, n)| *n)
    }
}

/// A latency histogram with power-of-two buckets in microseconds.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LatencyHistogram {
    counts: Vec<u64>,
    sum: Duration,
}

impl LatencyHistogram {
    /// Each bucket's upper bound and count; the last bound is
    /// `Duration::MAX`.
    pub fn buckets(&self) -> impl Iterator<Item = (Duration, u64)> + '_ {
        self.counts.iter().enumerate().map(|(i, n)| {
            let bound = if i + 1 == BUCKETS {
                Duration::MAX
            } else {
                Duration::from_micros(1 << i)
            };
            (bound, *n)
        })
    }

    /// The number of latencies recorded.
    pub fn count(&self) -> u64 {
        self.counts.iter().sum()
    }

    /// The mean latency, if any was recorded.
    pub fn mean(&self) -> Option<Duration> {
        let n = self.count();
        (n > 0).then(|| self.sum / u32::try_from(n).unwrap_or(u32::MAX))
    }

    /// The upper bound of the bucket holding the `q` quantile (0.0 to
    /// 1.0), e.g. `quantile(0.99)`; at most a factor 2 above the truth.
    pub fn quantile(&self, q: f64) -> Option<Duration> {
        let n = self.count();
        if n == 0 {
            return None;
        }
        let rank = ((q.clamp(0.0, 1.0) * n as f64).ceil() as u64).max(1);
        let mut seen = 0;
        self.buckets().find_map(|(bound, c)| {
            seen += c;
            (seen >= rank).then_some(bound)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_are_powers_of_two_microseconds() {
        assert_eq!(bucket(0), 0);
        assert_eq!(bucket(1), 0);
        assert_eq!(bucket(2), 1);
        assert_eq!(bucket(3), 2);
        assert_eq!(bucket(1024), 10);
        assert_eq!(bucket(1025), 11);
        assert_eq!(bucket(u64::MAX), BUCKETS - 1);
    }

    #[test]
    fn snapshot_counts_codes_and_quantiles() {
        let m = Metrics::new();
        for _ in 0..98 {
            m.record(Code::OK, Duration::from_micros(100));
        }
        m.record(Code::NOT_FOUND, Duration::from_millis(10));
        m.record(Code::from(99), Duration::from_millis(10));
        let s = m.snapshot();
        assert_eq!(s.requests, 100);
        assert_eq!(s.errors, 2);
        assert_eq!(s.count(Code::OK), 98);
        assert_eq!(s.count(Code::NOT_FOUND), 1);
        assert_eq!(s.count(Code::from(17)), 1);
        assert_eq!(s.latency.quantile(0.5), Some(Duration::from_micros(128)));
        assert_eq!(s.latency.quantile(0.99), Some(Duration::from_micros(16384)));
    }
}

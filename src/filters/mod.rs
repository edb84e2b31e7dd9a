//! Filters most servers want from day one.
//!
//! - [`AccessLog`]: one `log` line per request: method, status code,
//!   latency, trace id and peer address.
//! - [`Metrics`]: request and error counts by code and a latency
//!   histogram, read as a [`MetricsSnapshot`].

mod access_log;
mod metrics;

pub use access_log::AccessLog;
pub use metrics::{LatencyHistogram, Metrics, MetricsSnapshot};

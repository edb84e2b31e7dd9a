//! Filters most servers want from day one.
//!
//! - [`Auth`]: bearer tokens and mutual-TLS identities, allowed or refused
//!   per method before the body is touched.
//! - [`AccessLog`]: one `log` line per request: method, status code,
//!   latency, trace id and peer address.
//! - [`Metrics`]: request and error counts by code and a latency
//!   histogram, read as a [`MetricsSnapshot`].

mod access_log;
mod auth;
mod metrics;

pub use access_log::AccessLog;
pub use auth::Auth;
pub use metrics::{LatencyHistogram, Metrics, MetricsSnapshot};

//! syncrpc: a synchronous, thread-based RPC runtime.
//!
//! Calling a service from any number of threads:
//!
//! ```no_run
//! use std::time::Duration;
//! use syncrpc::{Client, Context};
//!
//! #[derive(serde::Serialize, serde::Deserialize)]
//! struct Say { text: String }
//!
//! let client = Client::connect("127.0.0.1:7000")?;
//! // Top-level code starts from the background context; a handler passes
//! // its own, so its deadline, cancellation and trace id follow the call.
//! let ctx = Context::background().with_timeout(Duration::from_secs(1));
//! let reply: Say = client.call(&ctx, "/echo.Echo/Say", &Say { text: "hi".into() })?;
//! println!("{}", reply.text);
//! # Ok::<(), syncrpc::Error>(())
//! ```
#![forbid(unsafe_code)]
#![deny(missing_docs)]

pub mod client;
pub mod codec;
mod context;
mod error;
#[doc(hidden)]
pub mod fuzzing;
mod latch;
mod metadata;
pub mod pool;
mod status;
mod task_group;
mod trace;

pub use client::{CallOptions, Client};
pub use context::{CancelGuard, CancelHandle, CancelReason, Context};
pub use error::{Error, ErrorKind, Execution};
pub use latch::{Latch, LatchGuard};
pub use metadata::{Metadata, MetadataValue};
pub use status::{Code, Status};
pub use task_group::{TaskError, TaskGroup, TaskHandle};
pub use trace::TraceId;

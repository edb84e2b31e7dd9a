//! syncrpc: a synchronous, thread-based RPC runtime.
#![forbid(unsafe_code)]
#![deny(missing_docs)]

pub mod codec;
mod context;
mod error;
mod latch;
mod metadata;
pub mod pool;
mod status;
mod task_group;
mod trace;

pub use context::{CancelGuard, CancelHandle, CancelReason, Context};
pub use error::{Error, ErrorKind, Execution};
pub use latch::{Latch, LatchGuard};
pub use metadata::{Metadata, MetadataValue};
pub use status::{Code, Status};
pub use task_group::{TaskError, TaskGroup, TaskHandle};
pub use trace::TraceId;

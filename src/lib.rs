//! syncrpc: a synchronous, thread-based RPC runtime.
#![forbid(unsafe_code)]
#![deny(missing_docs)]

pub mod codec;
mod error;
#[doc(hidden)]
pub mod fuzzing;
mod metadata;
mod status;

pub use error::{Error, ErrorKind, Execution};
pub use metadata::{Metadata, MetadataValue};
pub use status::{Code, Status};

//! syncrpc: a synchronous, thread-based RPC runtime.
//!
//! No async, no futures: handlers are plain functions run by a fixed pool
//! of worker threads (or, for handlers that never block, inline on the
//! thread that read the request), and the sockets are driven either by a
//! few mio event loops or by plain blocking threads, one pair per
//! connection (see [`server::Mode`]). A [`Client`] blocks the calling thread while calls
//! from any number of threads share its connections (see [`client`]).
//! Requests and responses are framed as described in [`codec`]; the same
//! services also answer MessagePack-RPC clients and HTTP/1.1 with JSON
//! (`curl`, Prometheus, Kubernetes probes) on the same port, each
//! connection served in the protocol its first byte announces
//! ([`server::Protocols`], `docs/msgpack-rpc.md`, `docs/http.md`). A
//! shutdown, from SIGTERM or the application, loses no request it read:
//! [`shutdown`] says how, and `docs/kubernetes.md` how that fits a
//! Kubernetes pod.
//!
//! A service is best declared once with [`service!`], which gives the
//! server a trait to implement and clients a typed stub, so that a wrong
//! method name or type is a compile error on either side (its page has the
//! whole example). Underneath, a service is a [`Service`] of named
//! handlers, which the macro builds and which can be built by hand:
//!
//! ```
//! use syncrpc::{Context, Server, Service, Status};
//!
//! #[derive(serde::Serialize, serde::Deserialize)]
//! struct Say { text: String }
//!
//! fn say(ctx: &Context, req: Say) -> Result<Say, Status> {
//!     ctx.check()?; // stop early if the caller gave up
//!     Ok(Say { text: req.text.to_uppercase() })
//! }
//!
//! let server = Server::builder()
//!     .service(Service::new("echo.Echo").method("Say", say))
//!     .filter(syncrpc::filters::AccessLog::new())
//!     .bind("127.0.0.1:0")?;
//! println!("serving on {}", server.local_addr());
//! server.shutdown();
//! # Ok::<(), syncrpc::Error>(())
//! ```
//!
//! Calling it: every call takes a [`Context`] first. Top-level code
//! starts from [`Context::background`]; a handler passes its own, so its
//! remaining deadline, cancellation and trace id follow the call, and a
//! chain of services stops everywhere when the first caller's budget runs
//! out. [`TaskGroup`] fans calls out over threads and stops them all at
//! the first error.
//!
//! ```no_run
//! use std::time::Duration;
//! use syncrpc::{Client, Context};
//!
//! #[derive(serde::Serialize, serde::Deserialize)]
//! struct Say { text: String }
//!
//! let client = Client::connect("127.0.0.1:7000")?;
//! let ctx = Context::background().with_timeout(Duration::from_secs(1));
//! let reply: Say = client.call(&ctx, "/echo.Echo/Say", &Say { text: "hi".into() })?;
//! println!("{}", reply.text);
//! # Ok::<(), syncrpc::Error>(())
//! ```
//!
//! A service's `main` serves until SIGTERM or Ctrl-C, drains, and exits
//! with a code that tells a clean drain from a forced one:
//!
//! ```no_run
//! # use syncrpc::{Server, Service};
//! # let service = Service::new("echo.Echo");
//! let server = Server::builder()
//!     .service(service)
//!     .handle_signals(true)
//!     .bind("0.0.0.0:7000")?;
//! let report = server.run();
//! std::process::exit(report.exit_code());
//! # Ok::<(), syncrpc::Error>(())
//! ```
//!
//! # Architecture
//!
//! ```text
//!  client threads ─▶ Client ─▶ connection (coalesced writes, one reader thread)
//!                                   │  frames of `codec`
//!                                   ▼
//!  server: event loops (mio) or a thread per connection
//!          └─ transport: plain TCP, or TLS (rustls, feature `tls`), per
//!             connection; bytes in and out, below every protocol
//!          └─ protocol (a trait): native frames, MessagePack-RPC or
//!             HTTP/1.1, per connection; decodes requests, encodes answers
//!          └─ dispatch: routing, deadline, in-flight table
//!               └─ WorkerPool (bounded queue, deadline per task)
//!                    └─ filters ─▶ decompress + decode ─▶ handler(&Context, req)
//!          responses go back into the connection's output buffer; a
//!          worker writes them in one go when its queue runs dry
//!  shutdown coordinator: health, GOAWAY, drain, join (Latch), hooks, report
//! ```
//!
//! - [`codec`]: the wire protocol (`docs/protocol.md`). An incremental
//!   [`Decoder`](codec::Decoder) that never sizes a buffer from a declared
//!   length, a reusable [`Encoder`](codec::Encoder), bounded inflation,
//!   and a structural check of untrusted MessagePack before serde sees it.
//! - [`flow_control`]: the window arithmetic of one direction of one
//!   stream (protocol revision 1.1), kept by both ends of a stream.
//! - [`server`]: services of typed or raw handlers, a [`Filter`] chain,
//!   and two I/O modes that share everything but the sockets: *event mode*
//!   (a few mio loops; many connections, few threads) and *thread mode*
//!   (blocking reads and writes, two threads per connection). The thread
//!   that reads a request runs it itself when that saves a hand-off
//!   without making anything wait: a lone request of a quick method on a
//!   connection's thread, or a read's quick requests while the workers
//!   are behind, for a bounded time. Answers are written by whichever thread
//!   makes them. Per-request
//!   work lives in one mode-independent dispatcher, so limits, status codes
//!   and deadlines are identical in both. The dispatcher is also
//!   protocol-independent: each wire protocol (native, MessagePack-RPC,
//!   HTTP/1.1) is
//!   one implementation of a small internal trait, chosen per connection
//!   by its first byte; its decoder hands the dispatcher neutral requests,
//!   and it encodes the answers, so services, filters, the pool, deadlines
//!   and shutdown never see which wire a request came on.
//! - [`service!`] and [`descriptor`]: one declaration per service, its
//!   methods described for [`server::reflection`], the built-in service
//!   that tells tools (the `syncrpc` command line of the `cli/` crate)
//!   what a listener serves.
//! - [`pool`]: the fixed [`WorkerPool`](pool::WorkerPool). A full queue
//!   answers `RESOURCE_EXHAUSTED` at once; a request whose deadline passed
//!   in the queue is answered `DEADLINE_EXCEEDED` unrun; a panic is caught.
//! - [`Context`]: deadline, cancellation, trace id and metadata of a call;
//!   the thing every handler gets and every client call takes.
//! - [`client`]: a blocking [`Client`] that is `Send + Sync + Clone`,
//!   multiplexes calls over a few connections per endpoint, balances and
//!   fails over between endpoints, and says whether a failed call may have
//!   run; server, client and bidirectional streams as iterators and
//!   blocking senders. [`TaskGroup`] fans calls out and stops them at the
//!   first error.
//! - [`shutdown`]: the coordinator that stops a server
//!   without losing a request, on a signal or an API call, joining every
//!   thread with a [`Latch`] and returning a report.
//!
//! - `tls` (feature `tls`): TLS and mutual TLS with rustls, below the
//!   wire protocols, on the server (per listener: TLS only, or TLS and
//!   plaintext on one port) and the client; the verified peer identity
//!   is on [`Context::peer`], and [`filters::Auth`] checks bearer tokens
//!   and identities per method (`docs/security.md`).
//!
//! - Streams (protocol revision 1.1): server, client and bidirectional
//!   streaming methods ([`Service::server_stream`] and its siblings, or
//!   `server_stream` / `client_stream` / `bidi_stream` in [`service!`]).
//!   A stream is a call that stays in flight until its RESPONSE and holds
//!   a worker for its life; its handler reads an iterator of the client's
//!   messages ([`server::Incoming`]) and sends through a
//!   [`server::Sink`] that blocks on the client's flow-control window
//!   ([`flow_control`]). `server::stream` says how it fits dispatch.
//!
//! Non-goals: async integration and service discovery.
#![forbid(unsafe_code)]
#![deny(missing_docs)]

pub mod client;
pub mod codec;
mod context;
pub mod descriptor;
mod error;
mod filter;
pub mod filters;
pub mod flow_control;
#[doc(hidden)]
pub mod fuzzing;
mod hash;
mod latch;
mod metadata;
mod peer;
pub mod pool;
pub mod server;
mod service_macro;
pub mod shutdown;
mod spare;
mod status;
mod task_group;
#[cfg(feature = "tls")]
pub mod tls;
mod trace;

pub use client::{CallOptions, Client};
pub use context::{CancelGuard, CancelHandle, CancelReason, Context};
pub use error::{Error, ErrorKind, Execution};
pub use filter::{Filter, Next, Reply, Request, Response};
pub use latch::{Latch, LatchGuard};
pub use metadata::{Metadata, MetadataValue};
pub use peer::{Peer, PeerIdentity};
pub use server::{Server, ServerBuilder, ServerHandle, Service};
pub use shutdown::{ShutdownHandle, ShutdownReport};
pub use status::{Code, Status};
pub use task_group::{TaskError, TaskGroup, TaskHandle};
pub use trace::TraceId;

/// What [`service!`]'s expansion names, whatever the user's crate depends
/// on.
#[doc(hidden)]
pub mod __private {
    pub use bytes::Bytes;
    pub use serde;
}

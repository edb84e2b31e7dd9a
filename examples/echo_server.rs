//! An echo server for trying syncrpc from any client that speaks the
//! protocol.
//!
//! ```text
//! cargo run --release --example echo_server -- 127.0.0.1:7000
//! RUST_LOG=syncrpc::access=info cargo run --example echo_server
//! ```
//!
//! Methods of `echo.Echo`:
//!
//! - `Say` (MessagePack `{"text": str}`): answers the same message;
//! - `Raw` (raw bytes): answers the same bytes;
//! - `Sleep` (MessagePack `{"ms": uint}`): waits that long, or until the
//!   call is cancelled or its deadline passes, then answers `{"slept_ms"}`;
//! - `Fail` (MessagePack `{"code": uint, "message": str}`): answers that
//!   status.
//!
//! Ctrl-C (or SIGTERM) shuts it down gracefully and prints the metrics.

use std::time::{Duration, Instant};

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use syncrpc::filters::{AccessLog, Metrics};
use syncrpc::{Code, Context, Server, Service, Status};

#[derive(Serialize, Deserialize)]
struct Say {
    text: String,
}

#[derive(Deserialize)]
struct Sleep {
    ms: u64,
}

#[derive(Serialize)]
struct Slept {
    slept_ms: u64,
}

#[derive(Deserialize)]
struct Fail {
    code: u32,
    #[serde(default)]
    message: String,
}

fn sleep(ctx: &Context, req: Sleep) -> Result<Slept, Status> {
    let start = Instant::now();
    ctx.wait_cancelled(Duration::from_millis(req.ms));
    ctx.check()?;
    Ok(Slept {
        slept_ms: start.elapsed().as_millis() as u64,
    })
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info")).init();
    let addr = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:7000".to_owned());
    let metrics = Metrics::new();
    let echo = Service::new("echo.Echo")
        .method("Say", |_: &Context, req: Say| Ok::<_, Status>(req))
        .raw_method("Raw", |_: &Context, body: Bytes| Ok::<_, Status>(body))
        .method("Sleep", sleep)
        .method("Fail", |_: &Context, req: Fail| -> Result<(), Status> {
            Err(Status::new(Code::from(req.code), req.message))
        });
    let server = Server::builder()
        .filter(AccessLog::new().ok_level(log::Level::Debug))
        .filter(metrics.clone())
        .service(echo)
        .bind(addr.as_str())?;
    log::info!("echo server listening on {}", server.local_addr());

    let (tx, rx) = crossbeam_channel::bounded(1);
    ctrlc::set_handler(move || {
        let _ = tx.try_send(());
    })?;
    let _ = rx.recv();
    log::info!("shutting down");
    let report = server.shutdown();
    let snap = metrics.snapshot();
    log::info!(
        "{} requests, {} errors, p99 <= {:?}; shutdown: {report:?}",
        snap.requests,
        snap.errors,
        snap.latency.quantile(0.99)
    );
    Ok(())
}

//! An echo server for trying syncrpc from any client that speaks the
//! protocol.
//!
//! ```text
//! cargo run --release --example echo_server -- 127.0.0.1:7000
//! cargo run --release --example echo_server -- 0.0.0.0:7000 --mode thread --drain-delay-ms 5000
//! RUST_LOG=syncrpc::access=info cargo run --example echo_server
//! ```
//!
//! Options: `--mode event|thread` (the I/O mode, default event),
//! `--drain-delay-ms N` (how long a shutdown keeps serving with health
//! saying NOT_SERVING, default 0) and `--shutdown-timeout-ms N` (default
//! 10000).
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
//! MessagePack-RPC clients reach the same methods as `echo.Echo.Say` or
//! just `Say` (`docs/msgpack-rpc.md`).
//!
//! It also serves the built-in `/syncrpc.Health/Check`, for
//! `examples/health_probe.rs`. SIGTERM or Ctrl-C shuts it down gracefully
//! (a second one forces the stop); it then logs the metrics and the
//! shutdown report, and exits 0 after a clean drain, 1 otherwise. It is the
//! server `deploy/kubernetes.yaml` runs.

use std::time::{Duration, Instant};

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use syncrpc::filters::{AccessLog, Metrics};
use syncrpc::server::{Mode, Timeouts};
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

struct Args {
    addr: String,
    mode: Mode,
    drain_delay: Duration,
    shutdown_timeout: Duration,
}

fn parse_args() -> Result<Args, String> {
    let mut args = Args {
        addr: "127.0.0.1:7000".to_owned(),
        mode: Mode::Event,
        drain_delay: Duration::ZERO,
        shutdown_timeout: Duration::from_secs(10),
    };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        let mut value = || it.next().ok_or(format!("{arg} needs a value"));
        let millis = |v: String| {
            v.parse::<u64>()
                .map(Duration::from_millis)
                .map_err(|_| format!("{arg} takes milliseconds, not {v:?}"))
        };
        match arg.as_str() {
            "--mode" => {
                args.mode = match value()?.as_str() {
                    "event" => Mode::Event,
                    "thread" => Mode::Thread,
                    other => return Err(format!("--mode is event or thread, not {other:?}")),
                }
            }
            "--drain-delay-ms" => args.drain_delay = millis(value()?)?,
            "--shutdown-timeout-ms" => args.shutdown_timeout = millis(value()?)?,
            flag if flag.starts_with("--") => return Err(format!("unknown option {flag}")),
            _ => args.addr = arg,
        }
    }
    Ok(args)
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info")).init();
    let args = parse_args().map_err(|e| {
        format!("{e}\nusage: echo_server [ADDR] [--mode event|thread] [--drain-delay-ms N] [--shutdown-timeout-ms N]")
    })?;
    let metrics = Metrics::new();
    let echo = Service::new("echo.Echo")
        .method("Say", |_: &Context, req: Say| Ok::<_, Status>(req))
        .raw_method("Raw", |_: &Context, body: Bytes| Ok::<_, Status>(body))
        .method("Sleep", sleep)
        .method("Fail", |_: &Context, req: Fail| -> Result<(), Status> {
            Err(Status::new(Code::from(req.code), req.message))
        });
    let server = Server::builder()
        .mode(args.mode)
        .handle_signals(true)
        .timeouts(Timeouts {
            drain_delay: args.drain_delay,
            shutdown: args.shutdown_timeout,
            ..Timeouts::default()
        })
        .filter(AccessLog::new().ok_level(log::Level::Debug))
        .filter(metrics.clone())
        .service(echo)
        .msgpack_rpc_default_service("echo.Echo")
        .bind(args.addr.as_str())?;
    log::info!(
        "echo server listening on {} ({:?} mode)",
        server.local_addr(),
        args.mode
    );

    let report = server.run();
    let snap = metrics.snapshot();
    log::info!(
        "{} requests, {} errors, p99 <= {:?}; shutdown: {report:?}",
        snap.requests,
        snap.errors,
        snap.latency.quantile(0.99)
    );
    std::process::exit(report.exit_code());
}

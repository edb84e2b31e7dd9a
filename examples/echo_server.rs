//! An echo server for trying syncrpc from any client that speaks the
//! protocol, and for measuring it.
//!
//! ```text
//! cargo run --release --example echo_server -- --addr 127.0.0.1:7000 --mode event
//! cargo run --release --example echo_server -- --help
//! RUST_LOG=warn cargo run --release --example echo_server   # no access log
//! ```
//!
//! Service `echo.Echo`:
//!
//! | method | request | answer |
//! |---|---|---|
//! | `Say` | `{"text": str}` | the same `{"text": str}` |
//! | `Sleep` | `{"ms": uint}` | `{}` after that long, or `CANCELLED` / `DEADLINE_EXCEEDED` as soon as the call is cancelled or its deadline passes |
//! | `Fail` | `{"code": uint, "message": str}` | that status (code 0 answers OK with `{}`) |
//! | `Panic` | any MessagePack value | the handler panics: `INTERNAL` |
//! | `Bytes` | raw bytes (encoding 1) | the same bytes |
//!
//! MessagePack-RPC clients reach the same methods as `echo.Echo.Say` or
//! just `Say` (`docs/msgpack-rpc.md`).
//!
//! It also serves the built-in health service `/syncrpc.Health/Check`
//! (for `examples/health_probe.rs`). Every limit and timeout has a flag
//! whose default is the protocol's (`docs/protocol.md`, "Limits"). It logs
//! through env_logger (`RUST_LOG`, default `info`), with one access-log
//! line per call at `info` (failures at `warn`). SIGTERM or Ctrl-C shuts it
//! down gracefully (a second one forces the stop); it then logs the call
//! counts and the shutdown report, and exits 0 after a clean drain, 1
//! otherwise. It is the server `deploy/kubernetes.yaml` runs.

use std::fmt::Write as _;
use std::process::ExitCode;
use std::time::Duration;

use bytes::Bytes;
use serde::de::IgnoredAny;
use serde::{Deserialize, Serialize};
use syncrpc::filters::{AccessLog, Metrics};
use syncrpc::server::{Mode, ServerConfig};
use syncrpc::{Code, Context, Server, Service, Status};

#[derive(Serialize, Deserialize)]
struct Say {
    text: String,
}

#[derive(Deserialize)]
struct Sleep {
    ms: u64,
}

/// `{}`: an empty map.
#[derive(Serialize)]
struct Empty {}

#[derive(Deserialize)]
struct Fail {
    code: u32,
    #[serde(default)]
    message: String,
}

fn sleep(ctx: &Context, req: Sleep) -> Result<Empty, Status> {
    ctx.wait_cancelled(Duration::from_millis(req.ms));
    ctx.check()?;
    Ok(Empty {})
}

fn fail(_: &Context, req: Fail) -> Result<Empty, Status> {
    match Code::from(req.code) {
        Code::OK => Ok(Empty {}),
        code => Err(Status::new(code, req.message)),
    }
}

fn echo_service() -> Service {
    Service::new("echo.Echo")
        .method("Say", |_: &Context, req: Say| Ok::<_, Status>(req))
        .method("Sleep", sleep)
        .method("Fail", fail)
        .method(
            "Panic",
            |_: &Context, _: IgnoredAny| -> Result<(), Status> {
                panic!("echo.Echo/Panic was called")
            },
        )
        .raw_method("Bytes", |_: &Context, body: Bytes| Ok::<_, Status>(body))
}

/// The command line: where to listen and the whole server configuration.
struct Args {
    addr: String,
    config: ServerConfig,
    loops_set: bool,
}

fn usage() -> String {
    let d = ServerConfig::default();
    let (l, t) = (&d.limits, &d.timeouts);
    let ms = |t: Duration| t.as_millis().to_string();
    let mut s = String::from(
        "usage: echo_server [OPTIONS] [ADDR]\n\
         \n\
         Serves echo.Echo (Say, Sleep, Fail, Panic, Bytes) and the health service\n\
         until SIGTERM or Ctrl-C, then drains and exits 0 (1 if the drain was not\n\
         clean). RUST_LOG sets the logging (default info: one access-log line per\n\
         call; RUST_LOG=warn for load tests).\n\
         \n\
         The defaults are the protocol's (docs/protocol.md, \"Limits\").\n\n",
    );
    let rows: [(&str, String, &str); 14] = [
        (
            "--addr HOST:PORT",
            "127.0.0.1:7000".into(),
            "listen address (also taken bare)",
        ),
        (
            "--mode event|thread",
            "event".into(),
            "event loops, or 2 threads a connection",
        ),
        (
            "--workers N",
            d.workers.to_string(),
            "handler threads (CPUs, at least 4)",
        ),
        (
            "--loops N",
            d.event_loops.to_string(),
            "event loops (event mode only)",
        ),
        (
            "--queue N",
            d.queue_capacity.to_string(),
            "calls waiting for a worker",
        ),
        (
            "--max-body BYTES",
            l.max_body.to_string(),
            "request body, as sent and inflated",
        ),
        ("--max-meta BYTES", l.max_meta.to_string(), "meta section"),
        (
            "--max-connections N",
            l.max_connections.to_string(),
            "open connections",
        ),
        (
            "--max-inflight N",
            l.max_in_flight_per_connection.to_string(),
            "calls in flight per connection",
        ),
        (
            "--idle-timeout-ms MS",
            ms(t.idle),
            "close a connection idle this long",
        ),
        (
            "--frame-timeout-ms MS",
            ms(t.frame),
            "time to receive one whole frame",
        ),
        (
            "--shutdown-timeout-ms MS",
            ms(t.shutdown),
            "time to finish calls already read",
        ),
        (
            "--drain-delay-ms MS",
            ms(t.drain_delay),
            "serve on, health NOT_SERVING, first",
        ),
        ("-h, --help", String::new(), "this text"),
    ];
    for (flag, default, what) in [("option", String::from("default"), "meaning")]
        .into_iter()
        .chain(rows)
    {
        let _ = writeln!(s, "  {flag:<26}{default:<16}{what}");
    }
    s.push_str("\nBYTES may end in KiB, MiB or GiB: --max-body 64MiB.");
    s
}

/// A whole number of at least `min`.
fn number(flag: &str, v: &str, min: u64) -> Result<u64, String> {
    match v.parse::<u64>() {
        Ok(n) if n >= min => Ok(n),
        Ok(_) => Err(format!("{flag} must be at least {min}, not {v}")),
        Err(_) => Err(format!("{flag} takes a whole number, not {v:?}")),
    }
}

/// A size in bytes, with an optional KiB, MiB or GiB suffix.
fn bytes(flag: &str, v: &str) -> Result<usize, String> {
    let (digits, unit) = [("KiB", 1 << 10), ("MiB", 1 << 20), ("GiB", 1 << 30)]
        .iter()
        .find_map(|&(suffix, unit)| v.strip_suffix(suffix).map(|d| (d, unit)))
        .unwrap_or((v, 1u64));
    number(flag, digits.trim(), 1)?
        .checked_mul(unit)
        .and_then(|n| usize::try_from(n).ok())
        .ok_or_else(|| format!("{flag} {v} is too large"))
}

fn parse_args(words: impl IntoIterator<Item = String>) -> Result<Option<Args>, String> {
    let mut args = Args {
        addr: "127.0.0.1:7000".to_owned(),
        config: ServerConfig::default(),
        loops_set: false,
    };
    let c = &mut args.config;
    let mut addr_given = false;
    let mut it = words.into_iter();
    while let Some(flag) = it.next() {
        if flag == "-h" || flag == "--help" {
            return Ok(None);
        }
        if !flag.starts_with('-') {
            if addr_given {
                return Err(format!("two addresses given: {} and {flag}", args.addr));
            }
            (args.addr, addr_given) = (flag, true);
            continue;
        }
        let v = it.next().ok_or_else(|| format!("{flag} needs a value"))?;
        let f = flag.as_str();
        let millis = |min| number(f, &v, min).map(Duration::from_millis);
        let count = |min| number(f, &v, min).map(|n| n as usize);
        match f {
            "--addr" => {
                if addr_given {
                    return Err(format!("two addresses given: {} and {v}", args.addr));
                }
                (args.addr, addr_given) = (v, true);
            }
            "--mode" => {
                c.mode = match v.as_str() {
                    "event" => Mode::Event,
                    "thread" => Mode::Thread,
                    _ => return Err(format!("--mode is event or thread, not {v:?}")),
                }
            }
            "--workers" => c.workers = count(1)?,
            "--loops" => (c.event_loops, args.loops_set) = (count(1)?, true),
            "--queue" => c.queue_capacity = count(1)?,
            "--max-body" => c.limits.max_body = bytes(f, &v)?,
            "--max-meta" => c.limits.max_meta = bytes(f, &v)?,
            "--max-connections" => c.limits.max_connections = count(1)?,
            "--max-inflight" => c.limits.max_in_flight_per_connection = count(1)?,
            "--idle-timeout-ms" => c.timeouts.idle = millis(1)?,
            "--frame-timeout-ms" => c.timeouts.frame = millis(1)?,
            "--shutdown-timeout-ms" => c.timeouts.shutdown = millis(0)?,
            "--drain-delay-ms" => c.timeouts.drain_delay = millis(0)?,
            _ => return Err(format!("unknown option {flag}")),
        }
    }
    if args.loops_set && args.config.mode == Mode::Thread {
        return Err("--loops sets event loops; thread mode has none".into());
    }
    if args.config.limits.max_meta > usize::from(u16::MAX) {
        return Err(format!(
            "--max-meta {} is more than a frame can carry ({})",
            args.config.limits.max_meta,
            u16::MAX
        ));
    }
    Ok(Some(args))
}

fn main() -> ExitCode {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info")).init();
    let args = match parse_args(std::env::args().skip(1)) {
        Ok(Some(args)) => args,
        Ok(None) => {
            println!("{}", usage());
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            eprintln!("error: {e}\nrun echo_server --help for the options");
            return ExitCode::from(2);
        }
    };
    let mode = args.config.mode;
    let (workers, loops) = (args.config.workers, args.config.event_loops);
    let metrics = Metrics::new();
    let server = Server::builder()
        .config(args.config)
        .handle_signals(true)
        .filter(AccessLog::new())
        .filter(metrics.clone())
        .service(echo_service())
        .msgpack_rpc_default_service("echo.Echo")
        .bind(args.addr.as_str());
    let server = match server {
        Ok(server) => server,
        Err(e) => {
            eprintln!("error: cannot serve on {}: {e}", args.addr);
            return ExitCode::from(2);
        }
    };
    match mode {
        Mode::Event => log::info!(
            "echo server listening on {} (event mode, {loops} loops, {workers} workers)",
            server.local_addr()
        ),
        _ => log::info!(
            "echo server listening on {} (thread mode, {workers} workers)",
            server.local_addr()
        ),
    }
    // The shutdown logs its own report.
    let report = server.run();
    let snap = metrics.snapshot();
    let p99 = snap.latency.quantile(0.99);
    log::info!(
        "calls: {} served, {} failed; handler time p99 <= {}",
        snap.requests,
        snap.errors,
        p99.map_or_else(|| "-".to_owned(), |d| format!("{d:?}"))
    );
    ExitCode::from(report.exit_code() as u8)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(line: &str) -> Result<Option<Args>, String> {
        parse_args(line.split_whitespace().map(String::from))
    }

    #[test]
    fn defaults_are_the_library_defaults() {
        let args = parse("").unwrap().unwrap();
        assert_eq!(args.addr, "127.0.0.1:7000");
        let (got, want) = (args.config, ServerConfig::default());
        assert_eq!(got.limits, want.limits);
        assert_eq!(got.timeouts, want.timeouts);
        assert_eq!(got.mode, Mode::Event);
        assert_eq!(
            (got.workers, got.event_loops, got.queue_capacity),
            (want.workers, want.event_loops, want.queue_capacity)
        );
    }

    #[test]
    fn every_flag_sets_its_field() {
        let args = parse(
            "--addr 0.0.0.0:9 --mode thread --workers 3 --queue 7 --max-body 2MiB \
             --max-meta 1KiB --max-connections 5 --max-inflight 6 --idle-timeout-ms 8 \
             --frame-timeout-ms 9 --shutdown-timeout-ms 0 --drain-delay-ms 11",
        )
        .unwrap()
        .unwrap();
        let c = &args.config;
        assert_eq!(args.addr, "0.0.0.0:9");
        assert_eq!(c.mode, Mode::Thread);
        assert_eq!((c.workers, c.queue_capacity), (3, 7));
        assert_eq!((c.limits.max_body, c.limits.max_meta), (2 << 20, 1024));
        assert_eq!(c.limits.max_connections, 5);
        assert_eq!(c.limits.max_in_flight_per_connection, 6);
        assert_eq!(c.timeouts.idle, Duration::from_millis(8));
        assert_eq!(c.timeouts.frame, Duration::from_millis(9));
        assert_eq!(c.timeouts.shutdown, Duration::ZERO);
        assert_eq!(c.timeouts.drain_delay, Duration::from_millis(11));
        assert_eq!(parse("--loops 4").unwrap().unwrap().config.event_loops, 4);
        assert_eq!(parse("127.0.0.1:1").unwrap().unwrap().addr, "127.0.0.1:1");
    }

    #[test]
    fn bad_flags_say_what_is_wrong() {
        for (line, error) in [
            ("--workers", "--workers needs a value"),
            ("--workers 0", "--workers must be at least 1, not 0"),
            (
                "--workers four",
                "--workers takes a whole number, not \"four\"",
            ),
            ("--mode fibers", "--mode is event or thread, not \"fibers\""),
            (
                "--max-body 1PiB",
                "--max-body takes a whole number, not \"1PiB\"",
            ),
            (
                "--max-body 99999999999GiB",
                "--max-body 99999999999GiB is too large",
            ),
            (
                "--max-meta 64KiB",
                "--max-meta 65536 is more than a frame can carry (65535)",
            ),
            (
                "--mode thread --loops 2",
                "--loops sets event loops; thread mode has none",
            ),
            ("--verbose 1", "unknown option --verbose"),
            ("a:1 b:2", "two addresses given: a:1 and b:2"),
        ] {
            assert_eq!(parse(line).err().as_deref(), Some(error), "{line}");
        }
        assert!(parse("--help").unwrap().is_none());
    }

    #[test]
    fn the_help_lists_every_flag() {
        let help = usage();
        for flag in [
            "--addr",
            "--mode",
            "--workers",
            "--loops",
            "--queue",
            "--max-body",
            "--max-meta",
            "--max-connections",
            "--max-inflight",
            "--idle-timeout-ms",
            "--frame-timeout-ms",
            "--shutdown-timeout-ms",
            "--drain-delay-ms",
        ] {
            assert!(help.contains(flag), "{flag} missing from:\n{help}");
        }
    }
}

//! An echo server for trying syncrpc from any client that speaks the
//! protocol, and for measuring it.
//!
//! ```text
//! cargo run --release --example echo_server -- --addr 127.0.0.1:7000 --mode event
//! cargo run --release --example echo_server -- --help
//! RUST_LOG=warn cargo run --release --example echo_server   # no access log
//! cargo run --features tls --example echo_server -- \
//!     --tls-cert server.pem --tls-key server.key --tls-client-ca ca.pem --tls-only
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
//! | `Count` (server stream) | `{"n": uint, "ms": uint}` | messages `{"i": 0}` ... `{"i": n-1}`, `ms` milliseconds apart |
//! | `Sum` (client stream) | messages `{"v": int}` | `{"sum": int, "count": uint}` |
//! | `Chat` (bidirectional) | messages `{"text": str}` | each message back as soon as it arrives |
//!
//! MessagePack-RPC clients reach the same methods as `echo.Echo.Say` or
//! just `Say` (`docs/msgpack-rpc.md`).
//!
//! The service is declared once, with `syncrpc::service!`, in
//! `examples/echo_service/mod.rs`, which `examples/client.rs` shares.
//!
//! It also serves the built-in health service `/syncrpc.Health/Check`
//! (for `examples/health_probe.rs` and `syncrpc health`) and the
//! reflection service `syncrpc.Reflection` (for `syncrpc list`,
//! `describe` and `call`). Every limit and timeout has a flag
//! whose default is the protocol's (`docs/protocol.md`, "Limits"). It logs
//! through env_logger (`RUST_LOG`, default `info`), with one access-log
//! line per call at `info` (failures at `warn`). SIGTERM or Ctrl-C shuts it
//! down gracefully (a second one forces the stop); it then logs the call
//! counts and the shutdown report, and exits 0 after a clean drain, 1
//! otherwise. It is the server `deploy/kubernetes.yaml` runs.

mod echo_service;

use std::process::ExitCode;
use std::time::Duration;

use bytes::Bytes;
use echo_service::{Anything, Count, Echo, Empty, Fail, Say, Sleep, Tick, Total, Value};
use syncrpc::filters::{AccessLog, Auth, Metrics};
use syncrpc::server::{Incoming, Mode, ServerConfig, Sink};
use syncrpc::{Code, Context, Server, ServerBuilder, Status};

/// The implementation of `echo.Echo`.
struct EchoServer;

impl Echo for EchoServer {
    fn say(&self, _: &Context, req: Say) -> Result<Say, Status> {
        Ok(req)
    }

    fn sleep(&self, ctx: &Context, req: Sleep) -> Result<Empty, Status> {
        ctx.wait_cancelled(Duration::from_millis(req.ms));
        ctx.check()?;
        Ok(Empty {})
    }

    fn fail(&self, _: &Context, req: Fail) -> Result<Empty, Status> {
        match Code::from(req.code) {
            Code::OK => Ok(Empty {}),
            code => Err(Status::new(code, req.message)),
        }
    }

    fn panic(&self, _: &Context, _: Anything) -> Result<(), Status> {
        panic!("echo.Echo/Panic was called")
    }

    fn bytes(&self, _: &Context, body: Bytes) -> Result<Bytes, Status> {
        Ok(body)
    }

    fn count(&self, ctx: &Context, req: Count, sink: &Sink<Tick>) -> Result<(), Status> {
        for i in 0..req.n {
            if i > 0 && req.ms > 0 {
                ctx.wait_cancelled(Duration::from_millis(req.ms));
            }
            sink.send(&Tick { i })?;
        }
        Ok(())
    }

    fn sum(&self, _: &Context, msgs: Incoming<Value>) -> Result<Total, Status> {
        let mut total = Total { sum: 0, count: 0 };
        for msg in msgs {
            total.sum = total
                .sum
                .checked_add(msg?.v)
                .ok_or_else(|| Status::out_of_range("the sum overflows a 64-bit integer"))?;
            total.count += 1;
        }
        Ok(total)
    }

    fn chat(&self, _: &Context, msgs: Incoming<Say>, sink: &Sink<Say>) -> Result<(), Status> {
        for msg in msgs {
            sink.send(&msg?)?;
        }
        Ok(())
    }
}

/// The command line: where to listen and the whole server configuration.
struct Args {
    addr: String,
    config: ServerConfig,
    loops_set: bool,
    security: Security,
}

/// TLS and credentials from the command line.
#[derive(Default)]
struct Security {
    tls_cert: Option<String>,
    tls_key: Option<String>,
    tls_client_ca: Option<String>,
    tls_only: bool,
    token: Option<String>,
}

fn usage() -> String {
    let d = ServerConfig::default();
    let (l, t) = (&d.limits, &d.timeouts);
    let ms = |t: Duration| t.as_millis();
    format!(
        "\
usage: echo_server [OPTIONS] [ADDR]

Serves echo.Echo (Say, Sleep, Fail, Panic, Bytes), the health service and
reflection (for `syncrpc list`) until SIGTERM or Ctrl-C, then drains and
exits 0 (1 if the drain was not clean). RUST_LOG sets the logging (default info: one access-log line per
call; RUST_LOG=warn for load tests).

The limits and timeouts default to the protocol's values (docs/protocol.md,
\"Limits\"); the rest to the library's.

  option                    default         meaning
  --addr HOST:PORT          127.0.0.1:7000  listen address (also taken bare)
  --mode event|thread       event           event loops, or 2 threads a connection
  --workers N               {workers:<16}handler threads (CPUs, at least 4)
  --loops N                 {loops:<16}event loops (event mode only)
  --queue N                 {queue:<16}calls waiting for a worker
  --max-body BYTES          {body:<16}request body, as sent and inflated
  --max-meta BYTES          {meta:<16}meta section
  --max-connections N       {conns:<16}open connections
  --max-inflight N          {inflight:<16}calls in flight per connection
  --max-streams N           workers / 2     streams open at once (each holds a worker)
  --idle-timeout-ms MS      {idle:<16}close a connection idle this long
  --frame-timeout-ms MS     {frame:<16}time to receive one whole frame
  --shutdown-timeout-ms MS  {shutdown:<16}time to finish calls already read
  --drain-delay-ms MS       {drain:<16}serve on, health NOT_SERVING, first
  --tls-cert FILE           -               serve TLS with this PEM certificate chain
  --tls-key FILE            -               and this PEM private key
  --tls-client-ca FILE      -               require client certificates signed by it
  --tls-only                off             refuse plaintext (else both on one port)
  --token T                 -               require `authorization: Bearer T`
  -h, --help                                this text

BYTES may end in KiB, MiB or GiB: --max-body 64MiB. The --tls-* flags need
the tls feature (cargo run --features tls --example echo_server); docs/security.md
makes a throwaway CA and certificates with openssl.",
        workers = d.workers,
        loops = d.event_loops,
        queue = d.queue_capacity,
        body = l.max_body,
        meta = l.max_meta,
        conns = l.max_connections,
        inflight = l.max_in_flight_per_connection,
        idle = ms(t.idle),
        frame = ms(t.frame),
        shutdown = ms(t.shutdown),
        drain = ms(t.drain_delay),
    )
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
        security: Security::default(),
    };
    let c = &mut args.config;
    let mut addr_given = false;
    let mut it = words.into_iter();
    while let Some(flag) = it.next() {
        if flag == "-h" || flag == "--help" {
            return Ok(None);
        }
        if flag == "--tls-only" {
            args.security.tls_only = true;
            continue;
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
            "--max-streams" => c.limits.max_streams = Some(count(1)?),
            "--idle-timeout-ms" => c.timeouts.idle = millis(1)?,
            "--frame-timeout-ms" => c.timeouts.frame = millis(1)?,
            "--shutdown-timeout-ms" => c.timeouts.shutdown = millis(0)?,
            "--drain-delay-ms" => c.timeouts.drain_delay = millis(0)?,
            "--tls-cert" => args.security.tls_cert = Some(v),
            "--tls-key" => args.security.tls_key = Some(v),
            "--tls-client-ca" => args.security.tls_client_ca = Some(v),
            "--token" => args.security.token = Some(v),
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
    let s = &args.security;
    if s.tls_cert.is_some() != s.tls_key.is_some() {
        return Err("--tls-cert and --tls-key go together".into());
    }
    if s.tls_cert.is_none() && (s.tls_only || s.tls_client_ca.is_some()) {
        return Err("--tls-only and --tls-client-ca need --tls-cert and --tls-key".into());
    }
    Ok(Some(args))
}

/// Adds TLS (as the flags say) and the token check to `builder`.
fn secure(builder: ServerBuilder, s: &Security) -> Result<ServerBuilder, String> {
    let builder = match &s.token {
        Some(token) => builder.filter(Auth::new().token(token, "token")),
        None => builder,
    };
    let (Some(cert), Some(key)) = (&s.tls_cert, &s.tls_key) else {
        return Ok(builder);
    };
    #[cfg(feature = "tls")]
    {
        use syncrpc::tls::{ServerTls, TlsMode};
        let mut tls = ServerTls::from_pem_files(cert, key).map_err(|e| e.to_string())?;
        if let Some(ca) = &s.tls_client_ca {
            tls = tls.client_ca_file(ca).map_err(|e| e.to_string())?;
        }
        let mode = if s.tls_only {
            TlsMode::Required
        } else {
            TlsMode::Optional
        };
        Ok(builder.tls(tls.mode(mode)))
    }
    #[cfg(not(feature = "tls"))]
    {
        let _ = (cert, key);
        Err("--tls-cert: this build has no TLS; build with --features tls".into())
    }
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
    let tls = match (&args.security.tls_cert, args.security.tls_only) {
        (None, _) => "plaintext",
        (Some(_), false) => "TLS and plaintext",
        (Some(_), true) => "TLS only",
    };
    let builder = match secure(Server::builder(), &args.security) {
        Ok(b) => b,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    let server = builder
        .config(args.config)
        .handle_signals(true)
        .filter(AccessLog::new().to_writer(std::io::stderr()))
        .filter(metrics.clone())
        .service(EchoServer.into_service())
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
            "echo server listening on {} ({tls}; event mode, {loops} loops, {workers} workers)",
            server.local_addr()
        ),
        _ => log::info!(
            "echo server listening on {} ({tls}; thread mode, {workers} workers)",
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

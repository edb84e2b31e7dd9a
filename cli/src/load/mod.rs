//! `load`: many raw requests from one thread, a live progress line on
//! stderr, and the report on stdout.

mod driver;
mod report;

use std::io::{IsTerminal, Write};
use std::net::ToSocketAddrs;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, ValueEnum};

use crate::connect::method_path;
use crate::exit::{self, Failure};
use crate::security::{Security, TOKEN_ENV};
use driver::{Load, Wire, ECHO_BYTES};

#[derive(Args, Debug)]
pub struct LoadArgs {
    /// The server, HOST:PORT.
    addr: String,
    /// The method called with a raw body.
    #[arg(default_value = ECHO_BYTES)]
    method: String,
    /// Connections.
    #[arg(short, long, default_value_t = 16, value_parser = clap::value_parser!(u64).range(1..=100_000))]
    connections: u64,
    /// Requests in flight per connection; 1 is a closed loop, more
    /// pipelines.
    #[arg(short, long, default_value_t = 1, value_parser = clap::value_parser!(u64).range(1..=u64::from(u32::MAX)))]
    depth: u64,
    /// Seconds measured.
    #[arg(short = 't', long, default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..))]
    duration: u64,
    /// Load before measuring starts, in milliseconds.
    #[arg(long, default_value_t = 500)]
    warmup_ms: u64,
    /// Raw request body size in bytes.
    #[arg(long, default_value_t = 64, value_parser = clap::value_parser!(u64).range(0..=u64::from(u32::MAX)))]
    size: u64,
    /// The wire protocol.
    #[arg(long, value_enum, default_value_t = LoadProtocol::Native)]
    protocol: LoadProtocol,
    /// How often the progress line is redrawn, e.g. 500ms or 1s.
    #[arg(long, value_name = "DURATION", default_value = "1s", value_parser = crate::connect::parse_duration)]
    progress_every: Duration,
    /// No progress line.
    #[arg(long)]
    quiet: bool,
    #[command(flatten)]
    security: Security,
}

#[derive(ValueEnum, Clone, Copy, Debug)]
enum LoadProtocol {
    Native,
    MsgpackRpc,
}

pub fn load(args: LoadArgs) -> Result<ExitCode, Failure> {
    let method = method_path(&args.method)?;
    let addr = args
        .addr
        .to_socket_addrs()
        .map_err(|e| Failure::usage(format!("bad address {:?}: {e}", args.addr)))?
        .next()
        .ok_or_else(|| Failure::usage(format!("{:?} resolves to no address", args.addr)))?;
    let token = args.security.token()?.map(str::to_owned);
    if token.is_some() && matches!(args.protocol, LoadProtocol::MsgpackRpc) {
        return Err(Failure::usage(format!(
            "--token (or {TOKEN_ENV}) cannot be sent over MessagePack-RPC, \
             which has no place for it"
        )));
    }
    let tls = args.security.client_tls()?.map(|t| t.rustls_config());
    let server_name = args
        .security
        .tls_server_name
        .clone()
        .unwrap_or_else(|| host_of(&args.addr).to_owned());
    let load = Load {
        addr,
        wire: match args.protocol {
            LoadProtocol::Native => Wire::Native,
            LoadProtocol::MsgpackRpc => Wire::MsgpackRpc,
        },
        connections: args.connections as usize,
        depth: args.depth as usize,
        method,
        body_len: args.size as usize,
        warmup: Duration::from_millis(args.warmup_ms),
        duration: Duration::from_secs(args.duration),
        tls,
        server_name,
        token,
    };
    println!("{}", report::plan(&load));
    // On a terminal the line redraws in place; in a log, one line each.
    let stderr = std::io::stderr();
    let in_place = stderr.is_terminal();
    let every = if args.quiet {
        Duration::MAX
    } else {
        args.progress_every
    };
    let outcome = load
        .run_with_progress(
            |_| {},
            every,
            |p| {
                let line = report::progress(p);
                let mut err = stderr.lock();
                let _ = if in_place {
                    write!(err, "\r\x1b[2K{line}")
                } else {
                    writeln!(err, "progress  {line}")
                };
                let _ = err.flush();
            },
        )
        .map_err(|e| Failure {
            status: exit::NOT_RUN,
            message: format!("ERROR: {e}"),
        })?;
    if in_place && !args.quiet {
        eprintln!();
    }
    let stdout = std::io::stdout();
    report::write(&mut stdout.lock(), &load, &outcome)
        .map_err(|e| Failure::usage(format!("cannot write the report: {e}")))?;
    Ok(if report::all_ok(&outcome) {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(exit::FAILED)
    })
}

/// The host of `HOST:PORT` (`[::1]:7000` gives `::1`), the name a server's
/// certificate is verified against.
fn host_of(addr: &str) -> &str {
    let host = addr.rsplit_once(':').map_or(addr, |(host, _)| host);
    host.trim_start_matches('[').trim_end_matches(']')
}

#[cfg(test)]
mod tests {
    use super::host_of;

    #[test]
    fn hosts_of_addresses() {
        assert_eq!(host_of("localhost:7000"), "localhost");
        assert_eq!(host_of("127.0.0.1:7000"), "127.0.0.1");
        assert_eq!(host_of("[::1]:7000"), "::1");
    }
}

//! A load generator for any syncrpc server: C connections with D requests
//! in flight on each, for T seconds; prints the rate, latency percentiles
//! and every answer that was not OK. `syncrpc load` (the `cli/` crate)
//! runs the same driver with a live progress line; this example stays for
//! scripts that build only the library.
//!
//! ```text
//! RUST_LOG=warn cargo run --release --example echo_server &
//! cargo run --release --example load -- --addr 127.0.0.1:7000 -c 16 -d 8 -t 10
//! ```
//!
//! It sends raw bodies (encoding 1) to `/echo.Echo/Bytes` unless told
//! another method, in the native protocol or MessagePack-RPC (a `[bin]`
//! param); one thread drives every connection, so on a small
//! machine pin it apart from the server (`taskset -c 1 ...`). Exits 0 when
//! every answer was OK, 1 when some were not or a connection was lost, and
//! 2 for a bad command line or a server that cannot be reached.

#[path = "../cli/src/load/driver.rs"]
mod driver;
#[path = "../cli/src/load/report.rs"]
mod report;

use std::net::{SocketAddr, ToSocketAddrs};
use std::process::ExitCode;
use std::time::Duration;

use driver::{Load, Wire};

const USAGE: &str = "\
usage: load [OPTIONS]

Drives a syncrpc server with C connections x D requests in flight for T
seconds, then prints req/s, latency percentiles and non-OK answers.

options:
  --addr HOST:PORT      server address [default: 127.0.0.1:7000]
  -c, --connections C   connections [default: 16]
  -d, --depth D         requests in flight per connection; 1 is a closed
                        loop, more pipelines [default: 1]
  -t, --duration T      seconds measured [default: 10]
  --warmup-ms MS        load before measuring starts [default: 500]
  --size BYTES          raw request body size [default: 64]
  --method /SVC/M       method called with the raw body [default: /echo.Echo/Bytes]
  --protocol P          native or msgpack-rpc [default: native]
  -h, --help            this text

exit status: 0 all answers OK, 1 some were not (or a connection was lost),
2 bad arguments or the server cannot be reached";

fn parse_args() -> Result<Option<Load>, String> {
    let mut addr = "127.0.0.1:7000".to_owned();
    let mut load = Load {
        duration: Duration::from_secs(10),
        warmup: Duration::from_millis(500),
        ..Load::echo(SocketAddr::from(([127, 0, 0, 1], 7000)), 16, 1, 64)
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        if flag == "-h" || flag == "--help" {
            return Ok(None);
        }
        let value = it.next().ok_or_else(|| format!("{flag} needs a value"))?;
        let number = |min: u64| match value.parse::<u64>() {
            Ok(n) if n >= min => Ok(n),
            _ => Err(format!(
                "{flag} takes a whole number of at least {min}, not {value:?}"
            )),
        };
        match flag.as_str() {
            "--addr" => addr = value.clone(),
            "-c" | "--connections" => load.connections = number(1)? as usize,
            "-d" | "--depth" => load.depth = number(1)?.min(u64::from(u32::MAX)) as usize,
            "-t" | "--duration" => load.duration = Duration::from_secs(number(1)?),
            "--warmup-ms" => load.warmup = Duration::from_millis(number(0)?),
            "--size" => load.body_len = number(0)? as usize,
            "--method" => load.method = value.clone(),
            "--protocol" => {
                load.wire = match value.as_str() {
                    "native" => Wire::Native,
                    "msgpack-rpc" => Wire::MsgpackRpc,
                    _ => {
                        return Err(format!(
                            "--protocol is native or msgpack-rpc, not {value:?}"
                        ))
                    }
                }
            }
            other => return Err(format!("unknown option {other}")),
        }
    }
    load.addr = addr
        .to_socket_addrs()
        .map_err(|e| format!("--addr {addr}: {e}"))?
        .next()
        .ok_or_else(|| format!("--addr {addr}: resolves to no address"))?;
    Ok(Some(load))
}

fn main() -> ExitCode {
    let load = match parse_args() {
        Ok(Some(load)) => load,
        Ok(None) => {
            println!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            eprintln!("error: {e}\nrun load --help for the options");
            return ExitCode::from(2);
        }
    };
    println!("{}", report::plan(&load));
    let out = match load.run(|_| {}) {
        Ok(out) => out,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    let stdout = std::io::stdout();
    if let Err(e) = report::write(&mut stdout.lock(), &load, &out) {
        eprintln!("error: cannot write the report: {e}");
        return ExitCode::FAILURE;
    }
    if report::all_ok(&out) {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

//! Calls `/echo.Echo/Say` once, through the typed client that
//! `syncrpc::service!` generates (`examples/echo_service/mod.rs`), and
//! prints the answer.
//!
//! ```text
//! cargo run --example echo_server -- --addr 127.0.0.1:7000
//! cargo run --example client -- --addr 127.0.0.1:7000 --text hello
//! ```
//!
//! Options: `--addr` (default `127.0.0.1:7000`), `--text` (default
//! `hello`), `--timeout-ms` (default 5000).

use std::error::Error as _;
use std::process::ExitCode;
use std::time::Duration;

mod echo_service;

use echo_service::{EchoClient, Say};
use syncrpc::Context;

struct Args {
    addr: String,
    text: String,
    timeout: Duration,
}

fn parse_args() -> Result<Args, String> {
    let mut args = Args {
        addr: "127.0.0.1:7000".to_owned(),
        text: "hello".to_owned(),
        timeout: Duration::from_secs(5),
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().ok_or_else(|| format!("{flag} needs a value"));
        match flag.as_str() {
            "--addr" => args.addr = value()?,
            "--text" => args.text = value()?,
            "--timeout-ms" => {
                let v = value()?;
                let ms = v
                    .parse()
                    .map_err(|_| format!("--timeout-ms: not a number: {v}"))?;
                args.timeout = Duration::from_millis(ms);
            }
            "-h" | "--help" => {
                return Err(
                    "usage: client [--addr HOST:PORT] [--text TEXT] [--timeout-ms N]".into(),
                )
            }
            other => return Err(format!("unknown argument {other}; try --help")),
        }
    }
    Ok(args)
}

fn main() -> ExitCode {
    let args = match parse_args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(2);
        }
    };
    let echo = match EchoClient::connect(&args.addr) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::FAILURE;
        }
    };
    // A top-level call: the background context, with the whole budget.
    let ctx = Context::background().with_timeout(args.timeout);
    let req = Say { text: args.text };
    match echo.say(&ctx, &req) {
        Ok(resp) => {
            println!("{}", resp.text);
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e}");
            let mut cause = e.source();
            while let Some(c) = cause {
                eprintln!("  caused by: {c}");
                cause = c.source();
            }
            ExitCode::FAILURE
        }
    }
}

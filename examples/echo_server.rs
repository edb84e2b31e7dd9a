//! A minimal echo server for `examples/client.rs`: `/echo.Echo/Say`
//! answers with the text it was sent.
//!
//! ```text
//! cargo run --example echo_server -- --addr 127.0.0.1:7000
//! ```
//!
//! Ctrl-C shuts it down gracefully.

use std::process::ExitCode;

use serde::{Deserialize, Serialize};
use syncrpc::{Context, Server, Service, Status};

#[derive(Serialize, Deserialize)]
struct Say {
    text: String,
}

fn say(ctx: &Context, req: Say) -> Result<Say, Status> {
    ctx.check()?;
    Ok(req)
}

fn main() -> ExitCode {
    let mut addr = "127.0.0.1:7000".to_owned();
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        match (flag.as_str(), args.next()) {
            ("--addr", Some(a)) => addr = a,
            _ => {
                eprintln!("usage: echo_server [--addr HOST:PORT]");
                return ExitCode::from(2);
            }
        }
    }
    let server = match Server::builder()
        .service(Service::new("echo.Echo").method("Say", say))
        .bind(&addr)
    {
        Ok(s) => s,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::FAILURE;
        }
    };
    println!("serving echo.Echo on {}", server.local_addr());
    let handle = server.handle();
    if let Err(e) = ctrlc::set_handler(move || {
        handle.shutdown();
    }) {
        eprintln!("error: cannot handle Ctrl-C: {e}");
        return ExitCode::FAILURE;
    }
    let report = server.wait();
    println!("stopped: {report:?}");
    ExitCode::SUCCESS
}

//! `syncrpc`: list, describe and call the methods of a syncrpc server,
//! check its health, and load it. `docs/cli.md` is the manual.
//!
//! Output meant for programs goes to stdout (JSON answers pipe into `jq`);
//! errors go to stderr, and the exit status says which kind of failure it
//! was (see [`exit`]).
#![forbid(unsafe_code)]

mod call;
mod connect;
mod exit;
mod health;
mod json;
mod list;
mod load;
mod reflect;
mod security;
mod stream;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

use exit::Failure;

/// Talks to a syncrpc server: list, describe and call its methods, check
/// its health, load it.
///
/// Exit status: 0 success; 1 the server answered with an error (the call
/// ran or was refused), or is not serving; 2 bad usage (nothing was sent);
/// 3 the call did not run (no connection, or refused unrun): safe to
/// retry; 4 the call may have run (the connection broke or the deadline
/// passed after it was sent).
#[derive(Parser)]
#[command(name = "syncrpc", version, about, long_about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Lists the server's services and their methods (from reflection).
    List(list::ListArgs),
    /// Shows a method: its kind, body, timeout, types and JSON Schemas.
    Describe(list::DescribeArgs),
    /// Calls a method with a JSON body and prints the answer as JSON; a
    /// streaming method's messages go in as JSON values (one a line) and
    /// come out as one JSON line each.
    Call(call::CallArgs),
    /// Asks the health service whether the server (or a service) is
    /// serving; exits 0 only when it is.
    Health(health::HealthArgs),
    /// Drives the server with many requests and reports rate and latency.
    Load(load::LoadArgs),
}

fn run(cli: Cli) -> Result<ExitCode, Failure> {
    match cli.command {
        Command::List(args) => list::list(args),
        Command::Describe(args) => list::describe(args),
        Command::Call(args) => call::call(args),
        Command::Health(args) => health::health(args),
        Command::Load(args) => load::load(args),
    }
}

fn main() -> ExitCode {
    // A bug must not show a user a Rust panic and backtrace: say it in a
    // line and exit with the internal-error status.
    std::panic::set_hook(Box::new(|info| {
        let what = info
            .payload()
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| info.payload().downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "unknown cause".to_owned());
        eprintln!("syncrpc: internal error: {what}");
    }));
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            // Help and version go to stdout with status 0; usage errors
            // to stderr with status 2.
            let _ = e.print();
            return if e.use_stderr() {
                ExitCode::from(exit::USAGE)
            } else {
                ExitCode::SUCCESS
            };
        }
    };
    match std::panic::catch_unwind(|| run(cli)) {
        Ok(Ok(code)) => code,
        Ok(Err(failure)) => failure.report(),
        Err(_) => ExitCode::from(exit::INTERNAL),
    }
}

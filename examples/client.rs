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
//! `hello`), `--timeout-ms` (default 5000), `--token T` (sent as
//! `authorization: Bearer T`), and with the `tls` feature `--tls-ca FILE`
//! (speak TLS, trusting this CA; `--tls-ca system` for the system's
//! roots), `--tls-cert FILE --tls-key FILE` (a client certificate) and
//! `--tls-server-name NAME` (the name the server's certificate must carry,
//! when it is not the address's host).
//!
//! ```text
//! cargo run --features tls --example client -- --addr localhost:7000 \
//!     --tls-ca ca.pem --tls-cert client.pem --tls-key client.key
//! ```

use std::error::Error as _;
use std::process::ExitCode;
use std::time::Duration;

mod echo_service;

use echo_service::{EchoClient, Say};
use syncrpc::{Client, Context};

struct Args {
    addr: String,
    text: String,
    timeout: Duration,
    token: Option<String>,
    tls_ca: Option<String>,
    tls_cert: Option<String>,
    tls_key: Option<String>,
    tls_server_name: Option<String>,
}

fn parse_args() -> Result<Args, String> {
    let mut args = Args {
        addr: "127.0.0.1:7000".to_owned(),
        text: "hello".to_owned(),
        timeout: Duration::from_secs(5),
        token: None,
        tls_ca: None,
        tls_cert: None,
        tls_key: None,
        tls_server_name: None,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().ok_or_else(|| format!("{flag} needs a value"));
        match flag.as_str() {
            "--addr" => args.addr = value()?,
            "--text" => args.text = value()?,
            "--token" => args.token = Some(value()?),
            "--tls-ca" => args.tls_ca = Some(value()?),
            "--tls-cert" => args.tls_cert = Some(value()?),
            "--tls-key" => args.tls_key = Some(value()?),
            "--tls-server-name" => args.tls_server_name = Some(value()?),
            "--timeout-ms" => {
                let v = value()?;
                let ms = v
                    .parse()
                    .map_err(|_| format!("--timeout-ms: not a number: {v}"))?;
                args.timeout = Duration::from_millis(ms);
            }
            "-h" | "--help" => {
                return Err(
                    "usage: client [--addr HOST:PORT] [--text TEXT] [--timeout-ms N] \
                     [--token T] [--tls-ca FILE|system [--tls-cert FILE --tls-key FILE] \
                     [--tls-server-name NAME]]"
                        .into(),
                )
            }
            other => return Err(format!("unknown argument {other}; try --help")),
        }
    }
    Ok(args)
}

/// A client for `args.addr`, with the credentials and TLS the flags ask for.
fn connect(args: &Args) -> Result<Client, syncrpc::Error> {
    let mut builder = Client::builder().addr(&args.addr);
    if let Some(token) = &args.token {
        builder = builder.bearer_token(token);
    }
    if let Some(ca) = &args.tls_ca {
        #[cfg(feature = "tls")]
        {
            use syncrpc::tls::ClientTls;
            let mut tls = if ca == "system" {
                ClientTls::with_system_roots()?
            } else {
                ClientTls::with_ca_file(ca)?
            };
            if let (Some(cert), Some(key)) = (&args.tls_cert, &args.tls_key) {
                tls = tls.client_cert_files(cert, key)?;
            }
            if let Some(name) = &args.tls_server_name {
                tls = tls.server_name(name)?;
            }
            builder = builder.tls(tls);
        }
        #[cfg(not(feature = "tls"))]
        {
            let _ = ca;
            return Err(syncrpc::Error::usage(
                "--tls-ca: this build has no TLS; build with --features tls",
            ));
        }
    }
    if args.tls_cert.is_some() != args.tls_key.is_some() {
        return Err(syncrpc::Error::usage(
            "--tls-cert and --tls-key go together",
        ));
    }
    builder.build()
}

fn main() -> ExitCode {
    let args = match parse_args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(2);
        }
    };
    let echo = match connect(&args) {
        Ok(c) => EchoClient::new(c),
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

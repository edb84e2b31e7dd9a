//! `call`: one call, its body as JSON (or raw bytes), its answer printed.

use std::io::{Read, Write};
use std::process::ExitCode;

use clap::{Args, ValueEnum};
use syncrpc::client::CallOptions;
use syncrpc::codec::Compression;
use syncrpc::{Client, Code, Context, Error, TraceId};

use crate::connect::{method_path, service_of, Protocol, Target};
use crate::exit::Failure;
use crate::json::{self, Json};
use crate::list;

#[derive(Args, Debug)]
pub struct CallArgs {
    #[command(flatten)]
    target: Target,
    /// The method: /service/method, service/method or service.method.
    method: String,
    /// The request body: JSON, `-` for stdin, or @FILE. Default `{}`
    /// (with --raw: stdin).
    body: Option<String>,
    /// Send the body as raw bytes and write the answer's bytes to stdout,
    /// for methods with raw bodies.
    #[arg(long)]
    raw: bool,
    /// Request metadata, KEY=VALUE; repeat for more.
    #[arg(long = "md", value_name = "KEY=VALUE", value_parser = parse_md)]
    metadata: Vec<(String, String)>,
    /// The trace id to send (printable ASCII, up to 64 bytes).
    #[arg(long, value_name = "ID")]
    trace_id: Option<String>,
    /// Compress the request (and so the answer), whatever its size.
    #[arg(long, value_enum)]
    compress: Option<Compress>,
}

#[derive(ValueEnum, Clone, Copy, Debug)]
enum Compress {
    Gzip,
    Zlib,
}

fn parse_md(text: &str) -> Result<(String, String), String> {
    match text.split_once('=') {
        Some((k, v)) if !k.is_empty() => Ok((k.to_owned(), v.to_owned())),
        _ => Err(format!("metadata is KEY=VALUE, not {text:?}")),
    }
}

/// The body's bytes and a name for it in errors.
fn read_body(arg: Option<&str>, raw: bool) -> Result<(Vec<u8>, String), Failure> {
    let from_stdin = || {
        let mut buf = Vec::new();
        std::io::stdin()
            .read_to_end(&mut buf)
            .map_err(|e| Failure::usage(format!("cannot read the body from stdin: {e}")))?;
        Ok((buf, "the body from stdin".to_owned()))
    };
    match arg {
        None if raw => from_stdin(),
        None => Ok((b"{}".to_vec(), "the body".to_owned())),
        Some("-") => from_stdin(),
        Some(a) if a.starts_with('@') => {
            let path = &a[1..];
            std::fs::read(path)
                .map(|b| (b, format!("the body in {path}")))
                .map_err(|e| Failure::usage(format!("cannot read the body from {path}: {e}")))
        }
        Some(text) => Ok((text.as_bytes().to_vec(), "the body".to_owned())),
    }
}

fn options(args: &CallArgs) -> Result<CallOptions, Failure> {
    if args.target.protocol == Protocol::MsgpackRpc {
        // Refused rather than dropped without a word.
        let carried = [
            (!args.metadata.is_empty(), "--md"),
            (args.trace_id.is_some(), "--trace-id"),
            (args.compress.is_some(), "--compress"),
        ];
        if let Some((_, flag)) = carried.iter().find(|(given, _)| *given) {
            return Err(Failure::usage(format!(
                "{flag} cannot be sent over MessagePack-RPC, which has no place for it"
            )));
        }
    }
    let mut opts = CallOptions::new();
    for (k, v) in &args.metadata {
        opts = opts.metadata(k.as_str(), v.as_str());
    }
    if let Some(id) = &args.trace_id {
        let trace = TraceId::new(id).ok_or_else(|| {
            Failure::usage(format!(
                "bad trace id {id:?}: printable ASCII, 1 to 64 bytes"
            ))
        })?;
        opts = opts.trace_id(trace);
    }
    if let Some(c) = args.compress {
        // Asked for by name: every body, however small.
        opts = opts
            .compression(match c {
                Compress::Gzip => Compression::Gzip,
                Compress::Zlib => Compression::Zlib,
            })
            .compress_min_size(0);
    }
    Ok(opts)
}

pub fn call(args: CallArgs) -> Result<ExitCode, Failure> {
    // Everything the user typed is checked before a connection opens.
    let path = method_path(&args.method)?;
    let opts = options(&args)?;
    let (body, source) = read_body(args.body.as_deref(), args.raw)?;
    let request = if args.raw {
        None
    } else {
        let text = std::str::from_utf8(&body)
            .map_err(|e| Failure::usage(format!("{source} is not UTF-8 text: {e}")))?;
        Some(json::parse(text, &source)?)
    };
    let client = args.target.client()?;
    let ctx = args.target.context();
    match request {
        None => {
            let resp = client
                .call_raw(&ctx, &path, &body, &opts)
                .map_err(|e| failed(&client, &ctx, &path, &e))?;
            let mut out = std::io::stdout().lock();
            out.write_all(resp.body())
                .and_then(|()| out.flush())
                .map_err(|e| Failure::usage(format!("cannot write the answer: {e}")))?;
        }
        Some(value) => {
            let resp = client
                .call_with::<_, Json>(&ctx, &path, &value, &opts)
                .map_err(|e| failed(&client, &ctx, &path, &e))?;
            println!("{}", json::pretty(&resp.into_body().0));
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// The failure of the call, with the service's methods after an
/// UNIMPLEMENTED (from reflection, when the server serves it).
fn failed(client: &Client, ctx: &Context, path: &str, err: &Error) -> Failure {
    let failure = Failure::call(err);
    if err.code() == Code::INVALID_ARGUMENT && err.status().message().contains("takes raw bodies") {
        return failure.with_note("hint: the method takes raw bytes: call it with --raw");
    }
    if err.code() != Code::UNIMPLEMENTED {
        return failure;
    }
    let service = service_of(path);
    match list::services(client, ctx, Some(service)) {
        Ok(services) => {
            let names: Vec<String> = services
                .iter()
                .flat_map(|s| s.methods.iter().map(|m| m.path.clone()))
                .collect();
            failure.with_note(format!("{service} has: {}", names.join(", ")))
        }
        Err(e) if e.code() == Code::NOT_FOUND => match list::services(client, ctx, None) {
            Ok(all) => {
                let names: Vec<&str> = all.iter().map(|s| s.name.as_str()).collect();
                failure.with_note(format!(
                    "no service {service}; the server has: {}",
                    names.join(", ")
                ))
            }
            Err(_) => failure,
        },
        // No reflection: the status is all there is to say.
        Err(_) => failure,
    }
}

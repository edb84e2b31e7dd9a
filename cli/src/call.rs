//! `call`: one call, its body as JSON (or raw bytes), its answer printed;
//! on a streaming method, its messages in and out as the stream goes
//! (see [`crate::stream`]).

use std::io::{Read, Write};
use std::process::ExitCode;

use clap::{Args, ValueEnum};
use serde_json::Value;
use syncrpc::client::CallOptions;
use syncrpc::codec::Compression;
use syncrpc::{Client, Code, Context, Error, TraceId};

use crate::connect::{method_path, service_of, Protocol, Target};
use crate::exit::{self, Failure};
use crate::json::{self, Json};
use crate::reflect::{self, Kind};
use crate::stream::{self, Source, StreamCall};

#[derive(Args, Debug)]
pub struct CallArgs {
    #[command(flatten)]
    target: Target,
    /// The method: /service/method, service/method or service.method.
    method: String,
    /// The request body: JSON, `-` for stdin, or @FILE. Default `{}`
    /// (with --raw: stdin). For a client or bidirectional stream: JSON
    /// values, one message each (e.g. one a line); default stdin.
    body: Option<String>,
    /// Send the body as raw bytes and write the answer's bytes to stdout,
    /// for methods with raw bodies. On a stream: each read of the input
    /// (up to 64 KiB) is a message; answers are written unseparated.
    #[arg(long)]
    raw: bool,
    /// Call the method as this kind instead of asking reflection (for
    /// servers that do not serve it).
    #[arg(long, value_enum, value_name = "KIND")]
    kind: Option<CallKind>,
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

/// How `call` calls a method, when `--kind` says rather than reflection.
#[derive(ValueEnum, Clone, Copy, Debug)]
enum CallKind {
    /// One request, one answer.
    Unary,
    /// One request, a stream of answers.
    #[value(name = "server_stream")]
    ServerStream,
    /// A stream of requests, one answer.
    #[value(name = "client_stream")]
    ClientStream,
    /// Streams both ways.
    #[value(name = "bidi_stream")]
    BidiStream,
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
    // The body argument and @FILE are read (and, for JSON, parsed as a
    // sequence of values) now; stdin once the method's kind says how.
    let given = match args.body.as_deref() {
        None | Some("-") => None,
        Some(arg) => {
            let (bytes, source) = read_body(Some(arg), args.raw)?;
            let values = if args.raw {
                None
            } else {
                Some(json::parse_values(&bytes, &source)?)
            };
            Some((bytes, source, values))
        }
    };
    let client = args.target.client()?;
    let ctx = args.target.context();
    let kind = match args.kind {
        Some(CallKind::Unary) => Kind::Unary,
        Some(CallKind::ServerStream) => Kind::ServerStream,
        Some(CallKind::ClientStream) => Kind::ClientStream,
        Some(CallKind::BidiStream) => Kind::BidiStream,
        None => kind_of(&client, &ctx, &path, &opts)?,
    };
    let streaming = StreamCall {
        client: &client,
        ctx: &ctx,
        path: &path,
        opts: &opts,
    };
    match kind {
        Kind::ClientStream | Kind::BidiStream => {
            let source = match given {
                Some((bytes, _, _)) => Source::Given(bytes),
                None => Source::Stdin,
            };
            match (kind == Kind::ClientStream, args.raw) {
                (true, false) => streaming.client_stream(stream::typed_messages(source)),
                (true, true) => streaming.raw_client_stream(stream::raw_messages(source)),
                (false, false) => streaming.bidi_stream(stream::typed_messages(source)),
                (false, true) => streaming.raw_bidi_stream(stream::raw_messages(source)),
            }
        }
        Kind::ServerStream if args.raw => {
            let (body, _) = match given {
                Some((bytes, source, _)) => (bytes, source),
                None => read_body(args.body.as_deref(), true)?,
            };
            streaming.raw_server_stream(&body)
        }
        Kind::ServerStream => streaming.server_stream(&one_value(given, args.body.as_deref())?),
        Kind::Unary | Kind::Oneway | Kind::Other(_) => {
            let unknown = match &kind {
                Kind::Other(name) => Some(name.clone()),
                _ => None,
            };
            let result = if args.raw {
                let body = match given {
                    Some((bytes, _, _)) => bytes,
                    None => read_body(args.body.as_deref(), true)?.0,
                };
                unary_raw(&client, &ctx, &path, &opts, &body)
            } else {
                let value = one_value(given, args.body.as_deref())?;
                unary(&client, &ctx, &path, &opts, &value)
            };
            // A kind from a newer server: called as unary, and said so
            // when that fails.
            result.map_err(|f| match unknown {
                Some(name) => f.with_note(format!(
                    "note: the server says {path} is a {name} method, a kind this \
                     version of syncrpc calls as unary"
                )),
                None => f,
            })
        }
    }
}

/// The method's kind, from reflection, asked with the call's options (its
/// metadata may be what lets it through the server's filters). A server
/// that answers with an error (no reflection, an unknown method, a filter
/// that refuses it) gets a unary call, whose answer says what is wrong; a
/// failure to ask at all is the call's failure, and it did not run.
fn kind_of(
    client: &Client,
    ctx: &Context,
    path: &str,
    opts: &CallOptions,
) -> Result<Kind, Failure> {
    match reflect::describe(client, ctx, path, opts) {
        Ok(info) => Ok(info.kind),
        Err(e) if e.is_status() => Ok(Kind::Unary),
        Err(e) => {
            let mut failure = Failure::call(&e);
            if failure.status == exit::MAY_HAVE_RUN {
                // Only the question was sent, never the call.
                failure.status = exit::NOT_RUN;
            }
            Err(failure)
        }
    }
}

/// The one JSON value a unary call or a server stream sends: the body
/// argument's (already parsed), stdin's, or `{}`.
fn one_value(
    given: Option<(Vec<u8>, String, Option<Vec<Value>>)>,
    arg: Option<&str>,
) -> Result<Value, Failure> {
    let (source, values) = match given {
        Some((_, source, Some(values))) => (source, values),
        _ => {
            let (bytes, source) = read_body(arg, false)?;
            let values = json::parse_values(&bytes, &source)?;
            (source, values)
        }
    };
    let count = values.len();
    match <[Value; 1]>::try_from(values) {
        Ok([value]) => Ok(value),
        Err(_) if count == 0 => Err(Failure::usage(format!(
            "{source} is empty: write one JSON value"
        ))),
        Err(_) => Err(Failure::usage(format!(
            "{source} holds {count} JSON values; a unary call or a server stream takes one"
        ))),
    }
}

fn unary_raw(
    client: &Client,
    ctx: &Context,
    path: &str,
    opts: &CallOptions,
    body: &[u8],
) -> Result<ExitCode, Failure> {
    let resp = client
        .call_raw(ctx, path, body, opts)
        .map_err(|e| failed(client, ctx, path, &e))?;
    let mut out = std::io::stdout().lock();
    out.write_all(resp.body())
        .and_then(|()| out.flush())
        .map_err(|e| Failure::usage(format!("cannot write the answer: {e}")))?;
    Ok(ExitCode::SUCCESS)
}

fn unary(
    client: &Client,
    ctx: &Context,
    path: &str,
    opts: &CallOptions,
    value: &Value,
) -> Result<ExitCode, Failure> {
    let resp = client
        .call_with::<_, Json>(ctx, path, value, opts)
        .map_err(|e| failed(client, ctx, path, &e))?;
    println!("{}", json::pretty(&resp.into_body().0));
    Ok(ExitCode::SUCCESS)
}

/// The failure of the call, with the service's methods after an
/// UNIMPLEMENTED (from reflection, when the server serves it).
pub fn failed(client: &Client, ctx: &Context, path: &str, err: &Error) -> Failure {
    let failure = Failure::call(err);
    if err.code() == Code::INVALID_ARGUMENT && err.status().message().contains("takes raw bodies") {
        return failure.with_note("hint: the method takes raw bytes: call it with --raw");
    }
    if err.code() != Code::UNIMPLEMENTED {
        return failure;
    }
    let service = service_of(path);
    match reflect::services(client, ctx, Some(service)) {
        Ok(services) => {
            let names: Vec<String> = services
                .iter()
                .flat_map(|s| s.methods.iter().map(|m| m.path.clone()))
                .collect();
            failure.with_note(format!("{service} has: {}", names.join(", ")))
        }
        Err(e) if e.code() == Code::NOT_FOUND => match reflect::services(client, ctx, None) {
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

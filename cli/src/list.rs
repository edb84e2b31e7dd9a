//! `list` and `describe`: what the server's reflection service says.

use std::process::ExitCode;

use clap::Args;
use syncrpc::client::CallOptions;
use syncrpc::{Code, Error};

use crate::connect::{method_path, Target};
use crate::exit::Failure;
use crate::json;
use crate::reflect::{self, Kind, MethodInfo};

#[derive(Args, Debug)]
pub struct ListArgs {
    #[command(flatten)]
    target: Target,
    /// List this service's methods only.
    service: Option<String>,
    /// Print reflection's answer as JSON.
    #[arg(long)]
    json: bool,
}

#[derive(Args, Debug)]
pub struct DescribeArgs {
    #[command(flatten)]
    target: Target,
    /// The method: /service/method, service/method or service.method.
    method: String,
    /// Print reflection's answer as JSON.
    #[arg(long)]
    json: bool,
}

/// Says that a server answers no reflection, when that is the failure.
fn no_reflection(err: &Error) -> Failure {
    let failure = Failure::call(err);
    if err.code() == Code::UNIMPLEMENTED {
        failure.with_note(
            "the server does not serve reflection (syncrpc.Reflection): \
             `syncrpc call` still works with a method's full name",
        )
    } else {
        failure
    }
}

pub fn list(args: ListArgs) -> Result<ExitCode, Failure> {
    let client = args.target.client()?;
    let services = reflect::services(&client, &args.target.context(), args.service.as_deref())
        .map_err(|e| no_reflection(&e))?;
    if args.json {
        let value = serde_json::to_value(&services).map_err(|e| Failure {
            status: crate::exit::INTERNAL,
            message: format!("cannot write JSON: {e}"),
        })?;
        println!("{}", json::pretty(&value));
        return Ok(ExitCode::SUCCESS);
    }
    for service in &services {
        println!("{}", service.name);
        let width = service
            .methods
            .iter()
            .map(|m| m.name.len())
            .max()
            .unwrap_or(0);
        for m in &service.methods {
            println!("  {:width$}  {}", m.name, signature(m));
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// The kind, body, types and timeout:
/// `server_stream typed  Count -> Tick`, `unary raw  bytes -> bytes  timeout 500ms`.
fn signature(m: &MethodInfo) -> String {
    let mut text = format!("{} {}", m.kind, m.body);
    text.push_str(&format!("  {} -> {}", m.request_type, m.response_type));
    if let Some(ms) = m.timeout_ms {
        text.push_str(&format!("  timeout {ms}ms"));
    }
    text
}

pub fn describe(args: DescribeArgs) -> Result<ExitCode, Failure> {
    let client = args.target.client()?;
    // `echo.Echo` may name a service rather than the method `echo/Echo`:
    // a service of that name is described as `list` would.
    if !args.method.contains('/') {
        let ctx = args.target.context();
        if let Ok(services) = reflect::services(&client, &ctx, Some(&args.method)) {
            return list(ListArgs {
                target: args.target,
                service: services.first().map(|s| s.name.clone()),
                json: args.json,
            });
        }
    }
    let path = method_path(&args.method)?;
    let info = reflect::describe(&client, &args.target.context(), &path, &CallOptions::new())
        .map_err(|e| no_reflection(&e))?;
    if args.json {
        let mut value = serde_json::to_value(&info).map_err(|e| Failure {
            status: crate::exit::INTERNAL,
            message: format!("cannot write JSON: {e}"),
        })?;
        // Schemas as JSON, not as JSON text inside JSON.
        for key in ["request_schema", "response_schema"] {
            if let Some(text) = value.get(key).and_then(|v| v.as_str()) {
                if let Ok(schema) = serde_json::from_str::<serde_json::Value>(text) {
                    value[key] = schema;
                }
            }
        }
        println!("{}", json::pretty(&value));
        return Ok(ExitCode::SUCCESS);
    }
    println!("{}", info.path);
    println!("  kind:      {}", kind_text(&info.kind));
    println!(
        "  body:      {}",
        match info.body.as_str() {
            "raw" => "raw (bytes, passed through)",
            "typed" => "typed (MessagePack; JSON with `syncrpc call`)",
            other => other,
        }
    );
    match info.timeout_ms {
        Some(ms) => println!("  timeout:   {ms}ms"),
        None => println!("  timeout:   none (the caller's deadline)"),
    }
    println!("  request:   {}", info.request_type);
    println!("  response:  {}", info.response_type);
    for (what, schema) in [
        ("request", &info.request_schema),
        ("response", &info.response_schema),
    ] {
        if let Some(text) = schema {
            let shown = serde_json::from_str::<serde_json::Value>(text)
                .map(|v| json::pretty(&v))
                .unwrap_or_else(|_| text.clone());
            println!("  {what} schema:");
            for line in shown.lines() {
                println!("    {line}");
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// The kind, with how `syncrpc call` treats it.
fn kind_text(kind: &Kind) -> String {
    let how = match kind {
        Kind::Unary => "one request, one answer",
        Kind::Oneway => "one request, no answer",
        Kind::ServerStream => "one request, a stream of answers",
        Kind::ClientStream => "a stream of requests, one answer",
        Kind::BidiStream => "streams both ways",
        Kind::Other(_) => "unknown to this version of syncrpc",
    };
    format!("{kind} ({how})")
}

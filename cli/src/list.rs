//! `list` and `describe`: what the server's reflection service says.

use std::process::ExitCode;

use clap::Args;
use syncrpc::server::reflection::{
    DescribeRequest, ListRequest, MethodInfo, ReflectionClient, ServiceInfo,
};
use syncrpc::{Client, Code, Context, Error};

use crate::connect::{method_path, Target};
use crate::exit::Failure;
use crate::json;

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
    let services = services(&client, &args.target.context(), args.service.as_deref())
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

/// The services reflection lists: all, or the one named.
pub fn services(
    client: &Client,
    ctx: &Context,
    service: Option<&str>,
) -> Result<Vec<ServiceInfo>, Error> {
    let reflection = ReflectionClient::new(client.clone());
    let req = ListRequest {
        service: service.unwrap_or_default().to_owned(),
    };
    reflection.list(ctx, &req).map(|r| r.services)
}

/// `Say -> Say`, with the kind, body and timeout when they are not the
/// usual: `unary raw bytes -> bytes  timeout 500ms`.
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
        if let Ok(services) = services(&client, &ctx, Some(&args.method)) {
            return list(ListArgs {
                target: args.target,
                service: services.first().map(|s| s.name.clone()),
                json: args.json,
            });
        }
    }
    let path = method_path(&args.method)?;
    let reflection = ReflectionClient::new(client);
    let info = reflection
        .describe(&args.target.context(), &DescribeRequest { method: path })
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
    println!("  kind:      {}", info.kind);
    println!(
        "  body:      {}",
        match info.body {
            syncrpc::descriptor::BodyKind::Raw => "raw (bytes, passed through)",
            _ => "typed (MessagePack; JSON with `syncrpc call`)",
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

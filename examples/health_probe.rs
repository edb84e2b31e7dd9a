//! A readiness probe: asks a syncrpc server's built-in health service
//! (`/syncrpc.Health/Check`) whether it is serving.
//!
//! ```text
//! health_probe --addr 127.0.0.1:7000 [--service NAME] [--timeout-ms 1000]
//! ```
//!
//! It prints one line, `SERVING`, `NOT_SERVING` or `error: ...`, and exits
//! 0 when the server (or the service named) is serving, 1 when it is not
//! or cannot be asked in time, and 2 on a usage error. That makes it a
//! Kubernetes exec readiness probe as it is (see `docs/kubernetes.md`):
//!
//! ```text
//! readinessProbe:
//!   exec:
//!     command: ["/app/health_probe", "--addr", "127.0.0.1:7000"]
//! ```
//!
//! It speaks the wire protocol with the codec alone: one connection, one
//! REQUEST, one RESPONSE.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::time::{Duration, Instant};

use bytes::BytesMut;
use syncrpc::codec::{
    decode_body, encode_body, Decoded, Decoder, Encoder, Flags, FrameLimits, FrameType, GoawayMeta,
    RequestId, RequestMeta, ResponseMeta, Side,
};
use syncrpc::server::{
    HealthCheckRequest, HealthCheckResponse, ServingStatus, HEALTH_CHECK_METHOD,
};

const USAGE: &str = "usage: health_probe --addr HOST:PORT [--service NAME] [--timeout-ms MS]";

fn main() {
    let (code, line) = run(std::env::args().skip(1));
    if code == 2 {
        eprintln!("{line}");
    } else {
        println!("{line}");
    }
    std::process::exit(code);
}

/// Runs the probe with command-line `args`: the exit code and the line to
/// print.
pub fn run(args: impl IntoIterator<Item = String>) -> (i32, String) {
    let args = match Args::parse(args) {
        Ok(a) => a,
        Err(e) => return (2, format!("{e}\n{USAGE}")),
    };
    match probe(&args) {
        Ok(ServingStatus::Serving) => (0, "SERVING".to_owned()),
        Ok(status) => (1, status.to_string()),
        Err(e) => (1, format!("error: {e}")),
    }
}

struct Args {
    addr: String,
    service: String,
    timeout: Duration,
}

impl Args {
    fn parse(args: impl IntoIterator<Item = String>) -> Result<Args, String> {
        let mut addr = None;
        let mut service = String::new();
        let mut timeout = Duration::from_millis(1000);
        let mut args = args.into_iter();
        while let Some(flag) = args.next() {
            let mut value = || args.next().ok_or_else(|| format!("{flag} needs a value"));
            match flag.as_str() {
                "--addr" => addr = Some(value()?),
                "--service" => service = value()?,
                "--timeout-ms" => {
                    let v = value()?;
                    let ms: u32 = v.parse().ok().filter(|ms| *ms > 0).ok_or_else(|| {
                        format!("--timeout-ms takes a positive number of milliseconds, not {v:?}")
                    })?;
                    timeout = Duration::from_millis(u64::from(ms));
                }
                other => return Err(format!("unknown argument {other:?}")),
            }
        }
        let addr = addr.ok_or("--addr is required")?;
        Ok(Args {
            addr,
            service,
            timeout,
        })
    }
}

fn probe(args: &Args) -> Result<ServingStatus, String> {
    let deadline = Instant::now() + args.timeout;
    let left = || {
        deadline
            .checked_duration_since(Instant::now())
            .filter(|d| !d.is_zero())
            .ok_or_else(|| format!("no answer within {} ms", args.timeout.as_millis()))
    };
    let addrs: Vec<SocketAddr> = args
        .addr
        .to_socket_addrs()
        .map_err(|e| format!("cannot resolve {}: {e}", args.addr))?
        .collect();
    let mut stream = None;
    let mut last = format!("{} resolved to nothing", args.addr);
    for addr in &addrs {
        match TcpStream::connect_timeout(addr, left()?) {
            Ok(s) => {
                stream = Some(s);
                break;
            }
            Err(e) => last = format!("cannot connect to {addr}: {e}"),
        }
    }
    let mut stream = stream.ok_or(last)?;

    let mut body = Vec::new();
    encode_body(
        &HealthCheckRequest::service(args.service.as_str()),
        &mut body,
    )
    .map_err(|e| e.to_string())?;
    let meta = RequestMeta {
        timeout_ms: u32::try_from(args.timeout.as_millis()).unwrap_or(u32::MAX),
        caller: Some("health_probe"),
        ..RequestMeta::new(HEALTH_CHECK_METHOD)
    };
    let mut enc = Encoder::new();
    enc.request(RequestId(1), Flags::default(), &meta, &body)
        .map_err(|e| e.to_string())?;
    stream
        .set_write_timeout(Some(left()?))
        .and_then(|()| stream.write_all(enc.as_slice()))
        .map_err(|e| format!("cannot send the request: {e}"))?;

    let mut decoder = Decoder::new(
        Side::Client,
        FrameLimits {
            max_body: 64 * 1024,
            max_meta: 64 * 1024,
        },
    );
    let mut buf = BytesMut::new();
    let mut chunk = [0u8; 4096];
    loop {
        match decoder.decode(&mut buf).map_err(|e| e.to_string())? {
            Some(Decoded::Frame(frame)) => match frame.frame_type() {
                FrameType::Response if frame.request_id() == RequestId(1) => {
                    let meta = ResponseMeta::decode(&frame.meta).map_err(|e| e.to_string())?;
                    if !meta.code().is_ok() {
                        return Err(meta.to_status().to_string());
                    }
                    let resp: HealthCheckResponse =
                        decode_body(&frame.body, 8).map_err(|e| e.to_string())?;
                    return Ok(resp.status);
                }
                FrameType::Goaway => {
                    let meta = GoawayMeta::decode(&frame.meta).map_err(|e| e.to_string())?;
                    return Err(format!(
                        "the server is going away: {} {}",
                        meta.code().name(),
                        meta.message
                    ));
                }
                // Anything else is not the answer: skip it.
                _ => {}
            },
            Some(Decoded::BodyTooLarge { .. }) => return Err("the answer is too large".into()),
            None => {
                stream
                    .set_read_timeout(Some(left()?))
                    .map_err(|e| e.to_string())?;
                let n = stream.read(&mut chunk).map_err(|e| match e.kind() {
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut => {
                        format!("no answer within {} ms", args.timeout.as_millis())
                    }
                    _ => format!("cannot read the answer: {e}"),
                })?;
                if n == 0 {
                    return Err("the server closed the connection without answering".into());
                }
                buf.extend_from_slice(&chunk[..n]);
            }
        }
    }
}

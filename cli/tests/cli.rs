//! The `syncrpc` binary run as a user runs it, against the example echo
//! server (`examples/echo_server.rs`, built on `service!`) and, where a
//! test needs another setup, a server started here.

#[path = "../../tests/tls_util/mod.rs"]
mod tls_util;

use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{mpsc, OnceLock};
use std::time::Duration;

use serde_json::{json, Value};
use syncrpc::{Context, Server, Service, Status};

const WAIT: Duration = Duration::from_secs(30);

/// What a run of the tool printed and how it exited.
struct Out {
    code: i32,
    stdout: Vec<u8>,
    stderr: String,
}

impl Out {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.stdout).into_owned()
    }

    fn json(&self) -> Value {
        serde_json::from_slice(&self.stdout)
            .unwrap_or_else(|e| panic!("stdout is not JSON ({e}): {}", self.text()))
    }
}

/// Runs `syncrpc ARGS` with `stdin`, to its end.
#[track_caller]
fn syncrpc(args: &[&str], stdin: &[u8]) -> Out {
    syncrpc_env(args, stdin, &[])
}

/// [`syncrpc`] with these environment variables (and no token from the
/// caller's environment).
#[track_caller]
fn syncrpc_env(args: &[&str], stdin: &[u8], env: &[(&str, &str)]) -> Out {
    let mut child = Command::new(env!("CARGO_BIN_EXE_syncrpc"))
        .args(args)
        .env_remove("SYNCRPC_TOKEN")
        .envs(env.iter().copied())
        .env("RUST_BACKTRACE", "1")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run syncrpc");
    let mut input = child.stdin.take().expect("stdin");
    input.write_all(stdin).expect("write stdin");
    drop(input);
    let out = child.wait_with_output().expect("syncrpc runs to its end");
    let out = Out {
        code: out.status.code().expect("an exit code, not a signal"),
        stdout: out.stdout,
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    };
    // Whatever happened, a user never sees a Rust panic or backtrace.
    for sign in ["panicked at", "stack backtrace", "RUST_BACKTRACE"] {
        assert!(!out.stderr.contains(sign), "{args:?}: {}", out.stderr);
    }
    out
}

/// The example server's binary: next to this test's target directory,
/// where `cargo test --workspace` builds it; built here if it is not.
fn echo_server_path() -> PathBuf {
    static PATH: OnceLock<PathBuf> = OnceLock::new();
    PATH.get_or_init(|| {
        let bin = PathBuf::from(env!("CARGO_BIN_EXE_syncrpc"));
        let path = bin
            .parent()
            .expect("target dir")
            .join("examples")
            .join(format!("echo_server{}", std::env::consts::EXE_SUFFIX));
        if !path.exists() {
            let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
            let ok = Command::new(cargo)
                .args([
                    "build",
                    "-p",
                    "syncrpc",
                    "--features",
                    "tls",
                    "--example",
                    "echo_server",
                ])
                .status()
                .expect("run cargo build")
                .success();
            assert!(ok, "cannot build examples/echo_server");
        }
        path
    })
    .clone()
}

/// The example server on a free port; killed when dropped.
struct EchoServer {
    child: Child,
    addr: String,
}

impl EchoServer {
    fn start() -> EchoServer {
        EchoServer::start_with(&[])
    }

    /// The example server with these flags too (`--tls-cert`, `--token`...).
    fn start_with(args: &[&str]) -> EchoServer {
        let mut child = Command::new(echo_server_path())
            .args(["--addr", "127.0.0.1:0"])
            .args(args)
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start examples/echo_server");
        let stderr = child.stderr.take().expect("stderr");
        let (tx, rx) = mpsc::channel();
        // Reads the log to its end, so that the server never blocks on it.
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if let Some(rest) = line.split("listening on ").nth(1) {
                    let addr = rest.split_whitespace().next().unwrap_or("").to_owned();
                    let _ = tx.send(addr);
                }
            }
        });
        let mut server = EchoServer {
            child,
            addr: String::new(),
        };
        server.addr = rx
            .recv_timeout(WAIT)
            .expect("the echo server logs its address");
        server
    }
}

impl Drop for EchoServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn list_shows_echo_and_its_eight_methods() {
    let echo = EchoServer::start();
    let out = syncrpc(&["list", &echo.addr], b"");
    assert_eq!(out.code, 0, "{}", out.stderr);
    let text = out.text();
    assert!(text.starts_with("echo.Echo\n"), "{text}");
    for line in [
        "  Say    unary typed  Say -> Say",
        "  Sleep  unary typed  Sleep -> Empty",
        "  Fail   unary typed  Fail -> Empty",
        "  Panic  unary typed  Anything -> ()",
        "  Bytes  unary raw  bytes -> bytes",
        "syncrpc.Health",
        "syncrpc.Reflection",
    ] {
        assert!(text.contains(line), "{line:?} not in\n{text}");
    }
    let out = syncrpc(&["list", &echo.addr, "echo.Echo", "--json"], b"");
    assert_eq!(out.code, 0, "{}", out.stderr);
    let services = out.json();
    let methods: Vec<&str> = services[0]["methods"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["name"].as_str().unwrap())
        .collect();
    assert_eq!(services.as_array().unwrap().len(), 1);
    assert_eq!(
        methods,
        ["Say", "Sleep", "Fail", "Panic", "Bytes", "Count", "Sum", "Chat"]
    );
    let out = syncrpc(&["list", &echo.addr, "no.Such"], b"");
    assert_eq!(out.code, 1);
    assert!(
        out.stderr
            .contains("NOT_FOUND: unknown service \"no.Such\""),
        "{}",
        out.stderr
    );
}

#[test]
fn describe_shows_kind_body_timeout_and_types() {
    let echo = EchoServer::start();
    let out = syncrpc(&["describe", &echo.addr, "echo.Echo.Sleep"], b"");
    assert_eq!(out.code, 0, "{}", out.stderr);
    let text = out.text();
    for line in [
        "/echo.Echo/Sleep",
        "  kind:      unary",
        "  timeout:   none",
        "  request:   Sleep",
        "  response:  Empty",
    ] {
        assert!(text.contains(line), "{line:?} not in\n{text}");
    }
    let out = syncrpc(&["describe", &echo.addr, "/echo.Echo/Bytes", "--json"], b"");
    let info = out.json();
    assert_eq!(info["body"], "raw");
    assert_eq!(info["kind"], "unary");
    // With the schemars feature the example's types carry their schema.
    let sleep = syncrpc(&["describe", &echo.addr, "/echo.Echo/Sleep", "--json"], b"").json();
    if let Some(schema) = sleep["request_schema"].as_object() {
        assert!(schema["properties"]["ms"].is_object(), "{schema:?}");
    }
    // A service name describes the service.
    let out = syncrpc(&["describe", &echo.addr, "echo.Echo"], b"");
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(
        out.text().starts_with("echo.Echo\n  Say "),
        "{}",
        out.text()
    );
    let out = syncrpc(&["describe", &echo.addr, "/echo.Echo/Shout"], b"");
    assert_eq!(out.code, 1);
    assert!(
        out.stderr.contains(
            "unknown method /echo.Echo/Shout; echo.Echo has: Say, Sleep, Fail, Panic, Bytes"
        ),
        "{}",
        out.stderr
    );
}

#[test]
fn call_transcodes_json_both_ways() {
    let echo = EchoServer::start();
    let out = syncrpc(
        &["call", &echo.addr, "/echo.Echo/Say", r#"{"text":"hi"}"#],
        b"",
    );
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_eq!(out.json(), json!({"text": "hi"}));
    // From stdin, from a file, with every call option.
    let out = syncrpc(
        &[
            "call",
            &echo.addr,
            "echo.Echo/Say",
            "-",
            "--md",
            "tenant=acme",
            "--trace-id",
            "cli-test-1",
            "--compress",
            "gzip",
            "--timeout",
            "5s",
        ],
        br#"{"text": "from stdin"}"#,
    );
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_eq!(out.json(), json!({"text": "from stdin"}));
    let file = std::env::temp_dir().join(format!("syncrpc-cli-{}.json", std::process::id()));
    std::fs::write(&file, r#"{"text": "from a file"}"#).unwrap();
    let at = format!("@{}", file.display());
    let out = syncrpc(&["call", &echo.addr, "/echo.Echo/Say", &at], b"");
    let _ = std::fs::remove_file(&file);
    assert_eq!(out.json(), json!({"text": "from a file"}));
    // The default body is {}.
    let out = syncrpc(
        &["call", &echo.addr, "/echo.Echo/Fail", r#"{"code":0}"#],
        b"",
    );
    assert_eq!(out.json(), json!({}));
    // MessagePack-RPC reaches the same method.
    let out = syncrpc(
        &[
            "call",
            &echo.addr,
            "/echo.Echo/Say",
            r#"{"text":"rpc"}"#,
            "--protocol",
            "msgpack-rpc",
        ],
        b"",
    );
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_eq!(out.json(), json!({"text": "rpc"}));
}

#[test]
fn json_that_does_not_fit_gets_the_servers_invalid_argument() {
    let echo = EchoServer::start();
    let out = syncrpc(
        &["call", &echo.addr, "/echo.Echo/Say", r#"{"txt":"hi"}"#],
        b"",
    );
    assert_eq!(out.code, 1);
    assert!(
        out.stderr
            .starts_with("ERROR: INVALID_ARGUMENT: invalid body: missing field `text`"),
        "{}",
        out.stderr
    );
    let out = syncrpc(
        &["call", &echo.addr, "/echo.Echo/Sleep", r#"{"ms":"soon"}"#],
        b"",
    );
    assert_eq!(out.code, 1);
    assert!(
        out.stderr
            .starts_with("ERROR: INVALID_ARGUMENT: invalid body: "),
        "{}",
        out.stderr
    );
    // A status the handler chose, with its code and message.
    let out = syncrpc(
        &[
            "call",
            &echo.addr,
            "/echo.Echo/Fail",
            r#"{"code":5,"message":"no such note"}"#,
        ],
        b"",
    );
    assert_eq!(out.code, 1);
    assert!(
        out.stderr.starts_with("ERROR: NOT_FOUND: no such note"),
        "{}",
        out.stderr
    );
}

#[test]
fn json_that_is_not_json_fails_before_connecting() {
    // A listener that nobody accepts from: any connection attempt would
    // be waiting in its backlog.
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let out = syncrpc(
        &["call", &addr, "/echo.Echo/Say", "{\n \"text\": hi\n}"],
        b"",
    );
    assert_eq!(out.code, 2);
    assert_eq!(
        out.stderr.trim_end(),
        "the body is not JSON: expected value at line 2 column 10"
    );
    assert_eq!(
        listener.accept().map(|_| ()).unwrap_err().kind(),
        std::io::ErrorKind::WouldBlock,
        "the tool connected"
    );
}

#[test]
fn an_unknown_method_is_unimplemented_with_the_services_methods() {
    let echo = EchoServer::start();
    let out = syncrpc(&["call", &echo.addr, "/echo.Echo/Shout", "{}"], b"");
    assert_ne!(out.code, 0);
    let mut lines = out.stderr.lines();
    assert_eq!(
        lines.next(),
        Some("ERROR: UNIMPLEMENTED: unknown method /echo.Echo/Shout")
    );
    assert!(
        out.stderr.contains(
            "echo.Echo has: /echo.Echo/Say, /echo.Echo/Sleep, /echo.Echo/Fail, /echo.Echo/Panic, /echo.Echo/Bytes"
        ),
        "{}",
        out.stderr
    );
    let out = syncrpc(&["call", &echo.addr, "/no.Such/Say", "{}"], b"");
    assert!(
        out.stderr.contains(
            "no service no.Such; the server has: echo.Echo, syncrpc.Health, syncrpc.Reflection"
        ),
        "{}",
        out.stderr
    );
}

#[test]
fn raw_bodies_pass_through_stdin_to_stdout() {
    let echo = EchoServer::start();
    let body: Vec<u8> = (0..=255u8).rev().chain([0, 0xff, b'\n']).collect();
    let out = syncrpc(&["call", &echo.addr, "/echo.Echo/Bytes", "--raw"], &body);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_eq!(out.stdout, body);
    // A typed body for a raw method: the server refuses it, the tool hints.
    let out = syncrpc(&["call", &echo.addr, "/echo.Echo/Bytes", "{}"], b"");
    assert_eq!(out.code, 1);
    assert!(out.stderr.contains("call it with --raw"), "{}", out.stderr);
    // A raw body sent to a typed method is the server's to refuse.
    let out = syncrpc(&["call", &echo.addr, "/echo.Echo/Say", "--raw"], b"abc");
    assert_eq!(out.code, 1);
    assert!(out.stderr.contains("INVALID_ARGUMENT"), "{}", out.stderr);
}

#[test]
fn a_server_without_reflection_still_answers_call() {
    let svc = Service::new("plain.Plain").method("Add", |_: &Context, (a, b): (i64, i64)| {
        Ok::<_, Status>(a + b)
    });
    let server = Server::builder()
        .service(svc)
        .reflection_service(false)
        .bind("127.0.0.1:0")
        .unwrap();
    let addr = server.local_addr().to_string();
    let out = syncrpc(&["call", &addr, "/plain.Plain/Add", "[2, 40]"], b"");
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_eq!(out.json(), json!(42));
    let out = syncrpc(&["call", &addr, "/plain.Plain/Sub", "[2, 40]"], b"");
    assert_eq!(out.code, 1);
    assert_eq!(
        out.stderr.lines().next(),
        Some("ERROR: UNIMPLEMENTED: unknown method /plain.Plain/Sub")
    );
    // Without reflection there is no method list to add.
    assert!(!out.stderr.contains(" has: "), "{}", out.stderr);
    let out = syncrpc(&["list", &addr], b"");
    assert_eq!(out.code, 1);
    assert!(
        out.stderr.contains("does not serve reflection"),
        "{}",
        out.stderr
    );
    server.shutdown();
}

#[test]
fn call_options_reach_the_handler() {
    #[derive(serde::Serialize)]
    struct Shown {
        tenant: Option<String>,
        trace_id: Option<String>,
        deadline_ms: Option<u64>,
    }
    let (tx, rx) = mpsc::channel::<String>();
    let tx = std::sync::Mutex::new(tx);
    // The filter sees the body as sent, so it knows its compression.
    let compression = move |ctx: &Context, req: syncrpc::Request, next: syncrpc::Next<'_>| {
        let _ = tx.lock().unwrap().send(format!("{:?}", req.compression()));
        next.run(ctx, req)
    };
    let svc = Service::new("meta.Meta").method("Show", |ctx: &Context, _: Value| {
        Ok::<_, Status>(Shown {
            tenant: ctx.metadata().get_str("tenant").map(str::to_owned),
            trace_id: ctx.trace_id().map(|t| t.to_string()),
            deadline_ms: ctx.remaining().map(|d| d.as_millis() as u64),
        })
    });
    let server = Server::builder()
        .service(svc)
        .filter(compression)
        .bind("127.0.0.1:0")
        .unwrap();
    let addr = server.local_addr().to_string();
    let out = syncrpc(
        &[
            "call",
            &addr,
            "meta.Meta.Show",
            "{}",
            "--md",
            "tenant=acme",
            "--trace-id",
            "cli-7",
            "--timeout",
            "3s",
            "--compress",
            "zlib",
        ],
        b"",
    );
    assert_eq!(out.code, 0, "{}", out.stderr);
    let shown = out.json();
    assert_eq!(shown["tenant"], "acme");
    assert_eq!(shown["trace_id"], "cli-7");
    let left = shown["deadline_ms"]
        .as_u64()
        .expect("the call carries its deadline");
    assert!(left > 0 && left <= 3000, "{left}");
    assert_eq!(rx.recv_timeout(WAIT).unwrap(), "Zlib");
    server.shutdown();
}

#[test]
fn health_exits_0_only_when_serving() {
    let echo = EchoServer::start();
    let out = syncrpc(&["health", &echo.addr], b"");
    assert_eq!((out.code, out.text().trim()), (0, "SERVING"));
    let out = syncrpc(&["health", &echo.addr, "echo.Echo"], b"");
    assert_eq!((out.code, out.text().trim()), (0, "SERVING"));
    let out = syncrpc(&["health", &echo.addr, "no.Such"], b"");
    assert_eq!(out.code, 1);
    assert!(out.stderr.contains("NOT_FOUND"), "{}", out.stderr);

    let server = Server::builder().bind("127.0.0.1:0").unwrap();
    server.health().set_serving("", false);
    let out = syncrpc(&["health", &server.local_addr().to_string()], b"");
    assert_eq!((out.code, out.text().trim()), (1, "NOT_SERVING"));
    server.shutdown();
}

#[test]
fn failures_exit_by_class() {
    let echo = EchoServer::start();
    // Usage: nothing is sent.
    for args in [
        vec!["call"],
        vec!["call", &echo.addr, "Say"],
        vec!["call", &echo.addr, "/echo.Echo/Say", "--md", "novalue"],
        vec!["call", &echo.addr, "/echo.Echo/Say", "--timeout", "never"],
        vec![
            "call",
            &echo.addr,
            "/echo.Echo/Say",
            "--md",
            "k=v",
            "--protocol",
            "msgpack-rpc",
        ],
        vec!["frobnicate"],
    ] {
        let out = syncrpc(&args, b"");
        assert_eq!(out.code, 2, "{args:?}: {}", out.stderr);
    }
    // Not run: nobody listens there.
    let free = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .to_string();
    let out = syncrpc(&["call", &free, "/echo.Echo/Say", "{}"], b"");
    assert_eq!(out.code, 3, "{}", out.stderr);
    assert!(
        out.stderr.starts_with("ERROR: UNAVAILABLE"),
        "{}",
        out.stderr
    );
    // May have run: the deadline passed while the server worked on it.
    let out = syncrpc(
        &[
            "call",
            &echo.addr,
            "/echo.Echo/Sleep",
            r#"{"ms": 5000}"#,
            "--timeout",
            "100ms",
        ],
        b"",
    );
    assert_eq!(out.code, 4, "{}", out.stderr);
    assert!(
        out.stderr.starts_with("ERROR: DEADLINE_EXCEEDED"),
        "{}",
        out.stderr
    );
    // The handler panicked on the server: an error answer, and no panic here.
    let out = syncrpc(&["call", &echo.addr, "/echo.Echo/Panic", "null"], b"");
    assert_eq!(out.code, 1);
    assert!(out.stderr.starts_with("ERROR: INTERNAL"), "{}", out.stderr);
    // Help is not a failure.
    let out = syncrpc(&["--help"], b"");
    assert_eq!(out.code, 0);
    assert!(out.text().contains("Exit status"), "{}", out.text());
}

#[test]
fn a_short_load_reports_rate_and_latency() {
    let echo = EchoServer::start();
    let out = syncrpc(
        &[
            "load",
            &echo.addr,
            "/echo.Echo/Bytes",
            "-c",
            "2",
            "-d",
            "2",
            "-t",
            "1",
            "--warmup-ms",
            "100",
            "--progress-every",
            "200ms",
        ],
        b"",
    );
    assert_eq!(out.code, 0, "{}\n{}", out.text(), out.stderr);
    let report = out.text();
    let line = |prefix: &str| -> String {
        report
            .lines()
            .find(|l| l.starts_with(prefix))
            .unwrap_or_else(|| panic!("no {prefix:?} line in\n{report}"))
            .to_owned()
    };
    // "requests  N answered in S s: R req/s"
    let requests = line("requests  ");
    let words: Vec<&str> = requests.split_whitespace().collect();
    let answered: u64 = words[1].parse().unwrap();
    let rate: f64 = words[words.len() - 2].parse().unwrap();
    assert!(answered > 0 && rate > 0.0, "{requests}");
    assert_eq!(line("non-OK    "), "non-OK    0");
    let latency = line("latency   ");
    assert!(
        latency.contains(" p50 ") && latency.contains(" p99 "),
        "{latency}"
    );
    // The progress line, one per redraw when stderr is not a terminal.
    assert!(
        out.stderr
            .lines()
            .any(|l| l.starts_with("progress  ") && l.contains("req/s")),
        "{}",
        out.stderr
    );
    // Calls that all fail are counted and make the exit status 1.
    let out = syncrpc(
        &[
            "load",
            &echo.addr,
            "/echo.Echo/Say",
            "-c",
            "1",
            "-t",
            "1",
            "--warmup-ms",
            "0",
            "--quiet",
        ],
        b"",
    );
    assert_eq!(out.code, 1, "{}", out.text());
    assert!(out.text().contains("INVALID_ARGUMENT"), "{}", out.text());
}

/// PEM files for a TLS echo server: a CA, a server certificate signed by
/// it for `names`, and a client certificate.
struct TlsFiles {
    /// Holds the files' directory until the test ends.
    _pki: tls_util::Pki,
    ca: String,
    server_cert: String,
    server_key: String,
    client_cert: String,
    client_key: String,
}

impl TlsFiles {
    fn new(test: &str, names: &[&str]) -> TlsFiles {
        let pki = tls_util::Pki::new(test);
        let server = pki.leaf("echo", names, &[], false);
        let client = pki.client("cli", "spiffe://test/cli");
        let path = |p: PathBuf| p.to_str().expect("a UTF-8 path").to_owned();
        TlsFiles {
            ca: path(pki.write("ca.pem", &pki.ca_pem)),
            server_cert: path(pki.write("server.pem", &server.cert)),
            server_key: path(pki.write("server.key", &server.key)),
            client_cert: path(pki.write("client.pem", &client.cert)),
            client_key: path(pki.write("client.key", &client.key)),
            _pki: pki,
        }
    }

    /// The echo server's flags to serve TLS only with these files.
    fn server_flags(&self) -> Vec<&str> {
        vec![
            "--tls-cert",
            &self.server_cert,
            "--tls-key",
            &self.server_key,
            "--tls-only",
        ]
    }
}

const SAY: &str = "/echo.Echo/Say";

/// The port of `127.0.0.1:PORT`.
fn port_of(addr: &str) -> &str {
    addr.rsplit(':').next().expect("HOST:PORT")
}

#[test]
fn call_over_tls_verifies_the_server_against_tls_ca() {
    let files = TlsFiles::new("cli-ca", &["localhost", "127.0.0.1"]);
    let echo = EchoServer::start_with(&files.server_flags());
    let hi = r#"{"text":"over tls"}"#;

    let out = syncrpc(&["call", &echo.addr, SAY, hi, "--tls-ca", &files.ca], b"");
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_eq!(out.json(), json!({"text": "over tls"}));
    // The other commands speak TLS too.
    let out = syncrpc(&["health", &echo.addr, "--tls-ca", &files.ca], b"");
    assert_eq!(
        (out.code, out.text().trim()),
        (0, "SERVING"),
        "{}",
        out.stderr
    );
    let out = syncrpc(&["list", &echo.addr, "--tls-ca", &files.ca], b"");
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(out.text().contains("echo.Echo"), "{}", out.text());

    // A CA that did not sign the server's certificate: refused, not run.
    let other = TlsFiles::new("cli-other-ca", &["localhost"]);
    let out = syncrpc(&["call", &echo.addr, SAY, hi, "--tls-ca", &other.ca], b"");
    assert_eq!(out.code, 3, "{}", out.stderr);
    assert!(
        out.stderr.starts_with("ERROR: UNAVAILABLE") && out.stderr.contains("certificate"),
        "{}",
        out.stderr
    );

    // Plaintext to the TLS-only server: a failure that says TLS.
    let out = syncrpc(&["call", &echo.addr, SAY, hi], b"");
    assert_ne!(out.code, 0, "{}", out.stderr);
    assert!(
        [3, 4].contains(&out.code) && out.stderr.contains("TLS"),
        "{}: {}",
        out.code,
        out.stderr
    );

    // An unreadable CA file is bad usage: nothing is sent.
    let out = syncrpc(
        &[
            "call",
            &echo.addr,
            SAY,
            hi,
            "--tls-ca",
            "/nonexistent/ca.pem",
        ],
        b"",
    );
    assert_eq!(out.code, 2, "{}", out.stderr);
    assert!(out.stderr.contains("/nonexistent/ca.pem"), "{}", out.stderr);
}

#[test]
fn tls_to_a_plaintext_server_says_so_and_is_not_run() {
    let files = TlsFiles::new("cli-plain", &["localhost", "127.0.0.1"]);
    let echo = EchoServer::start();
    let out = syncrpc(
        &[
            "call",
            &echo.addr,
            SAY,
            r#"{"text":"x"}"#,
            "--tls-ca",
            &files.ca,
        ],
        b"",
    );
    assert_eq!(out.code, 3, "{}", out.stderr);
    assert!(out.stderr.contains("plaintext"), "{}", out.stderr);
}

#[test]
fn tls_server_name_verifies_a_certificate_that_does_not_name_the_ip() {
    let files = TlsFiles::new("cli-name", &["localhost"]);
    let echo = EchoServer::start_with(&files.server_flags());
    let hi = r#"{"text":"by name"}"#;
    let base = ["call", &echo.addr, SAY, hi, "--tls-ca", &files.ca];
    // 127.0.0.1 is not in the certificate.
    let out = syncrpc(&base, b"");
    assert_eq!(out.code, 3, "{}", out.stderr);
    assert!(out.stderr.contains("certificate"), "{}", out.stderr);
    let with_name: Vec<&str> = base
        .iter()
        .copied()
        .chain(["--tls-server-name", "localhost"])
        .collect();
    let out = syncrpc(&with_name, b"");
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_eq!(out.json(), json!({"text": "by name"}));
    // Reached by the name the certificate carries, no flag is needed.
    let by_host = format!("localhost:{}", port_of(&echo.addr));
    let out = syncrpc(&["call", &by_host, SAY, hi, "--tls-ca", &files.ca], b"");
    assert_eq!(out.code, 0, "{}", out.stderr);
    // The load driver verifies the same name.
    let load = |extra: &[&str]| {
        let mut args = vec!["load", &echo.addr, "-c", "1", "-t", "1", "--warmup-ms", "0"];
        args.extend(["--quiet", "--tls-ca", &files.ca]);
        args.extend(extra);
        syncrpc(&args, b"")
    };
    let out = load(&[]);
    assert_eq!(out.code, 3, "{}\n{}", out.text(), out.stderr);
    assert!(out.stderr.contains("certificate"), "{}", out.stderr);
    let out = load(&["--tls-server-name", "localhost"]);
    assert_eq!(out.code, 0, "{}\n{}", out.text(), out.stderr);
}

#[test]
fn mutual_tls_presents_the_client_certificate() {
    let files = TlsFiles::new("cli-mtls", &["localhost", "127.0.0.1"]);
    let mut flags = files.server_flags();
    flags.extend(["--tls-client-ca", files.ca.as_str()]);
    let echo = EchoServer::start_with(&flags);
    let hi = r#"{"text":"mutual"}"#;
    let base = ["call", &echo.addr, SAY, hi, "--tls-ca", &files.ca];
    let with_cert: Vec<&str> = base
        .iter()
        .copied()
        .chain([
            "--tls-cert",
            &files.client_cert,
            "--tls-key",
            &files.client_key,
        ])
        .collect();
    let out = syncrpc(&with_cert, b"");
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_eq!(out.json(), json!({"text": "mutual"}));
    // Without a certificate the server refuses the handshake.
    let out = syncrpc(&base, b"");
    assert!([3, 4].contains(&out.code), "{}: {}", out.code, out.stderr);
    // Depending on when the server's alert arrives, the error names TLS
    // (the handshake failed) or the alert itself (CertificateRequired,
    // read after the request was written): TLS 1.3 finishes the client's
    // side of the handshake before the server checks the certificate.
    let err = out.stderr.to_lowercase();
    assert!(
        err.contains("tls") || err.contains("certificaterequired"),
        "{}",
        out.stderr
    );
    // --tls-cert without --tls-key is bad usage.
    let half: Vec<&str> = base
        .iter()
        .copied()
        .chain(["--tls-cert", &files.client_cert])
        .collect();
    let out = syncrpc(&half, b"");
    assert_eq!(out.code, 2, "{}", out.stderr);
    // The load driver presents it too.
    let out = syncrpc(
        &[
            "load",
            &echo.addr,
            "-c",
            "1",
            "-t",
            "1",
            "--warmup-ms",
            "0",
            "--quiet",
            "--tls-ca",
            &files.ca,
            "--tls-cert",
            &files.client_cert,
            "--tls-key",
            &files.client_key,
        ],
        b"",
    );
    assert_eq!(out.code, 0, "{}\n{}", out.text(), out.stderr);
    assert!(out.text().contains("non-OK    0"), "{}", out.text());
}

#[test]
fn token_is_sent_from_the_flag_or_the_environment() {
    let echo = EchoServer::start_with(&["--token", "t0ken"]);
    let hi = r#"{"text":"authorized"}"#;
    let out = syncrpc(&["call", &echo.addr, SAY, hi, "--token", "t0ken"], b"");
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_eq!(out.json(), json!({"text": "authorized"}));
    let out = syncrpc_env(
        &["call", &echo.addr, SAY, hi],
        b"",
        &[("SYNCRPC_TOKEN", "t0ken")],
    );
    assert_eq!(out.code, 0, "{}", out.stderr);
    let out = syncrpc_env(&["list", &echo.addr], b"", &[("SYNCRPC_TOKEN", "t0ken")]);
    assert_eq!(out.code, 0, "{}", out.stderr);

    for (what, args) in [
        (
            "wrong",
            vec!["call", &echo.addr, SAY, hi, "--token", "guess"],
        ),
        ("missing", vec!["call", &echo.addr, SAY, hi]),
        ("missing", vec!["list", &echo.addr]),
    ] {
        let out = syncrpc(&args, b"");
        assert_eq!(out.code, 1, "{what}: {}", out.stderr);
        assert!(
            out.stderr.starts_with("ERROR: UNAUTHENTICATED"),
            "{what}: {}",
            out.stderr
        );
    }
    // MessagePack-RPC has no place for a token: refused, not dropped.
    let out = syncrpc(
        &[
            "call",
            &echo.addr,
            SAY,
            hi,
            "--token",
            "t0ken",
            "--protocol",
            "msgpack-rpc",
        ],
        b"",
    );
    assert_eq!(out.code, 2, "{}", out.stderr);
    // The token never shows in --help.
    let out = syncrpc_env(&["call", "--help"], b"", &[("SYNCRPC_TOKEN", "s3cret")]);
    assert_eq!(out.code, 0);
    assert!(
        out.text().contains("SYNCRPC_TOKEN") && !out.text().contains("s3cret"),
        "{}",
        out.text()
    );
}

#[test]
fn load_over_tls_sends_the_token() {
    let files = TlsFiles::new("cli-load", &["localhost", "127.0.0.1"]);
    let mut flags = files.server_flags();
    flags.extend(["--token", "t0ken"]);
    let echo = EchoServer::start_with(&flags);
    let load = |extra: &[&str]| {
        let mut args = vec![
            "load",
            &echo.addr,
            "-c",
            "1",
            "-t",
            "1",
            "--warmup-ms",
            "0",
            "--quiet",
        ];
        args.extend(extra);
        syncrpc(&args, b"")
    };
    let out = load(&["--tls-ca", &files.ca, "--token", "t0ken"]);
    assert_eq!(out.code, 0, "{}\n{}", out.text(), out.stderr);
    assert!(out.text().contains("non-OK    0"), "{}", out.text());
    let out = load(&["--tls-ca", &files.ca, "--token", "guess"]);
    assert_eq!(out.code, 1, "{}\n{}", out.text(), out.stderr);
    assert!(out.text().contains("UNAUTHENTICATED"), "{}", out.text());
    // A certificate the load cannot verify: nothing runs.
    let other = TlsFiles::new("cli-load-other", &["localhost"]);
    let out = load(&["--tls-ca", &other.ca, "--token", "t0ken"]);
    assert_eq!(out.code, 3, "{}\n{}", out.text(), out.stderr);
    assert!(out.stderr.contains("certificate"), "{}", out.stderr);
    // Plaintext to the TLS-only server: the report says why.
    let out = load(&["--token", "t0ken"]);
    assert_ne!(out.code, 0, "{}\n{}", out.text(), out.stderr);
    assert!(out.text().contains("TLS"), "{}", out.text());
}

#[test]
fn list_and_describe_show_stream_kinds() {
    let echo = EchoServer::start();
    let out = syncrpc(&["list", &echo.addr, "echo.Echo"], b"");
    assert_eq!(out.code, 0, "{}", out.stderr);
    let text = out.text();
    for line in [
        "  Count  server_stream typed  Count -> Tick",
        "  Sum    client_stream typed  Value -> Total",
        "  Chat   bidi_stream typed  Say -> Say",
    ] {
        assert!(text.contains(line), "{line:?} not in\n{text}");
    }
    let out = syncrpc(&["describe", &echo.addr, "/echo.Echo/Chat"], b"");
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(
        out.text()
            .contains("  kind:      bidi_stream (streams both ways)"),
        "{}",
        out.text()
    );
    let out = syncrpc(&["describe", &echo.addr, "echo.Echo.Count", "--json"], b"");
    assert_eq!(out.json()["kind"], "server_stream");
    let out = syncrpc(&["list", &echo.addr, "echo.Echo", "--json"], b"");
    let listed = out.json();
    let kinds: Vec<&str> = listed[0]["methods"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["kind"].as_str().unwrap())
        .collect();
    assert_eq!(
        kinds[5..],
        ["server_stream", "client_stream", "bidi_stream"]
    );
}

#[test]
fn call_on_a_server_stream_prints_a_line_per_message() {
    let echo = EchoServer::start();
    let out = syncrpc(&["call", &echo.addr, "/echo.Echo/Count", r#"{"n":3}"#], b"");
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_eq!(out.text(), "{\"i\":0}\n{\"i\":1}\n{\"i\":2}\n");
    // The request from stdin, as for a unary call.
    let out = syncrpc(
        &["call", &echo.addr, "/echo.Echo/Count", "-"],
        br#"{"n": 1}"#,
    );
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_eq!(out.text(), "{\"i\":0}\n");
    // A stream with no messages prints nothing and succeeds.
    let out = syncrpc(&["call", &echo.addr, "/echo.Echo/Count", r#"{"n":0}"#], b"");
    assert_eq!((out.code, out.text()), (0, String::new()), "{}", out.stderr);
    // One request only.
    let out = syncrpc(&["call", &echo.addr, "/echo.Echo/Count", "{} {}"], b"");
    assert_eq!(out.code, 2);
    assert!(out.stderr.contains("holds 2 JSON values"), "{}", out.stderr);
}

#[test]
fn call_on_a_client_stream_sends_each_value_then_prints_the_answer() {
    let echo = EchoServer::start();
    // One value a line on stdin (the default input of a client stream).
    let out = syncrpc(
        &["call", &echo.addr, "/echo.Echo/Sum"],
        b"{\"v\":1}\n{\"v\":2}",
    );
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_eq!(out.json(), json!({"sum": 3, "count": 2}));
    // Values in the body argument, whitespace between them.
    let out = syncrpc(
        &[
            "call",
            &echo.addr,
            "/echo.Echo/Sum",
            r#"{"v":4} {"v":5} {"v":-1}"#,
        ],
        b"",
    );
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_eq!(out.json(), json!({"sum": 8, "count": 3}));
    // No input: no messages.
    let out = syncrpc(&["call", &echo.addr, "/echo.Echo/Sum"], b"");
    assert_eq!(out.json(), json!({"sum": 0, "count": 0}));
    // A message that does not fit the method: the server's error.
    let out = syncrpc(&["call", &echo.addr, "/echo.Echo/Sum"], b"{\"v\":\"x\"}\n");
    assert_eq!(out.code, 1, "{}", out.stderr);
    assert!(
        out.stderr.starts_with("ERROR: INVALID_ARGUMENT"),
        "{}",
        out.stderr
    );
    // Bad JSON on stdin after the stream opened: cancelled, may have run.
    let out = syncrpc(
        &["call", &echo.addr, "/echo.Echo/Sum"],
        b"{\"v\":1}\n{\"v\":}\n",
    );
    assert_eq!(out.code, 4, "{}", out.stderr);
    assert_eq!(
        out.stderr.trim_end(),
        "message 2 on stdin is not JSON: expected value at line 2 column 6; \
         the stream was cancelled"
    );
}

#[test]
fn bad_json_in_a_stream_body_fails_before_connecting() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let out = syncrpc(
        &[
            "call",
            &addr,
            "/echo.Echo/Sum",
            r#"{"v":1} {"v":"#,
            "--kind",
            "client_stream",
        ],
        b"",
    );
    assert_eq!(out.code, 2);
    assert!(
        out.stderr
            .starts_with("the body is not JSON: EOF while parsing"),
        "{}",
        out.stderr
    );
    assert_eq!(
        listener.accept().map(|_| ()).unwrap_err().kind(),
        std::io::ErrorKind::WouldBlock,
        "the tool connected"
    );
}

#[test]
fn call_on_a_bidi_stream_echoes_each_line_as_it_arrives() {
    /// Kills the tool if the test fails half way.
    struct Running(Child);
    impl Drop for Running {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let echo = EchoServer::start();
    let mut tool = Running(
        Command::new(env!("CARGO_BIN_EXE_syncrpc"))
            .args(["call", &echo.addr, "/echo.Echo/Chat", "--timeout", "30s"])
            .env_remove("SYNCRPC_TOKEN")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("run syncrpc"),
    );
    let mut input = tool.0.stdin.take().unwrap();
    let output = BufReader::new(tool.0.stdout.take().unwrap());
    let (lines_tx, lines) = mpsc::channel();
    std::thread::spawn(move || {
        for line in output.lines().map_while(Result::ok) {
            let _ = lines_tx.send(line);
        }
    });
    // Each answer is read before the next message is written: the tool
    // sends each line as it reads it and prints each answer as it comes.
    for text in ["one", "two", "three"] {
        writeln!(input, "{}", json!({ "text": text })).unwrap();
        input.flush().unwrap();
        let line = lines
            .recv_timeout(WAIT)
            .expect("the answer, before stdin ends");
        assert_eq!(line, format!("{{\"text\":\"{text}\"}}"));
    }
    // The end of stdin ends the stream, and the tool with it.
    drop(input);
    assert!(lines.recv_timeout(WAIT).is_err(), "no more answers");
    let status = tool.0.wait().unwrap();
    assert_eq!(status.code(), Some(0));
}

#[test]
fn a_failed_stream_exits_by_class() {
    let echo = EchoServer::start();
    // The deadline passes mid-stream: what came is printed, then the
    // error; the method ran.
    let out = syncrpc(
        &[
            "call",
            &echo.addr,
            "/echo.Echo/Count",
            r#"{"n": 50, "ms": 200}"#,
            "--timeout",
            "700ms",
        ],
        b"",
    );
    assert_eq!(out.code, 4, "{}", out.stderr);
    assert!(
        out.stderr.starts_with("ERROR: DEADLINE_EXCEEDED"),
        "{}",
        out.stderr
    );
    assert!(out.text().starts_with("{\"i\":0}\n"), "{}", out.text());
    assert!(!out.text().contains("{\"i\":49}"), "{}", out.text());
    // A request the method cannot decode: the server's answer.
    let out = syncrpc(
        &["call", &echo.addr, "/echo.Echo/Count", r#"{"n":"x"}"#],
        b"",
    );
    assert_eq!(out.code, 1, "{}", out.stderr);
    assert!(
        out.stderr.starts_with("ERROR: INVALID_ARGUMENT"),
        "{}",
        out.stderr
    );
    // Nobody listens: not run, for each kind given by --kind.
    let free = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .to_string();
    for kind in ["server_stream", "client_stream", "bidi_stream"] {
        let out = syncrpc(
            &["call", &free, "/echo.Echo/Count", "{}", "--kind", kind],
            b"",
        );
        assert_eq!(out.code, 3, "{kind}: {}", out.stderr);
        assert!(
            out.stderr.starts_with("ERROR: UNAVAILABLE"),
            "{kind}: {}",
            out.stderr
        );
    }
    // Nor when the tool asks reflection for the kind.
    let out = syncrpc(&["call", &free, "/echo.Echo/Count", "{}"], b"");
    assert_eq!(out.code, 3, "{}", out.stderr);
}

/// A server of `meta.Meta`, without reflection: `Watch` streams back what
/// it saw of the call, `Blob` streams raw chunks, `Cat` joins raw chunks.
fn stream_meta_server() -> Server {
    let svc = Service::new("meta.Meta")
        .server_stream(
            "Watch",
            |ctx: &Context, n: u64, sink: &syncrpc::server::Sink<Value>| {
                for i in 0..n {
                    sink.send(&json!({
                        "i": i,
                        "tenant": ctx.metadata().get_str("tenant"),
                        "trace_id": ctx.trace_id().map(|t| t.to_string()),
                    }))?;
                }
                Ok(())
            },
        )
        .raw_server_stream(
            "Blob",
            |_: &Context, body: bytes::Bytes, sink: &syncrpc::server::RawSink| {
                for chunk in body.chunks(2) {
                    sink.send(chunk)?;
                }
                Ok(())
            },
        )
        .raw_client_stream(
            "Cat",
            |_: &Context, chunks: syncrpc::server::RawIncoming| {
                let mut all = Vec::new();
                for chunk in chunks {
                    all.extend_from_slice(&chunk?);
                }
                Ok(bytes::Bytes::from(all))
            },
        );
    Server::builder()
        .service(svc)
        .reflection_service(false)
        .bind("127.0.0.1:0")
        .unwrap()
}

#[test]
fn stream_calls_take_the_call_options_and_raw_bodies() {
    let server = stream_meta_server();
    let addr = server.local_addr().to_string();
    let out = syncrpc(
        &[
            "call",
            &addr,
            "/meta.Meta/Watch",
            "2",
            "--kind",
            "server_stream",
            "--md",
            "tenant=acme",
            "--trace-id",
            "cli-9",
            "--compress",
            "gzip",
        ],
        b"",
    );
    assert_eq!(out.code, 0, "{}", out.stderr);
    let lines: Vec<Value> = out
        .text()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(
        lines,
        [
            json!({"i": 0, "tenant": "acme", "trace_id": "cli-9"}),
            json!({"i": 1, "tenant": "acme", "trace_id": "cli-9"}),
        ]
    );
    // Without reflection and without --kind, the tool calls unary and
    // the server says the method streams.
    let out = syncrpc(&["call", &addr, "/meta.Meta/Watch", "2"], b"");
    assert_eq!(out.code, 1, "{}", out.stderr);
    assert!(
        out.stderr.starts_with("ERROR: INVALID_ARGUMENT"),
        "{}",
        out.stderr
    );
    // Raw: the answers' bytes, unseparated.
    let out = syncrpc(
        &[
            "call",
            &addr,
            "/meta.Meta/Blob",
            "--raw",
            "--kind",
            "server_stream",
        ],
        b"abcde",
    );
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_eq!(out.stdout, b"abcde");
    let body: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
    let out = syncrpc(
        &[
            "call",
            &addr,
            "/meta.Meta/Cat",
            "--raw",
            "--kind",
            "client_stream",
        ],
        &body,
    );
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_eq!(out.stdout, body);
    server.shutdown();
}

#[test]
fn a_kind_from_a_newer_server_is_shown_and_called_as_unary() {
    let method = json!({
        "name": "Go", "path": "/new.New/Go", "kind": "quantum_stream",
        "body": "protobuf", "timeout_ms": null, "request_type": "Q",
        "response_type": "R", "added_later": true
    });
    let listed = json!({"services": [{"name": "new.New", "methods": [method.clone()]}]});
    let reflection = Service::new("syncrpc.Reflection")
        .method("List", move |_: &Context, _: Value| {
            Ok::<_, Status>(listed.clone())
        })
        .method("Describe", move |_: &Context, _: Value| {
            Ok::<_, Status>(method.clone())
        });
    let new = Service::new("new.New").method("Go", |_: &Context, v: Value| Ok::<_, Status>(v));
    let server = Server::builder()
        .service(reflection)
        .service(new)
        .bind("127.0.0.1:0")
        .unwrap();
    let addr = server.local_addr().to_string();
    let out = syncrpc(&["list", &addr], b"");
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(
        out.text().contains("  Go  quantum_stream protobuf  Q -> R"),
        "{}",
        out.text()
    );
    let out = syncrpc(&["describe", &addr, "/new.New/Go"], b"");
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(
        out.text()
            .contains("  kind:      quantum_stream (unknown to this version of syncrpc)"),
        "{}",
        out.text()
    );
    let out = syncrpc(&["describe", &addr, "/new.New/Go", "--json"], b"");
    assert_eq!(out.json()["kind"], "quantum_stream");
    let out = syncrpc(&["call", &addr, "/new.New/Go", r#"{"x": 1}"#], b"");
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_eq!(out.json(), json!({"x": 1}));
    server.shutdown();
}

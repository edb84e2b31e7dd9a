//! The echo example as a user runs it: its flags, each of its methods in
//! both modes, and a graceful stop on SIGTERM.
//!
//! `cargo test` builds the examples; these tests start
//! `target/debug/examples/echo_server` and talk to it with the client.

mod util;

use std::process::Command;
use std::time::{Duration, Instant};

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use syncrpc::client::{CallOptions, Client};
use syncrpc::{Code, Context};
use util::{echo_example_path, start_echo_example, WAIT};

#[derive(Serialize, Deserialize, Debug, PartialEq)]
struct Say {
    text: String,
}

#[derive(Serialize)]
struct Sleep {
    ms: u64,
}

#[derive(Serialize)]
struct Fail<'a> {
    code: u32,
    message: &'a str,
}

/// `{}`.
#[derive(Deserialize, Debug, PartialEq)]
struct Empty {}

/// Runs the example with `args` to its end: (exit code, stdout, stderr).
fn run_example(args: &[&str]) -> (Option<i32>, String, String) {
    let out = Command::new(echo_example_path())
        .args(args)
        .output()
        .expect("run examples/echo_server (built by cargo test)");
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn help_lists_every_flag_with_the_library_defaults() {
    let (code, help, _) = run_example(&["--help"]);
    assert_eq!(code, Some(0));
    let d = syncrpc::server::ServerConfig::default();
    for (flag, default) in [
        ("--addr HOST:PORT", "127.0.0.1:7000".to_owned()),
        ("--mode event|thread", "event".to_owned()),
        ("--workers N", d.workers.to_string()),
        ("--loops N", d.event_loops.to_string()),
        ("--queue N", d.queue_capacity.to_string()),
        ("--max-body BYTES", d.limits.max_body.to_string()),
        ("--max-meta BYTES", d.limits.max_meta.to_string()),
        ("--max-connections N", d.limits.max_connections.to_string()),
        (
            "--max-inflight N",
            d.limits.max_in_flight_per_connection.to_string(),
        ),
        (
            "--idle-timeout-ms MS",
            d.timeouts.idle.as_millis().to_string(),
        ),
        (
            "--frame-timeout-ms MS",
            d.timeouts.frame.as_millis().to_string(),
        ),
        (
            "--shutdown-timeout-ms MS",
            d.timeouts.shutdown.as_millis().to_string(),
        ),
        (
            "--drain-delay-ms MS",
            d.timeouts.drain_delay.as_millis().to_string(),
        ),
    ] {
        let line = help
            .lines()
            .find(|l| l.trim_start().starts_with(flag))
            .unwrap_or_else(|| panic!("{flag} missing from --help:\n{help}"));
        let shown = line.trim_start()[flag.len()..].split_whitespace().next();
        assert_eq!(shown, Some(default.as_str()), "{line}");
    }
}

#[test]
fn a_bad_flag_exits_2_and_says_what_is_wrong() {
    for (args, error) in [
        (&["--workers"][..], "--workers needs a value"),
        (&["--workers", "0"], "--workers must be at least 1, not 0"),
        (
            &["--workers", "four"],
            "--workers takes a whole number, not \"four\"",
        ),
        (
            &["--mode", "fibers"],
            "--mode is event or thread, not \"fibers\"",
        ),
        (
            &["--max-body", "1PiB"],
            "--max-body takes a whole number, not \"1PiB\"",
        ),
        (
            &["--max-body", "99999999999GiB"],
            "--max-body 99999999999GiB is too large",
        ),
        (
            &["--max-meta", "64KiB"],
            "--max-meta 65536 is more than a frame can carry (65535)",
        ),
        (
            &["--mode", "thread", "--loops", "2"],
            "--loops sets event loops; thread mode has none",
        ),
        (&["--verbose", "1"], "unknown option --verbose"),
        (&["a:1", "b:2"], "two addresses given: a:1 and b:2"),
        (&["--addr", "no-port"], "error: cannot serve on no-port:"),
    ] {
        let (code, _, stderr) = run_example(args);
        assert_eq!(code, Some(2), "{args:?}: {stderr}");
        assert!(stderr.contains(error), "{args:?}: {stderr}");
        assert!(!stderr.contains("panicked"), "{args:?}: {stderr}");
    }
}

fn every_method_answers_as_documented(mode: &str) {
    let example = start_echo_example(&["--mode", mode, "--workers", "2"]);
    let client = Client::connect(&example.addr).expect("connect");
    let bg = Context::background;

    let said: Say = client
        .call(&bg(), "/echo.Echo/Say", &Say { text: "hi".into() })
        .expect("Say");
    assert_eq!(said.text, "hi");

    let start = Instant::now();
    let slept: Empty = client
        .call(&bg(), "/echo.Echo/Sleep", &Sleep { ms: 50 })
        .expect("Sleep");
    assert_eq!(slept, Empty {});
    assert!(start.elapsed() >= Duration::from_millis(50));

    // Sleep gives up when the caller's deadline passes, not an hour later.
    let start = Instant::now();
    let ctx = bg().with_timeout(Duration::from_millis(100));
    let err = client
        .call::<_, Empty>(&ctx, "/echo.Echo/Sleep", &Sleep { ms: 3_600_000 })
        .expect_err("the deadline passes");
    assert_eq!(err.code(), Code::DEADLINE_EXCEEDED, "{err}");
    assert!(start.elapsed() < WAIT);

    let err = client
        .call::<_, Empty>(
            &bg(),
            "/echo.Echo/Fail",
            &Fail {
                code: 5,
                message: "no such thing",
            },
        )
        .expect_err("Fail fails");
    assert_eq!(err.code(), Code::NOT_FOUND);
    assert_eq!(err.status().message(), "no such thing");
    let ok: Empty = client
        .call(
            &bg(),
            "/echo.Echo/Fail",
            &Fail {
                code: 0,
                message: "",
            },
        )
        .expect("code 0 is OK");
    assert_eq!(ok, Empty {});

    let err = client
        .call::<_, Empty>(&bg(), "/echo.Echo/Panic", &())
        .expect_err("Panic panics");
    assert_eq!(err.code(), Code::INTERNAL, "{err}");

    let body = Bytes::from_static(b"\x00raw bytes\xff");
    let echoed = client
        .call_raw(&bg(), "/echo.Echo/Bytes", &body, &CallOptions::new())
        .expect("Bytes");
    assert_eq!(echoed.body(), &body);
}

#[test]
fn every_method_answers_as_documented_in_event_mode() {
    every_method_answers_as_documented("event");
}

#[test]
fn every_method_answers_as_documented_in_thread_mode() {
    every_method_answers_as_documented("thread");
}

#[test]
fn sigterm_drains_and_exits_0() {
    let mut example = start_echo_example(&[]);
    let client = Client::connect(&example.addr).expect("connect");
    let _: Say = client
        .call(
            &Context::background(),
            "/echo.Echo/Say",
            &Say { text: "x".into() },
        )
        .expect("Say");
    drop(client);
    let pid = example.child.id().to_string();
    assert!(Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap()
        .success());
    let deadline = Instant::now() + WAIT;
    let status = loop {
        if let Some(status) = example.child.try_wait().expect("wait") {
            break status;
        }
        assert!(
            Instant::now() < deadline,
            "still running {WAIT:?} after SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(10));
    };
    assert_eq!(status.code(), Some(0), "{status}");
}

#[cfg(feature = "tls")]
mod tls_util;

/// The example client binary, next to the server's.
#[cfg(feature = "tls")]
fn client_example(args: &[&str]) -> (bool, String) {
    let path = echo_example_path().with_file_name("client");
    let out = Command::new(path)
        .args(args)
        .output()
        .expect("run examples/client (built by cargo test)");
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    (out.status.success(), text)
}

#[cfg(feature = "tls")]
#[test]
fn mutual_tls_flags_serve_the_client_with_a_certificate_and_refuse_one_without() {
    let pki = tls_util::Pki::new("example");
    let server = pki.server("echo");
    let client = pki.client("client", "spiffe://example/client");
    let ca = pki.write("ca.pem", &pki.ca_pem);
    let (scert, skey) = (
        pki.write("server.pem", &server.cert),
        pki.write("server.key", &server.key),
    );
    let (ccert, ckey) = (
        pki.write("client.pem", &client.cert),
        pki.write("client.key", &client.key),
    );
    let path = |p: &std::path::PathBuf| p.to_str().unwrap().to_owned();
    let example = util::start_echo_example(&[
        "--tls-cert",
        &path(&scert),
        "--tls-key",
        &path(&skey),
        "--tls-client-ca",
        &path(&ca),
        "--tls-only",
        "--token",
        "t0ken",
    ]);
    let port = example.addr.rsplit(':').next().unwrap().to_owned();
    let addr = format!("localhost:{port}");
    let base = [
        "--addr",
        addr.as_str(),
        "--tls-ca",
        &path(&ca),
        "--timeout-ms",
        "5000",
    ];
    let with_cert = [
        "--tls-cert".to_owned(),
        path(&ccert),
        "--tls-key".to_owned(),
        path(&ckey),
    ];
    let args = |extra: &[&str]| -> Vec<String> {
        base.iter().chain(extra).map(|s| s.to_string()).collect()
    };
    let run = |a: Vec<String>| client_example(&a.iter().map(String::as_str).collect::<Vec<_>>());

    let mut good = args(&["--token", "t0ken", "--text", "over mtls"]);
    good.extend(with_cert.iter().cloned());
    let (ok, out) = run(good);
    assert!(ok, "{out}");
    assert!(out.contains("over mtls"), "{out}");

    let (ok, out) = run(args(&["--token", "t0ken"]));
    assert!(!ok, "served without a client certificate: {out}");
    assert!(out.contains("TLS"), "{out}");

    let mut no_token = args(&[]);
    no_token.extend(with_cert.iter().cloned());
    let (ok, out) = run(no_token);
    assert!(!ok, "served without the token: {out}");
    assert!(
        out.contains("UNAUTHENTICATED") || out.contains("credentials"),
        "{out}"
    );

    // Plaintext to the TLS-only port.
    let (ok, out) = client_example(&["--addr", &example.addr, "--token", "t0ken"]);
    assert!(!ok, "{out}");
    assert!(out.contains("TLS"), "{out}");
}

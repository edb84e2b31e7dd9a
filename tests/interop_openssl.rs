//! A third-party TLS client, `openssl s_client`, calls `/echo.Echo/Say`
//! through TLS with native frames, and refuses what it should: a server
//! certificate from another CA, an expired one, one for another name; and
//! a server that requires a client certificate refuses s_client without
//! one. Without openssl the test prints why and passes, unless
//! `SYNCRPC_REQUIRE_INTEROP=1` (set in CI) makes that a failure.
#![cfg(feature = "tls")]

mod tls_util;
mod util;

use std::io::{Read, Write};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;

use bytes::BytesMut;
use syncrpc::codec::{Decoded, Decoder, Encoder, Flags, FrameLimits, RequestId, RequestMeta, Side};
use syncrpc::tls::ServerTls;
use syncrpc::Code;
use tls_util::Pki;
use util::{echo_service, say, Mode, Say, WAIT};

/// Skips the test, or fails it where interop is required.
fn has_openssl() -> bool {
    let found = Command::new("openssl")
        .arg("version")
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !found {
        if std::env::var_os("SYNCRPC_REQUIRE_INTEROP").is_some_and(|v| v == "1") {
            panic!("openssl interop test cannot run: no openssl on PATH");
        }
        eprintln!("SKIPPED interop_openssl: no openssl on PATH");
    }
    found
}

/// What one s_client run produced.
struct Outcome {
    /// The answer to the request, if one came.
    answer: Option<(Code, Option<Say>)>,
    stderr: String,
}

/// Runs `openssl s_client` against `addr` with `args`, sends one native
/// REQUEST for `/echo.Echo/Say`, and reads the answer (or the end).
fn s_client(addr: SocketAddr, args: &[&str]) -> Outcome {
    let mut child: Child = Command::new("openssl")
        .arg("s_client")
        .arg("-connect")
        .arg(addr.to_string())
        .args(["-quiet", "-verify_return_error"])
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("openssl runs");
    let mut enc = Encoder::new();
    enc.request(
        RequestId(7),
        Flags::default(),
        &RequestMeta::new("/echo.Echo/Say"),
        &util::encode(&say("through openssl")),
    )
    .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    // A failed handshake closes the pipe: the write may fail, which is fine.
    let _ = stdin.write_all(enc.as_slice());
    let _ = stdin.flush();
    let mut stdout = child.stdout.take().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut dec = Decoder::new(Side::Client, FrameLimits::default());
        let mut buf = BytesMut::new();
        let mut chunk = [0u8; 4096];
        loop {
            if let Ok(Some(Decoded::Frame(f))) = dec.decode(&mut buf) {
                let _ = tx.send(Some(util::to_resp(&f)));
                return;
            }
            match stdout.read(&mut chunk) {
                Ok(0) | Err(_) => {
                    let _ = tx.send(None);
                    return;
                }
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        }
    });
    let answer = rx.recv_timeout(WAIT).expect("s_client answered or ended");
    drop(stdin);
    let _ = child.kill();
    let out = child.wait_with_output().unwrap();
    Outcome {
        answer: answer.map(|r| {
            let body = (r.code == Code::OK).then(|| r.decode::<Say>());
            (r.code, body)
        }),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

fn serve(mode: Mode, tls: ServerTls) -> syncrpc::Server {
    util::builder(mode)
        .service(echo_service())
        .tls(tls)
        .bind("127.0.0.1:0")
        .unwrap()
}

#[track_caller]
fn assert_refused(o: &Outcome, what: &str) {
    assert!(
        o.answer.is_none(),
        "{what}: answered {:?}",
        o.answer.as_ref().map(|a| a.0)
    );
    assert!(!o.stderr.is_empty(), "{what}: openssl said nothing");
}

#[test]
fn openssl_calls_echo_say_and_refuses_bad_certificates() {
    util::init_logging();
    if !has_openssl() {
        return;
    }
    for mode in [Mode::Event, Mode::Thread] {
        let pki = Pki::new("openssl");
        let ca = pki.write("ca.pem", &pki.ca_pem);
        let ca = ca.to_str().unwrap();

        // The good case.
        let server = serve(mode, pki.default_server_tls());
        let o = s_client(
            server.local_addr(),
            &[
                "-CAfile",
                ca,
                "-servername",
                "localhost",
                "-verify_hostname",
                "localhost",
            ],
        );
        assert_eq!(
            o.answer,
            Some((Code::OK, Some(say("through openssl")))),
            "{mode:?}: {}",
            o.stderr
        );

        // A CA that did not sign the server's certificate.
        let other = Pki::new("other");
        let other_ca = other.write("ca.pem", &other.ca_pem);
        let o = s_client(
            server.local_addr(),
            &["-CAfile", other_ca.to_str().unwrap()],
        );
        assert_refused(&o, "wrong CA");
        assert!(o.stderr.contains("verify"), "wrong CA: {}", o.stderr);

        // A certificate for another name.
        let o = s_client(
            server.local_addr(),
            &["-CAfile", ca, "-verify_hostname", "billing.example"],
        );
        assert_refused(&o, "wrong name");
        assert!(
            o.stderr.contains("mismatch") || o.stderr.contains("verify"),
            "wrong name: {}",
            o.stderr
        );
        server.shutdown();

        // An expired certificate.
        let expired = pki.leaf("old", &["localhost", "127.0.0.1"], &[], true);
        let server = serve(mode, pki.server_tls(&expired));
        let o = s_client(
            server.local_addr(),
            &["-CAfile", ca, "-verify_hostname", "localhost"],
        );
        assert_refused(&o, "expired");
        assert!(o.stderr.contains("expired"), "expired: {}", o.stderr);
        server.shutdown();

        // Mutual TLS: without a client certificate, refused; with one,
        // served.
        let tls = pki
            .default_server_tls()
            .client_ca_pem(pki.ca_pem.as_bytes())
            .unwrap();
        let server = serve(mode, tls);
        let o = s_client(server.local_addr(), &["-CAfile", ca]);
        assert_refused(&o, "no client certificate");
        let client = pki.client("openssl", "spiffe://test/openssl");
        let cert = pki.write("client.pem", &client.cert);
        let key = pki.write("client.key", &client.key);
        let o = s_client(
            server.local_addr(),
            &[
                "-CAfile",
                ca,
                "-cert",
                cert.to_str().unwrap(),
                "-key",
                key.to_str().unwrap(),
            ],
        );
        assert_eq!(
            o.answer.map(|a| a.0),
            Some(Code::OK),
            "{mode:?}: {}",
            o.stderr
        );
        server.shutdown();
    }
}

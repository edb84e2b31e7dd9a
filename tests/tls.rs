//! TLS and mutual TLS in both server modes: calls through TLS, the
//! verified identity on the context, mismatches named clearly, stalled and
//! half-open handshakes bounded, certificates reloaded under load, and
//! the shutdown's no-loss guarantee over TLS.
#![cfg(feature = "tls")]

mod tls_util;
mod util;

use std::io::Read;
use std::net::TcpStream;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use syncrpc::server::{Limits, Timeouts};
use syncrpc::tls::TlsMode;
use syncrpc::{Client, Code, Context, ErrorKind, Execution, Service, Status};
use tls_util::Pki;
use util::{echo_service, say, Mode, RawClient, Say, WAIT};

per_mode!(
    a_tls_client_calls_echo,
    mutual_tls_puts_the_verified_identity_on_the_context,
    a_client_without_a_certificate_is_refused_by_mutual_tls,
    plaintext_to_a_tls_only_listener_is_closed_unanswered,
    one_port_serves_tls_and_plaintext_in_optional_mode,
    a_handshake_stalled_after_the_client_hello_is_cut,
    half_open_handshakes_are_capped_and_bystanders_keep_being_served,
    a_certificate_reload_under_load_fails_no_call,
    the_shutdown_loses_nothing_over_tls,
);

fn client(pki: &Pki, addr: std::net::SocketAddr) -> Client {
    Client::builder()
        .addr(addr)
        .tls(pki.client_tls())
        .default_timeout(WAIT)
        .build()
        .unwrap()
}

fn call(c: &Client, text: &str) -> Result<Say, syncrpc::Error> {
    c.call(&Context::background(), "/echo.Echo/Say", &say(text))
}

fn a_tls_client_calls_echo(mode: Mode) {
    let pki = Pki::new("echo");
    let server = util::builder(mode)
        .service(echo_service())
        .tls(pki.default_server_tls())
        .bind("127.0.0.1:0")
        .unwrap();
    let c = client(&pki, server.local_addr());
    for i in 0..20 {
        let text = format!("hello {i} {}", "x".repeat(i * 1000));
        assert_eq!(call(&c, &text).unwrap().text, text);
    }
    let stats = server.stats();
    assert_eq!(stats.tls_handshakes, 1, "{stats:?}");
    assert_eq!(stats.tls_handshake_failures, 0, "{stats:?}");
    drop(c);
    server.shutdown();
}

/// An echo of the caller's identity: subject, DNS names, URIs, and
/// whether the connection is TLS.
fn whoami() -> Service {
    Service::new("who.Who").method("Am", |ctx: &Context, _: ()| {
        let peer = ctx.peer().expect("a served request has a peer");
        let id = peer.identity();
        Ok::<_, Status>((
            peer.is_tls(),
            peer.addr().ip().to_string(),
            id.map(|i| i.subject().to_owned()),
            id.map(|i| i.uris().to_vec()).unwrap_or_default(),
        ))
    })
}

type WhoAmI = (bool, String, Option<String>, Vec<String>);

fn mutual_tls_puts_the_verified_identity_on_the_context(mode: Mode) {
    let pki = Pki::new("mtls");
    let tls = pki
        .default_server_tls()
        .client_ca_pem(pki.ca_pem.as_bytes())
        .unwrap();
    let server = util::builder(mode)
        .service(whoami())
        .tls(tls)
        .bind("127.0.0.1:0")
        .unwrap();
    let cert = pki.client("billing", "spiffe://test/billing");
    let c = Client::builder()
        .addr(server.local_addr())
        .tls(
            pki.client_tls()
                .client_cert_pem(cert.cert.as_bytes(), cert.key.as_bytes())
                .unwrap(),
        )
        .default_timeout(WAIT)
        .build()
        .unwrap();
    let who: WhoAmI = c.call(&Context::background(), "/who.Who/Am", &()).unwrap();
    assert_eq!(
        who,
        (
            true,
            "127.0.0.1".to_owned(),
            Some("CN=billing".to_owned()),
            vec!["spiffe://test/billing".to_owned()]
        )
    );
    drop(c);
    server.shutdown();
}

fn a_client_without_a_certificate_is_refused_by_mutual_tls(mode: Mode) {
    let pki = Pki::new("nocert");
    let tls = pki
        .default_server_tls()
        .client_ca_pem(pki.ca_pem.as_bytes())
        .unwrap();
    let server = util::builder(mode)
        .service(whoami())
        .tls(tls)
        .bind("127.0.0.1:0")
        .unwrap();
    let c = client(&pki, server.local_addr());
    let err = c
        .call::<_, WhoAmI>(&Context::background(), "/who.Who/Am", &())
        .unwrap_err();
    assert_eq!(err.code(), Code::UNAVAILABLE, "{err}");
    assert!(err.to_string().contains("TLS"), "{err}");
    util::eventually("the failure counted", || {
        server.stats().tls_handshake_failures == 1
    });
    drop(c);
    server.shutdown();
}

fn plaintext_to_a_tls_only_listener_is_closed_unanswered(mode: Mode) {
    let pki = Pki::new("plain");
    let server = util::builder(mode)
        .service(echo_service())
        .tls(pki.default_server_tls())
        .bind("127.0.0.1:0")
        .unwrap();
    let mut raw = RawClient::connect(server.local_addr());
    raw.call(1, "/echo.Echo/Say", &say("hi"));
    raw.expect_closed();
    // Our own client says what is likely wrong.
    let c = Client::builder()
        .addr(server.local_addr())
        .default_timeout(WAIT)
        .build()
        .unwrap();
    let err = call(&c, "hi").unwrap_err();
    assert!(err.to_string().contains("TLS"), "{err}");
    assert!(server.stats().tls_handshake_failures >= 2);
    drop(c);
    server.shutdown();
}

#[test]
fn tls_to_a_plaintext_listener_fails_naming_the_mismatch() {
    util::init_logging();
    let pki = Pki::new("mismatch");
    let server = util::builder(Mode::Event)
        .service(echo_service())
        .bind("127.0.0.1:0")
        .unwrap();
    let c = client(&pki, server.local_addr());
    let err = call(&c, "hi").unwrap_err();
    let text = err.to_string();
    assert!(text.contains("plaintext"), "{text}");
    assert_eq!(err.execution(), Execution::NotRun, "{err}");
    drop(c);
    server.shutdown();
}

fn one_port_serves_tls_and_plaintext_in_optional_mode(mode: Mode) {
    let pki = Pki::new("optional");
    let server = util::builder(mode)
        .service(echo_service())
        .service(whoami())
        .tls(pki.default_server_tls().mode(TlsMode::Optional))
        .bind("127.0.0.1:0")
        .unwrap();
    let tls = client(&pki, server.local_addr());
    let plain = Client::builder()
        .addr(server.local_addr())
        .default_timeout(WAIT)
        .build()
        .unwrap();
    let who: WhoAmI = tls
        .call(&Context::background(), "/who.Who/Am", &())
        .unwrap();
    assert!(who.0, "TLS connection");
    let who: WhoAmI = plain
        .call(&Context::background(), "/who.Who/Am", &())
        .unwrap();
    assert!(!who.0, "plaintext connection");
    assert_eq!(call(&plain, "p").unwrap().text, "p");
    assert_eq!(call(&tls, "t").unwrap().text, "t");
    drop((tls, plain));
    server.shutdown();
}

fn a_handshake_stalled_after_the_client_hello_is_cut(mode: Mode) {
    let pki = Pki::new("stall");
    let handshake = Duration::from_millis(300);
    let server = util::builder(mode)
        .service(echo_service())
        .tls(pki.default_server_tls())
        .timeouts(Timeouts {
            handshake,
            shutdown: Duration::from_secs(2),
            ..Timeouts::default()
        })
        .bind("127.0.0.1:0")
        .unwrap();
    let started = Instant::now();
    let mut stalled = tls_util::stalled_handshake(server.local_addr());
    util::eventually("the handshake counted in progress", || {
        server.stats().tls_handshakes_in_progress == 1
    });
    stalled.set_read_timeout(Some(WAIT)).unwrap();
    // The server answers the hello, then closes when the frame timeout
    // passes without the client's next flight.
    let mut sink = Vec::new();
    let _ = stalled.read_to_end(&mut sink);
    let took = started.elapsed();
    assert!(took >= handshake, "closed after {took:?}");
    assert!(took < WAIT, "closed after {took:?}");
    util::eventually("the slot came back", || {
        let s = server.stats();
        s.tls_handshakes_in_progress == 0 && s.connections == 0
    });
    assert_eq!(server.stats().tls_handshake_failures, 1);
    server.shutdown();
}

fn half_open_handshakes_are_capped_and_bystanders_keep_being_served(mode: Mode) {
    let pki = Pki::new("flood");
    // Thread mode spends two threads per connection: a smaller flood
    // makes the same point there.
    let (flood, cap) = match mode {
        Mode::Event => (2000, 256),
        _ => (300, 64),
    };
    let flood = tls_util::connections_within_fd_limit(flood);
    assert!(flood > cap, "too few open files allowed for the test");
    let server = util::builder(mode)
        .service(echo_service())
        .tls(pki.default_server_tls())
        .limits(Limits {
            max_handshakes: cap,
            ..util::limits()
        })
        .bind("127.0.0.1:0")
        .unwrap();
    let addr = server.local_addr();
    let bystander = client(&pki, addr);
    assert_eq!(call(&bystander, "before").unwrap().text, "before");
    let rss_before = util::rss_bytes();
    let mut half_open = Vec::with_capacity(flood);
    let mut max_seen = 0;
    for i in 0..flood {
        half_open.push(tls_util::stalled_handshake(addr));
        if i % 100 == 99 {
            max_seen = max_seen.max(server.stats().tls_handshakes_in_progress);
            assert_eq!(call(&bystander, "during").unwrap().text, "during");
        }
    }
    util::eventually("the flood is past the cap", || {
        server.stats().tls_handshake_failures >= (flood - cap) as u64
    });
    let stats = server.stats();
    max_seen = max_seen.max(stats.tls_handshakes_in_progress);
    assert!(
        max_seen <= cap,
        "{max_seen} handshakes in progress, cap {cap}"
    );
    assert_eq!(call(&bystander, "still").unwrap().text, "still");
    let grown = util::rss_bytes().saturating_sub(rss_before);
    assert!(grown < 128 * 1024 * 1024, "grew {grown} bytes: {stats:?}");
    drop(half_open);
    util::eventually("the slots came back", || {
        let s = server.stats();
        s.tls_handshakes_in_progress == 0 && s.connections == 1
    });
    // New handshakes are served again.
    let fresh = client(&pki, addr);
    assert_eq!(call(&fresh, "after").unwrap().text, "after");
    drop((bystander, fresh));
    server.shutdown();
}

fn a_certificate_reload_under_load_fails_no_call(mode: Mode) {
    let pki = Pki::new("reload");
    let first = pki.server("first");
    let tls = pki.server_tls(&first);
    let server = util::builder(mode)
        .service(echo_service())
        .tls(tls.clone())
        .bind("127.0.0.1:0")
        .unwrap();
    let addr = server.local_addr();
    let stop = Arc::new(AtomicBool::new(false));
    let ok = Arc::new(AtomicU64::new(0));
    let mut workers = Vec::new();
    for w in 0..4 {
        let (pki_client, stop, ok) = (pki.client_tls(), stop.clone(), ok.clone());
        workers.push(thread::spawn(move || {
            let mut failures = Vec::new();
            let mut i = 0u64;
            while !stop.load(Ordering::Relaxed) {
                // Half the workers keep one connection; the others make a
                // new one (a new handshake) every few calls.
                let c = Client::builder()
                    .addr(addr)
                    .tls(pki_client.clone())
                    .default_timeout(WAIT)
                    .build()
                    .unwrap();
                let calls = if w % 2 == 0 { 1_000_000 } else { 5 };
                for _ in 0..calls {
                    if stop.load(Ordering::Relaxed) {
                        break;
                    }
                    i += 1;
                    match call(&c, &i.to_string()) {
                        Ok(r) if r.text == i.to_string() => {
                            ok.fetch_add(1, Ordering::Relaxed);
                        }
                        other => failures.push(format!("{other:?}")),
                    }
                }
            }
            failures
        }));
    }
    let mut last = first;
    for n in 0..5 {
        let before = ok.load(Ordering::Relaxed);
        util::eventually("calls go on", || ok.load(Ordering::Relaxed) > before + 50);
        last = pki.server(&format!("reloaded-{n}"));
        tls.reload_pem(last.cert.as_bytes(), last.key.as_bytes(), None)
            .unwrap();
    }
    let before = ok.load(Ordering::Relaxed);
    util::eventually("calls go on", || ok.load(Ordering::Relaxed) > before + 50);
    stop.store(true, Ordering::Relaxed);
    for w in workers {
        let failures = w.join().unwrap();
        assert!(failures.is_empty(), "{failures:?}");
    }
    // A new handshake gets the last certificate.
    let last_der = rustls_pemfile::certs(&mut last.cert.as_bytes())
        .next()
        .unwrap()
        .unwrap();
    assert_eq!(served_cert(&pki, addr), last_der.to_vec());
    server.shutdown();
}

/// The DER of the certificate a new TLS connection to `addr` is shown.
fn served_cert(pki: &Pki, addr: std::net::SocketAddr) -> Vec<u8> {
    let mut conn = tls_util::raw_client(Some(&pki.ca_der), &[]);
    let mut sock = TcpStream::connect(addr).unwrap();
    sock.set_read_timeout(Some(WAIT)).unwrap();
    while conn.is_handshaking() {
        conn.complete_io(&mut sock).unwrap();
    }
    conn.peer_certificates().unwrap()[0].to_vec()
}

fn the_shutdown_loses_nothing_over_tls(mode: Mode) {
    let pki = Pki::new("shutdown");
    let executed = Arc::new(AtomicU64::new(0));
    let e = executed.clone();
    let svc = Service::new("load.Load").method("Hit", move |_: &Context, n: u64| {
        e.fetch_add(1, Ordering::SeqCst);
        thread::sleep(Duration::from_millis(1));
        Ok::<_, Status>(n)
    });
    let server = util::builder(mode)
        .service(svc)
        .tls(pki.default_server_tls())
        .timeouts(Timeouts {
            shutdown: Duration::from_secs(5),
            ..Timeouts::default()
        })
        .bind("127.0.0.1:0")
        .unwrap();
    let addr = server.local_addr();
    let answered = Arc::new(AtomicU64::new(0));
    let mut callers = Vec::new();
    for _ in 0..4 {
        let c = client(&pki, addr);
        let answered = answered.clone();
        callers.push(thread::spawn(move || {
            let (mut ok, mut refused) = (0u64, 0u64);
            for n in 0u64.. {
                match c.call::<_, u64>(&Context::background(), "/load.Load/Hit", &n) {
                    Ok(m) => {
                        assert_eq!(m, n);
                        ok += 1;
                        answered.fetch_add(1, Ordering::Relaxed);
                    }
                    Err(e) => {
                        // Failed calls are the ones the shutdown refused:
                        // never one that ran.
                        assert_eq!(e.execution(), Execution::NotRun, "{e}");
                        assert!(matches!(e.kind(), ErrorKind::Status | ErrorKind::Io), "{e}");
                        refused += 1;
                        if refused > 3 {
                            break;
                        }
                    }
                }
            }
            (ok, refused)
        }));
    }
    util::eventually("load under way", || answered.load(Ordering::Relaxed) > 200);
    let report = server.shutdown();
    let mut ok = 0;
    for c in callers {
        ok += c.join().unwrap().0;
    }
    assert_eq!(ok, executed.load(Ordering::SeqCst), "ran = answered OK");
    assert!(report.is_clean(), "{report:?}");
}

/// ALPN: the listener advertises the protocols it serves; a client that
/// offers only others is refused, one that offers none is served.
#[test]
fn alpn_advertises_what_the_listener_serves() {
    util::init_logging();
    let pki = Pki::new("alpn");
    let server = util::builder(Mode::Event)
        .service(echo_service())
        .tls(pki.default_server_tls())
        .bind("127.0.0.1:0")
        .unwrap();
    let handshake = |alpn: &[&[u8]]| {
        let mut conn = tls_util::raw_client(Some(&pki.ca_der), alpn);
        let mut sock = TcpStream::connect(server.local_addr()).unwrap();
        sock.set_read_timeout(Some(WAIT)).unwrap();
        while conn.is_handshaking() {
            conn.complete_io(&mut sock)?;
        }
        Ok::<_, std::io::Error>(conn.alpn_protocol().map(<[u8]>::to_vec))
    };
    assert_eq!(
        handshake(&[b"h2", b"msgpack-rpc"]).unwrap(),
        Some(b"msgpack-rpc".to_vec())
    );
    assert_eq!(handshake(&[b"syncrpc"]).unwrap(), Some(b"syncrpc".to_vec()));
    assert_eq!(handshake(&[]).unwrap(), None);
    let err = handshake(&[b"h2"]).unwrap_err();
    assert!(err.to_string().contains("NoApplicationProtocol"), "{err}");
    server.shutdown();
}

/// A client's `close_notify` ends its stream as TCP EOF would: every
/// request read before it is still answered, then the server closes.
#[test]
fn close_notify_ends_the_stream_after_the_answers() {
    util::init_logging();
    for mode in [Mode::Event, Mode::Thread] {
        let pki = Pki::new("notify");
        let server = util::builder(mode)
            .service(echo_service())
            .tls(pki.default_server_tls())
            .bind("127.0.0.1:0")
            .unwrap();
        let conn = tls_util::raw_client(Some(&pki.ca_der), &[]);
        let sock = TcpStream::connect(server.local_addr()).unwrap();
        sock.set_read_timeout(Some(WAIT)).unwrap();
        let mut tls = rustls::StreamOwned::new(conn, sock);
        let mut enc = syncrpc::codec::Encoder::new();
        for id in 1..=3 {
            enc.request(
                syncrpc::codec::RequestId(id),
                syncrpc::codec::Flags::default(),
                &syncrpc::codec::RequestMeta::new("/echo.Echo/Say"),
                &util::encode(&say("bye")),
            )
            .unwrap();
        }
        std::io::Write::write_all(&mut tls, enc.as_slice()).unwrap();
        // close_notify, with the TCP connection left open.
        tls.conn.send_close_notify();
        std::io::Write::flush(&mut tls).unwrap();
        let mut answers = Vec::new();
        // The server answers the three, then closes: read_to_end returns
        // (rather than waiting for the read timeout).
        let started = Instant::now();
        let _ = tls.read_to_end(&mut answers);
        assert!(
            started.elapsed() < WAIT,
            "{mode:?}: the server did not close"
        );
        let mut dec = syncrpc::codec::Decoder::new(
            syncrpc::codec::Side::Client,
            syncrpc::codec::FrameLimits::default(),
        );
        let mut buf = bytes::BytesMut::from(&answers[..]);
        let mut ok = 0;
        while let Ok(Some(syncrpc::codec::Decoded::Frame(f))) = dec.decode(&mut buf) {
            if util::to_resp(&f).code == Code::OK {
                ok += 1;
            }
        }
        assert_eq!(ok, 3, "{mode:?}");
        server.shutdown();
    }
}

/// curl, a third-party HTTP client, reaches `/healthz` over TLS with
/// `--cacert`, and `/metrics` counts the handshakes.
#[test]
fn curl_reaches_healthz_and_metrics_over_tls() {
    util::init_logging();
    let found = std::process::Command::new("curl")
        .arg("--version")
        .stdout(std::process::Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !found {
        if std::env::var_os("SYNCRPC_REQUIRE_INTEROP").is_some_and(|v| v == "1") {
            panic!("curl interop test cannot run: no curl on PATH");
        }
        eprintln!("SKIPPED curl_reaches_healthz_and_metrics_over_tls: no curl on PATH");
        return;
    }
    let pki = Pki::new("curl");
    let ca = pki.write("ca.pem", &pki.ca_pem);
    let server = util::builder(Mode::Event)
        .service(echo_service())
        .tls(pki.default_server_tls())
        .bind("127.0.0.1:0")
        .unwrap();
    let curl = |path: &str| {
        let out = std::process::Command::new("curl")
            .args(["-sS", "--max-time", "10", "--cacert"])
            .arg(&ca)
            .arg(format!(
                "https://localhost:{}{path}",
                server.local_addr().port()
            ))
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{path}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    assert_eq!(curl("/healthz").trim(), "SERVING");
    let metrics = curl("/metrics");
    assert!(
        metrics.contains("syncrpc_tls_handshakes_total{outcome=\"completed\"} 2"),
        "{metrics}"
    );
    server.shutdown();
}

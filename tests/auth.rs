//! The Auth filter: bearer tokens missing, wrong and right; identities
//! allowed and refused per method over mutual TLS; refusals before the
//! body is decompressed or decoded; the health service left to probes.

mod util;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use syncrpc::codec::{compress, Compression, Encoding, Flags, RequestMeta};
use syncrpc::filters::Auth;
use syncrpc::server::{HealthCheckRequest, HEALTH_CHECK_METHOD};
use syncrpc::{Client, Code, Context, Metadata, Service, Status};
use util::{say, Mode, RawClient, Say, WAIT};

per_mode!(
    a_bearer_token_is_required_and_checked,
    a_refused_request_body_is_never_parsed,
);

/// `echo.Echo/Say` that counts its runs.
fn counted_echo(runs: Arc<AtomicU64>) -> Service {
    Service::new("echo.Echo").method("Say", move |_: &Context, req: Say| {
        runs.fetch_add(1, Ordering::SeqCst);
        Ok::<_, Status>(req)
    })
}

fn with_token(method: &str, token: Option<&str>) -> RequestMeta<'static> {
    let mut meta = RequestMeta::new(Box::leak(method.to_owned().into_boxed_str()));
    let mut md = Metadata::new();
    if let Some(t) = token {
        md.insert("authorization", format!("Bearer {t}"));
    }
    meta.md = md;
    meta
}

fn a_bearer_token_is_required_and_checked(mode: Mode) {
    let runs = Arc::new(AtomicU64::new(0));
    let server = util::builder(mode)
        .service(counted_echo(runs.clone()))
        .filter(Auth::new().token("right-token", "ops"))
        .bind("127.0.0.1:0")
        .unwrap();
    let addr = server.local_addr();
    let body = util::encode(&say("hi"));
    let mut raw = RawClient::connect(addr);
    raw.call_meta(
        1,
        &with_token("/echo.Echo/Say", None),
        Flags::default(),
        &body,
    );
    raw.response()
        .expect_code(Code::UNAUTHENTICATED, "no credentials");
    raw.call_meta(
        2,
        &with_token("/echo.Echo/Say", Some("wrong-token")),
        Flags::default(),
        &body,
    );
    raw.response()
        .expect_code(Code::UNAUTHENTICATED, "invalid bearer token");
    raw.call_meta(
        3,
        &with_token("/echo.Echo/Say", Some("right-tokeN")),
        Flags::default(),
        &body,
    );
    raw.response()
        .expect_code(Code::UNAUTHENTICATED, "invalid bearer token");
    assert_eq!(runs.load(Ordering::SeqCst), 0);
    raw.call_meta(
        4,
        &with_token("/echo.Echo/Say", Some("right-token")),
        Flags::default(),
        &body,
    );
    assert_eq!(raw.response().decode::<Say>(), say("hi"));
    assert_eq!(runs.load(Ordering::SeqCst), 1);

    // The client's one setting puts the token on every call.
    let client = Client::builder()
        .addr(addr)
        .bearer_token("right-token")
        .default_timeout(WAIT)
        .build()
        .unwrap();
    for _ in 0..3 {
        let r: Say = client
            .call(&Context::background(), "/echo.Echo/Say", &say("c"))
            .unwrap();
        assert_eq!(r, say("c"));
    }
    let wrong = Client::builder()
        .addr(addr)
        .bearer_token("nope")
        .default_timeout(WAIT)
        .build()
        .unwrap();
    let err = wrong
        .call::<_, Say>(&Context::background(), "/echo.Echo/Say", &say("c"))
        .unwrap_err();
    assert_eq!(err.code(), Code::UNAUTHENTICATED, "{err}");

    // Probes need no credentials.
    raw.call(5, HEALTH_CHECK_METHOD, &HealthCheckRequest::service(""));
    assert_eq!(raw.response().code, Code::OK);
    drop((client, wrong));
    server.shutdown();
}

fn a_refused_request_body_is_never_parsed(mode: Mode) {
    let runs = Arc::new(AtomicU64::new(0));
    let server = util::builder(mode)
        .service(counted_echo(runs.clone()))
        .filter(Auth::new().token("right-token", "ops"))
        .bind("127.0.0.1:0")
        .unwrap();
    // A gzip body that inflates to 8 MiB of 0xc1, a byte MessagePack
    // never uses: decompressing it costs, decoding it fails.
    let mut hostile = Vec::new();
    compress(Compression::Gzip, &vec![0xc1u8; 8 << 20], &mut hostile);
    let flags = Flags::new(Compression::Gzip, Encoding::MsgPack);
    let mut raw = RawClient::connect(server.local_addr());
    raw.call_meta(
        1,
        &with_token("/echo.Echo/Say", Some("stolen?")),
        flags,
        &hostile,
    );
    raw.response()
        .expect_code(Code::UNAUTHENTICATED, "invalid bearer token");
    // The same body with the right token does reach the decoder, and
    // fails there: the refusal above came before it.
    raw.call_meta(
        2,
        &with_token("/echo.Echo/Say", Some("right-token")),
        flags,
        &hostile,
    );
    let resp = raw.response();
    assert_ne!(resp.code, Code::UNAUTHENTICATED);
    assert_ne!(resp.code, Code::OK);
    assert_eq!(runs.load(Ordering::SeqCst), 0);
    server.shutdown();
}

#[cfg(feature = "tls")]
mod tls_util;

/// Over mutual TLS: `billing` may call `Say` but not `Admin`; `ops` may
/// call both; a token works beside certificates.
#[cfg(feature = "tls")]
#[test]
fn client_certificate_identities_are_allowed_and_refused_per_method() {
    util::init_logging();
    let pki = tls_util::Pki::new("authz");
    let admin =
        Service::new("admin.Admin").method("Reset", |_: &Context, _: ()| Ok::<_, Status>(()));
    let server = util::builder(Mode::Event)
        .service(util::echo_service())
        .service(admin)
        .tls(
            pki.default_server_tls()
                .client_ca_pem(pki.ca_pem.as_bytes())
                .unwrap(),
        )
        .filter(
            Auth::new()
                .client_certs(true)
                .token("ops-token", "ops")
                .allow("/echo.Echo/*", ["spiffe://test/billing", "ops"])
                .allow("/admin.Admin/*", ["ops"]),
        )
        .bind("127.0.0.1:0")
        .unwrap();
    let as_cert = |uri: &str, token: Option<&str>| {
        let cert = pki.client("caller", uri);
        let mut b = Client::builder()
            .addr(server.local_addr())
            .tls(
                pki.client_tls()
                    .client_cert_pem(cert.cert.as_bytes(), cert.key.as_bytes())
                    .unwrap(),
            )
            .default_timeout(WAIT);
        if let Some(t) = token {
            b = b.bearer_token(t);
        }
        b.build().unwrap()
    };
    let ctx = Context::background();
    let billing = as_cert("spiffe://test/billing", None);
    assert_eq!(
        billing
            .call::<_, Say>(&ctx, "/echo.Echo/Say", &say("b"))
            .unwrap(),
        say("b")
    );
    let err = billing
        .call::<_, ()>(&ctx, "/admin.Admin/Reset", &())
        .unwrap_err();
    assert_eq!(err.code(), Code::PERMISSION_DENIED, "{err}");

    let stranger = as_cert("spiffe://test/stranger", None);
    let err = stranger
        .call::<_, Say>(&ctx, "/echo.Echo/Say", &say("s"))
        .unwrap_err();
    assert_eq!(err.code(), Code::PERMISSION_DENIED, "{err}");

    let ops = as_cert("spiffe://test/stranger", Some("ops-token"));
    ops.call::<_, ()>(&ctx, "/admin.Admin/Reset", &()).unwrap();
    drop((billing, stranger, ops));
    server.shutdown();
}

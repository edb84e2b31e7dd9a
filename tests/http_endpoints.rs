//! The built-in endpoints over HTTP (`docs/http.md`): `/metrics` checked
//! by promtool with counts that move by exactly the calls made,
//! `/healthz` during a shutdown, `Connection: close` after the GOAWAY
//! step, and the admin listener.

mod http_util;
mod util;

use std::io::Read;
use std::time::Duration;

use http_util::{echo, have, post, promtool_check, sample, server, Http};
use syncrpc::server::{Endpoints, Timeouts};
use syncrpc::Code;
use util::{gate_service, Mode, RawClient, WAIT};

per_mode!(
    metrics_pass_promtool_and_count_exactly_the_calls,
    healthz_flips_to_503_when_the_shutdown_starts,
    after_the_goaway_step_answers_say_connection_close,
    an_admin_listener_serves_the_endpoints_alone,
    the_index_shows_each_methods_kind_and_body,
);

fn metrics_pass_promtool_and_count_exactly_the_calls(mode: Mode) {
    let server = server(mode);
    let addr = server.local_addr();
    let mut c = Http::connect(addr);
    let before = c.get("/metrics");
    before.expect(200, Code::OK);
    assert_eq!(
        before.header("content-type"),
        Some("text/plain; version=0.0.4; charset=utf-8")
    );
    let before = before.text();
    for i in 0..5 {
        c.post_json("/echo.Echo/Say", &format!(r#"{{"text":"{i}"}}"#))
            .expect(200, Code::OK);
    }
    c.post_json("/echo.Echo/Say", "[]")
        .expect(400, Code::INVALID_ARGUMENT);
    let mut native = RawClient::connect(addr);
    for id in 0..3 {
        native.call(id, "/echo.Echo/Say", &util::say("n"));
        native.response();
    }
    let after = c.get("/metrics").text();
    let says = |text: &str, protocol: &str, code: &str| {
        sample(
            text,
            "syncrpc_requests_total",
            &[
                ("service", "echo.Echo"),
                ("method", "Say"),
                ("protocol", protocol),
                ("code", code),
            ],
        )
    };
    assert_eq!(
        says(&after, "http", "OK") - says(&before, "http", "OK"),
        5.0
    );
    assert_eq!(
        says(&after, "http", "INVALID_ARGUMENT") - says(&before, "http", "INVALID_ARGUMENT"),
        1.0
    );
    assert_eq!(
        says(&after, "native", "OK") - says(&before, "native", "OK"),
        3.0
    );
    let latency = |text: &str| {
        sample(
            text,
            "syncrpc_request_duration_seconds_count",
            &[("service", "echo.Echo"), ("method", "Say")],
        )
    };
    assert_eq!(latency(&after) - latency(&before), 9.0);
    let open = |protocol| {
        sample(
            &after,
            "syncrpc_connections_open",
            &[("protocol", protocol)],
        )
    };
    assert_eq!((open("http"), open("native")), (1.0, 1.0));
    assert!(
        sample(&after, "syncrpc_read_bytes_total", &[]) > 0.0
            || after.contains("syncrpc_read_bytes_total ")
    );

    if have(
        "promtool",
        "metrics_pass_promtool_and_count_exactly_the_calls",
    ) {
        promtool_check(&after);
    }
    server.shutdown();
}

fn healthz_flips_to_503_when_the_shutdown_starts(mode: Mode) {
    let server = util::builder(mode)
        .service(echo())
        .timeouts(Timeouts {
            drain_delay: Duration::from_secs(2),
            shutdown: Duration::from_secs(2),
            ..Timeouts::default()
        })
        .bind("127.0.0.1:0")
        .unwrap();
    let mut c = Http::connect(server.local_addr());
    let a = c.get("/healthz");
    a.expect(200, Code::OK);
    assert_eq!(a.text(), "SERVING\n");
    let shutdown = server.shutdown_handle();
    shutdown.trigger();
    // The health table turns first thing (on the shutdown's thread);
    // the drain delay follows.
    let mut a = c.get("/healthz");
    let give_up = std::time::Instant::now() + WAIT;
    while a.status == 200 && std::time::Instant::now() < give_up {
        std::thread::yield_now();
        a = c.get("/healthz");
    }
    a.expect(503, Code::UNAVAILABLE);
    assert_eq!(a.text(), "NOT_SERVING\n");
    // Calls are still served while load balancers catch up.
    let a = c.post_json("/echo.Echo/Say", r#"{"text":"drain"}"#);
    a.expect(200, Code::OK);
    assert!(!a.closes());
    c.get("/livez").expect(200, Code::OK);
    let report = shutdown.shutdown();
    assert!(report.is_clean(), "{report:?}");
    c.expect_closed();
    drop(server);
}

fn after_the_goaway_step_answers_say_connection_close(mode: Mode) {
    let (gate, g) = gate_service();
    let server = util::builder(mode)
        .service(gate)
        .bind("127.0.0.1:0")
        .unwrap();
    let addr = server.local_addr();
    let mut busy = Http::connect(addr);
    busy.send(post("/gate.Gate/Block", "application/json", b"null", "").as_bytes());
    g.wait_started(1);
    let mut idle = Http::connect(addr);
    idle.get("/livez").expect(200, Code::OK);
    let shutdown = server.shutdown_handle();
    shutdown.trigger();
    // The GOAWAY step closes idle keep-alive connections...
    idle.expect_closed();
    // ...and the answer to a request read before it says so.
    // A request read after it is not run.
    busy.send(post("/gate.Gate/Count", "application/json", b"null", "").as_bytes());
    g.release(1);
    let a = busy.answer();
    a.expect(200, Code::OK);
    assert_eq!(a.text(), r#""done""#);
    assert!(a.closes(), "{a:?}");
    // The connection may close before the request behind is read; if it
    // is read, it is refused.
    let mut rest = Vec::new();
    let _ = busy.stream.read_to_end(&mut rest);
    busy.buf.extend_from_slice(&rest);
    if !busy.buf.is_empty() {
        let a = busy.answer();
        a.expect(503, Code::UNAVAILABLE);
        assert!(a.closes(), "{a:?}");
    }
    assert_eq!(g.calls(), 0, "a request read after the GOAWAY step ran");
    assert!(shutdown.shutdown().is_clean());
    drop(server);
}

fn an_admin_listener_serves_the_endpoints_alone(mode: Mode) {
    let server = util::builder(mode)
        .service(echo())
        .endpoints(Endpoints {
            info: false,
            ..Endpoints::default()
        })
        .admin_on("127.0.0.1:0")
        .bind("127.0.0.1:0")
        .unwrap();
    let admin = server.handle().admin_addr().unwrap();
    let mut a = Http::connect(admin);
    a.get("/metrics").expect(200, Code::OK);
    a.get("/healthz").expect(200, Code::OK);
    // Switched off.
    a.get("/").expect(404, Code::NOT_FOUND);
    // No methods on the admin port.
    a.post_json("/echo.Echo/Say", "{}")
        .expect(501, Code::UNIMPLEMENTED);
    // And no endpoints on the public one, which still serves calls.
    let mut public = Http::connect(server.local_addr());
    public.get("/metrics").expect(501, Code::UNIMPLEMENTED);
    public
        .post_json("/echo.Echo/Say", r#"{"text":"p"}"#)
        .expect(200, Code::OK);
    server.shutdown();
}

fn the_index_shows_each_methods_kind_and_body(mode: Mode) {
    use syncrpc::server::{Incoming, Sink};
    use syncrpc::{Context, Service, Status};
    let svc = Service::new("kinds.K")
        .method("Get", |_: &Context, x: u64| Ok::<_, Status>(x))
        .raw_method("Blob", |_: &Context, b: bytes::Bytes| Ok::<_, Status>(b))
        .server_stream("Watch", |_: &Context, _: u64, _: &Sink<u64>| Ok(()))
        .client_stream("Add", |_: &Context, _: Incoming<u64>| Ok::<_, Status>(0u64))
        .bidi_stream(
            "Pipe",
            |_: &Context, _: Incoming<u64>, _: &Sink<u64>| Ok(()),
        );
    let server = util::builder(mode)
        .service(svc)
        .bind("127.0.0.1:0")
        .unwrap();
    let mut http = Http::connect(server.local_addr());
    let index = http.get("/").expect(200, Code::OK).json();
    assert_eq!(
        index["services"]["kinds.K"],
        serde_json::json!({
            "Get": {"kind": "unary", "body": "typed"},
            "Blob": {"kind": "unary", "body": "raw"},
            "Watch": {"kind": "server_stream", "body": "typed"},
            "Add": {"kind": "client_stream", "body": "typed"},
            "Pipe": {"kind": "bidi_stream", "body": "typed"},
        })
    );
    server.shutdown();
}

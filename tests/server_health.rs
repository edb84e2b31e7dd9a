//! The built-in health service, and the readiness probe example built on
//! it.

mod util;

#[path = "../examples/health_probe.rs"]
#[allow(dead_code)]
mod health_probe;

use std::net::TcpListener;

use syncrpc::server::{
    HealthCheckRequest, HealthCheckResponse, ServingStatus, Timeouts, HEALTH_CHECK_METHOD,
};
use syncrpc::{Code, Context, Service, Status};
use util::{echo_service, Mode, RawClient, Resp};

per_mode!(
    check_answers_for_the_server_and_each_service,
    every_listener_serves_health_unless_opted_out,
    the_probe_exits_0_only_when_serving,
);

#[track_caller]
fn check(c: &mut RawClient, id: u32, service: &str) -> Resp {
    c.call(
        id,
        HEALTH_CHECK_METHOD,
        &HealthCheckRequest::service(service),
    );
    c.response()
}

#[track_caller]
fn status(c: &mut RawClient, id: u32, service: &str) -> ServingStatus {
    check(c, id, service).decode::<HealthCheckResponse>().status
}

fn check_answers_for_the_server_and_each_service(mode: Mode) {
    let server = util::builder(mode)
        .service(echo_service())
        .bind("127.0.0.1:0")
        .unwrap();
    let mut c = RawClient::connect(server.local_addr());
    for svc in ["", "echo.Echo", "syncrpc.Health"] {
        assert_eq!(status(&mut c, 1, svc), ServingStatus::Serving, "{svc:?}");
    }
    // As gRPC's Check: a service nobody registered is NOT_FOUND.
    check(&mut c, 2, "nope.Nope").expect_code(Code::NOT_FOUND, "unknown service \"nope.Nope\"");

    let health = server.health();
    health.set_serving("echo.Echo", false);
    assert_eq!(status(&mut c, 3, "echo.Echo"), ServingStatus::NotServing);
    assert_eq!(status(&mut c, 4, ""), ServingStatus::Serving);
    health.set_serving("", false);
    assert_eq!(status(&mut c, 5, ""), ServingStatus::NotServing);
    // Any name the application sets becomes known.
    health.set_serving("database", true);
    assert_eq!(status(&mut c, 6, "database"), ServingStatus::Serving);
    // Handlers still run: health is advice for whoever routes traffic.
    c.call(7, "/echo.Echo/Say", &util::say("served"));
    assert_eq!(c.response().code, Code::OK);
}

fn every_listener_serves_health_unless_opted_out(mode: Mode) {
    let other =
        Service::new("other.Other").method("Hi", |_: &Context, _: ()| Ok::<_, Status>("hi"));
    let server = util::builder(mode)
        .service(echo_service())
        .service_on("127.0.0.1:0", other)
        .bind("127.0.0.1:0")
        .unwrap();
    let mut own = RawClient::connect(server.addr_of("other.Other").unwrap());
    // The table is the server's: services of other listeners are known too.
    assert_eq!(status(&mut own, 1, "echo.Echo"), ServingStatus::Serving);
    assert_eq!(status(&mut own, 2, ""), ServingStatus::Serving);
    drop(own);
    drop(server);

    let server = util::builder(mode)
        .health_service(false)
        .service(echo_service())
        .bind("127.0.0.1:0")
        .unwrap();
    let mut c = RawClient::connect(server.local_addr());
    check(&mut c, 1, "").expect_code(Code::UNIMPLEMENTED, "unknown service syncrpc.Health");
}

fn probe(args: &[&str]) -> (i32, String) {
    health_probe::run(args.iter().map(|s| s.to_string()))
}

fn the_probe_exits_0_only_when_serving(mode: Mode) {
    let server = util::builder(mode)
        .timeouts(Timeouts {
            drain_delay: 3 * util::WAIT,
            ..Timeouts::default()
        })
        .service(echo_service())
        .bind("127.0.0.1:0")
        .unwrap();
    let addr = server.local_addr().to_string();
    assert_eq!(probe(&["--addr", &addr]), (0, "SERVING".to_owned()));
    assert_eq!(
        probe(&[
            "--addr",
            &addr,
            "--service",
            "echo.Echo",
            "--timeout-ms",
            "5000"
        ]),
        (0, "SERVING".to_owned())
    );
    let (code, line) = probe(&["--addr", &addr, "--service", "nope.Nope"]);
    assert_eq!(code, 1);
    assert!(line.starts_with("error: NOT_FOUND"), "{line}");
    server.health().set_serving("echo.Echo", false);
    assert_eq!(
        probe(&["--addr", &addr, "--service", "echo.Echo"]),
        (1, "NOT_SERVING".to_owned())
    );
    // A server that begins shutting down stops being ready at once, while
    // its drain delay still serves.
    let stop = server.shutdown_handle();
    stop.trigger();
    let health = server.health().clone();
    util::eventually("NOT_SERVING", || !health.is_serving());
    assert_eq!(probe(&["--addr", &addr]), (1, "NOT_SERVING".to_owned()));
    stop.force();
    assert!(server.run().forced);
}

#[test]
fn the_check_request_in_the_protocol_doc_is_exact() {
    let mut body = Vec::new();
    syncrpc::codec::encode_body(&HealthCheckRequest::server(), &mut body).unwrap();
    let mut enc = syncrpc::codec::Encoder::new();
    enc.request(
        syncrpc::codec::RequestId(1),
        syncrpc::codec::Flags::default(),
        &syncrpc::codec::RequestMeta::new(HEALTH_CHECK_METHOD),
        &body,
    )
    .unwrap();
    let hex: String = enc.as_slice().iter().map(|b| format!("{b:02x}")).collect();
    assert_eq!(
        hex,
        "535201010000001e000000010000000a81a66d6574686f64b52f73796e637270632e4865616c74\
         682f436865636b81a773657276696365a0"
    );
}

#[test]
fn the_probe_gives_up_on_a_server_that_does_not_answer() {
    // Accepted by the kernel, never read: the probe must not wait forever.
    let silent = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = silent.local_addr().unwrap().to_string();
    let (code, line) = probe(&["--addr", &addr, "--timeout-ms", "200"]);
    assert_eq!((code, line.as_str()), (1, "error: no answer within 200 ms"));
    drop(silent);
}

#[test]
fn the_probe_refuses_bad_arguments_with_exit_code_2() {
    for args in [
        &[][..],
        &["--addr"][..],
        &["--addr", "127.0.0.1:1", "--timeout-ms", "soon"][..],
        &["--addr", "127.0.0.1:1", "--timeout-ms", "0"][..],
        &["--addr", "127.0.0.1:1", "--verbose"][..],
    ] {
        let (code, line) = probe(args);
        assert_eq!(code, 2, "{args:?}: {line}");
        assert!(line
            .ends_with("usage: health_probe --addr HOST:PORT [--service NAME] [--timeout-ms MS]"));
    }
}

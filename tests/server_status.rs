//! Every status code the runtime itself sends (docs/protocol.md, "Status codes"), provoked on
//! purpose.

mod util;

use std::thread;
use std::time::Duration;

use syncrpc::codec::{
    compress, Compression, Encoding, Flags, FrameType, Header, RequestId, RequestMeta, HEADER_LEN,
};
use syncrpc::server::{Limits, Timeouts};
use syncrpc::{CancelReason, Code, ServerBuilder};
use util::{echo_service, encode, gate_service, say, Mode, RawClient};

per_mode!(
    invalid_argument_for_bad_meta_body_and_duplicate_ids,
    invalid_argument_for_a_bin_where_the_meta_says_str,
    unimplemented_for_unknown_malformed_and_reserved,
    resource_exhausted_for_big_bodies_and_a_full_queue,
    deadline_exceeded_while_running_drops_the_late_result,
    deadline_exceeded_in_the_queue_is_not_run,
    internal_when_a_handler_panics_and_serving_goes_on,
    unavailable_after_goaway_on_shutdown,
    cancelled_when_the_shutdown_timeout_runs_out,
);

fn small_pool(mode: Mode, workers: usize, queue: usize) -> ServerBuilder {
    util::builder(mode).workers(workers).queue_capacity(queue)
}

fn invalid_argument_for_bad_meta_body_and_duplicate_ids(mode: Mode) {
    let (gate, g) = gate_service();
    let server = util::builder(mode)
        .service(echo_service())
        .service(gate)
        .bind("127.0.0.1:0")
        .unwrap();
    let mut c = RawClient::connect(server.local_addr());

    // Meta that is not a map, and a map without `method`.
    let mut enc = syncrpc::codec::Encoder::new();
    enc.frame(
        syncrpc::codec::FrameType::Request,
        Flags::default(),
        syncrpc::codec::RequestId(1),
        &7u32,
        &[],
    )
    .unwrap();
    #[derive(serde::Serialize)]
    struct NoMethod {
        timeout_ms: u32,
    }
    enc.frame(
        syncrpc::codec::FrameType::Request,
        Flags::default(),
        syncrpc::codec::RequestId(2),
        &NoMethod { timeout_ms: 5 },
        &[],
    )
    .unwrap();
    c.write_bytes(enc.as_slice());
    c.response()
        .expect_code(Code::INVALID_ARGUMENT, "invalid meta");
    c.response().expect_code(Code::INVALID_ARGUMENT, "method");

    // A body that does not decode, and a corrupt gzip body.
    c.call_meta(
        3,
        &RequestMeta::new("/echo.Echo/Say"),
        Flags::default(),
        b"\x92\x01",
    );
    c.response()
        .expect_code(Code::INVALID_ARGUMENT, "invalid body");
    c.call_meta(
        4,
        &RequestMeta::new("/echo.Echo/Say"),
        Flags::new(Compression::Gzip, Encoding::MsgPack),
        b"\x1f\x8b\x08\x00garbage",
    );
    c.response()
        .expect_code(Code::INVALID_ARGUMENT, "corrupt compressed body");
    // A typed method called with raw bytes.
    c.call_raw(5, "/echo.Echo/Say", b"raw");
    c.response()
        .expect_code(Code::INVALID_ARGUMENT, "takes MessagePack");

    // A duplicate id in flight: refused, and the first is unaffected.
    c.call(6, "/gate.Gate/Block", &());
    g.wait_started(1);
    c.call(6, "/echo.Echo/Say", &say("dup"));
    c.response()
        .expect_code(Code::INVALID_ARGUMENT, "request id 6 is already in flight");
    g.release(1);
    let r = c.response();
    assert_eq!((r.id, r.decode::<String>().as_str()), (6, "done"));
    // The connection stayed open through all of it.
    c.call(7, "/echo.Echo/Say", &say("still here"));
    assert_eq!(c.response().decode::<util::Say>(), say("still here"));
}

/// A REQUEST frame with `meta` as given and an encoded `()` body.
fn request_frame(id: u32, meta: &[u8]) -> Vec<u8> {
    let body = encode(&());
    let mut out = vec![0u8; HEADER_LEN];
    Header {
        frame_type: FrameType::Request,
        flags: Flags::default(),
        meta_len: meta.len() as u16,
        request_id: RequestId(id),
        body_len: body.len() as u32,
    }
    .encode(&mut out);
    out.extend_from_slice(meta);
    out.extend_from_slice(&body);
    out
}

/// `{key: value, ...}` with str keys and values already encoded.
fn meta_map(entries: &[(&str, Vec<u8>)]) -> Vec<u8> {
    let mut out = Vec::new();
    rmp::encode::write_map_len(&mut out, entries.len() as u32).unwrap();
    for (key, value) in entries {
        rmp::encode::write_str(&mut out, key).unwrap();
        out.extend_from_slice(value);
    }
    out
}

fn msgpack_str(s: &str) -> Vec<u8> {
    let mut out = Vec::new();
    rmp::encode::write_str(&mut out, s).unwrap();
    out
}

fn msgpack_bin(s: &str) -> Vec<u8> {
    let mut out = Vec::new();
    rmp::encode::write_bin(&mut out, s.as_bytes()).unwrap();
    out
}

fn invalid_argument_for_a_bin_where_the_meta_says_str(mode: Mode) {
    let (gate, g) = gate_service();
    let server = util::builder(mode)
        .service(gate)
        .bind("127.0.0.1:0")
        .unwrap();
    let mut c = RawClient::connect(server.local_addr());
    let method = || msgpack_str("/gate.Gate/Count");
    // The same text the str would hold, under the bin marker; each
    // between calls that are served, all in one write.
    let frames = [
        request_frame(1, &meta_map(&[("method", method())])),
        request_frame(2, &meta_map(&[("method", msgpack_bin("/gate.Gate/Count"))])),
        request_frame(
            3,
            &meta_map(&[("method", method()), ("trace_id", msgpack_bin("t-1"))]),
        ),
        request_frame(
            4,
            &meta_map(&[("method", method()), ("caller", msgpack_bin("billing"))]),
        ),
        request_frame(5, &meta_map(&[("method", method())])),
    ]
    .concat();
    c.write_bytes(&frames);
    let mut answers: Vec<util::Resp> = (0..5).map(|_| c.response()).collect();
    answers.sort_by_key(|r| r.id);
    for (r, key) in answers[1..4].iter().zip(["method", "trace_id", "caller"]) {
        r.expect_code(
            Code::INVALID_ARGUMENT,
            &format!("key `{key}`: invalid type: byte array, expected a MessagePack str"),
        );
    }
    for r in [&answers[0], &answers[4]] {
        assert_eq!(r.code, Code::OK, "{r:?}");
    }
    assert_eq!(server.stats().connections, 1);
    // Only the well-typed calls ran, and the connection is still served.
    assert_eq!(g.calls(), 2);
    c.call(6, "/gate.Gate/Count", &());
    assert_eq!(c.response().code, Code::OK);
    assert_eq!(g.calls(), 3);
}

fn unimplemented_for_unknown_malformed_and_reserved(mode: Mode) {
    let server = util::builder(mode)
        .service(echo_service())
        .bind("127.0.0.1:0")
        .unwrap();
    let mut c = RawClient::connect(server.local_addr());
    c.call(1, "/echo.Echo/Nope", &say("x"));
    c.response()
        .expect_code(Code::UNIMPLEMENTED, "unknown method /echo.Echo/Nope");
    c.call(2, "/nope.Nope/Say", &say("x"));
    c.response()
        .expect_code(Code::UNIMPLEMENTED, "unknown service nope.Nope");
    c.call(3, "echo.Echo.Say", &say("x"));
    c.response()
        .expect_code(Code::UNIMPLEMENTED, "malformed method name");
    let meta = RequestMeta::new("/echo.Echo/Say");
    c.call_meta(
        4,
        &meta,
        Flags::from_bits(0b0011).unwrap(),
        &encode(&say("x")),
    );
    let r = c.response();
    r.expect_code(Code::UNIMPLEMENTED, "compression 3 is reserved");
    c.call_meta(
        5,
        &meta,
        Flags::from_bits(0b1000).unwrap(),
        &encode(&say("x")),
    );
    c.response()
        .expect_code(Code::UNIMPLEMENTED, "encoding 2 is reserved");
    c.call(6, "/echo.Echo/Say", &say("ok"));
    assert_eq!(c.response().code, Code::OK);
}

fn resource_exhausted_for_big_bodies_and_a_full_queue(mode: Mode) {
    let (gate, g) = gate_service();
    let server = small_pool(mode, 1, 1)
        .limits(Limits {
            max_body: 1024,
            ..Limits::default()
        })
        .service(echo_service())
        .service(gate)
        .bind("127.0.0.1:0")
        .unwrap();
    let mut c = RawClient::connect(server.local_addr());
    // Over the limit as sent: answered, discarded, the connection goes on.
    c.call_raw(1, "/echo.Echo/Raw", &vec![1u8; 5000]);
    c.response().expect_code(
        Code::RESOURCE_EXHAUSTED,
        "body too large: 5000 > 1024 bytes",
    );
    c.call_raw(2, "/echo.Echo/Raw", b"small");
    assert_eq!(&c.response().body[..], b"small");
    // Over the limit after decompression.
    let mut bomb = Vec::new();
    compress(Compression::Gzip, &vec![0u8; 100_000], &mut bomb);
    assert!(bomb.len() < 1024);
    c.call_meta(
        3,
        &RequestMeta::new("/echo.Echo/Raw"),
        Flags::new(Compression::Gzip, Encoding::Raw),
        &bomb,
    );
    c.response()
        .expect_code(Code::RESOURCE_EXHAUSTED, "too large after decompression");
    // A full queue: one worker busy, one request queued, the third refused.
    c.call(4, "/gate.Gate/Block", &());
    g.wait_started(1);
    c.call(5, "/gate.Gate/Count", &());
    util::eventually("the second request to be queued", || {
        server.stats().pool.queued == 1
    });
    c.call(6, "/gate.Gate/Count", &());
    c.response()
        .expect_code(Code::RESOURCE_EXHAUSTED, "work queue full");
    g.release(1);
    let mut ids: Vec<u32> = (0..2).map(|_| c.response().id).collect();
    ids.sort();
    assert_eq!(ids, [4, 5]);
    assert_eq!(g.calls(), 1);
}

fn deadline_exceeded_while_running_drops_the_late_result(mode: Mode) {
    let (gate, g) = gate_service();
    let server = util::builder(mode)
        .service(gate)
        .bind("127.0.0.1:0")
        .unwrap();
    let mut c = RawClient::connect(server.local_addr());
    let meta = RequestMeta {
        timeout_ms: 100,
        ..RequestMeta::new("/gate.Gate/Wait")
    };
    c.call_meta(1, &meta, Flags::default(), &encode(&()));
    g.wait_started(1);
    let r = c.response();
    assert_eq!(r.id, 1);
    r.expect_code(Code::DEADLINE_EXCEEDED, "did not finish within 100 ms");
    // The handler saw its context cancelled, and returned "late".
    assert_eq!(
        g.cancelled.recv_timeout(util::WAIT).unwrap(),
        Some(CancelReason::DeadlineExceeded)
    );
    util::eventually("the late result to be dropped", || {
        server.stats().dropped_responses == 1
    });
    // Exactly one response for id 1: the next frame answers id 2.
    c.call(2, "/gate.Gate/Count", &());
    assert_eq!(c.response().id, 2);
}

fn deadline_exceeded_in_the_queue_is_not_run(mode: Mode) {
    let (gate, g) = gate_service();
    let server = small_pool(mode, 1, 16)
        .service(gate)
        .bind("127.0.0.1:0")
        .unwrap();
    let mut c = RawClient::connect(server.local_addr());
    c.call(1, "/gate.Gate/Block", &());
    g.wait_started(1);
    let meta = RequestMeta {
        timeout_ms: 50,
        ..RequestMeta::new("/gate.Gate/Count")
    };
    c.call_meta(2, &meta, Flags::default(), &encode(&()));
    let r = c.response();
    assert_eq!(r.id, 2);
    r.expect_code(Code::DEADLINE_EXCEEDED, "ms in the queue");
    g.release(1);
    assert_eq!(c.response().id, 1);
    // The worker is free now; the expired request never ran.
    c.call(3, "/gate.Gate/Count", &());
    assert_eq!(c.response().id, 3);
    assert_eq!(g.calls(), 1);
}

fn internal_when_a_handler_panics_and_serving_goes_on(mode: Mode) {
    let (gate, g) = gate_service();
    let server = small_pool(mode, 2, 64)
        .service(gate)
        .bind("127.0.0.1:0")
        .unwrap();
    let mut c = RawClient::connect(server.local_addr());
    // More panics than workers: every worker survives them.
    for id in 0..5 {
        c.call(id, "/gate.Gate/Panic", &());
    }
    for _ in 0..5 {
        c.response()
            .expect_code(Code::INTERNAL, "the handler panicked: handler blew up");
    }
    c.call(9, "/gate.Gate/Count", &());
    assert_eq!(c.response().code, Code::OK);
    assert_eq!(g.calls(), 1);
    assert_eq!(server.stats().pool.workers, 2);
}

fn unavailable_after_goaway_on_shutdown(mode: Mode) {
    let (gate, g) = gate_service();
    let server = util::builder(mode)
        .service(gate)
        .timeouts(Timeouts {
            shutdown: Duration::from_secs(5),
            ..Timeouts::default()
        })
        .bind("127.0.0.1:0")
        .unwrap();
    let addr = server.local_addr();
    let mut c = RawClient::connect(addr);
    c.call(1, "/gate.Gate/Block", &());
    g.wait_started(1);
    let handle = server.handle();
    let stopper = thread::spawn(move || handle.shutdown());
    assert_eq!(
        c.goaway(),
        (Code::UNAVAILABLE, "server shutting down".to_owned())
    );
    // A request that crossed the GOAWAY is answered, not lost, and not run.
    c.call(2, "/gate.Gate/Count", &());
    c.response().expect_code(Code::UNAVAILABLE, "shutting down");
    assert_eq!(g.calls(), 0);
    // The request in flight before the shutdown is drained.
    g.release(1);
    let r = c.response();
    assert_eq!((r.id, r.code), (1, Code::OK));
    drop(c);
    let report = stopper.join().unwrap();
    assert_eq!((report.drained, report.refused), (1, 1), "{report:?}");
    assert!(report.is_clean(), "{report:?}");
    drop(server);
}

fn cancelled_when_the_shutdown_timeout_runs_out(mode: Mode) {
    let (gate, g) = gate_service();
    let server = util::builder(mode)
        .workers(1)
        .service(gate)
        .bind("127.0.0.1:0")
        .unwrap();
    let mut c = RawClient::connect(server.local_addr());
    c.call(1, "/gate.Gate/Wait", &());
    g.wait_started(1);
    c.call(2, "/gate.Gate/Count", &()); // queued behind it
    util::eventually("the second request to be queued", || {
        server.stats().pool.queued == 1
    });
    let handle = server.handle();
    let stopper = thread::spawn(move || handle.shutdown_timeout(Duration::from_millis(200)));
    assert_eq!(c.goaway().0, Code::UNAVAILABLE);
    let mut got: Vec<(u32, Code)> = (0..2)
        .map(|_| {
            let r = c.response();
            (r.id, r.code)
        })
        .collect();
    got.sort();
    assert_eq!(got, [(1, Code::CANCELLED), (2, Code::UNAVAILABLE)]);
    assert_eq!(
        g.cancelled.recv_timeout(util::WAIT).unwrap(),
        Some(CancelReason::Shutdown)
    );
    let report = stopper.join().unwrap();
    assert_eq!((report.cancelled, report.abandoned), (1, 1), "{report:?}");
    assert_eq!(report.exit_code(), 1, "work was cut short: {report:?}");
    assert!(report.stuck_threads.is_empty(), "{report:?}");
    assert_eq!(g.calls(), 0);
}

//! Services, handlers, context, filters and framing, over real sockets.

mod util;

use std::collections::HashSet;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use syncrpc::codec::{compress, Compression, Encoding, Flags, FrameType, RequestMeta};
use syncrpc::filters::Metrics;
use syncrpc::{Code, Context, Metadata, Next, Reply, Request, Service, Status};
use util::{echo_service, encode, say, Mode, RawClient, Say};

per_mode!(
    typed_and_raw_handlers_answer,
    plain_functions_are_handlers,
    context_carries_request_details,
    trace_id_is_generated_when_absent,
    many_requests_multiplexed_on_one_connection,
    one_byte_per_write,
    two_hundred_requests_in_one_write,
    ping_is_answered_with_pong,
    oneway_runs_and_is_never_answered,
    compressed_requests_get_compressed_responses,
    services_on_their_own_listeners,
    filters_run_in_order_and_can_answer_alone,
    metrics_and_access_log_count_requests,
    half_closed_client_still_gets_its_answers,
    several_event_loops_share_the_work,
);

fn typed_and_raw_handlers_answer(mode: Mode) {
    let server = util::builder(mode)
        .service(echo_service())
        .bind("127.0.0.1:0")
        .unwrap();
    let mut c = RawClient::connect(server.local_addr());
    c.call(1, "/echo.Echo/Say", &say("hi"));
    let r = c.response();
    assert_eq!(r.id, 1);
    assert_eq!(r.decode::<Say>(), say("hi"));
    assert_eq!(r.flags, Flags::default());

    c.call_raw(2, "/echo.Echo/Raw", b"\x00\x01raw");
    let r = c.response();
    assert_eq!((r.id, r.code), (2, Code::OK));
    assert_eq!(&r.body[..], b"\x00\x01raw");
    assert_eq!(r.flags.encoding(), Ok(Encoding::Raw));
}

#[derive(serde::Serialize, serde::Deserialize)]
struct Add {
    a: i64,
    b: i64,
}

fn add(_ctx: &Context, req: Add) -> Result<i64, Status> {
    req.a
        .checked_add(req.b)
        .ok_or_else(|| Status::out_of_range("overflow"))
}

fn upper(_ctx: &Context, body: Bytes) -> Result<Bytes, Status> {
    Ok(body.to_ascii_uppercase().into())
}

fn plain_functions_are_handlers(mode: Mode) {
    let svc = Service::new("calc.Calc")
        .method("Add", add)
        .raw_method("Upper", upper);
    let server = util::builder(mode)
        .service(svc)
        .bind("127.0.0.1:0")
        .unwrap();
    let mut c = RawClient::connect(server.local_addr());
    c.call(1, "/calc.Calc/Add", &Add { a: 2, b: 40 });
    assert_eq!(c.response().decode::<i64>(), 42);
    c.call(2, "/calc.Calc/Add", &Add { a: i64::MAX, b: 1 });
    c.response().expect_code(Code::OUT_OF_RANGE, "overflow");
    c.call_raw(3, "/calc.Calc/Upper", b"abc");
    assert_eq!(&c.response().body[..], b"ABC");
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Seen {
    method: String,
    caller: Option<String>,
    trace: String,
    tenant: Option<String>,
    remaining_ms: Option<u128>,
    peer: bool,
}

fn context_carries_request_details(mode: Mode) {
    let seen = Arc::new(Mutex::new(None));
    let s2 = seen.clone();
    let svc = Service::new("ctx.Ctx")
        .method("Look", move |ctx: &Context, _: ()| {
            *s2.lock().unwrap() = Some(Seen {
                method: ctx.method().to_owned(),
                caller: ctx.caller().map(str::to_owned),
                trace: ctx.trace_id().unwrap().to_string(),
                tenant: ctx.metadata().get_str("tenant").map(str::to_owned),
                remaining_ms: ctx.remaining().map(|d| d.as_millis()),
                peer: ctx.peer_addr().is_some(),
            });
            ctx.set_response_metadata("served-by", "test");
            Ok::<_, Status>(())
        })
        .method_timeout("Look", Duration::from_secs(30));
    let server = util::builder(mode)
        .service(svc)
        .bind("127.0.0.1:0")
        .unwrap();
    let mut c = RawClient::connect(server.local_addr());
    let mut md = Metadata::new();
    md.insert("tenant", "acme");
    let meta = RequestMeta {
        timeout_ms: 60_000,
        trace_id: Some("trace-123"),
        caller: Some("billing"),
        md,
        ..RequestMeta::new("/ctx.Ctx/Look")
    };
    c.call_meta(1, &meta, Flags::default(), &encode(&()));
    let r = c.response();
    assert_eq!(r.code, Code::OK, "{r:?}");
    assert_eq!(r.md.get_str("served-by"), Some("test"));
    let seen = seen.lock().unwrap().clone().unwrap();
    assert_eq!(seen.method, "/ctx.Ctx/Look");
    assert_eq!(seen.caller.as_deref(), Some("billing"));
    assert_eq!(seen.trace, "trace-123");
    assert_eq!(seen.tenant.as_deref(), Some("acme"));
    // The method's 30 s is shorter than the caller's 60 s.
    let ms = seen.remaining_ms.unwrap();
    assert!(ms <= 30_000 && ms > 20_000, "{ms}");
    assert!(seen.peer);
}

fn trace_id_is_generated_when_absent(mode: Mode) {
    let svc = Service::new("t.T")
        .method("Id", |ctx: &Context, _: ()| {
            Ok::<_, Status>(ctx.trace_id().unwrap().to_string())
        })
        .method("Fail", |_: &Context, _: ()| -> Result<(), Status> {
            Err(Status::not_found("nope"))
        });
    let server = util::builder(mode)
        .service(svc)
        .bind("127.0.0.1:0")
        .unwrap();
    let mut c = RawClient::connect(server.local_addr());
    c.call(1, "/t.T/Id", &());
    c.call(2, "/t.T/Id", &());
    let a = c.response().decode::<String>();
    let b = c.response().decode::<String>();
    assert_ne!(a, b);
    for t in [a, b] {
        let u = uuid::Uuid::parse_str(&t).expect("a UUID");
        assert_eq!(u.get_version_num(), 4);
    }
    // Errors carry the trace id back, so the caller can find the logs.
    c.call(3, "/t.T/Fail", &());
    let r = c.response();
    assert_eq!(r.code, Code::NOT_FOUND);
    assert_eq!(
        uuid::Uuid::parse_str(r.trace_id.as_deref().unwrap())
            .unwrap()
            .get_version_num(),
        4
    );
    let meta = RequestMeta {
        trace_id: Some("mine"),
        ..RequestMeta::new("/t.T/Fail")
    };
    c.call_meta(4, &meta, Flags::default(), &encode(&()));
    assert_eq!(c.response().trace_id.as_deref(), Some("mine"));
}

fn many_requests_multiplexed_on_one_connection(mode: Mode) {
    let server = util::builder(mode)
        .service(echo_service())
        .bind("127.0.0.1:0")
        .unwrap();
    let mut c = RawClient::connect(server.local_addr());
    let n = 1000u32;
    for id in 0..n {
        c.push_request(
            id,
            &RequestMeta::new("/echo.Echo/Say"),
            Flags::default(),
            &encode(&say(&format!("m{id}"))),
        );
    }
    c.flush();
    let mut seen = HashSet::new();
    for _ in 0..n {
        let r = c.response();
        assert_eq!(r.decode::<Say>(), say(&format!("m{}", r.id)));
        assert!(seen.insert(r.id), "id {} answered twice", r.id);
    }
    assert_eq!(seen.len(), n as usize);
}

fn one_byte_per_write(mode: Mode) {
    let server = util::builder(mode)
        .service(echo_service())
        .bind("127.0.0.1:0")
        .unwrap();
    let mut c = RawClient::connect(server.local_addr());
    let mut enc = syncrpc::codec::Encoder::new();
    for id in 1..=3 {
        enc.request(
            syncrpc::codec::RequestId(id),
            Flags::default(),
            &RequestMeta::new("/echo.Echo/Say"),
            &encode(&say("slow")),
        )
        .unwrap();
    }
    for b in enc.as_slice().to_vec() {
        c.write_bytes(&[b]);
    }
    let mut ids: Vec<u32> = (0..3).map(|_| c.response().id).collect();
    ids.sort();
    assert_eq!(ids, [1, 2, 3]);
}

fn two_hundred_requests_in_one_write(mode: Mode) {
    let server = util::builder(mode)
        .service(echo_service())
        .bind("127.0.0.1:0")
        .unwrap();
    let mut c = RawClient::connect(server.local_addr());
    for id in 0..200 {
        c.push_request(
            id,
            &RequestMeta::new("/echo.Echo/Raw"),
            raw_flags(),
            &id.to_be_bytes(),
        );
    }
    c.flush();
    let mut ids = HashSet::new();
    for _ in 0..200 {
        let r = c.response();
        assert_eq!(&r.body[..], &r.id.to_be_bytes());
        ids.insert(r.id);
    }
    assert_eq!(ids.len(), 200);
}

fn raw_flags() -> Flags {
    Flags::new(Compression::None, Encoding::Raw)
}

fn ping_is_answered_with_pong(mode: Mode) {
    let server = util::builder(mode)
        .service(echo_service())
        .bind("127.0.0.1:0")
        .unwrap();
    let mut c = RawClient::connect(server.local_addr());
    c.ping(0xDEAD_BEEF);
    let f = c.frame();
    assert_eq!(f.frame_type(), FrameType::Pong);
    assert_eq!(f.request_id().0, 0xDEAD_BEEF);
}

fn oneway_runs_and_is_never_answered(mode: Mode) {
    let (tx, rx) = crossbeam_channel::unbounded();
    let svc = Service::new("log.Log").method("Write", move |_: &Context, line: String| {
        tx.send(line).unwrap();
        Ok::<_, Status>(())
    });
    let server = util::builder(mode)
        .service(svc)
        .service(echo_service())
        .bind("127.0.0.1:0")
        .unwrap();
    let mut c = RawClient::connect(server.local_addr());
    c.push_oneway(
        1,
        &RequestMeta::new("/log.Log/Write"),
        Flags::default(),
        &encode(&"hello"),
    );
    // A ONEWAY for an unknown method is not answered either.
    c.push_oneway(
        2,
        &RequestMeta::new("/log.Log/Nope"),
        Flags::default(),
        &encode(&"x"),
    );
    c.flush();
    assert_eq!(rx.recv_timeout(util::WAIT).unwrap(), "hello");
    // The next answer on the connection is the echo's: nothing came for
    // the ONEWAYs.
    c.call(3, "/echo.Echo/Say", &say("after"));
    let r = c.response();
    assert_eq!(r.id, 3);
}

fn compressed_requests_get_compressed_responses(mode: Mode) {
    let server = util::builder(mode)
        .service(echo_service())
        .bind("127.0.0.1:0")
        .unwrap();
    let mut c = RawClient::connect(server.local_addr());
    let text = "z".repeat(10_000);
    for (id, comp) in [(1, Compression::Gzip), (2, Compression::Zlib)] {
        let mut packed = Vec::new();
        compress(comp, &encode(&say(&text)), &mut packed);
        c.call_meta(
            id,
            &RequestMeta::new("/echo.Echo/Say"),
            Flags::new(comp, Encoding::MsgPack),
            &packed,
        );
        let r = c.response();
        assert_eq!(r.code, Code::OK, "{r:?}");
        assert_eq!(r.flags.compression(), Ok(comp));
        assert!(r.body.len() < 1000, "the response is compressed");
        let plain = syncrpc::codec::decompress(comp, &r.body, 1 << 20).unwrap();
        let back: Say = syncrpc::codec::decode_body(&plain, 128).unwrap();
        assert_eq!(back.text, text);
    }
}

fn services_on_their_own_listeners(mode: Mode) {
    let other =
        Service::new("other.Other").method("Hi", |_: &Context, _: ()| Ok::<_, Status>("hi"));
    let third = Service::new("third.Third").method("Hi", |_: &Context, _: ()| Ok::<_, Status>("3"));
    let server = util::builder(mode)
        .service(echo_service())
        .service_on("127.0.0.1:0", other)
        .service_on("127.0.0.1:0", third)
        .bind("127.0.0.1:0")
        .unwrap();
    let main = server.local_addr();
    let own = server.addr_of("other.Other").unwrap();
    assert_ne!(main, own);
    assert_eq!(server.addr_of("echo.Echo"), Some(main));

    let mut c = RawClient::connect(own);
    c.call(1, "/other.Other/Hi", &());
    assert_eq!(c.response().decode::<String>(), "hi");
    // Each listener routes only its own services.
    c.call(2, "/echo.Echo/Say", &say("x"));
    c.response()
        .expect_code(Code::UNIMPLEMENTED, "unknown service echo.Echo");
    let mut m = RawClient::connect(main);
    m.call(3, "/other.Other/Hi", &());
    m.response()
        .expect_code(Code::UNIMPLEMENTED, "unknown service");
}

fn filters_run_in_order_and_can_answer_alone(mode: Mode) {
    let order = Arc::new(Mutex::new(Vec::new()));
    let decoded = Arc::new(AtomicUsize::new(0));
    let (o1, o2) = (order.clone(), order.clone());
    let d = decoded.clone();
    let svc = Service::new("f.F")
        .method("Count", move |_: &Context, _: Say| {
            d.fetch_add(1, Ordering::SeqCst);
            Ok::<_, Status>(())
        })
        .filter(
            move |ctx: &Context, req: Request, next: Next<'_>| -> Reply {
                o2.lock().unwrap().push("service");
                if ctx.metadata().get_str("deny").is_some() {
                    return Err(Status::permission_denied("denied by filter"));
                }
                next.run(ctx, req)
            },
        );
    let server = util::builder(mode)
        .filter(
            move |ctx: &Context, req: Request, next: Next<'_>| -> Reply {
                o1.lock().unwrap().push("server");
                next.run(ctx, req)
            },
        )
        .service(svc)
        .bind("127.0.0.1:0")
        .unwrap();
    let mut c = RawClient::connect(server.local_addr());
    let mut md = Metadata::new();
    md.insert("deny", "1");
    // The body is not even MessagePack: the filter answers before the
    // body is decoded.
    c.call_meta(
        1,
        &RequestMeta {
            md,
            ..RequestMeta::new("/f.F/Count")
        },
        Flags::default(),
        b"\xc1garbage",
    );
    c.response()
        .expect_code(Code::PERMISSION_DENIED, "denied by filter");
    assert_eq!(decoded.load(Ordering::SeqCst), 0);
    assert_eq!(*order.lock().unwrap(), ["server", "service"]);
    c.call(2, "/f.F/Count", &say("ok"));
    assert_eq!(c.response().code, Code::OK);
    assert_eq!(decoded.load(Ordering::SeqCst), 1);
}

fn metrics_and_access_log_count_requests(mode: Mode) {
    let metrics = Metrics::new();
    let svc = echo_service().method("Fail", |_: &Context, _: ()| -> Result<(), Status> {
        Err(Status::not_found("nothing here"))
    });
    let server = util::builder(mode)
        .filter(syncrpc::filters::AccessLog::new())
        .filter(metrics.clone())
        .service(svc)
        .bind("127.0.0.1:0")
        .unwrap();
    let mut c = RawClient::connect(server.local_addr());
    for id in 0..5 {
        c.call(id, "/echo.Echo/Say", &say("x"));
    }
    c.call(5, "/echo.Echo/Fail", &());
    for _ in 0..6 {
        c.response();
    }
    let snap = metrics.snapshot();
    assert_eq!(snap.requests, 6);
    assert_eq!(snap.errors, 1);
    assert_eq!(snap.count(Code::OK), 5);
    assert_eq!(snap.count(Code::NOT_FOUND), 1);
    assert_eq!(snap.latency.count(), 6);
    assert!(snap.latency.quantile(0.5).is_some());
}

fn half_closed_client_still_gets_its_answers(mode: Mode) {
    let server = util::builder(mode)
        .service(echo_service())
        .bind("127.0.0.1:0")
        .unwrap();
    let mut c = RawClient::connect(server.local_addr());
    for id in 0..10 {
        c.push_request(
            id,
            &RequestMeta::new("/echo.Echo/Say"),
            Flags::default(),
            &encode(&say("bye")),
        );
    }
    c.flush();
    c.stream.shutdown(std::net::Shutdown::Write).unwrap();
    for _ in 0..10 {
        assert_eq!(c.response().code, Code::OK);
    }
    c.expect_closed();
}

fn several_event_loops_share_the_work(mode: Mode) {
    let server = util::builder(mode)
        .event_loops(3)
        .service(echo_service())
        .bind("127.0.0.1:0")
        .unwrap();
    let mut clients: Vec<RawClient> = (0..12)
        .map(|_| RawClient::connect(server.local_addr()))
        .collect();
    for round in 0..3 {
        for (i, c) in clients.iter_mut().enumerate() {
            c.call(round, "/echo.Echo/Say", &say(&format!("{i}/{round}")));
        }
        for (i, c) in clients.iter_mut().enumerate() {
            assert_eq!(c.response().decode::<Say>(), say(&format!("{i}/{round}")));
        }
    }
    assert_eq!(server.stats().connections, 12);
    drop(clients);
    let report = server.shutdown();
    assert!(report.stuck_threads.is_empty(), "{report:?}");
}

//! The client against the real server, in every server mode: pipelining,
//! deadlines, restarts, GOAWAY failover, and a three-hop chain of handlers
//! calling each other with their contexts.

mod util;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{mpsc, Arc, Barrier};
use std::thread;
use std::time::{Duration, Instant};

use bytes::Bytes;
use crossbeam_channel::unbounded;
use syncrpc::client::{CallOptions, RetryPolicy};
use syncrpc::codec::Compression;
use syncrpc::{
    CancelReason, Client, Code, Context, Execution, Server, Service, Status, TaskGroup, TraceId,
};
use util::{builder, echo_service, gate_service, say, Mode, Say, WAIT};

fn client_for(addrs: &[SocketAddr]) -> Client {
    Client::builder()
        .addrs(addrs)
        .backoff(Duration::from_millis(20), Duration::from_millis(200))
        .build()
        .unwrap()
}

fn bg() -> Context {
    Context::background()
}

fn echo_server(mode: Mode) -> Server {
    builder(mode)
        .service(echo_service())
        .bind("127.0.0.1:0")
        .unwrap()
}

fn multiplexes_16_threads_x_1000_calls(mode: Mode) {
    let server = builder(mode)
        .workers(4)
        .service(echo_service())
        .bind("127.0.0.1:0")
        .unwrap();
    let client = client_for(&[server.local_addr()]);
    let barrier = Arc::new(Barrier::new(16));
    let threads: Vec<_> = (0..16)
        .map(|t| {
            let client = client.clone();
            let barrier = barrier.clone();
            thread::spawn(move || {
                barrier.wait();
                for i in 0..1000 {
                    let req = say(&format!("{t}/{i}"));
                    let resp: Say = client.call(&bg(), "/echo.Echo/Say", &req).unwrap();
                    assert_eq!(resp, req, "a response was matched to the wrong call");
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    assert_eq!(server.stats().connections, 1);
}

fn deadline_is_honoured_when_the_handler_sleeps_past_it(mode: Mode) {
    let (gate, control) = gate_service();
    let server = builder(mode).service(gate).bind("127.0.0.1:0").unwrap();
    let client = client_for(&[server.local_addr()]);
    let timeout = Duration::from_millis(200);
    let start = Instant::now();
    // Block ignores its context: it returns only when released.
    let err = client
        .call_timeout::<_, String>(&bg(), "/gate.Gate/Block", &(), timeout)
        .unwrap_err();
    let elapsed = start.elapsed();
    assert_eq!(err.code(), Code::DEADLINE_EXCEEDED, "{err}");
    assert!(elapsed >= timeout, "returned early: {elapsed:?}");
    assert!(
        elapsed < timeout + Duration::from_secs(2),
        "returned late: {elapsed:?}"
    );
    control.wait_started(1);
    control.release(1);
    // The connection is still good for the next call.
    client
        .call::<_, ()>(&bg(), "/gate.Gate/Count", &())
        .unwrap();
    assert_eq!(control.calls(), 1);
}

fn handler_context_sees_the_callers_deadline_and_cancel(mode: Mode) {
    let (gate, control) = gate_service();
    let server = builder(mode).service(gate).bind("127.0.0.1:0").unwrap();
    let client = client_for(&[server.local_addr()]);
    // Wait blocks until its context is cancelled: by the deadline the
    // client sent...
    let err = client
        .call_timeout::<_, String>(&bg(), "/gate.Gate/Wait", &(), Duration::from_millis(100))
        .unwrap_err();
    assert!(err.is_timeout(), "{err:?}");
    // The client's clock started first, so its CANCEL often arrives just
    // before the server's own deadline passes: either ends the handler.
    let reason = control.cancelled.recv_timeout(WAIT).unwrap();
    assert!(
        matches!(
            reason,
            Some(CancelReason::DeadlineExceeded | CancelReason::Cancelled)
        ),
        "{reason:?}"
    );
    // ...or by the CANCEL frame the client sends when its context is
    // cancelled.
    let (ctx, cancel) = bg().with_cancel();
    let c = client.clone();
    let call = thread::spawn(move || c.call::<_, String>(&ctx, "/gate.Gate/Wait", &()));
    control.wait_started(2);
    cancel.cancel();
    let err = call.join().unwrap().unwrap_err();
    assert_eq!(err.code(), Code::CANCELLED);
    let reason = control.cancelled.recv_timeout(WAIT).unwrap();
    assert_eq!(reason, Some(CancelReason::Cancelled));
}

fn restarted_server_is_reconnected_to(mode: Mode) {
    let server = echo_server(mode);
    let addr = server.local_addr();
    let client = client_for(&[addr]);
    let _: Say = client
        .call(&bg(), "/echo.Echo/Say", &say("before"))
        .unwrap();
    let report = server.shutdown();
    assert!(report.stuck_threads.is_empty());

    let err = client
        .call::<_, Say>(&bg(), "/echo.Echo/Say", &say("down"))
        .unwrap_err();
    assert_eq!(err.code(), Code::UNAVAILABLE, "{err}");
    assert!(err.is_not_run(), "{err:?}");

    let server = builder(mode).service(echo_service()).bind(addr).unwrap();
    let opts = CallOptions::new().wait_for_ready(true).timeout(WAIT);
    let resp = client
        .call_with::<_, Say>(&bg(), "/echo.Echo/Say", &say("after"), &opts)
        .unwrap();
    assert_eq!(resp.body().text, "after");
    assert_eq!(resp.peer(), server.local_addr());
}

fn goaway_from_one_of_two_servers_fails_no_call(mode: Mode) {
    let a = echo_server(mode);
    let b = echo_server(mode);
    let (a_addr, b_addr) = (a.local_addr(), b.local_addr());
    let client = client_for(&[a_addr, b_addr]);
    let done = Arc::new(AtomicUsize::new(0));
    let (halfway_tx, halfway_rx) = mpsc::channel();
    let threads: Vec<_> = (0..4)
        .map(|t| {
            let client = client.clone();
            let done = done.clone();
            let halfway = halfway_tx.clone();
            thread::spawn(move || {
                for i in 0..300 {
                    let req = say(&format!("{t}/{i}"));
                    let resp: Say = client
                        .call(&bg(), "/echo.Echo/Say", &req)
                        .unwrap_or_else(|e| panic!("call {t}/{i} failed: {e:?}"));
                    assert_eq!(resp, req);
                    if done.fetch_add(1, Ordering::SeqCst) == 200 {
                        halfway.send(()).unwrap();
                    }
                }
            })
        })
        .collect();
    halfway_rx.recv_timeout(WAIT).unwrap();
    // GOAWAY, drain, and close, while the calls go on.
    let start = Instant::now();
    let report = a.shutdown();
    let took = start.elapsed();
    for t in threads {
        t.join().unwrap();
    }
    assert!(report.stuck_threads.is_empty());
    assert_eq!(report.cancelled, 0);
    // The client closed its drained connection itself, so the shutdown did
    // not have to wait for its timeout (2 s in these tests).
    assert!(took < Duration::from_secs(2), "shutdown took {took:?}");
    for _ in 0..10 {
        let resp = client
            .call_with::<_, Say>(&bg(), "/echo.Echo/Say", &say("b"), &CallOptions::new())
            .unwrap();
        assert_eq!(resp.peer(), b_addr);
    }
    drop(b);
}

/// What one hop of the chain saw.
#[derive(Debug)]
struct Hop {
    name: &'static str,
    trace_id: Option<TraceId>,
    remaining: Option<Duration>,
    /// When the handler returned, after the top-level call started.
    ended: Duration,
    cancelled: bool,
}

fn deadline_and_trace_id_propagate_through_three_hops(mode: Mode) {
    let (hops_tx, hops) = unbounded::<Hop>();
    let start = Instant::now();

    // C waits until its context ends; it never answers by itself.
    let tx = hops_tx.clone();
    let c = builder(mode)
        .service(
            Service::new("chain.C").method("Wait", move |ctx: &Context, _: ()| {
                let (trace_id, remaining) = (ctx.trace_id(), ctx.remaining());
                let cancelled = ctx.wait_cancelled(WAIT);
                tx.send(Hop {
                    name: "C",
                    trace_id,
                    remaining,
                    ended: start.elapsed(),
                    cancelled,
                })
                .unwrap();
                ctx.check()
            }),
        )
        .bind("127.0.0.1:0")
        .unwrap();

    // A and B relay to the next hop with their own context.
    let relay = |name: &'static str, next: SocketAddr, next_method: &'static str| {
        let client = client_for(&[next]);
        let tx = hops_tx.clone();
        move |ctx: &Context, _: ()| -> Result<(), Status> {
            let (trace_id, remaining) = (ctx.trace_id(), ctx.remaining());
            let result = client.call::<_, ()>(ctx, next_method, &());
            tx.send(Hop {
                name,
                trace_id,
                remaining,
                ended: start.elapsed(),
                cancelled: ctx.is_cancelled(),
            })
            .unwrap();
            Ok(result?)
        }
    };
    let b = builder(mode)
        .service(
            Service::new("chain.B").method("Relay", relay("B", c.local_addr(), "/chain.C/Wait")),
        )
        .bind("127.0.0.1:0")
        .unwrap();
    let a = builder(mode)
        .service(
            Service::new("chain.A").method("Relay", relay("A", b.local_addr(), "/chain.B/Relay")),
        )
        .bind("127.0.0.1:0")
        .unwrap();

    let budget = Duration::from_millis(300);
    let trace = TraceId::new("chain-1").unwrap();
    let ctx = bg().with_trace_id(trace).with_timeout(budget);
    let client = client_for(&[a.local_addr()]);
    let err = client
        .call::<_, ()>(&ctx, "/chain.A/Relay", &())
        .unwrap_err();
    let elapsed = start.elapsed();
    assert_eq!(err.code(), Code::DEADLINE_EXCEEDED, "{err}");
    assert!(elapsed < budget + Duration::from_secs(2), "{elapsed:?}");

    let mut seen: Vec<Hop> = (0..3)
        .map(|_| hops.recv_timeout(WAIT).expect("every hop ends"))
        .collect();
    seen.sort_by_key(|h| h.name);
    let names: Vec<_> = seen.iter().map(|h| h.name).collect();
    assert_eq!(names, ["A", "B", "C"]);
    for hop in &seen {
        assert_eq!(hop.trace_id, Some(trace), "{hop:?}");
        let remaining = hop.remaining.expect("every hop has a deadline");
        // timeout_ms rounds up, so a hop may see up to 1 ms more per hop.
        assert!(remaining <= budget + Duration::from_millis(3), "{hop:?}");
        assert!(hop.cancelled, "{hop:?} should have seen its deadline pass");
        assert!(hop.ended < budget + Duration::from_secs(2), "{hop:?}");
    }
    // Each hop has no more time than the one before it (give or take the
    // rounding of timeout_ms).
    let r = |i: usize| seen[i].remaining.unwrap();
    assert!(r(1) <= r(0) + Duration::from_millis(1), "{seen:?}");
    assert!(r(2) <= r(1) + Duration::from_millis(1), "{seen:?}");
}

fn handler_fans_out_with_a_task_group(mode: Mode) {
    let (gate, control) = gate_service();
    let backend = builder(mode)
        .service(gate)
        .service(echo_service())
        .bind("127.0.0.1:0")
        .unwrap();
    let to_backend = client_for(&[backend.local_addr()]);
    let backend_started = control.started.clone();
    let front = builder(mode)
        .service(Service::new("front.Front").method(
            "FanOut",
            move |ctx: &Context, texts: Vec<String>| -> Result<Vec<String>, Status> {
                let group = TaskGroup::<Status>::new(ctx).limit(4);
                let handles: Vec<_> = texts
                    .into_iter()
                    .map(|text| {
                        let c = to_backend.clone();
                        let started = backend_started.clone();
                        group.spawn(move |ctx| {
                            if text == "wait" {
                                // Ends only when the group is cancelled.
                                c.call::<_, String>(ctx, "/gate.Gate/Wait", &())?;
                                return Ok(String::new());
                            }
                            if text == "fail" {
                                // Fail once the sibling's call is running
                                // on the backend, so there is a call to stop.
                                let _ = started.recv_timeout(WAIT);
                                return Err(Status::not_found("no such thing"));
                            }
                            let r: Say = c.call(ctx, "/echo.Echo/Say", &say(&text))?;
                            Ok(r.text)
                        })
                    })
                    .collect();
                group.wait()?;
                Ok(handles.into_iter().filter_map(|h| h.join()).collect())
            },
        ))
        .bind("127.0.0.1:0")
        .unwrap();
    let client = client_for(&[front.local_addr()]);
    let ok: Vec<String> = client
        .call(&bg(), "/front.Front/FanOut", &vec!["a", "b", "c"])
        .unwrap();
    assert_eq!(ok, ["a", "b", "c"]);

    // The waiting call has no deadline: only the failure of its sibling,
    // cancelling the group, ends it.
    let err = client
        .call_timeout::<_, Vec<String>>(&bg(), "/front.Front/FanOut", &vec!["wait", "fail"], WAIT)
        .unwrap_err();
    assert_eq!(err.code(), Code::NOT_FOUND, "{err}");
    assert_eq!(err.status().message(), "no such thing");
    let reason = control.cancelled.recv_timeout(WAIT).unwrap();
    assert_eq!(reason, Some(CancelReason::Cancelled));
}

fn statuses_metadata_and_trace_ids_reach_the_caller(mode: Mode) {
    let server = builder(mode)
        .service(
            Service::new("md.Md")
                .method("Echo", |ctx: &Context, key: String| {
                    let value = ctx.metadata().get_str(&key).unwrap_or("").to_owned();
                    ctx.set_response_metadata("echoed", value.clone());
                    Ok::<_, Status>(value)
                })
                .method("Missing", |_: &Context, _: ()| -> Result<(), Status> {
                    Err(Status::not_found("no such user"))
                }),
        )
        .bind("127.0.0.1:0")
        .unwrap();
    let client = Client::builder()
        .addr(server.local_addr())
        .caller("client-tests")
        .build()
        .unwrap();
    let opts = CallOptions::new().metadata("tenant", "acme");
    let resp = client
        .call_with::<_, String>(&bg(), "/md.Md/Echo", "tenant", &opts)
        .unwrap();
    assert_eq!(resp.body(), "acme");
    assert_eq!(resp.metadata().get_str("echoed"), Some("acme"));
    let sent = TraceId::new("md-trace").unwrap();
    let resp = client
        .call_with::<_, String>(&bg(), "/md.Md/Echo", "tenant", &opts.trace_id(sent))
        .unwrap();
    assert_eq!(resp.trace_id(), Some(sent));

    let err = client
        .call::<_, ()>(&bg(), "/md.Md/Missing", &())
        .unwrap_err();
    assert!(err.is_status());
    assert_eq!(err.code(), Code::NOT_FOUND);
    assert_eq!(err.status().message(), "no such user");
    assert_eq!(err.execution(), Execution::Ran);
    // No trace id sent: the server assigned one, and reports it with errors.
    let assigned = err.trace_id().expect("errors carry the trace id");
    assert_eq!(assigned.as_str().len(), 36, "{assigned}");

    let err = client.call::<_, ()>(&bg(), "/md.Md/Nope", &()).unwrap_err();
    assert_eq!(err.code(), Code::UNIMPLEMENTED);
}

fn compressed_and_raw_calls_round_trip(mode: Mode) {
    let server = echo_server(mode);
    let client = Client::builder()
        .addr(server.local_addr())
        .compress_min_size(0)
        .build()
        .unwrap();
    let text = "compressible text ".repeat(200);
    for compression in [Compression::None, Compression::Gzip, Compression::Zlib] {
        let opts = CallOptions::new().compression(compression);
        let resp = client
            .call_with::<_, Say>(&bg(), "/echo.Echo/Say", &say(&text), &opts)
            .unwrap();
        assert_eq!(resp.body().text, text, "{compression:?}");
        let raw = client
            .call_raw(&bg(), "/echo.Echo/Raw", text.as_bytes(), &opts)
            .unwrap();
        assert_eq!(raw.body(), &Bytes::from(text.clone()), "{compression:?}");
    }
}

fn ping_oneway_and_idempotent_retry_policy(mode: Mode) {
    let (gate, control) = gate_service();
    let server = builder(mode).service(gate).bind("127.0.0.1:0").unwrap();
    let client = client_for(&[server.local_addr()]);
    let rtt = client.ping(&bg().with_timeout(WAIT)).unwrap();
    assert!(rtt < WAIT);
    client.oneway(&bg(), "/gate.Gate/Count", &()).unwrap();
    util::eventually("the ONEWAY ran", || control.calls() == 1);
    let opts = CallOptions::new().retry(RetryPolicy::idempotent(2));
    client
        .call_with::<_, ()>(&bg(), "/gate.Gate/Count", &(), &opts)
        .unwrap();
    assert_eq!(control.calls(), 2);
}

per_mode!(
    multiplexes_16_threads_x_1000_calls,
    deadline_is_honoured_when_the_handler_sleeps_past_it,
    handler_context_sees_the_callers_deadline_and_cancel,
    restarted_server_is_reconnected_to,
    goaway_from_one_of_two_servers_fails_no_call,
    deadline_and_trace_id_propagate_through_three_hops,
    handler_fans_out_with_a_task_group,
    statuses_metadata_and_trace_ids_reach_the_caller,
    compressed_and_raw_calls_round_trip,
    ping_oneway_and_idempotent_retry_policy,
);

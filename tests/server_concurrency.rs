//! Slow, cancelled and orphaned requests, across connections.

mod util;

use std::time::Duration;

use syncrpc::codec::{Flags, RequestMeta};
use syncrpc::CancelReason;
use util::{echo_service, encode, gate_service, say, Mode, RawClient};

per_mode!(
    a_slow_handler_does_not_block_other_connections,
    an_answer_is_sent_before_the_worker_starts_a_slow_handler,
    cancel_of_a_queued_request_means_it_never_runs,
    cancel_of_a_running_request_cancels_its_context,
    a_closed_connection_never_leaks_its_response_to_a_newcomer,
    closing_a_connection_cancels_what_it_had_in_flight,
    a_half_closed_connection_is_answered_before_it_closes,
);

fn a_slow_handler_does_not_block_other_connections(mode: Mode) {
    let (gate, g) = gate_service();
    let server = util::builder(mode)
        .workers(2)
        .service(gate)
        .service(echo_service())
        .bind("127.0.0.1:0")
        .unwrap();
    let mut slow = RawClient::connect(server.local_addr());
    slow.call(1, "/gate.Gate/Block", &());
    g.wait_started(1);
    let mut others: Vec<RawClient> = (0..5)
        .map(|_| RawClient::connect(server.local_addr()))
        .collect();
    for (i, c) in others.iter_mut().enumerate() {
        c.call(i as u32, "/echo.Echo/Say", &say("quick"));
    }
    for c in others.iter_mut() {
        assert_eq!(c.response().decode::<util::Say>(), say("quick"));
    }
    g.release(1);
    assert_eq!(slow.response().decode::<String>(), "done");
}

/// One worker, a quick call queued right before a slow one: the quick
/// answer must not wait in the output until the slow handler returns.
fn an_answer_is_sent_before_the_worker_starts_a_slow_handler(mode: Mode) {
    let (gate, g) = gate_service();
    let server = util::builder(mode)
        .workers(1)
        .service(gate)
        .service(echo_service())
        .bind("127.0.0.1:0")
        .unwrap();
    let mut c = RawClient::connect(server.local_addr());
    let empty = encode(&());
    for round in 0..3u32 {
        let (quick, slow) = (2 * round + 1, 2 * round + 2);
        c.push_request(
            quick,
            &RequestMeta::new("/echo.Echo/Say"),
            Flags::default(),
            &encode(&say("quick")),
        );
        c.push_request(
            slow,
            &RequestMeta::new("/gate.Gate/Block"),
            Flags::default(),
            &empty,
        );
        c.flush();
        g.wait_started(1);
        let r = c.response();
        assert_eq!(r.id, quick);
        assert_eq!(r.decode::<util::Say>(), say("quick"));
        // Answered while the slow call still waits for its release (it
        // gives up with ABORTED if never released).
        assert_eq!(server.stats().requests_in_flight, 1);
        // Held well past the pace rule's quick bound, so the server knows
        // the method as slow from the first round on: a method timed as
        // quick is run without flushing first (see `pace`).
        std::thread::sleep(Duration::from_millis(2));
        g.release(1);
        let r = c.response();
        assert_eq!(r.id, slow);
        assert_eq!(r.decode::<String>(), "done");
    }
}

fn cancel_of_a_queued_request_means_it_never_runs(mode: Mode) {
    let (gate, g) = gate_service();
    let server = util::builder(mode)
        .workers(1)
        .service(gate)
        .bind("127.0.0.1:0")
        .unwrap();
    let mut c = RawClient::connect(server.local_addr());
    c.call(1, "/gate.Gate/Block", &());
    g.wait_started(1);
    c.call(2, "/gate.Gate/Count", &());
    util::eventually("the request to be queued", || {
        server.stats().pool.queued == 1
    });
    c.cancel(2);
    // The cancelled request leaves the in-flight table at once.
    util::eventually("the cancel to land", || {
        server.stats().requests_in_flight == 1
    });
    g.release(1);
    assert_eq!(c.response().id, 1);
    c.call(3, "/gate.Gate/Count", &());
    // No response for 2: the next frame answers 3.
    assert_eq!(c.response().id, 3);
    assert_eq!(g.calls(), 1);
}

fn cancel_of_a_running_request_cancels_its_context(mode: Mode) {
    let (gate, g) = gate_service();
    let server = util::builder(mode)
        .service(gate)
        .bind("127.0.0.1:0")
        .unwrap();
    let mut c = RawClient::connect(server.local_addr());
    c.call(1, "/gate.Gate/Wait", &());
    g.wait_started(1);
    c.cancel(1);
    assert_eq!(
        g.cancelled.recv_timeout(util::WAIT).unwrap(),
        Some(CancelReason::Cancelled)
    );
    c.call(2, "/gate.Gate/Count", &());
    assert_eq!(c.response().id, 2, "a cancelled request is not answered");
}

fn a_closed_connection_never_leaks_its_response_to_a_newcomer(mode: Mode) {
    let (gate, g) = gate_service();
    let server = util::builder(mode)
        .service(gate)
        .service(echo_service())
        .bind("127.0.0.1:0")
        .unwrap();
    let mut old = RawClient::connect(server.local_addr());
    old.call_raw(7, "/gate.Gate/BlockRaw", b"old response");
    g.wait_started(1);
    old.abort();
    util::eventually("the old connection to close", || {
        server.stats().connections == 0
    });
    // The newcomer takes the freed slot, and uses the same request id.
    let mut new = RawClient::connect(server.local_addr());
    new.call(1, "/echo.Echo/Say", &say("hello"));
    assert_eq!(new.response().id, 1);
    g.release(1);
    util::eventually("the orphaned result to be dropped", || {
        server.stats().dropped_responses == 1
    });
    new.call_raw(7, "/echo.Echo/Raw", b"new response");
    let r = new.response();
    assert_eq!((r.id, &r.body[..]), (7, &b"new response"[..]));
    new.expect_silence(Duration::from_millis(100));
}

fn closing_a_connection_cancels_what_it_had_in_flight(mode: Mode) {
    let (gate, g) = gate_service();
    let server = util::builder(mode)
        .service(gate)
        .bind("127.0.0.1:0")
        .unwrap();
    let mut c = RawClient::connect(server.local_addr());
    let meta = RequestMeta::new("/gate.Gate/Wait");
    c.call_meta(1, &meta, Flags::default(), &encode(&()));
    g.wait_started(1);
    c.abort();
    assert_eq!(
        g.cancelled.recv_timeout(util::WAIT).unwrap(),
        Some(CancelReason::Cancelled)
    );
    util::eventually("nothing in flight", || {
        server.stats().requests_in_flight == 0
    });
}

fn a_half_closed_connection_is_answered_before_it_closes(mode: Mode) {
    let (gate, g) = gate_service();
    let server = util::builder(mode)
        .service(gate)
        .bind("127.0.0.1:0")
        .unwrap();
    let mut c = RawClient::connect(server.local_addr());
    c.call(1, "/gate.Gate/Block", &());
    g.wait_started(1);
    c.stream.shutdown(std::net::Shutdown::Write).unwrap();
    assert_eq!(server.stats().connections, 1);
    g.release(1);
    assert_eq!(c.response().decode::<String>(), "done");
    c.expect_closed();
}

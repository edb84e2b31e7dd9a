//! Every limit of docs/protocol.md ("Limits") hit on purpose: the documented reaction,
//! and other connections unaffected.

mod util;

use std::io::Write;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::Duration;

use syncrpc::codec::{Flags, FrameType, Header, RequestId, RequestMeta, HEADER_LEN};
use syncrpc::server::{Limits, Timeouts};
use syncrpc::Code;
use util::{echo_service, encode, gate_service, say, Mode, RawClient};

per_mode!(
    connection_errors_get_goaway_internal_then_close,
    requests_read_before_a_connection_error_are_answered,
    in_flight_limit_stops_reading_until_some_finish,
    a_client_that_does_not_read_cannot_grow_server_memory,
    the_shared_request_byte_budget_stops_reading,
    connections_past_the_limit_get_goaway_resource_exhausted,
    idle_connections_get_goaway_unavailable,
    a_frame_that_never_completes_closes_the_connection,
    a_write_stall_closes_the_connection,
    stalled_oversized_uploads_cost_almost_no_memory,
);

fn header(frame_type: FrameType, meta_len: u16, id: u32, body_len: u32) -> [u8; HEADER_LEN] {
    let mut out = [0u8; HEADER_LEN];
    Header {
        frame_type,
        flags: Flags::default(),
        meta_len,
        request_id: RequestId(id),
        body_len,
    }
    .encode(&mut out);
    out
}

/// Checks a bystander connection still gets answers.
#[track_caller]
fn bystander_is_fine(c: &mut RawClient) {
    c.call(99, "/echo.Echo/Say", &say("fine"));
    assert_eq!(c.response().decode::<util::Say>(), say("fine"));
}

fn connection_errors_get_goaway_internal_then_close(mode: Mode) {
    let server = util::builder(mode)
        .limits(Limits {
            max_meta: 64,
            ..Limits::default()
        })
        .service(echo_service())
        .bind("127.0.0.1:0")
        .unwrap();
    let mut bystander = RawClient::connect(server.local_addr());
    let mut bad_magic = header(FrameType::Ping, 0, 1, 0);
    // Not a capital letter, which would be the start of an HTTP request.
    bad_magic[0] = b'x';
    let mut bad_version = header(FrameType::Ping, 0, 1, 0);
    bad_version[2] = 9;
    let mut bad_type = header(FrameType::Ping, 0, 1, 0);
    bad_type[3] = 11;
    let mut reserved_flags = header(FrameType::Ping, 0, 1, 0);
    reserved_flags[4] = 0x10;
    let mut reserved_byte = header(FrameType::Ping, 0, 1, 0);
    reserved_byte[5] = 1;
    let cases: Vec<(Vec<u8>, &str)> = vec![
        (bad_magic.to_vec(), "bad magic"),
        (bad_version.to_vec(), "unsupported version 9"),
        (bad_type.to_vec(), "invalid frame type 11"),
        (reserved_flags.to_vec(), "reserved flag bits"),
        (reserved_byte.to_vec(), "reserved header byte"),
        (
            header(FrameType::Request, 65, 1, 0).to_vec(),
            "meta too large: 65 > 64 bytes",
        ),
        (
            header(FrameType::Response, 0, 1, 0).to_vec(),
            "RESPONSE frame sent in the wrong direction",
        ),
        (
            header(FrameType::Ping, 1, 1, 0).to_vec(),
            "PING frame must be empty",
        ),
    ];
    for (bytes, text) in cases {
        let mut c = RawClient::connect(server.local_addr());
        c.write_bytes(&bytes);
        let (code, message) = c.goaway();
        assert_eq!(code, Code::INTERNAL, "{text}");
        assert!(
            message.contains(text),
            "{message:?} should contain {text:?}"
        );
        c.expect_closed();
    }
    bystander_is_fine(&mut bystander);
}

fn requests_read_before_a_connection_error_are_answered(mode: Mode) {
    let server = util::builder(mode)
        .service(echo_service())
        .bind("127.0.0.1:0")
        .unwrap();
    let mut c = RawClient::connect(server.local_addr());
    c.push_request(
        1,
        &RequestMeta::new("/echo.Echo/Say"),
        Flags::default(),
        &encode(&say("a")),
    );
    c.flush();
    c.write_bytes(b"garbage garbage!");
    let mut saw = (false, false);
    for _ in 0..2 {
        let f = c.frame();
        match f.frame_type() {
            FrameType::Response => saw.0 = true,
            FrameType::Goaway => saw.1 = true,
            other => panic!("unexpected {other}"),
        }
    }
    assert_eq!(saw, (true, true));
    c.expect_closed();
}

fn in_flight_limit_stops_reading_until_some_finish(mode: Mode) {
    let (gate, g) = gate_service();
    let server = util::builder(mode)
        .workers(4)
        .limits(Limits {
            max_in_flight_per_connection: 2,
            ..Limits::default()
        })
        .service(gate)
        .service(echo_service())
        .bind("127.0.0.1:0")
        .unwrap();
    let mut bystander = RawClient::connect(server.local_addr());
    let mut c = RawClient::connect(server.local_addr());
    // All three in one write: the limit holds between the requests of one
    // read, not only between reads.
    for id in 1..=2 {
        c.push_request(
            id,
            &RequestMeta::new("/gate.Gate/Block"),
            Flags::default(),
            &encode(&()),
        );
    }
    let third = encode(&say("third"));
    c.push_request(
        3,
        &RequestMeta::new("/echo.Echo/Say"),
        Flags::default(),
        &third,
    );
    c.flush();
    g.wait_started(2);
    // Not refused, not answered: not read yet.
    c.expect_silence(Duration::from_millis(200));
    assert_eq!(server.stats().requests_in_flight, 2);
    bystander_is_fine(&mut bystander);
    g.release(2);
    let mut ids: Vec<u32> = (0..3).map(|_| c.response().id).collect();
    ids.sort();
    assert_eq!(ids, [1, 2, 3]);
}

fn a_client_that_does_not_read_cannot_grow_server_memory(mode: Mode) {
    let (gate, g) = gate_service();
    const RESP: u32 = 1 << 20;
    const N: u32 = 200;
    let server = util::builder(mode)
        .limits(Limits {
            max_pending_response_bytes: 256 * 1024,
            max_in_flight_per_connection: 8,
            ..Limits::default()
        })
        .service(gate)
        .service(echo_service())
        .bind("127.0.0.1:0")
        .unwrap();
    let mut bystander = RawClient::connect(server.local_addr());
    let mut c = RawClient::connect(server.local_addr());
    let mut writer = c.stream.try_clone().unwrap();
    let done = Arc::new(AtomicBool::new(false));
    let d = done.clone();
    let t = thread::spawn(move || {
        let mut enc = syncrpc::codec::Encoder::new();
        let flags = Flags::new(
            syncrpc::codec::Compression::None,
            syncrpc::codec::Encoding::Raw,
        );
        for id in 0..N {
            enc.request(
                RequestId(id),
                flags,
                &RequestMeta::new("/gate.Gate/Big"),
                &RESP.to_be_bytes(),
            )
            .unwrap();
        }
        let r = writer.write_all(enc.as_slice());
        d.store(true, Ordering::SeqCst);
        r
    });
    // 200 MiB of responses: without the limit the server would buffer
    // them all. Wait until it stops making progress.
    let mut last = u64::MAX;
    util::eventually("the server to stop running requests", || {
        let now = server.stats().pool.completed;
        let settled = now == last;
        last = now;
        thread::sleep(Duration::from_millis(100));
        settled
    });
    let ran = server.stats().pool.completed;
    assert!(
        ran < u64::from(N) / 2,
        "{ran} of {N} requests ran while nobody read"
    );
    bystander_is_fine(&mut bystander);
    for _ in 0..N {
        let r = c.response();
        assert_eq!(r.body.len(), RESP as usize);
    }
    assert!(t.join().unwrap().is_ok());
    assert!(done.load(Ordering::SeqCst));
    drop(g);
}

fn the_shared_request_byte_budget_stops_reading(mode: Mode) {
    let (gate, g) = gate_service();
    let server = util::builder(mode)
        .workers(4)
        .limits(Limits {
            max_buffered_request_bytes: 64 * 1024,
            ..Limits::default()
        })
        .service(gate)
        .service(echo_service())
        .bind("127.0.0.1:0")
        .unwrap();
    // Held requests count against the budget while they run. (A frame is
    // only read while the budget has room, so each is sent whole, in one
    // write, before the budget is spent.)
    let mut hog = RawClient::connect(server.local_addr());
    hog.call_raw(0, "/gate.Gate/BlockRaw", &vec![1u8; 50 * 1024]);
    g.wait_started(1);
    hog.call_raw(1, "/gate.Gate/BlockRaw", &vec![1u8; 20 * 1024]);
    g.wait_started(1);
    let stats = server.stats();
    assert!(stats.buffered_request_bytes >= 64 * 1024, "{stats:?}");
    let mut other = RawClient::connect(server.local_addr());
    other.call(1, "/echo.Echo/Say", &say("wait"));
    other.expect_silence(Duration::from_millis(200));
    g.release(2);
    assert_eq!(other.response().decode::<util::Say>(), say("wait"));
    let mut sizes: Vec<usize> = (0..2).map(|_| hog.response().body.len()).collect();
    sizes.sort();
    assert_eq!(sizes, [20 * 1024, 50 * 1024]);
}

fn connections_past_the_limit_get_goaway_resource_exhausted(mode: Mode) {
    let server = util::builder(mode)
        .limits(Limits {
            max_connections: 2,
            ..Limits::default()
        })
        .service(echo_service())
        .bind("127.0.0.1:0")
        .unwrap();
    let mut a = RawClient::connect(server.local_addr());
    let mut b = RawClient::connect(server.local_addr());
    bystander_is_fine(&mut a);
    bystander_is_fine(&mut b);
    let mut c = RawClient::connect(server.local_addr());
    let (code, message) = c.goaway();
    assert_eq!(code, Code::RESOURCE_EXHAUSTED);
    assert!(message.contains("too many connections"), "{message}");
    c.expect_closed();
    bystander_is_fine(&mut a);
    // A slot frees up when a connection leaves.
    b.abort();
    util::eventually("the connection to close", || {
        server.stats().connections == 1
    });
    let mut d = RawClient::connect(server.local_addr());
    bystander_is_fine(&mut d);
}

fn idle_connections_get_goaway_unavailable(mode: Mode) {
    let server = util::builder(mode)
        .timeouts(Timeouts {
            idle: Duration::from_millis(200),
            ..Timeouts::default()
        })
        .service(echo_service())
        .bind("127.0.0.1:0")
        .unwrap();
    let mut c = RawClient::connect(server.local_addr());
    bystander_is_fine(&mut c);
    let (code, message) = c.goaway();
    assert_eq!(code, Code::UNAVAILABLE);
    assert!(message.contains("idle"), "{message}");
    c.expect_closed();
}

fn a_frame_that_never_completes_closes_the_connection(mode: Mode) {
    let server = util::builder(mode)
        .timeouts(Timeouts {
            frame: Duration::from_millis(200),
            ..Timeouts::default()
        })
        .service(echo_service())
        .bind("127.0.0.1:0")
        .unwrap();
    let mut bystander = RawClient::connect(server.local_addr());
    let mut c = RawClient::connect(server.local_addr());
    c.write_bytes(&header(FrameType::Request, 10, 1, 0)[..10]);
    c.expect_closed();
    bystander_is_fine(&mut bystander);
}

fn a_write_stall_closes_the_connection(mode: Mode) {
    let (gate, _g) = gate_service();
    let server = util::builder(mode)
        .timeouts(Timeouts {
            write_stall: Duration::from_millis(300),
            ..Timeouts::default()
        })
        .service(gate)
        .service(echo_service())
        .bind("127.0.0.1:0")
        .unwrap();
    let mut bystander = RawClient::connect(server.local_addr());
    let mut c = RawClient::connect(server.local_addr());
    let flags = Flags::new(
        syncrpc::codec::Compression::None,
        syncrpc::codec::Encoding::Raw,
    );
    for id in 0..64 {
        c.push_request(
            id,
            &RequestMeta::new("/gate.Gate/Big"),
            flags,
            &(1u32 << 20).to_be_bytes(),
        );
    }
    c.flush();
    // Never read: the server gives up on the connection.
    util::eventually("the stalled connection to close", || {
        server.stats().connections == 1
    });
    bystander_is_fine(&mut bystander);
}

fn stalled_oversized_uploads_cost_almost_no_memory(mode: Mode) {
    let server = util::builder(mode)
        .service(echo_service())
        .bind("127.0.0.1:0")
        .unwrap();
    let before = util::rss_bytes();
    let meta = RequestMeta::new("/echo.Echo/Raw").to_vec();
    let mut conns = Vec::new();
    for id in 0..500u32 {
        let mut c = RawClient::connect(server.local_addr());
        let h = header(FrameType::Request, meta.len() as u16, id, 10 * 1024 * 1024);
        c.write_bytes(&h);
        c.write_bytes(&meta);
        c.write_bytes(b"first bytes of a body that never comes");
        conns.push(c);
    }
    util::eventually("all connections accepted", || {
        server.stats().connections == 500
    });
    util::eventually("all headers read", || {
        server.stats().buffered_request_bytes >= 500 * (HEADER_LEN + meta.len())
    });
    let stats = server.stats();
    let after = util::rss_bytes();
    // Each holds its partial frame (about 80 bytes), nothing sized from
    // the declared 10 MiB.
    assert!(stats.buffered_request_bytes < 500 * 1024, "{stats:?}");
    let grown = after.saturating_sub(before);
    assert!(grown < 64 * 1024 * 1024, "RSS grew by {grown} bytes");
    let mut bystander = RawClient::connect(server.local_addr());
    bystander_is_fine(&mut bystander);
}

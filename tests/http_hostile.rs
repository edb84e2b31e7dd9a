//! Hostile HTTP (`docs/http.md`, "Limits and hostile input"): each case
//! answered as documented and its connection closed, with a native
//! bystander served after each; slow heads and idle keep-alive
//! connections cut by the timeouts.

mod http_util;
mod util;

use std::net::SocketAddr;
use std::time::Duration;

use http_util::{echo, Http};
use syncrpc::server::{Limits, Timeouts};
use syncrpc::Code;
use util::{Mode, RawClient};

per_mode!(
    hostile_requests_are_refused_and_a_bystander_is_served,
    slow_heads_and_idle_keep_alives_are_cut,
);

/// Sends `bytes`, expects `status` and the connection closed, and checks
/// `bystander` is still served.
#[track_caller]
fn refused(addr: SocketAddr, bystander: &mut RawClient, bytes: &[u8], status: u16, say: &str) {
    let mut c = Http::connect(addr);
    c.send(bytes);
    let a = c.answer();
    assert_eq!(a.status, status, "{}: {}", say, a.text());
    assert!(a.closes(), "{say}: {a:?}");
    c.expect_closed();
    bystander.call(7, "/echo.Echo/Say", &util::say(say));
    assert_eq!(bystander.response().decode::<util::Say>().text, say);
}

fn hostile_requests_are_refused_and_a_bystander_is_served(mode: Mode) {
    let server = util::builder(mode)
        .service(echo())
        .limits(Limits {
            max_body: 1024,
            ..Limits::default()
        })
        .bind("127.0.0.1:0")
        .unwrap();
    let addr = server.local_addr();
    let mut bystander = RawClient::connect(addr);
    let mut big_head = b"GET /healthz HTTP/1.1\r\nx-pad: ".to_vec();
    big_head.extend(std::iter::repeat(b'a').take(17 * 1024));
    big_head.extend_from_slice(b"\r\n\r\n");
    refused(addr, &mut bystander, &big_head, 431, "head");
    // Never sent: the body's length alone refuses it.
    refused(
        addr,
        &mut bystander,
        b"POST /echo.Echo/Raw HTTP/1.1\r\ncontent-type: application/octet-stream\r\ncontent-length: 1000000000\r\n\r\n",
        413,
        "body",
    );
    refused(
        addr,
        &mut bystander,
        b"POST /echo.Echo/Raw HTTP/1.1\r\ntransfer-encoding: chunked\r\n\r\n800\r\n",
        413,
        "chunked body",
    );
    refused(
        addr,
        &mut bystander,
        b"POST /echo.Echo/Raw HTTP/1.1\r\ncontent-length: 3\r\ntransfer-encoding: chunked\r\n\r\n0\r\n\r\n",
        400,
        "smuggling",
    );
    refused(
        addr,
        &mut bystander,
        b"POST /echo.Echo/Raw HTTP/1.1\r\ncontent-length: -1\r\n\r\n",
        400,
        "length",
    );
    refused(
        addr,
        &mut bystander,
        b"POST /echo.Echo/Raw HTTP/1.1\r\ntransfer-encoding: chunked\r\n\r\nxyz\r\n",
        400,
        "chunk size",
    );
    refused(
        addr,
        &mut bystander,
        b"GET /a b c\r\n\r\n",
        400,
        "request line",
    );
    server.shutdown();
}

fn slow_heads_and_idle_keep_alives_are_cut(mode: Mode) {
    let server = util::builder(mode)
        .service(echo())
        .timeouts(Timeouts {
            frame: Duration::from_millis(300),
            idle: Duration::from_millis(500),
            shutdown: Duration::from_secs(2),
            ..Timeouts::default()
        })
        .bind("127.0.0.1:0")
        .unwrap();
    let addr = server.local_addr();
    // Slowloris: a head that never ends.
    let mut slow = Http::connect(addr);
    slow.send(b"GET /healthz HTTP/1.1\r\nx-a: 1\r\n");
    slow.expect_closed();
    // A keep-alive connection left idle.
    let mut idle = Http::connect(addr);
    idle.get("/livez").expect(200, Code::OK);
    idle.expect_closed();
    let mut bystander = RawClient::connect(addr);
    bystander.call(1, "/echo.Echo/Say", &util::say("still"));
    assert_eq!(bystander.response().decode::<util::Say>().text, "still");
    server.shutdown();
}

//! MessagePack-RPC on the same services as the native protocol: the
//! mapping of names and params, errors, notifications, limits and
//! shutdown, in every server mode.

mod util;

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::thread;
use std::time::Duration;

use serde::de::DeserializeOwned;
use serde::Serialize;
use syncrpc::server::{Limits, Protocols, Timeouts};
use syncrpc::{Code, Context, Service, Status};
use util::{builder, echo_service, gate_service, say, Mode, RawClient, Say, WAIT};

/// A MessagePack-RPC client that writes and reads messages by hand.
struct MrpcClient {
    stream: TcpStream,
}

/// `[1, msgid, error, result]` as read.
type Answer<T> = (u8, u32, Option<(u32, String)>, Option<T>);

impl MrpcClient {
    #[track_caller]
    fn connect(addr: SocketAddr) -> MrpcClient {
        let stream = TcpStream::connect(addr).expect("connect");
        stream.set_read_timeout(Some(WAIT)).unwrap();
        stream.set_nodelay(true).unwrap();
        MrpcClient { stream }
    }

    fn request_bytes<P: Serialize>(id: u32, method: &str, params: &P) -> Vec<u8> {
        rmp_serde::to_vec_named(&(0u8, id, method, params)).unwrap()
    }

    fn request<P: Serialize>(&mut self, id: u32, method: &str, params: &P) {
        let bytes = Self::request_bytes(id, method, params);
        self.stream.write_all(&bytes).unwrap();
    }

    fn notify<P: Serialize>(&mut self, method: &str, params: &P) {
        let bytes = rmp_serde::to_vec_named(&(2u8, method, params)).unwrap();
        self.stream.write_all(&bytes).unwrap();
    }

    #[track_caller]
    fn answer<T: DeserializeOwned>(&mut self) -> Answer<T> {
        rmp_serde::from_read(&mut self.stream).expect("a response")
    }

    #[track_caller]
    fn ok<T: DeserializeOwned>(&mut self, id: u32) -> T {
        let (kind, got, err, result) = self.answer::<T>();
        assert_eq!((kind, got, err), (1, id, None));
        result.expect("a result")
    }

    #[track_caller]
    fn err(&mut self, id: u32) -> (u32, String) {
        let (kind, got, err, result) = self.answer::<serde::de::IgnoredAny>();
        assert_eq!((kind, got), (1, id));
        assert!(result.is_none());
        err.expect("an error")
    }

    #[track_caller]
    fn expect_closed(&mut self) {
        let mut byte = [0u8; 1];
        match self.stream.read(&mut byte) {
            Ok(0) => {}
            Ok(_) => panic!("expected the connection to close, got a byte {byte:02x?}"),
            Err(e) => assert!(
                matches!(
                    e.kind(),
                    io::ErrorKind::ConnectionReset | io::ErrorKind::ConnectionAborted
                ),
                "expected close, got {e}"
            ),
        }
    }
}

fn service() -> (Service, crossbeam_channel::Receiver<String>) {
    let (tx, rx) = crossbeam_channel::unbounded();
    let svc = Service::new("calc.Calc")
        .method("Add", |_: &Context, (a, b): (u32, u32)| {
            Ok::<_, Status>(a + b)
        })
        .method("Fail", |_: &Context, msg: String| {
            Err::<(), _>(Status::invalid_argument(msg))
        })
        .method("Note", move |_: &Context, text: String| {
            tx.send(text).unwrap();
            Ok::<_, Status>(())
        });
    (svc, rx)
}

fn typed_calls_under_every_name_form(mode: Mode) {
    let server = builder(mode)
        .service(echo_service())
        .msgpack_rpc_default_service("echo.Echo")
        .bind("127.0.0.1:0")
        .unwrap();
    let mut c = MrpcClient::connect(server.local_addr());
    for (id, name) in [(1, "/echo.Echo/Say"), (2, "echo.Echo.Say"), (3, "Say")] {
        c.request(id, name, &(say(name),));
        let back: Say = c.ok(id);
        assert_eq!(back.text, name);
    }
    // A raw handler gets the params' MessagePack bytes and its answer,
    // being MessagePack, goes back as the result.
    c.request(4, "Raw", &("bytes",));
    assert_eq!(c.ok::<String>(4), "bytes");
    server.shutdown();
}

fn each_listener_may_name_its_own_default_service(mode: Mode) {
    let (calc, _) = service();
    let server = builder(mode)
        .service(calc)
        .service_on("127.0.0.1:0", echo_service())
        .msgpack_rpc_default_service("echo.Echo")
        // The first listener at that address: the main one.
        .msgpack_rpc_default_service_on("127.0.0.1:0", "calc.Calc")
        .bind("127.0.0.1:0")
        .unwrap();
    let mut main = MrpcClient::connect(server.local_addr());
    main.request(1, "Add", &(40, 2));
    assert_eq!(main.ok::<u32>(1), 42);
    main.request(2, "Say", &(say("not here"),));
    assert_eq!(main.err(2).0, Code::UNIMPLEMENTED.as_u32());
    // The other listener keeps the server-wide default.
    let echo_addr = server.addr_of("echo.Echo").unwrap();
    assert_ne!(echo_addr, server.local_addr());
    let mut other = MrpcClient::connect(echo_addr);
    other.request(1, "Say", &(say("server-wide"),));
    assert_eq!(other.ok::<Say>(1).text, "server-wide");
    server.shutdown();

    let refused = builder(mode)
        .service(echo_service())
        .msgpack_rpc_default_service_on("127.0.0.2:9", "echo.Echo")
        .bind("127.0.0.1:0");
    let Err(err) = refused else {
        panic!("no listener at that address, yet bind succeeded");
    };
    assert!(err.to_string().contains("no listener"), "{err}");
}

fn params_of_several_elements_are_the_request(mode: Mode) {
    let (svc, _) = service();
    let server = builder(mode).service(svc).bind("127.0.0.1:0").unwrap();
    let mut c = MrpcClient::connect(server.local_addr());
    c.request(1, "calc.Calc.Add", &(40u32, 2u32));
    assert_eq!(c.ok::<u32>(1), 42);
    server.shutdown();
}

fn errors_are_code_and_message(mode: Mode) {
    let (svc, _) = service();
    let server = builder(mode).service(svc).bind("127.0.0.1:0").unwrap();
    let mut c = MrpcClient::connect(server.local_addr());
    c.request(1, "calc.Calc.Nope", &(1,));
    let (code, msg) = c.err(1);
    assert_eq!(code, Code::UNIMPLEMENTED.as_u32());
    assert!(msg.contains("/calc.Calc/Nope"), "{msg}");
    c.request(2, "Add", &(1, 2));
    assert_eq!(c.err(2).0, Code::UNIMPLEMENTED.as_u32());
    c.request(3, "calc.Calc.Fail", &("no way",));
    assert_eq!(c.err(3), (Code::INVALID_ARGUMENT.as_u32(), "no way".into()));
    // A request the handler's type cannot decode.
    c.request(4, "calc.Calc.Add", &("x",));
    assert_eq!(c.err(4).0, Code::INVALID_ARGUMENT.as_u32());
    server.shutdown();
}

fn notifications_run_as_oneway(mode: Mode) {
    let (svc, notes) = service();
    let server = builder(mode).service(svc).bind("127.0.0.1:0").unwrap();
    let mut c = MrpcClient::connect(server.local_addr());
    c.notify("calc.Calc.Note", &("hello",));
    assert_eq!(notes.recv_timeout(WAIT).unwrap(), "hello");
    // Nothing was answered: the next answer is the next request's.
    c.request(9, "calc.Calc.Add", &(1u32, 1u32));
    assert_eq!(c.ok::<u32>(9), 2);
    server.shutdown();
}

/// A service whose every method is streaming, each reporting on `ran`
/// if it ever runs.
fn stream_service(ran: crossbeam_channel::Sender<&'static str>) -> Service {
    use syncrpc::server::{Incoming, RawSink, Sink};
    let (a, b, c, d) = (ran.clone(), ran.clone(), ran.clone(), ran);
    Service::new("st.S")
        .server_stream("Count", move |_: &Context, n: u32, sink: &Sink<u32>| {
            a.send("Count").unwrap();
            (0..n).try_for_each(|i| sink.send(&i))
        })
        .client_stream("Sum", move |_: &Context, msgs: Incoming<u32>| {
            b.send("Sum").unwrap();
            msgs.sum::<Result<u32, Status>>()
        })
        .bidi_stream(
            "Chat",
            move |_: &Context, msgs: Incoming<String>, sink: &Sink<String>| {
                c.send("Chat").unwrap();
                msgs.into_iter().try_for_each(|m| sink.send(&m?))
            },
        )
        .raw_server_stream(
            "Bytes",
            move |_: &Context, req: bytes::Bytes, sink: &RawSink| {
                d.send("Bytes").unwrap();
                sink.send(&req)
            },
        )
}

fn streaming_methods_are_unimplemented(mode: Mode) {
    let (ran, runs) = crossbeam_channel::unbounded();
    let (calc, _) = service();
    let server = builder(mode)
        .service(stream_service(ran))
        .service(calc)
        .bind("127.0.0.1:0")
        .unwrap();
    let mut c = MrpcClient::connect(server.local_addr());
    for (id, method) in [(1, "Count"), (2, "Sum"), (3, "Chat"), (4, "Bytes")] {
        c.request(id, &format!("st.S.{method}"), &(3u32,));
        let (code, msg) = c.err(id);
        assert_eq!(code, Code::UNIMPLEMENTED.as_u32(), "{msg}");
        assert_eq!(
            msg,
            format!("/st.S/{method} is a streaming method, and MessagePack-RPC has no streams")
        );
    }
    // A notification to a streaming method is dropped unanswered: the
    // next answer is the next request's.
    c.notify("st.S.Count", &(3u32,));
    c.request(5, "calc.Calc.Add", &(40u32, 2u32));
    assert_eq!(c.ok::<u32>(5), 42);
    // The shutdown waits for whatever runs: nothing streaming did.
    server.shutdown();
    assert_eq!(runs.try_iter().collect::<Vec<_>>(), Vec::<&str>::new());
}

fn concurrent_calls_on_one_connection(mode: Mode) {
    let (gate, g) = gate_service();
    let server = builder(mode)
        .service(gate)
        .service(echo_service())
        .workers(3)
        .bind("127.0.0.1:0")
        .unwrap();
    let mut c = MrpcClient::connect(server.local_addr());
    c.request(1, "gate.Gate.Block", &((),));
    c.request(2, "gate.Gate.Block", &((),));
    g.wait_started(2);
    // Both run at once; a third call is answered while they block.
    c.request(3, "echo.Echo.Say", &(say("meanwhile"),));
    assert_eq!(c.ok::<Say>(3).text, "meanwhile");
    g.release(2);
    let mut ids = [c.answer::<String>(), c.answer::<String>()].map(|a| {
        assert_eq!(a.3.as_deref(), Some("done"));
        a.1
    });
    ids.sort();
    assert_eq!(ids, [1, 2]);
    server.shutdown();
}

fn a_message_in_pieces_is_read(mode: Mode) {
    let server = builder(mode)
        .service(echo_service())
        .bind("127.0.0.1:0")
        .unwrap();
    let mut c = MrpcClient::connect(server.local_addr());
    let bytes = MrpcClient::request_bytes(5, "echo.Echo.Say", &(say("slowly"),));
    for b in &bytes {
        c.stream.write_all(std::slice::from_ref(b)).unwrap();
    }
    assert_eq!(c.ok::<Say>(5).text, "slowly");
    server.shutdown();
}

fn a_malformed_message_closes_after_earlier_answers(mode: Mode) {
    let server = builder(mode)
        .service(echo_service())
        .bind("127.0.0.1:0")
        .unwrap();
    let mut c = MrpcClient::connect(server.local_addr());
    let mut bytes = MrpcClient::request_bytes(1, "echo.Echo.Say", &(say("first"),));
    // A response sent to the server.
    bytes.extend_from_slice(&[0x94, 0x01, 0x01, 0xc0, 0xc0]);
    c.stream.write_all(&bytes).unwrap();
    assert_eq!(c.ok::<Say>(1).text, "first");
    c.expect_closed();
    server.shutdown();
}

fn a_method_name_as_a_bin_of_utf8_is_served(mode: Mode) {
    let server = builder(mode)
        .service(echo_service())
        .bind("127.0.0.1:0")
        .unwrap();
    let mut c = MrpcClient::connect(server.local_addr());
    // [0, 1, bin "echo.Echo.Say", [{"text": "as bytes"}]]
    let mut bytes = vec![0x94, 0x00, 0x01];
    rmp::encode::write_bin(&mut bytes, b"echo.Echo.Say").unwrap();
    bytes.extend_from_slice(&rmp_serde::to_vec_named(&(say("as bytes"),)).unwrap());
    c.stream.write_all(&bytes).unwrap();
    assert_eq!(c.ok::<Say>(1).text, "as bytes");
    // A bin that is not UTF-8 names nothing: a protocol error, after the
    // answers already produced.
    let mut bytes = MrpcClient::request_bytes(2, "echo.Echo.Say", &(say("first"),));
    bytes.extend_from_slice(&[0x94, 0x00, 0x03, 0xc4, 0x02, 0xff, 0xfe, 0x91, 0xc0]);
    c.stream.write_all(&bytes).unwrap();
    assert_eq!(c.ok::<Say>(2).text, "first");
    c.expect_closed();
    server.shutdown();
}

fn limits_apply(mode: Mode) {
    let server = builder(mode)
        .service(echo_service())
        .limits(Limits {
            max_body: 1024,
            max_meta: 1024,
            max_body_depth: 4,
            ..Limits::default()
        })
        .bind("127.0.0.1:0")
        .unwrap();
    let mut c = MrpcClient::connect(server.local_addr());
    c.request(1, "echo.Echo.Say", &(say(&"x".repeat(4096)),));
    c.expect_closed();
    let mut c = MrpcClient::connect(server.local_addr());
    // [0, 1, "m", [[[[[[1]]]]]]]: past the depth limit.
    c.stream
        .write_all(&[
            0x94, 0, 1, 0xa1, b'm', 0x91, 0x91, 0x91, 0x91, 0x91, 0x91, 1,
        ])
        .unwrap();
    c.expect_closed();
    server.shutdown();
}

fn idle_and_frame_timeouts_close_without_a_goaway(mode: Mode) {
    let server = builder(mode)
        .service(echo_service())
        .timeouts(Timeouts {
            idle: Duration::from_millis(200),
            frame: Duration::from_millis(200),
            shutdown: Duration::from_secs(2),
            ..Timeouts::default()
        })
        .bind("127.0.0.1:0")
        .unwrap();
    // Idle after a call: closed with no GOAWAY bytes, which this client
    // could not read.
    let mut c = MrpcClient::connect(server.local_addr());
    c.request(1, "echo.Echo.Say", &(say("then idle"),));
    assert_eq!(c.ok::<Say>(1).text, "then idle");
    c.expect_closed();
    // Stalled in the middle of a message.
    let mut c = MrpcClient::connect(server.local_addr());
    let bytes = MrpcClient::request_bytes(2, "echo.Echo.Say", &(say("never ends"),));
    c.stream.write_all(&bytes[..bytes.len() / 2]).unwrap();
    c.expect_closed();
    server.shutdown();
}

fn a_connection_refused_at_accept_is_closed_without_a_goaway(mode: Mode) {
    let server = builder(mode)
        .service(echo_service())
        .protocols(Protocols::MsgpackRpc)
        .limits(Limits {
            max_connections: 1,
            ..Limits::default()
        })
        .bind("127.0.0.1:0")
        .unwrap();
    let mut served = MrpcClient::connect(server.local_addr());
    served.request(1, "echo.Echo.Say", &(say("first"),));
    assert_eq!(served.ok::<Say>(1).text, "first");
    // Past the limit: no native GOAWAY, which this client could not read,
    // only the close.
    let mut refused = MrpcClient::connect(server.local_addr());
    refused.expect_closed();
    served.request(2, "echo.Echo.Say", &(say("still served"),));
    assert_eq!(served.ok::<Say>(2).text, "still served");
    server.shutdown();
}

fn both_protocols_share_a_listener_and_can_be_pinned(mode: Mode) {
    let server = builder(mode)
        .service(echo_service())
        .bind("127.0.0.1:0")
        .unwrap();
    let mut native = RawClient::connect(server.local_addr());
    native.call(1, "/echo.Echo/Say", &say("native"));
    assert_eq!(native.response().decode::<Say>().text, "native");
    let mut c = MrpcClient::connect(server.local_addr());
    c.request(1, "echo.Echo.Say", &(say("mrpc"),));
    assert_eq!(c.ok::<Say>(1).text, "mrpc");
    server.shutdown();

    let native_only = builder(mode)
        .service(echo_service())
        .protocols(Protocols::Native)
        .bind("127.0.0.1:0")
        .unwrap();
    let mut c = RawClient::connect(native_only.local_addr());
    c.write_bytes(&MrpcClient::request_bytes(1, "echo.Echo.Say", &(say("x"),)));
    let (code, message) = c.goaway();
    assert_eq!(code, Code::INTERNAL);
    assert!(message.contains("bad magic"), "{message}");
    native_only.shutdown();

    let mrpc_only = builder(mode)
        .service(echo_service())
        .protocols(Protocols::MsgpackRpc)
        .bind("127.0.0.1:0")
        .unwrap();
    let mut c = RawClient::connect(mrpc_only.local_addr());
    c.call(1, "/echo.Echo/Say", &say("native"));
    c.expect_closed();
    mrpc_only.shutdown();
}

fn a_listener_can_be_pinned_apart_from_the_others(mode: Mode) {
    let (calc, _) = service();
    let server = builder(mode)
        .service(echo_service())
        .service_on("127.0.0.1:0", calc)
        .protocols(Protocols::Native)
        .protocols_on("127.0.0.1:0", Protocols::MsgpackRpc)
        .bind("127.0.0.1:0")
        .unwrap();
    // The pin went to the first listener at that address, the main one.
    let mut c = MrpcClient::connect(server.local_addr());
    c.request(1, "echo.Echo.Say", &(say("pinned"),));
    assert_eq!(c.ok::<Say>(1).text, "pinned");
    let calc_addr = server.addr_of("calc.Calc").unwrap();
    assert_ne!(calc_addr, server.local_addr());
    let mut native = RawClient::connect(calc_addr);
    native.write_bytes(&MrpcClient::request_bytes(1, "calc.Calc.Add", &(1, 2)));
    assert_eq!(native.goaway().0, Code::INTERNAL);
    server.shutdown();

    let refused = builder(mode)
        .service(echo_service())
        .protocols_on("127.0.0.2:9", Protocols::MsgpackRpc)
        .bind("127.0.0.1:0");
    let Err(err) = refused else {
        panic!("no listener at the pinned address, yet bind succeeded");
    };
    assert!(err.to_string().contains("no listener"), "{err}");
}

fn shutdown_refuses_new_calls_and_closes_when_idle(mode: Mode) {
    let (gate, g) = gate_service();
    let server = builder(mode)
        .service(gate)
        .service(echo_service())
        .bind("127.0.0.1:0")
        .unwrap();
    let mut c = MrpcClient::connect(server.local_addr());
    c.request(1, "gate.Gate.Block", &((),));
    g.wait_started(1);
    let handle = server.handle();
    let stopper = thread::spawn(move || server.shutdown());
    // Calls are answered until the connection learns of the shutdown;
    // from then on they are refused.
    let mut id = 2;
    loop {
        c.request(id, "echo.Echo.Say", &(say("late"),));
        let (_, got, err, _) = c.answer::<Say>();
        assert_eq!(got, id);
        if let Some(err) = err {
            assert_eq!(err, (14, "server shutting down".to_owned()));
            break;
        }
        assert!(id < 100_000, "the shutdown never reached the connection");
        id += 1;
    }
    assert!(handle.is_shutting_down());
    g.release(1);
    assert_eq!(c.ok::<String>(1), "done");
    c.expect_closed();
    let report = stopper.join().unwrap();
    assert!(report.is_clean(), "{report:?}");
}

per_mode!(
    typed_calls_under_every_name_form,
    each_listener_may_name_its_own_default_service,
    params_of_several_elements_are_the_request,
    errors_are_code_and_message,
    notifications_run_as_oneway,
    streaming_methods_are_unimplemented,
    concurrent_calls_on_one_connection,
    a_message_in_pieces_is_read,
    a_malformed_message_closes_after_earlier_answers,
    a_method_name_as_a_bin_of_utf8_is_served,
    limits_apply,
    a_connection_refused_at_accept_is_closed_without_a_goaway,
    both_protocols_share_a_listener_and_can_be_pinned,
    idle_and_frame_timeouts_close_without_a_goaway,
    a_listener_can_be_pinned_apart_from_the_others,
    shutdown_refuses_new_calls_and_closes_when_idle,
);

mod rust_client {
    //! The Rust client with `ClientProtocol::MsgpackRpc`, against a server
    //! that speaks only MessagePack-RPC.

    use super::*;
    use syncrpc::client::ClientProtocol;
    use syncrpc::Client;

    fn client(addr: SocketAddr) -> Client {
        Client::builder()
            .addr(addr)
            .protocol(ClientProtocol::MsgpackRpc)
            .build()
            .unwrap()
    }

    fn calls_errors_and_oneways(mode: Mode) {
        let (svc, notes) = service();
        let server = builder(mode)
            .service(svc)
            .service(echo_service())
            .protocols(Protocols::MsgpackRpc)
            .bind("127.0.0.1:0")
            .unwrap();
        let client = client(server.local_addr());
        let ctx = Context::background();
        let back: Say = client.call(&ctx, "/echo.Echo/Say", &say("hi")).unwrap();
        assert_eq!(back.text, "hi");
        let sum: u32 = client.call(&ctx, "/calc.Calc/Add", &(40u32, 2u32)).unwrap();
        assert_eq!(sum, 42);
        let err = client
            .call::<_, ()>(&ctx, "/calc.Calc/Fail", &"refused")
            .unwrap_err();
        assert_eq!(err.code(), Code::INVALID_ARGUMENT, "{err}");
        assert!(err.to_string().contains("refused"), "{err}");
        let err = client
            .call::<_, ()>(&ctx, "/calc.Calc/Nope", &())
            .unwrap_err();
        assert_eq!(err.code(), Code::UNIMPLEMENTED, "{err}");
        client.oneway(&ctx, "/calc.Calc/Note", &"noted").unwrap();
        assert_eq!(notes.recv_timeout(WAIT).unwrap(), "noted");
        server.shutdown();
    }

    fn concurrent_calls_share_the_connection(mode: Mode) {
        let server = builder(mode)
            .service(echo_service())
            .protocols(Protocols::MsgpackRpc)
            .bind("127.0.0.1:0")
            .unwrap();
        let client = client(server.local_addr());
        thread::scope(|s| {
            for t in 0..4 {
                let client = &client;
                s.spawn(move || {
                    for i in 0..50 {
                        let text = format!("{t}-{i}");
                        let back: Say = client
                            .call(&Context::background(), "/echo.Echo/Say", &say(&text))
                            .unwrap();
                        assert_eq!(back.text, text);
                    }
                });
            }
        });
        server.shutdown();
    }

    fn deadlines_are_enforced_by_the_client(mode: Mode) {
        let (gate, g) = gate_service();
        let server = builder(mode)
            .service(gate)
            .protocols(Protocols::MsgpackRpc)
            .bind("127.0.0.1:0")
            .unwrap();
        let client = client(server.local_addr());
        let err = client
            .call_timeout::<_, String>(
                &Context::background(),
                "/gate.Gate/Block",
                &(),
                std::time::Duration::from_millis(50),
            )
            .unwrap_err();
        assert_eq!(err.code(), Code::DEADLINE_EXCEEDED, "{err}");
        g.release(1);
        server.shutdown();
    }

    per_mode!(
        calls_errors_and_oneways,
        concurrent_calls_share_the_connection,
        deadlines_are_enforced_by_the_client,
    );
}

//! A scripted fake server for the client tests, speaking the wire protocol
//! through the crate's codec: a listener on 127.0.0.1 port 0, a thread per
//! connection, a handler closure per request, and a channel of events
//! (connections, requests, CANCELs) that tests wait on instead of sleeping.

#![allow(dead_code)] // each test binary uses a different part

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use crossbeam_channel::{unbounded, Receiver, Sender};
use syncrpc::codec::{
    Decoded, Decoder, Encoder, Flags, FrameLimits, FrameType, GoawayMeta, RequestId, RequestMeta,
    ResponseMeta, Side,
};
use syncrpc::{Code, Metadata};

/// How long a test waits for an event before failing.
pub const EVENT_WAIT: Duration = Duration::from_secs(10);

pub fn init_logging() {
    let _ = env_logger::builder().is_test(true).try_init();
}

/// A request as the fake server read it.
#[derive(Clone, Debug)]
pub struct Request {
    pub conn: usize,
    pub id: RequestId,
    pub frame_type: FrameType,
    pub flags: Flags,
    pub method: String,
    pub timeout_ms: u32,
    pub trace_id: Option<String>,
    pub caller: Option<String>,
    pub md: Metadata,
    pub body: Bytes,
}

/// What happened on the fake server.
#[derive(Clone, Debug)]
pub enum Event {
    Connected(usize),
    Request(Request),
    Cancel {
        conn: usize,
        id: RequestId,
    },
    Pong {
        conn: usize,
        token: RequestId,
    },
    /// The client closed its side (or the connection broke).
    Closed(usize),
}

/// Writes frames to one connection; cheap to clone, usable from any thread.
#[derive(Clone)]
pub struct Responder {
    conn: usize,
    stream: Arc<Mutex<TcpStream>>,
}

impl Responder {
    pub fn conn(&self) -> usize {
        self.conn
    }

    pub fn raw(&self, bytes: &[u8]) {
        // The client may have gone: a failed write is the test's business
        // to notice through the client, not the fake server's.
        let _ = self.stream.lock().unwrap().write_all(bytes);
    }

    /// A RESPONSE with the request's flags.
    pub fn reply(&self, req: &Request, code: Code, message: Option<&str>, body: &[u8]) {
        self.reply_flags(req.id, req.flags, code, message, body);
    }

    pub fn reply_flags(
        &self,
        id: RequestId,
        flags: Flags,
        code: Code,
        message: Option<&str>,
        body: &[u8],
    ) {
        let meta = ResponseMeta {
            message,
            ..ResponseMeta::new(code)
        };
        self.reply_meta(id, flags, &meta, body);
    }

    pub fn reply_meta(&self, id: RequestId, flags: Flags, meta: &ResponseMeta<'_>, body: &[u8]) {
        let mut enc = Encoder::new();
        enc.response(id, flags, meta, body).unwrap();
        self.raw(enc.as_slice());
    }

    /// Echoes the request body back, OK.
    pub fn echo(&self, req: &Request) {
        self.reply(req, Code::OK, None, &req.body);
    }

    pub fn goaway(&self, code: Code, message: &str) {
        let mut enc = Encoder::new();
        enc.goaway(&GoawayMeta::new(code, message)).unwrap();
        self.raw(enc.as_slice());
    }

    pub fn ping(&self, token: u32) {
        let mut enc = Encoder::new();
        enc.ping(RequestId(token));
        self.raw(enc.as_slice());
    }

    pub fn close(&self) {
        let _ = self.stream.lock().unwrap().shutdown(Shutdown::Both);
    }
}

pub type Handler = Arc<dyn Fn(&Request, &Responder) + Send + Sync>;

struct Shared {
    handler: Handler,
    events: Sender<Event>,
    conns: Mutex<Vec<Responder>>,
    threads: Mutex<Vec<JoinHandle<()>>>,
    stopping: AtomicBool,
    /// After GOAWAY: requests are answered UNAVAILABLE, unrun.
    draining: AtomicBool,
    /// Sent to every new connection on accept.
    greet_with_ping: AtomicBool,
}

/// The fake server. Dropping it kills it.
pub struct FakeServer {
    addr: SocketAddr,
    shared: Arc<Shared>,
    acceptor: Option<JoinHandle<()>>,
    events: Receiver<Event>,
}

impl FakeServer {
    /// Starts on 127.0.0.1, port 0.
    pub fn start(handler: impl Fn(&Request, &Responder) + Send + Sync + 'static) -> FakeServer {
        FakeServer::start_on("127.0.0.1:0".parse().unwrap(), Arc::new(handler))
    }

    /// Starts on `addr` (to restart on a port used before).
    pub fn start_on(addr: SocketAddr, handler: Handler) -> FakeServer {
        let listener = TcpListener::bind(addr).expect("bind the fake server");
        let addr = listener.local_addr().unwrap();
        let (tx, rx) = unbounded();
        let shared = Arc::new(Shared {
            handler,
            events: tx,
            conns: Mutex::new(Vec::new()),
            threads: Mutex::new(Vec::new()),
            stopping: AtomicBool::new(false),
            draining: AtomicBool::new(false),
            greet_with_ping: AtomicBool::new(false),
        });
        let s = shared.clone();
        let acceptor = thread::Builder::new()
            .name("fake-accept".into())
            .spawn(move || accept_loop(listener, s))
            .unwrap();
        FakeServer {
            addr,
            shared,
            acceptor: Some(acceptor),
            events: rx,
        }
    }

    /// An echo server.
    pub fn echo() -> FakeServer {
        FakeServer::start(|req, r| {
            if req.frame_type == FrameType::Request {
                r.echo(req)
            }
        })
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn handler(&self) -> Handler {
        self.shared.handler.clone()
    }

    pub fn events(&self) -> &Receiver<Event> {
        &self.events
    }

    /// Sends a PING (token 77) on every connection accepted from now on.
    pub fn greet_with_ping(&self) {
        self.shared.greet_with_ping.store(true, Ordering::SeqCst);
    }

    /// Waits for the next event matching `f`, skipping others.
    #[track_caller]
    pub fn wait_for<T>(&self, what: &str, mut f: impl FnMut(&Event) -> Option<T>) -> T {
        let deadline = std::time::Instant::now() + EVENT_WAIT;
        loop {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            match self.events.recv_timeout(left) {
                Ok(ev) => {
                    if let Some(v) = f(&ev) {
                        return v;
                    }
                }
                Err(_) => panic!("fake server {}: no {what} within {EVENT_WAIT:?}", self.addr),
            }
        }
    }

    #[track_caller]
    pub fn wait_request(&self) -> Request {
        self.wait_for("request", |ev| match ev {
            Event::Request(r) => Some(r.clone()),
            _ => None,
        })
    }

    /// Connections accepted so far.
    pub fn connections(&self) -> usize {
        self.shared.conns.lock().unwrap().len()
    }

    /// Stops accepting (connects are refused from now on), sends GOAWAY
    /// UNAVAILABLE on every connection and answers requests read after it
    /// UNAVAILABLE; connections stay open until the client closes them.
    pub fn goaway(&mut self) {
        self.shared.draining.store(true, Ordering::SeqCst);
        self.stop_accepting();
        for c in self.shared.conns.lock().unwrap().iter() {
            c.goaway(Code::UNAVAILABLE, "server shutting down");
        }
    }

    /// Dies: stops accepting and shuts every connection down at once.
    pub fn kill(&mut self) {
        self.stop_accepting();
        for c in self.shared.conns.lock().unwrap().iter() {
            c.close();
        }
        self.join_connections();
    }

    fn stop_accepting(&mut self) {
        if let Some(acceptor) = self.acceptor.take() {
            self.shared.stopping.store(true, Ordering::SeqCst);
            // Wake the blocking accept; the loop then drops the listener.
            let _ = TcpStream::connect_timeout(&self.addr, Duration::from_secs(5));
            acceptor.join().unwrap();
        }
    }

    fn join_connections(&self) {
        let threads: Vec<_> = std::mem::take(&mut *self.shared.threads.lock().unwrap());
        for t in threads {
            t.join().unwrap();
        }
    }
}

impl Drop for FakeServer {
    fn drop(&mut self) {
        self.kill();
    }
}

fn accept_loop(listener: TcpListener, shared: Arc<Shared>) {
    for stream in listener.incoming() {
        if shared.stopping.load(Ordering::SeqCst) {
            return;
        }
        let Ok(stream) = stream else { continue };
        stream.set_nodelay(true).unwrap();
        let responder = Responder {
            conn: 0,
            stream: Arc::new(Mutex::new(stream.try_clone().unwrap())),
        };
        let conn = {
            let mut conns = shared.conns.lock().unwrap();
            let conn = conns.len();
            conns.push(Responder {
                conn,
                ..responder.clone()
            });
            conn
        };
        let responder = Responder { conn, ..responder };
        let _ = shared.events.send(Event::Connected(conn));
        if shared.greet_with_ping.load(Ordering::SeqCst) {
            responder.ping(77);
        }
        let s = shared.clone();
        let t = thread::Builder::new()
            .name(format!("fake-conn-{conn}"))
            .spawn(move || serve(stream, responder, s))
            .unwrap();
        shared.threads.lock().unwrap().push(t);
    }
}

fn serve(mut stream: TcpStream, responder: Responder, shared: Arc<Shared>) {
    let conn = responder.conn;
    let mut decoder = Decoder::new(Side::Server, FrameLimits::default());
    let mut buf = BytesMut::new();
    let mut chunk = vec![0u8; 64 * 1024];
    loop {
        let n = match stream.read(&mut chunk) {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        buf.extend_from_slice(&chunk[..n]);
        // Requests read together are answered in reverse order, so that
        // responses come back out of order whenever the client pipelines.
        let mut batch = Vec::new();
        loop {
            match decoder.decode(&mut buf) {
                Ok(Some(Decoded::Frame(f))) => match f.header.frame_type {
                    FrameType::Request | FrameType::Oneway => {
                        let meta = RequestMeta::decode(&f.meta).expect("request meta");
                        batch.push(Request {
                            conn,
                            id: f.header.request_id,
                            frame_type: f.header.frame_type,
                            flags: f.header.flags,
                            method: meta.method.to_owned(),
                            timeout_ms: meta.timeout_ms,
                            trace_id: meta.trace_id.map(str::to_owned),
                            caller: meta.caller.map(str::to_owned),
                            md: meta.md.clone(),
                            body: f.body.clone(),
                        });
                    }
                    FrameType::Cancel => {
                        let _ = shared.events.send(Event::Cancel {
                            conn,
                            id: f.header.request_id,
                        });
                    }
                    FrameType::Ping => {
                        let mut enc = Encoder::new();
                        enc.pong(f.header.request_id);
                        responder.raw(enc.as_slice());
                    }
                    FrameType::Pong => {
                        let _ = shared.events.send(Event::Pong {
                            conn,
                            token: f.header.request_id,
                        });
                    }
                    other => panic!("fake server got {other}"),
                },
                Ok(Some(Decoded::BodyTooLarge { header, .. })) => {
                    panic!("fake server got an oversized body: {header:?}")
                }
                Ok(None) => break,
                Err(e) => panic!("fake server: protocol error from the client: {e}"),
            }
        }
        for req in batch.into_iter().rev() {
            let _ = shared.events.send(Event::Request(req.clone()));
            if shared.draining.load(Ordering::SeqCst) {
                if req.frame_type == FrameType::Request {
                    responder.reply(&req, Code::UNAVAILABLE, Some("draining"), &[]);
                }
                continue;
            }
            (shared.handler)(&req, &responder);
        }
    }
    let _ = shared.events.send(Event::Closed(conn));
}

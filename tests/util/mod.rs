//! Shared helpers for the server tests: a raw protocol client built on the
//! codec, servers on port 0, logging, and the list of server modes every
//! behaviour test runs against.
#![allow(dead_code)]

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use serde::de::DeserializeOwned;
use serde::Serialize;
use syncrpc::codec::{
    decode_body, encode_body, Decoded, Decoder, Encoder, Flags, Frame, FrameLimits, FrameType,
    GoawayMeta, RequestId, RequestMeta, ResponseMeta, Side,
};
use syncrpc::server::{Limits, ServerConfig, Timeouts};
use syncrpc::{Code, Metadata, Server, ServerBuilder};

/// How long any single wait in a test may take before it fails.
pub const WAIT: Duration = Duration::from_secs(10);

/// The server's I/O modes. Every behaviour test runs once per mode.
pub use syncrpc::server::Mode;

/// Instantiates each listed `fn name(mode: Mode)` as one `#[test]` per
/// mode: `event_mode::name` and `thread_mode::name`.
#[macro_export]
macro_rules! per_mode {
    ($($name:ident),* $(,)?) => {
        mod event_mode {
            $(
                #[test]
                fn $name() {
                    $crate::util::init_logging();
                    super::$name($crate::util::Mode::Event)
                }
            )*
        }
        mod thread_mode {
            $(
                #[test]
                fn $name() {
                    $crate::util::init_logging();
                    super::$name($crate::util::Mode::Thread)
                }
            )*
        }
    };
}

pub fn init_logging() {
    let _ = env_logger::builder().is_test(true).try_init();
}

/// A builder for `mode` with settings that keep tests quick: two workers,
/// and a short shutdown so a test that leaves a client connected does not
/// wait ten seconds.
pub fn builder(mode: Mode) -> ServerBuilder {
    Server::builder().config(ServerConfig {
        workers: 2,
        mode,
        timeouts: Timeouts {
            shutdown: Duration::from_secs(2),
            ..Timeouts::default()
        },
        ..ServerConfig::default()
    })
}

/// Limits with everything at its default.
pub fn limits() -> Limits {
    Limits::default()
}

/// The response a raw client read.
#[derive(Debug, Clone)]
pub struct Resp {
    pub id: u32,
    pub code: Code,
    pub message: String,
    pub trace_id: Option<String>,
    pub md: Metadata,
    pub flags: Flags,
    pub body: Bytes,
}

impl Resp {
    #[track_caller]
    pub fn decode<T: DeserializeOwned>(&self) -> T {
        assert_eq!(self.code, Code::OK, "not OK: {self:?}");
        decode_body(&self.body, 128).expect("decodable body")
    }

    #[track_caller]
    pub fn expect_code(&self, code: Code, message_part: &str) -> &Self {
        assert_eq!(self.code, code, "{self:?}");
        assert!(
            self.message.contains(message_part),
            "message {:?} does not contain {message_part:?}",
            self.message
        );
        self
    }
}

/// A protocol client that writes and reads frames by hand.
pub struct RawClient {
    pub stream: TcpStream,
    dec: Decoder,
    buf: BytesMut,
    pub enc: Encoder,
}

pub fn encode<T: Serialize>(value: &T) -> Vec<u8> {
    let mut out = Vec::new();
    encode_body(value, &mut out).unwrap();
    out
}

impl RawClient {
    #[track_caller]
    pub fn connect(addr: SocketAddr) -> RawClient {
        RawClient::connect_stream(TcpStream::connect(addr).expect("connect"))
    }

    /// A client over a socket connected elsewhere.
    #[track_caller]
    pub fn connect_stream(stream: TcpStream) -> RawClient {
        stream.set_read_timeout(Some(WAIT)).unwrap();
        stream.set_write_timeout(Some(WAIT)).unwrap();
        stream.set_nodelay(true).unwrap();
        RawClient {
            stream,
            dec: Decoder::new(
                Side::Client,
                FrameLimits {
                    max_body: 256 * 1024 * 1024,
                    max_meta: 64 * 1024,
                },
            ),
            buf: BytesMut::with_capacity(64 * 1024),
            enc: Encoder::new(),
        }
    }

    /// Appends a REQUEST to the pending output without sending it.
    pub fn push_request(&mut self, id: u32, meta: &RequestMeta<'_>, flags: Flags, body: &[u8]) {
        self.enc
            .request(RequestId(id), flags, meta, body)
            .expect("encodable");
    }

    pub fn push_oneway(&mut self, id: u32, meta: &RequestMeta<'_>, flags: Flags, body: &[u8]) {
        self.enc
            .oneway(RequestId(id), flags, meta, body)
            .expect("encodable");
    }

    /// Sends everything pushed so far in one write.
    #[track_caller]
    pub fn flush(&mut self) {
        let bytes = self.enc.split();
        self.stream.write_all(&bytes).expect("write");
    }

    /// Sends a typed REQUEST for `method`.
    #[track_caller]
    pub fn call<T: Serialize>(&mut self, id: u32, method: &str, body: &T) {
        self.push_request(
            id,
            &RequestMeta::new(method),
            Flags::default(),
            &encode(body),
        );
        self.flush();
    }

    /// Sends a raw-bytes REQUEST for `method`.
    #[track_caller]
    pub fn call_raw(&mut self, id: u32, method: &str, body: &[u8]) {
        let flags = Flags::new(
            syncrpc::codec::Compression::None,
            syncrpc::codec::Encoding::Raw,
        );
        self.push_request(id, &RequestMeta::new(method), flags, body);
        self.flush();
    }

    #[track_caller]
    pub fn call_meta(&mut self, id: u32, meta: &RequestMeta<'_>, flags: Flags, body: &[u8]) {
        self.push_request(id, meta, flags, body);
        self.flush();
    }

    #[track_caller]
    pub fn cancel(&mut self, id: u32) {
        self.enc.cancel(RequestId(id));
        self.flush();
    }

    #[track_caller]
    pub fn ping(&mut self, token: u32) {
        self.enc.ping(RequestId(token));
        self.flush();
    }

    #[track_caller]
    pub fn write_bytes(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).expect("write");
    }

    /// The next frame, or an error if the connection ended or timed out.
    pub fn try_frame(&mut self) -> io::Result<Frame> {
        loop {
            match self.dec.decode(&mut self.buf) {
                Ok(Some(Decoded::Frame(f))) => return Ok(f),
                Ok(Some(Decoded::BodyTooLarge { header, .. })) => {
                    return Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        format!("oversized frame {header:?}"),
                    ))
                }
                Ok(None) => {}
                Err(e) => return Err(io::Error::new(io::ErrorKind::InvalidData, e.to_string())),
            }
            let mut chunk = [0u8; 64 * 1024];
            let n = self.stream.read(&mut chunk)?;
            if n == 0 {
                return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "closed"));
            }
            self.buf.extend_from_slice(&chunk[..n]);
        }
    }

    #[track_caller]
    pub fn frame(&mut self) -> Frame {
        self.try_frame().expect("a frame from the server")
    }

    /// The next RESPONSE (panics on any other frame).
    #[track_caller]
    pub fn response(&mut self) -> Resp {
        let f = self.frame();
        assert_eq!(f.frame_type(), FrameType::Response, "{f:?}");
        to_resp(&f)
    }

    /// The next frame, which must be a GOAWAY; returns its code and message.
    #[track_caller]
    pub fn goaway(&mut self) -> (Code, String) {
        let f = self.frame();
        assert_eq!(f.frame_type(), FrameType::Goaway, "{f:?}");
        let meta = GoawayMeta::decode(&f.meta).expect("GOAWAY meta");
        (meta.code(), meta.message.to_owned())
    }

    /// Asserts the server closes the connection (EOF or reset) with no
    /// further frame.
    #[track_caller]
    pub fn expect_closed(&mut self) {
        match self.try_frame() {
            Ok(f) => panic!("expected the connection to close, got {f:?}"),
            Err(e) => assert!(
                matches!(
                    e.kind(),
                    io::ErrorKind::UnexpectedEof
                        | io::ErrorKind::ConnectionReset
                        | io::ErrorKind::ConnectionAborted
                ),
                "expected close, got {e}"
            ),
        }
    }

    /// Asserts nothing arrives within `d` (for "the server stopped reading").
    #[track_caller]
    pub fn expect_silence(&mut self, d: Duration) {
        self.stream.set_read_timeout(Some(d)).unwrap();
        let r = self.try_frame();
        self.stream.set_read_timeout(Some(WAIT)).unwrap();
        match r {
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) => {}
            other => panic!("expected silence, got {other:?}"),
        }
    }
}

#[track_caller]
pub fn to_resp(f: &Frame) -> Resp {
    let meta = ResponseMeta::decode(&f.meta).expect("response meta");
    Resp {
        id: f.request_id().0,
        code: meta.code(),
        message: meta.message.unwrap_or_default().to_owned(),
        trace_id: meta.trace_id.map(str::to_owned),
        md: meta.md.clone(),
        flags: f.header.flags,
        body: f.body.clone(),
    }
}

/// Polls `cond` until it holds or `WAIT` passes; for counts the server
/// updates asynchronously (stats), where no event says when.
#[track_caller]
pub fn eventually(what: &str, mut cond: impl FnMut() -> bool) {
    let until = Instant::now() + WAIT;
    while !cond() {
        assert!(Instant::now() < until, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(2));
    }
}

/// The process's resident set size, in bytes.
pub fn rss_bytes() -> usize {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<usize>().ok())
        .map_or(0, |kb| kb * 1024)
}

/// The message the echo services use.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct Say {
    pub text: String,
}

/// `echo.Echo` with `Say` (typed) and `Raw` (raw bytes).
pub fn echo_service() -> syncrpc::Service {
    syncrpc::Service::new("echo.Echo")
        .method("Say", |_ctx: &syncrpc::Context, req: Say| {
            Ok::<_, syncrpc::Status>(req)
        })
        .raw_method("Raw", |_ctx: &syncrpc::Context, body: Bytes| {
            Ok::<_, syncrpc::Status>(body)
        })
}

pub fn say(text: &str) -> Say {
    Say {
        text: text.to_owned(),
    }
}

/// A service whose handlers block, count, panic or wait for cancellation,
/// under test control.
pub struct Gate {
    /// Receives one message per `Block`/`Wait` handler that started.
    pub started: crossbeam_channel::Receiver<()>,
    release: crossbeam_channel::Sender<()>,
    /// Receives the cancel reason each `Wait` handler saw.
    pub cancelled: crossbeam_channel::Receiver<Option<syncrpc::CancelReason>>,
    /// Calls of `Count`.
    pub calls: std::sync::Arc<std::sync::atomic::AtomicUsize>,
}

impl Gate {
    /// Lets `n` blocked handlers return.
    pub fn release(&self, n: usize) {
        for _ in 0..n {
            self.release.send(()).unwrap();
        }
    }

    #[track_caller]
    pub fn wait_started(&self, n: usize) {
        for _ in 0..n {
            self.started
                .recv_timeout(WAIT)
                .expect("a handler should have started");
        }
    }

    pub fn calls(&self) -> usize {
        self.calls.load(std::sync::atomic::Ordering::SeqCst)
    }
}

/// `gate.Gate`: `Block` (typed; waits for a release), `BlockRaw` (the
/// same, raw), `Wait` (waits until its context is cancelled), `Count`,
/// `Panic`, and `Big` (raw; answers that many bytes).
pub fn gate_service() -> (syncrpc::Service, Gate) {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;
    use syncrpc::{Context, Status};
    let (started_tx, started) = crossbeam_channel::unbounded();
    let (release, release_rx) = crossbeam_channel::unbounded::<()>();
    let (cancel_tx, cancelled) = crossbeam_channel::unbounded();
    let calls = Arc::new(AtomicUsize::new(0));
    let (s1, r1) = (started_tx.clone(), release_rx.clone());
    let (s2, r2) = (started_tx.clone(), release_rx);
    let c = calls.clone();
    let svc = syncrpc::Service::new("gate.Gate")
        .method("Block", move |_: &Context, _: ()| {
            s1.send(()).unwrap();
            r1.recv_timeout(WAIT)
                .map_err(|_| Status::aborted("never released"))?;
            Ok::<_, Status>("done")
        })
        .raw_method("BlockRaw", move |_: &Context, body: Bytes| {
            s2.send(()).unwrap();
            r2.recv_timeout(WAIT)
                .map_err(|_| Status::aborted("never released"))?;
            Ok::<_, Status>(body)
        })
        .method("Wait", move |ctx: &Context, _: ()| {
            started_tx.send(()).unwrap();
            ctx.wait_cancelled(WAIT);
            cancel_tx.send(ctx.cancel_reason()).unwrap();
            Ok::<_, Status>("late")
        })
        .method("Count", move |_: &Context, _: ()| {
            c.fetch_add(1, Ordering::SeqCst);
            Ok::<_, Status>(())
        })
        .method("Panic", |_: &Context, _: ()| -> Result<(), Status> {
            panic!("handler blew up")
        })
        .raw_method("Big", |_: &Context, body: Bytes| {
            let n = u32::from_be_bytes(
                body[..4]
                    .try_into()
                    .map_err(|_| Status::invalid_argument("4 bytes"))?,
            );
            Ok::<_, Status>(Bytes::from(vec![7u8; n as usize]))
        });
    (
        svc,
        Gate {
            started,
            release,
            cancelled,
            calls,
        },
    )
}

impl RawClient {
    /// Closes the connection with a reset (SO_LINGER 0), as a crashed or
    /// impatient client does: the server sees the connection fail rather
    /// than a half-close it must still answer.
    pub fn abort(self) {
        socket2::SockRef::from(&self.stream)
            .set_linger(Some(Duration::ZERO))
            .unwrap();
        drop(self);
    }
}

/// Names of this process's threads that start with `prefix`, as Linux
/// shows them (cut to 15 bytes).
pub fn threads_named(prefix: &str) -> Vec<String> {
    let mut names = Vec::new();
    let Ok(tasks) = std::fs::read_dir("/proc/self/task") else {
        return names;
    };
    for task in tasks.flatten() {
        if let Ok(comm) = std::fs::read_to_string(task.path().join("comm")) {
            let comm = comm.trim_end();
            if comm.starts_with(prefix) {
                names.push(comm.to_owned());
            }
        }
    }
    names
}

/// Waits until no thread whose name starts with `prefix` is left (a
/// joined thread may linger in /proc for a moment).
#[track_caller]
pub fn no_threads_left(prefix: &str) {
    let until = Instant::now() + WAIT;
    loop {
        let left = threads_named(prefix);
        if left.is_empty() {
            return;
        }
        assert!(Instant::now() < until, "threads left running: {left:?}");
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// What one load connection saw.
#[derive(Debug, Default)]
pub struct ConnLoad {
    /// Requests sent, with ids 0..sent.
    pub sent: u32,
    /// The code of each answer, by id.
    pub answers: Vec<Vec<Code>>,
    /// Answers for ids never sent.
    pub strays: Vec<u32>,
    pub goaway: Option<Code>,
    /// How the connection ended, if not by the server closing it.
    pub error: Option<String>,
}

/// The outcome of a [`Load`]: every connection's.
#[derive(Debug)]
pub struct LoadOutcome {
    pub conns: Vec<ConnLoad>,
}

impl LoadOutcome {
    /// Asserts that every request sent got exactly one answer, OK or
    /// UNAVAILABLE, that every connection saw GOAWAY UNAVAILABLE and was
    /// then closed by the server, and returns the (OK, UNAVAILABLE) counts.
    #[track_caller]
    pub fn assert_no_loss(&self) -> (u64, u64) {
        let (mut ok, mut unavailable) = (0, 0);
        for (i, c) in self.conns.iter().enumerate() {
            assert!(c.error.is_none(), "connection {i}: {:?}", c.error);
            assert_eq!(c.goaway, Some(Code::UNAVAILABLE), "connection {i}");
            assert!(c.strays.is_empty(), "connection {i}: strays {:?}", c.strays);
            for (id, codes) in c.answers.iter().enumerate().take(c.sent as usize) {
                match codes.as_slice() {
                    [Code::OK] => ok += 1,
                    [Code::UNAVAILABLE] => unavailable += 1,
                    other => panic!("connection {i}, request {id}: answered {other:?}"),
                }
            }
        }
        (ok, unavailable)
    }

    pub fn sent(&self) -> u64 {
        self.conns.iter().map(|c| u64::from(c.sent)).sum()
    }
}

/// Clients sending requests continuously, as well-behaved clients do: each
/// connection has a sending thread (at most `window` requests in flight)
/// and a receiving thread; on GOAWAY the sender stops and half-closes,
/// and the receiver reads every answer until the server closes.
pub struct Load {
    threads: Vec<std::thread::JoinHandle<ConnLoad>>,
    /// Receives once, when the answers received reach `midway`.
    pub midway: crossbeam_channel::Receiver<()>,
}

impl Load {
    #[track_caller]
    pub fn start(addr: SocketAddr, conns: usize, window: usize, method: &str, midway: u64) -> Load {
        use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
        use std::sync::Arc;
        let (midway_tx, midway_rx) = crossbeam_channel::bounded(1);
        let received = Arc::new(AtomicU64::new(0));
        let mut threads = Vec::new();
        for _ in 0..conns {
            let c = RawClient::connect(addr);
            let mut out = c.stream.try_clone().expect("clone");
            let stop = Arc::new(AtomicBool::new(false));
            let sent = Arc::new(AtomicU32::new(0));
            let (token_tx, token_rx) = crossbeam_channel::bounded::<()>(window);
            for _ in 0..window {
                token_tx.send(()).unwrap();
            }
            let (stop2, sent2, method) = (stop.clone(), sent.clone(), method.to_owned());
            let sender = std::thread::spawn(move || {
                let mut enc = Encoder::new();
                let body = encode(&());
                let mut id = 0u32;
                // A token per request in flight; none left once the
                // receiver has gone.
                while token_rx.recv().is_ok() && !stop2.load(Ordering::SeqCst) {
                    enc.request(
                        RequestId(id),
                        Flags::default(),
                        &RequestMeta::new(&method),
                        &body,
                    )
                    .unwrap();
                    let bytes = enc.split();
                    if out.write_all(&bytes).is_err() {
                        break;
                    }
                    id += 1;
                    sent2.store(id, Ordering::SeqCst);
                }
                let _ = out.shutdown(std::net::Shutdown::Write);
            });
            let (received, midway_tx) = (received.clone(), midway_tx.clone());
            threads.push(std::thread::spawn(move || {
                let mut c = c;
                let mut load = ConnLoad::default();
                loop {
                    let f = match c.try_frame() {
                        Ok(f) => f,
                        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => break,
                        Err(e) => {
                            load.error = Some(e.to_string());
                            break;
                        }
                    };
                    match f.frame_type() {
                        FrameType::Response => {
                            let r = to_resp(&f);
                            let id = r.id as usize;
                            if id >= load.answers.len() {
                                load.answers.resize(id + 1, Vec::new());
                            }
                            load.answers[id].push(r.code);
                            let _ = token_tx.try_send(());
                            if received.fetch_add(1, Ordering::SeqCst) + 1 == midway {
                                let _ = midway_tx.try_send(());
                            }
                        }
                        FrameType::Goaway => {
                            let meta = GoawayMeta::decode(&f.meta).expect("GOAWAY meta");
                            load.goaway = Some(meta.code());
                            stop.store(true, Ordering::SeqCst);
                        }
                        other => {
                            load.error = Some(format!("unexpected {other}"));
                            break;
                        }
                    }
                }
                stop.store(true, Ordering::SeqCst);
                drop(token_tx);
                sender.join().expect("sender");
                load.sent = sent.load(Ordering::SeqCst);
                if load.answers.len() < load.sent as usize {
                    load.answers.resize(load.sent as usize, Vec::new());
                }
                for (id, codes) in load.answers.iter().enumerate() {
                    if id >= load.sent as usize && !codes.is_empty() {
                        load.strays.push(id as u32);
                    }
                }
                load
            }));
        }
        Load {
            threads,
            midway: midway_rx,
        }
    }

    /// Waits for every connection to end.
    pub fn finish(self) -> LoadOutcome {
        LoadOutcome {
            conns: self
                .threads
                .into_iter()
                .map(|t| t.join().expect("load thread"))
                .collect(),
        }
    }
}

/// `examples/echo_server` as a child process; killed when dropped.
pub struct EchoExample {
    /// The process.
    pub child: std::process::Child,
    /// Where it listens, as it logged it.
    pub addr: String,
}

impl Drop for EchoExample {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The echo example's binary, which `cargo test` builds next to the test
/// binaries.
pub fn echo_example_path() -> std::path::PathBuf {
    let exe = std::env::current_exe().expect("test binary path");
    // target/debug/deps/TEST-HASH -> target/debug/examples/
    exe.parent()
        .and_then(std::path::Path::parent)
        .expect("target dir")
        .join("examples")
        .join("echo_server")
}

/// Starts the echo example on a free port with `args` added, and waits
/// for the address it logs.
#[track_caller]
pub fn start_echo_example(args: &[&str]) -> EchoExample {
    use std::io::BufRead;
    use std::process::{Command, Stdio};

    let mut child = Command::new(echo_example_path())
        .args(["--addr", "127.0.0.1:0"])
        .args(args)
        .env("RUST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start examples/echo_server (built by cargo test)");
    let stderr = child.stderr.take().expect("stderr");
    let (tx, rx) = std::sync::mpsc::channel();
    // Reads the log to its end, so that the example never blocks on it.
    std::thread::spawn(move || {
        for line in io::BufReader::new(stderr).lines().map_while(Result::ok) {
            if let Some(rest) = line.split("listening on ").nth(1) {
                let addr = rest.split_whitespace().next().unwrap_or("").to_owned();
                let _ = tx.send(addr);
            }
        }
    });
    let mut example = EchoExample {
        child,
        addr: String::new(),
    };
    example.addr = rx
        .recv_timeout(WAIT)
        .expect("the echo example logs its address");
    example
}

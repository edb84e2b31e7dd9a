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

/// The I/O modes of the server. Every behaviour test runs once per mode.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// mio event loops.
    Event,
}

/// Instantiates each listed `fn name(mode: Mode)` as one `#[test]` per mode.
#[macro_export]
macro_rules! per_mode {
    ($($name:ident),* $(,)?) => {
        mod event {
            $(
                #[test]
                fn $name() {
                    $crate::util::init_logging();
                    super::$name($crate::util::Mode::Event)
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
    match mode {
        Mode::Event => Server::builder().config(ServerConfig {
            workers: 2,
            timeouts: Timeouts {
                shutdown: Duration::from_secs(2),
                ..Timeouts::default()
            },
            ..ServerConfig::default()
        }),
    }
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
    enc: Encoder,
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

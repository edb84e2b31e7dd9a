//! The client's streams against a scripted server: the test plays the
//! server frame by frame (a listener on 127.0.0.1 port 0, one reader
//! thread per connection reporting every frame on a channel), so each
//! rule of the stream protocol can be broken or honoured on purpose.
//! Covered: ordering, window arithmetic and grants, blocking sends,
//! cancellation by drop, context and deadline, broken connections,
//! GOAWAY, flow-control violations and frames for unknown ids.

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use crossbeam_channel::{unbounded, Receiver, RecvTimeoutError, Sender};
use serde::{Deserialize, Serialize};
use syncrpc::client::{CallOptions, Client};
use syncrpc::codec::{
    Compression, Decoded, Decoder, Encoder, Encoding, Flags, FrameLimits, FrameType, GoawayMeta,
    RequestId, RequestMeta, ResponseMeta, Side, WindowMeta, MAX_WINDOW,
};
use syncrpc::flow_control::{GRANT_THRESHOLD, INITIAL_WINDOW};
use syncrpc::{Code, Context, ErrorKind, Execution, Metadata, TraceId};

/// How long a test waits for something that must happen.
const WAIT: Duration = Duration::from_secs(10);

fn init_logging() {
    let _ = env_logger::builder().is_test(true).try_init();
}

/// A REQUEST as the scripted server read it.
#[derive(Clone, Debug)]
struct Opened {
    conn: usize,
    id: u32,
    flags: Flags,
    method: String,
    stream: bool,
    timeout_ms: u32,
    trace_id: Option<String>,
    md: Metadata,
    body: Bytes,
}

/// A frame (or the end of a connection) as the scripted server saw it.
#[derive(Clone, Debug)]
enum Ev {
    Request(Opened),
    Message { id: u32, flags: Flags, body: Bytes },
    End { id: u32 },
    Window { id: u32, bytes: u32 },
    Cancel { id: u32 },
    Closed { conn: usize },
}

/// Writes frames to one connection.
#[derive(Clone)]
struct Wire(Arc<Mutex<TcpStream>>);

impl Wire {
    fn raw(&self, bytes: &[u8]) {
        // The client may have closed: what happens next is its business.
        let _ = self.0.lock().unwrap().write_all(bytes);
    }

    fn frames(&self, f: impl FnOnce(&mut Encoder)) {
        let mut enc = Encoder::new();
        f(&mut enc);
        self.raw(enc.as_slice());
    }

    fn message(&self, id: u32, body: &[u8]) {
        self.message_flags(id, Flags::new(Compression::None, Encoding::MsgPack), body);
    }

    fn message_flags(&self, id: u32, flags: Flags, body: &[u8]) {
        self.frames(|e| e.message(RequestId(id), flags, body).unwrap());
    }

    fn msgpack<T: Serialize>(&self, id: u32, value: &T) {
        self.message(id, &rmp_serde::to_vec_named(value).unwrap());
    }

    fn window(&self, id: u32, bytes: u32) {
        self.frames(|e| e.window(RequestId(id), WindowMeta::new(bytes).unwrap()));
    }

    fn response(&self, id: u32, code: Code, message: Option<&str>) {
        self.response_meta(
            id,
            &ResponseMeta {
                message,
                ..ResponseMeta::new(code)
            },
        );
    }

    fn response_meta(&self, id: u32, meta: &ResponseMeta<'_>) {
        self.frames(|e| {
            e.response(RequestId(id), Flags::default(), meta, &[])
                .unwrap()
        });
    }

    fn unary_answer(&self, id: u32, body: &[u8]) {
        self.frames(|e| {
            e.response(
                RequestId(id),
                Flags::default(),
                &ResponseMeta::new(Code::OK),
                body,
            )
            .unwrap()
        });
    }

    fn goaway(&self) {
        self.frames(|e| {
            e.goaway(&GoawayMeta::new(Code::UNAVAILABLE, "shutting down"))
                .unwrap()
        });
    }

    /// Closes with a reset: the client sees the connection broken, not
    /// ended.
    fn reset(&self) {
        let s = self.0.lock().unwrap();
        let _ = socket2::SockRef::from(&*s).set_linger(Some(Duration::ZERO));
        let _ = s.shutdown(Shutdown::Both);
    }
}

/// The scripted server. Dropping it closes every connection and joins
/// its threads.
struct Fake {
    addr: SocketAddr,
    events: Receiver<Ev>,
    wires: Arc<Mutex<Vec<Wire>>>,
    threads: Arc<Mutex<Vec<JoinHandle<()>>>>,
    stopping: Arc<AtomicBool>,
    acceptor: Option<JoinHandle<()>>,
}

impl Fake {
    fn start() -> Fake {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let (tx, rx) = unbounded();
        let wires = Arc::new(Mutex::new(Vec::new()));
        let threads = Arc::new(Mutex::new(Vec::new()));
        let stopping = Arc::new(AtomicBool::new(false));
        let (w, t, s) = (wires.clone(), threads.clone(), stopping.clone());
        let acceptor = thread::spawn(move || accept(listener, tx, w, t, s));
        Fake {
            addr,
            events: rx,
            wires,
            threads,
            stopping,
            acceptor: Some(acceptor),
        }
    }

    fn client(&self) -> Client {
        Client::builder()
            .addr(self.addr)
            .backoff(Duration::from_millis(20), Duration::from_millis(200))
            .build()
            .unwrap()
    }

    fn wire(&self, conn: usize) -> Wire {
        self.wires.lock().unwrap()[conn].clone()
    }

    /// The next event, which must come within [`WAIT`].
    #[track_caller]
    fn next(&self) -> Ev {
        self.events
            .recv_timeout(WAIT)
            .unwrap_or_else(|_| panic!("no event within {WAIT:?}"))
    }

    /// The next event, or `None` if none comes within `d`.
    fn next_within(&self, d: Duration) -> Option<Ev> {
        match self.events.recv_timeout(d) {
            Ok(ev) => Some(ev),
            Err(RecvTimeoutError::Timeout) => None,
            Err(e) => panic!("{e}"),
        }
    }

    #[track_caller]
    fn request(&self) -> Opened {
        match self.next() {
            Ev::Request(o) => o,
            other => panic!("expected a REQUEST, got {other:?}"),
        }
    }

    #[track_caller]
    fn message(&self) -> (u32, Flags, Bytes) {
        match self.next() {
            Ev::Message { id, flags, body } => (id, flags, body),
            other => panic!("expected a MESSAGE, got {other:?}"),
        }
    }

    #[track_caller]
    fn end(&self) -> u32 {
        match self.next() {
            Ev::End { id } => id,
            other => panic!("expected END, got {other:?}"),
        }
    }

    #[track_caller]
    fn cancel(&self) -> u32 {
        match self.next() {
            Ev::Cancel { id } => id,
            other => panic!("expected CANCEL, got {other:?}"),
        }
    }

    #[track_caller]
    fn window(&self) -> (u32, u32) {
        match self.next() {
            Ev::Window { id, bytes } => (id, bytes),
            other => panic!("expected WINDOW, got {other:?}"),
        }
    }

    #[track_caller]
    fn closed(&self) -> usize {
        match self.next() {
            Ev::Closed { conn } => conn,
            other => panic!("expected the connection to close, got {other:?}"),
        }
    }

    /// A server stream's opening: REQUEST, its one MESSAGE, END.
    #[track_caller]
    fn server_stream_opened(&self) -> (Opened, Bytes) {
        let open = self.request();
        assert!(open.stream, "the REQUEST opens a stream");
        assert!(open.body.is_empty(), "a stream REQUEST has no body");
        let (id, _, body) = self.message();
        assert_eq!(id, open.id);
        assert_eq!(self.end(), open.id);
        (open, body)
    }

    /// Stops accepting: a connect is refused from now on.
    fn stop_accepting(&mut self) {
        if let Some(a) = self.acceptor.take() {
            self.stopping.store(true, Ordering::SeqCst);
            let _ = TcpStream::connect_timeout(&self.addr, WAIT);
            a.join().unwrap();
        }
    }
}

impl Drop for Fake {
    fn drop(&mut self) {
        self.stop_accepting();
        for w in self.wires.lock().unwrap().iter() {
            let _ = w.0.lock().unwrap().shutdown(Shutdown::Both);
        }
        let threads: Vec<_> = std::mem::take(&mut *self.threads.lock().unwrap());
        for t in threads {
            t.join().unwrap();
        }
    }
}

fn accept(
    listener: TcpListener,
    tx: Sender<Ev>,
    wires: Arc<Mutex<Vec<Wire>>>,
    threads: Arc<Mutex<Vec<JoinHandle<()>>>>,
    stopping: Arc<AtomicBool>,
) {
    for stream in listener.incoming() {
        if stopping.load(Ordering::SeqCst) {
            return;
        }
        let Ok(stream) = stream else { continue };
        stream.set_nodelay(true).unwrap();
        let conn = {
            let mut w = wires.lock().unwrap();
            w.push(Wire(Arc::new(Mutex::new(stream.try_clone().unwrap()))));
            w.len() - 1
        };
        let tx = tx.clone();
        threads
            .lock()
            .unwrap()
            .push(thread::spawn(move || read_frames(conn, stream, tx)));
    }
}

fn read_frames(conn: usize, mut stream: TcpStream, tx: Sender<Ev>) {
    let mut decoder = Decoder::new(Side::Server, FrameLimits::default());
    let mut buf = BytesMut::new();
    let mut chunk = vec![0u8; 64 * 1024];
    'read: loop {
        let n = match stream.read(&mut chunk) {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        buf.extend_from_slice(&chunk[..n]);
        loop {
            let f = match decoder.decode(&mut buf) {
                Ok(Some(Decoded::Frame(f))) => f,
                Ok(None) => break,
                other => {
                    eprintln!("scripted server: bad input from the client: {other:?}");
                    break 'read;
                }
            };
            let id = f.header.request_id.0;
            let ev = match f.header.frame_type {
                FrameType::Request => {
                    let m = RequestMeta::decode(&f.meta).unwrap();
                    Ev::Request(Opened {
                        conn,
                        id,
                        flags: f.header.flags,
                        method: m.method.to_owned(),
                        stream: m.stream,
                        timeout_ms: m.timeout_ms,
                        trace_id: m.trace_id.map(str::to_owned),
                        md: m.md.clone(),
                        body: f.body.clone(),
                    })
                }
                FrameType::Message => Ev::Message {
                    id,
                    flags: f.header.flags,
                    body: f.body,
                },
                FrameType::End => Ev::End { id },
                FrameType::Window => Ev::Window {
                    id,
                    bytes: WindowMeta::decode(&f.meta).unwrap().bytes(),
                },
                FrameType::Cancel => Ev::Cancel { id },
                other => panic!("scripted server got {other}"),
            };
            let _ = tx.send(ev);
        }
    }
    let _ = tx.send(Ev::Closed { conn });
}

#[derive(Serialize, Deserialize, Debug, PartialEq, Clone)]
struct Tick {
    i: u32,
}

#[derive(Serialize, Deserialize, Debug, PartialEq)]
struct Count {
    n: u32,
}

/// Runs `f` on a thread and waits at most [`WAIT`] for it.
#[track_caller]
fn within<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    let (tx, rx) = mpsc::channel();
    let t = thread::spawn(move || tx.send(f()).unwrap());
    let v = rx
        .recv_timeout(WAIT)
        .unwrap_or_else(|_| panic!("did not return within {WAIT:?}"));
    t.join().unwrap();
    v
}

fn bg() -> Context {
    Context::background()
}

#[test]
fn a_server_stream_yields_the_messages_in_order_then_the_trailers() {
    init_logging();
    let fake = Fake::start();
    let client = Client::builder()
        .addr(fake.addr)
        .caller("tester")
        .bearer_token("s3cret")
        .build()
        .unwrap();
    let opts = CallOptions::new()
        .timeout(Duration::from_secs(30))
        .metadata("tenant", "acme")
        .trace_id(TraceId::new("trace-s").unwrap());
    let mut ticks = client
        .server_stream_with::<_, Tick>(&bg(), "/echo.Echo/Count", &Count { n: 100 }, &opts)
        .unwrap();
    let (open, body) = fake.server_stream_opened();
    assert_eq!(open.method, "/echo.Echo/Count");
    assert!(
        open.timeout_ms > 0 && open.timeout_ms <= 30_000,
        "{}",
        open.timeout_ms
    );
    assert_eq!(open.trace_id.as_deref(), Some("trace-s"));
    assert_eq!(open.md.get_str("tenant"), Some("acme"));
    assert_eq!(open.md.get_str("authorization"), Some("Bearer s3cret"));
    assert_eq!(open.flags.encoding(), Ok(Encoding::MsgPack));
    let req: Count = rmp_serde::from_slice(&body).unwrap();
    assert_eq!(req, Count { n: 100 });

    let wire = fake.wire(open.conn);
    for i in 0..100 {
        wire.msgpack(open.id, &Tick { i });
    }
    let mut md = Metadata::new();
    md.insert("cursor", "c-100");
    wire.response_meta(
        open.id,
        &ResponseMeta {
            md,
            ..ResponseMeta::new(Code::OK)
        },
    );
    assert!(ticks.metadata().is_none(), "no trailers before the end");
    let got: Vec<Tick> = ticks.by_ref().collect::<Result<_, _>>().unwrap();
    assert_eq!(got, (0..100).map(|i| Tick { i }).collect::<Vec<_>>());
    assert_eq!(ticks.metadata().unwrap().get_str("cursor"), Some("c-100"));
    assert_eq!(ticks.trace_id().unwrap().as_str(), "trace-s");
    assert_eq!(ticks.peer(), fake.addr);
    assert!(ticks.next().is_none(), "None for good after the end");
}

#[test]
fn a_non_ok_end_yields_its_messages_then_one_error_then_none() {
    init_logging();
    let fake = Fake::start();
    let client = fake.client();
    let mut ticks = client
        .server_stream::<_, Tick>(&bg(), "/echo.Echo/Count", &Count { n: 2 })
        .unwrap();
    let (open, _) = fake.server_stream_opened();
    let wire = fake.wire(open.conn);
    wire.msgpack(open.id, &Tick { i: 0 });
    wire.msgpack(open.id, &Tick { i: 1 });
    wire.response(open.id, Code::NOT_FOUND, Some("no such feed"));
    assert_eq!(ticks.next().unwrap().unwrap(), Tick { i: 0 });
    assert_eq!(ticks.next().unwrap().unwrap(), Tick { i: 1 });
    let err = ticks.next().unwrap().unwrap_err();
    assert_eq!(err.code(), Code::NOT_FOUND);
    assert_eq!(err.kind(), ErrorKind::Status);
    assert_eq!(err.execution(), Execution::Ran);
    assert!(err.to_string().contains("no such feed"), "{err}");
    assert!(ticks.next().is_none());
    assert!(ticks.next().is_none());
}

#[test]
fn reading_grants_the_window_back_in_half_window_steps() {
    init_logging();
    let fake = Fake::start();
    let client = fake.client();
    let mut chunks = client
        .raw_server_stream(&bg(), "/blob.Store/Get", b"k", &CallOptions::new())
        .unwrap();
    let (open, body) = fake.server_stream_opened();
    assert_eq!(&body[..], b"k");
    assert_eq!(open.flags.encoding(), Ok(Encoding::Raw));
    let wire = fake.wire(open.conn);
    // The whole initial window, in four messages: allowed without a grant.
    let quarter = vec![0xabu8; INITIAL_WINDOW as usize / 4];
    for _ in 0..4 {
        wire.message_flags(
            open.id,
            Flags::new(Compression::None, Encoding::Raw),
            &quarter,
        );
    }
    assert_eq!(chunks.next().unwrap().unwrap().len(), quarter.len());
    // One quarter read: below the threshold, nothing granted yet. Two: the
    // first grant, of exactly half the window.
    assert_eq!(chunks.next().unwrap().unwrap().len(), quarter.len());
    assert_eq!(fake.window(), (open.id, GRANT_THRESHOLD));
    // The server may send again: another half window.
    for _ in 0..2 {
        wire.message_flags(
            open.id,
            Flags::new(Compression::None, Encoding::Raw),
            &quarter,
        );
    }
    for _ in 0..2 {
        chunks.next().unwrap().unwrap();
    }
    assert_eq!(fake.window(), (open.id, GRANT_THRESHOLD));
    for _ in 0..2 {
        chunks.next().unwrap().unwrap();
    }
    assert_eq!(fake.window(), (open.id, GRANT_THRESHOLD));
    wire.response(open.id, Code::OK, None);
    assert!(chunks.next().is_none());
}

#[test]
fn a_message_on_a_closed_window_is_a_connection_error() {
    init_logging();
    let fake = Fake::start();
    let client = fake.client();
    let mut chunks = client
        .raw_server_stream(&bg(), "/blob.Store/Get", b"k", &CallOptions::new())
        .unwrap();
    let (open, _) = fake.server_stream_opened();
    let wire = fake.wire(open.conn);
    // One message may overdraw the window; the next one breaks the rule.
    let raw = Flags::new(Compression::None, Encoding::Raw);
    wire.message_flags(open.id, raw, &vec![1u8; INITIAL_WINDOW as usize + 10]);
    wire.message_flags(open.id, raw, b"one too many");
    assert_eq!(fake.closed(), open.conn, "the client closes the connection");
    // What arrived within the rules is still handed out, then the error.
    assert_eq!(
        chunks.next().unwrap().unwrap().len(),
        INITIAL_WINDOW as usize + 10
    );
    let err = chunks.next().unwrap().unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Protocol);
    assert_eq!(err.execution(), Execution::MayHaveRun);
    assert!(
        err.to_string()
            .contains("MESSAGE of 12 bytes sent with the stream's window at -10"),
        "{err}"
    );
    assert!(chunks.next().is_none());
}

#[test]
fn a_window_past_the_largest_is_a_connection_error() {
    init_logging();
    let fake = Fake::start();
    let client = fake.client();
    let (mut tx, mut rx) = client
        .bidi_stream::<str, String>(&bg(), "/echo.Echo/Chat")
        .unwrap();
    let open = fake.request();
    // 256 KiB + (2^31 - 1) is past the largest window.
    fake.wire(open.conn).window(open.id, MAX_WINDOW);
    assert_eq!(fake.closed(), open.conn);
    let err = rx.next().unwrap().unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Protocol);
    assert!(err.to_string().contains("past 2147483647"), "{err}");
    let err = tx.send("after").unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Protocol);
}

#[test]
fn send_blocks_while_the_window_is_exhausted_until_the_server_grants() {
    init_logging();
    let fake = Fake::start();
    let client = fake.client();
    let mut upload = client
        .raw_client_stream(&bg(), "/blob.Store/Put", &CallOptions::new())
        .unwrap();
    let open = fake.request();
    assert!(open.stream);
    let quarter = vec![7u8; INITIAL_WINDOW as usize / 4];
    for _ in 0..4 {
        upload.send(&quarter).unwrap();
        assert_eq!(fake.message().2.len(), quarter.len());
    }
    // The window is 0: the fifth send waits for a grant.
    let (sent_tx, sent_rx) = mpsc::channel();
    let sender = thread::spawn(move || {
        let r = upload.send(&[9u8; 100_000]);
        sent_tx.send(()).unwrap();
        r.map(|()| upload)
    });
    assert!(
        fake.next_within(Duration::from_millis(300)).is_none(),
        "nothing may be sent on a closed window"
    );
    assert!(
        sent_rx.try_recv().is_err(),
        "send returned on a closed window"
    );
    // One byte of window lets a message of any size go: an overdraw.
    let wire = fake.wire(open.conn);
    wire.window(open.id, 1);
    assert_eq!(fake.message().2.len(), 100_000);
    let upload = sender.join().unwrap().unwrap();
    // The server answers.
    let finish = thread::spawn(move || upload.finish());
    assert_eq!(fake.end(), open.id);
    wire.message_flags(
        open.id,
        Flags::new(Compression::None, Encoding::Raw),
        b"stored",
    );
    wire.response(open.id, Code::OK, None);
    assert_eq!(&finish.join().unwrap().unwrap()[..], b"stored");
}

#[test]
fn a_client_stream_finishes_with_the_one_response_and_its_trailers() {
    init_logging();
    let fake = Fake::start();
    let client = fake.client();
    let mut sum = client
        .client_stream::<i64, i64>(&bg(), "/echo.Echo/Sum")
        .unwrap();
    for v in 1..=10 {
        sum.send(&v).unwrap();
    }
    let open = fake.request();
    let mut total = 0;
    for _ in 1..=10 {
        let (id, _, body) = fake.message();
        assert_eq!(id, open.id);
        total += rmp_serde::from_slice::<i64>(&body).unwrap();
    }
    let wire = fake.wire(open.conn);
    let finish = thread::spawn(move || sum.finish_response());
    assert_eq!(fake.end(), open.id);
    wire.msgpack(open.id, &total);
    let mut md = Metadata::new();
    md.insert("count", "10");
    wire.response_meta(
        open.id,
        &ResponseMeta {
            md,
            ..ResponseMeta::new(Code::OK)
        },
    );
    let resp = finish.join().unwrap().unwrap();
    assert_eq!(*resp.body(), 55);
    assert_eq!(resp.metadata().get_str("count"), Some("10"));
}

#[test]
fn a_server_that_answers_early_fails_send_with_its_status() {
    init_logging();
    let fake = Fake::start();
    let client = fake.client();
    let mut sum = client
        .client_stream::<i64, i64>(&bg(), "/echo.Echo/Sum")
        .unwrap();
    sum.send(&1).unwrap();
    let open = fake.request();
    fake.message();
    fake.wire(open.conn)
        .response(open.id, Code::INVALID_ARGUMENT, Some("odd numbers only"));
    // The answer reaches the client at some point: sends fail from then on.
    let deadline = Instant::now() + WAIT;
    let err = loop {
        match sum.send(&2) {
            Ok(()) => assert!(Instant::now() < deadline, "send never failed"),
            Err(e) => break e,
        }
        thread::yield_now();
    };
    assert_eq!(err.code(), Code::INVALID_ARGUMENT);
    assert!(err.to_string().contains("odd numbers only"), "{err}");
    let err = sum.finish().unwrap_err();
    assert_eq!(err.code(), Code::INVALID_ARGUMENT);
    // No END and no CANCEL for a stream the server ended; only MESSAGEs.
    while let Some(ev) = fake.next_within(Duration::from_millis(100)) {
        assert!(matches!(ev, Ev::Message { .. }), "{ev:?}");
    }
}

#[test]
fn an_ok_end_without_a_response_message_fails_finish() {
    init_logging();
    let fake = Fake::start();
    let client = fake.client();
    let sum = client
        .client_stream::<i64, i64>(&bg(), "/echo.Echo/Sum")
        .unwrap();
    let open = fake.request();
    let finish = thread::spawn(move || sum.finish());
    assert_eq!(fake.end(), open.id);
    fake.wire(open.conn).response(open.id, Code::OK, None);
    let err = finish.join().unwrap().unwrap_err();
    assert_eq!(err.code(), Code::INTERNAL);
    assert!(err.to_string().contains("without a response"), "{err}");
}

#[test]
fn a_bidi_stream_is_driven_from_two_threads_alongside_unary_calls() {
    init_logging();
    let fake = Fake::start();
    let client = fake.client();
    let (mut tx, rx) = client
        .bidi_stream::<String, String>(&bg(), "/echo.Echo/Chat")
        .unwrap();
    let open = fake.request();
    let wire = fake.wire(open.conn);
    let reader = thread::spawn(move || rx.collect::<Result<Vec<String>, _>>());
    let writer = thread::spawn(move || {
        for i in 0..200 {
            tx.send(&format!("line {i}")).unwrap();
        }
        tx.finish().unwrap();
    });
    // A unary call on the same connection while the stream runs.
    let c = client.clone();
    let unary =
        thread::spawn(move || c.call_raw(&bg(), "/echo.Echo/Say", b"hi", &CallOptions::new()));
    let (mut echoed, mut ended, mut answered) = (0, false, false);
    while !(ended && answered) {
        match fake.next() {
            Ev::Message { id, body, .. } => {
                assert_eq!(id, open.id);
                assert!(!ended, "a MESSAGE after END");
                wire.message(id, &body);
                echoed += 1;
            }
            Ev::Request(r) => {
                assert!(!r.stream);
                assert_eq!(r.conn, open.conn, "multiplexed on one connection");
                wire.unary_answer(r.id, &r.body);
                answered = true;
            }
            Ev::End { id } => {
                assert_eq!(id, open.id);
                ended = true;
            }
            other => panic!("{other:?}"),
        }
    }
    assert_eq!(echoed, 200);
    wire.response(open.id, Code::OK, None);
    writer.join().unwrap();
    let lines = reader.join().unwrap().unwrap();
    assert_eq!(
        lines,
        (0..200).map(|i| format!("line {i}")).collect::<Vec<_>>()
    );
    assert_eq!(&unary.join().unwrap().unwrap().body()[..], b"hi");
}

#[test]
fn dropping_a_stream_before_its_end_cancels_it() {
    init_logging();
    let fake = Fake::start();
    let client = fake.client();

    let ticks = client
        .server_stream::<_, Tick>(&bg(), "/echo.Echo/Count", &Count { n: 1 })
        .unwrap();
    let (open, _) = fake.server_stream_opened();
    drop(ticks);
    assert_eq!(fake.cancel(), open.id);
    fake.wire(open.conn)
        .response(open.id, Code::CANCELLED, None);

    let mut sum = client
        .client_stream::<i64, i64>(&bg(), "/echo.Echo/Sum")
        .unwrap();
    sum.send(&1).unwrap();
    let open = fake.request();
    fake.message();
    drop(sum);
    assert_eq!(fake.cancel(), open.id, "CANCEL, without an END first");
    fake.wire(open.conn)
        .response(open.id, Code::CANCELLED, None);

    // A bidi stream: the sender's drop half-closes, the receiver's then
    // cancels.
    let (tx, rx) = client
        .bidi_stream::<String, String>(&bg(), "/echo.Echo/Chat")
        .unwrap();
    let open = fake.request();
    drop(tx);
    assert_eq!(fake.end(), open.id);
    drop(rx);
    assert_eq!(fake.cancel(), open.id);
    fake.wire(open.conn)
        .response(open.id, Code::CANCELLED, None);

    // Nothing is sent for a stream that ended before its drop.
    let ticks = client
        .server_stream::<_, Tick>(&bg(), "/echo.Echo/Count", &Count { n: 0 })
        .unwrap();
    let (open, _) = fake.server_stream_opened();
    fake.wire(open.conn).response(open.id, Code::OK, None);
    let c = client.clone();
    // A unary call answered after the RESPONSE proves the client read it.
    let unary = thread::spawn(move || c.call_raw(&bg(), "/a.B/c", b"", &CallOptions::new()));
    let r = fake.request();
    fake.wire(r.conn).unary_answer(r.id, b"");
    unary.join().unwrap().unwrap();
    drop(ticks);
    assert!(fake.next_within(Duration::from_millis(200)).is_none());
}

#[test]
fn a_draining_connection_closes_only_once_its_streams_are_answered() {
    init_logging();
    let fake = Fake::start();
    let client = fake.client();
    let ticks = client
        .server_stream::<_, Tick>(&bg(), "/echo.Echo/Count", &Count { n: 1 })
        .unwrap();
    let (open, _) = fake.server_stream_opened();
    let wire = fake.wire(open.conn);
    drop(ticks);
    assert_eq!(fake.cancel(), open.id);
    wire.goaway();
    // The id is taken until the server's RESPONSE CANCELLED: the
    // connection stays open.
    assert!(fake.next_within(Duration::from_millis(300)).is_none());
    wire.response(open.id, Code::CANCELLED, None);
    assert_eq!(fake.closed(), open.conn);
}

#[test]
fn the_deadline_fails_the_stream_and_sends_cancel() {
    init_logging();
    let fake = Fake::start();
    let client = fake.client();
    let opts = CallOptions::new().timeout(Duration::from_millis(300));
    let mut ticks = client
        .server_stream_with::<_, Tick>(&bg(), "/echo.Echo/Count", &Count { n: 9 }, &opts)
        .unwrap();
    let (open, _) = fake.server_stream_opened();
    assert!(open.timeout_ms > 0 && open.timeout_ms <= 300);
    fake.wire(open.conn).msgpack(open.id, &Tick { i: 0 });
    assert_eq!(ticks.next().unwrap().unwrap(), Tick { i: 0 });
    let err = within(move || ticks.next().unwrap().unwrap_err());
    assert_eq!(err.code(), Code::DEADLINE_EXCEEDED);
    assert_eq!(err.kind(), ErrorKind::Timeout);
    assert_eq!(err.execution(), Execution::MayHaveRun);
    assert_eq!(fake.cancel(), open.id);

    // A send waiting for window gives up at the deadline too.
    let opts = CallOptions::new().timeout(Duration::from_millis(300));
    let mut upload = client
        .raw_client_stream(&bg(), "/blob.Store/Put", &opts)
        .unwrap();
    let open = fake.request();
    upload.send(&vec![0u8; INITIAL_WINDOW as usize]).unwrap();
    fake.message();
    let err = within(move || upload.send(b"more").unwrap_err());
    assert_eq!(err.code(), Code::DEADLINE_EXCEEDED);
    assert_eq!(fake.cancel(), open.id);
}

#[test]
fn cancelling_the_context_cancels_the_stream() {
    init_logging();
    let fake = Fake::start();
    let client = fake.client();
    let (ctx, handle) = bg().with_cancel();
    let mut ticks = client
        .server_stream::<_, Tick>(&ctx, "/echo.Echo/Count", &Count { n: 9 })
        .unwrap();
    let (open, _) = fake.server_stream_opened();
    let reader = thread::spawn(move || ticks.next().unwrap().unwrap_err());
    handle.cancel();
    assert_eq!(fake.cancel(), open.id);
    let err = reader.join().unwrap();
    assert_eq!(err.kind(), ErrorKind::Cancelled);
    assert_eq!(err.code(), Code::CANCELLED);
}

#[test]
fn a_connection_reset_mid_stream_fails_it_as_may_have_run() {
    init_logging();
    let fake = Fake::start();
    let client = fake.client();
    let (mut tx, mut rx) = client
        .bidi_stream::<u32, Tick>(&bg(), "/echo.Echo/Chat")
        .unwrap();
    let open = fake.request();
    let wire = fake.wire(open.conn);
    wire.msgpack(open.id, &Tick { i: 1 });
    assert_eq!(rx.next().unwrap().unwrap(), Tick { i: 1 });
    wire.reset();
    let err = within(move || rx.next().unwrap().unwrap_err());
    assert_eq!(err.code(), Code::UNAVAILABLE);
    assert_eq!(err.execution(), Execution::MayHaveRun);
    assert!(
        err.to_string().contains("broke after the request was sent"),
        "{err}"
    );
    let err = tx.send(&2).unwrap_err();
    assert_eq!(err.execution(), Execution::MayHaveRun);
}

#[test]
fn a_stream_refused_at_goaway_or_on_a_closed_connection_did_not_run() {
    init_logging();
    let mut fake = Fake::start();
    let client = fake.client();
    // Open a connection, then the server goes away and takes no more.
    let c = client.clone();
    let unary = thread::spawn(move || c.call_raw(&bg(), "/a.B/c", b"", &CallOptions::new()));
    let r = fake.request();
    let wire = fake.wire(r.conn);
    fake.stop_accepting();
    wire.goaway();
    wire.unary_answer(r.id, b"");
    unary.join().unwrap().unwrap();
    // The GOAWAY came before that answer: the connection takes no stream.
    let err = client
        .server_stream::<_, Tick>(&bg(), "/echo.Echo/Count", &Count { n: 1 })
        .unwrap_err();
    assert_eq!(err.code(), Code::UNAVAILABLE);
    assert!(err.is_not_run(), "{err:?}");
    assert_eq!(fake.closed(), r.conn, "drained: nothing was in flight");
}

#[test]
fn a_stream_answered_unavailable_before_any_message_did_not_run() {
    init_logging();
    let fake = Fake::start();
    let client = fake.client();
    let mut ticks = client
        .server_stream::<_, Tick>(&bg(), "/echo.Echo/Count", &Count { n: 1 })
        .unwrap();
    let (open, _) = fake.server_stream_opened();
    fake.wire(open.conn).response(
        open.id,
        Code::UNAVAILABLE,
        Some("the server is shutting down; the request was not run"),
    );
    let err = ticks.next().unwrap().unwrap_err();
    assert_eq!(err.code(), Code::UNAVAILABLE);
    assert!(err.is_not_run());
}

#[test]
fn message_and_window_for_unknown_ids_are_ignored() {
    init_logging();
    let fake = Fake::start();
    let client = fake.client();
    let mut ticks = client
        .server_stream::<_, Tick>(&bg(), "/echo.Echo/Count", &Count { n: 1 })
        .unwrap();
    let (open, _) = fake.server_stream_opened();
    let wire = fake.wire(open.conn);
    wire.msgpack(open.id + 1000, &Tick { i: 99 });
    wire.window(open.id + 1000, 5);
    wire.msgpack(open.id, &Tick { i: 1 });
    wire.response(open.id, Code::OK, None);
    // After its end, the stream's id is unknown too.
    wire.msgpack(open.id, &Tick { i: 2 });
    wire.window(open.id, 5);
    assert_eq!(ticks.next().unwrap().unwrap(), Tick { i: 1 });
    assert!(ticks.next().is_none());
    // The connection carries on.
    let c = client.clone();
    let unary = thread::spawn(move || c.call_raw(&bg(), "/a.B/c", b"x", &CallOptions::new()));
    let r = fake.request();
    assert_eq!(r.conn, open.conn);
    wire.unary_answer(r.id, b"y");
    assert_eq!(&unary.join().unwrap().unwrap().body()[..], b"y");
}

#[test]
fn messages_are_compressed_one_by_one_and_inflated_as_flagged() {
    init_logging();
    let fake = Fake::start();
    let client = Client::builder()
        .addr(fake.addr)
        .compression(Compression::Gzip)
        .compress_min_size(100)
        .build()
        .unwrap();
    let (mut tx, mut rx) = client
        .raw_bidi_stream(&bg(), "/echo.Echo/Chat", &CallOptions::new())
        .unwrap();
    let open = fake.request();
    assert_eq!(open.flags.compression(), Ok(Compression::Gzip));
    tx.send(b"short").unwrap();
    tx.send(&[b'z'; 5000]).unwrap();
    let (_, flags, body) = fake.message();
    assert_eq!(flags.compression(), Ok(Compression::None));
    assert_eq!(&body[..], b"short");
    let (_, flags, body) = fake.message();
    assert_eq!(flags.compression(), Ok(Compression::Gzip));
    assert!(body.len() < 5000);
    // Echo the compressed one back as it came: the client inflates it.
    let wire = fake.wire(open.conn);
    wire.message_flags(open.id, flags, &body);
    assert_eq!(&rx.next().unwrap().unwrap()[..], &[b'z'; 5000][..]);
    // A corrupt one fails the stream, which is cancelled.
    wire.message_flags(open.id, flags, b"not gzip");
    let err = rx.next().unwrap().unwrap_err();
    assert_eq!(err.code(), Code::DATA_LOSS);
    assert!(rx.next().is_none());
    assert_eq!(fake.cancel(), open.id);
}

#[test]
fn an_undecodable_message_fails_the_stream_once_and_cancels_it() {
    init_logging();
    let fake = Fake::start();
    let client = fake.client();
    let mut ticks = client
        .server_stream::<_, Tick>(&bg(), "/echo.Echo/Count", &Count { n: 1 })
        .unwrap();
    let (open, _) = fake.server_stream_opened();
    fake.wire(open.conn).message(open.id, b"\xc1");
    let err = ticks.next().unwrap().unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Codec);
    assert!(ticks.next().is_none());
    assert_eq!(fake.cancel(), open.id);
}

#[test]
fn a_stream_on_a_connection_the_server_closed_did_not_run() {
    init_logging();
    let mut fake = Fake::start();
    let client = fake.client();
    let mut ticks = client
        .server_stream::<_, Tick>(&bg(), "/echo.Echo/Count", &Count { n: 1 })
        .unwrap();
    let (open, _) = fake.server_stream_opened();
    fake.stop_accepting();
    fake.wire(open.conn).reset();
    // The open stream may have run; it fails at once.
    let err = within(move || ticks.next().unwrap().unwrap_err());
    assert_eq!(err.execution(), Execution::MayHaveRun);
    // A new one finds no connection and no server: it did not run.
    let err = client
        .server_stream::<_, Tick>(&bg(), "/echo.Echo/Count", &Count { n: 1 })
        .unwrap_err();
    assert_eq!(err.code(), Code::UNAVAILABLE);
    assert!(err.is_not_run(), "{err:?}");
}

#[test]
fn a_message_over_the_body_limit_fails_the_stream_and_cancels_it() {
    init_logging();
    let fake = Fake::start();
    let client = Client::builder()
        .addr(fake.addr)
        .max_body(1000)
        .build()
        .unwrap();
    let mut chunks = client
        .raw_server_stream(&bg(), "/blob.Store/Get", b"k", &CallOptions::new())
        .unwrap();
    let (open, _) = fake.server_stream_opened();
    let wire = fake.wire(open.conn);
    let raw = Flags::new(Compression::None, Encoding::Raw);
    wire.message_flags(open.id, raw, &[1u8; 10]);
    wire.message_flags(open.id, raw, &[2u8; 5000]);
    assert_eq!(fake.cancel(), open.id);
    // The message before it is dropped with the stream: it failed.
    let err = chunks.next().unwrap().unwrap_err();
    assert_eq!(err.code(), Code::RESOURCE_EXHAUSTED);
    assert!(err.to_string().contains("5000 bytes"), "{err}");
    assert!(chunks.next().is_none());
    // The connection carries on: the body was skipped, the framing kept.
    wire.response(open.id, Code::CANCELLED, None);
    let c = client.clone();
    let unary = thread::spawn(move || c.call_raw(&bg(), "/a.B/c", b"x", &CallOptions::new()));
    let r = fake.request();
    assert_eq!(r.conn, open.conn);
    wire.unary_answer(r.id, b"y");
    assert_eq!(&unary.join().unwrap().unwrap().body()[..], b"y");
}

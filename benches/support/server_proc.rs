//! Servers under test, each in a child process of the bench binary, and
//! what the bench reads about them.
//!
//! The bench starts itself again as `--serve KIND [--workers N]
//! [--queue N] [--max-connections N] [--inline] [--tls-cert PEM --tls-key
//! PEM]` (TLS only with the `tls` feature), pinned to core 0 when it can be; the child
//! prints its port, then answers each `stats` line on its standard input
//! with its allocation count and its threads' on-CPU nanoseconds, and
//! shuts down when its standard input closes. Kinds:
//!
//! - `event`, `thread`: syncrpc in that mode, serving [`super::load::ECHO_BYTES`],
//!   `/echo.Echo/Blob` (a raw body of the size asked, see
//!   [`blob_request`]) and the raw server stream `/echo.Echo/Download`
//!   (that many messages of that size)
//!   (`--inline`: handlers run on the thread that read the request, the
//!   connection's or the event loop, instead of the workers);
//! - `ceiling`: a minimal mio server for the same protocol that cuts frames
//!   by their headers and echoes bodies, with no pool and no meta or body
//!   decoding: the most a server of this shape could do on this machine;
//! - `blocking`: the same with one blocking thread per connection that
//!   reads, cuts frames by their headers and echoes: thread mode's ceiling;
//! - `tpc-inline`: a thread-per-connection server that runs the handler on
//!   the connection's thread, as Apache Thrift's threaded server does: it
//!   decodes each frame and its meta with `syncrpc::codec`, routes the
//!   method by name, calls the handler and encodes the answer, with no
//!   pool, deadlines, cancellation or limits.
#![allow(dead_code)] // each binary that includes this uses a different part

use std::alloc::{GlobalAlloc, Layout, System};
use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::SocketAddr;
use std::process::{Child, ChildStdout, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::{Buf, Bytes, BytesMut};
use mio::net::{TcpListener, TcpStream};
use mio::{Events, Interest, Poll, Token};
use syncrpc::codec::{FrameType, Header, HEADER_LEN};
use syncrpc::server::{Limits, Mode, ServerConfig};
use syncrpc::{Context, Server, Service, Status};

/// The system allocator, counting calls: allocations per request are a
/// cost the benches report.
struct Counting;

static ALLOCS: AtomicU64 = AtomicU64::new(0);

// SAFETY: forwards every call to the system allocator unchanged; it only
// counts them. This is the benches' only unsafe code.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCS.fetch_add(1, Ordering::Relaxed);
        System.alloc(layout)
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        System.dealloc(ptr, layout)
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        ALLOCS.fetch_add(1, Ordering::Relaxed);
        System.realloc(ptr, layout, new_size)
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

/// Sorts out what a bench binary was started for: as a server child
/// (`--serve`, which this runs until told to stop), by `cargo test
/// --benches` (no `--bench`: nothing to measure), or by `cargo bench`.
/// Returns the command-line words after the program name in the last
/// case only.
pub fn bench_args() -> Option<Vec<String>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if let Some(i) = args.iter().position(|a| a == "--serve") {
        let kind = args.get(i + 1).map_or("event", String::as_str);
        serve(kind, args.get(i + 2..).unwrap_or_default());
        return None;
    }
    args.iter().any(|a| a == "--bench").then_some(args)
}

/// The child's side: runs the server `kind` until standard input closes.
/// `args` are the words after `--serve KIND`.
pub fn serve(kind: &str, args: &[String]) {
    let opt = |name: &str| {
        args.iter()
            .position(|a| a == name)
            .and_then(|i| args.get(i + 1))
            .and_then(|v| v.parse::<usize>().ok())
    };
    let mode = match kind {
        "ceiling" | "blocking" | "tpc-inline" => None,
        "event" => Some(Mode::Event),
        "thread" => Some(Mode::Thread),
        other => {
            eprintln!(
                "--serve: unknown server {other:?} (event, thread, ceiling, blocking, tpc-inline)"
            );
            std::process::exit(2);
        }
    };
    let server = mode.map(|mode| {
        let echo = Service::new("echo.Echo")
            .raw_method("Bytes", |_: &Context, body: Bytes| Ok::<_, Status>(body))
            .raw_method("Blob", |_: &Context, req: Bytes| {
                let (_, size) = blob_request(&req)?;
                Ok::<_, Status>(blob(size))
            })
            .raw_server_stream(
                "Download",
                |_: &Context, req: Bytes, sink: &syncrpc::server::RawSink| {
                    let (n, size) = blob_request(&req)?;
                    let body = blob(size);
                    for _ in 0..n {
                        sink.send(&body)?;
                    }
                    Ok(())
                },
            );
        let config = ServerConfig {
            mode,
            inline_handlers: args.iter().any(|a| a == "--inline"),
            workers: opt("--workers").unwrap_or(1),
            queue_capacity: opt("--queue").unwrap_or(ServerConfig::default().queue_capacity),
            limits: Limits {
                max_connections: opt("--max-connections")
                    .unwrap_or(Limits::default().max_connections),
                ..Limits::default()
            },
            ..ServerConfig::default()
        };
        let mut builder = Server::builder().config(config);
        if args.iter().any(|a| a == "--access-log") {
            // The example server's access log: info, to stderr.
            let _ = env_logger::Builder::new()
                .filter_level(log::LevelFilter::Info)
                .try_init();
            builder = builder.filter(syncrpc::filters::AccessLog::new().to_writer(io::stderr()));
        }
        let builder = builder.service(echo);
        with_tls(builder, args)
            .bind("127.0.0.1:0")
            .expect("start the server")
    });
    let addr = match &server {
        Some(s) => s.local_addr(),
        None if kind == "ceiling" => {
            let listener = TcpListener::bind("127.0.0.1:0".parse().unwrap()).unwrap();
            let addr = listener.local_addr().unwrap();
            std::thread::Builder::new()
                .name("ceiling".into())
                .spawn(move || ceiling(listener))
                .unwrap();
            addr
        }
        None => {
            let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            let addr = listener.local_addr().unwrap();
            let serve_conn: fn(std::net::TcpStream) = if kind == "blocking" {
                blocking_echo
            } else {
                inline_thread
            };
            std::thread::Builder::new()
                .name(kind.into())
                .spawn(move || {
                    for s in listener.incoming().flatten() {
                        s.set_nodelay(true).unwrap();
                        std::thread::spawn(move || serve_conn(s));
                    }
                })
                .unwrap();
            addr
        }
    };
    println!("{}", addr.port());
    io::stdout().flush().unwrap();
    for line in io::stdin().lock().lines() {
        let Ok(line) = line else { break };
        if line.trim() == "stats" {
            println!("{} {}", ALLOCS.load(Ordering::Relaxed), cpu_ns());
            io::stdout().flush().unwrap();
        }
    }
    if let Some(server) = server {
        server.shutdown();
    }
}

/// Largest body [`blob`] makes: the default body limit.
const MAX_BLOB: usize = 10 * 1024 * 1024;

/// The request of `/echo.Echo/Blob` and `/echo.Echo/Download`: how many
/// messages (8 bytes, big-endian) of how many bytes (4 bytes).
pub fn blob_request(req: &[u8]) -> Result<(u64, usize), Status> {
    let (Some(n), Some(size)) = (req.get(..8), req.get(8..12)) else {
        return Err(Status::invalid_argument("expected 12 bytes: count, size"));
    };
    let n = u64::from_be_bytes(n.try_into().unwrap_or_default());
    let size = u32::from_be_bytes(size.try_into().unwrap_or_default()) as usize;
    if size > MAX_BLOB {
        return Err(Status::invalid_argument("size over 10 MiB"));
    }
    Ok((n, size))
}

/// Encodes a [`blob_request`].
pub fn encode_blob_request(n: u64, size: usize) -> Vec<u8> {
    let mut req = n.to_be_bytes().to_vec();
    req.extend_from_slice(&(size as u32).to_be_bytes());
    req
}

/// `size` bytes, shared: made once, so answering costs no copy.
fn blob(size: usize) -> Bytes {
    static BLOB: std::sync::OnceLock<Bytes> = std::sync::OnceLock::new();
    BLOB.get_or_init(|| Bytes::from(vec![0x5a; MAX_BLOB]))
        .slice(..size)
}

/// The value after flag `name` in `args`.
fn word<'a>(args: &'a [String], name: &str) -> Option<&'a str> {
    let i = args.iter().position(|a| a == name)?;
    args.get(i + 1).map(String::as_str)
}

/// Adds TLS to `builder` when `args` give `--tls-cert` and `--tls-key`.
fn with_tls(builder: syncrpc::ServerBuilder, args: &[String]) -> syncrpc::ServerBuilder {
    let (Some(cert), Some(key)) = (word(args, "--tls-cert"), word(args, "--tls-key")) else {
        return builder;
    };
    #[cfg(feature = "tls")]
    {
        let tls = syncrpc::tls::ServerTls::from_pem_files(cert, key).expect("TLS certificate");
        builder.tls(tls)
    }
    #[cfg(not(feature = "tls"))]
    {
        let _ = (cert, key);
        eprintln!("--serve: --tls-cert needs the tls feature");
        std::process::exit(2);
    }
}

/// On-CPU nanoseconds of every live thread of this process.
fn cpu_ns() -> u64 {
    let mut total = 0;
    if let Ok(dir) = std::fs::read_dir("/proc/self/task") {
        for task in dir.flatten() {
            if let Ok(s) = std::fs::read_to_string(task.path().join("schedstat")) {
                total += s
                    .split_whitespace()
                    .next()
                    .and_then(|v| v.parse::<u64>().ok())
                    .unwrap_or(0);
            }
        }
    }
    total
}

/// The ceiling: accept, read, cut frames by their headers, answer each
/// REQUEST with a RESPONSE carrying `{code: 0}` and the same body.
fn ceiling(mut listener: TcpListener) {
    const LISTENER: Token = Token(usize::MAX);
    let mut poll = Poll::new().unwrap();
    poll.registry()
        .register(&mut listener, LISTENER, Interest::READABLE)
        .unwrap();
    let mut events = Events::with_capacity(1024);
    let mut conns: Vec<Option<(TcpStream, BytesMut, BytesMut)>> = Vec::new();
    let meta = b"\x81\xa4code\x00";
    let mut scratch = vec![0u8; 64 * 1024];
    loop {
        poll.poll(&mut events, None).unwrap();
        for ev in events.iter() {
            if ev.token() == LISTENER {
                while let Ok((mut s, _)) = listener.accept() {
                    s.set_nodelay(true).unwrap();
                    let slot = conns.iter().position(Option::is_none).unwrap_or_else(|| {
                        conns.push(None);
                        conns.len() - 1
                    });
                    poll.registry()
                        .register(&mut s, Token(slot), Interest::READABLE | Interest::WRITABLE)
                        .unwrap();
                    conns[slot] = Some((s, BytesMut::new(), BytesMut::new()));
                }
                continue;
            }
            let slot = ev.token().0;
            let Some(Some((s, rbuf, wbuf))) = conns.get_mut(slot) else {
                continue;
            };
            let mut closed = false;
            loop {
                match s.read(&mut scratch) {
                    Ok(0) => {
                        closed = true;
                        break;
                    }
                    Ok(n) => rbuf.extend_from_slice(&scratch[..n]),
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                    Err(_) => {
                        closed = true;
                        break;
                    }
                }
            }
            while rbuf.len() >= HEADER_LEN {
                let Ok(h) = Header::decode(rbuf) else {
                    closed = true;
                    break;
                };
                let total = HEADER_LEN + h.meta_len as usize + h.body_len as usize;
                if rbuf.len() < total {
                    break;
                }
                let frame = rbuf.split_to(total);
                if h.frame_type == FrameType::Request {
                    let body = &frame[HEADER_LEN + h.meta_len as usize..];
                    let mut out = [0u8; HEADER_LEN];
                    Header {
                        frame_type: FrameType::Response,
                        flags: h.flags,
                        meta_len: meta.len() as u16,
                        request_id: h.request_id,
                        body_len: body.len() as u32,
                    }
                    .encode(&mut out);
                    wbuf.extend_from_slice(&out);
                    wbuf.extend_from_slice(meta);
                    wbuf.extend_from_slice(body);
                }
            }
            while !wbuf.is_empty() {
                match s.write(wbuf) {
                    Ok(n) => wbuf.advance(n),
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                    Err(_) => {
                        closed = true;
                        break;
                    }
                }
            }
            if closed {
                conns[slot] = None;
            }
        }
    }
}

/// The response meta of every answer the ceilings write: `{code: 0}`.
const OK_META: &[u8] = b"\x81\xa4code\x00";

/// Appends to `out` the RESPONSE for the REQUEST `h`, echoing `body`.
fn echo_frame(h: &Header, body: &[u8], out: &mut BytesMut) {
    let mut head = [0u8; HEADER_LEN];
    Header {
        frame_type: FrameType::Response,
        flags: h.flags,
        meta_len: OK_META.len() as u16,
        request_id: h.request_id,
        body_len: body.len() as u32,
    }
    .encode(&mut head);
    out.extend_from_slice(&head);
    out.extend_from_slice(OK_META);
    out.extend_from_slice(body);
}

/// The blocking ceiling's connection thread: read, cut every whole frame
/// by its header, answer each REQUEST with its body, write, read again.
fn blocking_echo(mut s: std::net::TcpStream) {
    let mut rbuf = BytesMut::with_capacity(64 * 1024);
    let mut wbuf = BytesMut::with_capacity(64 * 1024);
    let mut scratch = vec![0u8; 64 * 1024];
    loop {
        match s.read(&mut scratch) {
            Ok(0) | Err(_) => return,
            Ok(n) => rbuf.extend_from_slice(&scratch[..n]),
        }
        while rbuf.len() >= HEADER_LEN {
            let Ok(h) = Header::decode(&rbuf) else {
                return;
            };
            let total = HEADER_LEN + h.meta_len as usize + h.body_len as usize;
            if rbuf.len() < total {
                break;
            }
            let frame = rbuf.split_to(total);
            if h.frame_type == FrameType::Request {
                echo_frame(&h, &frame[HEADER_LEN + h.meta_len as usize..], &mut wbuf);
            }
        }
        if !wbuf.is_empty() {
            if s.write_all(&wbuf).is_err() {
                return;
            }
            wbuf.clear();
        }
    }
}

/// The thread-per-connection server's connection thread: decode each
/// frame and its meta, route the method, run the handler here, encode the
/// answer, write once per read.
fn inline_thread(mut s: std::net::TcpStream) {
    use syncrpc::codec::{Decoded, Decoder, Encoder, FrameLimits, RequestMeta, ResponseMeta, Side};
    let handler = |body: &[u8]| -> Result<Vec<u8>, Status> { Ok(body.to_vec()) };
    let mut dec = Decoder::new(Side::Server, FrameLimits::default());
    let mut enc = Encoder::new();
    let mut rbuf = BytesMut::with_capacity(64 * 1024);
    let mut scratch = vec![0u8; 64 * 1024];
    loop {
        match s.read(&mut scratch) {
            Ok(0) | Err(_) => return,
            Ok(n) => rbuf.extend_from_slice(&scratch[..n]),
        }
        loop {
            let frame = match dec.decode(&mut rbuf) {
                Ok(Some(Decoded::Frame(f))) => f,
                Ok(None) => break,
                Ok(Some(Decoded::BodyTooLarge { .. })) | Err(_) => return,
            };
            if frame.frame_type() != FrameType::Request {
                continue;
            }
            let Ok(meta) = RequestMeta::decode(&frame.meta) else {
                return;
            };
            let reply = if meta.method == super::load::ECHO_BYTES {
                handler(&frame.body)
            } else {
                Err(Status::unimplemented(meta.method.to_owned()))
            };
            let id = frame.request_id();
            let flags = frame.header.flags;
            let written = match reply {
                Ok(body) => enc.response(id, flags, &ResponseMeta::new(syncrpc::Code::OK), &body),
                Err(status) => {
                    let meta = ResponseMeta {
                        message: Some(status.message()),
                        ..ResponseMeta::new(status.code())
                    };
                    enc.response(id, flags, &meta, &[])
                }
            };
            if written.is_err() {
                return;
            }
        }
        if !enc.is_empty() {
            if s.write_all(enc.as_slice()).is_err() {
                return;
            }
            enc.clear();
        }
    }
}

/// A server child process, as the bench sees it.
pub struct ServerProc {
    child: Child,
    out: BufReader<ChildStdout>,
    /// Where it listens.
    pub addr: SocketAddr,
}

/// What `/proc/PID/status` says about a process.
#[derive(Clone, Copy, Debug, Default)]
pub struct Memory {
    /// Resident set size now, KiB (`VmRSS`).
    pub rss_kib: u64,
    /// Peak resident set size, KiB (`VmHWM`).
    pub peak_rss_kib: u64,
    /// Threads (`Threads`).
    pub threads: u64,
}

impl ServerProc {
    /// Starts the server `kind` with `args` (see [`serve`]), on core 0 if
    /// `pin`.
    pub fn start(kind: &str, args: &[String], pin: bool) -> io::Result<ServerProc> {
        let exe = std::env::current_exe()?;
        let mut cmd = if pin {
            let mut c = Command::new("taskset");
            c.arg("-c").arg("0").arg(exe);
            c
        } else {
            Command::new(exe)
        };
        let mut child = cmd
            .arg("--serve")
            .arg(kind)
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()?;
        let mut out = BufReader::new(child.stdout.take().expect("piped stdout"));
        let mut line = String::new();
        out.read_line(&mut line)?;
        let port: u16 = line.trim().parse().map_err(|_| {
            io::Error::new(
                io::ErrorKind::InvalidData,
                format!("the {kind} server did not start (said {line:?})"),
            )
        })?;
        Ok(ServerProc {
            child,
            out,
            addr: SocketAddr::from(([127, 0, 0, 1], port)),
        })
    }

    /// (allocations, on-CPU ns) of the server so far.
    pub fn stats(&mut self) -> io::Result<(u64, u64)> {
        let stdin = self.child.stdin.as_mut().expect("piped stdin");
        writeln!(stdin, "stats")?;
        stdin.flush()?;
        let mut line = String::new();
        self.out.read_line(&mut line)?;
        let mut it = line.split_whitespace().map(|v| v.parse::<u64>());
        match (it.next(), it.next()) {
            (Some(Ok(allocs)), Some(Ok(cpu))) => Ok((allocs, cpu)),
            _ => Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("the server's stats line is {line:?}"),
            )),
        }
    }

    /// The server's memory and thread count.
    pub fn memory(&self) -> Memory {
        memory_of(self.child.id())
    }

    /// Whether the process is still running.
    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// Closes its standard input and waits for it to shut down.
    pub fn stop(mut self) -> io::Result<ExitStatus> {
        drop(self.child.stdin.take());
        self.child.wait()
    }
}

/// Reads `/proc/PID/status`; zeros for what cannot be read.
pub fn memory_of(pid: u32) -> Memory {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let field = |name: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0)
    };
    Memory {
        rss_kib: field("VmRSS:"),
        peak_rss_kib: field("VmHWM:"),
        threads: field("Threads:"),
    }
}

/// Pins this process (the load) to core 1 and reports whether servers can
/// be pinned to core 0: two cores or more and `taskset` installed.
/// Threads started later inherit the pinning.
pub fn pin_load() -> bool {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let taskset = Command::new("taskset")
        .arg("-V")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if cores < 2 || !taskset {
        return false;
    }
    Command::new("taskset")
        .args(["-a", "-p", "-c", "1"])
        .arg(std::process::id().to_string())
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// An environment variable as a number, or `default`.
pub fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

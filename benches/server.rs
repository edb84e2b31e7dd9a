//! Server throughput, latency, CPU and allocations per request, against a
//! ceiling: a minimal mio server for the same protocol that parses headers
//! and echoes bodies, with no pool, no meta or body decoding.
//!
//! ```text
//! cargo bench --bench server                   # every row, 2 s each
//! BENCH_SECS=5 BENCH_WORKERS=2 cargo bench --bench server
//! # profiling: a server by hand, then load only
//! target/release/deps/server-* --serve syncrpc    # prints its port
//! target/release/deps/server-* --load PORT 16 32 10
//! ```
//!
//! Each server runs in a child process of this binary pinned to core 0
//! (`taskset`, when the machine has two cores or more); the load runs in
//! this process pinned to core 1, on one mio thread driving every
//! connection. CPU per request is the server process's on-CPU time (from
//! `/proc/<pid>/task/*/schedstat`) over the requests answered; allocations
//! per request come from a counting global allocator in the server process.
//!
//! The syncrpc server runs with one worker by default (`BENCH_WORKERS`):
//! it is pinned to one core and the handler never blocks, so more workers
//! would only add context switches.

use std::alloc::{GlobalAlloc, Layout, System};
use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::{Buf, Bytes, BytesMut};
use mio::net::{TcpListener, TcpStream};
use mio::{Events, Interest, Poll, Token};
use syncrpc::codec::msgpack::Scanner;
use syncrpc::codec::{
    Compression, Decoded, Decoder, Encoding, Flags, FrameLimits, FrameType, Header, RequestId,
    RequestMeta, Side, HEADER_LEN,
};
use syncrpc::server::ServerConfig;
use syncrpc::{Context, Server, Service, Status};

struct Counting;

static ALLOCS: AtomicU64 = AtomicU64::new(0);

// SAFETY: forwards to the system allocator unchanged; only counts calls.
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

const METHOD: &str = "/bench.Bench/Echo";
const BODY_LEN: usize = 64;

/// The protocol the load speaks; the syncrpc server serves both.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Wire {
    Native,
    MsgpackRpc,
}

/// `[0, msgid, METHOD, [bin BODY_LEN]]` with the msgid as a uint32 at byte
/// 3, so it can be patched like the native header's request id.
fn msgpack_rpc_request() -> Vec<u8> {
    let mut v = vec![0x94, 0x00, 0xce, 0, 0, 0, 0, 0xa0 | METHOD.len() as u8];
    v.extend_from_slice(METHOD.as_bytes());
    v.extend_from_slice(&[0x91, 0xc4, BODY_LEN as u8]);
    v.extend_from_slice(&[42u8; BODY_LEN]);
    v
}

/// The msgid of a MessagePack-RPC response `[1, msgid, error, result]`.
fn msgpack_rpc_id(msg: &[u8]) -> usize {
    assert_eq!(&msg[..2], &[0x94, 0x01], "not a response");
    assert!(msg.len() > 2, "truncated response");
    let be = |n: usize| {
        msg[3..3 + n]
            .iter()
            .fold(0usize, |a, &b| a << 8 | b as usize)
    };
    match msg[2] {
        m @ 0x00..=0x7f => m as usize,
        0xcc => be(1),
        0xcd => be(2),
        0xce => be(4),
        m => panic!("msgid marker 0x{m:02x}"),
    }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if let Some(i) = args.iter().position(|a| a == "--serve") {
        serve(args.get(i + 1).map(String::as_str).unwrap_or("syncrpc"));
        return;
    }
    if let Some(i) = args.iter().position(|a| a == "--load") {
        // Load only, against a server started by hand (for profiling it):
        // --load PORT CONNS DEPTH SECS
        let n = |k: usize| {
            args.get(i + k)
                .and_then(|v| v.parse::<u64>().ok())
                .unwrap_or(1)
        };
        let addr = SocketAddr::from(([127, 0, 0, 1], n(1) as u16));
        let (lat, count) = load(
            addr,
            Wire::Native,
            n(2) as usize,
            n(3) as usize,
            Duration::ZERO,
            Duration::from_secs(n(4)),
            || {},
        );
        println!(
            "{count} requests, {:.0} req/s, {} latencies",
            count as f64 / n(4) as f64,
            lat.len()
        );
        return;
    }
    // `cargo bench` passes --bench; `cargo test --benches` does not, and
    // then there is nothing to measure.
    if !args.iter().any(|a| a == "--bench") {
        return;
    }
    drive();
}

// ---------------------------------------------------------------- servers

/// Runs a server, prints its port, then answers "stats" lines on stdin
/// with allocation and CPU counts, until stdin closes.
fn serve(kind: &str) {
    let workers = env_usize("BENCH_WORKERS", 1);
    let (addr, stop): (SocketAddr, Box<dyn FnOnce()>) = match kind {
        "ceiling" => {
            let listener = TcpListener::bind("127.0.0.1:0".parse().unwrap()).unwrap();
            let addr = listener.local_addr().unwrap();
            std::thread::Builder::new()
                .name("ceiling".into())
                .spawn(move || ceiling(listener))
                .unwrap();
            (addr, Box::new(|| {}))
        }
        _ => {
            let svc = Service::new("bench.Bench")
                .raw_method("Echo", |_: &Context, body: Bytes| Ok::<_, Status>(body));
            let server = Server::builder()
                .config(ServerConfig {
                    workers,
                    ..ServerConfig::default()
                })
                .service(svc)
                .bind("127.0.0.1:0")
                .unwrap();
            let addr = server.local_addr();
            (addr, Box::new(move || drop(server.shutdown())))
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
    stop();
}

/// On-CPU nanoseconds of every thread of this process.
fn cpu_ns() -> u64 {
    let mut total = 0;
    if let Ok(dir) = std::fs::read_dir("/proc/self/task") {
        for task in dir.flatten() {
            let path = task.path().join("schedstat");
            if let Ok(s) = std::fs::read_to_string(path) {
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
                    conns[slot] = Some((
                        s,
                        BytesMut::with_capacity(64 * 1024),
                        BytesMut::with_capacity(64 * 1024),
                    ));
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

// ------------------------------------------------------------------- load

struct ServerProc {
    child: Child,
    out: BufReader<std::process::ChildStdout>,
    addr: SocketAddr,
}

impl ServerProc {
    fn start(kind: &str, pin: bool) -> ServerProc {
        let exe = std::env::current_exe().unwrap();
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
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("start the server process");
        let mut out = BufReader::new(child.stdout.take().unwrap());
        let mut line = String::new();
        out.read_line(&mut line).unwrap();
        let port: u16 = line.trim().parse().expect("a port");
        ServerProc {
            child,
            out,
            addr: SocketAddr::from(([127, 0, 0, 1], port)),
        }
    }

    /// (allocations, cpu ns) so far.
    fn stats(&mut self) -> (u64, u64) {
        let stdin = self.child.stdin.as_mut().unwrap();
        writeln!(stdin, "stats").unwrap();
        stdin.flush().unwrap();
        let mut line = String::new();
        self.out.read_line(&mut line).unwrap();
        let mut it = line.split_whitespace().map(|v| v.parse::<u64>().unwrap());
        (it.next().unwrap(), it.next().unwrap())
    }

    fn stop(mut self) {
        drop(self.child.stdin.take());
        let _ = self.child.wait();
    }
}

struct Row {
    rps: f64,
    p50: Duration,
    p99: Duration,
    cpu_us: f64,
    allocs: f64,
}

struct LoadConn {
    stream: TcpStream,
    dec: Decoder,
    rbuf: BytesMut,
    wbuf: BytesMut,
    sent: Vec<Instant>,
}

/// Drives `conns` connections with `depth` requests in flight each, for
/// `warmup` and then `dur`; returns latencies (us) and requests counted
/// after the warm-up, and calls `mark` when the warm-up ends.
fn load(
    addr: SocketAddr,
    wire: Wire,
    conns: usize,
    depth: usize,
    warmup: Duration,
    dur: Duration,
    mut mark: impl FnMut(),
) -> (Vec<u32>, u64) {
    let mut poll = Poll::new().unwrap();
    let mut events = Events::with_capacity(1024);
    let flags = Flags::new(Compression::None, Encoding::Raw);
    let mut template = syncrpc::codec::Encoder::new();
    template
        .request(
            RequestId(0),
            flags,
            &RequestMeta::new(METHOD),
            &[42u8; BODY_LEN],
        )
        .unwrap();
    let (template, id_at) = match wire {
        Wire::Native => (template.as_slice().to_vec(), 8),
        Wire::MsgpackRpc => (msgpack_rpc_request(), 3),
    };
    let mut cs: Vec<LoadConn> = (0..conns)
        .map(|i| {
            let std = std::net::TcpStream::connect(addr).unwrap();
            std.set_nodelay(true).unwrap();
            std.set_nonblocking(true).unwrap();
            let mut stream = TcpStream::from_std(std);
            poll.registry()
                .register(
                    &mut stream,
                    Token(i),
                    Interest::READABLE | Interest::WRITABLE,
                )
                .unwrap();
            LoadConn {
                stream,
                dec: Decoder::new(Side::Client, FrameLimits::default()),
                rbuf: BytesMut::with_capacity(64 * 1024),
                wbuf: BytesMut::with_capacity(64 * 1024),
                sent: vec![Instant::now(); depth],
            }
        })
        .collect();
    let push = |c: &mut LoadConn, id: usize| {
        let start = c.wbuf.len();
        c.wbuf.extend_from_slice(&template);
        c.wbuf[start + id_at..start + id_at + 4].copy_from_slice(&(id as u32).to_be_bytes());
        c.sent[id] = Instant::now();
    };
    for c in cs.iter_mut() {
        for id in 0..depth {
            push(c, id);
        }
    }
    let begin = Instant::now();
    let measure_from = begin + warmup;
    let end = measure_from + dur;
    let mut measuring = false;
    let mut lat = Vec::with_capacity(1 << 20);
    let mut count = 0u64;
    let mut scratch = vec![0u8; 64 * 1024];
    let mut ids = Vec::with_capacity(depth);
    for c in cs.iter_mut() {
        flush(c);
    }
    loop {
        let now = Instant::now();
        if !measuring && now >= measure_from {
            measuring = true;
            mark();
        }
        if now >= end {
            break;
        }
        poll.poll(&mut events, Some(Duration::from_millis(10)))
            .unwrap();
        for ev in events.iter() {
            let c = &mut cs[ev.token().0];
            loop {
                match c.stream.read(&mut scratch) {
                    Ok(0) => panic!("server closed a connection"),
                    Ok(n) => c.rbuf.extend_from_slice(&scratch[..n]),
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                    Err(e) => panic!("read: {e}"),
                }
            }
            let now = Instant::now();
            ids.clear();
            match wire {
                Wire::Native => {
                    while let Some(d) = c.dec.decode(&mut c.rbuf).unwrap() {
                        let Decoded::Frame(f) = d else {
                            panic!("oversized")
                        };
                        ids.push(f.request_id().0 as usize);
                    }
                }
                Wire::MsgpackRpc => {
                    while let Some(end) = Scanner::new(16).advance(&c.rbuf).unwrap() {
                        ids.push(msgpack_rpc_id(&c.rbuf[..end]));
                        c.rbuf.advance(end);
                    }
                }
            }
            for &id in &ids {
                if measuring {
                    lat.push(now.duration_since(c.sent[id]).as_micros() as u32);
                    count += 1;
                }
                push(c, id);
            }
            flush(c);
        }
    }
    (lat, count)
}

fn flush(c: &mut LoadConn) {
    while !c.wbuf.is_empty() {
        match c.stream.write(&c.wbuf) {
            Ok(n) => c.wbuf.advance(n),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
            Err(e) => panic!("write: {e}"),
        }
    }
}

fn run_row(kind: &str, wire: Wire, pin: bool, conns: usize, depth: usize, dur: Duration) -> Row {
    let mut server = ServerProc::start(kind, pin);
    let mut before = (0, 0);
    let started = std::cell::Cell::new(Instant::now());
    let (mut lat, count) = {
        let server_ref = &mut server;
        load(
            server_ref.addr,
            wire,
            conns,
            depth,
            Duration::from_millis(300),
            dur,
            || {
                before = server_ref.stats();
                started.set(Instant::now());
            },
        )
    };
    let elapsed = started.get().elapsed();
    let after = server.stats();
    server.stop();
    lat.sort_unstable();
    let q = |p: f64| {
        let i = ((lat.len() as f64 * p) as usize).min(lat.len().saturating_sub(1));
        Duration::from_micros(u64::from(lat.get(i).copied().unwrap_or(0)))
    };
    let n = count.max(1) as f64;
    Row {
        rps: count as f64 / elapsed.as_secs_f64(),
        p50: q(0.50),
        p99: q(0.99),
        cpu_us: (after.1 - before.1) as f64 / 1000.0 / n,
        allocs: (after.0 - before.0) as f64 / n,
    }
}

fn drive() {
    let secs = env_usize("BENCH_SECS", 2) as u64;
    let dur = Duration::from_secs(secs);
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let pin = cores >= 2
        && Command::new("taskset")
            .arg("-V")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
    if pin {
        // Pins this process (the load) to core 1; threads started later
        // inherit it.
        let _ = Command::new("taskset")
            .args(["-a", "-p", "-c", "1"])
            .arg(std::process::id().to_string())
            .stdout(Stdio::null())
            .status();
    }
    println!(
        "server pinned to core 0, load to core 1: {pin}; {secs} s per row; body {BODY_LEN} B raw echo; syncrpc workers {}",
        env_usize("BENCH_WORKERS", 1)
    );
    println!(
        "{:>5} {:>6} | {:>10} {:>8} {:>8} {:>8} | {:>10} {:>8} {:>8} {:>8} {:>7} | {:>5}",
        "conns",
        "depth",
        "ceil req/s",
        "p50",
        "p99",
        "cpu/req",
        "rpc req/s",
        "p50",
        "p99",
        "cpu/req",
        "allocs",
        "ratio"
    );
    for depth in [1usize, 32] {
        for conns in [1usize, 16, 128] {
            let c = run_row("ceiling", Wire::Native, pin, conns, depth, dur);
            let s = run_row("syncrpc", Wire::Native, pin, conns, depth, dur);
            println!(
                "{:>5} {:>6} | {:>10.0} {:>8?} {:>8?} {:>6.1}us | {:>10.0} {:>8?} {:>8?} {:>6.1}us {:>7.2} | {:>5.2}",
                conns, depth, c.rps, c.p50, c.p99, c.cpu_us, s.rps, s.p50, s.p99, s.cpu_us,
                s.allocs, s.rps / c.rps
            );
        }
    }
    // The same server and handler over MessagePack-RPC: what the
    // protocol seam and the other framing cost, beside the native rows.
    println!(
        "{:>5} {:>6} | {:>10} {:>8} {:>8} {:>8} {:>7} | {:>10} {:>5}",
        "conns", "depth", "mrpc req/s", "p50", "p99", "cpu/req", "allocs", "native", "ratio"
    );
    for depth in [1usize, 32] {
        for conns in [1usize, 16] {
            let n = run_row("syncrpc", Wire::Native, pin, conns, depth, dur);
            let m = run_row("syncrpc", Wire::MsgpackRpc, pin, conns, depth, dur);
            println!(
                "{:>5} {:>6} | {:>10.0} {:>8?} {:>8?} {:>6.1}us {:>7.2} | {:>10.0} {:>5.2}",
                conns,
                depth,
                m.rps,
                m.p50,
                m.p99,
                m.cpu_us,
                m.allocs,
                n.rps,
                m.rps / n.rps
            );
        }
    }
}

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

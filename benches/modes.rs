//! Thread mode against event mode, on the same machine in one run: which
//! one to choose.
//!
//! ```text
//! cargo bench --bench modes                  # everything, about 2.5 minutes
//! cargo bench --bench modes -- throughput    # only the load table
//! cargo bench --bench modes -- capacity      # only the idle connections
//! BENCH_SECS=5 BENCH_CONNS=16,128 cargo bench --bench modes -- throughput
//! BENCH_RUNS=3 BENCH_SECS=1 cargo bench --bench modes   # medians of 3, 4 minutes
//! ```
//!
//! **Throughput.** For 1, 16, 128 and 1000 connections, each closed loop
//! (one request in flight per connection) and pipelined (16 in flight),
//! with 64-byte and 16 KiB raw bodies echoed: requests per second, p50
//! and p99 latency, the server's CPU time per request and its peak RSS.
//! Each cell runs a fresh server process for each of the ceiling (see
//! `benches/support/server_proc.rs`), event mode and thread mode, for a
//! 500 ms warm-up and `BENCH_SECS` (default 2) measured seconds;
//! `BENCH_RUNS=N` repeats that N times, the servers taking turns, and
//! keeps each server's median run (by rate). Every
//! server is pinned to core 0 and the load (`cli/src/load/driver.rs`,
//! one mio thread) to core 1 when the machine has two cores; syncrpc runs
//! `BENCH_WORKERS` workers (default 1: one core, a handler that never
//! blocks) and a work queue of 16384 (the default 4096 would refuse
//! part of 1000 x 16 in flight). `BENCH_THREAD_INLINE=1` runs thread mode's handlers on its
//! connection threads instead of the pool.
//!
//! **Capacity.** How many mostly idle connections each mode holds: it
//! opens `BENCH_IDLE_CONNS` (default 10000) connections in ten steps, each
//! one PINGed and answered, and reads the server's RSS and threads
//! (`/proc/PID/status`) before and once they are all held; the server's
//! connection limit is set to the same number. RSS leaves out what a
//! connection costs in the kernel: its socket, and for each thread a
//! kernel stack, shown from the machine-wide `KernelStack` of
//! `/proc/meminfo` (other processes starting threads meanwhile blur it). It then opens 20 more, which must each be
//! refused with GOAWAY `RESOURCE_EXHAUSTED`, and times 2000 calls on one
//! held connection to show the server still serves. A mode stops early if
//! a connection is refused, closed or unanswered, and the table says
//! where and why. The descriptor limit of this process (and so of the
//! servers it starts) is raised to its hard limit with `prlimit`, and the
//! target lowered if even that is too small.
//!
//! All traffic stays on 127.0.0.1. Nothing runs under `cargo test`: the
//! measuring needs `--bench`, which only `cargo bench` passes.

#[path = "../cli/src/load/driver.rs"]
mod load;
#[path = "support/server_proc.rs"]
mod server_proc;

use std::fmt::Write as _;
use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::Command;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use load::{Latency, Load, Mark, Outcome};
use server_proc::{env_usize, Memory, ServerProc};
use syncrpc::codec::{
    Decoded, Decoder, Encoder, FrameLimits, FrameType, GoawayMeta, RequestId, Side,
};
use syncrpc::Code;

/// Requests in flight per connection when pipelining.
const PIPELINE_DEPTH: usize = 16;
/// The servers' work queue: room for 1000 connections x 16 in flight,
/// so that no cell measures the queue refusing work instead of the I/O.
const QUEUE: usize = 16 * 1024;
/// Connections opened past the limit in the capacity test.
const PAST_LIMIT: usize = 20;
/// Calls timed on a held connection once the idle ones are open.
const PROBE_CALLS: usize = 2000;
/// Longest wait for one answer in the capacity test.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(10);

fn main() {
    let Some(args) = server_proc::bench_args() else {
        return;
    };
    let only: Vec<&str> = args
        .iter()
        .map(String::as_str)
        .filter(|a| !a.starts_with('-'))
        .collect();
    let wants = |part: &str| only.is_empty() || only.contains(&part);
    // Counted before pinning narrows what this process may use.
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let pin = server_proc::pin_load();
    let (nofile, _) = raise_nofile();
    println!("{}", machine_line(cores, pin));
    println!();
    if wants("throughput") {
        throughput(pin);
    }
    if wants("capacity") {
        capacity(pin, nofile);
    }
    println!("finished {}; load average {}", now(), load_average());
}

/// One line saying what ran where, for the record under a table.
fn machine_line(cores: usize, pin: bool) -> String {
    format!(
        "{}; {cores} cores, load average {} before the run; server {} core 0, load {} core 1; \
         syncrpc workers {}; {} s per cell after a 500 ms warm-up, median of {} runs",
        now(),
        load_average(),
        if pin { "pinned to" } else { "not pinned to" },
        if pin { "on" } else { "not on" },
        env_usize("BENCH_WORKERS", 1),
        env_usize("BENCH_SECS", 2),
        env_usize("BENCH_RUNS", 1).max(1),
    )
}

/// The date and time, UTC, to the minute.
fn now() -> String {
    Command::new("date")
        .args(["-u", "+%Y-%m-%d %H:%M UTC"])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap_or_default()
}

/// The 1, 5 and 15 minute load averages: how busy the machine was with
/// things other than the bench.
fn load_average() -> String {
    let text = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    text.split_whitespace()
        .take(3)
        .collect::<Vec<_>>()
        .join(" ")
}

// ------------------------------------------------------------- throughput

/// One server's numbers in one cell of the table.
struct Cell {
    out: Outcome,
    cpu_us: f64,
    peak_rss_kib: u64,
}

fn server_args(kind: &str, extra: &[String]) -> Vec<String> {
    let mut args = vec![
        "--workers".to_owned(),
        env_usize("BENCH_WORKERS", 1).to_string(),
        "--queue".to_owned(),
        QUEUE.to_string(),
    ];
    if kind == "thread" && env_usize("BENCH_THREAD_INLINE", 0) == 1 {
        args.push("--inline".to_owned());
    }
    args.extend_from_slice(extra);
    args
}

fn run_cell(kind: &str, pin: bool, conns: usize, depth: usize, body: usize) -> io::Result<Cell> {
    let mut server = ServerProc::start(kind, &server_args(kind, &[]), pin)?;
    let load = Load {
        warmup: Duration::from_millis(500),
        duration: Duration::from_secs(env_usize("BENCH_SECS", 2) as u64),
        ..Load::echo(server.addr, conns, depth, body)
    };
    let (mut before, mut after, mut peak) = (0, 0, 0);
    let mut stats_error = None;
    let out = load.run(|mark| {
        let cpu = match server.stats() {
            Ok((_, cpu)) => cpu,
            Err(e) => {
                stats_error = Some(e);
                0
            }
        };
        match mark {
            Mark::Start => before = cpu,
            Mark::End => {
                after = cpu;
                peak = server.memory().peak_rss_kib;
            }
        }
    })?;
    let status = server.stop()?;
    if let Some(e) = stats_error {
        return Err(e);
    }
    if !status.success() {
        return Err(io::Error::other(format!(
            "the {kind} server ended with {status}"
        )));
    }
    Ok(Cell {
        cpu_us: after.saturating_sub(before) as f64 / 1000.0 / out.answered.max(1) as f64,
        peak_rss_kib: peak,
        out,
    })
}

fn list(name: &str, default: &[usize]) -> Vec<usize> {
    match std::env::var(name) {
        Ok(v) => v.split(',').filter_map(|n| n.trim().parse().ok()).collect(),
        Err(_) => default.to_vec(),
    }
}

/// The servers of each cell, in the table's order.
const KINDS: [&str; 3] = ["ceiling", "event", "thread"];

/// The round with the median rate, if any round ran.
fn median(mut rounds: Vec<Cell>) -> Option<Cell> {
    rounds.sort_by(|a, b| a.out.rate().total_cmp(&b.out.rate()));
    let mid = rounds.len() / 2;
    rounds.into_iter().nth(mid)
}

fn throughput(pin: bool) {
    let conns = list("BENCH_CONNS", &[1, 16, 128, 1000]);
    let runs = env_usize("BENCH_RUNS", 1).max(1);
    let mut table = String::from(
        "| body | conns x in flight | ceiling req/s | event req/s | thread req/s | thread / event | event / ceiling \
         | event p50 / p99 | thread p50 / p99 | CPU per req event / thread | peak RSS event / thread |\n\
         |---|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|\n",
    );
    let mut notes = Vec::new();
    println!("throughput (each line as it is measured):");
    for body in [64, 16 * 1024] {
        for depth in [1, PIPELINE_DEPTH] {
            for &c in &conns {
                // Each round runs every server once, so that a burst of
                // noise from elsewhere hits them alike; each server's
                // median round by rate goes in the table.
                let mut rounds: [Vec<Cell>; 3] = Default::default();
                for _ in 0..runs {
                    for (kind, results) in KINDS.iter().zip(&mut rounds) {
                        match run_cell(kind, pin, c, depth, body) {
                            Ok(cell) => {
                                let o = &cell.out;
                                println!(
                                    "  {body:>5} B {c:>4} x {depth:>2} {kind:>7}: {:>9.0} req/s, p50 {}, p99 {}, {:.1} us CPU/req, peak RSS {} MiB, {} non-OK, {} lost",
                                    o.rate(),
                                    Latency(o.quantile(0.5)),
                                    Latency(o.quantile(0.99)),
                                    cell.cpu_us,
                                    cell.peak_rss_kib / 1024,
                                    o.failures(),
                                    o.lost_requests
                                );
                                if o.failures() > 0 || !o.lost_connections.is_empty() {
                                    notes.push(format!(
                                        "{kind}, {body} B, {c} x {depth}: {} non-OK {:?}, lost connections {:?}",
                                        o.failures(),
                                        o.failed,
                                        o.lost_connections.first()
                                    ));
                                }
                                results.push(cell);
                            }
                            Err(e) => {
                                println!(
                                    "  {body:>5} B {c:>4} x {depth:>2} {kind:>7}: failed: {e}"
                                );
                                notes.push(format!("{kind}, {body} B, {c} x {depth}: {e}"));
                            }
                        }
                    }
                }
                let cells: Vec<Option<Cell>> = rounds.into_iter().map(median).collect();
                table_row(&mut table, body, c, depth, &cells);
            }
        }
    }
    println!();
    print!("{table}");
    for n in notes {
        println!("- {n}");
    }
    println!();
}

fn table_row(table: &mut String, body: usize, conns: usize, depth: usize, cells: &[Option<Cell>]) {
    let rate = |i: usize| cells[i].as_ref().map(|c| c.out.rate());
    let text = |v: Option<f64>| v.map_or_else(|| "failed".to_owned(), |r| format!("{r:.0}"));
    let ratio = |a: Option<f64>, b: Option<f64>| match (a, b) {
        (Some(a), Some(b)) if b > 0.0 => format!("{:.2}", a / b),
        _ => "-".to_owned(),
    };
    let one =
        |i: usize, f: &dyn Fn(&Cell) -> String| cells[i].as_ref().map_or_else(|| "-".to_owned(), f);
    let latency = |c: &Cell| {
        format!(
            "{} / {}",
            Latency(c.out.quantile(0.5)),
            Latency(c.out.quantile(0.99))
        )
    };
    let cpu = |c: &Cell| format!("{:.1} us", c.cpu_us);
    let rss = |c: &Cell| format!("{} MiB", c.peak_rss_kib / 1024);
    let body = if body >= 1024 {
        format!("{} KiB", body / 1024)
    } else {
        format!("{body} B")
    };
    let _ = writeln!(
        table,
        "| {body} | {conns} x {depth} | {} | {} | {} | {} | {} | {} | {} | {} / {} | {} / {} |",
        text(rate(0)),
        text(rate(1)),
        text(rate(2)),
        ratio(rate(2), rate(1)),
        ratio(rate(1), rate(0)),
        one(1, &latency),
        one(2, &latency),
        one(1, &cpu),
        one(2, &cpu),
        one(1, &rss),
        one(2, &rss),
    );
}

// --------------------------------------------------------------- capacity

/// Raises this process's soft descriptor limit to its hard limit (the
/// servers it starts inherit it) and returns (soft, hard) as they are
/// then.
fn raise_nofile() -> (usize, usize) {
    let pid = std::process::id().to_string();
    let read = || {
        let out = Command::new("prlimit")
            .args(["--pid", &pid, "--nofile", "--raw", "--noheadings"])
            .args(["--output=SOFT,HARD"])
            .output()
            .ok()?;
        let text = String::from_utf8_lossy(&out.stdout).to_string();
        let mut it = text.split_whitespace().map(|v| v.parse::<usize>().ok());
        Some((it.next()??, it.next()??))
    };
    let Some((_, hard)) = read() else {
        return (1024, 1024);
    };
    let _ = Command::new("prlimit")
        .args(["--pid", &pid, &format!("--nofile={hard}:{hard}")])
        .status();
    read().unwrap_or((1024, hard))
}

/// How one mode fared with idle connections.
struct Capacity {
    mode: &'static str,
    target: usize,
    held: usize,
    /// Why it stopped short of the target, if it did.
    stopped: Option<String>,
    base: Memory,
    at_held: Memory,
    /// The whole machine's kernel stacks (KiB) at the start and once
    /// the connections are held: what a thread costs outside the RSS.
    kernel_stacks: (u64, u64),
    /// Connections past the limit refused with GOAWAY RESOURCE_EXHAUSTED,
    /// out of those tried, and the first other outcome.
    refused: (usize, usize, Option<String>),
    /// p50 and p99 of calls on a held connection, with the rest idle.
    probe: Option<(Duration, Duration)>,
    /// How the server process ended.
    exit: String,
}

fn capacity(pin: bool, nofile: usize) {
    let wanted = env_usize("BENCH_IDLE_CONNS", 10_000);
    // This process holds every client socket; leave room for the rest.
    let target = wanted.min(nofile.saturating_sub(PAST_LIMIT + 200));
    println!("capacity (mostly idle connections):");
    if target < wanted {
        println!("  the descriptor limit is {nofile}: trying {target} connections, not {wanted}");
    }
    let results: Vec<Capacity> = ["event", "thread"]
        .into_iter()
        .map(|mode| {
            let r = hold(mode, target, pin);
            println!(
                "  {mode}: held {} of {}{}",
                r.held,
                r.target,
                r.stopped
                    .as_ref()
                    .map_or_else(String::new, |s| format!(", stopped: {s}"))
            );
            r
        })
        .collect();
    println!();
    println!(
        "| mode | held | stopped by | RSS per connection | threads per connection | kernel stacks per connection | RSS at held | {PAST_LIMIT} more | a call with the rest idle, p50 / p99 | server afterwards |"
    );
    println!("|---|--:|---|--:|--:|--:|--:|---|--:|---|");
    for r in &results {
        let n = r.held.max(1) as f64;
        let per_conn = (r.at_held.rss_kib.saturating_sub(r.base.rss_kib)) as f64 / n;
        let threads = (r.at_held.threads.saturating_sub(r.base.threads)) as f64 / n;
        let stacks = r.kernel_stacks.1.saturating_sub(r.kernel_stacks.0) as f64 / n;
        let stopped = r.stopped.as_deref().unwrap_or("the target");
        let (ok, tried, other) = &r.refused;
        let past = match other {
            None if *tried > 0 => "all refused: GOAWAY RESOURCE_EXHAUSTED".to_owned(),
            None => "not tried".to_owned(),
            Some(o) => format!("{ok} refused cleanly; other: {o}"),
        };
        let probe = r.probe.map_or_else(
            || "no answer".to_owned(),
            |(p50, p99)| format!("{} / {}", Latency(p50), Latency(p99)),
        );
        println!(
            "| {} | {} of {} | {stopped} | {per_conn:.1} KiB | {threads:.2} | {stacks:.1} KiB | {} MiB | {past} | {probe} | {} |",
            r.mode,
            r.held,
            r.target,
            r.at_held.rss_kib / 1024,
            r.exit
        );
    }
    println!();
}

/// Opens up to `target` idle connections to a fresh `mode` server, then
/// tries past its limit and checks it still serves.
fn hold(mode: &'static str, target: usize, pin: bool) -> Capacity {
    let limit = vec!["--max-connections".to_owned(), target.max(1).to_string()];
    let mut r = Capacity {
        mode,
        target,
        held: 0,
        stopped: None,
        base: Memory::default(),
        at_held: Memory::default(),
        kernel_stacks: (0, 0),
        refused: (0, 0, None),
        probe: None,
        exit: String::new(),
    };
    let mut server = match ServerProc::start(mode, &server_args(mode, &limit), pin) {
        Ok(s) => s,
        Err(e) => {
            r.stopped = Some(format!("the server did not start: {e}"));
            return r;
        }
    };
    r.base = server.memory();
    r.kernel_stacks.0 = kernel_stack_kib();
    let step = (target / 10).max(1);
    let mut conns: Vec<IdleConn> = Vec::with_capacity(target);
    'steps: while conns.len() < target {
        let from = conns.len();
        let to = (from + step).min(target);
        for i in from..to {
            match IdleConn::open(server.addr, i as u32) {
                Ok(w) => conns.push(w),
                Err(e) => {
                    r.stopped = Some(format!("connection {} not opened: {e}", i + 1));
                    break 'steps;
                }
            }
        }
        for (i, w) in conns[from..].iter_mut().enumerate() {
            if let Err(e) = w.expect_pong() {
                // The held count says which connection it was.
                r.stopped = Some(e.to_string());
                conns.truncate(from + i);
                break 'steps;
            }
        }
        r.held = conns.len();
    }
    r.held = conns.len();
    r.at_held = server.memory();
    r.kernel_stacks.1 = kernel_stack_kib();
    if server.is_running() {
        r.refused = past_the_limit(server.addr);
    }
    r.probe = conns.first_mut().and_then(|w| w.probe(PROBE_CALLS).ok());
    let running = server.is_running();
    drop(conns);
    r.exit = if !running {
        "crashed".to_owned()
    } else {
        match server.stop() {
            Ok(s) if s.success() => "still serving; stopped cleanly".to_owned(),
            Ok(s) => format!("still serving; then {s}"),
            Err(e) => format!("still serving; then {e}"),
        }
    };
    r
}

/// `KernelStack` of `/proc/meminfo`, in KiB: every thread's kernel stack,
/// machine-wide.
fn kernel_stack_kib() -> u64 {
    std::fs::read_to_string("/proc/meminfo")
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("KernelStack:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

/// Opens connections past the limit; each should be refused with GOAWAY
/// RESOURCE_EXHAUSTED.
fn past_the_limit(addr: SocketAddr) -> (usize, usize, Option<String>) {
    let mut refused = 0;
    let mut other = None;
    for i in 0..PAST_LIMIT {
        let outcome = IdleConn::open(addr, 0).and_then(|mut w| w.read_frame());
        match outcome {
            Ok((FrameType::Goaway, meta)) => match GoawayMeta::decode(&meta) {
                Ok(g) if g.code() == Code::RESOURCE_EXHAUSTED => refused += 1,
                Ok(g) => {
                    other.get_or_insert(format!("GOAWAY {:?}: {}", g.code(), g.message));
                }
                Err(e) => {
                    other.get_or_insert(format!("bad GOAWAY meta: {e}"));
                }
            },
            Ok((t, _)) => {
                other.get_or_insert(format!("connection {}: a {t:?} frame", i + 1));
            }
            Err(e) => {
                other.get_or_insert(format!("connection {}: {e}", i + 1));
            }
        }
    }
    (refused, PAST_LIMIT, other)
}

/// A blocking client connection speaking just enough of the protocol.
struct IdleConn {
    stream: TcpStream,
    dec: Decoder,
    buf: BytesMut,
}

impl IdleConn {
    /// Connects and sends a PING with `token`.
    fn open(addr: SocketAddr, token: u32) -> io::Result<IdleConn> {
        let stream = TcpStream::connect_timeout(&addr, ANSWER_TIMEOUT)?;
        stream.set_nodelay(true)?;
        stream.set_read_timeout(Some(ANSWER_TIMEOUT))?;
        let mut enc = Encoder::new();
        enc.ping(RequestId(token));
        (&stream).write_all(enc.as_slice())?;
        Ok(IdleConn {
            stream,
            dec: Decoder::new(Side::Client, FrameLimits::default()),
            buf: BytesMut::new(),
        })
    }

    /// The next frame's type and meta.
    fn read_frame(&mut self) -> io::Result<(FrameType, bytes::Bytes)> {
        let mut chunk = [0u8; 4096];
        loop {
            match self.dec.decode(&mut self.buf) {
                Ok(Some(Decoded::Frame(f))) => return Ok((f.frame_type(), f.meta)),
                Ok(Some(Decoded::BodyTooLarge { .. })) => {
                    return Err(io::Error::other("an answer over 10 MiB"))
                }
                Ok(None) => {}
                Err(e) => return Err(io::Error::other(format!("protocol error: {e}"))),
            }
            match self.stream.read(&mut chunk) {
                Ok(0) => return Err(io::Error::other("closed by the server")),
                Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                    ) =>
                {
                    return Err(io::Error::other(format!("no answer in {ANSWER_TIMEOUT:?}")))
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
    }

    fn expect_pong(&mut self) -> io::Result<()> {
        match self.read_frame()? {
            (FrameType::Pong, _) => Ok(()),
            (FrameType::Goaway, meta) => Err(io::Error::other(match GoawayMeta::decode(&meta) {
                Ok(g) => format!("GOAWAY {:?}: {}", g.code(), g.message),
                Err(e) => format!("GOAWAY with bad meta: {e}"),
            })),
            (t, _) => Err(io::Error::other(format!("a {t:?} frame instead of PONG"))),
        }
    }

    /// Times `n` echo calls, one at a time; (p50, p99).
    fn probe(&mut self, n: usize) -> io::Result<(Duration, Duration)> {
        let mut frame = load::request_frame(load::ECHO_BYTES, 64)?;
        let mut hist = load::latency_histogram();
        for id in 0..n as u32 {
            frame[8..12].copy_from_slice(&id.to_be_bytes());
            let start = Instant::now();
            (&self.stream).write_all(&frame)?;
            match self.read_frame()? {
                (FrameType::Response, meta) if meta == load::OK_META => {}
                (t, meta) => return Err(io::Error::other(format!("a {t:?} frame, meta {meta:?}"))),
            }
            hist.saturating_record(start.elapsed().as_nanos() as u64);
        }
        let q = |q| Duration::from_nanos(hist.value_at_quantile(q));
        Ok((q(0.5), q(0.99)))
    }
}

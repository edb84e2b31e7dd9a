//! Server throughput, latency, CPU and allocations per request, against a
//! ceiling: a minimal mio server for the same protocol that parses headers
//! and echoes bodies, with no pool, no meta or body decoding.
//!
//! ```text
//! cargo bench --bench server                   # every row, 3 runs of 2 s
//! cargo bench --features tls --bench server -- tls   # TLS rows only
//! BENCH_RUNS=5 BENCH_SECS=3 BENCH_WORKERS=2 cargo bench --bench server
//! BENCH_ONLY_LOG=1 cargo bench --bench server 2>/dev/null  # access log on/off only
//! # profiling: a server by hand, then load only
//! target/release/deps/server-* --serve event      # prints its port
//! cargo run --release --example load -- --addr 127.0.0.1:PORT -c 16 -d 32
//! ```
//!
//! Each server runs in a child process of this binary pinned to core 0
//! (`taskset`, when the machine has two cores or more); the load runs in
//! this process pinned to core 1, on one mio thread driving every
//! connection. CPU per request is the server process's on-CPU time (from
//! `/proc/<pid>/task/*/schedstat`) over the requests answered; allocations
//! per request come from a counting global allocator in the server process.
//!
//! Each row runs every server `BENCH_RUNS` times (default 3), the servers
//! taking turns, and shows each server's median run by rate: on a shared
//! machine one run can be off by a fifth.
//!
//! The syncrpc server runs in event mode with one worker by default
//! (`BENCH_WORKERS`): it is pinned to one core and the handler never
//! blocks, so more workers would only add context switches. The `inline`
//! columns run the same server with inline handlers
//! (`ServerConfig::inline_handlers`): the event loop runs the handler
//! itself, with no hand-off to a worker.
//!
//! The `thread` table runs thread mode, with its worker pool, against the
//! blocking ceiling (one thread per connection that cuts frames by their
//! headers and echoes them) and against a thread-per-connection server
//! that runs the handler on the connection's thread, as Apache Thrift's
//! threaded server does (`tpc-inline`, see `support/server_proc.rs`).
//!
//! A last table runs the same server and handler over MessagePack-RPC
//! beside the native protocol. `benches/modes.rs` compares event mode
//! with thread mode over more shapes of load.
//!
//! Name tables to run only those: `cargo bench --bench server -- thread`
//! (`event`, `thread`, `log`, `msgpack`, `tls`).
//!
//! `BENCH_SHARED=1` gives the server every core instead of one, with the
//! load unpinned beside it, and two workers by default: the many-CPU paths
//! of the pool and the loops, measured on a machine the load shares (on
//! two cores the load takes much of the second, so read ratios, not
//! rates). Each table's heading says which way it ran.
//!
//! With the `tls` feature (`cargo bench --features tls --bench server`), a
//! third table runs TLS beside plaintext, in both modes, at 64 B and
//! 16 KiB bodies (`ratio`: TLS rate over plaintext rate; `cpu ratio`: the
//! server's plaintext CPU per request over its TLS CPU per request, what
//! its one core could sustain, since the load's one core pays for TLS
//! too and can be the bottleneck), and a last line reports TLS handshakes per second of the
//! server's one core (its on-CPU time per handshake), full and resumed.

#[path = "../cli/src/load/driver.rs"]
mod load;
#[path = "support/server_proc.rs"]
mod server_proc;

use std::time::Duration;

use load::{Latency, Load, Mark, Wire};
use server_proc::{env_usize, ServerProc};

const BODY_LEN: usize = 64;

fn main() {
    if let Some(args) = server_proc::bench_args() {
        drive(&args);
    }
}

#[derive(Clone, Copy)]
struct Row {
    rps: f64,
    p50: Duration,
    p99: Duration,
    cpu_us: f64,
    allocs: f64,
}

/// Workers of the syncrpc servers: one per core the server gets.
fn workers() -> usize {
    env_usize("BENCH_WORKERS", if shared() { 2 } else { 1 })
}

/// `BENCH_SHARED=1`: the server is not pinned to one core.
fn shared() -> bool {
    env_usize("BENCH_SHARED", 0) == 1
}

fn run_row(kind: &str, wire: Wire, pin: bool, conns: usize, depth: usize, dur: Duration) -> Row {
    run_load(kind, &[], None, wire, pin, (conns, depth, BODY_LEN), dur)
}

/// One run of `conns` x `depth` echo calls of `body` bytes against the
/// server `kind` started with `extra` arguments, over TLS if `tls`.
fn run_load(
    kind: &str,
    extra: &[String],
    tls: Option<std::sync::Arc<rustls::ClientConfig>>,
    wire: Wire,
    pin: bool,
    (conns, depth, body): (usize, usize, usize),
    dur: Duration,
) -> Row {
    let workers = workers().to_string();
    let mut args = vec!["--workers".to_owned(), workers];
    let kind = match kind.strip_suffix("+log") {
        Some(kind) => {
            args.push("--access-log".to_owned());
            kind
        }
        None => kind,
    };
    args.extend(extra.iter().cloned());
    let kind = match kind.strip_suffix("+inline") {
        Some(kind) => {
            args.push("--inline".to_owned());
            kind
        }
        None => kind,
    };
    let mut server = ServerProc::start(kind, &args, pin).expect("start the server");
    let load = Load {
        wire,
        duration: dur,
        tls,
        ..Load::echo(server.addr, conns, depth, body)
    };
    let (mut before, mut after) = ((0, 0), (0, 0));
    let out = load
        .run(|mark| {
            let stats = server.stats().expect("server stats");
            match mark {
                Mark::Start => before = stats,
                Mark::End => after = stats,
            }
        })
        .expect("run the load");
    server.stop().expect("stop the server");
    assert!(
        out.lost_connections.is_empty() && out.failures() == 0,
        "{kind}: {:?} {:?}",
        out.lost_connections,
        out.failed
    );
    let n = out.answered.max(1) as f64;
    Row {
        rps: out.rate(),
        p50: out.quantile(0.50),
        p99: out.quantile(0.99),
        cpu_us: (after.1 - before.1) as f64 / 1000.0 / n,
        allocs: (after.0 - before.0) as f64 / n,
    }
}

/// Runs each of `servers` `runs` times, taking turns, and returns each
/// one's median run by rate.
fn median_rows<const N: usize>(
    servers: [(&str, Wire); N],
    runs: usize,
    run: impl Fn(&str, Wire) -> Row,
) -> [Row; N] {
    let mut rows: [Vec<Row>; N] = std::array::from_fn(|_| Vec::with_capacity(runs));
    for _ in 0..runs {
        for (i, (kind, wire)) in servers.iter().enumerate() {
            rows[i].push(run(kind, *wire));
        }
    }
    rows.map(|mut r| {
        r.sort_by(|a, b| a.rps.total_cmp(&b.rps));
        r[r.len() / 2]
    })
}

fn drive(args: &[String]) {
    let secs = env_usize("BENCH_SECS", 2) as u64;
    let runs = env_usize("BENCH_RUNS", 3).max(1);
    let dur = Duration::from_secs(secs);
    let only: Vec<&str> = args
        .iter()
        .map(String::as_str)
        .filter(|a| !a.starts_with('-'))
        .collect();
    let only_log = std::env::var_os("BENCH_ONLY_LOG").is_some();
    let wants = |part: &str| {
        if only_log {
            part == "log"
        } else {
            only.is_empty() || only.contains(&part)
        }
    };
    let pin = !shared() && server_proc::pin_load();
    let placement = if pin {
        "server pinned to core 0, load to core 1".to_owned()
    } else if shared() {
        format!(
            "SHARED: server on every core ({}), load unpinned beside it",
            std::thread::available_parallelism().map_or(1, |n| n.get())
        )
    } else {
        "nothing pinned (no taskset, or one core)".to_owned()
    };
    println!(
        "{}; load average {}; {placement}; {secs} s per run, median of {runs} interleaved; body {BODY_LEN} B raw echo; syncrpc workers {}",
        now(),
        load_average(),
        workers()
    );
    if wants("event") {
        event_table(pin, runs, dur);
    }
    if wants("thread") {
        thread_table(pin, runs, dur);
    }
    if wants("log") {
        log_table(pin, runs, dur);
    }
    if wants("msgpack") {
        msgpack_table(pin, runs, dur);
    }
    if wants("tls") {
        #[cfg(feature = "tls")]
        tls::table(runs, pin, dur);
        #[cfg(not(feature = "tls"))]
        println!("(TLS rows: cargo bench --features tls --bench server -- tls)");
    }
    println!("finished {}; load average {}", now(), load_average());
}

/// The date and time, UTC, to the minute.
fn now() -> String {
    std::process::Command::new("date")
        .args(["-u", "+%Y-%m-%d %H:%M UTC"])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap_or_default()
}

/// The 1, 5 and 15 minute load averages.
fn load_average() -> String {
    let text = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    text.split_whitespace()
        .take(3)
        .collect::<Vec<_>>()
        .join(" ")
}

/// Thread mode with its workers, the blocking ceiling, and the
/// thread-per-connection server with handlers inline.
fn thread_table(pin: bool, runs: usize, dur: Duration) {
    println!(
        "{:>5} {:>6} | {:>10} {:>7} | {:>10} {:>8} {:>8} {:>7} {:>7} | {:>10} {:>7} | {:>8} {:>8}",
        "conns",
        "depth",
        "block req/s",
        "cpu/req",
        "thread",
        "p50",
        "p99",
        "cpu/req",
        "allocs",
        "tpc-inline",
        "cpu/req",
        "thr/blk",
        "thr/tpc"
    );
    for (conns, depth) in [(1usize, 1usize), (16, 1), (128, 1), (16, 32)] {
        let [b, t, i] = median_rows(
            [
                ("blocking", Wire::Native),
                ("thread", Wire::Native),
                ("tpc-inline", Wire::Native),
            ],
            runs,
            |kind, wire| run_row(kind, wire, pin, conns, depth, dur),
        );
        println!(
            "{:>5} {:>6} | {:>10.0} {:>5.1}us | {:>10.0} {:>8} {:>8} {:>5.1}us {:>7.2} | {:>10.0} {:>5.1}us | {:>8.2} {:>8.2}",
            conns,
            depth,
            b.rps,
            b.cpu_us,
            t.rps,
            Latency(t.p50),
            Latency(t.p99),
            t.cpu_us,
            t.allocs,
            i.rps,
            i.cpu_us,
            t.rps / b.rps,
            t.rps / i.rps
        );
    }
}

fn event_table(pin: bool, runs: usize, dur: Duration) {
    println!(
        "{:>5} {:>6} | {:>10} {:>8} {:>8} {:>8} | {:>10} {:>8} {:>8} {:>8} {:>7} {:>5} | {:>10} {:>8} {:>8} {:>7} {:>5}",
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
        "ratio",
        "inline",
        "p99",
        "cpu/req",
        "allocs",
        "ratio"
    );
    for depth in [1usize, 32] {
        for conns in [1usize, 16, 128] {
            let [c, s, i] = median_rows(
                [
                    ("ceiling", Wire::Native),
                    ("event", Wire::Native),
                    ("event+inline", Wire::Native),
                ],
                runs,
                |kind, wire| run_row(kind, wire, pin, conns, depth, dur),
            );
            println!(
                "{:>5} {:>6} | {:>10.0} {:>8} {:>8} {:>6.1}us | {:>10.0} {:>8} {:>8} {:>6.1}us {:>7.2} {:>5.2} | {:>10.0} {:>8} {:>6.1}us {:>7.2} {:>5.2}",
                conns,
                depth,
                c.rps,
                Latency(c.p50),
                Latency(c.p99),
                c.cpu_us,
                s.rps,
                Latency(s.p50),
                Latency(s.p99),
                s.cpu_us,
                s.allocs,
                s.rps / c.rps,
                i.rps,
                Latency(i.p99),
                i.cpu_us,
                i.allocs,
                i.rps / c.rps
            );
        }
    }
}

/// The access log at info, written off the request path: what it costs
/// beside the same server without it.
fn log_table(pin: bool, runs: usize, dur: Duration) {
    // The access log at info, written off the request path: what it
    // costs beside the same server without it.
    println!(
        "{:>5} {:>6} | {:>10} {:>8} {:>8} {:>8} | {:>10} {:>5}",
        "conns", "depth", "log req/s", "p50", "p99", "cpu/req", "no log", "ratio"
    );
    for depth in [1usize, 32] {
        let conns = 16;
        let [n, l] = median_rows(
            [("event", Wire::Native), ("event+log", Wire::Native)],
            runs,
            |kind, wire| run_row(kind, wire, pin, conns, depth, dur),
        );
        println!(
            "{:>5} {:>6} | {:>10.0} {:>8} {:>8} {:>6.1}us | {:>10.0} {:>5.2}",
            conns,
            depth,
            l.rps,
            Latency(l.p50),
            Latency(l.p99),
            l.cpu_us,
            n.rps,
            l.rps / n.rps
        );
    }
}

fn msgpack_table(pin: bool, runs: usize, dur: Duration) {
    // The same server and handler over MessagePack-RPC: what the
    // protocol seam and the other framing cost, beside the native rows.
    println!(
        "{:>5} {:>6} | {:>10} {:>8} {:>8} {:>8} {:>7} | {:>10} {:>5}",
        "conns", "depth", "mrpc req/s", "p50", "p99", "cpu/req", "allocs", "native", "ratio"
    );
    for depth in [1usize, 32] {
        for conns in [1usize, 16] {
            let [n, m] = median_rows(
                [("event", Wire::Native), ("event", Wire::MsgpackRpc)],
                runs,
                |kind, wire| run_row(kind, wire, pin, conns, depth, dur),
            );
            println!(
                "{:>5} {:>6} | {:>10.0} {:>8} {:>8} {:>6.1}us {:>7.2} | {:>10.0} {:>5.2}",
                conns,
                depth,
                m.rps,
                Latency(m.p50),
                Latency(m.p99),
                m.cpu_us,
                m.allocs,
                n.rps,
                m.rps / n.rps
            );
        }
    }
}

/// TLS beside plaintext, and handshakes per second.
#[cfg(feature = "tls")]
mod tls {
    use std::io::Write;
    use std::net::TcpStream;
    use std::path::PathBuf;
    use std::sync::Arc;
    use std::time::{Duration, Instant};

    use super::{env_usize, median_rows, run_load, Latency, ServerProc, Wire};

    /// A throwaway CA and a `localhost` certificate, written for the
    /// server process; the client configuration that trusts the CA.
    fn pki() -> (Vec<String>, Arc<rustls::ClientConfig>) {
        use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};
        let ca_key = KeyPair::generate().unwrap();
        let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
        ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let ca_cert = ca.self_signed(&ca_key).unwrap();
        let key = KeyPair::generate().unwrap();
        let leaf = CertificateParams::new(vec!["localhost".to_owned()])
            .unwrap()
            .signed_by(&key, &Issuer::from_params(&ca, &ca_key))
            .unwrap();
        let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("bench-tls");
        std::fs::create_dir_all(&dir).unwrap();
        let (cert, keyf) = (dir.join("server.pem"), dir.join("server.key"));
        std::fs::write(&cert, leaf.pem()).unwrap();
        std::fs::write(&keyf, key.serialize_pem()).unwrap();
        let mut roots = rustls::RootCertStore::empty();
        roots.add(ca_cert.der().clone()).unwrap();
        let config = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
        let args = vec![
            "--tls-cert".to_owned(),
            cert.display().to_string(),
            "--tls-key".to_owned(),
            keyf.display().to_string(),
        ];
        (args, Arc::new(config))
    }

    pub fn table(runs: usize, pin: bool, dur: Duration) {
        let (args, client) = pki();
        println!(
            "{:>6} {:>5} {:>6} {:>7} | {:>10} {:>8} {:>8} {:>8} | {:>10} {:>8} {:>8} {:>8} | {:>5} {:>9}",
            "mode",
            "conns",
            "depth",
            "body",
            "plain r/s",
            "p50",
            "p99",
            "cpu/req",
            "tls r/s",
            "p50",
            "p99",
            "cpu/req",
            "ratio",
            "cpu ratio"
        );
        for kind in ["event", "thread"] {
            for (conns, depth) in [(16usize, 1usize), (16, 32)] {
                for body in [64usize, 16 * 1024] {
                    let shape = (conns, depth, body);
                    let [p, t] = median_rows(
                        [("plain", Wire::Native), ("tls", Wire::Native)],
                        runs,
                        |which, wire| {
                            if which == "tls" {
                                run_load(kind, &args, Some(client.clone()), wire, pin, shape, dur)
                            } else {
                                run_load(kind, &[], None, wire, pin, shape, dur)
                            }
                        },
                    );
                    println!(
                        "{:>6} {:>5} {:>6} {:>7} | {:>10.0} {:>8} {:>8} {:>6.1}us | {:>10.0} {:>8} {:>8} {:>6.1}us | {:>5.2} {:>9.2}",
                        kind,
                        conns,
                        depth,
                        body,
                        p.rps,
                        Latency(p.p50),
                        Latency(p.p99),
                        p.cpu_us,
                        t.rps,
                        Latency(t.p50),
                        Latency(t.p99),
                        t.cpu_us,
                        t.rps / p.rps,
                        p.cpu_us / t.cpu_us
                    );
                }
            }
        }
        let secs = env_usize("BENCH_SECS", 2) as u64;
        for resume in [false, true] {
            let (n, cpu_ns, elapsed) =
                handshakes(&args, &client, pin, resume, Duration::from_secs(secs));
            let per = cpu_ns as f64 / n.max(1) as f64;
            println!(
                "handshakes ({}): {n} in {elapsed:.1?}, {:.0}/s; server cpu {:.0} us each: {:.0}/s of one core",
                if resume { "resumed" } else { "full" },
                n as f64 / elapsed.as_secs_f64(),
                per / 1000.0,
                1e9 / per.max(1.0)
            );
        }
    }

    /// Opens connection after connection for `dur`, each a complete
    /// handshake (resuming the last session if `resume`), from 4 threads.
    /// Returns (handshakes, server on-CPU ns, elapsed).
    fn handshakes(
        args: &[String],
        client: &Arc<rustls::ClientConfig>,
        pin: bool,
        resume: bool,
        dur: Duration,
    ) -> (u64, u64, Duration) {
        let mut server = ServerProc::start("event", args, pin).expect("start the server");
        let addr = server.addr;
        let mut config = (**client).clone();
        if !resume {
            config.resumption = rustls::client::Resumption::disabled();
        }
        let config = Arc::new(config);
        let (_, cpu0) = server.stats().unwrap();
        let started = Instant::now();
        let threads: Vec<_> = (0..4)
            .map(|_| {
                let config = config.clone();
                std::thread::spawn(move || {
                    let mut n = 0u64;
                    while started.elapsed() < dur {
                        let mut sock = TcpStream::connect(addr).unwrap();
                        sock.set_nodelay(true).unwrap();
                        let mut conn = rustls::ClientConnection::new(
                            config.clone(),
                            "localhost".try_into().unwrap(),
                        )
                        .unwrap();
                        while conn.is_handshaking() {
                            conn.complete_io(&mut sock).unwrap();
                        }
                        // TLS 1.3 tickets come after the handshake: read
                        // them, for the next connection to resume.
                        conn.writer().write_all(b"").unwrap();
                        sock.set_read_timeout(Some(Duration::from_millis(20)))
                            .unwrap();
                        let _ = conn.complete_io(&mut sock);
                        n += 1;
                    }
                    n
                })
            })
            .collect();
        let n: u64 = threads.into_iter().map(|t| t.join().unwrap()).sum();
        let elapsed = started.elapsed();
        let (_, cpu1) = server.stats().unwrap();
        server.stop().expect("stop the server");
        (n, cpu1 - cpu0, elapsed)
    }
}

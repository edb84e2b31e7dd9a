//! Client throughput and cost: one call at a time on one connection versus
//! many threads pipelining on one connection.
//!
//! The server is this same binary started again as a child process, so
//! that this process's CPU time, read from `/proc/self/stat`, is the
//! client's alone: callers and IO thread. `BENCH_SERVER` picks it: `real`
//! (default) is the crate's `Server` with an echo service; `raw` is a
//! minimal echo on the codec that answers each batch of requests it reads
//! with one write, to see the client with a server that costs nearly
//! nothing.
//!
//! The cases run interleaved for `BENCH_ROUNDS` rounds (default 5) of
//! `BENCH_SECS` seconds each (default 2), and the medians are reported with
//! their range: on a shared machine a burst of other work then slows every
//! case alike instead of skewing one of them. `BENCH_THREADS` sets the
//! pipelined thread counts (default `16,64`).
//!
//! Run with `cargo bench --bench client`.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Barrier};
use std::thread;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use serde::{Deserialize, Serialize};
use syncrpc::codec::{Decoded, Decoder, Encoder, FrameLimits, FrameType, ResponseMeta, Side};
use syncrpc::{Client, Code, Context, Server, Service, Status};

#[derive(Serialize, Deserialize)]
struct Say {
    text: String,
}

fn main() {
    if let Ok(kind) = std::env::var("SYNCRPC_BENCH_SERVER") {
        serve(&kind);
        return;
    }
    let server_kind = env_or("BENCH_SERVER", "real");
    let secs: f64 = env_or("BENCH_SECS", "2").parse().expect("BENCH_SECS");
    let rounds: usize = env_or("BENCH_ROUNDS", "5").parse().expect("BENCH_ROUNDS");
    let mut threads: Vec<usize> = vec![1];
    threads.extend(
        env_or("BENCH_THREADS", "16,64")
            .split(',')
            .map(|n| n.trim().parse::<usize>().expect("BENCH_THREADS")),
    );
    let run_for = Duration::from_secs_f64(secs);

    let mut child = Command::new(std::env::current_exe().unwrap())
        .env("SYNCRPC_BENCH_SERVER", &server_kind)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("start the server process");
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let addr = line.trim().to_owned();
    let server_pid = child.id();

    let client = Client::connect(&addr).unwrap();
    // Warm up: connect, fill buffers and caches.
    measure(&client, 4, Duration::from_millis(300), server_pid);

    println!(
        "client benchmark: echo of a 1-field struct over one connection to a {server_kind} \
         server at {addr}; {rounds} interleaved rounds of {secs} s, medians [min-max]"
    );
    let mut results: Vec<Vec<Result>> = threads.iter().map(|_| Vec::new()).collect();
    for _ in 0..rounds {
        for (i, &n) in threads.iter().enumerate() {
            results[i].push(measure(&client, n, run_for, server_pid));
        }
    }
    println!(
        "{:<26} {:>24} {:>16} {:>16} {:>10}",
        "case", "req/s", "client CPU/call", "server CPU/call", "vs 1 thr"
    );
    let base = median(results[0].iter().map(|r| r.rate));
    for (i, &n) in threads.iter().enumerate() {
        let rs = &results[i];
        let rates: Vec<f64> = rs.iter().map(|r| r.rate).collect();
        let (lo, hi) = (
            rates.iter().cloned().fold(f64::INFINITY, f64::min),
            rates.iter().cloned().fold(0.0, f64::max),
        );
        let rate = median(rates.iter().cloned());
        let name = if n == 1 {
            "1 thread, one at a time".to_owned()
        } else {
            format!("{n} threads, pipelined")
        };
        println!(
            "{name:<26} {:>8.0} [{:>6.0}-{:>6.0}] {:>13.1} us {:>13.1} us {:>9.2}x",
            rate,
            lo,
            hi,
            median(rs.iter().map(|r| r.client_cpu_us)),
            median(rs.iter().map(|r| r.server_cpu_us)),
            rate / base
        );
    }
    drop(child.stdin.take());
    let _ = child.wait();
}

fn median(values: impl Iterator<Item = f64>) -> f64 {
    let mut v: Vec<f64> = values.collect();
    v.sort_by(|a, b| a.total_cmp(b));
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

struct Result {
    rate: f64,
    client_cpu_us: f64,
    server_cpu_us: f64,
}

fn measure(client: &Client, threads: usize, run_for: Duration, server_pid: u32) -> Result {
    let stop = Arc::new(AtomicBool::new(false));
    let calls = Arc::new(AtomicU64::new(0));
    let start_line = Arc::new(Barrier::new(threads + 1));
    let workers: Vec<_> = (0..threads)
        .map(|_| {
            let client = client.clone();
            let stop = stop.clone();
            let calls = calls.clone();
            let start_line = start_line.clone();
            thread::spawn(move || {
                let ctx = Context::background();
                let req = Say {
                    text: "hello".into(),
                };
                start_line.wait();
                let mut n = 0;
                while !stop.load(Ordering::Relaxed) {
                    let r: Say = client.call(&ctx, "/echo.Echo/Say", &req).unwrap();
                    assert_eq!(r.text, "hello");
                    n += 1;
                }
                calls.fetch_add(n, Ordering::Relaxed);
            })
        })
        .collect();
    start_line.wait();
    let cpu0 = cpu_ticks("self");
    let server0 = cpu_ticks(&server_pid.to_string());
    let t0 = Instant::now();
    thread::sleep(run_for);
    stop.store(true, Ordering::Relaxed);
    for w in workers {
        w.join().unwrap();
    }
    let elapsed = t0.elapsed();
    let cpu = cpu_ticks("self") - cpu0;
    let server = cpu_ticks(&server_pid.to_string()) - server0;
    let n = calls.load(Ordering::Relaxed) as f64;
    Result {
        rate: n / elapsed.as_secs_f64(),
        client_cpu_us: ticks_to_us(cpu) / n,
        server_cpu_us: ticks_to_us(server) / n,
    }
}

fn env_or(key: &str, default: &str) -> String {
    std::env::var(key).unwrap_or_else(|_| default.to_owned())
}

/// User plus system CPU time of a process, in clock ticks.
fn cpu_ticks(pid: &str) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("read /proc stat");
    // Fields after the command name, which is in parentheses: state is
    // field 3, utime 14 and stime 15.
    let rest = &stat[stat.rfind(')').unwrap() + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    f[11].parse::<u64>().unwrap() + f[12].parse::<u64>().unwrap()
}

fn ticks_to_us(ticks: u64) -> f64 {
    // USER_HZ, the unit of /proc/*/stat, is 100 on Linux.
    ticks as f64 * 10_000.0
}

/// The server process: prints its address, serves until stdin closes.
fn serve(kind: &str) {
    // Exit when the parent closes our stdin.
    thread::spawn(|| {
        let _ = std::io::stdin().read_to_end(&mut Vec::new());
        std::process::exit(0);
    });
    match kind {
        "raw" => serve_raw(),
        "real" => serve_real(),
        other => panic!("BENCH_SERVER must be raw or real, not {other}"),
    }
}

fn serve_real() {
    let server = Server::builder()
        .service(
            Service::new("echo.Echo").method("Say", |_: &Context, req: Say| Ok::<_, Status>(req)),
        )
        .bind("127.0.0.1:0")
        .unwrap();
    println!("{}", server.local_addr());
    std::io::stdout().flush().unwrap();
    server.run();
}

/// The raw echo server: a thread per connection, each batch of requests
/// read together answered with one write.
fn serve_raw() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    println!("{}", listener.local_addr().unwrap());
    std::io::stdout().flush().unwrap();
    for stream in listener.incoming() {
        let stream = stream.unwrap();
        thread::spawn(move || echo(stream));
    }
}

fn echo(mut stream: TcpStream) {
    stream.set_nodelay(true).unwrap();
    let mut decoder = Decoder::new(Side::Server, FrameLimits::default());
    let mut buf = BytesMut::with_capacity(64 * 1024);
    let mut chunk = vec![0u8; 64 * 1024];
    let mut enc = Encoder::with_capacity(64 * 1024);
    let ok = ResponseMeta::new(Code::OK);
    loop {
        let n = match stream.read(&mut chunk) {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        buf.extend_from_slice(&chunk[..n]);
        while let Ok(Some(Decoded::Frame(f))) = decoder.decode(&mut buf) {
            match f.header.frame_type {
                FrameType::Request => enc
                    .response(f.header.request_id, f.header.flags, &ok, &f.body)
                    .unwrap(),
                FrameType::Ping => enc.pong(f.header.request_id),
                _ => {}
            }
        }
        if !enc.is_empty() {
            if stream.write_all(enc.as_slice()).is_err() {
                return;
            }
            enc.clear();
        }
    }
}

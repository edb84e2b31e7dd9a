//! Streams against unary calls on the same server.
//!
//! ```text
//! cargo bench --bench streams                  # both modes, 3 runs of 2 s
//! BENCH_RUNS=5 BENCH_SECS=3 cargo bench --bench streams
//! ```
//!
//! Two tables, each row in event mode and in thread mode, the server in a
//! child process pinned to core 0 and the client in this process on core
//! 1 (see `support/server_proc.rs`), with one worker:
//!
//! - **Messages per second**: one server stream (`/echo.Echo/Download`)
//!   of 64-byte and of 16 KiB messages against the same payload as unary
//!   calls pipelined on one connection (the load driver, 64 in flight,
//!   `/echo.Echo/Bytes`). The stream is read twice: by a minimal reader
//!   of frames (one thread, blocking socket, the codec's decoder), the
//!   same kind of client as the load driver, so `ratio` (stream over
//!   unary) compares the server's two paths; and by the syncrpc
//!   [`Client`]'s iterator (`via Client`, ratio `Client`), which adds the
//!   client library's IO thread and hand-off to the reading thread.
//! - **1 GiB download**: 16384 messages of 64 KiB through one stream,
//!   against 1 GiB of 10 MiB unary answers (`/echo.Echo/Blob`) on the
//!   same server, by one caller and by four callers sharing the client.
//!   `ratio` is the stream's rate over the faster unary rate. The server's
//!   peak resident memory (`VmHWM`) after each says whether memory is
//!   bounded by the stream's window or by the download: a stream holds at
//!   most the window (256 KiB) plus one message, where a 10 MiB answer
//!   holds its whole body.
//!
//! Each row runs the stream and the unary side `BENCH_RUNS` times, taking
//! turns, and shows each side's median run.

#[path = "../cli/src/load/driver.rs"]
mod load;
#[path = "support/server_proc.rs"]
mod server_proc;

use std::sync::Arc;
use std::time::{Duration, Instant};

use load::{Load, Wire};
use server_proc::{encode_blob_request, env_usize, ServerProc};
use syncrpc::client::CallOptions;
use syncrpc::{Client, Context};

const MIB: usize = 1024 * 1024;

fn main() {
    let Some(_args) = server_proc::bench_args() else {
        return;
    };
    let pin = server_proc::pin_load();
    let runs = env_usize("BENCH_RUNS", 3).max(1);
    let secs = Duration::from_secs(env_usize("BENCH_SECS", 2) as u64);
    println!(
        "streams against unary calls; server {}; {runs} runs, median shown",
        if pin {
            "pinned to core 0, client on core 1"
        } else {
            "unpinned (taskset or a second core missing)"
        }
    );
    println!();
    println!("messages per second: one stream against 64 unary calls in flight on one connection");
    println!(
        "{:<8} {:>8} {:>14} {:>14} {:>14} {:>7} {:>7}",
        "mode", "message", "stream msg/s", "via Client", "unary call/s", "ratio", "Client"
    );
    for mode in ["event", "thread"] {
        for size in [64, 16 * 1024] {
            let [frames, client, unary] = turns(runs, || {
                [
                    stream_rate_frames(mode, pin, size, secs),
                    stream_rate(mode, pin, size, secs),
                    unary_rate(mode, pin, size, secs),
                ]
            });
            println!(
                "{mode:<8} {:>8} {frames:>14.0} {client:>14.0} {unary:>14.0} {:>7.2} {:>7.2}",
                size_name(size),
                frames / unary,
                client / unary
            );
        }
    }
    println!();
    println!("1 GiB download: 64 KiB stream messages against 10 MiB unary answers");
    println!(
        "{:<8} {:>11} {:>11} {:>11} {:>7} {:>13} {:>13}",
        "mode", "stream MB/s", "unary x1", "unary x4", "ratio", "stream peak", "unary peak"
    );
    for mode in ["event", "thread"] {
        let mut stream_runs = Vec::new();
        let mut one_runs = Vec::new();
        let mut four_runs = Vec::new();
        for _ in 0..runs {
            stream_runs.push(download(mode, pin, Fetch::Stream));
            one_runs.push(download(mode, pin, Fetch::Unary(1)));
            four_runs.push(download(mode, pin, Fetch::Unary(4)));
        }
        let (stream, one, four) = (median(stream_runs), median(one_runs), median(four_runs));
        println!(
            "{mode:<8} {:>11.0} {:>11.0} {:>11.0} {:>7.2} {:>10} MiB {:>10} MiB",
            stream.mb_per_s,
            one.mb_per_s,
            four.mb_per_s,
            stream.mb_per_s / one.mb_per_s.max(four.mb_per_s),
            stream.peak_kib / 1024,
            one.peak_kib.max(four.peak_kib) / 1024
        );
    }
}

fn size_name(size: usize) -> String {
    if size >= 1024 {
        format!("{} KiB", size / 1024)
    } else {
        format!("{size} B")
    }
}

/// Runs `each` `runs` times and returns the median of each of its
/// figures.
fn turns<const N: usize>(runs: usize, each: impl Fn() -> [f64; N]) -> [f64; N] {
    let all: Vec<[f64; N]> = (0..runs).map(|_| each()).collect();
    std::array::from_fn(|i| {
        let mut v: Vec<f64> = all.iter().map(|r| r[i]).collect();
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    })
}

/// Messages per second of one stream of `size`-byte messages read for
/// `dur` by a minimal reader of frames, the same kind of client as the
/// unary side's load driver: one thread, a blocking socket, the codec's
/// decoder, and a WINDOW grant per half window consumed.
fn stream_rate_frames(mode: &str, pin: bool, size: usize, dur: Duration) -> f64 {
    use std::io::{Read, Write};
    use syncrpc::codec::{
        Compression, Decoded, Decoder, Encoder, Encoding, Flags, FrameLimits, FrameType, RequestId,
        RequestMeta, Side, WindowMeta,
    };
    let server = start(mode, pin);
    let mut sock = std::net::TcpStream::connect(server.addr).expect("connect");
    sock.set_nodelay(true).unwrap();
    let id = RequestId(1);
    let flags = Flags::new(Compression::None, Encoding::Raw);
    let mut enc = Encoder::new();
    let meta = RequestMeta {
        stream: true,
        ..RequestMeta::new("/echo.Echo/Download")
    };
    enc.request(id, flags, &meta, &[]).unwrap();
    enc.message(id, flags, &encode_blob_request(u64::MAX, size))
        .unwrap();
    enc.end(id);
    sock.write_all(enc.as_slice()).unwrap();
    enc.clear();
    let mut dec = Decoder::new(Side::Client, FrameLimits::default());
    let mut buf = bytes::BytesMut::with_capacity(256 * 1024);
    let mut chunk = vec![0u8; 256 * 1024];
    let half = syncrpc::flow_control::GRANT_THRESHOLD as usize;
    let (mut owed, mut n) = (0usize, 0u64);
    let mut started = None;
    loop {
        while let Some(Decoded::Frame(f)) = dec.decode(&mut buf).expect("a frame") {
            assert_eq!(f.frame_type(), FrameType::Message);
            n += 1;
            owed += f.body.len();
        }
        if owed >= half {
            enc.window(id, WindowMeta::new(owed as u32).unwrap());
            sock.write_all(enc.as_slice()).unwrap();
            enc.clear();
            owed = 0;
        }
        // The first messages pay for the connection's buffers.
        if started.is_none() && n >= 1000 {
            started = Some((Instant::now(), n));
        }
        if let Some((at, from)) = started {
            if at.elapsed() >= dur {
                let rate = (n - from) as f64 / at.elapsed().as_secs_f64();
                drop(sock);
                server.stop().expect("stop the server");
                return rate;
            }
        }
        let got = sock.read(&mut chunk).expect("read");
        assert!(got > 0, "the server closed the stream");
        buf.extend_from_slice(&chunk[..got]);
    }
}

fn start(mode: &str, pin: bool) -> ServerProc {
    ServerProc::start(mode, &["--workers".to_owned(), "1".to_owned()], pin)
        .expect("start the server")
}

/// Messages per second of one stream of `size`-byte messages, read for
/// `dur`.
fn stream_rate(mode: &str, pin: bool, size: usize, dur: Duration) -> f64 {
    let server = start(mode, pin);
    let client = Client::connect(server.addr).expect("connect");
    let ctx = Context::background();
    let req = encode_blob_request(u64::MAX, size);
    let mut stream = client
        .raw_server_stream(&ctx, "/echo.Echo/Download", &req, &CallOptions::new())
        .expect("open the stream");
    // Warm up: the first messages pay for the connection's buffers.
    for _ in 0..1000 {
        stream.next().expect("a message").expect("a message");
    }
    let started = Instant::now();
    let mut n = 0u64;
    while started.elapsed() < dur {
        for _ in 0..256 {
            let msg = stream.next().expect("a message").expect("a message");
            assert_eq!(msg.len(), size);
        }
        n += 256;
    }
    let rate = n as f64 / started.elapsed().as_secs_f64();
    drop(stream);
    drop(client);
    server.stop().expect("stop the server");
    rate
}

/// Unary calls per second with `size`-byte bodies, 64 in flight on one
/// connection, for `dur`.
fn unary_rate(mode: &str, pin: bool, size: usize, dur: Duration) -> f64 {
    let server = start(mode, pin);
    let load = Load {
        wire: Wire::Native,
        duration: dur,
        ..Load::echo(server.addr, 1, 64, size)
    };
    let out = load.run(|_| {}).expect("run the load");
    server.stop().expect("stop the server");
    assert_eq!(out.failures(), 0, "{:?}", out.failed);
    out.rate()
}

#[derive(Clone, Copy)]
enum Fetch {
    Stream,
    /// 10 MiB answers, this many callers at once.
    Unary(usize),
}

struct Download {
    mb_per_s: f64,
    peak_kib: u64,
}

fn median(mut runs: Vec<Download>) -> Download {
    runs.sort_by(|a, b| a.mb_per_s.total_cmp(&b.mb_per_s));
    runs.swap_remove(runs.len() / 2)
}

/// Fetches 1 GiB from a fresh server the way `how` says.
fn download(mode: &str, pin: bool, how: Fetch) -> Download {
    const TOTAL: usize = 1024 * MIB;
    let server = start(mode, pin);
    let client = Client::connect(server.addr).expect("connect");
    let ctx = Context::background();
    let opts = CallOptions::new().timeout(Duration::from_secs(120));
    let started = Instant::now();
    let got = match how {
        Fetch::Stream => {
            let size = 64 * 1024;
            let req = encode_blob_request((TOTAL / size) as u64, size);
            let stream = client
                .raw_server_stream(&ctx, "/echo.Echo/Download", &req, &opts)
                .expect("open the stream");
            stream.map(|m| m.expect("a message").len()).sum::<usize>()
        }
        Fetch::Unary(callers) => {
            let size = 10 * MIB;
            let calls = TOTAL.div_ceil(size);
            let req = Arc::new(encode_blob_request(1, size));
            let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
            let handles: Vec<_> = (0..callers)
                .map(|_| {
                    let (client, req, next, opts) =
                        (client.clone(), req.clone(), next.clone(), opts.clone());
                    std::thread::spawn(move || {
                        let mut got = 0;
                        while next.fetch_add(1, std::sync::atomic::Ordering::Relaxed) < calls {
                            let resp = client
                                .call_raw(&Context::background(), "/echo.Echo/Blob", &req, &opts)
                                .expect("a 10 MiB answer");
                            got += resp.body().len();
                        }
                        got
                    })
                })
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).sum()
        }
    };
    let secs = started.elapsed().as_secs_f64();
    assert!(got >= TOTAL, "downloaded {got} bytes");
    let peak_kib = server.memory().peak_rss_kib;
    drop(client);
    server.stop().expect("stop the server");
    Download {
        mb_per_s: got as f64 / 1e6 / secs,
        peak_kib,
    }
}

//! One log line per request, written off the request path.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::{bounded, RecvTimeoutError, Sender};

use crate::context::Context;
use crate::filter::{Filter, Next, Reply, Request};
use crate::status::Code;

/// Logs every request through the `log` crate, under the target
/// `syncrpc::access`: method, status code, latency, trace id and peer.
///
/// ```text
/// /echo.Echo/Say OK 87us trace=1b4e28ba-2fa1-41d2-883f-0016d3cca427 peer=127.0.0.1:53122
/// ```
///
/// Successful requests are logged at `info` and failed ones at `warn` by
/// default; both levels can be changed.
///
/// A handler's thread only formats its line into a buffer: a thread of
/// the log's own hands the buffered lines to the logger every 100 ms
/// ([`AccessLog::flush_every`]), as one record per level and batch, so a
/// busy server pays one logger write per batch instead of one per
/// request. The last clone dropped (the server's, when it shuts down)
/// flushes what is left; [`AccessLog::flush`] does it on demand. Past
/// [`AccessLog::max_buffered_lines`] (default 65536) lines wait, new lines
/// are dropped and counted, and the next flush logs how many at `warn`
/// ([`AccessLog::dropped`] tells the total).
///
/// Clones share the buffer and its thread; it is `Send + Sync`.
///
/// # Examples
///
/// ```
/// use syncrpc::filters::AccessLog;
/// use syncrpc::Server;
///
/// let builder = Server::builder()
///     .filter(AccessLog::new().ok_level(log::Level::Debug));
/// # let _ = builder;
/// ```
#[derive(Clone)]
pub struct AccessLog {
    ok_level: log::Level,
    error_level: log::Level,
    sink: Arc<Sink>,
}

/// Lines waiting for the logger, per level.
#[derive(Default)]
struct Lines {
    lines: Vec<(log::Level, String)>,
}

struct Buffer {
    lines: Mutex<Lines>,
    max_lines: AtomicU64,
    dropped: AtomicU64,
    /// Dropped lines already reported.
    reported: AtomicU64,
}

/// The buffer and its flushing thread, stopped and joined when the last
/// clone of the log goes.
struct Sink {
    buffer: Arc<Buffer>,
    stop: Mutex<Option<Sender<()>>>,
    every: Mutex<Duration>,
    thread: Mutex<Option<JoinHandle<()>>>,
}

impl Drop for Sink {
    fn drop(&mut self) {
        // Disconnecting the channel wakes the thread for its last flush.
        self.stop.lock().unwrap_or_else(|e| e.into_inner()).take();
        let thread = self.thread.lock().unwrap_or_else(|e| e.into_inner()).take();
        match thread {
            Some(t) => {
                let _ = t.join();
            }
            None => self.buffer.flush(),
        }
    }
}

impl Buffer {
    fn push(&self, level: log::Level, line: String) {
        let max = self.max_lines.load(Ordering::Relaxed) as usize;
        let mut l = self.lines.lock().unwrap_or_else(|e| e.into_inner());
        if l.lines.len() >= max {
            drop(l);
            self.dropped.fetch_add(1, Ordering::Relaxed);
            return;
        }
        l.lines.push((level, line));
    }

    /// Hands every buffered line to the logger, one record per run of
    /// lines at one level.
    fn flush(&self) {
        let lines = {
            let mut l = self.lines.lock().unwrap_or_else(|e| e.into_inner());
            std::mem::take(&mut l.lines)
        };
        let mut batch = String::new();
        let mut level = None;
        for (lvl, line) in lines {
            if level.is_some_and(|l| l != lvl) {
                emit(level, &batch);
                batch.clear();
            }
            if !batch.is_empty() {
                batch.push('\n');
            }
            batch.push_str(&line);
            level = Some(lvl);
        }
        emit(level, &batch);
        let dropped = self.dropped.load(Ordering::Relaxed);
        let reported = self.reported.swap(dropped, Ordering::Relaxed);
        if dropped > reported {
            log::warn!(
                target: "syncrpc::access",
                "{} access log lines dropped: the buffer was full ({} lines)",
                dropped - reported,
                self.max_lines.load(Ordering::Relaxed)
            );
        }
        log::logger().flush();
    }
}

fn emit(level: Option<log::Level>, batch: &str) {
    if let Some(level) = level {
        if !batch.is_empty() {
            log::log!(target: "syncrpc::access", level, "{batch}");
        }
    }
}

impl std::fmt::Debug for AccessLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AccessLog")
            .field("ok_level", &self.ok_level)
            .field("error_level", &self.error_level)
            .field("dropped", &self.dropped())
            .finish_non_exhaustive()
    }
}

impl Default for AccessLog {
    fn default() -> Self {
        AccessLog::new()
    }
}

impl AccessLog {
    /// An access log at `info` for successes and `warn` for errors,
    /// flushed every 100 ms.
    pub fn new() -> AccessLog {
        let buffer = Arc::new(Buffer {
            lines: Mutex::default(),
            max_lines: AtomicU64::new(64 * 1024),
            dropped: AtomicU64::new(0),
            reported: AtomicU64::new(0),
        });
        let sink = Arc::new(Sink {
            buffer,
            stop: Mutex::new(None),
            every: Mutex::new(Duration::from_millis(100)),
            thread: Mutex::new(None),
        });
        start(&sink);
        AccessLog {
            ok_level: log::Level::Info,
            error_level: log::Level::Warn,
            sink,
        }
    }

    /// The level of lines for successful requests.
    pub fn ok_level(mut self, level: log::Level) -> AccessLog {
        self.ok_level = level;
        self
    }

    /// The level of lines for failed requests.
    pub fn error_level(mut self, level: log::Level) -> AccessLog {
        self.error_level = level;
        self
    }

    /// How long a line may wait in the buffer. Default 100 ms: soon
    /// enough for whoever tails the log, long enough that a busy server
    /// writes thousands of lines at once.
    pub fn flush_every(self, every: Duration) -> AccessLog {
        *self.sink.every.lock().unwrap_or_else(|e| e.into_inner()) =
            every.max(Duration::from_millis(1));
        start(&self.sink);
        self
    }

    /// How many lines may wait before new ones are dropped (and counted).
    /// Default 65536: at 100 ms a flush, a server answering 650 000
    /// requests a second.
    pub fn max_buffered_lines(self, n: usize) -> AccessLog {
        self.sink
            .buffer
            .max_lines
            .store(n.max(1) as u64, Ordering::Relaxed);
        self
    }

    /// Hands every buffered line to the logger now.
    pub fn flush(&self) {
        self.sink.buffer.flush();
    }

    /// Lines dropped so far because the buffer was full.
    pub fn dropped(&self) -> u64 {
        self.sink.buffer.dropped.load(Ordering::Relaxed)
    }
}

/// (Re)starts the flushing thread of `sink` with its current period.
fn start(sink: &Sink) {
    let (tx, rx) = bounded::<()>(0);
    // The old thread, if any, flushes and ends.
    let old = sink
        .stop
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .replace(tx);
    drop(old);
    if let Some(t) = sink.thread.lock().unwrap_or_else(|e| e.into_inner()).take() {
        let _ = t.join();
    }
    let every = *sink.every.lock().unwrap_or_else(|e| e.into_inner());
    let buffer = sink.buffer.clone();
    let spawned = std::thread::Builder::new()
        .name("syncrpc-access-log".into())
        .spawn(move || loop {
            let stop = matches!(rx.recv_timeout(every), Err(RecvTimeoutError::Disconnected));
            buffer.flush();
            if stop {
                return;
            }
        });
    match spawned {
        Ok(t) => *sink.thread.lock().unwrap_or_else(|e| e.into_inner()) = Some(t),
        // Without a thread, lines are flushed when the log is dropped or
        // flushed by hand; say so once.
        Err(e) => log::error!("cannot start the access log's thread: {e}"),
    }
}

impl Filter for AccessLog {
    fn call(&self, ctx: &Context, req: Request, next: Next<'_>) -> Reply {
        let start = Instant::now();
        let reply = next.run(ctx, req);
        let code = match &reply {
            Ok(_) => Code::OK,
            Err(status) => status.code(),
        };
        let level = if code.is_ok() {
            self.ok_level
        } else {
            self.error_level
        };
        if log::log_enabled!(target: "syncrpc::access", level) {
            let trace = ctx.trace_id();
            let trace = trace.as_ref().map_or("-", |t| t.as_str());
            let micros = start.elapsed().as_micros();
            let mut line = String::with_capacity(128);
            let _ = write!(
                line,
                "{} {code:?} {micros}us trace={trace} peer=",
                ctx.method()
            );
            match ctx.peer_addr() {
                Some(a) => {
                    let _ = write!(line, "{a}");
                }
                None => line.push('-'),
            }
            if let Err(status) = &reply {
                if !status.message().is_empty() {
                    let _ = write!(line, " message={:?}", status.message());
                }
            }
            self.sink.buffer.push(level, line);
        }
        reply
    }
}

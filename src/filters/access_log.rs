//! One log line per request, written off the request path.

use std::fmt::Write as _;
use std::io::Write;
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
/// request; [`AccessLog::to_writer`] skips the logger's formatting too,
/// one write per batch. The last clone dropped (the server's, when it shuts down)
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

/// Lines waiting to be written: their text, one after the other, and
/// where each run of lines at one level ends.
#[derive(Default)]
struct Lines {
    text: String,
    runs: Vec<(log::Level, usize)>,
    count: usize,
}

/// Where flushed lines go.
enum Out {
    /// One `log` record per run of lines at one level.
    Logger,
    /// Straight to a writer, each line with its own time and level.
    Writer(Box<dyn Write + Send>),
}

struct Buffer {
    lines: Mutex<Lines>,
    out: Mutex<Out>,
    /// `out` is a writer: lines carry their own time and level.
    to_writer: std::sync::atomic::AtomicBool,
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
    /// Appends `line` (which ends in a newline), or counts it dropped.
    fn push(&self, level: log::Level, line: &str) {
        let max = self.max_lines.load(Ordering::Relaxed) as usize;
        let mut l = self.lines.lock().unwrap_or_else(|e| e.into_inner());
        if l.count >= max {
            drop(l);
            self.dropped.fetch_add(1, Ordering::Relaxed);
            return;
        }
        l.count += 1;
        l.text.push_str(line);
        let end = l.text.len();
        match l.runs.last_mut() {
            Some((lvl, run_end)) if *lvl == level => *run_end = end,
            _ => l.runs.push((level, end)),
        }
    }

    /// Writes every buffered line: one logger record per run of lines at
    /// one level, or one write to the writer.
    fn flush(&self) {
        let taken = {
            let mut l = self.lines.lock().unwrap_or_else(|e| e.into_inner());
            let capacity = l.text.capacity().min(1 << 20);
            l.count = 0;
            Lines {
                text: std::mem::replace(&mut l.text, String::with_capacity(capacity)),
                runs: std::mem::take(&mut l.runs),
                count: 0,
            }
        };
        let mut out = self.out.lock().unwrap_or_else(|e| e.into_inner());
        match &mut *out {
            Out::Logger => {
                let mut start = 0;
                for (level, end) in &taken.runs {
                    let run = taken.text[start..*end].trim_end_matches('\n');
                    log::log!(target: "syncrpc::access", *level, "{run}");
                    start = *end;
                }
            }
            Out::Writer(w) => {
                if !taken.text.is_empty() {
                    if let Err(e) = w.write_all(taken.text.as_bytes()).and_then(|()| w.flush()) {
                        let n = taken.runs.len().max(1);
                        log::error!("cannot write the access log ({n} runs of lines lost): {e}");
                    }
                }
            }
        }
        let dropped = self.dropped.load(Ordering::Relaxed);
        let reported = self.reported.swap(dropped, Ordering::Relaxed);
        if dropped > reported {
            let message = format!(
                "{} access log lines dropped: the buffer was full ({} lines)",
                dropped - reported,
                self.max_lines.load(Ordering::Relaxed)
            );
            match &mut *out {
                Out::Logger => log::warn!(target: "syncrpc::access", "{message}"),
                Out::Writer(w) => {
                    let mut line = String::new();
                    stamp(&mut line, log::Level::Warn);
                    line.push_str(&message);
                    line.push('\n');
                    let _ = w.write_all(line.as_bytes()).and_then(|()| w.flush());
                }
            }
        }
        drop(out);
        log::logger().flush();
    }
}

thread_local! {
    /// The line a thread is making.
    static LINE: std::cell::RefCell<String> = const { std::cell::RefCell::new(String::new()) };
    /// The second a thread last stamped a line with, made once per second.
    static SECOND: std::cell::RefCell<(u64, String)> =
        const { std::cell::RefCell::new((u64::MAX, String::new())) };
}

/// Appends `2026-12-03T08:30:00.123456Z INFO `: the time, UTC, and the
/// level.
fn stamp(line: &mut String, level: log::Level) {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    SECOND.with(|cell| {
        let mut cell = cell.borrow_mut();
        if cell.0 != now.as_secs() {
            *cell = (now.as_secs(), civil(now.as_secs()));
        }
        line.push_str(&cell.1);
    });
    let _ = write!(line, ".{:06}Z {level:<5} ", now.subsec_micros());
}

/// `YYYY-MM-DDTHH:MM:SS` of a Unix time, UTC (Howard Hinnant's
/// days-to-civil).
fn civil(secs: u64) -> String {
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
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
            out: Mutex::new(Out::Logger),
            to_writer: std::sync::atomic::AtomicBool::new(false),
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

    /// Writes the lines to `out` instead of the `log` crate's logger, one
    /// write per flush, each line with its own time (UTC, microseconds)
    /// and level:
    ///
    /// ```text
    /// 2026-12-03T08:30:00.123456Z INFO  /echo.Echo/Say OK 87us trace=1b4e28ba-2fa1-41d2-883f-0016d3cca427 peer=127.0.0.1:53122
    /// ```
    ///
    /// The logger still decides which lines are made (its level for the
    /// target `syncrpc::access`), but no longer formats them: on a busy
    /// server that is most of what a line costs.
    ///
    /// # Examples
    ///
    /// ```
    /// use syncrpc::filters::AccessLog;
    ///
    /// let log = AccessLog::new().to_writer(std::io::stderr());
    /// # let _ = log;
    /// ```
    pub fn to_writer(self, out: impl Write + Send + 'static) -> AccessLog {
        *self
            .sink
            .buffer
            .out
            .lock()
            .unwrap_or_else(|e| e.into_inner()) = Out::Writer(Box::new(out));
        self.sink.buffer.to_writer.store(true, Ordering::Relaxed);
        self
    }

    /// Hands every buffered line to the logger (or writer) now.
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
            let micros = start.elapsed().as_micros();
            let to_writer = self.sink.buffer.to_writer.load(Ordering::Relaxed);
            LINE.with(|cell| {
                let line = &mut *cell.borrow_mut();
                line.clear();
                if to_writer {
                    stamp(line, level);
                }
                let trace = ctx.trace_id();
                let trace = trace.as_ref().map_or("-", |t| t.as_str());
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
                line.push('\n');
                self.sink.buffer.push(level, line);
            });
        }
        reply
    }
}

#[cfg(test)]
mod tests {
    use super::civil;

    #[test]
    fn civil_dates() {
        assert_eq!(civil(0), "1970-01-01T00:00:00");
        assert_eq!(civil(951_782_400), "2000-02-29T00:00:00");
        assert_eq!(civil(1_796_289_030), "2026-12-03T09:10:30");
    }
}

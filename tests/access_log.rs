//! The access log writes its lines off the request path: they reach the
//! logger within the flush period, all of them at the last clone's drop,
//! and lines over the buffer's bound are counted and reported, never
//! dropped silently.

mod util;

use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use syncrpc::filters::AccessLog;
use util::{echo_service, say, Mode, RawClient, Say, WAIT};

/// Records every `syncrpc::access` record; the one logger of this test
/// binary.
struct Capture {
    records: Mutex<Vec<(log::Level, String)>>,
}

impl log::Log for Capture {
    fn enabled(&self, m: &log::Metadata<'_>) -> bool {
        m.target() == "syncrpc::access"
    }

    fn log(&self, r: &log::Record<'_>) {
        if self.enabled(r.metadata()) {
            let mut records = self.records.lock().unwrap();
            records.push((r.level(), r.args().to_string()));
        }
    }

    fn flush(&self) {}
}

fn capture() -> &'static Capture {
    static CAPTURE: OnceLock<&'static Capture> = OnceLock::new();
    CAPTURE.get_or_init(|| {
        let c: &'static Capture = Box::leak(Box::new(Capture {
            records: Mutex::new(Vec::new()),
        }));
        log::set_logger(c).unwrap();
        log::set_max_level(log::LevelFilter::Info);
        c
    })
}

/// The access lines logged so far that contain `tag`.
fn lines_with(tag: &str) -> Vec<(log::Level, String)> {
    capture()
        .records
        .lock()
        .unwrap()
        .iter()
        .flat_map(|(level, text)| text.lines().map(move |l| (*level, l.to_owned())))
        .filter(|(_, l)| l.contains(tag))
        .collect()
}

/// Makes `n` calls of `/echo.Echo/Say` through a server logging to `log`,
/// with trace ids `<tag>-<i>`.
fn calls(log: &AccessLog, n: u32, tag: &str) -> syncrpc::Server {
    // The logger must be in place before the lines are made.
    capture();
    let server = util::builder(Mode::Event)
        .service(echo_service())
        .filter(log.clone())
        .bind("127.0.0.1:0")
        .unwrap();
    let mut c = RawClient::connect(server.local_addr());
    for i in 0..n {
        let trace = format!("{tag}-{i}");
        let meta = syncrpc::codec::RequestMeta {
            trace_id: Some(&trace),
            ..syncrpc::codec::RequestMeta::new("/echo.Echo/Say")
        };
        c.call_meta(i, &meta, Default::default(), &util::encode(&say("x")));
        assert_eq!(c.response().decode::<Say>().text, "x");
    }
    server
}

#[test]
fn lines_reach_the_logger_within_the_flush_period() {
    let log = AccessLog::new().flush_every(Duration::from_millis(20));
    let server = calls(&log, 3, "period");
    // No flush by hand: the log's own thread does it.
    let give_up = Instant::now() + WAIT;
    while lines_with("trace=period-").len() < 3 && Instant::now() < give_up {
        std::thread::sleep(Duration::from_millis(5));
    }
    let lines = lines_with("trace=period-");
    assert_eq!(lines.len(), 3, "{lines:?}");
    assert!(lines
        .iter()
        .all(|(level, l)| *level == log::Level::Info && l.starts_with("/echo.Echo/Say OK ")));
    server.shutdown();
}

#[test]
fn the_last_clone_flushes_what_is_left() {
    let log = AccessLog::new().flush_every(Duration::from_secs(3600));
    let server = calls(&log, 4, "last");
    assert!(lines_with("trace=last-").is_empty(), "flushed early");
    server.shutdown();
    drop(log);
    assert_eq!(lines_with("trace=last-").len(), 4);
}

#[test]
fn lines_over_the_bound_are_counted_and_reported() {
    let log = AccessLog::new()
        .flush_every(Duration::from_secs(3600))
        .max_buffered_lines(2);
    let server = calls(&log, 5, "over");
    assert_eq!(log.dropped(), 3);
    log.flush();
    assert_eq!(lines_with("trace=over-").len(), 2);
    let reports = lines_with("access log lines dropped");
    assert!(
        reports
            .iter()
            .any(|(level, l)| *level == log::Level::Warn
                && l.starts_with("3 access log lines dropped")),
        "{reports:?}"
    );
    server.shutdown();
}

/// A writer whose bytes the test can read.
#[derive(Clone, Default)]
struct Shared(std::sync::Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Shared {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[test]
fn a_writer_gets_stamped_lines_in_one_write_per_flush() {
    let out = Shared::default();
    let log = AccessLog::new()
        .flush_every(Duration::from_secs(3600))
        .to_writer(out.clone());
    let server = calls(&log, 3, "writer");
    assert!(out.0.lock().unwrap().is_empty(), "written before a flush");
    log.flush();
    let text = String::from_utf8(out.0.lock().unwrap().clone()).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 3, "{text}");
    for (i, line) in lines.iter().enumerate() {
        // 2026-12-03T08:30:00.123456Z INFO  /echo.Echo/Say OK ...
        let (time, rest) = line.split_once(' ').unwrap();
        assert_eq!(time.len(), 27, "{line}");
        assert!(time.ends_with('Z') && &time[10..11] == "T", "{line}");
        assert!(rest.starts_with("INFO  /echo.Echo/Say OK "), "{line}");
        assert!(line.contains(&format!("trace=writer-{i} ")), "{line}");
    }
    // Nothing went to the logger.
    assert!(lines_with("trace=writer-").is_empty());
    server.shutdown();
}

//! Running out of file descriptors on accept: the event loop, or thread
//! mode's acceptor, backs off instead of spinning, and accepts again once
//! descriptors free up.
//!
//! A test binary of its own: it lowers the whole process's descriptor
//! limit (with the `prlimit` tool), which would upset tests running beside
//! it.

mod util;

use std::net::TcpStream;
use std::process::Command;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use socket2::{Domain, Socket, Type};
use util::{echo_service, say, Mode, RawClient};

per_mode!(accept_backs_off_when_out_of_descriptors);

fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd").map_or(0, |d| d.count())
}

fn set_nofile(soft: &str, hard: &str) -> bool {
    Command::new("prlimit")
        .arg("--pid")
        .arg(std::process::id().to_string())
        .arg(format!("--nofile={soft}:{hard}"))
        .status()
        .is_ok_and(|s| s.success())
}

fn nofile() -> (String, String) {
    let out = Command::new("prlimit")
        .args([
            "--pid",
            &std::process::id().to_string(),
            "--nofile",
            "--raw",
            "--noheadings",
            "--output=SOFT,HARD",
        ])
        .output()
        .expect("prlimit");
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    let mut it = text.split_whitespace();
    (it.next().unwrap().to_owned(), it.next().unwrap().to_owned())
}

/// The schedstat file of the thread named `name`, opened now so that
/// reading it later needs no new descriptor. A new thread names itself
/// once it runs, so it may take a moment to show up.
fn thread_schedstat(name: &str) -> std::fs::File {
    let mut found = None;
    util::eventually(&format!("a thread named {name}"), || {
        for task in std::fs::read_dir("/proc/self/task").unwrap().flatten() {
            let comm = std::fs::read_to_string(task.path().join("comm")).unwrap_or_default();
            if comm.trim() == name {
                found = std::fs::File::open(task.path().join("schedstat")).ok();
            }
        }
        found.is_some()
    });
    found.unwrap()
}

fn cpu_time(f: &mut std::fs::File) -> Duration {
    use std::io::{Read, Seek};
    f.rewind().unwrap();
    let mut s = String::new();
    f.read_to_string(&mut s).unwrap();
    Duration::from_nanos(s.split_whitespace().next().unwrap().parse().unwrap())
}

/// The descriptor limit is the process's: the two modes take turns.
static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

fn accept_backs_off_when_out_of_descriptors(mode: Mode) {
    // First: the other mode's descriptors, down to the pipes of its
    // `prlimit` runs, must not come and go while this one counts.
    let _turn = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    if Command::new("prlimit").arg("--version").output().is_err() {
        eprintln!("prlimit not installed; nothing to test");
        return;
    }
    let server = util::builder(mode)
        .service(echo_service())
        .bind("127.0.0.1:0")
        .unwrap();
    let addr = server.local_addr();
    let (soft, hard) = nofile();
    let accepting = match mode {
        Mode::Event => "syncrpc-loop-0",
        Mode::Thread => "syncrpc-accept",
    };
    let mut loop_stat = thread_schedstat(accepting);
    // The clients' sockets exist before the limit drops; connecting them
    // takes no new descriptor, accepting them does.
    let sockets: Vec<Socket> = (0..8)
        .map(|_| Socket::new(Domain::IPV4, Type::STREAM, None).unwrap())
        .collect();
    assert!(set_nofile(&open_fds().to_string(), &hard));
    let clients: Vec<TcpStream> = sockets
        .into_iter()
        .map(|s| {
            s.connect(&addr.into()).unwrap();
            s.into()
        })
        .collect();
    // Every accept fails with EMFILE now; the loop must back off, not spin.
    let cpu = cpu_time(&mut loop_stat);
    let wall = Instant::now();
    std::thread::sleep(Duration::from_millis(300));
    let used = cpu_time(&mut loop_stat) - cpu;
    let elapsed = wall.elapsed();
    let accepted = server.stats().connections;
    assert!(set_nofile(&soft, &hard));
    // (Listing /proc/self/fd counted one descriptor of its own, so a
    // connection or two may have fit.)
    assert!(accepted < 4, "{accepted} accepted");
    assert!(
        used < elapsed / 3,
        "the loop used {used:?} of CPU in {elapsed:?} while out of descriptors"
    );
    // Descriptors free up: every waiting client is accepted and served.
    let mut raws: Vec<RawClient> = clients.into_iter().map(RawClient::connect_stream).collect();
    for (i, c) in raws.iter_mut().enumerate() {
        c.call(i as u32, "/echo.Echo/Say", &say("back"));
    }
    for c in raws.iter_mut() {
        assert_eq!(c.response().decode::<util::Say>(), say("back"));
    }
    assert_eq!(server.stats().connections, 8);
}

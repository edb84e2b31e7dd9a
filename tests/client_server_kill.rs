//! A real server killed (SIGKILL) in the middle of calls: the client's
//! calls end promptly with UNAVAILABLE, marked as possibly run, instead of
//! hanging, and later calls are refused as not run.
//!
//! The server must die without a word, so it runs in a child process: this
//! test binary again, started with `SYNCRPC_KILL_TEST_SERVER` set, which
//! serves until it is killed. Hence `harness = false` and this `main`.

use std::io::{BufRead, BufReader, Read};
use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use syncrpc::{Client, Code, Context, Execution, Server, Service, Status};

const CHILD_ENV: &str = "SYNCRPC_KILL_TEST_SERVER";
const WAIT: Duration = Duration::from_secs(10);

fn main() {
    if std::env::var_os(CHILD_ENV).is_some() {
        serve_until_killed();
    } else {
        server_killed_mid_call_gives_unavailable_promptly();
        println!("test server_killed_mid_call_gives_unavailable_promptly ... ok");
    }
}

/// The child: a server whose `Hang` method never answers; it says on
/// stdout where it listens and when a call has started.
fn serve_until_killed() {
    let server = Server::builder()
        .service(
            Service::new("hang.Hang").method("Hang", |ctx: &Context, _: ()| {
                println!("started");
                ctx.wait_cancelled(Duration::from_secs(3600));
                Ok::<_, Status>(())
            }),
        )
        .bind("127.0.0.1:0")
        .expect("bind");
    println!("addr {}", server.local_addr());
    // If the parent dies first, the closed stdin ends the child too.
    let _ = std::io::stdin().read_to_end(&mut Vec::new());
    drop(server);
}

fn server_killed_mid_call_gives_unavailable_promptly() {
    let mut child = Command::new(std::env::current_exe().unwrap())
        .env(CHILD_ENV, "1")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("start the server process");
    let (lines_tx, lines) = mpsc::channel::<String>();
    let stdout = child.stdout.take().unwrap();
    let reader = thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if lines_tx.send(line).is_err() {
                break;
            }
        }
    });
    let addr: SocketAddr = lines
        .recv_timeout(WAIT)
        .expect("the server says where it listens")
        .strip_prefix("addr ")
        .expect("an address line")
        .parse()
        .unwrap();

    let client = Client::builder()
        .addr(addr)
        .backoff(Duration::from_secs(30), Duration::from_secs(60))
        .build()
        .unwrap();
    // Four calls with no deadline: only the dead connection can end them.
    let (results_tx, results) = mpsc::channel();
    let calls: Vec<_> = (0..4)
        .map(|_| {
            let client = client.clone();
            let tx = results_tx.clone();
            thread::spawn(move || {
                let r = client.call::<_, ()>(&Context::background(), "/hang.Hang/Hang", &());
                tx.send(r).unwrap();
            })
        })
        .collect();
    for _ in 0..4 {
        let line = lines
            .recv_timeout(WAIT)
            .expect("the calls reach the server");
        assert_eq!(line, "started");
    }

    let killed = Instant::now();
    child.kill().expect("SIGKILL the server");
    for _ in 0..4 {
        let err = results
            .recv_timeout(WAIT)
            .expect("a call hung after the server died")
            .unwrap_err();
        assert_eq!(err.code(), Code::UNAVAILABLE, "{err}");
        assert_eq!(err.execution(), Execution::MayHaveRun, "{err:?}");
        assert!(err.is_io(), "{err:?}");
    }
    assert!(
        killed.elapsed() < Duration::from_secs(2),
        "{:?}",
        killed.elapsed()
    );
    for c in calls {
        c.join().unwrap();
    }

    // Nothing listens any more: refused, so known not to have run.
    let err = client
        .call::<_, ()>(&Context::background(), "/hang.Hang/Hang", &())
        .unwrap_err();
    assert_eq!(err.code(), Code::UNAVAILABLE);
    assert!(err.is_not_run(), "{err:?}");

    child.wait().unwrap();
    reader.join().unwrap();
}

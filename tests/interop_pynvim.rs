//! A third-party MessagePack-RPC client, pynvim from PyPI, calls the echo
//! example: typed calls, an unknown method, a handler error, a
//! notification and concurrent calls on one connection.
//!
//! The test installs pynvim into a virtualenv under `target/` (kept between
//! runs) and runs `tests/interop/pynvim_client.py`. Without python3 or
//! PyPI it prints why and passes, unless `SYNCRPC_REQUIRE_INTEROP=1` (set
//! in CI) makes that a failure.

mod util;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

/// The client version the script is written against.
const PYNVIM: &str = "pynvim==0.6.0";

/// Longest the whole run may take, pip install included.
const BUDGET: Duration = Duration::from_secs(60);

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Skips the test, or fails it where interop is required.
fn skip(why: &str) {
    if std::env::var_os("SYNCRPC_REQUIRE_INTEROP").is_some_and(|v| v == "1") {
        panic!("MessagePack-RPC interop test cannot run: {why}");
    }
    eprintln!("SKIPPED interop_pynvim: {why}");
}

fn run(cmd: &mut Command) -> Result<(), String> {
    let out = cmd
        .output()
        .map_err(|e| format!("cannot run {cmd:?}: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "{cmd:?} failed: {}\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        ))
    }
}

/// The virtualenv's python with pynvim installed, reusing an earlier one.
fn python_with_pynvim() -> Result<PathBuf, String> {
    let venv = root().join("target").join("mrpc-venv");
    let python = venv.join("bin").join("python");
    let ready = |p: &Path| {
        Command::new(p)
            .args(["-c", "import pynvim.msgpack_rpc, greenlet"])
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    };
    if ready(&python) {
        return Ok(python);
    }
    run(Command::new("python3").args(["-m", "venv"]).arg(&venv))?;
    run(Command::new(&python).args([
        "-m",
        "pip",
        "install",
        "--quiet",
        "--disable-pip-version-check",
        "--timeout",
        "20",
        PYNVIM,
    ]))?;
    if ready(&python) {
        Ok(python)
    } else {
        Err("pynvim installed but cannot be imported".into())
    }
}

#[test]
fn pynvim_calls_the_echo_example() {
    let python = match python_with_pynvim() {
        Ok(p) => p,
        Err(why) => return skip(&why),
    };
    for mode in ["event", "thread"] {
        let server = util::start_echo_example(&["--mode", mode]);
        let (host, port) = server.addr.rsplit_once(':').expect("host:port");
        let script = root()
            .join("tests")
            .join("interop")
            .join("pynvim_client.py");
        let child = Command::new(&python)
            .arg(&script)
            .args([host, port])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("run the pynvim script");
        // Bounded: a hung client fails the test instead of hanging it.
        let (tx, rx) = mpsc::channel();
        let pid = child.id();
        std::thread::spawn(move || {
            if rx.recv_timeout(BUDGET).is_err() {
                let _ = Command::new("kill").arg(pid.to_string()).status();
            }
        });
        let out = child.wait_with_output().expect("pynvim script output");
        let _ = tx.send(());
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success() && stdout.trim() == "ok",
            "pynvim against {mode} mode: {}\nstdout: {stdout}\nstderr: {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

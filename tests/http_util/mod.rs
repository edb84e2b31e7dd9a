//! Helpers of the HTTP tests: a raw HTTP/1.1 connection, answers parsed,
//! curl and promtool run (skipped when missing unless
//! `SYNCRPC_REQUIRE_INTEROP=1`), and the echo service they call.
#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Command, Stdio};
use std::time::Duration;

use syncrpc::{Code, Context, Service, Status};

use crate::util::{echo_service, Mode, WAIT};

/// Skips the part of a test that needs `tool`, or fails where interop is
/// required. True if the tool is there.
pub fn have(tool: &str, test: &str) -> bool {
    let found = Command::new(tool)
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !found {
        if std::env::var_os("SYNCRPC_REQUIRE_INTEROP").is_some_and(|v| v == "1") {
            panic!("{test} needs {tool}, which is not installed");
        }
        eprintln!("SKIPPED {test}: {tool} is not installed");
    }
    found
}

/// An HTTP answer.
#[derive(Debug)]
pub struct Answer {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Answer {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.text()))
    }

    #[track_caller]
    pub fn expect(&self, status: u16, code: Code) -> &Self {
        assert_eq!(self.status, status, "{self:?} {}", self.text());
        assert_eq!(
            self.header("x-syncrpc-code"),
            Some(code.as_u32().to_string().as_str()),
            "{self:?}"
        );
        self
    }

    pub fn closes(&self) -> bool {
        self.header("connection") == Some("close")
    }
}

/// Cuts one answer off the front of `buf`, if all there.
pub fn parse(buf: &[u8]) -> Option<(Answer, usize)> {
    let end = buf.windows(4).position(|w| w == b"\r\n\r\n")? + 4;
    let head = std::str::from_utf8(&buf[..end]).expect("an ASCII head");
    let mut lines = head.split("\r\n");
    let status = lines.next()?.split(' ').nth(1)?.parse().ok()?;
    let headers: Vec<(String, String)> = lines
        .filter(|l| !l.is_empty())
        .map(|l| {
            let (n, v) = l.split_once(':').expect("a header line");
            (n.trim().to_ascii_lowercase(), v.trim().to_owned())
        })
        .collect();
    let len: usize = headers
        .iter()
        .find(|(n, _)| n == "content-length")
        .map_or(0, |(_, v)| v.parse().unwrap());
    if buf.len() < end + len {
        return None;
    }
    Some((
        Answer {
            status,
            headers,
            body: buf[end..end + len].to_vec(),
        },
        end + len,
    ))
}

/// An HTTP/1.1 connection on a raw socket.
pub struct Http {
    pub stream: TcpStream,
    pub buf: Vec<u8>,
}

impl Http {
    pub fn connect(addr: SocketAddr) -> Http {
        let stream = TcpStream::connect(addr).unwrap();
        stream.set_read_timeout(Some(WAIT)).unwrap();
        Http {
            stream,
            buf: Vec::new(),
        }
    }

    pub fn send(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).unwrap();
    }

    #[track_caller]
    pub fn answer(&mut self) -> Answer {
        loop {
            if let Some((a, n)) = parse(&self.buf) {
                self.buf.drain(..n);
                return a;
            }
            let mut chunk = [0u8; 8192];
            let n = self.stream.read(&mut chunk).expect("an answer in time");
            assert!(
                n > 0,
                "closed before a whole answer: {:?}",
                String::from_utf8_lossy(&self.buf)
            );
            self.buf.extend_from_slice(&chunk[..n]);
        }
    }

    /// Waits for the server to close the connection.
    #[track_caller]
    pub fn expect_closed(&mut self) {
        let mut chunk = [0u8; 8192];
        match self.stream.read(&mut chunk) {
            Ok(0) => {}
            Ok(n) => panic!(
                "expected the connection closed, got {:?}",
                String::from_utf8_lossy(&chunk[..n])
            ),
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => {}
            Err(e) => panic!("expected the connection closed: {e}"),
        }
    }

    pub fn post_json(&mut self, path: &str, json: &str) -> Answer {
        self.send(post(path, "application/json", json.as_bytes(), "").as_bytes());
        self.answer()
    }

    pub fn get(&mut self, path: &str) -> Answer {
        self.send(format!("GET {path} HTTP/1.1\r\nhost: t\r\n\r\n").as_bytes());
        self.answer()
    }
}

pub fn post(path: &str, content_type: &str, body: &[u8], extra: &str) -> String {
    format!(
        "POST {path} HTTP/1.1\r\nhost: t\r\ncontent-type: {content_type}\r\ncontent-length: {}\r\n{extra}\r\n{}",
        body.len(),
        String::from_utf8_lossy(body)
    )
}

#[derive(serde::Serialize, serde::Deserialize)]
pub struct SleepFor {
    pub ms: u64,
}

/// `echo.Echo` with `Say`, `Raw`, and `Sleep` (returns after `ms`, or
/// as soon as the call is cancelled or its deadline passes).
pub fn echo() -> Service {
    echo_service()
        .method("Sleep", |ctx: &Context, req: SleepFor| {
            if ctx.wait_cancelled(Duration::from_millis(req.ms)) {
                return Err(Status::cancelled("cancelled while sleeping"));
            }
            Ok::<_, Status>(())
        })
        .method("Who", |ctx: &Context, _: ()| {
            // Echoes the caller and metadata entry "k", and answers with
            // metadata of its own.
            ctx.set_response_metadata("seen", "yes");
            Ok::<_, Status>((
                ctx.caller().map(str::to_owned),
                ctx.metadata().get_str("k").map(str::to_owned),
                ctx.trace_id().map(|t| t.as_str().to_owned()),
            ))
        })
}

pub fn server(mode: Mode) -> syncrpc::Server {
    crate::util::builder(mode)
        .service(echo())
        .bind("127.0.0.1:0")
        .unwrap()
}

/// Runs curl with `args` against `addr` and parses its `-i` output.
pub fn curl(addr: SocketAddr, path: &str, args: &[&str], stdin: Option<&[u8]>) -> Answer {
    let mut cmd = Command::new("curl");
    cmd.args(["-s", "-i", "--max-time", "10"])
        .args(args)
        .arg(format!("http://{addr}{path}"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped());
    let mut child = cmd.spawn().unwrap();
    let mut input = child.stdin.take().unwrap();
    input.write_all(stdin.unwrap_or_default()).unwrap();
    drop(input);
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "curl failed: {:?}", out.status);
    parse(&out.stdout)
        .unwrap_or_else(|| panic!("not an answer: {}", String::from_utf8_lossy(&out.stdout)))
        .0
}

/// The value of the sample `name{labels}` in a text exposition.
pub fn sample(text: &str, name: &str, labels: &[(&str, &str)]) -> f64 {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .find(|l| {
            l.starts_with(&format!("{name}{{"))
                && labels
                    .iter()
                    .all(|(k, v)| l.contains(&format!("{k}=\"{v}\"")))
        })
        .and_then(|l| l.rsplit(' ').next())
        .map_or(0.0, |v| v.parse().unwrap())
}

/// Runs `promtool check metrics` on `text`; fails the test if it objects.
#[track_caller]
pub fn promtool_check(text: &str) {
    let mut child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "promtool check metrics: {}{}\n{text}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

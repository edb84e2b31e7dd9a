//! The load driver behind `syncrpc load`, `examples/load.rs`,
//! `benches/server.rs` and `benches/modes.rs`: `connections` connections with `depth` requests in
//! flight on each, all driven by one mio thread, for a warm-up and then a
//! measured window.
//!
//! Depth 1 is a closed loop: each connection sends its next request when
//! the last is answered. A larger depth pipelines: every answer is
//! replaced by a new request at once. Latency runs from the moment a
//! request is queued for writing to the moment its answer is decoded, and
//! is recorded in an HDR histogram (nanoseconds, 3 significant digits).
//!
//! It speaks the native protocol or MessagePack-RPC (`docs/msgpack-rpc.md`),
//! whose requests `[0, msgid, method, [bin]]` carry the same raw body,
//! over plain TCP or TLS (rustls, handshaken before the run starts).
//!
//! Nothing here panics on what the server does: a non-OK answer is
//! counted by code, a GOAWAY is recorded, and a connection that closes or
//! sends garbage is dropped from the run with its requests counted as lost.
#![allow(dead_code)] // each binary that includes this uses a different part

use std::collections::BTreeMap;
use std::fmt;
use std::io::{self, Read, Write};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{Buf, BytesMut};
use hdrhistogram::Histogram;
use mio::net::TcpStream;
use mio::{Events, Interest, Poll, Token};
use syncrpc::codec::msgpack::Scanner;
use syncrpc::codec::{
    Compression, Decoded, Decoder, Encoder, Encoding, Flags, FrameLimits, FrameType, GoawayMeta,
    RequestId, RequestMeta, ResponseMeta, Side,
};
use syncrpc::Code;

/// The echo method every bench server and `examples/echo_server.rs` serve:
/// a raw body, answered unchanged.
pub const ECHO_BYTES: &str = "/echo.Echo/Bytes";

/// The meta of an OK answer with nothing else in it, as syncrpc and the
/// ceiling server write it: `{"code": 0}`. Compared byte for byte so that
/// the common case costs the load no decoding.
pub const OK_META: &[u8] = b"\x81\xa4code\x00";

/// Longest latency the histogram records exactly; longer ones are
/// recorded as this.
const MAX_LATENCY: Duration = Duration::from_secs(60);

/// The protocol a load speaks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Wire {
    /// syncrpc's own frames (`docs/protocol.md`).
    Native,
    /// MessagePack-RPC (`docs/msgpack-rpc.md`).
    MsgpackRpc,
}

/// Nesting a MessagePack-RPC answer may have, for the scanner that finds
/// where it ends.
const MSGPACK_RPC_DEPTH: usize = 16;

/// What to send, where, and for how long.
#[derive(Clone, Debug)]
pub struct Load {
    /// The server.
    pub addr: SocketAddr,
    /// The protocol spoken.
    pub wire: Wire,
    /// Connections, opened before the run starts.
    pub connections: usize,
    /// Requests in flight on each connection.
    pub depth: usize,
    /// The method called, `/service/method`.
    pub method: String,
    /// Size of each request's raw body (encoding 1), in bytes.
    pub body_len: usize,
    /// Time under load before measuring starts.
    pub warmup: Duration,
    /// The measured window.
    pub duration: Duration,
    /// TLS with this configuration, or plain TCP.
    pub tls: Option<Arc<rustls::ClientConfig>>,
    /// The name the server's certificate is verified against, with TLS.
    pub server_name: String,
    /// Sent as `authorization: Bearer <token>` with every native request.
    pub token: Option<String>,
}

impl Load {
    /// `connections` x `depth` echo requests of `body_len` bytes to `addr`,
    /// with a 300 ms warm-up and a 2 s window.
    pub fn echo(addr: SocketAddr, connections: usize, depth: usize, body_len: usize) -> Load {
        Load {
            addr,
            wire: Wire::Native,
            connections,
            depth,
            method: ECHO_BYTES.to_owned(),
            body_len,
            warmup: Duration::from_millis(300),
            duration: Duration::from_secs(2),
            tls: None,
            server_name: "localhost".to_owned(),
            token: None,
        }
    }

    /// Opens the connections and runs the load. `mark` is called with
    /// [`Mark::Start`] when the warm-up ends and with [`Mark::End`] when
    /// the window does, both while every connection is still open (so
    /// that a server's per-connection threads are still there to be
    /// measured).
    ///
    /// Fails only if a connection cannot be opened or the poll fails; what
    /// the server answers is in the [`Outcome`].
    pub fn run(&self, mark: impl FnMut(Mark)) -> io::Result<Outcome> {
        self.run_with_progress(mark, Duration::MAX, |_| {})
    }

    /// [`Load::run`], calling `progress` about every `every` (from the
    /// start of the warm-up) with the counts so far, for a live display.
    pub fn run_with_progress(
        &self,
        mut mark: impl FnMut(Mark),
        every: Duration,
        mut progress: impl FnMut(&Progress),
    ) -> io::Result<Outcome> {
        if self.depth == 0 || self.depth > u32::MAX as usize {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("depth must be 1 to {}, not {}", u32::MAX, self.depth),
            ));
        }
        let (template, id_at) = match self.wire {
            Wire::Native => (
                request_frame_with(&self.method, self.token.as_deref(), self.body_len)?,
                8,
            ),
            Wire::MsgpackRpc => (msgpack_rpc_request(&self.method, self.body_len), 3),
        };
        let mut poll = Poll::new()?;
        let mut conns = Vec::with_capacity(self.connections);
        for i in 0..self.connections {
            let std = std::net::TcpStream::connect(self.addr).map_err(|e| {
                io::Error::new(
                    e.kind(),
                    format!("cannot open connection {} to {}: {e}", i + 1, self.addr),
                )
            })?;
            std.set_nodelay(true)?;
            let tls = match &self.tls {
                Some(config) => Some(handshake(config, &self.server_name, &std).map_err(|e| {
                    io::Error::new(
                        e.kind(),
                        format!("connection {} to {}: {e}", i + 1, self.addr),
                    )
                })?),
                None => None,
            };
            std.set_nonblocking(true)?;
            let mut stream = TcpStream::from_std(std);
            poll.registry().register(
                &mut stream,
                Token(i),
                Interest::READABLE | Interest::WRITABLE,
            )?;
            conns.push(Conn {
                stream,
                dec: Decoder::new(Side::Client, FrameLimits::default()),
                scan: Scanner::new(MSGPACK_RPC_DEPTH),
                rbuf: BytesMut::with_capacity(64 * 1024),
                wbuf: BytesMut::with_capacity(64 * 1024),
                sent: vec![None; self.depth],
                open: true,
                heard: false,
                tls,
            });
        }
        let mut run = Run {
            template,
            id_at,
            wire: self.wire,
            open: conns.len(),
            measuring: false,
            outcome: Outcome::new(),
            scratch: vec![0; 64 * 1024],
        };
        for c in &mut conns {
            for id in 0..self.depth {
                run.send(c, id);
            }
            run.flush(c);
        }
        let mut events = Events::with_capacity(1024);
        let measure_from = Instant::now() + self.warmup;
        let end = measure_from + self.duration;
        let mut started = measure_from;
        let mut next_report = Instant::now().checked_add(every);
        loop {
            let now = Instant::now();
            if next_report.is_some_and(|at| now >= at) {
                next_report = now.checked_add(every);
                progress(&Progress {
                    measuring: run.measuring,
                    elapsed: if run.measuring {
                        now.duration_since(started)
                    } else {
                        Duration::ZERO
                    },
                    outcome: &run.outcome,
                    open: run.open,
                });
            }
            if !run.measuring && now >= measure_from {
                mark(Mark::Start);
                started = Instant::now();
                run.measuring = true;
            }
            if now >= end || run.open == 0 {
                break;
            }
            if let Err(e) = poll.poll(&mut events, Some(Duration::from_millis(10))) {
                if e.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                return Err(e);
            }
            for ev in events.iter() {
                if let Some(c) = conns.get_mut(ev.token().0) {
                    if c.open {
                        run.service(c);
                    }
                }
            }
        }
        run.outcome.elapsed = started.elapsed();
        mark(Mark::End);
        Ok(run.outcome)
    }
}

/// A MessagePack-RPC request `[0, msgid, method, [bin body]]` of `len`
/// bytes, its msgid a uint32 at byte 3 to be patched like the
/// native request id.
pub fn msgpack_rpc_request(method: &str, len: usize) -> Vec<u8> {
    let mut v = vec![0x94, 0x00, 0xce, 0, 0, 0, 0];
    let m = method.len();
    match m {
        0..=31 => v.push(0xa0 | m as u8),
        32..=255 => v.extend_from_slice(&[0xd9, m as u8]),
        _ => {
            v.push(0xda);
            v.extend_from_slice(&(m.min(usize::from(u16::MAX)) as u16).to_be_bytes());
        }
    }
    v.extend_from_slice(&method.as_bytes()[..m.min(usize::from(u16::MAX))]);
    v.push(0x91);
    match len {
        0..=255 => v.extend_from_slice(&[0xc4, len as u8]),
        256..=65535 => {
            v.push(0xc5);
            v.extend_from_slice(&(len as u16).to_be_bytes());
        }
        _ => {
            v.push(0xc6);
            v.extend_from_slice(&(len.min(u32::MAX as usize) as u32).to_be_bytes());
        }
    }
    v.resize(v.len() + len, 0x2a);
    v
}

/// The msgid and status of a MessagePack-RPC response `[1, msgid, error,
/// result]`: OK when `error` is nil, else the code of `[code, message]`.
fn msgpack_rpc_answer(msg: &[u8]) -> Option<(usize, Code)> {
    let uint = |at: usize| -> Option<(u64, usize)> {
        let be = |n: usize| {
            let bytes = msg.get(at + 1..at + 1 + n)?;
            Some((
                bytes.iter().fold(0u64, |a, &b| a << 8 | u64::from(b)),
                at + 1 + n,
            ))
        };
        match *msg.get(at)? {
            m @ 0x00..=0x7f => Some((u64::from(m), at + 1)),
            0xcc => be(1),
            0xcd => be(2),
            0xce => be(4),
            0xcf => be(8),
            _ => None,
        }
    };
    if msg.get(..2)? != [0x94, 0x01] {
        return None;
    }
    let (id, at) = uint(2)?;
    let code = match *msg.get(at)? {
        0xc0 => Code::OK,
        0x92 => uint(at + 1).map_or(Code::UNKNOWN, |(c, _)| Code::from(c as u32)),
        _ => Code::UNKNOWN,
    };
    Some((id as usize, code))
}

/// A run's counts so far, for [`Load::run_with_progress`].
pub struct Progress<'a> {
    /// False during the warm-up, when nothing is counted yet.
    pub measuring: bool,
    /// Time since the measured window started.
    pub elapsed: Duration,
    /// The answers counted so far (its `elapsed` is not set yet).
    pub outcome: &'a Outcome,
    /// Connections still in the run.
    pub open: usize,
}

impl Progress<'_> {
    /// Answers per second so far in the window.
    pub fn rate(&self) -> f64 {
        self.outcome.answered as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }
}

/// Where a run is, for [`Load::run`]'s `mark`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mark {
    /// The warm-up is over; the measured window starts.
    Start,
    /// The measured window is over; the connections are still open.
    End,
}

/// A REQUEST frame with id 0 and a raw body of `len` bytes; the id is
/// patched in place (bytes 8 to 11) for each request.
pub fn request_frame(method: &str, len: usize) -> io::Result<Vec<u8>> {
    request_frame_with(method, None, len)
}

/// [`request_frame`], carrying `authorization: Bearer <token>` when a
/// token is given.
pub fn request_frame_with(method: &str, token: Option<&str>, len: usize) -> io::Result<Vec<u8>> {
    let mut meta = RequestMeta::new(method);
    if let Some(token) = token {
        meta.md.insert("authorization", format!("Bearer {token}"));
    }
    let mut enc = Encoder::new();
    enc.request(
        RequestId(0),
        Flags::new(Compression::None, Encoding::Raw),
        &meta,
        &vec![0x2a; len],
    )
    .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e.to_string()))?;
    Ok(enc.as_slice().to_vec())
}

struct Conn {
    stream: TcpStream,
    dec: Decoder,
    /// Where the MessagePack-RPC answer being read ends, once it is in.
    scan: Scanner,
    rbuf: BytesMut,
    wbuf: BytesMut,
    /// When each request id was sent; `None` when it is not in flight.
    sent: Vec<Option<Instant>>,
    open: bool,
    /// True once the server has sent a byte.
    heard: bool,
    tls: Option<rustls::ClientConnection>,
}

/// How long a TLS handshake may take before the load gives up on it.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// A finished TLS handshake over the blocking `stream`, the server's
/// certificate verified against `name`.
fn handshake(
    config: &Arc<rustls::ClientConfig>,
    name: &str,
    stream: &std::net::TcpStream,
) -> io::Result<rustls::ClientConnection> {
    let name = rustls::pki_types::ServerName::try_from(name.to_owned()).map_err(|e| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("TLS server name {name:?}: {e}"),
        )
    })?;
    let mut conn = rustls::ClientConnection::new(config.clone(), name)
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
    // Requests in flight are bounded by the depth; rustls must queue them.
    conn.set_buffer_limit(None);
    stream.set_read_timeout(Some(HANDSHAKE_TIMEOUT))?;
    stream.set_write_timeout(Some(HANDSHAKE_TIMEOUT))?;
    let mut s = stream;
    let done = (|| {
        while conn.is_handshaking() {
            conn.complete_io(&mut s)?;
        }
        while conn.wants_write() {
            conn.write_tls(&mut s)?;
        }
        Ok::<(), io::Error>(())
    })();
    stream.set_read_timeout(None)?;
    stream.set_write_timeout(None)?;
    done.map_err(|e| {
        let why = match e.kind() {
            io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut => {
                "the server did not answer the ClientHello (is it a TLS server?)".to_owned()
            }
            io::ErrorKind::UnexpectedEof => {
                "the server closed the connection (is it a TLS server?)".to_owned()
            }
            _ if e.to_string().contains("InvalidContentType") => {
                format!("{e}: the server answered in plaintext (is its listener TLS?)")
            }
            _ => e.to_string(),
        };
        io::Error::new(e.kind(), format!("TLS handshake failed: {why}"))
    })?;
    Ok(conn)
}

struct Run {
    template: Vec<u8>,
    /// Offset of the 4-byte request id in `template`.
    id_at: usize,
    wire: Wire,
    /// Connections still in the run.
    open: usize,
    measuring: bool,
    outcome: Outcome,
    scratch: Vec<u8>,
}

impl Run {
    fn send(&mut self, c: &mut Conn, id: usize) {
        let start = c.wbuf.len();
        c.wbuf.extend_from_slice(&self.template);
        let at = start + self.id_at;
        c.wbuf[at..at + 4].copy_from_slice(&(id as u32).to_be_bytes());
        c.sent[id] = Some(Instant::now());
    }

    /// Reads what arrived, answers each response with a new request, and
    /// writes what it can.
    fn service(&mut self, c: &mut Conn) {
        let mut eof = false;
        loop {
            match c.stream.read(&mut self.scratch) {
                Ok(0) => {
                    eof = true;
                    break;
                }
                Ok(n) => {
                    c.heard = true;
                    if let Err(e) = receive(c, &self.scratch[..n]) {
                        self.lose(c, format!("TLS: {e}"));
                        return;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    self.lose(c, format!("read failed: {e}"));
                    return;
                }
            }
        }
        let now = Instant::now();
        let read = match self.wire {
            Wire::Native => self.read_native(c, now),
            Wire::MsgpackRpc => self.read_msgpack_rpc(c, now),
        };
        if let Err(why) = read {
            self.lose(c, why);
            return;
        }
        if eof {
            let in_flight = c.sent.iter().flatten().count();
            let why = if !c.heard && c.tls.is_none() {
                format!(
                    "closed by the server with {in_flight} in flight before answering \
                     anything; a TLS-only server does this to plaintext (is TLS needed?)"
                )
            } else {
                format!("closed by the server with {in_flight} in flight")
            };
            self.lose(c, why);
            return;
        }
        self.flush(c);
    }

    /// Takes every whole frame off the read buffer.
    fn read_native(&mut self, c: &mut Conn, now: Instant) -> Result<(), String> {
        loop {
            let frame = match c.dec.decode(&mut c.rbuf) {
                Ok(Some(Decoded::Frame(f))) => f,
                Ok(None) => return Ok(()),
                Ok(Some(Decoded::BodyTooLarge { header, .. })) => {
                    return Err(format!("answer {} over 10 MiB", header.request_id.0))
                }
                Err(e) => return Err(format!("protocol error: {e}")),
            };
            match frame.frame_type() {
                FrameType::Response => {
                    let code = if frame.meta == OK_META {
                        Code::OK
                    } else {
                        ResponseMeta::decode(&frame.meta).map_or(Code::UNKNOWN, |m| m.code())
                    };
                    self.answered(c, frame.request_id().0 as usize, code, now);
                }
                FrameType::Goaway => {
                    let (code, message) = GoawayMeta::decode(&frame.meta).map_or_else(
                        |e| (Code::UNKNOWN, format!("undecodable GOAWAY meta: {e}")),
                        |m| (m.code(), m.message.to_owned()),
                    );
                    self.outcome.goaways.push(format!("{code:?}: {message}"));
                }
                _ => {}
            }
        }
    }

    /// Takes every whole answer `[1, msgid, error, result]` off the read
    /// buffer.
    fn read_msgpack_rpc(&mut self, c: &mut Conn, now: Instant) -> Result<(), String> {
        loop {
            let end = match c.scan.advance(&c.rbuf) {
                Ok(Some(end)) => end,
                Ok(None) => return Ok(()),
                Err(e) => return Err(format!("malformed MessagePack: {e:?}")),
            };
            c.scan = Scanner::new(MSGPACK_RPC_DEPTH);
            let answer = c.rbuf.split_to(end);
            let (id, code) = msgpack_rpc_answer(&answer)
                .ok_or_else(|| format!("not a MessagePack-RPC response: {answer:02x?}"))?;
            self.answered(c, id, code, now);
        }
    }

    /// Records the answer to request `id` and sends the next request.
    fn answered(&mut self, c: &mut Conn, id: usize, code: Code, now: Instant) {
        let Some(sent) = c.sent.get_mut(id).and_then(Option::take) else {
            return; // not ours (or answered twice): ignore it
        };
        if self.measuring {
            self.outcome.record(code, now.duration_since(sent));
        }
        self.send(c, id);
    }

    fn flush(&mut self, c: &mut Conn) {
        if let Some(tls) = &mut c.tls {
            if !c.wbuf.is_empty() {
                tls.writer()
                    .write_all(&c.wbuf)
                    .expect("rustls takes plaintext");
                c.wbuf.clear();
            }
            while tls.wants_write() {
                match tls.write_tls(&mut c.stream) {
                    Ok(_) => {}
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) => {
                        self.lose(c, format!("write failed: {e}"));
                        return;
                    }
                }
            }
            return;
        }
        while !c.wbuf.is_empty() {
            match c.stream.write(&c.wbuf) {
                Ok(n) => c.wbuf.advance(n),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    self.lose(c, format!("write failed: {e}"));
                    return;
                }
            }
        }
    }

    /// Takes a connection out of the run, counting its requests as lost.
    fn lose(&mut self, c: &mut Conn, why: String) {
        c.open = false;
        self.open -= 1;
        self.outcome.lost_requests += c.sent.iter().flatten().count() as u64;
        c.sent.iter_mut().for_each(|s| *s = None);
        self.outcome.lost_connections.push(why);
    }
}

/// Appends what `raw` (bytes off the socket) carries to the read buffer,
/// through TLS when the connection has it.
fn receive(c: &mut Conn, mut raw: &[u8]) -> Result<(), rustls::Error> {
    let Some(tls) = &mut c.tls else {
        c.rbuf.extend_from_slice(raw);
        return Ok(());
    };
    while !raw.is_empty() {
        tls.read_tls(&mut raw)
            .map_err(|e| rustls::Error::General(e.to_string()))?;
        let state = tls.process_new_packets()?;
        let n = state.plaintext_bytes_to_read();
        let at = c.rbuf.len();
        c.rbuf.resize(at + n, 0);
        let got = tls.reader().read(&mut c.rbuf[at..]).unwrap_or(0);
        c.rbuf.truncate(at + got);
    }
    Ok(())
}

/// What a run measured. Answers count in the measured window only; lost
/// connections, lost requests and GOAWAYs over the whole run.
#[derive(Debug)]
pub struct Outcome {
    /// Length of the measured window.
    pub elapsed: Duration,
    /// Answers in the window, OK or not.
    pub answered: u64,
    /// Non-OK answers in the window, by code.
    pub failed: BTreeMap<Code, u64>,
    /// Latency of every answer in the window, in nanoseconds.
    pub latency: Histogram<u64>,
    /// GOAWAYs received, as `CODE: message`.
    pub goaways: Vec<String>,
    /// Why each connection that dropped out of the run did.
    pub lost_connections: Vec<String>,
    /// Requests in flight on a connection when it dropped out of the run:
    /// never answered. (Those in flight when the run ends are not
    /// counted.)
    pub lost_requests: u64,
}

impl Outcome {
    fn new() -> Outcome {
        Outcome {
            elapsed: Duration::ZERO,
            answered: 0,
            failed: BTreeMap::new(),
            latency: latency_histogram(),
            goaways: Vec::new(),
            lost_connections: Vec::new(),
            lost_requests: 0,
        }
    }

    fn record(&mut self, code: Code, latency: Duration) {
        self.answered += 1;
        if !code.is_ok() {
            *self.failed.entry(code).or_default() += 1;
        }
        self.latency.saturating_record(latency.as_nanos() as u64);
    }

    /// Answers per second over the window.
    pub fn rate(&self) -> f64 {
        self.answered as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }

    /// Non-OK answers in the window.
    pub fn failures(&self) -> u64 {
        self.failed.values().sum()
    }

    /// The latency at quantile `q` (0.5 is the median).
    pub fn quantile(&self, q: f64) -> Duration {
        Duration::from_nanos(self.latency.value_at_quantile(q))
    }
}

/// An empty histogram for latencies in nanoseconds, up to a minute, to 3
/// significant digits.
pub fn latency_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, MAX_LATENCY.as_nanos() as u64, 3).expect("valid histogram bounds")
}

/// A latency printed with a unit that keeps 3 or 4 digits: `87us`,
/// `1.25ms`, `2.0s`.
pub struct Latency(pub Duration);

impl fmt::Display for Latency {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let us = self.0.as_secs_f64() * 1e6;
        let text = if us < 1000.0 {
            format!("{us:.0}us")
        } else if us < 1e6 {
            format!("{:.2}ms", us / 1e3)
        } else {
            format!("{:.2}s", us / 1e6)
        };
        f.pad(&text)
    }
}

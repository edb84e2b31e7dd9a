//! Cutting HTTP/1.1 requests off a connection's bytes.
//!
//! The head is parsed with `httparse` once it is complete (it stays in
//! the read buffer, counted in the request-byte budget, until the whole
//! request is there); the body is read by its `Content-Length`, or chunk
//! by chunk, resuming where the last read stopped. Anything that leaves
//! the rest of the stream unreadable (a head over the limit, a malformed
//! request line, a bad length or chunk, both `Content-Length` and
//! `Transfer-Encoding`, a body over the limit) is answered and ends the
//! connection: the next request's start is unknown, and guessing it is
//! how requests are smuggled.

use bytes::{Bytes, BytesMut};

use super::answer::{self, json_to_msgpack, CONTINUE};
use super::{Format, Hints};
use crate::codec::{Compression, Encoding, Flags, ProtocolError, RequestId};
use crate::metadata::Metadata;
use crate::server::protocol::{
    DecodeConfig, Message, MessageDecoder, RequestHead, ENDPOINT_SERVICE,
};
use crate::status::Status;

/// Header lines a request may have.
const MAX_HEADERS: usize = 64;

/// The built-in endpoints, by path, and the method of
/// [`ENDPOINT_SERVICE`] each reads, with the format of its answer.
pub(crate) const ENDPOINTS: &[(&str, &str, Format)] = &[
    ("/healthz", "Healthz", Format::Text),
    ("/livez", "Livez", Format::Text),
    ("/metrics", "Metrics", Format::Metrics),
    ("/", "Info", Format::JsonDocument),
];

/// The decoder of one HTTP/1.1 connection.
#[derive(Debug)]
pub(crate) struct HttpDecoder {
    /// Request line and headers together.
    max_head: usize,
    max_body: usize,
    /// The request whose head was read and whose body is awaited.
    pending: Option<Pending>,
    /// Requests cut so far, for the ids.
    seq: u32,
    /// The peer's last request was read.
    done: bool,
}

/// A request whose head was read.
#[derive(Debug)]
struct Pending {
    head: Head,
    /// The head's length: where the body starts in the buffer.
    head_len: usize,
    body: BodyKind,
    /// `100 Continue` was sent (or is not wanted).
    continued: bool,
}

#[derive(Debug)]
enum BodyKind {
    Length(usize),
    Chunked {
        /// Where the next chunk-size line starts in the buffer.
        at: usize,
        /// The chunks' data, as ranges of the buffer.
        pieces: Vec<(usize, usize)>,
        total: usize,
    },
}

/// What the head says, owned: the buffer it came from stays put until
/// the body is in.
#[derive(Debug)]
struct Head {
    method: String,
    path: String,
    http10: bool,
    close: bool,
    content_type: Option<String>,
    accept: Option<String>,
    timeout_ms: Option<String>,
    trace_id: Option<String>,
    caller: Option<String>,
    md: Metadata,
}

/// A refusal that ends the connection.
struct Fatal {
    http: u16,
    status: Status,
}

fn fatal(http: u16, status: Status) -> Fatal {
    Fatal { http, status }
}

impl MessageDecoder for HttpDecoder {
    fn decode(
        &mut self,
        buf: &mut BytesMut,
        on_message: &mut dyn FnMut(Message<'_>),
    ) -> Result<bool, ProtocolError> {
        if self.done {
            return Ok(false);
        }
        match self.step(buf, on_message) {
            Ok(cut) => Ok(cut),
            Err(Fatal { http, status }) => {
                log::debug!("HTTP request refused with {http}: {}", status.message());
                let http10 = self.pending.as_ref().is_some_and(|p| p.head.http10);
                self.done = true;
                self.pending = None;
                buf.clear();
                on_message(Message::Reply(
                    answer::refusal(http, &status, "", true, http10).freeze(),
                ));
                Ok(true)
            }
        }
    }

    fn is_mid_message(&self, buf: &BytesMut) -> bool {
        !self.done && (self.pending.is_some() || !buf.is_empty())
    }

    fn is_done(&self) -> bool {
        self.done
    }

    fn finish(&self, buf: &BytesMut) -> Result<(), ProtocolError> {
        if self.is_mid_message(buf) {
            Err(ProtocolError::Truncated { have: buf.len() })
        } else {
            Ok(())
        }
    }
}

impl HttpDecoder {
    pub fn new(config: &DecodeConfig) -> HttpDecoder {
        HttpDecoder {
            max_head: config.frame.max_meta,
            max_body: config.frame.max_body,
            pending: None,
            seq: 0,
            done: false,
        }
    }

    fn step(
        &mut self,
        buf: &mut BytesMut,
        on_message: &mut dyn FnMut(Message<'_>),
    ) -> Result<bool, Fatal> {
        if self.pending.is_none() {
            let Some(pending) = self.read_head(buf)? else {
                return Ok(false);
            };
            self.pending = Some(pending);
        }
        let Some(p) = self.pending.as_mut() else {
            return Ok(false);
        };
        let Some((end, body)) = read_body(buf, p, self.max_body, self.max_head)? else {
            if !p.continued {
                // The client waits for this before it sends the body.
                p.continued = true;
                on_message(Message::Reply(Bytes::from_static(CONTINUE)));
                return Ok(true);
            }
            return Ok(false);
        };
        let Some(p) = self.pending.take() else {
            return Ok(false);
        };
        let _ = buf.split_to(end);
        self.seq = self.seq.wrapping_add(1) & 0x00ff_ffff;
        if p.head.close {
            self.done = true;
        }
        route(p.head, end - body.len(), body, self.seq, on_message);
        Ok(true)
    }

    /// Parses the head once it is all there.
    fn read_head(&mut self, buf: &BytesMut) -> Result<Option<Pending>, Fatal> {
        let too_large = || {
            fatal(
                431,
                Status::resource_exhausted(format!(
                    "request line and headers over {} bytes",
                    self.max_head
                )),
            )
        };
        let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
        let mut req = httparse::Request::new(&mut headers);
        let head_len = match req.parse(buf) {
            Ok(httparse::Status::Complete(n)) => n,
            Ok(httparse::Status::Partial) => {
                if buf.len() > self.max_head {
                    return Err(too_large());
                }
                return Ok(None);
            }
            Err(httparse::Error::TooManyHeaders) => {
                return Err(fatal(
                    431,
                    Status::resource_exhausted(format!("more than {MAX_HEADERS} header lines")),
                ))
            }
            Err(e) => {
                return Err(fatal(
                    400,
                    Status::invalid_argument(format!("malformed request: {e}")),
                ))
            }
        };
        if head_len > self.max_head {
            return Err(too_large());
        }
        let http10 = req.version == Some(0);
        let mut head = Head {
            method: req.method.unwrap_or_default().to_owned(),
            path: req.path.unwrap_or_default().to_owned(),
            http10,
            close: http10,
            content_type: None,
            accept: None,
            timeout_ms: None,
            trace_id: None,
            caller: None,
            md: Metadata::new(),
        };
        let mut length: Option<usize> = None;
        let mut chunked = false;
        let mut expect_continue = false;
        for h in req.headers.iter() {
            let name = h.name.to_ascii_lowercase();
            let value = std::str::from_utf8(h.value).map(str::trim);
            let text = || {
                value.map(str::to_owned).map_err(|_| {
                    fatal(
                        400,
                        Status::invalid_argument(format!("header {name} is not UTF-8")),
                    )
                })
            };
            match name.as_str() {
                "content-length" => {
                    let n = value
                        .ok()
                        .filter(|v| !v.is_empty() && v.bytes().all(|b| b.is_ascii_digit()))
                        .and_then(|v| v.parse::<usize>().ok())
                        .ok_or_else(|| {
                            fatal(
                                400,
                                Status::invalid_argument("bad Content-Length".to_owned()),
                            )
                        })?;
                    if length.is_some_and(|l| l != n) {
                        return Err(fatal(
                            400,
                            Status::invalid_argument("conflicting Content-Length headers"),
                        ));
                    }
                    length = Some(n);
                }
                "transfer-encoding" => {
                    let v = text()?.to_ascii_lowercase();
                    if v != "chunked" || chunked {
                        return Err(fatal(
                            400,
                            Status::invalid_argument(format!(
                                "unsupported Transfer-Encoding {v:?}: only chunked"
                            )),
                        ));
                    }
                    chunked = true;
                }
                "connection" => {
                    let v = text()?.to_ascii_lowercase();
                    if v.split(',').any(|t| t.trim() == "close") {
                        head.close = true;
                    } else if v.split(',').any(|t| t.trim() == "keep-alive") {
                        head.close = false;
                    }
                }
                "expect" => {
                    if text()?.eq_ignore_ascii_case("100-continue") {
                        expect_continue = true;
                    }
                }
                "content-type" => head.content_type = Some(text()?),
                "accept" => head.accept = Some(text()?),
                "x-timeout-ms" => head.timeout_ms = Some(text()?),
                "traceparent" => {
                    // version-traceid-parentid-flags: the trace id names
                    // the request, unless x-trace-id says otherwise.
                    let v = text()?;
                    if let Some(id) = v.split('-').nth(1).filter(|id| id.len() == 32) {
                        head.trace_id.get_or_insert_with(|| id.to_owned());
                    }
                }
                "x-trace-id" => head.trace_id = Some(text()?),
                "x-caller" => head.caller = Some(text()?),
                _ => {
                    if let Some(key) = name.strip_prefix("x-md-") {
                        head.md.insert(key, text()?);
                    }
                }
            }
        }
        if chunked && length.is_some() {
            return Err(fatal(
                400,
                Status::invalid_argument("both Content-Length and Transfer-Encoding"),
            ));
        }
        let body = if chunked {
            BodyKind::Chunked {
                at: head_len,
                pieces: Vec::new(),
                total: 0,
            }
        } else {
            let n = length.unwrap_or(0);
            if n > self.max_body {
                return Err(fatal(
                    413,
                    Status::resource_exhausted(format!(
                        "body too large: {n} > {} bytes",
                        self.max_body
                    )),
                ));
            }
            BodyKind::Length(n)
        };
        let wants_body = chunked || length.is_some_and(|n| n > 0);
        Ok(Some(Pending {
            head,
            head_len,
            body,
            continued: !(expect_continue && wants_body && !http10),
        }))
    }
}

/// The request's end in the buffer and its body, once all there.
fn read_body(
    buf: &BytesMut,
    p: &mut Pending,
    max_body: usize,
    max_line: usize,
) -> Result<Option<(usize, Bytes)>, Fatal> {
    match &mut p.body {
        BodyKind::Length(n) => {
            let end = p.head_len + *n;
            if buf.len() < end {
                return Ok(None);
            }
            Ok(Some((end, Bytes::copy_from_slice(&buf[p.head_len..end]))))
        }
        BodyKind::Chunked { at, pieces, total } => loop {
            let bad = |why: &str| fatal(400, Status::invalid_argument(format!("bad chunk: {why}")));
            // Tiny chunks carry more framing than data: the body on the
            // wire is held in the read buffer, so it is bounded too.
            let framed = *at - p.head_len;
            let max_framed = max_body.saturating_mul(2).saturating_add(max_line);
            if framed > max_framed {
                return Err(fatal(
                    413,
                    Status::resource_exhausted(format!(
                        "chunked body too large on the wire: over {max_framed} bytes"
                    )),
                ));
            }
            let rest = &buf[*at..];
            let (used, size) = match httparse::parse_chunk_size(rest) {
                Ok(httparse::Status::Complete(c)) => c,
                Ok(httparse::Status::Partial) => {
                    if rest.len() > max_line {
                        return Err(bad("chunk-size line too long"));
                    }
                    return Ok(None);
                }
                Err(_) => return Err(bad("invalid chunk size")),
            };
            if size == 0 {
                // Trailers (ignored) end with an empty line.
                let after = &rest[used..];
                let end = if after.starts_with(b"\r\n") {
                    Some(2)
                } else {
                    after
                        .windows(4)
                        .position(|w| w == b"\r\n\r\n")
                        .map(|i| i + 4)
                };
                let Some(end) = end else {
                    if after.len() > max_line {
                        return Err(bad("trailers too long"));
                    }
                    return Ok(None);
                };
                let mut body = BytesMut::with_capacity(*total);
                for (s, l) in pieces.iter() {
                    body.extend_from_slice(&buf[*s..*s + *l]);
                }
                return Ok(Some((*at + used + end, body.freeze())));
            }
            let size = usize::try_from(size)
                .ok()
                .filter(|s| total.saturating_add(*s) <= max_body)
                .ok_or_else(|| {
                    fatal(
                        413,
                        Status::resource_exhausted(format!(
                            "body too large: over {max_body} bytes"
                        )),
                    )
                })?;
            if rest.len() < used + size + 2 {
                return Ok(None);
            }
            if &rest[used + size..used + size + 2] != b"\r\n" {
                return Err(bad("the data does not end with CRLF"));
            }
            pieces.push((*at + used, size));
            *total += size;
            *at += used + size + 2;
        },
    }
}

/// Hands on the request `head` stands for: a method call, a built-in
/// endpoint, or a refusal.
fn route(
    head: Head,
    overhead: usize,
    body: Bytes,
    seq: u32,
    on_message: &mut dyn FnMut(Message<'_>),
) {
    let path = head.path.split('?').next().unwrap_or_default();
    let endpoint = ENDPOINTS.iter().find(|(p, _, _)| *p == path);
    let is_method = path
        .strip_prefix('/')
        .and_then(|rest| rest.split_once('/'))
        .is_some_and(|(s, m)| !s.is_empty() && !m.is_empty() && !m.contains('/'));
    let refuse = |http: u16, status: Status, extra: &str, on: &mut dyn FnMut(Message<'_>)| {
        on(Message::Reply(
            answer::refusal(http, &status, extra, head.close, head.http10).freeze(),
        ))
    };
    if let Some((_, method, format)) = endpoint {
        if head.method != "GET" {
            let status = Status::unimplemented(format!("{path} answers GET only"));
            return refuse(405, status, "allow: GET\r\n", on_message);
        }
        let full = format!("/{ENDPOINT_SERVICE}/{method}");
        let hints = Hints::new(*format, head.close, head.http10, seq);
        return request(
            head,
            hints,
            Flags::new(Compression::None, Encoding::Raw),
            &full,
            overhead,
            body,
            on_message,
        );
    }
    if !is_method {
        let status = Status::not_found(format!("no such path {path:?}"));
        return refuse(404, status, "", on_message);
    }
    if head.method != "POST" {
        let status = Status::unimplemented(format!("{path} is a method: call it with POST"));
        return refuse(405, status, "allow: POST\r\n", on_message);
    }
    let media = |v: &Option<String>| {
        v.as_deref().map(|v| {
            v.split(';')
                .next()
                .unwrap_or_default()
                .trim()
                .to_ascii_lowercase()
        })
    };
    let request_format = match media(&head.content_type).as_deref() {
        Some("application/json") => Format::Json,
        Some("application/msgpack" | "application/x-msgpack" | "application/vnd.msgpack") => {
            Format::Msgpack
        }
        Some("application/octet-stream") => Format::Octet,
        other => {
            let status = Status::invalid_argument(format!(
                "unsupported content type {:?}: send application/json, application/msgpack or application/octet-stream",
                other.unwrap_or("(none)")
            ));
            return refuse(415, status, "", on_message);
        }
    };
    let answer_format = head
        .accept
        .as_deref()
        .and_then(|accept| {
            accept
                .split(',')
                .find_map(|a| match a.split(';').next().unwrap_or_default().trim() {
                    "application/json" => Some(Format::Json),
                    "application/msgpack" | "application/x-msgpack" | "application/vnd.msgpack" => {
                        Some(Format::Msgpack)
                    }
                    "application/octet-stream" => Some(Format::Octet),
                    _ => None,
                })
        })
        .unwrap_or(request_format);
    let hints = Hints::new(answer_format, head.close, head.http10, seq);
    let (flags, body) = match request_format {
        Format::Json => match json_to_msgpack(&body) {
            Ok(mp) => (
                Flags::new(Compression::None, Encoding::MsgPack),
                Bytes::from(mp),
            ),
            Err(why) => {
                return on_message(Message::Refuse {
                    id: RequestId(hints.0),
                    flags: Flags::default(),
                    oneway: false,
                    status: Status::invalid_argument(why),
                    trace: None,
                })
            }
        },
        Format::Msgpack => (Flags::new(Compression::None, Encoding::MsgPack), body),
        _ => (Flags::new(Compression::None, Encoding::Raw), body),
    };
    let path = path.to_owned();
    request(head, hints, flags, &path, overhead, body, on_message)
}

/// Hands on a request to run.
fn request(
    head: Head,
    hints: Hints,
    flags: Flags,
    method: &str,
    overhead: usize,
    body: Bytes,
    on_message: &mut dyn FnMut(Message<'_>),
) {
    let timeout_ms = match head.timeout_ms.as_deref().map(str::parse::<u32>) {
        None => 0,
        Some(Ok(ms)) => ms,
        Some(Err(_)) => {
            return on_message(Message::Refuse {
                id: RequestId(hints.0),
                flags,
                oneway: false,
                status: Status::invalid_argument(format!(
                    "x-timeout-ms {:?} is not a number of milliseconds",
                    head.timeout_ms.as_deref().unwrap_or_default()
                )),
                trace: None,
            })
        }
    };
    on_message(Message::Request {
        head: RequestHead {
            id: RequestId(hints.0),
            flags,
            oneway: false,
            method,
            timeout_ms,
            trace_id: head.trace_id.as_deref(),
            caller: head.caller.as_deref(),
            md: head.md,
            overhead,
            any_encoding: false,
            stream: false,
        },
        body,
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::FrameLimits;

    fn decoder() -> HttpDecoder {
        HttpDecoder::new(&DecodeConfig {
            frame: FrameLimits {
                max_body: 64,
                max_meta: 256,
            },
            max_body_depth: 8,
            msgpack_rpc_default_service: None,
        })
    }

    /// What the decoder makes of `bytes`: "call <method> <body>",
    /// "reply <status line>", "refuse <code>".
    fn run(bytes: &[u8]) -> (Vec<String>, bool) {
        run_in(bytes, &[bytes.len().max(1)])
    }

    /// As [`run`], the bytes arriving in reads of `sizes` (used in turn).
    fn run_in(bytes: &[u8], sizes: &[usize]) -> (Vec<String>, bool) {
        let mut d = decoder();
        let mut buf = BytesMut::new();
        let mut seen = Vec::new();
        let mut at = 0;
        for size in sizes.iter().cycle() {
            let end = (at + size).min(bytes.len());
            buf.extend_from_slice(&bytes[at..end]);
            at = end;
            decode_all(&mut d, &mut buf, &mut seen);
            // Never more than a head and a body at the limits, plus a read.
            assert!(buf.len() <= 256 + 2 * 64 + 256 + size, "{}", buf.len());
            if at == bytes.len() || d.is_done() {
                break;
            }
        }
        (seen, d.is_done())
    }

    fn decode_all(d: &mut HttpDecoder, buf: &mut BytesMut, seen: &mut Vec<String>) {
        while d
            .decode(buf, &mut |m| {
                seen.push(match m {
                    Message::Request { head, body } => {
                        format!("call {} {:02x?}", head.method, &body[..])
                    }
                    Message::Reply(b) => {
                        let text = String::from_utf8_lossy(&b).into_owned();
                        format!("reply {}", text.lines().next().unwrap_or_default())
                    }
                    Message::Refuse { status, .. } => format!("refuse {}", status.code()),
                    other => format!("{other:?}"),
                })
            })
            .unwrap()
        {}
    }

    proptest::proptest! {
        #[test]
        fn how_the_bytes_arrive_changes_nothing(
            sizes in proptest::collection::vec(1usize..40, 1..8),
        ) {
            let stream = b"POST /a.B/C HTTP/1.1\r\ncontent-type: application/json\r\ncontent-length: 13\r\n\r\n{\"text\":\"hi\"}\
    GET /metrics?x=1 HTTP/1.1\r\nx-md-k: v\r\n\r\n\
    POST /a.B/C HTTP/1.1\r\ncontent-type: application/octet-stream\r\ntransfer-encoding: chunked\r\nexpect: 100-continue\r\n\r\n3\r\nabc\r\n0\r\n\r\n\
    PUT /a.B/C HTTP/1.1\r\ncontent-length: 2\r\n\r\nxy\
    POST /a.B/C HTTP/1.1\r\ncontent-length: 1\r\ntransfer-encoding: chunked\r\n\r\n";
            let (whole, done) = run(stream);
            let (pieces, done_too) = run_in(stream, &sizes);
            // 100 Continue is sent only when the body is not there yet.
            let pieces: Vec<String> = pieces.into_iter().filter(|m| !m.contains(" 100 ")).collect();
            proptest::prop_assert_eq!(&whole, &pieces);
            proptest::prop_assert_eq!(whole.len(), 5);
            proptest::prop_assert!(done && done_too);
        }

        #[test]
        fn any_bytes_are_decoded_or_refused_without_a_panic(
            bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..600),
            sizes in proptest::collection::vec(1usize..64, 1..4),
        ) {
            let mut stream = b"POST /a.B/C HTTP/1.1\r\n".to_vec();
            stream.extend_from_slice(&bytes);
            run_in(&stream, &sizes);
        }
    }

    #[test]
    fn pipelined_requests_come_out_in_order() {
        let (seen, done) = run(b"POST /a.B/C HTTP/1.1\r\ncontent-type: application/json\r\ncontent-length: 1\r\n\r\n1\
GET /healthz HTTP/1.1\r\n\r\n\
POST /a.B/C HTTP/1.1\r\ncontent-type: application/octet-stream\r\ntransfer-encoding: chunked\r\n\r\n2\r\nhi\r\n1;x=y\r\n!\r\n0\r\nt: 1\r\n\r\n");
        assert_eq!(
            seen,
            [
                "call /a.B/C [01]",
                "call /syncrpc.Endpoints/Healthz []",
                "call /a.B/C [68, 69, 21]",
            ]
        );
        assert!(!done);
    }

    #[test]
    fn smuggling_and_bad_framing_end_the_connection() {
        let cases: &[(&[u8], &str)] = &[
            (
                b"POST /a.B/C HTTP/1.1\r\ncontent-length: 1\r\ntransfer-encoding: chunked\r\n\r\n",
                "reply HTTP/1.1 400 Bad Request",
            ),
            (
                b"POST /a.B/C HTTP/1.1\r\ncontent-length: x1\r\n\r\n",
                "reply HTTP/1.1 400 Bad Request",
            ),
            (
                b"POST /a.B/C HTTP/1.1\r\ncontent-length: 1\r\ncontent-length: 2\r\n\r\n",
                "reply HTTP/1.1 400 Bad Request",
            ),
            (
                b"POST /a.B/C HTTP/1.1\r\ntransfer-encoding: chunked\r\n\r\nzz\r\n",
                "reply HTTP/1.1 400 Bad Request",
            ),
            (b"GET  HTTP/1.1\r\n\r\n", "reply HTTP/1.1 400 Bad Request"),
            (
                b"POST /a.B/C HTTP/1.1\r\ncontent-length: 65\r\n\r\n",
                "reply HTTP/1.1 413 Content Too Large",
            ),
            (
                b"POST /a.B/C HTTP/1.1\r\ntransfer-encoding: chunked\r\n\r\n41\r\n",
                "reply HTTP/1.1 413 Content Too Large",
            ),
        ];
        for (bytes, want) in cases {
            let (seen, done) = run(bytes);
            assert_eq!(seen, [*want], "{}", String::from_utf8_lossy(bytes));
            assert!(done);
        }
        let mut long = b"GET / HTTP/1.1\r\nx-a: ".to_vec();
        long.extend_from_slice(&[b'a'; 300]);
        let (seen, done) = run(&long);
        assert_eq!(seen, ["reply HTTP/1.1 431 Request Header Fields Too Large"]);
        assert!(done);
    }

    #[test]
    fn refusals_that_keep_the_connection() {
        let (seen, done) = run(b"GET /a.B/C HTTP/1.1\r\n\r\nPOST /metrics HTTP/1.1\r\n\r\nPOST /x HTTP/1.1\r\n\r\nPOST /a.B/C HTTP/1.1\r\ncontent-type: application/json\r\ncontent-length: 1\r\n\r\n{POST /a.B/C HTTP/1.1\r\ncontent-length: 0\r\nconnection: close\r\n\r\n");
        assert_eq!(
            seen,
            [
                "reply HTTP/1.1 405 Method Not Allowed",
                "reply HTTP/1.1 405 Method Not Allowed",
                "reply HTTP/1.1 404 Not Found",
                "refuse INVALID_ARGUMENT (3)",
                "reply HTTP/1.1 415 Unsupported Media Type",
            ]
        );
        assert!(done, "connection: close ends the connection");
    }

    #[test]
    fn tiny_chunks_cannot_hold_more_than_their_share_of_the_buffer() {
        // A 64-byte body limit: 30 bytes of data in 810 bytes of chunks.
        let mut bytes = b"POST /a.B/C HTTP/1.1\r\ntransfer-encoding: chunked\r\n\r\n".to_vec();
        for _ in 0..30 {
            bytes.extend_from_slice(b"1;xxxxxxxxxxxxxxxxxxxx\r\na\r\n");
        }
        let (seen, done) = run(&bytes);
        assert_eq!(seen, ["reply HTTP/1.1 413 Content Too Large"]);
        assert!(done);
    }

    #[test]
    fn expect_continue_is_answered_before_the_body() {
        let mut d = decoder();
        let mut buf = BytesMut::from(
            &b"POST /a.B/C HTTP/1.1\r\ncontent-type: application/msgpack\r\ncontent-length: 1\r\nexpect: 100-continue\r\n\r\n"[..],
        );
        let mut seen = Vec::new();
        let mut on =
            |m: Message<'_>| seen.push(format!("{m:?}").chars().take(12).collect::<String>());
        assert!(d.decode(&mut buf, &mut on).unwrap());
        assert!(!d.decode(&mut buf, &mut on).unwrap());
        buf.extend_from_slice(b"\x01");
        assert!(d.decode(&mut buf, &mut on).unwrap());
        assert_eq!(seen, ["Reply(b\"HTTP", "Request { he"]);
        assert!(buf.is_empty());
    }
}

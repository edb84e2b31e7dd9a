//! Round trips: arbitrary frames of every type and every valid flags byte,
//! encoded back to back, split at arbitrary points (down to single bytes),
//! decode to what was encoded; metas, bodies and compressed payloads come
//! back equal too. Case counts are kept low enough for a debug build.

mod codec;

use std::collections::BTreeMap;

use bytes::BytesMut;
use proptest::collection::{btree_map, vec};
use proptest::prelude::*;
use serde::{Deserialize, Serialize};
use syncrpc::codec::{
    compress, decode_body, decompress, encode_body, Compression, Decoded, Decoder, Encoder, Flags,
    Frame, FrameLimits, FrameType, GoawayMeta, RequestId, RequestMeta, ResponseMeta, Side,
    WindowMeta, DEFAULT_MAX_BODY_DEPTH, MAX_TRACE_ID_LEN, MAX_WINDOW,
};
use syncrpc::{Metadata, MetadataValue};

/// Application metadata as generated: unique keys, str or bin values.
type Md = BTreeMap<String, MetadataValue>;

fn metadata(md: &Md) -> Metadata {
    md.iter().map(|(k, v)| (k.clone(), v.clone())).collect()
}

#[derive(Clone, Debug)]
struct Request {
    method: String,
    timeout_ms: u32,
    trace_id: Option<String>,
    caller: Option<String>,
    md: Md,
    stream: bool,
}

impl Request {
    fn meta(&self) -> RequestMeta<'_> {
        RequestMeta {
            method: &self.method,
            timeout_ms: self.timeout_ms,
            trace_id: self.trace_id.as_deref(),
            caller: self.caller.as_deref(),
            md: metadata(&self.md),
            stream: self.stream,
        }
    }
}

#[derive(Clone, Debug)]
struct Response {
    code: u32,
    message: Option<String>,
    trace_id: Option<String>,
    md: Md,
}

impl Response {
    fn meta(&self) -> ResponseMeta<'_> {
        ResponseMeta {
            code: self.code,
            message: self.message.as_deref(),
            trace_id: self.trace_id.as_deref(),
            md: metadata(&self.md),
        }
    }
}

/// One frame to encode, with everything needed to check its decoding.
#[derive(Clone, Debug)]
enum Spec {
    Request(RequestId, Flags, Request, Vec<u8>),
    Oneway(RequestId, Flags, Request, Vec<u8>),
    Response(RequestId, Flags, Response, Vec<u8>),
    Cancel(RequestId),
    Ping(RequestId),
    Pong(RequestId),
    Goaway(u32, String),
    Message(RequestId, Flags, Vec<u8>),
    End(RequestId),
    Window(RequestId, u32),
}

impl Spec {
    fn encode(&self, enc: &mut Encoder) {
        match self {
            Spec::Request(id, flags, r, body) => enc.request(*id, *flags, &r.meta(), body).unwrap(),
            Spec::Oneway(id, flags, r, body) => enc.oneway(*id, *flags, &r.meta(), body).unwrap(),
            Spec::Response(id, flags, r, body) => {
                enc.response(*id, *flags, &r.meta(), body).unwrap()
            }
            Spec::Cancel(id) => enc.cancel(*id),
            Spec::Ping(id) => enc.ping(*id),
            Spec::Pong(id) => enc.pong(*id),
            Spec::Goaway(code, message) => enc
                .goaway(&GoawayMeta {
                    code: *code,
                    message,
                })
                .unwrap(),
            Spec::Message(id, flags, body) => enc.message(*id, *flags, body).unwrap(),
            Spec::End(id) => enc.end(*id),
            Spec::Window(id, bytes) => enc.window(*id, WindowMeta::new(*bytes).unwrap()),
        }
    }

    /// Checks that `frame` is this spec, decoded.
    fn check(&self, frame: &Frame) -> Result<(), TestCaseError> {
        let h = &frame.header;
        let bare = |ft: FrameType, id: &RequestId| {
            prop_assert_eq!(h.frame_type, ft);
            prop_assert_eq!(h.request_id, *id);
            prop_assert_eq!(h.flags, Flags::default());
            prop_assert!(frame.meta.is_empty() && frame.body.is_empty());
            Ok(())
        };
        match self {
            Spec::Request(id, flags, r, body) | Spec::Oneway(id, flags, r, body) => {
                let ft = match self {
                    Spec::Request(..) => FrameType::Request,
                    _ => FrameType::Oneway,
                };
                prop_assert_eq!(h.frame_type, ft);
                prop_assert_eq!(h.request_id, *id);
                prop_assert_eq!(h.flags, *flags);
                prop_assert_eq!(RequestMeta::decode(&frame.meta), Ok(r.meta()));
                prop_assert_eq!(&frame.body[..], &body[..]);
            }
            Spec::Response(id, flags, r, body) => {
                prop_assert_eq!(h.frame_type, FrameType::Response);
                prop_assert_eq!(h.request_id, *id);
                prop_assert_eq!(h.flags, *flags);
                prop_assert_eq!(ResponseMeta::decode(&frame.meta), Ok(r.meta()));
                prop_assert_eq!(&frame.body[..], &body[..]);
            }
            Spec::Cancel(id) => bare(FrameType::Cancel, id)?,
            Spec::Ping(id) => bare(FrameType::Ping, id)?,
            Spec::Pong(id) => bare(FrameType::Pong, id)?,
            Spec::Goaway(code, message) => {
                prop_assert_eq!(h.frame_type, FrameType::Goaway);
                prop_assert_eq!(h.request_id, RequestId(0));
                let meta = GoawayMeta::decode(&frame.meta);
                prop_assert_eq!(
                    meta,
                    Ok(GoawayMeta {
                        code: *code,
                        message
                    })
                );
                prop_assert!(frame.body.is_empty());
            }
            Spec::Message(id, flags, body) => {
                prop_assert_eq!(h.frame_type, FrameType::Message);
                prop_assert_eq!(h.request_id, *id);
                prop_assert_eq!(h.flags, *flags);
                prop_assert!(frame.meta.is_empty());
                prop_assert_eq!(&frame.body[..], &body[..]);
            }
            Spec::End(id) => bare(FrameType::End, id)?,
            Spec::Window(id, bytes) => {
                prop_assert_eq!(h.frame_type, FrameType::Window);
                prop_assert_eq!(h.request_id, *id);
                prop_assert_eq!(h.flags, Flags::default());
                prop_assert_eq!(
                    WindowMeta::decode(&frame.meta).map(WindowMeta::bytes),
                    Ok(*bytes)
                );
                prop_assert!(frame.body.is_empty());
            }
        }
        Ok(())
    }
}

// ---------------------------------------------------------------------------
// Strategies

/// Any string of at most `max_chars` characters (up to 4 bytes each).
fn text(max_chars: usize) -> impl Strategy<Value = String> {
    vec(any::<char>(), 0..=max_chars).prop_map(|cs| cs.into_iter().collect())
}

fn method() -> impl Strategy<Value = String> {
    // Mostly well-formed names; the codec carries any string.
    prop_oneof![
        3 => ("[a-z][a-z.]{0,10}", "[A-Z][A-Za-z]{0,10}").prop_map(|(s, m)| format!("/{s}/{m}")),
        1 => text(30),
    ]
}

fn trace_id() -> impl Strategy<Value = Option<String>> {
    // At most 64 bytes, whatever the characters.
    proptest::option::of(text(MAX_TRACE_ID_LEN / 4))
}

fn md() -> impl Strategy<Value = Md> {
    let value = prop_oneof![
        text(20).prop_map(MetadataValue::Str),
        vec(any::<u8>(), 0..20).prop_map(MetadataValue::Bin),
    ];
    btree_map(text(10), value, 0..4)
}

fn request() -> impl Strategy<Value = Request> {
    (
        method(),
        any::<u32>(),
        trace_id(),
        proptest::option::of(text(20)),
        md(),
        any::<bool>(),
    )
        .prop_map(
            |(method, timeout_ms, trace_id, caller, md, stream)| Request {
                method,
                timeout_ms,
                trace_id,
                caller,
                md,
                stream,
            },
        )
}

fn response() -> impl Strategy<Value = Response> {
    (
        any::<u32>(),
        proptest::option::of(text(40)),
        trace_id(),
        md(),
    )
        .prop_map(|(code, message, trace_id, md)| Response {
            code,
            message,
            trace_id,
            md,
        })
}

/// Every valid flags byte: reserved compression and encoding values too.
fn flags() -> impl Strategy<Value = Flags> {
    (0u8..16).prop_map(|b| Flags::from_bits(b).unwrap())
}

fn body() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        4 => vec(any::<u8>(), 0..200),
        1 => vec(any::<u8>(), 0..5000),
    ]
}

fn id() -> impl Strategy<Value = RequestId> {
    any::<u32>().prop_map(RequestId)
}

/// Frames a client sends.
fn client_frame() -> impl Strategy<Value = Spec> {
    prop_oneof![
        3 => (id(), flags(), request(), body()).prop_map(|(i, f, r, b)| Spec::Request(i, f, r, b)),
        1 => (id(), flags(), request(), body()).prop_map(|(i, f, r, b)| Spec::Oneway(i, f, r, b)),
        1 => id().prop_map(Spec::Cancel),
        1 => id().prop_map(Spec::Ping),
        1 => id().prop_map(Spec::Pong),
        1 => (id(), flags(), body()).prop_map(|(i, f, b)| Spec::Message(i, f, b)),
        1 => id().prop_map(Spec::End),
        1 => (id(), grant()).prop_map(|(i, n)| Spec::Window(i, n)),
    ]
}

/// A WINDOW grant, often at its bounds.
fn grant() -> impl Strategy<Value = u32> {
    prop_oneof![Just(1), Just(MAX_WINDOW), 1..=MAX_WINDOW,]
}

/// Frames a server sends.
fn server_frame() -> impl Strategy<Value = Spec> {
    prop_oneof![
        3 => (id(), flags(), response(), body()).prop_map(|(i, f, r, b)| Spec::Response(i, f, r, b)),
        1 => id().prop_map(Spec::Ping),
        1 => id().prop_map(Spec::Pong),
        1 => (any::<u32>(), text(40)).prop_map(|(c, m)| Spec::Goaway(c, m)),
        1 => (id(), flags(), body()).prop_map(|(i, f, b)| Spec::Message(i, f, b)),
        1 => (id(), grant()).prop_map(|(i, n)| Spec::Window(i, n)),
    ]
}

/// Sizes of the reads that deliver the stream, used in turn.
fn reads() -> impl Strategy<Value = Vec<usize>> {
    prop_oneof![
        Just(vec![1]),
        Just(vec![usize::MAX]),
        vec(1usize..64, 1..8),
        vec(1usize..4096, 1..4),
    ]
}

// ---------------------------------------------------------------------------
// Properties

/// Encodes `frames` back to back, delivers them in reads of the given
/// sizes, and checks every frame comes back, in order, and nothing else.
fn round_trip(side: Side, frames: &[Spec], reads: &[usize]) -> Result<(), TestCaseError> {
    let mut wire = Vec::new();
    let mut sizes = Vec::new();
    for f in frames {
        let mut enc = Encoder::new();
        f.encode(&mut enc);
        sizes.push(enc.len());
        wire.extend_from_slice(enc.as_slice());
    }

    let mut dec = Decoder::new(side, FrameLimits::default());
    let mut buf = BytesMut::new();
    let mut decoded = Vec::new();
    let mut rest = &wire[..];
    for &n in reads.iter().cycle() {
        if rest.is_empty() {
            break;
        }
        let (now, later) = rest.split_at(n.min(rest.len()));
        buf.extend_from_slice(now);
        rest = later;
        match codec::decode_all(&mut dec, &mut buf) {
            Ok(ds) => decoded.extend(ds),
            Err((_, e)) => return Err(TestCaseError::fail(format!("decode error: {e}"))),
        }
        // What stays buffered is always less than the next whole frame:
        // a complete frame is never held back.
        let next = sizes.get(decoded.len()).copied().unwrap_or(1);
        prop_assert!(
            buf.len() < next,
            "{} bytes held, next frame {}",
            buf.len(),
            next
        );
    }
    prop_assert!(buf.is_empty());
    prop_assert_eq!(dec.finish(&buf), Ok(()));
    prop_assert_eq!(decoded.len(), frames.len());
    for (spec, d) in frames.iter().zip(&decoded) {
        match d {
            Decoded::Frame(f) => spec.check(f)?,
            other => return Err(TestCaseError::fail(format!("unexpected {other:?}"))),
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    #[test]
    fn client_frames_round_trip(frames in vec(client_frame(), 1..8), reads in reads()) {
        round_trip(Side::Server, &frames, &reads)?;
    }

    #[test]
    fn server_frames_round_trip(frames in vec(server_frame(), 1..8), reads in reads()) {
        round_trip(Side::Client, &frames, &reads)?;
    }

    /// The bytes a socket takes in partial writes, with frames appended in
    /// between, are the frames' bytes in order: consume() and the reused
    /// buffer lose and repeat nothing.
    #[test]
    fn partial_writes_keep_the_byte_stream(
        frames in vec(client_frame(), 1..8),
        takes in vec(0usize..300, 1..16),
    ) {
        let mut expected = Vec::new();
        for f in &frames {
            let mut one = Encoder::new();
            f.encode(&mut one);
            expected.extend_from_slice(one.as_slice());
        }

        let mut enc = Encoder::new();
        let mut written = Vec::new();
        let mut takes = takes.iter().cycle();
        for f in &frames {
            f.encode(&mut enc);
            let n = (*takes.next().unwrap()).min(enc.len());
            written.extend_from_slice(&enc.as_slice()[..n]);
            enc.consume(n);
        }
        written.extend_from_slice(enc.as_slice());
        enc.consume(enc.len());
        prop_assert!(enc.is_empty());
        prop_assert_eq!(written, expected);
    }

    #[test]
    fn compressed_bodies_round_trip(data in body(), zeros in 0usize..100_000) {
        // Random bytes barely compress; a run of zeros compresses well.
        let mut data = data;
        data.resize(data.len() + zeros, 0);
        for c in [Compression::None, Compression::Gzip, Compression::Zlib] {
            let mut packed = Vec::new();
            compress(c, &data, &mut packed);
            prop_assert_eq!(decompress(c, &packed, data.len()), Ok(data.clone()));
            if !data.is_empty() {
                prop_assert!(decompress(c, &packed, data.len() - 1).is_err());
            }
        }
    }

    #[test]
    fn typed_bodies_round_trip(value in typed()) {
        let mut bytes = Vec::new();
        encode_body(&value, &mut bytes).unwrap();
        prop_assert_eq!(decode_body::<Typed>(&bytes, DEFAULT_MAX_BODY_DEPTH), Ok(value));
    }
}

/// A body type with the shapes handlers use.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
struct Typed {
    name: String,
    #[serde(with = "serde_bytes")]
    blob: Vec<u8>,
    count: u64,
    delta: i64,
    ratio: f64,
    maybe: Option<String>,
    tags: Vec<String>,
    nested: Vec<Vec<u32>>,
    attrs: BTreeMap<String, bool>,
}

fn typed() -> impl Strategy<Value = Typed> {
    (
        text(20),
        vec(any::<u8>(), 0..64),
        any::<u64>(),
        any::<i64>(),
        // NaN is not equal to itself; everything else round-trips exactly.
        any::<f64>().prop_filter("not NaN", |f| !f.is_nan()),
        proptest::option::of(text(10)),
        vec(text(8), 0..4),
        vec(vec(any::<u32>(), 0..4), 0..4),
        btree_map(text(6), any::<bool>(), 0..4),
    )
        .prop_map(
            |(name, blob, count, delta, ratio, maybe, tags, nested, attrs)| Typed {
                name,
                blob,
                count,
                delta,
                ratio,
                maybe,
                tags,
                nested,
                attrs,
            },
        )
}

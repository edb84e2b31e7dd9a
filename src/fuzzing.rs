//! The decoder's fuzzing harness, shared by the cargo-fuzz target in
//! `fuzz/` and by the test that replays its corpus, so both check the same
//! invariants. Not a public API: it panics on purpose when an invariant
//! breaks, which is how a fuzzer learns of it. See `docs/fuzzing.md`.

use bytes::BytesMut;
use serde::de::IgnoredAny;

use crate::codec::{
    decode_body, decompress, Compression, Decoded, Decoder, Encoder, FrameLimits, FrameType,
    GoawayMeta, ProtocolError, RequestMeta, ResponseMeta, Side, WindowMeta, DEFAULT_MAX_BODY_DEPTH,
    HEADER_LEN,
};

/// Limits small enough that random input reaches every path: oversized
/// bodies, metas over the limit, bodies that inflate past it.
pub const LIMITS: FrameLimits = FrameLimits {
    max_body: 4096,
    max_meta: 512,
};

/// What one input exercised, summed over both sides.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Summary {
    /// Whole frames decoded.
    pub frames: usize,
    /// Frames whose body was over the limit.
    pub too_large: usize,
    /// Connection errors (at most one per side).
    pub errors: usize,
    /// Metas that decoded as request, response, GOAWAY or WINDOW meta.
    pub metas: usize,
    /// Bodies that decompressed under the limit, one per compression.
    pub inflated: usize,
}

/// What decoding one side's stream produced.
#[derive(Debug, PartialEq)]
struct Run {
    events: Vec<Decoded>,
    /// The connection error that ended the stream, or what `finish` said.
    end: Result<(), ProtocolError>,
}

/// Decodes `data` as a byte stream on both sides and checks the decoder's
/// invariants, panicking if one breaks.
///
/// The first two bytes choose the sizes of the reads that deliver the rest
/// (1 to 256 bytes, used in turn). For each side the stream is decoded
/// twice, in those reads and in one, and the results must be equal:
/// decoding does not depend on how the bytes arrived. Along the way:
///
/// - every `decode` that returns a frame consumed at least a header, so
///   the loop ends; the number of calls is bounded by the input;
/// - the read buffer never holds more than one frame at the limits plus
///   one read, and after decoding, less than one whole frame;
/// - every frame's meta is tried as request, response, GOAWAY and WINDOW
///   meta; what decodes must encode and decode again to the same value;
/// - a MESSAGE has no meta, and a WINDOW has no body and a valid grant;
/// - every body is tried with each compression, with a small limit, and
///   what inflates is tried as a MessagePack body.
pub fn decode_all(data: &[u8]) -> Summary {
    let (prefix, stream) = data.split_at(data.len().min(2));
    let reads: Vec<usize> = prefix.iter().map(|&b| usize::from(b) + 1).collect();
    let reads = if reads.is_empty() { vec![1] } else { reads };

    let mut summary = Summary::default();
    for side in [Side::Server, Side::Client] {
        let chunked = run(side, stream, &reads);
        let whole = run(side, stream, &[stream.len().max(1)]);
        assert_eq!(
            chunked, whole,
            "{side:?}: decoding depends on how the input was split"
        );
        for event in &chunked.events {
            inspect(event, &mut summary);
        }
        summary.errors += usize::from(chunked.end.is_err());
    }
    summary
}

fn run(side: Side, stream: &[u8], reads: &[usize]) -> Run {
    let mut dec = Decoder::new(side, LIMITS);
    let mut buf = BytesMut::new();
    let mut events = Vec::new();
    let most = HEADER_LEN + LIMITS.max_meta + LIMITS.max_body;
    // Each call either returns None (at most once per read) or consumes
    // at least a header.
    let mut calls_left = stream.len() / HEADER_LEN + stream.len() + 1;
    let mut rest = stream;
    for &n in reads.iter().cycle() {
        if rest.is_empty() {
            break;
        }
        let (now, later) = rest.split_at(n.min(rest.len()));
        rest = later;
        buf.extend_from_slice(now);
        assert!(
            buf.len() <= most + now.len(),
            "read buffer holds {} bytes",
            buf.len()
        );
        loop {
            assert!(calls_left > 0, "decode() does not make progress");
            calls_left -= 1;
            let before = buf.len();
            match dec.decode(&mut buf) {
                Ok(Some(d)) => {
                    assert!(
                        before - buf.len() >= HEADER_LEN,
                        "a frame consumed {} bytes",
                        before - buf.len()
                    );
                    events.push(d);
                }
                Ok(None) => break,
                Err(e) => {
                    return Run {
                        events,
                        end: Err(e),
                    }
                }
            }
        }
        assert!(buf.len() < most, "a whole frame was left in the buffer");
    }
    let end = dec.finish(&buf);
    Run { events, end }
}

fn inspect(event: &Decoded, summary: &mut Summary) {
    let (header, meta, body) = match event {
        Decoded::Frame(f) => {
            summary.frames += 1;
            (&f.header, &f.meta, Some(&f.body))
        }
        Decoded::BodyTooLarge { header, meta } => {
            summary.too_large += 1;
            assert!(header.body_len as usize > LIMITS.max_body);
            (header, meta, None)
        }
    };
    assert!(meta.len() <= LIMITS.max_meta);
    if header.frame_type.is_bare() {
        assert!(meta.is_empty() && body.map_or(true, |b| b.is_empty()));
    }
    match header.frame_type {
        FrameType::Message => assert!(meta.is_empty(), "a MESSAGE with a meta"),
        FrameType::Window => {
            assert!(body.is_some_and(|b| b.is_empty()), "a WINDOW with a body");
            assert!(
                WindowMeta::decode(meta).is_ok(),
                "a WINDOW with a bad grant was delivered"
            );
        }
        _ => {}
    }

    crate::codec::meta_scan::assert_agrees(meta);
    if let Ok(m) = RequestMeta::decode(meta) {
        summary.metas += 1;
        let bytes = m.to_vec();
        assert_eq!(RequestMeta::decode(&bytes).as_ref(), Ok(&m));
        // A request meta is re-sent by the encoder as the server would
        // see it: the frame must come back with the same meta and body.
        if let (FrameType::Request, Some(body)) = (header.frame_type, body) {
            let mut enc = Encoder::new();
            enc.request(header.request_id, header.flags, &m, body)
                .expect("a decoded frame fits");
            let mut buf = BytesMut::from(enc.as_slice());
            let mut dec = Decoder::new(Side::Server, LIMITS);
            match dec.decode(&mut buf) {
                Ok(Some(Decoded::Frame(f))) => {
                    assert_eq!(RequestMeta::decode(&f.meta).as_ref(), Ok(&m));
                    assert_eq!(&f.body, body);
                }
                other => panic!("re-encoded request did not decode: {other:?}"),
            }
        }
    }
    if let Ok(m) = ResponseMeta::decode(meta) {
        summary.metas += 1;
        let bytes = m.to_vec();
        assert_eq!(ResponseMeta::decode(&bytes).as_ref(), Ok(&m));
    }
    if let Ok(m) = GoawayMeta::decode(meta) {
        summary.metas += 1;
        let bytes = m.to_vec();
        assert_eq!(GoawayMeta::decode(&bytes).as_ref(), Ok(&m));
    }
    if let Ok(m) = WindowMeta::decode(meta) {
        summary.metas += 1;
        assert_eq!(WindowMeta::new(m.bytes()), Some(m));
        assert_eq!(WindowMeta::decode(&m.to_vec()), Ok(m));
    }

    let Some(body) = body else { return };
    assert!(body.len() <= LIMITS.max_body);
    for c in [Compression::None, Compression::Gzip, Compression::Zlib] {
        if let Ok(plain) = decompress(c, body, LIMITS.max_body) {
            assert!(plain.len() <= LIMITS.max_body);
            summary.inflated += 1;
            let _ = decode_body::<IgnoredAny>(&plain, DEFAULT_MAX_BODY_DEPTH);
        }
    }
}

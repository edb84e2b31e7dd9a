//! Hostile input: MessagePack built to overflow a recursive decoder or make
//! it allocate what a length prefix declares, decompression bombs, and
//! bodies and headers that declare gigabytes.
//!
//! Each case must be refused with an error that says what was wrong, and
//! cheaply. "Cheaply" is shown by what it allocates, counted by the
//! allocator installed below, and by decoding on a thread with a 64 KiB
//! stack, which a decoder that recursed once per nesting level would
//! overflow. Nothing here measures time: the machines are shared.

mod codec;

use std::io::{Read, Write};
use std::thread;

use bytes::BytesMut;
use flate2::write::DeflateEncoder;
use serde::Deserialize;
use syncrpc::codec::{
    decode_body, decompress, Compression, Decoded, Decoder, DecompressError, FrameLimits,
    FrameType, GoawayMeta, Header, RequestId, RequestMeta, ResponseMeta, Side, WindowMeta,
    DEFAULT_MAX_BODY_DEPTH, HEADER_LEN,
};
use syncrpc::Code;

use codec::alloc::{self, Usage};

#[global_allocator]
static ALLOC: alloc::Counting = alloc::Counting;

/// The stack of the thread that decodes hostile MessagePack.
const SMALL_STACK: usize = 64 * 1024;
/// What refusing one hostile meta or body may allocate, at most.
const SMALL: usize = 64 * 1024;
const MIB: usize = 1024 * 1024;
/// The default body limit.
const BODY_LIMIT: usize = 10 * MIB;

/// Runs `f` on a thread with a 64 KiB stack and reports what it allocated.
/// A stack overflow aborts the whole test binary, so a pass shows there
/// was none.
fn on_small_stack<R: Send + 'static>(f: impl FnOnce() -> R + Send + 'static) -> (R, Usage) {
    thread::Builder::new()
        .name("small-stack".into())
        .stack_size(SMALL_STACK)
        .spawn(move || alloc::measure(f))
        .expect("spawn")
        .join()
        .expect("decoding panicked")
}

#[track_caller]
fn assert_small(case: &str, usage: Usage) {
    assert!(
        usage.peak < SMALL && usage.largest < SMALL,
        "{case}: allocated {usage:?}, expected under {SMALL} bytes"
    );
}

// ---------------------------------------------------------------------------
// MessagePack building blocks

/// A map of string keys to already-encoded values, in the given order.
fn map(entries: &[(&str, &[u8])]) -> Vec<u8> {
    let mut out = Vec::new();
    rmp::encode::write_map_len(&mut out, entries.len() as u32).unwrap();
    for (key, value) in entries {
        rmp::encode::write_str(&mut out, key).unwrap();
        out.extend_from_slice(value);
    }
    out
}

fn str(s: &str) -> Vec<u8> {
    let mut out = Vec::new();
    rmp::encode::write_str(&mut out, s).unwrap();
    out
}

/// `"/echo.Echo/Say"`, encoded.
fn method() -> Vec<u8> {
    str("/echo.Echo/Say")
}

/// `depth` one-element arrays around a 1: `[[[...[1]...]]]`.
fn nested_arrays(depth: usize) -> Vec<u8> {
    let mut v = vec![0x91; depth];
    v.push(0x01);
    v
}

/// `depth` one-entry maps keyed `""` around a 1: `{"": {"": ... 1}}`.
fn nested_maps(depth: usize) -> Vec<u8> {
    let mut v = Vec::with_capacity(2 * depth + 1);
    for _ in 0..depth {
        v.extend_from_slice(&[0x81, 0xa0]);
    }
    v.push(0x01);
    v
}

/// Array32 declaring 2^32-1 elements, with one present: six bytes.
const ARRAY_4G: &[u8] = &[0xdd, 0xff, 0xff, 0xff, 0xff, 0x01];
/// Str32 declaring 2^32-1 bytes, with one present: six bytes.
const STR_4G: &[u8] = &[0xdb, 0xff, 0xff, 0xff, 0xff, b'a'];
/// Map32 declaring 2^32-1 entries, with one byte present.
const MAP_4G: &[u8] = &[0xdf, 0xff, 0xff, 0xff, 0xff, 0x01];
/// Bin32 and ext32 declaring 2^32-1 bytes, with one present.
const BIN_4G: &[u8] = &[0xc6, 0xff, 0xff, 0xff, 0xff, 0x00];
const EXT_4G: &[u8] = &[0xc9, 0xff, 0xff, 0xff, 0xff, 0x01, 0x00];

// ---------------------------------------------------------------------------
// Request meta

/// Hostile request metas and the exact error each must give.
fn hostile_request_metas() -> Vec<(&'static str, Vec<u8>, String)> {
    let m = method();
    // Offset of a value that follows `{"method": M, "x": `.
    let after_x = 1 + 7 + m.len() + 2;
    let mut dup_large = vec![0xde, 0x00, 40];
    for i in 0..40u8 {
        // 40 keys, the last repeating the first: past the pairwise check.
        dup_large.extend_from_slice(&[0xa1, b'A' + if i == 39 { 0 } else { i }, 0xc0]);
    }
    let long_trace = "t".repeat(65);

    vec![
        (
            "arrays nested 100,000 deep",
            map(&[("method", &m), ("x", &nested_arrays(100_000))]),
            "invalid meta: MessagePack nested deeper than 32 levels".into(),
        ),
        (
            "maps nested 100,000 deep",
            nested_maps(100_000),
            "invalid meta: MessagePack nested deeper than 32 levels".into(),
        ),
        (
            "array declaring 4 GiB",
            map(&[("method", &m), ("x", ARRAY_4G)]),
            format!(
                "invalid meta: MessagePack value at byte {after_x} declares length \
                 4294967295 but only 1 bytes remain"
            ),
        ),
        (
            "method declaring 4 GiB",
            map(&[("method", STR_4G)]),
            "invalid meta: MessagePack value at byte 8 declares length 4294967295 \
             but only 1 bytes remain"
                .into(),
        ),
        (
            "map declaring 4 Gi entries",
            map(&[("method", &m), ("x", MAP_4G)]),
            format!(
                "invalid meta: MessagePack value at byte {after_x} declares length \
                 8589934590 but only 1 bytes remain"
            ),
        ),
        (
            "bin declaring 4 GiB",
            map(&[("method", &m), ("x", BIN_4G)]),
            format!(
                "invalid meta: MessagePack value at byte {after_x} declares length \
                 4294967295 but only 1 bytes remain"
            ),
        ),
        (
            "ext declaring 4 GiB",
            map(&[("method", &m), ("x", EXT_4G)]),
            format!(
                "invalid meta: MessagePack value at byte {after_x} declares length \
                 4294967296 but only 2 bytes remain"
            ),
        ),
        (
            "the whole meta an array declaring 4 GiB",
            ARRAY_4G.to_vec(),
            "invalid meta: MessagePack value at byte 0 declares length 4294967295 \
             but only 1 bytes remain"
                .into(),
        ),
        (
            "method twice",
            map(&[("method", &m), ("method", &str("/a.A/b"))]),
            "invalid meta: duplicate key \"method\"".into(),
        ),
        (
            "an unknown key twice",
            map(&[("method", &m), ("x", b"\x01"), ("x", b"\x02")]),
            "invalid meta: duplicate key \"x\"".into(),
        ),
        (
            "a duplicate among 40 keys",
            dup_large,
            "invalid meta: duplicate key \"A\"".into(),
        ),
        (
            "trailing bytes",
            [map(&[("method", &m)]), vec![0xc0]].concat(),
            "invalid meta: 1 trailing bytes after the MessagePack value".into(),
        ),
        (
            "method as int",
            map(&[("method", b"\x01")]),
            "invalid meta: key `method`: invalid type: integer `1`, expected a MessagePack str"
                .into(),
        ),
        (
            "method not UTF-8",
            map(&[("method", b"\xa2\xff\xfe")]),
            "invalid meta: key `method`: string found to be invalid utf8: invalid utf-8 \
             sequence of 1 bytes from index 0"
                .into(),
        ),
        (
            "method as a bin of UTF-8",
            map(&[("method", b"\xc4\x0e/echo.Echo/Say")]),
            "invalid meta: key `method`: invalid type: byte array, expected a MessagePack str"
                .into(),
        ),
        (
            "trace_id as a bin of UTF-8",
            map(&[("method", &m), ("trace_id", b"\xc4\x02t1")]),
            "invalid meta: key `trace_id`: invalid type: byte array, expected a MessagePack str"
                .into(),
        ),
        (
            "caller as a bin of UTF-8",
            map(&[("method", &m), ("caller", b"\xc4\x07billing")]),
            "invalid meta: key `caller`: invalid type: byte array, expected a MessagePack str"
                .into(),
        ),
        (
            "timeout_ms as str",
            map(&[("method", &m), ("timeout_ms", &str("250"))]),
            "invalid meta: key `timeout_ms`: invalid type: string \"250\", expected an \
             unsigned integer of at most 4294967295"
                .into(),
        ),
        (
            "timeout_ms of 2^64-1",
            map(&[
                ("method", &m),
                (
                    "timeout_ms",
                    &[0xcf, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff],
                ),
            ]),
            "invalid meta: key `timeout_ms`: invalid value: integer `18446744073709551615`, \
             expected an unsigned integer of at most 4294967295"
                .into(),
        ),
        (
            "timeout_ms of 2^32",
            map(&[
                ("method", &m),
                ("timeout_ms", &[0xcf, 0, 0, 0, 1, 0, 0, 0, 0]),
            ]),
            "invalid meta: key `timeout_ms`: invalid value: integer `4294967296`, \
             expected an unsigned integer of at most 4294967295"
                .into(),
        ),
        (
            "negative timeout_ms",
            map(&[("method", &m), ("timeout_ms", b"\xff")]),
            "invalid meta: key `timeout_ms`: invalid value: integer `-1`, \
             expected an unsigned integer of at most 4294967295"
                .into(),
        ),
        (
            "trace_id of 65 bytes",
            map(&[("method", &m), ("trace_id", &str(&long_trace))]),
            "invalid meta: trace_id too long: 65 > 64 bytes".into(),
        ),
        (
            "trace_id as int",
            map(&[("method", &m), ("trace_id", b"\x07")]),
            "invalid meta: key `trace_id`: invalid type: integer `7`, expected a MessagePack str"
                .into(),
        ),
        (
            "md value as int",
            map(&[("method", &m), ("md", &map(&[("tenant", b"\x01")]))]),
            "invalid meta: key `md`: invalid type: integer `1`, expected a str or bin \
             metadata value"
                .into(),
        ),
        (
            "md with a duplicate key",
            map(&[
                ("method", &m),
                ("md", &map(&[("k", &str("a")), ("k", &str("b"))])),
            ]),
            "invalid meta: key `md`: duplicate metadata key \"k\"".into(),
        ),
        (
            "md as a list",
            map(&[("method", &m), ("md", b"\x91\xa1k")]),
            "invalid meta: key `md`: invalid type: sequence, expected a map of str to str or bin"
                .into(),
        ),
        (
            "md with an int key",
            map(&[("method", &m), ("md", b"\x81\x01\xa1v")]),
            "invalid meta: key `md`: invalid type: integer `1`, expected a string".into(),
        ),
        (
            "an array",
            vec![0x91, 0xae]
                .into_iter()
                .chain(b"/echo.Echo/Say".iter().copied())
                .collect(),
            "invalid meta: not a map".into(),
        ),
        ("a string", method(), "invalid meta: not a map".into()),
        ("nil", vec![0xc0], "invalid meta: not a map".into()),
        (
            "empty",
            vec![],
            "invalid meta: truncated MessagePack at byte 0".into(),
        ),
        (
            "an int key",
            vec![0x81, 0x01, 0x01],
            "invalid meta: map key is not a string".into(),
        ),
        (
            "the never-used marker 0xc1",
            map(&[("method", &m), ("x", b"\xc1")]),
            format!("invalid meta: invalid MessagePack marker 0xc1 at byte {after_x}"),
        ),
        (
            "no method",
            map(&[("timeout_ms", b"\x05")]),
            "invalid meta: missing field `method`".into(),
        ),
        (
            "stream as an integer",
            map(&[("method", &m), ("stream", b"\x01")]),
            "invalid meta: key `stream`: invalid type: integer `1`, expected a boolean".into(),
        ),
        (
            "stream as a string",
            map(&[("method", &m), ("stream", &str("true"))]),
            "invalid meta: key `stream`: invalid type: string \"true\", expected a boolean".into(),
        ),
        (
            "stream twice",
            map(&[("method", &m), ("stream", b"\xc3"), ("stream", b"\xc2")]),
            "invalid meta: duplicate key \"stream\"".into(),
        ),
    ]
}

#[test]
fn hostile_request_meta_is_refused_cheaply() {
    for (case, bytes, want) in hostile_request_metas() {
        let (got, usage) = on_small_stack(move || {
            RequestMeta::decode(&bytes)
                .map(|m| format!("{m:?}"))
                .map_err(|e| (e.to_string(), e.to_status().code()))
        });
        assert_eq!(
            got,
            Err((want, Code::INVALID_ARGUMENT)),
            "{case}: wrong outcome"
        );
        assert_small(case, usage);
    }
}

/// The structural check runs before any of the three meta decoders.
#[test]
fn hostile_structure_is_refused_by_every_meta_decoder() {
    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        (
            "arrays nested 100,000 deep",
            map(&[("code", b"\x00"), ("x", &nested_arrays(100_000))]),
            "invalid meta: MessagePack nested deeper than 32 levels",
        ),
        (
            "array declaring 4 GiB",
            ARRAY_4G.to_vec(),
            "invalid meta: MessagePack value at byte 0 declares length 4294967295 \
             but only 1 bytes remain",
        ),
        (
            "message declaring 4 GiB",
            map(&[("code", b"\x00"), ("message", STR_4G)]),
            "invalid meta: MessagePack value at byte 15 declares length 4294967295 \
             but only 1 bytes remain",
        ),
        (
            "code twice",
            map(&[("code", b"\x00"), ("code", b"\x01")]),
            "invalid meta: duplicate key \"code\"",
        ),
        (
            "code of 2^64-1",
            map(&[(
                "code",
                &[0xcf, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff],
            )]),
            "invalid meta: key `code`: invalid value: integer `18446744073709551615`, \
             expected an unsigned integer of at most 4294967295",
        ),
        ("no code", map(&[]), "invalid meta: missing field `code`"),
    ];
    for (case, bytes, want) in cases {
        let (got, usage) = on_small_stack(move || {
            let response = ResponseMeta::decode(&bytes)
                .map(|_| ())
                .map_err(|e| e.to_string());
            let goaway = GoawayMeta::decode(&bytes)
                .map(|_| ())
                .map_err(|e| e.to_string());
            (response, goaway)
        });
        assert_eq!(got.0, Err(want.to_string()), "{case}: ResponseMeta");
        assert_eq!(got.1, Err(want.to_string()), "{case}: GoawayMeta");
        assert_small(case, usage);
    }
}

/// A WINDOW meta gets the same structural check first: a hostile grant is
/// refused with a clear error, on a small stack, allocating little.
#[test]
fn hostile_window_meta_is_refused_cheaply() {
    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        (
            "arrays nested 100,000 deep beside the grant",
            map(&[("bytes", b"\x01"), ("x", &nested_arrays(100_000))]),
            "invalid meta: MessagePack nested deeper than 32 levels",
        ),
        (
            "a string declaring 4 GiB beside the grant",
            map(&[("bytes", b"\x01"), ("x", STR_4G)]),
            "invalid meta: MessagePack value at byte 10 declares length 4294967295 \
             but only 1 bytes remain",
        ),
        (
            "bytes twice",
            map(&[("bytes", b"\x01"), ("bytes", b"\x02")]),
            "invalid meta: duplicate key \"bytes\"",
        ),
        (
            "bytes of 2^64-1",
            map(&[(
                "bytes",
                &[0xcf, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff],
            )]),
            "invalid meta: key `bytes`: invalid value: integer `18446744073709551615`, \
             expected an integer from 1 to 2147483647",
        ),
        (
            "bytes of -2^63",
            map(&[(
                "bytes",
                &[0xd3, 0x80, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00],
            )]),
            "invalid meta: key `bytes`: invalid value: integer `-9223372036854775808`, \
             expected an integer from 1 to 2147483647",
        ),
        ("no bytes", map(&[]), "invalid meta: missing field `bytes`"),
    ];
    for (case, bytes, want) in cases {
        let (got, usage) = on_small_stack(move || {
            WindowMeta::decode(&bytes)
                .map(|_| ())
                .map_err(|e| e.to_string())
        });
        assert_eq!(got, Err(want.to_string()), "{case}");
        assert_small(case, usage);
    }
}

#[test]
fn limits_are_inclusive() {
    let m = method();
    let trace = "t".repeat(64);
    let bytes = map(&[
        ("method", &m),
        ("timeout_ms", &[0xce, 0xff, 0xff, 0xff, 0xff]),
        ("trace_id", &str(&trace)),
        ("x", &nested_arrays(31)), // the top map is level 1
    ]);
    let meta = RequestMeta::decode(&bytes).unwrap();
    assert_eq!(meta.timeout_ms, u32::MAX);
    assert_eq!(meta.trace_id, Some(&trace[..]));
}

// ---------------------------------------------------------------------------
// Bodies

#[derive(Deserialize, Debug, PartialEq)]
struct Say {
    text: String,
}

#[test]
fn hostile_bodies_are_refused_cheaply() {
    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        (
            "arrays nested 100,000 deep",
            nested_arrays(100_000),
            "invalid body: MessagePack nested deeper than 128 levels",
        ),
        (
            "maps nested 100,000 deep",
            nested_maps(100_000),
            "invalid body: MessagePack nested deeper than 128 levels",
        ),
        (
            "array declaring 4 GiB",
            ARRAY_4G.to_vec(),
            "invalid body: MessagePack value at byte 0 declares length 4294967295 \
             but only 1 bytes remain",
        ),
        (
            "string declaring 4 GiB",
            STR_4G.to_vec(),
            "invalid body: MessagePack value at byte 0 declares length 4294967295 \
             but only 1 bytes remain",
        ),
        (
            "text declaring 4 GiB",
            map(&[("text", STR_4G)]),
            "invalid body: MessagePack value at byte 6 declares length 4294967295 \
             but only 1 bytes remain",
        ),
        (
            "trailing bytes",
            [map(&[("text", &str("hi"))]), vec![0xc0, 0xc0]].concat(),
            "invalid body: 2 trailing bytes after the MessagePack value",
        ),
        (
            "text as int",
            map(&[("text", b"\x01")]),
            "invalid body: invalid type: integer `1`, expected a string",
        ),
        (
            "text twice",
            map(&[("text", &str("a")), ("text", &str("b"))]),
            "invalid body: duplicate field `text`",
        ),
        (
            "truncated",
            map(&[("text", &str("hi"))])[..8].to_vec(),
            "invalid body: MessagePack value at byte 6 declares length 2 but only 1 bytes remain",
        ),
    ];
    for (case, bytes, want) in cases {
        let (got, usage) = on_small_stack(move || {
            decode_body::<Say>(&bytes, DEFAULT_MAX_BODY_DEPTH)
                .map_err(|st| (st.code(), st.message().to_string()))
        });
        assert_eq!(
            got,
            Err((Code::INVALID_ARGUMENT, want.to_string())),
            "{case}"
        );
        assert_small(case, usage);
    }

    // A collection declaring more elements than arrived is refused before
    // serde could size a Vec from the count.
    let (got, usage) = on_small_stack(|| {
        decode_body::<Vec<u64>>(&[0xdd, 0x10, 0, 0, 0, 1, 2, 3], 8).map_err(|st| st.to_string())
    });
    assert_eq!(
        got,
        Err(
            "INVALID_ARGUMENT (3): invalid body: MessagePack value at byte 0 declares length \
             268435456 but only 3 bytes remain"
                .to_string()
        )
    );
    assert_small("Vec<u64> declaring 2^28 elements", usage);

    // Structs are read from arrays too.
    let say: Say = decode_body(b"\x91\xa2hi", DEFAULT_MAX_BODY_DEPTH).unwrap();
    assert_eq!(say.text, "hi");
}

// ---------------------------------------------------------------------------
// Decompression bombs
//
// Deflate cannot do better than about 1032:1, so a body under 64 KiB
// inflates to at most about 64 MiB; a gigabyte takes a megabyte of input.
// Compressing a gigabyte of zeros for every run would be slow, so the bombs
// are built from the stream's steady state: with a sync flush after each
// MiB, every MiB of zeros after the first compresses to the same bytes.

/// Raw deflate of `mib` MiB of zeros.
fn deflate_zeros(mib: usize) -> Vec<u8> {
    assert!(mib >= 2);
    let zeros = vec![0u8; MIB];
    let mut enc = DeflateEncoder::new(Vec::new(), flate2::Compression::best());
    let mut mib_out = || {
        enc.write_all(&zeros).unwrap();
        enc.flush().unwrap(); // sync flush: ends on a byte boundary
        std::mem::take(enc.get_mut())
    };
    let first = mib_out();
    let steady = mib_out();
    assert_eq!(mib_out(), steady, "the per-MiB output did not settle");
    let end = enc.finish().unwrap(); // an empty final block
    let mut out = first;
    for _ in 1..mib {
        out.extend_from_slice(&steady);
    }
    out.extend_from_slice(&end);
    out
}

/// A gzip member holding `mib` MiB of zeros, with a correct trailer.
fn gzip_zeros(mib: usize) -> Vec<u8> {
    let zeros = vec![0u8; MIB];
    let mut crc = flate2::Crc::new();
    for _ in 0..mib {
        crc.update(&zeros);
    }
    let mut out = vec![0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 0xff];
    out.extend_from_slice(&deflate_zeros(mib));
    out.extend_from_slice(&crc.sum().to_le_bytes());
    out.extend_from_slice(&((mib * MIB) as u32).to_le_bytes());
    out
}

/// A zlib stream holding `mib` MiB of zeros, with a correct Adler-32.
fn zlib_zeros(mib: usize) -> Vec<u8> {
    // Adler-32 of n zeros: a stays 1, b adds a once per byte.
    let b = ((mib * MIB) % 65521) as u32;
    let mut out = vec![0x78, 0xda];
    out.extend_from_slice(&deflate_zeros(mib));
    out.extend_from_slice(&(b << 16 | 1).to_be_bytes());
    out
}

/// Inflates `data` in a streaming fashion, never holding more than a small
/// buffer, and returns how many bytes it held and whether all were zero:
/// proof that a bomb is what it claims, without the limit under test.
fn stream_inflate(compression: Compression, data: &[u8]) -> (u64, bool) {
    let mut reader: Box<dyn Read> = match compression {
        Compression::Gzip => Box::new(flate2::bufread::GzDecoder::new(data)),
        Compression::Zlib => Box::new(flate2::bufread::ZlibDecoder::new(data)),
        Compression::None => Box::new(data),
    };
    let mut buf = vec![0u8; 256 * 1024];
    let zero = vec![0u8; buf.len()];
    let (mut total, mut zeros) = (0u64, true);
    loop {
        let n = reader.read(&mut buf).expect("a valid stream");
        if n == 0 {
            return (total, zeros);
        }
        total += n as u64;
        // A slice comparison is a memcmp, fast even in a debug build.
        zeros &= buf[..n] == zero[..n];
    }
}

/// Decompresses `bomb` against the default body limit on this thread and
/// checks it was refused without inflating past the limit.
#[track_caller]
fn assert_refused_at_limit(compression: Compression, bomb: &[u8]) {
    let (got, usage) = alloc::measure(|| decompress(compression, bomb, BODY_LIMIT));
    let err = got.unwrap_err();
    assert_eq!(err, DecompressError::TooLarge { limit: BODY_LIMIT });
    let status = err.to_status();
    assert_eq!(status.code(), Code::RESOURCE_EXHAUSTED);
    assert_eq!(
        status.message(),
        "body too large after decompression: > 10485760 bytes"
    );
    // The output buffer stops one byte past the limit; the rest is the
    // inflater's state (a 32 KiB window and tables).
    assert!(
        usage.largest <= BODY_LIMIT + 1,
        "largest allocation {} > limit + 1",
        usage.largest
    );
    assert!(
        usage.peak <= BODY_LIMIT + 256 * 1024,
        "peak {} bytes for a {BODY_LIMIT} byte limit",
        usage.peak
    );
}

#[test]
fn gzip_bomb_under_64k_is_refused_at_the_limit() {
    let bomb = gzip_zeros(63);
    assert!(bomb.len() < 64 * 1024, "{} bytes", bomb.len());
    assert_eq!(
        stream_inflate(Compression::Gzip, &bomb),
        (63 * MIB as u64, true)
    );
    assert_refused_at_limit(Compression::Gzip, &bomb);
}

#[test]
fn gzip_bomb_of_one_gib_is_refused_at_the_limit() {
    let bomb = gzip_zeros(1024);
    assert!(bomb.len() < 2 * MIB, "{} bytes", bomb.len());
    assert_eq!(stream_inflate(Compression::Gzip, &bomb), (1 << 30, true));
    assert_refused_at_limit(Compression::Gzip, &bomb);
}

#[test]
fn zlib_bomb_of_one_gib_is_refused_at_the_limit() {
    let bomb = zlib_zeros(1024);
    assert!(bomb.len() < 2 * MIB, "{} bytes", bomb.len());
    assert_eq!(stream_inflate(Compression::Zlib, &bomb), (1 << 30, true));
    assert_refused_at_limit(Compression::Zlib, &bomb);
}

/// The same streams pass at exactly their size, and fail one byte below.
#[test]
fn inflated_size_limit_is_exact() {
    for (compression, data) in [
        (Compression::Gzip, gzip_zeros(3)),
        (Compression::Zlib, zlib_zeros(3)),
    ] {
        let (plain, usage) = alloc::measure(|| decompress(compression, &data, 3 * MIB).unwrap());
        assert_eq!(plain.len(), 3 * MIB);
        assert!(plain == vec![0; 3 * MIB]);
        assert!(usage.largest <= 3 * MIB + 1, "{usage:?}");
        assert_eq!(
            decompress(compression, &data, 3 * MIB - 1),
            Err(DecompressError::TooLarge { limit: 3 * MIB - 1 })
        );
    }
    assert_eq!(
        decompress(Compression::None, &[0; 11], 10),
        Err(DecompressError::TooLarge { limit: 10 })
    );
    assert_eq!(decompress(Compression::None, &[7; 10], 10), Ok(vec![7; 10]));
}

#[test]
fn corrupt_streams_are_invalid_argument() {
    let mut gzip = Vec::new();
    syncrpc::codec::compress(Compression::Gzip, b"hello hello hello", &mut gzip);
    let mut zlib = Vec::new();
    syncrpc::codec::compress(Compression::Zlib, b"hello hello hello", &mut zlib);

    let flip = |data: &[u8], at: usize| {
        let mut d = data.to_vec();
        d[at] ^= 0x40;
        d
    };
    let cases: Vec<(&str, Compression, Vec<u8>)> = vec![
        ("empty gzip", Compression::Gzip, vec![]),
        ("empty zlib", Compression::Zlib, vec![]),
        (
            "gzip magic then junk",
            Compression::Gzip,
            b"\x1f\x8b\x08\x00junkjunkjunk".to_vec(),
        ),
        (
            "zlib header then junk",
            Compression::Zlib,
            b"\x78\x9cjunkjunk".to_vec(),
        ),
        ("zlib given as gzip", Compression::Gzip, zlib.clone()),
        ("gzip given as zlib", Compression::Zlib, gzip.clone()),
        (
            "gzip truncated in its trailer",
            Compression::Gzip,
            gzip[..gzip.len() - 3].to_vec(),
        ),
        (
            "gzip truncated in its data",
            Compression::Gzip,
            gzip[..gzip.len() - 12].to_vec(),
        ),
        (
            "zlib truncated in its checksum",
            Compression::Zlib,
            zlib[..zlib.len() - 2].to_vec(),
        ),
        (
            "zlib truncated in its data",
            Compression::Zlib,
            zlib[..zlib.len() - 6].to_vec(),
        ),
        (
            "gzip with a wrong CRC",
            Compression::Gzip,
            flip(&gzip, gzip.len() - 8),
        ),
        (
            "gzip with a wrong size",
            Compression::Gzip,
            flip(&gzip, gzip.len() - 4),
        ),
        (
            "zlib with a wrong Adler-32",
            Compression::Zlib,
            flip(&zlib, zlib.len() - 1),
        ),
        (
            "gzip with a flipped data bit",
            Compression::Gzip,
            flip(&gzip, 12),
        ),
    ];
    for (case, compression, data) in cases {
        let err = decompress(compression, &data, MIB).unwrap_err();
        assert!(
            matches!(err, DecompressError::Corrupt(_)),
            "{case}: {err:?}"
        );
        let status = err.to_status();
        assert_eq!(status.code(), Code::INVALID_ARGUMENT, "{case}");
        assert!(
            status.message().starts_with("corrupt compressed body: "),
            "{case}: {}",
            status.message()
        );
    }
}

/// A body must be exactly one gzip member or one zlib stream.
#[test]
fn bytes_after_the_stream_are_corrupt() {
    let mut gzip = Vec::new();
    syncrpc::codec::compress(Compression::Gzip, b"hello", &mut gzip);
    let mut zlib = Vec::new();
    syncrpc::codec::compress(Compression::Zlib, b"hello", &mut zlib);
    for (case, compression, data, text) in [
        (
            "gzip and a zero byte",
            Compression::Gzip,
            [&gzip[..], b"\0"].concat(),
            "corrupt compressed body: 1 trailing bytes after the compressed stream".to_string(),
        ),
        (
            "two gzip members",
            Compression::Gzip,
            [&gzip[..], &gzip[..]].concat(),
            format!(
                "corrupt compressed body: {} trailing bytes after the compressed stream",
                gzip.len()
            ),
        ),
        (
            "zlib and junk",
            Compression::Zlib,
            [&zlib[..], b"junk"].concat(),
            "corrupt compressed body: 4 trailing bytes after the compressed stream".to_string(),
        ),
    ] {
        let err = decompress(compression, &data, MIB).unwrap_err();
        assert_eq!(err.to_status().code(), Code::INVALID_ARGUMENT, "{case}");
        assert_eq!(err.to_string(), text, "{case}");
    }
    assert_eq!(decompress(Compression::Gzip, &gzip, MIB).unwrap(), b"hello");
    assert_eq!(decompress(Compression::Zlib, &zlib, MIB).unwrap(), b"hello");
}

// ---------------------------------------------------------------------------
// Oversized bodies on the wire

/// A REQUEST header with `meta` and a body declared `body_len` bytes long;
/// the body itself is not included.
fn request_head(id: u32, meta: &[u8], body_len: u32) -> Vec<u8> {
    let header = Header {
        frame_type: FrameType::Request,
        flags: Default::default(),
        meta_len: meta.len() as u16,
        request_id: RequestId(id),
        body_len,
    };
    let mut out = vec![0u8; HEADER_LEN];
    header.encode(&mut out);
    out.extend_from_slice(meta);
    out
}

/// An 11 MiB body with the 10 MiB default: reported once, then dropped as
/// it arrives without the read buffer growing, and the next frame decodes.
#[test]
fn oversized_body_is_skipped_without_buffering() {
    const CHUNK: usize = 64 * 1024;
    const BODY: usize = 11 * MIB;
    let meta = RequestMeta::new("/echo.Echo/Say").to_vec();
    let mut wire = request_head(1, &meta, BODY as u32);
    wire.resize(wire.len() + BODY, 0xab);
    wire.extend_from_slice(&request_head(2, &meta, 3));
    wire.extend_from_slice(b"\x93\x01\x02");

    let ((events, max_capacity), usage) = alloc::measure(|| {
        let mut dec = Decoder::new(Side::Server, FrameLimits::default());
        let mut buf = BytesMut::new();
        let mut events = Vec::new();
        let mut max_capacity = 0;
        for chunk in wire.chunks(CHUNK) {
            buf.extend_from_slice(chunk);
            max_capacity = max_capacity.max(buf.capacity());
            while let Some(d) = dec.decode(&mut buf).unwrap() {
                events.push(d);
            }
            // Skipping counts as mid-frame, so the whole-frame timer runs.
            assert!(dec.is_mid_frame(&buf) || events.len() == 2);
        }
        assert!(buf.is_empty());
        assert_eq!(dec.finish(&buf), Ok(()));
        (events, max_capacity)
    });

    assert_eq!(events.len(), 2, "{events:?}");
    match &events[0] {
        Decoded::BodyTooLarge { header, meta: m } => {
            assert_eq!(header.frame_type, FrameType::Request);
            assert_eq!(header.request_id, RequestId(1));
            assert_eq!(header.body_len as usize, BODY);
            assert_eq!(&m[..], &meta[..]);
            assert_eq!(RequestMeta::decode(m).unwrap().method, "/echo.Echo/Say");
        }
        other => panic!("expected BodyTooLarge, got {other:?}"),
    }
    match &events[1] {
        Decoded::Frame(f) => {
            assert_eq!(f.request_id(), RequestId(2));
            assert_eq!(&f.meta[..], &meta[..]);
            assert_eq!(&f.body[..], b"\x93\x01\x02");
        }
        other => panic!("expected the next frame, got {other:?}"),
    }
    assert!(
        max_capacity <= 2 * CHUNK,
        "read buffer grew to {max_capacity}"
    );
    assert!(usage.peak < 4 * CHUNK, "{usage:?}");
}

/// An 11 MiB MESSAGE with the 10 MiB default, on either side: reported
/// once with its header (a MESSAGE has no meta), then dropped as it
/// arrives, and the next frame decodes.
#[test]
fn oversized_message_is_skipped_without_buffering() {
    const CHUNK: usize = 64 * 1024;
    const BODY: usize = 11 * MIB;
    let mut wire = vec![0u8; HEADER_LEN];
    Header {
        frame_type: FrameType::Message,
        flags: Default::default(),
        meta_len: 0,
        request_id: RequestId(9),
        body_len: BODY as u32,
    }
    .encode(&mut wire);
    wire.resize(wire.len() + BODY, 0xab);
    wire.extend_from_slice(&codec::hex("5352 01 05 00 00 0000 0000002a 00000000"));

    for side in [Side::Server, Side::Client] {
        let ((events, max_capacity), usage) = alloc::measure(|| {
            let mut dec = Decoder::new(side, FrameLimits::default());
            let mut buf = BytesMut::new();
            let mut events = Vec::new();
            let mut max_capacity = 0;
            for chunk in wire.chunks(CHUNK) {
                buf.extend_from_slice(chunk);
                max_capacity = max_capacity.max(buf.capacity());
                events.extend(codec::decode_all(&mut dec, &mut buf).unwrap());
            }
            assert_eq!(dec.finish(&buf), Ok(()));
            (events, max_capacity)
        });
        assert_eq!(events.len(), 2, "{side:?}: {events:?}");
        assert!(
            matches!(&events[0], Decoded::BodyTooLarge { header, meta }
                if header.frame_type == FrameType::Message
                    && header.request_id == RequestId(9)
                    && meta.is_empty()),
            "{side:?}: {:?}",
            events[0]
        );
        assert!(
            matches!(&events[1], Decoded::Frame(f) if f.frame_type() == FrameType::Ping),
            "{side:?}"
        );
        assert!(
            max_capacity <= 2 * CHUNK,
            "{side:?}: buffer grew to {max_capacity}"
        );
        assert!(usage.peak < 4 * CHUNK, "{side:?}: {usage:?}");
    }
}

/// However the bytes are split, an oversized frame gives the same events.
#[test]
fn oversized_body_is_reported_the_same_for_any_split() {
    let limits = FrameLimits {
        max_body: 100,
        max_meta: 64,
    };
    let meta = RequestMeta::new("/a.A/b").to_vec();
    let mut wire = request_head(1, &meta, 101);
    wire.resize(wire.len() + 101, 0xab);
    wire.extend_from_slice(&request_head(2, &meta, 100));
    wire.resize(wire.len() + 100, 0xcd);
    wire.extend_from_slice(&codec::hex("5352 01 05 00 00 0000 00000009 00000000"));

    let decode = |chunk: usize| {
        let mut dec = Decoder::new(Side::Server, limits);
        let mut buf = BytesMut::new();
        let mut events = Vec::new();
        for piece in wire.chunks(chunk) {
            buf.extend_from_slice(piece);
            events.extend(codec::decode_all(&mut dec, &mut buf).unwrap());
        }
        assert_eq!(dec.finish(&buf), Ok(()));
        events
    };
    let whole = decode(wire.len());
    assert_eq!(whole.len(), 3);
    assert!(matches!(&whole[0], Decoded::BodyTooLarge { header, .. } if header.request_id.0 == 1));
    assert!(matches!(&whole[1], Decoded::Frame(f) if f.body.len() == 100));
    assert!(matches!(&whole[2], Decoded::Frame(f) if f.frame_type() == FrameType::Ping));
    for chunk in [1, 2, 7, 16, 17, 50, 101, 200] {
        assert_eq!(decode(chunk), whole, "chunks of {chunk}");
    }
}

/// A header declaring a 4 GiB body costs nothing of that size, whether the
/// limit refuses it or a (foolish) configuration allows it.
#[test]
fn four_gib_body_header_allocates_nothing_of_that_size() {
    let meta = RequestMeta::new("/echo.Echo/Say").to_vec();
    let head = request_head(1, &meta, u32::MAX);

    let (events, usage) = alloc::measure(|| {
        let mut dec = Decoder::new(Side::Server, FrameLimits::default());
        let mut buf = BytesMut::from(&head[..]);
        let mut events = codec::decode_all(&mut dec, &mut buf).unwrap();
        // The body's first megabyte goes straight to the floor.
        for _ in 0..64 {
            buf.extend_from_slice(&[0u8; 16 * 1024]);
            events.extend(codec::decode_all(&mut dec, &mut buf).unwrap());
            assert!(buf.is_empty());
        }
        assert!(dec.is_mid_frame(&buf));
        assert!(dec.finish(&buf).is_err(), "closing mid-body is truncation");
        events
    });
    assert_eq!(events.len(), 1);
    assert!(
        matches!(&events[0], Decoded::BodyTooLarge { header, .. } if header.body_len == u32::MAX)
    );
    assert_small("4 GiB body, default limits", usage);

    let unlimited = FrameLimits {
        max_body: usize::MAX,
        ..FrameLimits::default()
    };
    let (got, usage) = alloc::measure(|| {
        let mut dec = Decoder::new(Side::Server, unlimited);
        let mut buf = BytesMut::from(&head[..]);
        let got = dec.decode(&mut buf);
        (got, buf.capacity())
    });
    assert_eq!(got.0, Ok(None), "waits for the body");
    assert!(got.1 < SMALL, "buffer capacity {}", got.1);
    assert_small("4 GiB body, no limit", usage);
}

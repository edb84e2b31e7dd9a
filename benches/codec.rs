//! Encoding and decoding one REQUEST frame (meta with a method and a
//! timeout), with a 64-byte and a 64 KiB body.
//!
//! Encoding appends to a reused Encoder, as a connection's writer does.
//! Decoding copies the frame into a reused BytesMut (the copy a socket read
//! makes) and cuts it off; `decode_request` also decodes the meta, as the
//! server does for every request. Run with
//! `cargo bench --bench codec -- --warm-up-time 1 --measurement-time 3`.

use std::hint::black_box;

use bytes::BytesMut;
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use syncrpc::codec::{Decoded, Decoder, Encoder, Flags, FrameLimits, RequestId, RequestMeta, Side};

const SIZES: [(&str, usize); 2] = [("64B", 64), ("64KiB", 64 * 1024)];

fn meta() -> RequestMeta<'static> {
    RequestMeta {
        timeout_ms: 250,
        ..RequestMeta::new("/echo.Echo/Say")
    }
}

fn wire(body: &[u8]) -> Vec<u8> {
    let mut enc = Encoder::new();
    enc.request(RequestId(7), Flags::default(), &meta(), body)
        .unwrap();
    enc.as_slice().to_vec()
}

fn encode(c: &mut Criterion) {
    let mut group = c.benchmark_group("encode_request");
    for (name, size) in SIZES {
        let body = vec![0x5a; size];
        let meta = meta();
        group.throughput(Throughput::Bytes(wire(&body).len() as u64));
        let mut enc = Encoder::new();
        group.bench_function(name, |b| {
            b.iter(|| {
                enc.clear();
                enc.request(
                    RequestId(7),
                    Flags::default(),
                    black_box(&meta),
                    black_box(&body),
                )
                .unwrap();
                black_box(enc.len())
            })
        });
    }
    group.finish();
}

fn decode(c: &mut Criterion, with_meta: bool) {
    let name = if with_meta {
        "decode_request"
    } else {
        "decode_frame"
    };
    let mut group = c.benchmark_group(name);
    for (name, size) in SIZES {
        let wire = wire(&vec![0x5a; size]);
        group.throughput(Throughput::Bytes(wire.len() as u64));
        let mut dec = Decoder::new(Side::Server, FrameLimits::default());
        let mut buf = BytesMut::with_capacity(wire.len());
        group.bench_function(name, |b| {
            b.iter(|| {
                buf.extend_from_slice(black_box(&wire));
                let Ok(Some(Decoded::Frame(frame))) = dec.decode(&mut buf) else {
                    unreachable!("a whole frame")
                };
                if with_meta {
                    let meta = RequestMeta::decode(&frame.meta).unwrap();
                    black_box(meta.timeout_ms);
                }
                black_box(frame.body.len())
            })
        });
    }
    group.finish();
}

fn decode_frame(c: &mut Criterion) {
    decode(c, false);
}

fn decode_request(c: &mut Criterion) {
    decode(c, true);
}

criterion_group!(benches, encode, decode_frame, decode_request);
criterion_main!(benches);

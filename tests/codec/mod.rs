//! Helpers shared by the codec test binaries. Each binary uses a subset.
#![allow(dead_code)]

pub mod alloc;

use bytes::BytesMut;
use syncrpc::codec::{Decoded, Decoder, ProtocolError};

/// Bytes from hex, ignoring whitespace, so frames can be written field by
/// field.
#[track_caller]
pub fn hex(s: &str) -> Vec<u8> {
    let s: String = s.split_whitespace().collect();
    assert!(s.len() % 2 == 0, "odd hex length");
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).expect("hex digit"))
        .collect()
}

/// Decodes everything `buf` holds, stopping at the first error.
pub fn decode_all(
    dec: &mut Decoder,
    buf: &mut BytesMut,
) -> Result<Vec<Decoded>, (Vec<Decoded>, ProtocolError)> {
    let mut out = Vec::new();
    loop {
        match dec.decode(buf) {
            Ok(Some(d)) => out.push(d),
            Ok(None) => return Ok(out),
            Err(e) => return Err((out, e)),
        }
    }
}

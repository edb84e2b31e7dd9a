//! gzip and zlib bodies, through flate2.
//!
//! Inflating is bounded: output is read through a limit one byte past the
//! body limit, so a decompression bomb costs at most the limit in memory and
//! stops as soon as it passes it.

use std::fmt;
use std::io::{self, Read, Write};

use flate2::bufread::{GzDecoder, ZlibDecoder};
use flate2::write::{GzEncoder, ZlibEncoder};

use super::header::Compression;
use crate::status::Status;

/// Why a compressed body was rejected.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DecompressError {
    /// The body inflates past the limit: answered `RESOURCE_EXHAUSTED`.
    TooLarge {
        /// The body limit in bytes.
        limit: usize,
    },
    /// The body is not a valid stream of its format: answered
    /// `INVALID_ARGUMENT`.
    Corrupt(String),
}

impl DecompressError {
    /// The status that answers the request.
    pub fn to_status(&self) -> Status {
        match self {
            DecompressError::TooLarge { .. } => Status::resource_exhausted(self.to_string()),
            DecompressError::Corrupt(_) => Status::invalid_argument(self.to_string()),
        }
    }
}

impl fmt::Display for DecompressError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DecompressError::TooLarge { limit } => {
                write!(f, "body too large after decompression: > {limit} bytes")
            }
            DecompressError::Corrupt(m) => write!(f, "corrupt compressed body: {m}"),
        }
    }
}

impl std::error::Error for DecompressError {}

/// Compresses `data` with `compression`, appending to `out`.
///
/// `Compression::None` appends `data` unchanged.
///
/// # Examples
///
/// ```
/// use syncrpc::codec::{compress, decompress, Compression};
///
/// let mut packed = Vec::new();
/// compress(Compression::Gzip, &[7u8; 4096], &mut packed);
/// assert!(packed.len() < 100);
/// let unpacked = decompress(Compression::Gzip, &packed, 1 << 20).unwrap();
/// assert_eq!(unpacked, vec![7u8; 4096]);
/// ```
pub fn compress(compression: Compression, data: &[u8], out: &mut Vec<u8>) {
    // Writing into a Vec cannot fail.
    let level = flate2::Compression::fast();
    match compression {
        Compression::None => out.extend_from_slice(data),
        Compression::Gzip => {
            let mut enc = GzEncoder::new(out, level);
            enc.write_all(data).expect("in-memory write");
            enc.finish().expect("in-memory write");
        }
        Compression::Zlib => {
            let mut enc = ZlibEncoder::new(out, level);
            enc.write_all(data).expect("in-memory write");
            enc.finish().expect("in-memory write");
        }
    }
}

/// Inflates `data`, failing as soon as the output passes `limit` bytes.
///
/// The stream must fill `data` exactly: bytes after the end of the gzip
/// member or zlib stream are rejected as corrupt.
pub fn decompress(
    compression: Compression,
    data: &[u8],
    limit: usize,
) -> Result<Vec<u8>, DecompressError> {
    match compression {
        Compression::None => {
            if data.len() > limit {
                return Err(DecompressError::TooLarge { limit });
            }
            Ok(data.to_vec())
        }
        Compression::Gzip => {
            let mut dec = GzDecoder::new(data);
            let out = read_limited(&mut dec, data.len(), limit)?;
            expect_consumed(dec.into_inner())?;
            Ok(out)
        }
        Compression::Zlib => {
            let mut dec = ZlibDecoder::new(data);
            let out = read_limited(&mut dec, data.len(), limit)?;
            expect_consumed(dec.into_inner())?;
            Ok(out)
        }
    }
}

fn read_limited<R: Read>(r: &mut R, hint: usize, limit: usize) -> Result<Vec<u8>, DecompressError> {
    // The buffer grows with the output actually produced, doubling but
    // never past limit + 1 bytes, so even its capacity stays within the
    // limit (plus the one byte that proves the limit was passed).
    let cap = limit.saturating_add(1);
    let mut out = Vec::new();
    let mut len = 0;
    let mut next = hint.saturating_mul(4).clamp(4096, 1 << 20);
    loop {
        if len == out.len() {
            if len == cap {
                return Err(DecompressError::TooLarge { limit });
            }
            let new_len = len.saturating_add(next).min(cap);
            out.reserve_exact(new_len - out.len());
            out.resize(new_len, 0);
            next = next.saturating_mul(2);
        }
        match r.read(&mut out[len..]) {
            Ok(0) => break,
            Ok(n) => len += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(corrupt(e)),
        }
    }
    if len > limit {
        return Err(DecompressError::TooLarge { limit });
    }
    out.truncate(len);
    Ok(out)
}

fn expect_consumed(rest: &[u8]) -> Result<(), DecompressError> {
    if rest.is_empty() {
        Ok(())
    } else {
        Err(DecompressError::Corrupt(format!(
            "{} trailing bytes after the compressed stream",
            rest.len()
        )))
    }
}

fn corrupt(e: io::Error) -> DecompressError {
    DecompressError::Corrupt(e.to_string())
}

//! A structural check of untrusted MessagePack, run before serde sees it.
//!
//! serde deserializers recurse once per nesting level and may size buffers
//! from declared lengths. This module walks a value iteratively, with an
//! explicit stack bounded by the depth limit, and rejects in one linear pass
//! what would make that dangerous or ambiguous: nesting past the limit, a
//! declared length longer than the bytes that remain, the never-used marker
//! `0xc1`, truncation and trailing bytes. A value that passes can be handed
//! to `rmp-serde` without risk of stack overflow or a large allocation.

use std::fmt;

/// Why a MessagePack value was rejected.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum MsgpackError {
    /// The input ended inside a value.
    Truncated {
        /// Offset at which more bytes were needed.
        at: usize,
    },
    /// Containers nest deeper than the limit.
    TooDeep {
        /// The depth limit.
        limit: usize,
    },
    /// A string, binary, extension or container declares more than the
    /// input holds.
    LengthExceeds {
        /// Offset of the value's marker.
        at: usize,
        /// Declared length (bytes, or elements for containers).
        declared: u64,
        /// Bytes remaining after the length prefix.
        remaining: usize,
    },
    /// The marker byte `0xc1`, which MessagePack never uses.
    InvalidMarker {
        /// Offset of the marker.
        at: usize,
    },
    /// Bytes follow the value.
    TrailingBytes {
        /// How many.
        count: usize,
    },
    /// The value is not a map with string keys, or a key repeats.
    BadMap(&'static str),
    /// A map key appears twice.
    DuplicateKey(String),
}

impl fmt::Display for MsgpackError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            MsgpackError::Truncated { at } => write!(f, "truncated MessagePack at byte {at}"),
            MsgpackError::TooDeep { limit } => {
                write!(f, "MessagePack nested deeper than {limit} levels")
            }
            MsgpackError::LengthExceeds {
                at,
                declared,
                remaining,
            } => write!(
                f,
                "MessagePack value at byte {at} declares length {declared} but only {remaining} bytes remain"
            ),
            MsgpackError::InvalidMarker { at } => {
                write!(f, "invalid MessagePack marker 0xc1 at byte {at}")
            }
            MsgpackError::TrailingBytes { count } => {
                write!(f, "{count} trailing bytes after the MessagePack value")
            }
            MsgpackError::BadMap(what) => f.write_str(what),
            MsgpackError::DuplicateKey(k) => write!(f, "duplicate key {k:?}"),
        }
    }
}

impl std::error::Error for MsgpackError {}

/// What one marker introduces.
enum Item {
    /// A scalar whose payload is this many bytes after the marker and any
    /// length prefix.
    Skip(u64),
    /// A container with this many child values.
    Children(u64),
}

/// Reads a big-endian unsigned integer of `n` bytes at `pos`.
fn be(buf: &[u8], pos: usize, n: usize) -> Result<u64, MsgpackError> {
    let bytes = buf
        .get(pos..pos + n)
        .ok_or(MsgpackError::Truncated { at: buf.len() })?;
    Ok(bytes.iter().fold(0u64, |acc, &b| acc << 8 | u64::from(b)))
}

/// Decodes the marker at `pos`: returns what it introduces and the offset
/// just past the marker and its length prefix.
fn item(buf: &[u8], pos: usize) -> Result<(Item, usize), MsgpackError> {
    let m = *buf.get(pos).ok_or(MsgpackError::Truncated { at: pos })?;
    let p = pos + 1;
    Ok(match m {
        0x00..=0x7f | 0xe0..=0xff | 0xc0 | 0xc2 | 0xc3 => (Item::Skip(0), p),
        0x80..=0x8f => (Item::Children(2 * u64::from(m & 0x0f)), p),
        0x90..=0x9f => (Item::Children(u64::from(m & 0x0f)), p),
        0xa0..=0xbf => (Item::Skip(u64::from(m & 0x1f)), p),
        0xc1 => return Err(MsgpackError::InvalidMarker { at: pos }),
        0xc4 | 0xd9 => (Item::Skip(be(buf, p, 1)?), p + 1),
        0xc5 | 0xda => (Item::Skip(be(buf, p, 2)?), p + 2),
        0xc6 | 0xdb => (Item::Skip(be(buf, p, 4)?), p + 4),
        // ext: length prefix, then one type byte, then the data.
        0xc7 => (Item::Skip(be(buf, p, 1)? + 1), p + 1),
        0xc8 => (Item::Skip(be(buf, p, 2)? + 1), p + 2),
        0xc9 => (Item::Skip(be(buf, p, 4)? + 1), p + 4),
        0xca | 0xce | 0xd2 => (Item::Skip(4), p),
        0xcb | 0xcf | 0xd3 => (Item::Skip(8), p),
        0xcc | 0xd0 => (Item::Skip(1), p),
        0xcd | 0xd1 => (Item::Skip(2), p),
        0xd4 => (Item::Skip(2), p),
        0xd5 => (Item::Skip(3), p),
        0xd6 => (Item::Skip(5), p),
        0xd7 => (Item::Skip(9), p),
        0xd8 => (Item::Skip(17), p),
        0xdc => (Item::Children(be(buf, p, 2)?), p + 2),
        0xdd => (Item::Children(be(buf, p, 4)?), p + 4),
        0xde => (Item::Children(2 * be(buf, p, 2)?), p + 2),
        0xdf => (Item::Children(2 * be(buf, p, 4)?), p + 4),
    })
}

/// The open levels of [`skip_value`]: the first few inline, so checking a
/// meta map or a flat body allocates nothing.
struct Stack {
    inline: [u64; 8],
    len: usize,
    spill: Vec<u64>,
}

impl Stack {
    fn new() -> Stack {
        Stack {
            inline: [0; 8],
            len: 0,
            spill: Vec::new(),
        }
    }

    fn len(&self) -> usize {
        self.len
    }

    fn push(&mut self, v: u64) {
        match self.inline.get_mut(self.len) {
            Some(slot) => *slot = v,
            None => self.spill.push(v),
        }
        self.len += 1;
    }

    fn pop(&mut self) -> Option<u64> {
        self.len = self.len.checked_sub(1)?;
        match self.inline.get(self.len) {
            Some(v) => Some(*v),
            None => self.spill.pop(),
        }
    }
}

/// Skips one complete value starting at `pos`, checking its structure, and
/// returns the offset just past it.
///
/// Runs in time linear in the bytes it skips and allocates only when
/// containers nest more than 8 deep (a stack of at most `max_depth`
/// counters).
pub fn skip_value(buf: &[u8], pos: usize, max_depth: usize) -> Result<usize, MsgpackError> {
    // Values still to read at each open level; the innermost is `pending`.
    let mut stack = Stack::new();
    let mut pending: u64 = 1;
    let mut pos = pos;
    loop {
        while pending == 0 {
            match stack.pop() {
                Some(outer) => pending = outer,
                None => return Ok(pos),
            }
        }
        pending -= 1;
        let at = pos;
        let (it, next) = item(buf, pos)?;
        let remaining = buf.len().saturating_sub(next);
        match it {
            Item::Skip(n) => {
                if n > remaining as u64 {
                    return Err(MsgpackError::LengthExceeds {
                        at,
                        declared: n,
                        remaining,
                    });
                }
                pos = next + n as usize;
            }
            Item::Children(n) => {
                // Every child takes at least one byte.
                if n > remaining as u64 {
                    return Err(MsgpackError::LengthExceeds {
                        at,
                        declared: n,
                        remaining,
                    });
                }
                pos = next;
                if n > 0 {
                    if stack.len() + 1 > max_depth {
                        return Err(MsgpackError::TooDeep { limit: max_depth });
                    }
                    stack.push(pending);
                    pending = n;
                }
            }
        }
    }
}

/// A [`skip_value`] that can stop where the input ends and resume when
/// more arrives, for values read off a stream with no length prefix.
///
/// Its state is the open containers and the offset of the next marker, so
/// each byte is examined once however the value is split across reads.
/// The scanner never sizes anything from a declared length; the caller
/// bounds the bytes it is willing to buffer.
///
/// # Examples
///
/// ```
/// use syncrpc::codec::msgpack::Scanner;
///
/// let value = [0x92, 0x01, 0xa2, b'h', b'i']; // [1, "hi"]
/// let mut scan = Scanner::new(32);
/// assert_eq!(scan.advance(&value[..3]), Ok(None)); // needs more bytes
/// assert_eq!(scan.advance(&value), Ok(Some(5)));
/// ```
pub struct Scanner {
    stack: Stack,
    pending: u64,
    pos: usize,
    max_depth: usize,
}

impl Scanner {
    /// A scanner for one value starting at offset 0, nested at most
    /// `max_depth` containers deep.
    pub fn new(max_depth: usize) -> Scanner {
        Scanner {
            stack: Stack::new(),
            pending: 1,
            pos: 0,
            max_depth,
        }
    }

    /// Continues the scan over `buf`, which holds everything given before
    /// and possibly more. Returns the offset just past the value once it
    /// is complete, `None` while bytes are missing.
    pub fn advance(&mut self, buf: &[u8]) -> Result<Option<usize>, MsgpackError> {
        loop {
            while self.pending == 0 {
                match self.stack.pop() {
                    Some(outer) => self.pending = outer,
                    None => return Ok(Some(self.pos)),
                }
            }
            let (it, next) = match item(buf, self.pos) {
                Ok(v) => v,
                Err(MsgpackError::Truncated { .. }) => return Ok(None),
                Err(e) => return Err(e),
            };
            match it {
                Item::Skip(n) => {
                    let end = next as u64 + n;
                    if end > buf.len() as u64 {
                        return Ok(None);
                    }
                    self.pos = end as usize;
                    self.pending -= 1;
                }
                Item::Children(n) => {
                    if n > 0 && self.stack.len() + 1 > self.max_depth {
                        return Err(MsgpackError::TooDeep {
                            limit: self.max_depth,
                        });
                    }
                    self.pos = next;
                    self.pending -= 1;
                    if n > 0 {
                        self.stack.push(self.pending);
                        self.pending = n;
                    }
                }
            }
        }
    }

    /// Offset of the next byte the scan will look at.
    pub fn position(&self) -> usize {
        self.pos
    }
}

impl fmt::Debug for Scanner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Scanner")
            .field("pos", &self.pos)
            .field("depth", &self.stack.len())
            .finish_non_exhaustive()
    }
}

/// Checks that `buf` holds exactly one well-formed value nested at most
/// `max_depth` containers deep.
///
/// # Examples
///
/// ```
/// use syncrpc::codec::msgpack::{check, MsgpackError};
///
/// assert!(check(&[0x81, 0xa1, b'a', 0x01], 32).is_ok()); // {"a": 1}
/// // An array that declares 2^32-1 elements in five bytes.
/// assert!(matches!(
///     check(&[0xdd, 0xff, 0xff, 0xff, 0xff], 32),
///     Err(MsgpackError::LengthExceeds { .. })
/// ));
/// assert_eq!(check(&[0x01, 0x02], 32), Err(MsgpackError::TrailingBytes { count: 1 }));
/// ```
pub fn check(buf: &[u8], max_depth: usize) -> Result<(), MsgpackError> {
    let end = skip_value(buf, 0, max_depth)?;
    if end != buf.len() {
        return Err(MsgpackError::TrailingBytes {
            count: buf.len() - end,
        });
    }
    Ok(())
}

/// Reads a string header at `pos`; returns the string's bytes and the
/// offset past them, or `None` if the value there is not a string.
fn str_at(buf: &[u8], pos: usize) -> Result<Option<(&[u8], usize)>, MsgpackError> {
    let m = *buf.get(pos).ok_or(MsgpackError::Truncated { at: pos })?;
    let (len, start) = match m {
        0xa0..=0xbf => (u64::from(m & 0x1f), pos + 1),
        0xd9 => (be(buf, pos + 1, 1)?, pos + 2),
        0xda => (be(buf, pos + 1, 2)?, pos + 3),
        0xdb => (be(buf, pos + 1, 4)?, pos + 5),
        _ => return Ok(None),
    };
    let end = start
        .checked_add(len as usize)
        .filter(|&e| e <= buf.len())
        .ok_or(MsgpackError::Truncated { at: buf.len() })?;
    Ok(Some((&buf[start..end], end)))
}

/// Checks that `buf` is one map whose keys are all strings, none repeated.
/// `buf` must already have passed [`check`].
pub fn check_str_keys_unique(buf: &[u8]) -> Result<(), MsgpackError> {
    let m = *buf.first().ok_or(MsgpackError::Truncated { at: 0 })?;
    let (n, mut pos) = match m {
        0x80..=0x8f => (u64::from(m & 0x0f), 1),
        0xde => (be(buf, 1, 2)?, 3),
        0xdf => (be(buf, 1, 4)?, 5),
        _ => return Err(MsgpackError::BadMap("not a map")),
    };
    // Metas hold a handful of keys: compare pairwise without allocating,
    // and sort only a large (hostile) map.
    const SMALL: usize = 16;
    let mut small: [&[u8]; SMALL] = [&[]; SMALL];
    let mut large: Vec<&[u8]> = Vec::new();
    for i in 0..n as usize {
        let (key, after) =
            str_at(buf, pos)?.ok_or(MsgpackError::BadMap("map key is not a string"))?;
        pos = skip_value(buf, after, usize::MAX)?;
        if i < SMALL {
            if let Some(dup) = small[..i].iter().find(|k| **k == key) {
                return Err(MsgpackError::DuplicateKey(
                    String::from_utf8_lossy(dup).into_owned(),
                ));
            }
            small[i] = key;
        } else {
            if large.is_empty() {
                large.extend_from_slice(&small);
            }
            large.push(key);
        }
    }
    if !large.is_empty() {
        large.sort_unstable();
        if let Some(w) = large.windows(2).find(|w| w[0] == w[1]) {
            return Err(MsgpackError::DuplicateKey(
                String::from_utf8_lossy(w[0]).into_owned(),
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_every_scalar_kind() {
        let v: Vec<u8> = vec![
            0xdc, 0, 16, // array16 of 16
            0x01, 0xff, 0xc0, 0xc2, 0xc3, // ints, nil, bools
            0xcc, 1, 0xcd, 0, 1, // u8, u16
            0xcb, 0, 0, 0, 0, 0, 0, 0, 0, // f64
            0xa2, b'h', b'i', // fixstr
            0xc4, 2, 1, 2, // bin8
            0xd4, 1, 9, // fixext1
            0xc7, 1, 5, 7,    // ext8 of length 1
            0x90, // empty array
            0x80, // empty map
            0xd9, 1, b'x', // str8
            0xd3, 0, 0, 0, 0, 0, 0, 0, 1, // i64
        ];
        assert_eq!(check(&v, 32), Ok(()));
    }

    #[test]
    fn depth_limit_counts_containers() {
        let mut v = vec![0x91; 32];
        v.push(0x01);
        assert_eq!(check(&v, 32), Ok(()));
        let mut v = vec![0x91; 33];
        v.push(0x01);
        assert_eq!(check(&v, 32), Err(MsgpackError::TooDeep { limit: 32 }));
    }

    #[test]
    fn truncation_is_reported() {
        assert!(matches!(
            check(&[0x92, 0x01], 32),
            Err(MsgpackError::LengthExceeds { .. })
        ));
        assert!(matches!(
            check(&[0x91, 0xda, 0x00], 32),
            Err(MsgpackError::Truncated { .. })
        ));
        assert!(matches!(
            check(&[0xcd, 0x01], 32),
            Err(MsgpackError::LengthExceeds { .. })
        ));
        assert!(matches!(
            check(&[], 32),
            Err(MsgpackError::Truncated { .. })
        ));
    }

    #[test]
    fn duplicate_keys_small_and_large() {
        let dup = [0x82, 0xa1, b'a', 0x01, 0xa1, b'a', 0x02];
        assert_eq!(
            check_str_keys_unique(&dup),
            Err(MsgpackError::DuplicateKey("a".into()))
        );
        let mut big = vec![0xde, 0, 40];
        for i in 0..40u8 {
            big.extend_from_slice(&[0xa1, if i == 39 { b'A' } else { b'A' + i }, 0xc0]);
        }
        assert_eq!(
            check_str_keys_unique(&big),
            Err(MsgpackError::DuplicateKey("A".into()))
        );
        let non_str = [0x81, 0x01, 0x01];
        assert!(matches!(
            check_str_keys_unique(&non_str),
            Err(MsgpackError::BadMap(_))
        ));
    }

    #[test]
    fn scanner_resumes_byte_by_byte() {
        let v: Vec<u8> = vec![
            0x94, 0x00, 0xcd, 0x01, 0x00, 0xa3, b'a', b'.', b'b', 0x92, 0x91, 0xc4, 2, 1, 2, 0x80,
        ];
        let mut scan = Scanner::new(32);
        for n in 0..v.len() {
            assert_eq!(scan.advance(&v[..n]), Ok(None), "at {n}");
        }
        assert_eq!(scan.advance(&v), Ok(Some(v.len())));
        let mut deep = vec![0x91; 33];
        deep.push(0x01);
        assert_eq!(
            Scanner::new(32).advance(&deep),
            Err(MsgpackError::TooDeep { limit: 32 })
        );
        assert_eq!(
            Scanner::new(32).advance(&[0x92, 0xc1]),
            Err(MsgpackError::InvalidMarker { at: 1 })
        );
    }
}

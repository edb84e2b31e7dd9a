//! A cursor over MessagePack headers, for the readers that take the few
//! shapes they expect in one pass (request and response metas, and
//! MessagePack-RPC messages) instead of going through serde.
//!
//! Every read is `None` on a marker it does not take or on truncation;
//! what that means (fall back to the general decoder, or reject the
//! message) is the caller's to decide.

/// A position in a MessagePack buffer.
pub(crate) struct Cursor<'a> {
    buf: &'a [u8],
    /// The offset of the next unread byte.
    pub pos: usize,
}

impl<'a> Cursor<'a> {
    pub fn new(buf: &'a [u8]) -> Cursor<'a> {
        Cursor { buf, pos: 0 }
    }

    /// True once every byte was read.
    pub fn at_end(&self) -> bool {
        self.pos == self.buf.len()
    }

    /// The next byte.
    pub fn byte(&mut self) -> Option<u8> {
        let b = *self.buf.get(self.pos)?;
        self.pos += 1;
        Some(b)
    }

    /// The next `n` bytes.
    pub fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        let bytes = self.buf.get(self.pos..self.pos.checked_add(n)?)?;
        self.pos += n;
        Some(bytes)
    }

    /// A big-endian unsigned integer of `n` bytes.
    fn be(&mut self, n: usize) -> Option<u64> {
        Some(
            self.take(n)?
                .iter()
                .fold(0u64, |acc, &b| acc << 8 | u64::from(b)),
        )
    }

    /// An array header: the number of elements.
    pub fn array_len(&mut self) -> Option<u64> {
        match self.byte()? {
            m @ 0x90..=0x9f => Some(u64::from(m & 0x0f)),
            0xdc => self.be(2),
            0xdd => self.be(4),
            _ => None,
        }
    }

    /// A map header: the number of entries.
    pub fn map_len(&mut self) -> Option<u64> {
        match self.byte()? {
            m @ 0x80..=0x8f => Some(u64::from(m & 0x0f)),
            0xde => self.be(2),
            0xdf => self.be(4),
            _ => None,
        }
    }

    /// A non-negative integer, in any of the unsigned encodings or a signed
    /// one holding a non-negative value (some encoders use those).
    pub fn uint(&mut self) -> Option<u64> {
        match self.byte()? {
            m @ 0x00..=0x7f => Some(u64::from(m)),
            0xcc => self.be(1),
            0xcd => self.be(2),
            0xce => self.be(4),
            0xcf => self.be(8),
            0xd0 => self.be(1).filter(|v| *v < 0x80),
            0xd1 => self.be(2).filter(|v| *v < 0x8000),
            0xd2 => self.be(4).filter(|v| *v < 0x8000_0000),
            0xd3 => self.be(8).filter(|v| *v < 0x8000_0000_0000_0000),
            _ => None,
        }
    }

    /// A string's bytes (not checked to be UTF-8); with `or_bin`, a binary's
    /// too.
    pub fn str_bytes(&mut self, or_bin: bool) -> Option<&'a [u8]> {
        let n = match self.byte()? {
            m @ 0xa0..=0xbf => u64::from(m & 0x1f),
            0xd9 => self.be(1)?,
            0xda => self.be(2)?,
            0xdb => self.be(4)?,
            0xc4 if or_bin => self.be(1)?,
            0xc5 if or_bin => self.be(2)?,
            0xc6 if or_bin => self.be(4)?,
            _ => return None,
        };
        self.take(usize::try_from(n).ok()?)
    }

    /// A UTF-8 string.
    pub fn str(&mut self) -> Option<&'a str> {
        std::str::from_utf8(self.str_bytes(false)?).ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_each_encoding_and_stops_at_the_end() {
        let mut buf = Vec::new();
        rmp::encode::write_array_len(&mut buf, 70_000).unwrap();
        rmp::encode::write_map_len(&mut buf, 3).unwrap();
        rmp::encode::write_uint(&mut buf, u64::MAX).unwrap();
        rmp::encode::write_sint(&mut buf, -1).unwrap();
        buf.extend_from_slice(&[0xd0, 0x05]);
        rmp::encode::write_str(&mut buf, &"s".repeat(40)).unwrap();
        rmp::encode::write_bin(&mut buf, b"b").unwrap();
        rmp::encode::write_bin(&mut buf, b"b").unwrap();
        let mut c = Cursor::new(&buf);
        assert_eq!(c.array_len(), Some(70_000));
        assert_eq!(c.map_len(), Some(3));
        assert_eq!(c.uint(), Some(u64::MAX));
        assert_eq!(c.uint(), None, "negative");
        assert_eq!(c.uint(), Some(5), "signed, non-negative");
        assert_eq!(c.str().map(str::len), Some(40));
        assert_eq!(c.str_bytes(true), Some(&b"b"[..]));
        assert_eq!(c.str_bytes(false), None, "a binary is not a string");
        assert!(!c.at_end());
        let mut c = Cursor::new(&[0xa3, b'a']);
        assert_eq!(c.str(), None, "truncated");
    }
}

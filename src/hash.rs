//! The hasher of the crate's per-request tables: the server's requests in
//! flight, its method table, and the client's calls awaiting answers.
//!
//! Each lookup hashes one short key, where SipHash's setup and rounds cost
//! more than the lookup itself. This is a folded multiply, a word at a
//! time, keyed with a random number drawn once per process: a few cycles,
//! and a peer that does not know the key cannot choose request ids that
//! collide.

use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hasher};
use std::sync::OnceLock;

/// Builds [`FastHasher`]s with the process's key.
#[derive(Clone, Copy, Debug)]
pub(crate) struct FastHash {
    key: u64,
}

impl Default for FastHash {
    fn default() -> FastHash {
        static KEY: OnceLock<u64> = OnceLock::new();
        FastHash {
            key: *KEY.get_or_init(|| RandomState::new().hash_one(0u64)),
        }
    }
}

impl BuildHasher for FastHash {
    type Hasher = FastHasher;

    fn build_hasher(&self) -> FastHasher {
        FastHasher {
            key: self.key,
            state: 0,
        }
    }
}

pub(crate) struct FastHasher {
    key: u64,
    state: u64,
}

impl FastHasher {
    fn add(&mut self, word: u64) {
        let p = u128::from(self.state ^ word ^ self.key) * 0x9E37_79B9_7F4A_7C15_u128;
        self.state = (p as u64) ^ ((p >> 64) as u64);
    }
}

impl Hasher for FastHasher {
    fn write(&mut self, bytes: &[u8]) {
        let mut words = bytes.chunks_exact(8);
        for w in &mut words {
            self.add(u64::from_le_bytes(w.try_into().expect("8 bytes")));
        }
        let rest = words.remainder();
        let mut tail = [0u8; 8];
        tail[..rest.len()].copy_from_slice(rest);
        // The length keeps "a" and "a\0" apart.
        self.add(u64::from_le_bytes(tail) ^ (rest.len() as u64) << 56);
    }

    fn write_u8(&mut self, n: u8) {
        self.add(u64::from(n));
    }

    fn write_u32(&mut self, n: u32) {
        self.add(u64::from(n));
    }

    fn write_u64(&mut self, n: u64) {
        self.add(n);
    }

    fn finish(&self) -> u64 {
        self.state
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn equal_keys_hash_alike_and_near_keys_apart() {
        let h = FastHash::default();
        assert_eq!(h.hash_one("/echo.Echo/Say"), h.hash_one("/echo.Echo/Say"));
        assert_ne!(h.hash_one("/echo.Echo/Say"), h.hash_one("/echo.Echo/Sax"));
        assert_ne!(h.hash_one(&b"a"[..]), h.hash_one(&b"a\0"[..]));
        // Sequential ids spread over the low bits that pick a bucket.
        let buckets: std::collections::HashSet<u64> =
            (0..64u32).map(|id| h.hash_one(id) & 63).collect();
        assert!(buckets.len() > 32, "{} of 64 buckets", buckets.len());
    }
}

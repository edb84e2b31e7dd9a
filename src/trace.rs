//! Trace ids: the string that follows a request across services.

use std::cell::Cell;
use std::fmt;

use crate::codec::MAX_TRACE_ID_LEN;

/// A trace id of at most 64 bytes, stored inline so copying one or making
/// a new one never allocates.
///
/// A server assigns a fresh one (a UUID v4 string) to a request that came
/// without one; a client call made with a handler's context sends the
/// handler's id along.
///
/// # Examples
///
/// ```
/// use syncrpc::TraceId;
///
/// let id = TraceId::new("req-42").unwrap();
/// assert_eq!(id.as_str(), "req-42");
/// assert!(TraceId::new(&"x".repeat(65)).is_none());
///
/// let fresh = TraceId::generate();
/// assert_eq!(fresh.as_str().len(), 36); // a UUID v4
/// assert_ne!(fresh, TraceId::generate());
/// ```
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct TraceId {
    len: u8,
    bytes: [u8; MAX_TRACE_ID_LEN],
}

impl TraceId {
    /// A trace id from `s`, or `None` if it is longer than 64 bytes.
    pub fn new(s: &str) -> Option<TraceId> {
        if s.len() > MAX_TRACE_ID_LEN {
            return None;
        }
        let mut bytes = [0u8; MAX_TRACE_ID_LEN];
        bytes[..s.len()].copy_from_slice(s.as_bytes());
        Some(TraceId {
            len: s.len() as u8,
            bytes,
        })
    }

    /// A fresh random UUID v4, as a 36-character string.
    ///
    /// Trace ids need to be unique, not secret: they come from a per-thread
    /// generator seeded once from the operating system, so making one costs
    /// no system call.
    pub fn generate() -> TraceId {
        let uuid = uuid::Builder::from_random_bytes(random_bytes()).into_uuid();
        let mut buf = uuid::Uuid::encode_buffer();
        let s = uuid.hyphenated().encode_lower(&mut buf);
        TraceId::new(s).expect("a UUID fits in a trace id")
    }

    /// The id as a string.
    pub fn as_str(&self) -> &str {
        // Built only from &str in new(), so always valid UTF-8.
        std::str::from_utf8(&self.bytes[..self.len as usize]).expect("trace ids are UTF-8")
    }
}

impl fmt::Debug for TraceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self.as_str(), f)
    }
}

impl fmt::Display for TraceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

thread_local! {
    static RNG: Cell<(u64, u64)> = Cell::new(seed());
}

fn seed() -> (u64, u64) {
    let n = uuid::Uuid::new_v4().as_u128();
    ((n >> 64) as u64 | 1, n as u64 | 1)
}

/// 16 bytes from xorshift128+, good enough for unique ids.
fn random_bytes() -> [u8; 16] {
    RNG.with(|rng| {
        let mut out = [0u8; 16];
        let (mut s0, mut s1) = rng.get();
        for chunk in out.chunks_mut(8) {
            let mut x = s0;
            let y = s1;
            s0 = y;
            x ^= x << 23;
            s1 = x ^ y ^ (x >> 17) ^ (y >> 26);
            chunk.copy_from_slice(&s1.wrapping_add(y).to_le_bytes());
        }
        rng.set((s0, s1));
        out
    })
}

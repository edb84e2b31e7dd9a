//! Reused byte buffers, in the spirit of Go's `sync.Pool`.
//!
//! Buffers are stateless: whoever takes one gets it empty, and whoever gives
//! one back gives up its contents. Each thread keeps a few of its own, so
//! taking and returning costs no lock; a buffer that grew past
//! [`MAX_POOLED_CAPACITY`] is dropped rather than kept, so one large
//! response does not pin memory in every worker.

use std::cell::RefCell;

/// The largest buffer kept for reuse.
pub(crate) const MAX_POOLED_CAPACITY: usize = 256 * 1024;
/// Buffers kept per thread.
const PER_THREAD: usize = 4;
/// Capacity of a fresh buffer: most messages fit.
const INITIAL_CAPACITY: usize = 4 * 1024;

thread_local! {
    static FREE: RefCell<Vec<Vec<u8>>> = const { RefCell::new(Vec::new()) };
}

/// Takes an empty buffer, reusing one given back on this thread if any.
pub(crate) fn take() -> Vec<u8> {
    FREE.with(|free| free.borrow_mut().pop())
        .unwrap_or_else(|| Vec::with_capacity(INITIAL_CAPACITY))
}

/// Gives a buffer back for reuse; it is cleared first.
pub(crate) fn give(mut buf: Vec<u8>) {
    if buf.capacity() == 0 || buf.capacity() > MAX_POOLED_CAPACITY {
        return;
    }
    buf.clear();
    FREE.with(|free| {
        let mut free = free.borrow_mut();
        if free.len() < PER_THREAD {
            free.push(buf);
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buffers_come_back_empty_and_are_reused() {
        let mut b = take();
        b.extend_from_slice(b"leftover");
        let ptr = b.as_ptr();
        give(b);
        let again = take();
        assert!(again.is_empty());
        assert_eq!(again.as_ptr(), ptr);
        give(again);
    }

    #[test]
    fn oversized_buffers_are_dropped() {
        while FREE.with(|f| f.borrow_mut().pop()).is_some() {}
        give(Vec::with_capacity(MAX_POOLED_CAPACITY + 1));
        assert_eq!(FREE.with(|f| f.borrow().len()), 0);
    }
}

//! A counting global allocator, to show that hostile input costs memory in
//! proportion to the bytes that arrived, never to the lengths they declare.
//!
//! A test binary opts in with
//! `#[global_allocator] static A: codec::alloc::Counting = codec::alloc::Counting;`
//! and wraps the code under test in [`measure`]. Counts are per thread, so
//! tests running in parallel do not see each other's allocations.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

/// The system allocator, counting what the current thread allocates.
pub struct Counting;

thread_local! {
    // `const` initialisers and no destructors: reading these never
    // allocates, so the allocator can use them without recursing.
    static LIVE: Cell<isize> = const { Cell::new(0) };
    static PEAK: Cell<isize> = const { Cell::new(0) };
    static LARGEST: Cell<usize> = const { Cell::new(0) };
}

/// Records a block of `old` bytes becoming `new` bytes (0 for none).
fn record(old: usize, new: usize) {
    // try_with: an allocator must not panic, even while a thread exits.
    let _ = LIVE.try_with(|live| {
        let now = live.get() + new as isize - old as isize;
        live.set(now);
        let _ = PEAK.try_with(|peak| peak.set(peak.get().max(now)));
    });
    let _ = LARGEST.try_with(|largest| largest.set(largest.get().max(new)));
}

// SAFETY: every method forwards its arguments unchanged to `System`, which
// upholds the GlobalAlloc contract; the bookkeeping touches only
// thread-local cells and never allocates.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let p = System.alloc(layout);
        if !p.is_null() {
            record(0, layout.size());
        }
        p
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        let p = System.alloc_zeroed(layout);
        if !p.is_null() {
            record(0, layout.size());
        }
        p
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        System.dealloc(ptr, layout);
        record(layout.size(), 0);
    }

    // A realloc counts as the block changing size, not as old and new
    // blocks side by side: large blocks are remapped in place.
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let p = System.realloc(ptr, layout, new_size);
        if !p.is_null() {
            record(layout.size(), new_size);
        }
        p
    }
}

/// What the current thread allocated while running a closure.
#[derive(Clone, Copy, Debug)]
pub struct Usage {
    /// Most bytes live at once, counted from the closure's start.
    pub peak: usize,
    /// The largest single block requested.
    pub largest: usize,
}

/// Runs `f` on this thread and reports what it allocated, including what
/// its result still holds.
///
/// # Panics
///
/// If the binary did not install [`Counting`]: every count would be zero
/// and every bound would pass without meaning anything.
pub fn measure<R>(f: impl FnOnce() -> R) -> (R, Usage) {
    LARGEST.set(0);
    drop(std::hint::black_box(Vec::<u8>::with_capacity(100)));
    assert!(
        LARGEST.get() >= 100,
        "alloc::Counting is not the global allocator"
    );
    LIVE.set(0);
    PEAK.set(0);
    LARGEST.set(0);
    let r = f();
    let usage = Usage {
        peak: PEAK.get().max(0) as usize,
        largest: LARGEST.get(),
    };
    (r, usage)
}

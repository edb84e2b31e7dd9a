//! Free lists for objects made on one thread and let go of on another.
//!
//! A server makes a request's context on the thread that reads the request
//! and is done with it on the worker that answers it. Handing each object
//! back through a shared queue would cost a few atomic operations per
//! object; instead each thread keeps its own short list, and full lists
//! travel between threads whole, [`LIST`] objects at a time.

use std::cell::RefCell;

use crossbeam_channel::{bounded, Receiver, Sender};

/// Objects that move between threads together.
pub(crate) const LIST: usize = 32;

/// The shared side of a free list; each thread using it keeps its own
/// `RefCell<Vec<T>>` (a `thread_local!`) and passes it in.
pub(crate) struct SpareList<T> {
    /// Lists of [`LIST`] spare objects, for a thread that ran out.
    full: (Sender<Vec<T>>, Receiver<Vec<T>>),
    /// Emptied lists, so that moving objects allocates nothing.
    empty: (Sender<Vec<T>>, Receiver<Vec<T>>),
}

impl<T> SpareList<T> {
    /// A free list that keeps about `max` objects between threads, besides
    /// those each thread holds.
    pub(crate) fn new(max: usize) -> SpareList<T> {
        let lists = max.div_ceil(LIST).max(1);
        SpareList {
            full: bounded(lists),
            empty: bounded(lists),
        }
    }

    /// A spare object: this thread's own, or else one from a list another
    /// thread gave up.
    pub(crate) fn take(&self, local: &RefCell<Vec<T>>) -> Option<T> {
        let mut local = local.borrow_mut();
        if local.is_empty() {
            let full = self.full.1.try_recv().ok()?;
            let empty = std::mem::replace(&mut *local, full);
            if empty.capacity() > 0 {
                let _ = self.empty.0.try_send(empty);
            }
        }
        local.pop()
    }

    /// Keeps `item` for reuse. This thread's list goes to the others once
    /// it is full; if they already hold enough, its objects are dropped.
    pub(crate) fn give(&self, local: &RefCell<Vec<T>>, item: T) {
        let mut local = local.borrow_mut();
        if local.len() >= LIST {
            let empty = self
                .empty
                .1
                .try_recv()
                .unwrap_or_else(|_| Vec::with_capacity(LIST));
            let full = std::mem::replace(&mut *local, empty);
            let _ = self.full.0.try_send(full);
        }
        local.push(item);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::thread;

    #[test]
    fn objects_given_on_one_thread_are_taken_on_another() {
        let spare: SpareList<Box<u32>> = SpareList::new(4 * LIST);
        let giver = RefCell::new(Vec::new());
        // One list's worth stays with the giver; the next object sends it.
        for i in 0..=LIST {
            spare.give(&giver, Box::new(i as u32));
        }
        assert_eq!(giver.borrow().len(), 1);
        let taken = thread::scope(|s| {
            s.spawn(|| {
                let taker = RefCell::new(Vec::new());
                std::iter::from_fn(|| spare.take(&taker)).count()
            })
            .join()
            .unwrap()
        });
        assert_eq!(taken, LIST);
    }

    #[test]
    fn a_thread_takes_back_its_own_first() {
        let spare: SpareList<Box<u32>> = SpareList::new(LIST);
        let local = RefCell::new(Vec::new());
        let b = Box::new(7);
        let ptr: *const u32 = &*b;
        spare.give(&local, b);
        let again = spare.take(&local).unwrap();
        assert_eq!(&*again as *const u32, ptr);
        assert!(spare.take(&local).is_none());
    }

    #[test]
    fn past_the_limit_lists_are_dropped() {
        let spare: SpareList<Box<u32>> = SpareList::new(LIST);
        let local = RefCell::new(Vec::new());
        for i in 0..4 * LIST + 1 {
            spare.give(&local, Box::new(i as u32));
        }
        let taker = RefCell::new(Vec::new());
        // This thread's last one, then the one list the queue kept.
        let n = std::iter::from_fn(|| spare.take(&local)).count();
        assert_eq!(n, 1 + LIST);
        assert!(spare.take(&taker).is_none());
    }
}

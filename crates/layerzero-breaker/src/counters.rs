//! Call statistics kept per thread, so that the CLOSED fast path writes only to a cache line
//! its own thread owns: no atomic read-modify-write, no line shared with other threads.
//!
//! Each thread that uses any breaker takes a process-wide slot index (recycled when the
//! thread exits). Every breaker has [`OWNED_SLOTS`] padded slots plus one shared overflow
//! slot; a thread with index `i < OWNED_SLOTS` is the only writer of slot `i` of every
//! breaker, and bumps it with a plain load and store. Threads beyond that (and code running
//! in thread-local destructors after ours has gone) use the overflow slot with `fetch_add`.
//! A reader sums all slots; once the writing threads are joined the sums are exact.

use crate::sync::{AtomicU64, Ordering};

/// Threads that get a slot of their own in every breaker (more share the overflow slot).
/// None under loom (see `thread_slot`), which also keeps the model's atomics few.
pub(crate) const OWNED_SLOTS: usize = if cfg!(loom) { 0 } else { 32 };
const OVERFLOW: usize = OWNED_SLOTS;

/// The counters of a breaker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Counter {
    /// Calls admitted (permits granted).
    Calls,
    /// Calls that ended in success.
    Successes,
    /// Calls that ended in failure.
    Failures,
    /// Permits dropped without a verdict.
    Released,
    /// Calls refused.
    Rejections,
}

const COUNTERS: usize = 5;

/// One thread's counters, alone on its cache lines (128 bytes: a line and the one the
/// adjacent-line prefetcher pairs with it).
#[repr(align(128))]
struct Slot([AtomicU64; COUNTERS]);

/// The counters of one breaker: `OWNED_SLOTS` owned slots and the overflow slot.
pub(crate) struct Counters {
    slots: Box<[Slot; OWNED_SLOTS + 1]>,
}

/// Totals summed over all slots.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Totals {
    pub(crate) calls: u64,
    pub(crate) successes: u64,
    pub(crate) failures: u64,
    pub(crate) released: u64,
    pub(crate) rejections: u64,
}

impl Counters {
    pub(crate) fn new() -> Self {
        Counters { slots: Box::new(std::array::from_fn(|_| Slot(std::array::from_fn(|_| AtomicU64::new(0))))) }
    }

    /// Adds one to `counter` for the calling thread.
    #[inline]
    pub(crate) fn bump(&self, counter: Counter) {
        let slot = thread_slot();
        if slot < OWNED_SLOTS {
            let cell = &self.slots[slot].0[counter as usize];
            // Relaxed load and store, not `fetch_add`: this thread is the only writer of this
            // slot (see the module docs), so no increment can be lost between the two, and a
            // plain store avoids the locked instruction that costs ~9 ns uncontended. Readers
            // need no ordering with other memory: a count is a value on its own, and joining
            // the writer gives them the final one.
            cell.store(cell.load(Ordering::Relaxed).wrapping_add(1), Ordering::Relaxed);
        } else {
            // Shared slot: several writers, so a read-modify-write; Relaxed for the same
            // reason as above.
            self.slots[OVERFLOW].0[counter as usize].fetch_add(1, Ordering::Relaxed);
        }
    }

    /// The sums over all slots (Relaxed loads: see `bump`).
    pub(crate) fn totals(&self) -> Totals {
        let sum = |counter: Counter| {
            self.slots.iter().map(|slot| slot.0[counter as usize].load(Ordering::Relaxed)).fold(0u64, u64::wrapping_add)
        };
        Totals {
            calls: sum(Counter::Calls),
            successes: sum(Counter::Successes),
            failures: sum(Counter::Failures),
            released: sum(Counter::Released),
            rejections: sum(Counter::Rejections),
        }
    }
}

/// Under loom every thread uses the overflow slot: loom cannot model the process-wide slot
/// pool (it outlives a model's executions), and the owned-slot protocol is a single-writer
/// counter, whose correctness needs no model.
#[cfg(loom)]
#[inline]
pub(crate) fn thread_slot() -> usize {
    OVERFLOW
}

#[cfg(not(loom))]
#[inline]
pub(crate) fn thread_slot() -> usize {
    pool::THREAD_SLOT.try_with(|slot| slot.0).unwrap_or(OVERFLOW)
}

#[cfg(not(loom))]
mod pool {
    use std::sync::{Mutex, PoisonError};

    use super::{OVERFLOW, OWNED_SLOTS};

    /// Slot indices not held by a live thread, and the next never-used one.
    struct Pool {
        free: Vec<usize>,
        next: usize,
    }

    static POOL: Mutex<Pool> = Mutex::new(Pool { free: Vec::new(), next: 0 });

    /// A thread's slot index; given back to the pool when the thread exits. The pool's
    /// mutex orders the last bumps of the exiting thread before the first bumps of the
    /// thread that takes the index next, so the slot keeps a single writer at a time.
    pub(super) struct ThreadSlot(pub(super) usize);

    impl ThreadSlot {
        fn claim() -> ThreadSlot {
            // The pool's data stays consistent at every step, so a poisoned lock is usable.
            let mut pool = POOL.lock().unwrap_or_else(PoisonError::into_inner);
            if let Some(index) = pool.free.pop() {
                return ThreadSlot(index);
            }
            if pool.next < OWNED_SLOTS {
                pool.next += 1;
                return ThreadSlot(pool.next - 1);
            }
            ThreadSlot(OVERFLOW)
        }
    }

    impl Drop for ThreadSlot {
        fn drop(&mut self) {
            if self.0 < OWNED_SLOTS {
                POOL.lock().unwrap_or_else(PoisonError::into_inner).free.push(self.0);
            }
        }
    }

    thread_local! {
        pub(super) static THREAD_SLOT: ThreadSlot = ThreadSlot::claim();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bumps_from_many_threads_add_up() {
        let counters = Counters::new();
        // More threads than owned slots, so the overflow slot is used too.
        std::thread::scope(|scope| {
            for _ in 0..(OWNED_SLOTS + 8) {
                scope.spawn(|| {
                    for _ in 0..1000 {
                        counters.bump(Counter::Calls);
                        counters.bump(Counter::Successes);
                    }
                    counters.bump(Counter::Rejections);
                });
            }
        });
        let totals = counters.totals();
        let threads = (OWNED_SLOTS + 8) as u64;
        assert_eq!(totals.calls, threads * 1000);
        assert_eq!(totals.successes, threads * 1000);
        assert_eq!(totals.rejections, threads);
        assert_eq!((totals.failures, totals.released), (0, 0));
    }
}

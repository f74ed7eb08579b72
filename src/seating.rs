//! How an audience is spread over a room's fan-out slots: each newcomer takes the slot with
//! the fewest members, ties going round robin, so the slots stay even as people come and go
//! (plain round robin would drift with churn). Counts only, in atomics, no lock. The
//! dashboards' fan-out ([`crate::dashboard::Fanout`]) and the buyers' pushes
//! ([`crate::buyer::pushes`]) seat their audiences with it.

use std::sync::atomic::{AtomicUsize, Ordering};

/// Members per slot. `Relaxed` throughout: the counts balance and pace, they guard nothing.
#[derive(Debug)]
pub struct Seating {
    counts: Box<[AtomicUsize]>,
    /// Where the next newcomer starts looking for the least-loaded slot.
    next: AtomicUsize,
}

impl Seating {
    /// `slots` empty slots (at least one).
    pub fn new(slots: usize) -> Self {
        Seating {
            counts: (0..slots.max(1)).map(|_| AtomicUsize::new(0)).collect(),
            next: AtomicUsize::new(0),
        }
    }

    /// Number of slots (at least one).
    pub fn len(&self) -> usize {
        self.counts.len()
    }

    /// Always false: there is at least one slot.
    pub fn is_empty(&self) -> bool {
        self.counts.is_empty()
    }

    /// Takes a seat in the slot with the fewest members and returns it; [`Seating::leave`]
    /// gives it back.
    pub fn take(&self) -> usize {
        let n = self.counts.len();
        let start = self.next.fetch_add(1, Ordering::Relaxed) % n;
        let slot = (0..n)
            .map(|k| (start + k) % n)
            .min_by_key(|&i| self.count(i))
            .unwrap_or(0);
        self.counts[slot].fetch_add(1, Ordering::Relaxed);
        slot
    }

    /// Gives back a seat of `slot`.
    pub fn leave(&self, slot: usize) {
        self.counts[slot].fetch_sub(1, Ordering::Relaxed);
    }

    /// Members of `slot` now.
    pub fn count(&self, slot: usize) -> usize {
        self.counts[slot].load(Ordering::Relaxed)
    }

    /// Members of every slot now.
    pub fn total(&self) -> usize {
        (0..self.len()).map(|i| self.count(i)).sum()
    }
}

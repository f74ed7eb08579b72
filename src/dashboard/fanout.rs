//! Staggered fan-out: a room's dashboards are split over [`FANOUT_SLOTS`] slots, each its own
//! `watch` channel, so that the aggregator can serve the audience in waves instead of waking
//! every dashboard task at once. A dashboard joins the least-loaded slot when it connects and
//! only ever reads that slot: a task wakes only when its own slot is served, so 10,000
//! dashboards do not all wake every tick just to filter.

use std::sync::Arc;

use tokio::sync::watch;

use super::snapshot::Published;
use crate::seating::Seating;

/// Fan-out slots per room. With few dashboards every tick serves every slot the same dashboard
/// snapshot; with many, one slot a tick, so a wave is about a tenth of the audience and the
/// writes of one wave take a tenth of the time a whole audience's would.
pub const FANOUT_SLOTS: usize = 10;

/// The slots of one room.
#[derive(Debug)]
pub struct Fanout {
    /// Latest value wins: a slow dashboard gets its slot's newest snapshot, never a backlog.
    slots: Box<[watch::Sender<Option<Arc<Published>>>]>,
    /// Dashboards per slot.
    seating: Seating,
}

impl Default for Fanout {
    fn default() -> Self {
        Fanout {
            slots: (0..FANOUT_SLOTS).map(|_| watch::channel(None).0).collect(),
            seating: Seating::new(FANOUT_SLOTS),
        }
    }
}

/// A dashboard's place in a slot; leaving the slot when dropped.
#[derive(Debug)]
pub struct Seat<'a> {
    fanout: &'a Fanout,
    /// The slot's index.
    pub slot: usize,
    /// The slot's snapshots; the value current at joining is marked seen.
    pub snapshots: watch::Receiver<Option<Arc<Published>>>,
}

impl Drop for Seat<'_> {
    fn drop(&mut self) {
        self.fanout.seating.leave(self.slot);
    }
}

impl Fanout {
    /// Number of slots.
    pub fn len(&self) -> usize {
        self.slots.len()
    }

    /// Always false: a fan-out has [`FANOUT_SLOTS`] slots.
    pub fn is_empty(&self) -> bool {
        self.slots.is_empty()
    }

    /// Seats a dashboard in the slot with the fewest dashboards, so that slots stay even as
    /// dashboards come and go (plain round robin would drift with churn); ties go round robin.
    pub fn join(&self) -> Seat<'_> {
        let slot = self.seating.take();
        Seat {
            fanout: self,
            slot,
            snapshots: self.slots[slot].subscribe(),
        }
    }

    /// Dashboards seated in `slot` now.
    pub fn dashboards(&self, slot: usize) -> usize {
        self.seating.count(slot)
    }

    /// A receiver of `slot`'s snapshots without taking a seat (tests and tools).
    pub fn subscribe(&self, slot: usize) -> watch::Receiver<Option<Arc<Published>>> {
        self.slots[slot].subscribe()
    }

    /// Hands `published` to the dashboards of `slot`: wakes only that slot's tasks.
    pub fn serve(&self, slot: usize, published: Arc<Published>) {
        self.slots[slot].send_replace(Some(published));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn joins_fill_the_slots_evenly_and_refill_the_emptied_one() {
        let f = Fanout::default();
        let mut seats: Vec<Seat> = (0..3 * FANOUT_SLOTS).map(|_| f.join()).collect();
        for i in 0..FANOUT_SLOTS {
            assert_eq!(f.dashboards(i), 3, "slot {i}");
        }
        // Three dashboards of slot 4 leave: the next three joins go there.
        seats.retain(|s| s.slot != 4);
        assert_eq!(f.dashboards(4), 0);
        let again: Vec<Seat> = (0..3).map(|_| f.join()).collect();
        assert!(again.iter().all(|s| s.slot == 4));
        assert_eq!(f.dashboards(4), 3);
        drop(seats);
        drop(again);
        assert!((0..FANOUT_SLOTS).all(|i| f.dashboards(i) == 0));
    }
}

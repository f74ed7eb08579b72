//! When unpaid orders expire: a min-heap of `(pay_by_ms, room, order)` over every room of the
//! hub, O(log n) an order. The journal's apply pushes each unpaid order as it becomes durable
//! (or is replayed or restored); the expiry task ([`crate::hub::expiry`]) sleeps until the
//! earliest deadline and takes every one that is due. An order paid or cancelled meanwhile
//! stays in the heap and is passed over when its time comes (its status is no longer
//! `unpaid`), which is cheaper than finding it in the heap.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::sync::{Arc, Mutex};

use tokio::sync::Notify;

/// One order's deadline.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Deadline {
    /// When it expires unless paid (Unix ms).
    pub at_ms: i64,
    /// The order's number.
    pub order: u64,
    /// Its room.
    pub room: Arc<str>,
}

/// The hub's deadlines.
#[derive(Debug, Default)]
pub struct Deadlines {
    heap: Mutex<BinaryHeap<Reverse<Deadline>>>,
    /// Woken when a deadline earlier than every other one arrives.
    earlier: Notify,
}

impl Deadlines {
    /// Adds a deadline.
    pub fn push(&self, d: Deadline) {
        let mut heap = self.heap.lock().expect("deadlines lock");
        let first = heap.peek().is_none_or(|Reverse(top)| d.at_ms < top.at_ms);
        heap.push(Reverse(d));
        drop(heap);
        if first {
            self.earlier.notify_one();
        }
    }

    /// The earliest deadline, if any.
    pub fn next_at(&self) -> Option<i64> {
        let heap = self.heap.lock().expect("deadlines lock");
        heap.peek().map(|Reverse(d)| d.at_ms)
    }

    /// Takes every deadline due by `now_ms`, earliest first.
    pub fn take_due(&self, now_ms: i64) -> Vec<Deadline> {
        let mut heap = self.heap.lock().expect("deadlines lock");
        let mut due = Vec::new();
        while heap.peek().is_some_and(|Reverse(d)| d.at_ms <= now_ms) {
            due.push(heap.pop().expect("peeked").0);
        }
        due
    }

    /// Deadlines held (paid and cancelled orders included until their time comes).
    pub fn len(&self) -> usize {
        self.heap.lock().expect("deadlines lock").len()
    }

    /// Whether none is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Completes when a deadline earlier than all others arrives (or at once, if one came
    /// since the last wait).
    pub async fn earlier(&self) {
        self.earlier.notified().await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn due_deadlines_come_out_earliest_first_and_only_when_due() {
        let d = Deadlines::default();
        for (at, n) in [(30, 3), (10, 1), (20, 2), (10, 4)] {
            d.push(Deadline {
                at_ms: at,
                order: n,
                room: "r".into(),
            });
        }
        assert_eq!(d.next_at(), Some(10));
        assert!(d.take_due(9).is_empty());
        let due: Vec<u64> = d.take_due(20).iter().map(|x| x.order).collect();
        assert_eq!(due, vec![1, 4, 2]);
        assert_eq!(d.len(), 1);
        assert_eq!(d.next_at(), Some(30));
    }
}

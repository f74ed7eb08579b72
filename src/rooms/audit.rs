//! The audit's running totals: units per SKU summed from the room's order events (placements
//! less the units that status moves gave back; or, in fleet mode, from the room's stream of
//! every hub's orders), kept between audits so that an audit folds only the events since the
//! last one.
//!
//! One fold runs at a time per room (an async lock: waiting audits hold no thread), and a
//! fold of many orders (the first audit after a start) runs on the background pool
//! ([`crate::background`]), off the runtime's workers and below them in priority. So `/audit`, however often it is called, costs the buy path at most one
//! pass over each order.

use std::collections::HashMap;
use std::sync::Arc;

use tokio::sync::Mutex;

use crate::journal::OrderRecord;
use crate::rooms::events::{Event, EventLog, Moved, What};
use crate::rooms::orders::{OrderLog, StreamEvent};

/// Orders a fold handles on the runtime's worker; more go to the background pool.
const INLINE_FOLD: usize = 4096;

/// See the module doc.
#[derive(Debug, Default)]
pub struct AuditTotals {
    fold: Arc<Mutex<Fold>>,
}

/// A SKU's units as the audit counts them.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Units {
    /// Units of orders that keep them: unpaid, paid, refunded without restock.
    pub sold: u64,
    /// Units of unpaid orders.
    pub unpaid: u64,
}

#[derive(Debug, Default, Clone)]
struct Fold {
    /// Events of the room folded so far.
    events: usize,
    /// Entries of the fleet stream folded so far.
    stream: usize,
    /// Units per SKU over what was folded.
    units: HashMap<Arc<str>, Units>,
}

/// Counts an order placed: its units are sold, and unpaid while it waits for payment.
fn placed(units: &mut HashMap<Arc<str>, Units>, o: &OrderRecord) {
    let u = units.entry(o.sku.clone()).or_default();
    u.sold += o.qty;
    if o.pay_by_ms.is_some() {
        u.unpaid += o.qty;
    }
}

/// Counts a status move: units given back are no longer sold, and an order that leaves
/// `unpaid` no longer holds unpaid units.
fn moved(units: &mut HashMap<Arc<str>, Units>, m: &Moved) {
    let o = &m.order;
    let u = units.entry(o.sku.clone()).or_default();
    if m.released() {
        u.sold = u.sold.saturating_sub(o.qty);
    }
    if matches!(
        m.what,
        What::Paid(_) | What::Expired | What::Cancelled { .. }
    ) {
        u.unpaid = u.unpaid.saturating_sub(o.qty);
    }
}

impl Fold {
    fn catch_up(&mut self, log: &OrderLog, events: &EventLog, fleet: bool) {
        let units = &mut self.units;
        if fleet {
            self.stream = log.for_each_stream_from(self.stream, |e| match e {
                StreamEvent::Placed(s) => placed(units, &s.order),
                StreamEvent::Moved(m) => moved(units, m),
            });
        } else {
            self.events = events.for_each_from(self.events, |e| match e {
                Event::Placed(o) => placed(units, o),
                Event::Moved(m) => moved(units, m),
            });
        }
    }

    fn behind(&self, log: &OrderLog, events: &EventLog, fleet: bool) -> usize {
        if fleet {
            log.stream_count().saturating_sub(self.stream)
        } else {
            events.count().saturating_sub(self.events)
        }
    }
}

impl AuditTotals {
    /// Units per SKU summed from every order event of `room` there is now (`fleet`: from
    /// the room's stream). `logs` reaches the room's order log and event log.
    pub async fn units<R>(
        &self,
        room: Arc<R>,
        logs: fn(&R) -> (&OrderLog, &EventLog),
        fleet: bool,
    ) -> HashMap<Arc<str>, Units>
    where
        R: Send + Sync + 'static,
    {
        let mut fold = self.fold.clone().lock_owned().await;
        let (log, events) = logs(&room);
        if fold.behind(log, events, fleet) <= INLINE_FOLD {
            fold.catch_up(log, events, fleet);
            return fold.units.clone();
        }
        crate::background::run(move || {
            let (log, events) = logs(&room);
            fold.catch_up(log, events, fleet);
            fold.units.clone()
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rooms::room::Room;

    fn next(room: &Room, sku: &str, qty: u64) -> Arc<crate::journal::OrderRecord> {
        let mut o = crate::rooms::requests::tests::order(
            &Arc::from("u"),
            &Arc::from(format!("q{}", room.orders.count())),
        );
        let m = Arc::get_mut(&mut o).expect("new");
        m.seq = room.orders.count() as u64 + 1;
        m.sku = Arc::from(sku);
        m.qty = qty;
        o
    }

    #[tokio::test]
    async fn each_audit_folds_only_the_orders_since_the_last_and_sums_them_all() {
        let room = Arc::new(Room::new("r".into(), String::new()));
        let sold = |room: &Arc<Room>| {
            let room = room.clone();
            async move {
                room.audit
                    .units(room.clone(), |r: &Room| (&r.orders, &r.events), false)
                    .await
                    .into_iter()
                    .map(|(k, u)| (k, u.sold))
                    .collect::<HashMap<_, _>>()
            }
        };
        assert!(sold(&room).await.is_empty());
        // More than a worker folds inline: this fold runs on the background pool.
        for i in 0..(INLINE_FOLD + 10) {
            room.add_replayed_order(next(&room, if i % 2 == 0 { "A" } else { "B" }, 1));
        }
        let s = sold(&room).await;
        assert_eq!(s["A"] + s["B"], (INLINE_FOLD + 10) as u64);
        room.add_replayed_order(next(&room, "A", 5));
        let s2 = sold(&room).await;
        assert_eq!(s2["A"], s["A"] + 5);
        assert_eq!(s2["B"], s["B"]);
        assert_eq!(room.audit.fold.lock().await.events, room.events.count());
    }
}

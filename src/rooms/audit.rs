//! The audit's running totals: units per SKU summed from the room's durable orders (or, in
//! fleet mode, from the room's stream of every hub's orders), kept between audits so that an
//! audit folds only the orders made since the last one.
//!
//! One fold runs at a time per room (an async lock: waiting audits hold no thread), and a
//! fold of many orders (the first audit after a start) runs on a blocking thread, off the
//! runtime's workers. So `/audit`, however often it is called, costs the buy path at most one
//! pass over each order.

use std::collections::HashMap;
use std::sync::Arc;

use tokio::sync::Mutex;

use crate::rooms::orders::OrderLog;

/// Orders a fold handles on the runtime's worker; more go to a blocking thread.
const INLINE_FOLD: usize = 4096;

/// See the module doc.
#[derive(Debug, Default)]
pub struct AuditTotals {
    fold: Arc<Mutex<Fold>>,
}

#[derive(Debug, Default, Clone)]
struct Fold {
    /// Orders of the log folded so far.
    orders: usize,
    /// Orders of the fleet stream folded so far.
    stream: usize,
    /// Units per SKU over what was folded.
    sold: HashMap<Arc<str>, u64>,
}

impl Fold {
    fn catch_up(&mut self, log: &OrderLog, fleet: bool) {
        let sold = &mut self.sold;
        if fleet {
            self.stream = log.for_each_stream_from(self.stream, |o| {
                *sold.entry(o.order.sku.clone()).or_default() += o.order.qty;
            });
        } else {
            self.orders = log.for_each_from(self.orders, |o| {
                *sold.entry(o.sku.clone()).or_default() += o.qty;
            });
        }
    }

    fn behind(&self, log: &OrderLog, fleet: bool) -> usize {
        if fleet {
            log.stream_count().saturating_sub(self.stream)
        } else {
            log.count().saturating_sub(self.orders)
        }
    }
}

impl AuditTotals {
    /// Units per SKU summed from every durable order of `room` there is now (`fleet`: from
    /// the room's stream). `log` is the room's order log, reached through `room`.
    pub async fn sold<R>(
        &self,
        room: Arc<R>,
        log: fn(&R) -> &OrderLog,
        fleet: bool,
    ) -> HashMap<Arc<str>, u64>
    where
        R: Send + Sync + 'static,
    {
        let mut fold = self.fold.clone().lock_owned().await;
        if fold.behind(log(&room), fleet) <= INLINE_FOLD {
            fold.catch_up(log(&room), fleet);
            return fold.sold.clone();
        }
        tokio::task::spawn_blocking(move || {
            fold.catch_up(log(&room), fleet);
            fold.sold.clone()
        })
        .await
        .expect("the audit's fold does not panic")
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
                    .sold(room.clone(), |r: &Room| &r.orders, false)
                    .await
            }
        };
        assert!(sold(&room).await.is_empty());
        // More than a worker folds inline: this fold runs on a blocking thread.
        for i in 0..(INLINE_FOLD + 10) {
            room.add_replayed_order(next(&room, if i % 2 == 0 { "A" } else { "B" }, 1));
        }
        let s = sold(&room).await;
        assert_eq!(s["A"] + s["B"], (INLINE_FOLD + 10) as u64);
        room.add_replayed_order(next(&room, "A", 5));
        let s2 = sold(&room).await;
        assert_eq!(s2["A"], s["A"] + 5);
        assert_eq!(s2["B"], s["B"]);
        assert_eq!(room.audit.fold.lock().await.orders, room.orders.count());
    }
}

//! Fleet mode: the whole room as the room's stream holds it, for the whole-room export and
//! change feed (docs/protocol.md, "Fleet mode"). Every hub reads the same stream in the same
//! order, and this part is built from it alone (this hub's own orders included, by the same
//! code), so every hub that has read the stream as far answers the same lines.
//!
//! - The orders: every hub's published orders, in the stream's order, which is the room-wide
//!   `seq` that the publish script gives them (1, 2, 3, … with no gaps). Paging by `seq` is a
//!   binary search, as for the durable orders ([`crate::rooms::orders`]).
//! - Their statuses: one [`Statuses`] per hub, since order numbers are per hub, moved by the
//!   stream's moves through the same status chart as a hub's own orders.
//!
//! The orders are an append-only [`boxcar::Vec`]: one writer (the stream reader), readers
//! without a lock.

use std::sync::Arc;

use dashmap::DashMap;

use crate::journal::record::Move;
use crate::journal::OrderRecord;
use crate::rooms::events::{Moved, What};
use crate::rooms::orders::StreamEvent;
use crate::rooms::statuses::Statuses;

/// See the module doc.
#[derive(Debug, Default)]
pub struct WholeRoom {
    /// Every hub's published orders, by room-wide seq.
    orders: boxcar::Vec<Arc<OrderRecord>>,
    /// Where each order stands, by its hub.
    statuses: DashMap<Arc<str>, Statuses, foldhash::fast::RandomState>,
}

/// The journal's form of a move, as [`Statuses`] takes it (`None`: expired).
fn journal_move(what: &What) -> Option<Move> {
    match what {
        What::Paid(p) => Some(Move::Paid(p.clone())),
        What::Expired => None,
        What::Cancelled { by_admin } => Some(Move::Cancelled {
            by_admin: *by_admin,
        }),
        What::Refunded { restock, .. } => Some(Move::Refunded { restock: *restock }),
        What::Late { payment, .. } => Some(Move::LatePayment(payment.clone())),
    }
}

/// The hub of a fleet order (`""` for none: an embedded order never reaches a stream).
fn hub_of(o: &OrderRecord) -> Arc<str> {
    o.hub.clone().unwrap_or_else(|| Arc::from(""))
}

impl WholeRoom {
    /// Takes the next entry of the room's stream in (the stream reader only, in stream order).
    pub fn take(&self, e: &StreamEvent) {
        match e {
            StreamEvent::Placed(s) => {
                self.statuses
                    .entry(hub_of(&s.order))
                    .or_default()
                    .placed(&s.order);
                self.orders.push(s.order.clone());
            }
            StreamEvent::Moved(m) => self.moved(m),
        }
    }

    fn moved(&self, m: &Moved) {
        let statuses = self.statuses.entry(hub_of(&m.order)).or_default();
        // The placement's own record when it has an entry (every order placed unpaid has).
        let order = statuses
            .order(m.order.number)
            .unwrap_or_else(|| m.order.clone());
        if let Err(err) = statuses.apply(&order, journal_move(&m.what).as_ref(), m.ts_ms) {
            tracing::error!(room = %order.room, error = %err, "a status move in the stream does not fit the order");
        }
    }

    /// Orders taken in so far: the highest room-wide seq held, once caught up.
    pub fn count(&self) -> usize {
        self.orders.count()
    }

    /// Export lines (NDJSON, each with its newline) of the orders with `seq > after_seq`,
    /// oldest first, at most `limit`, each with its status now.
    pub fn export_after(&self, after_seq: u64, limit: usize) -> Vec<String> {
        let count = self.orders.count();
        let at = |i: usize| self.orders.get(i).expect("an order below the count");
        // The first index whose seq is above `after_seq` (seqs grow with the index).
        let (mut lo, mut hi) = (0, count);
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            if at(mid).seq <= after_seq {
                lo = mid + 1;
            } else {
                hi = mid;
            }
        }
        let to = lo.saturating_add(limit).min(count);
        (lo..to)
            .map(|i| {
                let o = at(i);
                match self.statuses.get(o.hub.as_deref().unwrap_or("")) {
                    Some(st) => o.to_ndjson(&st.standing(o).export()),
                    None => o.to_ndjson(&crate::rooms::statuses::Standing::placed(o).export()),
                }
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::journal::record::Payment;
    use crate::rooms::orders::StreamOrder;

    fn placed(hub: &str, number: u64, seq: u64, unpaid: bool) -> (StreamEvent, Arc<OrderRecord>) {
        let mut o = crate::rooms::requests::tests::order(&Arc::from("u"), &Arc::from("q"));
        let m = Arc::get_mut(&mut o).expect("new");
        m.number = number;
        m.seq = seq;
        m.hub = Some(Arc::from(hub));
        m.pay_by_ms = unpaid.then_some(1_000);
        (
            StreamEvent::Placed(StreamOrder {
                order: o.clone(),
                hub_seq: number,
            }),
            o,
        )
    }

    fn moved(order: &Arc<OrderRecord>, what: What) -> StreamEvent {
        StreamEvent::Moved(Arc::new(Moved {
            order: order.clone(),
            ts_ms: 7,
            what,
        }))
    }

    fn status(line: &str) -> (u64, String, String) {
        let v: serde_json::Value = serde_json::from_str(line).unwrap();
        (
            v["seq"].as_u64().unwrap(),
            v["order"].as_str().unwrap().to_owned(),
            v["status"].as_str().unwrap().to_owned(),
        )
    }

    /// Two hubs' orders with the same number are told apart by their hub, each with its own
    /// status; pages follow the room-wide seq.
    #[test]
    fn every_hubs_orders_by_room_seq_with_their_own_statuses() {
        let w = WholeRoom::default();
        let (a, oa) = placed("h1", 5, 1, true);
        let (b, ob) = placed("h2", 5, 2, true);
        let (c, _) = placed("h1", 6, 3, false);
        for e in [a, b, c] {
            w.take(&e);
        }
        w.take(&moved(
            &ob,
            What::Paid(Payment {
                payment_id: "p".into(),
                amount_fen: 100,
                paid_at_ms: 6,
            }),
        ));
        w.take(&moved(&oa, What::Cancelled { by_admin: true }));
        // A move that does not fit (cancelled → paid) changes nothing.
        w.take(&moved(
            &oa,
            What::Paid(Payment {
                payment_id: "p2".into(),
                amount_fen: 100,
                paid_at_ms: 6,
            }),
        ));
        let lines: Vec<_> = w.export_after(0, 10).iter().map(|l| status(l)).collect();
        assert_eq!(
            lines,
            [
                (1, "h1:O5".to_owned(), "cancelled".to_owned()),
                (2, "h2:O5".to_owned(), "paid".to_owned()),
                (3, "h1:O6".to_owned(), "paid".to_owned()),
            ]
        );
        let page: Vec<_> = w.export_after(1, 1).iter().map(|l| status(l).0).collect();
        assert_eq!(page, [2]);
        assert!(w.export_after(3, 10).is_empty());
        assert_eq!(w.count(), 3);
    }
}

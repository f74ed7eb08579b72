//! Where each of a room's orders stands: `unpaid` → `paid` | `expired` | `cancelled`, and
//! `paid` → `refunded` (docs/protocol.md, "Orders that must be paid").
//!
//! Only orders with a status story have an entry: every order placed unpaid, and an order paid
//! on placement once something happens to it (a refund, a late payment). Any other order is
//! `paid` since it was placed.
//!
//! A move is decided and made durable in two steps, so that two moves of one order never race
//! (a payment against the expiry, a cancel against a payment): [`Statuses::begin`] decides
//! under the entry's lock and marks the order as moving; the journal's apply
//! (`Statuses::apply`) makes the move once it is durable and clears the mark, or
//! [`Statuses::abort`] clears it when the journal refused it. A second move of a moving order
//! waits for the first to settle, then is decided afresh.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use dashmap::DashMap;
use tokio::sync::Notify;

use crate::journal::record::{ExportStatus, Move, Payment};
use crate::journal::OrderRecord;
use crate::protocol::OrderStatus;
use crate::rooms::events::{Moved, What};

/// An order's status and what it went through.
#[derive(Debug, Clone)]
pub struct Standing {
    /// The order.
    pub order: Arc<OrderRecord>,
    /// Its status now.
    pub status: OrderStatus,
    /// The payment that paid it, when a notice did.
    pub payment: Option<Payment>,
    /// When it became paid, by the hub's clock.
    pub paid_ts_ms: Option<i64>,
    /// When it expired, was cancelled or was refunded.
    pub ended_at_ms: Option<i64>,
    /// Payments that came when it could no longer take them, to be refunded.
    pub late: Vec<Payment>,
    /// A move is on its way to the journal.
    moving: bool,
    /// Someone waits for that move to settle.
    waited: bool,
}

impl Standing {
    /// An order as it was placed.
    pub fn placed(order: &Arc<OrderRecord>) -> Standing {
        let unpaid = order.pay_by_ms.is_some();
        Standing {
            order: order.clone(),
            status: if unpaid {
                OrderStatus::Unpaid
            } else {
                OrderStatus::Paid
            },
            payment: None,
            paid_ts_ms: (!unpaid).then_some(order.ts_ms),
            ended_at_ms: None,
            late: Vec::new(),
            moving: false,
            waited: false,
        }
    }

    /// The status fields of the order's export line.
    pub fn export(&self) -> ExportStatus<'_> {
        ExportStatus {
            status: self.status.as_str(),
            pay_by_ms: self.order.pay_by_ms,
            paid_at_ms: self.paid_at_ms(),
            payment_id: self.payment.as_ref().map(|p| &*p.payment_id),
            ended_at_ms: self.ended_at_ms,
            late_payments: &self.late,
        }
    }

    /// When the order was paid, as the export shows it: the notice's time, or the placement's
    /// for an order paid on placement.
    pub fn paid_at_ms(&self) -> Option<i64> {
        match (&self.payment, self.paid_ts_ms) {
            (Some(p), _) => Some(p.paid_at_ms),
            (None, t) => t,
        }
    }
}

/// What [`Statuses::begin`]'s decision comes to.
#[derive(Debug)]
pub enum Step<R> {
    /// Journal this move; the order is marked as moving until it settles.
    Move(Move),
    /// Nothing to journal: answer `R`.
    Done(R),
}

/// What [`Statuses::begin_expiry`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expiry {
    /// Marked as expiring: journal the expiry.
    Begun,
    /// Not unpaid any more (or no such order): nothing to do.
    Settled,
    /// Unpaid, but not due yet.
    NotDue,
    /// Unpaid and due, but another move is on its way: look again later.
    Moving,
}

/// A room's order statuses.
#[derive(Debug, Default)]
pub struct Statuses {
    /// foldhash: order numbers are chosen by the hub, not by users.
    by_number: DashMap<u64, Standing, foldhash::fast::RandomState>,
    /// Every payment id the room has kept, paid or late, and the order it is for; also the
    /// ids of payments on their way to the journal ([`Statuses::claim_payment`]).
    payments: DashMap<Arc<str>, u64, foldhash::fast::RandomState>,
    /// Woken when a move someone waits for settles.
    settled: Notify,
    /// Payments kept as late payments.
    late_payments: AtomicU64,
}

impl Statuses {
    /// Where `order` stands now.
    pub fn standing(&self, order: &Arc<OrderRecord>) -> Standing {
        match self.by_number.get(&order.number) {
            Some(s) => s.clone(),
            None => Standing::placed(order),
        }
    }

    /// The order numbered `number`, when it has an entry (every order placed unpaid has).
    pub fn order(&self, number: u64) -> Option<Arc<OrderRecord>> {
        self.by_number.get(&number).map(|s| s.order.clone())
    }

    /// `order`'s status now.
    pub fn status(&self, order: &OrderRecord) -> OrderStatus {
        match self.by_number.get(&order.number) {
            Some(s) => s.status,
            None if order.pay_by_ms.is_some() => OrderStatus::Unpaid,
            None => OrderStatus::Paid,
        }
    }

    /// The order's line of the export (NDJSON, with its newline), as it stands now.
    pub fn export_line(&self, order: &Arc<OrderRecord>) -> String {
        match self.by_number.get(&order.number) {
            Some(s) => order.to_ndjson(&s.export()),
            None => order.to_ndjson(&Standing::placed(order).export()),
        }
    }

    /// The order a payment id was kept for.
    pub fn payment(&self, payment_id: &str) -> Option<u64> {
        self.payments.get(payment_id).map(|n| *n)
    }

    /// Claims `payment_id` for the order numbered `number` before its payment is journaled
    /// (from [`Statuses::begin`]'s decision, under the order's lock), so that two notices
    /// with one id for two orders never both take it; `Err` names the order that holds it.
    /// A claim stays when the payment is applied, and is given back by
    /// [`Statuses::release_payment`] when the journal refuses it.
    pub fn claim_payment(&self, payment_id: &Arc<str>, number: u64) -> Result<(), u64> {
        match self.payments.entry(payment_id.clone()) {
            dashmap::Entry::Occupied(e) if *e.get() != number => Err(*e.get()),
            dashmap::Entry::Occupied(_) => Ok(()),
            dashmap::Entry::Vacant(v) => {
                v.insert(number);
                Ok(())
            }
        }
    }

    /// Gives back the claim of `payment_id` for `number`: its payment was not made durable.
    /// (A payment id kept for an order is never journaled for it again, so the claim is the
    /// refused payment's own.)
    pub fn release_payment(&self, payment_id: &str, number: u64) {
        self.payments.remove_if(payment_id, |_, n| *n == number);
    }

    /// Late payments kept so far.
    pub fn late_payments(&self) -> u64 {
        self.late_payments.load(Ordering::Relaxed)
    }

    /// Orders waiting for payment now, with when each must be paid by.
    pub fn unpaid(&self) -> Vec<(u64, i64)> {
        self.by_number
            .iter()
            .filter(|s| s.status == OrderStatus::Unpaid)
            .filter_map(|s| s.order.pay_by_ms.map(|t| (*s.key(), t)))
            .collect()
    }

    /// A placement became durable: an unpaid order gets its entry.
    pub(super) fn placed(&self, order: &Arc<OrderRecord>) {
        if order.pay_by_ms.is_some() {
            self.by_number.insert(order.number, Standing::placed(order));
        }
    }

    /// Decides a move of `order` with `decide`, under the entry's lock: when it comes to a
    /// move, the order is marked as moving, and the caller must journal the move and then
    /// have it applied or aborted. While another move of the order is on its way, waits for it
    /// to settle and decides afresh.
    pub async fn begin<R>(
        &self,
        order: &Arc<OrderRecord>,
        mut decide: impl FnMut(&Standing) -> Step<R>,
    ) -> Step<R> {
        loop {
            let settled = self.settled.notified();
            tokio::pin!(settled);
            settled.as_mut().enable();
            {
                let mut s = self
                    .by_number
                    .entry(order.number)
                    .or_insert_with(|| Standing::placed(order));
                if !s.moving {
                    let step = decide(&s);
                    if matches!(step, Step::Move(_)) {
                        s.moving = true;
                    }
                    return step;
                }
                s.waited = true;
            }
            settled.await;
        }
    }

    /// Marks `number` as expiring if it is unpaid, not moving, and due by `now_ms`. The
    /// expiry timer's own [`Statuses::begin`], which never waits: an order that is moving
    /// (a payment or a cancel on its way) is [`Expiry::Moving`], for the timer to look at
    /// again, since that move may yet be refused.
    pub fn begin_expiry(&self, number: u64, now_ms: i64) -> Expiry {
        let Some(mut s) = self.by_number.get_mut(&number) else {
            return Expiry::Settled;
        };
        if s.status != OrderStatus::Unpaid {
            return Expiry::Settled;
        }
        if s.order.pay_by_ms.is_none_or(|t| t > now_ms) {
            return Expiry::NotDue;
        }
        if s.moving {
            return Expiry::Moving;
        }
        s.moving = true;
        Expiry::Begun
    }

    /// The journal refused the move of `number`: it is no longer moving, and whoever waits
    /// decides afresh.
    pub fn abort(&self, number: u64) {
        let waited = match self.by_number.get_mut(&number) {
            Some(mut s) => {
                s.moving = false;
                std::mem::take(&mut s.waited)
            }
            None => false,
        };
        if waited {
            self.settled.notify_waiters();
        }
    }

    /// Makes a durable move of `order` (journal apply, replay or a snapshot's restore).
    /// `Err` when the move does not fit the order's status: a journal that says so is not
    /// one this state wrote.
    pub(super) fn apply(
        &self,
        order: &Arc<OrderRecord>,
        to: Option<&Move>,
        ts_ms: i64,
    ) -> Result<Moved, String> {
        let mut s = self
            .by_number
            .entry(order.number)
            .or_insert_with(|| Standing::placed(order));
        let from = s.status;
        let bad = |to: &str| {
            Err(format!(
                "order {} cannot go from {} to {to}",
                order.order_id(),
                from.as_str()
            ))
        };
        let what = match (from, to) {
            (OrderStatus::Unpaid, None) => {
                s.status = OrderStatus::Expired;
                s.ended_at_ms = Some(ts_ms);
                What::Expired
            }
            (OrderStatus::Unpaid, Some(Move::Paid(p))) => {
                s.status = OrderStatus::Paid;
                s.payment = Some(p.clone());
                s.paid_ts_ms = Some(ts_ms);
                self.payments.insert(p.payment_id.clone(), order.number);
                What::Paid(p.clone())
            }
            (OrderStatus::Unpaid, Some(Move::Cancelled { by_admin })) => {
                s.status = OrderStatus::Cancelled;
                s.ended_at_ms = Some(ts_ms);
                What::Cancelled {
                    by_admin: *by_admin,
                }
            }
            (OrderStatus::Paid, Some(Move::Refunded { restock })) => {
                s.status = OrderStatus::Refunded;
                s.ended_at_ms = Some(ts_ms);
                What::Refunded {
                    restock: *restock,
                    paid_ts_ms: s.paid_ts_ms.unwrap_or(order.ts_ms),
                }
            }
            (status, Some(Move::LatePayment(p))) if status != OrderStatus::Unpaid => {
                s.late.push(p.clone());
                self.payments.insert(p.payment_id.clone(), order.number);
                self.late_payments.fetch_add(1, Ordering::Relaxed);
                What::Late {
                    payment: p.clone(),
                    status,
                }
            }
            (_, None) => return bad("expired"),
            (_, Some(Move::Paid(_))) => return bad("paid"),
            (_, Some(Move::Cancelled { .. })) => return bad("cancelled"),
            (_, Some(Move::Refunded { .. })) => return bad("refunded"),
            (_, Some(Move::LatePayment(_))) => return bad("a late payment"),
        };
        s.moving = false;
        let waited = std::mem::take(&mut s.waited);
        drop(s);
        if waited {
            self.settled.notify_waiters();
        }
        Ok(Moved {
            order: order.clone(),
            ts_ms,
            what,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn order(number: u64, unpaid: bool) -> Arc<OrderRecord> {
        let mut o = crate::rooms::requests::tests::order(&Arc::from("u"), &Arc::from("q"));
        let m = Arc::get_mut(&mut o).expect("new");
        m.number = number;
        m.pay_by_ms = unpaid.then_some(1_000);
        o
    }

    fn pay(id: &str) -> Move {
        Move::Paid(Payment {
            payment_id: id.into(),
            amount_fen: 100,
            paid_at_ms: 5,
        })
    }

    #[test]
    fn moves_follow_the_status_chart_and_nothing_else() {
        let st = Statuses::default();
        let o = order(1, true);
        st.placed(&o);
        assert_eq!(st.status(&o), OrderStatus::Unpaid);
        assert!(st
            .apply(&o, Some(&Move::Refunded { restock: true }), 2)
            .is_err());
        let m = st.apply(&o, Some(&pay("p1")), 3).unwrap();
        assert_eq!(m.status(), OrderStatus::Paid);
        assert_eq!(st.payment("p1"), Some(1));
        assert!(st.apply(&o, None, 4).is_err(), "a paid order never expires");
        assert!(st
            .apply(&o, Some(&Move::Cancelled { by_admin: true }), 4)
            .is_err());
        let m = st
            .apply(
                &o,
                Some(&Move::LatePayment(Payment {
                    payment_id: "p2".into(),
                    amount_fen: 100,
                    paid_at_ms: 6,
                })),
                5,
            )
            .unwrap();
        assert_eq!(m.status(), OrderStatus::Paid);
        assert_eq!(st.late_payments(), 1);
        let m = st
            .apply(&o, Some(&Move::Refunded { restock: false }), 6)
            .unwrap();
        assert!(!m.released());
        assert_eq!(st.standing(&o).ended_at_ms, Some(6));
        // Paid on placement: refundable at once, and it keeps its placement as paid time.
        let v1 = order(2, false);
        st.placed(&v1);
        assert_eq!(st.status(&v1), OrderStatus::Paid);
        let m = st
            .apply(&v1, Some(&Move::Refunded { restock: true }), 9)
            .unwrap();
        assert!(m.released());
        assert_eq!(
            m.what,
            What::Refunded {
                restock: true,
                paid_ts_ms: v1.ts_ms
            }
        );
    }

    #[test]
    fn an_expiry_is_begun_only_for_a_due_unpaid_order_not_moving() {
        let st = Statuses::default();
        let o = order(7, true);
        st.placed(&o);
        assert_eq!(st.begin_expiry(7, 999), Expiry::NotDue);
        assert_eq!(st.begin_expiry(7, 1_000), Expiry::Begun);
        assert_eq!(st.begin_expiry(7, 1_000), Expiry::Moving, "already moving");
        st.abort(7);
        assert_eq!(
            st.begin_expiry(7, 1_000),
            Expiry::Begun,
            "free again after the abort"
        );
        st.apply(&o, None, 1_001).unwrap();
        assert_eq!(
            st.begin_expiry(7, 2_000),
            Expiry::Settled,
            "expired already"
        );
        assert_eq!(st.begin_expiry(8, 2_000), Expiry::Settled, "no such order");
    }

    /// A second move of a moving order waits for the first to settle, then sees its result.
    #[tokio::test]
    async fn a_second_move_waits_for_the_first_and_decides_afresh() {
        let st = Arc::new(Statuses::default());
        let o = order(3, true);
        st.placed(&o);
        let first = st
            .begin(&o, |s| match s.status {
                OrderStatus::Unpaid => Step::<()>::Move(pay("p1")),
                _ => Step::Done(()),
            })
            .await;
        assert!(matches!(first, Step::Move(_)));
        let (st2, o2) = (st.clone(), o.clone());
        let second = tokio::spawn(async move {
            st2.begin(&o2, |s| Step::<OrderStatus>::Done(s.status))
                .await
        });
        tokio::task::yield_now().await;
        assert!(!second.is_finished(), "decided while the first was moving");
        st.apply(&o, Some(&pay("p1")), 4).unwrap();
        match second.await.unwrap() {
            Step::Done(status) => assert_eq!(status, OrderStatus::Paid),
            Step::Move(_) => panic!("no move was asked for"),
        }
    }
}

//! What happens to an order after the buy (docs/protocol.md, "Orders that must be paid"):
//! payment notices, cancels and refunds. Each is decided against the order's status
//! ([`crate::rooms::statuses`]), journaled, and takes effect only once durable, in the
//! journal's apply, which also gives units back through the gate. Expiry is in
//! [`super::expiry`].
//!
//! A move runs in a task of its own: if the caller goes away (an HTTP client hangs up), the
//! move still settles, so an order is never left marked as moving.

use std::sync::Arc;

use super::Hub;
use crate::clock::now_ms;
use crate::journal::record::{Move, Payment};
use crate::journal::{OrderRecord, Record};
use crate::protocol::{Ack, OrderStatus, RejectCode};
use crate::rooms::room::Room;
use crate::rooms::statuses::Step;

/// Why a move was refused, or what a payment came to when it could not pay the order.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MoveError {
    /// No such order in the room (or not the buyer's own, for a buyer's cancel).
    #[error("no such order")]
    UnknownOrder,
    /// A cancel of an order that is not `unpaid`.
    #[error("the order is {0}, not unpaid")]
    NotCancellable(&'static str),
    /// A refund of an order that is not `paid`.
    #[error("the order is {0}, not paid")]
    NotRefundable(&'static str),
    /// A payment whose amount is not the order's; nothing was kept.
    #[error("the order costs {want} fen, the payment says {got}")]
    AmountMismatch {
        /// The order's amount.
        want: u64,
        /// The notice's.
        got: u64,
    },
    /// A payment that came when the order could no longer take it: kept on the order as a
    /// late payment (to be refunded) and counted. The order's status is given.
    #[error("the order is {}; the payment was kept as a late payment", .0.as_str())]
    Late(OrderStatus),
    /// A payment id already kept for another order.
    #[error("payment_id was already used for order {0}")]
    PaymentIdReused(String),
    /// The move could not be made durable; nothing changed.
    #[error("{0}")]
    Unavailable(String),
}

/// A payment notice's content (its signature already checked).
#[derive(Debug, Clone)]
pub struct PaymentFor<'a> {
    /// The room.
    pub room: &'a str,
    /// The order id.
    pub order: &'a str,
    /// The payment.
    pub payment: Payment,
}

/// An order id of this hub (`O42`) as its number. Only the id itself: `parse` alone would
/// also take `O042` and `O+42`, which name no order.
fn order_number(id: &str) -> Option<u64> {
    let digits = id.strip_prefix('O')?;
    let canonical =
        digits.bytes().all(|b| b.is_ascii_digit()) && (digits == "0" || !digits.starts_with('0'));
    digits.parse().ok().filter(|_| canonical)
}

impl Hub {
    /// The order `id` of `room`, if it has one.
    pub fn find_order(&self, room: &Room, id: &str) -> Option<Arc<OrderRecord>> {
        if self.fleet().is_some() {
            return None;
        }
        let n = order_number(id)?;
        room.statuses.order(n).or_else(|| room.orders.by_number(n))
    }

    /// Journals `to` for `order`, which [`crate::rooms::statuses::Statuses::begin`] marked as
    /// moving, in a task of its own; undoes the mark (and a payment's claim of its id) if the
    /// journal refuses it.
    async fn journal_move(
        &self,
        room: &Arc<Room>,
        order: &Arc<OrderRecord>,
        to: Move,
    ) -> Result<(), MoveError> {
        let record = Record::Move {
            room: room.id.clone(),
            order: order.number,
            to,
            ts_ms: now_ms(),
        };
        let claimed = match &record {
            Record::Move {
                to: Move::Paid(p) | Move::LatePayment(p),
                ..
            } => Some(p.payment_id.clone()),
            _ => None,
        };
        let (hub, room, number) = (self.clone(), room.clone(), order.number);
        let settled = tokio::spawn(async move {
            match hub.journal().append(record).await {
                Ok(_) => Ok(()),
                Err(e) => {
                    // The claim first: whoever waits for the order decides afresh after abort.
                    if let Some(id) = claimed {
                        room.statuses.release_payment(&id, number);
                    }
                    room.statuses.abort(number);
                    tracing::warn!(room = %room.id, order = number, error = %e, "a status move could not be made durable");
                    Err(MoveError::Unavailable(format!(
                        "the change could not be made durable: {e}"
                    )))
                }
            }
        });
        settled
            .await
            .unwrap_or_else(|e| Err(MoveError::Unavailable(e.to_string())))
    }

    /// A payment notice: pays an unpaid order, or keeps a payment the order can no longer
    /// take as a late payment. Idempotent on the payment id.
    pub async fn pay(&self, p: PaymentFor<'_>) -> Result<Arc<OrderRecord>, MoveError> {
        if let Some(fleet) = self.fleet() {
            return self.pay_in_fleet(fleet, p).await;
        }
        let room = self.room(p.room).ok_or(MoveError::UnknownOrder)?;
        let order = self
            .find_order(&room, p.order)
            .ok_or(MoveError::UnknownOrder)?;
        let id = &p.payment.payment_id;
        if let Some(n) = room.statuses.payment(id) {
            if n != order.number {
                return Err(MoveError::PaymentIdReused(format!("O{n}")));
            }
        }
        if p.payment.amount_fen != order.amount_fen {
            return Err(MoveError::AmountMismatch {
                want: order.amount_fen,
                got: p.payment.amount_fen,
            });
        }
        let mut late_for = None;
        let step = room
            .statuses
            .begin(&order, |s| {
                if s.payment.as_ref().is_some_and(|x| x.payment_id == *id) {
                    return Step::Done(Ok(()));
                }
                if s.late.iter().any(|x| x.payment_id == *id) {
                    return Step::Done(Err(MoveError::Late(s.status)));
                }
                // The check above, made again now that it counts: another notice with this id
                // for another order may have passed it meanwhile.
                if let Err(n) = room.statuses.claim_payment(id, order.number) {
                    return Step::Done(Err(MoveError::PaymentIdReused(format!("O{n}"))));
                }
                match s.status {
                    OrderStatus::Unpaid => Step::Move(Move::Paid(p.payment.clone())),
                    status => {
                        late_for = Some(status);
                        Step::Move(Move::LatePayment(p.payment.clone()))
                    }
                }
            })
            .await;
        match step {
            Step::Done(r) => r.map(|()| order),
            Step::Move(m) => {
                self.journal_move(&room, &order, m).await?;
                match late_for {
                    None => Ok(order),
                    Some(status) => {
                        metrics::counter!("livehub_late_payments_total").increment(1);
                        Err(MoveError::Late(status))
                    }
                }
            }
        }
    }

    /// Cancels an unpaid order: by its buyer (`user`: someone else's order is unknown to
    /// them) or by an operator (`None`).
    pub async fn cancel(
        &self,
        room: &Arc<Room>,
        order_id: &str,
        user: Option<&str>,
    ) -> Result<Arc<OrderRecord>, MoveError> {
        if let Some(fleet) = self.fleet() {
            return self.cancel_in_fleet(fleet, &room.id, order_id, user).await;
        }
        let order = self
            .find_order(room, order_id)
            .filter(|o| user.is_none_or(|u| *o.user == *u))
            .ok_or(MoveError::UnknownOrder)?;
        self.move_from(
            room,
            order,
            OrderStatus::Unpaid,
            MoveError::NotCancellable,
            || Move::Cancelled {
                by_admin: user.is_none(),
            },
        )
        .await
    }

    /// Journals the move `to()` of `order` if it stands at `from`; else refuses with `refused`
    /// of the status it stands at.
    async fn move_from(
        &self,
        room: &Arc<Room>,
        order: Arc<OrderRecord>,
        from: OrderStatus,
        refused: fn(&'static str) -> MoveError,
        to: impl Fn() -> Move,
    ) -> Result<Arc<OrderRecord>, MoveError> {
        let step = room
            .statuses
            .begin(&order, |s| match s.status {
                status if status == from => Step::Move(to()),
                other => Step::Done(refused(other.as_str())),
            })
            .await;
        match step {
            Step::Done(e) => Err(e),
            Step::Move(m) => {
                self.journal_move(room, &order, m).await?;
                Ok(order)
            }
        }
    }

    /// Refunds a paid order; `restock` puts its units back on sale.
    pub async fn refund(
        &self,
        room: &Arc<Room>,
        order_id: &str,
        restock: bool,
    ) -> Result<Arc<OrderRecord>, MoveError> {
        if let Some(fleet) = self.fleet() {
            return self
                .refund_in_fleet(fleet, &room.id, order_id, restock)
                .await;
        }
        let order = self
            .find_order(room, order_id)
            .ok_or(MoveError::UnknownOrder)?;
        self.move_from(
            room,
            order,
            OrderStatus::Paid,
            MoveError::NotRefundable,
            || Move::Refunded { restock },
        )
        .await
    }

    /// A buyer's `cancel`, as its ack.
    pub async fn cancel_ack(&self, room: &Arc<Room>, user: &str, req: &str, order: &str) -> Ack {
        match self.cancel(room, order, Some(user)).await {
            Ok(o) => Ack {
                left: room.skus.get(&o.sku).map(|s| s.left()),
                status: Some(OrderStatus::Cancelled),
                pay_by_ms: None,
                ..super::buy::placed_ack(&o, req)
            },
            Err(e) => {
                let code = match e {
                    MoveError::NotCancellable(_) => RejectCode::NotCancellable,
                    MoveError::UnknownOrder => RejectCode::UnknownOrder,
                    _ => RejectCode::Unavailable,
                };
                Ack {
                    order: Some(Arc::from(order)),
                    ..Ack::rejected(req, code, None, None)
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::order_number;

    #[test]
    fn only_an_order_id_itself_names_its_order() {
        assert_eq!(order_number("O42"), Some(42));
        assert_eq!(order_number("O0"), Some(0));
        for other in [
            "O042",
            "O+42",
            "O00",
            "O",
            "o42",
            "42",
            "O-1",
            "O4 2",
            "O18446744073709551616",
        ] {
            assert_eq!(order_number(other), None, "{other}");
        }
    }
}

//! A room's order events: every placement and every status move, in the order they became
//! durable. Event `n` (from 1) is the `n`-th entry. The change feed
//! (`GET .../order-events`), the dashboard aggregator and the audit read it; the journal's
//! apply (and replay, and a snapshot's restore) appends to it.
//!
//! An append-only [`boxcar::Vec`], like the order log: one writer, readers without a lock.

use std::sync::Arc;

use serde::Serialize;

use crate::journal::record::Payment;
use crate::journal::OrderRecord;
use crate::protocol::OrderStatus;

/// One event of a room's orders.
#[derive(Debug, Clone)]
pub enum Event {
    /// An order was placed: `unpaid`, or `paid` at once (a SKU without a payment timeout).
    Placed(Arc<OrderRecord>),
    /// An order moved, or got a late payment.
    Moved(Arc<Moved>),
}

/// A status move as the room's readers see it: the order, and what happened to it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Moved {
    /// The order.
    pub order: Arc<OrderRecord>,
    /// When it became durable (the hub's clock, Unix ms).
    pub ts_ms: i64,
    /// What happened.
    pub what: What,
}

/// What a [`Moved`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum What {
    /// `unpaid` → `paid`.
    Paid(Payment),
    /// `unpaid` → `expired`; the units went back.
    Expired,
    /// `unpaid` → `cancelled`; the units went back.
    Cancelled {
        /// An operator cancelled it (else its buyer).
        by_admin: bool,
    },
    /// `paid` → `refunded`. `paid_ts_ms` is when the order became paid (so the trend takes
    /// the refund off the second the payment was counted in).
    Refunded {
        /// Whether the units went back on sale.
        restock: bool,
        /// When the order became paid (hub's clock).
        paid_ts_ms: i64,
    },
    /// A payment for an order that could no longer take it; its status stays `status`.
    Late {
        /// The payment, kept for a refund.
        payment: Payment,
        /// The order's status, unchanged.
        status: OrderStatus,
    },
}

impl Moved {
    /// The order's status after this event.
    pub fn status(&self) -> OrderStatus {
        match &self.what {
            What::Paid(_) => OrderStatus::Paid,
            What::Expired => OrderStatus::Expired,
            What::Cancelled { .. } => OrderStatus::Cancelled,
            What::Refunded { .. } => OrderStatus::Refunded,
            What::Late { status, .. } => *status,
        }
    }

    /// Whether this event gave the order's units back to the sale.
    pub fn released(&self) -> bool {
        matches!(
            self.what,
            What::Expired | What::Cancelled { .. } | What::Refunded { restock: true, .. }
        )
    }
}

impl Event {
    /// The order the event is about.
    pub fn order(&self) -> &Arc<OrderRecord> {
        match self {
            Event::Placed(o) => o,
            Event::Moved(m) => &m.order,
        }
    }

    /// One line of the change feed, numbered `event`, with its newline.
    pub fn to_ndjson(&self, event: u64) -> String {
        #[derive(Serialize)]
        struct Line<'a> {
            event: u64,
            order: String,
            status: OrderStatus,
            ts_ms: i64,
            sku: &'a str,
            user: &'a str,
            qty: u64,
            amount_fen: u64,
            #[serde(skip_serializing_if = "Option::is_none")]
            payment_id: Option<&'a str>,
            #[serde(skip_serializing_if = "Option::is_none")]
            paid_at_ms: Option<i64>,
            #[serde(skip_serializing_if = "Option::is_none")]
            pay_by_ms: Option<i64>,
            #[serde(skip_serializing_if = "Option::is_none")]
            restock: Option<bool>,
            #[serde(skip_serializing_if = "Option::is_none")]
            late_payment: Option<&'a Payment>,
            /// Who cancelled: `buyer` or `operator`.
            #[serde(skip_serializing_if = "Option::is_none")]
            by: Option<&'static str>,
        }
        let o = self.order();
        let mut line = Line {
            event,
            order: o.order_id(),
            status: OrderStatus::Paid,
            ts_ms: o.ts_ms,
            sku: &o.sku,
            user: &o.user,
            qty: o.qty,
            amount_fen: o.amount_fen,
            payment_id: None,
            paid_at_ms: None,
            pay_by_ms: None,
            restock: None,
            late_payment: None,
            by: None,
        };
        match self {
            Event::Placed(o) => {
                if o.pay_by_ms.is_some() {
                    line.status = OrderStatus::Unpaid;
                    line.pay_by_ms = o.pay_by_ms;
                } else {
                    line.paid_at_ms = Some(o.ts_ms);
                }
            }
            Event::Moved(m) => {
                line.status = m.status();
                line.ts_ms = m.ts_ms;
                match &m.what {
                    What::Paid(p) => {
                        line.payment_id = Some(&p.payment_id);
                        line.paid_at_ms = Some(p.paid_at_ms);
                    }
                    What::Refunded { restock, .. } => line.restock = Some(*restock),
                    What::Late { payment, .. } => line.late_payment = Some(payment),
                    What::Cancelled { by_admin } => {
                        line.by = Some(if *by_admin { "operator" } else { "buyer" })
                    }
                    What::Expired => {}
                }
            }
        }
        let mut s = serde_json::to_string(&line).expect("events serialize");
        s.push('\n');
        s
    }
}

/// The room's events. Reads take no lock and see the events there were when they began.
#[derive(Debug, Default)]
pub struct EventLog {
    events: boxcar::Vec<Event>,
}

impl EventLog {
    /// Room for `n` events without growing (a snapshot being restored).
    pub fn with_capacity(n: usize) -> Self {
        EventLog {
            events: boxcar::Vec::with_capacity(n),
        }
    }

    /// Appends the next event (the journal's apply, replay or restore only).
    pub(super) fn push(&self, e: Event) {
        self.events.push(e);
    }

    /// Number of events: the highest event number.
    pub fn count(&self) -> usize {
        self.events.count()
    }

    /// Calls `f` on each event from index `from` (event number `from + 1`) to the count there
    /// is now; returns that count, where the next call starts.
    pub fn for_each_from(&self, from: usize, mut f: impl FnMut(&Event)) -> usize {
        let to = self.events.count();
        for i in from..to {
            f(self.events.get(i).expect("an event below the count"));
        }
        to.max(from)
    }

    /// Calls `f` on the first `n` events (a snapshot that captured `n`).
    pub fn for_prefix(&self, n: usize, mut f: impl FnMut(&Event)) {
        let to = n.min(self.events.count());
        for i in 0..to {
            f(self.events.get(i).expect("an event below the count"));
        }
    }

    /// Events numbered above `after`, oldest first, at most `limit`, with their numbers.
    pub fn page_after(&self, after: u64, limit: usize) -> Vec<(u64, Event)> {
        let count = self.events.count();
        let from = usize::try_from(after).unwrap_or(usize::MAX).min(count);
        let to = from.saturating_add(limit).min(count);
        (from..to)
            .map(|i| {
                let e = self.events.get(i).expect("an event below the count");
                (i as u64 + 1, e.clone())
            })
            .collect()
    }
}

//! The review's order figures, folded from a room's order events (placements and status
//! moves) as the journal made them durable: the same folding as the dashboard aggregator's
//! ([`crate::dashboard::aggregator`]), so the review's totals equal the snapshot's, but by
//! minute rather than by second, and with every sharer rather than the best ten. Incremental:
//! a fold remembers where it stopped, and the next build folds only the events after it.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;

use crate::journal::OrderRecord;
use crate::rooms::events::{Event, Moved, What};
use crate::rooms::orders::StreamEvent;
use crate::rooms::room::Room;

/// Width of a row of the review's series.
pub const MINUTE_MS: i64 = 60_000;

type Fast = foldhash::fast::RandomState;

/// One minute's order figures.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct OrderMinute {
    /// Orders placed in the minute, by their `ts_ms`, in fen.
    pub gmv_fen: u64,
    /// Payments counted in the minute (an order paid on placement: at placement), less
    /// refunds of those payments.
    pub paid_gmv_fen: u64,
    /// Orders placed in the minute.
    pub orders: u64,
}

/// One SKU's order figures.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct SkuTotals {
    /// Orders placed, in fen.
    pub gmv_fen: u64,
    /// Orders placed.
    pub orders: u64,
    /// Units of orders that keep them (unpaid, paid, refunded without restock).
    pub units: u64,
    /// Units of orders paid now.
    pub paid: u64,
}

/// A room's order figures, as of the events folded so far.
#[derive(Debug, Default)]
pub struct Fold {
    /// Events folded: the room's event log (or, in fleet mode, its stream) up to here.
    cursor: usize,
    /// Fleet mode: fold the room's stream (every hub's orders), as the aggregator does.
    from_stream: bool,
    /// Orders placed, in fen (下单金额).
    pub gmv_fen: u64,
    /// Orders placed.
    pub orders: u64,
    /// Units placed.
    pub units: u64,
    buyers: HashSet<Arc<str>, Fast>,
    payers: HashSet<Arc<str>, Fast>,
    /// Paid orders' amounts, less refunds.
    pub paid_gmv_fen: u64,
    /// Orders paid now.
    pub paid_orders: u64,
    /// Orders that were ever paid, for the pay rate.
    pub ever_paid: u64,
    /// Amounts waiting for payment now.
    pub unpaid_fen: u64,
    /// Amounts and orders that expired unpaid.
    pub expired_fen: u64,
    pub expired_orders: u64,
    /// Amounts and orders cancelled unpaid.
    pub cancelled_fen: u64,
    pub cancelled_orders: u64,
    /// Amounts and orders refunded.
    pub refunded_fen: u64,
    pub refunded_orders: u64,
    /// Payments that came for orders that could no longer take them.
    pub late_payments: u64,
    skus: HashMap<Arc<str>, SkuTotals, Fast>,
    referrers: HashMap<Arc<str>, (u64, u64), Fast>,
    minutes: BTreeMap<i64, OrderMinute>,
    /// The earliest and latest time of an order or a move.
    span: Option<(i64, i64)>,
}

/// The minute that holds `ts_ms`.
pub fn minute_of(ts_ms: i64) -> i64 {
    ts_ms - ts_ms.rem_euclid(MINUTE_MS)
}

impl Fold {
    /// A fold of a room's journal (`from_stream`: of its stream, in fleet mode).
    pub fn new(from_stream: bool) -> Self {
        Fold {
            from_stream,
            ..Fold::default()
        }
    }

    /// Folds the events the room made durable since the last call.
    pub fn catch_up(&mut self, room: &Room) {
        if self.from_stream {
            self.cursor = room.orders.for_each_stream_from(self.cursor, |e| match e {
                StreamEvent::Placed(s) => self.placed(&s.order),
                StreamEvent::Moved(m) => self.moved(m),
            });
        } else {
            self.cursor = room.events.for_each_from(self.cursor, |e| match e {
                Event::Placed(o) => self.placed(o),
                Event::Moved(m) => self.moved(m),
            });
        }
    }

    /// Distinct users with an order.
    pub fn buyers(&self) -> u64 {
        self.buyers.len() as u64
    }

    /// Distinct users with an order paid once.
    pub fn payers(&self) -> u64 {
        self.payers.len() as u64
    }

    /// A SKU's figures (zeros for a SKU without orders).
    pub fn sku(&self, sku: &str) -> SkuTotals {
        self.skus.get(sku).copied().unwrap_or_default()
    }

    /// Every sharer: `(ref, orders, gmv_fen)`.
    pub fn referrers(&self) -> impl Iterator<Item = (&Arc<str>, u64, u64)> {
        self.referrers.iter().map(|(r, (n, g))| (r, *n, *g))
    }

    /// Every minute with an order or a payment, by minute start.
    pub fn minutes(&self) -> &BTreeMap<i64, OrderMinute> {
        &self.minutes
    }

    /// The earliest and latest time of an order or a status move.
    pub fn span_ms(&self) -> Option<(i64, i64)> {
        self.span
    }

    fn saw(&mut self, ts_ms: i64) {
        self.span = Some(match self.span {
            None => (ts_ms, ts_ms),
            Some((a, b)) => (a.min(ts_ms), b.max(ts_ms)),
        });
    }

    fn minute(&mut self, ts_ms: i64) -> &mut OrderMinute {
        self.minutes.entry(minute_of(ts_ms)).or_default()
    }

    fn placed(&mut self, o: &Arc<OrderRecord>) {
        self.saw(o.ts_ms);
        self.gmv_fen = self.gmv_fen.saturating_add(o.amount_fen);
        self.orders += 1;
        self.units += o.qty;
        if !self.buyers.contains(&o.user) {
            self.buyers.insert(o.user.clone());
        }
        let s = match self.skus.get_mut(&o.sku) {
            Some(s) => s,
            None => self.skus.entry(o.sku.clone()).or_default(),
        };
        s.gmv_fen = s.gmv_fen.saturating_add(o.amount_fen);
        s.orders += 1;
        s.units += o.qty;
        if let Some(r) = &o.referrer {
            let e = match self.referrers.get_mut(r) {
                Some(e) => e,
                None => self.referrers.entry(r.clone()).or_default(),
            };
            e.0 += 1;
            e.1 = e.1.saturating_add(o.amount_fen);
        }
        let m = self.minute(o.ts_ms);
        m.gmv_fen = m.gmv_fen.saturating_add(o.amount_fen);
        m.orders += 1;
        if o.pay_by_ms.is_some() {
            self.unpaid_fen = self.unpaid_fen.saturating_add(o.amount_fen);
        } else {
            self.paid(o, o.ts_ms);
        }
    }

    /// An order became paid at `ts_ms` (the hub's clock).
    fn paid(&mut self, o: &OrderRecord, ts_ms: i64) {
        self.paid_gmv_fen = self.paid_gmv_fen.saturating_add(o.amount_fen);
        self.paid_orders += 1;
        self.ever_paid += 1;
        if !self.payers.contains(&o.user) {
            self.payers.insert(o.user.clone());
        }
        if let Some(s) = self.skus.get_mut(&o.sku) {
            s.paid += o.qty;
        }
        let m = self.minute(ts_ms);
        m.paid_gmv_fen = m.paid_gmv_fen.saturating_add(o.amount_fen);
    }

    fn moved(&mut self, m: &Moved) {
        self.saw(m.ts_ms);
        let o = &*m.order;
        match &m.what {
            What::Paid(_) => {
                self.unpaid_fen = self.unpaid_fen.saturating_sub(o.amount_fen);
                self.paid(o, m.ts_ms);
            }
            What::Expired => {
                self.unpaid_fen = self.unpaid_fen.saturating_sub(o.amount_fen);
                self.expired_fen = self.expired_fen.saturating_add(o.amount_fen);
                self.expired_orders += 1;
            }
            What::Cancelled { .. } => {
                self.unpaid_fen = self.unpaid_fen.saturating_sub(o.amount_fen);
                self.cancelled_fen = self.cancelled_fen.saturating_add(o.amount_fen);
                self.cancelled_orders += 1;
            }
            What::Refunded { paid_ts_ms, .. } => {
                self.paid_gmv_fen = self.paid_gmv_fen.saturating_sub(o.amount_fen);
                self.paid_orders = self.paid_orders.saturating_sub(1);
                self.refunded_fen = self.refunded_fen.saturating_add(o.amount_fen);
                self.refunded_orders += 1;
                if let Some(s) = self.skus.get_mut(&o.sku) {
                    s.paid = s.paid.saturating_sub(o.qty);
                }
                let minute = self.minute(*paid_ts_ms);
                minute.paid_gmv_fen = minute.paid_gmv_fen.saturating_sub(o.amount_fen);
            }
            What::Late { .. } => self.late_payments += 1,
        }
        if m.released() {
            if let Some(s) = self.skus.get_mut(&o.sku) {
                s.units = s.units.saturating_sub(o.qty);
            }
        }
    }
}

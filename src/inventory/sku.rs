//! One SKU's live inventory: stock counters, sale window and per-user ledger.

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, RwLock};

use super::ledger::DashLedger;
use super::stock::{self, Counter, Denied};
use crate::protocol::{RejectCode, SaleState, SkuState};

const NO_LIMIT: u64 = u64::MAX;
const NO_OPEN: i64 = i64::MIN;
const NO_CLOSE: i64 = i64::MAX;
const NEVER: i64 = 0;
const NO_TIMEOUT: u64 = 0;

pub use crate::journal::SkuDef;

/// A SKU as Redis holds it (fleet mode), copied into the hub's memory for views.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mirrored {
    /// The definition in force (its `stock` is not used).
    pub def: SkuDef,
    /// Initial stock plus restocks minus withdrawals.
    pub total: u64,
    /// Units that can still be sold.
    pub left: u64,
    /// Units of published orders, every hub's.
    pub sold: u64,
    /// When the stock ran out, while it is out.
    pub sold_out_at_ms: Option<i64>,
}

/// The inventory of one SKU. Hot fields are atomics so a buy takes no lock but the user's
/// ledger entry; the name, read only for views, sits behind a `RwLock`.
#[derive(Debug)]
pub struct Sku {
    /// The SKU's id, unique in its room.
    pub id: Arc<str>,
    name: RwLock<Arc<str>>,
    price_fen: AtomicU64,
    limit: AtomicU64,
    opens_at: AtomicI64,
    closes_at: AtomicI64,
    /// Seconds to pay an order ([`NO_TIMEOUT`]: paid on placement).
    pay_timeout_s: AtomicU64,
    /// Units that can still be sold. Reservations take from it first.
    pub(crate) left: AtomicU64,
    /// Initial stock plus restocks minus withdrawals.
    total: AtomicU64,
    /// Units of durable orders.
    sold: AtomicU64,
    sold_out_at: AtomicI64,
    pub(crate) ledger: DashLedger,
}

/// A reservation the gate granted: stock and allowance are taken until it is committed
/// (the order became durable) or released.
#[derive(Debug, Clone)]
pub struct Reserved {
    /// Unit price in force at the decision.
    pub price_fen: u64,
    /// Stock left right after the units were taken.
    pub left_after: u64,
}

impl Sku {
    /// A SKU as `def` defines it, with its initial stock and nothing sold.
    pub fn new(id: Arc<str>, def: &SkuDef) -> Sku {
        let sku = Sku {
            id,
            name: RwLock::new(Arc::from(def.name.as_str())),
            price_fen: AtomicU64::new(def.price_fen),
            limit: AtomicU64::new(NO_LIMIT),
            opens_at: AtomicI64::new(NO_OPEN),
            closes_at: AtomicI64::new(NO_CLOSE),
            pay_timeout_s: AtomicU64::new(NO_TIMEOUT),
            left: AtomicU64::new(def.stock),
            total: AtomicU64::new(def.stock),
            sold: AtomicU64::new(0),
            sold_out_at: AtomicI64::new(NEVER),
            ledger: DashLedger::default(),
        };
        sku.redefine(def);
        sku
    }

    /// Applies an update: everything but the stock (which only `/stock` changes).
    pub fn redefine(&self, def: &SkuDef) {
        *self.name.write().expect("name lock") = Arc::from(def.name.as_str());
        self.price_fen.store(def.price_fen, Ordering::Release);
        self.limit
            .store(def.limit_per_user.unwrap_or(NO_LIMIT), Ordering::Release);
        self.pay_timeout_s
            .store(def.pay_timeout_s.unwrap_or(NO_TIMEOUT), Ordering::Release);
        self.set_window(def.opens_at_ms, def.closes_at_ms);
    }

    /// Sets the sale window; `None` leaves that side open.
    pub fn set_window(&self, opens_at_ms: Option<i64>, closes_at_ms: Option<i64>) {
        self.opens_at
            .store(opens_at_ms.unwrap_or(NO_OPEN), Ordering::Release);
        self.closes_at
            .store(closes_at_ms.unwrap_or(NO_CLOSE), Ordering::Release);
    }

    /// The sale window: opening and closing time, `None` where there is none.
    pub fn window(&self) -> (Option<i64>, Option<i64>) {
        let o = self.opens_at.load(Ordering::Acquire);
        let c = self.closes_at.load(Ordering::Acquire);
        ((o != NO_OPEN).then_some(o), (c != NO_CLOSE).then_some(c))
    }

    /// Most units one user may hold; `None` for no limit.
    pub fn limit_per_user(&self) -> Option<u64> {
        let l = self.limit.load(Ordering::Acquire);
        (l != NO_LIMIT).then_some(l)
    }

    /// Seconds a buyer has to pay an order; `None`: paid on placement.
    pub fn pay_timeout_s(&self) -> Option<u64> {
        let t = self.pay_timeout_s.load(Ordering::Acquire);
        (t != NO_TIMEOUT).then_some(t)
    }

    /// Unit price in fen.
    pub fn price_fen(&self) -> u64 {
        self.price_fen.load(Ordering::Acquire)
    }

    /// Units that can still be sold (reservations in flight already taken out).
    pub fn left(&self) -> u64 {
        self.left.get()
    }

    /// Units of durable orders.
    pub fn sold(&self) -> u64 {
        self.sold.get()
    }

    /// Initial stock plus restocks minus withdrawals.
    pub fn stock_total(&self) -> u64 {
        self.total.get()
    }

    /// The name buyers see.
    pub fn name(&self) -> Arc<str> {
        self.name.read().expect("name lock").clone()
    }

    /// When the stock ran out, while it is out.
    pub fn sold_out_at_ms(&self) -> Option<i64> {
        let t = self.sold_out_at.load(Ordering::Acquire);
        (t != NEVER).then_some(t)
    }

    /// The sale state at `now_ms`: closed wins over scheduled, which wins over sold out.
    pub fn state_at(&self, now_ms: i64) -> SaleState {
        let (opens, closes) = self.window();
        if closes.is_some_and(|c| now_ms >= c) {
            SaleState::Closed
        } else if opens.is_some_and(|o| now_ms < o) {
            SaleState::Scheduled
        } else if self.left() == 0 {
            SaleState::SoldOut
        } else {
            SaleState::Open
        }
    }

    /// The next instant after `now_ms` at which the state changes by the clock alone.
    pub fn next_boundary_after(&self, now_ms: i64) -> Option<i64> {
        let (opens, closes) = self.window();
        [opens, closes]
            .into_iter()
            .flatten()
            .filter(|&t| t > now_ms)
            .min()
    }

    /// The state as REST and `hello` show it.
    pub fn view(&self, now_ms: i64) -> SkuState {
        let (opens_at_ms, closes_at_ms) = self.window();
        SkuState {
            sku: self.id.clone(),
            name: self.name(),
            price_fen: self.price_fen(),
            stock_total: self.stock_total(),
            sold: self.sold(),
            left: self.left(),
            limit_per_user: self.limit_per_user(),
            opens_at_ms,
            closes_at_ms,
            state: self.state_at(now_ms),
            pay_timeout_s: self.pay_timeout_s(),
        }
    }

    /// The gate's decision for one buy: sale window, per-user limit, stock.
    pub fn reserve(&self, user: u32, qty: u64, now_ms: i64) -> Result<Reserved, (RejectCode, u64)> {
        match self.state_at(now_ms) {
            SaleState::Closed => return Err((RejectCode::Closed, self.left())),
            SaleState::Scheduled => return Err((RejectCode::NotOpen, self.left())),
            SaleState::SoldOut | SaleState::Open => {}
        }
        let limit = self.limit_per_user();
        // Read the price before taking stock so the amount is the one in force at the decision.
        let price_fen = self.price_fen();
        match stock::reserve(&self.left, &self.ledger, user, qty, limit) {
            Ok(left_after) => {
                if left_after == 0 {
                    let _ = self.sold_out_at.compare_exchange(
                        NEVER,
                        now_ms,
                        Ordering::AcqRel,
                        Ordering::Acquire,
                    );
                }
                Ok(Reserved {
                    price_fen,
                    left_after,
                })
            }
            Err(Denied::Limit { left }) => Err((RejectCode::LimitExceeded, left)),
            Err(Denied::Stock { left: 0 }) => Err((RejectCode::SoldOut, 0)),
            Err(Denied::Stock { left }) => Err((RejectCode::InsufficientStock, left)),
        }
    }

    /// Gives back a reservation that did not become an order.
    pub fn release(&self, user: u32, qty: u64) {
        stock::release(&self.left, &self.ledger, user, qty);
        self.sold_out_at.store(NEVER, Ordering::Release);
    }

    /// A durable order gave its units back: they are for sale again, and no longer sold.
    pub fn release_order(&self, user: u32, qty: u64) {
        self.sold.sub(qty.min(self.sold.get()));
        self.release(user, qty);
    }

    /// Gives back `user`'s allowance for `qty` units of an order restored from a snapshot
    /// whose units went back (the snapshot's counters already count them as not sold).
    pub fn restore_released(&self, user: u32, qty: u64) {
        stock::UserLedger::give_back(&self.ledger, user, qty);
    }

    /// A reserved order became durable.
    pub fn commit(&self, qty: u64) {
        self.sold.add(qty);
    }

    /// Replays a durable order at start-up (no reservation preceded it).
    pub fn replay_order(&self, user: u32, qty: u64, ts_ms: i64) {
        self.left.sub(qty.min(self.left.get()));
        self.ledger.add(user, qty);
        self.sold.add(qty);
        if self.left.get() == 0 {
            let _ = self.sold_out_at.compare_exchange(
                NEVER,
                ts_ms,
                Ordering::AcqRel,
                Ordering::Acquire,
            );
        }
    }

    /// The definition in force (with `stock` 0: a definition's stock only counts at creation).
    pub fn def(&self) -> SkuDef {
        let (opens_at_ms, closes_at_ms) = self.window();
        SkuDef {
            name: self.name().to_string(),
            price_fen: self.price_fen(),
            stock: 0,
            limit_per_user: self.limit_per_user(),
            opens_at_ms,
            closes_at_ms,
            pay_timeout_s: self.pay_timeout_s(),
        }
    }

    /// Sets the durable counters from a journal snapshot: `left` is what no durable order took.
    /// Only on a SKU that no buy has seen yet.
    pub fn restore_counters(&self, stock_total: u64, sold: u64, sold_out_at_ms: Option<i64>) {
        self.total.store(stock_total, Ordering::Release);
        self.sold.store(sold, Ordering::Release);
        self.left
            .store(stock_total.saturating_sub(sold), Ordering::Release);
        self.sold_out_at
            .store(sold_out_at_ms.unwrap_or(NEVER), Ordering::Release);
    }

    /// Adds units of a durable order restored from a journal snapshot to `user`'s count.
    pub fn add_held(&self, user: u32, qty: u64) {
        self.ledger.add(user, qty);
    }

    /// Units `user` (a room's interned key) holds: durable orders and reservations in flight.
    pub fn held(&self, user: u32) -> u64 {
        stock::UserLedger::held(&self.ledger, user)
    }

    /// Fleet mode: copies Redis's state of this SKU (definition, counters and sell-out time).
    /// Returns whether anything a buyer sees changed.
    pub fn mirror(&self, m: &Mirrored) -> bool {
        let before = (self.view(0), self.sold_out_at_ms());
        self.redefine(&m.def);
        self.total.store(m.total, Ordering::Release);
        self.left.store(m.left, Ordering::Release);
        self.sold.store(m.sold, Ordering::Release);
        self.sold_out_at
            .store(m.sold_out_at_ms.unwrap_or(NEVER), Ordering::Release);
        before != (self.view(0), self.sold_out_at_ms())
    }

    /// Fleet mode: the stock left after this hub's own buy, shown before the next refresh.
    pub fn note_left(&self, left: u64) {
        self.left.store(left, Ordering::Release);
    }

    /// Takes `n` units out of `left` for a withdrawal; `Err(left)` when fewer are left.
    pub fn reserve_withdrawal(&self, n: u64) -> Result<u64, u64> {
        stock::take(&self.left, n)
    }

    /// Undoes [`Sku::reserve_withdrawal`] when the journal refused it.
    pub fn cancel_withdrawal(&self, n: u64) {
        self.left.add(n);
    }

    /// A durable stock change. `left_taken` says a withdrawal's units already left `left`.
    pub fn apply_stock_delta(&self, delta: i64, left_taken: bool) {
        let n = delta.unsigned_abs();
        if delta >= 0 {
            self.total.add(n);
            self.left.add(n);
            if n > 0 {
                self.sold_out_at.store(NEVER, Ordering::Release);
            }
        } else {
            self.total.sub(n.min(self.total.get()));
            if !left_taken {
                self.left.sub(n.min(self.left.get()));
            }
        }
    }
}

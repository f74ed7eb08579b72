//! The inventory gate: stock, per-user limits and sale windows, decided without oversell.
//!
//! - [`stock`]: the compare-and-swap and per-user decision, generic for model checking;
//! - [`ledger`]: units per user of one SKU;
//! - [`sku`]: one SKU's counters and window.
//!
//! [`LocalGate`] keeps everything in this process. In fleet mode (`--redis`) the hub decides in
//! Redis instead ([`crate::fleet`]): one script per buy, whose pending ticket must be released
//! by its exact text, so that path has its own types and the hub picks the gate once per buy
//! ([`crate::hub`]'s `GateKind`).
//!
//! Every gate promises: a SKU never sells more than its stock, a user never holds more than the
//! limit, and no refusal is caused by a reservation that the same decision rolled back.

pub mod ledger;
pub mod sku;
pub mod stock;

use std::sync::Arc;

pub use sku::{Mirrored, Reserved, Sku, SkuDef};

use crate::protocol::RejectCode;

/// A user of a room: the id, and the small key the gate's ledgers use. A buyer connection
/// interns its user once ([`crate::rooms::users::Users::intern`]), so a buy never hashes the user's
/// string in the gate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserRef {
    /// The user id, as checked at the edge.
    pub id: Arc<str>,
    /// The room's interned key for the user, which the ledgers hold.
    pub key: u32,
}

/// One buy as the gate sees it.
#[derive(Debug, Clone, Copy)]
pub struct BuyRequest<'a> {
    /// Who buys.
    pub user: &'a UserRef,
    /// The SKU id the frame names.
    pub sku: &'a str,
    /// Units asked for.
    pub qty: u64,
    /// The decision's time, for the sale window.
    pub now_ms: i64,
}

/// Stock and allowance taken for a buy, until its order is durable or refused.
#[derive(Debug, Clone)]
pub struct Reservation {
    /// The SKU the units were taken from.
    pub sku: Arc<Sku>,
    /// Units taken.
    pub qty: u64,
    /// Unit price in force at the decision.
    pub price_fen: u64,
    /// Stock left right after the units were taken.
    pub left_after: u64,
}

/// Why the gate refused a buy; `left` when the SKU exists.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejection {
    /// Why, as the ack's `error` says it.
    pub code: RejectCode,
    /// The SKU's id, when it exists.
    pub sku: Option<Arc<str>>,
    /// Stock seen at the decision, when the SKU exists.
    pub left: Option<u64>,
}

/// The embedded gate: counters in this process's memory.
#[derive(Debug, Default, Clone, Copy)]
pub struct LocalGate;

impl LocalGate {
    /// The decision itself, synchronous: what the benchmark measures. `sku` is the room's SKU
    /// named by the buy, if it has one. A reservation that took the last unit has
    /// `left_after == 0`: the caller tells the room's sale feed.
    #[inline]
    pub fn decide(sku: Option<Arc<Sku>>, buy: BuyRequest<'_>) -> Result<Reservation, Rejection> {
        let Some(sku) = sku else {
            return Err(Rejection {
                code: RejectCode::UnknownSku,
                sku: None,
                left: None,
            });
        };
        match sku.reserve(buy.user.key, buy.qty, buy.now_ms) {
            Ok(r) => Ok(Reservation {
                qty: buy.qty,
                price_fen: r.price_fen,
                left_after: r.left_after,
                sku,
            }),
            Err((code, left)) => Err(Rejection {
                code,
                sku: Some(sku.id.clone()),
                left: Some(left),
            }),
        }
    }

    /// Gives a reservation back at once: its stock and the user's allowance. The caller tells
    /// the room's sale feed.
    pub fn give_back(user: &UserRef, r: &Reservation) {
        r.sku.release(user.key, r.qty);
    }

    /// Gives the units of a durable order back to the sale, and the user's allowance back:
    /// the order expired, was cancelled, or was refunded with its units restocked. The caller
    /// (the journal's apply, once that move is durable) tells the room's sale feed.
    pub fn give_back_order(sku: &Sku, user: u32, qty: u64) {
        sku.release_order(user, qty);
    }
}

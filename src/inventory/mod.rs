//! The inventory gate: stock, per-user limits and sale windows, decided without oversell.
//!
//! - [`stock`]: the compare-and-swap and per-user decision, generic for model checking;
//! - [`ledger`]: units per user of one SKU;
//! - [`sku`]: one SKU's counters and window.
//!
//! [`Gate`] is the interface the hub buys through; [`LocalGate`] keeps everything in this
//! process. With `--redis` the hub decides in Redis instead ([`crate::fleet`]): one script per
//! buy, whose pending "ticket" must be released by its exact text, so that path has its own
//! types and the hub picks the gate once per buy ([`crate::hub`]'s `GateKind`).

pub mod ledger;
pub mod sku;
pub mod stock;

use std::future::Future;
use std::sync::Arc;

pub use sku::{Mirrored, Reserved, Sku, SkuDef};

use crate::protocol::RejectCode;
use crate::room::{Room, UserRef};

/// One buy as the gate sees it.
#[derive(Debug, Clone, Copy)]
pub struct BuyRequest<'a> {
    pub user: &'a UserRef,
    pub sku: &'a str,
    pub qty: u64,
    pub now_ms: i64,
}

/// Stock and allowance taken for a buy, until its order is durable or refused.
#[derive(Debug, Clone)]
pub struct Reservation {
    pub sku: Arc<Sku>,
    pub qty: u64,
    pub price_fen: u64,
    pub left_after: u64,
}

/// Why the gate refused a buy; `left` when the SKU exists.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejection {
    pub code: RejectCode,
    pub sku: Option<Arc<str>>,
    pub left: Option<u64>,
}

/// Decides buys. Every implementation promises: a SKU never sells more than its stock, a user
/// never holds more than the limit, and no refusal is caused by a reservation that the same
/// decision rolled back.
pub trait Gate: Send + Sync + 'static {
    /// Takes stock and the user's allowance, or says why not.
    fn reserve(
        &self,
        room: &Room,
        buy: BuyRequest<'_>,
    ) -> impl Future<Output = Result<Reservation, Rejection>> + Send;
    /// Gives back a reservation whose order was not made durable.
    fn release(
        &self,
        room: &Room,
        user: &UserRef,
        reservation: &Reservation,
    ) -> impl Future<Output = ()> + Send;
}

/// The embedded gate: counters in this process's memory.
#[derive(Debug, Default, Clone, Copy)]
pub struct LocalGate;

impl LocalGate {
    /// The decision itself, synchronous: what the benchmark measures.
    #[inline]
    pub fn decide(room: &Room, buy: BuyRequest<'_>) -> Result<Reservation, Rejection> {
        let Some(sku) = room.sku(buy.sku) else {
            return Err(Rejection {
                code: RejectCode::UnknownSku,
                sku: None,
                left: None,
            });
        };
        match sku.reserve(buy.user.key, buy.qty, buy.now_ms) {
            Ok(r) => {
                if r.left_after == 0 {
                    room.state_changed();
                }
                Ok(Reservation {
                    qty: buy.qty,
                    price_fen: r.price_fen,
                    left_after: r.left_after,
                    sku,
                })
            }
            Err((code, left)) => Err(Rejection {
                code,
                sku: Some(sku.id.clone()),
                left: Some(left),
            }),
        }
    }

    /// [`Gate::release`], synchronous: the stock and the user's allowance go back at once.
    pub fn give_back(room: &Room, user: &UserRef, r: &Reservation) {
        r.sku.release(user.key, r.qty);
        room.state_changed();
    }
}

impl Gate for LocalGate {
    fn reserve(
        &self,
        room: &Room,
        buy: BuyRequest<'_>,
    ) -> impl Future<Output = Result<Reservation, Rejection>> + Send {
        std::future::ready(Self::decide(room, buy))
    }

    fn release(
        &self,
        room: &Room,
        user: &UserRef,
        r: &Reservation,
    ) -> impl Future<Output = ()> + Send {
        Self::give_back(room, user, r);
        std::future::ready(())
    }
}

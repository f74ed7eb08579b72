//! The two decisions every buy makes, written once and generic over the atomic and the
//! per-user ledger so that the same code runs in production (std atomics, DashMap) and under
//! the shuttle model checker (`tests/gate_model_check.rs`).
//!
//! How the two checks combine without a false answer:
//! the user's entry is locked first, the limit checked, then stock is taken with a
//! compare-and-swap, and only if that succeeds the user's count grows, all before the entry is
//! unlocked. So
//! - stock is never taken for a buy that the limit refuses (no rollback, so no other buyer can
//!   see a `sold_out` caused by a unit that is given back a moment later);
//! - the user's count only ever holds units that were really taken, so a user's concurrent buy
//!   never sees `limit_exceeded` because of a buy that then failed for want of stock.
//!
//! The one remaining rollback is a journal failure after a successful reservation
//! ([`release`]); buys decided in that window see the reservation as taken.

/// The operations the gate needs from an atomic counter.
pub trait Counter {
    /// The value now (acquire).
    fn get(&self) -> u64;
    /// `compare_exchange_weak` with acquire-release ordering; `Err` carries the value seen.
    fn swap_if(&self, current: u64, new: u64) -> Result<u64, u64>;
    /// Adds `v`; returns the value before.
    fn add(&self, v: u64) -> u64;
    /// Subtracts `v`; returns the value before.
    fn sub(&self, v: u64) -> u64;
}

impl Counter for std::sync::atomic::AtomicU64 {
    #[inline]
    fn get(&self) -> u64 {
        self.load(std::sync::atomic::Ordering::Acquire)
    }
    #[inline]
    fn swap_if(&self, current: u64, new: u64) -> Result<u64, u64> {
        use std::sync::atomic::Ordering::{AcqRel, Acquire};
        self.compare_exchange_weak(current, new, AcqRel, Acquire)
    }
    #[inline]
    fn add(&self, v: u64) -> u64 {
        self.fetch_add(v, std::sync::atomic::Ordering::AcqRel)
    }
    #[inline]
    fn sub(&self, v: u64) -> u64 {
        self.fetch_sub(v, std::sync::atomic::Ordering::AcqRel)
    }
}

/// Units each user holds of one SKU, with a per-user critical section. Users are the room's
/// interned user keys ([`crate::rooms::users::Users`]), so a decision never hashes a string.
pub trait UserLedger {
    /// Runs `f` with the units `user` holds (0 if none) while no other call for the same
    /// user can run; on `Ok((held, r))` stores `held` and returns `r`; on `Err` stores nothing.
    fn update<R, E>(&self, user: u32, f: impl FnOnce(u64) -> Result<(u64, R), E>) -> Result<R, E>;
    /// Gives back `qty` units of a reservation that did not become an order.
    fn give_back(&self, user: u32, qty: u64);
    /// Units `user` holds.
    fn held(&self, user: u32) -> u64;
}

/// Why stock or limit refused a buy; `left` is the stock seen at that moment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Denied {
    /// Stock is short: `left == 0` is sold out, else insufficient.
    Stock {
        /// Stock seen.
        left: u64,
    },
    /// The user would exceed the per-user limit.
    Limit {
        /// Stock seen.
        left: u64,
    },
}

/// Takes `qty` from `left` with a compare-and-swap loop that never goes below zero.
/// Returns the stock left after, or the stock seen when it was short.
#[inline]
pub fn take<C: Counter>(left: &C, qty: u64) -> Result<u64, u64> {
    let mut seen = left.get();
    loop {
        if seen < qty {
            return Err(seen);
        }
        match left.swap_if(seen, seen - qty) {
            Ok(_) => return Ok(seen - qty),
            Err(actual) => seen = actual,
        }
    }
}

/// Decides one buy of `qty` by `user`: stock and, when `limit` is set, the per-user limit.
/// Returns the stock left after the units were taken.
#[inline]
pub fn reserve<C: Counter, L: UserLedger>(
    left: &C,
    ledger: &L,
    user: u32,
    qty: u64,
    limit: Option<u64>,
) -> Result<u64, Denied> {
    // Every user's units are counted even without a limit, so a limit set later by an
    // update holds for what was bought before it.
    let limit = limit.unwrap_or(u64::MAX);
    ledger.update(user, |held| {
        if held.saturating_add(qty) > limit {
            return Err(Denied::Limit { left: left.get() });
        }
        let after = take(left, qty).map_err(|left| Denied::Stock { left })?;
        Ok((held + qty, after))
    })
}

/// Undoes a [`reserve`] whose order could not be made durable. Returns the stock left after.
pub fn release<C: Counter, L: UserLedger>(left: &C, ledger: &L, user: u32, qty: u64) -> u64 {
    ledger.give_back(user, qty);
    left.add(qty) + qty
}

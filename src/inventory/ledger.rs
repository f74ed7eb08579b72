//! The per-user ledger of one SKU: units each user holds (orders and reservations in flight).

use dashmap::mapref::entry::Entry;
use dashmap::DashMap;

use super::stock::UserLedger;

/// Units per user, in a DashMap. The shard's write lock is the per-user critical section of
/// [`UserLedger::update`]; it is held only for a few atomic operations, never across `.await`
/// and never while touching this map again.
///
/// Keys are interned user keys, hashed with foldhash rather than SipHash because every buy
/// hashes one, and seeded at random per map so user-chosen ids cannot aim at one shard.
#[derive(Debug, Default)]
pub struct DashLedger {
    held: DashMap<u32, u64, foldhash::fast::RandomState>,
}

impl DashLedger {
    /// Adds units of a recovered order (replay at start-up).
    pub fn add(&self, user: u32, qty: u64) {
        *self.held.entry(user).or_insert(0) += qty;
    }

    /// Users with an entry.
    pub fn len(&self) -> usize {
        self.held.len()
    }

    /// Whether no user has an entry.
    pub fn is_empty(&self) -> bool {
        self.held.is_empty()
    }
}

impl UserLedger for DashLedger {
    fn update<R, E>(&self, user: u32, f: impl FnOnce(u64) -> Result<(u64, R), E>) -> Result<R, E> {
        match self.held.entry(user) {
            Entry::Occupied(mut o) => {
                let (new, r) = f(*o.get())?;
                *o.get_mut() = new;
                Ok(r)
            }
            Entry::Vacant(v) => {
                let (new, r) = f(0)?;
                v.insert(new);
                Ok(r)
            }
        }
    }

    fn give_back(&self, user: u32, qty: u64) {
        if let Some(mut held) = self.held.get_mut(&user) {
            *held = held.saturating_sub(qty);
        }
    }

    fn held(&self, user: u32) -> u64 {
        self.held.get(&user).map(|h| *h).unwrap_or(0)
    }
}

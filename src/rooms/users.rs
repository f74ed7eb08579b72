//! A room's users, interned: each user id gets a small key, the key the SKUs' per-user
//! ledgers use, so that a buy never hashes the user's string in the gate.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;

use dashmap::DashMap;

use crate::inventory::UserRef;

/// The users a room has seen, each with its key. A key is never reused or forgotten.
#[derive(Debug, Default)]
pub struct Users {
    /// foldhash: fast on short ids, randomly seeded per map.
    keys: DashMap<Arc<str>, u32, foldhash::fast::RandomState>,
    next: AtomicU32,
}

impl Users {
    /// The user `id` of this room, interned on first sight.
    pub fn intern(&self, id: &str) -> UserRef {
        if let Some(k) = self.keys.get(id) {
            return UserRef {
                id: k.key().clone(),
                key: *k.value(),
            };
        }
        let id: Arc<str> = Arc::from(id);
        let key = *self
            .keys
            .entry(id.clone())
            .or_insert_with(|| self.next.fetch_add(1, Ordering::Relaxed));
        UserRef { id, key }
    }
}

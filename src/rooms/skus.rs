//! A room's SKUs: by id for the buy path, and in creation order for listings.

use std::sync::{Arc, RwLock};

use dashmap::DashMap;

use crate::inventory::Sku;
use crate::protocol::SkuState;

/// The SKUs of a room. Only the journal's apply (or, in fleet mode, the mirror of Redis) adds
/// them; a SKU is never removed.
#[derive(Debug, Default)]
pub struct Skus {
    /// foldhash: fast on short ids, randomly seeded per map.
    by_id: DashMap<Arc<str>, Arc<Sku>, foldhash::fast::RandomState>,
    /// The same SKUs in creation order.
    list: RwLock<Vec<Arc<Sku>>>,
}

impl Skus {
    /// The SKU `id`.
    pub fn get(&self, id: &str) -> Option<Arc<Sku>> {
        self.by_id.get(id).map(|s| s.value().clone())
    }

    /// Adds a SKU (journal apply, snapshot restore, the fleet mirror).
    pub fn add(&self, sku: Arc<Sku>) {
        self.by_id.insert(sku.id.clone(), sku.clone());
        self.list.write().expect("sku list lock").push(sku);
    }

    /// Every SKU, in creation order.
    pub fn list(&self) -> Vec<Arc<Sku>> {
        self.list.read().expect("sku list lock").clone()
    }

    /// Every SKU's sale state at `now_ms`, in creation order.
    pub fn states(&self, now_ms: i64) -> Vec<SkuState> {
        self.list().iter().map(|s| s.view(now_ms)).collect()
    }
}

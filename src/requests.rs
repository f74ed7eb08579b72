//! A room's idempotency table: where every `(user, req)` stands, pending or the order it made.
//!
//! Every buy looks here twice, once when it begins (on the buyer's runtime thread) and once
//! when its order becomes durable (on the journal writer), and the table holds every request of
//! the stream, so it is large and each look is a cache miss. It is built to miss as little as
//! possible: shards of `hashbrown::HashTable` behind `RwLock`s, each entry keeping its hash
//! (a resize never touches the key strings) and the very `Arc`s of the user id and `req` that
//! the order carries, so the writer finds its entry by pointer equality without reading a
//! string. It replaced a `DashMap<String, _>` whose two lookups a buy were ~19% of the hub's
//! CPU at 120,000 acks/s (BENCHMARKS.md, "Durable orders").

use std::hash::{BuildHasher, Hasher};
use std::sync::{Arc, RwLock};

use hashbrown::hash_table::{Entry, HashTable};

use crate::journal::OrderRecord;

/// Shards of the table, of uneven sizes: [`pick_shard`].
const SHARDS: usize = 64;

/// Where a `(user, req)` stands.
#[derive(Debug)]
pub enum RequestState {
    /// Decided and waiting for the journal. `waited` is set when another connection waits for
    /// the same request, so that whoever settles it wakes the room's waiters.
    Pending { waited: bool },
    /// Made this order.
    Done(Arc<OrderRecord>),
}

#[derive(Debug)]
struct Slot {
    hash: u64,
    user: Arc<str>,
    req: Arc<str>,
    state: RequestState,
}

impl Slot {
    fn is(&self, hash: u64, user: &str, req: &str) -> bool {
        self.hash == hash && &*self.user == user && &*self.req == req
    }
}

/// What [`RequestTable::begin`] found.
#[derive(Debug)]
pub enum Began {
    /// New: now pending, owned by the caller. The `req` is the table's own copy; the order
    /// should carry this `Arc` (the writer then finds the entry by pointer).
    Fresh(Arc<str>),
    /// It made this order.
    Done(Arc<OrderRecord>),
    /// Another connection decides it; now marked as waited for.
    Pending,
}

/// A request as one look sees it.
#[derive(Debug)]
pub enum Seen {
    Absent,
    Pending,
    Done(Arc<OrderRecord>),
}

/// The table. `Sync`; every method takes one shard's lock once.
#[derive(Debug)]
pub struct RequestTable {
    shards: Box<[RwLock<HashTable<Slot>>]>,
    hasher: foldhash::fast::RandomState,
}

/// Which shard a hash goes to: shard `i` takes the share `2^((i+1)/SHARDS) - 2^(i/SHARDS)`
/// of the requests (the hash's bits as `u` in `[0, 1)`, the shard is `⌊SHARDS·log2(1+u)⌋`),
/// so the shards' loads grow steadily over one doubling, from the first to the last.
///
/// Why uneven on purpose: a hash table doubles (and moves every entry) when it is 7/8 full.
/// Equal shards fill at the same pace, so all of them doubled within a few thousand buys of
/// each other: at about 917,000 requests the whole table was moved in one burst (the p99 of
/// that second at 107,000 buys/s went from about 6 ms to 13-44 ms). With the loads spread
/// over a factor of two, the shards double one at a time, evenly spaced, each moving
/// 1/90 to 1/45 of the table.
fn pick_shard(hash: u64) -> usize {
    // hashbrown uses the low bits for the bucket and the top 7 for its tags: take others.
    let u = ((hash >> 40) & 0xffff) as f64 / 65536.0;
    (((1.0 + u).log2() * SHARDS as f64) as usize).min(SHARDS - 1)
}

/// Shard `i`'s expected share of the requests.
fn share(i: usize) -> f64 {
    let s = SHARDS as f64;
    ((i + 1) as f64 / s).exp2() - (i as f64 / s).exp2()
}

impl Default for RequestTable {
    fn default() -> Self {
        Self::with_capacity(0)
    }
}

impl RequestTable {
    /// A table with room for `n` requests without a resize.
    pub fn with_capacity(n: usize) -> Self {
        RequestTable {
            shards: (0..SHARDS)
                .map(|i| {
                    RwLock::new(HashTable::with_capacity(
                        (n as f64 * share(i)).ceil() as usize
                    ))
                })
                .collect(),
            hasher: Default::default(),
        }
    }

    fn hash(&self, user: &str, req: &str) -> u64 {
        let mut h = self.hasher.build_hasher();
        h.write_usize(user.len());
        h.write(user.as_bytes());
        h.write(req.as_bytes());
        h.finish()
    }

    fn shard(&self, hash: u64) -> &RwLock<HashTable<Slot>> {
        &self.shards[pick_shard(hash)]
    }

    /// Begins `(user, req)` unless it made an order or is being decided.
    pub fn begin(&self, user: &Arc<str>, req: &str) -> Began {
        let hash = self.hash(user, req);
        let mut shard = self.shard(hash).write().expect("request table lock");
        match shard.entry(hash, |s| s.is(hash, user, req), |s| s.hash) {
            Entry::Occupied(mut o) => match &mut o.get_mut().state {
                RequestState::Done(order) => Began::Done(order.clone()),
                RequestState::Pending { waited } => {
                    *waited = true;
                    Began::Pending
                }
            },
            Entry::Vacant(v) => {
                let req: Arc<str> = Arc::from(req);
                v.insert(Slot {
                    hash,
                    user: user.clone(),
                    req: req.clone(),
                    state: RequestState::Pending { waited: false },
                });
                Began::Fresh(req)
            }
        }
    }

    /// Forgets a pending request; `Some(waited)` when it was pending.
    pub fn forget_pending(&self, user: &str, req: &str) -> Option<bool> {
        let hash = self.hash(user, req);
        let mut shard = self.shard(hash).write().expect("request table lock");
        match shard.find_entry(hash, |s| s.is(hash, user, req)) {
            Ok(o) => match o.get().state {
                RequestState::Pending { waited } => {
                    o.remove();
                    Some(waited)
                }
                RequestState::Done(_) => None,
            },
            Err(_) => None,
        }
    }

    /// One look; with `mark_waited`, a pending request is marked as waited for.
    pub fn look(&self, user: &str, req: &str, mark_waited: bool) -> Seen {
        let hash = self.hash(user, req);
        let seen = |state: &RequestState| match state {
            RequestState::Pending { .. } => Seen::Pending,
            RequestState::Done(o) => Seen::Done(o.clone()),
        };
        if !mark_waited {
            let shard = self.shard(hash).read().expect("request table lock");
            return shard
                .find(hash, |s| s.is(hash, user, req))
                .map_or(Seen::Absent, |s| seen(&s.state));
        }
        let mut shard = self.shard(hash).write().expect("request table lock");
        match shard.find_mut(hash, |s| s.is(hash, user, req)) {
            None => Seen::Absent,
            Some(s) => {
                if let RequestState::Pending { waited } = &mut s.state {
                    *waited = true;
                }
                seen(&s.state)
            }
        }
    }

    /// Marks the order's request done. `Some(waited)` when it was there (pending since
    /// [`RequestTable::begin`]); `None` when nobody began it, and then it is inserted done.
    pub fn complete(&self, order: &Arc<OrderRecord>) -> Option<bool> {
        let (user, req) = (&order.user, &order.req);
        let hash = self.hash(user, req);
        let mut shard = self.shard(hash).write().expect("request table lock");
        // The same `Arc`s as the entry's, when the order was begun here: no string is read.
        let found = shard.find_mut(hash, |s| {
            s.hash == hash
                && (Arc::ptr_eq(&s.req, req) || *s.req == **req)
                && (Arc::ptr_eq(&s.user, user) || *s.user == **user)
        });
        match found {
            Some(s) => {
                let waited = matches!(s.state, RequestState::Pending { waited: true });
                s.state = RequestState::Done(order.clone());
                Some(waited)
            }
            None => {
                shard.insert_unique(
                    hash,
                    Slot {
                        hash,
                        user: user.clone(),
                        req: req.clone(),
                        state: RequestState::Done(order.clone()),
                    },
                    |s| s.hash,
                );
                None
            }
        }
    }

    /// Records an order nobody began in this process (replay, snapshot restore).
    pub fn insert_done(&self, order: &Arc<OrderRecord>) {
        self.complete(order);
    }

    /// Requests held, pending or done.
    pub fn len(&self) -> usize {
        self.shards
            .iter()
            .map(|s| s.read().expect("request table lock").len())
            .sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// An order of one unit of `A1` in room `r` (also the room's tests' order).
    pub(crate) fn order(user: &Arc<str>, req: &Arc<str>) -> Arc<OrderRecord> {
        Arc::new(OrderRecord {
            seq: 1,
            number: 1,
            room: "r".into(),
            sku: "A1".into(),
            user: user.clone(),
            req: req.clone(),
            qty: 1,
            price_fen: 100,
            amount_fen: 100,
            referrer: None,
            ts_ms: 0,
            left_after: 0,
            hub: None,
        })
    }

    /// The shards' shares grow steadily from the first to the last, over one doubling, so
    /// that no two shards reach a resize threshold together, and the requests really go there.
    #[test]
    fn shard_shares_spread_over_one_doubling() {
        let shares: Vec<f64> = (0..SHARDS).map(share).collect();
        assert!((shares.iter().sum::<f64>() - 1.0).abs() < 1e-9);
        assert!(shares.windows(2).all(|w| w[0] < w[1]));
        assert!((shares[SHARDS - 1] / shares[0] - 2.0).abs() < 0.05);
        let t = RequestTable::with_capacity(0);
        let user: Arc<str> = Arc::from("u");
        let n = 200_000;
        for i in 0..n {
            assert!(matches!(t.begin(&user, &format!("r{i}")), Began::Fresh(_)));
        }
        for (i, shard) in t.shards.iter().enumerate() {
            let want = n as f64 * shares[i];
            let got = shard.read().unwrap().len() as f64;
            // ~2,000-4,400 each: 6 standard deviations is under 15%.
            assert!(
                (got - want).abs() < want * 0.15,
                "shard {i}: {got} of {want}"
            );
        }
    }

    /// The table against a sequential model (a `HashMap` of strings), over random operations
    /// on a few users and reqs, including ones whose concatenations collide ("ab"+"c" and
    /// "a"+"bc") and orders that carry copies of the strings instead of the table's `Arc`s.
    #[test]
    fn agrees_with_a_map_of_strings() {
        use proptest::prelude::*;
        use std::collections::HashMap;
        #[derive(Debug, Clone)]
        enum Op {
            Begin(usize, usize),
            Forget(usize, usize),
            Complete(usize, usize, bool),
            Look(usize, usize),
        }
        let names = ["a", "ab", "bc", "c", "u1"];
        let op = prop_oneof![
            (0..5usize, 0..5usize).prop_map(|(u, r)| Op::Begin(u, r)),
            (0..5usize, 0..5usize).prop_map(|(u, r)| Op::Forget(u, r)),
            (0..5usize, 0..5usize, any::<bool>()).prop_map(|(u, r, c)| Op::Complete(u, r, c)),
            (0..5usize, 0..5usize).prop_map(|(u, r)| Op::Look(u, r)),
        ];
        proptest!(|(ops in proptest::collection::vec(op, 1..200))| {
            let table = RequestTable::with_capacity(0);
            // (user, req) -> Some(order req) when done, None when pending
            let mut model: HashMap<(String, String), Option<u64>> = HashMap::new();
            let mut arcs: HashMap<(String, String), Arc<str>> = HashMap::new();
            let users: Vec<Arc<str>> = names.iter().map(|n| Arc::from(*n)).collect();
            for (i, op) in ops.into_iter().enumerate() {
                match op {
                    Op::Begin(u, r) => {
                        let key = (names[u].to_owned(), names[r].to_owned());
                        let got = table.begin(&users[u], names[r]);
                        match (model.get(&key), got) {
                            (None, Began::Fresh(req)) => {
                                prop_assert_eq!(&*req, names[r]);
                                arcs.insert(key.clone(), req);
                                model.insert(key, None);
                            }
                            (Some(None), Began::Pending) => {}
                            (Some(Some(n)), Began::Done(o)) => prop_assert_eq!(o.number, *n),
                            (m, g) => prop_assert!(false, "model {:?}, table {:?}", m, g),
                        }
                    }
                    Op::Forget(u, r) => {
                        let key = (names[u].to_owned(), names[r].to_owned());
                        let got = table.forget_pending(names[u], names[r]);
                        let pending = matches!(model.get(&key), Some(None));
                        prop_assert_eq!(got.is_some(), pending);
                        if pending {
                            model.remove(&key);
                        }
                    }
                    Op::Complete(u, r, copy) => {
                        let key = (names[u].to_owned(), names[r].to_owned());
                        if matches!(model.get(&key), Some(Some(_))) {
                            continue; // an order is made once
                        }
                        let req: Arc<str> = match (copy, arcs.get(&key)) {
                            (false, Some(a)) => a.clone(),
                            _ => Arc::from(names[r]),
                        };
                        let user: Arc<str> = if copy { Arc::from(names[u]) } else { users[u].clone() };
                        let mut o = order(&user, &req);
                        Arc::get_mut(&mut o).unwrap().number = i as u64;
                        let got = table.complete(&o);
                        prop_assert_eq!(got.is_some(), model.contains_key(&key));
                        model.insert(key, Some(i as u64));
                    }
                    Op::Look(u, r) => {
                        let key = (names[u].to_owned(), names[r].to_owned());
                        match (model.get(&key), table.look(names[u], names[r], false)) {
                            (None, Seen::Absent) | (Some(None), Seen::Pending) => {}
                            (Some(Some(n)), Seen::Done(o)) => prop_assert_eq!(o.number, *n),
                            (m, g) => prop_assert!(false, "model {:?}, table {:?}", m, g),
                        }
                    }
                }
                prop_assert_eq!(table.len(), model.len());
            }
        });
    }
}

//! A room's idempotency table: where every `(user, req)` stands, pending or the order it made,
//! and [`Requests`], the table with the waiting a duplicate in flight does on top of it.
//!
//! Every buy looks here when it begins (on the buyer's runtime thread) and again when its order
//! becomes durable (on the journal writer), and the table holds every request of the stream,
//! so it is large and each random look is a cache miss. It is built to miss as little as
//! possible:
//! - Shards behind `RwLock`s, each an `Index` of 8-byte buckets (a 32-bit key from the hash
//!   and the entry's place), probed linearly, over the entries themselves, which are appended
//!   in the order requests begin, in chunks that never move. A resize moves only the buckets
//!   and reads no entry; a new request reads and writes one random cache line of buckets and
//!   the tail of its shard.
//! - [`RequestTable::begin`] hands back a [`Ticket`], the entry's place, which the order
//!   carries ([`OrderRecord::begun`]): the writer's [`RequestTable::complete`] goes straight to
//!   the entry it marks done, with no hash look-up, and checks it by pointer (the entry keeps
//!   the very `Arc` of the `req` the order carries).
//!
//! A request that made nothing is forgotten: its bucket goes, and its entry's place is reused
//! by a later request, so a stream of refused buys does not grow the table. Why this shape and
//! not a general-purpose map: BENCHMARKS.md.

use std::hash::{BuildHasher, Hasher};
use std::sync::{Arc, RwLock};

use tokio::sync::Notify;

use crate::journal::OrderRecord;

/// Shards of the table, of uneven sizes: [`pick_shard`].
const SHARDS: usize = 64;
/// Entries per chunk of a shard's entry store: a chunk is allocated whole and never moves.
const CHUNK: usize = 1024;

/// Where a `(user, req)` stands.
#[derive(Debug)]
pub enum RequestState {
    /// Decided and waiting for the journal. `waited` is set when another connection waits for
    /// the same request, so that whoever settles it wakes the room's waiters.
    Pending { waited: bool },
    /// Made this order.
    Done(Arc<OrderRecord>),
}

/// One request: what the buckets point at.
#[derive(Debug)]
struct Slot {
    user: Arc<str>,
    req: Arc<str>,
    /// `None`: forgotten, the place is free for the next request.
    state: Option<RequestState>,
}

impl Slot {
    fn is(&self, user: &str, req: &str) -> bool {
        &*self.user == user && &*self.req == req
    }
}

/// A bucket of a shard's index: a 32-bit key from the request's hash, and the place of its
/// entry in the shard's store ([`EMPTY`] for none).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(C, align(8))]
struct Bucket {
    key: u32,
    at: u32,
}

/// The place of an empty bucket: no shard holds 2^32 - 1 requests.
const EMPTY: u32 = u32::MAX;

/// A shard's index: open addressing with linear probing over [`Bucket`]s, at most 3/4 full.
///
/// Why not a `hashbrown::HashTable`: hashbrown keeps a control byte a bucket in an array of
/// its own, so a new request would miss the cache twice, on its control group and on the
/// bucket it then writes (BENCHMARKS.md). Here the probe reads the buckets themselves, eight
/// to a cache line, and the insert writes the line the probe just read: one miss. A bucket's
/// home is its key's low bits, so a resize rehashes from the buckets alone, and a removal
/// shifts the probe run back (no tombstones).
#[derive(Debug)]
struct Index {
    buckets: Box<[Bucket]>,
    len: usize,
}

impl Default for Index {
    fn default() -> Self {
        Self::with_capacity(0)
    }
}

impl Index {
    /// Room for `n` buckets in use without a resize.
    fn with_capacity(n: usize) -> Self {
        let size = (n.saturating_mul(4) / 3 + 1).next_power_of_two().max(8);
        Index {
            buckets: vec![Bucket { key: 0, at: EMPTY }; size].into_boxed_slice(),
            len: 0,
        }
    }

    fn mask(&self) -> usize {
        self.buckets.len() - 1
    }

    fn home(&self, key: u32) -> usize {
        key as usize & self.mask()
    }

    fn len(&self) -> usize {
        self.len
    }

    /// The position of the first bucket under `key` whose entry `same` accepts.
    fn find(&self, key: u32, mut same: impl FnMut(u32) -> bool) -> Option<usize> {
        let mut pos = self.home(key);
        loop {
            let b = self.buckets[pos];
            if b.at == EMPTY {
                return None;
            }
            if b.key == key && same(b.at) {
                return Some(pos);
            }
            pos = (pos + 1) & self.mask();
        }
    }

    /// Adds a bucket (its entry is not indexed yet).
    fn insert(&mut self, key: u32, at: u32) {
        debug_assert_ne!(at, EMPTY);
        if (self.len + 1) * 4 > self.buckets.len() * 3 {
            self.grow();
        }
        self.place(Bucket { key, at });
        self.len += 1;
    }

    fn place(&mut self, b: Bucket) {
        let mut pos = self.home(b.key);
        while self.buckets[pos].at != EMPTY {
            pos = (pos + 1) & self.mask();
        }
        self.buckets[pos] = b;
    }

    fn grow(&mut self) {
        let size = self.buckets.len() * 2;
        let old = std::mem::replace(
            &mut self.buckets,
            vec![Bucket { key: 0, at: EMPTY }; size].into_boxed_slice(),
        );
        for b in old.iter().filter(|b| b.at != EMPTY) {
            self.place(*b);
        }
    }

    /// Removes the bucket at `pos` and shifts back the buckets of its probe run that may move
    /// closer to their homes, so that every bucket stays reachable from its home.
    fn remove(&mut self, pos: usize) {
        let mask = self.mask();
        let mut hole = pos;
        let mut next = pos;
        loop {
            next = (next + 1) & mask;
            let b = self.buckets[next];
            if b.at == EMPTY {
                break;
            }
            // `b` may fill the hole when the hole lies on its way, from its home to `next`.
            let from_home = next.wrapping_sub(self.home(b.key)) & mask;
            let from_hole = next.wrapping_sub(hole) & mask;
            if from_home >= from_hole {
                self.buckets[hole] = b;
                hole = next;
            }
        }
        self.buckets[hole] = Bucket { key: 0, at: EMPTY };
        self.len -= 1;
    }
}

pub use crate::journal::Ticket;

/// One shard: the index and the entries it points at.
#[derive(Debug, Default)]
struct Shard {
    index: Index,
    /// Chunks of [`CHUNK`] entries, filled in order; a chunk never grows past its capacity,
    /// so an entry never moves.
    chunks: Vec<Vec<Slot>>,
    /// Places of forgotten entries, reused first.
    free: Vec<u32>,
}

impl Shard {
    fn with_capacity(n: usize) -> Self {
        Shard {
            index: Index::with_capacity(n),
            chunks: Vec::new(),
            free: Vec::new(),
        }
    }

    fn slot(&self, at: u32) -> &Slot {
        let at = at as usize;
        &self.chunks[at / CHUNK][at % CHUNK]
    }

    fn slot_mut(&mut self, at: u32) -> &mut Slot {
        let at = at as usize;
        &mut self.chunks[at / CHUNK][at % CHUNK]
    }

    /// Where the bucket of `(user, req)` is, and its entry's place; `same` says whether an
    /// entry is that request.
    fn find(&self, key: u32, same: impl Fn(&Slot) -> bool) -> Option<(usize, u32)> {
        let pos = self.index.find(key, |at| same(self.slot(at)))?;
        Some((pos, self.index.buckets[pos].at))
    }

    /// Stores a new entry and indexes it under `key` (not there yet); returns its place.
    fn insert(&mut self, key: u32, slot: Slot) -> u32 {
        let at = match self.free.pop() {
            Some(at) => {
                *self.slot_mut(at) = slot;
                at
            }
            None => {
                if self.chunks.last().is_none_or(|c| c.len() == CHUNK) {
                    self.chunks.push(Vec::with_capacity(CHUNK));
                }
                let n = (self.chunks.len() - 1) * CHUNK;
                let last = self.chunks.last_mut().expect("a chunk with room");
                last.push(slot);
                u32::try_from(n + last.len() - 1).expect("under 2^32 requests a shard")
            }
        };
        self.index.insert(key, at);
        at
    }
}

/// What [`RequestTable::begin`] found.
#[derive(Debug)]
pub enum Began {
    /// New: now pending, owned by the caller. The `req` is the table's own copy; the order
    /// should carry this `Arc` and the ticket.
    Fresh(Arc<str>, Ticket),
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
    shards: Box<[RwLock<Shard>]>,
    hasher: foldhash::fast::RandomState,
}

/// Which shard a hash goes to: shard `i` takes the share `2^((i+1)/SHARDS) - 2^(i/SHARDS)`
/// of the requests (the hash's bits as `u` in `[0, 1)`, the shard is `⌊SHARDS·log2(1+u)⌋`),
/// so the shards' loads grow steadily over one doubling, from the first to the last.
///
/// Why uneven on purpose: a shard's index doubles (and moves every bucket) when it is 3/4
/// full. Equal shards would fill at the same pace and double at nearly the same moment,
/// moving the whole table in one burst, a spike in the ack latency (BENCHMARKS.md). With the
/// loads spread over a factor of two, the shards double one at a time, evenly spaced, each
/// moving about 1/90 to 1/45 of the table.
fn pick_shard(hash: u64) -> usize {
    // The bucket key takes the low 32 bits: take others.
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
                .map(|i| RwLock::new(Shard::with_capacity((n as f64 * share(i)).ceil() as usize)))
                .collect(),
            hasher: Default::default(),
        }
    }

    /// The shard and the bucket key of `(user, req)`.
    fn place(&self, user: &str, req: &str) -> (usize, u32) {
        let mut h = self.hasher.build_hasher();
        h.write_usize(user.len());
        h.write(user.as_bytes());
        h.write(req.as_bytes());
        let hash = h.finish();
        (pick_shard(hash), hash as u32)
    }

    fn shard(&self, i: usize) -> &RwLock<Shard> {
        &self.shards[i]
    }

    /// Begins `(user, req)` unless it made an order or is being decided.
    pub fn begin(&self, user: &Arc<str>, req: &str) -> Began {
        let (i, key) = self.place(user, req);
        let mut shard = self.shard(i).write().expect("request table lock");
        let shard = &mut *shard;
        if let Some((_, at)) = shard.find(key, |s| s.is(user, req)) {
            return match shard.slot_mut(at).state.as_mut() {
                Some(RequestState::Done(order)) => Began::Done(order.clone()),
                Some(RequestState::Pending { waited }) => {
                    *waited = true;
                    Began::Pending
                }
                None => unreachable!("a forgotten entry is not indexed"),
            };
        }
        let req: Arc<str> = Arc::from(req);
        let at = shard.insert(
            key,
            Slot {
                user: user.clone(),
                req: req.clone(),
                state: Some(RequestState::Pending { waited: false }),
            },
        );
        let ticket = Ticket {
            shard: i as u32,
            at,
        };
        Began::Fresh(req, ticket)
    }

    /// Forgets a pending request; `Some(waited)` when it was pending.
    pub fn forget_pending(&self, user: &str, req: &str) -> Option<bool> {
        let (i, key) = self.place(user, req);
        let mut shard = self.shard(i).write().expect("request table lock");
        let (pos, at) = shard.find(key, |s| s.is(user, req))?;
        let Some(RequestState::Pending { waited }) = shard.slot(at).state else {
            return None;
        };
        shard.index.remove(pos);
        let s = shard.slot_mut(at);
        s.state = None;
        // The strings go now; the place keeps two cheap pointers until it is reused.
        s.req = s.user.clone();
        shard.free.push(at);
        Some(waited)
    }

    /// One look; with `mark_waited`, a pending request is marked as waited for.
    pub fn look(&self, user: &str, req: &str, mark_waited: bool) -> Seen {
        let (i, key) = self.place(user, req);
        let same = |s: &Slot| s.is(user, req);
        let seen = |state: &Option<RequestState>| match state {
            Some(RequestState::Pending { .. }) => Seen::Pending,
            Some(RequestState::Done(o)) => Seen::Done(o.clone()),
            None => unreachable!("a forgotten entry is not indexed"),
        };
        if !mark_waited {
            let shard = self.shard(i).read().expect("request table lock");
            return shard
                .find(key, same)
                .map_or(Seen::Absent, |(_, at)| seen(&shard.slot(at).state));
        }
        let mut shard = self.shard(i).write().expect("request table lock");
        let Some((_, at)) = shard.find(key, same) else {
            return Seen::Absent;
        };
        let s = shard.slot_mut(at);
        if let Some(RequestState::Pending { waited }) = &mut s.state {
            *waited = true;
        }
        seen(&s.state)
    }

    /// Marks the order's request done. `Some(waited)` when it was there (pending since
    /// [`RequestTable::begin`]); `None` when nobody began it, and then it is inserted done.
    /// With the order's [`Ticket`] no look-up is made.
    pub fn complete(&self, order: &Arc<OrderRecord>) -> Option<bool> {
        let (user, req) = (&order.user, &order.req);
        if let Some(t) = order.begun {
            let mut shard = self
                .shard(t.shard as usize)
                .write()
                .expect("request table lock");
            let s = shard.slot_mut(t.at);
            // The entry keeps the very `Arc` the order carries, alive as long as the order, so
            // no other request's entry can have it.
            if Arc::ptr_eq(&s.req, req) {
                if let Some(RequestState::Pending { waited }) = s.state {
                    s.state = Some(RequestState::Done(order.clone()));
                    return Some(waited);
                }
            }
            debug_assert!(false, "a ticket that is not its order's pending entry");
        }
        let (i, key) = self.place(user, req);
        let mut shard = self.shard(i).write().expect("request table lock");
        // The same `Arc`s as the entry's, when the order was begun here: no string is read.
        let same = |s: &Slot| {
            (Arc::ptr_eq(&s.req, req) || *s.req == **req)
                && (Arc::ptr_eq(&s.user, user) || *s.user == **user)
        };
        match shard.find(key, same) {
            Some((_, at)) => {
                let s = shard.slot_mut(at);
                let waited = matches!(s.state, Some(RequestState::Pending { waited: true }));
                s.state = Some(RequestState::Done(order.clone()));
                Some(waited)
            }
            None => {
                shard.insert(
                    key,
                    Slot {
                        user: user.clone(),
                        req: req.clone(),
                        state: Some(RequestState::Done(order.clone())),
                    },
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
            .map(|s| s.read().expect("request table lock").index.len())
            .sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// What [`Requests::begin`] found.
#[derive(Debug)]
pub enum Begin {
    /// The caller now owns the request and must end it: by the order's commit
    /// ([`crate::rooms::room::Room::add_order`]), or by [`Requests::end`]. The order should
    /// carry this `req` (the table's own `Arc`) and the ticket ([`OrderRecord::begun`]).
    Fresh(Arc<str>, Ticket),
    /// The request already made this order.
    Done(Arc<OrderRecord>),
}

/// A room's requests: the [`RequestTable`], and the wake-ups of those who wait for a request
/// another connection is deciding (a duplicate `req` in flight, or a `status` of it).
#[derive(Debug, Default)]
pub struct Requests {
    table: RequestTable,
    /// Woken when a request that somebody waits for is settled (made an order or forgotten).
    /// One per room: duplicates in flight are rare, so a waiter that wakes for another
    /// request only looks again.
    settled: Notify,
}

impl Requests {
    /// Room for `n` requests without a resize (a snapshot being restored).
    pub fn with_capacity(n: usize) -> Self {
        Requests {
            table: RequestTable::with_capacity(n),
            settled: Notify::new(),
        }
    }

    /// Starts deciding `(user, req)` unless it made an order; while another connection is
    /// deciding it, waits for that decision and looks again.
    pub async fn begin(&self, user: &Arc<str>, req: &str) -> Begin {
        loop {
            if let Some(b) = self.try_begin(user, req) {
                return b;
            }
            // Pending elsewhere (and marked as waited for). Listen first, then look again, so
            // a settle between the two looks is never missed.
            let settled = self.settled.notified();
            tokio::pin!(settled);
            settled.as_mut().enable();
            if let Some(b) = self.try_begin(user, req) {
                return b;
            }
            settled.await;
        }
    }

    /// [`Requests::begin`] without waiting: `None` while another connection decides the
    /// request (it is then marked as waited for; call [`Requests::begin`]).
    #[inline]
    pub fn try_begin(&self, user: &Arc<str>, req: &str) -> Option<Begin> {
        match self.table.begin(user, req) {
            Began::Fresh(req, ticket) => Some(Begin::Fresh(req, ticket)),
            Began::Done(order) => Some(Begin::Done(order)),
            Began::Pending => None,
        }
    }

    /// Forgets a request that made nothing, waking whoever waits on it.
    pub fn end(&self, user: &str, req: &str) {
        if self.table.forget_pending(user, req) == Some(true) {
            self.settled.notify_waiters();
        }
    }

    /// The order `(user, req)` made, if it made one by now (a pending request has not).
    pub fn order_of(&self, user: &str, req: &str) -> Option<Arc<OrderRecord>> {
        match self.table.look(user, req, false) {
            Seen::Done(o) => Some(o),
            Seen::Absent | Seen::Pending => None,
        }
    }

    /// Whether `(user, req)` is known here: the order it made, waiting while it is decided;
    /// `None` for a request this room never saw (or that made nothing).
    pub async fn settled(&self, user: &str, req: &str) -> Option<Arc<OrderRecord>> {
        loop {
            match self.table.look(user, req, false) {
                Seen::Absent => return None,
                Seen::Done(o) => return Some(o),
                Seen::Pending => {}
            }
            let settled = self.settled.notified();
            tokio::pin!(settled);
            settled.as_mut().enable();
            match self.table.look(user, req, true) {
                Seen::Absent => return None,
                Seen::Done(o) => return Some(o),
                Seen::Pending => settled.await,
            }
        }
    }

    /// Marks the order's request done (inserting it done when nobody began it here); returns
    /// whether somebody waits for it, who must then be woken by [`Requests::wake_waiters`].
    /// The room calls it when it records the order ([`crate::rooms::room::Room::add_order`]).
    #[inline]
    pub(super) fn complete(&self, order: &Arc<OrderRecord>) -> bool {
        self.table.complete(order) == Some(true)
    }

    /// Records an order nobody began in this process (replay, snapshot restore): nobody waits.
    #[inline]
    pub(super) fn insert_done(&self, order: &Arc<OrderRecord>) {
        self.table.insert_done(order);
    }

    /// Wakes everybody waiting for a request, after [`Requests::complete`] said somebody does.
    #[inline]
    pub(super) fn wake_waiters(&self) {
        self.settled.notify_waiters();
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
            pay_by_ms: None,
            hub: None,
            begun: None,
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
            assert!(matches!(t.begin(&user, &format!("r{i}")), Began::Fresh(..)));
        }
        for (i, shard) in t.shards.iter().enumerate() {
            let want = n as f64 * shares[i];
            let got = shard.read().unwrap().index.len() as f64;
            // ~2,000-4,400 each: 6 standard deviations is under 15%.
            assert!(
                (got - want).abs() < want * 0.15,
                "shard {i}: {got} of {want}"
            );
        }
    }

    /// The index against a map of places, over random inserts and removals with keys from a
    /// small range (so that runs of equal and neighbouring homes form, wrap around the end and
    /// shift back on removal) and enough buckets to grow several times.
    #[test]
    fn index_agrees_with_a_map_of_places() {
        use proptest::prelude::*;
        use std::collections::HashMap;
        proptest!(|(ops in proptest::collection::vec((any::<bool>(), 0..64u32, 0..4u32), 1..600),
                    start in 0..40usize)| {
            let mut index = Index::with_capacity(start);
            // place -> key
            let mut model: HashMap<u32, u32> = HashMap::new();
            let mut next_at = 0u32;
            for (add, k, wrap) in ops {
                // High bits that differ, low bits that collide: homes depend on the low bits.
                let key = k | (wrap << 30);
                if add || model.is_empty() {
                    index.insert(key, next_at);
                    model.insert(next_at, key);
                    next_at += 1;
                } else {
                    // Remove the entry with the smallest place under the key nearest `key`.
                    let (&at, &key) = model.iter().min_by_key(|(at, kk)| ((**kk ^ key), **at)).unwrap();
                    let pos = index.find(key, |a| a == at);
                    prop_assert!(pos.is_some(), "place {} under key {} is lost", at, key);
                    index.remove(pos.unwrap());
                    model.remove(&at);
                }
                prop_assert_eq!(index.len(), model.len());
                prop_assert!(index.len() * 4 <= index.buckets.len() * 3);
                for (&at, &key) in &model {
                    let pos = index.find(key, |a| a == at);
                    prop_assert!(pos.is_some(), "place {} under key {} is lost", at, key);
                    prop_assert_eq!(index.buckets[pos.unwrap()], Bucket { key, at });
                }
                let held = index.buckets.iter().filter(|b| b.at != EMPTY).count();
                prop_assert_eq!(held, model.len());
                prop_assert!(index.find(key ^ 0x8000_0000, |_| true).is_none()
                    || model.values().any(|&k| k == key ^ 0x8000_0000));
            }
        });
    }

    /// A request that made nothing leaves its place to the next one: a stream of refused buys
    /// does not grow the table.
    #[test]
    fn forgotten_places_are_reused() {
        let t = RequestTable::with_capacity(0);
        let user: Arc<str> = Arc::from("u");
        let mut places = std::collections::HashSet::new();
        for i in 0..10_000 {
            let Began::Fresh(_, ticket) = t.begin(&user, &format!("r{i}")) else {
                panic!("r{i} is new");
            };
            places.insert(ticket);
            assert_eq!(t.forget_pending(&user, &format!("r{i}")), Some(false));
        }
        assert!(t.is_empty());
        assert!(
            places.len() <= SHARDS,
            "{} places for one at a time",
            places.len()
        );
    }

    /// The table against a sequential model (a `HashMap` of strings), over random operations
    /// on a few users and reqs, including ones whose concatenations collide ("ab"+"c" and
    /// "a"+"bc"), orders completed by their ticket (as the hub's are), and orders that carry
    /// copies of the strings and no ticket (replay, fleet mode).
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
            // The claim of each pending request: its `req` and ticket.
            let mut claims: HashMap<(String, String), (Arc<str>, Ticket)> = HashMap::new();
            let users: Vec<Arc<str>> = names.iter().map(|n| Arc::from(*n)).collect();
            for (i, op) in ops.into_iter().enumerate() {
                match op {
                    Op::Begin(u, r) => {
                        let key = (names[u].to_owned(), names[r].to_owned());
                        let got = table.begin(&users[u], names[r]);
                        match (model.get(&key), got) {
                            (None, Began::Fresh(req, ticket)) => {
                                prop_assert_eq!(&*req, names[r]);
                                claims.insert(key.clone(), (req, ticket));
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
                            claims.remove(&key);
                        }
                    }
                    Op::Complete(u, r, copy) => {
                        let key = (names[u].to_owned(), names[r].to_owned());
                        if matches!(model.get(&key), Some(Some(_))) {
                            continue; // an order is made once
                        }
                        let claim = claims.remove(&key);
                        let (req, ticket) = match (copy, claim) {
                            (false, Some((req, ticket))) => (req, Some(ticket)),
                            _ => (Arc::from(names[r]), None),
                        };
                        let user: Arc<str> = if copy { Arc::from(names[u]) } else { users[u].clone() };
                        let mut o = order(&user, &req);
                        let o_mut = Arc::get_mut(&mut o).unwrap();
                        o_mut.number = i as u64;
                        o_mut.begun = ticket;
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

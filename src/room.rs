//! Everything the hub keeps for one live room: its SKUs, the idempotency table, the durable
//! orders in seq order, live audience figures, and the channels that carry pushes.

use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};

use axum::extract::ws::Utf8Bytes;
use dashmap::mapref::entry::Entry;
use dashmap::{DashMap, DashSet};
use tokio::sync::{broadcast, watch, Notify};

use crate::dashboard::{Fanout, Published};
use crate::ids::KEY_SEPARATOR;
use crate::inventory::Sku;
use crate::journal::OrderRecord;
use crate::protocol::{RejectCode, SkuState};

/// Pushes (stock, sale) that may wait for a slow buyer before it skips to the current state.
pub const BUYER_PUSH_BUFFER: usize = 256;

/// Where a `(user, req)` stands.
#[derive(Debug)]
pub enum RequestState {
    /// Decided and waiting for the journal. Dropping the sender wakes whoever waits on it.
    Pending(watch::Sender<()>),
    /// Made this order.
    Done(Arc<OrderRecord>),
}

/// What [`Room::begin_request`] found.
pub enum Begin {
    /// The caller now owns the request and must end it: by the order's commit, or by
    /// [`Room::end_request`].
    Fresh,
    /// The request already made this order.
    Done(Arc<OrderRecord>),
    /// Another connection is deciding the same request; wait, then ask again.
    Wait(watch::Receiver<()>),
}

/// Audience and buy-path figures of a room, updated by buyer tasks.
#[derive(Debug)]
pub struct LiveStats {
    pub viewers: AtomicU64,
    pub peak_viewers: AtomicU64,
    pub unique_viewers: DashSet<Arc<str>>,
    pub rejected: [AtomicU64; RejectCode::ALL.len()],
    /// Buy-to-ack times in microseconds since the aggregator last took them.
    pub latency_us: Mutex<hdrhistogram::Histogram<u64>>,
}

/// Largest latency the histograms track; slower acks are counted at this value.
pub const MAX_LATENCY_US: u64 = 60_000_000;

impl LiveStats {
    fn new() -> Self {
        LiveStats {
            viewers: AtomicU64::new(0),
            peak_viewers: AtomicU64::new(0),
            unique_viewers: DashSet::new(),
            rejected: Default::default(),
            latency_us: Mutex::new(new_latency_histogram()),
        }
    }

    /// A buyer connected; returns whether this user is new to the room.
    pub fn viewer_joined(&self, user: &Arc<str>) {
        let now = self.viewers.fetch_add(1, Ordering::AcqRel) + 1;
        self.peak_viewers.fetch_max(now, Ordering::AcqRel);
        if !self.unique_viewers.contains(user) {
            self.unique_viewers.insert(user.clone());
        }
    }

    pub fn viewer_left(&self) {
        self.viewers.fetch_sub(1, Ordering::AcqRel);
    }

    pub fn count_rejection(&self, code: RejectCode) {
        self.rejected[code.index()].fetch_add(1, Ordering::Relaxed);
    }

    pub fn record_latency(&self, us: u64) {
        let mut h = self.latency_us.lock().expect("latency lock");
        h.saturating_record(us.clamp(1, MAX_LATENCY_US));
    }
}

/// An empty latency histogram: 1 µs to [`MAX_LATENCY_US`], 3 significant digits.
pub fn new_latency_histogram() -> hdrhistogram::Histogram<u64> {
    hdrhistogram::Histogram::new_with_bounds(1, MAX_LATENCY_US, 3).expect("valid histogram bounds")
}

/// A user of a room: the id, and the small key the gate's ledgers use. A buyer connection
/// interns its user once, so a buy never hashes the user's string in the gate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserRef {
    pub id: Arc<str>,
    pub key: u32,
}

/// An order read from the room's Redis stream: `order.seq` is the room-wide seq, `order.hub`
/// the hub that took it, and `hub_seq` its seq in that hub's journal and export.
#[derive(Debug, Clone)]
pub struct StreamOrder {
    pub order: Arc<OrderRecord>,
    pub hub_seq: u64,
}

/// One room.
#[derive(Debug)]
pub struct Room {
    pub id: Arc<str>,
    title: RwLock<String>,
    /// foldhash: fast on short ids, randomly seeded per map.
    skus: DashMap<Arc<str>, Arc<Sku>, foldhash::fast::RandomState>,
    /// SKUs in creation order, for listings.
    sku_list: RwLock<Vec<Arc<Sku>>>,
    requests: DashMap<String, RequestState, foldhash::fast::RandomState>,
    /// User ids interned to ledger keys.
    users: DashMap<Arc<str>, u32, foldhash::fast::RandomState>,
    next_user: AtomicU32,
    /// Durable orders by seq. Appended only by the journal writer, in seq order.
    orders: RwLock<Vec<Arc<OrderRecord>>>,
    /// Redis mode: every hub's published orders, in the room's stream order.
    stream: RwLock<Vec<StreamOrder>>,
    pub live: LiveStats,
    /// Pushes to every buyer of the room, each encoded once.
    pub buyer_pushes: broadcast::Sender<Utf8Bytes>,
    /// Wakes the sale feed when a sale's state may have changed.
    pub sale_changed: Notify,
    /// The room's newest dashboard snapshot overall, whichever slot it was built for (REST
    /// stats, a dashboard's first message).
    pub snapshots: watch::Sender<Option<Arc<Published>>>,
    /// The slots the dashboards read their snapshots from, served in waves; each a `watch`:
    /// latest value wins, so a slow dashboard never gets a backlog.
    pub fanout: Fanout,
    /// Whether the room's background tasks run.
    pub tasks_started: AtomicBool,
    /// Dashboards connected now; the aggregator paces snapshots by it.
    pub dashboards: AtomicUsize,
}

impl Room {
    pub fn new(id: Arc<str>, title: String) -> Room {
        Room::with_capacity(id, title, 0)
    }

    /// A room sized for `orders` orders (a snapshot being restored), so that filling the
    /// idempotency table and the order list never rehashes or copies.
    pub fn with_capacity(id: Arc<str>, title: String, orders: usize) -> Room {
        Room {
            id,
            title: RwLock::new(title),
            skus: DashMap::default(),
            sku_list: RwLock::new(Vec::new()),
            requests: DashMap::with_capacity_and_hasher(orders, Default::default()),
            users: DashMap::default(),
            next_user: AtomicU32::new(0),
            orders: RwLock::new(Vec::with_capacity(orders)),
            stream: RwLock::new(Vec::new()),
            live: LiveStats::new(),
            buyer_pushes: broadcast::channel(BUYER_PUSH_BUFFER).0,
            sale_changed: Notify::new(),
            snapshots: watch::channel(None).0,
            fanout: Fanout::default(),
            tasks_started: AtomicBool::new(false),
            dashboards: AtomicUsize::new(0),
        }
    }

    /// The user `id` of this room, interned on first sight.
    pub fn user(&self, id: &str) -> UserRef {
        if let Some(k) = self.users.get(id) {
            return UserRef {
                id: k.key().clone(),
                key: *k.value(),
            };
        }
        let id: Arc<str> = Arc::from(id);
        let key = *self
            .users
            .entry(id.clone())
            .or_insert_with(|| self.next_user.fetch_add(1, Ordering::Relaxed));
        UserRef { id, key }
    }

    pub fn title(&self) -> String {
        self.title.read().expect("title lock").clone()
    }

    pub fn set_title(&self, title: String) {
        *self.title.write().expect("title lock") = title;
    }

    pub fn sku(&self, id: &str) -> Option<Arc<Sku>> {
        self.skus.get(id).map(|s| s.value().clone())
    }

    /// Adds a SKU (journal apply only).
    pub fn add_sku(&self, sku: Arc<Sku>) {
        self.skus.insert(sku.id.clone(), sku.clone());
        self.sku_list.write().expect("sku list lock").push(sku);
    }

    /// SKUs in creation order.
    pub fn skus(&self) -> Vec<Arc<Sku>> {
        self.sku_list.read().expect("sku list lock").clone()
    }

    pub fn sku_states(&self, now_ms: i64) -> Vec<SkuState> {
        self.skus().iter().map(|s| s.view(now_ms)).collect()
    }

    /// A sale's state may have changed: the sale feed looks at once.
    pub fn state_changed(&self) {
        self.sale_changed.notify_one();
    }

    fn request_key(user: &str, req: &str) -> String {
        let mut k = String::with_capacity(user.len() + req.len() + 1);
        k.push_str(user);
        k.push(KEY_SEPARATOR);
        k.push_str(req);
        k
    }

    /// Starts deciding `(user, req)` unless it made an order or is being decided.
    pub fn begin_request(&self, user: &str, req: &str) -> Begin {
        match self.requests.entry(Self::request_key(user, req)) {
            Entry::Occupied(o) => match o.get() {
                RequestState::Done(order) => Begin::Done(order.clone()),
                RequestState::Pending(tx) => Begin::Wait(tx.subscribe()),
            },
            Entry::Vacant(v) => {
                v.insert(RequestState::Pending(watch::channel(()).0));
                Begin::Fresh
            }
        }
    }

    /// Forgets a request that made nothing, waking whoever waits on it.
    pub fn end_request(&self, user: &str, req: &str) {
        self.requests
            .remove_if(&Self::request_key(user, req), |_, s| {
                matches!(s, RequestState::Pending(_))
            });
    }

    /// Where `(user, req)` stands now.
    pub fn request(
        &self,
        user: &str,
        req: &str,
    ) -> Option<Result<Arc<OrderRecord>, watch::Receiver<()>>> {
        self.requests
            .get(&Self::request_key(user, req))
            .map(|s| match s.value() {
                RequestState::Done(o) => Ok(o.clone()),
                RequestState::Pending(tx) => Err(tx.subscribe()),
            })
    }

    /// Records a durable order (journal apply only, in seq order).
    pub fn add_order(&self, order: Arc<OrderRecord>) {
        self.requests.insert(
            Self::request_key(&order.user, &order.req),
            RequestState::Done(order.clone()),
        );
        self.orders.write().expect("orders lock").push(order);
    }

    /// Records durable orders restored from a snapshot, in seq order (restore only).
    pub fn restore_orders(&self, orders: impl IntoIterator<Item = Arc<OrderRecord>>) {
        let mut list = self.orders.write().expect("orders lock");
        for order in orders {
            self.requests.insert(
                Self::request_key(&order.user, &order.req),
                RequestState::Done(order.clone()),
            );
            list.push(order);
        }
    }

    /// The first `n` durable orders (in seq order), cloned in pieces so that the journal
    /// writer, which appends, never waits long for the lock.
    pub fn orders_prefix(&self, n: usize, mut f: impl FnMut(&[Arc<OrderRecord>])) {
        const PIECE: usize = 16 * 1024;
        let mut from = 0;
        let mut piece = Vec::with_capacity(PIECE.min(n));
        while from < n {
            piece.clear();
            {
                let orders = self.orders.read().expect("orders lock");
                let to = n.min(from + PIECE).min(orders.len());
                piece.extend_from_slice(&orders[from..to]);
            }
            if piece.is_empty() {
                break;
            }
            from += piece.len();
            f(&piece);
        }
    }

    /// Orders with `seq > after_seq`, oldest first, at most `limit`.
    pub fn orders_after(&self, after_seq: u64, limit: usize) -> Vec<Arc<OrderRecord>> {
        let orders = self.orders.read().expect("orders lock");
        let start = orders.partition_point(|o| o.seq <= after_seq);
        orders[start..].iter().take(limit).cloned().collect()
    }

    /// Number of durable orders.
    pub fn order_count(&self) -> usize {
        self.orders.read().expect("orders lock").len()
    }

    /// Calls `f` on each order from index `from` (not seq) on; returns the new count.
    pub fn for_orders_from(&self, from: usize, mut f: impl FnMut(&Arc<OrderRecord>)) -> usize {
        let orders = self.orders.read().expect("orders lock");
        for o in orders.iter().skip(from) {
            f(o);
        }
        orders.len()
    }

    /// Redis mode: appends orders read from the room's stream (the stream reader only).
    pub fn add_stream_orders(&self, orders: impl IntoIterator<Item = StreamOrder>) {
        self.stream.write().expect("stream lock").extend(orders);
    }

    /// Redis mode: calls `f` on each stream order from index `from` on; returns the new count.
    pub fn for_stream_from(&self, from: usize, mut f: impl FnMut(&StreamOrder)) -> usize {
        let orders = self.stream.read().expect("stream lock");
        for o in orders.iter().skip(from) {
            f(o);
        }
        orders.len()
    }
}

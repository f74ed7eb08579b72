//! Everything the hub keeps for one live room: its SKUs, the idempotency table, the durable
//! orders in seq order, live audience figures, and the channels that carry pushes.

use std::sync::atomic::{AtomicBool, AtomicU32, AtomicUsize, Ordering};
use std::sync::{Arc, RwLock};

use dashmap::DashMap;
use tokio::sync::{watch, Notify};

use crate::buyer::pushes::BuyerPushes;
use crate::dashboard::fanout::Fanout;
use crate::dashboard::snapshot::Published;
use crate::inventory::{Sku, UserRef};
use crate::journal::OrderRecord;
use crate::protocol::SkuState;
use crate::rooms::live::LiveStats;
use crate::rooms::requests::{Began, RequestTable, Seen, Ticket};

/// What [`Room::begin_request`] found.
pub enum Begin {
    /// The caller now owns the request and must end it: by the order's commit, or by
    /// [`Room::end_request`]. The order should carry this `req` (the table's own `Arc`) and
    /// the ticket ([`OrderRecord::begun`]).
    Fresh(Arc<str>, Ticket),
    /// The request already made this order.
    Done(Arc<OrderRecord>),
}

/// How many orders ahead [`Room::for_orders`] asks the CPU to fetch.
const PREFETCH_AHEAD: usize = 16;

/// Asks the CPU to start loading `lines` cache lines from `p` into its caches: a hint that
/// reads nothing into the program.
#[inline]
fn prefetch(p: *const u8, lines: usize) {
    #[cfg(target_arch = "x86_64")]
    for l in 0..lines {
        use std::arch::x86_64::{_mm_prefetch, _MM_HINT_T0};
        // SAFETY: a prefetch cannot fault and has no effect the program can see, whatever the
        // address; `wrapping_add` makes no claim about the allocation.
        unsafe { _mm_prefetch::<_MM_HINT_T0>(p.wrapping_add(64 * l) as *const i8) };
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = (p, lines);
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
    requests: RequestTable,
    /// User ids interned to ledger keys.
    users: DashMap<Arc<str>, u32, foldhash::fast::RandomState>,
    next_user: AtomicU32,
    /// Durable orders by seq. Appended only by the journal writer, in seq order. An
    /// append-only vector of buckets that double: readers (the dashboard aggregator's fold, the
    /// audit, the snapshot thread, exports) index it without a lock, so none of them can hold
    /// up the writer, and growing it never copies or re-faults what it holds. It replaced a
    /// `RwLock<Vec<_>>`, whose readers had to copy pieces out under the lock, and whose
    /// doubling at a million orders moved 8 MB while the writer held the lock.
    orders: boxcar::Vec<Arc<OrderRecord>>,
    /// fleet mode: every hub's published orders, in the room's stream order. Append-only
    /// like `orders`, for the same reason: the aggregator's fold and the audit read it without
    /// holding up the stream reader, which appends.
    stream: boxcar::Vec<StreamOrder>,
    pub live: LiveStats,
    /// Pushes to every buyer of the room, each encoded once, sent in waves.
    pub buyer_pushes: BuyerPushes,
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
    /// Woken when a request that somebody waits for is settled (made an order or forgotten).
    /// One per room: duplicates in flight are rare, so a waiter that wakes for another
    /// request only looks again.
    request_settled: Notify,
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
            requests: RequestTable::with_capacity(orders),
            users: DashMap::default(),
            next_user: AtomicU32::new(0),
            orders: boxcar::Vec::with_capacity(orders),
            stream: boxcar::Vec::new(),
            live: LiveStats::default(),
            buyer_pushes: BuyerPushes::default(),
            sale_changed: Notify::new(),
            snapshots: watch::channel(None).0,
            fanout: Fanout::default(),
            tasks_started: AtomicBool::new(false),
            dashboards: AtomicUsize::new(0),
            request_settled: Notify::new(),
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

    /// Starts deciding `(user, req)` unless it made an order; while another connection is
    /// deciding it, waits for that decision and looks again.
    pub async fn begin_request(&self, user: &Arc<str>, req: &str) -> Begin {
        loop {
            if let Some(b) = self.try_begin_request(user, req) {
                return b;
            }
            // Pending elsewhere (and marked as waited for). Listen first, then look again, so
            // a settle between the two looks is never missed.
            let settled = self.request_settled.notified();
            tokio::pin!(settled);
            settled.as_mut().enable();
            if let Some(b) = self.try_begin_request(user, req) {
                return b;
            }
            settled.await;
        }
    }

    /// [`Room::begin_request`] without waiting: `None` while another connection decides the
    /// request (it is then marked as waited for; call [`Room::begin_request`]).
    pub fn try_begin_request(&self, user: &Arc<str>, req: &str) -> Option<Begin> {
        match self.requests.begin(user, req) {
            Began::Fresh(req, ticket) => Some(Begin::Fresh(req, ticket)),
            Began::Done(order) => Some(Begin::Done(order)),
            Began::Pending => None,
        }
    }

    /// Forgets a request that made nothing, waking whoever waits on it.
    pub fn end_request(&self, user: &str, req: &str) {
        if self.requests.forget_pending(user, req) == Some(true) {
            self.request_settled.notify_waiters();
        }
    }

    /// The order `(user, req)` made, if it made one by now (a pending request has not).
    pub fn order_of(&self, user: &str, req: &str) -> Option<Arc<OrderRecord>> {
        match self.requests.look(user, req, false) {
            Seen::Done(o) => Some(o),
            Seen::Absent | Seen::Pending => None,
        }
    }

    /// Whether `(user, req)` is known here: the order it made, waiting while it is decided;
    /// `None` for a request this room never saw (or that made nothing).
    pub async fn settled_request(&self, user: &str, req: &str) -> Option<Arc<OrderRecord>> {
        loop {
            match self.requests.look(user, req, false) {
                Seen::Absent => return None,
                Seen::Done(o) => return Some(o),
                Seen::Pending => {}
            }
            let settled = self.request_settled.notified();
            tokio::pin!(settled);
            settled.as_mut().enable();
            match self.requests.look(user, req, true) {
                Seen::Absent => return None,
                Seen::Done(o) => return Some(o),
                Seen::Pending => settled.await,
            }
        }
    }

    /// Records a durable order (journal apply only, in seq order). The request's entry,
    /// pending since [`Room::begin_request`], becomes the order in place.
    pub fn add_order(&self, order: Arc<OrderRecord>) {
        let waited = self.requests.complete(&order) == Some(true);
        self.orders.push(order);
        if waited {
            self.request_settled.notify_waiters();
        }
    }

    /// Records an order replayed from the journal at start (nobody began it in this process).
    pub fn add_replayed_order(&self, order: Arc<OrderRecord>) {
        self.requests.insert_done(&order);
        self.orders.push(order);
    }

    /// Records durable orders restored from a snapshot, in seq order (restore only).
    pub fn restore_orders(&self, orders: impl IntoIterator<Item = Arc<OrderRecord>>) {
        for order in orders {
            self.requests.insert_done(&order);
            self.orders.push(order);
        }
    }

    /// Calls `f` on the durable orders with index `from..to` (fewer if there are fewer), in
    /// seq order, without a lock. Returns the index after the last order handed over.
    fn for_orders(&self, from: usize, to: usize, mut f: impl FnMut(&Arc<OrderRecord>)) -> usize {
        // Every index below the count is written: the one writer pushes, and the count is
        // raised after the entry (with release ordering; `count` loads with acquire).
        let to = to.min(self.orders.count());
        let at = |i: usize| self.orders.get(i).expect("an order below the count");
        for i in from..to {
            // Each order is its own allocation, long out of cache: ask for the ones ahead
            // (the record, then, once it has arrived, its `req`) while this one is handled.
            if i + PREFETCH_AHEAD < to {
                prefetch(Arc::as_ptr(at(i + PREFETCH_AHEAD)) as *const u8, 2);
            }
            if i + PREFETCH_AHEAD / 2 < to {
                prefetch(at(i + PREFETCH_AHEAD / 2).req.as_ptr(), 1);
            }
            f(at(i));
        }
        to.max(from)
    }

    /// The first `n` durable orders (in seq order): the snapshot thread.
    pub fn orders_prefix(&self, n: usize, f: impl FnMut(&Arc<OrderRecord>)) {
        self.for_orders(0, n, f);
    }

    /// Orders with `seq > after_seq`, oldest first, at most `limit`.
    pub fn orders_after(&self, after_seq: u64, limit: usize) -> Vec<Arc<OrderRecord>> {
        let count = self.orders.count();
        let seq = |i: usize| self.orders.get(i).expect("an order below the count").seq;
        // The first index whose seq is above `after_seq` (seqs grow with the index).
        let (mut lo, mut hi) = (0, count);
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            if seq(mid) <= after_seq {
                lo = mid + 1;
            } else {
                hi = mid;
            }
        }
        let mut page = Vec::with_capacity(limit.min(count - lo));
        self.for_orders(lo, lo.saturating_add(limit), |o| page.push(o.clone()));
        page
    }

    /// Number of durable orders.
    pub fn order_count(&self) -> usize {
        self.orders.count()
    }

    /// Calls `f` on each order from index `from` (not seq) to the count there is now, without
    /// a lock; returns the index reached.
    pub fn for_orders_from(&self, from: usize, f: impl FnMut(&Arc<OrderRecord>)) -> usize {
        self.for_orders(from, usize::MAX, f)
    }

    /// fleet mode: appends orders read from the room's stream (the stream reader only).
    pub fn add_stream_orders(&self, orders: impl IntoIterator<Item = StreamOrder>) {
        for o in orders {
            self.stream.push(o);
        }
    }

    /// fleet mode: calls `f` on each stream order from index `from` on; returns the new count.
    /// Without a lock, like [`Room::for_orders_from`].
    pub fn for_stream_from(&self, from: usize, mut f: impl FnMut(&StreamOrder)) -> usize {
        let to = self.stream.count();
        for i in from..to {
            f(self.stream.get(i).expect("a stream order below the count"));
        }
        to
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicUsize;
    use std::time::Duration;

    use super::*;

    fn order(user: &str, req: &str) -> Arc<OrderRecord> {
        crate::rooms::requests::tests::order(&Arc::from(user), &Arc::from(req))
    }

    /// Readers take no lock: `f` itself can append (as the journal writer does meanwhile)
    /// without waiting for the reader, which would deadlock if `f` ran under a read lock. The
    /// reader stops at the count there was when it began.
    #[test]
    fn readers_never_hold_the_order_list_while_they_work() {
        // On a thread of its own: a reader that held the lock would hang it, and the wait
        // below turns that into a failure.
        let (done, finished) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            readers_work_outside_the_lock();
            let _ = done.send(());
        });
        finished
            .recv_timeout(Duration::from_secs(30))
            .expect("a reader held the order list while its callback appended");
    }

    /// The room's next order, by seq.
    fn next(room: &Room, req: &str) -> Arc<OrderRecord> {
        let mut o = order("u", req);
        Arc::get_mut(&mut o).expect("new").seq = room.order_count() as u64 + 1;
        o
    }

    fn readers_work_outside_the_lock() {
        let room = Room::new("r".into(), "t".into());
        let n = 2500;
        for i in 0..n {
            room.add_order(next(&room, &format!("a{i}")));
        }
        // The fold sees the orders there were when it began, whatever is appended meanwhile.
        let mut seen = Vec::new();
        let reached = room.for_orders_from(n / 5, |o| {
            seen.push(o.req.to_string());
            room.add_order(next(&room, &format!("b{}", seen.len())));
        });
        assert_eq!(reached, n);
        let want: Vec<String> = (n / 5..n).map(|i| format!("a{i}")).collect();
        assert_eq!(seen, want);
        assert_eq!(room.order_count(), n + want.len());
        let mut prefix = 0;
        room.orders_prefix(n + 10, |o| {
            assert_eq!(o.seq, prefix as u64 + 1, "in seq order");
            prefix += 1;
            room.add_order(next(&room, &format!("c{prefix}")));
        });
        assert_eq!(prefix, n + 10);
        // A page after a seq starts right after it.
        let page = room.orders_after(n as u64 - 3, 5);
        let seqs: Vec<u64> = page.iter().map(|o| o.seq).collect();
        assert_eq!(seqs, (n as u64 - 2..n as u64 + 3).collect::<Vec<_>>());
        assert!(room.orders_after(u64::MAX - 1, 5).is_empty());
    }

    /// Many connections begin the same `(user, req)` at once, on a multi-threaded runtime.
    /// Exactly one decides at a time; the others wait and are woken when it settles (a lost
    /// wake-up would hang, and the timeout fails the test). When the decision makes an order,
    /// everybody else gets that order; when it makes nothing, the next one decides.
    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn duplicates_wait_for_the_decision_and_are_woken() {
        const CONTENDERS: usize = 8;
        for round in 0..200 {
            let room = Arc::new(Room::new("r".into(), String::new()));
            let deciding = Arc::new(AtomicUsize::new(0));
            let fresh = Arc::new(AtomicUsize::new(0));
            let makes_order = round % 2 == 0;
            let mut tasks = Vec::new();
            for _ in 0..CONTENDERS {
                let (room, deciding, fresh) = (room.clone(), deciding.clone(), fresh.clone());
                tasks.push(tokio::spawn(async move {
                    match room.begin_request(&Arc::from("u1"), "q1").await {
                        Begin::Fresh(..) => {
                            assert_eq!(
                                deciding.fetch_add(1, Ordering::SeqCst),
                                0,
                                "two decide at once"
                            );
                            fresh.fetch_add(1, Ordering::SeqCst);
                            tokio::task::yield_now().await;
                            deciding.fetch_sub(1, Ordering::SeqCst);
                            if makes_order {
                                room.add_order(order("u1", "q1"));
                            } else {
                                room.end_request("u1", "q1");
                            }
                            None
                        }
                        Begin::Done(o) => Some(o.req.clone()),
                    }
                }));
            }
            let all = async {
                let mut done = 0;
                for t in tasks {
                    if t.await.expect("task").is_some() {
                        done += 1;
                    }
                }
                done
            };
            let done = tokio::time::timeout(Duration::from_secs(20), all)
                .await
                .unwrap_or_else(|_| panic!("round {round}: a waiter was never woken"));
            if makes_order {
                assert_eq!(fresh.load(Ordering::SeqCst), 1, "round {round}");
                assert_eq!(done, CONTENDERS - 1, "round {round}");
            } else {
                assert_eq!(fresh.load(Ordering::SeqCst), CONTENDERS, "round {round}");
                assert_eq!(done, 0, "round {round}");
            }
            assert!(room.settled_request("u1", "q1").await.is_some() == makes_order);
        }
    }

    /// `status` waits for a pending request and then sees what it became.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn status_waits_for_a_pending_request() {
        let room = Arc::new(Room::new("r".into(), String::new()));
        assert!(room.settled_request("u1", "q1").await.is_none());
        assert!(matches!(
            room.begin_request(&Arc::from("u1"), "q1").await,
            Begin::Fresh(..)
        ));
        let asking = {
            let room = room.clone();
            tokio::spawn(async move { room.settled_request("u1", "q1").await })
        };
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(
            !asking.is_finished(),
            "status answered while the request was pending"
        );
        assert!(room.order_of("u1", "q1").is_none());
        room.add_order(order("u1", "q1"));
        let got = tokio::time::timeout(Duration::from_secs(10), asking)
            .await
            .expect("status was never woken")
            .expect("task");
        assert_eq!(got.expect("the order").req.as_ref(), "q1");
        assert!(room.order_of("u1", "q1").is_some());
    }
}

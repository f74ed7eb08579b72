//! One live room: its id and title, and its parts, each a concern of its own with its own
//! small API (see each part's module):
//! - [`Skus`] and [`Users`]: what is on sale, and who buys, interned to ledger keys;
//! - [`Requests`]: the idempotency table, and the waits of duplicates in flight;
//! - [`OrderLog`]: the durable orders in seq order (and, in fleet mode, the room's stream);
//! - [`LiveStats`]: audience and buy-path figures;
//! - [`Feeds`]: the channels that carry pushes to buyers and dashboards;
//! - [`EventLog`]: every placement and status move, numbered (the change feed);
//! - [`Statuses`]: where each order stands: unpaid, paid, expired, cancelled, refunded;
//! - [`AuditTotals`]: the audit's running totals of units per SKU;
//! - [`Rejections`]: refused buys by code, as the journal holds them.
//!
//! The parts are fields of the room itself, not boxed: the buy path reaches each with no
//! pointer to follow. The room's own methods are the few operations that must change two parts
//! together.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};

use crate::journal::record::Move;
use crate::journal::OrderRecord;
use crate::rooms::audit::AuditTotals;
use crate::rooms::events::{Event, EventLog, Moved};
use crate::rooms::feeds::Feeds;
use crate::rooms::live::LiveStats;
use crate::rooms::orders::OrderLog;
use crate::rooms::rejections::Rejections;
use crate::rooms::requests::Requests;
use crate::rooms::skus::Skus;
use crate::rooms::statuses::Statuses;
use crate::rooms::users::Users;
use crate::rooms::whole::WholeRoom;

/// One room.
#[derive(Debug)]
pub struct Room {
    pub id: Arc<str>,
    title: RwLock<String>,
    pub skus: Skus,
    pub users: Users,
    /// Where every `(user, req)` stands. Requests are completed by [`Room::add_order`] and
    /// its kin only, together with the order log.
    pub requests: Requests,
    /// The durable orders by seq (and, in fleet mode, the room's stream). Durable orders are
    /// appended by [`Room::add_order`] and its kin only, with the idempotency table.
    pub orders: OrderLog,
    /// Placements and status moves, numbered; appended with the order log and the statuses.
    pub events: EventLog,
    pub statuses: Statuses,
    pub live: LiveStats,
    pub feeds: Feeds,
    pub audit: AuditTotals,
    /// The audience the video platform tells of: viewers, sessions, interactions, clicks.
    pub audience: crate::audience::Audience,
    /// Refused buys by code, as journaled.
    pub rejections: Rejections,
    /// Fleet mode: the whole room's export, from the room's stream.
    pub whole: WholeRoom,
    /// Journal records applied to the room so far ([`Room::changed`]).
    changes: AtomicU64,
    /// Fleet mode: the change feed lists this hub's placements as the room's stream orders
    /// them (with the moves, which only the stream brings), not as the journal applies them,
    /// so its numbering is the same after a restart ([`Room::list_stream_placement`]).
    events_from_stream: bool,
}

impl Room {
    pub fn new(id: Arc<str>, title: String) -> Room {
        Room::with_capacity(id, title, 0)
    }

    /// A room sized for `orders` orders (a snapshot being restored), so that filling the
    /// idempotency table and the order log never rehashes or copies.
    pub fn with_capacity(id: Arc<str>, title: String, orders: usize) -> Room {
        Room {
            id,
            title: RwLock::new(title),
            skus: Skus::default(),
            users: Users::default(),
            requests: Requests::with_capacity(orders),
            orders: OrderLog::with_capacity(orders),
            events: EventLog::with_capacity(orders),
            statuses: Statuses::default(),
            live: LiveStats::default(),
            feeds: Feeds::default(),
            audit: AuditTotals::default(),
            audience: crate::audience::Audience::default(),
            rejections: Rejections::default(),
            whole: WholeRoom::default(),
            changes: AtomicU64::new(0),
            events_from_stream: false,
        }
    }

    /// A room of a fleet hub: see `events_from_stream`.
    pub fn in_fleet(id: Arc<str>, title: String) -> Room {
        Room {
            events_from_stream: true,
            ..Room::new(id, title)
        }
    }

    pub fn title(&self) -> String {
        self.title.read().expect("title lock").clone()
    }

    pub fn set_title(&self, title: String) {
        *self.title.write().expect("title lock") = title;
    }

    /// A journal record of the room was applied (the journal's apply, after the record took
    /// effect). Whatever is computed from the room's durable state (the review) is rebuilt
    /// only when [`Room::changes`] moved since.
    pub fn changed(&self) {
        self.changes.fetch_add(1, Ordering::Release);
    }

    /// How many records [`Room::changed`] the room: a version of its durable state.
    pub fn changes(&self) -> u64 {
        self.changes.load(Ordering::Acquire)
    }

    // Recording an order changes the request table and the order log together, in this order:
    // the request first, so that whoever finds the order in the log finds its request done;
    // the waiters' wake-up last, so that a woken waiter finds the order in the log as well.

    /// Records a durable order (journal apply only, in seq order). The request's entry,
    /// pending since [`Requests::begin`], becomes the order in place, and whoever waits for
    /// the request is woken.
    pub fn add_order(&self, order: Arc<OrderRecord>) {
        let waited = self.requests.complete(&order);
        self.place(order);
        if waited {
            self.requests.wake_waiters();
        }
    }

    /// Records an order replayed from the journal at start (nobody began it in this process,
    /// so nobody waits for it).
    pub fn add_replayed_order(&self, order: Arc<OrderRecord>) {
        self.requests.insert_done(&order);
        self.place(order);
    }

    /// Records durable orders restored from a snapshot, in seq order (restore only).
    pub fn restore_orders(&self, orders: impl IntoIterator<Item = Arc<OrderRecord>>) {
        for order in orders {
            self.requests.insert_done(&order);
            self.place(order);
        }
    }

    fn place(&self, order: Arc<OrderRecord>) {
        self.statuses.placed(&order);
        if !self.events_from_stream {
            self.events.push(Event::Placed(order.clone()));
        }
        self.orders.push(order);
    }

    /// Fleet mode: this hub's order read from the room's stream joins the change feed (the
    /// stream reader only, in stream order).
    pub fn list_stream_placement(&self, order: Arc<OrderRecord>) {
        if self.events_from_stream {
            self.events.push(Event::Placed(order));
        }
    }

    /// Fleet mode: entries read from the room's stream, in stream order (the stream reader
    /// only): the whole room's export takes them in, then every reader of the stream sees them.
    pub fn add_stream_events(&self, events: Vec<crate::rooms::orders::StreamEvent>) {
        for e in &events {
            self.whole.take(e);
        }
        self.orders.add_stream_events(events);
    }

    /// Fleet mode: a status move of one of this hub's own orders, read from the room's stream
    /// (whichever hub decided it): the order's status here, for the export and `status`
    /// answers, then the event, for the change feed.
    pub fn apply_stream_move(
        &self,
        order: &Arc<OrderRecord>,
        to: Option<&Move>,
        ts_ms: i64,
    ) -> Result<Arc<Moved>, String> {
        let moved = self.statuses.apply(order, to, ts_ms)?;
        Ok(self.record_move(moved))
    }

    /// Records a durable status move (journal apply, replay or restore, in journal order):
    /// the order's status, then the event.
    pub fn record_move(&self, moved: Moved) -> Arc<Moved> {
        let moved = Arc::new(moved);
        self.events.push(Event::Moved(moved.clone()));
        moved
    }
}

#[cfg(test)]
mod tests {
    use std::future::Future;
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
    use std::task::{Context, Poll, Wake, Waker};
    use std::time::Duration;

    use super::*;
    use crate::rooms::requests::Begin;

    fn order(user: &str, req: &str) -> Arc<OrderRecord> {
        crate::rooms::requests::tests::order(&Arc::from(user), &Arc::from(req))
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
                    match room.requests.begin(&Arc::from("u1"), "q1").await {
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
                                room.requests.end("u1", "q1");
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
                assert_eq!(room.orders.count(), 1, "round {round}");
            } else {
                assert_eq!(fresh.load(Ordering::SeqCst), CONTENDERS, "round {round}");
                assert_eq!(done, 0, "round {round}");
            }
            assert!(room.requests.settled("u1", "q1").await.is_some() == makes_order);
        }
    }

    /// A waker that notes that it was woken.
    #[derive(Default)]
    struct Noted(AtomicBool);

    impl Wake for Noted {
        fn wake(self: Arc<Self>) {
            self.0.store(true, Ordering::SeqCst);
        }
    }

    /// `status` waits for a pending request, is woken when the order is recorded, and then
    /// finds it in the order log too. Polled by hand: each step is a poll, with no timing.
    #[test]
    fn status_waits_for_a_pending_request() {
        let room = Room::new("r".into(), String::new());
        let noted = Arc::new(Noted::default());
        let waker = Waker::from(noted.clone());
        let mut cx = Context::from_waker(&waker);
        let mut asking = Box::pin(room.requests.settled("u1", "q1"));
        assert!(
            matches!(asking.as_mut().poll(&mut cx), Poll::Ready(None)),
            "a request never seen is not known"
        );
        let Some(Begin::Fresh(..)) = room.requests.try_begin(&Arc::from("u1"), "q1") else {
            panic!("q1 is new");
        };
        let mut asking = Box::pin(room.requests.settled("u1", "q1"));
        assert!(
            asking.as_mut().poll(&mut cx).is_pending(),
            "status answered while the request was pending"
        );
        assert!(room.requests.order_of("u1", "q1").is_none());
        assert!(!noted.0.load(Ordering::SeqCst));
        room.add_order(order("u1", "q1"));
        assert!(noted.0.load(Ordering::SeqCst), "status was never woken");
        let Poll::Ready(Some(got)) = asking.as_mut().poll(&mut cx) else {
            panic!("status did not see the order");
        };
        assert_eq!(got.req.as_ref(), "q1");
        assert!(room.requests.order_of("u1", "q1").is_some());
        assert_eq!(room.orders.page_after(0, 10).len(), 1);
    }
}

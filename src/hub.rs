//! The hub: shared state in one cloneable handle, and the buy path from a decoded `buy` frame
//! to its ack: idempotency → inventory gate → journal (the durable point) → ack.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::sync::oneshot::{self, error::RecvError};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::clock::now_ms;
use crate::fleet::{Fleet, SharedOptions};
use crate::inventory::{BuyRequest, LocalGate, Reservation};
use crate::journal::{Journal, JournalError, JournalOptions, OrderRecord, Record, Replayed};
use crate::protocol::{Ack, BuyMsg, RejectCode};
use crate::requests::Ticket;
use crate::room::{Begin, Room, UserRef};
use crate::rooms::Rooms;
use crate::stop::{Stop, StopWatch};

/// Knobs of the hub's behaviour (the server's listen address and tokens live in `Config`).
#[derive(Debug, Clone)]
pub struct HubOptions {
    pub journal: JournalOptions,
    /// How often dashboards get a snapshot at most.
    pub push_interval: Duration,
    /// Snapshot frames a second one room's dashboards may get in all; beyond it each
    /// dashboard's interval stretches (see `dashboard::aggregator::FANOUT_FRAMES_PER_S`).
    pub fanout_frames_per_s: u64,
    /// Stock frames a second one room's buyers may get in all (see
    /// `sale_feed::STOCK_FRAMES_PER_S`).
    pub stock_frames_per_s: u64,
    /// Buys being decided or made durable at once, over all connections; beyond it new buys
    /// are answered `unavailable` at once (admission control), so an overload turns into quick
    /// refusals rather than a queue that grows without bound. By Little's law, the queueing
    /// delay it allows is this divided by the acks a second the machine sustains.
    pub max_pending_buys: usize,
    /// `--redis`: share inventory with other hubs through Redis; `None` keeps it in memory.
    pub shared: Option<SharedOptions>,
}

impl HubOptions {
    /// Options with every default but the journal's.
    pub fn new(journal: JournalOptions) -> Self {
        HubOptions {
            journal,
            push_interval: Duration::from_millis(crate::config::DEFAULT_PUSH_INTERVAL_MS),
            fanout_frames_per_s: crate::dashboard::aggregator::FANOUT_FRAMES_PER_S,
            stock_frames_per_s: crate::sale_feed::STOCK_FRAMES_PER_S,
            max_pending_buys: crate::config::DEFAULT_MAX_PENDING_BUYS,
            shared: None,
        }
    }
}

/// Where buys are decided. An enum, not a trait object: the embedded gate stays a direct,
/// inlinable call, and the hub branches once per buy.
pub enum GateKind {
    /// In this process's memory (the default).
    Local(LocalGate),
    /// In Redis, shared with other hubs (`--redis`). Boxed: the embedded variant stays small.
    Shared(Box<Fleet>),
}

/// The hub. Clones share one state.
#[derive(Clone)]
pub struct Hub {
    inner: Arc<HubInner>,
}

struct HubInner {
    rooms: Arc<Rooms>,
    journal: Journal,
    gate: GateKind,
    options: HubOptions,
    /// Serialises admin changes so that their journal order is their memory order.
    admin: tokio::sync::Mutex<()>,
    /// Buys admitted and not yet answered; one atomic add per buy.
    pending: AtomicUsize,
    shutdown: CancellationToken,
    /// `shutdown`, as the buyer tasks poll it ([`crate::stop`]).
    stop: Arc<Stop>,
    tasks: TaskTracker,
}

impl Hub {
    /// Recovers the journal in the data dir and starts the hub.
    pub fn open(
        options: HubOptions,
        shutdown: CancellationToken,
    ) -> Result<(Hub, Replayed), JournalError> {
        Self::open_with(
            options,
            Arc::new(Rooms::default()),
            GateKind::Local(LocalGate),
            shutdown,
        )
    }

    /// Recovers the journal into `rooms` and starts the hub with `gate`. In Redis mode the
    /// rooms were loaded from Redis first ([`crate::fleet::mirror`]).
    pub fn open_with(
        options: HubOptions,
        rooms: Arc<Rooms>,
        gate: GateKind,
        shutdown: CancellationToken,
    ) -> Result<(Hub, Replayed), JournalError> {
        let (journal, replayed) = Journal::open(&options.journal, rooms.clone())?;
        let stop = Stop::new();
        let tasks = TaskTracker::new();
        {
            let (stop, token) = (stop.clone(), shutdown.clone());
            tasks.spawn(async move {
                token.cancelled().await;
                stop.trigger();
            });
        }
        let hub = Hub {
            inner: Arc::new(HubInner {
                rooms,
                journal,
                gate,
                options,
                admin: tokio::sync::Mutex::new(()),
                pending: AtomicUsize::new(0),
                shutdown,
                stop,
                tasks,
            }),
        };
        for room in hub.rooms().all() {
            hub.start_room_tasks(&room);
        }
        Ok((hub, replayed))
    }

    pub fn rooms(&self) -> &Rooms {
        &self.inner.rooms
    }

    pub fn room(&self, id: &str) -> Option<Arc<Room>> {
        self.inner.rooms.get(id)
    }

    pub fn options(&self) -> &HubOptions {
        &self.inner.options
    }

    pub fn journal(&self) -> &Journal {
        &self.inner.journal
    }

    pub fn shutdown_token(&self) -> &CancellationToken {
        &self.inner.shutdown
    }

    /// A watcher of the shutdown for a task that polls it on every wake-up.
    pub fn stop_watch(&self) -> StopWatch {
        self.inner.stop.watch()
    }

    pub fn tasks(&self) -> &TaskTracker {
        &self.inner.tasks
    }

    pub(crate) fn admin_lock(&self) -> &tokio::sync::Mutex<()> {
        &self.inner.admin
    }

    /// The Redis connection in Redis mode.
    pub fn fleet(&self) -> Option<&Fleet> {
        match &self.inner.gate {
            GateKind::Local(_) => None,
            GateKind::Shared(f) => Some(f.as_ref()),
        }
    }

    /// Starts a room's sale feed and dashboard aggregator, once.
    pub fn start_room_tasks(&self, room: &Arc<Room>) {
        if room
            .tasks_started
            .swap(true, std::sync::atomic::Ordering::AcqRel)
        {
            return;
        }
        let token = self.inner.shutdown.clone();
        self.inner.tasks.spawn(crate::sale_feed::run(
            room.clone(),
            self.inner.options.stock_frames_per_s,
            token.clone(),
        ));
        let mut aggregator =
            crate::dashboard::Aggregator::new(room.clone(), self.inner.options.push_interval)
                .with_fanout_budget(self.inner.options.fanout_frames_per_s);
        if let Some(fleet) = self.fleet() {
            aggregator = aggregator.from_stream();
            self.inner.tasks.spawn(crate::fleet::stream::run(
                fleet.clone(),
                room.clone(),
                token.clone(),
            ));
        }
        self.inner.tasks.spawn(aggregator.run(token));
    }

    /// Decides one buy and answers it. The ack is `ok` only once the order is durable.
    pub async fn buy(&self, room: &Arc<Room>, user: &UserRef, msg: &BuyMsg) -> Ack {
        if let GateKind::Shared(fleet) = &self.inner.gate {
            return self.buy_shared(fleet, room, user, msg).await;
        }
        match room.begin_request(&user.id, &msg.req).await {
            Begin::Done(order) => counted_ok(order_ack(&order, &msg.req)),
            Begin::Fresh(req, ticket) => match self.decide_fresh(room, user, msg, req, ticket) {
                Started::Answered(ack) => ack,
                Started::Journaling(j) => j.await,
            },
        }
    }

    /// [`Hub::buy`] without waiting, for the buyer's task: the answer now (a repeated `req`,
    /// any refusal), or the order on its way to the journal. `None` when the buy needs the
    /// general path, [`Hub::buy`]: in Redis mode, or while another connection decides the same
    /// `req`. Nothing is boxed or spawned for the common cases.
    pub fn start_buy(&self, room: &Arc<Room>, user: &UserRef, msg: &BuyMsg) -> Option<Started> {
        if !matches!(self.inner.gate, GateKind::Local(_)) {
            return None;
        }
        Some(match room.try_begin_request(&user.id, &msg.req)? {
            Begin::Done(order) => Started::Answered(counted_ok(order_ack(&order, &msg.req))),
            Begin::Fresh(req, ticket) => self.decide_fresh(room, user, msg, req, ticket),
        })
    }

    /// Admission, the embedded gate and the journal's queue, for a request this call owns.
    fn decide_fresh(
        &self,
        room: &Arc<Room>,
        user: &UserRef,
        msg: &BuyMsg,
        req: Arc<str>,
        ticket: Ticket,
    ) -> Started {
        let Some(admitted) = self.admit() else {
            room.end_request(&user.id, &msg.req);
            metrics::counter!("livehub_buys_shed_total").increment(1);
            return Started::Answered(self.rejected_buy(room, msg, RejectCode::Unavailable));
        };
        let buy = BuyRequest {
            user,
            sku: &msg.sku,
            qty: msg.qty,
            now_ms: now_ms(),
        };
        let reservation = match LocalGate::decide(room, buy) {
            Ok(r) => r,
            Err(rej) => {
                room.end_request(&user.id, &msg.req);
                return Started::Answered(
                    self.rejected(room, &msg.req, rej.code, rej.sku, rej.left),
                );
            }
        };
        let order = OrderRecord {
            seq: 0,
            number: 0,
            room: room.id.clone(),
            sku: reservation.sku.id.clone(),
            user: user.id.clone(),
            req: req.clone(),
            qty: msg.qty,
            price_fen: reservation.price_fen,
            amount_fen: reservation.price_fen * msg.qty,
            referrer: msg.referrer.as_deref().map(Arc::from),
            ts_ms: buy.now_ms,
            left_after: reservation.left_after,
            hub: None,
            begun: Some(ticket),
        };
        let order_req = req;
        match self.inner.journal.submit(Record::Order(Arc::new(order))) {
            Ok(rx) => Started::Journaling(Journaling {
                in_flight: InFlight {
                    rx: Some(rx),
                    hub: self.clone(),
                    room: room.clone(),
                    user: user.clone(),
                    req: order_req,
                    reservation,
                },
                _admitted: admitted,
            }),
            Err(e) => {
                self.undo(room, user, &msg.req, &reservation);
                Started::Answered(self.unavailable(room, &msg.req, &reservation, &e))
            }
        }
    }

    /// The ack of a buy the journal answered: ok once durable; otherwise its stock goes back.
    fn settle(
        &self,
        f: &InFlight,
        outcome: Result<Result<Record, JournalError>, RecvError>,
    ) -> Ack {
        let error = match outcome {
            Ok(Ok(Record::Order(o))) => return counted_ok(order_ack(&o, &f.req)),
            Ok(Ok(_)) => unreachable!("the journal returns the record it was given"),
            Ok(Err(e)) => e,
            Err(_) => JournalError::Stopped,
        };
        self.undo(&f.room, &f.user, &f.req, &f.reservation);
        self.unavailable(&f.room, &f.req, &f.reservation, &error)
    }

    /// A place among the pending buys, or `None` when they are full.
    fn admit(&self) -> Option<Admitted> {
        let pending = &self.inner.pending;
        if pending.fetch_add(1, Ordering::AcqRel) >= self.inner.options.max_pending_buys {
            pending.fetch_sub(1, Ordering::AcqRel);
            return None;
        }
        Some(Admitted(self.clone()))
    }

    /// Buys admitted and not yet answered.
    pub fn pending_buys(&self) -> usize {
        self.inner.pending.load(Ordering::Relaxed)
    }

    /// What became of an earlier buy.
    pub async fn status(&self, room: &Room, user: &str, req: &str) -> Ack {
        match room.settled_request(user, req).await {
            Some(order) => order_ack(&order, req),
            None => match self.fleet() {
                // Redis mode: the order may have been taken by another hub.
                Some(fleet) => self.status_shared(fleet, room, user, req).await,
                None => Ack::rejected(req, RejectCode::UnknownRequest, None, None),
            },
        }
    }

    /// Gives a reservation back to the embedded gate (whose release never waits) and forgets
    /// its request.
    fn undo(&self, room: &Room, user: &UserRef, req: &str, r: &Reservation) {
        LocalGate::give_back(room, user, r);
        room.end_request(&user.id, req);
    }

    fn unavailable(&self, room: &Room, req: &str, r: &Reservation, e: &JournalError) -> Ack {
        self.refused_unavailable(room, req, &r.sku, "order could not be made durable", e)
    }

    /// Answers `unavailable` for a buy of `sku` that `cause` (the journal, Redis) could not
    /// complete, and logs why; nothing was sold.
    pub(crate) fn refused_unavailable(
        &self,
        room: &Room,
        req: &str,
        sku: &crate::inventory::Sku,
        cause: &'static str,
        error: &dyn std::fmt::Display,
    ) -> Ack {
        tracing::warn!(room = %room.id, sku = %sku.id, cause, %error, "buy refused: unavailable");
        self.rejected(
            room,
            req,
            RejectCode::Unavailable,
            Some(sku.id.clone()),
            Some(sku.left()),
        )
    }

    /// Counts and words the rejection of `msg` before it reached the inventory (shed, rate
    /// limited), with the SKU's `left` when the SKU exists, as every ack for one carries.
    pub fn rejected_buy(&self, room: &Room, msg: &BuyMsg, code: RejectCode) -> Ack {
        let sku = room.sku(&msg.sku);
        self.rejected(
            room,
            &msg.req,
            code,
            sku.as_ref().map(|s| s.id.clone()),
            sku.map(|s| s.left()),
        )
    }

    /// Counts and words a rejection.
    pub fn rejected(
        &self,
        room: &Room,
        req: &str,
        code: RejectCode,
        sku: Option<Arc<str>>,
        left: Option<u64>,
    ) -> Ack {
        room.live.count_rejection(code);
        crate::telemetry::buy_metrics().rejected[code.index()].increment(1);
        Ack::rejected(req, code, sku, left)
    }

    /// Writes what is queued and stops the journal. Blocking; call from a blocking context.
    pub fn close_journal(&self) {
        self.inner.journal.close();
    }
}

/// One admitted buy; leaves the count when the buy is answered (or dropped).
struct Admitted(Hub);

impl Drop for Admitted {
    fn drop(&mut self) {
        self.0.inner.pending.fetch_sub(1, Ordering::AcqRel);
    }
}

/// What [`Hub::start_buy`] got to.
pub enum Started {
    /// Answered without the journal: a repeated `req`, or a refusal.
    Answered(Ack),
    /// Past the gate, in the journal's queue.
    Journaling(Journaling),
}

/// A buy past the gate, waiting for the journal; resolves to its ack (ok only once the order
/// is durable). A concrete type, so that a buyer's task keeps its buys in flight unboxed.
/// Dropped before the journal answers (the buyer hung up), its reservation is still settled
/// ([`InFlight`]).
pub struct Journaling {
    in_flight: InFlight,
    _admitted: Admitted,
}

impl Future for Journaling {
    type Output = Ack;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Ack> {
        let f = &mut self.in_flight;
        let rx =
            f.rx.as_mut()
                .expect("a journaling buy polled after its answer");
        let outcome = std::task::ready!(Pin::new(rx).poll(cx));
        f.rx = None;
        let f = &*f;
        Poll::Ready(f.hub.settle(f, outcome))
    }
}

/// Counts an ok answer to a buy frame (a `status` answer is not a buy and is not counted).
fn counted_ok(ack: Ack) -> Ack {
    crate::telemetry::buy_metrics().ok.increment(1);
    ack
}

/// The ack of an order, for its first answer, every repeat of its `req`, and `status`.
pub fn order_ack(o: &OrderRecord, req: &str) -> Ack {
    Ack {
        req: req.to_owned(),
        ok: true,
        order: Some(Arc::from(o.order_id())),
        error: None,
        sku: Some(o.sku.clone()),
        qty: Some(o.qty),
        amount_fen: Some(o.amount_fen),
        left: Some(o.left_after),
    }
}

/// A reservation handed to the journal. If the buy's future is dropped before the journal
/// answers (the buyer hung up), a task waits for the answer in its place, so a refused
/// order's stock still goes back and its request is still forgotten.
struct InFlight {
    rx: Option<oneshot::Receiver<Result<Record, JournalError>>>,
    hub: Hub,
    room: Arc<Room>,
    user: UserRef,
    /// The table's own `req` (the order's), so a buy allocates it once.
    req: Arc<str>,
    reservation: Reservation,
}

impl Drop for InFlight {
    fn drop(&mut self) {
        let Some(rx) = self.rx.take() else { return };
        let (hub, room, user, req, r) = (
            self.hub.clone(),
            self.room.clone(),
            self.user.clone(),
            self.req.clone(),
            self.reservation.clone(),
        );
        let settle = async move {
            if !matches!(rx.await, Ok(Ok(_))) {
                hub.undo(&room, &user, &req, &r);
            }
        };
        match tokio::runtime::Handle::try_current() {
            Ok(h) => {
                h.spawn(settle);
            }
            Err(_) => {
                tracing::error!("buy dropped outside a runtime; its reservation may stay taken")
            }
        }
    }
}

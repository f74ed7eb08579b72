//! The hub: shared state in one cloneable handle, and the buy path from a decoded `buy` frame
//! to its ack: idempotency → inventory gate → journal (the durable point) → ack.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::oneshot;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::clock::now_ms;
use crate::fleet::{Fleet, SharedOptions};
use crate::inventory::{BuyRequest, Gate, LocalGate, Reservation};
use crate::journal::{Journal, JournalError, JournalOptions, OrderRecord, Record, Replayed};
use crate::protocol::{Ack, BuyMsg, RejectCode};
use crate::room::{Begin, Room, UserRef};
use crate::rooms::Rooms;

/// Knobs of the hub's behaviour (the server's listen address and tokens live in `Config`).
#[derive(Debug, Clone)]
pub struct HubOptions {
    pub journal: JournalOptions,
    /// How often dashboards get a snapshot at most.
    pub push_interval: Duration,
    /// Snapshot frames a second one room's dashboards may get in all; beyond it each
    /// dashboard's interval stretches (see `dashboard::aggregator::FANOUT_FRAMES_PER_S`).
    pub fanout_frames_per_s: u64,
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
        let hub = Hub {
            inner: Arc::new(HubInner {
                rooms,
                journal,
                gate,
                options,
                admin: tokio::sync::Mutex::new(()),
                pending: AtomicUsize::new(0),
                shutdown,
                tasks: TaskTracker::new(),
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
        self.inner
            .tasks
            .spawn(crate::sale_feed::run(room.clone(), token.clone()));
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
        let gate = match &self.inner.gate {
            GateKind::Local(g) => g,
            GateKind::Shared(fleet) => return self.buy_shared(fleet, room, user, msg).await,
        };
        loop {
            match room.begin_request(&user.id, &msg.req) {
                Begin::Done(order) => return counted_ok(order_ack(&order, &msg.req)),
                // The other decision ends by dropping the sender; then ask again.
                Begin::Wait(mut rx) => while rx.changed().await.is_ok() {},
                Begin::Fresh => break,
            }
        }
        let Some(_admitted) = self.admit() else {
            room.end_request(&user.id, &msg.req);
            metrics::counter!("livehub_buys_shed_total").increment(1);
            let sku = room.sku(&msg.sku);
            return self.rejected(
                room,
                &msg.req,
                RejectCode::Unavailable,
                sku.as_ref().map(|s| s.id.clone()),
                sku.map(|s| s.left()),
            );
        };
        let buy = BuyRequest {
            user,
            sku: &msg.sku,
            qty: msg.qty,
            now_ms: now_ms(),
        };
        let reservation = match gate.reserve(room, buy).await {
            Ok(r) => r,
            Err(rej) => {
                room.end_request(&user.id, &msg.req);
                return self.rejected(room, &msg.req, rej.code, rej.sku, rej.left);
            }
        };
        let order = OrderRecord {
            seq: 0,
            number: 0,
            room: room.id.clone(),
            sku: reservation.sku.id.clone(),
            user: user.id.clone(),
            req: Arc::from(msg.req.as_str()),
            qty: msg.qty,
            price_fen: reservation.price_fen,
            amount_fen: reservation.price_fen * msg.qty,
            referrer: msg.referrer.as_deref().map(Arc::from),
            ts_ms: buy.now_ms,
            left_after: reservation.left_after,
            hub: None,
        };
        let rx = match self.inner.journal.submit(Record::Order(Arc::new(order))) {
            Ok(rx) => rx,
            Err(e) => {
                self.undo(room, user, &msg.req, &reservation).await;
                return self.unavailable(room, &msg.req, &reservation, &e);
            }
        };
        let mut in_flight = InFlight {
            rx: Some(rx),
            hub: self.clone(),
            room: room.clone(),
            user: user.clone(),
            req: msg.req.clone(),
            reservation,
        };
        let outcome = in_flight.rx.as_mut().expect("set above").await;
        in_flight.rx = None;
        match outcome {
            Ok(Ok(Record::Order(o))) => counted_ok(order_ack(&o, &msg.req)),
            Ok(Ok(_)) => unreachable!("the journal returns the record it was given"),
            Ok(Err(e)) => {
                self.undo(room, user, &msg.req, &in_flight.reservation)
                    .await;
                self.unavailable(room, &msg.req, &in_flight.reservation, &e)
            }
            Err(_) => {
                self.undo(room, user, &msg.req, &in_flight.reservation)
                    .await;
                self.unavailable(
                    room,
                    &msg.req,
                    &in_flight.reservation,
                    &JournalError::Stopped,
                )
            }
        }
    }

    /// A place among the pending buys, or `None` when they are full.
    fn admit(&self) -> Option<Admitted<'_>> {
        let pending = &self.inner.pending;
        if pending.fetch_add(1, Ordering::AcqRel) >= self.inner.options.max_pending_buys {
            pending.fetch_sub(1, Ordering::AcqRel);
            return None;
        }
        Some(Admitted(pending))
    }

    /// Buys admitted and not yet answered.
    pub fn pending_buys(&self) -> usize {
        self.inner.pending.load(Ordering::Relaxed)
    }

    /// What became of an earlier buy.
    pub async fn status(&self, room: &Room, user: &str, req: &str) -> Ack {
        loop {
            match room.request(user, req) {
                Some(Ok(order)) => return order_ack(&order, req),
                Some(Err(mut rx)) => while rx.changed().await.is_ok() {},
                None => match self.fleet() {
                    // Redis mode: the order may have been taken by another hub.
                    Some(fleet) => return self.status_shared(fleet, room, user, req).await,
                    None => return Ack::rejected(req, RejectCode::UnknownRequest, None, None),
                },
            }
        }
    }

    async fn undo(&self, room: &Room, user: &UserRef, req: &str, r: &Reservation) {
        LocalGate.release(room, user, r).await;
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
        metrics::counter!("livehub_buys_total", "result" => code.as_str()).increment(1);
        Ack::rejected(req, code, sku, left)
    }

    /// Writes what is queued and stops the journal. Blocking; call from a blocking context.
    pub fn close_journal(&self) {
        self.inner.journal.close();
    }
}

/// One admitted buy; leaves the count when the buy is answered (or dropped).
struct Admitted<'a>(&'a AtomicUsize);

impl Drop for Admitted<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Counts an ok answer to a buy frame (a `status` answer is not a buy and is not counted).
fn counted_ok(ack: Ack) -> Ack {
    metrics::counter!("livehub_buys_total", "result" => "ok").increment(1);
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
    req: String,
    reservation: Reservation,
}

impl Drop for InFlight {
    fn drop(&mut self) {
        let Some(rx) = self.rx.take() else { return };
        let (hub, room, user, req, r) = (
            self.hub.clone(),
            self.room.clone(),
            self.user.clone(),
            std::mem::take(&mut self.req),
            self.reservation.clone(),
        );
        let settle = async move {
            if !matches!(rx.await, Ok(Ok(_))) {
                hub.undo(&room, &user, &req, &r).await;
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

//! The hub: the state every connection shares, in one cloneable handle: the rooms, the journal,
//! the gate, the background tasks and the shutdown.
//!
//! - [`buy`]: the buy path, idempotency → gate → journal (the durable point) → ack;
//! - [`moves`]: after the buy: payment notices, cancels and refunds;
//! - [`expiry`]: unpaid orders expire when their time to pay runs out;
//! - [`rejections`]: refused buys journaled in aggregate, once a second per room.

pub mod audience;
pub mod buy;
pub mod expiry;
pub mod moves;
pub mod rejections;

use std::sync::atomic::AtomicUsize;
use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::buyer::stop::{Stop, StopWatch};
use crate::fleet::{Fleet, FleetOptions};
use crate::inventory::LocalGate;
use crate::journal::{Journal, JournalError, JournalOptions, Replayed};
use crate::rooms::room::Room;
use crate::rooms::Rooms;

/// Knobs of the hub's behaviour (the server's listen address and tokens live in `Config`).
#[derive(Debug, Clone)]
pub struct HubOptions {
    /// How the journal writes.
    pub journal: JournalOptions,
    /// How often dashboards get a dashboard snapshot at most.
    pub push_interval: Duration,
    /// Dashboard snapshot frames a second one room's dashboards may get in all; beyond it each
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
    /// Fleet mode (`--redis`): share inventory with the fleet's other hubs through Redis;
    /// `None` keeps it in this process's memory.
    pub fleet: Option<FleetOptions>,
}

impl HubOptions {
    /// Options with every default but the journal's.
    pub fn new(journal: JournalOptions) -> Self {
        HubOptions {
            journal,
            push_interval: Duration::from_millis(crate::config::DEFAULT_PUSH_INTERVAL_MS),
            fanout_frames_per_s: crate::dashboard::aggregator::FANOUT_FRAMES_PER_S,
            stock_frames_per_s: crate::buyer::sale_feed::STOCK_FRAMES_PER_S,
            max_pending_buys: crate::config::DEFAULT_MAX_PENDING_BUYS,
            fleet: None,
        }
    }
}

/// Where buys are decided. An enum, not a trait object: the embedded gate stays a direct,
/// inlinable call, and the hub branches once per buy.
pub enum GateKind {
    /// In this process's memory (the default).
    Local(LocalGate),
    /// In Redis, with the fleet's other hubs (fleet mode, `--redis`). Boxed: the embedded
    /// variant stays small.
    Fleet(Box<Fleet>),
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
    /// Serialises catalog changes so that their journal order is their memory order.
    admin: tokio::sync::Mutex<()>,
    /// Buys admitted and not yet answered; one atomic add per buy.
    pending: AtomicUsize,
    shutdown: CancellationToken,
    /// The rooms' reviews, kept while their rooms do not change.
    reviews: crate::review::Reviews,
    /// `shutdown`, as the buyer tasks poll it ([`crate::buyer::stop`]).
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

    /// Recovers the journal into `rooms` and starts the hub with `gate`. In fleet mode the
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
                reviews: crate::review::Reviews::default(),
                stop,
                tasks,
            }),
        };
        for room in hub.rooms().all() {
            hub.start_room_tasks(&room);
        }
        hub.inner
            .tasks
            .spawn(rejections::run(hub.clone(), hub.inner.shutdown.clone()));
        Ok((hub, replayed))
    }

    /// Every room of the hub.
    pub fn rooms(&self) -> &Rooms {
        &self.inner.rooms
    }

    /// The room `id`, if it exists.
    pub fn room(&self, id: &str) -> Option<Arc<Room>> {
        self.inner.rooms.get(id)
    }

    /// The options the hub was opened with.
    pub fn options(&self) -> &HubOptions {
        &self.inner.options
    }

    /// The rooms' reviews (复盘).
    pub fn reviews(&self) -> &crate::review::Reviews {
        &self.inner.reviews
    }

    /// The hub's journal.
    pub fn journal(&self) -> &Journal {
        &self.inner.journal
    }

    /// Cancelled when the hub shuts down; every task of the hub watches it.
    pub fn shutdown_token(&self) -> &CancellationToken {
        &self.inner.shutdown
    }

    /// A watcher of the shutdown for a task that polls it on every wake-up.
    pub fn stop_watch(&self) -> StopWatch {
        self.inner.stop.watch()
    }

    /// The hub's tasks, which a shutdown drains.
    pub fn tasks(&self) -> &TaskTracker {
        &self.inner.tasks
    }

    pub(crate) fn admin_lock(&self) -> &tokio::sync::Mutex<()> {
        &self.inner.admin
    }

    /// The Redis connection in fleet mode.
    pub fn fleet(&self) -> Option<&Fleet> {
        match &self.inner.gate {
            GateKind::Local(_) => None,
            GateKind::Fleet(f) => Some(f.as_ref()),
        }
    }

    /// Starts a room's sale feed and dashboard aggregator, once.
    pub fn start_room_tasks(&self, room: &Arc<Room>) {
        if !room.feeds.claim_tasks() {
            return;
        }
        let token = self.inner.shutdown.clone();
        self.inner.tasks.spawn(crate::buyer::sale_feed::run(
            room.clone(),
            self.inner.options.stock_frames_per_s,
            token.clone(),
        ));
        let mut aggregator =
            crate::dashboard::Aggregator::new(room.clone(), self.inner.options.push_interval)
                .with_fanout_budget(self.inner.options.fanout_frames_per_s);
        if let Some(fleet) = self.fleet() {
            aggregator = aggregator.from_stream().hub_id(fleet.hub_id.clone());
            fleet.follow.add(room.clone());
        }
        self.inner.tasks.spawn(aggregator.run(token));
    }

    /// Expires the orders whose time to pay ran out while the hub was down, then starts the
    /// task that expires the others as their time comes ([`expiry`]). Returns how many
    /// expired at once. `server::run` calls it before it serves.
    pub async fn start_expiry(&self) -> usize {
        if let Some(fleet) = self.fleet() {
            // Alive before the first sweep of any hub can take this hub's orders as a gone
            // hub's; the sweep of other hubs' orders runs beside this hub's own expiry.
            if let Err(e) = fleet.beat().await {
                tracing::warn!(error = %e, "first heartbeat failed");
            }
            self.inner.tasks.spawn(crate::fleet::expiry::run(
                self.clone(),
                fleet.clone(),
                self.inner.shutdown.clone(),
            ));
        }
        let expired = self.expire_due(crate::clock::now_ms()).await;
        self.inner
            .tasks
            .spawn(expiry::run(self.clone(), self.inner.shutdown.clone()));
        expired
    }

    /// Writes what is queued and stops the journal. Blocking; call from a blocking context.
    pub fn close_journal(&self) {
        self.inner.journal.close();
    }
}

//! A room's push state: what carries pushes to its buyers and dashboard snapshots to its
//! dashboards, and the flags of the background tasks that feed them (the sale feed,
//! [`crate::buyer::sale_feed`], and the aggregator, [`crate::dashboard::Aggregator`]).

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;

use tokio::sync::futures::Notified;
use tokio::sync::{watch, Notify};

use crate::buyer::order_pushes::OrderPushes;
use crate::buyer::pushes::BuyerPushes;
use crate::dashboard::fanout::Fanout;
use crate::dashboard::snapshot::Published;

/// The channels of a room's pushes.
#[derive(Debug)]
pub struct Feeds {
    /// Pushes to every buyer of the room, each encoded once, sent in waves.
    pub buyer_pushes: BuyerPushes,
    /// `order` pushes, each to one user's sockets.
    pub order_pushes: OrderPushes,
    /// The room's newest dashboard snapshot overall, whichever slot it was built for (REST
    /// stats, a dashboard's first message).
    pub snapshots: watch::Sender<Option<Arc<Published>>>,
    /// The slots the dashboards read their snapshots from, served in waves; each a `watch`:
    /// latest value wins, so a slow dashboard never gets a backlog.
    pub fanout: Fanout,
    /// Dashboards connected now: the dashboard feed counts them in and out, and the
    /// aggregator paces snapshots by them.
    pub dashboards: AtomicUsize,
    /// Wakes the sale feed when a sale's state may have changed. `notify_one`: the sale feed
    /// is its one listener, and a change while it is busy leaves a permit, so none is missed.
    sale_changed: Notify,
    /// Whether the room's background tasks were started.
    tasks_started: AtomicBool,
}

impl Default for Feeds {
    fn default() -> Self {
        Feeds {
            buyer_pushes: BuyerPushes::default(),
            order_pushes: OrderPushes::default(),
            snapshots: watch::channel(None).0,
            fanout: Fanout::default(),
            dashboards: AtomicUsize::new(0),
            sale_changed: Notify::new(),
            tasks_started: AtomicBool::new(false),
        }
    }
}

impl Feeds {
    /// A sale's state may have changed (a SKU, its stock or its window): the sale feed looks
    /// at once.
    pub fn notify_sale_changed(&self) {
        self.sale_changed.notify_one();
    }

    /// Completes at the next [`Feeds::notify_sale_changed`], or at once if one came since the
    /// last wait (the sale feed only).
    pub fn sale_changed(&self) -> Notified<'_> {
        self.sale_changed.notified()
    }

    /// Whether the caller is the first to ask: it then starts the room's background tasks;
    /// everybody after it gets `false`.
    pub fn claim_tasks(&self) -> bool {
        !self.tasks_started.swap(true, Ordering::AcqRel)
    }
}

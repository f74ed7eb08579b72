//! The expiry of unpaid orders: one task per hub sleeps until the earliest deadline
//! ([`crate::rooms::deadlines`]), takes every deadline that is due, and journals the orders
//! still unpaid as `expired`, a room's orders of the same moment together in as few records
//! as fit ([`EXPIRED_PER_RECORD`]), all queued at once so that one group commit takes them.
//! Their units go back on sale when the records are durable (the journal's apply).
//!
//! At start, deadlines that passed while the hub was down expire before it serves, and only
//! then does this task start ([`Hub::start_expiry`], called by `server::run`).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::Hub;
use crate::clock::now_ms;
use crate::journal::Record;
use crate::rooms::deadlines::Deadline;
use crate::rooms::statuses::Expiry;

/// Orders one `expired` record names at most: their numbers stay well under a record's
/// largest payload.
pub const EXPIRED_PER_RECORD: usize = 4096;

/// How long after a failed expiry (the journal refused it) the orders are tried again.
pub const RETRY_MS: i64 = 1000;

/// Expires orders as their deadlines come, until `shutdown`.
pub async fn run(hub: Hub, shutdown: CancellationToken) {
    let deadlines = &hub.rooms().deadlines;
    loop {
        let wait = deadlines
            .next_at()
            .map(|t| Duration::from_millis(t.saturating_sub(now_ms()).max(0) as u64));
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = deadlines.earlier() => continue,
            _ = sleep_for(wait) => {
                hub.expire_due(now_ms()).await;
            }
        }
    }
}

async fn sleep_for(d: Option<Duration>) {
    match d {
        Some(d) => tokio::time::sleep(d).await,
        None => std::future::pending().await,
    }
}

impl Hub {
    /// Expires every order due by `now_ms` that is still unpaid, and waits until the expiries
    /// are durable (or refused: those orders are tried again after [`RETRY_MS`]). Returns how
    /// many orders expired.
    pub async fn expire_due(&self, now_ms: i64) -> usize {
        let due = self.rooms().deadlines.take_due(now_ms);
        if due.is_empty() {
            return 0;
        }
        if let Some(fleet) = self.fleet() {
            return self.expire_own_in_fleet(fleet, due, now_ms).await;
        }
        let mut by_room: HashMap<Arc<str>, Vec<u64>> = HashMap::new();
        for d in due {
            let Some(room) = self.room(&d.room) else {
                continue;
            };
            match room.statuses.begin_expiry(d.order, now_ms) {
                Expiry::Begun => by_room.entry(d.room).or_default().push(d.order),
                Expiry::Settled => {}
                // A payment or cancel is on its way and may be refused: look again.
                Expiry::Moving | Expiry::NotDue => self.rooms().deadlines.push(Deadline {
                    at_ms: now_ms + RETRY_MS,
                    ..d
                }),
            }
        }
        let mut waiting = Vec::new();
        for (room, orders) in by_room {
            for chunk in orders.chunks(EXPIRED_PER_RECORD) {
                let record = Record::Expired {
                    room: room.clone(),
                    orders: chunk.to_vec(),
                    ts_ms: crate::clock::now_ms(),
                };
                waiting.push((room.clone(), chunk.to_vec(), self.journal().submit(record)));
            }
        }
        let mut expired = 0;
        for (room, orders, submitted) in waiting {
            let outcome = match submitted {
                Ok(rx) => match rx.await {
                    Ok(Ok(_)) => Ok(()),
                    Ok(Err(e)) => Err(e.to_string()),
                    Err(_) => Err("the journal stopped".to_owned()),
                },
                Err(e) => Err(e.to_string()),
            };
            match outcome {
                Ok(()) => expired += orders.len(),
                Err(e) => {
                    tracing::warn!(%room, orders = orders.len(), error = %e, "expiries could not be made durable; trying again");
                    let r = self.room(&room);
                    for n in orders {
                        if let Some(r) = &r {
                            r.statuses.abort(n);
                        }
                        self.rooms().deadlines.push(Deadline {
                            at_ms: now_ms + RETRY_MS,
                            order: n,
                            room: room.clone(),
                        });
                    }
                }
            }
        }
        if expired > 0 {
            metrics::counter!("livehub_orders_expired_total").increment(expired as u64);
        }
        expired
    }

    /// [`Hub::expire_due`] in fleet mode: this hub's own due orders, by their ids, through
    /// the claim, journal and commit of [`crate::fleet::moves`].
    async fn expire_own_in_fleet(
        &self,
        fleet: &crate::fleet::Fleet,
        due: Vec<Deadline>,
        now_ms: i64,
    ) -> usize {
        let mut by_room: HashMap<Arc<str>, Vec<Arc<str>>> = HashMap::new();
        for d in due {
            let id = format!("{}:O{}", fleet.hub_id, d.order);
            by_room.entry(d.room).or_default().push(Arc::from(id));
        }
        let mut expired = 0;
        for (room, orders) in by_room {
            let (n, again) = self.expire_in_fleet(fleet, &room, &orders, now_ms).await;
            expired += n;
            for id in again {
                if let Some((_, order)) = crate::fleet::moves::split_order_id(&id) {
                    self.rooms().deadlines.push(Deadline {
                        at_ms: now_ms + RETRY_MS,
                        order,
                        room: room.clone(),
                    });
                }
            }
        }
        if expired > 0 {
            metrics::counter!("livehub_orders_expired_total").increment(expired as u64);
        }
        expired
    }
}

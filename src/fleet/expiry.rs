//! Expiry across hubs. Each hub expires the unpaid orders it placed, by its own deadlines
//! ([`crate::hub::expiry`], through [`Hub::expire_in_fleet`]). This module keeps the rest
//! honest:
//! - a **heartbeat**: every hub keeps `lh:alive:<hub>` alive in Redis while it runs;
//! - a **sweep**: every [`SWEEP`], each hub looks at each room's due orders in Redis
//!   (`keys::deadlines`) and expires those whose hub has no heartbeat (gone, or not started
//!   again yet). Two hubs sweeping the same order race only for its claim, which one wins.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::moves::split_order_id;
use super::{keys, Fleet, FleetError};
use crate::clock::now_ms;
use crate::hub::Hub;

/// How often a hub renews its heartbeat.
pub const HEARTBEAT: Duration = Duration::from_millis(1000);
/// How long a heartbeat lasts without renewal: a hub this long silent counts as gone.
pub const HEARTBEAT_TTL: Duration = Duration::from_millis(3000);
/// How often each hub looks for due orders of gone hubs.
pub const SWEEP: Duration = Duration::from_millis(250);
/// Due orders one sweep takes per room at most.
pub const SWEEP_BATCH: usize = 1000;

impl Fleet {
    /// Renews this hub's heartbeat.
    pub async fn beat(&self) -> Result<(), FleetError> {
        self.run(
            redis::cmd("SET")
                .arg(keys::alive(&self.hub_id))
                .arg(now_ms())
                .arg("PX")
                .arg(HEARTBEAT_TTL.as_millis() as u64),
        )
        .await
    }
}

/// Expires the due orders of `room` whose hub has no heartbeat. Returns how many expired.
pub async fn sweep_room(hub: &Hub, fleet: &Fleet, room: &Arc<str>) -> Result<usize, FleetError> {
    let now = now_ms();
    let due: Vec<String> = fleet
        .run(
            redis::cmd("ZRANGEBYSCORE")
                .arg(keys::deadlines(room))
                .arg("-inf")
                .arg(now)
                .arg("LIMIT")
                .arg(0)
                .arg(SWEEP_BATCH),
        )
        .await?;
    let mut by_hub: HashMap<&str, Vec<Arc<str>>> = HashMap::new();
    for o in &due {
        if let Some((h, _)) = split_order_id(o) {
            if h != &*fleet.hub_id {
                by_hub.entry(h).or_default().push(Arc::from(o.as_str()));
            }
        }
    }
    let mut expired = 0;
    for (h, orders) in by_hub {
        let alive: bool = fleet.run(redis::cmd("EXISTS").arg(keys::alive(h))).await?;
        if alive {
            continue;
        }
        let (n, _) = hub.expire_in_fleet(fleet, room, &orders, now).await;
        if n > 0 {
            tracing::info!(%room, hub = %h, expired = n, "expired orders of a hub that is gone");
        }
        expired += n;
    }
    Ok(expired)
}

/// The heartbeat and the sweep, until `shutdown`.
pub async fn run(hub: Hub, fleet: Fleet, shutdown: CancellationToken) {
    let mut sweep = tokio::time::interval(SWEEP);
    sweep.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last_beat: Option<tokio::time::Instant> = None;
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = sweep.tick() => {}
        }
        if last_beat.is_none_or(|t| t.elapsed() >= HEARTBEAT) {
            match fleet.beat().await {
                Ok(()) => last_beat = Some(tokio::time::Instant::now()),
                Err(e) => tracing::debug!(error = %e, "heartbeat failed"),
            }
        }
        for room in hub.rooms().all() {
            if let Err(e) = sweep_room(&hub, &fleet, &room.id).await {
                tracing::debug!(room = %room.id, error = %e, "sweep failed");
            }
        }
    }
}

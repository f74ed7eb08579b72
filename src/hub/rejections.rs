//! Refused buys made durable in aggregate: one task per hub, once a second, journals per room
//! what the live refusal counters ([`crate::rooms::live::LiveStats`]) gained since the last
//! record it wrote ([`Record::Rejections`]), never one record per refused buy. The review
//! reads the journaled counts ([`crate::rooms::rejections`]), which a restart replays.
//!
//! What a crash loses: the refusals counted since the last record, at most about a second's.
//! A clean stop writes them before the journal closes. A record the journal refuses (a full
//! queue, a failed write) is not lost either: its counts go into the next second's record.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::Hub;
use crate::clock::now_ms;
use crate::journal::Record;
use crate::protocol::RejectCode;

/// How often refusals are journaled at most, per room.
pub const FLUSH_EVERY: Duration = Duration::from_secs(1);

/// Refusal counts by [`RejectCode::index`].
type Counts = [u64; RejectCode::ALL.len()];

/// Journals refusals every [`FLUSH_EVERY`] until `shutdown`, then once more.
pub async fn run(hub: Hub, shutdown: CancellationToken) {
    let mut journaled: HashMap<Arc<str>, Counts> = HashMap::new();
    let mut tick = tokio::time::interval(FLUSH_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => {
                flush(&hub, &mut journaled).await;
                return;
            }
            _ = tick.tick() => flush(&hub, &mut journaled).await,
        }
    }
}

/// Journals, for every room whose live counters moved past `journaled`, the difference, and
/// waits until it is durable; `journaled` then follows.
pub async fn flush(hub: &Hub, journaled: &mut HashMap<Arc<str>, Counts>) {
    let mut waiting = Vec::new();
    let ts_ms = now_ms();
    for room in hub.rooms().all() {
        let now: Counts = std::array::from_fn(|i| room.live.rejected[i].load(Ordering::Relaxed));
        let before = journaled.get(&room.id).copied().unwrap_or_default();
        let counts: Vec<(String, u64)> = RejectCode::ALL
            .iter()
            .filter_map(|c| {
                let n = now[c.index()].saturating_sub(before[c.index()]);
                (n > 0).then(|| (c.as_str().to_owned(), n))
            })
            .collect();
        if counts.is_empty() {
            continue;
        }
        let record = Record::Rejections {
            room: room.id.clone(),
            counts,
            ts_ms,
        };
        match hub.journal().submit(record) {
            Ok(rx) => waiting.push((room.id.clone(), now, rx)),
            Err(e) => {
                tracing::warn!(room = %room.id, error = %e, "refusal counts not journaled; next second tries again");
            }
        }
    }
    for (room, now, rx) in waiting {
        match rx.await {
            Ok(Ok(_)) => {
                journaled.insert(room, now);
            }
            Ok(Err(e)) => {
                tracing::warn!(%room, error = %e, "refusal counts not journaled; next second tries again")
            }
            Err(_) => tracing::warn!(%room, "journal stopped before refusal counts were written"),
        }
    }
}

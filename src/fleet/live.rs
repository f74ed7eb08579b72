//! The audience across hubs: each hub publishes its live counts of every room (buyer sockets,
//! audience online, peaks, viewers told of) to Redis once a [`LIVE_INTERVAL`], and reads the
//! other hubs', so every hub's dashboards show the room's totals and each hub's share.
//!
//! A room's counts are a hash, `lh:{room}:live`: hub id → [`Published`] (JSON, with the time
//! it was written). A hub that stops takes its field away; one that dies leaves it, and the
//! others ignore a field older than [`LIVE_STALE_MS`] (hubs' clocks are in step, as sale
//! windows need anyway). The room's peaks across hubs are a sorted set, `lh:{room}:peaks`
//! (`viewers`, `online`), raised with `ZADD GT` to each sum a hub computes: sampled once a
//! second, so a peak shorter than that may be missed, but never overstated.

use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

use super::{keys, Fleet, FleetError};
use crate::dashboard::snapshot::HubCounts;
use crate::hub::Hub;
use crate::rooms::live::OtherHubs;
use crate::rooms::room::Room;

/// How often a hub publishes its counts and reads the others'.
pub const LIVE_INTERVAL: Duration = Duration::from_secs(1);
/// A hub's counts older than this are left out: the hub is gone.
pub const LIVE_STALE_MS: i64 = 3_000;
/// A field this old is removed from the hash by whichever hub reads it.
pub const LIVE_FORGET_MS: i64 = 60_000;
/// Rooms published at once.
const ROOMS_AT_ONCE: usize = 16;

/// One hub's counts of a room as stored in Redis.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Published {
    /// When the hub wrote them (its clock, Unix ms).
    pub ts_ms: i64,
    pub viewers: u64,
    pub peak_viewers: u64,
    pub unique_viewers: u64,
    pub online: u64,
    pub peak: u64,
    pub unique: u64,
}

impl Published {
    fn of(c: &HubCounts, ts_ms: i64) -> Published {
        Published {
            ts_ms,
            viewers: c.viewers,
            peak_viewers: c.peak_viewers,
            unique_viewers: c.unique_viewers,
            online: c.online,
            peak: c.peak,
            unique: c.unique,
        }
    }

    fn counts(&self, hub: &str) -> HubCounts {
        HubCounts {
            hub: Arc::from(hub),
            viewers: self.viewers,
            peak_viewers: self.peak_viewers,
            unique_viewers: self.unique_viewers,
            online: self.online,
            peak: self.peak,
            unique: self.unique,
        }
    }
}

/// The room's counts across the hubs, from this hub's own (`own`, current) and the others'
/// as last read, and the per-hub list by hub id. Sockets, online and the viewers told of are
/// summed (a user who connected to two hubs counts on both: `unique_viewers` and `unique`
/// are upper bounds); each peak is the highest of the room's sampled peak, the sum now and
/// each hub's own peak.
pub fn across(own: HubCounts, others: Option<&OtherHubs>) -> (HubCounts, Vec<HubCounts>) {
    let mut room = HubCounts {
        hub: Arc::from(""),
        ..own.clone()
    };
    let me = own.hub.clone();
    let mut hubs = vec![own];
    if let Some(o) = others {
        for h in o.hubs.iter().filter(|h| h.hub != me) {
            room.viewers += h.viewers;
            room.unique_viewers += h.unique_viewers;
            room.online += h.online;
            room.unique += h.unique;
            room.peak_viewers = room.peak_viewers.max(h.peak_viewers);
            room.peak = room.peak.max(h.peak);
            hubs.push(h.clone());
        }
        room.peak_viewers = room.peak_viewers.max(o.peak_viewers);
        room.peak = room.peak.max(o.peak_online);
    }
    room.peak_viewers = room.peak_viewers.max(room.viewers);
    room.peak = room.peak.max(room.online);
    hubs.sort_by(|a, b| a.hub.cmp(&b.hub));
    (room, hubs)
}

/// This hub's own counts of `room` now.
fn own_counts(hub_id: &Arc<str>, room: &Room) -> HubCounts {
    use std::sync::atomic::Ordering;
    let (online, peak, unique) = room.audience.live_counts();
    HubCounts {
        hub: hub_id.clone(),
        viewers: room.live.viewers.load(Ordering::Relaxed),
        peak_viewers: room.live.peak_viewers.load(Ordering::Relaxed),
        unique_viewers: room.live.unique_viewers.len() as u64,
        online,
        peak,
        unique,
    }
}

/// Publishes this hub's counts of `room`, reads the other hubs', raises the room's peaks,
/// and keeps what it read for the room's dashboards.
pub async fn exchange(fleet: &Fleet, room: &Room, now_ms: i64) -> Result<(), FleetError> {
    let own = own_counts(&fleet.hub_id, room);
    let key = keys::live(&room.id);
    let value = serde_json::to_string(&Published::of(&own, now_ms)).expect("plain struct");
    let mut p = redis::pipe();
    p.cmd("HSET")
        .arg(&key)
        .arg(&*fleet.hub_id)
        .arg(value)
        .ignore()
        .cmd("PEXPIRE")
        .arg(&key)
        .arg(LIVE_FORGET_MS)
        .ignore()
        .cmd("HGETALL")
        .arg(&key);
    let (fields,): (Vec<(String, String)>,) = fleet.run_pipe(&p).await?;
    let mut others = Vec::new();
    let mut forget = Vec::new();
    for (hub, v) in fields {
        if hub == *fleet.hub_id {
            continue;
        }
        match serde_json::from_str::<Published>(&v) {
            Ok(c) if c.ts_ms >= now_ms - LIVE_STALE_MS => others.push(c.counts(&hub)),
            Ok(c) if c.ts_ms >= now_ms - LIVE_FORGET_MS => {}
            _ => forget.push(hub),
        }
    }
    let (sums, _) = across(
        own,
        Some(&OtherHubs {
            hubs: others.clone(),
            ..OtherHubs::default()
        }),
    );
    let peaks_key = keys::peaks(&room.id);
    let mut p = redis::pipe();
    p.cmd("ZADD")
        .arg(&peaks_key)
        .arg("GT")
        .arg(sums.viewers)
        .arg("viewers")
        .arg(sums.online)
        .arg("online")
        .ignore()
        .cmd("ZMSCORE")
        .arg(&peaks_key)
        .arg("viewers")
        .arg("online");
    if !forget.is_empty() {
        p.cmd("HDEL").arg(&key).arg(&forget).ignore();
    }
    let (peaks,): (Vec<Option<f64>>,) = fleet.run_pipe(&p).await?;
    let peak = |i: usize| peaks.get(i).copied().flatten().unwrap_or(0.0) as u64;
    let read = OtherHubs {
        hubs: others,
        peak_viewers: peak(0),
        peak_online: peak(1),
    };
    *room
        .live
        .other_hubs
        .lock()
        .unwrap_or_else(|e| e.into_inner()) = Some(Arc::new(read));
    Ok(())
}

/// Exchanges every room's counts once a [`LIVE_INTERVAL`] until `shutdown`; then takes this
/// hub's counts away, so the other hubs stop counting them at once.
pub async fn run(hub: Hub, fleet: Fleet, shutdown: CancellationToken) {
    let mut tick = tokio::time::interval(LIVE_INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut failing = false;
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => break,
            _ = tick.tick() => {}
        }
        let now = crate::clock::now_ms();
        let rooms = hub.rooms().all();
        let failed = futures_util::stream::iter(rooms)
            .map(|r| {
                let fleet = &fleet;
                async move { exchange(fleet, &r, now).await.err() }
            })
            .buffer_unordered(ROOMS_AT_ONCE)
            .filter_map(std::future::ready)
            .collect::<Vec<_>>()
            .await
            .into_iter()
            .next();
        match failed {
            Some(e) if !failing => {
                failing = true;
                tracing::warn!(error = %e, "cannot exchange live counts with the other hubs; retrying");
            }
            Some(_) => {}
            None => failing = false,
        }
    }
    for r in hub.rooms().all() {
        let cmd = redis::cmd("HDEL")
            .arg(keys::live(&r.id))
            .arg(&*fleet.hub_id)
            .clone();
        if fleet.run::<()>(&cmd).await.is_err() {
            break;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn counts(hub: &str, viewers: u64, peak_viewers: u64, online: u64, peak: u64) -> HubCounts {
        HubCounts {
            hub: Arc::from(hub),
            viewers,
            peak_viewers,
            unique_viewers: viewers + 1,
            online,
            peak,
            unique: online + 2,
        }
    }

    #[test]
    fn counts_are_summed_and_peaks_are_the_highest_known() {
        let own = counts("b", 3, 5, 10, 12);
        let (alone, hubs) = across(own.clone(), None);
        assert_eq!(
            (alone.viewers, alone.peak_viewers, alone.online),
            (3, 5, 10)
        );
        assert_eq!(hubs, vec![own.clone()]);
        let others = OtherHubs {
            hubs: vec![counts("a", 4, 4, 1, 15), counts("b", 99, 99, 99, 99)],
            peak_viewers: 6,
            peak_online: 20,
        };
        let (room, hubs) = across(own.clone(), Some(&others));
        assert_eq!(
            (room.viewers, room.unique_viewers, room.online, room.unique),
            (7, 4 + 5, 11, 3 + 12),
            "summed; this hub's own stale entry is left out"
        );
        assert_eq!(room.peak_viewers, 7, "the sum now beats the sampled peak");
        assert_eq!(
            room.peak, 20,
            "the room's sampled peak beats each hub's own"
        );
        let (room, _) = across(
            own.clone(),
            Some(&OtherHubs {
                hubs: vec![counts("a", 0, 9, 0, 40)],
                ..OtherHubs::default()
            }),
        );
        assert_eq!(
            (room.peak_viewers, room.peak),
            (9, 40),
            "a hub's own peak is one of the room's"
        );
        assert_eq!(
            hubs.iter().map(|h| &*h.hub).collect::<Vec<_>>(),
            ["a", "b"],
            "by hub id, this hub's current counts"
        );
        assert_eq!(hubs[1], own);
    }
}

//! Each hub's copy of the rooms and SKUs that Redis holds. Buyers' `hello`, the sale feed's
//! pushes, REST views and dashboards read this copy; buys never trust it (the script decides).
//!
//! It follows Redis two ways: a change notice on the `lh:changes` channel (sent by the catalog
//! scripts of any hub, [`super::catalog`]) refreshes that room at once, so `sale` pushes reach
//! every hub's buyers within a round trip; and every [`MIRROR_INTERVAL`] every room is
//! refreshed, which carries stock taken by other hubs' buyers to this hub's `stock` pushes and
//! catches any notice missed while Redis was away.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use tokio_util::sync::CancellationToken;

use super::{keys, Fleet, FleetError};
use crate::hub::Hub;
use crate::inventory::{Mirrored, Sku, SkuDef};
use crate::rooms::room::Room;
use crate::rooms::Rooms;

/// Every room is refreshed from Redis this often (stock taken on other hubs shows this late).
pub const MIRROR_INTERVAL: Duration = Duration::from_millis(100);
/// Pause before subscribing again after the change channel dropped.
pub const RESUBSCRIBE_PAUSE: Duration = Duration::from_millis(200);

fn opt_num<T: std::str::FromStr>(m: &HashMap<String, String>, k: &str) -> Option<T> {
    m.get(k)
        .filter(|v| !v.is_empty())
        .and_then(|v| v.parse().ok())
}

/// Reads a SKU's hash; `None` when it is missing or not a SKU.
pub fn parse_sku(m: &HashMap<String, String>, sold: u64) -> Option<Mirrored> {
    let total = opt_num(m, "total")?;
    Some(Mirrored {
        def: SkuDef {
            name: m.get("name")?.clone(),
            price_fen: opt_num(m, "price_fen")?,
            stock: total,
            limit_per_user: opt_num(m, "limit"),
            opens_at_ms: opt_num(m, "opens"),
            closes_at_ms: opt_num(m, "closes"),
            pay_timeout_s: opt_num(m, "pay_timeout"),
        },
        total,
        left: opt_num(m, "left")?,
        sold,
        sold_out_at_ms: opt_num(m, "sold_out_at"),
    })
}

/// Copies one room from Redis into `rooms`. Returns the room, or `None` when Redis does not
/// have it (and this hub did not either).
pub async fn load_room(
    fleet: &Fleet,
    rooms: &Rooms,
    room_id: &str,
) -> Result<Option<Arc<Room>>, FleetError> {
    let mut p = redis::pipe();
    p.cmd("HGET")
        .arg(keys::room(room_id))
        .arg("title")
        .cmd("LRANGE")
        .arg(keys::sku_list(room_id))
        .arg(0)
        .arg(-1)
        .cmd("HGETALL")
        .arg(keys::sold(room_id));
    let (title, skus, sold): (Option<String>, Vec<String>, HashMap<String, u64>) =
        fleet.run_pipe(&p).await?;
    let Some(title) = title else {
        return Ok(rooms.get(room_id));
    };
    let room = rooms.get_or_create(room_id, &title);
    if room.title() != title {
        room.set_title(title);
    }
    if skus.is_empty() {
        return Ok(Some(room));
    }
    let mut p = redis::pipe();
    for s in &skus {
        p.cmd("HGETALL").arg(keys::sku(room_id, s));
    }
    let hashes: Vec<HashMap<String, String>> = fleet.run_pipe(&p).await?;
    let mut changed = false;
    for (id, h) in skus.iter().zip(hashes) {
        let Some(m) = parse_sku(&h, sold.get(id).copied().unwrap_or(0)) else {
            continue;
        };
        match room.skus.get(id) {
            Some(s) => changed |= s.mirror(&m),
            None => {
                let s = Arc::new(Sku::new(Arc::from(id.as_str()), &m.def));
                s.mirror(&m);
                room.skus.add(s);
                changed = true;
            }
        }
    }
    if changed {
        room.feeds.notify_sale_changed();
    }
    Ok(Some(room))
}

/// Copies every room from Redis into `rooms`.
pub async fn load_all(fleet: &Fleet, rooms: &Rooms) -> Result<Vec<Arc<Room>>, FleetError> {
    let ids: Vec<String> = fleet.run(redis::cmd("SMEMBERS").arg(keys::ROOMS)).await?;
    let mut out = Vec::with_capacity(ids.len());
    for id in ids {
        if let Some(r) = load_room(fleet, rooms, &id).await? {
            out.push(r);
        }
    }
    Ok(out)
}

/// Refreshes one room for a buy of a SKU this hub does not know, unless a refresh was made
/// for that room (or any) a moment ago ([`super::resync::Resyncs`]).
pub async fn resync_for_unknown_sku(hub: &Hub, fleet: &Fleet, room_id: &Arc<str>) {
    if !fleet.resyncs.allow(room_id, Instant::now()) {
        return;
    }
    metrics::counter!("livehub_fleet_resyncs_total").increment(1);
    let _ = sync_room(hub, fleet, room_id).await;
}

/// Refreshes one room of a running hub and starts its tasks if it is new here.
pub async fn sync_room(hub: &Hub, fleet: &Fleet, room_id: &str) -> Result<(), FleetError> {
    let _one_at_a_time = fleet.sync_lock.lock().await;
    if let Some(r) = load_room(fleet, hub.rooms(), room_id).await? {
        hub.start_room_tasks(&r);
    }
    Ok(())
}

async fn sync_all(hub: &Hub, fleet: &Fleet) -> Result<(), FleetError> {
    let _one_at_a_time = fleet.sync_lock.lock().await;
    for r in load_all(fleet, hub.rooms()).await? {
        hub.start_room_tasks(&r);
    }
    Ok(())
}

/// Keeps this hub's copy in step with Redis until `shutdown`.
pub async fn run(hub: Hub, fleet: Fleet, shutdown: CancellationToken) {
    let listener = listen(hub.clone(), fleet.clone(), shutdown.clone());
    let poller = async {
        let mut tick = tokio::time::interval(MIRROR_INTERVAL);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut failing = false;
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tick.tick() => {}
            }
            match sync_all(&hub, &fleet).await {
                Ok(()) if failing => {
                    failing = false;
                    tracing::info!("redis answers again; rooms refreshed");
                }
                Ok(()) => {}
                Err(e) if !failing => {
                    failing = true;
                    tracing::warn!(error = %e, "cannot refresh rooms from redis; retrying");
                }
                Err(_) => {}
            }
        }
    };
    tokio::join!(listener, poller);
}

/// Follows the change channel, subscribing again whenever it drops. On a cluster each attempt
/// takes the next seed node, so a seed that is gone (a failed master) does not stop notices.
async fn listen(hub: Hub, fleet: Fleet, shutdown: CancellationToken) {
    let urls = fleet.target.pubsub_urls();
    let mut attempt = 0usize;
    loop {
        let url = &urls[attempt % urls.len()];
        attempt = attempt.wrapping_add(1);
        let subscribed = async {
            let client = redis::Client::open(url.as_str())?;
            let mut ps = fleet.bounded(client.get_async_pubsub()).await?;
            fleet.bounded(ps.subscribe(keys::CHANGES)).await?;
            Ok::<_, FleetError>(ps)
        };
        let ps = tokio::select! {
            _ = shutdown.cancelled() => return,
            r = subscribed => r,
        };
        if let Ok(mut ps) = ps {
            let mut messages = ps.on_message();
            loop {
                let msg = tokio::select! {
                    _ = shutdown.cancelled() => return,
                    m = messages.next() => m,
                };
                let Some(msg) = msg else { break };
                let Ok(notice) = msg.get_payload::<String>() else {
                    continue;
                };
                let room = keys::notice_room(&notice).to_owned();
                if let Err(e) = sync_room(&hub, &fleet, &room).await {
                    tracing::debug!(%room, error = %e, "change notice: refresh failed");
                }
            }
        }
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(RESUBSCRIBE_PAUSE) => {}
        }
    }
}

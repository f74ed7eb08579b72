//! Catalog changes in fleet mode (the fleet's side of [`crate::catalog`]): written to Redis by
//! one script each (which also sends the change notice every hub listens to), then this hub's
//! copy is refreshed before it answers, so the answer shows the change. Not journaled: Redis
//! holds rooms, SKUs and stock in this mode, for every hub.

use std::sync::Arc;

use super::{keys, mirror, Fleet, FleetError};
use crate::catalog::rules::{CatalogError, RoomView, MAX_STOCK};
use crate::clock::now_ms;
use crate::hub::Hub;
use crate::inventory::SkuDef;
use crate::protocol::SkuState;

impl From<FleetError> for CatalogError {
    fn from(e: FleetError) -> Self {
        CatalogError::Unavailable(format!("the change could not be made in redis: {e}"))
    }
}

fn opt<T: ToString>(v: Option<T>) -> String {
    v.map(|v| v.to_string()).unwrap_or_default()
}

fn first(reply: &[String]) -> &str {
    reply.first().map(String::as_str).unwrap_or("")
}

async fn refreshed_view(
    hub: &Hub,
    fleet: &Fleet,
    room: &str,
    sku: &str,
) -> Result<SkuState, CatalogError> {
    mirror::sync_room(hub, fleet, room).await?;
    hub.room(room)
        .and_then(|r| r.skus.get(sku))
        .map(|s| s.view(now_ms()))
        .ok_or_else(|| {
            CatalogError::Unavailable("the change was made but is not visible yet".into())
        })
}

/// Creates a room or changes its title.
pub async fn put_room(
    hub: &Hub,
    fleet: &Fleet,
    room: Arc<str>,
    title: String,
) -> Result<RoomView, CatalogError> {
    // Three calls, not one pipeline: the room's hash is in the room's slot and the set of
    // rooms in another, which a cluster cannot serve in one pipeline. The hash comes first,
    // so a room listed in the set always has its title; a failure between them leaves a room
    // unlisted until the caller's retry.
    let _: i64 = fleet
        .run(
            redis::cmd("HSET")
                .arg(keys::room(&room))
                .arg("title")
                .arg(&title),
        )
        .await?;
    let _: i64 = fleet
        .run(redis::cmd("SADD").arg(keys::ROOMS).arg(&*room))
        .await?;
    let _: i64 = fleet
        .run(
            redis::cmd("PUBLISH")
                .arg(keys::CHANGES)
                .arg(keys::notice(&room, None)),
        )
        .await?;
    mirror::sync_room(hub, fleet, &room).await?;
    hub.room_view(&room)
        .ok_or_else(|| CatalogError::Unavailable("the room was made but is not visible yet".into()))
}

/// Creates a SKU (with its initial stock) or updates it (stock untouched).
pub async fn put_sku(
    hub: &Hub,
    fleet: &Fleet,
    room: &str,
    sku: &str,
    def: SkuDef,
) -> Result<SkuState, CatalogError> {
    let mut inv = fleet.scripts.put_sku.prepare_invoke();
    inv.key(keys::sku(room, sku))
        .key(keys::sku_list(room))
        .arg(&def.name)
        .arg(def.price_fen)
        .arg(def.stock)
        .arg(opt(def.limit_per_user))
        .arg(opt(def.opens_at_ms))
        .arg(opt(def.closes_at_ms))
        .arg(sku)
        .arg(keys::notice(room, Some(sku)))
        .arg(opt(def.pay_timeout_s));
    let mut c = fleet.conn();
    let _created: i64 = fleet.bounded(inv.invoke_async(&mut c)).await?;
    refreshed_view(hub, fleet, room, sku).await
}

/// Restocks or withdraws; a withdrawal never takes more than is left.
pub async fn change_stock(
    hub: &Hub,
    fleet: &Fleet,
    room: &str,
    sku: &str,
    delta: i64,
) -> Result<SkuState, CatalogError> {
    let mut inv = fleet.scripts.stock.prepare_invoke();
    inv.key(keys::sku(room, sku))
        .arg(delta)
        .arg(MAX_STOCK)
        .arg(keys::notice(room, Some(sku)));
    let mut c = fleet.conn();
    let reply: Vec<String> = fleet.bounded(inv.invoke_async(&mut c)).await?;
    match first(&reply) {
        "ok" => refreshed_view(hub, fleet, room, sku).await,
        "not_found" => Err(CatalogError::NotFound(format!(
            "sku {sku} does not exist in room {room}"
        ))),
        "conflict" => Err(CatalogError::Conflict(format!(
            "cannot withdraw {}: only {} left",
            delta.unsigned_abs(),
            reply.get(1).map(String::as_str).unwrap_or("?")
        ))),
        "too_much" => Err(CatalogError::BadRequest(format!(
            "stock_total would exceed {MAX_STOCK}"
        ))),
        _ => Err(FleetError::Reply(format!("{reply:?}")).into()),
    }
}

/// Opens (`open`) or closes a sale now.
pub async fn set_window(
    hub: &Hub,
    fleet: &Fleet,
    room: &str,
    sku: &str,
    open: bool,
) -> Result<SkuState, CatalogError> {
    let mut inv = fleet.scripts.window.prepare_invoke();
    inv.key(keys::sku(room, sku))
        .arg(if open { "open" } else { "close" })
        .arg(now_ms())
        .arg(keys::notice(room, Some(sku)));
    let mut c = fleet.conn();
    let reply: Vec<String> = fleet.bounded(inv.invoke_async(&mut c)).await?;
    match first(&reply) {
        "ok" => refreshed_view(hub, fleet, room, sku).await,
        "not_found" => Err(CatalogError::NotFound(format!(
            "sku {sku} does not exist in room {room}"
        ))),
        _ => Err(FleetError::Reply(format!("{reply:?}")).into()),
    }
}

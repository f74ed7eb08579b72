//! Journaled orders → the room's Redis stream. One task per hub takes the orders in the order
//! the journal made them durable and publishes them per room with one script call per batch.
//! The script skips orders at or below the hub's last published seq, so a retry after a lost
//! reply, or the catch-up at start-up, never publishes an order twice.
//!
//! While Redis is away the orders wait in memory (they are durable in the journal already) and
//! go out in order when it answers; on a restart the catch-up publishes what the previous run
//! had not.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc::UnboundedReceiver;
use tokio_util::sync::CancellationToken;

use super::scripts::Done;
use super::{keys, Fleet, FleetError};
use crate::journal::OrderRecord;
use crate::rooms::room::Room;

/// Orders published with one script call at most.
pub const PUBLISH_BATCH: usize = 1024;
/// Longest pause between attempts while Redis is away.
pub const PUBLISH_BACKOFF_MAX: Duration = Duration::from_secs(1);

/// Publishes one hub's orders of one room (all of the same room, in seq order). Returns how
/// many were new to the stream.
pub async fn publish(
    fleet: &Fleet,
    room: &str,
    orders: &[Arc<OrderRecord>],
) -> Result<u64, FleetError> {
    let mut inv = fleet.scripts.publish.prepare_invoke();
    inv.key(keys::published(room))
        .key(keys::requests(room))
        .key(keys::orders(room))
        .key(keys::seq(room))
        .key(keys::sold(room))
        .key(keys::pending(room, &fleet.hub_id))
        .key(keys::statuses(room))
        .key(keys::deadlines(room))
        .arg(&*fleet.hub_id);
    for o in orders {
        let done = Done {
            order: o.order_id(),
            sku: o.sku.clone(),
            qty: o.qty,
            amount_fen: o.amount_fen,
            left: o.left_after,
        };
        let pay_by = o.pay_by_ms.map(|t| t.to_string()).unwrap_or_default();
        let entry = format!(
            "{}|{}|{}|{}|{}|{}|{}|{}|{}|{}|{}",
            o.seq,
            done.order,
            o.sku,
            o.user,
            o.req,
            o.qty,
            o.price_fen,
            o.amount_fen,
            o.referrer.as_deref().unwrap_or(""),
            o.ts_ms,
            pay_by
        );
        inv.arg(o.seq)
            .arg(keys::request_field(&o.user, &o.req))
            .arg(done.encode())
            .arg(&*o.sku)
            .arg(o.qty)
            .arg(entry)
            .arg(super::moves::Entry::placed(o))
            .arg(pay_by);
    }
    let mut c = fleet.conn();
    let n: u64 = fleet.bounded(inv.invoke_async(&mut c)).await?;
    Ok(n)
}

/// Publishes, retrying with backoff until it succeeds or `shutdown`; returns whether it did.
async fn publish_until_done(
    fleet: &Fleet,
    room: &str,
    orders: &[Arc<OrderRecord>],
    shutdown: &CancellationToken,
) -> bool {
    let mut pause = Duration::from_millis(50);
    let mut warned = false;
    loop {
        match publish(fleet, room, orders).await {
            Ok(_) => {
                if warned {
                    tracing::info!(%room, "publishing orders again");
                }
                return true;
            }
            Err(e) if !warned => {
                warned = true;
                tracing::warn!(%room, error = %e, waiting = orders.len(), "cannot publish orders to redis; they are journaled and will be published when it answers");
            }
            Err(_) => {}
        }
        tokio::select! {
            _ = shutdown.cancelled() => return false,
            _ = tokio::time::sleep(pause) => {}
        }
        pause = (pause * 2).min(PUBLISH_BACKOFF_MAX);
    }
}

/// Publishes this hub's journaled orders of `room` that the stream does not have yet.
pub async fn catch_up(fleet: &Fleet, room: &Room) -> Result<u64, FleetError> {
    let last: Option<u64> = fleet
        .run(
            redis::cmd("HGET")
                .arg(keys::published(&room.id))
                .arg(&*fleet.hub_id),
        )
        .await?;
    let mut after = last.unwrap_or(0);
    let mut n = 0;
    loop {
        let page = room.orders.page_after(after, PUBLISH_BATCH);
        let Some(last) = page.last() else {
            return Ok(n);
        };
        after = last.seq;
        n += publish(fleet, &room.id, &page).await?;
    }
}

/// The publisher: runs until `shutdown`, then publishes what is queued if Redis answers.
/// Orders of a room go out strictly in seq order: after a failure nothing later of that room
/// is tried (the script would then skip the earlier ones), so the rest waits for the catch-up.
pub async fn run(
    fleet: Fleet,
    mut rx: UnboundedReceiver<Arc<OrderRecord>>,
    shutdown: CancellationToken,
) {
    loop {
        let first = tokio::select! {
            o = rx.recv() => o,
            _ = shutdown.cancelled() => None,
        };
        let stopping = first.is_none();
        let mut batch: Vec<Arc<OrderRecord>> = first.into_iter().collect();
        while batch.len() < PUBLISH_BATCH * 4 {
            match rx.try_recv() {
                Ok(o) => batch.push(o),
                Err(_) => break,
            }
        }
        if stopping && batch.is_empty() {
            return;
        }
        // Per room, in journal order (the journal applies orders in seq order).
        let mut by_room: Vec<(Arc<str>, Vec<Arc<OrderRecord>>)> = Vec::new();
        for o in batch {
            match by_room.iter_mut().find(|(r, _)| *r == o.room) {
                Some((_, v)) => v.push(o),
                None => by_room.push((o.room.clone(), vec![o])),
            }
        }
        for (room, orders) in by_room {
            for chunk in orders.chunks(PUBLISH_BATCH) {
                let published = if stopping {
                    publish(&fleet, &room, chunk).await.is_ok()
                } else {
                    publish_until_done(&fleet, &room, chunk, &shutdown).await
                };
                if !published {
                    tracing::warn!(%room, "stopping with orders unpublished; the next start publishes them");
                    return;
                }
            }
        }
        if stopping {
            return;
        }
    }
}

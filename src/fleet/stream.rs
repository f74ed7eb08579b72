//! The room's stream → its aggregator: every hub reads every hub's published orders, so each
//! dashboard shows the whole room. The reader polls (`XREAD` without `BLOCK`, which would
//! hold the shared multiplexed connection) every [`STREAM_POLL`], and at once again after a
//! full page.

use std::sync::Arc;
use std::time::Duration;

use redis::streams::{StreamId, StreamReadOptions, StreamReadReply};
use tokio_util::sync::CancellationToken;

use super::{keys, Fleet, FleetError};
use crate::journal::OrderRecord;
use crate::room::{Room, StreamOrder};

/// How often the stream is read when the last read found it caught up.
pub const STREAM_POLL: Duration = Duration::from_millis(20);
/// Entries read at once.
pub const STREAM_PAGE: usize = 1000;

/// Reads one stream entry; `None` when it is not an order.
pub fn decode(room: &Arc<str>, e: &StreamId) -> Option<StreamOrder> {
    let s = |k: &str| e.get::<String>(k);
    let n = |k: &str| s(k).and_then(|v| v.parse::<u64>().ok());
    let referrer = s("ref").filter(|r| !r.is_empty()).map(Arc::from);
    let order = OrderRecord {
        seq: n("seq")?,
        number: 0,
        room: room.clone(),
        sku: Arc::from(s("sku")?),
        user: Arc::from(s("user")?),
        req: Arc::from(s("req")?),
        qty: n("qty")?,
        price_fen: n("price_fen")?,
        amount_fen: n("amount_fen")?,
        referrer,
        ts_ms: s("ts_ms")?.parse().ok()?,
        left_after: 0,
        hub: Some(Arc::from(s("hub")?)),
    };
    Some(StreamOrder {
        order: Arc::new(order),
        hub_seq: n("hub_seq")?,
    })
}

/// Reads up to a page of entries after `after`; returns the orders and the last entry id.
pub async fn read_after(
    fleet: &Fleet,
    room: &Arc<str>,
    after: &str,
) -> Result<(Vec<StreamOrder>, Option<String>), FleetError> {
    let opts = StreamReadOptions::default().count(STREAM_PAGE);
    let key = keys::orders(room);
    let mut c = fleet.conn();
    let reply: Option<StreamReadReply> = fleet
        .bounded(redis::AsyncCommands::xread_options(
            &mut c,
            &[&key],
            &[after],
            &opts,
        ))
        .await?;
    let mut out = Vec::new();
    let mut last = None;
    for k in reply.map(|r| r.keys).unwrap_or_default() {
        for e in k.ids {
            match decode(room, &e) {
                Some(o) => out.push(o),
                None => tracing::error!(%room, id = %e.id, "stream entry is not an order; skipped"),
            }
            last = Some(e.id);
        }
    }
    Ok((out, last))
}

/// Follows the room's stream until `shutdown`.
pub async fn run(fleet: Fleet, room: Arc<Room>, shutdown: CancellationToken) {
    let mut after = "0-0".to_owned();
    let mut failing = false;
    loop {
        let mut full = false;
        match read_after(&fleet, &room.id, &after).await {
            Ok((orders, last)) => {
                failing = false;
                full = orders.len() >= STREAM_PAGE;
                room.add_stream_orders(orders);
                if let Some(l) = last {
                    after = l;
                }
            }
            Err(e) if !failing => {
                failing = true;
                tracing::warn!(room = %room.id, error = %e, "cannot read the room's order stream; retrying");
            }
            Err(_) => {}
        }
        if full {
            continue;
        }
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(STREAM_POLL) => {}
        }
    }
}

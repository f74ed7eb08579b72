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
use crate::rooms::orders::StreamOrder;
use crate::rooms::room::Room;

/// How often the stream is read when the last read found it caught up.
pub const STREAM_POLL: Duration = Duration::from_millis(20);
/// Entries read at once.
pub const STREAM_PAGE: usize = 1000;

/// Reads one stream entry; `None` when it is not an order.
pub fn decode(room: &Arc<str>, e: &StreamId) -> Option<StreamOrder> {
    decode_entry(room, &e.get::<String>("o")?)
}

/// Reads an entry's one field: `seq|hub|hub_seq|order|sku|user|req|qty|price_fen|amount_fen|ref|ts_ms`
/// (ids never contain `|`; `ref` is empty for none).
pub fn decode_entry(room: &Arc<str>, o: &str) -> Option<StreamOrder> {
    let f: Vec<&str> = o.split('|').collect();
    let [seq, hub, hub_seq, order_id, sku, user, req, qty, price, amount, referrer, ts] = f[..]
    else {
        return None;
    };
    // The id is `hub:O<number>`; keeping the number makes `order_id()` give it back.
    let number = order_id
        .strip_prefix(hub)?
        .strip_prefix(":O")?
        .parse()
        .ok()?;
    let order = OrderRecord {
        seq: seq.parse().ok()?,
        number,
        room: room.clone(),
        sku: Arc::from(sku),
        user: Arc::from(user),
        req: Arc::from(req),
        qty: qty.parse().ok()?,
        price_fen: price.parse().ok()?,
        amount_fen: amount.parse().ok()?,
        referrer: (!referrer.is_empty()).then(|| Arc::from(referrer)),
        ts_ms: ts.parse().ok()?,
        left_after: 0,
        pay_by_ms: None,
        hub: Some(Arc::from(hub)),
        begun: None,
    };
    Some(StreamOrder {
        order: Arc::new(order),
        hub_seq: hub_seq.parse().ok()?,
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
                room.orders.add_stream_orders(orders);
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stream_entries_decode() {
        let room: Arc<str> = Arc::from("r");
        let o = decode_entry(&room, "7|h1|3|h1:O9|A:1|u|q|2|990|1980|s.1|1700000000000").unwrap();
        assert_eq!(o.hub_seq, 3);
        assert_eq!((o.order.seq, &*o.order.sku, o.order.qty), (7, "A:1", 2));
        assert_eq!(o.order.amount_fen, 1980);
        assert_eq!(o.order.referrer.as_deref(), Some("s.1"));
        assert_eq!(o.order.hub.as_deref(), Some("h1"));
        assert_eq!(o.order.order_id(), "h1:O9");
        let none = decode_entry(&room, "7|h1|3|h1:O9|A|u|q|2|990|1980||5").unwrap();
        assert!(decode_entry(&room, "7|h1|3|h2:O9|A|u|q|2|990|1980||5").is_none());
        assert_eq!(none.order.referrer, None);
        assert!(decode_entry(&room, "7|h1|3").is_none());
        assert!(decode_entry(&room, "x|h1|3|o|A|u|q|2|990|1980||5").is_none());
    }
}

//! The room's stream → its aggregator: every hub reads every hub's published orders and
//! status moves, so each dashboard shows the whole room. A move also reaches the buyer's
//! sockets on this hub (the `order` push), and, for an order this hub placed, its status here
//! (export, change feed, `status`). The reader polls (`XREAD` without `BLOCK`, which would
//! hold the shared multiplexed connection) every [`STREAM_POLL`], and at once again after a
//! full page.

use std::sync::Arc;
use std::time::Duration;

use redis::streams::{StreamId, StreamReadOptions, StreamReadReply};
use tokio_util::sync::CancellationToken;

use super::moves::Entry;
use super::{keys, Fleet, FleetError};
use crate::journal::record::{Move, Payment};
use crate::journal::OrderRecord;
use crate::protocol::OrderStatus;
use crate::rooms::events::{Moved, What};
use crate::rooms::orders::{StreamEvent, StreamOrder};
use crate::rooms::room::Room;

/// How often the stream is read when the last read found it caught up.
pub const STREAM_POLL: Duration = Duration::from_millis(20);
/// Entries read at once.
pub const STREAM_PAGE: usize = 1000;

/// One entry of the stream as read.
#[derive(Debug)]
pub enum Read {
    /// An order placed.
    Placed(StreamOrder),
    /// A move, and the journal's form of it.
    Moved(Moved, Option<Move>),
}

/// Reads one stream entry; `None` when it is neither an order nor a move.
pub fn decode(room: &Arc<str>, e: &StreamId) -> Option<Read> {
    if let Some(o) = e.get::<String>("o") {
        return decode_entry(room, &o).map(Read::Placed);
    }
    decode_move(room, &e.get::<String>("m")?).map(|(m, to)| Read::Moved(m, to))
}

/// Reads an order entry's one field:
/// `seq|hub|hub_seq|order|sku|user|req|qty|price_fen|amount_fen|ref|ts_ms|pay_by_ms` (ids never
/// contain `|`; `ref` and `pay_by_ms` are empty for none; builds before payments wrote no
/// `pay_by_ms`).
pub fn decode_entry(room: &Arc<str>, o: &str) -> Option<StreamOrder> {
    let f: Vec<&str> = o.split('|').collect();
    let (fields, pay_by) = match f.len() {
        12 => (&f[..], ""),
        13 => (&f[..12], f[12]),
        _ => return None,
    };
    let [seq, hub, hub_seq, order_id, sku, user, req, qty, price, amount, referrer, ts] =
        fields[..]
    else {
        return None;
    };
    let pay_by_ms = if pay_by.is_empty() {
        None
    } else {
        Some(pay_by.parse().ok()?)
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
        pay_by_ms,
        hub: Some(Arc::from(hub)),
        begun: None,
    };
    Some(StreamOrder {
        order: Arc::new(order),
        hub_seq: hub_seq.parse().ok()?,
    })
}

/// Reads a move entry's one field (`lua/commit.lua`):
/// `order|move|ts_ms|sku|user|qty|amount_fen|pay_by_ms|placed_ms|paid_ms|S before|payment_id|
/// pay_amount_fen|paid_at_ms`. Returns the move (its order as far as the entry tells) and the
/// journal's form of it.
pub fn decode_move(room: &Arc<str>, m: &str) -> Option<(Moved, Option<Move>)> {
    let f: Vec<&str> = m.split('|').collect();
    let [order, mv, ts, sku, user, qty, amount, pay_by, placed, paid_ms, before, pid, pay_amount, paid_at] =
        f[..]
    else {
        return None;
    };
    let entry = Entry {
        status: OrderStatus::Unpaid,
        sku: Arc::from(sku),
        user: Arc::from(user),
        qty: qty.parse().ok()?,
        amount_fen: amount.parse().ok()?,
        pay_by_ms: (!pay_by.is_empty()).then(|| pay_by.parse().ok()).flatten(),
        placed_ms: placed.parse().ok()?,
        paid_ms: None,
    };
    let payment = || -> Option<Payment> {
        Some(Payment {
            payment_id: Arc::from(pid),
            amount_fen: pay_amount.parse().ok()?,
            paid_at_ms: paid_at.parse().ok()?,
        })
    };
    let paid_ts_ms = if paid_ms.is_empty() {
        entry.placed_ms
    } else {
        paid_ms.parse().ok()?
    };
    let (what, to) = match mv {
        "paid" => (What::Paid(payment()?), Some(Move::Paid(payment()?))),
        "late" => {
            let status = match before {
                "U" => OrderStatus::Unpaid,
                "P" => OrderStatus::Paid,
                "E" => OrderStatus::Expired,
                "C" => OrderStatus::Cancelled,
                "R" => OrderStatus::Refunded,
                _ => return None,
            };
            (
                What::Late {
                    payment: payment()?,
                    status,
                },
                Some(Move::LatePayment(payment()?)),
            )
        }
        "cancel" | "cancel_admin" => {
            let by_admin = mv == "cancel_admin";
            (
                What::Cancelled { by_admin },
                Some(Move::Cancelled { by_admin }),
            )
        }
        "expire" => (What::Expired, None),
        "refund" | "refund_restock" => {
            let restock = mv == "refund_restock";
            (
                What::Refunded {
                    restock,
                    paid_ts_ms,
                },
                Some(Move::Refunded { restock }),
            )
        }
        _ => return None,
    };
    Some((
        Moved {
            order: entry.order(room, order)?,
            ts_ms: ts.parse().ok()?,
            what,
        },
        to,
    ))
}

/// Reads up to a page of entries after `after`; returns the entries and the last entry id.
pub async fn read_after(
    fleet: &Fleet,
    room: &Arc<str>,
    after: &str,
) -> Result<(Vec<Read>, usize, Option<String>), FleetError> {
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
    let mut read = 0;
    let mut last = None;
    for k in reply.map(|r| r.keys).unwrap_or_default() {
        for e in k.ids {
            read += 1;
            match decode(room, &e) {
                Some(d) => out.push(d),
                None => {
                    tracing::error!(%room, id = %e.id, "stream entry is neither an order nor a move; skipped")
                }
            }
            last = Some(e.id);
        }
    }
    Ok((out, read, last))
}

/// Takes one read entry in: this hub's own orders and their moves join its change feed, in
/// stream order; a move of its own order changes its status here; and every move is pushed
/// to its buyer's sockets on this hub.
fn take_in(fleet: &Fleet, room: &Room, entry: Read) -> StreamEvent {
    let own = |hub: Option<&str>| hub == Some(&*fleet.hub_id);
    let (m, to) = match entry {
        Read::Placed(o) => {
            if own(o.order.hub.as_deref()) {
                match room.orders.by_number(o.order.number) {
                    Some(mine) => room.list_stream_placement(mine),
                    None => {
                        tracing::error!(room = %room.id, order = %o.order.order_id(), "an order of this hub in the stream that its journal does not hold")
                    }
                }
            }
            return StreamEvent::Placed(o);
        }
        Read::Moved(m, to) => (m, to),
    };
    let mut shown = Arc::new(m);
    if own(shown.order.hub.as_deref()) {
        match room.orders.by_number(shown.order.number) {
            Some(order) => match room.apply_stream_move(&order, to.as_ref(), shown.ts_ms) {
                Ok(moved) => shown = moved,
                Err(err) => {
                    tracing::error!(room = %room.id, error = %err, "a status move in the stream does not fit this hub's order")
                }
            },
            None => {
                tracing::error!(room = %room.id, order = %shown.order.order_id(), "a status move of an order this hub does not hold")
            }
        }
    }
    room.feeds.order_pushes.send(&shown);
    StreamEvent::Moved(shown)
}

/// Follows the room's stream until `shutdown`.
pub async fn run(fleet: Fleet, room: Arc<Room>, shutdown: CancellationToken) {
    let mut after = "0-0".to_owned();
    let mut failing = false;
    loop {
        let mut full = false;
        match read_after(&fleet, &room.id, &after).await {
            Ok((entries, read, last)) => {
                failing = false;
                full = read >= STREAM_PAGE;
                let events: Vec<StreamEvent> = entries
                    .into_iter()
                    .map(|e| take_in(&fleet, &room, e))
                    .collect();
                room.add_stream_events(events);
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

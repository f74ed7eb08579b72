//! The room's stream → its aggregator: every hub reads every hub's published orders and
//! status moves, so each dashboard shows the whole room. A move also reaches the buyer's
//! sockets on this hub (the `order` push), and, for an order this hub placed, its status here
//! (export, change feed, `status`). One reader per hub ([`run`]) follows every room's stream
//! with blocking reads (`XREAD BLOCK`) on connections of its own, so an order reaches every
//! hub's aggregator within a round trip of its publishing.

use std::sync::Arc;
use std::time::Duration;

use std::collections::HashMap;

use redis::streams::{StreamId, StreamReadOptions, StreamReadReply};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::moves::Entry;
use super::{keys, Fleet, FleetError, Target};
use crate::journal::record::{Move, Payment};
use crate::journal::OrderRecord;
use crate::protocol::OrderStatus;
use crate::rooms::events::{Moved, What};
use crate::rooms::orders::{StreamEvent, StreamOrder};
use crate::rooms::room::Room;

/// Longest wait of one blocking read; then it is sent again (a room added meanwhile ends it
/// sooner).
pub const READ_BLOCK: Duration = Duration::from_secs(1);
/// Pause before reading again while a cluster slot moves (reads then do not block).
pub const STREAM_POLL: Duration = Duration::from_millis(20);
/// Pause after a read failed (Redis away), before connecting again.
pub const READ_RETRY_PAUSE: Duration = Duration::from_millis(200);
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

/// Hands the rooms this hub serves to its stream reader ([`run`]). Cheap to clone.
#[derive(Clone)]
pub struct Follow {
    tx: mpsc::UnboundedSender<Arc<Room>>,
    rx: Arc<std::sync::Mutex<Option<mpsc::UnboundedReceiver<Arc<Room>>>>>,
}

impl Default for Follow {
    fn default() -> Self {
        let (tx, rx) = mpsc::unbounded_channel();
        Follow {
            tx,
            rx: Arc::new(std::sync::Mutex::new(Some(rx))),
        }
    }
}

impl Follow {
    /// Adds a room to the reader (once per room: [`crate::hub::Hub::start_room_tasks`]).
    pub fn add(&self, room: Arc<Room>) {
        let _ = self.tx.send(room);
    }

    /// The rooms handed over, for the one reader that takes them.
    fn take(&self) -> Option<mpsc::UnboundedReceiver<Arc<Room>>> {
        self.rx.lock().unwrap_or_else(|e| e.into_inner()).take()
    }
}

/// Follows every room's stream until `shutdown`, with blocking reads (`XREAD BLOCK`) on
/// connections of their own: a blocking command on the shared multiplexed connection would
/// hold up every call queued behind it.
///
/// On one Redis one task reads every room's stream in one command. On a cluster, a
/// multi-key command must name keys of one slot (even when one node holds several), so the
/// rooms are grouped by slot: one task and one connection per slot that has rooms, each
/// connected to the slot's master (it follows `MOVED`).
pub async fn run(fleet: Fleet, shutdown: CancellationToken) {
    let Some(mut added) = fleet.follow.take() else {
        tracing::error!("the stream reader was started twice");
        return;
    };
    if !fleet.conn().is_cluster() {
        return read_group(fleet, added, shutdown).await;
    }
    let mut groups: HashMap<u16, mpsc::UnboundedSender<Arc<Room>>> = HashMap::new();
    let mut readers = tokio::task::JoinSet::new();
    loop {
        let room = tokio::select! {
            _ = shutdown.cancelled() => break,
            r = added.recv() => match r {
                Some(r) => r,
                None => break,
            },
        };
        let slot = keys::slot(&keys::orders(&room.id));
        let tx = groups.entry(slot).or_insert_with(|| {
            let (tx, rx) = mpsc::unbounded_channel();
            readers.spawn(read_group(fleet.clone(), rx, shutdown.clone()));
            tx
        });
        let _ = tx.send(room);
    }
    while readers.join_next().await.is_some() {}
}

/// One room followed by a reader: where its stream was read up to.
struct Followed {
    room: Arc<Room>,
    key: String,
    after: String,
}

/// Reads the streams of the rooms handed over through `added` (every room on one Redis, one
/// slot's rooms on a cluster) with blocking reads, until `shutdown`. A room added while a
/// read blocks ends that read by dropping its connection (Redis then drops the blocked
/// client), so the next read names it at once.
async fn read_group(
    fleet: Fleet,
    mut added: mpsc::UnboundedReceiver<Arc<Room>>,
    shutdown: CancellationToken,
) {
    let mut rooms: Vec<Followed> = Vec::new();
    let mut reading: Option<redis::aio::MultiplexedConnection> = None;
    // Cluster: the node that last answered `MOVED` for this group's slot.
    let mut node: Option<String> = None;
    let mut attempt = 0usize;
    let mut failing = false;
    let since_ms = crate::clock::now_ms();
    let follow = |rooms: &mut Vec<Followed>, room: Arc<Room>| {
        rooms.push(Followed {
            key: keys::orders(&room.id),
            room,
            after: "0-0".to_owned(),
        })
    };
    loop {
        while let Ok(r) = added.try_recv() {
            follow(&mut rooms, r);
        }
        if rooms.is_empty() {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                r = added.recv() => match r {
                    Some(r) => follow(&mut rooms, r),
                    None => return,
                },
            }
            continue;
        }
        let Some(r) = reading.as_mut() else {
            let url = reader_url(&fleet, node.as_deref(), attempt);
            attempt = attempt.wrapping_add(1);
            let connected = tokio::select! {
                _ = shutdown.cancelled() => return,
                c = connect_reader(&fleet, &url) => c,
            };
            match connected {
                Ok(conn) => reading = Some(conn),
                Err(e) => {
                    node = None;
                    trouble(&mut failing, &e);
                    if pause(&shutdown, READ_RETRY_PAUSE).await {
                        return;
                    }
                }
            }
            continue;
        };
        let mut cmd = redis::cmd("XREAD");
        cmd.arg("COUNT")
            .arg(STREAM_PAGE)
            .arg("BLOCK")
            .arg(READ_BLOCK.as_millis() as u64)
            .arg("STREAMS");
        for f in &rooms {
            cmd.arg(&f.key);
        }
        for f in &rooms {
            cmd.arg(&f.after);
        }
        let read = tokio::time::timeout(
            READ_BLOCK + fleet.timeout,
            cmd.query_async::<Option<StreamReadReply>>(r),
        );
        let answer = tokio::select! {
            _ = shutdown.cancelled() => return,
            Some(room) = added.recv() => Err(room),
            a = read => Ok(a),
        };
        let answer = match answer {
            Ok(a) => a,
            Err(room) => {
                follow(&mut rooms, room);
                reading = None;
                continue;
            }
        };
        match answer {
            Ok(Ok(reply)) => {
                if failing {
                    failing = false;
                    tracing::info!("the order streams are read again");
                }
                for k in reply.map(|r| r.keys).unwrap_or_default() {
                    if let Some(f) = rooms.iter_mut().find(|f| f.key == k.key) {
                        take_page(&fleet, f, k.ids, since_ms);
                    }
                }
            }
            Ok(Err(e)) if is_moved(&e) => {
                // `MOVED`: the slot has another master now; read there.
                node = e.redirect_node().map(|(a, _)| a.to_owned());
                reading = None;
            }
            Ok(Err(e)) if e.is_cluster_error() => {
                // The slot is moving (`ASK`, `TRYAGAIN`) or the cluster is down for a moment:
                // read without blocking through the shared connection, which follows `ASK`
                // and sends again, and look again shortly.
                for f in rooms.iter_mut() {
                    match read_after(&fleet, &f.room.id, &f.after).await {
                        Ok((entries, _, last)) => take_in_all(&fleet, f, entries, last, since_ms),
                        Err(e) => trouble(&mut failing, &e),
                    }
                }
                if pause(&shutdown, STREAM_POLL).await {
                    return;
                }
            }
            Ok(Err(e)) => {
                reading = None;
                node = None;
                trouble(&mut failing, &e);
                if pause(&shutdown, READ_RETRY_PAUSE).await {
                    return;
                }
            }
            Err(_) => {
                reading = None;
                node = None;
                trouble(
                    &mut failing,
                    &FleetError::Timeout(READ_BLOCK + fleet.timeout),
                );
            }
        }
    }
}

/// Whether `e` is a `MOVED` redirect (an `ASK` is one too, but only for the next command).
fn is_moved(e: &redis::RedisError) -> bool {
    e.redirect_node().is_some()
        && e.kind() == redis::ErrorKind::Server(redis::ServerErrorKind::Moved)
}

/// Notes a failed read: logged once until a read succeeds again.
fn trouble(failing: &mut bool, e: &dyn std::fmt::Display) {
    if !*failing {
        *failing = true;
        tracing::warn!(error = %e, "cannot read the order streams; retrying");
    }
}

/// Sleeps `d`; whether the hub shuts down meanwhile.
async fn pause(shutdown: &CancellationToken, d: Duration) -> bool {
    tokio::select! {
        _ = shutdown.cancelled() => true,
        _ = tokio::time::sleep(d) => false,
    }
}

/// Where a reader connects: the one Redis; on a cluster the node that answered `MOVED`, or
/// else the seeds in turn (a seed that is not the slot's master answers `MOVED`).
fn reader_url(fleet: &Fleet, node: Option<&str>, attempt: usize) -> String {
    match &*fleet.target {
        Target::Single(url) => url.clone(),
        Target::Cluster(seeds) => {
            let seed = &seeds[attempt % seeds.len()];
            match node.and_then(|n| n.rsplit_once(':')) {
                // The seed's credentials, the node's address.
                Some((host, port)) => match seed.rsplit_once('@') {
                    Some((auth, _)) => format!("{auth}@{host}:{port}"),
                    None => format!("redis://{host}:{port}"),
                },
                None => seed.clone(),
            }
        }
    }
}

/// A connection of the reader's own; its answers may take a whole [`READ_BLOCK`].
async fn connect_reader(
    fleet: &Fleet,
    url: &str,
) -> Result<redis::aio::MultiplexedConnection, FleetError> {
    let client = redis::Client::open(url)?;
    let config = redis::AsyncConnectionConfig::new()
        .set_connection_timeout(Some(fleet.timeout))
        .set_response_timeout(Some(READ_BLOCK + fleet.timeout));
    fleet
        .bounded(client.get_multiplexed_async_connection_with_config(&config))
        .await
}

/// Takes in one stream's page of a blocking read.
fn take_page(fleet: &Fleet, f: &mut Followed, ids: Vec<StreamId>, since_ms: i64) {
    let mut entries = Vec::with_capacity(ids.len());
    let mut last = None;
    for e in ids {
        match decode(&f.room.id, &e) {
            Some(d) => entries.push(d),
            None => {
                tracing::error!(room = %f.room.id, id = %e.id, "stream entry is neither an order nor a move; skipped")
            }
        }
        last = Some(e.id);
    }
    take_in_all(fleet, f, entries, last, since_ms);
}

/// Takes read entries in, in stream order, and moves the room's read position past them.
fn take_in_all(
    fleet: &Fleet,
    f: &mut Followed,
    entries: Vec<Read>,
    last: Option<String>,
    since_ms: i64,
) {
    let now = crate::clock::now_ms();
    let events: Vec<StreamEvent> = entries
        .into_iter()
        .map(|e| {
            if let Read::Placed(o) = &e {
                // Orders of other hubs placed since this reader began: how long after its
                // placement on its hub this hub had it.
                if o.order.hub.as_deref() != Some(&*fleet.hub_id) && o.order.ts_ms >= since_ms {
                    let ms = (now - o.order.ts_ms).max(0) as f64;
                    metrics::histogram!("livehub_fleet_stream_delay_seconds").record(ms / 1000.0);
                }
            }
            take_in(fleet, &f.room, e)
        })
        .collect();
    f.room.add_stream_events(events);
    if let Some(l) = last {
        f.after = l;
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

//! The rooms' durable state as a journal snapshot: what [`Rooms`] captures on the journal
//! writer's thread, how it is encoded on the snapshot thread, and how recovery restores it.
//!
//! What a snapshot holds, per room: the title; each SKU's definition, window and durable
//! counters (`stock_total`, `sold`, and so `left` = total − sold: reservations in flight are
//! not durable and are not in it); and every order event (placements and status moves) in
//! their order, so that the statuses, the change feed's numbering and the figures come back
//! exactly as they were. The orders are kept because the
//! protocol needs them for the life of the room: the NDJSON export, `status` and repeated
//! `req`s (rule 3), the audit's sums, and the dashboard's totals and trend, which the
//! aggregator folds from them. Per-user counts are summed from the orders while restoring;
//! the idempotency table is rebuilt from them. After the order events come the room's
//! audience state and its journaled refusal counts.
//!
//! The capture costs a few counters per room and SKU plus each room's order count: the order
//! list only ever grows at its end, so its first `n` entries are a fixed prefix that the
//! snapshot thread reads later without holding up the writer.
//!
//! Encoding: postcard, one item at a time. Strings that repeat (SKU, user and referrer ids)
//! are written once per room and then referred to by index, so an order is a few varints and
//! its `req`, and restoring it allocates only its `req`, the order and its idempotency entry.

use std::collections::HashMap;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::inventory::{Sku, SkuDef};
use crate::journal::record::{put_str, put_varint, zigzag, Move, SkuDefV1};
use crate::journal::{Capture, OrderRecord, Sink};
use crate::rooms::deadlines::Deadline;
use crate::rooms::events::{Event, What};
use crate::rooms::room::Room;
use crate::rooms::Rooms;

/// Bumped when the encoding changes; a snapshot of another version is passed over (recovery
/// then falls back to an older one or to a full replay).
const VERSION: u32 = 4;
/// The encoding before the review (the audience without its per-minute series, no refusal
/// counts after it); read only.
const VERSION_3: u32 = 3;
/// The encoding before audience events (no audience after each room's orders); read only.
const VERSION_2: u32 = 2;
/// The encoding before payments (no `pay_timeout_s`, `pay_by_ms` or status moves); read only.
const VERSION_1: u32 = 1;

/// What the writer thread captured.
pub struct RoomsCapture {
    rooms: Vec<RoomCapture>,
}

struct RoomCapture {
    room: Arc<Room>,
    title: String,
    orders: usize,
    events: usize,
    skus: Vec<SkuRow>,
    /// The audience state ([`crate::audience::Audience::save`]).
    audience: Vec<u8>,
    /// Refused buys by code, as journaled.
    rejections: Vec<(String, u64)>,
}

#[derive(Debug, Serialize, Deserialize)]
struct SkuRow {
    id: Arc<str>,
    def: SkuDef,
    stock_total: u64,
    sold: u64,
    sold_out_at_ms: Option<i64>,
}

#[derive(Debug, Serialize, Deserialize)]
struct SkuRowV1 {
    id: Arc<str>,
    def: SkuDefV1,
    stock_total: u64,
    sold: u64,
    sold_out_at_ms: Option<i64>,
}

#[derive(Debug, Serialize, Deserialize)]
struct RoomHead<'a> {
    id: &'a str,
    title: &'a str,
    skus: Vec<SkuRow>,
    orders: u64,
    events: u64,
}

#[derive(Debug, Serialize, Deserialize)]
struct RoomHeadV1<'a> {
    id: &'a str,
    title: &'a str,
    skus: Vec<SkuRowV1>,
    orders: u64,
}

/// One order; `sku`, `user` and `referrer` index the room's string table (`referrer` is the
/// index + 1, 0 for none).
#[derive(Debug, Serialize, Deserialize)]
struct OrderRow<'a> {
    seq: u64,
    number: u64,
    sku: u32,
    user: u32,
    referrer: u32,
    req: &'a str,
    qty: u64,
    price_fen: u64,
    amount_fen: u64,
    ts_ms: i64,
    left_after: u64,
    pay_by_ms: Option<i64>,
}

/// [`OrderRow`] before payments.
#[derive(Debug, Serialize, Deserialize)]
struct OrderRowV1<'a> {
    seq: u64,
    number: u64,
    sku: u32,
    user: u32,
    referrer: u32,
    req: &'a str,
    qty: u64,
    price_fen: u64,
    amount_fen: u64,
    ts_ms: i64,
    left_after: u64,
}

/// A status move of the order numbered `number`; `to` is `None` for an expiry.
#[derive(Debug, Serialize, Deserialize)]
struct MoveRow {
    number: u64,
    to: Option<Move>,
    ts_ms: i64,
}

/// A room's order events as a stream: a string joins the table before the first order that
/// uses it; orders and moves come in the order of their events.
#[derive(Debug, Serialize, Deserialize)]
enum Item<'a> {
    Str(&'a str),
    #[serde(borrow)]
    Order(OrderRow<'a>),
    End,
    Move(MoveRow),
}

/// [`Item`] before payments.
#[derive(Debug, Serialize, Deserialize)]
enum ItemV1<'a> {
    Str(&'a str),
    #[serde(borrow)]
    Order(OrderRowV1<'a>),
    End,
}

impl<'a> From<ItemV1<'a>> for Item<'a> {
    fn from(i: ItemV1<'a>) -> Item<'a> {
        match i {
            ItemV1::Str(s) => Item::Str(s),
            ItemV1::End => Item::End,
            ItemV1::Order(o) => Item::Order(OrderRow {
                seq: o.seq,
                number: o.number,
                sku: o.sku,
                user: o.user,
                referrer: o.referrer,
                req: o.req,
                qty: o.qty,
                price_fen: o.price_fen,
                amount_fen: o.amount_fen,
                ts_ms: o.ts_ms,
                left_after: o.left_after,
                pay_by_ms: None,
            }),
        }
    }
}

impl Rooms {
    /// The durable state now. Runs on the journal writer's thread between batches, when
    /// memory holds exactly the records below the writer's next number.
    pub fn capture_state(&self) -> RoomsCapture {
        self.capture_with(|a| Some(a.save()))
            .expect("a capture that waits always has the audience")
    }

    /// [`Rooms::capture_state`] without waiting for a room's audience: `None` while one is
    /// being folded on the background pool (the writer tries again after a later batch).
    pub fn try_capture_state(&self) -> Option<RoomsCapture> {
        self.capture_with(crate::audience::Audience::try_save)
    }

    fn capture_with(
        &self,
        audience: impl Fn(&crate::audience::Audience) -> Option<Vec<u8>>,
    ) -> Option<RoomsCapture> {
        let rooms = self
            .all()
            .into_iter()
            .map(|room| {
                let skus = room
                    .skus
                    .list()
                    .iter()
                    .map(|s| {
                        let (stock_total, sold) = (s.stock_total(), s.sold());
                        SkuRow {
                            id: s.id.clone(),
                            def: s.def(),
                            stock_total,
                            sold,
                            // Durable only when nothing durable is left; otherwise it may
                            // come from a reservation in flight.
                            sold_out_at_ms: s.sold_out_at_ms().filter(|_| stock_total <= sold),
                        }
                    })
                    .collect();
                Some(RoomCapture {
                    title: room.title(),
                    orders: room.orders.count(),
                    events: room.events.count(),
                    skus,
                    audience: audience(&room.audience)?,
                    rejections: room.rejections.to_vec(),
                    room,
                })
            })
            .collect::<Option<Vec<_>>>()?;
        Some(RoomsCapture { rooms })
    }

    /// Installs a snapshot's state into these rooms, which have seen no record. Everything is
    /// decoded and checked into new rooms first; only then are they added, so an error
    /// leaves this registry untouched.
    pub fn restore_state(&self, bytes: &[u8]) -> Result<(), String> {
        let err = |e: postcard::Error| format!("undecodable state: {e}");
        let (version, mut rest): (u32, _) = postcard::take_from_bytes(bytes).map_err(err)?;
        if ![VERSION_1, VERSION_2, VERSION_3, VERSION].contains(&version) {
            return Err(format!(
                "state version {version}, this build reads {VERSION_1} to {VERSION}"
            ));
        }
        let (count, r): (u64, _) = postcard::take_from_bytes(rest).map_err(err)?;
        rest = r;
        let mut rooms = Vec::new();
        for _ in 0..count {
            let (room, r) = restore_room(version, rest)?;
            rest = r;
            rooms.push(room);
        }
        if !rest.is_empty() {
            return Err(format!("{} bytes after the last room", rest.len()));
        }
        for room in rooms {
            for (order, at_ms) in room.statuses.unpaid() {
                self.deadlines.push(Deadline {
                    at_ms,
                    order,
                    room: room.id.clone(),
                });
            }
            self.insert(room);
        }
        Ok(())
    }
}

fn restore_room(version: u32, bytes: &[u8]) -> Result<(Arc<Room>, &[u8]), String> {
    let err = |e: postcard::Error| format!("undecodable state: {e}");
    let (head, rest): (RoomHead, _) = if version == VERSION_1 {
        let (h, rest): (RoomHeadV1, _) = postcard::take_from_bytes(bytes).map_err(err)?;
        let skus = h
            .skus
            .into_iter()
            .map(|r| SkuRow {
                id: r.id,
                def: r.def.into(),
                stock_total: r.stock_total,
                sold: r.sold,
                sold_out_at_ms: r.sold_out_at_ms,
            })
            .collect();
        let head = RoomHead {
            id: h.id,
            title: h.title,
            skus,
            orders: h.orders,
            events: h.orders,
        };
        (head, rest)
    } else {
        postcard::take_from_bytes(bytes).map_err(err)?
    };
    let capacity = usize::try_from(head.orders).unwrap_or(0).min(1 << 28);
    let room = Room::with_capacity(Arc::from(head.id), head.title.to_owned(), capacity);
    let mut skus: HashMap<&str, Arc<Sku>> = HashMap::new();
    for row in &head.skus {
        let sku = Arc::new(Sku::new(row.id.clone(), &row.def));
        sku.restore_counters(row.stock_total, row.sold, row.sold_out_at_ms);
        room.skus.add(sku.clone());
        skus.insert(&row.id, sku);
    }
    // Two threads, as in a journal replay: this one decodes orders and counts each user's
    // units; the other fills the idempotency table, the order list, the statuses and the
    // events, in the events' order.
    let (tx, rx) = std::sync::mpsc::sync_channel::<Vec<Restored>>(16);
    let (decoded, rest) = std::thread::scope(|s| {
        let filler = s.spawn(|| -> Result<(), String> {
            let mut failed = None;
            for chunk in rx {
                if failed.is_some() {
                    continue;
                }
                for r in chunk {
                    match r {
                        Restored::Order(o) => room.restore_orders([o]),
                        Restored::Move(m) => {
                            if let Err(e) = restore_move(&room, &m) {
                                failed = Some(e);
                                break;
                            }
                        }
                    }
                }
            }
            failed.map_or(Ok(()), Err)
        });
        let decoded = decode_orders(version, &room, &skus, rest, tx);
        let filled = filler.join().expect("snapshot restore thread");
        decoded.and_then(|d| filled.map(|()| d))
    })?;
    let (orders, events) = decoded;
    let rest = if version >= VERSION_3 {
        let (audience, r): (&[u8], _) = postcard::take_from_bytes(rest)
            .map_err(|e| format!("undecodable audience of room {}: {e}", head.id))?;
        if version == VERSION_3 {
            room.audience.restore_before_review(audience)?;
        } else {
            room.audience.restore(audience)?;
        }
        r
    } else {
        rest
    };
    let rest = if version >= VERSION {
        let (rejections, r): (Vec<(String, u64)>, _) = postcard::take_from_bytes(rest)
            .map_err(|e| format!("undecodable refusals of room {}: {e}", head.id))?;
        room.rejections.add(&rejections);
        r
    } else {
        rest
    };
    if orders != head.orders || events != head.events {
        return Err(format!(
            "room {} announces {} orders and {} events and holds {orders} and {events}",
            head.id, head.orders, head.events
        ));
    }
    Ok((Arc::new(room), rest))
}

/// What the decoding thread hands to the filling one.
enum Restored {
    Order(Arc<OrderRecord>),
    Move(MoveRow),
}

/// A status move restored from a snapshot: the order's status and event, and the user's
/// allowance when the move gave the units back (the SKU's counters already say so).
fn restore_move(room: &Room, m: &MoveRow) -> Result<(), String> {
    let order = room
        .statuses
        .order(m.number)
        .or_else(|| room.orders.by_number(m.number))
        .ok_or_else(|| format!("a move of order number {} the room does not hold", m.number))?;
    let moved = room.statuses.apply(&order, m.to.as_ref(), m.ts_ms)?;
    if moved.released() {
        let sku = room
            .skus
            .get(&order.sku)
            .ok_or_else(|| format!("a move of an order of unknown SKU {}", order.sku))?;
        sku.restore_released(room.users.intern(&order.user).key, order.qty);
    }
    room.record_move(moved);
    Ok(())
}

/// Orders handed from the decoding thread to the filling one at a time.
const CHUNK: usize = 4096;

/// Decodes a room's event stream up to its end; returns the counts of orders and events, and
/// the bytes after it.
fn decode_orders<'a>(
    version: u32,
    room: &Room,
    skus: &HashMap<&str, Arc<Sku>>,
    mut rest: &'a [u8],
    tx: std::sync::mpsc::SyncSender<Vec<Restored>>,
) -> Result<((u64, u64), &'a [u8]), String> {
    let err = |e: postcard::Error| format!("undecodable state: {e}");
    // The string table, and per entry the SKU or user key it resolved to (on first use).
    let mut strings: Vec<Arc<str>> = Vec::new();
    let mut as_sku: Vec<Option<Arc<Sku>>> = Vec::new();
    let mut as_user: Vec<Option<u32>> = Vec::new();
    let mut chunk: Vec<Restored> = Vec::with_capacity(CHUNK);
    let (mut count, mut events) = (0u64, 0u64);
    loop {
        let (item, r): (Item, _) = if version == VERSION_1 {
            let (i, r): (ItemV1, _) = postcard::take_from_bytes(rest).map_err(err)?;
            (i.into(), r)
        } else {
            postcard::take_from_bytes(rest).map_err(err)?
        };
        rest = r;
        let o = match item {
            Item::End => break,
            Item::Move(m) => {
                chunk.push(Restored::Move(m));
                events += 1;
                if chunk.len() == CHUNK {
                    let _ = tx.send(std::mem::replace(&mut chunk, Vec::with_capacity(CHUNK)));
                }
                continue;
            }
            Item::Str(s) => {
                strings.push(Arc::from(s));
                as_sku.push(None);
                as_user.push(None);
                continue;
            }
            Item::Order(o) => o,
        };
        let (si, ui) = (o.sku as usize, o.user as usize);
        let bad = || format!("order {} refers to a string not defined", o.seq);
        if si >= strings.len() || ui >= strings.len() || o.referrer as usize > strings.len() {
            return Err(bad());
        }
        if as_sku[si].is_none() {
            as_sku[si] = Some(
                skus.get(&*strings[si])
                    .cloned()
                    .ok_or_else(|| format!("order {} of an unknown SKU", o.seq))?,
            );
        }
        let key = *as_user[ui].get_or_insert_with(|| room.users.intern(&strings[ui]).key);
        as_sku[si].as_ref().expect("set above").add_held(key, o.qty);
        chunk.push(Restored::Order(Arc::new(OrderRecord {
            seq: o.seq,
            number: o.number,
            room: room.id.clone(),
            sku: strings[si].clone(),
            user: strings[ui].clone(),
            req: Arc::from(o.req),
            qty: o.qty,
            price_fen: o.price_fen,
            amount_fen: o.amount_fen,
            referrer: (o.referrer > 0).then(|| strings[o.referrer as usize - 1].clone()),
            ts_ms: o.ts_ms,
            left_after: o.left_after,
            pay_by_ms: o.pay_by_ms,
            // Snapshots are taken in the embedded mode only (see `server::open_shared`).
            hub: None,
            begun: None,
        })));
        count += 1;
        events += 1;
        if chunk.len() == CHUNK {
            let _ = tx.send(std::mem::replace(&mut chunk, Vec::with_capacity(CHUNK)));
        }
    }
    let _ = tx.send(chunk);
    Ok(((count, events), rest))
}

impl Capture for RoomsCapture {
    fn encode(self: Box<Self>, out: &mut Sink) {
        out.put(&postcard::to_allocvec(&VERSION).expect("encodes"));
        out.put(&postcard::to_allocvec(&(self.rooms.len() as u64)).expect("encodes"));
        for rc in self.rooms {
            let head = RoomHead {
                id: &rc.room.id,
                title: &rc.title,
                skus: rc.skus,
                orders: rc.orders as u64,
                events: rc.events as u64,
            };
            out.put(&postcard::to_allocvec(&head).expect("encodes"));
            let mut strings = Strings::default();
            rc.room.events.for_prefix(rc.events, |e| {
                let o = match e {
                    Event::Placed(o) => o,
                    Event::Moved(m) => {
                        let to = match &m.what {
                            What::Paid(p) => Some(Move::Paid(p.clone())),
                            What::Expired => None,
                            What::Cancelled { by_admin } => Some(Move::Cancelled {
                                by_admin: *by_admin,
                            }),
                            What::Refunded { restock, .. } => {
                                Some(Move::Refunded { restock: *restock })
                            }
                            What::Late { payment, .. } => Some(Move::LatePayment(payment.clone())),
                        };
                        let row = Item::Move(MoveRow {
                            number: m.order.number,
                            to,
                            ts_ms: m.ts_ms,
                        });
                        let mut buf = std::mem::take(out.buf());
                        buf = postcard::to_extend(&row, buf).expect("encodes");
                        *out.buf() = buf;
                        out.piece_done();
                        return;
                    }
                };
                let buf = out.buf();
                let sku = strings.index(&o.sku, buf);
                let user = strings.index(&o.user, buf);
                let referrer = o.referrer.as_ref().map_or(0, |r| strings.index(r, buf) + 1);
                put_order(
                    buf,
                    &OrderRow {
                        seq: o.seq,
                        number: o.number,
                        sku,
                        user,
                        referrer,
                        req: &o.req,
                        qty: o.qty,
                        price_fen: o.price_fen,
                        amount_fen: o.amount_fen,
                        ts_ms: o.ts_ms,
                        left_after: o.left_after,
                        pay_by_ms: o.pay_by_ms,
                    },
                );
                out.piece_done();
            });
            put_varint(out.buf(), ITEM_END);
            out.piece_done();
            out.put(&postcard::to_allocvec(&rc.audience[..]).expect("encodes"));
            out.put(&postcard::to_allocvec(&rc.rejections).expect("encodes"));
        }
    }
}

/// A room's string table while encoding: each string's index, found by the address of its
/// `Arc` (orders share their room's SKU and user `Arc`s, so that is nearly always enough), else
/// by its text. Every address in `by_ptr` is of an `Arc` the table holds (in `by_text`, or in
/// `held` for a second `Arc` of the same text), so none can be reused by another string while
/// the table lives.
#[derive(Default)]
struct Strings {
    by_ptr: HashMap<*const u8, u32, foldhash::fast::RandomState>,
    by_text: HashMap<Arc<str>, u32, foldhash::fast::RandomState>,
    held: Vec<Arc<str>>,
}

impl Strings {
    /// The index of `s`; a string seen for the first time is written out (an `Item::Str`).
    fn index(&mut self, s: &Arc<str>, out: &mut Vec<u8>) -> u32 {
        let ptr = Arc::as_ptr(s) as *const u8;
        if let Some(&i) = self.by_ptr.get(&ptr) {
            return i;
        }
        if let Some(&i) = self.by_text.get(s) {
            self.held.push(s.clone());
            self.by_ptr.insert(ptr, i);
            return i;
        }
        let i = self.by_text.len() as u32;
        self.by_text.insert(s.clone(), i);
        self.by_ptr.insert(ptr, i);
        put_varint(out, ITEM_STR);
        put_str(out, s);
        i
    }
}

// The order stream is written by hand, byte for byte as postcard writes `Item`s (the
// restore decodes it with postcard; a test holds the two equal): a varint for each integer
// (zigzag for signed), a length-prefixed string, the variant's index before an enum's fields
// (the helpers are the journal's, which writes its order records the same way). By hand
// because serde's per-field calls into a growing buffer cost many times these few writes.
const ITEM_STR: u64 = 0;
const ITEM_ORDER: u64 = 1;
const ITEM_END: u64 = 2;

fn put_order(out: &mut Vec<u8>, o: &OrderRow) {
    out.reserve(80 + o.req.len());
    put_varint(out, ITEM_ORDER);
    put_varint(out, o.seq);
    put_varint(out, o.number);
    put_varint(out, u64::from(o.sku));
    put_varint(out, u64::from(o.user));
    put_varint(out, u64::from(o.referrer));
    put_str(out, o.req);
    put_varint(out, o.qty);
    put_varint(out, o.price_fen);
    put_varint(out, o.amount_fen);
    put_varint(out, zigzag(o.ts_ms));
    put_varint(out, o.left_after);
    match o.pay_by_ms {
        None => out.push(0),
        Some(t) => {
            out.push(1);
            put_varint(out, zigzag(t));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// The hand-written order stream is byte for byte what postcard writes, so the restore's
    /// postcard decoding reads it.
    #[test]
    fn the_hand_encoding_is_postcards() {
        proptest!(|(seq: u64, number: u64, sku: u32, user: u32, referrer: u32,
                    req in "\\PC{0,40}", qty: u64, price_fen: u64, amount_fen: u64,
                    ts_ms: i64, left_after: u64, pay_by_ms: Option<i64>,
                    text in "\\PC{0,300}")| {
            let row = OrderRow {
                seq, number, sku, user, referrer, req: &req, qty, price_fen, amount_fen,
                ts_ms, left_after, pay_by_ms,
            };
            let mut mine = Vec::new();
            put_order(&mut mine, &row);
            prop_assert_eq!(&mine, &postcard::to_allocvec(&Item::Order(row)).unwrap());
            let mut mine = Vec::new();
            put_varint(&mut mine, ITEM_STR);
            put_str(&mut mine, &text);
            prop_assert_eq!(&mine, &postcard::to_allocvec(&Item::Str(&text)).unwrap());
        });
        let mut end = Vec::new();
        put_varint(&mut end, ITEM_END);
        assert_eq!(end, postcard::to_allocvec(&Item::End).unwrap());
    }

    /// Strings are written once each, before their first use, whether orders share the
    /// string's `Arc` or carry copies of it.
    #[test]
    fn each_string_is_written_once_by_address_or_by_text() {
        let mut strings = Strings::default();
        let mut out = Vec::new();
        let a: Arc<str> = Arc::from("alice");
        let a_copy: Arc<str> = Arc::from("alice");
        let b: Arc<str> = Arc::from("bob");
        assert_eq!(strings.index(&a, &mut out), 0);
        let after_a = out.len();
        assert_eq!(strings.index(&a, &mut out), 0);
        assert_eq!(strings.index(&a_copy, &mut out), 0);
        assert_eq!(out.len(), after_a, "alice written once");
        assert_eq!(strings.index(&b, &mut out), 1);
        let mut want = postcard::to_allocvec(&Item::Str("alice")).unwrap();
        want.extend(postcard::to_allocvec(&Item::Str("bob")).unwrap());
        assert_eq!(out, want);
    }
}

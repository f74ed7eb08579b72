//! The rooms' durable state as a journal snapshot: what [`Rooms`] captures on the journal
//! writer's thread, how it is encoded on the snapshot thread, and how recovery restores it.
//!
//! What a snapshot holds, per room: the title; each SKU's definition, window and durable
//! counters (`stock_total`, `sold`, and so `left` = total − sold: reservations in flight are
//! not durable and are not in it); and every durable order. The orders are kept because the
//! protocol needs them for the life of the room: the NDJSON export, `status` and repeated
//! `req`s (rule 3), the audit's sums, and the dashboard's totals and trend, which the
//! aggregator folds from them. Per-user counts are summed from the orders while restoring;
//! the idempotency table is rebuilt from them.
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
use crate::journal::record::{put_str, put_varint, zigzag};
use crate::journal::{Capture, OrderRecord, Sink};
use crate::rooms::room::Room;
use crate::rooms::Rooms;

/// Bumped when the encoding changes; a snapshot of another version is passed over (recovery
/// then falls back to an older one or to a full replay).
const VERSION: u32 = 1;

/// What the writer thread captured.
pub struct RoomsCapture {
    rooms: Vec<RoomCapture>,
}

struct RoomCapture {
    room: Arc<Room>,
    title: String,
    orders: usize,
    skus: Vec<SkuRow>,
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
struct RoomHead<'a> {
    id: &'a str,
    title: &'a str,
    skus: Vec<SkuRow>,
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
}

/// A room's orders as a stream: a string joins the table before the first order that uses it.
#[derive(Debug, Serialize, Deserialize)]
enum Item<'a> {
    Str(&'a str),
    Order(OrderRow<'a>),
    End,
}

impl Rooms {
    /// The durable state now. Runs on the journal writer's thread between batches, when
    /// memory holds exactly the records below the writer's next number.
    pub fn capture_state(&self) -> RoomsCapture {
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
                RoomCapture {
                    title: room.title(),
                    orders: room.orders.count(),
                    skus,
                    room,
                }
            })
            .collect();
        RoomsCapture { rooms }
    }

    /// Installs a snapshot's state into these rooms, which have seen no record. Everything is
    /// decoded and checked into new rooms first; only then are they added, so an error
    /// leaves this registry untouched.
    pub fn restore_state(&self, bytes: &[u8]) -> Result<(), String> {
        let err = |e: postcard::Error| format!("undecodable state: {e}");
        let (version, mut rest): (u32, _) = postcard::take_from_bytes(bytes).map_err(err)?;
        if version != VERSION {
            return Err(format!(
                "state version {version}, this build reads {VERSION}"
            ));
        }
        let (count, r): (u64, _) = postcard::take_from_bytes(rest).map_err(err)?;
        rest = r;
        let mut rooms = Vec::new();
        for _ in 0..count {
            let (room, r) = restore_room(rest)?;
            rest = r;
            rooms.push(room);
        }
        if !rest.is_empty() {
            return Err(format!("{} bytes after the last room", rest.len()));
        }
        for room in rooms {
            self.insert(room);
        }
        Ok(())
    }
}

fn restore_room(bytes: &[u8]) -> Result<(Arc<Room>, &[u8]), String> {
    let err = |e: postcard::Error| format!("undecodable state: {e}");
    let (head, rest): (RoomHead, _) = postcard::take_from_bytes(bytes).map_err(err)?;
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
    // units; the other fills the idempotency table and the order list.
    let (tx, rx) = std::sync::mpsc::sync_channel::<Vec<Arc<OrderRecord>>>(16);
    let (decoded, rest) = std::thread::scope(|s| {
        let filler = s.spawn(|| {
            for chunk in rx {
                room.restore_orders(chunk);
            }
        });
        let decoded = decode_orders(&room, &skus, rest, tx);
        filler.join().expect("snapshot restore thread");
        decoded
    })?;
    if decoded != head.orders {
        return Err(format!(
            "room {} announces {} orders and holds {decoded}",
            head.id, head.orders
        ));
    }
    Ok((Arc::new(room), rest))
}

/// Orders handed from the decoding thread to the filling one at a time.
const CHUNK: usize = 4096;

/// Decodes a room's order stream up to its end; returns the count and the bytes after it.
fn decode_orders<'a>(
    room: &Room,
    skus: &HashMap<&str, Arc<Sku>>,
    mut rest: &'a [u8],
    tx: std::sync::mpsc::SyncSender<Vec<Arc<OrderRecord>>>,
) -> Result<(u64, &'a [u8]), String> {
    let err = |e: postcard::Error| format!("undecodable state: {e}");
    // The string table, and per entry the SKU or user key it resolved to (on first use).
    let mut strings: Vec<Arc<str>> = Vec::new();
    let mut as_sku: Vec<Option<Arc<Sku>>> = Vec::new();
    let mut as_user: Vec<Option<u32>> = Vec::new();
    let mut chunk: Vec<Arc<OrderRecord>> = Vec::with_capacity(CHUNK);
    let mut count = 0u64;
    loop {
        let (item, r): (Item, _) = postcard::take_from_bytes(rest).map_err(err)?;
        rest = r;
        let o = match item {
            Item::End => break,
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
        chunk.push(Arc::new(OrderRecord {
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
            // Snapshots are taken in the embedded mode only (see `server::open_shared`).
            hub: None,
            begun: None,
        }));
        count += 1;
        if chunk.len() == CHUNK {
            let _ = tx.send(std::mem::replace(&mut chunk, Vec::with_capacity(CHUNK)));
        }
    }
    let _ = tx.send(chunk);
    Ok((count, rest))
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
            };
            out.put(&postcard::to_allocvec(&head).expect("encodes"));
            let mut strings = Strings::default();
            rc.room.orders.for_prefix(rc.orders, |o| {
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
                    },
                );
                out.piece_done();
            });
            put_varint(out.buf(), ITEM_END);
            out.piece_done();
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
                    ts_ms: i64, left_after: u64, text in "\\PC{0,300}")| {
            let row = OrderRow {
                seq, number, sku, user, referrer, req: &req, qty, price_fen, amount_fen,
                ts_ms, left_after,
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

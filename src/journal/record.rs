//! What the journal records, and how it is framed on disk.
//!
//! Record frame: `len: u32 LE | crc32c(payload): u32 LE | payload` where payload is the record
//! in postcard (a compact, stable serde format). A frame never has an empty payload, and `len`
//! is at most [`MAX_PAYLOAD`].
//!
//! Batch: each group commit is written as one batch, `BATCH_FLAG | body length: u32 LE |
//! crc32c(body): u32 LE | body`, where the body is the batch's record frames. The top bit of
//! the length word, which no record frame sets, tells a batch header from a record frame. A
//! batch is whole or it is not: a power cut in the middle of the last batch's write leaves a
//! batch whose checksum fails (or whose header page is zeros), never a part of one that
//! passes, so recovery can tell the torn last batch from damage before it. Segments written
//! before batches existed hold bare record frames, which recovery still reads.

use std::sync::Arc;

use serde::{Deserialize, Serialize};

/// Bytes of a frame header.
pub const HEADER_LEN: usize = 8;
/// Largest payload accepted on replay; anything bigger is damage, not a record.
pub const MAX_PAYLOAD: usize = 64 * 1024;
/// The top bit of a header's length word: set in a batch header, never in a record frame's.
pub const BATCH_FLAG: u32 = 1 << 31;
/// Largest batch body accepted on replay.
pub const MAX_BATCH_BODY: usize = (BATCH_FLAG - 1) as usize;

/// Starts a batch in `buf`: a header to be filled in by [`end_batch`]. Returns where it starts.
pub fn begin_batch(buf: &mut Vec<u8>) -> usize {
    let at = buf.len();
    buf.extend_from_slice(&[0u8; HEADER_LEN]);
    at
}

/// Fills in the header of the batch begun at `at`, whose body is everything after it.
pub fn end_batch(buf: &mut [u8], at: usize) {
    let body = &buf[at + HEADER_LEN..];
    assert!(body.len() <= MAX_BATCH_BODY, "a batch body over 2 GiB");
    let len = BATCH_FLAG | body.len() as u32;
    let crc = crc32c::crc32c(body);
    buf[at..at + 4].copy_from_slice(&len.to_le_bytes());
    buf[at + 4..at + 8].copy_from_slice(&crc.to_le_bytes());
}

/// A SKU as an operator defines it: the admin API's body and the journal's SKU record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SkuDef {
    /// The name buyers see.
    pub name: String,
    /// Unit price in fen.
    pub price_fen: u64,
    /// Initial stock; only used when the SKU is created.
    pub stock: u64,
    /// Most units one user may hold; `None` for no limit.
    pub limit_per_user: Option<u64>,
    /// When the sale opens (Unix ms); `None`: open from the start.
    pub opens_at_ms: Option<i64>,
    /// When the sale closes (Unix ms); `None`: never by the clock.
    pub closes_at_ms: Option<i64>,
}

/// Where a begun request waits in its room's idempotency table: handed out when the request
/// begins, carried by its order to the journal writer, which marks the entry done without a
/// look-up. Only the table makes and reads one; it is never written to disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Ticket {
    pub(crate) shard: u32,
    pub(crate) at: u32,
}

/// One accepted purchase: the record of truth, and the NDJSON line of the orders export.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OrderRecord {
    /// Per room, strictly increasing in the order orders became durable. Set by the writer.
    pub seq: u64,
    /// The journal's record number, from which the order id is made. Set by the writer.
    pub number: u64,
    /// The room the order was taken in.
    pub room: Arc<str>,
    /// The SKU bought.
    pub sku: Arc<str>,
    /// The buyer.
    pub user: Arc<str>,
    /// The buyer's request id, which makes the buy idempotent.
    pub req: Arc<str>,
    /// Units bought.
    pub qty: u64,
    /// Unit price in force at the decision.
    pub price_fen: u64,
    /// `qty * price_fen`.
    pub amount_fen: u64,
    /// The buy frame's `ref` (who sent the buyer), if any.
    pub referrer: Option<Arc<str>>,
    /// When the gate decided the buy (Unix ms).
    pub ts_ms: i64,
    /// Stock left right after this order's units were taken (the ack's `left`).
    pub left_after: u64,
    /// Fleet mode: the hub that took the order, which prefixes its id. Never written to the
    /// journal (the hub id is pinned to the data dir), so journals of either mode read alike.
    #[serde(skip)]
    pub hub: Option<Arc<str>>,
    /// Where the room's request table keeps the pending request this order settles, when it
    /// was begun in this process: the journal writer marks it done without a look-up. Never
    /// written to the journal.
    #[serde(skip)]
    pub begun: Option<Ticket>,
}

impl OrderRecord {
    /// The order id: unique and never reused, because record numbers only grow, restarts
    /// included; in fleet mode prefixed by the hub id (`h1:O42`), unique across hubs.
    pub fn order_id(&self) -> String {
        match &self.hub {
            None => format!("O{}", self.number),
            Some(h) => format!("{h}:O{}", self.number),
        }
    }

    /// One line of the NDJSON export, with its newline.
    pub fn to_ndjson(&self) -> String {
        #[derive(Serialize)]
        struct Line<'a> {
            seq: u64,
            order: String,
            room: &'a str,
            sku: &'a str,
            user: &'a str,
            req: &'a str,
            qty: u64,
            price_fen: u64,
            amount_fen: u64,
            #[serde(rename = "ref")]
            referrer: Option<&'a str>,
            ts_ms: i64,
        }
        let mut s = serde_json::to_string(&Line {
            seq: self.seq,
            order: self.order_id(),
            room: &self.room,
            sku: &self.sku,
            user: &self.user,
            req: &self.req,
            qty: self.qty,
            price_fen: self.price_fen,
            amount_fen: self.amount_fen,
            referrer: self.referrer.as_deref(),
            ts_ms: self.ts_ms,
        })
        .expect("orders serialize");
        s.push('\n');
        s
    }
}

/// Every change the hub makes durable, in the order it was made.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Record {
    /// A room was created or its title changed.
    Room {
        /// The room.
        room: Arc<str>,
        /// Its title now.
        title: String,
        /// When (Unix ms).
        ts_ms: i64,
    },
    /// A SKU was created (`created`: its `stock` is the initial stock) or updated.
    Sku {
        /// The SKU's room.
        room: Arc<str>,
        /// The SKU.
        sku: Arc<str>,
        /// Its definition now.
        def: SkuDef,
        /// Whether this record created it.
        created: bool,
        /// When (Unix ms).
        ts_ms: i64,
    },
    /// A restock (`delta > 0`) or a withdrawal (`delta < 0`).
    Stock {
        /// The SKU's room.
        room: Arc<str>,
        /// The SKU.
        sku: Arc<str>,
        /// Units added (`> 0`) or taken away (`< 0`).
        delta: i64,
        /// When (Unix ms).
        ts_ms: i64,
    },
    /// A sale was opened or closed now: its new window.
    Window {
        /// The SKU's room.
        room: Arc<str>,
        /// The SKU.
        sku: Arc<str>,
        /// When the sale opens now; `None`: open from the start.
        opens_at_ms: Option<i64>,
        /// When the sale closes now; `None`: never by the clock.
        closes_at_ms: Option<i64>,
        /// When (Unix ms).
        ts_ms: i64,
    },
    /// An order, behind an `Arc` because the journal, the room's order list and the idempotency
    /// table all hold it.
    Order(Arc<OrderRecord>),
}

impl Record {
    /// What kind of record this is, for messages: `room`, `sku`, `stock`, `window`, `order`.
    pub fn kind(&self) -> &'static str {
        match self {
            Record::Room { .. } => "room",
            Record::Sku { .. } => "sku",
            Record::Stock { .. } => "stock",
            Record::Window { .. } => "window",
            Record::Order(_) => "order",
        }
    }

    /// Appends this record's frame to `buf`. Orders, nearly every record, are written by hand
    /// in postcard's bytes (`put_order`); the rest by postcard.
    pub fn encode_into(&self, buf: &mut Vec<u8>) {
        let start = buf.len();
        buf.extend_from_slice(&[0u8; HEADER_LEN]);
        match self {
            Record::Order(o) => put_order(buf, o),
            _ => {
                let mut buf2 = std::mem::take(buf);
                buf2 = postcard::to_extend(self, buf2).expect("records always encode");
                *buf = buf2;
            }
        }
        let payload_len = buf.len() - start - HEADER_LEN;
        let crc = crc32c::crc32c(&buf[start + HEADER_LEN..]);
        buf[start..start + 4].copy_from_slice(&(payload_len as u32).to_le_bytes());
        buf[start + 4..start + 8].copy_from_slice(&crc.to_le_bytes());
    }
}

// postcard's bytes, for the records written by hand: an unsigned integer as a varint (7 bits a
// byte, low first), a signed one zigzagged first, a string as its length and its bytes, an
// `Option` as 0 or 1 before the value, an enum's variant index before its fields.

pub(crate) fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push(v as u8 | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

pub(crate) fn put_str(out: &mut Vec<u8>, s: &str) {
    put_varint(out, s.len() as u64);
    out.extend_from_slice(s.as_bytes());
}

pub(crate) fn zigzag(v: i64) -> u64 {
    ((v << 1) ^ (v >> 63)) as u64
}

/// [`Record::Order`]'s variant index.
const RECORD_ORDER: u64 = 4;

/// `Record::Order(o)` as postcard writes it (the skipped `hub` and `begun` are not written).
fn put_order(out: &mut Vec<u8>, o: &OrderRecord) {
    out.reserve(
        90 + o.room.len()
            + o.sku.len()
            + o.user.len()
            + o.req.len()
            + o.referrer.as_ref().map_or(0, |r| r.len()),
    );
    put_varint(out, RECORD_ORDER);
    put_varint(out, o.seq);
    put_varint(out, o.number);
    put_str(out, &o.room);
    put_str(out, &o.sku);
    put_str(out, &o.user);
    put_str(out, &o.req);
    put_varint(out, o.qty);
    put_varint(out, o.price_fen);
    put_varint(out, o.amount_fen);
    match &o.referrer {
        None => out.push(0),
        Some(r) => {
            out.push(1);
            put_str(out, r);
        }
    }
    put_varint(out, zigzag(o.ts_ms));
    put_varint(out, o.left_after);
}

/// What reading one frame at an offset found.
#[derive(Debug, PartialEq, Eq)]
pub enum Frame<'a> {
    /// A whole frame whose checksum matches: its payload and the frame's total length.
    Valid {
        /// The record's bytes.
        payload: &'a [u8],
        /// Header and payload.
        len: usize,
    },
    /// A whole batch whose checksum matches.
    Batch {
        /// The batch's record frames.
        body: &'a [u8],
        /// Header and body.
        len: usize,
    },
    /// Fewer bytes than the frame announces, or an impossible length.
    Truncated,
    /// The checksum does not match.
    Corrupt,
}

/// Reads the record frame or batch at the start of `buf`.
pub fn read_frame(buf: &[u8]) -> Frame<'_> {
    if buf.len() < HEADER_LEN {
        return Frame::Truncated;
    }
    let word = u32::from_le_bytes(buf[0..4].try_into().expect("4 bytes"));
    let crc = u32::from_le_bytes(buf[4..8].try_into().expect("4 bytes"));
    if word & BATCH_FLAG != 0 {
        let len = (word & !BATCH_FLAG) as usize;
        if len == 0 || buf.len() < HEADER_LEN + len {
            return Frame::Truncated;
        }
        let body = &buf[HEADER_LEN..HEADER_LEN + len];
        if crc32c::crc32c(body) != crc {
            return Frame::Corrupt;
        }
        return Frame::Batch {
            body,
            len: HEADER_LEN + len,
        };
    }
    let len = word as usize;
    if len == 0 || len > MAX_PAYLOAD || buf.len() < HEADER_LEN + len {
        return Frame::Truncated;
    }
    let payload = &buf[HEADER_LEN..HEADER_LEN + len];
    if crc32c::crc32c(payload) != crc {
        return Frame::Corrupt;
    }
    Frame::Valid {
        payload,
        len: HEADER_LEN + len,
    }
}

/// Decodes a payload.
pub fn decode(payload: &[u8]) -> Result<Record, postcard::Error> {
    postcard::from_bytes(payload)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn order() -> Record {
        Record::Order(Arc::new(OrderRecord {
            seq: 7,
            number: 42,
            room: "r".into(),
            sku: "A1".into(),
            user: "u".into(),
            req: "q".into(),
            qty: 2,
            price_fen: 9900,
            amount_fen: 19800,
            referrer: Some("s".into()),
            ts_ms: 1,
            left_after: 3,
            hub: None,
            begun: None,
        }))
    }

    #[test]
    fn a_frame_round_trips_and_detects_damage() {
        let mut buf = Vec::new();
        order().encode_into(&mut buf);
        let Frame::Valid { payload, len } = read_frame(&buf) else {
            panic!("valid frame")
        };
        assert_eq!(len, buf.len());
        assert_eq!(decode(payload).unwrap(), order());
        assert_eq!(read_frame(&buf[..buf.len() - 1]), Frame::Truncated);
        let mut bad = buf.clone();
        *bad.last_mut().unwrap() ^= 1;
        assert_eq!(read_frame(&bad), Frame::Corrupt);
        assert_eq!(
            read_frame(&[0u8; 32]),
            Frame::Truncated,
            "zeros are never a frame"
        );
    }

    /// An order written by hand is byte for byte what postcard writes, so replay (postcard's
    /// decoding) reads it; the hub id and the ticket are not written.
    #[test]
    fn orders_by_hand_are_postcards_bytes() {
        use proptest::prelude::*;
        proptest!(|(seq: u64, number: u64, room in "\\PC{1,64}", sku in "\\PC{1,64}",
                    user in "\\PC{1,64}", req in "\\PC{1,200}", qty: u64, price_fen: u64,
                    amount_fen: u64, referrer in proptest::option::of("\\PC{1,64}"), ts_ms: i64,
                    left_after: u64, hub in proptest::option::of("[a-z0-9]{1,8}"), ticket: bool)| {
            let begun = ticket.then_some(Ticket { shard: 3, at: 7 });
            let order = Record::Order(Arc::new(OrderRecord {
                seq, number, room: room.into(), sku: sku.into(), user: user.into(),
                req: req.into(), qty, price_fen, amount_fen,
                referrer: referrer.map(Arc::from), ts_ms, left_after,
                hub: hub.map(Arc::from), begun,
            }));
            let mut mine = vec![9u8; 3];
            order.encode_into(&mut mine);
            let payload = postcard::to_allocvec(&order).unwrap();
            prop_assert_eq!(&mine[..3], &[9u8; 3][..]);
            prop_assert_eq!(&mine[3 + HEADER_LEN..], &payload[..]);
            let Frame::Valid { payload: read, len } = read_frame(&mine[3..]) else {
                panic!("valid frame")
            };
            prop_assert_eq!(len, mine.len() - 3);
            let Record::Order(back) = decode(read).unwrap() else { panic!("an order") };
            let Record::Order(o) = &order else { unreachable!() };
            prop_assert_eq!((&back.req, back.ts_ms, &back.referrer), (&o.req, o.ts_ms, &o.referrer));
        });
    }

    #[test]
    fn the_export_line_has_the_protocol_fields() {
        let Record::Order(o) = order() else {
            unreachable!()
        };
        let v: serde_json::Value = serde_json::from_str(o.to_ndjson().trim_end()).unwrap();
        assert_eq!(v["order"], "O42");
        assert_eq!(v["ref"], "s");
        for k in [
            "seq",
            "order",
            "room",
            "sku",
            "user",
            "req",
            "qty",
            "price_fen",
            "amount_fen",
            "ref",
            "ts_ms",
        ] {
            assert!(v.get(k).is_some(), "{k}");
        }
    }
}

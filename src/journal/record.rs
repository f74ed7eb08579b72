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

use super::audience::AudienceEvent;

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
    /// Seconds a buyer has to pay an order of this SKU; `None`: an order is paid the moment
    /// it is placed (v1).
    #[serde(default)]
    pub pay_timeout_s: Option<u64>,
}

/// [`SkuDef`] as journals and snapshots written before payments stored it; read only.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct SkuDefV1 {
    pub name: String,
    pub price_fen: u64,
    pub stock: u64,
    pub limit_per_user: Option<u64>,
    pub opens_at_ms: Option<i64>,
    pub closes_at_ms: Option<i64>,
}

impl From<SkuDefV1> for SkuDef {
    fn from(d: SkuDefV1) -> SkuDef {
        SkuDef {
            name: d.name,
            price_fen: d.price_fen,
            stock: d.stock,
            limit_per_user: d.limit_per_user,
            opens_at_ms: d.opens_at_ms,
            closes_at_ms: d.closes_at_ms,
            pay_timeout_s: None,
        }
    }
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
    /// When the order expires unless paid (Unix ms); `None`: paid the moment it was placed.
    pub pay_by_ms: Option<i64>,
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

    /// One line of the NDJSON export, with its newline, as the order stands now (`status`:
    /// see [`ExportStatus`]).
    pub fn to_ndjson(&self, status: &ExportStatus<'_>) -> String {
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
            #[serde(flatten)]
            status: &'a ExportStatus<'a>,
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
            status,
        })
        .expect("orders serialize");
        s.push('\n');
        s
    }
}

/// The status fields of an export line.
#[derive(Debug, Clone, Serialize)]
pub struct ExportStatus<'a> {
    /// `unpaid`, `paid`, `expired`, `cancelled` or `refunded`.
    pub status: &'static str,
    /// When an order placed unpaid had to be paid by; `None` when paid on placement.
    pub pay_by_ms: Option<i64>,
    /// When it was paid (the notice's time, or the placement's when paid on placement).
    pub paid_at_ms: Option<i64>,
    /// The payment that paid it, when a notice did.
    pub payment_id: Option<&'a str>,
    /// When it expired, was cancelled or was refunded.
    pub ended_at_ms: Option<i64>,
    /// Payments it could no longer take, to be refunded.
    pub late_payments: &'a [Payment],
}

/// Every change the hub makes durable, in the order it was made.
///
/// This is the journal's record as the hub uses it; on disk each is written as a variant of
/// `Disk`, which also keeps the layouts of records written by older builds readable.
#[derive(Debug, Clone, PartialEq, Eq)]
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
    /// One order's status moved, or a payment came for an order that can no longer take it.
    Move {
        /// The order's room.
        room: Arc<str>,
        /// The order's number ([`OrderRecord::number`]).
        order: u64,
        /// What happened.
        to: Move,
        /// When (Unix ms).
        ts_ms: i64,
    },
    /// Unpaid orders whose time to pay ran out, expired together.
    Expired {
        /// The orders' room.
        room: Arc<str>,
        /// The orders' numbers.
        orders: Vec<u64>,
        /// When (Unix ms).
        ts_ms: i64,
    },
    /// Fleet mode: status moves this hub decided, of orders named by id (any hub's). They take
    /// effect in Redis once this record is durable (`src/fleet/moves.rs`).
    FleetMoves {
        /// The orders' room.
        room: Arc<str>,
        /// The moves.
        moves: Vec<FleetMove>,
        /// When (Unix ms).
        ts_ms: i64,
    },
    /// A checked batch of audience events of one room.
    Audience {
        /// The room.
        room: Arc<str>,
        /// The events, in the batch's order; shared, so the apply hands them on without a copy.
        events: Arc<[AudienceEvent]>,
        /// When the hub took the batch (Unix ms).
        ts_ms: i64,
    },
    /// Buys of one room refused since the room's last such record, counted by code (a
    /// rejected ack's `error`). Written at most once a second per room, never one per buy, so
    /// the refusals a crash takes with it are at most the last second's.
    Rejections {
        /// The room.
        room: Arc<str>,
        /// `(code, refusals)`, codes with none left out.
        counts: Vec<(String, u64)>,
        /// When the hub wrote them (Unix ms).
        ts_ms: i64,
    },
}

/// One move of a [`Record::FleetMoves`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FleetMove {
    /// The order id (`hub:O<number>`).
    pub order: Arc<str>,
    /// What happened; `None`: it expired.
    pub to: Option<Move>,
}

/// A status move of one order (docs/protocol.md, "Orders that must be paid").
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Move {
    /// `unpaid` → `paid`, by a payment notice.
    Paid(Payment),
    /// `unpaid` → `cancelled`, by the buyer or an operator.
    Cancelled {
        /// Whether an operator cancelled it (else its buyer).
        by_admin: bool,
    },
    /// `paid` → `refunded`; `restock` gives the units back to the sale.
    Refunded {
        /// Whether the units go back on sale.
        restock: bool,
    },
    /// A payment for an order that was no longer `unpaid`: kept on the order, to be refunded.
    LatePayment(Payment),
}

/// A payment notice as the order keeps it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Payment {
    /// The payment provider's id of the payment.
    pub payment_id: Arc<str>,
    /// What was paid, in fen.
    pub amount_fen: u64,
    /// When the provider says it was paid (Unix ms).
    pub paid_at_ms: i64,
}

/// Records as they are written: [`Record`]'s variants, plus the layouts older builds wrote,
/// which are read and never written. Variants are only ever added at the end (postcard writes
/// the variant's index).
#[derive(Debug, Serialize, Deserialize)]
enum Disk {
    Room {
        room: Arc<str>,
        title: String,
        ts_ms: i64,
    },
    /// A SKU without `pay_timeout_s`, as builds before payments wrote it.
    SkuV1 {
        room: Arc<str>,
        sku: Arc<str>,
        def: SkuDefV1,
        created: bool,
        ts_ms: i64,
    },
    Stock {
        room: Arc<str>,
        sku: Arc<str>,
        delta: i64,
        ts_ms: i64,
    },
    Window {
        room: Arc<str>,
        sku: Arc<str>,
        opens_at_ms: Option<i64>,
        closes_at_ms: Option<i64>,
        ts_ms: i64,
    },
    /// An order without `pay_by_ms`, as builds before payments wrote it.
    OrderV1(OrderV1),
    Sku {
        room: Arc<str>,
        sku: Arc<str>,
        def: SkuDef,
        created: bool,
        ts_ms: i64,
    },
    /// Written by hand ([`put_order`]); this is its layout for reading.
    Order(OrderV1, Option<i64>),
    Move {
        room: Arc<str>,
        order: u64,
        to: Move,
        ts_ms: i64,
    },
    Expired {
        room: Arc<str>,
        orders: Vec<u64>,
        ts_ms: i64,
    },
    FleetMoves {
        room: Arc<str>,
        moves: Vec<FleetMove>,
        ts_ms: i64,
    },
    Audience {
        room: Arc<str>,
        events: Vec<AudienceEvent>,
        ts_ms: i64,
    },
    Rejections {
        room: Arc<str>,
        counts: Vec<(String, u64)>,
        ts_ms: i64,
    },
}

/// An order's fields as the journal stores them (without the in-memory `hub` and `begun`).
#[derive(Debug, Serialize, Deserialize)]
struct OrderV1 {
    seq: u64,
    number: u64,
    room: Arc<str>,
    sku: Arc<str>,
    user: Arc<str>,
    req: Arc<str>,
    qty: u64,
    price_fen: u64,
    amount_fen: u64,
    referrer: Option<Arc<str>>,
    ts_ms: i64,
    left_after: u64,
}

impl OrderV1 {
    fn into_order(self, pay_by_ms: Option<i64>) -> OrderRecord {
        OrderRecord {
            seq: self.seq,
            number: self.number,
            room: self.room,
            sku: self.sku,
            user: self.user,
            req: self.req,
            qty: self.qty,
            price_fen: self.price_fen,
            amount_fen: self.amount_fen,
            referrer: self.referrer,
            ts_ms: self.ts_ms,
            left_after: self.left_after,
            pay_by_ms,
            hub: None,
            begun: None,
        }
    }
}

impl From<Disk> for Record {
    fn from(d: Disk) -> Record {
        match d {
            Disk::Room { room, title, ts_ms } => Record::Room { room, title, ts_ms },
            Disk::SkuV1 {
                room,
                sku,
                def,
                created,
                ts_ms,
            } => Record::Sku {
                room,
                sku,
                def: def.into(),
                created,
                ts_ms,
            },
            Disk::Sku {
                room,
                sku,
                def,
                created,
                ts_ms,
            } => Record::Sku {
                room,
                sku,
                def,
                created,
                ts_ms,
            },
            Disk::Stock {
                room,
                sku,
                delta,
                ts_ms,
            } => Record::Stock {
                room,
                sku,
                delta,
                ts_ms,
            },
            Disk::Window {
                room,
                sku,
                opens_at_ms,
                closes_at_ms,
                ts_ms,
            } => Record::Window {
                room,
                sku,
                opens_at_ms,
                closes_at_ms,
                ts_ms,
            },
            Disk::OrderV1(o) => Record::Order(Arc::new(o.into_order(None))),
            Disk::Order(o, pay_by_ms) => Record::Order(Arc::new(o.into_order(pay_by_ms))),
            Disk::Move {
                room,
                order,
                to,
                ts_ms,
            } => Record::Move {
                room,
                order,
                to,
                ts_ms,
            },
            Disk::Expired {
                room,
                orders,
                ts_ms,
            } => Record::Expired {
                room,
                orders,
                ts_ms,
            },
            Disk::FleetMoves { room, moves, ts_ms } => Record::FleetMoves { room, moves, ts_ms },
            Disk::Audience {
                room,
                events,
                ts_ms,
            } => Record::Audience {
                room,
                events: events.into(),
                ts_ms,
            },
            Disk::Rejections {
                room,
                counts,
                ts_ms,
            } => Record::Rejections {
                room,
                counts,
                ts_ms,
            },
        }
    }
}

impl Record {
    /// What kind of record this is, for messages: `room`, `sku`, `stock`, `window`, `order`,
    /// `move`, `expired`, `fleet moves`, `audience`, `rejections`.
    pub fn kind(&self) -> &'static str {
        match self {
            Record::Room { .. } => "room",
            Record::Sku { .. } => "sku",
            Record::Stock { .. } => "stock",
            Record::Window { .. } => "window",
            Record::Order(_) => "order",
            Record::Move { .. } => "move",
            Record::Expired { .. } => "expired",
            Record::FleetMoves { .. } => "fleet moves",
            Record::Audience { .. } => "audience",
            Record::Rejections { .. } => "rejections",
        }
    }

    /// Appends this record's frame to `buf`. Orders, nearly every record, are written by hand
    /// in postcard's bytes (`put_order`); the rest by postcard, as `Disk`.
    pub fn encode_into(&self, buf: &mut Vec<u8>) {
        let start = buf.len();
        buf.extend_from_slice(&[0u8; HEADER_LEN]);
        let disk = match self {
            Record::Order(o) => {
                put_order(buf, o);
                None
            }
            Record::Room { room, title, ts_ms } => Some(Disk::Room {
                room: room.clone(),
                title: title.clone(),
                ts_ms: *ts_ms,
            }),
            Record::Sku {
                room,
                sku,
                def,
                created,
                ts_ms,
            } => Some(Disk::Sku {
                room: room.clone(),
                sku: sku.clone(),
                def: def.clone(),
                created: *created,
                ts_ms: *ts_ms,
            }),
            Record::Stock {
                room,
                sku,
                delta,
                ts_ms,
            } => Some(Disk::Stock {
                room: room.clone(),
                sku: sku.clone(),
                delta: *delta,
                ts_ms: *ts_ms,
            }),
            Record::Window {
                room,
                sku,
                opens_at_ms,
                closes_at_ms,
                ts_ms,
            } => Some(Disk::Window {
                room: room.clone(),
                sku: sku.clone(),
                opens_at_ms: *opens_at_ms,
                closes_at_ms: *closes_at_ms,
                ts_ms: *ts_ms,
            }),
            Record::Move {
                room,
                order,
                to,
                ts_ms,
            } => Some(Disk::Move {
                room: room.clone(),
                order: *order,
                to: to.clone(),
                ts_ms: *ts_ms,
            }),
            Record::Expired {
                room,
                orders,
                ts_ms,
            } => Some(Disk::Expired {
                room: room.clone(),
                orders: orders.clone(),
                ts_ms: *ts_ms,
            }),
            Record::FleetMoves { room, moves, ts_ms } => Some(Disk::FleetMoves {
                room: room.clone(),
                moves: moves.clone(),
                ts_ms: *ts_ms,
            }),
            Record::Audience {
                room,
                events,
                ts_ms,
            } => {
                // `Disk::Audience`'s bytes without copying the batch: its variant index, then
                // its fields as a tuple (postcard writes a struct's fields as a tuple's).
                put_varint(buf, RECORD_AUDIENCE);
                let out = std::mem::take(buf);
                *buf = postcard::to_extend(&(room, events, ts_ms), out)
                    .expect("records always encode");
                None
            }
            Record::Rejections {
                room,
                counts,
                ts_ms,
            } => Some(Disk::Rejections {
                room: room.clone(),
                counts: counts.clone(),
                ts_ms: *ts_ms,
            }),
        };
        if let Some(d) = disk {
            let mut buf2 = std::mem::take(buf);
            buf2 = postcard::to_extend(&d, buf2).expect("records always encode");
            *buf = buf2;
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

/// [`Disk::Order`]'s variant index.
const RECORD_ORDER: u64 = 6;
/// `Disk::Audience`'s variant index.
const RECORD_AUDIENCE: u64 = 10;

/// An order as postcard writes `Disk::Order` (the in-memory `hub` and `begun` are not written).
fn put_order(out: &mut Vec<u8>, o: &OrderRecord) {
    out.reserve(
        100 + o.room.len()
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
    match o.pay_by_ms {
        None => out.push(0),
        Some(t) => {
            out.push(1);
            put_varint(out, zigzag(t));
        }
    }
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
    postcard::from_bytes::<Disk>(payload).map(Record::from)
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
            pay_by_ms: None,
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
                    left_after: u64, pay_by_ms: Option<i64>,
                    hub in proptest::option::of("[a-z0-9]{1,8}"), ticket: bool)| {
            let begun = ticket.then_some(Ticket { shard: 3, at: 7 });
            let order = Record::Order(Arc::new(OrderRecord {
                seq, number, room: room.clone().into(), sku: sku.clone().into(),
                user: user.clone().into(), req: req.clone().into(), qty, price_fen, amount_fen,
                referrer: referrer.clone().map(Arc::from), ts_ms, left_after, pay_by_ms,
                hub: hub.map(Arc::from), begun,
            }));
            let mut mine = vec![9u8; 3];
            order.encode_into(&mut mine);
            let disk = Disk::Order(OrderV1 {
                seq, number, room: room.into(), sku: sku.into(), user: user.into(),
                req: req.into(), qty, price_fen, amount_fen,
                referrer: referrer.map(Arc::from), ts_ms, left_after,
            }, pay_by_ms);
            let payload = postcard::to_allocvec(&disk).unwrap();
            prop_assert_eq!(&mine[..3], &[9u8; 3][..]);
            prop_assert_eq!(&mine[3 + HEADER_LEN..], &payload[..]);
            let Frame::Valid { payload: read, len } = read_frame(&mine[3..]) else {
                panic!("valid frame")
            };
            prop_assert_eq!(len, mine.len() - 3);
            let Record::Order(back) = decode(read).unwrap() else { panic!("an order") };
            let Record::Order(o) = &order else { unreachable!() };
            prop_assert_eq!((&back.req, back.ts_ms, &back.referrer), (&o.req, o.ts_ms, &o.referrer));
            prop_assert_eq!(back.pay_by_ms, pay_by_ms);
        });
    }

    /// Orders and SKUs as builds before payments wrote them are still read: paid on
    /// placement, and without a payment timeout.
    #[test]
    fn records_of_older_builds_are_read() {
        let Record::Order(o) = order() else {
            unreachable!()
        };
        let old = OrderV1 {
            seq: o.seq,
            number: o.number,
            room: o.room.clone(),
            sku: o.sku.clone(),
            user: o.user.clone(),
            req: o.req.clone(),
            qty: o.qty,
            price_fen: o.price_fen,
            amount_fen: o.amount_fen,
            referrer: o.referrer.clone(),
            ts_ms: o.ts_ms,
            left_after: o.left_after,
        };
        // Variant 4 was the only order record before payments.
        let bytes = postcard::to_allocvec(&Disk::OrderV1(old)).unwrap();
        assert_eq!(bytes[0], 4);
        assert_eq!(decode(&bytes).unwrap(), order());
        let sku = Disk::SkuV1 {
            room: "r".into(),
            sku: "A1".into(),
            def: SkuDefV1 {
                name: "n".into(),
                price_fen: 1,
                stock: 2,
                limit_per_user: Some(1),
                opens_at_ms: None,
                closes_at_ms: Some(9),
            },
            created: true,
            ts_ms: 3,
        };
        let bytes = postcard::to_allocvec(&sku).unwrap();
        assert_eq!(bytes[0], 1);
        let Record::Sku { def, .. } = decode(&bytes).unwrap() else {
            panic!("a SKU")
        };
        assert_eq!(
            (def.pay_timeout_s, def.closes_at_ms, def.stock),
            (None, Some(9), 2)
        );
    }

    #[test]
    fn moves_round_trip() {
        let moves = [
            Record::Move {
                room: "r".into(),
                order: 4,
                to: Move::Paid(Payment {
                    payment_id: "p1".into(),
                    amount_fen: 10,
                    paid_at_ms: 5,
                }),
                ts_ms: 6,
            },
            Record::Move {
                room: "r".into(),
                order: 4,
                to: Move::Refunded { restock: true },
                ts_ms: 7,
            },
            Record::Expired {
                room: "r".into(),
                orders: vec![1, 2, 300_000],
                ts_ms: 8,
            },
            Record::Audience {
                room: "r".into(),
                events: Arc::from(vec![
                    AudienceEvent {
                        kind: crate::journal::AudienceKind::Enter,
                        user: "u1".into(),
                        ts_ms: 1_700_000_000_000,
                        source: Some("share".into()),
                        referrer: Some("u9".into()),
                        count: 1,
                        sku: None,
                    },
                    AudienceEvent {
                        kind: crate::journal::AudienceKind::Click,
                        user: "u2".into(),
                        ts_ms: 1_700_000_000_001,
                        source: None,
                        referrer: None,
                        count: 1,
                        sku: Some("A".into()),
                    },
                ]),
                ts_ms: 10,
            },
            Record::Rejections {
                room: "r".into(),
                counts: vec![("sold_out".into(), 12), ("rate_limited".into(), 1)],
                ts_ms: 11,
            },
            Record::FleetMoves {
                room: "r".into(),
                moves: vec![
                    FleetMove {
                        order: "h2:O9".into(),
                        to: Some(Move::Cancelled { by_admin: false }),
                    },
                    FleetMove {
                        order: "h1:O3".into(),
                        to: None,
                    },
                ],
                ts_ms: 9,
            },
        ];
        for m in moves {
            let mut buf = Vec::new();
            m.encode_into(&mut buf);
            let Frame::Valid { payload, .. } = read_frame(&buf) else {
                panic!("valid frame")
            };
            assert_eq!(decode(payload).unwrap(), m);
        }
    }

    /// Refusal counts are variant 11, after the audience's: every older variant keeps its index.
    #[test]
    fn rejections_are_the_next_variant() {
        let r = Record::Rejections {
            room: "r".into(),
            counts: vec![("sold_out".into(), 3)],
            ts_ms: 5,
        };
        let mut buf = Vec::new();
        r.encode_into(&mut buf);
        assert_eq!(buf[HEADER_LEN], 11);
    }

    #[test]
    fn the_export_line_has_the_protocol_fields() {
        let Record::Order(o) = order() else {
            unreachable!()
        };
        let status = ExportStatus {
            status: "paid",
            pay_by_ms: None,
            paid_at_ms: Some(o.ts_ms),
            payment_id: None,
            ended_at_ms: None,
            late_payments: &[],
        };
        let v: serde_json::Value = serde_json::from_str(o.to_ndjson(&status).trim_end()).unwrap();
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
            "status",
            "pay_by_ms",
            "paid_at_ms",
            "payment_id",
            "ended_at_ms",
            "late_payments",
        ] {
            assert!(v.get(k).is_some(), "{k}");
        }
    }
}

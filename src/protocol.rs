//! Serde types of every frame on the buyer WebSocket (docs/protocol.md, "Buyer WebSocket"),
//! and the SKU state shared by REST, `hello` and dashboard snapshots.
//!
//! Parsing is two-step: a typed parse for the happy path, and only when that fails a
//! generic parse to recover `req` for the error frame.

use std::borrow::Cow;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::ids;

/// Largest `qty` a single buy may ask for. Bigger values are a bad frame, which keeps
/// `qty * price_fen` (price at most 10^12 fen) inside `u64`.
pub const MAX_QTY: u64 = 1_000_000;

/// A buyer frame's largest size in bytes; bigger closes the socket with 1009.
pub const MAX_BUYER_FRAME: usize = 4 * 1024;

/// Longest `detail` of an `error` frame, in characters.
pub const MAX_FRAME_DETAIL: usize = 200;

/// Frames a buyer's app sends.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum ClientMsg {
    /// Buy units of a SKU.
    Buy(BuyMsg),
    /// Ask what became of an earlier buy.
    Status {
        /// The earlier buy's `req`.
        req: String,
    },
    /// Ask for a `pong` (keeps the socket alive, reads the server's clock).
    Ping {},
    /// Cancel one of the buyer's unpaid orders.
    Cancel {
        /// The buyer's id for this cancel, echoed in its ack.
        req: String,
        /// The order to cancel.
        order: String,
    },
}

/// `{"op":"buy","req","sku","qty","ref"}`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct BuyMsg {
    /// The buyer's id for this buy: a repeat of it gets the first answer, never a second order.
    pub req: String,
    /// The SKU to buy.
    pub sku: String,
    /// Units, 1 to [`MAX_QTY`].
    pub qty: u64,
    /// Who sent the buyer (`ref`), for the dashboard's top referrers.
    #[serde(rename = "ref", default)]
    pub referrer: Option<String>,
}

/// The happy path of [`ClientMsg::parse`]: a buy read in one pass, borrowing its strings.
/// Anything it does not read exactly as the tagged enum would (another op, a duplicate or
/// mistyped field) goes to the general parse, so both give the same answer for every frame
/// (`fast_parse_agrees_with_the_tagged_parse` below).
#[derive(Deserialize)]
struct FlatBuy<'a> {
    #[serde(borrow)]
    op: Cow<'a, str>,
    #[serde(borrow)]
    req: Cow<'a, str>,
    #[serde(borrow)]
    sku: Cow<'a, str>,
    qty: u64,
    #[serde(rename = "ref", borrow, default)]
    referrer: Option<Cow<'a, str>>,
}

/// A frame that is not a valid message: the `error` frame's detail and, when readable, its `req`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FrameError {
    /// What is wrong with the frame, cut to [`MAX_FRAME_DETAIL`] characters.
    pub detail: String,
    /// The frame's `req`, when it holds a valid one.
    pub req: Option<String>,
}

impl ClientMsg {
    /// Parses and validates one text frame.
    pub fn parse(text: &str) -> Result<ClientMsg, FrameError> {
        let msg = match serde_json::from_str::<FlatBuy>(text) {
            Ok(b) if b.op == "buy" => ClientMsg::Buy(BuyMsg {
                req: b.req.into_owned(),
                sku: b.sku.into_owned(),
                qty: b.qty,
                referrer: b.referrer.map(Cow::into_owned),
            }),
            _ => Self::parse_tagged(text)?,
        };
        msg.validate()?;
        Ok(msg)
    }

    /// The general parse, through the tagged enum (serde buffers the frame to find `op`).
    fn parse_tagged(text: &str) -> Result<ClientMsg, FrameError> {
        serde_json::from_str(text).map_err(|e| FrameError {
            detail: bounded(describe_json_error(text, &e)),
            req: salvage_req(text),
        })
    }

    fn validate(&self) -> Result<(), FrameError> {
        let fail = |detail: String, req: &str| FrameError {
            detail,
            req: ids::check(req).ok().map(|_| req.to_owned()),
        };
        match self {
            ClientMsg::Buy(b) => {
                ids::check_named("req", &b.req).map_err(|d| fail(d, &b.req))?;
                ids::check_named("sku", &b.sku).map_err(|d| fail(d, &b.req))?;
                if let Some(r) = &b.referrer {
                    ids::check_named("ref", r).map_err(|d| fail(d, &b.req))?;
                }
                if b.qty < 1 || b.qty > MAX_QTY {
                    return Err(fail(format!("qty must be between 1 and {MAX_QTY}"), &b.req));
                }
                Ok(())
            }
            ClientMsg::Status { req } => ids::check_named("req", req).map_err(|d| fail(d, req)),
            ClientMsg::Cancel { req, order } => {
                ids::check_named("req", req).map_err(|d| fail(d, req))?;
                ids::check_named("order", order).map_err(|d| fail(d, req))
            }
            ClientMsg::Ping {} => Ok(()),
        }
    }
}

/// Cuts a detail to [`MAX_FRAME_DETAIL`] characters: serde's messages quote the offending
/// value, which may be kilobytes of whatever the client sent.
fn bounded(mut detail: String) -> String {
    if let Some((cut, _)) = detail.char_indices().nth(MAX_FRAME_DETAIL - 1) {
        detail.truncate(cut);
        detail.push('…');
    }
    detail
}

fn describe_json_error(text: &str, e: &serde_json::Error) -> String {
    match serde_json::from_str::<serde_json::Value>(text) {
        // The plain reading's error says where the JSON breaks; the typed one may not.
        Err(plain) => format!("not JSON: {plain}"),
        Ok(serde_json::Value::Object(m)) => match m.get("op") {
            None => "missing field `op`".to_owned(),
            Some(serde_json::Value::String(op))
                if !matches!(op.as_str(), "buy" | "status" | "ping" | "cancel") =>
            {
                format!("unknown op `{}`", op.chars().take(32).collect::<String>())
            }
            _ => e.to_string(),
        },
        Ok(_) => "a frame must be a JSON object".to_owned(),
    }
}

/// Reads `req` from a frame that failed the typed parse, if it is a valid id.
fn salvage_req(text: &str) -> Option<String> {
    let v: serde_json::Value = serde_json::from_str(text).ok()?;
    let req = v.get("req")?.as_str()?;
    ids::check(req).ok()?;
    Some(req.to_owned())
}

/// The sale state of a SKU.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SaleState {
    /// The sale opens later.
    Scheduled,
    /// Buys are taken.
    Open,
    /// Open, but no stock is left.
    SoldOut,
    /// The sale has closed.
    Closed,
}

impl SaleState {
    /// The state as the wire spells it.
    pub fn as_str(self) -> &'static str {
        match self {
            SaleState::Scheduled => "scheduled",
            SaleState::Open => "open",
            SaleState::SoldOut => "sold_out",
            SaleState::Closed => "closed",
        }
    }
}

/// SKU state as REST, `hello` and dashboard snapshots show it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SkuState {
    /// The SKU id.
    pub sku: Arc<str>,
    /// The name buyers see.
    pub name: Arc<str>,
    /// Unit price in fen.
    pub price_fen: u64,
    /// Initial stock plus restocks minus withdrawals.
    pub stock_total: u64,
    /// Units of durable orders.
    pub sold: u64,
    /// Units that can still be sold.
    pub left: u64,
    /// Most units one user may hold; `None` for no limit.
    pub limit_per_user: Option<u64>,
    /// When the sale opens (Unix ms); `None`: open from the start.
    pub opens_at_ms: Option<i64>,
    /// When the sale closes (Unix ms); `None`: never by the clock.
    pub closes_at_ms: Option<i64>,
    /// The sale's state now.
    pub state: SaleState,
    /// Seconds a buyer has to pay an order; `None`: paid the moment it is placed.
    pub pay_timeout_s: Option<u64>,
}

/// Where an order stands (docs/protocol.md, "Orders that must be paid").
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OrderStatus {
    /// Placed, holding its units, waiting for payment until its `pay_by_ms`.
    Unpaid,
    /// Paid (or paid the moment it was placed, for SKUs without a payment timeout).
    Paid,
    /// Not paid in time; its units went back on sale.
    Expired,
    /// Cancelled while unpaid; its units went back on sale.
    Cancelled,
    /// Paid, then refunded.
    Refunded,
}

impl OrderStatus {
    /// The status as the wire spells it.
    pub fn as_str(self) -> &'static str {
        match self {
            OrderStatus::Unpaid => "unpaid",
            OrderStatus::Paid => "paid",
            OrderStatus::Expired => "expired",
            OrderStatus::Cancelled => "cancelled",
            OrderStatus::Refunded => "refunded",
        }
    }
}

/// Why a buy made nothing: the `error` code of a rejected ack.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RejectCode {
    /// No stock is left.
    SoldOut,
    /// Some stock is left, less than `qty`.
    InsufficientStock,
    /// The buy would take the user past the SKU's per-user limit.
    LimitExceeded,
    /// The sale has not opened yet.
    NotOpen,
    /// The sale has closed.
    Closed,
    /// The room has no such SKU.
    UnknownSku,
    /// The frame is not a valid message.
    BadRequest,
    /// The connection sends faster than its rate limit.
    RateLimited,
    /// The hub could not decide or make the order durable now; nothing was sold.
    Unavailable,
    /// `status` for a `req` the hub does not know.
    UnknownRequest,
    /// `cancel` of an order that is not `unpaid`.
    NotCancellable,
    /// `cancel` of an order this user does not have.
    UnknownOrder,
}

impl RejectCode {
    /// Every code, in a fixed order (used to index counters).
    pub const ALL: [RejectCode; 12] = [
        RejectCode::SoldOut,
        RejectCode::InsufficientStock,
        RejectCode::LimitExceeded,
        RejectCode::NotOpen,
        RejectCode::Closed,
        RejectCode::UnknownSku,
        RejectCode::BadRequest,
        RejectCode::RateLimited,
        RejectCode::Unavailable,
        RejectCode::UnknownRequest,
        RejectCode::NotCancellable,
        RejectCode::UnknownOrder,
    ];

    /// The code as the wire spells it.
    pub fn as_str(self) -> &'static str {
        match self {
            RejectCode::SoldOut => "sold_out",
            RejectCode::InsufficientStock => "insufficient_stock",
            RejectCode::LimitExceeded => "limit_exceeded",
            RejectCode::NotOpen => "not_open",
            RejectCode::Closed => "closed",
            RejectCode::UnknownSku => "unknown_sku",
            RejectCode::BadRequest => "bad_request",
            RejectCode::RateLimited => "rate_limited",
            RejectCode::Unavailable => "unavailable",
            RejectCode::UnknownRequest => "unknown_request",
            RejectCode::NotCancellable => "not_cancellable",
            RejectCode::UnknownOrder => "unknown_order",
        }
    }

    /// Position in [`RejectCode::ALL`].
    pub fn index(self) -> usize {
        self as usize
    }
}

/// Frames the hub sends to a buyer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum ServerMsg {
    /// The first frame on a socket: who it is for, and the room's SKUs.
    Hello {
        /// The room.
        room: Arc<str>,
        /// The user the socket acts for.
        user: Arc<str>,
        /// The server's clock (Unix ms), to line the app's clock up with.
        server_time_ms: i64,
        /// Every SKU of the room.
        skus: Vec<SkuState>,
    },
    /// The answer to a `buy` or a `status`.
    Ack(Ack),
    /// The answer to a `ping`.
    Pong {
        /// The server's clock (Unix ms).
        server_time_ms: i64,
    },
    /// A SKU's stock changed.
    Stock {
        /// The SKU.
        sku: Arc<str>,
        /// Units that can still be sold.
        left: u64,
        /// The sale's state now.
        state: SaleState,
    },
    /// A SKU's sale state or window changed.
    Sale {
        /// The SKU.
        sku: Arc<str>,
        /// The sale's state now.
        state: SaleState,
        /// When the sale opens (Unix ms), if it has an opening time.
        opens_at_ms: Option<i64>,
        /// When the sale closes (Unix ms), if it has a closing time.
        closes_at_ms: Option<i64>,
    },
    /// One of the buyer's orders changed status.
    Order {
        /// The order.
        order: Arc<str>,
        /// Its SKU.
        sku: Arc<str>,
        /// Its status now.
        status: OrderStatus,
        /// What it costs in fen.
        amount_fen: u64,
    },
    /// A frame that could not be read as a message.
    Error {
        /// Why: `bad_request` for a frame that could not be read.
        error: RejectCode,
        /// What was wrong.
        detail: String,
        /// The frame's `req`, when it held a valid one.
        #[serde(skip_serializing_if = "Option::is_none", default)]
        req: Option<String>,
    },
}

/// The answer to a `buy` (or a `status`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ack {
    /// The buy's `req`.
    pub req: String,
    /// Whether the order exists (and is durable).
    pub ok: bool,
    /// The order id, when ok.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub order: Option<Arc<str>>,
    /// Why not, when not ok.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub error: Option<RejectCode>,
    /// The SKU, when it exists.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub sku: Option<Arc<str>>,
    /// Units bought, when ok.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub qty: Option<u64>,
    /// What the order costs in fen, when ok.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub amount_fen: Option<u64>,
    /// Stock left right after the order (ok), or seen at the refusal (SKU exists).
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub left: Option<u64>,
    /// The order's status now, when ok (and for a `cancel`).
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub status: Option<OrderStatus>,
    /// When an unpaid order expires unless paid (Unix ms).
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub pay_by_ms: Option<i64>,
}

impl Ack {
    /// A rejection; `sku` and `left` are given when the SKU exists.
    pub fn rejected(req: &str, code: RejectCode, sku: Option<Arc<str>>, left: Option<u64>) -> Ack {
        Ack {
            req: req.to_owned(),
            ok: false,
            order: None,
            error: Some(code),
            sku,
            qty: None,
            amount_fen: None,
            left,
            status: None,
            pay_by_ms: None,
        }
    }
}

impl ServerMsg {
    /// The frame as JSON text.
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).expect("server frames always serialize")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A JSON value for one field of a generated frame: right and wrong types, escapes, nulls.
    fn field_value() -> impl proptest::strategy::Strategy<Value = String> {
        use proptest::prelude::*;
        prop_oneof![
            Just(r#""buy""#.to_owned()),
            Just(r#""status""#.to_owned()),
            Just(r#""ping""#.to_owned()),
            Just(r#""r\u0031""#.to_owned()),
            Just(r#""A1""#.to_owned()),
            Just("null".to_owned()),
            Just("1.0".to_owned()),
            Just("-1".to_owned()),
            Just("true".to_owned()),
            Just("[]".to_owned()),
            Just("{}".to_owned()),
            (0u64..3_000_000).prop_map(|n| n.to_string()),
            "[a-z0-9_\\-]{0,8}".prop_map(|s| format!("\"{s}\"")),
        ]
    }

    proptest::proptest! {
        #[test]
        fn fast_parse_agrees_with_the_tagged_parse(
            fields in proptest::collection::vec(
                (proptest::sample::select(vec!["op", "req", "sku", "qty", "ref", "extra"]), field_value()),
                0..4,
            ),
            full_buy in proptest::bool::ANY,
            rotate in 0usize..8,
        ) {
            // A buy with every field (so the fast path is taken often), then the generated ones.
            let mut body: Vec<String> = vec![];
            if full_buy {
                body.extend([r#""op":"buy""#, r#""req":"q1""#, r#""sku":"A1""#, r#""qty":2"#].map(String::from));
            }
            body.extend(fields.iter().map(|(k, v)| format!("\"{k}\":{v}")));
            let n = body.len().max(1);
            body.rotate_left(rotate % n);
            let text = format!("{{{}}}", body.join(","));
            let general = ClientMsg::parse_tagged(&text).and_then(|m| m.validate().map(|_| m));
            proptest::prop_assert_eq!(ClientMsg::parse(&text), general, "{}", text);
        }

        #[test]
        fn fast_parse_reads_every_clean_buy(
            req in "[a-z0-9]{1,10}", sku in "[A-Z0-9]{1,10}", qty in 1u64..1000, with_ref in proptest::bool::ANY,
        ) {
            let r = if with_ref { r#","ref":"s9""# } else { "" };
            let text = format!(r#"{{"sku":"{sku}","qty":{qty},"op":"buy","req":"{req}"{r}}}"#);
            proptest::prop_assert!(serde_json::from_str::<FlatBuy>(&text).is_ok());
            proptest::prop_assert_eq!(ClientMsg::parse(&text), ClientMsg::parse_tagged(&text));
        }
    }

    #[test]
    fn parses_a_buy_with_and_without_ref() {
        let m =
            ClientMsg::parse(r#"{"op":"buy","req":"r1","sku":"A1","qty":2,"ref":"s42"}"#).unwrap();
        assert_eq!(
            m,
            ClientMsg::Buy(BuyMsg {
                req: "r1".into(),
                sku: "A1".into(),
                qty: 2,
                referrer: Some("s42".into())
            })
        );
        let m = ClientMsg::parse(r#"{"op":"buy","req":"r1","sku":"A1","qty":1}"#).unwrap();
        assert!(matches!(m, ClientMsg::Buy(BuyMsg { referrer: None, .. })));
        assert_eq!(
            ClientMsg::parse(r#"{"op":"ping"}"#).unwrap(),
            ClientMsg::Ping {}
        );
    }

    #[test]
    fn bad_frames_echo_req_when_readable() {
        let e = ClientMsg::parse(r#"{"op":"buy","req":"r9","sku":"A1","qty":0}"#).unwrap_err();
        assert_eq!(e.req.as_deref(), Some("r9"));
        assert!(e.detail.contains("qty"), "{}", e.detail);
        let e = ClientMsg::parse(r#"{"op":"buy","req":"r9","sku":"A1","qty":-1}"#).unwrap_err();
        assert_eq!(e.req.as_deref(), Some("r9"));
        let e = ClientMsg::parse(r#"{"op":"fly","req":"r3"}"#).unwrap_err();
        assert!(e.detail.contains("unknown op"), "{}", e.detail);
        let e = ClientMsg::parse("nope").unwrap_err();
        assert!(e.detail.starts_with("not JSON"), "{}", e.detail);
        assert_eq!(e.req, None);
    }

    #[test]
    fn frame_error_details_are_short() {
        // Found by fuzz/buyer_frame: serde quotes the offending value in full.
        let long = format!(
            r#"{{"op":"buy","req":"r1","sku":"A1","qty":"{}"}}"#,
            "x".repeat(3000)
        );
        let e = ClientMsg::parse(&long).unwrap_err();
        assert!(e.detail.chars().count() <= MAX_FRAME_DETAIL, "{}", e.detail);
        assert!(
            e.detail.contains("qty") || e.detail.contains("invalid type"),
            "{}",
            e.detail
        );
        assert_eq!(e.req.as_deref(), Some("r1"));
        let e = ClientMsg::parse(r#""abc" trailing"#).unwrap_err();
        assert!(
            e.detail.starts_with("not JSON: trailing characters"),
            "{}",
            e.detail
        );
    }

    #[test]
    fn acks_serialize_as_the_protocol_says() {
        let ack = ServerMsg::Ack(Ack::rejected(
            "r1",
            RejectCode::SoldOut,
            Some("A1".into()),
            Some(0),
        ));
        assert_eq!(
            ack.to_json(),
            r#"{"op":"ack","req":"r1","ok":false,"error":"sold_out","sku":"A1","left":0}"#
        );
    }
}

//! Handlers behind the admin token: rooms, SKUs, stock, sale windows, the orders export and
//! change feed, and cancels and refunds.

use axum::body::Body;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::de::IgnoredAny;
use serde::Deserialize;

use super::error::ApiError;
use super::extract::{Admin, JsonBody, OrderPath, RoomPath, SkuPath};
use super::state::AppState;
use crate::catalog::RoomView;
use crate::inventory::SkuDef;
use crate::protocol::SkuState;

/// Orders per export page when `limit` is not given.
pub const DEFAULT_ORDERS_PAGE: usize = 1000;
/// The most orders a page may ask for (`limit`).
pub const MAX_ORDERS_PAGE: usize = 10_000;

/// The body of `PUT /api/rooms/{room}`; [`crate::catalog::validate_title`] checks it.
#[derive(Debug, Deserialize)]
pub struct RoomBody {
    /// The room's title; empty when not given.
    #[serde(default)]
    pub title: String,
}

/// `PUT /api/rooms/{room}`: creates the room or changes its title.
pub async fn put_room(
    State(s): State<AppState>,
    _: Admin,
    RoomPath(room): RoomPath,
    JsonBody(body): JsonBody<RoomBody>,
) -> Result<Json<RoomView>, ApiError> {
    Ok(Json(s.hub.put_room(&room, body.title).await?))
}

/// The body of `PUT /api/rooms/{room}/skus/{sku}`; [`crate::catalog::validate_sku`] checks it.
/// A field it does not know is a 400 naming it: a typo such as `"stok"` would otherwise make a
/// SKU with no stock. The SKU state's own fields are let through and ignored, so a state read
/// back can be sent again as a body.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SkuBody {
    /// The SKU's name as buyers see it.
    pub name: String,
    /// Unit price in fen.
    pub price_fen: u64,
    /// Initial stock; only used when the SKU is created.
    #[serde(default)]
    pub stock: u64,
    /// Most units one user may hold; `None` for no limit.
    #[serde(default)]
    pub limit_per_user: Option<u64>,
    /// When the sale opens (Unix ms); `None` opens it at once.
    #[serde(default)]
    pub opens_at_ms: Option<i64>,
    /// When the sale closes (Unix ms); `None` never closes it by the clock.
    #[serde(default)]
    pub closes_at_ms: Option<i64>,
    /// Seconds a buyer has to pay an order; `None`: paid the moment it is placed.
    #[serde(default)]
    pub pay_timeout_s: Option<u64>,
    #[serde(default, rename = "sku")]
    _sku: Option<IgnoredAny>,
    #[serde(default, rename = "stock_total")]
    _stock_total: Option<IgnoredAny>,
    #[serde(default, rename = "sold")]
    _sold: Option<IgnoredAny>,
    #[serde(default, rename = "left")]
    _left: Option<IgnoredAny>,
    #[serde(default, rename = "state")]
    _state: Option<IgnoredAny>,
}

/// `PUT /api/rooms/{room}/skus/{sku}`: creates the SKU or updates it (stock untouched).
pub async fn put_sku(
    State(s): State<AppState>,
    _: Admin,
    SkuPath(room, sku): SkuPath,
    JsonBody(body): JsonBody<SkuBody>,
) -> Result<Json<SkuState>, ApiError> {
    Ok(Json(s.hub.put_sku(&room, &sku, body.into()).await?))
}

impl From<SkuBody> for SkuDef {
    fn from(b: SkuBody) -> SkuDef {
        SkuDef {
            name: b.name,
            price_fen: b.price_fen,
            stock: b.stock,
            limit_per_user: b.limit_per_user,
            opens_at_ms: b.opens_at_ms,
            closes_at_ms: b.closes_at_ms,
            pay_timeout_s: b.pay_timeout_s,
        }
    }
}

/// The body of `POST .../stock`; [`crate::catalog::validate_delta`] checks it.
#[derive(Debug, Deserialize)]
pub struct StockBody {
    /// Units to add (`> 0`, a restock) or take away (`< 0`, a withdrawal).
    pub delta: i64,
}

/// `POST /api/rooms/{room}/skus/{sku}/stock`: restocks or withdraws.
pub async fn change_stock(
    State(s): State<AppState>,
    _: Admin,
    SkuPath(room, sku): SkuPath,
    JsonBody(body): JsonBody<StockBody>,
) -> Result<Json<SkuState>, ApiError> {
    Ok(Json(s.hub.change_stock(&room, &sku, body.delta).await?))
}

/// `POST /api/rooms/{room}/skus/{sku}/open`: opens the sale now.
pub async fn open_sale(
    State(s): State<AppState>,
    _: Admin,
    SkuPath(room, sku): SkuPath,
) -> Result<Json<SkuState>, ApiError> {
    Ok(Json(s.hub.open_sale(&room, &sku).await?))
}

/// `POST /api/rooms/{room}/skus/{sku}/close`: closes the sale now.
pub async fn close_sale(
    State(s): State<AppState>,
    _: Admin,
    SkuPath(room, sku): SkuPath,
) -> Result<Json<SkuState>, ApiError> {
    Ok(Json(s.hub.close_sale(&room, &sku).await?))
}

/// Whose orders the export and the change feed list (`?scope=`). Outside fleet mode the
/// two are the same.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Scope {
    /// The whole room, every hub's orders, from the room's stream (the default).
    #[default]
    Room,
    /// Only the orders this hub took, by its own `seq` (fleet mode's reconciliation).
    Hub,
}

/// The query string of the orders export.
#[derive(Debug, Deserialize)]
pub struct OrdersQuery {
    /// Only orders with a higher `seq` (0: from the first).
    #[serde(default)]
    pub after_seq: u64,
    /// Orders in the page; [`DEFAULT_ORDERS_PAGE`] when not given.
    pub limit: Option<usize>,
    /// The whole room's (default) or this hub's.
    #[serde(default)]
    pub scope: Scope,
}

/// `GET /api/rooms/{room}/orders`: NDJSON, one order a line, oldest first. In fleet mode the
/// whole room's, by room-wide `seq`, unless `scope=hub`.
pub async fn orders(
    State(s): State<AppState>,
    _: Admin,
    RoomPath(room): RoomPath,
    q: Result<Query<OrdersQuery>, QueryRejection>,
) -> Result<Response, ApiError> {
    let Query(q) = q?;
    let (r, limit) = paged(&s, &room, q.limit)?;
    if s.hub.fleet().is_some() && q.scope == Scope::Room {
        return Ok(ndjson(r.whole.export_after(q.after_seq, limit).into_iter()));
    }
    let page = r.orders.page_after(q.after_seq, limit);
    Ok(ndjson(page.iter().map(|o| r.statuses.export_line(o))))
}

/// The room of a paged NDJSON route and its page's length, checked: 404 for no such room,
/// 400 for a `limit` out of bounds.
fn paged(
    s: &AppState,
    room: &str,
    limit: Option<usize>,
) -> Result<(std::sync::Arc<crate::rooms::room::Room>, usize), ApiError> {
    let limit = limit.unwrap_or(DEFAULT_ORDERS_PAGE);
    if limit == 0 || limit > MAX_ORDERS_PAGE {
        return Err(ApiError::bad_request(format!(
            "limit must be between 1 and {MAX_ORDERS_PAGE}"
        )));
    }
    let r = s
        .hub
        .room(room)
        .ok_or_else(|| ApiError::not_found(format!("room {room} does not exist")))?;
    Ok((r, limit))
}

/// An NDJSON answer of `lines` (each with its newline).
fn ndjson(lines: impl Iterator<Item = String>) -> Response {
    let body: String = lines.collect();
    (
        [(header::CONTENT_TYPE, "application/x-ndjson")],
        Body::from(body),
    )
        .into_response()
}

/// The query string of the change feed.
#[derive(Debug, Deserialize)]
pub struct EventsQuery {
    /// Only events with a higher number (0: from the first).
    #[serde(default)]
    pub after: u64,
    /// Events in the page; [`DEFAULT_ORDERS_PAGE`] when not given.
    pub limit: Option<usize>,
    /// The whole room's (default) or this hub's.
    #[serde(default)]
    pub scope: Scope,
}

/// `GET /api/rooms/{room}/order-events`: NDJSON, one event a line, oldest first: every
/// placement and status move of the room's orders. In fleet mode the room's stream, every
/// hub's, numbered by its position there, unless `scope=hub`.
pub async fn order_events(
    State(s): State<AppState>,
    _: Admin,
    RoomPath(room): RoomPath,
    q: Result<Query<EventsQuery>, QueryRejection>,
) -> Result<Response, ApiError> {
    let Query(q) = q?;
    let (r, limit) = paged(&s, &room, q.limit)?;
    let page = if s.hub.fleet().is_some() && q.scope == Scope::Room {
        r.orders.stream_page_after(q.after, limit)
    } else {
        r.events.page_after(q.after, limit)
    };
    Ok(ndjson(page.iter().map(|(n, e)| e.to_ndjson(*n))))
}

/// An order's answer to a cancel or a refund.
#[derive(Debug, serde::Serialize)]
pub struct OrderMoved {
    /// The order.
    pub order: String,
    /// Its status now.
    pub status: crate::protocol::OrderStatus,
}

/// `POST /api/rooms/{room}/orders/{order}/cancel`: cancels an unpaid order.
pub async fn cancel_order(
    State(s): State<AppState>,
    _: Admin,
    OrderPath(room, order): OrderPath,
) -> Result<Json<OrderMoved>, ApiError> {
    let r = s
        .hub
        .room(&room)
        .ok_or(crate::hub::moves::MoveError::UnknownOrder)?;
    let o = s.hub.cancel(&r, &order, None).await?;
    Ok(Json(OrderMoved {
        order: o.order_id(),
        status: crate::protocol::OrderStatus::Cancelled,
    }))
}

/// The body of a refund.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RefundBody {
    /// Whether the units go back on sale (and the buyer's allowance back).
    #[serde(default)]
    pub restock: bool,
}

/// `POST /api/rooms/{room}/orders/{order}/refund`: refunds a paid order.
pub async fn refund_order(
    State(s): State<AppState>,
    _: Admin,
    OrderPath(room, order): OrderPath,
    body: axum::body::Bytes,
) -> Result<Json<OrderMoved>, ApiError> {
    // An empty body is a refund without restock.
    let body: RefundBody = if body.iter().all(u8::is_ascii_whitespace) {
        RefundBody::default()
    } else {
        super::parse_json(&body)?
    };
    let r = s
        .hub
        .room(&room)
        .ok_or(crate::hub::moves::MoveError::UnknownOrder)?;
    let o = s.hub.refund(&r, &order, body.restock).await?;
    Ok(Json(OrderMoved {
        order: o.order_id(),
        status: crate::protocol::OrderStatus::Refunded,
    }))
}

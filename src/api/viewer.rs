//! Viewer handlers: room list, overview, dashboard snapshot and the stock audit.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Serialize;

use super::error::ApiError;
use super::extract::{RoomPath, Viewer};
use super::state::AppState;
use crate::catalog::RoomView;
use crate::rooms::room::Room;

/// `GET /api/rooms`: every room with its SKUs.
pub async fn list_rooms(
    State(s): State<AppState>,
    _: Viewer,
) -> Result<Json<Vec<RoomView>>, ApiError> {
    Ok(Json(
        s.hub
            .rooms()
            .all()
            .iter()
            .filter_map(|r| s.hub.room_view(&r.id))
            .collect(),
    ))
}

/// `GET /api/overview`: every room at a glance, the same JSON as a `/ws/overview` message (the
/// latest overview if it is younger than a second, else one built now).
pub async fn overview(State(s): State<AppState>, _: Viewer) -> Response {
    (
        [(header::CONTENT_TYPE, "application/json")],
        s.overview.current().frame.to_string(),
    )
        .into_response()
}

/// One dashboard snapshot, with the whole trend.
pub async fn stats(
    State(s): State<AppState>,
    _: Viewer,
    RoomPath(room): RoomPath,
) -> Result<Response, ApiError> {
    let r = s
        .hub
        .room(&room)
        .ok_or_else(|| ApiError::not_found(format!("room {room} does not exist")))?;
    let mut rx = r.feeds.snapshots.subscribe();
    // A room created a moment ago may not have its first dashboard snapshot yet.
    let published = tokio::time::timeout(Duration::from_secs(2), rx.wait_for(|p| p.is_some()))
        .await
        .ok()
        .and_then(|r| r.ok().and_then(|p| p.clone()))
        .ok_or_else(|| ApiError::unavailable("no snapshot yet; try again"))?;
    Ok((
        [(header::CONTENT_TYPE, "application/json")],
        published.full_frame().to_string(),
    )
        .into_response())
}

/// One SKU's stock against its orders.
#[derive(Debug, Serialize)]
pub struct SkuAudit {
    /// The SKU.
    pub sku: Arc<str>,
    /// Initial stock plus restocks minus withdrawals.
    pub stock_total: u64,
    /// Units of the orders counted that keep them: unpaid, paid, and refunded without restock
    /// (the journal's, or in fleet mode the stream's).
    pub sold: u64,
    /// Units of those orders waiting for payment.
    pub unpaid: u64,
    /// Units that can still be sold.
    pub left: u64,
    /// Units reserved by buys whose orders are being made durable right now.
    pub in_flight: u64,
    /// `sold + left == stock_total`, and (outside fleet mode) `sold` is the SKU's own count.
    pub consistent: bool,
}

/// `GET /api/rooms/{room}/audit`'s answer.
#[derive(Debug, Serialize)]
pub struct Audit {
    /// The room.
    pub room: Arc<str>,
    /// Every SKU is consistent.
    pub consistent: bool,
    /// Every SKU of the room.
    pub skus: Vec<SkuAudit>,
}

/// Stock totals against the journal's orders (fleet mode: against every hub's orders in the
/// room's stream, with stock as Redis holds it).
pub async fn audit(
    State(s): State<AppState>,
    _: Viewer,
    RoomPath(room): RoomPath,
) -> Result<Json<Audit>, ApiError> {
    let r = s
        .hub
        .room(&room)
        .ok_or_else(|| ApiError::not_found(format!("room {room} does not exist")))?;
    // Fleet mode: every hub's orders, from the room's stream; otherwise this hub's journal.
    // Running totals: each audit folds only the orders made since the last one.
    let shared = s.hub.fleet().is_some();
    let units = r
        .audit
        .units(
            r.clone(),
            |room: &Room| (&room.orders, &room.events),
            shared,
        )
        .await;
    let skus: Vec<SkuAudit> = r
        .skus
        .list()
        .iter()
        .map(|s| {
            let stock_total = s.stock_total();
            let left = s.left();
            let u = units.get(&s.id).copied().unwrap_or_default();
            let sold = u.sold;
            let in_flight = stock_total.saturating_sub(sold).saturating_sub(left);
            SkuAudit {
                sku: s.id.clone(),
                stock_total,
                sold,
                unpaid: u.unpaid,
                left,
                in_flight,
                // As docs/protocol.md defines it; a buy in flight makes it false for a moment.
                consistent: sold + left == stock_total
                    && sold <= stock_total
                    && (shared || sold == s.sold()),
            }
        })
        .collect();
    Ok(Json(Audit {
        room: r.id.clone(),
        consistent: skus.iter().all(|s| s.consistent),
        skus,
    }))
}

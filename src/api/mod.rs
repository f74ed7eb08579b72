//! HTTP: the REST API and the WebSocket upgrades ([docs/protocol.md](../../docs/protocol.md)).
//!
//! - [`extract`]: the token, id and body checks every handler takes as arguments;
//! - [`admin`]: handlers behind the admin token (rooms, SKUs, stock, sale windows, export,
//!   change feed, cancels and refunds);
//! - [`viewer`]: handlers behind the viewer token (rooms, stats, audit);
//! - [`payments`]: payment notices, signed by the payment provider's adapter;
//! - [`audience`]: audience events, posted by the video platform's adapter;
//! - [`review`]: a room's review (复盘), as JSON or CSV;
//! - [`handshake`]: who a WebSocket upgrade is for, read from its query string;
//! - [`sockets`]: the `/ws/buy` and `/ws/dashboard` upgrades;
//! - [`state`]: what every handler shares; [`error`]: the one JSON error type.

pub mod admin;
pub mod audience;
pub mod error;
pub mod extract;
pub mod handshake;
pub mod payments;
pub mod review;
pub mod sockets;
pub mod state;
pub mod viewer;

use axum::routing::{get, post, put};
use axum::Router;

pub use error::ApiError;
pub use extract::parse_json;
pub use state::AppState;

/// The largest request body any REST call takes: a SKU definition or a title is a few hundred
/// bytes. A larger body is refused before it is read whole.
pub const MAX_BODY_BYTES: usize = 64 * 1024;

/// Routes under `/api` and the socket paths.
pub fn router() -> Router<AppState> {
    Router::new()
        .route("/ws/buy", get(sockets::buy))
        .route("/ws/dashboard", get(sockets::dashboard))
        .route("/api/rooms", get(viewer::list_rooms))
        .route("/api/payments", post(payments::payment))
        .route("/api/rooms/{room}", put(admin::put_room))
        .route("/api/rooms/{room}/skus/{sku}", put(admin::put_sku))
        .route(
            "/api/rooms/{room}/skus/{sku}/stock",
            post(admin::change_stock),
        )
        .route("/api/rooms/{room}/skus/{sku}/open", post(admin::open_sale))
        .route(
            "/api/rooms/{room}/skus/{sku}/close",
            post(admin::close_sale),
        )
        .route("/api/rooms/{room}/stats", get(viewer::stats))
        .route("/api/rooms/{room}/orders", get(admin::orders))
        .route("/api/rooms/{room}/audit", get(viewer::audit))
        .route("/api/rooms/{room}/review", get(review::review))
        .route("/api/rooms/{room}/order-events", get(admin::order_events))
        .route(
            "/api/rooms/{room}/orders/{order}/cancel",
            post(admin::cancel_order),
        )
        .route(
            "/api/rooms/{room}/orders/{order}/refund",
            post(admin::refund_order),
        )
        .layer(axum::extract::DefaultBodyLimit::max(MAX_BODY_BYTES))
        // A batch of audience events is larger than any other body.
        .merge(
            Router::new()
                .route("/api/rooms/{room}/audience", post(audience::post_audience))
                .layer(axum::extract::DefaultBodyLimit::max(
                    audience::MAX_AUDIENCE_BODY_BYTES,
                )),
        )
}

//! The WebSocket upgrades: `/ws/buy`, `/ws/dashboard` and `/ws/overview`. Who the socket is for
//! is checked from the query string ([`super::handshake`]) and the room must exist before the
//! upgrade; the socket is then served by [`crate::buyer`], [`crate::dashboard::feed`] or
//! [`crate::overview::feed`].

use std::sync::Arc;

use axum::extract::ws::rejection::WebSocketUpgradeRejection;
use axum::extract::{RawQuery, State, WebSocketUpgrade};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Extension;

use super::error::ApiError;
use super::handshake::{self, BuyQuery, DashboardQuery, OverviewQuery};
use super::state::AppState;
use crate::protocol::MAX_BUYER_FRAME;
use crate::server::accept::Authenticated;

/// A request to a socket path that is not a WebSocket upgrade (a plain GET): the library's
/// status and reason, as JSON. Checked after the token and the room, so a bad token is a 401
/// whatever the request.
fn not_an_upgrade(r: WebSocketUpgradeRejection) -> Response {
    let detail = format!("not a WebSocket upgrade: {}", r.body_text());
    let e = match r.status() {
        StatusCode::METHOD_NOT_ALLOWED => ApiError::method_not_allowed(detail),
        status => ApiError {
            status,
            code: "bad_request",
            detail,
        },
    };
    e.into_response()
}

/// Bytes of frames a socket gathers before a write, short of a flush (see `configure`).
pub const WRITE_COALESCE_BYTES: usize = 8 * 1024;

/// A socket's own read buffer (tungstenite's), held for as long as it is open and filled with
/// zeros before each read, so an idle socket holds all of it. Frames are read from the kernel
/// [`crate::server::accept::READ_CHUNK`] bytes at a time whatever its size (the connection's
/// I/O keeps what does not fit for the next reads), so it only needs to hold a few frames;
/// a bigger frame grows it.
pub const READ_BUFFER_BYTES: usize = 256;

/// Upgrade limits shared by both sockets: the buyer's 4 KiB rule is enforced on each frame
/// (close 1009); the library's own limits only bound memory.
///
/// Frames are buffered up to [`WRITE_COALESCE_BYTES`] before tungstenite writes them, and
/// every writer flushes after its batch (a buyer's task after all the frames it queued before
/// its turn, a dashboard after each dashboard snapshot). Without a write buffer tungstenite
/// would write each frame with its own `send` syscall, where the acks of one journal batch for
/// one connection can leave in one (BENCHMARKS.md).
fn configure(ws: WebSocketUpgrade) -> WebSocketUpgrade {
    ws.max_message_size(16 * MAX_BUYER_FRAME)
        .max_frame_size(16 * MAX_BUYER_FRAME)
        .read_buffer_size(READ_BUFFER_BYTES)
        .write_buffer_size(WRITE_COALESCE_BYTES)
        .max_write_buffer_size(1 << 20)
}

/// `GET /ws/buy`: a buyer's socket, once its token and room check out.
pub async fn buy(
    State(s): State<AppState>,
    RawQuery(raw): RawQuery,
    mark: Option<Extension<Authenticated>>,
    ws: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Response {
    let admitted = handshake::parse_query::<BuyQuery>(raw.as_deref())
        .and_then(|q| handshake::admit_buyer(&s.auth, &q));
    let (room_id, user) = match admitted {
        Ok(b) => (b.room, b.user),
        Err(r) => return r.into_response(),
    };
    if let Some(Extension(m)) = mark {
        m.mark();
    }
    let Some(room) = s.hub.room(&room_id) else {
        return ApiError::not_found("unknown room").into_response();
    };
    let ws = match ws {
        Ok(ws) => ws,
        Err(r) => return not_an_upgrade(r),
    };
    let Some(seat) = room.live.seat(&user, s.max_connections_per_user) else {
        return ApiError::too_many_connections(format!(
            "user {user} has {} buyer sockets open in this room",
            s.max_connections_per_user
        ))
        .into_response();
    };
    // One box for what the socket's task needs once upgraded: the upgrade's future keeps its
    // callback's captures for as long as the socket is open, so they take a pointer there.
    let setup = Box::new((s.hub.clone(), room, user, s.buyer_limits, seat));
    let tracker = s.hub.tasks().clone();
    configure(ws).on_upgrade(move |socket| {
        let (hub, room, user, limits, seat) = *setup;
        tracker.track_future(crate::buyer::serve(hub, room, user, socket, limits, seat))
    })
}

/// `GET /ws/dashboard`: a dashboard's socket, once its token and room check out.
pub async fn dashboard(
    State(s): State<AppState>,
    RawQuery(raw): RawQuery,
    mark: Option<Extension<Authenticated>>,
    ws: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Response {
    let admitted = handshake::parse_query::<DashboardQuery>(raw.as_deref())
        .and_then(|q| handshake::admit_dashboard(&s.auth, &q));
    let room_id = match admitted {
        Ok(room) => room,
        Err(r) => return r.into_response(),
    };
    if let Some(Extension(m)) = mark {
        m.mark();
    }
    let Some(room) = s.hub.room(&room_id) else {
        return ApiError::not_found("unknown room").into_response();
    };
    let ws = match ws {
        Ok(ws) => ws,
        Err(r) => return not_an_upgrade(r),
    };
    let shutdown = s.hub.shutdown_token().clone();
    let tracker = s.hub.tasks().clone();
    let room: Arc<_> = room;
    let limits = s.feed_limits;
    let gap = s.hub.options().push_interval;
    configure(ws).on_upgrade(move |socket| {
        tracker.track_future(crate::dashboard::feed::serve(
            room, socket, shutdown, limits, gap,
        ))
    })
}

/// `GET /ws/overview`: every room at a glance, once its token checks out.
pub async fn overview(
    State(s): State<AppState>,
    RawQuery(raw): RawQuery,
    mark: Option<Extension<Authenticated>>,
    ws: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Response {
    let admitted = handshake::parse_query::<OverviewQuery>(raw.as_deref())
        .and_then(|q| handshake::admit_overview(&s.auth, &q));
    if let Err(r) = admitted {
        return r.into_response();
    }
    if let Some(Extension(m)) = mark {
        m.mark();
    }
    let ws = match ws {
        Ok(ws) => ws,
        Err(r) => return not_an_upgrade(r),
    };
    let shutdown = s.hub.shutdown_token().clone();
    let tracker = s.hub.tasks().clone();
    let (overviews, limits) = (s.overview.clone(), s.feed_limits);
    configure(ws).on_upgrade(move |socket| {
        tracker.track_future(crate::overview::feed::serve(
            overviews, socket, shutdown, limits,
        ))
    })
}

//! The router and [`run`]: serve until the shutdown future fires, then shut down in three
//! steps — tell every task (a `CancellationToken`), drain with a deadline (a `TaskTracker`),
//! and close the journal after the last buy is answered.

use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::ws::rejection::WebSocketUpgradeRejection;
use axum::extract::{RawQuery, State, WebSocketUpgrade};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tower_http::services::ServeDir;
use tower_http::set_header::SetResponseHeaderLayer;

use crate::accept::{ConnCounts, ConnLimits};
use crate::api::error::ApiError;
use crate::auth::Auth;
use crate::buyer::BuyerLimits;
use crate::dashboard::feed::FeedLimits;
use crate::handshake::{self, BuyQuery, DashboardQuery};
use crate::hub::{Hub, HubOptions};
use crate::protocol::MAX_BUYER_FRAME;

/// Everything [`run`] needs.
#[derive(Debug, Clone)]
pub struct Settings {
    pub hub: HubOptions,
    pub auth: Auth,
    pub buyer_limits: BuyerLimits,
    pub static_dir: PathBuf,
    pub demo: bool,
    pub shutdown_deadline: Duration,
    pub conn_limits: ConnLimits,
    pub feed_limits: FeedLimits,
}

/// Shared by every handler.
#[derive(Clone)]
pub struct AppState {
    pub hub: Hub,
    pub auth: Auth,
    pub buyer_limits: BuyerLimits,
    pub feed_limits: FeedLimits,
    /// Open connections, overall and by source IP.
    pub conns: Arc<ConnCounts>,
}

/// The page's Content-Security-Policy: only its own scripts and sockets.
pub const CSP: &str = "default-src 'self'; connect-src 'self' ws: wss:; img-src 'self' data:; style-src 'self' 'unsafe-inline'; script-src 'self'; frame-ancestors 'none'";

/// Builds the router.
pub fn router(state: AppState, static_dir: PathBuf) -> Router {
    // Errors are JSON everywhere (PROTOCOL.md "HTTP"), also for a path or method nothing
    // serves; a 405 keeps its `Allow` header.
    let static_files = ServeDir::new(static_dir)
        .append_index_html_on_directories(true)
        .not_found_service(axum::handler::HandlerWithoutStateExt::into_service(
            no_such_path,
        ));
    Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route("/metrics", get(|| async { crate::telemetry::render() }))
        .route("/ws/buy", get(ws_buy))
        .route("/ws/dashboard", get(ws_dashboard))
        .merge(crate::api::router())
        .method_not_allowed_fallback(no_such_method)
        .fallback_service(static_files)
        .layer(SetResponseHeaderLayer::if_not_present(
            header::CONTENT_SECURITY_POLICY,
            HeaderValue::from_static(CSP),
        ))
        .layer(SetResponseHeaderLayer::if_not_present(
            header::X_CONTENT_TYPE_OPTIONS,
            HeaderValue::from_static("nosniff"),
        ))
        .layer(SetResponseHeaderLayer::if_not_present(
            header::X_FRAME_OPTIONS,
            HeaderValue::from_static("DENY"),
        ))
        .layer(SetResponseHeaderLayer::if_not_present(
            header::REFERRER_POLICY,
            HeaderValue::from_static("no-referrer"),
        ))
        .with_state(state)
}

async fn no_such_path() -> ApiError {
    ApiError::not_found("no such path")
}

async fn no_such_method(method: axum::http::Method) -> ApiError {
    ApiError::method_not_allowed(format!("{method} is not served here; see Allow"))
}

/// Recovers the journal, serves `listener` until `shutdown` completes, then drains and exits.
pub async fn run(
    listener: TcpListener,
    settings: Settings,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let _ = crate::telemetry::prometheus();
    let token = CancellationToken::new();
    let started = std::time::Instant::now();
    let (hub, replayed) = match settings.hub.shared.clone() {
        None => {
            let opts = settings.hub.clone();
            let token = token.clone();
            tokio::task::spawn_blocking(move || Hub::open(opts, token)).await??
        }
        Some(shared) => open_shared(&settings, shared, &token).await?,
    };
    tracing::info!(
        snapshot = replayed.snapshot,
        bad_snapshots = replayed.bad_snapshots.len(),
        records = replayed.records,
        orders = replayed.orders,
        elapsed_ms = started.elapsed().as_millis() as u64,
        "journal recovered"
    );
    if settings.demo {
        hub.tasks()
            .spawn(crate::demo::run(hub.clone(), hub.shutdown_token().clone()));
    }
    let state = AppState {
        hub: hub.clone(),
        auth: settings.auth.clone(),
        buyer_limits: settings.buyer_limits,
        feed_limits: settings.feed_limits,
        conns: Arc::new(ConnCounts::default()),
    };
    let conns = state.conns.clone();
    let app = router(state, settings.static_dir.clone());
    {
        let token = token.clone();
        tokio::spawn(async move {
            shutdown.await;
            tracing::info!("shutting down: no new connections, answering buys in flight");
            token.cancel();
        });
    }
    crate::accept::serve(
        listener,
        app,
        settings.conn_limits,
        conns,
        token.clone(),
        hub.tasks().clone(),
    )
    .await;
    hub.tasks().close();
    if tokio::time::timeout(settings.shutdown_deadline, hub.tasks().wait())
        .await
        .is_err()
    {
        tracing::warn!(
            deadline_s = settings.shutdown_deadline.as_secs(),
            "connections still open at the deadline"
        );
    }
    let h = hub.clone();
    tokio::task::spawn_blocking(move || h.close_journal()).await?;
    tracing::info!("journal closed; bye");
    Ok(())
}

/// Redis mode: connects, copies rooms and SKUs from Redis, replays the journal, publishes
/// what the stream lacks and releases this hub's orphan tickets, then starts the publisher and
/// the copy's refresh. Fails with a clear error when Redis does not answer.
async fn open_shared(
    settings: &Settings,
    shared: crate::fleet::SharedOptions,
    token: &CancellationToken,
) -> anyhow::Result<(Hub, crate::journal::Replayed)> {
    use anyhow::Context;
    // Snapshots hold rooms, SKUs and orders of the embedded mode; in Redis mode Redis holds
    // rooms and SKUs and the journal only orders, so the journal is replayed in full and no
    // snapshot is taken. A data dir whose segments an embedded run compacted cannot switch.
    let journal_dir = settings.hub.journal.data_dir.join("journal");
    if journal_dir.exists()
        && !crate::journal::snapshot::list(&journal_dir)
            .context("cannot list the journal")?
            .is_empty()
    {
        anyhow::bail!(
            "{} holds snapshots of a hub run without --redis; use a fresh data dir for --redis",
            journal_dir.display()
        );
    }
    let mut settings = settings.clone();
    settings.hub.journal.snapshot_every_records = 0;
    let settings = &settings;
    let fleet = crate::fleet::Fleet::connect(&shared)
        .await
        .with_context(|| format!("cannot reach redis at {}", shared.url))?;
    fleet.register().await?;
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    let rooms = Arc::new(crate::rooms::Rooms::shared(shared.hub_id.clone(), tx));
    let loaded = crate::fleet::mirror::load_all(&fleet, &rooms)
        .await
        .context("cannot read rooms from redis")?;
    let opened = {
        let opts = settings.hub.clone();
        let token = token.clone();
        let gate = crate::hub::GateKind::Shared(Box::new(fleet.clone()));
        tokio::task::spawn_blocking(move || Hub::open_with(opts, rooms, gate, token)).await??
    };
    let repaired = crate::fleet::reconcile::startup(&opened.0, &fleet)
        .await
        .context("start-up repair against redis failed")?;
    tracing::info!(
        hub = %shared.hub_id,
        rooms = loaded.len(),
        published = repaired.published,
        released = repaired.released,
        "joined the hubs sharing redis"
    );
    let hub = opened.0.clone();
    hub.tasks()
        .spawn(crate::fleet::publish::run(fleet.clone(), rx, token.clone()));
    hub.tasks()
        .spawn(crate::fleet::mirror::run(hub.clone(), fleet, token.clone()));
    Ok(opened)
}

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

/// Upgrade limits shared by both sockets: the buyer's 4 KiB rule is enforced on each frame
/// (close 1009); the library's own limits only bound memory.
///
/// Frames are buffered up to [`WRITE_COALESCE_BYTES`] before tungstenite writes them, and
/// every writer flushes after its batch (a buyer's task after all the frames it queued before
/// its turn, a dashboard after each snapshot). With a write buffer of 0, tungstenite wrote
/// each frame with its own `send` syscall: 0.9 sends per ack at 170,000 acks/s, where the acks
/// of one journal batch for one connection can leave in one.
/// Bytes of frames a socket gathers before a write, short of a flush (see [`configure`]).
pub const WRITE_COALESCE_BYTES: usize = 8 * 1024;

fn configure(ws: WebSocketUpgrade) -> WebSocketUpgrade {
    ws.max_message_size(16 * MAX_BUYER_FRAME)
        .max_frame_size(16 * MAX_BUYER_FRAME)
        .read_buffer_size(4 * 1024)
        .write_buffer_size(WRITE_COALESCE_BYTES)
        .max_write_buffer_size(1 << 20)
}

async fn ws_buy(
    State(s): State<AppState>,
    RawQuery(raw): RawQuery,
    ws: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Response {
    let admitted = handshake::parse_query::<BuyQuery>(raw.as_deref())
        .and_then(|q| handshake::admit_buyer(&s.auth, &q));
    let (room_id, user) = match admitted {
        Ok(b) => (b.room, b.user),
        Err(r) => return r.into_response(),
    };
    let Some(room) = s.hub.room(&room_id) else {
        return ApiError::not_found("unknown room").into_response();
    };
    let ws = match ws {
        Ok(ws) => ws,
        Err(r) => return not_an_upgrade(r),
    };
    let (hub, limits) = (s.hub.clone(), s.buyer_limits);
    let tracker = s.hub.tasks().clone();
    configure(ws).on_upgrade(move |socket| {
        tracker.track_future(crate::buyer::serve(hub, room, user, socket, limits))
    })
}

async fn ws_dashboard(
    State(s): State<AppState>,
    RawQuery(raw): RawQuery,
    ws: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Response {
    let admitted = handshake::parse_query::<DashboardQuery>(raw.as_deref())
        .and_then(|q| handshake::admit_dashboard(&s.auth, &q));
    let room_id = match admitted {
        Ok(room) => room,
        Err(r) => return r.into_response(),
    };
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

//! The router and [`run`]: serve until the shutdown future fires, then shut down in three
//! steps — tell every task (a `CancellationToken`), drain with a deadline (a `TaskTracker`),
//! and close the journal after the last buy is answered.

pub mod accept;

use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use axum::http::{header, HeaderValue};
use axum::routing::get;
use axum::Router;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tower_http::services::{ServeDir, ServeFile};
use tower_http::set_header::SetResponseHeaderLayer;

use crate::api::{ApiError, AppState};
use crate::auth::Auth;
use crate::buyer::BuyerLimits;
use crate::dashboard::feed::FeedLimits;
use crate::hub::{Hub, HubOptions};
use crate::server::accept::{ConnCounts, ConnLimits};

/// Everything [`run`] needs.
#[derive(Debug, Clone)]
pub struct Settings {
    /// The hub's behaviour, the journal's included.
    pub hub: HubOptions,
    /// The tokens and secret requests are checked against.
    pub auth: Auth,
    /// Limits of each buyer socket.
    pub buyer_limits: BuyerLimits,
    /// The page's files (the host dashboard).
    pub static_dir: PathBuf,
    /// Run the `--demo` room's simulated audience.
    pub demo: bool,
    /// Longest time the drain may take once the shutdown fires.
    pub shutdown_deadline: Duration,
    /// The accept loop's limits.
    pub conn_limits: ConnLimits,
    /// Limits of each dashboard socket.
    pub feed_limits: FeedLimits,
}

/// The page's Content-Security-Policy: only its own scripts and sockets.
pub const CSP: &str = "default-src 'self'; connect-src 'self' ws: wss:; img-src 'self' data:; style-src 'self' 'unsafe-inline'; script-src 'self'; frame-ancestors 'none'";

/// Builds the router.
pub fn router(state: AppState, static_dir: PathBuf, body_timeout: Duration) -> Router {
    // Errors are JSON everywhere (docs/protocol.md, "HTTP"), also for a path or method nothing
    // serves; a 405 keeps its `Allow` header.
    // The overview page has a path of its own, without `.html`.
    let overview_page = ServeFile::new(static_dir.join("overview.html"));
    // The review page (`/review?room=`) is a page of its own beside the dashboard (`/`).
    let review_page = ServeFile::new(static_dir.join("review.html"));
    let static_files = ServeDir::new(static_dir)
        .append_index_html_on_directories(true)
        // A method other than GET or HEAD on a path no route serves is a JSON 404 too, not
        // the static files' own empty 405.
        .call_fallback_on_method_not_allowed(true)
        .not_found_service(axum::handler::HandlerWithoutStateExt::into_service(
            no_such_path,
        ));
    Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route_service("/overview", overview_page)
        .route("/metrics", get(|| async { crate::telemetry::render() }))
        .route_service("/review", review_page)
        .merge(crate::api::router())
        .method_not_allowed_fallback(no_such_method)
        .fallback_service(static_files)
        // A body that dribbles in is cut off: reading it fails, and the request is refused.
        .layer(tower_http::timeout::RequestBodyTimeoutLayer::new(
            body_timeout,
        ))
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
    let mode = match settings.hub.fleet {
        None => crate::data_dir::HubMode::Embedded,
        Some(_) => crate::data_dir::HubMode::Fleet,
    };
    let data_dir = settings.hub.journal.data_dir.clone();
    let marked = crate::data_dir::check(&data_dir, mode).map_err(anyhow::Error::msg)?;
    let (hub, replayed) = match settings.hub.fleet.clone() {
        None => {
            let opts = settings.hub.clone();
            let token = token.clone();
            tokio::task::spawn_blocking(move || Hub::open(opts, token)).await??
        }
        Some(fleet) => crate::fleet::connect::open(&settings.hub, &fleet, &token).await?,
    };
    // Marked only once its journal replayed: a refused start leaves the data dir as it was.
    if !marked {
        crate::data_dir::mark(&data_dir, mode).map_err(anyhow::Error::msg)?;
    }
    tracing::info!(
        snapshot = replayed.snapshot,
        bad_snapshots = replayed.bad_snapshots.len(),
        records = replayed.records,
        orders = replayed.orders,
        elapsed_ms = started.elapsed().as_millis() as u64,
        "journal recovered"
    );
    // The demo's earlier stream is seeded before the expiry timer runs: its orders' status
    // moves are journaled with their own past times, and nothing else may move them meanwhile.
    if settings.demo {
        if let Err(e) = crate::demo::earlier::seed(&hub).await {
            tracing::error!(error = %e, "the demo's earlier stream could not be seeded");
        }
    }
    // Orders whose time to pay ran out while the hub was down expire before it serves.
    let expired = hub.start_expiry().await;
    if expired > 0 {
        tracing::info!(expired, "unpaid orders expired while the hub was down");
    }
    if settings.demo {
        hub.tasks()
            .spawn(crate::demo::run(hub.clone(), hub.shutdown_token().clone()));
    }
    let overview = crate::overview::Overviews::new(hub.clone());
    hub.tasks()
        .spawn(overview.clone().run(hub.shutdown_token().clone()));
    let state = AppState {
        hub: hub.clone(),
        auth: settings.auth.clone(),
        buyer_limits: settings.buyer_limits,
        feed_limits: settings.feed_limits,
        conns: Arc::new(ConnCounts::default()),
        max_connections_per_user: settings.conn_limits.max_per_user,
        overview,
    };
    let conns = state.conns.clone();
    let app = router(
        state,
        settings.static_dir.clone(),
        settings.conn_limits.body_timeout,
    );
    {
        let token = token.clone();
        tokio::spawn(async move {
            shutdown.await;
            tracing::info!("shutting down: no new connections, answering buys in flight");
            token.cancel();
        });
    }
    crate::server::accept::serve(
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

//! One `/ws/overview` socket: the latest overview on connect (built then if the latest is
//! older than a second), then each one the tick builds. Like a dashboard socket
//! ([`crate::dashboard::feed`]): a slow socket only ever holds the newest overview, never a
//! backlog; one that does not read is dropped after the write timeout; pings every third of the
//! idle timeout, closed with 1000 when idle and with 1001 at shutdown.

use std::time::{Duration, Instant};

use axum::extract::ws::{CloseFrame, Message, WebSocket};
use futures_util::stream::SplitSink;
use futures_util::{SinkExt, StreamExt};
use tokio::time::MissedTickBehavior;
use tokio_util::sync::CancellationToken;

use super::publisher::Overviews;
use crate::dashboard::feed::FeedLimits;

/// Close code sent when the hub shuts down.
const GOING_AWAY: u16 = 1001;
/// Close code for a socket that sent nothing (not even a pong) for the idle timeout.
const CLOSE_IDLE: u16 = 1000;

/// Serves one overview socket until it leaves or the hub shuts down.
pub async fn serve(
    overviews: Overviews,
    socket: WebSocket,
    shutdown: CancellationToken,
    limits: FeedLimits,
) {
    metrics::gauge!("livehub_connections", "kind" => "overview").increment(1.0);
    let (mut tx, mut rx) = socket.split();
    // Watching first, so no overview built from here on is missed.
    let mut watcher = overviews.watch();
    let mut current = Some(overviews.current());
    let mut last_sent = 0u64;
    let ping_every = (limits.idle_timeout / 3).max(Duration::from_millis(10));
    let mut heartbeat =
        tokio::time::interval_at(tokio::time::Instant::now() + ping_every, ping_every);
    heartbeat.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut last_heard = Instant::now();
    let mut close: Option<(u16, &'static str)> = None;
    loop {
        if let Some(b) = current.take().filter(|b| b.number > last_sent) {
            match write(
                &mut tx,
                limits.write_timeout,
                Message::Text(b.frame.clone()),
            )
            .await
            {
                Ok(Ok(())) => last_sent = b.number,
                Ok(Err(_)) => break,
                Err(_) => {
                    tracing::info!("overview socket dropped: it does not read its socket");
                    metrics::counter!("livehub_slow_consumers_dropped_total", "kind" => "overview")
                        .increment(1);
                    break;
                }
            }
        }
        tokio::select! {
            _ = shutdown.cancelled() => {
                close = Some((GOING_AWAY, "server shutting down"));
                break;
            }
            changed = watcher.overviews.changed() => {
                if changed.is_err() {
                    break;
                }
                current = watcher.overviews.borrow_and_update().clone();
            }
            _ = heartbeat.tick() => {
                if last_heard.elapsed() >= limits.idle_timeout {
                    metrics::counter!("livehub_idle_closed_total", "kind" => "overview").increment(1);
                    close = Some((CLOSE_IDLE, "idle timeout"));
                    break;
                }
                if !matches!(write(&mut tx, limits.write_timeout, Message::Ping(Default::default())).await, Ok(Ok(()))) {
                    break;
                }
            }
            msg = rx.next() => match msg {
                // Nothing the client sends is acted on; ws pings are answered by the library.
                Some(Ok(Message::Close(_))) | None | Some(Err(_)) => break,
                Some(Ok(_)) => last_heard = Instant::now(),
            },
        }
    }
    if let Some((code, reason)) = close {
        let _ = write(
            &mut tx,
            limits.write_timeout,
            Message::Close(Some(CloseFrame {
                code,
                reason: reason.into(),
            })),
        )
        .await;
    }
    drop(watcher);
    metrics::gauge!("livehub_connections", "kind" => "overview").decrement(1.0);
}

/// A write that cannot finish in time means the socket stopped reading.
async fn write(
    tx: &mut SplitSink<WebSocket, Message>,
    timeout: Duration,
    m: Message,
) -> Result<Result<(), axum::Error>, tokio::time::error::Elapsed> {
    tokio::time::timeout(timeout, tx.send(m)).await
}

//! One dashboard socket: the room's newest dashboard snapshot in full on connect, then the
//! latest snapshot of its fan-out slot each time the aggregator serves that slot. A dashboard
//! that was too slow to see every snapshot of its slot gets the full rendering (whole trend)
//! instead of the delta, so it never misses a trend point; it never gets a backlog and never
//! slows anyone else, because each socket only reads its slot's `watch`.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::ws::{CloseFrame, Message, WebSocket};
use futures_util::stream::SplitSink;
use futures_util::{SinkExt, StreamExt};
use tokio::time::MissedTickBehavior;
use tokio_util::sync::CancellationToken;

use crate::rooms::room::Room;

/// Close code sent when the hub shuts down.
const GOING_AWAY: u16 = 1001;
/// Close code for a dashboard that sent nothing (not even a pong) for the idle timeout.
const CLOSE_IDLE: u16 = 1000;

/// How long a dashboard may take to read, and to answer.
#[derive(Debug, Clone, Copy)]
pub struct FeedLimits {
    /// One frame's write may take this long; a dashboard slower than that (it stopped reading)
    /// is dropped and counted in `livehub_slow_consumers_dropped_total{kind="dashboard"}`.
    pub write_timeout: Duration,
    /// A dashboard that sends nothing for this long (pongs count) is closed; the server pings
    /// every third of it, and browsers answer pings by themselves.
    pub idle_timeout: Duration,
}

impl Default for FeedLimits {
    fn default() -> Self {
        FeedLimits {
            write_timeout: Duration::from_secs(crate::config::DEFAULT_WRITE_TIMEOUT_S),
            idle_timeout: Duration::from_secs(crate::config::DEFAULT_IDLE_TIMEOUT_S),
        }
    }
}

/// Serves one dashboard until it leaves or the hub shuts down. Two snapshots go at least `gap`
/// (the push interval) apart: the one on connect is off the aggregator's beat, and the slot's
/// next one may come a moment later, so that one waits; when the wait is over the room's newest
/// goes instead if it is newer, so the wait does not age what is sent.
pub async fn serve(
    room: Arc<Room>,
    socket: WebSocket,
    shutdown: CancellationToken,
    limits: FeedLimits,
    gap: Duration,
) {
    metrics::gauge!("livehub_connections", "kind" => "dashboard").increment(1.0);
    room.feeds.dashboards.fetch_add(1, Ordering::Relaxed);
    let (mut tx, mut rx) = socket.split();
    let mut seat = room.feeds.fanout.join();
    // Seated first, then the room's newest: it is at least as new as what the slot holds.
    let mut current = room.feeds.snapshots.borrow().clone();
    let mut last_sent: Option<u64> = None;
    // When the next snapshot may go.
    let mut not_before = tokio::time::Instant::now();
    let ping_every = (limits.idle_timeout / 3).max(Duration::from_millis(10));
    let mut heartbeat =
        tokio::time::interval_at(tokio::time::Instant::now() + ping_every, ping_every);
    heartbeat.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut last_heard = Instant::now();
    let mut close: Option<(u16, &'static str)> = None;
    loop {
        let early = current.is_some() && tokio::time::Instant::now() < not_before;
        if let Some(p) = current.take_if(|_| !early) {
            if let Some(frame) = p.frame_for(last_sent) {
                not_before = tokio::time::Instant::now() + gap;
                match write(&mut tx, limits.write_timeout, Message::Text(frame)).await {
                    Ok(Ok(())) => {}
                    Ok(Err(_)) => break,
                    Err(_) => {
                        tracing::info!(room = %room.id, "dashboard dropped: it does not read its socket");
                        metrics::counter!("livehub_slow_consumers_dropped_total", "kind" => "dashboard").increment(1);
                        break;
                    }
                }
                last_sent = Some(p.number);
            }
        }
        tokio::select! {
            _ = shutdown.cancelled() => {
                close = Some((GOING_AWAY, "server shutting down"));
                break;
            }
            _ = tokio::time::sleep_until(not_before), if early => {
                // The room's newest (built for another slot meanwhile) may be fresher.
                let newest = room.feeds.snapshots.borrow().clone();
                if newest.as_ref().map(|p| p.number) > current.as_ref().map(|p| p.number) {
                    current = newest;
                }
            }
            changed = seat.snapshots.changed() => {
                if changed.is_err() {
                    break;
                }
                current = seat.snapshots.borrow_and_update().clone();
            }
            _ = heartbeat.tick() => {
                if last_heard.elapsed() >= limits.idle_timeout {
                    metrics::counter!("livehub_idle_closed_total", "kind" => "dashboard").increment(1);
                    close = Some((CLOSE_IDLE, "idle timeout"));
                    break;
                }
                if !matches!(write(&mut tx, limits.write_timeout, Message::Ping(Default::default())).await, Ok(Ok(()))) {
                    break;
                }
            }
            msg = rx.next() => match msg {
                // Dashboards send nothing we act on; ws pings are answered by the library.
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
    drop(seat);
    room.feeds.dashboards.fetch_sub(1, Ordering::Relaxed);
    metrics::gauge!("livehub_connections", "kind" => "dashboard").decrement(1.0);
}

/// A write that cannot finish in time means the dashboard stopped reading.
async fn write(
    tx: &mut SplitSink<WebSocket, Message>,
    timeout: Duration,
    m: Message,
) -> Result<Result<(), axum::Error>, tokio::time::error::Elapsed> {
    tokio::time::timeout(timeout, tx.send(m)).await
}

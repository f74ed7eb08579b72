//! One dashboard socket: the full snapshot on connect, then the latest snapshot each time the
//! aggregator publishes. A dashboard that was too slow to see every snapshot gets the full
//! rendering (whole trend) instead of the delta, so it never misses a trend point; it never
//! gets a backlog and never slows anyone else, because each socket only reads the `watch`.

use std::sync::Arc;

use axum::extract::ws::{CloseFrame, Message, WebSocket};
use futures_util::{SinkExt, StreamExt};
use tokio_util::sync::CancellationToken;

use crate::room::Room;

/// Close code sent when the hub shuts down.
const GOING_AWAY: u16 = 1001;

/// Serves one dashboard until it leaves or the hub shuts down.
pub async fn serve(room: Arc<Room>, socket: WebSocket, shutdown: CancellationToken) {
    metrics::gauge!("livehub_connections", "kind" => "dashboard").increment(1.0);
    let (mut tx, mut rx) = socket.split();
    let mut snapshots = room.snapshots.subscribe();
    let mut last_sent: Option<u64> = None;
    loop {
        let current = snapshots.borrow_and_update().clone();
        if let Some(p) = current {
            if last_sent != Some(p.number) {
                let frame = match last_sent {
                    Some(n) if n + 1 == p.number => p.delta_frame(),
                    _ => p.full_frame(),
                };
                if tx.send(Message::Text(frame)).await.is_err() {
                    break;
                }
                last_sent = Some(p.number);
            }
        }
        tokio::select! {
            _ = shutdown.cancelled() => {
                let _ = tx.send(Message::Close(Some(CloseFrame { code: GOING_AWAY, reason: "server shutting down".into() }))).await;
                break;
            }
            changed = snapshots.changed() => if changed.is_err() { break },
            msg = rx.next() => match msg {
                // Dashboards send nothing we act on; ws pings are answered by the library.
                Some(Ok(Message::Close(_))) | None | Some(Err(_)) => break,
                Some(Ok(_)) => {}
            },
        }
    }
    metrics::gauge!("livehub_connections", "kind" => "dashboard").decrement(1.0);
}

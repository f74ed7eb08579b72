//! One `/ws/overview` socket: the latest overview on connect (built then if the latest is
//! older than a second), then each one the tick builds. It runs the dashboard sockets' loop
//! ([`crate::dashboard::socket_loop`]): a slow socket only ever holds the newest overview, never
//! a backlog; one that does not read is dropped after the write timeout; pings every third of
//! the idle timeout, closed with 1000 when idle and with 1001 at shutdown.

use std::sync::Arc;

use axum::extract::ws::{Message, WebSocket};
use tokio_util::sync::CancellationToken;

use super::publisher::{Built, Overviews, Watcher};
use crate::dashboard::socket_loop::{self, Ended, FeedLimits, Source};

/// Serves one overview socket until it leaves or the hub shuts down.
pub async fn serve(
    overviews: Overviews,
    socket: WebSocket,
    shutdown: CancellationToken,
    limits: FeedLimits,
) {
    metrics::gauge!("livehub_connections", "kind" => "overview").increment(1.0);
    // Watching first, so no overview built from here on is missed.
    let watcher = overviews.watch();
    let current = Some(overviews.current());
    let mut feed = Feed {
        watcher,
        current,
        last_sent: 0,
        sending: 0,
    };
    if socket_loop::run(&mut feed, socket, shutdown, limits, "overview").await == Ended::Slow {
        tracing::info!("overview socket dropped: it does not read its socket");
    }
    drop(feed);
    metrics::gauge!("livehub_connections", "kind" => "overview").decrement(1.0);
}

/// One socket's overviews: the newest not yet sent.
struct Feed {
    watcher: Watcher,
    current: Option<Arc<Built>>,
    last_sent: u64,
    /// The number of the overview being written.
    sending: u64,
}

impl Source for Feed {
    fn due(&mut self) -> Option<Message> {
        let b = self.current.take().filter(|b| b.number > self.last_sent)?;
        self.sending = b.number;
        Some(Message::Text(b.frame.clone()))
    }

    fn sent(&mut self) {
        self.last_sent = self.sending;
    }

    async fn wait(&mut self) -> bool {
        if self.watcher.overviews.changed().await.is_err() {
            return false;
        }
        self.current = self.watcher.overviews.borrow_and_update().clone();
        true
    }
}

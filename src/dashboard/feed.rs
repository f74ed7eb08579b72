//! One dashboard socket: the room's newest dashboard snapshot in full on connect, then the
//! latest snapshot of its fan-out slot each time the aggregator serves that slot. A dashboard
//! that was too slow to see every snapshot of its slot gets the full rendering (whole trend)
//! instead of the delta, so it never misses a trend point; it never gets a backlog and never
//! slows anyone else, because each socket only reads its slot's `watch`.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::ws::{Message, WebSocket};
use tokio_util::sync::CancellationToken;

use super::fanout::Seat;
use super::snapshot::Published;
use super::socket_loop::{self, Ended, Source};
use crate::rooms::room::Room;

pub use super::socket_loop::FeedLimits;

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
    let seat = room.feeds.fanout.join();
    // Seated first, then the room's newest: it is at least as new as what the slot holds.
    let current = room.feeds.snapshots.borrow().clone();
    let mut snapshots = Snapshots {
        room: &room,
        seat,
        current,
        last_sent: None,
        sending: None,
        not_before: tokio::time::Instant::now(),
        early: false,
        gap,
    };
    if socket_loop::run(&mut snapshots, socket, shutdown, limits, "dashboard").await == Ended::Slow
    {
        tracing::info!(room = %room.id, "dashboard dropped: it does not read its socket");
    }
    drop(snapshots);
    room.feeds.dashboards.fetch_sub(1, Ordering::Relaxed);
    metrics::gauge!("livehub_connections", "kind" => "dashboard").decrement(1.0);
}

/// A dashboard's snapshots: its slot's, at least `gap` apart.
struct Snapshots<'a> {
    room: &'a Room,
    seat: Seat<'a>,
    /// The snapshot to send next, if it is newer than the last sent.
    current: Option<Arc<Published>>,
    last_sent: Option<u64>,
    /// The number of the snapshot being written.
    sending: Option<u64>,
    /// When the next snapshot may go.
    not_before: tokio::time::Instant,
    /// A snapshot waits for `not_before`.
    early: bool,
    gap: Duration,
}

impl Source for Snapshots<'_> {
    fn due(&mut self) -> Option<Message> {
        self.early = self.current.is_some() && tokio::time::Instant::now() < self.not_before;
        let p = self.current.take_if(|_| !self.early)?;
        let frame = p.frame_for(self.last_sent)?;
        self.not_before = tokio::time::Instant::now() + self.gap;
        self.sending = Some(p.number);
        Some(Message::Text(frame))
    }

    fn sent(&mut self) {
        self.last_sent = self.sending;
    }

    async fn wait(&mut self) -> bool {
        tokio::select! {
            _ = tokio::time::sleep_until(self.not_before), if self.early => {
                // The room's newest (built for another slot meanwhile) may be fresher.
                let newest = self.room.feeds.snapshots.borrow().clone();
                if newest.as_ref().map(|p| p.number) > self.current.as_ref().map(|p| p.number) {
                    self.current = newest;
                }
                true
            }
            changed = self.seat.snapshots.changed() => {
                if changed.is_err() {
                    return false;
                }
                self.current = self.seat.snapshots.borrow_and_update().clone();
                true
            }
        }
    }
}

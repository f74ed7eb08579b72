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

/// Serves one dashboard until it leaves or the hub shuts down. The snapshot on connect is off
/// the aggregator's beat; the slot's snapshots that come less than `gap` (the push interval)
/// after it are passed over, and from the next one on each of the slot's snapshots goes as it
/// comes. The aggregator serves a slot at most every push interval, on its own schedule, so
/// the socket keeps that beat and adds no wait of its own: a socket that timed each snapshot
/// from its own last write would keep the phase its connect gave it, and add up to a push
/// interval to every snapshot's age.
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
        seat,
        current,
        last_sent: None,
        sending: None,
        pace: Pace::First,
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

/// Where a dashboard's pacing stands.
#[derive(Debug, Clone, Copy)]
enum Pace {
    /// Nothing sent yet: the first snapshot goes as soon as there is one.
    First,
    /// The first went on connect, off the aggregator's beat: the slot's snapshots that come
    /// before this instant are passed over, so the second comes at least a push interval
    /// after the first, and on the beat.
    Second(tokio::time::Instant),
    /// On the beat: each of the slot's snapshots goes as it comes.
    OnBeat,
}

/// A dashboard's snapshots: its slot's, on the aggregator's beat.
struct Snapshots<'a> {
    seat: Seat<'a>,
    /// The snapshot to send next, if it is newer than the last sent.
    current: Option<Arc<Published>>,
    last_sent: Option<u64>,
    /// The number of the snapshot being written.
    sending: Option<u64>,
    pace: Pace,
    gap: Duration,
}

impl Source for Snapshots<'_> {
    fn due(&mut self) -> Option<Message> {
        let p = self.current.take()?;
        let now = tokio::time::Instant::now();
        if let Pace::Second(not_before) = self.pace {
            if now < not_before {
                // Passed over: the slot's next snapshot, on the beat, holds what it held.
                return None;
            }
        }
        let frame = p.frame_for(self.last_sent)?;
        self.pace = match self.pace {
            Pace::First => Pace::Second(now + self.gap),
            Pace::Second(_) | Pace::OnBeat => Pace::OnBeat,
        };
        self.sending = Some(p.number);
        Some(Message::Text(frame))
    }

    fn sent(&mut self) {
        self.last_sent = self.sending;
    }

    async fn wait(&mut self) -> bool {
        if self.seat.snapshots.changed().await.is_err() {
            return false;
        }
        self.current = self.seat.snapshots.borrow_and_update().clone();
        true
    }
}

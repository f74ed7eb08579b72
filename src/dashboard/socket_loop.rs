//! The loop of a socket that only pushes: a dashboard's ([`super::feed`]) and the overview's
//! ([`crate::overview::feed`]). Each brings its own `Source` of frames, which only ever holds
//! the newest (never a backlog); the loop writes them, pings every third of the idle timeout,
//! closes with 1000 a socket idle that long and with 1001 at shutdown, and drops one whose
//! write does not finish within the write timeout (it stopped reading).

use std::time::{Duration, Instant};

use axum::extract::ws::{CloseFrame, Message, WebSocket};
use futures_util::stream::SplitSink;
use futures_util::{SinkExt, StreamExt};
use tokio::time::MissedTickBehavior;
use tokio_util::sync::CancellationToken;

/// Close code sent when the hub shuts down.
const GOING_AWAY: u16 = 1001;
/// Close code for a socket that sent nothing (not even a pong) for the idle timeout.
const CLOSE_IDLE: u16 = 1000;

/// How long a pushed-to socket may take to read, and to answer.
#[derive(Debug, Clone, Copy)]
pub struct FeedLimits {
    /// One frame's write may take this long; a socket slower than that (it stopped reading)
    /// is dropped and counted in `livehub_slow_consumers_dropped_total{kind}`.
    pub write_timeout: Duration,
    /// A socket that sends nothing for this long (pongs count) is closed; the server pings
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

/// Where a pushing socket's frames come from.
pub(crate) trait Source {
    /// The frame to write now, if one is due; asked before each wait.
    fn due(&mut self) -> Option<Message>;
    /// The frame [`Source::due`] gave was written.
    fn sent(&mut self);
    /// Waits until a frame may be due; false when the source is gone (the socket then ends).
    /// Dropped, unfinished, whenever something else wakes the loop first.
    async fn wait(&mut self) -> bool;
}

/// How a socket's loop ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Ended {
    /// A write did not finish within the write timeout (counted here; the caller logs it).
    Slow,
    /// The client left, a write failed, or the source is gone.
    Gone,
    /// Idle for the idle timeout: closed with 1000.
    Idle,
    /// The hub shuts down: closed with 1001.
    Shutdown,
}

/// Serves `source` on `socket` until the client leaves, the source is gone or the hub shuts
/// down. `kind` labels the metrics (`dashboard`, `overview`).
pub(crate) async fn run(
    source: &mut impl Source,
    socket: WebSocket,
    shutdown: CancellationToken,
    limits: FeedLimits,
    kind: &'static str,
) -> Ended {
    let (mut tx, mut rx) = socket.split();
    let ping_every = (limits.idle_timeout / 3).max(Duration::from_millis(10));
    let mut heartbeat =
        tokio::time::interval_at(tokio::time::Instant::now() + ping_every, ping_every);
    heartbeat.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut last_heard = Instant::now();
    let ended = loop {
        if let Some(frame) = source.due() {
            match write(&mut tx, limits.write_timeout, frame).await {
                Ok(Ok(())) => source.sent(),
                Ok(Err(_)) => break Ended::Gone,
                Err(_) => {
                    metrics::counter!("livehub_slow_consumers_dropped_total", "kind" => kind)
                        .increment(1);
                    break Ended::Slow;
                }
            }
        }
        tokio::select! {
            _ = shutdown.cancelled() => break Ended::Shutdown,
            more = source.wait() => {
                if !more {
                    break Ended::Gone;
                }
            }
            _ = heartbeat.tick() => {
                if last_heard.elapsed() >= limits.idle_timeout {
                    metrics::counter!("livehub_idle_closed_total", "kind" => kind).increment(1);
                    break Ended::Idle;
                }
                if !matches!(write(&mut tx, limits.write_timeout, Message::Ping(Default::default())).await, Ok(Ok(()))) {
                    break Ended::Gone;
                }
            }
            msg = rx.next() => match msg {
                // Nothing the client sends is acted on; ws pings are answered by the library.
                Some(Ok(Message::Close(_))) | None | Some(Err(_)) => break Ended::Gone,
                Some(Ok(_)) => last_heard = Instant::now(),
            },
        }
    };
    let close = match ended {
        Ended::Shutdown => Some((GOING_AWAY, "server shutting down")),
        Ended::Idle => Some((CLOSE_IDLE, "idle timeout")),
        Ended::Slow | Ended::Gone => None,
    };
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
    ended
}

/// A write that cannot finish in time means the socket stopped reading.
async fn write(
    tx: &mut SplitSink<WebSocket, Message>,
    timeout: Duration,
    m: Message,
) -> Result<Result<(), axum::Error>, tokio::time::error::Elapsed> {
    tokio::time::timeout(timeout, tx.send(m)).await
}

//! One task per buyer socket: reads frames, runs buys through the hub (several may wait for
//! the journal at once), writes acks and the room's stock and sale pushes to the socket from a
//! bounded queue, pings, and closes idle, abusive and non-reading clients.

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::ws::{Message, WebSocket};
use futures_util::{FutureExt, Sink, StreamExt};
use tokio::sync::broadcast::error::RecvError;
use tokio::time::MissedTickBehavior;

use crate::buyer::answers::Answers;
use crate::buyer::outbound::{Flow, Outbound};
use crate::buyer::pushes::back_of_queue;
use crate::buyer::rate_limit::TokenBucket;
use crate::clock::now_ms;
use crate::hub::buy::Started;
use crate::hub::Hub;
use crate::protocol::{Ack, ClientMsg, RejectCode, ServerMsg, MAX_BUYER_FRAME};
use crate::rooms::room::Room;

/// Close code for a frame over [`MAX_BUYER_FRAME`].
pub const CLOSE_TOO_BIG: u16 = 1009;
/// Close code when the hub shuts down.
pub const CLOSE_GOING_AWAY: u16 = 1001;
/// Close code for a connection that kept sending over its rate limit.
pub const CLOSE_POLICY: u16 = 1008;
/// Close code for a connection that sent nothing for the idle timeout.
pub const CLOSE_IDLE: u16 = 1000;
/// Frames read and handled in one wake-up of a buyer's task, at most, before it looks at its
/// other work (acks, pushes, heartbeats, shutdown) again.
const FRAMES_PER_WAKEUP: usize = 64;

/// Per-connection limits.
#[derive(Debug, Clone, Copy)]
pub struct BuyerLimits {
    /// Frames a second a connection may send on average.
    pub frames_per_s: f64,
    /// Frames it may send at once above the average.
    pub burst: f64,
    /// Rate-limited frames a connection may send before it is closed with 1008. They refill at
    /// `frames_per_s`, so a client that overshoots now and then is only answered
    /// `rate_limited`, and one that keeps sending several times its rate is cut off.
    pub abuse_strikes: f64,
    /// Buys and statuses one connection may have waiting at once; beyond it the socket is not
    /// read until one finishes (backpressure, not an error).
    pub max_in_flight: usize,
    /// Frames waiting to be written to the socket. While it is more than half full, the
    /// buyer's socket is not read and stock and sale pushes wait (the buyer gets the latest
    /// state when it catches up, never a backlog). A queue that cannot grow is what keeps
    /// memory bounded when clients stop reading.
    pub outbound_queue: usize,
    /// A buyer whose queue stays more than half full this long (it does not read), or whose
    /// queue overflows, is disconnected and counted in
    /// `livehub_slow_consumers_dropped_total{kind="buyer"}`.
    pub write_timeout: Duration,
    /// A socket that sends nothing for this long (pongs count) is closed; the server pings
    /// every third of it.
    pub idle_timeout: Duration,
}

impl Default for BuyerLimits {
    fn default() -> Self {
        BuyerLimits {
            frames_per_s: crate::config::DEFAULT_BUYER_RATE,
            burst: crate::config::DEFAULT_BUYER_BURST,
            abuse_strikes: crate::config::DEFAULT_BUYER_ABUSE_STRIKES,
            max_in_flight: 256,
            outbound_queue: crate::config::DEFAULT_OUTBOUND_QUEUE,
            idle_timeout: Duration::from_secs(crate::config::DEFAULT_IDLE_TIMEOUT_S),
            write_timeout: Duration::from_secs(crate::config::DEFAULT_WRITE_TIMEOUT_S),
        }
    }
}

/// Serves one buyer until it leaves or the hub shuts down.
pub async fn serve(
    hub: Hub,
    room: Arc<Room>,
    user: Arc<str>,
    socket: WebSocket,
    limits: BuyerLimits,
) {
    room.live.viewer_joined(&user);
    // Interned once per connection: the gate keys its ledgers by this.
    let who = room.user(&user);
    metrics::gauge!("livehub_connections", "kind" => "buyer").increment(1.0);
    let (sink, mut rx) = socket.split();
    let mut out = Outbound::new(sink, limits.outbound_queue);
    let mut pushes = room.buyer_pushes.subscribe();
    let pushes = &mut pushes.rx;
    let mut in_flight = Answers::new();
    let mut bucket = TokenBucket::new(limits.frames_per_s, limits.burst);
    let mut strikes = TokenBucket::new(limits.frames_per_s, limits.abuse_strikes);
    let mut stop = hub.stop_watch();
    let ping_every = (limits.idle_timeout / 3).max(Duration::from_millis(10));
    let mut heartbeat =
        tokio::time::interval_at(tokio::time::Instant::now() + ping_every, ping_every);
    heartbeat.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut last_heard = Instant::now();
    // Since when the outbound queue has been more than half full, if it is.
    let mut backlogged_since: Option<tokio::time::Instant> = None;

    let hello = ServerMsg::Hello {
        room: room.id.clone(),
        user: user.clone(),
        server_time_ms: now_ms(),
        skus: room.sku_states(now_ms()),
    };
    let mut flow = out.push_msg(&hello);
    let mut close: Option<(u16, &'static str)> = None;

    'conn: while flow == Flow::Open {
        let room_to_write = out.has_room();
        backlogged_since = match (room_to_write, backlogged_since) {
            (true, _) => None,
            (false, None) => Some(tokio::time::Instant::now()),
            (false, since) => since,
        };
        let stall_deadline = backlogged_since.map(|t| t + limits.write_timeout);
        // Biased, in this order: shutdown, acks of decided buys, pushes, then new frames, so a
        // burst of pushes (a sale opening for thousands) never holds back answers.
        tokio::select! {
            biased;
            _ = stop.stopped() => {
                close = Some((CLOSE_GOING_AWAY, "server shutting down"));
                break;
            }
            // Frames queued before this task's last turn at the back of the queue leave first,
            // with one flush.
            written = out.write(), if out.is_due() => flow = written,
            _ = back_of_queue(), if out.must_wait() => out.waited = true,
            ready = in_flight.next(), if !in_flight.is_empty() => {
                // Every ack that is ready is queued at once and leaves with one flush.
                record_ack_latencies(&room, Instant::now(), ready.iter().filter(|r| r.2).map(|r| r.1));
                flow = out.push_acks(ready, flow);
            }
            // Pushes are taken only while the queue has room: a buyer that reads slowly lags on
            // the broadcast instead, and then gets the latest state (never a backlog).
            push = pushes.recv(), if room_to_write => match push {
                Ok(frames) => {
                    for f in frames.iter() {
                        if flow == Flow::Open {
                            flow = out.push(Message::Text(f.clone()));
                        }
                    }
                }
                Err(RecvError::Lagged(_)) => flow = resend_state(&mut out, &room),
                Err(RecvError::Closed) => {}
            },
            _ = heartbeat.tick() => {
                if last_heard.elapsed() >= limits.idle_timeout {
                    metrics::counter!("livehub_idle_closed_total", "kind" => "buyer").increment(1);
                    close = Some((CLOSE_IDLE, "idle timeout"));
                    break;
                }
                flow = out.push(Message::Ping(Default::default()));
            }
            _ = sleep_until_some(stall_deadline) => {
                flow = Flow::Overflow;
                break;
            }
            // A buyer whose answers pile up unread is not read either (backpressure).
            msg = rx.next(), if in_flight.len() < limits.max_in_flight && room_to_write => {
                // Every frame that is already read is handled in this one wake-up (a client
                // that pipelines sends many in one TCP segment), up to a budget; the select
                // above runs once per batch, not once per frame.
                let mut next = Some(msg);
                let mut budget = FRAMES_PER_WAKEUP;
                while let Some(msg) = next.take() {
                    let started = Instant::now();
                    last_heard = started;
                    let text = match msg {
                        None | Some(Ok(Message::Close(_))) => break 'conn,
                        Some(Err(e)) => {
                            // The library refused the frame: over its size limit, or broken.
                            tracing::debug!(%user, error = %e, "buyer socket error");
                            close = Some((CLOSE_TOO_BIG, "frame too large or malformed"));
                            break 'conn;
                        }
                        Some(Ok(Message::Ping(_) | Message::Pong(_))) => None,
                        Some(Ok(Message::Binary(b))) => {
                            if b.len() > MAX_BUYER_FRAME {
                                close = Some((CLOSE_TOO_BIG, "frame over 4 KiB"));
                                break 'conn;
                            }
                            flow = out.push_msg(&frame_error("binary frames are not accepted; send JSON text", None));
                            None
                        }
                        Some(Ok(Message::Text(t))) => Some(t),
                    };
                    if let Some(text) = text {
                        if text.len() > MAX_BUYER_FRAME {
                            close = Some((CLOSE_TOO_BIG, "frame over 4 KiB"));
                            break 'conn;
                        }
                        let limited = !bucket.try_take(started);
                        if limited && !strikes.try_take(started) {
                            tracing::info!(room = %room.id, %user, "buyer closed: kept sending over its rate limit");
                            metrics::counter!("livehub_abusive_closed_total", "kind" => "buyer").increment(1);
                            close = Some((CLOSE_POLICY, "rate limit exceeded, repeatedly"));
                            break 'conn;
                        }
                        flow = match ClientMsg::parse(&text) {
                            Err(e) => {
                                room.live.count_rejection(RejectCode::BadRequest);
                                out.push_msg(&frame_error(&e.detail, e.req))
                            }
                            Ok(ClientMsg::Ping {}) => out.push_msg(&ServerMsg::Pong { server_time_ms: now_ms() }),
                            Ok(ClientMsg::Buy(b)) if limited => {
                                let ack = hub.rejected_buy(&room, &b, RejectCode::RateLimited);
                                out.push_msg(&ServerMsg::Ack(ack))
                            }
                            Ok(ClientMsg::Status { req }) if limited => {
                                out.push_msg(&ServerMsg::Ack(Ack::rejected(&req, RejectCode::RateLimited, None, None)))
                            }
                            Ok(ClientMsg::Buy(b)) => match hub.start_buy(&room, &who, &b) {
                                Some(Started::Answered(ack)) => {
                                    record_ack_latencies(&room, Instant::now(), [started]);
                                    out.push_msg(&ServerMsg::Ack(ack))
                                }
                                Some(Started::Journaling(j)) => {
                                    in_flight.push_journaling(j, started);
                                    Flow::Open
                                }
                                None => {
                                    let (hub, room, who) = (hub.clone(), room.clone(), who.clone());
                                    in_flight.push_other(async move { (hub.buy(&room, &who, &b).await, started, true) });
                                    Flow::Open
                                }
                            },
                            Ok(ClientMsg::Status { req }) => {
                                let (hub, room, user) = (hub.clone(), room.clone(), user.clone());
                                in_flight.push_other(async move { (hub.status(&room, &user, &req).await, started, false) });
                                Flow::Open
                            }
                        };
                    }
                    budget -= 1;
                    if flow == Flow::Open
                        && budget > 0
                        && in_flight.len() < limits.max_in_flight
                        && out.has_room()
                    {
                        // `None`: nothing more is read yet (the select polls again, with its waker).
                        next = rx.next().now_or_never();
                    }
                }
            }
        }
    }
    if flow == Flow::Overflow {
        tracing::info!(room = %room.id, %user, "buyer dropped: it does not read its socket");
        metrics::counter!("livehub_slow_consumers_dropped_total", "kind" => "buyer").increment(1);
        drop(out);
        // Its buys still finish (they may already be durable); nobody hears the answers.
        while !in_flight.next().await.is_empty() {}
    } else {
        // Answer what is in flight before closing: those buys may already be durable.
        while !in_flight.is_empty() {
            tokio::select! {
                biased;
                written = out.write(), if out.has_work() && flow == Flow::Open => flow = written,
                ready = in_flight.next() => flow = out.push_acks(ready, flow),
            }
        }
        out.finish(close).await;
    }
    room.live.viewer_left();
    metrics::gauge!("livehub_connections", "kind" => "buyer").decrement(1.0);
}

/// Records buy-to-ack times (buys that arrived at `started`, answered `now`) in the room's
/// histogram, under one lock, and in the metrics.
fn record_ack_latencies(room: &Room, now: Instant, started: impl IntoIterator<Item = Instant>) {
    let ack_seconds = &crate::telemetry::buy_metrics().ack_seconds;
    room.live.record_latencies(started.into_iter().map(|t| {
        let us = now.duration_since(t).as_micros() as u64;
        ack_seconds.record(us as f64 / 1e6);
        us
    }));
}

fn frame_error(detail: &str, req: Option<String>) -> ServerMsg {
    ServerMsg::Error {
        error: RejectCode::BadRequest,
        detail: detail.to_owned(),
        req,
    }
}

/// Sleeps until `deadline`, or forever when there is none.
async fn sleep_until_some(deadline: Option<tokio::time::Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}

/// After missing pushes, a buyer gets every SKU's current sale and stock state.
fn resend_state<Si: Sink<Message> + Unpin>(out: &mut Outbound<Si>, room: &Room) -> Flow {
    let now = now_ms();
    for s in room.skus() {
        let (o, c) = s.window();
        let state = s.state_at(now);
        let sale = ServerMsg::Sale {
            sku: s.id.clone(),
            state,
            opens_at_ms: o,
            closes_at_ms: c,
        };
        let stock = ServerMsg::Stock {
            sku: s.id.clone(),
            left: s.left(),
            state,
        };
        for m in [sale, stock] {
            let f = out.push_msg(&m);
            if f != Flow::Open {
                return f;
            }
        }
    }
    Flow::Open
}

//! One task per buyer socket: reads frames, runs buys through the hub (several may wait for
//! the journal at once), writes acks, and forwards the room's stock and sale pushes.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Instant;

use axum::extract::ws::{CloseFrame, Message, Utf8Bytes, WebSocket};
use futures_util::stream::FuturesUnordered;
use futures_util::{FutureExt, SinkExt, StreamExt};
use tokio::sync::broadcast::error::RecvError;

use crate::clock::now_ms;
use crate::hub::Hub;
use crate::protocol::{Ack, ClientMsg, RejectCode, ServerMsg, MAX_BUYER_FRAME};
use crate::rate_limit::TokenBucket;
use crate::room::Room;

/// Close code for a frame over [`MAX_BUYER_FRAME`].
pub const CLOSE_TOO_BIG: u16 = 1009;
/// Close code when the hub shuts down.
pub const CLOSE_GOING_AWAY: u16 = 1001;

/// Per-connection limits.
#[derive(Debug, Clone, Copy)]
pub struct BuyerLimits {
    /// Frames a second a connection may send on average.
    pub frames_per_s: f64,
    /// Frames it may send at once above the average.
    pub burst: f64,
    /// Buys and statuses one connection may have waiting at once; beyond it the socket is not
    /// read until one finishes (backpressure, not an error).
    pub max_in_flight: usize,
}

impl Default for BuyerLimits {
    fn default() -> Self {
        BuyerLimits {
            frames_per_s: 200.0,
            burst: 400.0,
            max_in_flight: 256,
        }
    }
}

type Pending = Pin<Box<dyn Future<Output = (Ack, Instant, bool)> + Send>>;

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
    let (mut tx, mut rx) = socket.split();
    let mut pushes = room.buyer_pushes.subscribe();
    let mut in_flight: FuturesUnordered<Pending> = FuturesUnordered::new();
    let mut bucket = TokenBucket::new(limits.frames_per_s, limits.burst);
    let shutdown = hub.shutdown_token().clone();

    let hello = ServerMsg::Hello {
        room: room.id.clone(),
        user: user.clone(),
        server_time_ms: now_ms(),
        skus: room.sku_states(now_ms()),
    };
    let mut open = tx.send(Message::Text(hello.to_json().into())).await.is_ok();
    let mut close: Option<(u16, &'static str)> = None;

    while open {
        // Biased, in this order: shutdown, acks of decided buys, pushes, then new frames, so a
        // burst of pushes (a sale opening for thousands) never holds back answers.
        tokio::select! {
            biased;
            _ = shutdown.cancelled() => {
                close = Some((CLOSE_GOING_AWAY, "server shutting down"));
                break;
            }
            Some(first) = in_flight.next(), if !in_flight.is_empty() => {
                // Every ack that is ready goes out with one flush: one write for a whole batch.
                let mut ready = vec![first];
                while let Some(Some(more)) = in_flight.next().now_or_never() {
                    ready.push(more);
                }
                let mut timings = Vec::with_capacity(ready.len());
                for (ack, started, is_buy) in ready {
                    timings.push((started, is_buy));
                    if open {
                        open = tx.feed(Message::Text(Utf8Bytes::from(ServerMsg::Ack(ack).to_json()))).await.is_ok();
                    }
                }
                open = open && tx.flush().await.is_ok();
                for (started, is_buy) in timings {
                    if is_buy {
                        let us = started.elapsed().as_micros() as u64;
                        room.live.record_latency(us);
                        metrics::histogram!("livehub_buy_ack_seconds").record(us as f64 / 1e6);
                    }
                }
            }
            push = pushes.recv() => match push {
                Ok(frame) => open = tx.send(Message::Text(frame)).await.is_ok(),
                Err(RecvError::Lagged(_)) => open = resend_state(&mut tx, &room).await,
                Err(RecvError::Closed) => {}
            },
            msg = rx.next(), if in_flight.len() < limits.max_in_flight => {
                let started = Instant::now();
                let text = match msg {
                    None | Some(Ok(Message::Close(_))) => break,
                    Some(Err(e)) => {
                        // The library refused the frame: over its size limit, or broken.
                        tracing::debug!(%user, error = %e, "buyer socket error");
                        close = Some((CLOSE_TOO_BIG, "frame too large or malformed"));
                        break;
                    }
                    Some(Ok(Message::Ping(_) | Message::Pong(_))) => continue,
                    Some(Ok(Message::Binary(b))) => {
                        if b.len() > MAX_BUYER_FRAME {
                            close = Some((CLOSE_TOO_BIG, "frame over 4 KiB"));
                            break;
                        }
                        open = send(&mut tx, &frame_error("binary frames are not accepted; send JSON text", None)).await;
                        continue;
                    }
                    Some(Ok(Message::Text(t))) => t,
                };
                if text.len() > MAX_BUYER_FRAME {
                    close = Some((CLOSE_TOO_BIG, "frame over 4 KiB"));
                    break;
                }
                let limited = !bucket.try_take(Instant::now());
                match ClientMsg::parse(&text) {
                    Err(e) => {
                        room.live.count_rejection(RejectCode::BadRequest);
                        open = send(&mut tx, &frame_error(&e.detail, e.req)).await;
                    }
                    Ok(ClientMsg::Ping {}) => open = send(&mut tx, &ServerMsg::Pong { server_time_ms: now_ms() }).await,
                    Ok(ClientMsg::Buy(b)) if limited => {
                        let ack = hub.rejected(&room, &b.req, RejectCode::RateLimited, None, None);
                        open = send(&mut tx, &ServerMsg::Ack(ack)).await;
                    }
                    Ok(ClientMsg::Status { req }) if limited => {
                        open = send(&mut tx, &ServerMsg::Ack(Ack::rejected(&req, RejectCode::RateLimited, None, None))).await;
                    }
                    Ok(ClientMsg::Buy(b)) => {
                        let (hub, room, who) = (hub.clone(), room.clone(), who.clone());
                        in_flight.push(Box::pin(async move { (hub.buy(&room, &who, &b).await, started, true) }));
                    }
                    Ok(ClientMsg::Status { req }) => {
                        let (hub, room, user) = (hub.clone(), room.clone(), user.clone());
                        in_flight.push(Box::pin(async move { (hub.status(&room, &user, &req).await, started, false) }));
                    }
                }
            }
        }
    }
    // Answer what is in flight before closing: those buys may already be durable.
    while let Some((ack, _, _)) = in_flight.next().await {
        if open {
            open = send(&mut tx, &ServerMsg::Ack(ack)).await;
        }
    }
    if let (true, Some((code, reason))) = (open, close) {
        let _ = tx
            .send(Message::Close(Some(CloseFrame {
                code,
                reason: reason.into(),
            })))
            .await;
    }
    room.live.viewer_left();
    metrics::gauge!("livehub_connections", "kind" => "buyer").decrement(1.0);
}

fn frame_error(detail: &str, req: Option<String>) -> ServerMsg {
    ServerMsg::Error {
        error: RejectCode::BadRequest,
        detail: detail.to_owned(),
        req,
    }
}

async fn send<S>(tx: &mut S, msg: &ServerMsg) -> bool
where
    S: SinkExt<Message> + Unpin,
{
    tx.send(Message::Text(Utf8Bytes::from(msg.to_json())))
        .await
        .is_ok()
}

/// After missing pushes, a buyer gets every SKU's current sale and stock state.
async fn resend_state<S>(tx: &mut S, room: &Room) -> bool
where
    S: SinkExt<Message> + Unpin,
{
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
        if !send(tx, &sale).await || !send(tx, &stock).await {
            return false;
        }
    }
    true
}

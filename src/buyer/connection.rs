//! One task per buyer socket: reads frames, runs buys through the hub (several may wait for
//! the journal at once), writes acks and the room's stock and sale pushes to the socket from a
//! bounded queue, pings, and closes idle, abusive and non-reading clients.
//!
//! [`Connection`] holds one socket's state and has a method per event; [`Connection::run`]
//! waits for the next event and hands it to its method. It is generic over the socket's halves,
//! so tests drive it with channels and paused time instead of a socket.

use std::fmt::Display;
use std::future::Future;
use std::ops::ControlFlow::{self, Break, Continue};
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::ws::{Message, Utf8Bytes, WebSocket};
use futures_util::{FutureExt, Sink, Stream, StreamExt};
use tokio::sync::broadcast::error::RecvError;
use tokio::time::{Instant, Sleep};

use crate::buyer::answers::{Answer, Answers};
use crate::buyer::outbound::{Flow, Outbound};
use crate::buyer::pushes::{back_of_queue, Frames};
use crate::buyer::rate_limit::TokenBucket;
use crate::buyer::stop::StopWatch;
use crate::clock::now_ms;
use crate::hub::buy::Started;
use crate::hub::Hub;
use crate::inventory::UserRef;
use crate::protocol::{Ack, BuyMsg, ClientMsg, RejectCode, ServerMsg, MAX_BUYER_FRAME};
use crate::rooms::live::UserSeat;
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
/// Bytes that a buyer connection's future may take, at most: the whole of it stays allocated
/// in the socket's task for as long as the socket is open, idle or not (the unit test
/// `the_connections_future_stays_within_its_budget` holds it to this).
pub const FUTURE_BUDGET: usize = 896;

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

/// Serves one buyer until it leaves or the hub shuts down, then gives back its `seat` (its
/// place among the user's sockets).
///
/// The connection is made here and only its [`Connection::run`] is awaited: an `async fn`
/// would keep its by-value arguments, the socket among them, in its future beside the
/// connection that took them over, and that future is the socket's task, allocated for as long
/// as the socket is open.
pub fn serve(
    hub: Hub,
    room: Arc<Room>,
    user: Arc<str>,
    socket: WebSocket,
    limits: BuyerLimits,
    seat: UserSeat,
) -> impl Future<Output = ()> + Send {
    let (sink, frames) = socket.split();
    Connection::new(hub, room, user, sink, frames, limits)
        .run()
        .map(move |()| drop(seat))
}

/// One buyer's connection: what it has read, what waits to be written, and its limits.
///
/// `Si` is the socket's write half and `St` its read half (a `Stream` of frames or errors).
/// Each event has its method, which returns `Break` when the connection is to end (the reason,
/// if a close frame is to say one, is kept for [`Connection::run`]'s drain).
pub struct Connection<Si, St> {
    hub: Hub,
    room: Arc<Room>,
    user: Arc<str>,
    /// Interned once per connection: the gate keys its ledgers by this.
    who: UserRef,
    limits: BuyerLimits,
    frames: St,
    out: Outbound<Si>,
    /// Whether `out` still takes frames; the connection ends when it does not.
    flow: Flow,
    answers: Answers,
    bucket: TokenBucket,
    strikes: TokenBucket,
    stop: StopWatch,
    /// The connection's one timer: due at the next heartbeat, or sooner at the write timeout
    /// of a queue that stays more than half full (see [`Connection::arm_timer`]).
    timer: Pin<Box<Sleep>>,
    /// When the next heartbeat is due.
    next_ping: Instant,
    /// When the client last sent a frame (pongs count).
    last_heard: Instant,
    /// Since when the outbound queue has been more than half full, if it is.
    backlogged_since: Option<Instant>,
    /// The close frame to send when the connection ends, if any.
    close: Option<(u16, &'static str)>,
}

impl<Si, St, E> Connection<Si, St>
where
    Si: Sink<Message> + Unpin,
    St: Stream<Item = Result<Message, E>> + Unpin,
    E: Display,
{
    /// A connection for `user` in `room` over `sink` and `frames`; nothing happens until
    /// [`Connection::run`].
    pub fn new(
        hub: Hub,
        room: Arc<Room>,
        user: Arc<str>,
        sink: Si,
        frames: St,
        limits: BuyerLimits,
    ) -> Self {
        let who = room.users.intern(&user);
        let next_ping = Instant::now() + ping_every(&limits);
        Connection {
            stop: hub.stop_watch(),
            hub,
            room,
            user,
            who,
            frames,
            out: Outbound::new(sink, limits.outbound_queue),
            flow: Flow::Open,
            answers: Answers::new(),
            bucket: TokenBucket::new(limits.frames_per_s, limits.burst),
            strikes: TokenBucket::new(limits.frames_per_s, limits.abuse_strikes),
            timer: Box::pin(tokio::time::sleep_until(next_ping)),
            next_ping,
            last_heard: Instant::now(),
            backlogged_since: None,
            close: None,
            limits,
        }
    }

    /// Serves the buyer: `hello` first, then every event until the connection ends. Then the
    /// buys in flight are answered (they may already be durable) and the socket is closed; a
    /// buyer that does not read is dropped at once instead, its buys still finish, and nobody
    /// hears the answers.
    //
    // Not an `async fn`: one of those keeps its by-value arguments twice in its future (as
    // given and as moved into its body), and this one is a whole connection.
    #[allow(clippy::manual_async_fn)]
    pub fn run(mut self) -> impl Future<Output = ()> {
        async move {
            self.room.live.viewer_joined(&self.user);
            self.room.audience.socket(&self.user, true);
            metrics::gauge!("livehub_connections", "kind" => "buyer").increment(1.0);
            // The socket's registrations for pushes end with the loop: the close below
            // sends nothing more, and what it awaits takes the loop's room in the task.
            {
                let room = self.room.clone();
                // Before the hello's state is taken: the buyer misses no change after it.
                let mut pushes = room.feeds.buyer_pushes.subscribe();
                let order_pushes = room.feeds.order_pushes.listen(&self.user);
                self.hello();
                while self.flow == Flow::Open {
                    let room_to_write = self.out.has_room();
                    self.arm_timer(room_to_write);
                    let waiting = !self.answers.is_empty();
                    // A buyer whose answers pile up unread is not read either (backpressure).
                    let read = room_to_write && self.answers.len() < self.limits.max_in_flight;
                    // Biased, in this order: shutdown, writes, acks of decided buys, pushes, then
                    // new frames, so a burst of pushes (a sale opening for thousands) never holds
                    // back answers. Pushes are taken only while the queue has room: a buyer that
                    // reads slowly lags on the broadcast instead, and then gets the latest state.
                    let step = tokio::select! {
                        biased;
                        _ = self.stop.stopped() => self.on_stop(),
                        written = self.out.write(), if self.out.is_due() => {
                            self.on_written(written)
                        }
                        _ = back_of_queue(), if self.out.must_wait() => self.on_turn(),
                        ready = self.answers.next(), if waiting => self.on_answers(ready),
                        push = pushes.rx.recv(), if room_to_write => self.on_push(push),
                        f = order_pushes.recv(), if room_to_write => self.on_order_push(f),
                        _ = &mut self.timer => self.on_timer(),
                        frame = self.frames.next(), if read => self.on_frames(frame),
                    };
                    if step.is_break() {
                        break;
                    }
                }
            }
            if self.flow == Flow::Overflow {
                let (room, user) = (&self.room.id, &self.user);
                tracing::info!(%room, %user, "buyer dropped: it does not read its socket");
                metrics::counter!("livehub_slow_consumers_dropped_total", "kind" => "buyer")
                    .increment(1);
                drop(self.out);
                while !self.answers.next().await.is_empty() {}
            } else {
                self.answer_in_flight().await;
                // Boxed: made once, at the close, rather than kept in every open socket's
                // task (it holds a timer and the queue).
                Box::pin(self.out.finish(self.close)).await;
            }
            self.room.audience.socket(&self.user, false);
            self.room.live.viewer_left();
            metrics::gauge!("livehub_connections", "kind" => "buyer").decrement(1.0);
        }
    }

    /// Queues `hello`: the room and its SKUs' state now.
    fn hello(&mut self) {
        let hello = ServerMsg::Hello {
            room: self.room.id.clone(),
            user: self.user.clone(),
            server_time_ms: now_ms(),
            skus: self.room.skus.states(now_ms()),
        };
        self.flow = self.out.push_msg(&hello);
        self.out.release_when_flushed();
    }

    /// Sets the timer for the next heartbeat, or for when a queue that stays more than half
    /// full makes the buyer a slow consumer if that is sooner. One timer rather than a second
    /// one in every wait: the wait is part of the connection's task, which every open socket
    /// keeps allocated.
    #[inline]
    fn arm_timer(&mut self, room_to_write: bool) {
        self.backlogged_since = match (room_to_write, self.backlogged_since) {
            (true, _) => None,
            (false, None) => Some(Instant::now()),
            (false, since) => since,
        };
        let due = match self.backlogged_since {
            Some(t) => self.next_ping.min(t + self.limits.write_timeout),
            None => self.next_ping,
        };
        if self.timer.deadline() != due {
            self.timer.as_mut().reset(due);
        }
    }

    /// The timer went off: a heartbeat if one is due, else the write timeout (it is armed for
    /// nothing else).
    fn on_timer(&mut self) -> ControlFlow<()> {
        let now = Instant::now();
        if now >= self.next_ping {
            self.next_ping = now + ping_every(&self.limits);
            self.on_tick()
        } else {
            self.on_stall()
        }
    }

    /// The hub shuts down.
    fn on_stop(&mut self) -> ControlFlow<()> {
        self.close_with(CLOSE_GOING_AWAY, "server shutting down")
    }

    /// Frames queued before this task's last turn at the back of the run queue left, with one
    /// flush (or the socket failed).
    #[inline]
    fn on_written(&mut self, flow: Flow) -> ControlFlow<()> {
        self.flow = flow;
        Continue(())
    }

    /// What is queued waited its turn at the back of the run queue: it is written next.
    #[inline]
    fn on_turn(&mut self) -> ControlFlow<()> {
        self.out.waited = true;
        Continue(())
    }

    /// Buys (and `status`es) were answered: every ack that is ready is queued at once and
    /// leaves with one flush.
    #[inline]
    fn on_answers(&mut self, ready: Vec<Answer>) -> ControlFlow<()> {
        let buys = ready.iter().filter(|r| r.2).map(|r| r.1);
        record_ack_latencies(&self.room, Instant::now().into_std(), buys);
        self.flow = self.out.push_acks(ready, self.flow);
        Continue(())
    }

    /// A push from the room: its frames are queued; a buyer that missed pushes gets the
    /// current state of every SKU instead.
    fn on_push(&mut self, push: Result<Frames, RecvError>) -> ControlFlow<()> {
        match push {
            Ok(frames) => {
                for f in frames.iter() {
                    if self.flow == Flow::Open {
                        self.flow = self.out.push(Message::Text(f.clone()));
                    }
                }
            }
            Err(RecvError::Lagged(_)) => self.flow = resend_state(&mut self.out, &self.room),
            Err(RecvError::Closed) => {}
        }
        Continue(())
    }

    /// One of the buyer's orders changed status.
    fn on_order_push(&mut self, frame: Utf8Bytes) -> ControlFlow<()> {
        self.flow = self.out.push(Message::Text(frame));
        Continue(())
    }

    /// The heartbeat: closes a socket that sent nothing for the idle timeout, pings the others.
    fn on_tick(&mut self) -> ControlFlow<()> {
        if self.last_heard.elapsed() >= self.limits.idle_timeout {
            metrics::counter!("livehub_idle_closed_total", "kind" => "buyer").increment(1);
            return self.close_with(CLOSE_IDLE, "idle timeout");
        }
        self.flow = self.out.push(Message::Ping(Default::default()));
        self.out.release_when_flushed();
        Continue(())
    }

    /// The queue stayed more than half full for the write timeout: the buyer does not read.
    fn on_stall(&mut self) -> ControlFlow<()> {
        self.flow = Flow::Overflow;
        Break(())
    }

    /// A frame was read (`None`: the client went away). Every frame that is already read
    /// follows in this one wake-up (a client that pipelines sends many in one TCP segment), up
    /// to [`FRAMES_PER_WAKEUP`] and while there is room for their answers: the select in
    /// [`Connection::run`] runs once per batch, not once per frame.
    fn on_frames(&mut self, first: Option<Result<Message, E>>) -> ControlFlow<()> {
        let mut next = Some(first);
        let mut budget = FRAMES_PER_WAKEUP;
        while let Some(frame) = next.take() {
            let Some(frame) = frame else {
                return Break(());
            };
            self.on_frame(frame)?;
            budget -= 1;
            if self.flow == Flow::Open
                && budget > 0
                && self.answers.len() < self.limits.max_in_flight
                && self.out.has_room()
            {
                // `None`: nothing more is read yet (the select polls again, with its waker).
                next = self.frames.next().now_or_never();
            }
        }
        Continue(())
    }

    /// One frame from the client.
    #[inline]
    fn on_frame(&mut self, frame: Result<Message, E>) -> ControlFlow<()> {
        let now = Instant::now();
        self.last_heard = now;
        let text = match frame {
            Ok(Message::Text(t)) => t,
            Ok(Message::Ping(_) | Message::Pong(_)) => return Continue(()),
            Ok(Message::Close(_)) => return Break(()),
            Ok(Message::Binary(b)) => {
                if b.len() > MAX_BUYER_FRAME {
                    return self.close_with(CLOSE_TOO_BIG, "frame over 4 KiB");
                }
                // A binary frame is answered with an error, and counts against the rate limit
                // and the abuse strikes like any frame.
                self.charge(now.into_std())?;
                let error = frame_error("binary frames are not accepted; send JSON text", None);
                self.flow = self.out.push_msg(&error);
                return Continue(());
            }
            Err(e) => {
                // The library refused the frame: over its size limit, or broken.
                tracing::debug!(user = %self.user, error = %e, "buyer socket error");
                return self.close_with(CLOSE_TOO_BIG, "frame too large or malformed");
            }
        };
        if text.len() > MAX_BUYER_FRAME {
            return self.close_with(CLOSE_TOO_BIG, "frame over 4 KiB");
        }
        self.on_text(&text, now.into_std())
    }

    /// Takes a frame that arrived at `at` from the rate limit: whether it is over the limit,
    /// or `Break` (closing with 1008) when the client has used up its abuse strikes too.
    #[inline]
    fn charge(&mut self, at: std::time::Instant) -> ControlFlow<(), bool> {
        let limited = !self.bucket.try_take(at);
        if limited && !self.strikes.try_take(at) {
            let (room, user) = (&self.room.id, &self.user);
            tracing::info!(%room, %user, "buyer closed: kept sending over its rate limit");
            metrics::counter!("livehub_abusive_closed_total", "kind" => "buyer").increment(1);
            self.close_with(CLOSE_POLICY, "rate limit exceeded, repeatedly")?;
        }
        Continue(limited)
    }

    /// A text frame that arrived at `started`: rate-limited, parsed and answered or started.
    #[inline]
    fn on_text(&mut self, text: &str, started: std::time::Instant) -> ControlFlow<()> {
        let limited = self.charge(started)?;
        self.flow = match ClientMsg::parse(text) {
            Err(e) => {
                self.room.live.count_rejection(RejectCode::BadRequest);
                self.out.push_msg(&frame_error(&e.detail, e.req))
            }
            Ok(ClientMsg::Ping {}) => {
                let pong = ServerMsg::Pong {
                    server_time_ms: now_ms(),
                };
                self.out.push_msg(&pong)
            }
            Ok(ClientMsg::Buy(b)) if limited => {
                let ack = self
                    .hub
                    .rejected_buy(&self.room, &b, RejectCode::RateLimited);
                self.out.push_msg(&ServerMsg::Ack(ack))
            }
            Ok(ClientMsg::Status { req } | ClientMsg::Cancel { req, .. }) if limited => {
                let ack = Ack::rejected(&req, RejectCode::RateLimited, None, None);
                self.out.push_msg(&ServerMsg::Ack(ack))
            }
            Ok(ClientMsg::Cancel { req, order }) => {
                let (hub, room, user) = (self.hub.clone(), self.room.clone(), self.user.clone());
                self.answers.push_other(async move {
                    (
                        hub.cancel_ack(&room, &user, &req, &order).await,
                        started,
                        false,
                    )
                });
                Flow::Open
            }
            Ok(ClientMsg::Buy(b)) => self.on_buy(b, started),
            Ok(ClientMsg::Status { req }) => {
                let (hub, room, user) = (self.hub.clone(), self.room.clone(), self.user.clone());
                self.answers.push_other(async move {
                    (hub.status(&room, &user, &req).await, started, false)
                });
                Flow::Open
            }
        };
        Continue(())
    }

    /// A buy: answered now, or on its way to the journal (answered in [`Self::on_answers`]).
    #[inline]
    fn on_buy(&mut self, b: BuyMsg, started: std::time::Instant) -> Flow {
        match self.hub.start_buy(&self.room, &self.who, &b) {
            Some(Started::Answered(ack)) => {
                record_ack_latencies(&self.room, Instant::now().into_std(), [started]);
                self.out.push_msg(&ServerMsg::Ack(ack))
            }
            Some(Started::Journaling(j)) => {
                self.answers.push_journaling(j, started);
                Flow::Open
            }
            None => {
                let (hub, room, who) = (self.hub.clone(), self.room.clone(), self.who.clone());
                self.answers
                    .push_other(async move { (hub.buy(&room, &who, &b).await, started, true) });
                Flow::Open
            }
        }
    }

    /// Ends the connection, with a close frame that says `code` and `reason`.
    #[inline]
    fn close_with(&mut self, code: u16, reason: &'static str) -> ControlFlow<()> {
        self.close = Some((code, reason));
        Break(())
    }

    /// After the last event: queues the answers to the buys in flight as they come, and
    /// writes them while the socket takes them.
    async fn answer_in_flight(&mut self) {
        while !self.answers.is_empty() {
            let can_write = self.out.has_work() && self.flow == Flow::Open;
            tokio::select! {
                biased;
                written = self.out.write(), if can_write => self.flow = written,
                ready = self.answers.next() => self.flow = self.out.push_acks(ready, self.flow),
            }
        }
    }
}

/// Records buy-to-ack times (buys that arrived at `started`, answered `now`) in the room's
/// histogram, under one lock, and in the metrics.
fn record_ack_latencies(
    room: &Room,
    now: std::time::Instant,
    started: impl IntoIterator<Item = std::time::Instant>,
) {
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

/// How often a connection pings: a third of the idle timeout.
fn ping_every(limits: &BuyerLimits) -> Duration {
    (limits.idle_timeout / 3).max(Duration::from_millis(10))
}

/// After missing pushes, a buyer gets every SKU's current sale and stock state.
fn resend_state<Si: Sink<Message> + Unpin>(out: &mut Outbound<Si>, room: &Room) -> Flow {
    let now = now_ms();
    for s in room.skus.list() {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::buyer::testing::{self, limits, Client, Sent, Setup, Stuck, WAIT};
    use tokio::task::JoinHandle;

    /// The size of what `f` returns, without calling it.
    fn returned_size<F, A, R>(_: &F) -> usize
    where
        F: FnOnce(A) -> R,
    {
        std::mem::size_of::<R>()
    }

    /// The size of what `serve` returns, without calling it.
    fn served_size<F, A, B, C, D, E, G, R>(_: &F) -> usize
    where
        F: FnOnce(A, B, C, D, E, G) -> R,
    {
        std::mem::size_of::<R>()
    }

    /// The future of a real buyer socket (axum's WebSocket, split) is what every open socket
    /// keeps allocated: it holds the connection once, and neither the socket a second time
    /// nor the close's timer.
    #[test]
    fn the_connections_future_stays_within_its_budget() {
        use axum::extract::ws::WebSocket;
        use futures_util::stream::{SplitSink, SplitStream};
        type Real = Connection<SplitSink<WebSocket, Message>, SplitStream<WebSocket>>;
        let run = returned_size(&Real::run);
        let served = served_size(&serve);
        let (connection, socket) = (
            std::mem::size_of::<Real>(),
            std::mem::size_of::<WebSocket>(),
        );
        assert!(run >= connection, "{run} B for a {connection} B connection");
        assert!(
            served <= FUTURE_BUDGET,
            "a buyer socket's future takes {served} B (the connection {connection} B, the run \
             {run} B, a WebSocket {socket} B); the budget is {FUTURE_BUDGET} B"
        );
    }

    /// Starts a connection for user `u1` on a client's socket.
    fn start(s: &Setup, limits: BuyerLimits) -> (Client, JoinHandle<()>) {
        let (client, wire, frames) = testing::socket();
        let user = "u1".into();
        let conn = Connection::new(s.hub.clone(), s.room.clone(), user, wire, frames, limits);
        (client, tokio::spawn(conn.run()))
    }

    /// [`start`], and reads the `hello`.
    async fn connect(s: &Setup, limits: BuyerLimits) -> (Client, JoinHandle<()>) {
        let (mut client, task) = start(s, limits);
        assert_eq!(client.next_text().await["op"], "hello");
        (client, task)
    }

    /// Waits for the connection's task to end.
    async fn ended(task: JoinHandle<()>) {
        tokio::time::timeout(WAIT, task)
            .await
            .expect("the connection ends")
            .expect("the connection's task");
    }

    /// The room's buyers now.
    fn viewers(s: &Setup) -> u64 {
        s.room
            .live
            .viewers
            .load(std::sync::atomic::Ordering::Relaxed)
    }

    fn buy(req: &str) -> String {
        format!(r#"{{"op":"buy","req":"{req}","sku":"s","qty":1}}"#)
    }

    #[tokio::test(start_paused = true)]
    async fn hello_comes_first_and_a_ping_gets_a_pong() {
        let s = Setup::new(10).await;
        let (mut client, task) = start(&s, limits());
        let hello = client.next_text().await;
        assert_eq!(hello["op"], "hello");
        assert_eq!(hello["room"], "r");
        assert_eq!(hello["user"], "u1");
        assert_eq!(hello["skus"][0]["sku"], "s");
        assert_eq!(hello["skus"][0]["left"], 10);
        assert_eq!(viewers(&s), 1);
        client.send(r#"{"op":"ping"}"#);
        let pong = client.reply().await;
        assert_eq!(pong["op"], "pong");
        assert!(pong["server_time_ms"].as_i64().unwrap() > 0);
        // The client hangs up: the connection ends without a close frame and leaves the room.
        client.hang_up();
        loop {
            match client.next_sent().await {
                Some(Sent::Frame(Message::Close(c))) => panic!("a close frame: {c:?}"),
                Some(Sent::Close) => break,
                _ => {}
            }
        }
        ended(task).await;
        assert_eq!(viewers(&s), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn a_bad_frame_gets_an_error_and_the_connection_stays_usable() {
        let s = Setup::new(10).await;
        let (mut client, _task) = connect(&s, limits()).await;
        client.send("not json");
        let e = client.reply().await;
        assert_eq!(
            (e["op"].as_str(), e["error"].as_str()),
            (Some("error"), Some("bad_request"))
        );
        client.send(r#"{"op":"buy","req":"q1","sku":"s","qty":0}"#);
        let e = client.reply().await;
        assert_eq!(
            (e["op"].as_str(), e["req"].as_str()),
            (Some("error"), Some("q1"))
        );
        client.send_msg(Message::Binary(vec![1, 2, 3].into()));
        let e = client.reply().await;
        assert_eq!(e["op"], "error");
        assert!(e["detail"].as_str().unwrap().contains("binary"), "{e}");
        // WebSocket pings and pongs are not answered by the connection (the library does).
        client.send_msg(Message::Ping(Default::default()));
        client.send(r#"{"op":"ping"}"#);
        assert_eq!(client.reply().await["op"], "pong");
        let bad = RejectCode::BadRequest.index();
        let counted = s.room.live.rejected[bad].load(std::sync::atomic::Ordering::Relaxed);
        assert_eq!(
            counted, 2,
            "the two text frames that do not parse are counted"
        );
        assert_eq!(s.room.skus.get("s").unwrap().left(), 10);
    }

    #[tokio::test(start_paused = true)]
    async fn a_frame_over_4_kib_or_refused_by_the_library_closes_with_1009() {
        let s = Setup::new(10).await;
        let big = format!(r#"{{"op":"ping","pad":"{}"}}"#, "x".repeat(MAX_BUYER_FRAME));
        let (mut client, task) = connect(&s, limits()).await;
        client.send(r#"{"op":"ping"}"#);
        assert_eq!(client.reply().await["op"], "pong");
        client.send(&big);
        assert_eq!(client.close_code().await, CLOSE_TOO_BIG);
        ended(task).await;

        let (mut client, task) = connect(&s, limits()).await;
        client.send_msg(Message::Binary(vec![0; MAX_BUYER_FRAME + 1].into()));
        assert_eq!(client.close_code().await, CLOSE_TOO_BIG);
        ended(task).await;

        let (mut client, task) = connect(&s, limits()).await;
        client.to_server.send(Err("frame too big")).unwrap();
        assert_eq!(client.close_code().await, CLOSE_TOO_BIG);
        ended(task).await;

        // Exactly 4 KiB is allowed.
        let (mut client, _task) = connect(&s, limits()).await;
        let pad = MAX_BUYER_FRAME - r#"{"op":"ping","pad":""}"#.len();
        client.send(&format!(r#"{{"op":"ping","pad":"{}"}}"#, "x".repeat(pad)));
        assert_eq!(client.reply().await["op"], "pong");
    }

    /// A client that sends nothing is pinged every third of the idle timeout and closed with
    /// 1000 once it has been silent for the whole of it; one that keeps sending stays.
    #[tokio::test(start_paused = true)]
    async fn idle_clients_close_with_1000_after_the_idle_time() {
        let s = Setup::new(10).await;
        let idle = Duration::from_secs(30);
        let limits = BuyerLimits {
            idle_timeout: idle,
            ..limits()
        };
        let t0 = Instant::now();
        let (mut client, task) = connect(&s, limits).await;
        let mut pings = 0;
        let close = async {
            loop {
                match client.next_sent().await {
                    Some(Sent::Frame(Message::Ping(_))) => pings += 1,
                    Some(Sent::Frame(Message::Close(Some(c)))) => break c.code,
                    Some(Sent::Close) | None => panic!("closed without a close frame"),
                    Some(_) => {}
                }
            }
        };
        let code = tokio::time::timeout(idle * 2, close)
            .await
            .expect("closed within twice the idle time");
        let closed_after = t0.elapsed();
        assert_eq!(code, CLOSE_IDLE);
        assert!(closed_after >= idle, "closed after {closed_after:?}");
        assert!(
            closed_after < idle + idle / 3,
            "closed after {closed_after:?}"
        );
        assert_eq!(pings, 2, "a ping every {:?} before the close", idle / 3);
        ended(task).await;

        // A client that sends a pong every 5 s stays past many idle times, and is closed one
        // idle time after its last.
        let (mut client, _task) = connect(&s, limits).await;
        for _ in 0..(idle * 4).as_secs() / 5 {
            tokio::time::advance(Duration::from_secs(5)).await;
            client.send_msg(Message::Pong(Default::default()));
        }
        let last = Instant::now();
        while let Ok(sent) = client.from_server.try_recv() {
            assert!(
                !matches!(sent, Sent::Frame(Message::Close(_)) | Sent::Close),
                "{sent:?}"
            );
        }
        assert_eq!(client.close_code_within(idle * 2).await, CLOSE_IDLE);
        let closed_after = last.elapsed();
        assert!(
            closed_after >= idle,
            "closed {closed_after:?} after the last pong"
        );
        assert!(
            closed_after < idle + idle / 3,
            "closed {closed_after:?} after the last pong"
        );
    }

    /// A client that does not read: once its queue is more than half full, it is not read
    /// either, and it is dropped (no close frame can reach it) after the write timeout.
    #[tokio::test(start_paused = true)]
    async fn a_client_that_never_reads_is_dropped_after_the_write_timeout() {
        let s = Setup::new(10).await;
        let write_timeout = Duration::from_secs(5);
        let limits = BuyerLimits {
            outbound_queue: 4,
            write_timeout,
            ..limits()
        };
        let (to_server, frames) = testing::frames();
        let conn = Connection::new(
            s.hub.clone(),
            s.room.clone(),
            "u1".into(),
            Stuck,
            frames,
            limits,
        );
        let t0 = Instant::now();
        let mut task = tokio::spawn(conn.run());
        // The hello and two pongs fill the queue past half (3 of 4): the third ping is not read.
        for _ in 0..3 {
            to_server
                .send(Ok(Message::Text(r#"{"op":"ping"}"#.into())))
                .unwrap();
        }
        let early = tokio::time::timeout(write_timeout - Duration::from_millis(1), &mut task);
        assert!(early.await.is_err(), "dropped before the write timeout");
        tokio::time::timeout(Duration::from_secs(1), task)
            .await
            .expect("dropped at the write timeout")
            .unwrap();
        assert!(t0.elapsed() >= write_timeout);
        assert!(to_server.is_closed(), "the socket is let go");
        assert_eq!(viewers(&s), 0);
    }

    /// Over its rate, a client's buys are answered `rate_limited` while it has strikes left,
    /// then it is closed with 1008.
    #[tokio::test(start_paused = true)]
    async fn over_its_rate_a_client_is_answered_rate_limited_then_closed_with_1008() {
        let s = Setup::new(10).await;
        let limits = BuyerLimits {
            frames_per_s: 1.0,
            burst: 1.0,
            abuse_strikes: 2.0,
            ..limits()
        };
        let (mut client, task) = connect(&s, limits).await;
        client.send(r#"{"op":"ping"}"#);
        assert_eq!(client.reply().await["op"], "pong");
        for req in ["q1", "q2", "q3"] {
            client.send(&buy(req));
        }
        for req in ["q1", "q2"] {
            let ack = client.reply().await;
            assert_eq!(ack["op"], "ack");
            assert_eq!(ack["req"], req);
            assert_eq!(ack["ok"], false);
            assert_eq!(ack["error"], "rate_limited");
            assert_eq!(ack["left"], 10);
        }
        assert_eq!(client.close_code().await, CLOSE_POLICY);
        ended(task).await;
        assert_eq!(s.room.skus.get("s").unwrap().left(), 10, "nothing was sold");

        // Under its rate (a frame a second, paused time), nobody is limited.
        let (mut client, _task) = connect(&s, limits).await;
        for _ in 0..5 {
            tokio::time::sleep(Duration::from_secs(1)).await;
            client.send(r#"{"op":"status","req":"q1"}"#);
            let ack = client.reply().await;
            assert_eq!(ack["error"], "unknown_request", "{ack}");
        }
    }

    /// Binary frames count against the rate limit and the abuse strikes like text: a client
    /// that sends only binary frames over its rate is closed with 1008.
    #[tokio::test(start_paused = true)]
    async fn binary_frames_over_the_rate_close_the_socket_too() {
        let s = Setup::new(10).await;
        let limits = BuyerLimits {
            frames_per_s: 1.0,
            burst: 1.0,
            abuse_strikes: 2.0,
            ..limits()
        };
        let (mut client, task) = connect(&s, limits).await;
        for _ in 0..4 {
            client.send_msg(Message::Binary(vec![1, 2, 3].into()));
        }
        for _ in 0..3 {
            assert_eq!(client.reply().await["op"], "error");
        }
        assert_eq!(client.close_code().await, CLOSE_POLICY);
        ended(task).await;
    }

    #[tokio::test(start_paused = true)]
    async fn the_hub_shutting_down_closes_with_1001() {
        let s = Setup::new(10).await;
        let (mut client, task) = connect(&s, limits()).await;
        s.hub.shutdown_token().cancel();
        assert_eq!(client.close_code().await, CLOSE_GOING_AWAY);
        ended(task).await;
    }

    /// A buy is acked once durable. A client that hangs up with a buy in flight still gets
    /// its ack before the socket closes.
    #[tokio::test]
    async fn buys_are_acked_and_in_flight_ones_are_answered_before_the_close() {
        let s = Setup::new(10).await;
        let (mut client, task) = connect(&s, limits()).await;
        client.send(&buy("q1"));
        let ack = client.reply().await;
        assert_eq!(
            (ack["op"].as_str(), ack["req"].as_str()),
            (Some("ack"), Some("q1"))
        );
        assert_eq!(ack["ok"], true, "{ack}");
        assert_eq!(ack["left"], 9);
        // The same req again: the same order.
        client.send(&buy("q1"));
        let again = client.reply().await;
        assert_eq!(again["order"], ack["order"]);

        client.send(&buy("q2"));
        client.hang_up();
        let mut acked = false;
        loop {
            match client.next_sent().await {
                Some(Sent::Frame(Message::Text(t))) => {
                    let v: serde_json::Value = serde_json::from_str(&t).unwrap();
                    if v["op"] == "ack" {
                        assert_eq!(
                            (v["req"].as_str(), v["ok"].as_bool()),
                            (Some("q2"), Some(true))
                        );
                        acked = true;
                    }
                }
                Some(Sent::Close) => break,
                Some(Sent::Frame(Message::Close(c))) => panic!("a close frame: {c:?}"),
                Some(_) => {}
                None => panic!("the sink was dropped, not closed"),
            }
        }
        assert!(acked, "the buy in flight was answered before the close");
        ended(task).await;
        assert_eq!(s.room.skus.get("s").unwrap().left(), 8);
    }

    /// The room's pushes reach the buyer in order; a buyer that falls behind them gets the
    /// current state of every SKU instead of what it missed.
    #[tokio::test(start_paused = true)]
    async fn pushes_arrive_in_order_and_a_lagging_buyer_gets_the_state() {
        let s = Setup::new(10).await;
        let (mut client, _task) = connect(&s, limits()).await;
        let push = |n: usize| -> Frames {
            Arc::from([axum::extract::ws::Utf8Bytes::from(format!(
                r#"{{"op":"test","n":{n}}}"#
            ))])
        };
        s.room.feeds.buyer_pushes.send(push(0)).await;
        assert_eq!(client.next_text().await["n"], 0);
        // More pushes than a slot holds, while the connection's task does not run.
        let sent = crate::buyer::pushes::BUFFER + 4;
        for n in 1..=sent {
            s.room.feeds.buyer_pushes.send(push(n)).await;
        }
        let sale = client.next_text().await;
        assert_eq!(
            (sale["op"].as_str(), sale["sku"].as_str()),
            (Some("sale"), Some("s"))
        );
        let stock = client.next_text().await;
        assert_eq!(
            (stock["op"].as_str(), stock["left"].as_u64()),
            (Some("stock"), Some(10))
        );
        let first_kept = sent - crate::buyer::pushes::BUFFER + 1;
        for n in first_kept..=sent {
            assert_eq!(client.next_text().await["n"], n);
        }
    }
}

//! Test helpers for the buyer modules: a hub with a room, and a buyer's socket as two channels
//! (a [`Wire`] sink the test reads with a [`Client`], and a stream of frames the client sends).

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::extract::ws::Message;
use futures_util::{Sink, Stream};
use serde_json::Value;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::buyer::BuyerLimits;
use crate::hub::{Hub, HubOptions};
use crate::inventory::SkuDef;
use crate::journal::JournalOptions;
use crate::rooms::room::Room;

/// How long a test waits for anything before it fails (on paused time, an instant).
pub(crate) const WAIT: Duration = Duration::from_secs(20);

/// A hub in a temporary data dir with room `r` and SKU `s` (on sale, `stock` left).
pub(crate) struct Setup {
    pub hub: Hub,
    pub room: Arc<Room>,
    _dir: tempfile::TempDir,
}

impl Setup {
    pub async fn new(stock: u64) -> Setup {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut journal = JournalOptions::new(dir.path());
        journal.fsync = false;
        let (hub, _) =
            Hub::open(HubOptions::new(journal), CancellationToken::new()).expect("hub opens");
        hub.put_room("r", "room".to_owned()).await.expect("room");
        let sku = SkuDef {
            name: "sku".to_owned(),
            price_fen: 100,
            stock,
            limit_per_user: None,
            opens_at_ms: None,
            closes_at_ms: None,
            pay_timeout_s: None,
        };
        let room = hub.room("r").expect("room r");
        let mut probe = room.feeds.buyer_pushes.subscribe();
        hub.put_sku("r", "s", sku).await.expect("sku");
        // The room's sale feed tells its buyers of the new SKU, its sale and then its stock:
        // once both went out, no test's buyer gets them.
        let (mut sale, mut stock) = (false, false);
        while !(sale && stock) {
            let frames = tokio::time::timeout(WAIT, probe.rx.recv())
                .await
                .expect("the sale feed's pushes in time")
                .expect("a push");
            for f in frames.iter() {
                let push: Value = serde_json::from_str(f).expect("JSON");
                sale |= push["op"] == "sale";
                stock |= push["op"] == "stock";
            }
        }
        drop(probe);
        Setup {
            hub,
            room,
            _dir: dir,
        }
    }
}

/// Limits for tests: no rate limit, and timeouts far beyond what a test waits for unless it
/// sets them.
pub(crate) fn limits() -> BuyerLimits {
    BuyerLimits {
        frames_per_s: 1e6,
        burst: 1e6,
        idle_timeout: Duration::from_secs(600),
        ..BuyerLimits::default()
    }
}

/// What the connection did to its sink.
#[derive(Debug)]
pub(crate) enum Sent {
    Frame(Message),
    Flush,
    Close,
}

/// A sink that is always ready and tells the test everything done to it, or fails once the
/// test has dropped its end.
pub(crate) struct Wire(mpsc::UnboundedSender<Sent>);

impl Wire {
    pub fn new(tx: mpsc::UnboundedSender<Sent>) -> Self {
        Wire(tx)
    }

    fn send(&self, sent: Sent) -> Result<(), &'static str> {
        self.0.send(sent).map_err(|_| "the peer is gone")
    }
}

impl Sink<Message> for Wire {
    type Error = &'static str;

    fn poll_ready(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn start_send(self: Pin<&mut Self>, msg: Message) -> Result<(), Self::Error> {
        self.send(Sent::Frame(msg))
    }

    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(self.send(Sent::Flush))
    }

    fn poll_close(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(self.send(Sent::Close))
    }
}

/// A sink that never takes a frame: a client that does not read.
pub(crate) struct Stuck;

impl Sink<Message> for Stuck {
    type Error = &'static str;

    fn poll_ready(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Pending
    }

    fn start_send(self: Pin<&mut Self>, _: Message) -> Result<(), Self::Error> {
        unreachable!("never ready")
    }

    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Pending
    }

    fn poll_close(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Pending
    }
}

/// What a client sends: frames, or the errors the WebSocket library reports.
pub(crate) type Incoming = Result<Message, &'static str>;

/// The test's end of a buyer socket.
pub(crate) struct Client {
    pub to_server: mpsc::UnboundedSender<Incoming>,
    pub from_server: mpsc::UnboundedReceiver<Sent>,
}

/// A client, and the sink and stream for the connection's side of its socket.
pub(crate) fn socket() -> (
    Client,
    Wire,
    impl Stream<Item = Incoming> + Unpin + Send + 'static,
) {
    let (to_server, mut incoming) = mpsc::unbounded_channel();
    let (wire, from_server) = mpsc::unbounded_channel();
    let frames = futures_util::stream::poll_fn(move |cx| incoming.poll_recv(cx));
    let client = Client {
        to_server,
        from_server,
    };
    (client, Wire(wire), frames)
}

/// A client's stream of frames alone, for a connection whose sink is something else.
pub(crate) fn frames() -> (
    mpsc::UnboundedSender<Incoming>,
    impl Stream<Item = Incoming> + Unpin + Send + 'static,
) {
    let (tx, mut rx) = mpsc::unbounded_channel();
    (
        tx,
        futures_util::stream::poll_fn(move |cx| rx.poll_recv(cx)),
    )
}

impl Client {
    pub fn send(&self, text: &str) {
        self.send_msg(Message::Text(text.into()));
    }

    pub fn send_msg(&self, msg: Message) {
        self.to_server.send(Ok(msg)).expect("the connection reads");
    }

    /// Stops sending: the connection reads the end of its stream.
    pub fn hang_up(&mut self) {
        self.to_server = mpsc::unbounded_channel().0;
    }

    /// The next thing done to the sink; `None` once the connection dropped it.
    pub async fn next_sent(&mut self) -> Option<Sent> {
        tokio::time::timeout(WAIT, self.from_server.recv())
            .await
            .expect("the connection did something in time")
    }

    /// The next text frame, parsed, whatever it is.
    pub async fn next_text(&mut self) -> Value {
        loop {
            match self.next_sent().await {
                Some(Sent::Frame(Message::Text(t))) => {
                    return serde_json::from_str(&t).expect("JSON");
                }
                Some(Sent::Frame(Message::Close(c))) => panic!("closed: {c:?}"),
                Some(Sent::Frame(Message::Ping(_)) | Sent::Flush) => {}
                other => panic!("expected a text frame, got {other:?}"),
            }
        }
    }

    /// The next text frame that answers the client (pushes and pings are skipped).
    pub async fn reply(&mut self) -> Value {
        loop {
            let v = self.next_text().await;
            if !matches!(v["op"].as_str(), Some("sale" | "stock")) {
                return v;
            }
        }
    }

    /// Reads up to the close frame and returns its code. Panics if the connection ends
    /// without one, or sends none within [`WAIT`].
    pub async fn close_code(&mut self) -> u16 {
        self.close_code_within(WAIT).await
    }

    /// [`Client::close_code`], waiting at most `limit` for it.
    pub async fn close_code_within(&mut self, limit: Duration) -> u16 {
        let close = async {
            loop {
                match self.next_sent().await {
                    Some(Sent::Frame(Message::Close(Some(c)))) => return c.code,
                    Some(Sent::Close) | None => panic!("closed without a close frame"),
                    Some(_) => {}
                }
            }
        };
        tokio::time::timeout(limit, close)
            .await
            .expect("a close frame in time")
    }
}

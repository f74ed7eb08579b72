//! A plain WebSocket server on the same stack as livehub's clients (tokio + tokio-tungstenite)
//! that speaks just enough of the buyer protocol for the same client code to run against it:
//! `hello` on connect, an ack-shaped frame of similar size for every buy, `pong` for `ping`.
//! No journal, no fsync, no inventory: the transport's ceiling on this machine.
//!
//! For the spike's ceiling it also stands in for the sale opening: a text frame
//! `{"op":"open","sku":"A1"}` (echo server only) makes it push livehub's
//! `{"op":"sale","sku":"A1","state":"open",...}` to every socket, with one `broadcast`.
//!
//! It answers the way the best server on this stack does, and as livehub's buyer sockets do
//! (src/buyer/connection.rs `on_frames`, src/buyer/outbound.rs): per socket, every frame that
//! is already read is answered in the same wake-up (up to [`FRAMES_PER_WAKEUP`]), each answer
//! is handed to the socket with `feed` into a write buffer of livehub's size, and one `flush`
//! sends them together. A client with several buys in flight gets their answers in one write
//! instead of one write each: this is the ceiling livehub is measured against.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use futures_util::{FutureExt, SinkExt, StreamExt};
use serde::Deserialize;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::broadcast;
use tokio_tungstenite::tungstenite::Message;

use crate::net::now_ms;

/// Most frames answered in one wake-up before the answers are flushed (livehub's own bound,
/// src/buyer/connection.rs).
pub const FRAMES_PER_WAKEUP: usize = 64;
/// Bytes of answers the socket gathers before a write, short of the flush (livehub's
/// `WRITE_COALESCE_BYTES`, src/api/sockets.rs).
const WRITE_COALESCE_BYTES: usize = 8 * 1024;

#[derive(Deserialize)]
struct In<'a> {
    #[serde(borrow)]
    op: std::borrow::Cow<'a, str>,
    #[serde(borrow, default)]
    req: Option<std::borrow::Cow<'a, str>>,
    #[serde(borrow, default)]
    sku: Option<std::borrow::Cow<'a, str>>,
    #[serde(default)]
    qty: Option<u64>,
}

/// What the sockets share.
struct Shared {
    orders: AtomicU64,
    /// Sale-open pushes to every socket.
    opens: broadcast::Sender<Arc<str>>,
}

impl Shared {
    fn new() -> Arc<Self> {
        Arc::new(Shared {
            orders: AtomicU64::new(0),
            opens: broadcast::channel(16).0,
        })
    }
}

/// The answer to one text frame; an `open` also pushes the sale to every socket.
fn answer(text: &str, shared: &Shared) -> String {
    let orders = &shared.orders;
    match serde_json::from_str::<In>(text) {
        Ok(m) if m.op == "open" => {
            let sku = m.sku.as_deref().unwrap_or("");
            let push = format!(
                r#"{{"op":"sale","sku":"{sku}","state":"open","opens_at_ms":{},"closes_at_ms":null}}"#,
                now_ms()
            );
            let _ = shared.opens.send(Arc::from(push));
            format!(r#"{{"op":"opened","sku":"{sku}"}}"#)
        }
        // The setup a peer's control socket sends (`peer::Control`): nothing to set up here.
        Ok(m) if m.op == "define" => {
            format!(
                r#"{{"op":"defined","sku":"{}"}}"#,
                m.sku.as_deref().unwrap_or("")
            )
        }
        Ok(m) if m.op == "buy" => {
            let n = orders.fetch_add(1, Ordering::Relaxed) + 1;
            let qty = m.qty.unwrap_or(1);
            format!(
                r#"{{"op":"ack","req":"{}","ok":true,"order":"E{n}","sku":"{}","qty":{qty},"amount_fen":{},"left":0}}"#,
                m.req.as_deref().unwrap_or(""),
                m.sku.as_deref().unwrap_or(""),
                9900 * qty
            )
        }
        Ok(m) if m.op == "ping" => format!(r#"{{"op":"pong","server_time_ms":{}}}"#, now_ms()),
        _ => r#"{"op":"error","error":"bad_request","detail":"echo server: not a buy"}"#.to_owned(),
    }
}

/// How the echo server treats its sockets.
#[derive(Debug, Clone, Copy)]
pub struct EchoOptions {
    /// TCP_NODELAY on accepted sockets.
    pub nodelay: bool,
    /// Push a `stock` frame to every socket this often (zero: never).
    pub push_every: Duration,
}

impl Default for EchoOptions {
    fn default() -> Self {
        EchoOptions {
            nodelay: true,
            push_every: Duration::ZERO,
        }
    }
}

async fn handle(stream: TcpStream, shared: Arc<Shared>, opts: EchoOptions) {
    let _ = stream.set_nodelay(opts.nodelay);
    // livehub's buffers (src/api/sockets.rs `configure`): answers gather in the write buffer
    // until the flush that ends their batch.
    let config = tokio_tungstenite::tungstenite::protocol::WebSocketConfig::default()
        .read_buffer_size(4 * 1024)
        .write_buffer_size(WRITE_COALESCE_BYTES)
        .max_write_buffer_size(1 << 20);
    let Ok(mut ws) = tokio_tungstenite::accept_async_with_config(stream, Some(config)).await else {
        return;
    };
    let hello = format!(
        r#"{{"op":"hello","room":"echo","user":"echo","server_time_ms":{},"skus":[]}}"#,
        now_ms()
    );
    if ws.send(Message::text(hello)).await.is_err() {
        return;
    }
    let pushing = !opts.push_every.is_zero();
    let mut pushes = tokio::time::interval(if pushing {
        opts.push_every
    } else {
        Duration::from_secs(3600)
    });
    let mut left: u64 = 1_000_000_000;
    let mut opens = shared.opens.subscribe();
    loop {
        tokio::select! {
            msg = ws.next() => {
                // This frame and every one already read after it, answered with one flush.
                let mut next = Some(msg);
                let mut budget = FRAMES_PER_WAKEUP;
                let mut open = true;
                while let Some(msg) = next.take() {
                    match msg {
                        Some(Ok(Message::Text(t))) => {
                            let reply = answer(&t, &shared);
                            if ws.feed(Message::text(reply)).await.is_err() {
                                open = false;
                                break;
                            }
                        }
                        Some(Ok(Message::Close(_))) | Some(Err(_)) | None => {
                            open = false;
                            break;
                        }
                        Some(Ok(_)) => {}
                    }
                    budget -= 1;
                    if budget > 0 {
                        // `None`: nothing more is read yet.
                        next = ws.next().now_or_never();
                    }
                }
                if ws.flush().await.is_err() || !open {
                    break;
                }
            },
            Ok(push) = opens.recv() => {
                if ws.send(Message::text(&*push)).await.is_err() {
                    break;
                }
            }
            _ = pushes.tick(), if pushing => {
                left = left.saturating_sub(1);
                let push = format!(r#"{{"op":"stock","sku":"S1","left":{left},"state":"open"}}"#);
                if ws.send(Message::text(push)).await.is_err() {
                    break;
                }
            }
        }
    }
}

/// Serves until the process ends.
pub async fn serve(listener: TcpListener, opts: EchoOptions) {
    let shared = Shared::new();
    loop {
        match listener.accept().await {
            Ok((s, _)) => {
                tokio::spawn(handle(s, shared.clone(), opts));
            }
            // Out of file descriptors and the like: back off a little.
            Err(_) => tokio::time::sleep(Duration::from_millis(10)).await,
        }
    }
}

/// The name of the in-process echo server's threads (their CPU time is its own).
pub const WORKER_NAME: &str = "echo-worker";

/// Starts an echo server on `127.0.0.1:0` on its own runtime (two worker threads, like a
/// separate server process would have), and returns its address.
pub fn spawn_in_process() -> anyhow::Result<SocketAddr> {
    let std_listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    std_listener.set_nonblocking(true)?;
    let addr = std_listener.local_addr()?;
    std::thread::Builder::new()
        .name(WORKER_NAME.into())
        .spawn(move || {
            let rt = crate::runtime(Some(2), Some(WORKER_NAME)).expect("echo runtime");
            rt.block_on(async move {
                let listener = TcpListener::from_std(std_listener).expect("echo listener");
                serve(listener, EchoOptions::default()).await
            });
        })?;
    Ok(addr)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_buys_with_acks() {
        let n = Shared::new();
        let a: serde_json::Value =
            serde_json::from_str(&answer(r#"{"op":"buy","req":"r1","sku":"A1","qty":2}"#, &n))
                .unwrap();
        assert_eq!(a["op"], "ack");
        assert_eq!(a["req"], "r1");
        assert_eq!(a["ok"], true);
        assert_eq!(a["order"], "E1");
        assert_eq!(a["amount_fen"], 19800);
        let p: serde_json::Value = serde_json::from_str(&answer(r#"{"op":"ping"}"#, &n)).unwrap();
        assert_eq!(p["op"], "pong");
    }
}

#[cfg(test)]
mod open_tests {
    use super::*;

    #[test]
    fn open_pushes_the_sale_to_every_socket() {
        let shared = Shared::new();
        let (mut a, mut b) = (shared.opens.subscribe(), shared.opens.subscribe());
        let reply: serde_json::Value =
            serde_json::from_str(&answer(r#"{"op":"open","sku":"A1"}"#, &shared)).unwrap();
        assert_eq!(reply["op"], "opened");
        for rx in [&mut a, &mut b] {
            let push: serde_json::Value = serde_json::from_str(&rx.try_recv().unwrap()).unwrap();
            assert_eq!(push["op"], "sale");
            assert_eq!(push["sku"], "A1");
            assert_eq!(push["state"], "open");
        }
    }
}

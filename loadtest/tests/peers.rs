//! The servers livehub is measured beside must be right before their figures mean anything:
//! the batched echo answers every buy of a socket, in order, and the Bun reference hub
//! (`loadtest/peers/bun`) never oversells, holds `limit_per_user`, and answers a repeated
//! `req` with the same order.
//!
//! The Bun case needs Bun: `npm ci --prefix loadtest/peers/bun` (scripts/test.sh does it), or
//! `LIVEHUB_BUN` naming the binary. Without it the case fails and says so.

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio::io::AsyncBufReadExt;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

type Ws = WebSocketStream<MaybeTlsStream<tokio::net::TcpStream>>;

/// Bound on every wait for a frame.
const FRAME_TIMEOUT: Duration = Duration::from_secs(10);

/// Starts `program args`, which says `{banner}ADDR ...` on stderr once it listens.
async fn start(
    program: &PathBuf,
    args: &[&str],
    banner: &str,
) -> (SocketAddr, tokio::process::Child) {
    let mut child = tokio::process::Command::new(program)
        .args(args)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap_or_else(|e| panic!("starting {}: {e}", program.display()));
    let mut lines = tokio::io::BufReader::new(child.stderr.take().unwrap()).lines();
    let line = tokio::time::timeout(FRAME_TIMEOUT, lines.next_line())
        .await
        .expect("the server says where it listens within 10 s")
        .unwrap()
        .unwrap_or_default();
    let addr = line
        .strip_prefix(banner)
        .and_then(|r| r.split_whitespace().next())
        .and_then(|a| a.parse().ok())
        .unwrap_or_else(|| panic!("unexpected first line {line:?}"));
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    (addr, child)
}

async fn connect(addr: SocketAddr, query: &str) -> Ws {
    let (mut ws, _) = tokio_tungstenite::connect_async(format!("ws://{addr}/ws/buy?{query}"))
        .await
        .expect("the socket opens");
    let hello = next(&mut ws).await;
    assert_eq!(hello["op"], "hello", "the first frame is the hello");
    ws
}

/// The next text frame, as JSON.
async fn next(ws: &mut Ws) -> Value {
    loop {
        let m = tokio::time::timeout(FRAME_TIMEOUT, ws.next())
            .await
            .expect("a frame within 10 s")
            .expect("the socket stays open")
            .expect("a good frame");
        if let Message::Text(t) = m {
            return serde_json::from_str(&t).expect("a JSON frame");
        }
    }
}

/// The next frame that is an ack or an error (pushes are skipped).
async fn next_answer(ws: &mut Ws) -> Value {
    loop {
        let f = next(ws).await;
        if f["op"] == "ack" || f["op"] == "error" || f["op"] == "defined" || f["op"] == "opened" {
            return f;
        }
    }
}

fn buy(req: &str, sku: &str, qty: u64) -> Message {
    Message::text(json!({"op": "buy", "req": req, "sku": sku, "qty": qty}).to_string())
}

#[tokio::test]
async fn the_batched_echo_answers_every_buy_of_a_socket_in_order() {
    let exe = PathBuf::from(env!("CARGO_BIN_EXE_livehub-loadtest"));
    let (addr, _child) = start(
        &exe,
        &["echo-server", "--listen", "127.0.0.1:0"],
        "echo server listening on ",
    )
    .await;
    // Several sockets, each sending its buys in bursts (one write each), so that the server
    // reads many frames in one wake-up and answers them with one flush.
    const SOCKETS: usize = 4;
    const BURSTS: usize = 5;
    const PER_BURST: usize = 150;
    let mut tasks = Vec::new();
    for s in 0..SOCKETS {
        tasks.push(tokio::spawn(async move {
            let mut ws = connect(addr, &format!("room=echo&user=u{s}")).await;
            let mut seen = Vec::new();
            for b in 0..BURSTS {
                for i in 0..PER_BURST {
                    ws.feed(buy(&format!("s{s}-{b}-{i}"), "A1", 1))
                        .await
                        .unwrap();
                }
                ws.feed(Message::text(r#"{"op":"ping"}"#)).await.unwrap();
                ws.flush().await.unwrap();
                for _ in 0..=PER_BURST {
                    seen.push(next(&mut ws).await);
                }
            }
            (s, seen)
        }));
    }
    for t in tasks {
        let (s, seen) = t.await.unwrap();
        let mut expected = Vec::new();
        for b in 0..BURSTS {
            for i in 0..PER_BURST {
                expected.push(Some(format!("s{s}-{b}-{i}")));
            }
            expected.push(None);
        }
        let got: Vec<Option<String>> = seen
            .iter()
            .map(|f| match f["op"].as_str() {
                Some("ack") => {
                    assert_eq!(f["ok"], true, "{f}");
                    f["req"].as_str().map(str::to_owned)
                }
                Some("pong") => None,
                other => panic!("unexpected frame {other:?}: {f}"),
            })
            .collect();
        assert_eq!(
            got, expected,
            "socket {s}: every buy answered once, in order, the pong last"
        );
    }
}

fn bun() -> (PathBuf, PathBuf) {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("peers/bun");
    let bun = std::env::var_os("LIVEHUB_BUN")
        .map(PathBuf::from)
        .unwrap_or_else(|| dir.join("node_modules/.bin/bun"));
    assert!(
        bun.exists(),
        "Bun is missing at {}: run `npm ci --prefix loadtest/peers/bun` (scripts/test.sh does), or set LIVEHUB_BUN",
        bun.display()
    );
    (bun, dir.join("hub.js"))
}

#[tokio::test]
async fn the_bun_peer_never_oversells_and_a_retried_req_gets_the_same_order() {
    const STOCK: u64 = 30;
    const LIMIT: u64 = 4;
    const USERS: usize = 12;
    const SOCKETS_PER_USER: usize = 2;
    const BUYS_PER_SOCKET: usize = 6;
    let (bun, hub) = bun();
    let hub = hub.to_string_lossy().into_owned();
    let (addr, _child) = start(
        &bun,
        &[&hub, "--listen", "127.0.0.1:0"],
        "bun peer listening on ",
    )
    .await;

    let mut control = connect(addr, "room=peer&user=lt-control&control=1").await;
    let define = json!({"op": "define", "sku": "A1", "price_fen": 9900, "stock": STOCK,
        "limit_per_user": LIMIT, "open": false});
    control
        .send(Message::text(define.to_string()))
        .await
        .unwrap();
    assert_eq!(next_answer(&mut control).await["op"], "defined");

    // Before the open: not_open, and nothing is kept for the req.
    let mut early = connect(addr, "room=peer&user=early").await;
    early.send(buy("r0", "A1", 1)).await.unwrap();
    let a = next_answer(&mut early).await;
    assert_eq!(
        (a["ok"].as_bool(), a["error"].as_str()),
        (Some(false), Some("not_open")),
        "{a}"
    );

    // A buyer cannot open the sale.
    early
        .send(Message::text(r#"{"op":"open","sku":"A1"}"#))
        .await
        .unwrap();
    assert_eq!(next_answer(&mut early).await["error"], "bad_request");

    let mut buyers = Vec::new();
    for u in 0..USERS {
        for _ in 0..SOCKETS_PER_USER {
            buyers.push((u, connect(addr, &format!("room=peer&user=u{u}")).await));
        }
    }
    control
        .send(Message::text(r#"{"op":"open","sku":"A1"}"#))
        .await
        .unwrap();
    assert_eq!(next_answer(&mut control).await["op"], "opened");

    // Every socket sends all its buys at once (qty 1 or 2); both sockets of a user share reqs
    // `r{i}`, so each req is also sent twice, from two sockets.
    let mut tasks = Vec::new();
    for (u, mut ws) in buyers {
        tasks.push(tokio::spawn(async move {
            for i in 0..BUYS_PER_SOCKET {
                ws.feed(buy(&format!("r{i}"), "A1", 1 + (i as u64 % 2)))
                    .await
                    .unwrap();
            }
            ws.flush().await.unwrap();
            let mut answers = Vec::new();
            for _ in 0..BUYS_PER_SOCKET {
                answers.push(next_answer(&mut ws).await);
            }
            (u, ws, answers)
        }));
    }
    let mut orders: HashMap<(usize, String), Value> = HashMap::new();
    let mut sockets = Vec::new();
    for t in tasks {
        let (u, ws, answers) = t.await.unwrap();
        for a in answers {
            assert_eq!(a["op"], "ack", "{a}");
            let req = a["req"].as_str().unwrap().to_owned();
            if a["ok"] == true {
                // The same req from the user's other socket: the same ack, whole.
                if let Some(first) = orders.get(&(u, req.clone())) {
                    assert_eq!(
                        first, &a,
                        "user {u} req {req}: both sockets get the same ack"
                    );
                }
                orders.insert((u, req), a);
            } else {
                let e = a["error"].as_str().unwrap();
                assert!(
                    ["sold_out", "insufficient_stock", "limit_exceeded"].contains(&e),
                    "{a}"
                );
            }
        }
        sockets.push((u, ws));
    }
    let sold: u64 = orders.values().map(|a| a["qty"].as_u64().unwrap()).sum();
    let ids: HashSet<&str> = orders
        .values()
        .map(|a| a["order"].as_str().unwrap())
        .collect();
    assert_eq!(ids.len(), orders.len(), "one order per (user, req)");
    let mut per_user: HashMap<usize, u64> = HashMap::new();
    for ((u, _), a) in &orders {
        *per_user.entry(*u).or_default() += a["qty"].as_u64().unwrap();
        assert_eq!(
            a["amount_fen"].as_u64(),
            Some(9900 * a["qty"].as_u64().unwrap())
        );
    }
    assert!(sold <= STOCK, "sold {sold} of {STOCK}: oversold");
    // Demand (each user up to the limit) is far above the stock: it sells out, to a unit
    // (unless the last unit is smaller than every qty 2 that came after it).
    assert!(
        sold >= STOCK - 1,
        "sold {sold} of {STOCK} against a demand of {}",
        USERS as u64 * LIMIT
    );
    for (u, n) in &per_user {
        assert!(
            *n <= LIMIT,
            "user {u} holds {n} units, over the limit of {LIMIT}"
        );
    }

    // A retry later, and `status`, get the very ack each order first got.
    for (u, ws) in sockets.iter_mut() {
        for ((ou, req), first) in orders.iter().filter(|((ou, _), _)| ou == u) {
            ws.send(buy(req, "A1", 1)).await.unwrap();
            assert_eq!(&next_answer(ws).await, first, "user {ou} retried {req}");
            ws.send(Message::text(
                json!({"op": "status", "req": req}).to_string(),
            ))
            .await
            .unwrap();
            assert_eq!(&next_answer(ws).await, first, "user {ou} status {req}");
        }
    }
    // The stock did not move since: a new req is sold out (or refused by the limit).
    let (_, ws) = &mut sockets[0];
    ws.send(buy("late", "A1", 1)).await.unwrap();
    let a = next_answer(ws).await;
    assert_eq!(a["ok"], false, "{a}");
}

//! Graceful shutdown of a real livehub process: SIGTERM under load answers the buys in
//! flight, closes sockets with 1001, loses no acknowledged order and exits 0; the deadline
//! bounds a drain that cannot finish; a second signal exits at once.

mod support;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use support::child::{spawn, ChildHub};
use support::*;
use tokio::io::AsyncWriteExt;
use tokio_tungstenite::tungstenite::Message;

async fn room_with_stock(hub: &ChildHub) {
    let (st, _) = hub
        .http("PUT", "/api/rooms/s", ADMIN, Some(json!({"title": "s"})))
        .await;
    assert_eq!(st, 200);
    let sku = json!({"name":"x","price_fen":990,"stock":1_000_000_000u64,"limit_per_user":null});
    let (st, _) = hub
        .http("PUT", "/api/rooms/s/skus/A1", ADMIN, Some(sku))
        .await;
    assert_eq!(st, 200);
}

/// Pipelined buys until the server closes; records ok orders and the close code.
async fn buyer(addr: String, user: String, acked: Arc<Mutex<HashMap<String, u64>>>) -> Option<u16> {
    let (mut ws, _) =
        tokio_tungstenite::connect_async(format!("ws://{addr}/ws/buy?room=s&user={user}"))
            .await
            .expect("connects");
    let mut n = 0u64;
    let frame = |n: u64| {
        Message::text(json!({"op":"buy","req":format!("k{n}"),"sku":"A1","qty":1}).to_string())
    };
    for _ in 0..8 {
        n += 1;
        ws.send(frame(n)).await.expect("send");
    }
    while let Some(m) = ws.next().await {
        match m {
            Ok(Message::Text(t)) => {
                let v: Value = serde_json::from_str(&t).unwrap();
                if v["op"] != "ack" {
                    continue;
                }
                if v["ok"] == true {
                    acked.lock().unwrap().insert(
                        v["order"].as_str().unwrap().to_owned(),
                        v["amount_fen"].as_u64().unwrap(),
                    );
                } else {
                    assert_eq!(v["error"], "unavailable", "unexpected refusal {v}");
                }
                n += 1;
                // Sending after the server began closing may fail; reading goes on.
                if n < 20_000 {
                    let _ = ws.send(frame(n)).await;
                }
            }
            Ok(Message::Close(f)) => return f.map(|f| u16::from(f.code)),
            Ok(_) => {}
            Err(_) => return None,
        }
    }
    None
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_under_load_answers_in_flight_buys_closes_1001_and_loses_nothing() {
    let dir = temp_dir();
    let mut hub = spawn(&dir, &["--shutdown-deadline-s", "20"]).await;
    room_with_stock(&hub).await;
    let acked: Arc<Mutex<HashMap<String, u64>>> = Arc::default();
    let load: Vec<_> = (0..16)
        .map(|u| tokio::spawn(buyer(hub.addr.clone(), format!("u{u}"), acked.clone())))
        .collect();
    // Let the load run until orders are flowing.
    let t0 = std::time::Instant::now();
    while acked.lock().unwrap().len() < 200 {
        assert!(t0.elapsed() < WAIT, "no orders under load");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    hub.terminate();
    assert_eq!(hub.exit_code().await, Some(0), "SIGTERM exits 0");
    for t in load {
        assert_eq!(
            t.await.unwrap(),
            Some(1001),
            "every buyer is closed with 1001"
        );
    }

    let hub = spawn(&dir, &[]).await;
    let export = hub.export("s").await;
    let by_id: HashMap<&str, u64> = export
        .iter()
        .map(|o| {
            (
                o["order"].as_str().unwrap(),
                o["amount_fen"].as_u64().unwrap(),
            )
        })
        .collect();
    let acked = acked.lock().unwrap().clone();
    for (order, amount) in &acked {
        assert_eq!(
            by_id.get(order.as_str()),
            Some(amount),
            "acked order {order} lost"
        );
    }
    let (_, audit) = hub.http("GET", "/api/rooms/s/audit", VIEWER, None).await;
    let audit: Value = serde_json::from_str(&audit).unwrap();
    assert_eq!(audit["consistent"], true, "{audit}");
}

/// A connection that sent half a request head: the drain waits for it (up to the handshake
/// timeout), so shutdown cannot finish on its own before the deadline. Returns once the hub
/// has read those bytes: until it has, the connection looks unused, and a shutdown would close
/// it at once instead of waiting for it.
async fn half_request(addr: &str) -> tokio::net::TcpStream {
    let mut tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    tcp.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
        .await
        .unwrap();
    let (server, client) = (addr.parse().unwrap(), tcp.local_addr().unwrap());
    eventually_ok(WAIT, "the hub has read the half request", async || {
        server_read_all(server, client)
    })
    .await;
    tcp
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_shutdown_deadline_bounds_a_drain_that_cannot_finish() {
    let dir = temp_dir();
    let mut hub = spawn(
        &dir,
        &["--shutdown-deadline-s", "1", "--handshake-timeout-s", "600"],
    )
    .await;
    let _stuck = half_request(&hub.addr).await;
    hub.terminate();
    assert_eq!(hub.exit_code().await, Some(0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_signal_exits_at_once() {
    let dir = temp_dir();
    let mut hub = spawn(
        &dir,
        &[
            "--shutdown-deadline-s",
            "600",
            "--handshake-timeout-s",
            "600",
        ],
    )
    .await;
    let _stuck = half_request(&hub.addr).await;
    hub.terminate();
    // The first signal has arrived once the hub stops listening.
    eventually(
        WAIT,
        "the hub stops listening at the first signal",
        async || tokio::net::TcpStream::connect(&hub.addr).await.is_err(),
    )
    .await;
    // Not synchronisation: a window in which the draining hub must not exit, as the half-read
    // request holds the drain (deadline 600 s). It also gives the hub's listener for a second
    // signal, set up as the first one arrived, time to be in place: nothing outside the process
    // shows when it is.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        hub.child.try_wait().unwrap().is_none(),
        "the first signal waits for the drain"
    );
    hub.terminate();
    assert_eq!(
        hub.exit_code().await,
        Some(130),
        "the second signal exits at once"
    );
}

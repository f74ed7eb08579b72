//! Crash test: a child livehub under buy load is killed with SIGKILL at random moments and
//! restarted on the same data dir. Every order that got an ok ack must be in the export, the
//! audit must be consistent, and GMV must equal the sum of the orders.

mod support;

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use rand::Rng;
use serde_json::{json, Value};
use support::*;
use tokio_tungstenite::tungstenite::Message;

struct Hub {
    child: Child,
    addr: String,
}

fn spawn_hub(dir: &std::path::Path) -> Hub {
    let mut child = Command::new(env!("CARGO_BIN_EXE_livehub"))
        .args([
            "--listen",
            "127.0.0.1:0",
            "--log-format",
            "json",
            "--open-buyers",
        ])
        .args(["--buyer-rate", "1000000", "--buyer-burst", "1000000"])
        // Snapshots and compaction run all through the test, so kills land in the middle of
        // them too: a snapshot every 500 records, segments of 64 KiB.
        .args([
            "--snapshot-every-records",
            "500",
            "--segment-bytes",
            "65536",
        ])
        .arg("--data-dir")
        .arg(dir)
        .env("LIVEHUB_ADMIN_TOKEN", ADMIN)
        .env("LIVEHUB_VIEWER_TOKEN", VIEWER)
        .env("LIVEHUB_BUYER_SECRET", SECRET)
        .env("RUST_LOG", "info")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawn livehub");
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    // Read the listening address, then keep draining so the child never blocks on its pipe.
    std::thread::spawn(move || {
        let mut tx = Some(tx);
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if let Ok(v) = serde_json::from_str::<Value>(&line) {
                if v["fields"]["message"] == "livehub listening" {
                    if let Some(tx) = tx.take() {
                        let _ =
                            tx.send(v["fields"]["addr"].as_str().unwrap_or_default().to_owned());
                    }
                }
            }
        }
    });
    let addr = rx.recv_timeout(WAIT).expect("livehub reports its address");
    Hub { child, addr }
}

async fn http(
    addr: &str,
    method: &str,
    path: &str,
    token: &str,
    body: Option<Value>,
) -> (u16, String) {
    let c = reqwest::Client::new();
    let mut rb = c
        .request(method.parse().unwrap(), format!("http://{addr}{path}"))
        .bearer_auth(token);
    if let Some(b) = body {
        rb = rb.json(&b);
    }
    let r = rb.send().await.expect("http");
    (r.status().as_u16(), r.text().await.unwrap())
}

async fn wait_ready(addr: &str) {
    let t0 = std::time::Instant::now();
    while reqwest::get(format!("http://{addr}/healthz"))
        .await
        .map(|r| r.status().as_u16())
        .ok()
        != Some(200)
    {
        assert!(t0.elapsed() < WAIT, "livehub did not become ready");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// One buyer: pipelined buys until the server dies; records each ok ack's order and amount.
async fn buyer(addr: String, user: String, round: usize, acked: Arc<Mutex<HashMap<String, u64>>>) {
    let Ok((mut ws, _)) =
        tokio_tungstenite::connect_async(format!("ws://{addr}/ws/buy?room=crash&user={user}"))
            .await
    else {
        return;
    };
    let mut next = 0u64;
    let send = |n: &mut u64| {
        *n += 1;
        Message::text(
            json!({"op":"buy","req":format!("k{round}-{n}"),"sku":"A1","qty":1 + (*n % 3)})
                .to_string(),
        )
    };
    for _ in 0..4 {
        if ws.send(send(&mut next)).await.is_err() {
            return;
        }
    }
    while let Some(Ok(m)) = ws.next().await {
        let Message::Text(t) = m else { continue };
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
        if next >= 5_000 || ws.send(send(&mut next)).await.is_err() {
            return;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_orders_survive_kill_9() {
    let dir = temp_dir();
    let acked: Arc<Mutex<HashMap<String, u64>>> = Arc::default();
    let mut rng = rand::rng();
    let mut saw_snapshots = false;
    for round in 0..4 {
        let mut hub = spawn_hub(&dir);
        wait_ready(&hub.addr).await;
        if round == 0 {
            assert_eq!(
                http(
                    &hub.addr,
                    "PUT",
                    "/api/rooms/crash",
                    ADMIN,
                    Some(json!({"title":"crash"}))
                )
                .await
                .0,
                200
            );
            let sku =
                json!({"name":"x","price_fen":990,"stock":1_000_000_000u64,"limit_per_user":null});
            assert_eq!(
                http(
                    &hub.addr,
                    "PUT",
                    "/api/rooms/crash/skus/A1",
                    ADMIN,
                    Some(sku)
                )
                .await
                .0,
                200
            );
        }
        let load: Vec<_> = (0..24)
            .map(|u| {
                tokio::spawn(buyer(
                    hub.addr.clone(),
                    format!("u{u}"),
                    round,
                    acked.clone(),
                ))
            })
            .collect();
        let kill_after = Duration::from_millis(rng.random_range(150..900));
        tokio::time::sleep(kill_after).await;
        hub.child.kill().expect("SIGKILL");
        hub.child.wait().unwrap();
        for t in load {
            t.await.unwrap();
        }
        assert!(
            !acked.lock().unwrap().is_empty(),
            "round {round}: the load made orders before the kill"
        );

        // Restart on the same dir and check every acknowledged order is there.
        let mut hub = spawn_hub(&dir);
        wait_ready(&hub.addr).await;
        let mut export: Vec<Value> = Vec::new();
        let mut after = 0;
        loop {
            let (st, body) = http(
                &hub.addr,
                "GET",
                &format!("/api/rooms/crash/orders?after_seq={after}&limit=10000"),
                ADMIN,
                None,
            )
            .await;
            assert_eq!(st, 200);
            let page: Vec<Value> = body
                .lines()
                .map(|l| serde_json::from_str(l).unwrap())
                .collect();
            let n = page.len();
            if let Some(l) = page.last() {
                after = l["seq"].as_u64().unwrap();
            }
            export.extend(page);
            if n < 10000 {
                break;
            }
        }
        let by_id: HashMap<&str, u64> = export
            .iter()
            .map(|o| {
                (
                    o["order"].as_str().unwrap(),
                    o["amount_fen"].as_u64().unwrap(),
                )
            })
            .collect();
        assert_eq!(by_id.len(), export.len(), "order ids are unique");
        let acked_now = acked.lock().unwrap().clone();
        for (order, amount) in &acked_now {
            assert_eq!(
                by_id.get(order.as_str()),
                Some(amount),
                "round {round} (killed after {kill_after:?}): acked order {order} lost"
            );
        }
        let seqs: Vec<u64> = export.iter().map(|o| o["seq"].as_u64().unwrap()).collect();
        assert!(
            seqs.windows(2).all(|w| w[0] < w[1]),
            "seq strictly increases"
        );
        let (_, audit) = http(&hub.addr, "GET", "/api/rooms/crash/audit", VIEWER, None).await;
        let audit: Value = serde_json::from_str(&audit).unwrap();
        assert_eq!(audit["consistent"], true, "{audit}");
        let units: u64 = export.iter().map(|o| o["qty"].as_u64().unwrap()).sum();
        assert_eq!(audit["skus"][0]["sold"], units);
        let gmv: u64 = export
            .iter()
            .map(|o| o["amount_fen"].as_u64().unwrap())
            .sum();
        let t0 = std::time::Instant::now();
        let stats = loop {
            let (_, s) = http(&hub.addr, "GET", "/api/rooms/crash/stats", VIEWER, None).await;
            let s: Value = serde_json::from_str(&s).unwrap();
            if s["seq"].as_u64() == seqs.last().copied() || t0.elapsed() > WAIT {
                break s;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        assert_eq!(stats["gmv_fen"], gmv, "GMV equals the sum of the orders");
        assert_eq!(stats["orders"], export.len());
        let journal = dir.join("journal");
        let snapshots = livehub::journal::snapshot::list(&journal).unwrap();
        let segments = livehub::journal::segment::list(&journal).unwrap();
        eprintln!(
            "round {round}: killed after {kill_after:?}; {} acked so far, {} in the journal; {} snapshots, {} segments, first {:?}",
            acked_now.len(),
            export.len(),
            snapshots.len(),
            segments.len(),
            segments.first().and_then(|p| p.file_name()),
        );
        saw_snapshots |= !snapshots.is_empty();
        hub.child.kill().unwrap();
        hub.child.wait().unwrap();
    }
    // Thousands of records at one snapshot per 500: the restarts above went through snapshots
    // (and through compaction when the first segment no longer starts at record 1).
    assert!(saw_snapshots, "snapshots were taken during the test");
}

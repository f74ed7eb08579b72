//! Crash test: a child livehub under buy load is killed with SIGKILL at random moments and
//! restarted on the same data dir. Every order that got an ok ack must be in the export, the
//! audit must be consistent, and GMV must equal the sum of the orders.

mod support;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use rand::Rng;
use serde_json::{json, Value};
use support::child::spawn;
use support::*;
use tokio_tungstenite::tungstenite::Message;

/// Snapshots and compaction run all through the test, so kills land in the middle of them
/// too: a snapshot every 500 records, segments of 64 KiB.
const SNAPSHOT_FLAGS: [&str; 4] = [
    "--snapshot-every-records",
    "500",
    "--segment-bytes",
    "65536",
];

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
        let mut hub = spawn(&dir, &SNAPSHOT_FLAGS).await;
        if round == 0 {
            let room = json!({"title":"crash"});
            assert_eq!(
                hub.http("PUT", "/api/rooms/crash", ADMIN, Some(room))
                    .await
                    .0,
                200
            );
            let sku =
                json!({"name":"x","price_fen":990,"stock":1_000_000_000u64,"limit_per_user":null});
            let path = "/api/rooms/crash/skus/A1";
            assert_eq!(hub.http("PUT", path, ADMIN, Some(sku)).await.0, 200);
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
        // The first round's load makes its first orders before the kill (later rounds have
        // those already, so their kills land wherever the random wait puts them).
        eventually(
            WAIT,
            &format!("round {round}: the load made orders before the kill"),
            async || !acked.lock().unwrap().is_empty(),
        )
        .await;
        // Not synchronisation: the kill lands at a random moment of the load, as a crash would.
        let kill_after = Duration::from_millis(rng.random_range(150..900));
        tokio::time::sleep(kill_after).await;
        hub.child.kill().expect("SIGKILL");
        hub.child.wait().unwrap();
        for t in load {
            t.await.unwrap();
        }

        // Restart on the same dir and check every acknowledged order is there.
        let mut hub = spawn(&dir, &SNAPSHOT_FLAGS).await;
        let export = hub.export("crash").await;
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
        let (_, audit) = hub
            .http("GET", "/api/rooms/crash/audit", VIEWER, None)
            .await;
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
            let (_, s) = hub
                .http("GET", "/api/rooms/crash/stats", VIEWER, None)
                .await;
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

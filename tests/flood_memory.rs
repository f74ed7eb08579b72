//! A flood beyond capacity against a real livehub process: memory levels off once the stock is
//! sold out (nothing queues without bound), and every acknowledged order is durable.
//! Measured in a child process so that its resident memory is the server's alone.

mod support;

use std::collections::HashSet;

use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use support::child::{spawn, ChildHub};
use support::*;
use tokio_tungstenite::tungstenite::Message;

/// Resident memory of the server, from its own `/metrics`.
async fn rss(hub: &ChildHub) -> f64 {
    metric_at(&hub.addr, "livehub_process_resident_memory_bytes ")
        .await
        .expect("resident memory is reported")
}

/// One round: `conns` connections each send `per_conn` buys without waiting, then read every
/// answer. Returns the ok order ids and the count of each refusal.
async fn round(hub: &ChildHub, tag: &str, conns: usize, per_conn: usize) -> (Vec<String>, usize) {
    let mut tasks = Vec::new();
    for c in 0..conns {
        let url = format!("ws://{}/ws/buy?room=f&user={tag}-{c}", hub.addr);
        tasks.push(tokio::spawn(async move {
            let (ws, _) = tokio_tungstenite::connect_async(url)
                .await
                .expect("connects");
            let (mut tx, mut rx) = ws.split();
            let sender = tokio::spawn(async move {
                for i in 0..per_conn {
                    let f = json!({"op":"buy","req":format!("r{i}"),"sku":"A","qty":1});
                    if tx.send(Message::text(f.to_string())).await.is_err() {
                        break;
                    }
                }
                tx
            });
            let mut ok = Vec::new();
            let mut refused = 0;
            let mut answered = 0;
            while answered < per_conn {
                let m = tokio::time::timeout(WAIT, rx.next())
                    .await
                    .expect("answers keep coming")
                    .expect("socket open")
                    .expect("frame");
                let Message::Text(t) = m else { continue };
                let v: Value = serde_json::from_str(&t).unwrap();
                if v["op"] != "ack" {
                    continue;
                }
                answered += 1;
                match v["error"].as_str() {
                    None => ok.push(v["order"].as_str().unwrap().to_owned()),
                    Some("sold_out" | "unavailable" | "insufficient_stock") => refused += 1,
                    Some(e) => panic!("unexpected refusal {e}: {v}"),
                }
            }
            drop(sender.await);
            (ok, refused)
        }));
    }
    let mut ok = Vec::new();
    let mut refused = 0;
    for t in tasks {
        let (o, r) = t.await.unwrap();
        ok.extend(o);
        refused += r;
    }
    (ok, refused)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_levels_off_under_a_flood_and_every_acked_order_is_durable() {
    let dir = temp_dir();
    // A small pending-buys cap makes the flood exceed capacity: buys are shed, not queued.
    let hub = spawn(&dir, &["--max-pending-buys", "64"]).await;
    let (st, _) = hub
        .http("PUT", "/api/rooms/f", ADMIN, Some(json!({"title":"flood"})))
        .await;
    assert_eq!(st, 200);
    let sku = json!({"name":"x","price_fen":100,"stock":3000,"limit_per_user":null});
    let (st, _) = hub
        .http("PUT", "/api/rooms/f/skus/A", ADMIN, Some(sku))
        .await;
    assert_eq!(st, 200);

    // The first rounds sell the stock out (some buys are shed meanwhile); the measured ones
    // are the same flood against a sold-out sale.
    let mut acked = Vec::new();
    for r in 0..5 {
        let (ok, _) = round(&hub, &format!("s{r}"), 40, 500).await;
        acked.extend(ok);
        if acked.len() == 3000 {
            break;
        }
    }
    assert_eq!(acked.len(), 3000, "the whole stock sold, and no more");
    let after_first = rss(&hub).await;
    let mut after = Vec::new();
    for r in 1..=4 {
        let (ok, refused) = round(&hub, &format!("w{r}"), 40, 500).await;
        assert!(ok.is_empty(), "nothing left to sell");
        assert_eq!(refused, 20_000);
        acked.extend(ok);
        after.push(rss(&hub).await);
    }
    // 80,000 more buys were answered; if any of them were kept (a queue, a leak), memory would
    // grow with them. Allow the allocator some slack: 16 MiB.
    let last = *after.last().unwrap();
    eprintln!(
        "resident memory after the sell-out: {:.1} MiB; after each sold-out flood: {:?} MiB",
        after_first / 1048576.0,
        after
            .iter()
            .map(|b| (b / 1048576.0 * 10.0).round() / 10.0)
            .collect::<Vec<_>>()
    );
    assert!(
        last - after_first < 16.0 * 1024.0 * 1024.0,
        "memory grew from {:.1} MiB to {:.1} MiB over four sold-out floods ({:?})",
        after_first / 1048576.0,
        last / 1048576.0,
        after.iter().map(|b| b / 1048576.0).collect::<Vec<_>>()
    );

    // Every acked order is in the export after a restart.
    drop(hub);
    let hub = spawn(&dir, &[]).await;
    let export: HashSet<String> = hub
        .export("f")
        .await
        .iter()
        .map(|o| o["order"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(export.len(), acked.len());
    for o in &acked {
        assert!(export.contains(o), "acked order {o} lost");
    }
}

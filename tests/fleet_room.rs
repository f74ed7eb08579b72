//! One room, whatever hub answers (docs/protocol.md section 6): two hubs on a real
//! `redis-server` take orders of one room, and those orders are paid, cancelled, refunded and
//! left to expire across the hubs. Then the export, the change feed, `/stats`, `/audit` and the
//! review fetched from either hub are the whole room's and the same; the export's `seq` is
//! the room-wide one, pages cover it once, its sums are the snapshot's, and `?scope=hub` still
//! lists each hub's own orders by its own `seq`.

mod support;

use std::collections::{BTreeMap, BTreeSet};

use serde_json::{json, Value};

use support::redis_server::RedisServer;
use support::{eventually_ok, fleet_hub, TestServer, ADMIN, VIEWER, WAIT};

/// The SKU paid on placement, and the one that must be paid within its timeout.
const NOW: &str = "A";
const LATER: &str = "B";
const NOW_FEN: u64 = 100;
const LATER_FEN: u64 = 250;
/// Buyers on each hub.
const BUYERS: usize = 6;

/// Every line of a paged NDJSON route of `hub`, `limit` a page, each page after the last
/// line's `cursor` field; fails if a page repeats or skips a line.
async fn paged(hub: &TestServer, path: &str, cursor: &str, limit: usize) -> Vec<Value> {
    let mut out: Vec<Value> = Vec::new();
    let mut after = 0u64;
    loop {
        let sep = if path.contains('?') { '&' } else { '?' };
        let url = format!("{path}{sep}{}={after}&limit={limit}", cursor_param(cursor));
        let r = reqwest::Client::new()
            .get(hub.url(&url))
            .bearer_auth(ADMIN)
            .send()
            .await
            .expect("a page");
        assert_eq!(r.status().as_u16(), 200, "{url}");
        let page: Vec<Value> = r
            .text()
            .await
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).expect("ndjson line"))
            .collect();
        let n = page.len();
        if let Some(last) = page.last() {
            after = last[cursor].as_u64().expect("a cursor");
        }
        out.extend(page);
        if n < limit {
            return out;
        }
    }
}

fn cursor_param(cursor: &str) -> &'static str {
    match cursor {
        "seq" => "after_seq",
        _ => "after",
    }
}

async fn review(hub: &TestServer) -> Value {
    let (code, v) = hub
        .request("GET", "/api/rooms/r/review", Some(VIEWER), None)
        .await;
    assert_eq!(code, 200, "{v}");
    v
}

/// The figures of a snapshot that are the room's, not the hub's (the audience and the
/// hub's own refusals and latencies are left out).
fn room_figures(v: &Value) -> Value {
    let mut out = serde_json::Map::new();
    for k in [
        "seq",
        "event",
        "gmv_fen",
        "orders",
        "units",
        "buyers",
        "aov_fen",
        "paid_gmv_fen",
        "paid_orders",
        "unpaid_fen",
        "expired_fen",
        "cancelled_fen",
        "refunded_fen",
        "late_payments",
        "pay_rate",
        "top_referrers",
        "hub_seqs",
    ] {
        out.insert(k.to_owned(), v[k].clone());
    }
    let skus: Vec<Value> = v["skus"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| json!([s["sku"], s["sold"], s["paid"], s["unpaid"], s["gmv_fen"]]))
        .collect();
    out.insert("skus".to_owned(), json!(skus));
    // A trend point's `online` is sampled live on each hub (docs/protocol.md §9), not folded
    // from the stream: leave it out.
    let mut points = v["trend"]["points"].clone();
    for p in points.as_array_mut().into_iter().flatten() {
        if let Some(p) = p.as_object_mut() {
            p.remove("online");
        }
    }
    out.insert("trend".to_owned(), points);
    Value::Object(out)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_hub_answers_the_whole_room_the_same() {
    let redis = RedisServer::start();
    let (h1, h2) = (fleet_hub(&redis, "h1").await, fleet_hub(&redis, "h2").await);
    let hubs = [&h1, &h2];
    h1.create_room("r").await;
    h1.create_sku("r", NOW, NOW_FEN, 100, None).await;
    h1.create_sku_to_pay("r", LATER, LATER_FEN, 100, None, 10)
        .await;
    h2.wait_sku("r", LATER).await;

    // Buyers on both hubs, their buys interleaved: each buys one of each SKU, the first
    // buyer of each hub through a sharer.
    let mut on: Vec<Vec<support::Client>> = Vec::new();
    for (h, hub) in hubs.iter().enumerate() {
        let mut cs = Vec::new();
        for i in 0..BUYERS {
            cs.push(hub.buyer("r", &format!("u{h}-{i}")).await);
        }
        on.push(cs);
    }
    // placed[h][i] = (order paid on placement, order to pay)
    let mut placed: Vec<Vec<(String, String)>> = vec![Vec::new(), Vec::new()];
    for i in 0..BUYERS {
        for (h, cs) in on.iter_mut().enumerate() {
            let c = &mut cs[i];
            let mut ids = Vec::new();
            for sku in [NOW, LATER] {
                let mut frame =
                    json!({"op": "buy", "req": format!("q-{sku}"), "sku": sku, "qty": 1});
                if i == 0 {
                    frame["ref"] = json!(format!("sharer-{h}"));
                }
                c.send_json(frame).await;
                let ack = c.reply().await;
                assert_eq!(ack["ok"], true, "{ack}");
                let id = ack["order"].as_str().unwrap().to_owned();
                assert!(id.starts_with(&format!("h{}:O", h + 1)), "{id}");
                ids.push(id);
            }
            placed[h].push((ids[0].clone(), ids[1].clone()));
        }
    }

    // Moves of each hub's orders, made through the other hub where it can be.
    let mut want: BTreeMap<String, &str> = BTreeMap::new();
    for (now, later) in placed.iter().flatten() {
        want.insert(now.clone(), "paid");
        want.insert(later.clone(), "expired");
    }
    let mut moves = 0;
    let (other, own) = (|h: usize| hubs[1 - h], |h: usize| hubs[h]);
    for (h, p) in placed.iter().enumerate() {
        // Paid through the other hub.
        let (code, v) = other(h)
            .pay("r", &p[0].1, &format!("pay-{h}-0"), LATER_FEN)
            .await;
        assert_eq!(code, 200, "{v}");
        want.insert(p[0].1.clone(), "paid");
        moves += 1;
        // Cancelled by the operator through the other hub.
        let (code, v) = other(h)
            .request(
                "POST",
                &format!("/api/rooms/r/orders/{}/cancel", p[1].1),
                Some(ADMIN),
                Some(json!({})),
            )
            .await;
        assert_eq!(code, 200, "{v}");
        want.insert(p[1].1.clone(), "cancelled");
        moves += 1;
        // Paid on its own hub, then refunded (with restock) through the other.
        let (code, v) = own(h)
            .pay("r", &p[2].1, &format!("pay-{h}-2"), LATER_FEN)
            .await;
        assert_eq!(code, 200, "{v}");
        let (code, v) = other(h)
            .request(
                "POST",
                &format!("/api/rooms/r/orders/{}/refund", p[2].1),
                Some(ADMIN),
                Some(json!({"restock": true})),
            )
            .await;
        assert_eq!(code, 200, "{v}");
        want.insert(p[2].1.clone(), "refunded");
        moves += 2;
        // Cancelled by its buyer from a socket on the other hub.
        let mut c = other(h).buyer("r", &format!("u{h}-3")).await;
        c.send_json(json!({"op": "cancel", "req": "c1", "order": p[3].1}))
            .await;
        let ack = c.reply().await;
        assert_eq!(ack["status"], "cancelled", "{ack}");
        want.insert(p[3].1.clone(), "cancelled");
        moves += 1;
        // Paid on placement, refunded without restock through the other hub.
        let (code, v) = other(h)
            .request(
                "POST",
                &format!("/api/rooms/r/orders/{}/refund", p[4].0),
                Some(ADMIN),
                Some(json!({"restock": false})),
            )
            .await;
        assert_eq!(code, 200, "{v}");
        want.insert(p[4].0.clone(), "refunded");
        moves += 1;
    }
    // A late payment for h1's paid order, through h2.
    let (code, v) = h2.pay("r", &placed[0][0].1, "pay-late", LATER_FEN).await;
    assert_eq!(
        (code, v["error"].as_str()),
        (409, Some("already_paid")),
        "{v}"
    );
    moves += 1;
    let expiring = want.values().filter(|s| **s == "expired").count();
    let orders = 4 * BUYERS;
    let events = orders + moves + expiring;

    // Both hubs catch up: the unpaid orders expire (10 s), and both change feeds hold every
    // event.
    for hub in hubs {
        eventually_ok(
            WAIT,
            "every event reaches the hub's change feed",
            async || {
                let feed = hub.order_events("r").await;
                match feed.len() == events {
                    true => Ok(()),
                    false => Err(format!(
                        "{} of {events}: {:?}",
                        feed.len(),
                        feed.iter()
                            .map(|e| format!("{} {}", e["order"], e["status"]))
                            .collect::<Vec<_>>()
                    )),
                }
            },
        )
        .await;
    }

    // The export: the whole room on both hubs, the same lines, by room-wide seq.
    let export = h1.export("r").await;
    assert_eq!(export, h2.export("r").await, "the two hubs' exports differ");
    assert_eq!(export.len(), orders);
    let seqs: Vec<u64> = export.iter().map(|o| o["seq"].as_u64().unwrap()).collect();
    assert_eq!(
        seqs,
        (1..=orders as u64).collect::<Vec<_>>(),
        "room-wide seq"
    );
    let got: BTreeMap<String, &str> = export
        .iter()
        .map(|o| {
            (
                o["order"].as_str().unwrap().to_owned(),
                o["status"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(got, want, "every hub's order with its status now");
    let late = export
        .iter()
        .find(|o| o["order"] == placed[0][0].1.as_str())
        .unwrap();
    assert_eq!(late["late_payments"][0]["payment_id"], "pay-late", "{late}");

    // Pages of 5 (and of 1) cover the export once, in order, on either hub.
    for hub in hubs {
        assert_eq!(paged(hub, "/api/rooms/r/orders", "seq", 5).await, export);
    }
    assert_eq!(paged(&h2, "/api/rooms/r/orders", "seq", 1).await, export);

    // The change feed: the same events on both, numbered by their place in the stream.
    let feed = h1.order_events("r").await;
    assert_eq!(feed, h2.order_events("r").await, "the change feeds differ");
    assert_eq!(
        paged(&h2, "/api/rooms/r/order-events", "event", 7).await,
        feed
    );
    let numbers: Vec<u64> = feed.iter().map(|e| e["event"].as_u64().unwrap()).collect();
    assert_eq!(numbers, (1..=events as u64).collect::<Vec<_>>());
    // Each order's last event is its status in the export.
    let mut last: BTreeMap<&str, &str> = BTreeMap::new();
    for e in &feed {
        last.insert(e["order"].as_str().unwrap(), e["status"].as_str().unwrap());
    }
    let last: BTreeMap<String, &str> = last.into_iter().map(|(k, v)| (k.to_owned(), v)).collect();
    assert_eq!(last, want);

    // The snapshot: the same room figures on both, equal to the export's sums up to its seq.
    let stats = eventually_ok(WAIT, "both snapshots caught up", async || {
        let (a, b) = (h1.stats("r").await, h2.stats("r").await);
        let (fa, fb) = (room_figures(&a), room_figures(&b));
        if a["event"] == events && fa == fb {
            Ok(a)
        } else {
            Err(format!("{fa} vs {fb}"))
        }
    })
    .await;
    let seq = stats["seq"].as_u64().unwrap();
    assert_eq!(seq, orders as u64, "{stats}");
    let upto: Vec<&Value> = export
        .iter()
        .filter(|o| o["seq"].as_u64().unwrap() <= seq)
        .collect();
    let sum = |f: &str| upto.iter().map(|o| o[f].as_u64().unwrap()).sum::<u64>();
    assert_eq!(stats["gmv_fen"].as_u64(), Some(sum("amount_fen")));
    assert_eq!(stats["units"].as_u64(), Some(sum("qty")));
    assert_eq!(stats["orders"].as_u64(), Some(upto.len() as u64));
    let paid: u64 = upto
        .iter()
        .filter(|o| o["status"] == "paid")
        .map(|o| o["amount_fen"].as_u64().unwrap())
        .sum();
    assert_eq!(stats["paid_gmv_fen"].as_u64(), Some(paid), "{stats}");
    assert_eq!(
        stats["expired_fen"].as_u64(),
        Some(expiring as u64 * LATER_FEN)
    );

    // The audit and the review: the same on both hubs.
    let audit = eventually_ok(WAIT, "the same audit on both hubs", async || {
        let (a, b) = (h1.audit("r").await, h2.audit("r").await);
        if a == b && a["consistent"] == true {
            Ok(a)
        } else {
            Err(format!("{a} vs {b}"))
        }
    })
    .await;
    let sold: u64 = audit["skus"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["sold"].as_u64().unwrap())
        .sum();
    let held = want
        .iter()
        .filter(|(id, s)| {
            **s == "paid" || (**s == "refunded" && placed.iter().flatten().any(|p| &p.0 == *id))
        })
        .count() as u64;
    assert_eq!(
        sold, held,
        "units held: paid, and refunded without restock: {audit}"
    );
    let (mut r1, mut r2) = (review(&h1).await, review(&h2).await);
    for r in [&mut r1, &mut r2] {
        // Refusals are each hub's own (none here anyway).
        r.as_object_mut().unwrap().remove("rejected");
    }
    assert_eq!(r1, r2, "the two hubs' reviews differ");
    assert_eq!(r1["totals"]["orders"].as_u64(), Some(orders as u64), "{r1}");

    // `scope=hub`: each hub's own orders, by its own seq, the same lines but for `seq`.
    let mut by_id: BTreeMap<String, Value> = export
        .iter()
        .map(|o| (o["order"].as_str().unwrap().to_owned(), o.clone()))
        .collect();
    let mut own_ids = BTreeSet::new();
    for (h, hub) in hubs.iter().enumerate() {
        let mine = hub.hub_export("r").await;
        assert_eq!(mine.len(), 2 * BUYERS);
        let seqs: Vec<u64> = mine.iter().map(|o| o["seq"].as_u64().unwrap()).collect();
        assert_eq!(seqs, (1..=2 * BUYERS as u64).collect::<Vec<_>>(), "hub seq");
        for mut o in mine {
            let id = o["order"].as_str().unwrap().to_owned();
            assert!(id.starts_with(&format!("h{}:", h + 1)), "{id}");
            let mut whole = by_id.remove(&id).expect("in the whole export");
            o["seq"] = json!(null);
            whole["seq"] = json!(null);
            assert_eq!(o, whole, "the hub's line and the room's differ");
            own_ids.insert(id);
        }
        // The hub's change feed lists its own orders' events only.
        let own_feed = hub.hub_order_events("r").await;
        let prefix = format!("h{}:", h + 1);
        assert!(own_feed
            .iter()
            .all(|e| e["order"].as_str().unwrap().starts_with(&prefix)));
        assert_eq!(
            own_feed.len(),
            feed.iter()
                .filter(|e| e["order"].as_str().unwrap().starts_with(&prefix))
                .count()
        );
    }
    assert!(by_id.is_empty(), "orders in no hub's own export: {by_id:?}");
    assert_eq!(own_ids.len(), orders);

    // A scope that is neither is a 400.
    let (code, _) = h1
        .request("GET", "/api/rooms/r/orders?scope=all", Some(ADMIN), None)
        .await;
    assert_eq!(code, 400);
}

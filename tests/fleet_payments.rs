//! Orders that must be paid in fleet mode (docs/protocol.md section 8, docs/fleet.md): two
//! hubs on a real `redis-server`. A payment notice, a cancel or a refund may reach any hub; an
//! expiry is decided by the hub that placed the order, or by another when that one is gone;
//! and however the hubs race, every order moves once and its units come back once.

mod support;

use std::time::{Duration, Instant};

use serde_json::{json, Value};

use support::redis_server::RedisServer;
use support::sku_of;
use support::{eventually, temp_dir, TestServer, ADMIN, WAIT};
use support::{fleet_hub, fleet_hub_in};

/// The line of `order` in `s`'s export, once its status is `status`.
async fn exported_as(s: &TestServer, room: &str, order: &str, status: &str) -> Value {
    let t0 = Instant::now();
    loop {
        let line = s
            .hub_export(room)
            .await
            .into_iter()
            .find(|o| o["order"] == order);
        if let Some(l) = &line {
            if l["status"] == status {
                return l.clone();
            }
        }
        assert!(
            t0.elapsed() < WAIT,
            "{order} never {status} in the export: {line:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The stats once `pred` holds of them.
async fn stats_where(s: &TestServer, room: &str, pred: impl Fn(&Value) -> bool) -> Value {
    let t0 = Instant::now();
    loop {
        let v = s.stats(room).await;
        if pred(&v) {
            return v;
        }
        assert!(t0.elapsed() < WAIT, "stats never as expected: {v}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn cancel(c: &mut support::Client, req: &str, order: &str) -> Value {
    c.send_json(json!({"op": "cancel", "req": req, "order": order}))
        .await;
    c.reply().await
}

async fn admin_move(s: &TestServer, path: &str, body: Value) -> (u16, Value) {
    s.request("POST", path, Some(ADMIN), Some(body)).await
}

/// A payment notice may reach either hub: it pays the order once, a repeat is answered the
/// same, a second payment is kept as late, bad ones change nothing; the placing hub's export,
/// the buyer's socket on the other hub and both dashboards see the move; a refund with
/// restock on the other hub puts the unit back on sale once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_payment_notice_reaches_any_hub_and_moves_the_order_once() {
    let redis = RedisServer::start();
    let (h1, h2) = (fleet_hub(&redis, "h1").await, fleet_hub(&redis, "h2").await);
    h1.create_room("r").await;
    let state = h1.create_sku_to_pay("r", "A", 990, 2, Some(1), 600).await;
    assert_eq!(state["pay_timeout_s"], 600, "{state}");
    h2.wait_sku("r", "A").await;

    let mut on_h1 = h1.buyer("r", "u1").await;
    let mut on_h2 = h2.buyer("r", "u1").await;
    let ack = on_h1.buy("q1", "A", 1).await;
    assert_eq!(
        (ack["ok"].clone(), ack["status"].clone()),
        (json!(true), json!("unpaid")),
        "{ack}"
    );
    assert!(ack["pay_by_ms"].as_i64().is_some(), "{ack}");
    let order = ack["order"].as_str().unwrap().to_owned();
    assert!(order.starts_with("h1:O"), "{order}");
    // The same req on the other hub: the same order, still unpaid.
    let again = on_h2.buy("q1", "A", 1).await;
    assert_eq!(
        (again["order"].as_str(), again["status"].as_str()),
        (Some(&*order), Some("unpaid")),
        "{again}"
    );
    // The allowance is held by the unpaid order, on every hub.
    assert_eq!(on_h2.buy("q2", "A", 1).await["error"], "limit_exceeded");

    // Bad notices change nothing.
    assert_eq!(h2.pay("r", &order, "pay-1", 1).await.0, 409, "wrong amount");
    assert_eq!(h2.pay("r", "h1:O999999", "pay-1", 990).await.0, 404);
    assert_eq!(h2.pay("r", "O1", "pay-1", 990).await.0, 404);
    assert_eq!(
        h2.pay("other", &order, "pay-1", 990).await.0,
        404,
        "wrong room"
    );

    let (code, v) = h2.pay("r", &order, "pay-1", 990).await;
    assert_eq!((code, v["status"].as_str()), (200, Some("paid")), "{v}");
    let (code, v) = h1.pay("r", &order, "pay-1", 990).await;
    assert_eq!(
        (code, v["status"].as_str()),
        (200, Some("paid")),
        "a repeat: {v}"
    );
    let (code, v) = h1.pay("r", &order, "pay-2", 990).await;
    assert_eq!(
        (code, v["error"].as_str()),
        (409, Some("already_paid")),
        "{v}"
    );
    let (code, v) = h2.pay("r", &order, "pay-2", 990).await;
    assert_eq!(
        (code, v["error"].as_str()),
        (409, Some("already_paid")),
        "kept once: {v}"
    );

    let pushed = on_h2
        .push_where(|v| v["op"] == "order" && v["order"] == order.as_str())
        .await;
    assert_eq!(pushed["status"], "paid", "{pushed}");
    let line = exported_as(&h1, "r", &order, "paid").await;
    assert_eq!(line["payment_id"], "pay-1", "{line}");
    assert_eq!(
        on_h1.buy("q1", "A", 1).await["status"],
        "paid",
        "a repeat says paid"
    );
    for h in [&h1, &h2] {
        let v = stats_where(h, "r", |v| v["late_payments"] == 1).await;
        assert_eq!(
            (
                v["paid_gmv_fen"].as_u64(),
                v["paid_orders"].as_u64(),
                v["unpaid_fen"].as_u64()
            ),
            (Some(990), Some(1), Some(0)),
            "{v}"
        );
        assert_eq!(sku_of(&v, "A")["paid"], 1, "{v}");
    }
    let feed = h1.hub_order_events("r").await;
    let statuses: Vec<&str> = feed.iter().map(|e| e["status"].as_str().unwrap()).collect();
    assert_eq!(
        statuses,
        ["unpaid", "paid", "paid"],
        "placed, paid, a late payment: {feed:?}"
    );

    // A refund on the other hub, with restock: the unit and the allowance come back once.
    let path = format!("/api/rooms/r/orders/{order}/refund");
    let (code, v) = admin_move(&h2, &path, json!({"restock": true})).await;
    assert_eq!((code, v["status"].as_str()), (200, Some("refunded")), "{v}");
    let (code, v) = admin_move(&h1, &path, json!({"restock": true})).await;
    assert_eq!(code, 409, "refunded once: {v}");
    exported_as(&h1, "r", &order, "refunded").await;
    eventually(WAIT, "the unit is back in the audit", async || {
        let a = h1.audit("r").await;
        sku_of(&a, "A")["left"] == 2 && a["consistent"] == true
    })
    .await;
    let v = stats_where(&h2, "r", |v| v["refunded_fen"] == 990).await;
    assert_eq!(v["paid_gmv_fen"], 0, "{v}");
    assert_eq!(
        on_h2.buy("q3", "A", 1).await["ok"],
        true,
        "the allowance is back"
    );
}

/// A buyer cancels on either hub (only their own order), an operator cancels on the other:
/// each unit comes back once, the moves show in the placing hub's export and change feed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancels_on_any_hub_give_the_units_back_once() {
    let redis = RedisServer::start();
    let (h1, h2) = (fleet_hub(&redis, "h1").await, fleet_hub(&redis, "h2").await);
    h1.create_room("r").await;
    h1.create_sku_to_pay("r", "A", 100, 2, Some(1), 600).await;
    h2.wait_sku("r", "A").await;
    let mut u1 = h1.buyer("r", "u1").await;
    let mut u2 = h1.buyer("r", "u2").await;
    let a1 = u1.buy("q1", "A", 1).await;
    let a2 = u2.buy("q1", "A", 1).await;
    assert_eq!(a2["left"], 0, "{a2}");
    let (o1, o2) = (a1["order"].as_str().unwrap(), a2["order"].as_str().unwrap());

    let mut u1_on_h2 = h2.buyer("r", "u1").await;
    let mut u3 = h2.buyer("r", "u3").await;
    assert_eq!(
        cancel(&mut u3, "c1", o1).await["error"],
        "unknown_order",
        "not u3's order"
    );
    let ack = cancel(&mut u1_on_h2, "c1", o1).await;
    assert_eq!(
        (ack["ok"].clone(), ack["status"].clone()),
        (json!(true), json!("cancelled")),
        "{ack}"
    );
    assert_eq!(cancel(&mut u1, "c2", o1).await["error"], "not_cancellable");
    let (code, v) = admin_move(&h2, &format!("/api/rooms/r/orders/{o2}/cancel"), json!({})).await;
    assert_eq!(
        (code, v["status"].as_str()),
        (200, Some("cancelled")),
        "{v}"
    );
    let (code, _) = admin_move(&h1, &format!("/api/rooms/r/orders/{o2}/cancel"), json!({})).await;
    assert_eq!(code, 409);

    exported_as(&h1, "r", o1, "cancelled").await;
    exported_as(&h1, "r", o2, "cancelled").await;
    let feed = h1.hub_order_events("r").await;
    let by: Vec<&str> = feed.iter().filter_map(|e| e["by"].as_str()).collect();
    assert_eq!(by, ["buyer", "operator"], "{feed:?}");
    eventually(WAIT, "both units back", async || {
        let a = h2.audit("r").await;
        sku_of(&a, "A")["left"] == 2 && sku_of(&a, "A")["unpaid"] == 0 && a["consistent"] == true
    })
    .await;
    let v = stats_where(&h2, "r", |v| v["cancelled_fen"] == 200).await;
    assert_eq!(
        (v["unpaid_fen"].as_u64(), v["pay_rate"].as_f64()),
        (Some(0), Some(0.0)),
        "{v}"
    );
    // The allowance is back too: u1 buys again on the other hub.
    assert_eq!(u1_on_h2.buy("q2", "A", 1).await["ok"], true);
}

/// The placing hub expires its unpaid orders within a second of `pay_by_ms`; the orders of a
/// hub that is gone are expired by another; a restarted hub finds them expired.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unpaid_orders_expire_on_their_hub_or_on_another_when_it_is_gone() {
    let redis = RedisServer::start();
    let dir1 = temp_dir();
    let h1 = fleet_hub_in(&redis, "h1", &dir1).await;
    let h2 = fleet_hub(&redis, "h2").await;
    h1.create_room("r").await;
    h1.create_sku_to_pay("r", "A", 100, 2, Some(1), 10).await;
    h2.wait_sku("r", "A").await;
    let mut u1 = h1.buyer("r", "u1").await;
    let mut u2 = h1.buyer("r", "u2").await;
    let kept = u1.buy("q1", "A", 1).await;
    let gone = u2.buy("q1", "A", 1).await;
    let (kept_order, gone_order) = (
        kept["order"].as_str().unwrap(),
        gone["order"].as_str().unwrap(),
    );
    let pay_by = kept["pay_by_ms"].as_i64().unwrap();
    drop(u2);

    // h1 stops: its orders outlive it in Redis, and h2 expires them once h1's heartbeat ends.
    // (u1's order is paid first: only u2's expires.)
    let (code, _) = h2.pay("r", kept_order, "p-kept", 100).await;
    assert_eq!(code, 200);
    let dir1 = h1.stop().await;
    drop(u1);
    let v = stats_where(&h2, "r", |v| v["expired_fen"] == 100).await;
    let expired_at = livehub::clock::now_ms();
    assert!(
        expired_at >= pay_by && expired_at <= pay_by + 5_000,
        "expired at {expired_at}, pay_by_ms {pay_by}"
    );
    assert_eq!(
        (v["paid_orders"].as_u64(), v["unpaid_fen"].as_u64()),
        (Some(1), Some(0)),
        "{v}"
    );
    eventually(WAIT, "the unit is back", async || {
        sku_of(&h2.audit("r").await, "A")["left"] == 1
    })
    .await;

    // h1 comes back: its export shows what happened while it was away.
    let h1 = fleet_hub_in(&redis, "h1", &dir1).await;
    exported_as(&h1, "r", gone_order, "expired").await;
    exported_as(&h1, "r", kept_order, "paid").await;

    // On a running hub, its own order expires within a second of its time.
    let mut u3 = h1.buyer("r", "u3").await;
    let own = u3.buy("q1", "A", 1).await;
    let own_order = own["order"].as_str().unwrap().to_owned();
    let own_by = own["pay_by_ms"].as_i64().unwrap();
    let pushed = tokio::time::timeout(
        Duration::from_secs(15),
        u3.push_where(|v| v["op"] == "order" && v["order"] == own_order.as_str()),
    )
    .await
    .expect("the expiry is pushed");
    assert_eq!(pushed["status"], "expired");
    let line = exported_as(&h1, "r", &own_order, "expired").await;
    let ended = line["ended_at_ms"].as_i64().unwrap();
    assert!(
        (own_by..=own_by + 1000).contains(&ended),
        "expired at {ended}, pay_by_ms {own_by}"
    );
    eventually(WAIT, "the unit is back once", async || {
        let a = h2.audit("r").await;
        sku_of(&a, "A")["left"] == 1 && a["consistent"] == true
    })
    .await;
}

/// Two hubs race payments, buyer cancels and operator cancels of the same orders: every order
/// ends in exactly one status, answered the same on both hubs, and the units of the cancelled
/// ones come back exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn racing_hubs_move_each_order_once_and_release_nothing_twice() {
    const ORDERS: usize = 60;
    let redis = RedisServer::start();
    let (h1, h2) = (fleet_hub(&redis, "h1").await, fleet_hub(&redis, "h2").await);
    h1.create_room("r").await;
    h1.create_sku_to_pay("r", "A", 100, ORDERS as u64 + 10, None, 600)
        .await;
    h2.wait_sku("r", "A").await;
    let mut orders = Vec::new();
    for i in 0..ORDERS {
        let h = if i % 2 == 0 { &h1 } else { &h2 };
        let mut b = h.buyer("r", &format!("u{i}")).await;
        let ack = b.buy("q", "A", 1).await;
        assert_eq!(ack["ok"], true, "{ack}");
        orders.push(ack["order"].as_str().unwrap().to_owned());
    }
    // For each order at once: a payment on one hub, an operator cancel on the other, and a
    // second payment (another id) on the first.
    let mut tasks = Vec::new();
    for (i, order) in orders.iter().enumerate() {
        let (a, b) = if i % 2 == 0 { (&h1, &h2) } else { (&h2, &h1) };
        let pay = {
            let (url, http) = (a.addr, a.http.clone());
            let order = order.clone();
            async move { support::signed_payment(&http, url, "r", &order, &format!("p{i}"), 100).await }
        };
        let pay2 = {
            let (url, http) = (b.addr, b.http.clone());
            let order = order.clone();
            async move { support::signed_payment(&http, url, "r", &order, &format!("x{i}"), 100).await }
        };
        let cancel = {
            let http = b.http.clone();
            let url = b.url(&format!("/api/rooms/r/orders/{order}/cancel"));
            async move {
                let r = http.post(url).bearer_auth(ADMIN).send().await.unwrap();
                r.status().as_u16()
            }
        };
        tasks.push(tokio::spawn(async move { tokio::join!(pay, cancel, pay2) }));
    }
    let mut paid = 0;
    for t in tasks {
        let ((p, _), c, (p2, _)) = t.await.unwrap();
        assert!([200, 409].contains(&p) && [200, 409].contains(&c) && [200, 409].contains(&p2));
        // Exactly one of the three moved the order out of unpaid.
        let moved = [p == 200, c == 200, p2 == 200]
            .iter()
            .filter(|x| **x)
            .count();
        assert_eq!(moved, 1, "pay {p}, cancel {c}, pay2 {p2}");
        if c != 200 {
            paid += 1;
        }
    }
    let cancelled = ORDERS - paid;
    let total = ORDERS as u64 + 10;
    eventually(WAIT, "the audit settles", async || {
        let a = h1.audit("r").await;
        let s = sku_of(&a, "A");
        s["left"] == total - paid as u64 && s["unpaid"] == 0 && a["consistent"] == true
    })
    .await;
    // A losing payment is kept as a late one: one per paid order, two per cancelled one.
    let late = paid + 2 * cancelled;
    for h in [&h1, &h2] {
        stats_where(h, "r", |v| {
            v["paid_orders"] == paid
                && v["cancelled_fen"] == cancelled * 100
                && v["late_payments"] == late
                && v["unpaid_fen"] == 0
        })
        .await;
    }
    let mut exported = h1.hub_export("r").await;
    exported.extend(h2.hub_export("r").await);
    assert_eq!(exported.len(), ORDERS);
    let paid_lines = exported.iter().filter(|o| o["status"] == "paid").count();
    assert_eq!(paid_lines, paid);
    let held: std::collections::HashMap<String, i64> =
        redis.query(redis::cmd("HGETALL").arg("lh:{r}:held:A"));
    assert_eq!(
        held.values().sum::<i64>(),
        paid as i64,
        "allowances: {held:?}"
    );
    let claims: std::collections::HashMap<String, String> =
        redis.query(redis::cmd("HGETALL").arg("lh:{r}:claims"));
    assert!(claims.is_empty(), "no claim is left: {claims:?}");
}

/// A hub that stopped between a claim and its journal leaves the claim: the order answers
/// `unavailable` meanwhile, and the hub's start gives it back, so the order can move again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_claim_never_journaled_is_given_back_when_its_hub_starts() {
    let redis = RedisServer::start();
    let dir = temp_dir();
    let h1 = fleet_hub_in(&redis, "h1", &dir).await;
    h1.create_room("r").await;
    h1.create_sku_to_pay("r", "A", 100, 1, None, 600).await;
    let mut b = h1.buyer("r", "u1").await;
    let order = b.buy("q", "A", 1).await["order"]
        .as_str()
        .unwrap()
        .to_owned();
    drop(b);
    let dir = h1.stop().await;
    // What a crash right after the claim script leaves: the claim, and the payment id claimed.
    let _: () = redis.query(
        redis::cmd("HSET")
            .arg("lh:{r}:claims")
            .arg(&order)
            .arg("h1|7|pay|p-lost"),
    );
    let _: () = redis.query(
        redis::cmd("HSET")
            .arg("lh:{r}:payments")
            .arg("p-lost")
            .arg(format!("C|{order}")),
    );
    let h2 = fleet_hub(&redis, "h2").await;
    h2.wait_sku("r", "A").await;
    let (code, v) = h2.pay("r", &order, "p-2", 100).await;
    assert_eq!(code, 503, "the order is being moved elsewhere: {v}");

    let h1 = fleet_hub_in(&redis, "h1", &dir).await;
    let (code, v) = h2.pay("r", &order, "p-lost", 100).await;
    assert_eq!((code, v["status"].as_str()), (200, Some("paid")), "{v}");
    exported_as(&h1, "r", &order, "paid").await;
}

/// A fleet hub's change feed keeps its numbering over a restart, though its moves come from
/// the room's stream and its placements from its journal: a consumer resuming after event `n`
/// gets the same events as before.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_change_feed_is_numbered_the_same_after_a_restart() {
    let redis = RedisServer::start();
    let dir = temp_dir();
    let h1 = fleet_hub_in(&redis, "h1", &dir).await;
    h1.create_room("r").await;
    h1.create_sku_to_pay("r", "A", 100, 10, None, 600).await;
    let mut b = h1.buyer("r", "u1").await;
    let first = b.buy("q1", "A", 1).await["order"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(h1.pay("r", &first, "p1", 100).await.0, 200);
    eventually(WAIT, "the payment is in the feed", async || {
        h1.hub_order_events("r").await.len() == 2
    })
    .await;
    assert_eq!(b.buy("q2", "A", 1).await["ok"], true);
    let listed = |feed: Vec<Value>| -> Vec<(Value, Value, Value)> {
        feed.into_iter()
            .map(|e| (e["event"].clone(), e["order"].clone(), e["status"].clone()))
            .collect()
    };
    eventually(WAIT, "the second order is in the feed", async || {
        h1.hub_order_events("r").await.len() == 3
    })
    .await;
    let before = listed(h1.hub_order_events("r").await);
    assert_eq!(before[1].2, "paid", "{before:?}");
    drop(b);
    let dir = h1.stop().await;
    let h1 = fleet_hub_in(&redis, "h1", &dir).await;
    eventually(WAIT, "the feed is back", async || {
        h1.hub_order_events("r").await.len() == 3
    })
    .await;
    assert_eq!(listed(h1.hub_order_events("r").await), before);
}

//! Several hubs on one Redis (`--redis`): two `server::run` instances on different ports share
//! a real `redis-server` started by the test on a free loopback port.

mod support;

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use tokio::sync::Barrier;

use livehub::fleet::buy::TicketAt;
use livehub::fleet::scripts::{Taken, Ticket};
use livehub::fleet::{keys, Fleet};
use support::redis_server::RedisServer;
use support::{eventually, temp_dir, Client, Options, TestServer, SECRET, WAIT};
use support::{fleet_hub, fleet_hub_in};

/// Both hubs' own orders of a room (`scope=hub`): each order once.
async fn exports(hubs: &[&TestServer], room: &str) -> Vec<Value> {
    let mut all = Vec::new();
    for h in hubs {
        all.extend(h.hub_export(room).await);
    }
    all
}

/// Stats once they count `orders` orders.
async fn stats_with_orders(s: &TestServer, room: &str, orders: u64) -> Value {
    let t0 = Instant::now();
    loop {
        let v = s.stats(room).await;
        if v["orders"].as_u64() == Some(orders) {
            return v;
        }
        assert!(
            t0.elapsed() < WAIT,
            "stats never reached {orders} orders: {v}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn buyer_url(s: &TestServer, room: &str, user: &str) -> String {
    format!(
        "ws://{}/ws/buy?room={room}&token={}",
        s.addr,
        livehub::auth::sign_buyer_token(SECRET, user, None, 600)
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hubs_sell_exactly_the_stock_to_2000_buyers_and_both_dashboards_show_the_whole_room() {
    let redis = RedisServer::start();
    let a = fleet_hub(&redis, "a").await;
    let b = fleet_hub(&redis, "b").await;
    a.create_room("spike").await;
    a.create_sku("spike", "A1", 990, 100, None).await;
    b.wait_sku("spike", "A1").await;

    let n = 2000;
    let barrier = Arc::new(Barrier::new(n));
    let gate = Arc::new(tokio::sync::Semaphore::new(200));
    let mut tasks = Vec::new();
    for i in 0..n {
        let (barrier, gate) = (barrier.clone(), gate.clone());
        let on = if i % 2 == 0 { &a } else { &b };
        let url = buyer_url(on, "spike", &format!("u{i}"));
        tasks.push(tokio::spawn(async move {
            let mut c = {
                let _p = gate.acquire().await.unwrap();
                Client::connect(&url).await.expect("connect")
            };
            barrier.wait().await;
            (i % 2 == 0, c.buy("r1", "A1", 1).await)
        }));
    }
    let mut ok = Vec::new();
    for t in tasks {
        let (on_a, ack) = t.await.unwrap();
        assert_eq!(ack["op"], "ack", "{ack}");
        if ack["ok"] == true {
            let order = ack["order"].as_str().unwrap().to_owned();
            // Which hub sells how many depends on which reaches Redis first (on a loaded
            // machine one hub may sell all 100); the hub that answered always names the order.
            let prefix = if on_a { "a:" } else { "b:" };
            assert!(
                order.starts_with(prefix),
                "{order} answered by hub {prefix}"
            );
            ok.push(order);
        } else {
            assert_eq!(ack["error"], "sold_out", "{ack}");
        }
    }
    assert_eq!(
        ok.len(),
        100,
        "the two hubs together sell exactly the stock"
    );
    let ids: HashSet<&String> = ok.iter().collect();
    assert_eq!(ids.len(), 100, "order ids are unique across hubs");

    let export = exports(&[&a, &b], "spike").await;
    assert_eq!(export.len(), 100);
    let exported: HashSet<&str> = export
        .iter()
        .map(|o| o["order"].as_str().unwrap())
        .collect();
    assert!(ok.iter().all(|o| exported.contains(o.as_str())));

    // Each hub's dashboard shows the whole room, and its totals are the exports' sums up to
    // the per-hub seqs it names.
    for s in [&a, &b] {
        let v = stats_with_orders(s, "spike", 100).await;
        assert_eq!(v["gmv_fen"], 99_000, "{v}");
        assert_eq!(v["units"], 100);
        assert_eq!(v["buyers"], 100);
        assert_eq!(v["seq"], 100, "room-wide seq counts the stream's orders");
        assert_eq!(v["skus"][0]["sold"], 100);
        assert_eq!(v["skus"][0]["left"], 0);
        let hub_seqs = v["hub_seqs"].as_object().expect("hub_seqs in redis mode");
        let mut summed = 0;
        for o in &export {
            let hub = o["order"].as_str().unwrap().split(':').next().unwrap();
            if o["seq"].as_u64().unwrap() <= hub_seqs[hub].as_u64().unwrap() {
                summed += o["amount_fen"].as_u64().unwrap();
            }
        }
        assert_eq!(summed, 99_000);
        let audit = s.audit("spike").await;
        assert_eq!(audit["consistent"], true, "{audit}");
        assert_eq!(audit["skus"][0]["sold"], 100);
    }
    let mut dash = b.dashboard("spike").await;
    let snap = dash.next_json().await.expect("snapshot");
    assert_eq!(snap["op"], "snapshot");
    assert_eq!(snap["gmv_fen"], 99_000, "{snap}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_per_user_limit_holds_across_hubs() {
    let redis = RedisServer::start();
    let a = fleet_hub(&redis, "a").await;
    let b = fleet_hub(&redis, "b").await;
    a.create_room("r").await;
    a.create_sku("r", "L", 500, 1000, Some(2)).await;
    b.wait_sku("r", "L").await;
    let mut tasks = Vec::new();
    for (c, on) in [&a, &b, &a, &b].into_iter().enumerate() {
        let url = buyer_url(on, "r", "greedy");
        tasks.push(tokio::spawn(async move {
            let mut cl = Client::connect(&url).await.unwrap();
            for i in 0..10 {
                cl.send_json(
                    json!({"op": "buy", "req": format!("c{c}-{i}"), "sku": "L", "qty": 1}),
                )
                .await;
            }
            let mut acks = Vec::new();
            for _ in 0..10 {
                acks.push(cl.reply().await);
            }
            acks
        }));
    }
    let mut ok = 0;
    for t in tasks {
        for ack in t.await.unwrap() {
            if ack["ok"] == true {
                ok += 1;
            } else {
                assert_eq!(ack["error"], "limit_exceeded", "{ack}");
            }
        }
    }
    assert_eq!(ok, 2, "one user, four connections on two hubs, limit 2");
    assert_eq!(exports(&[&a, &b], "r").await.len(), 2);
    let mut other = Client::connect(&buyer_url(&b, "r", "someone-else"))
        .await
        .unwrap();
    assert_eq!(
        other.buy("x", "L", 2).await["ok"],
        true,
        "others are not limited by them"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_repeated_req_gets_the_same_order_on_either_hub() {
    let redis = RedisServer::start();
    let a = fleet_hub(&redis, "a").await;
    let b = fleet_hub(&redis, "b").await;
    a.create_room("r").await;
    a.create_sku("r", "A", 990, 10, None).await;
    a.create_sku("r", "B", 100, 10, None).await;
    b.wait_sku("r", "B").await;
    let mut on_a = Client::connect(&buyer_url(&a, "r", "u")).await.unwrap();
    let first = on_a.buy("r1", "A", 2).await;
    assert_eq!(first["ok"], true, "{first}");
    let order = first["order"].as_str().unwrap().to_owned();
    assert!(order.starts_with("a:O"), "{order}");

    let mut on_b = Client::connect(&buyer_url(&b, "r", "u")).await.unwrap();
    let again = on_b.buy("r1", "A", 2).await;
    assert_eq!(again["ok"], true, "{again}");
    assert_eq!(
        again["order"],
        order.as_str(),
        "the same order, from the other hub"
    );
    assert_eq!(again["amount_fen"], 1980);
    // The idempotency key is (room, user, req), whatever the SKU named.
    let other_sku = on_b.buy("r1", "B", 1).await;
    assert_eq!(other_sku["order"], order.as_str(), "{other_sku}");
    let status = {
        on_b.send_json(json!({"op": "status", "req": "r1"})).await;
        on_b.reply().await
    };
    // `status` on hub b finds the order hub a took.
    assert_eq!(status["ok"], true, "{status}");
    assert_eq!(status["order"], order.as_str());
    let unknown = {
        on_b.send_json(json!({"op": "status", "req": "never"}))
            .await;
        on_b.reply().await
    };
    assert_eq!(unknown["error"], "unknown_request", "{unknown}");
    let export = exports(&[&a, &b], "r").await;
    assert_eq!(export.len(), 1, "one order, however often it is asked for");
    // Hub b's copy of the stock follows Redis within its refresh interval.
    let t0 = Instant::now();
    loop {
        let v = stats_with_orders(&b, "r", 1).await;
        let left = |i: usize| (v["skus"][i]["sku"].clone(), v["skus"][i]["left"].clone());
        if left(0) == (json!("A"), json!(8)) {
            assert_eq!(left(1), (json!("B"), json!(10)), "{v}");
            break;
        }
        assert!(t0.elapsed() < WAIT, "{v}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_changes_on_one_hub_reach_the_other_hubs_buyers() {
    let redis = RedisServer::start();
    let a = fleet_hub(&redis, "a").await;
    let b = fleet_hub(&redis, "b").await;
    a.create_room("r").await;
    a.create_sku("r", "S", 990, 3, None).await;
    b.wait_sku("r", "S").await;
    let mut buyer = Client::connect(&buyer_url(&b, "r", "u")).await.unwrap();
    assert_eq!(buyer.hello.as_ref().unwrap()["skus"][0]["left"], 3);

    a.admin("POST", "/api/rooms/r/skus/S/close", None).await;
    let sale = buyer
        .push_where(|v| v["op"] == "sale" && v["state"] == "closed")
        .await;
    assert_eq!(sale["sku"], "S");
    assert_eq!(buyer.buy("b1", "S", 1).await["error"], "closed");

    a.admin("POST", "/api/rooms/r/skus/S/open", None).await;
    buyer
        .push_where(|v| v["op"] == "sale" && v["state"] == "open")
        .await;
    a.admin(
        "POST",
        "/api/rooms/r/skus/S/stock",
        Some(json!({"delta": 5})),
    )
    .await;
    buyer
        .push_where(|v| v["op"] == "stock" && v["left"] == 8)
        .await;
    // A withdrawal larger than what is left is refused on either hub.
    let (status, body) = b
        .request(
            "POST",
            "/api/rooms/r/skus/S/stock",
            Some(support::ADMIN),
            Some(json!({"delta": -9})),
        )
        .await;
    assert_eq!(status, 409, "{body}");
    // Stock taken by a buyer on hub a shows in hub b's pushes.
    let mut on_a = Client::connect(&buyer_url(&a, "r", "v")).await.unwrap();
    assert_eq!(on_a.buy("a1", "S", 8).await["ok"], true);
    buyer
        .push_where(|v| v["op"] == "stock" && v["left"] == 0)
        .await;
    // A SKU made on hub a after the buyer joined hub b can be bought there.
    a.create_sku("r", "NEW", 100, 1, None).await;
    let ack = buyer.buy("b2", "NEW", 1).await;
    assert_eq!(ack["ok"], true, "{ack}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn buys_answer_unavailable_while_redis_is_down_and_the_hub_recovers_by_itself() {
    let mut redis = RedisServer::start();
    let a = fleet_hub(&redis, "a").await;
    a.create_room("r").await;
    a.create_sku("r", "S", 100, 10, None).await;
    let mut c = Client::connect(&buyer_url(&a, "r", "u")).await.unwrap();
    assert_eq!(c.buy("r1", "S", 1).await["ok"], true);
    redis.stop();
    let ack = c.buy("r2", "S", 1).await;
    assert_eq!(ack["ok"], false, "{ack}");
    assert_eq!(ack["error"], "unavailable", "{ack}");
    redis.restart();
    let t0 = Instant::now();
    let ack = loop {
        let ack = c.buy("r2", "S", 1).await;
        if ack["ok"] == true {
            break ack;
        }
        assert_eq!(ack["error"], "unavailable", "{ack}");
        assert!(t0.elapsed() < WAIT, "the hub never recovered");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(ack["left"], 8, "the refused attempt took nothing: {ack}");
    assert_eq!(a.hub_export("r").await.len(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_stopped_and_restarted_mid_load_loses_no_acked_order_and_oversells_nothing() {
    let mut redis = RedisServer::start();
    let a = fleet_hub(&redis, "a").await;
    let b = fleet_hub(&redis, "b").await;
    let stock = 300;
    a.create_room("r").await;
    a.create_sku("r", "S", 990, stock, None).await;
    b.wait_sku("r", "S").await;

    let acked = Arc::new(AtomicU64::new(0));
    let unavailable = Arc::new(AtomicU64::new(0));
    let restarted = Arc::new(AtomicBool::new(false));
    let ok_after_restart = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::new();
    for i in 0..40 {
        let on = if i % 2 == 0 { &a } else { &b };
        let url = buyer_url(on, "r", &format!("u{i}"));
        let (acked, unavailable, restarted, ok_after) = (
            acked.clone(),
            unavailable.clone(),
            restarted.clone(),
            ok_after_restart.clone(),
        );
        tasks.push(tokio::spawn(async move {
            let mut c = Client::connect(&url).await.unwrap();
            let mut orders = Vec::new();
            // Bounded: at most 400 buys per buyer, and stop once some succeeded after the
            // restart and this buyer made its 10.
            for n in 0..400 {
                let ack = c.buy(&format!("q{n}"), "S", 1).await;
                if ack["ok"] == true {
                    orders.push(ack["order"].as_str().unwrap().to_owned());
                    acked.fetch_add(1, Ordering::SeqCst);
                    if restarted.load(Ordering::SeqCst) {
                        ok_after.fetch_add(1, Ordering::SeqCst);
                    }
                } else {
                    match ack["error"].as_str() {
                        Some("unavailable") => {
                            unavailable.fetch_add(1, Ordering::SeqCst);
                        }
                        Some("sold_out" | "insufficient_stock") => break,
                        _ => panic!("unexpected ack {ack}"),
                    }
                    // Not synchronisation: a refused buyer backs off a moment before it tries
                    // again, so 40 of them do not spin while Redis is down.
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
                if restarted.load(Ordering::SeqCst) && orders.len() >= 10 {
                    break;
                }
            }
            orders
        }));
    }
    eventually(WAIT, "40 orders before the stop", async || {
        acked.load(Ordering::SeqCst) >= 40
    })
    .await;
    redis.stop();
    eventually(WAIT, "buys refused while redis is down", async || {
        unavailable.load(Ordering::SeqCst) >= 20
    })
    .await;
    redis.restart();
    restarted.store(true, Ordering::SeqCst);

    let mut ok = Vec::new();
    for t in tasks {
        ok.extend(t.await.unwrap());
    }
    assert!(
        ok_after_restart.load(Ordering::SeqCst) > 0,
        "buys succeed again after redis came back"
    );
    assert!(unavailable.load(Ordering::SeqCst) >= 20);
    assert!(ok.len() as u64 <= stock, "no oversell: {} orders", ok.len());
    let export = exports(&[&a, &b], "r").await;
    let exported: HashSet<&str> = export
        .iter()
        .map(|o| o["order"].as_str().unwrap())
        .collect();
    for o in &ok {
        assert!(
            exported.contains(o.as_str()),
            "acked order {o} is in no export"
        );
    }
    assert_eq!(export.len(), ok.len(), "every journaled order was acked");
    let units: u64 = export.iter().map(|o| o["qty"].as_u64().unwrap()).sum();
    assert!(units <= stock);

    // Once the tickets of refused buys are released and every order published, Redis and the
    // journals agree exactly: stock_total = left + sold, nothing in flight.
    let t0 = Instant::now();
    let audit = loop {
        let audit = a.audit("r").await;
        if audit["consistent"] == true && audit["skus"][0]["sold"] == ok.len() as u64 {
            break audit;
        }
        assert!(t0.elapsed() < WAIT, "never consistent again: {audit}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(
        audit["skus"][0]["left"].as_u64().unwrap() + ok.len() as u64,
        stock
    );
    stats_with_orders(&b, "r", ok.len() as u64).await;
}

/// What a hub that crashed right after the buy script leaves: a ticket, no order.
async fn orphan_ticket(redis: &RedisServer, hub: &str, room: &str, sku: &str, user: &str) {
    let fleet = Fleet::connect(&redis.hub(hub)).await.unwrap();
    let at = TicketAt {
        room: room.into(),
        user: user.into(),
        field: keys::request_field(user, "r1"),
        ticket: Ticket {
            hub: hub.into(),
            nonce: 1,
            sku: sku.into(),
            qty: 1,
        },
    };
    let taken = fleet.take(&at, 1, livehub::clock::now_ms()).await.unwrap();
    assert!(matches!(taken, Taken::Ok { .. }), "{taken:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_between_redis_and_the_journal_leaves_a_unit_unsold_until_repaired() {
    let redis = RedisServer::start();
    let dir = temp_dir();
    let a = fleet_hub_in(&redis, "a", &dir).await;
    std::fs::write(dir.join("hub.id"), "a").unwrap();
    a.create_room("r").await;
    a.create_sku("r", "S", 100, 10, None).await;
    let mut c = Client::connect(&buyer_url(&a, "r", "real")).await.unwrap();
    assert_eq!(c.buy("r1", "S", 1).await["ok"], true);
    drop(c);
    let dir = a.stop().await;

    orphan_ticket(&redis, "a", "r", "S", "ghost").await;
    let report =
        livehub::fleet::reconcile::reconcile(&redis.url(), std::slice::from_ref(&dir), false)
            .await
            .unwrap();
    let sku = &report.skus[0];
    assert_eq!((sku.stock_total, sku.left, sku.sold), (10, 8, 1));
    assert_eq!(sku.tickets, 1, "{report:?}");
    assert_eq!(sku.journaled, 1);
    assert_eq!(sku.unaccounted, 0, "the unit is held, not lost");
    assert_eq!(report.hubs[0].orphan_tickets, 1);
    assert!(!report.consistent);

    // The hub's own start-up releases it: its journal has no such order.
    let a = fleet_hub_in(&redis, "a", &dir).await;
    let mut ghost = Client::connect(&buyer_url(&a, "r", "ghost")).await.unwrap();
    let ack = ghost.buy("r1", "S", 1).await;
    assert_eq!(ack["ok"], true, "decided afresh: {ack}");
    assert_eq!(
        ack["left"], 8,
        "the held unit came back before this buy: {ack}"
    );
    let dir = a.stop().await;
    let report =
        livehub::fleet::reconcile::reconcile(&redis.url(), std::slice::from_ref(&dir), false)
            .await
            .unwrap();
    assert!(report.consistent, "{report:?}");

    // The reconcile command repairs a stopped hub the same way.
    orphan_ticket(&redis, "a", "r", "S", "ghost2").await;
    let report =
        livehub::fleet::reconcile::reconcile(&redis.url(), std::slice::from_ref(&dir), true)
            .await
            .unwrap();
    assert!(report.consistent, "{report:?}");
    assert_eq!(report.skus[0].left, 8);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_journal_failure_after_the_redis_take_gives_the_stock_back() {
    let redis = RedisServer::start();
    let a = fleet_hub(&redis, "a").await;
    a.create_room("r").await;
    a.create_sku("r", "S", 100, 1, None).await;
    let mut c = Client::connect(&buyer_url(&a, "r", "u")).await.unwrap();
    a.faults.fail_next_writes(1);
    let ack = c.buy("r1", "S", 1).await;
    assert_eq!(ack["error"], "unavailable", "{ack}");
    let t0 = Instant::now();
    loop {
        let left: Option<u64> =
            redis.query(redis::cmd("HGET").arg(keys::sku("r", "S")).arg("left"));
        if left == Some(1) {
            break;
        }
        assert!(t0.elapsed() < WAIT, "the unit never came back");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let ack = c.buy("r1", "S", 1).await;
    assert_eq!(ack["ok"], true, "the same req is decided afresh: {ack}");
    assert_eq!(a.hub_export("r").await.len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_hub_keeps_its_order_ids_and_publishes_nothing_twice() {
    let redis = RedisServer::start();
    let dir = temp_dir();
    let a = fleet_hub_in(&redis, "a", &dir).await;
    let b = fleet_hub(&redis, "b").await;
    a.create_room("r").await;
    a.create_sku("r", "S", 100, 10, None).await;
    let mut c = Client::connect(&buyer_url(&a, "r", "u")).await.unwrap();
    let first = c.buy("r1", "S", 1).await["order"]
        .as_str()
        .unwrap()
        .to_owned();
    drop(c);
    let dir = a.stop().await;
    let a = fleet_hub_in(&redis, "a", &dir).await;
    let mut c = Client::connect(&buyer_url(&a, "r", "u")).await.unwrap();
    assert_eq!(c.buy("r1", "S", 1).await["order"], first.as_str());
    let second = c.buy("r2", "S", 1).await["order"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_ne!(first, second);
    assert!(second.starts_with("a:O"));
    let v = stats_with_orders(&b, "r", 2).await;
    assert_eq!(v["gmv_fen"], 200, "{v}");
    let stream_len: u64 = redis.query(redis::cmd("XLEN").arg(keys::orders("r")));
    assert_eq!(stream_len, 2, "the restart published nothing twice");
}

#[test]
fn a_missing_redis_server_fails_with_a_clear_message() {
    let err = std::panic::catch_unwind(|| {
        support::redis_server::RedisServer::start_with("/nonexistent/redis-server")
    })
    .err()
    .expect("starting a missing redis-server fails");
    let msg = err.downcast_ref::<String>().cloned().unwrap_or_default();
    assert!(msg.contains("apt-get install -y redis-server"), "{msg}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hung_redis_times_buys_out_and_the_tickets_they_may_have_left_are_released() {
    let redis = RedisServer::start();
    let mut fleet = redis.hub("a");
    // One buyer, no crowd: a short timeout is safe here, and it is what a hung Redis meets.
    fleet.timeout = Duration::from_millis(300);
    let a = TestServer::start_with(Options {
        fleet: Some(fleet),
        ..Options::default()
    })
    .await;
    a.create_room("r").await;
    a.create_sku("r", "S", 100, 10, None).await;
    let mut c = Client::connect(&buyer_url(&a, "r", "u")).await.unwrap();
    assert_eq!(c.buy("r1", "S", 1).await["ok"], true);
    // SIGSTOP: connections stay open, nothing is answered. The buy's script is sent and will
    // run when Redis wakes up, after the buy was already answered `unavailable`.
    redis.pause();
    let ack = c.buy("r2", "S", 1).await;
    assert_eq!(ack["error"], "unavailable", "{ack}");
    redis.resume();
    // The background release undoes whatever that attempt left: the stock comes back to 9.
    let t0 = Instant::now();
    loop {
        let (left, tickets): (Option<u64>, u64) = (
            redis.query(redis::cmd("HGET").arg(keys::sku("r", "S")).arg("left")),
            redis.query(redis::cmd("SCARD").arg(keys::pending("r", "a"))),
        );
        if left == Some(9) && tickets == 0 {
            break;
        }
        assert!(
            t0.elapsed() < WAIT,
            "left {left:?}, open tickets {tickets}: the timed-out attempt still holds stock"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let ack = c.buy("r2", "S", 1).await;
    assert_eq!(ack["ok"], true, "decided afresh once Redis answers: {ack}");
    assert_eq!(ack["left"], 8);
    assert_eq!(a.hub_export("r").await.len(), 2);
}

/// Buys of SKUs that do not exist cost Redis at most one room refresh a moment (the negative
/// look-up's cache): 50 connections sending junk while real buyers buy. Every junk buy is
/// answered `unknown_sku`, every real buy is decided, and the refreshes stay few.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn junk_sku_buys_refresh_the_room_at_most_once_a_moment() {
    let redis = RedisServer::start();
    let a = fleet_hub(&redis, "a").await;
    a.create_room("r").await;
    a.create_sku("r", "A1", 100, 1000, None).await;
    let started = Instant::now();
    let before = support::metric_at(&a.addr.to_string(), "livehub_fleet_resyncs_total")
        .await
        .unwrap_or(0.0);
    let mut junk = Vec::new();
    for c in 0..50 {
        let url = buyer_url(&a, "r", &format!("junk{c}"));
        junk.push(tokio::spawn(async move {
            let mut cl = Client::connect(&url).await.unwrap();
            for i in 0..20 {
                cl.send_json(json!({"op": "buy", "req": format!("j{i}"), "sku": format!("nope{i}"), "qty": 1}))
                    .await;
            }
            for _ in 0..20 {
                let ack = cl.reply().await;
                assert_eq!(ack["error"], "unknown_sku", "{ack}");
            }
        }));
    }
    let mut real = Client::connect(&buyer_url(&a, "r", "buyer")).await.unwrap();
    for i in 0..50 {
        assert_eq!(real.buy(&format!("q{i}"), "A1", 1).await["ok"], true);
    }
    for t in junk {
        t.await.unwrap();
    }
    let resyncs = support::metric_at(&a.addr.to_string(), "livehub_fleet_resyncs_total")
        .await
        .unwrap_or(0.0)
        - before;
    let allowed = started.elapsed().as_millis() as f64
        / livehub::fleet::resync::RESYNC_ROOM_GAP.as_millis() as f64
        + 2.0;
    assert!(
        resyncs >= 1.0 && resyncs <= allowed,
        "{resyncs} refreshes for 1,000 junk buys (at most {allowed})"
    );
}

/// Fleet-mode buys are under `--max-pending-buys` like embedded ones: while Redis hangs, buys
/// beyond the limit are answered `unavailable` at once instead of queueing for Redis.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fleet_buys_are_shed_beyond_the_pending_limit() {
    let redis = RedisServer::start();
    let mut fleet = redis.hub("a");
    fleet.timeout = Duration::from_millis(500);
    let a = TestServer::start_with(Options {
        fleet: Some(fleet),
        max_pending_buys: 2,
        ..Options::default()
    })
    .await;
    a.create_room("r").await;
    a.create_sku("r", "S", 100, 100, None).await;
    let mut c = Client::connect(&buyer_url(&a, "r", "u")).await.unwrap();
    assert_eq!(c.buy("warm", "S", 1).await["ok"], true);
    redis.pause();
    for i in 0..6 {
        c.send_json(json!({"op": "buy", "req": format!("p{i}"), "sku": "S", "qty": 1}))
            .await;
    }
    let mut unavailable = 0;
    for _ in 0..6 {
        let ack = c.reply().await;
        assert_eq!(ack["error"], "unavailable", "{ack}");
        unavailable += 1;
    }
    redis.resume();
    assert_eq!(unavailable, 6);
    let shed = support::metric_at(&a.addr.to_string(), "livehub_buys_shed_total")
        .await
        .unwrap_or(0.0);
    assert!(shed >= 4.0, "{shed} buys shed: only 2 may wait for Redis");
}

/// A data dir written in fleet mode holds orders of rooms kept in Redis. Started without
/// `--redis`, it is refused: by its mode marker, and, for a data dir from before the marker,
/// by replay itself, which names the file and offset of the first order it cannot place
/// instead of skipping it (skipped orders would lose their idempotency, and a journal
/// snapshot would then delete them for good).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fleet_data_dir_started_without_redis_is_refused_and_loses_nothing() {
    let redis = RedisServer::start();
    let a = fleet_hub(&redis, "a").await;
    a.create_room("r").await;
    a.create_sku("r", "S", 100, 10, None).await;
    let mut c = Client::connect(&buyer_url(&a, "r", "u")).await.unwrap();
    assert_eq!(c.buy("q1", "S", 1).await["ok"], true);
    drop(c);
    let dir = a.stop().await;
    let journal_before = std::fs::read_dir(dir.join("journal")).unwrap().count();
    let err = match TestServer::try_start_in(&dir, Options::default()).await {
        Ok(_) => panic!("an embedded hub started on a fleet data dir"),
        Err(e) => format!("{e:#}"),
    };
    assert!(
        err.contains("fleet mode") && err.contains("--redis"),
        "{err}"
    );
    // A data dir from before the marker: replay refuses the order it cannot place.
    std::fs::remove_file(dir.join("mode")).unwrap();
    let err = match TestServer::try_start_in(&dir, Options::default()).await {
        Ok(_) => panic!("an embedded hub replayed a fleet journal"),
        Err(e) => format!("{e:#}"),
    };
    assert!(
        err.contains(".seg") && err.contains("offset"),
        "names file and offset: {err}"
    );
    assert!(err.contains("room r") && err.contains("--redis"), "{err}");
    assert_eq!(
        std::fs::read_dir(dir.join("journal")).unwrap().count(),
        journal_before,
        "nothing written or compacted"
    );
    // And the fleet hub still starts on it, with its order.
    let again = fleet_hub_in(&redis, "a", &dir).await;
    assert_eq!(again.hub_export("r").await.len(), 1);
}

/// An embedded hub's data dir holds its rooms and SKUs in its journal: a fleet hub refuses it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_embedded_data_dir_started_in_fleet_mode_is_refused() {
    let redis = RedisServer::start();
    let e = TestServer::start().await;
    e.create_room("r").await;
    let dir = e.stop().await;
    let err = match TestServer::try_start_in(
        &dir,
        Options {
            fleet: Some(redis.hub("a")),
            ..Options::default()
        },
    )
    .await
    {
        Ok(_) => panic!("a fleet hub started on an embedded data dir"),
        Err(e) => format!("{e:#}"),
    };
    assert!(
        err.contains("embedded hub") && err.contains("without --redis"),
        "{err}"
    );
    // It still starts as it was.
    let again = TestServer::start_in(&dir, Options::default()).await;
    let (status, _) = again
        .request("GET", "/api/rooms/r/audit", Some(support::VIEWER), None)
        .await;
    assert_eq!(status, 200);
}

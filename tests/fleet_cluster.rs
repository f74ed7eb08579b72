//! Several hubs on a real Redis Cluster (`--redis redis+cluster://…`): the test support starts
//! `redis-server` nodes with `--cluster-enabled yes` on free loopback ports and joins them with
//! `redis-cli --cluster create`. Two rooms whose hash tags land on different masters sell at
//! once; a resharding and a failover happen under load and sell nothing twice.

mod support;

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use tokio::sync::Barrier;

use livehub::fleet::keys;
use support::redis_cluster::RedisCluster;
use support::{eventually, temp_dir, Client, Options, TestServer, SECRET, WAIT};

/// The longest any phase of these tests may take before it fails.
const PHASE: Duration = Duration::from_secs(40);

/// The two tests run one at a time: each runs a cluster and thousands of buyers, and on a
/// two-core machine two at once starve the nodes' heartbeats, so a cluster may not settle.
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

async fn cluster_hub(cluster: &RedisCluster, id: &str) -> TestServer {
    TestServer::start_in(
        &temp_dir(),
        Options {
            fleet: Some(cluster.hub(id)),
            ..Options::default()
        },
    )
    .await
}

fn buyer_url(s: &TestServer, room: &str, user: &str) -> String {
    format!(
        "ws://{}/ws/buy?room={room}&token={}",
        s.addr,
        livehub::auth::sign_buyer_token(SECRET, user, None, 600)
    )
}

/// Two room ids whose keys live on two different masters (checked against the cluster's own
/// `CLUSTER KEYSLOT`).
fn rooms_on_two_masters(cluster: &RedisCluster) -> [(String, u16); 2] {
    let mut found: Vec<(String, u16, u16)> = Vec::new();
    for i in 0..100 {
        let room = format!("live{i}");
        let key = keys::room(&room);
        let slot = keys::slot(&key);
        let theirs: u16 = cluster.query(
            cluster.nodes[0].port,
            redis::cmd("CLUSTER").arg("KEYSLOT").arg(&key),
        );
        assert_eq!(slot, theirs, "our slot of {key} is Redis's");
        let master = cluster.master_of(slot);
        if found.iter().all(|f| f.2 != master) {
            found.push((room, slot, master));
        }
        if found.len() == 2 {
            return [
                (found[0].0.clone(), found[0].1),
                (found[1].0.clone(), found[1].1),
            ];
        }
    }
    panic!("no two rooms on two masters among 100 names")
}

/// Each hub's own orders (`scope=hub`; the hub's id prefixes them), so each order is counted
/// once.
async fn own_orders(hubs: &[(&str, &TestServer)], room: &str) -> Vec<Value> {
    let mut out = Vec::new();
    for (id, h) in hubs {
        let prefix = format!("{id}:");
        out.extend(
            h.hub_export(room)
                .await
                .into_iter()
                .filter(|o| o["order"].as_str().is_some_and(|s| s.starts_with(&prefix))),
        );
    }
    out
}

/// Every order acked once in the exports, with its buyer and units; returns the exported
/// units per user.
fn check_exported(acked: &[(String, String, u64)], exported: &[Value]) -> HashMap<String, u64> {
    let mut by_id: HashMap<&str, &Value> = HashMap::new();
    for o in exported {
        let id = o["order"].as_str().unwrap();
        assert!(by_id.insert(id, o).is_none(), "{id} exported twice");
    }
    assert_eq!(
        by_id.len(),
        acked.len(),
        "exports hold exactly the acked orders"
    );
    let mut per_user: HashMap<String, u64> = HashMap::new();
    for (order, user, qty) in acked {
        let o = by_id
            .get(order.as_str())
            .unwrap_or_else(|| panic!("acked {order} is not exported"));
        assert_eq!(o["user"], user.as_str(), "{o}");
        assert_eq!(o["qty"].as_u64(), Some(*qty), "{o}");
        *per_user.entry(user.clone()).or_default() += qty;
    }
    per_user
}

/// Waits until both hubs' audits of `room` are consistent and count `sold` units of `sku`.
async fn audits_agree(hubs: &[&TestServer], room: &str, sold: u64) {
    for h in hubs {
        eventually(WAIT, "the audit settles", async || {
            let a = h.audit(room).await;
            a["consistent"] == true && a["skus"][0]["sold"].as_u64() == Some(sold)
        })
        .await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hubs_on_a_cluster_sell_two_rooms_on_two_masters_to_2000_buyers() {
    let _one = ONE_AT_A_TIME.lock().await;
    let cluster = tokio::task::spawn_blocking(|| RedisCluster::start(3, 0))
        .await
        .unwrap();
    let rooms = rooms_on_two_masters(&cluster);
    let a = cluster_hub(&cluster, "a").await;
    let b = cluster_hub(&cluster, "b").await;
    const STOCK: u64 = 300;
    const LIMIT: u64 = 2;
    for (room, _) in &rooms {
        a.create_room(room).await;
        a.create_sku(room, "A1", 990, STOCK, Some(LIMIT)).await;
        b.wait_sku(room, "A1").await;
    }

    // 1,000 buyers a room, half on each hub; each asks for three units one at a time, so
    // demand (3,000) passes both the stock and the per-user limit.
    let n = 2000;
    let barrier = Arc::new(Barrier::new(n));
    let gate = Arc::new(tokio::sync::Semaphore::new(200));
    let mut tasks = Vec::new();
    for i in 0..n {
        let (barrier, gate) = (barrier.clone(), gate.clone());
        let room = rooms[i % 2].0.clone();
        let on = if (i / 2) % 2 == 0 { &a } else { &b };
        let user = format!("u{i}");
        let url = buyer_url(on, &room, &user);
        tasks.push(tokio::spawn(async move {
            let mut c = {
                let _p = gate.acquire().await.unwrap();
                Client::connect(&url).await.expect("connect")
            };
            barrier.wait().await;
            let mut acks = Vec::new();
            for req in ["r1", "r2", "r3"] {
                acks.push(c.buy(req, "A1", 1).await);
            }
            (room, user, acks)
        }));
    }
    let mut acked: HashMap<String, Vec<(String, String, u64)>> = HashMap::new();
    for t in tasks {
        let (room, user, acks) = t.await.unwrap();
        for ack in acks {
            assert_eq!(ack["op"], "ack", "{ack}");
            if ack["ok"] == true {
                let order = ack["order"].as_str().unwrap().to_owned();
                acked
                    .entry(room.clone())
                    .or_default()
                    .push((order, user.clone(), 1));
            } else {
                let e = ack["error"].as_str().unwrap_or("");
                assert!(
                    matches!(e, "sold_out" | "limit_exceeded" | "insufficient_stock"),
                    "{ack}"
                );
            }
        }
    }

    let hubs = [("a", &a), ("b", &b)];
    for (room, _) in &rooms {
        let mine = &acked[room];
        assert_eq!(
            mine.len() as u64,
            STOCK,
            "room {room}: the two hubs together sell exactly the stock"
        );
        let ids: HashSet<&String> = mine.iter().map(|m| &m.0).collect();
        assert_eq!(ids.len(), mine.len(), "order ids are unique across hubs");
        let exported = own_orders(&hubs, room).await;
        let per_user = check_exported(mine, &exported);
        assert!(
            per_user.values().all(|&u| u <= LIMIT),
            "room {room}: a buyer got more than the limit"
        );
        audits_agree(&[&a, &b], room, STOCK).await;
        let left: u64 = cluster.query_key(
            &keys::sku(room, "A1"),
            redis::cmd("HGET").arg(keys::sku(room, "A1")).arg("left"),
        );
        assert_eq!(left, 0, "room {room}: Redis's stock is all sold");
    }
    a.stop().await;
    b.stop().await;
}

/// What the buyers of the resharding test saw.
#[derive(Default)]
struct Seen {
    /// `(room, hub, order, user, qty, when)` of every ok ack.
    acks: Vec<(String, &'static str, String, String, u64, Instant)>,
    unavailable: u64,
}

/// Buys one unit at a time with fresh `req`s until the SKU is sold out; a buy that answers
/// `unavailable` is repeated with the same `req` (a buy is idempotent on it).
async fn buy_on(
    mut c: Client,
    room: String,
    hub: &'static str,
    user: String,
    seen: Arc<Mutex<Seen>>,
) {
    let t0 = Instant::now();
    for n in 0.. {
        let req = format!("q{n}");
        loop {
            assert!(t0.elapsed() < PHASE * 2, "{user}: the sale never ended");
            let ack = c.buy(&req, "A1", 1).await;
            assert_eq!(ack["op"], "ack", "{ack}");
            if ack["ok"] == true {
                let order = ack["order"].as_str().unwrap().to_owned();
                seen.lock().unwrap().acks.push((
                    room.clone(),
                    hub,
                    order,
                    user.clone(),
                    1,
                    Instant::now(),
                ));
                break;
            }
            match ack["error"].as_str() {
                Some("sold_out") => return,
                Some("unavailable") => {
                    seen.lock().unwrap().unavailable += 1;
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                _ => panic!("{ack}"),
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resharding_and_a_failover_under_load_sell_nothing_twice_and_buys_recover() {
    let _one = ONE_AT_A_TIME.lock().await;
    let cluster = Arc::new(
        tokio::task::spawn_blocking(|| RedisCluster::start(3, 1))
            .await
            .unwrap(),
    );
    let rooms = rooms_on_two_masters(&cluster);
    let a = cluster_hub(&cluster, "a").await;
    let b = cluster_hub(&cluster, "b").await;
    // Far more stock than the buyers take while the cluster changes; withdrawn afterwards
    // down to KEEP, which they then sell out.
    const STOCK: u64 = 50_000;
    const KEEP: u64 = 200;
    for (room, _) in &rooms {
        a.create_room(room).await;
        a.create_sku(room, "A1", 990, STOCK, None).await;
        b.wait_sku(room, "A1").await;
    }

    let seen = Arc::new(Mutex::new(Seen::default()));
    let mut tasks = Vec::new();
    for i in 0..200 {
        let room = rooms[i % 2].0.clone();
        let (hub, on) = if (i / 2) % 2 == 0 {
            ("a", &a)
        } else {
            ("b", &b)
        };
        let user = format!("u{i}");
        let c = Client::connect(&buyer_url(on, &room, &user))
            .await
            .expect("connect");
        tasks.push(tokio::spawn(buy_on(c, room, hub, user, seen.clone())));
    }
    let sold_in = |room: &str| {
        seen.lock()
            .unwrap()
            .acks
            .iter()
            .filter(|x| x.0 == room)
            .count()
    };
    eventually(PHASE, "buys flow in both rooms", async || {
        rooms.iter().all(|(r, _)| sold_in(r) >= 50)
    })
    .await;

    // Resharding: the first room's slot moves to the master that holds neither room, its
    // keys one at a time while buys go on.
    let (moved_room, moved_slot) = rooms[0].clone();
    let kept_slot = rooms[1].1;
    let target = {
        let c = cluster.clone();
        let busy = [c.master_of(moved_slot), c.master_of(kept_slot)];
        *c.masters()
            .iter()
            .find(|m| !busy.contains(m))
            .expect("a third master")
    };
    let before = sold_in(&moved_room);
    {
        let c = cluster.clone();
        tokio::task::spawn_blocking(move || {
            c.move_slot(moved_slot, target, Duration::from_millis(50))
        })
        .await
        .unwrap();
    }
    assert_eq!(cluster.master_of(moved_slot), target, "the slot moved");
    eventually(PHASE, "the moved room sells again", async || {
        sold_in(&moved_room) > before + 20
    })
    .await;

    // Failover: the second room's master hands over to its replica.
    let old_master = cluster.master_of(kept_slot);
    {
        let c = cluster.clone();
        tokio::task::spawn_blocking(move || c.failover(old_master))
            .await
            .unwrap();
    }
    assert_ne!(
        cluster.master_of(kept_slot),
        old_master,
        "the replica took over"
    );
    let recovered = Instant::now();

    // Buys succeed again on both hubs in both rooms, with no hub restarted.
    eventually(
        PHASE,
        "every hub sells in every room after the failover",
        async || {
            let s = seen.lock().unwrap();
            rooms.iter().all(|(r, _)| {
                ["a", "b"].iter().all(|h| {
                    s.acks
                        .iter()
                        .any(|x| &x.0 == r && x.1 == *h && x.5 > recovered)
                })
            })
        },
    )
    .await;

    // Withdraw all but KEEP units; the buyers sell those out.
    for (room, _) in &rooms {
        let t0 = Instant::now();
        loop {
            let left: u64 = cluster.query_key(
                &keys::sku(room, "A1"),
                redis::cmd("HGET").arg(keys::sku(room, "A1")).arg("left"),
            );
            assert!(left > KEEP, "{room}: stock ran low before the withdrawal");
            let (status, v) = a
                .request(
                    "POST",
                    &format!("/api/rooms/{room}/skus/A1/stock"),
                    Some(support::ADMIN),
                    Some(json!({"delta": -((left - KEEP) as i64)})),
                )
                .await;
            if status == 200 {
                break;
            }
            assert!(t0.elapsed() < WAIT, "withdrawal refused: {status} {v}");
        }
    }
    let t0 = Instant::now();
    for t in tasks {
        tokio::time::timeout(PHASE.saturating_sub(t0.elapsed()), t)
            .await
            .expect("the buyers sell the rest out in time")
            .unwrap();
    }

    let seen = std::mem::take(&mut *seen.lock().unwrap());
    let hubs = [("a", &a), ("b", &b)];
    for (room, _) in &rooms {
        let mine: Vec<(String, String, u64)> = seen
            .acks
            .iter()
            .filter(|x| &x.0 == room)
            .map(|x| (x.2.clone(), x.3.clone(), x.4))
            .collect();
        let units: u64 = mine.iter().map(|m| m.2).sum();
        let exported = own_orders(&hubs, room).await;
        check_exported(&mine, &exported);
        audits_agree(&[&a, &b], room, units).await;
        let audit = a.audit(room).await;
        let sku = &audit["skus"][0];
        assert_eq!(
            sku["sold"].as_u64().unwrap() + sku["left"].as_u64().unwrap(),
            sku["stock_total"].as_u64().unwrap(),
            "room {room}: every unit is sold or left: {audit}"
        );
        assert_eq!(
            sku["left"], 0,
            "room {room}: the buyers sold the rest out: {audit}"
        );
    }
    eprintln!(
        "{} buys answered unavailable during the resharding and the failover",
        seen.unavailable
    );

    // Redis against both journals: every unit is sold, left or held by a ticket; none twice.
    let dirs = vec![a.stop().await, b.stop().await];
    for (dir, id) in dirs.iter().zip(["a", "b"]) {
        std::fs::write(dir.join(livehub::fleet::HUB_ID_FILE), id).unwrap();
    }
    let report = livehub::fleet::reconcile::reconcile(&cluster.url(), &dirs, false)
        .await
        .unwrap();
    assert!(report.consistent, "{report:?}");
    for s in &report.skus {
        assert_eq!(s.unaccounted, 0, "{s:?}");
        assert_eq!(s.sold, s.journaled, "{s:?}");
    }
}

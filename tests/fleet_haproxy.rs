//! Two hubs on one Redis behind a real HAProxy that runs the repo's `deploy/haproxy.cfg`
//! (`tests/support/haproxy.rs`). Buyers connect only through HAProxy and buy under load; one
//! hub is killed with SIGKILL in the middle. Its buyers reconnect through the balancer, reach
//! the other hub and send their pending `req`s again (same ids). The killed hub restarts on
//! its data dir, at its address in the config. Afterwards: no `(user, req)` made two orders,
//! the room sold no more than its stock and its audit adds up, every acked order is in the
//! union of the hubs' exports (the killed hub's again after its restart), and the orphan
//! tickets the killed hub left were released by its restart (`livehub reconcile`).

mod support;

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::Message;

use livehub::fleet::buy::TicketAt;
use livehub::fleet::scripts::{Taken, Ticket};
use livehub::fleet::{keys, Fleet};
use support::child::{spawn_at, ChildHub};
use support::haproxy::HaProxy;
use support::redis_server::RedisServer;
use support::{eventually, eventually_ok, temp_dir, Ws, ADMIN, VIEWER, WAIT};

const ROOM: &str = "r";
const STOCK: u64 = 800;
/// Buyer sockets, one user each, each sending [`REQS`] buys of one unit, one at a time.
const BUYERS: usize = 120;
const REQS: usize = 10;
/// Acks seen before hub `h1` is killed.
const KILL_AT: usize = 300;
/// The whole load must be decided within this, retries and the restart included.
const LOAD: Duration = Duration::from_secs(45);
/// How long a buyer waits for any frame before it takes its socket for dead.
const SILENCE: Duration = Duration::from_secs(10);

/// What the buyers saw.
#[derive(Default)]
struct Seen {
    /// `(user, req)` → its ok ack, and whether it came after the kill.
    acks: HashMap<(String, String), (Value, bool)>,
    sold_out: usize,
    unavailable: usize,
    /// Sockets opened again after one broke.
    reconnects: usize,
    /// `req`s sent on a socket that broke before their answer, answered on a later socket.
    retried: usize,
}

/// A buyer socket through the balancer, once its `hello` came; `None` if the connection or
/// the upgrade failed, or the socket closed first.
async fn connect(url: &str) -> Option<Ws> {
    let (mut ws, _) = tokio::time::timeout(SILENCE, tokio_tungstenite::connect_async(url))
        .await
        .ok()?
        .ok()?;
    let hello = next_json(&mut ws).await?;
    assert_eq!(hello["op"], "hello", "{hello}");
    Some(ws)
}

/// The next text frame, or `None` when the socket closed, failed or said nothing for
/// [`SILENCE`].
async fn next_json(ws: &mut Ws) -> Option<Value> {
    loop {
        match tokio::time::timeout(SILENCE, ws.next()).await.ok()??.ok()? {
            Message::Text(t) => return Some(serde_json::from_str(&t).expect("JSON")),
            Message::Close(_) => return None,
            _ => {}
        }
    }
}

/// The answer to `req`, skipping pushes; `None` when the socket is gone.
async fn answer(ws: &mut Ws, req: &str) -> Option<Value> {
    loop {
        let v = next_json(ws).await?;
        if v["req"] == req {
            return Some(v);
        }
        assert!(
            matches!(v["op"].as_str(), Some("stock" | "sale" | "order")),
            "{v}"
        );
    }
}

/// One buyer: `REQS` buys of one unit of `A`, each sent again on a new socket (same `req`)
/// when its socket breaks, and again after `unavailable`, until it is decided.
async fn buyer(lb: String, user: String, killed: Arc<AtomicBool>, seen: Arc<Mutex<Seen>>) {
    let url = format!("ws://{lb}/ws/buy?room={ROOM}&user={user}");
    let t0 = Instant::now();
    let mut ws: Option<Ws> = None;
    let mut sockets = 0usize;
    for i in 0..REQS {
        let req = format!("q{i}");
        let mut first_socket = None;
        loop {
            assert!(t0.elapsed() < LOAD, "{user} {req}: not decided in time");
            let Some(socket) = ws.as_mut() else {
                ws = connect(&url).await;
                if ws.is_some() {
                    sockets += 1;
                    if sockets > 1 {
                        seen.lock().unwrap().reconnects += 1;
                    }
                } else {
                    // Not synchronisation: the pace of a client's reconnect attempts.
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                continue;
            };
            let frame = json!({"op": "buy", "req": req, "sku": "A", "qty": 1}).to_string();
            if socket.send(Message::text(frame)).await.is_err() {
                ws = None;
                continue;
            }
            first_socket.get_or_insert(sockets);
            let Some(ack) = answer(socket, &req).await else {
                ws = None;
                continue;
            };
            let decided = {
                let mut s = seen.lock().unwrap();
                if first_socket != Some(sockets) {
                    s.retried += 1;
                }
                if ack["ok"] == true {
                    let after_kill = killed.load(Ordering::SeqCst);
                    let before = s
                        .acks
                        .insert((user.clone(), req.clone()), (ack, after_kill));
                    assert!(before.is_none(), "{user} {req} decided twice");
                    true
                } else {
                    match ack["error"].as_str() {
                        Some("sold_out") => s.sold_out += 1,
                        Some("unavailable") => s.unavailable += 1,
                        _ => panic!("{user} {req}: {ack}"),
                    }
                    ack["error"] == "sold_out"
                }
            };
            if decided {
                break;
            }
            // Not synchronisation: the pace of a client's retries after `unavailable`.
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

/// The hub `id` on `dir`, listening at `listen`, on `redis`.
async fn hub(dir: &Path, listen: &str, id: &str, redis: &RedisServer) -> ChildHub {
    let url = redis.url();
    let flags = [
        "--redis",
        &url,
        "--hub-id",
        id,
        "--redis-timeout-ms",
        "10000",
    ];
    spawn_at(dir, listen, &flags).await
}

/// A free loopback address for a hub that must come back at the same one.
fn free_addr() -> String {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().to_string()
}

/// What a hub killed right after its buy script leaves: a ticket of `hub`, no order.
async fn orphan_ticket(redis: &RedisServer, hub: &str, user: &str, req: &str) {
    let fleet = Fleet::connect(&redis.hub(hub)).await.unwrap();
    let at = TicketAt {
        room: ROOM.into(),
        user: user.into(),
        field: keys::request_field(user, req),
        ticket: Ticket {
            hub: hub.into(),
            nonce: u64::MAX / 2,
            sku: "A".into(),
            qty: 1,
        },
    };
    let taken = fleet.take(&at, 1, livehub::clock::now_ms()).await.unwrap();
    assert!(matches!(taken, Taken::Ok { .. }), "{taken:?}");
}

/// An HTTP call through the balancer: status and body.
async fn via(
    lb: &str,
    method: &str,
    path: &str,
    token: &str,
    body: Option<Value>,
) -> (u16, String) {
    let mut rb = reqwest::Client::new()
        .request(method.parse().unwrap(), format!("http://{lb}{path}"))
        .bearer_auth(token);
    if let Some(b) = body {
        rb = rb.json(&b);
    }
    let r = rb.send().await.expect("http through haproxy");
    (r.status().as_u16(), r.text().await.unwrap())
}

/// A GET through the balancer whose answer is a JSON object: its status, the object (null if
/// the body is not JSON) and the body.
async fn get_json(lb: &str, path: &str, token: &str) -> (u16, Value, String) {
    let (st, body) = via(lb, "GET", path, token, None).await;
    (st, serde_json::from_str(&body).unwrap_or_default(), body)
}

/// The hub that decided an order, from its id (`h1:O42`).
fn hub_of(ack: &Value) -> &str {
    ack["order"].as_str().unwrap().split(':').next().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn buyers_behind_haproxy_survive_a_hub_killed_under_load() {
    let redis = RedisServer::start();
    let (d1, d2) = (temp_dir(), temp_dir());
    let (a1, a2) = (free_addr(), free_addr());
    let mut h1 = hub(&d1, &a1, "h1", &redis).await;
    let h2 = hub(&d2, &a2, "h2", &redis).await;
    let lb = HaProxy::start(&[&a1, &a2]).await;

    // The room is made through the balancer, whichever hub answers.
    let (st, body) = via(
        &lb.addr,
        "PUT",
        &format!("/api/rooms/{ROOM}"),
        ADMIN,
        Some(json!({"title": "lb"})),
    )
    .await;
    assert_eq!(st, 200, "{body}");
    let sku = json!({"name": "a", "price_fen": 100, "stock": STOCK});
    let (st, body) = via(
        &lb.addr,
        "PUT",
        &format!("/api/rooms/{ROOM}/skus/A"),
        ADMIN,
        Some(sku),
    )
    .await;
    assert_eq!(st, 200, "{body}");
    let (st, _) = via(&lb.addr, "GET", "/metrics", VIEWER, None).await;
    assert_eq!(
        st, 404,
        "the config keeps each hub's /metrics off the balancer"
    );

    let killed = Arc::new(AtomicBool::new(false));
    let seen = Arc::new(Mutex::new(Seen::default()));
    let buyers: Vec<_> = (0..BUYERS)
        .map(|k| {
            let (lb, killed, seen) = (lb.addr.clone(), killed.clone(), seen.clone());
            tokio::spawn(buyer(lb, format!("b{k}"), killed, seen))
        })
        .collect();

    // Both hubs take buys through the balancer; then h1 dies with buys in flight.
    eventually(LOAD, "acks from both hubs before the kill", async || {
        let s = seen.lock().unwrap();
        let from = |h: &str| s.acks.values().filter(|(a, _)| hub_of(a) == h).count();
        s.acks.len() >= KILL_AT && from("h1") > 10 && from("h2") > 10
    })
    .await;
    killed.store(true, Ordering::SeqCst);
    h1.child.kill().expect("SIGKILL h1");
    h1.child.wait().unwrap();
    let acked_at_kill = seen.lock().unwrap().acks.len();

    // While h1 is down the load goes on through h2; h1's buyers got there.
    eventually(LOAD, "buys acked on h2 after the kill", async || {
        seen.lock().unwrap().acks.len() >= acked_at_kill + 100
    })
    .await;
    // What h1 left in Redis: the orphan tickets of buys it had taken but not journaled when
    // killed (there may be none), and one more of the same kind, made here so the release
    // at restart is always seen.
    orphan_ticket(&redis, "h1", "ghost", "g1").await;
    let report =
        livehub::fleet::reconcile::reconcile(&redis.url(), std::slice::from_ref(&d1), false)
            .await
            .unwrap();
    let orphans = report.hubs[0].orphan_tickets;
    assert!(orphans >= 1, "{report:?}");
    for s in &report.skus {
        assert_eq!(s.unaccounted, 0, "tickets hold units, none lost: {s:?}");
    }
    eprintln!(
        "h1 killed after {acked_at_kill} acks; it left {} orphan tickets of its own",
        orphans - 1
    );

    // h1 restarts on its data dir at its address: it releases its orphan tickets before it
    // serves, and the buyers that waited on them are decided afresh.
    let h1 = hub(&d1, &a1, "h1", &redis).await;
    let t0 = Instant::now();
    for b in buyers {
        tokio::time::timeout(LOAD.saturating_sub(t0.elapsed()), b)
            .await
            .expect("the buyers finish in time")
            .unwrap();
    }
    let seen = std::mem::take(&mut *seen.lock().unwrap());
    eprintln!(
        "{} acks, {} sold out, {} unavailable, {} reconnects, {} reqs retried on a new socket",
        seen.acks.len(),
        seen.sold_out,
        seen.unavailable,
        seen.reconnects,
        seen.retried
    );
    assert!(
        seen.reconnects > 0,
        "h1's buyers reconnected through haproxy"
    );
    assert!(
        seen.retried > 0,
        "pending reqs were sent again on the new socket"
    );
    let moved = seen.acks.keys().filter(|(u, _)| {
        let on = |h: &str, after: bool| {
            seen.acks
                .iter()
                .any(|((v, _), (a, k))| v == u && hub_of(a) == h && *k == after)
        };
        on("h1", false) && on("h2", true)
    });
    assert!(
        moved.count() > 0,
        "buyers of h1 bought on h2 after the kill"
    );

    // The ghost's req is decided afresh: its unit was given back at h1's restart.
    let mut ghost = connect(&format!("ws://{}/ws/buy?room={ROOM}&user=ghost", lb.addr))
        .await
        .expect("ghost connects");
    ghost
        .send(Message::text(
            json!({"op": "buy", "req": "g1", "sku": "A", "qty": 1}).to_string(),
        ))
        .await
        .unwrap();
    let ack = answer(&mut ghost, "g1").await.expect("an answer");
    assert!(ack["ok"] == true || ack["error"] == "sold_out", "{ack}");
    let mut acks: HashMap<(String, String), Value> =
        seen.acks.into_iter().map(|(k, (a, _))| (k, a)).collect();
    if ack["ok"] == true {
        acks.insert(("ghost".into(), "g1".into()), ack);
    }

    // Every acked order once in the union of the hubs' own exports (`scope=hub`), read from
    // each hub directly (h1's after its restart), and nothing there that was not acked: no
    // (user, req) twice.
    let mut exported: HashMap<(String, String), Value> = HashMap::new();
    let mut ids = HashSet::new();
    for (id, h) in [("h1", &h1), ("h2", &h2)] {
        for o in h.hub_export(ROOM).await {
            let order = o["order"].as_str().unwrap().to_owned();
            assert!(order.starts_with(&format!("{id}:")), "{o}");
            assert!(ids.insert(order), "an order listed twice: {o}");
            let key = (
                o["user"].as_str().unwrap().to_owned(),
                o["req"].as_str().unwrap().to_owned(),
            );
            assert!(
                exported.insert(key, o.clone()).is_none(),
                "a req made two orders: {o}"
            );
        }
    }
    for (key, ack) in &acks {
        let o = exported
            .get(key)
            .unwrap_or_else(|| panic!("acked, not exported: {ack}"));
        assert_eq!(o["order"], ack["order"], "{key:?}");
        assert_eq!(o["qty"], ack["qty"], "{key:?}");
    }
    assert_eq!(exported.len(), acks.len(), "every exported order was acked");
    // The whole room's export is the same on either hub once both have read the stream, and
    // it is that union.
    let whole = eventually_ok(WAIT, "both hubs' whole-room exports", async || {
        let (a, b) = (h1.export(ROOM).await, h2.export(ROOM).await);
        if a == b && a.len() == exported.len() {
            Ok(a)
        } else {
            Err(format!("{} and {} lines", a.len(), b.len()))
        }
    })
    .await;
    for o in &whole {
        let key = (
            o["user"].as_str().unwrap().to_owned(),
            o["req"].as_str().unwrap().to_owned(),
        );
        assert_eq!(exported[&key]["order"], o["order"], "{o}");
    }
    let units: u64 = acks.values().map(|a| a["qty"].as_u64().unwrap()).sum();
    assert!(units <= STOCK, "oversold: {units} of {STOCK}");

    // The audit, through the balancer: every unit sold or left, sold as acked.
    let audit = eventually_ok(WAIT, "a consistent audit through haproxy", async || {
        let (st, a, body) = get_json(&lb.addr, &format!("/api/rooms/{ROOM}/audit"), VIEWER).await;
        let sku = &a["skus"][0];
        if st == 200 && a["consistent"] == true && sku["sold"] == units {
            Ok(a)
        } else {
            Err(body)
        }
    })
    .await;
    let sku = &audit["skus"][0];
    assert_eq!(
        sku["sold"].as_u64().unwrap() + sku["left"].as_u64().unwrap(),
        STOCK,
        "{audit}"
    );

    // Through the balancer, whichever hub answers: the export is the whole room's, the
    // snapshot's totals are the export's, and the audit agrees with both.
    let gmv: u64 = whole
        .iter()
        .map(|o| o["amount_fen"].as_u64().unwrap())
        .sum();
    for _ in 0..6 {
        let (st, body) = via(
            &lb.addr,
            "GET",
            &format!("/api/rooms/{ROOM}/orders"),
            ADMIN,
            None,
        )
        .await;
        assert_eq!(st, 200, "{body}");
        let lines: Vec<Value> = body
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(lines, whole, "the export through haproxy");
        // A snapshot is built a push interval after a change: wait for one that holds all.
        let snap = eventually_ok(WAIT, "the snapshot through haproxy", async || {
            let (st, snap, body) =
                get_json(&lb.addr, &format!("/api/rooms/{ROOM}/stats"), VIEWER).await;
            if st == 200 && snap["seq"].as_u64() == Some(whole.len() as u64) {
                Ok(snap)
            } else {
                Err(body)
            }
        })
        .await;
        assert_eq!(snap["orders"].as_u64(), Some(whole.len() as u64), "{snap}");
        assert_eq!(snap["gmv_fen"].as_u64(), Some(gmv), "{snap}");
        assert_eq!(snap["units"].as_u64(), Some(units), "{snap}");
        let (st, a, body) = get_json(&lb.addr, &format!("/api/rooms/{ROOM}/audit"), VIEWER).await;
        assert_eq!(st, 200, "{body}");
        assert_eq!(a["consistent"], true, "{a}");
        assert_eq!(a["skus"][0]["sold"].as_u64(), Some(units), "{a}");
    }

    // Redis against both journals: nothing held by a ticket, nothing unaccounted.
    for mut h in [h1, h2] {
        h.terminate();
        assert_eq!(h.exit_code().await, Some(0));
    }
    drop(lb);
    let report =
        livehub::fleet::reconcile::reconcile(&redis.url(), &[d1.clone(), d2.clone()], false)
            .await
            .unwrap();
    assert!(report.consistent, "{report:?}");
    for s in &report.skus {
        assert_eq!((s.unaccounted, s.tickets), (0, 0), "{s:?}");
        assert_eq!(s.sold, units, "{s:?}");
        assert_eq!(s.journaled, units, "{s:?}");
    }
    for h in &report.hubs {
        assert_eq!((h.orphan_tickets, h.unpublished), (0, 0), "{h:?}");
    }
    for d in [d1, d2] {
        let _ = std::fs::remove_dir_all(d);
    }
}

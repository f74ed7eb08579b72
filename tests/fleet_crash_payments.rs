//! Crash tests of orders that must be paid in fleet mode (`--redis`; docs/fleet.md, "Orders that
//! must be paid"): a child hub `h1` on a real `redis-server` is killed with SIGKILL in the
//! middle of a burst of payment notices, and in the middle of an expiry wave, then restarted
//! on the same data dir. A kill between a move's claim (Redis), its journal write and its
//! commit (Redis) leaves claims; the hub's start commits those its journal holds and gives
//! back the others before it serves. Every notice answered 200 stays paid, nothing is paid or
//! expired twice, every unit and allowance comes back once, and no claim is left. While `h1`
//! is down, a second hub `h2` expires its due orders, except those its claims hold.

mod support;

use std::collections::{HashMap, HashSet, VecDeque};
use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use redis::streams::StreamRangeReply;
use serde_json::{json, Value};

use livehub::fleet::keys;
use livehub::journal::record::Move;
use livehub::journal::recovery::{replay_with, Check};
use livehub::journal::{Apply, Mode, Record};
use support::child::{spawn, ChildHub};
use support::redis_server::RedisServer;
use support::{eventually, eventually_ok, temp_dir, Client, Options, TestServer, VIEWER, WAIT};

const PRICE: u64 = 100;
const STOCK: u64 = 1_000_000;
/// Buyer sockets that place the orders, one buyer each.
const SOCKETS: usize = 4;

fn now_ms() -> i64 {
    livehub::clock::now_ms()
}

/// Starts the `livehub` binary as hub `h1` on `dir`. The Redis timeout is long: on a loaded
/// machine a slow answer must not turn a move into `unavailable` (the tests' hubs in this
/// process use the same, `RedisServer::hub`).
async fn spawn_h1(dir: &Path, redis: &RedisServer) -> ChildHub {
    let url = redis.url();
    spawn(
        dir,
        &[
            "--redis",
            &url,
            "--hub-id",
            "h1",
            "--redis-timeout-ms",
            "10000",
        ],
    )
    .await
}

/// The claims standing in `room`: order → `hub|nonce|kind|payment_id`.
fn claims(redis: &RedisServer, room: &str) -> HashMap<String, String> {
    redis.query(redis::cmd("HGETALL").arg(keys::claims(room)))
}

/// Every order's status entry in Redis (`S|sku|user|...`).
fn statuses(redis: &RedisServer, room: &str) -> HashMap<String, String> {
    redis.query(redis::cmd("HGETALL").arg(keys::statuses(room)))
}

/// The unpaid orders Redis holds deadlines for.
fn deadlines(redis: &RedisServer, room: &str) -> HashSet<String> {
    redis.query(
        redis::cmd("ZRANGE")
            .arg(keys::deadlines(room))
            .arg(0)
            .arg(-1),
    )
}

/// The room's stream as Redis holds it, by order: how many times it was placed, and the names
/// of its moves in the order they were made (`lua/commit.lua`).
fn stream(redis: &RedisServer, room: &str) -> HashMap<String, (usize, Vec<String>)> {
    let reply: StreamRangeReply = redis.query(
        redis::cmd("XRANGE")
            .arg(keys::orders(room))
            .arg("-")
            .arg("+"),
    );
    let mut by_order: HashMap<String, (usize, Vec<String>)> = HashMap::new();
    for e in reply.ids {
        if let Some(o) = e.get::<String>("o") {
            let order = o.split('|').nth(3).expect("an order entry").to_owned();
            by_order.entry(order).or_default().0 += 1;
        } else {
            let m: String = e.get("m").expect("an order or a move");
            let mut f = m.split('|');
            let (order, name) = (f.next().unwrap(), f.next().expect("a move entry"));
            by_order
                .entry(order.to_owned())
                .or_default()
                .1
                .push(name.to_owned());
        }
    }
    by_order
}

/// The status moves the journal in `data_dir` holds, by order, in journal order. Read only, as
/// `livehub verify` reads: a torn last batch is left on disk and not read, as the hub's start
/// would cut it. The hub must be stopped (or killed).
fn journaled_moves(data_dir: &Path) -> HashMap<String, Vec<Option<Move>>> {
    #[derive(Default)]
    struct Moves(Mutex<HashMap<String, Vec<Option<Move>>>>);
    impl Apply for Moves {
        fn apply(&self, record: &Record, _: Mode) -> Result<(), String> {
            if let Record::FleetMoves { moves, .. } = record {
                let mut by_order = self.0.lock().unwrap();
                for m in moves {
                    by_order
                        .entry(m.order.to_string())
                        .or_default()
                        .push(m.to.clone());
                }
            }
            Ok(())
        }
    }
    let m = Moves::default();
    replay_with(&data_dir.join("journal"), &m, Check::ReadOnly).expect("the journal reads");
    m.0.into_inner().unwrap()
}

/// Whether `moves` hold the payment `payment_id`.
fn pays(moves: Option<&Vec<Option<Move>>>, payment_id: &str) -> bool {
    moves.into_iter().flatten().any(
        |m| matches!(m, Some(Move::Paid(p) | Move::LatePayment(p)) if &*p.payment_id == payment_id),
    )
}

/// The export's orders by id.
async fn orders_by_id(hub: &ChildHub, room: &str) -> HashMap<String, Value> {
    hub.hub_export(room)
        .await
        .into_iter()
        .map(|o| (o["order"].as_str().unwrap().to_owned(), o))
        .collect()
}

/// The audit's one SKU, once `want` holds of it and it is consistent (`sold + left ==
/// stock_total`). Fleet mode audits against the stream and Redis's stock, which each hub
/// reads in its own time.
async fn audit_where(addr: &str, room: &str, what: &str, want: impl Fn(&Value) -> bool) {
    let http = reqwest::Client::new();
    eventually_ok(WAIT, what, async || {
        let a: Value = http
            .get(format!("http://{addr}/api/rooms/{room}/audit"))
            .bearer_auth(VIEWER)
            .send()
            .await
            .expect("audit")
            .json()
            .await
            .expect("audit JSON");
        let sku = &a["skus"][0];
        let (total, sold, left) = (
            sku["stock_total"].as_u64(),
            sku["sold"].as_u64(),
            sku["left"].as_u64(),
        );
        let sums = matches!((total, sold, left), (Some(t), Some(s), Some(l)) if s + l == t);
        if a["consistent"] == true && sums && total == Some(STOCK) && want(sku) {
            Ok(())
        } else {
            Err(a)
        }
    })
    .await
}

/// SIGKILLs `pid` as soon as `room` holds a claim of a move in flight, or when `give_up`
/// passes whatever it holds. Whether it saw a claim. Blocking: run it on a thread of its own.
fn kill_at_a_claim(redis_url: &str, room: &str, pid: u32, give_up: Instant) -> bool {
    let mut c = redis::Client::open(redis_url)
        .unwrap()
        .get_connection()
        .expect("redis connection");
    let seen = loop {
        let n: u64 = redis::cmd("HLEN")
            .arg(keys::claims(room))
            .query(&mut c)
            .expect("HLEN");
        if n > 0 {
            break true;
        }
        if Instant::now() > give_up {
            break false;
        }
    };
    let pid = nix::unistd::Pid::from_raw(pid as i32);
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGKILL).expect("SIGKILL");
    seen
}

/// One payment notice: its order and payment id (the amount is the price).
#[derive(Debug, Clone)]
struct Notice {
    order: String,
    payment_id: String,
}

/// When to kill the hub during a burst.
struct KillAt {
    /// After this many notices were answered 200, at the next claim seen in Redis.
    oks: usize,
    pid: u32,
    redis_url: String,
}

/// Sends `notices[i]` for each `i` of `queue`, in order, from `workers` concurrent clients.
/// Each one's answer (status, or `None` for no answer), by position in `queue`, and with
/// `kill`, whether the kill came at a claim.
async fn burst(
    addr: SocketAddr,
    room: &str,
    notices: &[Notice],
    queue: &[usize],
    workers: usize,
    kill: Option<KillAt>,
) -> (Vec<Option<u16>>, Option<bool>) {
    let todo: Arc<Mutex<VecDeque<usize>>> =
        Arc::new(Mutex::new((0..queue.len()).collect::<VecDeque<_>>()));
    let answers: Arc<Mutex<Vec<Option<u16>>>> = Arc::new(Mutex::new(vec![None; queue.len()]));
    let oks = Arc::new(AtomicUsize::new(0));
    let killer: Arc<Mutex<Option<std::thread::JoinHandle<bool>>>> = Arc::default();
    let kill = kill.map(Arc::new);
    let notices: Arc<Vec<Notice>> = Arc::new(queue.iter().map(|&i| notices[i].clone()).collect());
    let tasks: Vec<_> = (0..workers)
        .map(|_| {
            let (todo, answers, oks, killer, kill, notices) = (
                todo.clone(),
                answers.clone(),
                oks.clone(),
                killer.clone(),
                kill.clone(),
                notices.clone(),
            );
            let room = room.to_owned();
            tokio::spawn(async move {
                let http = reqwest::Client::builder().timeout(WAIT).build().unwrap();
                loop {
                    let Some(i) = todo.lock().unwrap().pop_front() else {
                        return;
                    };
                    let n = &notices[i];
                    let r = support::try_signed_payment(
                        &http,
                        addr,
                        &room,
                        &n.order,
                        &n.payment_id,
                        PRICE,
                    )
                    .await;
                    let Ok((status, body)) = r else {
                        continue;
                    };
                    answers.lock().unwrap()[i] = Some(status);
                    if status != 200 {
                        continue;
                    }
                    assert_eq!(
                        body,
                        json!({"order": n.order, "status": "paid"}),
                        "{}",
                        n.payment_id
                    );
                    let ok = oks.fetch_add(1, Ordering::SeqCst) + 1;
                    if let Some(k) = kill.as_ref().filter(|k| k.oks == ok) {
                        let k = k.clone();
                        let room = room.clone();
                        *killer.lock().unwrap() = Some(std::thread::spawn(move || {
                            kill_at_a_claim(&k.redis_url, &room, k.pid, Instant::now() + WAIT)
                        }));
                    }
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
    let at_a_claim = killer
        .lock()
        .unwrap()
        .take()
        .map(|t| t.join().expect("the killer thread"));
    let answers = answers.lock().unwrap().clone();
    (answers, at_a_claim)
}

/// The change feed never pays an order twice: at most one `paid` event each. Returns the
/// orders paid.
async fn paid_once(hub: &ChildHub, room: &str) -> HashSet<String> {
    let mut paid = HashSet::new();
    for e in hub.hub_order_events(room).await {
        assert!(e["late_payment"].is_null(), "no payment came late: {e}");
        if e["status"] == "paid" {
            let order = e["order"].as_str().unwrap().to_owned();
            assert!(paid.insert(order), "paid twice: {e}");
        }
    }
    paid
}

/// The stream holds each order's placement once and at most one move, a payment.
fn stream_paid_once(redis: &RedisServer, room: &str, orders: usize) -> HashSet<String> {
    let s = stream(redis, room);
    assert_eq!(s.len(), orders, "only the orders placed");
    let mut paid = HashSet::new();
    for (order, (placed, moves)) in s {
        assert_eq!(placed, 1, "{order} published once");
        match &moves[..] {
            [] => {}
            [m] if m == "paid" => {
                paid.insert(order);
            }
            _ => panic!("{order}: one payment at most, and nothing else: {moves:?}"),
        }
    }
    paid
}

/// (1) A burst of payment notices to `h1`, each sent twice back to back (the repeat usually
/// comes while the first holds its claim, and waits for it), cut by SIGKILL while a claim
/// stands in Redis; `h1` restarts on its data dir, then every notice is sent again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn payments_answered_before_kill_9_stay_paid_once_and_no_claim_is_left() {
    let redis = RedisServer::start();
    let dir = temp_dir();
    let room = "burst";
    let mut h1 = spawn_h1(&dir, &redis).await;
    // Ten minutes to pay: nothing expires during the test.
    h1.set_up_sku_to_pay(room, PRICE, STOCK, None, 600).await;
    let placed = h1.place_unpaid(room, SOCKETS, 4, 25, Duration::ZERO).await;
    assert!(placed.keys().all(|o| o.starts_with("h1:O")), "{placed:?}");
    let n = placed.len();
    let mut orders: Vec<&String> = placed.keys().collect();
    orders.sort();
    let notices: Vec<Notice> = orders
        .iter()
        .enumerate()
        .map(|(i, o)| Notice {
            order: o.to_string(),
            payment_id: format!("pay-{i}"),
        })
        .collect();
    let pid_of: HashMap<&str, &str> = notices
        .iter()
        .map(|x| (x.order.as_str(), x.payment_id.as_str()))
        .collect();
    let queue: Vec<usize> = (0..n).flat_map(|i| [i, i]).collect();
    let kill = KillAt {
        oks: queue.len() / 3,
        pid: h1.child.id(),
        redis_url: redis.url(),
    };
    let (before, at_a_claim) = burst(
        h1.addr.parse().unwrap(),
        room,
        &notices,
        &queue,
        16,
        Some(kill),
    )
    .await;
    h1.child.wait().unwrap();
    // What the kill left: claims of h1 only, each of a payment.
    let standing = claims(&redis, room);
    for (order, claim) in &standing {
        let pid = pid_of[order.as_str()];
        assert!(
            claim.starts_with("h1|") && claim.ends_with(&format!("|pay|{pid}")),
            "{order}: {claim}"
        );
    }
    let mut paid_before: HashSet<&str> = HashSet::new();
    for (&i, a) in queue.iter().zip(&before) {
        match a {
            Some(200) => {
                paid_before.insert(&notices[i].order);
            }
            None => {}
            Some(st) => panic!("{:?} answered {st} before the kill", notices[i]),
        }
    }
    let answered = before.iter().filter(|a| a.is_some()).count();
    assert!(answered >= queue.len() / 3, "{answered} answered");
    assert!(
        answered < queue.len(),
        "every notice was answered before the kill landed"
    );
    // A payment is durable before it is answered.
    let journaled = journaled_moves(&dir);
    for order in &paid_before {
        assert!(
            pays(journaled.get(*order), pid_of[order]),
            "{order} answered paid: {:?}",
            journaled.get(*order)
        );
    }

    let h1 = spawn_h1(&dir, &redis).await;
    // Its start settled every claim the kill left before it served: each was committed (its
    // journal held the payment) or given back with its payment id.
    assert_eq!(claims(&redis, room), HashMap::new(), "no claim is left");
    let payments: HashMap<String, String> =
        redis.query(redis::cmd("HGETALL").arg(keys::payments(room)));
    let status = statuses(&redis, room);
    for (pid, v) in &payments {
        let order = v.strip_prefix("P|").unwrap_or_else(|| {
            panic!("payment id {pid} is {v}: only payments made are kept, no claim")
        });
        assert_eq!(pid_of[order], pid, "{order} paid by another's notice");
        assert!(
            status[order].starts_with("P|"),
            "{order}: {}",
            status[order]
        );
    }
    let mut committed = 0;
    for order in standing.keys() {
        let pid = pid_of[order.as_str()];
        if pays(journaled.get(order), pid) {
            assert_eq!(
                payments.get(pid),
                Some(&format!("P|{order}")),
                "{order}: its journal holds the payment, so the start commits it"
            );
            committed += 1;
        } else {
            assert_eq!(payments.get(pid), None, "{order}: never journaled");
            assert!(status[order].starts_with("U|"), "{}", status[order]);
        }
    }
    for order in &paid_before {
        assert_eq!(
            payments.get(pid_of[order]).map(String::as_str),
            Some(format!("P|{order}").as_str()),
            "{order} was answered paid"
        );
    }
    // The export shows each payment answered 200 before the kill, once h1 has read the
    // room's stream again, and shows paid exactly the orders Redis holds paid.
    eventually_ok(WAIT, "h1's export matches Redis", async || {
        let by_id = orders_by_id(&h1, room).await;
        for (order, entry) in &status {
            let o = &by_id[order];
            let paid = entry.starts_with("P|");
            let want = if paid { "paid" } else { "unpaid" };
            if o["status"] != want || (paid && o["payment_id"] != pid_of[order.as_str()]) {
                return Err(format!("{o} against {entry}"));
            }
        }
        Ok(())
    })
    .await;
    let paid_now = paid_once(&h1, room).await;
    let in_stream = stream_paid_once(&redis, room, n);
    assert_eq!(paid_now, in_stream, "h1's change feed against the stream");
    assert!(paid_now.len() >= paid_before.len());
    let unpaid = (n - paid_now.len()) as u64;
    audit_where(&h1.addr, room, "the audit adds up", |s| {
        s["sold"] == n && s["unpaid"] == unpaid
    })
    .await;
    eprintln!(
        "killed after {answered} of {} notices answered ({} orders paid), {}: {} claims \
         left, {committed} committed at the restart, {} given back",
        queue.len(),
        paid_before.len(),
        if at_a_claim == Some(true) {
            "at a claim"
        } else {
            "no claim seen"
        },
        standing.len(),
        standing.len() - committed
    );

    // Every notice again, twice each: a payment made is answered the same, the rest pay now.
    let (again, _) = burst(h1.addr.parse().unwrap(), room, &notices, &queue, 16, None).await;
    for (&i, a) in queue.iter().zip(&again) {
        assert_eq!(*a, Some(200), "{:?} after the restart", notices[i]);
    }
    eventually_ok(WAIT, "every order paid in h1's export", async || {
        let by_id = orders_by_id(&h1, room).await;
        match by_id.values().find(|o| {
            o["status"] != "paid" || o["payment_id"] != pid_of[o["order"].as_str().unwrap()]
        }) {
            Some(o) => Err(o.clone()),
            None => Ok(()),
        }
    })
    .await;
    assert_eq!(orders_by_id(&h1, room).await.len(), n);
    assert_eq!(paid_once(&h1, room).await.len(), n, "every order paid once");
    assert_eq!(stream_paid_once(&redis, room, n).len(), n);
    assert_eq!(claims(&redis, room), HashMap::new());
    audit_where(&h1.addr, room, "every order paid in the audit", |s| {
        s["sold"] == n && s["unpaid"] == 0
    })
    .await;

    // Durably once: h1's journal holds one payment per order, its own notice's.
    let mut h1 = h1;
    h1.child.kill().unwrap();
    h1.child.wait().unwrap();
    let journaled = journaled_moves(&dir);
    assert_eq!(journaled.len(), n);
    for (order, moves) in &journaled {
        assert!(
            matches!(&moves[..], [Some(Move::Paid(p))] if &*p.payment_id == pid_of[order.as_str()]),
            "{order}: {moves:?}"
        );
    }
}

/// (2) An expiry wave on `h1` cut by SIGKILL while one of its expiry claims stands in Redis;
/// `h2` expires `h1`'s due orders once `h1`'s heartbeat is gone, except those `h1`'s claims
/// hold, which wait for `h1`'s restart. In the end every order expired exactly once, every
/// unit and every buyer's allowance is back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expiry_wave_cut_by_kill_9_expires_every_order_once_across_hubs() {
    const WAVES: usize = 10;
    const PER_WAVE: usize = 10;
    /// Each buyer's limit: exactly the units each places.
    const LIMIT: u64 = (WAVES * PER_WAVE) as u64;
    let redis = RedisServer::start();
    let dir = temp_dir();
    let room = "wave";
    let mut h1 = spawn_h1(&dir, &redis).await;
    // The shortest time to pay there is.
    h1.set_up_sku_to_pay(room, PRICE, STOCK, Some(LIMIT), 10)
        .await;
    let h2 = TestServer::start_with(Options {
        fleet: Some(redis.hub("h2")),
        ..Options::default()
    })
    .await;
    h2.wait_sku(room, "A").await;
    // Waves 100 ms apart: h1's expiries come in steps over a second or more.
    let placed = h1
        .place_unpaid(room, SOCKETS, WAVES, PER_WAVE, Duration::from_millis(100))
        .await;
    assert!(placed.keys().all(|o| o.starts_with("h1:O")), "{placed:?}");
    let m = placed.len();
    let first = *placed.values().min().unwrap();
    let last = *placed.values().max().unwrap();

    // Not synchronisation: waiting for the deadlines themselves; nothing can expire before.
    let early = first - now_ms() - 300;
    if early > 0 {
        tokio::time::sleep(Duration::from_millis(early as u64)).await;
    }
    // Watch Redis through the wave. When a random share of the orders is still unpaid and a
    // claim of h1's expiries stands, hold every write to Redis (CLIENT PAUSE WRITE), so that
    // h1's commit cannot land, and kill h1 there: at once (its journal write is most likely
    // still on its way), or, half the time, once its journal holds that expiry. (If no claim
    // is seen, kill h1 well past that share.)
    let below = rand::random_range(m / 4..3 * m / 4) as u64;
    let after_journal: bool = rand::random();
    let (url, pid, wave, data_dir) = (redis.url(), h1.child.id(), room.to_owned(), dir.clone());
    let give_up = Instant::now() + Duration::from_millis((last - now_ms()).max(0) as u64) + WAIT;
    let (unpaid_seen, at_a_claim) = tokio::task::spawn_blocking(move || {
        let mut c = redis::Client::open(url)
            .unwrap()
            .get_connection()
            .expect("redis connection");
        let kill = || {
            let pid = nix::unistd::Pid::from_raw(pid as i32);
            nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGKILL).expect("SIGKILL");
        };
        loop {
            let (unpaid, claimed): (u64, Vec<String>) = redis::pipe()
                .cmd("ZCARD")
                .arg(keys::deadlines(&wave))
                .cmd("HKEYS")
                .arg(keys::claims(&wave))
                .query(&mut c)
                .expect("ZCARD, HKEYS");
            assert!(
                unpaid > 0,
                "the wave passed between two looks (deadlines from {first} to {last})"
            );
            assert!(Instant::now() < give_up, "nothing expired by {}", now_ms());
            if unpaid > below {
                continue;
            }
            if !claimed.is_empty() {
                let _: () = redis::cmd("CLIENT")
                    .arg("PAUSE")
                    .arg(WAIT.as_millis() as u64)
                    .arg("WRITE")
                    .query(&mut c)
                    .expect("CLIENT PAUSE");
                let t0 = Instant::now();
                while after_journal
                    && !claimed.iter().any(|o| {
                        journaled_moves(&data_dir)
                            .get(o)
                            .is_some_and(|m| m.contains(&None))
                    })
                {
                    assert!(t0.elapsed() < WAIT, "h1 never journaled {claimed:?}");
                    std::thread::sleep(support::POLL);
                }
                kill();
                return (unpaid, true);
            }
            if unpaid <= below / 2 {
                kill();
                return (unpaid, false);
            }
        }
    })
    .await
    .unwrap();
    h1.child.wait().unwrap();
    // With h1 gone, Redis takes writes again.
    let _: () = redis.query(redis::cmd("CLIENT").arg("UNPAUSE"));
    let killed_ms = now_ms();
    let standing = claims(&redis, room);
    for (order, claim) in &standing {
        assert!(
            claim.starts_with("h1|") && claim.ends_with("|expire|"),
            "{order}: {claim}"
        );
    }
    let journaled_at_kill = journaled_moves(&dir);
    let unpaid_at_kill = deadlines(&redis, room);
    let expired_at_kill: usize = stream(&redis, room)
        .values()
        .filter(|(_, moves)| !moves.is_empty())
        .count();
    assert_eq!(expired_at_kill + unpaid_at_kill.len(), m);

    // h2 takes over once h1's heartbeat is gone: it expires every due order of h1's but
    // those h1's claims hold, which take no move until h1 settles them.
    // (h2's own claims, between its claim and its commit, count as not done yet.)
    let held_by_h1: HashSet<String> = standing.keys().cloned().collect();
    eventually_ok(WAIT, "h2 expires the orders of h1, gone", async || {
        let (left, held) = (deadlines(&redis, room), claims(&redis, room));
        if left == held_by_h1 && held == standing {
            Ok(())
        } else {
            Err(format!("{} unpaid, claims {held:?}", left.len()))
        }
    })
    .await;
    let taken_over_ms = now_ms();
    let by_h2 = stream(&redis, room)
        .values()
        .filter(|(_, moves)| !moves.is_empty())
        .count()
        - expired_at_kill;
    assert_eq!(
        by_h2,
        unpaid_at_kill.len() - standing.len(),
        "h2 expired every unclaimed order, once"
    );

    let h1 = spawn_h1(&dir, &redis).await;
    // Its start settled every claim the kill left before it served: it committed those whose
    // expiry its journal holds, and gave back the others (which then expire once).
    let now_held = claims(&redis, room);
    let status = statuses(&redis, room);
    let mut journaled = 0;
    for (order, claim) in &standing {
        assert_ne!(now_held.get(order), Some(claim), "{order}'s claim is left");
        if journaled_at_kill
            .get(order)
            .is_some_and(|m| m.contains(&None))
        {
            assert!(
                status[order].starts_with("E|"),
                "{order}: {}",
                status[order]
            );
            journaled += 1;
        }
    }
    eventually(WAIT, "no order unpaid and no claim in Redis", async || {
        deadlines(&redis, room).is_empty() && claims(&redis, room).is_empty()
    })
    .await;

    // Exactly once, in Redis: every order expired, one expiry each in the stream.
    let status = statuses(&redis, room);
    assert_eq!(status.len(), m);
    for (order, entry) in &status {
        assert!(entry.starts_with("E|"), "{order}: {entry}");
    }
    for (order, (placements, moves)) in stream(&redis, room) {
        assert!(placed.contains_key(&order), "{order}");
        assert_eq!(
            (placements, &moves[..]),
            (1, &["expire".to_owned()][..]),
            "{order}: placed once, expired once"
        );
    }
    // And in h1's export and change feed, once it has read the stream again.
    eventually_ok(WAIT, "h1's export shows every order expired", async || {
        let export = h1.hub_export(room).await;
        match export.iter().find(|o| o["status"] != "expired") {
            Some(o) => Err(o.clone()),
            None if export.len() == m => Ok(()),
            None => Err(json!(export.len())),
        }
    })
    .await;
    for o in h1.hub_export(room).await {
        let pay_by = placed[o["order"].as_str().unwrap()];
        assert_eq!(o["pay_by_ms"], pay_by, "{o}");
        assert!(
            o["ended_at_ms"].as_i64().unwrap() >= pay_by,
            "expired early: {o}"
        );
    }
    let events = h1.hub_order_events(room).await;
    assert_eq!(
        events.len(),
        2 * m,
        "one placement and one expiry per order"
    );
    let (mut placements, mut expiries) = (HashSet::new(), HashSet::new());
    for e in &events {
        let order = e["order"].as_str().unwrap().to_owned();
        assert!(placed.contains_key(&order), "{e}");
        match e["status"].as_str().unwrap() {
            "unpaid" => assert!(placements.insert(order), "placed twice: {e}"),
            "expired" => {
                assert!(placements.contains(&order), "expired before placed: {e}");
                assert!(expiries.insert(order), "expired twice: {e}");
            }
            _ => panic!("only expiries: {e}"),
        }
    }

    // Every unit back, on both hubs, and every buyer's allowance: each buys their limit again.
    for addr in [h1.addr.clone(), h2.addr.to_string()] {
        audit_where(&addr, room, "every unit back", |s| {
            s["left"] == STOCK && s["sold"] == 0 && s["unpaid"] == 0
        })
        .await;
    }
    let held: HashMap<String, u64> = redis.query(redis::cmd("HGETALL").arg(keys::held(room, "A")));
    assert!(held.is_empty(), "allowances held: {held:?}");
    for k in 0..SOCKETS {
        let user = format!("b{k}");
        let mut b = if k % 2 == 0 {
            let url = format!("ws://{}/ws/buy?room={room}&user={user}", h1.addr);
            Client::connect(&url).await.expect("buyer socket")
        } else {
            h2.buyer(room, &user).await
        };
        let ack = b.buy("again", "A", LIMIT).await;
        assert_eq!(
            (ack["ok"].clone(), ack["status"].clone()),
            (json!(true), json!("unpaid")),
            "{user}: {ack}"
        );
    }
    eprintln!(
        "killed with {unpaid_seen} of {m} unpaid, {}; {} claims left ({journaled} of them \
         journaled); h2 expired {by_h2} in {} ms; the restart settled the rest",
        if at_a_claim {
            "at a claim"
        } else {
            "no claim seen"
        },
        standing.len(),
        taken_over_ms - killed_ms
    );

    // Durably once: across both hubs' journals, one expiry per order. A claim whose expiry h1
    // journaled is committed at its start, not journaled again; one never journaled is given
    // back and journaled once, when the order expires after all.
    let h2_dir = h2.stop().await;
    let mut h1 = h1;
    h1.child.kill().unwrap();
    h1.child.wait().unwrap();
    let mut expiries: HashMap<String, usize> = HashMap::new();
    for (hub, dir) in [("h1", &dir), ("h2", &h2_dir)] {
        for (order, moves) in journaled_moves(dir) {
            assert!(
                moves.iter().all(Option::is_none),
                "{hub}: only expiries: {order} {moves:?}"
            );
            *expiries.entry(order).or_default() += moves.len();
        }
    }
    assert_eq!(expiries.len(), m, "every order's expiry is journaled");
    let twice: Vec<_> = expiries.iter().filter(|(_, &n)| n != 1).collect();
    assert!(twice.is_empty(), "journaled more than once: {twice:?}");
}

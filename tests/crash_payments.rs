//! Crash tests of orders that must be paid (issue 21): a child livehub is killed with SIGKILL
//! in the middle of an expiry wave, and in the middle of a burst of payment notices, then
//! restarted on the same data dir. Every order expires exactly once and gives its units back;
//! every notice that was answered 200 is a payment the export shows; nothing is paid twice;
//! and sending every notice again after the restart is idempotent and pays the rest.

mod support;

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use support::child::{spawn, ChildHub};
use support::{PAYMENT_SECRET, VIEWER, WAIT};

/// Snapshots and compaction run through the tests, so the kills can land in them too.
const SNAPSHOT_FLAGS: [&str; 4] = [
    "--snapshot-every-records",
    "500",
    "--segment-bytes",
    "65536",
];
const PRICE: u64 = 100;
const STOCK: u64 = 1_000_000;
/// Buyer sockets that place the orders.
const SOCKETS: usize = 4;

fn now_ms() -> i64 {
    livehub::clock::now_ms()
}

async fn audit(hub: &ChildHub, room: &str) -> Value {
    let (st, body) = hub
        .http("GET", &format!("/api/rooms/{room}/audit"), VIEWER, None)
        .await;
    assert_eq!(st, 200, "{body}");
    serde_json::from_str(&body).unwrap()
}

/// The dashboard's figures once they include event `event`.
async fn stats_at_event(hub: &ChildHub, room: &str, event: u64) -> Value {
    let t0 = Instant::now();
    loop {
        let (_, body) = hub
            .http("GET", &format!("/api/rooms/{room}/stats"), VIEWER, None)
            .await;
        let v: Value = serde_json::from_str(&body).unwrap();
        if v["event"].as_u64() == Some(event) {
            return v;
        }
        assert!(
            t0.elapsed() < WAIT,
            "stats never reached event {event}: {v}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// SIGKILL, and the process is gone.
fn kill_9(hub: &mut ChildHub) {
    hub.child.kill().expect("SIGKILL");
    hub.child.wait().unwrap();
}

/// The change feed has each order's placement and one `expired` event, nothing else; the
/// export shows every order expired at or after its deadline and no later than `bound`
/// allows; the units are all back. Returns the latest an order expired after its deadline
/// (ms), for the log.
async fn check_all_expired(
    hub: &ChildHub,
    room: &str,
    placed: &HashMap<String, i64>,
    bound: impl Fn(i64) -> i64,
) -> i64 {
    let events = hub.order_events(room).await;
    assert_eq!(
        events.len(),
        2 * placed.len(),
        "one placement and one expiry per order"
    );
    let mut expired: HashMap<&str, u32> = HashMap::new();
    let mut placements: HashSet<&str> = HashSet::new();
    for (i, e) in events.iter().enumerate() {
        assert_eq!(e["event"], i as u64 + 1, "events numbered from 1: {e}");
        let order = e["order"].as_str().unwrap();
        let pay_by = *placed
            .get(order)
            .unwrap_or_else(|| panic!("an event of an order never acked: {e}"));
        match e["status"].as_str().unwrap() {
            "unpaid" => {
                assert!(placements.insert(order), "{order} placed twice");
                assert_eq!(e["pay_by_ms"], pay_by, "{e}");
            }
            "expired" => {
                assert!(placements.contains(order), "expired before placed: {e}");
                *expired.entry(order).or_default() += 1;
                assert!(e["ts_ms"].as_i64().unwrap() >= pay_by, "expired early: {e}");
            }
            _ => panic!("no other move was asked for: {e}"),
        }
    }
    let twice: Vec<_> = expired.iter().filter(|(_, &n)| n > 1).collect();
    assert!(twice.is_empty(), "expired more than once: {twice:?}");
    assert_eq!(expired.len(), placed.len(), "every order expired");

    let export = hub.export(room).await;
    assert_eq!(export.len(), placed.len());
    let mut latest = 0;
    for o in &export {
        let pay_by = placed[o["order"].as_str().unwrap()];
        assert_eq!(o["status"], "expired", "{o}");
        assert_eq!(o["pay_by_ms"], pay_by, "the deadline the ack gave: {o}");
        let ended = o["ended_at_ms"].as_i64().expect("ended_at_ms");
        assert!(
            (pay_by..=bound(pay_by)).contains(&ended),
            "expired at {ended}, due at {pay_by}, at the latest {}: {o}",
            bound(pay_by)
        );
        latest = latest.max(ended - pay_by);
    }

    let a = audit(hub, room).await;
    assert_eq!(a["consistent"], true, "{a}");
    let sku = &a["skus"][0];
    assert_eq!(
        (
            sku["left"].as_u64(),
            sku["sold"].as_u64(),
            sku["unpaid"].as_u64()
        ),
        (Some(STOCK), Some(0), Some(0)),
        "every unit is back: {a}"
    );
    let stats = stats_at_event(hub, room, events.len() as u64).await;
    let n = placed.len() as u64;
    assert_eq!(stats["expired_fen"], n * PRICE, "{stats}");
    assert_eq!(
        (stats["unpaid_fen"].clone(), stats["paid_gmv_fen"].clone()),
        (json!(0), json!(0))
    );
    latest
}

/// (a) 2,000 unpaid orders whose deadlines pass while the hub runs; it is killed when some
/// but not all have expired, restarted, and killed and restarted once more.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expiry_wave_cut_by_kill_9_expires_every_order_once() {
    let dir = support::temp_dir();
    let room = "wave";
    let mut hub = spawn(&dir, &SNAPSHOT_FLAGS).await;
    hub.set_up_sku_to_pay(room, PRICE, STOCK, None, 10).await;
    // 20 waves of 100 orders, 100 ms apart: the deadlines, and so the expiries, come in 20
    // steps over two seconds or more.
    let placed = hub
        .place_unpaid(room, SOCKETS, 20, 25, Duration::from_millis(100))
        .await;
    let n = placed.len() as u64;
    let first = *placed.values().min().unwrap();
    let last = *placed.values().max().unwrap();

    // Watch the audit's unpaid units through the wave; kill when some but not all are back,
    // at a random point of the wave. The expiries come a wave (a twentieth) at a time, so the
    // point is at least one wave: a smaller one could fall between the last step and zero.
    let kill_at: u64 = rand::random_range(n / 20..n);
    let give_up = Instant::now() + Duration::from_millis((last - now_ms()).max(0) as u64) + WAIT;
    let seen = loop {
        let early = first - now_ms() - 300;
        if early > 0 {
            // Not synchronisation: nothing can expire before the first deadline.
            tokio::time::sleep(Duration::from_millis(early as u64)).await;
        }
        let unpaid = audit(&hub, room).await["skus"][0]["unpaid"]
            .as_u64()
            .unwrap();
        if 0 < unpaid && unpaid <= kill_at {
            kill_9(&mut hub);
            break unpaid;
        }
        assert!(
            unpaid > 0,
            "the rest of the wave passed between two looks at the audit (deadlines from \
             {first} to {last})"
        );
        assert!(Instant::now() < give_up, "nothing expired by {}", now_ms());
        tokio::time::sleep(Duration::from_millis(5)).await;
    };
    let killed_ms = now_ms();

    let hub = spawn(&dir, &SNAPSHOT_FLAGS).await;
    let ready_ms = now_ms();
    let at_start: usize = hub
        .export(room)
        .await
        .iter()
        .filter(|o| o["status"] == "expired")
        .count();
    // The rest expire as their deadlines come.
    let t0 = Instant::now();
    while audit(&hub, room).await["skus"][0]["unpaid"] != 0 {
        assert!(
            t0.elapsed() < Duration::from_millis((last - ready_ms).max(0) as u64) + WAIT,
            "orders still unpaid long after their deadlines"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Within a second of the deadline while the hub runs, at start for those that passed
    // while it was down; plus slack for a loaded machine.
    const SLACK_MS: i64 = 3_000;
    let bound = |pay_by: i64| {
        if pay_by <= ready_ms {
            ready_ms.max(pay_by + 1000) + SLACK_MS
        } else {
            pay_by + 1000 + SLACK_MS
        }
    };
    let latest = check_all_expired(&hub, room, &placed, bound).await;
    eprintln!(
        "killed with {seen} of {n} unpaid, down {} ms; {at_start} expired when it served again; \
         latest expiry {latest} ms after its deadline",
        ready_ms - killed_ms
    );

    // The expiries made at start and after are durable: another kill changes nothing.
    let mut hub = hub;
    kill_9(&mut hub);
    let hub = spawn(&dir, &SNAPSHOT_FLAGS).await;
    check_all_expired(&hub, room, &placed, bound).await;
}

/// One signed payment notice.
#[derive(Debug, Clone)]
struct Notice {
    order: String,
    payment_id: String,
    body: String,
}

/// What a notice was answered: its status and `error`, or `None` for no answer.
type Answer = Option<(u16, String)>;

async fn send(http: &reqwest::Client, addr: &str, n: &Notice) -> Answer {
    let ts = now_ms();
    let sig = livehub::payments::sign(PAYMENT_SECRET.as_bytes(), ts, n.body.as_bytes());
    let r = http
        .post(format!("http://{addr}/api/payments"))
        .header("X-Livehub-Timestamp", ts.to_string())
        .header("X-Livehub-Signature", sig)
        .header("Content-Type", "application/json")
        .body(n.body.clone())
        .send()
        .await
        .ok()?;
    let status = r.status().as_u16();
    let v: Value = serde_json::from_str(&r.text().await.ok()?).unwrap_or(Value::Null);
    if status == 200 {
        assert_eq!(
            v,
            json!({"order": n.order, "status": "paid"}),
            "{}",
            n.payment_id
        );
    }
    Some((status, v["error"].as_str().unwrap_or_default().to_owned()))
}

/// Sends `notices` from `workers` concurrent clients; with `kill_at`, SIGKILLs `pid` as soon
/// as that many were answered 200. Each notice's answer, by index.
async fn burst(
    addr: &str,
    notices: &[Notice],
    workers: usize,
    kill_at: Option<(usize, u32)>,
) -> Vec<Answer> {
    let queue: Arc<Mutex<VecDeque<usize>>> = Arc::new(Mutex::new((0..notices.len()).collect()));
    let answers: Arc<Mutex<Vec<Answer>>> = Arc::new(Mutex::new(vec![None; notices.len()]));
    let oks = Arc::new(AtomicUsize::new(0));
    let notices = Arc::new(notices.to_vec());
    let tasks: Vec<_> = (0..workers)
        .map(|_| {
            let (queue, answers, oks, notices) =
                (queue.clone(), answers.clone(), oks.clone(), notices.clone());
            let addr = addr.to_owned();
            tokio::spawn(async move {
                let http = reqwest::Client::builder().timeout(WAIT).build().unwrap();
                loop {
                    let Some(i) = queue.lock().unwrap().pop_front() else {
                        return;
                    };
                    let a = send(&http, &addr, &notices[i]).await;
                    if matches!(a, Some((200, _))) {
                        let ok = oks.fetch_add(1, Ordering::SeqCst) + 1;
                        if let Some((at, pid)) = kill_at {
                            if ok == at {
                                let pid = nix::unistd::Pid::from_raw(pid as i32);
                                nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGKILL)
                                    .expect("SIGKILL");
                            }
                        }
                    }
                    answers.lock().unwrap()[i] = a;
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
    let answers = answers.lock().unwrap().clone();
    answers
}

/// The export's orders by id.
async fn orders_by_id(hub: &ChildHub, room: &str) -> HashMap<String, Value> {
    hub.export(room)
        .await
        .into_iter()
        .map(|o| (o["order"].as_str().unwrap().to_owned(), o))
        .collect()
}

fn late_ids(o: &Value) -> Vec<&str> {
    o["late_payments"]
        .as_array()
        .expect("late_payments")
        .iter()
        .map(|p| p["payment_id"].as_str().unwrap())
        .collect()
}

/// The change feed never pays an order twice: at most one `paid` event each (late payments
/// are events of their own, with `late_payment`). Returns the orders paid.
async fn paid_once(hub: &ChildHub, room: &str) -> HashSet<String> {
    let mut paid = HashSet::new();
    for e in hub.order_events(room).await {
        if e["status"] == "paid" && e["late_payment"].is_null() {
            let order = e["order"].as_str().unwrap().to_owned();
            assert!(paid.insert(order), "paid twice: {e}");
        }
    }
    paid
}

/// (b) A burst of signed payment notices, some of them a second payment for the same order,
/// cut by SIGKILL; after the restart, every notice is sent again, twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn payments_answered_before_kill_9_stay_paid_and_resending_is_idempotent() {
    let dir = support::temp_dir();
    let room = "burst";
    let mut hub = spawn(&dir, &SNAPSHOT_FLAGS).await;
    // An hour to pay: nothing expires during the test.
    hub.set_up_sku_to_pay(room, PRICE, STOCK, None, 3600).await;
    let placed = hub
        .place_unpaid(room, SOCKETS, 10, 50, Duration::ZERO)
        .await;
    let mut orders: Vec<&String> = placed.keys().collect();
    orders.sort();
    // One notice per order; every tenth order also gets a second one, with another payment
    // id, right after its first.
    let paid_at = now_ms();
    let notice = |order: &str, payment_id: String| Notice {
        order: order.to_owned(),
        body: json!({"order": order, "room": room, "payment_id": payment_id,
            "amount_fen": PRICE, "paid_at_ms": paid_at})
        .to_string(),
        payment_id,
    };
    let mut notices = Vec::new();
    for (i, o) in orders.iter().enumerate() {
        notices.push(notice(o, format!("pay-{i}")));
        if i % 10 == 0 {
            notices.push(notice(o, format!("pay-{i}-b")));
        }
    }
    let pairs = orders.len().div_ceil(10);
    let of_order = |o: &str| -> Vec<&Notice> { notices.iter().filter(|n| n.order == o).collect() };

    let kill_at = orders.len() / 3;
    let before = burst(&hub.addr, &notices, 16, Some((kill_at, hub.child.id()))).await;
    hub.child.wait().unwrap();
    let answered = before.iter().filter(|a| a.is_some()).count();
    let ok = before
        .iter()
        .filter(|a| matches!(a, Some((200, _))))
        .count();
    assert!(ok >= kill_at, "{ok} paid before the kill");
    assert!(
        answered < notices.len(),
        "every notice was answered before the kill landed"
    );
    for (n, a) in notices.iter().zip(&before) {
        if let Some((st, code)) = a {
            assert!(
                *st == 200 || (*st == 409 && code == "already_paid"),
                "{} for {}: {st} {code}",
                n.payment_id,
                n.order
            );
        }
    }

    let hub = spawn(&dir, &SNAPSHOT_FLAGS).await;
    let by_id = orders_by_id(&hub, room).await;
    for (n, a) in notices.iter().zip(&before) {
        let o = &by_id[&n.order];
        match a {
            Some((200, _)) => {
                assert_eq!(o["status"], "paid", "{} answered 200: {o}", n.payment_id);
                assert_eq!(o["payment_id"], n.payment_id.as_str(), "{o}");
            }
            Some((409, _)) => assert!(
                late_ids(o).contains(&n.payment_id.as_str()),
                "{} answered already_paid is kept as late: {o}",
                n.payment_id
            ),
            _ => {}
        }
    }
    for o in by_id.values() {
        let mine: Vec<&str> = of_order(o["order"].as_str().unwrap())
            .iter()
            .map(|n| n.payment_id.as_str())
            .collect();
        if let Some(p) = o["payment_id"].as_str() {
            assert!(mine.contains(&p), "paid by a notice of another order: {o}");
        }
    }
    let paid_now = paid_once(&hub, room).await;
    let a = audit(&hub, room).await;
    assert_eq!(a["consistent"], true, "{a}");
    eprintln!(
        "kill after {ok} notices paid: {answered} of {} answered, {} orders paid after the \
         restart",
        notices.len(),
        paid_now.len()
    );

    // Every notice again, twice: a payment already made is 200, the rest pay now; of an
    // order's two notices, the one that did not pay it is already_paid, and counted once.
    for round in 0..2 {
        let again = burst(&hub.addr, &notices, 16, None).await;
        let by_id = orders_by_id(&hub, room).await;
        for ((n, a), first) in notices.iter().zip(&again).zip(&before) {
            let (st, code) = a.clone().expect("answered");
            let o = &by_id[&n.order];
            if o["payment_id"] == n.payment_id.as_str() {
                assert_eq!(st, 200, "round {round}: {} paid {o}: {code}", n.payment_id);
            } else {
                assert_eq!(
                    (st, code.as_str()),
                    (409, "already_paid"),
                    "round {round}: {}: {o}",
                    n.payment_id
                );
                assert!(late_ids(o).contains(&n.payment_id.as_str()), "{o}");
            }
            if let Some((200, _)) = first {
                assert_eq!(
                    st, 200,
                    "round {round}: {} answered 200 stays the payment",
                    n.payment_id
                );
            }
        }
        for (id, o) in &by_id {
            assert_eq!(o["status"], "paid", "round {round}: {o}");
            let late = late_ids(o).len();
            assert_eq!(late, of_order(id).len() - 1, "round {round}: {o}");
        }
        let paid = paid_once(&hub, room).await;
        assert_eq!(paid.len(), orders.len(), "round {round}");
        let events = hub.order_events(room).await.len() as u64;
        // Placements, payments, and one late payment per pair.
        assert_eq!(events, (2 * orders.len() + pairs) as u64, "round {round}");
        let stats = stats_at_event(&hub, room, events).await;
        assert_eq!(stats["late_payments"], pairs, "round {round}: {stats}");
        assert_eq!(stats["paid_orders"], orders.len(), "round {round}");
        assert_eq!(
            stats["paid_gmv_fen"],
            orders.len() as u64 * PRICE,
            "round {round}"
        );
        assert_eq!(stats["unpaid_fen"], 0, "round {round}");
        let a = audit(&hub, room).await;
        assert_eq!(a["consistent"], true, "round {round}: {a}");
        assert_eq!(a["skus"][0]["unpaid"], 0, "round {round}: {a}");
    }
}

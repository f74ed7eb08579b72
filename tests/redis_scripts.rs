//! The Redis scripts against a simple sequential model (proptest), on a real `redis-server`:
//! random sequences of buys, releases, publishes, restocks and withdrawals by a few users must
//! give exactly the model's answers, and after every step Redis's counters must equal the
//! model's: `left`, each user's units, `sold`, and `stock_total = left + sold + tickets`.

mod support;

use std::collections::HashMap;
use std::sync::Arc;

use proptest::prelude::*;

use livehub::fleet::buy::TicketAt;
use livehub::fleet::scripts::{Done, Seen, Taken, Ticket};
use livehub::fleet::{keys, publish, Fleet};
use livehub::journal::OrderRecord;
use livehub::protocol::RejectCode;
use support::redis_server::RedisServer;

#[derive(Debug, Clone)]
enum Op {
    Buy { user: u8, req: u8, qty: u64 },
    Release(usize),
    Publish(usize),
    Stock(i64),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        5 => (0u8..3, 0u8..4, 1u64..4).prop_map(|(user, req, qty)| Op::Buy { user, req, qty }),
        2 => (0usize..16).prop_map(Op::Release),
        2 => (0usize..16).prop_map(Op::Publish),
        1 => (-4i64..5).prop_map(Op::Stock),
    ]
}

#[derive(Debug, Clone, PartialEq)]
enum State {
    Pending(u64),
    Done(u64),
}

#[derive(Default)]
struct Model {
    total: u64,
    left: u64,
    sold: u64,
    held: HashMap<u8, u64>,
    reqs: HashMap<(u8, u8), State>,
}

struct Case {
    fleet: Fleet,
    room: String,
    n: u64,
}

fn ticket_at(room: &str, user: u8, req: u8, nonce: u64, qty: u64) -> TicketAt {
    let (u, r) = (format!("u{user}"), format!("r{req}"));
    TicketAt {
        room: Arc::from(room),
        user: Arc::from(u.as_str()),
        field: keys::request_field(&u, &r),
        ticket: Ticket {
            hub: Arc::from("h"),
            nonce,
            sku: Arc::from("S"),
            qty,
        },
    }
}

async fn redis_counts(c: &Case) -> (u64, u64, u64, HashMap<String, u64>) {
    let (total, left): (u64, u64) = c
        .fleet
        .run(
            redis::cmd("HMGET")
                .arg(keys::sku(&c.room, "S"))
                .arg("total")
                .arg("left"),
        )
        .await
        .unwrap();
    let sold: Option<u64> = c
        .fleet
        .run(redis::cmd("HGET").arg(keys::sold(&c.room)).arg("S"))
        .await
        .unwrap();
    let held: HashMap<String, u64> = c
        .fleet
        .run(redis::cmd("HGETALL").arg(keys::held(&c.room, "S")))
        .await
        .unwrap();
    (total, left, sold.unwrap_or(0), held)
}

async fn run_case(
    fleet: &Fleet,
    case: u64,
    stock: u64,
    limit: Option<u64>,
    ops: Vec<Op>,
) -> Result<(), TestCaseError> {
    let mut c = Case {
        fleet: fleet.clone(),
        room: format!("p{case}"),
        n: 0,
    };
    let _: () = c
        .fleet
        .run(redis::cmd("HSET").arg(keys::sku(&c.room, "S")).arg(&[
            ("total", stock.to_string()),
            ("left", stock.to_string()),
            ("name", "s".into()),
            ("price_fen", "100".into()),
            ("limit", limit.map(|l| l.to_string()).unwrap_or_default()),
            ("opens", String::new()),
            ("closes", String::new()),
            ("sold_out_at", String::new()),
        ]))
        .await
        .unwrap();
    let mut m = Model {
        total: stock,
        left: stock,
        ..Default::default()
    };
    // Tickets taken so far, in order: (user, req, nonce, qty).
    let mut taken: Vec<(u8, u8, u64, u64)> = Vec::new();
    let mut seq = 0u64;
    for op in ops {
        match op {
            Op::Buy { user, req, qty } => {
                c.n += 1;
                let at = ticket_at(&c.room, user, req, c.n, qty);
                let got = c.fleet.take(&at, qty, 0).await.unwrap();
                let held = m.held.get(&user).copied().unwrap_or(0);
                let want = match m.reqs.get(&(user, req)) {
                    Some(State::Pending(_)) => "pending",
                    Some(State::Done(_)) => "done",
                    None if limit.is_some_and(|l| held + qty > l) => "limit_exceeded",
                    None if m.left == 0 => "sold_out",
                    None if m.left < qty => "insufficient_stock",
                    None => "ok",
                };
                let seen = match &got {
                    Taken::Ok { left_after, .. } => {
                        prop_assert_eq!(*left_after, m.left.saturating_sub(qty));
                        "ok"
                    }
                    Taken::Seen(Seen::Pending(_)) => "pending",
                    Taken::Seen(Seen::Done(_)) => "done",
                    Taken::Refused { code, left } => {
                        prop_assert_eq!(*left, Some(m.left));
                        match code {
                            RejectCode::LimitExceeded => "limit_exceeded",
                            RejectCode::SoldOut => "sold_out",
                            RejectCode::InsufficientStock => "insufficient_stock",
                            other => panic!("unexpected {other:?}"),
                        }
                    }
                };
                prop_assert_eq!(seen, want, "{:?}", got);
                if want == "ok" {
                    m.left -= qty;
                    *m.held.entry(user).or_default() += qty;
                    m.reqs.insert((user, req), State::Pending(c.n));
                    taken.push((user, req, c.n, qty));
                }
            }
            Op::Release(i) => {
                let Some(&(user, req, nonce, qty)) = taken.get(i) else {
                    continue;
                };
                let at = ticket_at(&c.room, user, req, nonce, qty);
                let released = c.fleet.release(&at).await.unwrap();
                let want = m.reqs.get(&(user, req)) == Some(&State::Pending(nonce));
                prop_assert_eq!(released, want);
                if want {
                    m.left += qty;
                    *m.held.get_mut(&user).unwrap() -= qty;
                    m.reqs.remove(&(user, req));
                }
            }
            Op::Publish(i) => {
                let Some(&(user, req, nonce, qty)) = taken.get(i) else {
                    continue;
                };
                if m.reqs.get(&(user, req)) != Some(&State::Pending(nonce)) {
                    continue;
                }
                seq += 1;
                let order = Arc::new(OrderRecord {
                    seq,
                    number: seq,
                    room: Arc::from(c.room.as_str()),
                    sku: Arc::from("S"),
                    user: Arc::from(format!("u{user}").as_str()),
                    req: Arc::from(format!("r{req}").as_str()),
                    qty,
                    price_fen: 100,
                    amount_fen: 100 * qty,
                    referrer: None,
                    ts_ms: 0,
                    left_after: 0,
                    pay_by_ms: None,
                    hub: Some(Arc::from("h")),
                    begun: None,
                });
                let n = publish::publish(&c.fleet, &c.room, &[order.clone(), order])
                    .await
                    .unwrap();
                prop_assert_eq!(n, 1, "a repeated publish appends nothing");
                m.sold += qty;
                m.reqs.insert((user, req), State::Done(nonce));
                let state = c
                    .fleet
                    .request_state(
                        &c.room,
                        &keys::request_field(&format!("u{user}"), &format!("r{req}")),
                    )
                    .await
                    .unwrap();
                let is_done = matches!(state, Some(Seen::Done(Done { qty: q, .. })) if q == qty);
                prop_assert!(is_done);
            }
            Op::Stock(delta) => {
                let ok = if delta < 0 {
                    m.left >= delta.unsigned_abs()
                } else {
                    true
                };
                let mut inv = c.fleet.scripts.stock.prepare_invoke();
                inv.key(keys::sku(&c.room, "S"))
                    .arg(delta)
                    .arg(1_000_000)
                    .arg("n");
                let mut conn = c.fleet.conn();
                let reply: Vec<String> = inv.invoke_async(&mut conn).await.unwrap();
                prop_assert_eq!(reply[0] == "ok", ok, "{:?}", reply);
                if ok {
                    m.total = (m.total as i64 + delta) as u64;
                    m.left = (m.left as i64 + delta) as u64;
                }
            }
        }
        let (total, left, sold, held) = redis_counts(&c).await;
        prop_assert_eq!((total, left, sold), (m.total, m.left, m.sold));
        for (u, h) in &m.held {
            prop_assert_eq!(held.get(&format!("u{u}")).copied().unwrap_or(0), *h);
        }
        let tickets: u64 = m
            .reqs
            .iter()
            .filter_map(|((_, _), s)| match s {
                State::Pending(n) => taken.iter().find(|t| t.2 == *n).map(|t| t.3),
                State::Done(_) => None,
            })
            .sum();
        prop_assert_eq!(total, left + sold + tickets, "every unit is accounted for");
    }
    Ok(())
}

#[test]
fn the_scripts_match_the_sequential_model() {
    let redis = RedisServer::start();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let fleet = rt.block_on(Fleet::connect(&redis.hub("h"))).unwrap();
    // Each case (shrinking included) gets a fresh room.
    let case = std::sync::atomic::AtomicU64::new(0);
    let mut runner = proptest::test_runner::TestRunner::new(ProptestConfig::with_cases(200));
    runner
        .run(
            &(
                0u64..12,
                proptest::option::of(1u64..5),
                proptest::collection::vec(op(), 1..40),
            ),
            |(stock, limit, ops)| {
                let n = case.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                rt.block_on(run_case(&fleet, n, stock, limit, ops))
            },
        )
        .unwrap();
}

//! The Redis scripts against a simple sequential model (proptest), on a real `redis-server`:
//! random sequences of buys, releases, publishes, restocks and withdrawals by a few users must
//! give exactly the model's answers, and after every step Redis's counters must equal the
//! model's: `left`, each user's units, `sold`, and `stock_total = left + sold + tickets`.
//! The status moves of orders that must be paid (claims, commits and aborts by two hubs) have
//! a model of their own, below `the_scripts_match_the_sequential_model`.

mod support;

use std::collections::HashMap;
use std::sync::Arc;

use proptest::prelude::*;

use livehub::fleet::buy::TicketAt;
use livehub::fleet::moves::{move_name, ClaimReply, Commit, Entry};
use livehub::fleet::scripts::{Done, Seen, Taken, Ticket};
use livehub::fleet::{keys, publish, Fleet};
use livehub::journal::record::{Move, Payment};
use livehub::journal::OrderRecord;
use livehub::protocol::{OrderStatus, RejectCode};
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

// The status moves of fleet mode (claim.lua, claim_expiries.lua, commit.lua, abort.lua and
// publish.lua's status entries) against a sequential model: two hubs interleave buys of SKUs
// whose orders must be paid, claims of payments, cancels, refunds and expiries (one at a time
// or in a batch), and commits and aborts of those claims in any order, repeated or stale.
// The claim is what makes "nothing is released twice when two hubs race; every move acts on
// that order's units only, once" true, so after every step each script's answer and every
// key the scripts write (stock, sold, held units, statuses, claims, payment ids, deadlines,
// the stream) must equal the model's, and:
// - `left + sold + units of open tickets == total`, `left <= total`;
// - each user's held units are those of their orders not expired, cancelled or refunded with
//   restock, and of their open tickets;
// - an order has one claim at most, a payment id names one order at most and is in one move
//   at most;
// - the stream's move entries are exactly the moves committed, one per commit.

/// The hubs of the fleet.
const HUBS: [&str; 2] = ["h1", "h2"];
/// The SKUs: `A` must be paid within `A_TIMEOUT_S`; `B`'s time to pay is per case (or none:
/// paid on placement).
const SKUS: [&str; 2] = ["A", "B"];
const PRICES: [u64; 2] = [100, 250];
const A_TIMEOUT_S: u64 = 2;
/// The model clock's start (Unix ms).
const T0: i64 = 1_700_000_000_000;

/// Who asks for a cancel.
#[derive(Debug, Clone, Copy)]
enum By {
    Buyer,
    OtherUser,
    Operator,
}

/// A move asked of one order.
#[derive(Debug, Clone)]
enum Ask {
    /// A payment with id `p<pid>` (a small pool, so ids meet again), of the order's amount or
    /// not.
    Pay {
        pid: u8,
        right: bool,
    },
    Cancel(By),
    Refund {
        restock: bool,
    },
    Expire,
}

#[derive(Debug, Clone)]
enum MoveOp {
    /// A ticket, and its order published at once or left open.
    Buy {
        hub: usize,
        user: u8,
        sku: usize,
        qty: u64,
        publish: bool,
    },
    /// Publishes an open ticket's order (by its hub).
    Publish(usize),
    /// A claim of the order `order` picks.
    Claim { hub: usize, order: Pick, ask: Ask },
    /// The last claim's move asked again, by this hub: a buyer's or provider's retry after
    /// an answer it did not get, or the same move reaching both hubs.
    Again { hub: usize },
    /// A batch expiry claim of these orders (repeats included).
    ClaimExpiries { hub: usize, orders: Vec<usize> },
    /// Commits these claims (counting back from the newest claim made) in one call.
    Commit(Vec<usize>),
    /// Aborts these claims in one call.
    Abort(Vec<usize>),
    /// The clock moves on.
    Tick(i64),
}

/// Which order a claim is of.
#[derive(Debug, Clone)]
enum Pick {
    /// Counting back from the newest order.
    Order(usize),
    /// The order of a claim granted before, counting back from the newest: another move of
    /// an order just moved, or racing one on its way.
    OfClaim(usize),
    /// One never published.
    Unknown,
}

fn ask() -> impl Strategy<Value = Ask> {
    prop_oneof![
        5 => (0u8..3, proptest::bool::weighted(0.8))
            .prop_map(|(pid, right)| Ask::Pay { pid, right }),
        2 => prop_oneof![Just(By::Buyer), Just(By::OtherUser), Just(By::Operator)]
            .prop_map(Ask::Cancel),
        2 => any::<bool>().prop_map(|restock| Ask::Refund { restock }),
        1 => Just(Ask::Expire),
    ]
}

/// Claims to commit or abort, counting back from the newest granted: mostly the last few (a
/// claim outstanding, or one just settled), sometimes an older one.
fn claims_picked() -> impl Strategy<Value = Vec<usize>> {
    proptest::collection::vec(
        prop_oneof![3 => Just(0usize), 3 => 1usize..3, 1 => 0usize..12],
        1..4,
    )
}

/// Mostly a recent order, often one just claimed, so moves of one order meet.
fn pick() -> impl Strategy<Value = Pick> {
    prop_oneof![
        5 => (0usize..6).prop_map(Pick::Order),
        4 => prop_oneof![Just(0usize), 0usize..4].prop_map(Pick::OfClaim),
        1 => Just(Pick::Unknown),
    ]
}

fn buy(published: f64) -> impl Strategy<Value = MoveOp> {
    (
        0usize..2,
        0u8..3,
        0usize..2,
        1u64..4,
        proptest::bool::weighted(published),
    )
        .prop_map(|(hub, user, sku, qty, publish)| MoveOp::Buy {
            hub,
            user,
            sku,
            qty,
            publish,
        })
}

fn move_op() -> impl Strategy<Value = MoveOp> {
    prop_oneof![
        3 => buy(0.8),
        1 => (0usize..4).prop_map(MoveOp::Publish),
        6 => (0usize..2, pick(), ask())
            .prop_map(|(hub, order, ask)| MoveOp::Claim { hub, order, ask }),
        3 => (0usize..2).prop_map(|hub| MoveOp::Again { hub }),
        1 => (0usize..2, proptest::collection::vec(0usize..8, 1..5))
            .prop_map(|(hub, orders)| MoveOp::ClaimExpiries { hub, orders }),
        3 => claims_picked().prop_map(MoveOp::Commit),
        3 => claims_picked().prop_map(MoveOp::Abort),
        // Steps of half a second: times to pay are whole seconds, so a deadline is often
        // exactly now.
        3 => (0i64..7).prop_map(|n| MoveOp::Tick(n * 500)),
    ]
}

/// A ticket not published yet.
#[derive(Debug, Clone)]
struct OpenTicket {
    hub: usize,
    user: u8,
    sku: usize,
    qty: u64,
    req: String,
    placed_ms: i64,
    left_after: u64,
}

/// A published order as the model has it.
#[derive(Debug, Clone)]
struct ModelOrder {
    id: String,
    sku: usize,
    user: u8,
    qty: u64,
    pay_by_ms: Option<i64>,
    placed_ms: i64,
    status: OrderStatus,
    paid_ms: Option<i64>,
    /// Its units went back to the sale (expired, cancelled, refunded with restock).
    released: bool,
}

impl ModelOrder {
    fn amount(&self) -> u64 {
        PRICES[self.sku] * self.qty
    }

    fn entry(&self) -> Entry {
        Entry {
            status: self.status,
            sku: Arc::from(SKUS[self.sku]),
            user: Arc::from(format!("u{}", self.user).as_str()),
            qty: self.qty,
            amount_fen: self.amount(),
            pay_by_ms: self.pay_by_ms,
            placed_ms: self.placed_ms,
            paid_ms: self.paid_ms,
        }
    }

    /// Its status entry as Redis keeps it.
    fn entry_text(&self) -> String {
        let opt = |t: Option<i64>| t.map(|t| t.to_string()).unwrap_or_default();
        format!(
            "{}|{}|u{}|{}|{}|{}|{}|{}",
            letter(self.status),
            SKUS[self.sku],
            self.user,
            self.qty,
            self.amount(),
            opt(self.pay_by_ms),
            self.placed_ms,
            opt(self.paid_ms)
        )
    }
}

fn letter(s: OrderStatus) -> &'static str {
    match s {
        OrderStatus::Unpaid => "U",
        OrderStatus::Paid => "P",
        OrderStatus::Expired => "E",
        OrderStatus::Cancelled => "C",
        OrderStatus::Refunded => "R",
    }
}

/// A claim the scripts granted, as the hub would commit or abort it.
#[derive(Debug, Clone)]
struct Granted {
    /// The hub that holds it (and commits or aborts it).
    hub: usize,
    commit: Commit,
}

/// What a payment id stands for in Redis: `P|order`, `L|order` or `C|order`.
type PaymentState = (char, String);

struct MoveModel {
    now: i64,
    timeouts: [Option<u64>; 2],
    limit: Option<u64>,
    total: [u64; 2],
    left: [u64; 2],
    sold: [u64; 2],
    sold_out_at: [String; 2],
    held: HashMap<(usize, u8), u64>,
    tickets: Vec<OpenTicket>,
    orders: Vec<ModelOrder>,
    claims: HashMap<String, String>,
    payments: HashMap<String, PaymentState>,
    granted: Vec<Granted>,
    /// The stream's move entries (field `m`), in order: one per commit that made a move.
    moves: Vec<String>,
    hub_seq: [u64; 2],
    nonce: u64,
    /// The last claim op's order and move.
    last_ask: Option<(String, Ask)>,
}

impl MoveModel {
    fn order(&self, id: &str) -> Option<&ModelOrder> {
        self.orders.iter().find(|o| o.id == id)
    }

    /// The units given back by an expiry, cancel or restocking refund.
    fn release(&mut self, i: usize) {
        let o = &mut self.orders[i];
        o.released = true;
        let (sku, user, qty) = (o.sku, o.user, o.qty);
        self.left[sku] += qty;
        self.sold[sku] -= qty;
        self.sold_out_at[sku].clear();
        let h = self.held.get_mut(&(sku, user)).expect("held units");
        *h -= qty;
        if *h == 0 {
            self.held.remove(&(sku, user));
        }
    }

    /// commit.lua for one claimed move, as it should be: only while the order holds exactly
    /// this claim. Returns whether it made the move.
    fn commit(&mut self, c: &Commit, ts: i64) -> bool {
        if self.claims.get(&*c.order) != Some(&c.claim) {
            return false;
        }
        self.claims.remove(&*c.order);
        let i = self.orders.iter().position(|o| *o.id == *c.order).unwrap();
        let before = self.orders[i].clone();
        let (pid, pay_amount, paid_at) = match &c.to {
            Some(Move::Paid(p) | Move::LatePayment(p)) => (
                p.payment_id.to_string(),
                p.amount_fen.to_string(),
                p.paid_at_ms.to_string(),
            ),
            _ => Default::default(),
        };
        match &c.to {
            Some(Move::Paid(_)) => {
                let o = &mut self.orders[i];
                o.status = OrderStatus::Paid;
                o.paid_ms = Some(ts);
                self.payments.insert(pid.clone(), ('P', o.id.clone()));
            }
            Some(Move::LatePayment(_)) => {
                self.payments.insert(pid.clone(), ('L', before.id.clone()));
            }
            Some(Move::Cancelled { .. }) => {
                self.orders[i].status = OrderStatus::Cancelled;
                self.release(i);
            }
            None => {
                self.orders[i].status = OrderStatus::Expired;
                self.release(i);
            }
            Some(Move::Refunded { restock }) => {
                self.orders[i].status = OrderStatus::Refunded;
                if *restock {
                    self.release(i);
                }
            }
        }
        let opt = |t: Option<i64>| t.map(|t| t.to_string()).unwrap_or_default();
        self.moves.push(format!(
            "{}|{}|{ts}|{}|u{}|{}|{}|{}|{}|{}|{}|{pid}|{pay_amount}|{paid_at}",
            before.id,
            move_name(c.to.as_ref()),
            SKUS[before.sku],
            before.user,
            before.qty,
            before.amount(),
            opt(before.pay_by_ms),
            before.placed_ms,
            opt(before.paid_ms),
            letter(before.status),
        ));
        true
    }

    /// abort.lua for one claim, as it should be: the claim and its payment id are given back
    /// only while the order holds exactly this claim. Returns whether it gave one back.
    fn abort(&mut self, c: &Commit) -> bool {
        if self.claims.get(&*c.order) != Some(&c.claim) {
            return false;
        }
        self.claims.remove(&*c.order);
        if let Some(Move::Paid(p) | Move::LatePayment(p)) = &c.to {
            let was = self.payments.remove(&*p.payment_id);
            assert_eq!(
                was,
                Some(('C', c.order.to_string())),
                "claimed with the claim"
            );
        }
        true
    }
}

/// Everything the scripts keep for a room, as Redis has it now.
#[derive(Debug)]
struct RoomKeys {
    /// Per SKU: `total`, `left`, `sold_out_at`, and the held hash.
    skus: Vec<(u64, u64, String, HashMap<String, u64>)>,
    sold: HashMap<String, u64>,
    statuses: HashMap<String, String>,
    claims: HashMap<String, String>,
    payments: HashMap<String, String>,
    deadlines: Vec<(String, i64)>,
    stream: Vec<(String, HashMap<String, String>)>,
    pending: [Vec<String>; 2],
    seq: Option<u64>,
    published: HashMap<String, u64>,
}

async fn room_keys(fleet: &Fleet, room: &str) -> RoomKeys {
    let mut pipe = redis::pipe();
    for s in SKUS {
        pipe.cmd("HMGET")
            .arg(keys::sku(room, s))
            .arg("total")
            .arg("left")
            .arg("sold_out_at")
            .cmd("HGETALL")
            .arg(keys::held(room, s));
    }
    type Sku = (u64, u64, String);
    type Held = HashMap<String, u64>;
    let (a, held_a, b, held_b): (Sku, Held, Sku, Held) = fleet.run_pipe(&pipe).await.unwrap();
    let skus = [(a, held_a), (b, held_b)]
        .into_iter()
        .map(|((total, left, out), held)| (total, left, out, held))
        .collect();
    let mut pipe = redis::pipe();
    pipe.cmd("HGETALL")
        .arg(keys::sold(room))
        .cmd("HGETALL")
        .arg(keys::statuses(room))
        .cmd("HGETALL")
        .arg(keys::claims(room))
        .cmd("HGETALL")
        .arg(keys::payments(room))
        .cmd("ZRANGE")
        .arg(keys::deadlines(room))
        .arg(0)
        .arg(-1)
        .arg("WITHSCORES")
        .cmd("XRANGE")
        .arg(keys::orders(room))
        .arg("-")
        .arg("+")
        .cmd("SMEMBERS")
        .arg(keys::pending(room, HUBS[0]))
        .cmd("SMEMBERS")
        .arg(keys::pending(room, HUBS[1]))
        .cmd("GET")
        .arg(keys::seq(room))
        .cmd("HGETALL")
        .arg(keys::published(room));
    let (sold, statuses, claims, payments, deadlines, stream, p1, p2, seq, published) =
        fleet.run_pipe(&pipe).await.unwrap();
    RoomKeys {
        skus,
        sold,
        statuses,
        claims,
        payments,
        deadlines,
        stream,
        pending: [p1, p2],
        seq,
        published,
    }
}

/// Compares every key of the room with the model, and checks the invariants.
fn check_room(m: &MoveModel, r: &RoomKeys) -> Result<(), TestCaseError> {
    for (k, s) in SKUS.iter().enumerate() {
        let (total, left, out, held) = &r.skus[k];
        prop_assert_eq!(
            (*total, *left, out),
            (m.total[k], m.left[k], &m.sold_out_at[k])
        );
        prop_assert!(left <= total);
        let sold = r.sold.get(*s).copied().unwrap_or(0);
        prop_assert_eq!(sold, m.sold[k], "sold of {}", s);
        // Units of orders that still hold them, and of open tickets.
        let kept = |user: Option<u8>| -> u64 {
            let orders: u64 = m
                .orders
                .iter()
                .filter(|o| o.sku == k && !o.released && user.is_none_or(|u| o.user == u))
                .map(|o| o.qty)
                .sum();
            let tickets: u64 = m
                .tickets
                .iter()
                .filter(|t| t.sku == k && user.is_none_or(|u| t.user == u))
                .map(|t| t.qty)
                .sum();
            orders + tickets
        };
        let tickets: u64 = m.tickets.iter().filter(|t| t.sku == k).map(|t| t.qty).sum();
        prop_assert_eq!(
            *total,
            left + sold + tickets,
            "every unit of {} is accounted for",
            s
        );
        prop_assert_eq!(kept(None), sold + tickets);
        let mut want_held = HashMap::new();
        for u in 0..3u8 {
            let h = kept(Some(u));
            prop_assert_eq!(m.held.get(&(k, u)).copied().unwrap_or(0), h);
            if h > 0 {
                want_held.insert(format!("u{u}"), h);
            }
        }
        prop_assert_eq!(held, &want_held, "held units of {}", s);
    }
    let statuses: HashMap<String, String> = m
        .orders
        .iter()
        .map(|o| (o.id.clone(), o.entry_text()))
        .collect();
    prop_assert_eq!(&r.statuses, &statuses);
    // At most one claim per order, and exactly the model's.
    prop_assert_eq!(&r.claims, &m.claims);
    let payments: HashMap<String, String> = m
        .payments
        .iter()
        .map(|(p, (k, o))| (p.clone(), format!("{k}|{o}")))
        .collect();
    prop_assert_eq!(&r.payments, &payments);
    let mut deadlines: Vec<(String, i64)> = m
        .orders
        .iter()
        .filter(|o| o.status == OrderStatus::Unpaid)
        .map(|o| {
            (
                o.id.clone(),
                o.pay_by_ms.expect("unpaid orders have a deadline"),
            )
        })
        .collect();
    let mut got = r.deadlines.clone();
    deadlines.sort();
    got.sort();
    prop_assert_eq!(got, deadlines, "deadlines: the unpaid orders'");
    // The stream: each published order once, and exactly the committed moves, in order.
    let placed = r.stream.iter().filter(|(_, f)| f.contains_key("o")).count();
    prop_assert_eq!(placed, m.orders.len());
    let moves: Vec<&String> = r.stream.iter().filter_map(|(_, f)| f.get("m")).collect();
    prop_assert_eq!(moves.len() + placed, r.stream.len());
    prop_assert_eq!(&moves, &m.moves.iter().collect::<Vec<_>>());
    // A payment id pays, or is kept for, one order at most: it is in one move at most.
    let mut seen = std::collections::HashSet::new();
    for mv in &moves {
        let pid = mv.split('|').nth(11).unwrap();
        prop_assert!(pid.is_empty() || seen.insert(pid), "{} in two moves", pid);
    }
    for (h, hub) in HUBS.iter().enumerate() {
        let mut want: Vec<String> = m
            .tickets
            .iter()
            .filter(|t| t.hub == h)
            .map(|t| keys::request_field(&format!("u{}", t.user), &t.req))
            .collect();
        let mut got = r.pending[h].clone();
        want.sort();
        got.sort();
        prop_assert_eq!(got, want, "open tickets of {}", hub);
        let published = r.published.get(*hub).copied().unwrap_or(0);
        prop_assert_eq!(published, m.hub_seq[h]);
    }
    prop_assert_eq!(r.seq.unwrap_or(0), m.orders.len() as u64);
    Ok(())
}

/// Publishes an open ticket's order, by its hub (twice in one call: the repeat is skipped).
async fn publish_ticket(
    fleets: &[Fleet; 2],
    room: &str,
    m: &mut MoveModel,
    i: usize,
) -> Result<(), TestCaseError> {
    let t = m.tickets.remove(i);
    m.hub_seq[t.hub] += 1;
    let seq = m.hub_seq[t.hub];
    let pay_by_ms = m.timeouts[t.sku].map(|s| t.placed_ms + s as i64 * 1000);
    let order = Arc::new(OrderRecord {
        seq,
        number: seq,
        room: Arc::from(room),
        sku: Arc::from(SKUS[t.sku]),
        user: Arc::from(format!("u{}", t.user).as_str()),
        req: Arc::from(t.req.as_str()),
        qty: t.qty,
        price_fen: PRICES[t.sku],
        amount_fen: PRICES[t.sku] * t.qty,
        referrer: None,
        ts_ms: t.placed_ms,
        left_after: t.left_after,
        pay_by_ms,
        hub: Some(Arc::from(HUBS[t.hub])),
        begun: None,
    });
    let n = publish::publish(&fleets[t.hub], room, &[order.clone(), order.clone()])
        .await
        .unwrap();
    prop_assert_eq!(n, 1, "a repeated publish appends nothing");
    m.sold[t.sku] += t.qty;
    m.orders.push(ModelOrder {
        id: order.order_id(),
        sku: t.sku,
        user: t.user,
        qty: t.qty,
        pay_by_ms,
        placed_ms: t.placed_ms,
        status: if pay_by_ms.is_some() {
            OrderStatus::Unpaid
        } else {
            OrderStatus::Paid
        },
        paid_ms: pay_by_ms.is_none().then_some(t.placed_ms),
        released: false,
    });
    Ok(())
}

/// The claims picked by `picks` (counting back from the newest granted).
fn picked(m: &MoveModel, picks: &[usize]) -> Vec<Granted> {
    let n = m.granted.len();
    if n == 0 {
        return Vec::new();
    }
    picks
        .iter()
        .map(|&i| m.granted[n - 1 - i % n].clone())
        .collect()
}

/// One claim of `ask` on order `id` by `hub`, against claim.lua as it should be.
async fn claim_step(
    fleets: &[Fleet; 2],
    room: &str,
    m: &mut MoveModel,
    hub: usize,
    id: String,
    ask: Ask,
) -> Result<(), TestCaseError> {
    m.nonce += 1;
    let (kind, pid) = match &ask {
        Ask::Pay { pid, .. } => ("pay", format!("p{pid}")),
        Ask::Cancel(_) => ("cancel", String::new()),
        Ask::Refund { .. } => ("refund", String::new()),
        Ask::Expire => ("expire", String::new()),
    };
    let claim = format!("{}|{}|{kind}|{pid}", HUBS[hub], m.nonce);
    let o = m.order(&id).cloned();
    let buyer = o.as_ref().map_or(0, |o| o.user);
    let user = match ask {
        Ask::Cancel(By::Buyer) => Some(format!("u{buyer}")),
        Ask::Cancel(By::OtherUser) => Some(format!("u{}", (buyer + 1) % 3)),
        _ => None,
    };
    let payment = match ask {
        Ask::Pay { right, .. } => Some(Payment {
            payment_id: Arc::from(pid.as_str()),
            amount_fen: o.as_ref().map_or(1, |o| o.amount()) + u64::from(!right),
            paid_at_ms: m.now,
        }),
        _ => None,
    };
    let got = fleets[hub]
        .claim(
            room,
            &id,
            &claim,
            kind,
            user.as_deref(),
            payment.as_ref(),
            m.now,
        )
        .await
        .unwrap();
    // claim.lua as it should be.
    let want = 'want: {
        let Some(o) = o else {
            break 'want ClaimReply::Unknown;
        };
        if user.as_ref().is_some_and(|u| *u != format!("u{}", o.user)) {
            break 'want ClaimReply::Unknown;
        }
        if m.claims.contains_key(&id) {
            break 'want ClaimReply::Moving;
        }
        let e = o.entry();
        let to = match &ask {
            Ask::Pay { .. } => {
                let p = payment.clone().unwrap();
                match m.payments.get(&pid) {
                    Some((_, other)) if *other != id => {
                        break 'want ClaimReply::Reused(other.clone())
                    }
                    Some(('P', _)) => break 'want ClaimReply::Paid(e),
                    Some(('L', _)) => break 'want ClaimReply::LateKnown(e),
                    Some(_) => break 'want ClaimReply::Moving,
                    None if p.amount_fen != o.amount() => break 'want ClaimReply::Mismatch(e),
                    None => {}
                }
                m.payments.insert(pid.clone(), ('C', id.clone()));
                if o.status == OrderStatus::Unpaid {
                    Some(Move::Paid(p))
                } else {
                    Some(Move::LatePayment(p))
                }
            }
            Ask::Cancel(by) => {
                if o.status != OrderStatus::Unpaid {
                    break 'want ClaimReply::Refused(e);
                }
                Some(Move::Cancelled {
                    by_admin: matches!(by, By::Operator),
                })
            }
            Ask::Refund { restock } => {
                if o.status != OrderStatus::Paid {
                    break 'want ClaimReply::Refused(e);
                }
                Some(Move::Refunded { restock: *restock })
            }
            Ask::Expire => {
                if o.status != OrderStatus::Unpaid {
                    break 'want ClaimReply::Refused(e);
                }
                if o.pay_by_ms.unwrap() > m.now {
                    break 'want ClaimReply::NotDue;
                }
                None
            }
        };
        m.claims.insert(id.clone(), claim.clone());
        // The claim's name of the move: a payment's is decided, not asked.
        let decided = match &to {
            Some(Move::Paid(_)) => "paid",
            Some(Move::LatePayment(_)) => "late",
            Some(Move::Cancelled { .. }) => "cancel",
            Some(Move::Refunded { .. }) => "refund",
            None => "expire",
        };
        m.granted.push(Granted {
            hub,
            commit: Commit {
                order: Arc::from(id.as_str()),
                claim: claim.clone(),
                to,
                sku: Arc::from(SKUS[o.sku]),
            },
        });
        ClaimReply::Claimed(e, decided.into())
    };
    prop_assert_eq!(got, want, "{} {:?} of {}", kind, ask, id);
    Ok(())
}

async fn run_moves_case(
    fleets: &[Fleet; 2],
    case: u64,
    stock: [u64; 2],
    limit: Option<u64>,
    b_timeout_s: Option<u64>,
    ops: Vec<MoveOp>,
) -> Result<(), TestCaseError> {
    let room = format!("m{case}");
    let room = room.as_str();
    let mut m = MoveModel {
        now: T0,
        timeouts: [Some(A_TIMEOUT_S), b_timeout_s],
        limit,
        total: stock,
        left: stock,
        sold: [0; 2],
        sold_out_at: Default::default(),
        held: HashMap::new(),
        tickets: Vec::new(),
        orders: Vec::new(),
        claims: HashMap::new(),
        payments: HashMap::new(),
        granted: Vec::new(),
        moves: Vec::new(),
        hub_seq: [0; 2],
        nonce: 0,
        last_ask: None,
    };
    for k in 0..2 {
        let _: () = fleets[0]
            .run(redis::cmd("HSET").arg(keys::sku(room, SKUS[k])).arg(&[
                ("total", stock[k].to_string()),
                ("left", stock[k].to_string()),
                ("name", SKUS[k].into()),
                ("price_fen", PRICES[k].to_string()),
                ("limit", limit.map(|l| l.to_string()).unwrap_or_default()),
                ("opens", String::new()),
                ("closes", String::new()),
                ("sold_out_at", String::new()),
                (
                    "pay_timeout",
                    m.timeouts[k].map(|t| t.to_string()).unwrap_or_default(),
                ),
            ]))
            .await
            .unwrap();
    }
    for op in ops {
        match op {
            MoveOp::Buy {
                hub,
                user,
                sku,
                qty,
                publish,
            } => {
                m.nonce += 1;
                let req = format!("r{}", m.nonce);
                let u = format!("u{user}");
                let at = TicketAt {
                    room: Arc::from(room),
                    user: Arc::from(u.as_str()),
                    field: keys::request_field(&u, &req),
                    ticket: Ticket {
                        hub: Arc::from(HUBS[hub]),
                        nonce: m.nonce,
                        sku: Arc::from(SKUS[sku]),
                        qty,
                    },
                };
                let got = fleets[hub].take(&at, qty, m.now).await.unwrap();
                let held = m.held.get(&(sku, user)).copied().unwrap_or(0);
                let left = m.left[sku];
                let want = if m.limit.is_some_and(|l| held + qty > l) {
                    Err(RejectCode::LimitExceeded)
                } else if left == 0 {
                    Err(RejectCode::SoldOut)
                } else if left < qty {
                    Err(RejectCode::InsufficientStock)
                } else {
                    Ok(())
                };
                match want {
                    Ok(()) => {
                        let ok = Taken::Ok {
                            left_after: left - qty,
                            price_fen: PRICES[sku],
                            pay_timeout_s: m.timeouts[sku],
                        };
                        prop_assert_eq!(&got, &ok);
                        m.left[sku] -= qty;
                        if m.left[sku] == 0 {
                            m.sold_out_at[sku] = m.now.to_string();
                        }
                        *m.held.entry((sku, user)).or_default() += qty;
                        m.tickets.push(OpenTicket {
                            hub,
                            user,
                            sku,
                            qty,
                            req,
                            placed_ms: m.now,
                            left_after: left - qty,
                        });
                        if publish {
                            let last = m.tickets.len() - 1;
                            publish_ticket(fleets, room, &mut m, last).await?;
                        }
                    }
                    Err(code) => {
                        let refused = Taken::Refused {
                            code,
                            left: Some(left),
                        };
                        prop_assert_eq!(&got, &refused);
                    }
                }
            }
            MoveOp::Publish(i) => {
                if !m.tickets.is_empty() {
                    let i = i % m.tickets.len();
                    publish_ticket(fleets, room, &mut m, i).await?;
                }
            }
            MoveOp::Claim { hub, order, ask } => {
                let (n, g) = (m.orders.len(), m.granted.len());
                let id = match order {
                    Pick::Order(i) if n > 0 => m.orders[n - 1 - i % n].id.clone(),
                    Pick::OfClaim(i) if g > 0 => m.granted[g - 1 - i % g].commit.order.to_string(),
                    Pick::OfClaim(i) if n > 0 => m.orders[n - 1 - i % n].id.clone(),
                    _ => format!("{}:O99", HUBS[1 - hub]),
                };
                m.last_ask = Some((id.clone(), ask.clone()));
                claim_step(fleets, room, &mut m, hub, id, ask).await?;
            }
            MoveOp::Again { hub } => {
                if let Some((id, ask)) = m.last_ask.clone() {
                    claim_step(fleets, room, &mut m, hub, id, ask).await?;
                }
            }
            MoveOp::ClaimExpiries { hub, orders } => {
                let n = m.orders.len();
                let ids: Vec<String> = orders
                    .iter()
                    .map(|&i| match n {
                        0 => format!("{}:O99", HUBS[hub]),
                        n => m.orders[n - 1 - i % n].id.clone(),
                    })
                    .collect();
                m.nonce += 1;
                let claim = format!("{}|{}|expire|", HUBS[hub], m.nonce);
                let mut inv = fleets[hub].scripts.claim_expiries.prepare_invoke();
                inv.key(keys::statuses(room))
                    .key(keys::claims(room))
                    .arg(&claim)
                    .arg(m.now);
                for id in &ids {
                    inv.arg(id);
                }
                let got: Vec<String> = inv.invoke_async(&mut fleets[hub].conn()).await.unwrap();
                let mut want = Vec::new();
                for id in &ids {
                    let r = match m.order(id).cloned() {
                        None => "u".to_owned(),
                        Some(o) if o.status != OrderStatus::Unpaid => "s".into(),
                        Some(_) if m.claims.contains_key(id) => "m".into(),
                        Some(o) if o.pay_by_ms.unwrap() > m.now => "n".into(),
                        Some(o) => {
                            m.claims.insert(id.clone(), claim.clone());
                            m.granted.push(Granted {
                                hub,
                                commit: Commit {
                                    order: Arc::from(id.as_str()),
                                    claim: claim.clone(),
                                    to: None,
                                    sku: Arc::from(SKUS[o.sku]),
                                },
                            });
                            format!("c|{}", o.entry_text())
                        }
                    };
                    want.push(r);
                }
                prop_assert_eq!(got, want, "expiries of {:?}", ids);
            }
            MoveOp::Commit(picks) => {
                let g = picked(&m, &picks);
                if g.is_empty() {
                    continue;
                }
                let commits: Vec<Commit> = g.iter().map(|g| g.commit.clone()).collect();
                let made = fleets[g[0].hub]
                    .commit(room, m.now, &commits)
                    .await
                    .unwrap();
                let want = commits.iter().filter(|c| m.commit(c, m.now)).count() as u64;
                prop_assert_eq!(made, want, "commit of {:?}", commits);
            }
            MoveOp::Abort(picks) => {
                let g = picked(&m, &picks);
                if g.is_empty() {
                    continue;
                }
                let commits: Vec<Commit> = g.iter().map(|g| g.commit.clone()).collect();
                let given = fleets[g[0].hub].abort(room, &commits).await.unwrap();
                let want = commits.iter().filter(|c| m.abort(c)).count() as u64;
                prop_assert_eq!(given, want, "abort of {:?}", commits);
            }
            MoveOp::Tick(ms) => m.now += ms,
        }
        check_room(&m, &room_keys(&fleets[0], room).await)?;
    }
    Ok(())
}

#[test]
fn the_move_scripts_match_the_sequential_model() {
    let redis = RedisServer::start();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let fleets = HUBS.map(|h| rt.block_on(Fleet::connect(&redis.hub(h))).unwrap());
    // Each case (shrinking included) gets a fresh room.
    let case = std::sync::atomic::AtomicU64::new(0);
    let mut runner = proptest::test_runner::TestRunner::new(ProptestConfig::with_cases(200));
    runner
        .run(
            &(
                (1u64..12, 1u64..12),
                proptest::option::of(1u64..6),
                proptest::option::of(1u64..4),
                // A few orders first, so the moves have orders to act on from the start.
                proptest::collection::vec(buy(1.0), 1..4),
                proptest::collection::vec(move_op(), 1..60),
            ),
            |((a, b), limit, b_timeout_s, first, more)| {
                let n = case.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                let ops = first.into_iter().chain(more).collect();
                rt.block_on(run_moves_case(&fleets, n, [a, b], limit, b_timeout_s, ops))
            },
        )
        .unwrap();
}

/// A repeated abort (a retry whose first reply was lost) must leave alone the payment id of a
/// later claim of the same order: freed, that id could pay a second order as well.
#[test]
fn a_repeated_abort_leaves_a_later_claims_payment_id_alone() {
    let redis = RedisServer::start();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let fleets = HUBS.map(|h| rt.block_on(Fleet::connect(&redis.hub(h))).unwrap());
    let buy = |user| MoveOp::Buy {
        hub: 0,
        user,
        sku: 0,
        qty: 1,
        publish: true,
    };
    let ops = vec![
        buy(0),
        // h1 claims the payment p0 of h1:O1, and gives the claim back.
        MoveOp::Claim {
            hub: 0,
            order: Pick::Order(0),
            ask: Ask::Pay {
                pid: 0,
                right: true,
            },
        },
        MoveOp::Abort(vec![0]),
        // The payment comes again, to h2, which claims it.
        MoveOp::Again { hub: 1 },
        // h1's abort once more: h2's claim of p0 stands.
        MoveOp::Abort(vec![1]),
        // p0 for another order is a reused payment id, not a second payment.
        buy(1),
        MoveOp::Claim {
            hub: 0,
            order: Pick::Order(0),
            ask: Ask::Pay {
                pid: 0,
                right: true,
            },
        },
        MoveOp::Commit(vec![0]),
    ];
    rt.block_on(run_moves_case(&fleets, 0, [5, 5], None, None, ops))
        .unwrap();
}

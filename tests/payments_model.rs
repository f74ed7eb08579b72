//! Orders that must be paid against a sequential model (issue 21): random sequences of buys,
//! payment notices, buyer and operator cancels, refunds, clock advances and restarts on a hub
//! opened in this process. Every answer is checked against the model's statuses, stock and
//! allowances, and after every step so are the SKUs' counters, the audit's sums, the export's
//! lines, the change feed (replayed, it gives each order's status) and the dashboard's
//! payment figures.
//!
//! The hub's clock is the wall clock (`pay_by_ms` = placement + 10 s), and nothing expires by
//! itself here: the hub's expiry task is not started, and the model's clock, which starts at
//! the wall clock and only moves forward, expires what is due by calling `Hub::expire_due`.
//!
//! Restarts close the journal and reopen the data dir, half the cases with journal snapshots
//! every few records (restore and compaction) and half with none (a full replay).
//!
//! More cases: `LIVEHUB_PAYMENTS_MODEL_CASES=2000 cargo test --test payments_model`.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use livehub::clock::now_ms;
use livehub::dashboard::Aggregator;
use livehub::hub::moves::{MoveError, PaymentFor};
use livehub::hub::{Hub, HubOptions};
use livehub::inventory::SkuDef;
use livehub::journal::record::Payment;
use livehub::journal::JournalOptions;
use livehub::protocol::{BuyMsg, OrderStatus, RejectCode};
use livehub::rooms::audit::Units;
use livehub::rooms::room::Room;
use proptest::prelude::*;
use serde_json::Value;
use tokio_util::sync::CancellationToken;

const ROOM: &str = "r";
/// `P` must be paid within [`PAY_TIMEOUT_S`]; `V` is paid the moment it is placed.
const SKUS: [&str; 2] = ["P", "V"];
const PRICES: [u64; 2] = [990, 500];
const PAY_TIMEOUT_S: u64 = 10;
const STOCK: u64 = 3;
const LIMIT: u64 = 2;
const USERS: u8 = 3;
const REQS: u8 = 6;
/// Payment ids that notices share, so that ids come again for the same order and for others.
const POOL: u8 = 4;

fn cases() -> u32 {
    std::env::var("LIVEHUB_PAYMENTS_MODEL_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(64)
}

/// The order an operation is about.
#[derive(Debug, Clone)]
enum Target {
    /// The `n`-th order placed (modulo how many there are); an unknown id while there is none.
    Placed(u16),
    /// The `n`-th order unpaid now, if any; else as [`Target::Placed`].
    Unpaid(u16),
    /// The `n`-th order of the buyer who cancels, if any; else as [`Target::Placed`].
    Own(u16),
    /// An id no order has.
    Unknown(u8),
    /// A spelling of a placed order's number that is not its id (`O07`, `O+7` for `O7`).
    Alias(u16, bool),
}

/// The payment id of a notice.
#[derive(Debug, Clone)]
enum PayId {
    /// Never used before.
    Fresh,
    /// One of [`POOL`] shared ids.
    Pool(u8),
    /// A payment the hub kept (paid or late), again for the order it was kept for.
    Again(u16),
}

#[derive(Debug, Clone)]
enum Op {
    Buy {
        user: u8,
        req: u8,
        sku: usize,
        qty: u64,
    },
    Pay {
        target: Target,
        id: PayId,
        wrong_amount: bool,
    },
    Cancel {
        user: u8,
        target: Target,
    },
    AdminCancel {
        target: Target,
    },
    Refund {
        target: Target,
        restock: bool,
    },
    /// The model's clock moves on and the hub expires what is due.
    Advance {
        ms: i64,
    },
    Restart,
}

fn target() -> impl Strategy<Value = Target> {
    prop_oneof![
        8 => any::<u16>().prop_map(Target::Placed),
        4 => any::<u16>().prop_map(Target::Unpaid),
        1 => (0..3u8).prop_map(Target::Unknown),
        1 => (any::<u16>(), any::<bool>()).prop_map(|(n, plus)| Target::Alias(n, plus)),
    ]
}

fn op() -> impl Strategy<Value = Op> {
    let pay_id = prop_oneof![
        3 => Just(PayId::Fresh),
        2 => (0..POOL).prop_map(PayId::Pool),
        2 => any::<u16>().prop_map(PayId::Again),
    ];
    prop_oneof![
        7 => (0..USERS, 0..REQS, 0..SKUS.len(), 1..=2u64)
            .prop_map(|(user, req, sku, qty)| Op::Buy { user, req, sku, qty }),
        6 => (target(), pay_id, proptest::bool::weighted(0.15))
            .prop_map(|(target, id, wrong_amount)| Op::Pay { target, id, wrong_amount }),
        2 => (0..USERS, prop_oneof![target(), any::<u16>().prop_map(Target::Own)])
            .prop_map(|(user, target)| Op::Cancel { user, target }),
        1 => target().prop_map(|target| Op::AdminCancel { target }),
        2 => (target(), any::<bool>()).prop_map(|(target, restock)| Op::Refund { target, restock }),
        3 => (0..=15_000i64).prop_map(|ms| Op::Advance { ms }),
        1 => Just(Op::Restart),
    ]
}

/// An order's status in the model; a refund remembers whether it restocked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum St {
    Unpaid,
    Paid,
    Expired,
    Cancelled,
    Refunded { restock: bool },
}

impl St {
    fn wire(self) -> OrderStatus {
        match self {
            St::Unpaid => OrderStatus::Unpaid,
            St::Paid => OrderStatus::Paid,
            St::Expired => OrderStatus::Expired,
            St::Cancelled => OrderStatus::Cancelled,
            St::Refunded { .. } => OrderStatus::Refunded,
        }
    }

    /// Whether the order still holds its units (and its buyer's allowance for them).
    fn holds(self) -> bool {
        matches!(
            self,
            St::Unpaid | St::Paid | St::Refunded { restock: false }
        )
    }

    fn ended(self) -> bool {
        matches!(self, St::Expired | St::Cancelled | St::Refunded { .. })
    }
}

#[derive(Debug, Clone)]
struct MOrder {
    id: String,
    user: u8,
    sku: usize,
    qty: u64,
    amount: u64,
    pay_by: Option<i64>,
    status: St,
    /// The payment that paid it, with its `paid_at_ms`.
    payment: Option<(String, i64)>,
    /// Payments kept as late, in order.
    late: Vec<String>,
}

/// The sequential model.
#[derive(Debug, Default)]
struct Model {
    orders: Vec<MOrder>,
    by_req: HashMap<(u8, u8), usize>,
    /// Every payment id kept (paid or late), and its order.
    payments: HashMap<String, usize>,
    /// The same, in the order they were kept.
    kept: Vec<(usize, String)>,
    late: u64,
    /// Events of the change feed: placements, moves and late payments.
    events: u64,
    clock: i64,
    fresh: u64,
}

impl Model {
    fn sold(&self, sku: usize) -> u64 {
        self.units(sku, |o| o.status.holds())
    }

    fn unpaid(&self, sku: usize) -> u64 {
        self.units(sku, |o| o.status == St::Unpaid)
    }

    fn paid(&self, sku: usize) -> u64 {
        self.units(sku, |o| o.status == St::Paid)
    }

    fn units(&self, sku: usize, f: impl Fn(&MOrder) -> bool) -> u64 {
        self.orders
            .iter()
            .filter(|o| o.sku == sku && f(o))
            .map(|o| o.qty)
            .sum()
    }

    fn left(&self, sku: usize) -> u64 {
        STOCK - self.sold(sku)
    }

    fn held(&self, user: u8, sku: usize) -> u64 {
        self.units(sku, |o| o.user == user && o.status.holds())
    }

    fn fen(&self, f: impl Fn(St) -> bool) -> u64 {
        self.orders
            .iter()
            .filter(|o| f(o.status))
            .map(|o| o.amount)
            .sum()
    }

    fn count(&self, f: impl Fn(St) -> bool) -> u64 {
        self.orders.iter().filter(|o| f(o.status)).count() as u64
    }

    /// The id an operation (of `by`, a buyer's cancel) names, and the model's order when it
    /// is one.
    fn resolve(&self, t: &Target, by: Option<u8>) -> (String, Option<usize>) {
        let n = self.orders.len();
        let among = |f: &dyn Fn(&MOrder) -> bool, k: u16| {
            let some: Vec<usize> = (0..n).filter(|&i| f(&self.orders[i])).collect();
            (!some.is_empty()).then(|| some[k as usize % some.len()])
        };
        let picked = match *t {
            Target::Unpaid(k) => among(&|o| o.status == St::Unpaid, k),
            Target::Own(k) => among(&|o| Some(o.user) == by, k),
            _ => None,
        };
        if let Some(i) = picked {
            return (self.orders[i].id.clone(), Some(i));
        }
        match *t {
            Target::Placed(i) | Target::Unpaid(i) | Target::Own(i) if n > 0 => {
                let i = i as usize % n;
                (self.orders[i].id.clone(), Some(i))
            }
            Target::Alias(i, plus) if n > 0 => {
                let number = &self.orders[i as usize % n].id[1..];
                let alias = if plus {
                    format!("O+{number}")
                } else {
                    format!("O0{number}")
                };
                (alias, None)
            }
            Target::Unknown(0) => ("O999999".into(), None),
            Target::Unknown(1) => ("O0".into(), None),
            _ => ("not-an-order".into(), None),
        }
    }

    /// A payment notice, as the contract answers it.
    fn pay(
        &mut self,
        o: Option<usize>,
        id: &str,
        amount: u64,
        at: i64,
    ) -> Result<String, MoveError> {
        let i = o.ok_or(MoveError::UnknownOrder)?;
        if let Some(&j) = self.payments.get(id) {
            if j != i {
                return Err(MoveError::PaymentIdReused(self.orders[j].id.clone()));
            }
        }
        let o = &mut self.orders[i];
        if amount != o.amount {
            return Err(MoveError::AmountMismatch {
                want: o.amount,
                got: amount,
            });
        }
        if o.payment.as_ref().is_some_and(|(p, _)| p == id) {
            return Ok(o.id.clone());
        }
        if o.late.iter().any(|p| p == id) {
            return Err(MoveError::Late(o.status.wire()));
        }
        self.events += 1;
        self.payments.insert(id.to_owned(), i);
        self.kept.push((i, id.to_owned()));
        if o.status == St::Unpaid {
            o.status = St::Paid;
            o.payment = Some((id.to_owned(), at));
            Ok(o.id.clone())
        } else {
            o.late.push(id.to_owned());
            self.late += 1;
            Err(MoveError::Late(o.status.wire()))
        }
    }

    fn cancel(&mut self, o: Option<usize>, by: Option<u8>) -> Result<String, MoveError> {
        let i = o
            .filter(|&i| by.is_none_or(|u| self.orders[i].user == u))
            .ok_or(MoveError::UnknownOrder)?;
        let o = &mut self.orders[i];
        if o.status != St::Unpaid {
            return Err(MoveError::NotCancellable(o.status.wire().as_str()));
        }
        o.status = St::Cancelled;
        self.events += 1;
        Ok(o.id.clone())
    }

    fn refund(&mut self, o: Option<usize>, restock: bool) -> Result<String, MoveError> {
        let o = &mut self.orders[o.ok_or(MoveError::UnknownOrder)?];
        if o.status != St::Paid {
            return Err(MoveError::NotRefundable(o.status.wire().as_str()));
        }
        o.status = St::Refunded { restock };
        self.events += 1;
        Ok(o.id.clone())
    }

    /// Expires what is due by the model's clock; how many.
    fn expire(&mut self) -> usize {
        let mut n = 0;
        for o in &mut self.orders {
            if o.status == St::Unpaid && o.pay_by.is_some_and(|t| t <= self.clock) {
                o.status = St::Expired;
                n += 1;
            }
        }
        self.events += n as u64;
        n
    }
}

fn user(u: u8) -> String {
    format!("u{u}")
}

fn def(sku: usize) -> SkuDef {
    SkuDef {
        name: format!("item {}", SKUS[sku]),
        price_fen: PRICES[sku],
        stock: STOCK,
        limit_per_user: Some(LIMIT),
        opens_at_ms: None,
        closes_at_ms: None,
        pay_timeout_s: (sku == 0).then_some(PAY_TIMEOUT_S),
    }
}

/// How the case's journal writes: no fsync (the model is about the logic, not the disk),
/// snapshots every `every` records (0: none), segments of `segment_bytes`.
fn options(dir: &std::path::Path, every: u64, segment_bytes: u64) -> HubOptions {
    let mut journal = JournalOptions::new(dir);
    journal.fsync = false;
    journal.snapshot_every_records = every;
    journal.segment_bytes = segment_bytes;
    HubOptions {
        push_interval: Duration::from_secs(3600),
        ..HubOptions::new(journal)
    }
}

/// The hub of one incarnation, its room, and a dashboard aggregator stepped by the checks.
struct Live {
    hub: Hub,
    room: Arc<Room>,
    agg: Aggregator,
}

impl Live {
    fn open(rt: &tokio::runtime::Runtime, opts: HubOptions) -> (Hub, livehub::journal::Replayed) {
        let _g = rt.enter();
        Hub::open(opts, CancellationToken::new()).expect("the hub opens")
    }

    fn of(hub: Hub) -> Live {
        let room = hub.room(ROOM).expect("the room");
        let agg = Aggregator::new(room.clone(), Duration::from_secs(3600));
        Live { hub, room, agg }
    }

    fn close(self) {
        self.hub.shutdown_token().cancel();
        self.hub.close_journal();
    }
}

/// Runs one operation and checks its answer against the model.
async fn run(live: &Live, m: &mut Model, op: &Op) {
    let (hub, room) = (&live.hub, &live.room);
    match op {
        &Op::Buy {
            user: u,
            req,
            sku,
            qty,
        } => {
            let who = room.users.intern(&user(u));
            let msg = BuyMsg {
                req: format!("q{req}"),
                sku: SKUS[sku].into(),
                qty,
                referrer: None,
            };
            let before = now_ms();
            let ack = hub.buy(room, &who, &msg).await;
            let after = now_ms();
            if let Some(&i) = m.by_req.get(&(u, req)) {
                let o = &m.orders[i];
                assert!(ack.ok, "a repeated req gets its order: {ack:?}");
                assert_eq!(ack.order.as_deref(), Some(o.id.as_str()), "{ack:?}");
                assert_eq!(ack.status, Some(o.status.wire()), "status now: {ack:?}");
                assert_eq!(ack.pay_by_ms, o.pay_by, "{ack:?}");
                assert_eq!(
                    (ack.sku.as_deref(), ack.qty),
                    (Some(SKUS[o.sku]), Some(o.qty)),
                    "the first buy's, whatever the repeat says: {ack:?}"
                );
                return;
            }
            let (held, left) = (m.held(u, sku), m.left(sku));
            let refused = if held + qty > LIMIT {
                Some(RejectCode::LimitExceeded)
            } else if left == 0 {
                Some(RejectCode::SoldOut)
            } else if left < qty {
                Some(RejectCode::InsufficientStock)
            } else {
                None
            };
            if let Some(code) = refused {
                assert!(!ack.ok, "want {code:?} (held {held}, left {left}): {ack:?}");
                assert_eq!(ack.error, Some(code), "held {held}, left {left}: {ack:?}");
                assert_eq!(ack.left, Some(left), "{ack:?}");
                return;
            }
            assert!(ack.ok, "held {held}, left {left}: {ack:?}");
            let id = ack.order.as_deref().expect("an order id").to_owned();
            assert!(m.orders.iter().all(|o| o.id != id), "order id {id} reused");
            assert_eq!(ack.left, Some(left - qty), "{ack:?}");
            assert_eq!(ack.amount_fen, Some(PRICES[sku] * qty), "{ack:?}");
            let (status, pay_by) = if sku == 0 {
                let t = ack.pay_by_ms.expect("an unpaid order's pay_by_ms");
                let window = PAY_TIMEOUT_S as i64 * 1000;
                assert!(
                    (before + window..=after + window).contains(&t),
                    "pay_by_ms {t}: placed between {before} and {after}"
                );
                (St::Unpaid, Some(t))
            } else {
                assert_eq!(ack.pay_by_ms, None, "{ack:?}");
                (St::Paid, None)
            };
            assert_eq!(ack.status, Some(status.wire()), "{ack:?}");
            m.by_req.insert((u, req), m.orders.len());
            m.orders.push(MOrder {
                id,
                user: u,
                sku,
                qty,
                amount: PRICES[sku] * qty,
                pay_by,
                status,
                payment: None,
                late: Vec::new(),
            });
            m.events += 1;
        }
        Op::Pay {
            target,
            id,
            wrong_amount,
        } => {
            let (mut order_id, mut i) = m.resolve(target, None);
            let pid = match id {
                PayId::Again(k) if !m.kept.is_empty() => {
                    let (j, p) = m.kept[*k as usize % m.kept.len()].clone();
                    (order_id, i) = (m.orders[j].id.clone(), Some(j));
                    p
                }
                PayId::Pool(k) => format!("pool-{k}"),
                _ => {
                    m.fresh += 1;
                    format!("fresh-{}", m.fresh)
                }
            };
            let right = i.map_or(PRICES[0], |i| m.orders[i].amount);
            let amount = if *wrong_amount { right + 1 } else { right };
            let paid_at = m.clock;
            let got = hub
                .pay(PaymentFor {
                    room: ROOM,
                    order: &order_id,
                    payment: Payment {
                        payment_id: Arc::from(pid.as_str()),
                        amount_fen: amount,
                        paid_at_ms: paid_at,
                    },
                })
                .await
                .map(|o| o.order_id());
            let want = m.pay(i, &pid, amount, paid_at);
            assert_eq!(got, want, "payment {pid} of {amount} fen for {order_id}");
        }
        Op::Cancel { user: u, target } => {
            let (order_id, i) = m.resolve(target, Some(*u));
            let ack = hub.cancel_ack(room, &user(*u), "c1", &order_id).await;
            match m.cancel(i, Some(*u)) {
                Ok(_) => {
                    let o = &m.orders[i.expect("cancelled an order")];
                    assert!(ack.ok, "{ack:?}");
                    assert_eq!(ack.order.as_deref(), Some(order_id.as_str()));
                    assert_eq!(ack.status, Some(OrderStatus::Cancelled));
                    assert_eq!(
                        (ack.sku.as_deref(), ack.qty, ack.amount_fen),
                        (Some(SKUS[o.sku]), Some(o.qty), Some(o.amount))
                    );
                    assert_eq!(ack.left, Some(m.left(o.sku)), "units back: {ack:?}");
                }
                Err(e) => {
                    let code = match e {
                        MoveError::UnknownOrder => RejectCode::UnknownOrder,
                        MoveError::NotCancellable(_) => RejectCode::NotCancellable,
                        other => unreachable!("{other:?}"),
                    };
                    assert!(!ack.ok, "{u} cancels {order_id}: want {code:?}: {ack:?}");
                    assert_eq!(ack.error, Some(code), "{u} cancels {order_id}: {ack:?}");
                    assert_eq!(ack.order.as_deref(), Some(order_id.as_str()));
                }
            }
        }
        Op::AdminCancel { target } => {
            let (order_id, i) = m.resolve(target, None);
            let got = hub
                .cancel(room, &order_id, None)
                .await
                .map(|o| o.order_id());
            assert_eq!(got, m.cancel(i, None), "operator cancels {order_id}");
        }
        &Op::Refund {
            ref target,
            restock,
        } => {
            let (order_id, i) = m.resolve(target, None);
            let got = hub
                .refund(room, &order_id, restock)
                .await
                .map(|o| o.order_id());
            assert_eq!(
                got,
                m.refund(i, restock),
                "refund of {order_id}, restock {restock}"
            );
        }
        &Op::Advance { ms } => {
            m.clock += ms;
            let expired = hub.expire_due(m.clock).await;
            assert_eq!(expired, m.expire(), "expired by {}", m.clock);
        }
        Op::Restart => unreachable!("the case runs restarts"),
    }
}

fn parse(line: &str) -> Value {
    assert!(line.ends_with('\n'), "{line:?}");
    serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}"))
}

/// Checks everything the hub shows against the model.
fn check(rt: &tokio::runtime::Runtime, live: &mut Live, m: &Model, after: &str) {
    let room = live.room.clone();
    // The gate's counters and each buyer's allowance.
    for (k, id) in SKUS.iter().enumerate() {
        let s = room.skus.get(id).expect("the SKU");
        assert_eq!(
            (s.stock_total(), s.sold(), s.left()),
            (STOCK, m.sold(k), m.left(k)),
            "{after}: SKU {id}'s total, sold and left"
        );
        for u in 0..USERS {
            let key = room.users.intern(&user(u)).key;
            assert_eq!(
                s.held(key),
                m.held(u, k),
                "{after}: {id}'s units held by u{u}"
            );
        }
    }

    // The audit's sums, from the room's events.
    let units = rt.block_on(room.audit.units(
        room.clone(),
        |r: &Room| (&r.orders, &r.events),
        false,
    ));
    for (k, id) in SKUS.iter().enumerate() {
        let u = units.get(*id).copied().unwrap_or_default();
        let want = Units {
            sold: m.sold(k),
            unpaid: m.unpaid(k),
        };
        assert_eq!(u, want, "{after}: the audit's units of {id}");
        let s = room.skus.get(id).unwrap();
        assert_eq!(u.sold + s.left(), s.stock_total(), "{after}: audit of {id}");
    }

    // The export: every order, in seq order, as it stands now.
    let orders = room.orders.page_after(0, usize::MAX);
    assert_eq!(orders.len(), m.orders.len(), "{after}: orders exported");
    for (o, mo) in orders.iter().zip(&m.orders) {
        let line = parse(&room.statuses.export_line(o));
        let at = |f: &str| line[f].as_i64();
        assert_eq!(line["order"], mo.id.as_str(), "{after}: {line}");
        assert_eq!(line["status"], mo.status.wire().as_str(), "{after}: {line}");
        assert_eq!(at("pay_by_ms"), mo.pay_by, "{after}: {line}");
        let paid_id = mo.payment.as_ref().map(|(p, _)| p.as_str());
        assert_eq!(line["payment_id"].as_str(), paid_id, "{after}: {line}");
        let paid_at = match (&mo.payment, mo.pay_by) {
            (Some((_, t)), _) => Some(*t),
            (None, None) => at("ts_ms"),
            (None, Some(_)) => None,
        };
        assert_eq!(at("paid_at_ms"), paid_at, "{after}: {line}");
        assert_eq!(
            at("ended_at_ms").is_some(),
            mo.status.ended(),
            "{after}: {line}"
        );
        let late: Vec<&str> = line["late_payments"]
            .as_array()
            .expect("late_payments")
            .iter()
            .map(|p| p["payment_id"].as_str().unwrap())
            .collect();
        assert_eq!(late, mo.late, "{after}: {line}");
    }
    assert_eq!(
        room.statuses.late_payments(),
        m.late,
        "{after}: late payments"
    );

    // The change feed, replayed from the start, moves each order only along the chart and
    // ends where the model is.
    let events = room.events.page_after(0, usize::MAX);
    assert_eq!(events.len() as u64, m.events, "{after}: events");
    let mut seen: HashMap<String, String> = HashMap::new();
    for (i, (n, e)) in events.iter().enumerate() {
        assert_eq!(*n, i as u64 + 1, "{after}: events are numbered from 1");
        let v = parse(&e.to_ndjson(*n));
        assert_eq!(v["event"], *n);
        let order = v["order"].as_str().unwrap().to_owned();
        let to = v["status"].as_str().unwrap().to_owned();
        let from = seen.get(&order).map(String::as_str);
        let legal = match (from, to.as_str()) {
            (None, "unpaid") => v["pay_by_ms"].is_i64(),
            (None, "paid") => v["paid_at_ms"].is_i64(),
            _ if !v["late_payment"].is_null() => from == Some(to.as_str()),
            (Some("unpaid"), "paid") => v["payment_id"].is_string(),
            (Some("unpaid"), "expired" | "cancelled") => true,
            (Some("paid"), "refunded") => v["restock"].is_boolean(),
            _ => false,
        };
        assert!(legal, "{after}: {from:?} → {v}");
        seen.insert(order, to);
    }
    for o in &m.orders {
        assert_eq!(
            seen.get(&o.id).map(String::as_str),
            Some(o.status.wire().as_str()),
            "{after}: the change feed's last word on {}",
            o.id
        );
    }

    // The dashboard's figures, from an aggregator that folds each step's new events.
    assert!(live.agg.step(now_ms(), true));
    let published = room.feeds.snapshots.borrow().clone().expect("published");
    let f = &published.figures;
    let ever_paid = m.count(|s| matches!(s, St::Paid | St::Refunded { .. }));
    let settled = ever_paid + m.count(|s| matches!(s, St::Expired | St::Cancelled));
    let got = (
        f.event,
        f.gmv_fen,
        f.orders,
        f.paid_gmv_fen,
        f.paid_orders,
        f.unpaid_fen,
        f.expired_fen,
        f.cancelled_fen,
        f.refunded_fen,
        f.late_payments,
    );
    let want = (
        m.events,
        m.fen(|_| true),
        m.orders.len() as u64,
        m.fen(|s| s == St::Paid),
        m.count(|s| s == St::Paid),
        m.fen(|s| s == St::Unpaid),
        m.fen(|s| s == St::Expired),
        m.fen(|s| s == St::Cancelled),
        m.fen(|s| matches!(s, St::Refunded { .. })),
        m.late,
    );
    assert_eq!(
        got, want,
        "{after}: (event, gmv, orders, paid_gmv, paid_orders, unpaid, expired, cancelled, \
         refunded, late)"
    );
    let pay_rate = if settled == 0 {
        0.0
    } else {
        ever_paid as f64 / settled as f64
    };
    assert_eq!(f.pay_rate, pay_rate, "{after}: pay_rate");
    for (k, id) in SKUS.iter().enumerate() {
        let s = f.skus.iter().find(|s| &*s.state.sku == *id).expect("SKU");
        assert_eq!(
            (s.state.sold, s.state.left, s.paid, s.unpaid),
            (m.sold(k), m.left(k), m.paid(k), m.unpaid(k)),
            "{after}: dashboard's {id} (sold, left, paid, unpaid)"
        );
    }
}

/// `status` of every (user, req): the order's ack with its status now, or unknown.
async fn check_status_answers(live: &Live, m: &Model, after: &str) {
    for u in 0..USERS {
        for q in 0..REQS {
            let ack = live
                .hub
                .status(&live.room, &user(u), &format!("q{q}"))
                .await;
            match m.by_req.get(&(u, q)) {
                Some(&i) => {
                    let o = &m.orders[i];
                    assert!(ack.ok, "{after}: {ack:?}");
                    assert_eq!(ack.order.as_deref(), Some(o.id.as_str()), "{after}");
                    assert_eq!(ack.status, Some(o.status.wire()), "{after}: {ack:?}");
                    assert_eq!(ack.pay_by_ms, o.pay_by, "{after}: {ack:?}");
                }
                None => assert_eq!(
                    ack.error,
                    Some(RejectCode::UnknownRequest),
                    "{after}: {ack:?}"
                ),
            }
        }
    }
}

fn run_case(ops: &[Op], every: u64, segment_bytes: u64) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let dir = tempfile::Builder::new()
        .prefix("livehub-paymodel-")
        .tempdir()
        .unwrap();
    let opts = || options(dir.path(), every, segment_bytes);
    let (hub, _) = Live::open(&rt, opts());
    rt.block_on(async {
        hub.put_room(ROOM, "pay model".into()).await.unwrap();
        for (k, id) in SKUS.iter().enumerate() {
            hub.put_sku(ROOM, id, def(k)).await.unwrap();
        }
    });
    let mut live = Live::of(hub);
    let mut m = Model {
        clock: now_ms(),
        ..Model::default()
    };
    for (step, op) in ops.iter().enumerate() {
        let after = format!("step {step} ({op:?})");
        if let Op::Restart = op {
            live.close();
            let (hub, replayed) = Live::open(&rt, opts());
            let records = replayed.next_number - 1;
            if every > 0 && records >= every {
                assert!(
                    replayed.snapshot.is_some(),
                    "{after}: {records} records, a snapshot every {every}: restored from none"
                );
            }
            live = Live::of(hub);
            rt.block_on(check_status_answers(&live, &m, &after));
        } else {
            rt.block_on(run(&live, &mut m, op));
        }
        check(&rt, &mut live, &m, &after);
    }
    rt.block_on(check_status_answers(&live, &m, "the end"));
    live.close();
}

proptest! {
    #![proptest_config(ProptestConfig { cases: cases(), ..ProptestConfig::default() })]

    #[test]
    fn payments_follow_the_model(
        ops in proptest::collection::vec(op(), 1..=60),
        every in prop_oneof![Just(0u64), 1..8u64],
        segment_bytes in prop_oneof![Just(64u64 << 20), 300..2_000u64],
    ) {
        run_case(&ops, every, segment_bytes);
    }
}

/// Two notices with one payment id for two unpaid orders, at once: one pays its order, the
/// other is `payment_id_reused` naming it, and no other order shows the id. Each round races
/// the two on a multi-threaded runtime with fsync on, so that both are on their way to the
/// journal together.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_payment_id_never_pays_two_orders_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let mut opts = options(dir.path(), 0, 64 << 20);
    opts.journal.fsync = true;
    let (hub, _) = Hub::open(opts, CancellationToken::new()).unwrap();
    hub.put_room(ROOM, "race".into()).await.unwrap();
    let sku = SkuDef {
        stock: 1_000,
        limit_per_user: None,
        ..def(0)
    };
    hub.put_sku(ROOM, SKUS[0], sku).await.unwrap();
    let room = hub.room(ROOM).unwrap();
    for round in 0..20 {
        let mut orders = Vec::new();
        for k in 0..2 {
            let who = room.users.intern(&format!("u{round}-{k}"));
            let msg = BuyMsg {
                req: "q".into(),
                sku: SKUS[0].into(),
                qty: 1,
                referrer: None,
            };
            let ack = hub.buy(&room, &who, &msg).await;
            orders.push(ack.order.expect("placed").to_string());
        }
        let pid: Arc<str> = Arc::from(format!("twice-{round}"));
        let notices: Vec<_> = orders
            .iter()
            .map(|order| {
                let (hub, order, pid) = (hub.clone(), order.clone(), pid.clone());
                tokio::spawn(async move {
                    let payment = Payment {
                        payment_id: pid,
                        amount_fen: PRICES[0],
                        paid_at_ms: 1,
                    };
                    hub.pay(PaymentFor {
                        room: ROOM,
                        order: &order,
                        payment,
                    })
                    .await
                    .map(|o| o.order_id())
                })
            })
            .collect();
        let mut answers = Vec::new();
        for n in notices {
            answers.push(n.await.unwrap());
        }
        let paid: Vec<&String> = answers.iter().filter_map(|a| a.as_ref().ok()).collect();
        assert_eq!(paid.len(), 1, "round {round}: {answers:?}");
        let reused = Err(MoveError::PaymentIdReused(paid[0].clone()));
        assert!(answers.contains(&reused), "round {round}: {answers:?}");
        let showing: Vec<String> = room
            .orders
            .page_after(0, usize::MAX)
            .iter()
            .map(|o| parse(&room.statuses.export_line(o)))
            .filter(|l| l["payment_id"] == *pid)
            .map(|l| l["order"].as_str().unwrap().to_owned())
            .collect();
        assert_eq!(&showing, &[paid[0].clone()], "round {round}");
    }
    hub.shutdown_token().cancel();
    tokio::task::spawn_blocking(move || hub.close_journal())
        .await
        .unwrap();
}

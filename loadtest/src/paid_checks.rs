//! The checks of orders that must be paid (`checkout`, `payments`): what the client saw (its ok
//! acks, the notices it sent and their answers, its cancels, the `order` pushes it got) against
//! the server's orders export, change feed, stock audit and dashboard snapshot. Pure: the
//! scenario fetches, this judges, so each rule can be tested on hand-made data.

use std::collections::{BTreeMap, HashMap, HashSet};

use serde_json::Value;

use crate::invariants::Check;
use crate::pay::{PayKind, PaymentLog};
use crate::rest::{OrderEvent, PaidOrder};

/// How long after `pay_by_ms` an order may still be unpaid (the contract: "within 1 s").
pub const EXPIRY_WINDOW_MS: i64 = 1_000;

/// An ok ack as the client got it.
#[derive(Debug, Clone)]
pub struct Placed {
    pub order: String,
    pub sku: String,
    pub qty: u64,
    pub amount_fen: u64,
    pub user: String,
    pub req: String,
    /// The ack's `status` (`unpaid` for a SKU with a pay timeout).
    pub status: Option<String>,
    pub pay_by_ms: Option<i64>,
}

/// A cancel the client sent over its socket, and its answer.
#[derive(Debug, Clone)]
pub struct CancelLog {
    pub order: String,
    pub ok: bool,
    /// `status` of an ok answer, `error` of a refusal, or why no answer came.
    pub code: String,
}

/// Everything the client did and saw.
pub struct ClientLog<'a> {
    pub placed: &'a [Placed],
    /// (user, req) of buys that got no answer: the server may hold orders for them.
    pub timed_out: &'a HashSet<(String, String)>,
    pub payments: &'a [PaymentLog],
    pub cancels: &'a [CancelLog],
    /// (order, status) of every `order` push the owners' sockets got.
    pub pushes: &'a HashSet<(String, String)>,
    /// Whether the buyers' sockets stayed open until every order had moved (then every move
    /// must have been pushed).
    pub expect_pushes: bool,
    /// The SKU's pay timeout.
    pub pay_timeout_ms: i64,
}

/// What the server says, read once everything has settled.
pub struct ServerView<'a> {
    pub export: &'a [PaidOrder],
    pub feed: &'a [OrderEvent],
    pub audit: &'a Value,
    /// `/stats`, read once its `event` caught up with the feed (or the last one read).
    pub stats: Option<&'a Value>,
    /// The server's clock (same host) when the export was read.
    pub read_at_ms: i64,
}

/// Most examples a failed check names.
const EXAMPLES: usize = 5;

fn examples(v: &[String]) -> String {
    let mut s = v[..v.len().min(EXAMPLES)].join("; ");
    if v.len() > EXAMPLES {
        s.push_str(&format!("; … {} in all", v.len()));
    }
    s
}

fn verdict(name: &str, problems: Vec<String>, good: impl FnOnce() -> String) -> Check {
    if problems.is_empty() {
        Check::new(name, true, good())
    } else {
        Check::new(name, false, examples(&problems))
    }
}

/// A figure that may be missing, as a summary shows it.
fn show(v: Option<u64>) -> String {
    v.map_or_else(|| "(missing)".to_owned(), |v| v.to_string())
}

fn u(v: &Value, k: &str) -> Option<u64> {
    v.get(k).and_then(Value::as_u64)
}

/// Statuses whose order keeps its units (for a refund, only one without restock).
fn holds_units(status: &str, restocked: bool) -> bool {
    match status {
        "unpaid" | "paid" => true,
        "refunded" => !restocked,
        _ => false,
    }
}

/// A move the contract allows (`None` is before the placement).
fn legal_move(from: Option<&str>, to: &str) -> bool {
    matches!(
        (from, to),
        (None, "unpaid" | "paid")
            | (Some("unpaid"), "paid" | "expired" | "cancelled")
            | (Some("paid"), "refunded")
    )
}

#[derive(Default)]
struct Sums {
    orders: u64,
    fen: u64,
    units: u64,
}

impl Sums {
    fn add(&mut self, o: &PaidOrder) {
        self.orders += 1;
        self.fen += o.amount_fen;
        self.units += o.qty;
    }
}

/// Every check, in a fixed order.
pub fn check(stock: &HashMap<String, u64>, c: &ClientLog, s: &ServerView) -> Vec<Check> {
    let by_id: HashMap<&str, &PaidOrder> = s.export.iter().map(|o| (o.order.as_str(), o)).collect();
    // Refunds with restock give their units back; the feed says which.
    let restocked: HashSet<&str> = s
        .feed
        .iter()
        .filter(|e| e.status == "refunded" && e.late_payment.is_none() && e.restock == Some(true))
        .map(|e| e.order.as_str())
        .collect();
    let mut by_status: BTreeMap<&str, Sums> = BTreeMap::new();
    let mut by_sku_status: HashMap<(&str, &str), u64> = HashMap::new();
    let mut held_by_sku: HashMap<&str, u64> = HashMap::new();
    let mut all = Sums::default();
    for o in s.export {
        all.add(o);
        by_status.entry(o.status.as_str()).or_default().add(o);
        *by_sku_status
            .entry((o.sku.as_str(), o.status.as_str()))
            .or_default() += o.qty;
        if holds_units(&o.status, restocked.contains(o.order.as_str())) {
            *held_by_sku.entry(o.sku.as_str()).or_default() += o.qty;
        }
    }
    let status_units = |sku: &str, st: &str| by_sku_status.get(&(sku, st)).copied().unwrap_or(0);
    let audit_skus: HashMap<&str, &Value> = s
        .audit
        .get("skus")
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(|x| Some((x.get("sku")?.as_str()?, x)))
                .collect()
        })
        .unwrap_or_default();
    let mut skus: Vec<&String> = stock.keys().collect();
    skus.sort();
    let mut out = Vec::new();

    // Every ok ack is an order of the export, as acked.
    let mut problems = Vec::new();
    let mut acked = HashSet::new();
    for p in c.placed {
        if !acked.insert(p.order.as_str()) {
            problems.push(format!("{} acked twice", p.order));
        }
        if p.status.as_deref() != Some("unpaid") || p.pay_by_ms.is_none() {
            problems.push(format!(
                "{}: ack status {:?}, pay_by_ms {:?} (expected unpaid with a pay_by_ms)",
                p.order, p.status, p.pay_by_ms
            ));
        }
        match by_id.get(p.order.as_str()) {
            None => problems.push(format!(
                "{} ({}/{}) not in the export",
                p.order, p.user, p.req
            )),
            Some(o) => {
                if (&o.sku, o.qty, o.amount_fen, &o.user, &o.req, o.pay_by_ms)
                    != (&p.sku, p.qty, p.amount_fen, &p.user, &p.req, p.pay_by_ms)
                    || o.amount_fen != o.price_fen * o.qty
                {
                    problems.push(format!(
                        "{}: export {}/{}/{}/{}/{}/{:?}, ack {}/{}/{}/{}/{}/{:?} (sku/qty/amount/user/req/pay_by_ms)",
                        p.order, o.sku, o.qty, o.amount_fen, o.user, o.req, o.pay_by_ms,
                        p.sku, p.qty, p.amount_fen, p.user, p.req, p.pay_by_ms
                    ));
                }
            }
        }
    }
    out.push(verdict("acked_orders_in_export", problems, || {
        format!(
            "all {} ok acks (status unpaid, with pay_by_ms) exported as acked",
            c.placed.len()
        )
    }));

    // Nothing in the export that nobody was acked for (but for buys whose ack never came).
    let mut problems = Vec::new();
    let mut ids = HashSet::new();
    let mut explained = 0;
    for o in s.export {
        if !ids.insert(o.order.as_str()) {
            problems.push(format!("order id {} exported twice", o.order));
        }
        if !acked.contains(o.order.as_str()) {
            if c.timed_out.contains(&(o.user.clone(), o.req.clone())) {
                explained += 1;
            } else {
                problems.push(format!(
                    "{} ({}/{}) was never acked",
                    o.order, o.user, o.req
                ));
            }
        }
    }
    out.push(verdict("export_has_only_acked_orders", problems, || {
        format!(
            "{} exported = {} acked + {explained} whose ack timed out",
            s.export.len(),
            c.placed.len()
        )
    }));

    // Paid units never exceed the stock.
    let mut problems = Vec::new();
    let mut figures = Vec::new();
    for sku in &skus {
        let paid = status_units(sku, "paid");
        figures.push(format!("{sku}: paid {paid}/{}", stock[*sku]));
        if paid > stock[*sku] {
            problems.push(format!("{sku}: {paid} units paid > stock {}", stock[*sku]));
        }
    }
    out.push(verdict("paid_units_within_stock", problems, || {
        figures.join(", ")
    }));

    // Every unit given back (expired, cancelled) is in `left` or held again: the audit's
    // `sold` is the units of the orders that keep theirs, and sold + left is the stock.
    let mut problems = Vec::new();
    let mut figures = Vec::new();
    let consistent = s.audit.get("consistent").and_then(Value::as_bool);
    if consistent != Some(true) {
        problems.push(format!("audit consistent: {consistent:?}"));
    }
    for sku in &skus {
        let Some(a) = audit_skus.get(sku.as_str()) else {
            problems.push(format!("{sku}: not in the audit"));
            continue;
        };
        let (total, sold, left, unpaid) = (
            u(a, "stock_total"),
            u(a, "sold"),
            u(a, "left"),
            u(a, "unpaid"),
        );
        let held = held_by_sku.get(sku.as_str()).copied().unwrap_or(0);
        let unpaid_export = status_units(sku, "unpaid");
        figures.push(format!(
            "{sku}: sold {} + left {} = stock_total {} (unpaid {})",
            show(sold),
            show(left),
            show(total),
            show(unpaid)
        ));
        if total != Some(stock[*sku]) {
            problems.push(format!(
                "{sku}: audit stock_total {total:?}, the run made it {}",
                stock[*sku]
            ));
        }
        if sold.zip(left).map(|(s, l)| s + l) != total {
            problems.push(format!(
                "{sku}: audit sold {sold:?} + left {left:?} != stock_total {total:?}"
            ));
        }
        if sold != Some(held) {
            problems.push(format!(
                "{sku}: audit sold {sold:?}, export units held (unpaid + paid + refunded without restock) {held}"
            ));
        }
        if unpaid != Some(unpaid_export) {
            problems.push(format!(
                "{sku}: audit unpaid {unpaid:?}, export unpaid units {unpaid_export}"
            ));
        }
    }
    out.push(verdict("released_units_back_in_stock", problems, || {
        figures.join(", ")
    }));

    // With no refunds: paid + unpaid + left = the stock.
    let mut problems = Vec::new();
    let mut figures = Vec::new();
    for sku in &skus {
        let (paid, unpaid) = (status_units(sku, "paid"), status_units(sku, "unpaid"));
        let refunded = status_units(sku, "refunded");
        let left = audit_skus.get(sku.as_str()).and_then(|a| u(a, "left"));
        figures.push(format!(
            "{sku}: paid {paid} + unpaid {unpaid} + left {} = {}",
            show(left),
            stock[*sku]
        ));
        if refunded > 0 {
            problems.push(format!(
                "{sku}: {refunded} units refunded, and this run refunds nothing"
            ));
        }
        if left.map(|l| paid + unpaid + l) != Some(stock[*sku]) {
            problems.push(format!(
                "{sku}: paid {paid} + unpaid {unpaid} + left {left:?} != stock {}",
                stock[*sku]
            ));
        }
    }
    out.push(verdict("paid_unpaid_left_is_stock", problems, || {
        figures.join(", ")
    }));

    // No order is paid twice.
    let mut problems = Vec::new();
    let mut paid_events: HashMap<&str, u64> = HashMap::new();
    for e in s.feed {
        if e.status == "paid" && e.late_payment.is_none() {
            *paid_events.entry(e.order.as_str()).or_default() += 1;
        }
    }
    for (o, n) in &paid_events {
        if *n > 1 {
            problems.push(format!("{o}: {n} paid events in the feed"));
        }
    }
    let mut payment_ids: HashMap<&str, &str> = HashMap::new();
    for o in s.export.iter().filter(|o| o.status == "paid") {
        match (&o.payment_id, o.pay_by_ms) {
            (None, Some(_)) => problems.push(format!("{}: paid without a payment_id", o.order)),
            (Some(p), _) => {
                if let Some(other) = payment_ids.insert(p.as_str(), o.order.as_str()) {
                    problems.push(format!("payment_id {p} pays both {other} and {}", o.order));
                }
            }
            (None, None) => {}
        }
    }
    let mut taken: HashMap<&str, &str> = HashMap::new();
    for p in c.payments.iter().filter(|p| p.answer.is_paid()) {
        if let Some(first) = taken.insert(p.order.as_str(), p.payment_id.as_str()) {
            if first != p.payment_id {
                problems.push(format!(
                    "{}: two payment_ids answered 200 ({first}, {})",
                    p.order, p.payment_id
                ));
            }
        }
    }
    let dups = c
        .payments
        .iter()
        .filter(|p| p.kind == PayKind::Duplicate)
        .count();
    for p in c.payments.iter().filter(|p| p.kind == PayKind::Duplicate) {
        if !p.answer.is_paid() {
            problems.push(format!(
                "{}: the repeat of payment {} got {} {} (expected 200 paid)",
                p.order, p.payment_id, p.answer.http, p.answer.code
            ));
        }
    }
    out.push(verdict("no_order_paid_twice", problems, || {
        format!(
            "{} paid orders, one paid event and one payment_id each; {dups} repeated notices answered 200 paid",
            paid_events.len()
        )
    }));

    // Late payments are kept and counted, everywhere alike.
    let mut problems = Vec::new();
    let mut client_late: HashMap<&str, &PaymentLog> = HashMap::new();
    for p in c.payments.iter().filter(|p| p.answer.is_late()) {
        client_late.insert(p.payment_id.as_str(), p);
    }
    let export_late: usize = s.export.iter().map(|o| o.late_payments.len()).sum();
    let feed_late = s.feed.iter().filter(|e| e.late_payment.is_some()).count();
    let stats_late = s.stats.and_then(|v| u(v, "late_payments"));
    let n = client_late.len();
    if stats_late != Some(n as u64) || export_late != n || feed_late != n {
        problems.push(format!(
            "client caused {n}, /stats late_payments {stats_late:?}, export {export_late}, feed {feed_late}"
        ));
    }
    for p in client_late.values() {
        let kept = by_id.get(p.order.as_str()).is_some_and(|o| {
            o.late_payments
                .iter()
                .any(|l| l.payment_id == p.payment_id && l.amount_fen == p.amount_fen)
        });
        if !kept {
            problems.push(format!(
                "{}: late payment {} ({}) not in its export late_payments",
                p.order, p.payment_id, p.answer.code
            ));
        }
    }
    out.push(verdict("late_payments_counted", problems, || {
        format!("{n} late payments: the client's, /stats, the export's and the feed's agree")
    }));

    // Each notice got the answer its kind calls for, and the export agrees with each answer.
    let mut problems = Vec::new();
    let mut late_by_load = 0;
    for p in c.payments {
        let a = &p.answer;
        let o = by_id.get(p.order.as_str());
        let expected: &[&str] = match p.kind {
            // A payment meant in time may reach a slow server after pay_by_ms.
            PayKind::OnTime | PayKind::Resold => &["paid", "order_expired"],
            PayKind::Duplicate => &["paid"],
            PayKind::AfterExpiry => &["order_expired"],
            PayKind::AfterCancel => &["order_cancelled"],
            PayKind::Second => &["already_paid"],
        };
        let http_ok = if a.code == "paid" {
            a.http == 200
        } else {
            a.http == 409
        };
        if !expected.contains(&a.code.as_str()) || !http_ok {
            problems.push(format!(
                "{} {:?} {}: HTTP {} {} (expected {})",
                p.order,
                p.kind,
                p.payment_id,
                a.http,
                a.code,
                expected.join(" or ")
            ));
            continue;
        }
        if matches!(p.kind, PayKind::OnTime | PayKind::Resold) && a.code == "order_expired" {
            late_by_load += 1;
        }
        let agrees = match (a.code.as_str(), o) {
            (_, None) => false,
            ("paid", Some(o)) => {
                o.status == "paid" && o.payment_id.as_deref() == Some(&p.payment_id)
            }
            ("order_expired", Some(o)) => o.status == "expired",
            ("order_cancelled", Some(o)) => o.status == "cancelled",
            ("already_paid", Some(o)) => {
                o.status == "paid" && o.payment_id.as_deref() != Some(&p.payment_id)
            }
            _ => false,
        };
        if !agrees {
            problems.push(format!(
                "{}: answered {} to {}, export status {:?} payment_id {:?}",
                p.order,
                a.code,
                p.payment_id,
                o.map(|o| o.status.as_str()),
                o.and_then(|o| o.payment_id.as_deref())
            ));
        }
    }
    let bad_sig = c
        .payments
        .iter()
        .filter(|p| p.answer.http == 401 && p.answer.code == "bad_signature")
        .count();
    if bad_sig > 0 {
        problems.insert(
            0,
            format!(
                "{bad_sig} notices answered 401 bad_signature: is --payment-secret the server's?"
            ),
        );
    }
    out.push(verdict("payments_as_answered", problems, || {
        format!(
            "{} notices, each answered as its kind calls for and kept so in the export ({late_by_load} meant in time came after pay_by_ms)",
            c.payments.len()
        )
    }));

    // What the client did decides each order's end: paid (a 200), cancelled (an ok cancel),
    // else expired.
    let mut problems = Vec::new();
    let unknown: HashSet<&str> = c
        .payments
        .iter()
        .filter(|p| p.answer.http == 0)
        .map(|p| p.order.as_str())
        .chain(
            c.cancels
                .iter()
                .filter(|x| !x.ok && x.code != "not_cancellable" && x.code != "unknown_order")
                .map(|x| x.order.as_str()),
        )
        .collect();
    let cancelled: HashSet<&str> = c
        .cancels
        .iter()
        .filter(|x| x.ok)
        .map(|x| x.order.as_str())
        .collect();
    for x in c.cancels.iter().filter(|x| x.ok && x.code != "cancelled") {
        problems.push(format!("{}: ok cancel with status {}", x.order, x.code));
    }
    let mut judged = 0;
    for p in c.placed {
        if unknown.contains(p.order.as_str()) {
            continue;
        }
        judged += 1;
        let expected = if taken.contains_key(p.order.as_str()) {
            "paid"
        } else if cancelled.contains(p.order.as_str()) {
            "cancelled"
        } else {
            "expired"
        };
        let got = by_id.get(p.order.as_str()).map(|o| o.status.as_str());
        if got.is_some() && got != Some(expected) {
            problems.push(format!(
                "{}: export {got:?}, the client's doing makes it {expected}",
                p.order
            ));
        }
    }
    out.push(verdict("statuses_as_the_client_left_them", problems, || {
        format!(
            "{judged} orders end as the client left them ({} with an answer that never came left out)",
            unknown.len()
        )
    }));

    // Orders expire on time, and none is left unpaid once its time is past.
    let mut problems = Vec::new();
    let mut worst: Option<i64> = None;
    for o in s.export {
        if let Some(pb) = o.pay_by_ms {
            let allowed = pb - o.ts_ms;
            if (allowed - c.pay_timeout_ms).abs() > 1_000 {
                problems.push(format!(
                    "{}: pay_by_ms - ts_ms = {allowed} ms, pay timeout {} ms",
                    o.order, c.pay_timeout_ms
                ));
            }
        }
        match (o.status.as_str(), o.pay_by_ms, o.ended_at_ms) {
            ("expired", Some(pb), Some(end)) => {
                worst = Some(worst.map_or(end - pb, |w: i64| w.max(end - pb)));
                if end < pb || end - pb > EXPIRY_WINDOW_MS {
                    problems.push(format!(
                        "{}: expired at {end}, {} ms after pay_by_ms {pb}",
                        o.order,
                        end - pb
                    ));
                }
            }
            ("expired", pb, end) => problems.push(format!(
                "{}: expired with pay_by_ms {pb:?}, ended_at_ms {end:?}",
                o.order
            )),
            ("cancelled" | "refunded", _, None) => {
                problems.push(format!("{}: {} without ended_at_ms", o.order, o.status))
            }
            ("paid", _, _) if o.paid_at_ms.is_none() => {
                problems.push(format!("{}: paid without paid_at_ms", o.order))
            }
            ("unpaid", Some(pb), _) if s.read_at_ms > pb + EXPIRY_WINDOW_MS => {
                problems.push(format!(
                    "{}: still unpaid {} ms after pay_by_ms",
                    o.order,
                    s.read_at_ms - pb
                ))
            }
            _ => {}
        }
    }
    out.push(verdict("expired_on_time", problems, || {
        format!(
            "pay_by_ms = placement + {} s; every expiry within {EXPIRY_WINDOW_MS} ms of pay_by_ms (latest {} ms)",
            c.pay_timeout_ms / 1000,
            worst.map_or("-".to_owned(), |w| w.to_string())
        )
    }));

    // The change feed's events strictly increase from 1.
    let mut problems = Vec::new();
    if let Some(first) = s.feed.first() {
        if first.event != 1 {
            problems.push(format!("first event is {}, not 1", first.event));
        }
    }
    for w in s.feed.windows(2) {
        if w[1].event <= w[0].event {
            problems.push(format!("event {} after {}", w[1].event, w[0].event));
        }
    }
    out.push(verdict("feed_events_increasing", problems, || {
        format!(
            "{} events, strictly increasing from 1 to {}",
            s.feed.len(),
            s.feed.last().map_or(0, |e| e.event)
        )
    }));

    // Replaying the feed gives every order's export status.
    let mut problems = Vec::new();
    let mut state: HashMap<&str, &str> = HashMap::new();
    let mut late_ids: HashMap<&str, Vec<&str>> = HashMap::new();
    for e in s.feed {
        let cur = state.get(e.order.as_str()).copied();
        let Some(o) = by_id.get(e.order.as_str()) else {
            problems.push(format!(
                "event {}: order {} not in the export",
                e.event, e.order
            ));
            continue;
        };
        if (&e.sku, &e.user, e.qty, e.amount_fen) != (&o.sku, &o.user, o.qty, o.amount_fen) {
            problems.push(format!(
                "event {}: {} {}/{}/{}/{} but the export has {}/{}/{}/{}",
                e.event,
                e.order,
                e.sku,
                e.user,
                e.qty,
                e.amount_fen,
                o.sku,
                o.user,
                o.qty,
                o.amount_fen
            ));
        }
        if let Some(l) = &e.late_payment {
            late_ids
                .entry(e.order.as_str())
                .or_default()
                .push(l.payment_id.as_str());
            if cur != Some(e.status.as_str()) || matches!(cur, None | Some("unpaid")) {
                problems.push(format!(
                    "event {}: late payment on {} with status {} while it was {cur:?}",
                    e.event, e.order, e.status
                ));
            }
            continue;
        }
        if !legal_move(cur, &e.status) {
            problems.push(format!(
                "event {}: {} moves {cur:?} → {}",
                e.event, e.order, e.status
            ));
        }
        if e.status == "paid"
            && cur.is_some()
            && (e.payment_id != o.payment_id || e.paid_at_ms != o.paid_at_ms)
        {
            problems.push(format!(
                "event {}: {} paid by {:?} at {:?}, export payment_id {:?} paid_at_ms {:?}",
                e.event, e.order, e.payment_id, e.paid_at_ms, o.payment_id, o.paid_at_ms
            ));
        }
        state.insert(e.order.as_str(), e.status.as_str());
    }
    for o in s.export {
        match state.get(o.order.as_str()) {
            None => problems.push(format!("{}: no placement event in the feed", o.order)),
            Some(st) if *st != o.status => problems.push(format!(
                "{}: the feed replays to {st}, the export says {}",
                o.order, o.status
            )),
            _ => {}
        }
        let mut feed_ids = late_ids.remove(o.order.as_str()).unwrap_or_default();
        let mut export_ids: Vec<&str> = o
            .late_payments
            .iter()
            .map(|l| l.payment_id.as_str())
            .collect();
        feed_ids.sort_unstable();
        export_ids.sort_unstable();
        if feed_ids != export_ids {
            problems.push(format!(
                "{}: late payments {feed_ids:?} in the feed, {export_ids:?} in the export",
                o.order
            ));
        }
    }
    out.push(verdict("feed_replays_to_export", problems, || {
        format!(
            "{} orders: each one's events are legal moves ending in its export status",
            state.len()
        )
    }));

    // The snapshot's payment figures are the export's.
    let mut problems = Vec::new();
    match s.stats {
        None => problems.push("no /stats snapshot".to_owned()),
        Some(st) => {
            let last_event = s.feed.last().map_or(0, |e| e.event);
            if u(st, "event") != Some(last_event) {
                problems.push(format!(
                    "snapshot event {:?}, the feed's last {last_event}",
                    u(st, "event")
                ));
            }
            let get = |k: &str| by_status.get(k);
            let fen = |k: &str| get(k).map_or(0, |x| x.fen);
            let count = |k: &str| get(k).map_or(0, |x| x.orders);
            let want = [
                ("orders", all.orders),
                ("gmv_fen", all.fen),
                ("paid_orders", count("paid")),
                ("paid_gmv_fen", fen("paid")),
                ("unpaid_fen", fen("unpaid")),
                ("expired_fen", fen("expired")),
                ("cancelled_fen", fen("cancelled")),
                ("refunded_fen", fen("refunded")),
            ];
            for (k, v) in want {
                if u(st, k) != Some(v) {
                    problems.push(format!("{k}: snapshot {:?}, export {v}", u(st, k)));
                }
            }
            let settled = count("paid") + count("refunded") + count("expired") + count("cancelled");
            let rate = if settled == 0 {
                0.0
            } else {
                (count("paid") + count("refunded")) as f64 / settled as f64
            };
            let got = st.get("pay_rate").and_then(Value::as_f64);
            if got.is_none_or(|g| (g - rate).abs() > 1e-3) {
                problems.push(format!("pay_rate: snapshot {got:?}, export {rate:.4}"));
            }
        }
    }
    out.push(verdict("stats_match_export", problems, || {
        format!(
            "snapshot orders {}, paid {}, unpaid {}, expired {}, cancelled {} as in the export",
            all.orders,
            by_status.get("paid").map_or(0, |x| x.orders),
            by_status.get("unpaid").map_or(0, |x| x.orders),
            by_status.get("expired").map_or(0, |x| x.orders),
            by_status.get("cancelled").map_or(0, |x| x.orders)
        )
    }));

    // Owners' open sockets are told of every move.
    if c.expect_pushes {
        let mut problems = Vec::new();
        let mut n = 0;
        for p in c.placed {
            let Some(o) = by_id.get(p.order.as_str()) else {
                continue;
            };
            if o.status == "unpaid" {
                continue;
            }
            n += 1;
            if !c.pushes.contains(&(o.order.clone(), o.status.clone())) {
                problems.push(format!("{}: no `order` push for {}", o.order, o.status));
            }
        }
        out.push(verdict("order_pushes_received", problems, || {
            format!("the owner's socket got an `order` push for each of the {n} moves")
        }));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pay::Answer;
    use crate::rest::LatePayment;
    use serde_json::json;

    const T0: i64 = 1_700_000_000_000;
    const TIMEOUT: i64 = 10_000;

    fn order(seq: u64, id: &str, status: &str) -> PaidOrder {
        let ts = T0 + seq as i64;
        let pay_by = ts + TIMEOUT;
        PaidOrder {
            seq,
            order: id.into(),
            sku: "P1".into(),
            user: format!("u{seq}"),
            req: format!("r{seq}"),
            qty: 1,
            price_fen: 100,
            amount_fen: 100,
            ts_ms: ts,
            status: status.into(),
            pay_by_ms: Some(pay_by),
            paid_at_ms: (status == "paid").then_some(ts + 2_000),
            payment_id: (status == "paid").then(|| format!("pay-{id}")),
            ended_at_ms: match status {
                "expired" => Some(pay_by + 300),
                "cancelled" => Some(ts + 3_000),
                _ => None,
            },
            late_payments: Vec::new(),
        }
    }

    fn placed(o: &PaidOrder) -> Placed {
        Placed {
            order: o.order.clone(),
            sku: o.sku.clone(),
            qty: o.qty,
            amount_fen: o.amount_fen,
            user: o.user.clone(),
            req: o.req.clone(),
            status: Some("unpaid".into()),
            pay_by_ms: o.pay_by_ms,
        }
    }

    fn pay(order: &str, id: &str, kind: PayKind, http: u16, code: &str) -> PaymentLog {
        PaymentLog {
            order: order.into(),
            payment_id: id.into(),
            amount_fen: 100,
            kind,
            answer: Answer {
                http,
                code: code.into(),
                latency_us: 500,
            },
        }
    }

    fn event(n: u64, o: &PaidOrder, status: &str) -> OrderEvent {
        OrderEvent {
            event: n,
            order: o.order.clone(),
            status: status.into(),
            sku: o.sku.clone(),
            user: o.user.clone(),
            qty: o.qty,
            amount_fen: o.amount_fen,
            payment_id: (status == "paid").then(|| o.payment_id.clone()).flatten(),
            paid_at_ms: (status == "paid").then_some(o.paid_at_ms).flatten(),
            restock: None,
            late_payment: None,
        }
    }

    /// A small settled room: stock 5; O1 and O2 paid (O2's notice sent twice, and another
    /// payment_id for it later), O3 cancelled (then paid late), O4 expired (then paid late),
    /// 3 units left.
    struct World {
        export: Vec<PaidOrder>,
        feed: Vec<OrderEvent>,
        audit: Value,
        stats: Value,
        placed: Vec<Placed>,
        payments: Vec<PaymentLog>,
        cancels: Vec<CancelLog>,
        pushes: HashSet<(String, String)>,
        timed_out: HashSet<(String, String)>,
    }

    fn world() -> World {
        let late = |id: &str| LatePayment {
            payment_id: id.into(),
            amount_fen: 100,
            paid_at_ms: T0 + 20_000,
        };
        let o1 = order(1, "O1", "paid");
        let mut o2 = order(2, "O2", "paid");
        o2.late_payments.push(late("second-O2"));
        let mut o3 = order(3, "O3", "cancelled");
        o3.late_payments.push(late("late-O3"));
        let mut o4 = order(4, "O4", "expired");
        o4.late_payments.push(late("late-O4"));
        let export = vec![o1.clone(), o2.clone(), o3.clone(), o4.clone()];
        let mut feed = vec![
            event(1, &o1, "unpaid"),
            event(2, &o2, "unpaid"),
            event(3, &o3, "unpaid"),
            event(4, &o4, "unpaid"),
            event(5, &o1, "paid"),
            event(6, &o2, "paid"),
            event(7, &o3, "cancelled"),
            event(8, &o2, "paid"),
            event(9, &o3, "cancelled"),
            event(10, &o4, "expired"),
            event(11, &o4, "expired"),
        ];
        feed[7].late_payment = Some(late("second-O2"));
        feed[7].payment_id = None;
        feed[7].paid_at_ms = None;
        feed[8].late_payment = Some(late("late-O3"));
        feed[10].late_payment = Some(late("late-O4"));
        let audit = json!({"room": "r", "consistent": true, "skus": [
            {"sku": "P1", "stock_total": 5, "sold": 2, "left": 3, "unpaid": 0, "consistent": true}
        ]});
        let stats = json!({
            "event": 11, "orders": 4, "gmv_fen": 400, "paid_orders": 2, "paid_gmv_fen": 200,
            "unpaid_fen": 0, "expired_fen": 100, "cancelled_fen": 100, "refunded_fen": 0,
            "late_payments": 3, "pay_rate": 0.5,
        });
        let payments = vec![
            pay("O1", "pay-O1", PayKind::OnTime, 200, "paid"),
            pay("O2", "pay-O2", PayKind::OnTime, 200, "paid"),
            pay("O2", "pay-O2", PayKind::Duplicate, 200, "paid"),
            pay("O2", "second-O2", PayKind::Second, 409, "already_paid"),
            pay(
                "O3",
                "late-O3",
                PayKind::AfterCancel,
                409,
                "order_cancelled",
            ),
            pay("O4", "late-O4", PayKind::AfterExpiry, 409, "order_expired"),
        ];
        let cancels = vec![CancelLog {
            order: "O3".into(),
            ok: true,
            code: "cancelled".into(),
        }];
        let pushes = [
            ("O1", "paid"),
            ("O2", "paid"),
            ("O3", "cancelled"),
            ("O4", "expired"),
        ]
        .iter()
        .map(|(o, s)| (o.to_string(), s.to_string()))
        .collect();
        World {
            placed: export.iter().map(placed).collect(),
            export,
            feed,
            audit,
            stats,
            payments,
            cancels,
            pushes,
            timed_out: HashSet::new(),
        }
    }

    fn run(w: &World) -> Vec<Check> {
        let stock = HashMap::from([("P1".to_owned(), 5)]);
        let c = ClientLog {
            placed: &w.placed,
            timed_out: &w.timed_out,
            payments: &w.payments,
            cancels: &w.cancels,
            pushes: &w.pushes,
            expect_pushes: true,
            pay_timeout_ms: TIMEOUT,
        };
        let s = ServerView {
            export: &w.export,
            feed: &w.feed,
            audit: &w.audit,
            stats: Some(&w.stats),
            read_at_ms: T0 + 60_000,
        };
        check(&stock, &c, &s)
    }

    fn failed(w: &World) -> Vec<String> {
        run(w)
            .into_iter()
            .filter(|c| !c.ok)
            .map(|c| c.name)
            .collect()
    }

    #[test]
    fn a_faithful_room_passes_every_check() {
        let checks = run(&world());
        let bad: Vec<_> = checks.iter().filter(|c| !c.ok).collect();
        assert!(bad.is_empty(), "{bad:#?}");
        assert_eq!(checks.len(), 14);
    }

    #[test]
    fn paid_over_stock_fails() {
        let mut w = world();
        // The audit says the stock was 1: two paid units are over it.
        w.audit["skus"][0]["stock_total"] = json!(1);
        let stock = HashMap::from([("P1".to_owned(), 1)]);
        let c = ClientLog {
            placed: &w.placed,
            timed_out: &w.timed_out,
            payments: &w.payments,
            cancels: &w.cancels,
            pushes: &w.pushes,
            expect_pushes: true,
            pay_timeout_ms: TIMEOUT,
        };
        let s = ServerView {
            export: &w.export,
            feed: &w.feed,
            audit: &w.audit,
            stats: Some(&w.stats),
            read_at_ms: T0 + 60_000,
        };
        let bad: Vec<String> = check(&stock, &c, &s)
            .into_iter()
            .filter(|c| !c.ok)
            .map(|c| c.name)
            .collect();
        assert!(
            bad.contains(&"paid_units_within_stock".to_owned()),
            "{bad:?}"
        );
    }

    #[test]
    fn units_not_given_back_fail_the_audit_checks() {
        let mut w = world();
        // O4 expired but its unit was not put back in `left`.
        w.audit["skus"][0]["left"] = json!(2);
        w.audit["consistent"] = json!(false);
        assert_eq!(
            failed(&w),
            ["released_units_back_in_stock", "paid_unpaid_left_is_stock"]
        );
        // The audit counts an expired order's unit as sold.
        let mut w = world();
        w.audit["skus"][0]["sold"] = json!(3);
        w.audit["skus"][0]["left"] = json!(2);
        assert_eq!(
            failed(&w),
            ["released_units_back_in_stock", "paid_unpaid_left_is_stock"]
        );
    }

    #[test]
    fn a_second_paid_event_or_payment_id_fails() {
        let mut w = world();
        let mut again = w.feed[5].clone();
        again.event = 12;
        w.feed.push(again);
        w.stats["event"] = json!(12);
        let bad = failed(&w);
        assert!(bad.contains(&"no_order_paid_twice".to_owned()), "{bad:?}");
        assert!(
            bad.contains(&"feed_replays_to_export".to_owned()),
            "{bad:?}"
        );

        // Two payment_ids both answered 200 for one order.
        let mut w = world();
        w.payments[3].answer = Answer {
            http: 200,
            code: "paid".into(),
            latency_us: 1,
        };
        let bad = failed(&w);
        assert!(bad.contains(&"no_order_paid_twice".to_owned()), "{bad:?}");

        // A repeated notice refused.
        let mut w = world();
        w.payments[2].answer = Answer {
            http: 409,
            code: "already_paid".into(),
            latency_us: 1,
        };
        let bad = failed(&w);
        assert!(bad.contains(&"no_order_paid_twice".to_owned()), "{bad:?}");
    }

    #[test]
    fn late_payments_miscounted_fail() {
        let mut w = world();
        w.stats["late_payments"] = json!(2);
        assert_eq!(failed(&w), ["late_payments_counted"]);
        // One kept in the feed but not on its order in the export.
        let mut w = world();
        w.export[3].late_payments.clear();
        let bad = failed(&w);
        assert!(bad.contains(&"late_payments_counted".to_owned()), "{bad:?}");
        assert!(
            bad.contains(&"feed_replays_to_export".to_owned()),
            "{bad:?}"
        );
    }

    #[test]
    fn lost_or_unacked_orders_fail() {
        let mut w = world();
        w.placed.push(Placed {
            order: "O9".into(),
            ..w.placed[0].clone()
        });
        let bad = failed(&w);
        assert!(
            bad.contains(&"acked_orders_in_export".to_owned()),
            "{bad:?}"
        );
        let mut w = world();
        w.placed.remove(3);
        assert_eq!(failed(&w), ["export_has_only_acked_orders"]);
        // ... unless that buy's ack never came.
        w.timed_out.insert(("u4".into(), "r4".into()));
        assert!(failed(&w).is_empty());
    }

    #[test]
    fn a_payment_not_kept_fails() {
        let mut w = world();
        // O1's 200 is not what the export shows.
        w.export[0].payment_id = Some("someone-else".into());
        let bad = failed(&w);
        assert!(bad.contains(&"payments_as_answered".to_owned()), "{bad:?}");
        // A paid order shown as expired.
        let mut w = world();
        w.export[0].status = "expired".into();
        w.export[0].ended_at_ms = w.export[0].pay_by_ms.map(|p| p + 10);
        let bad = failed(&w);
        for name in [
            "payments_as_answered",
            "statuses_as_the_client_left_them",
            "feed_replays_to_export",
            "stats_match_export",
        ] {
            assert!(bad.contains(&name.to_owned()), "{name}: {bad:?}");
        }
    }

    #[test]
    fn a_wrong_answer_to_a_late_payment_fails() {
        let mut w = world();
        w.payments[5].answer = Answer {
            http: 200,
            code: "paid".into(),
            latency_us: 1,
        };
        let bad = failed(&w);
        assert!(bad.contains(&"payments_as_answered".to_owned()), "{bad:?}");
    }

    #[test]
    fn late_or_missing_expiry_fails() {
        let mut w = world();
        let pb = w.export[3].pay_by_ms.unwrap();
        w.export[3].ended_at_ms = Some(pb + 2_500);
        assert_eq!(failed(&w), ["expired_on_time"]);
        // An order left unpaid long after its time (the audit and stats agree with it).
        let mut w = world();
        w.export[3].status = "unpaid".into();
        w.export[3].ended_at_ms = None;
        w.export[3].late_payments.clear();
        w.feed.truncate(9);
        w.audit["skus"][0]["sold"] = json!(3);
        w.audit["skus"][0]["left"] = json!(2);
        w.audit["skus"][0]["unpaid"] = json!(1);
        w.stats["event"] = json!(9);
        w.stats["unpaid_fen"] = json!(100);
        w.stats["expired_fen"] = json!(0);
        w.stats["late_payments"] = json!(2);
        w.stats["pay_rate"] = json!(2.0 / 3.0);
        w.payments.pop();
        w.pushes.remove(&("O4".to_owned(), "expired".to_owned()));
        let bad = failed(&w);
        assert!(bad.contains(&"expired_on_time".to_owned()), "{bad:?}");
        assert!(
            bad.contains(&"statuses_as_the_client_left_them".to_owned()),
            "{bad:?}"
        );
    }

    #[test]
    fn a_feed_out_of_order_or_with_illegal_moves_fails() {
        let mut w = world();
        w.feed.swap(4, 5);
        assert_eq!(failed(&w), ["feed_events_increasing"]);
        // expired → paid is no move the contract has.
        let mut w = world();
        let o4 = w.export[3].clone();
        w.feed.push(event(12, &o4, "paid"));
        w.stats["event"] = json!(12);
        let bad = failed(&w);
        assert!(
            bad.contains(&"feed_replays_to_export".to_owned()),
            "{bad:?}"
        );
        // A feed that starts past 1 lost its first events.
        let mut w = world();
        for e in &mut w.feed {
            e.event += 1;
        }
        w.stats["event"] = json!(12);
        assert_eq!(failed(&w), ["feed_events_increasing"]);
    }

    #[test]
    fn stats_that_differ_fail() {
        let mut w = world();
        w.stats["paid_gmv_fen"] = json!(300);
        assert_eq!(failed(&w), ["stats_match_export"]);
        let mut w = world();
        w.stats["event"] = json!(10);
        assert_eq!(failed(&w), ["stats_match_export"]);
    }

    #[test]
    fn a_missing_push_fails() {
        let mut w = world();
        w.pushes.remove(&("O3".to_owned(), "cancelled".to_owned()));
        assert_eq!(failed(&w), ["order_pushes_received"]);
    }

    #[test]
    fn legal_moves_are_the_contracts() {
        assert!(legal_move(None, "unpaid"));
        assert!(legal_move(Some("unpaid"), "expired"));
        assert!(legal_move(Some("paid"), "refunded"));
        assert!(!legal_move(Some("expired"), "paid"));
        assert!(!legal_move(Some("cancelled"), "unpaid"));
        assert!(!legal_move(None, "expired"));
        assert!(!legal_move(Some("unpaid"), "refunded"));
    }
}

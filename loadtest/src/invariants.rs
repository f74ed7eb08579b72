//! The checks after (and, in a soak, during) every scenario: what the client saw against the
//! server's orders export, its dashboard snapshot (`/stats`) and its stock audit.

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use serde::Serialize;
use serde_json::Value;

use crate::buyer::OkAck;
use crate::rest::{Order, Rest};

#[derive(Debug, Clone, Serialize)]
pub struct Check {
    pub name: String,
    pub ok: bool,
    pub detail: String,
}

impl Check {
    pub fn new(name: &str, ok: bool, detail: impl Into<String>) -> Check {
        Check {
            name: name.to_owned(),
            ok,
            detail: detail.into(),
        }
    }
}

pub fn all_ok(checks: &[Check]) -> bool {
    checks.iter().all(|c| c.ok)
}

/// What the run expects of the server.
pub struct Expect<'a> {
    /// Every ok ack so far.
    pub oks: &'a [OkAck],
    /// (user, req) of buys that were sent and never answered.
    pub timed_out: &'a HashSet<(String, String)>,
    /// Stock each SKU of this run was created with.
    pub stock: &'a HashMap<String, u64>,
    /// Spike: units each SKU must have sold in the end.
    pub expect_sold: Option<&'a HashMap<String, u64>>,
    pub limit_per_user: Option<u64>,
    /// The last check of the run: the server is idle, everything must match exactly.
    pub final_check: bool,
    /// Another client also buys in the room: exported orders without an ack here are
    /// expected, so `export_has_only_acked_orders` cannot be checked and is left out.
    pub others_buy: bool,
}

/// Keeps the orders export read so far, so that repeated checks read only what is new.
pub struct Checker {
    pub rest: Rest,
    pub room: String,
    /// The room's last seq before this run (orders up to it are not this run's).
    pub baseline_seq: u64,
    orders: Vec<Order>,
}

#[derive(Default, Debug, Clone, Copy, PartialEq, Eq)]
struct Sums {
    orders: u64,
    units: u64,
    gmv_fen: u64,
}

impl Sums {
    fn add(&mut self, qty: u64, amount: u64) {
        self.orders += 1;
        self.units += qty;
        self.gmv_fen += amount;
    }
}

impl std::fmt::Display for Sums {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "orders {} units {} gmv_fen {}",
            self.orders, self.units, self.gmv_fen
        )
    }
}

fn u(v: &Value, k: &str) -> u64 {
    v.get(k).and_then(Value::as_u64).unwrap_or(0)
}

impl Checker {
    /// Reads the room's export as it is before the run.
    pub async fn new(rest: Rest, room: &str) -> anyhow::Result<Checker> {
        let orders = rest.export(room, 0).await?;
        let baseline_seq = orders.last().map(|o| o.seq).unwrap_or(0);
        Ok(Checker {
            rest,
            room: room.to_owned(),
            baseline_seq,
            orders,
        })
    }

    async fn refresh(&mut self) -> anyhow::Result<()> {
        let after = self.orders.last().map(|o| o.seq).unwrap_or(0);
        let more = self.rest.export(&self.room, after).await?;
        self.orders.extend(more);
        Ok(())
    }

    fn last_seq(&self) -> u64 {
        self.orders.last().map(|o| o.seq).unwrap_or(0)
    }

    pub fn exported(&self) -> usize {
        self.orders.len()
    }

    /// Runs every check; errors talking to the server become failed checks.
    pub async fn run(&mut self, e: &Expect<'_>) -> Vec<Check> {
        match self.try_run(e).await {
            Ok(c) => c,
            Err(err) => vec![Check::new(
                "server_reachable_for_checks",
                false,
                format!("{err:#}"),
            )],
        }
    }

    async fn try_run(&mut self, e: &Expect<'_>) -> anyhow::Result<Vec<Check>> {
        let mut out = Vec::new();

        // What the client saw.
        let mut seen = HashSet::with_capacity(e.oks.len());
        let mut dupes = Vec::new();
        let mut acked = Sums::default();
        let mut units_by_sku: HashMap<&str, u64> = HashMap::new();
        let mut units_by_user: HashMap<(&str, &str), u64> = HashMap::new();
        for a in e.oks {
            if !seen.insert(a.order.as_str()) {
                dupes.push(a.order.clone());
            }
            acked.add(a.qty, a.amount_fen);
            *units_by_sku.entry(&a.sku).or_default() += a.qty;
            *units_by_user.entry((&a.user, &a.sku)).or_default() += a.qty;
        }
        out.push(Check::new(
            "unique_order_ids",
            dupes.is_empty(),
            if dupes.is_empty() {
                format!("{} ok acks, all order ids distinct", e.oks.len())
            } else {
                format!(
                    "{} order ids acked twice, e.g. {:?}",
                    dupes.len(),
                    &dupes[..dupes.len().min(5)]
                )
            },
        ));
        let over: Vec<String> = units_by_sku
            .iter()
            .filter(|(s, n)| e.stock.get(**s).is_some_and(|st| *n > st))
            .map(|(s, n)| format!("{s}: {n} acked > stock {}", e.stock[*s]))
            .collect();
        out.push(Check::new(
            "acked_units_within_stock",
            over.is_empty(),
            if over.is_empty() {
                let mut v: Vec<String> = e
                    .stock
                    .iter()
                    .map(|(s, st)| {
                        format!("{s}: {}/{st}", units_by_sku.get(s.as_str()).unwrap_or(&0))
                    })
                    .collect();
                v.sort();
                v.truncate(8);
                v.join(", ")
            } else {
                over.join("; ")
            },
        ));
        if let Some(l) = e.limit_per_user {
            let over: Vec<String> = units_by_user
                .iter()
                .filter(|(_, n)| **n > l)
                .take(5)
                .map(|((u, s), n)| format!("{u}/{s}: {n}"))
                .collect();
            out.push(Check::new(
                "acked_units_within_limit_per_user",
                over.is_empty(),
                if over.is_empty() {
                    format!("no user over {l}")
                } else {
                    format!("over the limit {l}: {}", over.join(", "))
                },
            ));
        }

        // The server's stats: in the end poll (2 s) until the dashboard snapshot includes the
        // last order.
        self.refresh().await?;
        let mut stats = None;
        let t = Instant::now();
        loop {
            if let Some(s) = self.rest.stats(&self.room).await? {
                let caught_up = u(&s, "seq") >= self.last_seq();
                stats = Some(s);
                if caught_up || !e.final_check {
                    break;
                }
            }
            if t.elapsed() > Duration::from_secs(2) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        // Orders up to the dashboard snapshot's seq must be in the export: read what came
        // meanwhile.
        if let Some(s) = &stats {
            if u(s, "seq") > self.last_seq() {
                self.refresh().await?;
            }
        }

        // The export against the acks.
        let ours: Vec<&Order> = self
            .orders
            .iter()
            .filter(|o| o.seq > self.baseline_seq)
            .collect();
        let by_id: HashMap<&str, &Order> = ours.iter().map(|o| (o.order.as_str(), *o)).collect();
        let mut ids = HashSet::with_capacity(self.orders.len());
        let export_dupes = self
            .orders
            .iter()
            .filter(|o| !ids.insert(o.order.as_str()))
            .count();
        out.push(Check::new(
            "export_order_ids_unique",
            export_dupes == 0,
            format!(
                "{} orders exported in the room ({} by this run), {export_dupes} ids twice",
                self.orders.len(),
                ours.len()
            ),
        ));
        let mut missing = Vec::new();
        let mut differ = Vec::new();
        for a in e.oks {
            match by_id.get(a.order.as_str()) {
                None => missing.push(a.order.clone()),
                Some(o) => {
                    if o.sku != a.sku
                        || o.qty != a.qty
                        || o.amount_fen != a.amount_fen
                        || o.amount_fen != o.price_fen * o.qty
                        || o.user != *a.user
                        || o.req != a.req
                    {
                        differ.push(format!(
                            "{}: export {}/{}/{}/{}/{} vs ack {}/{}/{}/{}/{}",
                            a.order,
                            o.sku,
                            o.qty,
                            o.amount_fen,
                            o.user,
                            o.req,
                            a.sku,
                            a.qty,
                            a.amount_fen,
                            a.user,
                            a.req
                        ));
                    }
                }
            }
        }
        out.push(Check::new(
            "acked_orders_in_export",
            missing.is_empty() && differ.is_empty(),
            if missing.is_empty() && differ.is_empty() {
                format!(
                    "all {} acked orders exported with the same sku/qty/amount/user/req",
                    e.oks.len()
                )
            } else {
                format!(
                    "{} acked orders missing from the export (e.g. {:?}); {} differ (e.g. {:?})",
                    missing.len(),
                    &missing[..missing.len().min(5)],
                    differ.len(),
                    &differ[..differ.len().min(3)]
                )
            },
        ));
        let mut export_ours = Sums::default();
        let mut export_units_by_sku: HashMap<&str, u64> = HashMap::new();
        for o in &ours {
            export_ours.add(o.qty, o.amount_fen);
            *export_units_by_sku.entry(&o.sku).or_default() += o.qty;
        }
        if e.final_check && !e.others_buy {
            let mut explained = 0;
            let mut unexplained = Vec::new();
            for o in &ours {
                if !seen.contains(o.order.as_str()) {
                    if e.timed_out.contains(&(o.user.clone(), o.req.clone())) {
                        explained += 1;
                    } else {
                        unexplained.push(format!("{} ({}/{})", o.order, o.user, o.req));
                    }
                }
            }
            out.push(Check::new(
                "export_has_only_acked_orders",
                unexplained.is_empty(),
                if unexplained.is_empty() {
                    format!(
                        "{} exported = {} acked + {explained} whose ack timed out ({} buys timed out)",
                        ours.len(),
                        e.oks.len(),
                        e.timed_out.len()
                    )
                } else {
                    format!("{} exported orders nobody was acked for, e.g. {:?}", unexplained.len(), &unexplained[..unexplained.len().min(5)])
                },
            ));
        }
        let over: Vec<String> = export_units_by_sku
            .iter()
            .filter(|(s, n)| e.stock.get(**s).is_some_and(|st| *n > st))
            .map(|(s, n)| format!("{s}: {n} exported > stock {}", e.stock[*s]))
            .collect();
        out.push(Check::new(
            "exported_units_within_stock",
            over.is_empty(),
            if over.is_empty() {
                "no SKU sold over its stock".to_owned()
            } else {
                over.join("; ")
            },
        ));
        if let Some(exp) = e.expect_sold {
            let wrong: Vec<String> = exp
                .iter()
                .filter(|(s, n)| export_units_by_sku.get(s.as_str()).copied().unwrap_or(0) != **n)
                .map(|(s, n)| {
                    format!(
                        "{s}: sold {} (export), {} acked, expected {n}",
                        export_units_by_sku.get(s.as_str()).unwrap_or(&0),
                        units_by_sku.get(s.as_str()).unwrap_or(&0)
                    )
                })
                .collect();
            out.push(Check::new(
                "sold_as_expected",
                wrong.is_empty(),
                if wrong.is_empty() {
                    exp.iter()
                        .map(|(s, n)| format!("{s}: sold {n} as expected"))
                        .collect::<Vec<_>>()
                        .join(", ")
                } else {
                    wrong.join("; ")
                },
            ));
        }

        // Stats against the export (and, in the end, against the acks).
        match &stats {
            None => out.push(Check::new(
                "stats_match_orders",
                false,
                "GET /stats kept answering 503 (no snapshot) for 2 s",
            )),
            Some(s) => {
                let sseq = u(s, "seq");
                let mut upto = Sums::default();
                for o in self.orders.iter().filter(|o| o.seq <= sseq) {
                    upto.add(o.qty, o.amount_fen);
                }
                let snap = Sums {
                    orders: u(s, "orders"),
                    units: u(s, "units"),
                    gmv_fen: u(s, "gmv_fen"),
                };
                let mut ok = snap == upto;
                let mut detail = format!("snapshot seq {sseq}: {snap}; export up to it: {upto}");
                if e.final_check {
                    let caught = sseq >= self.last_seq();
                    ok &= caught;
                    if !caught {
                        detail.push_str(&format!(
                            "; snapshot seq {sseq} still behind the last order's seq {} after 2 s",
                            self.last_seq()
                        ));
                    }
                    let before = self
                        .orders
                        .iter()
                        .filter(|o| o.seq <= self.baseline_seq)
                        .fold(Sums::default(), |mut a, o| {
                            a.add(o.qty, o.amount_fen);
                            a
                        });
                    let mut expected = acked;
                    expected.orders += export_ours.orders.saturating_sub(acked.orders);
                    expected.units += export_ours.units.saturating_sub(acked.units);
                    expected.gmv_fen += export_ours.gmv_fen.saturating_sub(acked.gmv_fen);
                    let mine = Sums {
                        orders: snap.orders.saturating_sub(before.orders),
                        units: snap.units.saturating_sub(before.units),
                        gmv_fen: snap.gmv_fen.saturating_sub(before.gmv_fen),
                    };
                    if mine != expected {
                        ok = false;
                    }
                    detail.push_str(&format!("; ok acks: {acked}"));
                    if expected != acked {
                        detail.push_str(&format!(" (+ timed-out orders: {expected})"));
                    }
                }
                out.push(Check::new("stats_match_orders", ok, detail));
            }
        }

        // The audit. A buy in flight makes a SKU inconsistent for a moment: retry for 2 s.
        let t = Instant::now();
        let audit = loop {
            let a = self.rest.audit(&self.room).await?;
            if a.get("consistent").and_then(Value::as_bool) == Some(true)
                || t.elapsed() > Duration::from_secs(2)
            {
                break a;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        };
        let consistent = audit.get("consistent").and_then(Value::as_bool) == Some(true);
        let skus = audit
            .get("skus")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        let mut problems = Vec::new();
        let mut room_units: HashMap<&str, u64> = HashMap::new();
        for o in &self.orders {
            *room_units.entry(&o.sku).or_default() += o.qty;
        }
        for s in &skus {
            let id = s.get("sku").and_then(Value::as_str).unwrap_or("?");
            let (total, sold, left) = (u(s, "stock_total"), u(s, "sold"), u(s, "left"));
            if sold > total || sold + left > total {
                problems.push(format!(
                    "{id}: sold {sold} + left {left} > stock_total {total}"
                ));
            }
            if e.final_check && sold != room_units.get(id).copied().unwrap_or(0) {
                problems.push(format!(
                    "{id}: audit sold {sold}, export {}",
                    room_units.get(id).unwrap_or(&0)
                ));
            }
        }
        // While buys are in flight `consistent` can be false for a moment; only the end is strict.
        let ok = problems.is_empty() && (consistent || !e.final_check);
        out.push(Check::new(
            "audit_consistent",
            ok,
            format!(
                "consistent: {consistent}; {}",
                if problems.is_empty() {
                    format!("{} SKUs, sold + left <= stock_total", skus.len())
                } else {
                    problems.join("; ")
                }
            ),
        ));
        Ok(out)
    }
}

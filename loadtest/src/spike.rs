//! `spike`: a flash sale. N buyers connect to a room whose SKU is scheduled far in the future;
//! the sale is opened with `POST .../open`; each buyer sends one buy the moment its socket
//! gets the `{"op":"sale","state":"open"}` push (default), or, with `--trigger response`,
//! once the open call returned. Measures the time from the open call to sell-out (the last
//! ok ack), ack latency, the push fan-out, and rejections by reason.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{json, Map, Value};
use tokio::sync::watch;

use crate::buyer::{connect_many, spike_buyer, SpikeResult, SpikeShared};
use crate::cli::{SpikeArgs, Trigger};
use crate::ctx::Ctx;
use crate::invariants::{Check, Checker, Expect};
use crate::net::Target;
use crate::peer::Peer;
use crate::record::{ms, Finished, Recorder, Simple};
use crate::scenario::{self, Totals};

struct Run {
    totals: Totals,
    finished: Finished,
    /// µs after the open call: first ok, last ok (sell-out), last ack.
    first_ok_us: Option<u64>,
    last_ok_us: Option<u64>,
    last_ack_us: Option<u64>,
    open_call_us: u64,
    push_us: Vec<u64>,
    push_arrival_us: Vec<u64>,
    missed_push: u64,
    fairness: Fairness,
    /// `latency_arrival`, as JSON.
    arrival: Value,
    /// The machine's stalls from the open call to the last buyer's close.
    hiccups: Value,
    connected: usize,
    connect_times: Arc<Simple>,
    /// Buys sent per user.
    sent_by_user: HashMap<Arc<str>, u64>,
}

async fn run(
    ctx: &Arc<Ctx>,
    a: &SpikeArgs,
    target: &Target,
    peer: Option<Peer>,
    name: &str,
) -> anyhow::Result<Run> {
    let echo = peer.is_some();
    // A peer's sale is set up and opened over a control socket of its own, kept until the run
    // ends; livehub's over REST.
    let mut control = None;
    if let Some(p) = peer {
        let mut c = crate::peer::Control::connect(target).await?;
        if p.keeps_stock() {
            c.define(&crate::peer::SkuSetup {
                sku: &a.sku,
                price_fen: a.price_fen,
                stock: a.stock,
                limit: a.limit,
                open: false,
            })
            .await?;
        }
        control = Some(c);
    }
    let rec = Recorder::new(name, ctx.started, Duration::from_millis(100));
    ctx.add_recorder(&rec);
    let times = Arc::new(Simple::new());
    ctx.pb
        .set_message(format!("{name}: connecting {} buyers", a.buyers));
    let conns = connect_many(
        ctx,
        target,
        a.buyers,
        scenario::buyer_path_users(ctx, echo, "b", a.users.unwrap_or(usize::MAX))?,
        true,
        &times,
    )
    .await;
    let connected = conns.len();
    let (go_tx, go_rx) = watch::channel(false);
    let shared = Arc::new(SpikeShared::default());
    let sku: Arc<str> = Arc::from(a.sku.as_str());
    let price = peer.is_none_or(Peer::keeps_stock).then_some(a.price_fen);
    let prefix: Arc<str> = Arc::from(format!("{}{}", ctx.run_id, peer.map_or("s", Peer::req_tag)));
    let mut set = tokio::task::JoinSet::new();
    let hold = Arc::new(tokio::sync::Barrier::new(conns.len()));
    for c in conns {
        set.spawn(spike_buyer(
            ctx.clone(),
            c,
            sku.clone(),
            a.qty,
            price,
            a.trigger,
            go_rx.clone(),
            shared.clone(),
            rec.clone(),
            prefix.clone(),
            hold.clone(),
        ));
    }
    // Let every buyer task start reading its socket.
    tokio::time::sleep(Duration::from_millis(100)).await;
    ctx.pb.set_length(connected as u64);
    ctx.pb.set_position(0);
    ctx.pb.set_message(format!("{name}: open"));
    ctx.hiccups.phase();
    let t_open = Instant::now();
    let _ = shared.t_open.set(t_open);
    let _ = shared.t_open_ns.set(crate::net::now_ns());
    if a.trigger == Trigger::Clock {
        // Scheduled instead of opened: every buyer hears of the time before it comes.
        let at = crate::net::now_ns() as i64 / 1_000_000 + a.lead.as_millis() as i64;
        let _ = shared.opens_at_ms.set(at);
        scenario::setup_sku(ctx, &a.sku, a.price_fen, a.stock, a.limit, Some(at)).await?;
    } else if let Some(c) = control.as_mut() {
        c.open(&a.sku).await?;
    } else {
        let state = ctx.rest.open(&ctx.room, &a.sku).await?;
        if state["state"] != "open" && state["state"] != "sold_out" {
            ctx.anomaly(format!("open returned state {}", state["state"]));
        }
    }
    let open_call_us = t_open.elapsed().as_micros() as u64;
    match a.trigger {
        Trigger::Response => {
            let _ = go_tx.send(true);
        }
        Trigger::Push | Trigger::Clock => {
            let grace = a.push_grace
                + if a.trigger == Trigger::Clock {
                    a.lead
                } else {
                    Duration::ZERO
                };
            let tx = go_tx.clone();
            tokio::spawn(async move {
                tokio::time::sleep(grace).await;
                let _ = tx.send(true);
            });
        }
    }
    let mut totals = Totals::default();
    let mut sent_by_user: HashMap<Arc<str>, u64> = HashMap::new();
    let (mut first_ok, mut last_ok, mut last_ack): (
        Option<Instant>,
        Option<Instant>,
        Option<Instant>,
    ) = (None, None, None);
    let mut learned: Vec<(u64, bool)> = Vec::new();
    while let Some(r) = set.join_next().await {
        let Ok(SpikeResult {
            res,
            acked_at,
            user,
            push_arrival_us,
        }) = r
        else {
            continue;
        };
        if let Some(at) = push_arrival_us {
            learned.push((at, acked_at.is_some_and(|(_, ok)| ok)));
        }
        ctx.pb.inc(1);
        *sent_by_user.entry(user).or_default() += res.sent;
        if let Some((at, ok)) = acked_at {
            last_ack = last_ack.max(Some(at));
            if ok {
                last_ok = last_ok.max(Some(at));
                first_ok = Some(first_ok.map_or(at, |f: Instant| f.min(at)));
            }
        }
        totals.add(res);
    }
    drop(go_tx);
    let hiccups = ctx.hiccups.phase();
    let us = |t: Option<Instant>| t.map(|t| t.saturating_duration_since(t_open).as_micros() as u64);
    let mut push_us = shared.push_us.lock().unwrap().clone();
    push_us.sort_unstable();
    let mut push_arrival_us = shared.push_arrival_us.lock().unwrap().clone();
    push_arrival_us.sort_unstable();
    Ok(Run {
        totals,
        finished: rec.finish(Instant::now()),
        first_ok_us: us(first_ok),
        last_ok_us: us(last_ok),
        last_ack_us: us(last_ack),
        open_call_us,
        push_us,
        push_arrival_us,
        missed_push: shared.missed_push.load(Ordering::Relaxed),
        fairness: Fairness::of(learned),
        arrival: shared.arrival.json(),
        hiccups,
        connected,
        connect_times: times,
        sent_by_user,
    })
}

/// Whether the order in which buyers learned of the open decided who got the stock: of the
/// buyers whose open push arrived, the first tenth by its arrival stamp, and how many of the
/// winners (an ok ack) were among them. A fair sale puts about a tenth of its winners there;
/// one decided by the push's order, as many as fit.
#[derive(Debug, Default, PartialEq)]
struct Fairness {
    learned: usize,
    winners: usize,
    first_tenth: usize,
    winners_in_first_tenth: usize,
}

impl Fairness {
    /// `learned`: each buyer whose push arrived, its arrival and whether it won.
    fn of(mut learned: Vec<(u64, bool)>) -> Fairness {
        learned.sort_unstable_by_key(|&(at, _)| at);
        let first_tenth = learned.len().div_ceil(10);
        Fairness {
            learned: learned.len(),
            winners: learned.iter().filter(|&&(_, won)| won).count(),
            first_tenth,
            winners_in_first_tenth: learned[..first_tenth]
                .iter()
                .filter(|&&(_, won)| won)
                .count(),
        }
    }

    fn json(&self) -> Value {
        let share = (self.winners > 0).then(|| {
            (self.winners_in_first_tenth as f64 / self.winners as f64 * 1000.0).round() / 1000.0
        });
        json!({
            "buyers_with_push": self.learned,
            "winners": self.winners,
            "first_tenth": self.first_tenth,
            "winners_in_first_tenth": self.winners_in_first_tenth,
            "share_of_winners": share,
            "if_fair": self.winners.div_ceil(10),
            "if_push_order_decided": self.winners.min(self.first_tenth),
        })
    }
}

fn run_json(ctx: &Ctx, r: &Run, buyers: usize) -> Value {
    let pct = |v: &[u64], q: f64| -> Option<f64> {
        (!v.is_empty()).then(|| ms(v[((v.len() - 1) as f64 * q).round() as usize]))
    };
    json!({
        "connections": scenario::connections_json(ctx, buyers, r.connected, &r.connect_times),
        "buys": {
            "sent": r.totals.sent,
            "acks": r.finished.count,
            "ok": r.finished.ok,
            "rejected": r.finished.rejected,
            "timed_out": r.totals.timed_out.len(),
            "rejections": r.finished.reasons,
            "latency": r.finished.latency_json(),
            "latency_ok": crate::record::latency_json(&r.finished.hist_ok),
            "latency_arrival": r.arrival,
        },
        "hiccups": r.hiccups,
        "timing_ms": {
            "open_call": ms(r.open_call_us),
            "first_ok_after_open": r.first_ok_us.map(ms),
            "sell_out_after_open": r.last_ok_us.map(ms),
            "last_ack_after_open": r.last_ack_us.map(ms),
        },
        "open_push_ms_after_open": {
            "received": r.push_us.len(),
            "missed": r.missed_push,
            "first": pct(&r.push_us, 0.0),
            "p50": pct(&r.push_us, 0.5),
            "p99": pct(&r.push_us, 0.99),
            "last": pct(&r.push_us, 1.0),
            "by_arrival": {
                "received": r.push_arrival_us.len(),
                "first": pct(&r.push_arrival_us, 0.0),
                "p50": pct(&r.push_arrival_us, 0.5),
                "p99": pct(&r.push_arrival_us, 0.99),
                "last": pct(&r.push_arrival_us, 1.0),
            },
        },
        "fairness": r.fairness.json(),
    })
}

pub async fn spike(ctx: Arc<Ctx>, a: SpikeArgs) -> anyhow::Result<i32> {
    anyhow::ensure!(a.users != Some(0), "--users must be at least 1");
    anyhow::ensure!(
        a.buyers > 0 && a.qty > 0,
        "--buyers and --qty must be at least 1"
    );
    anyhow::ensure!(
        a.trigger != Trigger::Clock || !(a.against_echo || a.against_bun),
        "--trigger clock runs on livehub only (the peers open sales only by the control socket)"
    );
    scenario::setup_room(&ctx, &format!("load test spike {}", ctx.run_id)).await?;
    scenario::setup_sku(
        &ctx,
        &a.sku,
        a.price_fen,
        a.stock,
        a.limit,
        Some(scenario::FAR_FUTURE_MS),
    )
    .await?;
    let mut checker = Checker::new(ctx.rest.clone(), &ctx.room).await?;
    let sampler = ctx.spawn_sampler(Duration::from_millis(100));
    let target = ctx.target.clone();
    let r = run(&ctx, &a, &target, None, "buys").await?;

    // Demand: every buyer that sent its buy, each user capped by the limit (whole buys of qty).
    let sent_units = r.totals.sent * a.qty;
    let allowed: u64 = r
        .sent_by_user
        .values()
        .map(|&n| match a.limit {
            Some(l) => n.min(l / a.qty) * a.qty,
            None => n * a.qty,
        })
        .sum();
    let expected = if allowed >= a.stock {
        a.stock - a.stock % a.qty
    } else {
        allowed
    };
    let stock = HashMap::from([(a.sku.clone(), a.stock)]);
    let expect_sold = HashMap::from([(a.sku.clone(), expected)]);
    ctx.pb.set_message("checking");
    let mut checks = checker
        .run(&Expect {
            oks: &r.totals.oks,
            timed_out: &r.totals.timed_out,
            stock: &stock,
            expect_sold: Some(&expect_sold),
            limit_per_user: a.limit,
            final_check: true,
            others_buy: false,
        })
        .await;

    if a.trigger == Trigger::Clock {
        checks.push(Check::new(
            "every_buyer_heard_the_opening_time_first",
            r.missed_push == 0 && r.push_arrival_us.len() == r.connected,
            format!(
                "{} of {} buyers got the sale push with the new opens_at_ms; {} bought on the fallback",
                r.push_us.len(),
                r.connected,
                r.missed_push
            ),
        ));
    }
    let mut results = Map::new();
    let mut main = run_json(&ctx, &r, a.buyers);
    main["demand_units"] = json!(sent_units);
    main["demand_units_within_limits"] = json!(allowed);
    main["users"] = json!(r.sent_by_user.len());
    main["expected_sold"] = json!(expected);
    results.insert("livehub".into(), main);
    let mut recs = vec![r.finished.clone()];
    for p in Peer::chosen(a.against_echo, a.against_bun) {
        // Its own process: 15,000 buyers twice would not fit in this one's open files.
        let server = p.start(false).await?;
        let before_failed = ctx.conn_failed.load(Ordering::Relaxed);
        let name = format!("{} buys", p.name());
        let e = run(&ctx, &a, &server.target(), Some(p), &name).await?;
        let mut ej = run_json(&ctx, &e, a.buyers);
        ej["address"] = json!(server.addr.to_string());
        ej["connections"]["failed"] =
            json!(ctx.conn_failed.load(Ordering::Relaxed) - before_failed);
        if p.keeps_stock() {
            // The peer's own invariants, from its acks: no oversell, no limit overrun.
            let sold: u64 = e.totals.oks.iter().map(|o| o.qty).sum();
            let mut by_user: HashMap<&str, u64> = HashMap::new();
            for o in &e.totals.oks {
                *by_user.entry(&o.user).or_default() += o.qty;
            }
            let over_limit = a
                .limit
                .map_or(0, |l| by_user.values().filter(|&&u| u > l).count());
            ej["sold_units"] = json!(sold);
            checks.push(Check::new(
                &format!("{}_never_oversells", p.name()),
                sold <= a.stock && over_limit == 0,
                format!(
                    "{sold} of {} units sold by ok acks; {over_limit} users over the limit",
                    a.stock
                ),
            ));
        }
        results.insert(p.name().into(), ej);
        let ratio = |x: Option<u64>, y: Option<u64>| match (x, y) {
            (Some(x), Some(y)) if y > 0 => Some(((x as f64 / y as f64) * 100.0).round() / 100.0),
            _ => None,
        };
        results.insert(
            format!("livehub_vs_{}", p.name()),
            json!({
                "all_acked_time_ratio": ratio(r.last_ack_us, e.last_ack_us),
                "p50_latency_ratio": (e.finished.p(0.5) > 0.0).then(|| ((r.finished.p(0.5) / e.finished.p(0.5)) * 100.0).round() / 100.0),
                "p99_latency_ratio": (e.finished.p(0.99) > 0.0).then(|| ((r.finished.p(0.99) / e.finished.p(0.99)) * 100.0).round() / 100.0),
                "note": format!("livehub figure / {} figure for the same buyers and frames (>1: slower than the peer)", p.name()),
            }),
        );
        recs.push(e.finished);
    }
    sampler.store(true, Ordering::Relaxed);
    let params = json!({
        "buyers": a.buyers, "stock": a.stock, "limit": a.limit, "qty": a.qty, "price_fen": a.price_fen,
        "sku": a.sku, "users": a.users, "trigger": format!("{:?}", a.trigger).to_lowercase(), "lead_ms": (a.trigger == Trigger::Clock).then_some(a.lead.as_millis() as u64), "sources": ctx.common.sources,
    });
    Ok(scenario::finish(
        &ctx, "spike", params, results, checks, recs, &target,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fairness_counts_the_winners_among_the_first_tenth_to_learn() {
        // 20 buyers; the winners are the 1st, 3rd and 15th to learn, given out of order.
        let learned: Vec<(u64, bool)> = (0..20u64)
            .rev()
            .map(|i| (1_000 + i * 10, [0, 2, 14].contains(&i)))
            .collect();
        let f = Fairness::of(learned);
        assert_eq!(
            f,
            Fairness {
                learned: 20,
                winners: 3,
                first_tenth: 2,
                winners_in_first_tenth: 1
            }
        );
        assert_eq!(f.json()["if_push_order_decided"], 2);
        assert_eq!(
            Fairness::of(Vec::new()).json()["share_of_winners"],
            Value::Null
        );
    }
}

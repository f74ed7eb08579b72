//! `checkout`: orders that must be paid, under a flash sale. A SKU with a short
//! `pay_timeout_s` opens to N connected buyers who all buy at once; of those with an order,
//! some pay (signed notices), some cancel over their sockets, the rest let their orders
//! expire, and a few pay late, twice, or a second time on purpose. Sold-out buyers buy the
//! units given back. Once every order has ended, the export, the change feed, the audit and
//! `/stats` are checked against the client's own log (`paid_checks`).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use serde_json::{json, Map, Value};
use tokio::sync::watch;

use crate::buyer::connect_many;
use crate::checkout_buyer::{self, BuyerOut, Plan, Recorders, Shared, Signals};
use crate::cli::CheckoutArgs;
use crate::ctx::Ctx;
use crate::paid_checks::{self, ClientLog, ServerView};
use crate::pay::{Payer, PaymentLog};
use crate::record::{ms, Recorder, Simple};
use crate::scenario;

/// How long nothing may be in flight or unsettled before sold-out buyers stop waiting: longer
/// than a `stock` push's delay (at most 10 a second), so units just given back are seen.
const QUIET: Duration = Duration::from_secs(1);
/// How long sockets stay open after the last buyer is done (and the last order it did not see
/// end is past its time), for the last `order` pushes.
const LINGER: Duration = Duration::from_secs(1);
/// Time kept after the sale for the checks.
const CHECK_RESERVE: Duration = Duration::from_secs(20);
/// How long the checks wait for `/stats` to catch up with the change feed.
const STATS_WAIT: Duration = Duration::from_secs(3);
/// Idle HTTP connections the payers keep.
const PAYER_POOL: usize = 256;

/// Everything the buyers did, together.
#[derive(Default)]
pub(crate) struct Log {
    pub placed: Vec<paid_checks::Placed>,
    pub resold: Vec<String>,
    pub timed_out: HashSet<(String, String)>,
    pub payments: Vec<PaymentLog>,
    pub cancels: Vec<paid_checks::CancelLog>,
    pub pushes: HashSet<(String, String)>,
    pub sent: u64,
    /// Latest time (unix ms) by which every order the buyers did not see end must have ended.
    pub settle_by_ms: i64,
}

impl Log {
    fn add(&mut self, b: BuyerOut, pay_timeout_ms: i64) {
        for (p, attempt) in b.placed {
            if attempt > 0 {
                self.resold.push(p.order.clone());
            }
            self.placed.push(p);
        }
        self.sent += b.sent;
        if !b.timed_out.is_empty() {
            if let Some(t) = b.last_buy_ms {
                self.settle_by_ms = self.settle_by_ms.max(t + pay_timeout_ms);
            }
        }
        self.timed_out.extend(b.timed_out);
        self.payments.extend(b.payments);
        self.cancels.extend(b.cancels);
        self.pushes.extend(b.pushes);
        for pb in b.unsettled_pay_by_ms {
            self.settle_by_ms = self.settle_by_ms.max(pb);
        }
    }
}

/// Stops the sold-out buyers once nothing is in flight or unsettled for [`QUIET`] (no units
/// can come back then), and ends the sale once every buyer is done, or at the plan's end.
async fn coordinate(
    shared: Arc<Shared>,
    buyers: usize,
    end: Instant,
    stop_tx: watch::Sender<bool>,
    over_tx: watch::Sender<bool>,
) {
    let mut quiet_since: Option<Instant> = None;
    let mut tick = tokio::time::interval(Duration::from_millis(50));
    loop {
        tick.tick().await;
        let now = Instant::now();
        if now >= end {
            if shared.done.load(Ordering::Relaxed) < buyers {
                shared.cut.store(true, Ordering::Relaxed);
            }
            break;
        }
        let quiet = shared.first_pending.load(Ordering::Relaxed) <= 0
            && shared.in_flight.load(Ordering::Relaxed) <= 0
            && shared.unsettled.load(Ordering::Relaxed) <= 0;
        quiet_since = if quiet {
            quiet_since.or(Some(now))
        } else {
            None
        };
        if quiet_since.is_some_and(|t| now - t >= QUIET) {
            let _ = stop_tx.send(true);
        }
        if shared.done.load(Ordering::Relaxed) >= buyers {
            // Orders whose end no buyer saw (a notice refused, a buy unanswered) end by their
            // time: keep the sockets open for their pushes until then.
            let by = shared.settle_by_ms.load(Ordering::Relaxed);
            let wait_ms = if by > 0 {
                (by + paid_checks::EXPIRY_WINDOW_MS + 500 - crate::net::now_ms()).max(0)
            } else {
                0
            };
            let until = now + Duration::from_millis(wait_ms as u64) + LINGER;
            tokio::time::sleep_until(until.min(end).into()).await;
            break;
        }
    }
    let _ = stop_tx.send(true);
    let _ = over_tx.send(true);
}

/// The figures of what the server holds once the sale is over.
pub(crate) struct Server {
    pub export: Vec<crate::rest::PaidOrder>,
    pub feed: Vec<crate::rest::OrderEvent>,
    pub audit: Value,
    pub stats: Option<Value>,
    pub read_at_ms: i64,
}

/// Reads the export, the feed and the audit, then `/stats` until its `event` reaches the
/// feed's last (or [`STATS_WAIT`] passed).
pub(crate) async fn read_server(ctx: &Ctx) -> anyhow::Result<Server> {
    let read_at_ms = crate::net::now_ms();
    let export = ctx
        .rest
        .export_paid(&ctx.room)
        .await
        .context("the orders export")?;
    let feed = ctx
        .rest
        .order_events(&ctx.room)
        .await
        .context("the change feed (order-events)")?;
    let audit = ctx.rest.audit(&ctx.room).await.context("the audit")?;
    let last = feed.last().map_or(0, |e| e.event);
    let t = Instant::now();
    let mut stats = None;
    loop {
        if let Some(s) = ctx.rest.stats(&ctx.room).await? {
            let caught_up = s.get("event").and_then(Value::as_u64) >= Some(last);
            stats = Some(s);
            if caught_up {
                break;
            }
        }
        if t.elapsed() > STATS_WAIT {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Ok(Server {
        export,
        feed,
        audit,
        stats,
        read_at_ms,
    })
}

/// Counts by a key, for the summary.
fn counts<'a>(it: impl Iterator<Item = &'a str>) -> BTreeMap<String, u64> {
    let mut m = BTreeMap::new();
    for k in it {
        *m.entry(k.to_owned()).or_default() += 1;
    }
    m
}

/// The notices' figures: answers by code, by kind, their rate and latency.
pub(crate) fn payments_json(
    log: &[PaymentLog],
    rec: &crate::record::Finished,
    span: Option<(Instant, Instant)>,
) -> Value {
    let ok = log.iter().filter(|p| p.answer.is_paid()).count();
    let secs = span.map_or(0.0, |(a, b)| b.duration_since(a).as_secs_f64());
    let mut by_kind: BTreeMap<String, BTreeMap<String, u64>> = BTreeMap::new();
    for p in log {
        let kind = serde_json::to_value(p.kind)
            .ok()
            .and_then(|v| v.as_str().map(str::to_owned))
            .unwrap_or_default();
        let code = if p.answer.http == 0 {
            "no_answer".to_owned()
        } else {
            p.answer.code.clone()
        };
        *by_kind.entry(kind).or_default().entry(code).or_default() += 1;
    }
    json!({
        "sent": log.len(),
        "ok_200": ok,
        "answers": counts(log.iter().map(|p| if p.answer.http == 0 { "no_answer" } else { p.answer.code.as_str() })),
        "by_kind": by_kind,
        "per_s": if secs > 0.0 { ((log.len() as f64 / secs) * 10.0).round() / 10.0 } else { 0.0 },
        "ok_per_s": if secs > 0.0 { ((ok as f64 / secs) * 10.0).round() / 10.0 } else { 0.0 },
        "span_s": (secs * 100.0).round() / 100.0,
        "latency": rec.latency_json(),
    })
}

pub async fn checkout(ctx: Arc<Ctx>, a: CheckoutArgs) -> anyhow::Result<i32> {
    let secret = ctx
        .common
        .payment_secret
        .clone()
        .context("checkout needs --payment-secret (the server's, to sign payment notices)")?;
    anyhow::ensure!(
        a.buyers > 0 && a.stock > 0,
        "--buyers and --stock must be at least 1"
    );
    anyhow::ensure!(
        (0.0..=1.0).contains(&a.pay_share)
            && (0.0..=1.0).contains(&a.cancel_share)
            && a.pay_share + a.cancel_share <= 1.0,
        "--pay-share and --cancel-share must be shares that add up to at most 1"
    );
    anyhow::ensure!(
        a.delay_min <= a.delay_max && a.delay_max < Duration::from_secs(a.pay_timeout_s),
        "--delay-min <= --delay-max < --pay-timeout-s, so that a payment meant in time is"
    );
    scenario::setup_room(&ctx, &format!("load test checkout {}", ctx.run_id)).await?;
    scenario::setup_paid_sku(
        &ctx,
        &a.sku,
        a.price_fen,
        a.stock,
        Some(a.limit),
        a.pay_timeout_s,
    )
    .await?;
    let sampler = ctx.spawn_sampler(Duration::from_millis(100));
    let buys = Recorder::new("buys", ctx.started, Duration::from_millis(100));
    let pays = Recorder::new("payments", ctx.started, Duration::from_millis(100));
    ctx.add_recorder(&buys);
    ctx.add_recorder(&pays);
    let times = Arc::new(Simple::new());
    ctx.pb
        .set_message(format!("connecting {} buyers", a.buyers));
    let target = ctx.target.clone();
    let conns = connect_many(
        &ctx,
        &target,
        a.buyers,
        scenario::buyer_path(&ctx, false, "c")?,
        true,
        &times,
    )
    .await;
    let connected = conns.len();
    anyhow::ensure!(connected > 0, "no buyer could connect");

    // The buyers' tasks start now; the sale opens a moment later (`t_open`), and the plan's
    // times count from here, which is no later.
    let t_start = Instant::now();
    // The sale's end: --deadline after the open, or earlier when --max-seconds must leave
    // time for the checks. Only a sale that runs into it is cut short.
    let run_end = ctx.before_deadline(CHECK_RESERVE);
    let end = (t_start + a.deadline).min(run_end);
    let late = a.late_payments;
    let plan = Arc::new(Plan {
        sku: a.sku.clone(),
        price_fen: a.price_fen,
        pay_timeout: Duration::from_secs(a.pay_timeout_s),
        pay_share: a.pay_share,
        cancel_share: a.cancel_share,
        delay_min: a.delay_min,
        delay_max: a.delay_max,
        after_expiry: late - late / 2,
        after_cancel: late / 2,
        duplicates: a.duplicate_payments,
        seconds: a.second_payments,
        retries: a.retries,
        retry_until: t_start + a.retry_for,
        end,
        seed: a.seed,
        req_prefix: format!("{}c", ctx.run_id),
        payer: Payer::new(&target.http_base, &secret, &ctx.room, PAYER_POOL)?,
        use_push: true,
    });
    let shared = Arc::new(Shared::default());
    shared
        .first_pending
        .store(connected as i64, Ordering::Relaxed);
    let (go_tx, go_rx) = watch::channel(false);
    let (stop_tx, stop_rx) = watch::channel(false);
    let (over_tx, over_rx) = watch::channel(false);
    let rec = Recorders {
        buys: buys.clone(),
        payments: pays.clone(),
    };
    let mut set = tokio::task::JoinSet::new();
    for c in conns {
        set.spawn(checkout_buyer::run(
            ctx.clone(),
            c,
            plan.clone(),
            shared.clone(),
            rec.clone(),
            Signals {
                go: go_rx.clone(),
                stop_waiting: stop_rx.clone(),
                over: over_rx.clone(),
            },
        ));
    }
    drop((go_rx, stop_rx, over_rx));
    // Let every buyer task start reading its socket.
    tokio::time::sleep(Duration::from_millis(100)).await;
    let coordinator = tokio::spawn(coordinate(shared.clone(), connected, end, stop_tx, over_tx));
    ctx.pb.set_length(connected as u64);
    ctx.pb.set_position(0);
    ctx.pb.set_message("open");
    ctx.hiccups.phase();
    let t_open = Instant::now();
    let _ = shared.t_open.set(t_open);
    let state = ctx.rest.open(&ctx.room, &a.sku).await?;
    if state["state"] != "open" {
        ctx.anomaly(format!("open returned state {}", state["state"]));
    }
    let open_call_us = t_open.elapsed().as_micros() as u64;
    {
        let (tx, grace) = (go_tx.clone(), a.push_grace);
        tokio::spawn(async move {
            tokio::time::sleep(grace).await;
            let _ = tx.send(true);
        });
    }
    ctx.pb.set_message("sale: buy, pay, cancel, expire");
    let pay_timeout_ms = a.pay_timeout_s as i64 * 1000;
    let mut log = Log::default();
    let (mut first_ok, mut last_first_ok): (Option<Instant>, Option<Instant>) = (None, None);
    while let Some(r) = set.join_next().await {
        let Ok(b) = r else { continue };
        ctx.pb.inc(1);
        if let Some((at, true)) = b.first {
            first_ok = Some(first_ok.map_or(at, |f| f.min(at)));
            last_first_ok = last_first_ok.max(Some(at));
        }
        log.add(b, pay_timeout_ms);
    }
    drop(go_tx);
    let _ = coordinator.await;
    let sale_hiccups = ctx.hiccups.phase();
    let sale_s = t_open.elapsed().as_secs_f64();

    // Orders whose end no buyer saw must be past their time before the checks.
    let settle_ms = log.settle_by_ms + paid_checks::EXPIRY_WINDOW_MS + 500;
    let wait_ms = (settle_ms - crate::net::now_ms()).max(0) as u64;
    if wait_ms > 0 {
        ctx.pb.set_message("waiting for the last orders to expire");
        let until = ctx.clamp(
            Instant::now() + Duration::from_millis(wait_ms),
            CHECK_RESERVE / 2,
        );
        tokio::time::sleep_until(until.into()).await;
    }
    ctx.pb.set_message("checking");
    let server = read_server(&ctx).await;
    sampler.store(true, Ordering::Relaxed);
    let stock = HashMap::from([(a.sku.clone(), a.stock)]);
    let disconnects = !ctx.disconnects.lock().unwrap().is_empty();
    let mut checks = match &server {
        Ok(s) => paid_checks::check(
            &stock,
            &ClientLog {
                placed: &log.placed,
                timed_out: &log.timed_out,
                payments: &log.payments,
                cancels: &log.cancels,
                pushes: &log.pushes,
                expect_pushes: !disconnects
                    && !ctx.cut_short.load(Ordering::Relaxed)
                    && !shared.cut.load(Ordering::Relaxed),
                pay_timeout_ms,
            },
            &ServerView {
                export: &s.export,
                feed: &s.feed,
                audit: &s.audit,
                stats: s.stats.as_ref(),
                read_at_ms: s.read_at_ms,
            },
        ),
        Err(e) => vec![crate::invariants::Check::new(
            "server_reachable_for_checks",
            false,
            format!("{e:#}"),
        )],
    };
    let cut = shared.cut.load(Ordering::Relaxed);
    let by_max = run_end < t_start + a.deadline;
    if cut && by_max {
        ctx.cut_short.store(true, Ordering::Relaxed);
    }
    checks.push(crate::invariants::Check::new(
        "sale_within_deadline",
        !cut,
        if cut {
            format!(
                "the sale ran into {} before every buyer was done",
                if by_max {
                    "the time --max-seconds leaves before the checks".to_owned()
                } else {
                    format!("--deadline ({} s)", a.deadline.as_secs_f64())
                }
            )
        } else {
            format!("every buyer done {sale_s:.1} s after the open")
        },
    ));
    checks.push(crate::invariants::Check::new(
        "every_buyer_bought",
        log.sent >= connected as u64,
        format!("{} buys sent by {connected} buyers", log.sent),
    ));

    let bf = buys.finish(Instant::now());
    let pf = pays.finish(Instant::now());
    let statuses = server
        .as_ref()
        .map(|s| counts(s.export.iter().map(|o| o.status.as_str())))
        .unwrap_or_default();
    let late: usize = log.payments.iter().filter(|p| p.answer.is_late()).count();
    let left = server.as_ref().ok().and_then(|s| {
        s.audit["skus"]
            .as_array()?
            .iter()
            .find(|x| x["sku"] == a.sku.as_str())?["left"]
            .as_u64()
    });
    let mut push_us = shared.push_us.lock().unwrap().clone();
    push_us.sort_unstable();
    let pct = |v: &[u64], q: f64| -> Option<f64> {
        (!v.is_empty()).then(|| ms(v[((v.len() - 1) as f64 * q).round() as usize]))
    };
    let since_open =
        |t: Option<Instant>| t.map(|t| ms(t.saturating_duration_since(t_open).as_micros() as u64));
    let cancels_ok = log.cancels.iter().filter(|c| c.ok).count();
    let st = |k: &str| statuses.get(k).copied().unwrap_or(0);
    let main = json!({
        "connections": scenario::connections_json(&ctx, a.buyers, connected, &times),
        "orders": {
            "placed": log.placed.len(),
            "first_wave": log.placed.len() - log.resold.len(),
            "resold": log.resold.len(),
            "paid": st("paid"),
            "cancelled": st("cancelled"),
            "expired": st("expired"),
            "unpaid": st("unpaid"),
            "late_payments": late,
            "by_status": statuses,
        },
        "units": {
            "stock": a.stock,
            "paid": st("paid"),
            "left": left,
            "resold_units": log.resold.len(),
        },
        "buys": {
            "sent": log.sent,
            "rebuys": shared.rebuys.load(Ordering::Relaxed),
            "ok": bf.ok,
            "rejected": bf.rejected,
            "timed_out": log.timed_out.len(),
            "rejections": bf.reasons,
            "latency": bf.latency_json(),
            "latency_ok": crate::record::latency_json(&bf.hist_ok),
        },
        "payments": payments_json(&log.payments, &pf, *shared.pay_span.lock().unwrap()),
        "cancels": {
            "sent": log.cancels.len(),
            "ok": cancels_ok,
            "refused": counts(log.cancels.iter().filter(|c| !c.ok).map(|c| c.code.as_str())),
        },
        "order_pushes": log.pushes.len(),
        "timing_ms": {
            "open_call": ms(open_call_us),
            "first_ok_after_open": since_open(first_ok),
            "first_wave_last_ok_after_open": since_open(last_first_ok),
            "sale_s": (sale_s * 10.0).round() / 10.0,
        },
        "open_push_ms_after_open": {
            "received": push_us.len(),
            "missed": shared.missed_push.load(Ordering::Relaxed),
            "p50": pct(&push_us, 0.5),
            "p99": pct(&push_us, 0.99),
            "last": pct(&push_us, 1.0),
        },
        "hiccups": sale_hiccups,
    });
    if let Err(e) = &server {
        eprintln!("error reading the server for the checks: {e:#}");
    }
    let mut results = Map::new();
    results.insert("checkout".into(), main);
    let params = json!({
        "buyers": a.buyers, "stock": a.stock, "limit": a.limit, "price_fen": a.price_fen, "sku": a.sku,
        "pay_timeout_s": a.pay_timeout_s, "pay_share": a.pay_share, "cancel_share": a.cancel_share,
        "delay_s": [a.delay_min.as_secs_f64(), a.delay_max.as_secs_f64()],
        "late_payments": a.late_payments, "duplicate_payments": a.duplicate_payments,
        "second_payments": a.second_payments, "retries": a.retries,
        "retry_for_s": a.retry_for.as_secs_f64(), "deadline_s": a.deadline.as_secs_f64(), "seed": a.seed,
    });
    Ok(scenario::finish(
        &ctx,
        "checkout",
        params,
        results,
        checks,
        vec![bf, pf],
        &target,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pay::{Answer, PayKind};

    #[test]
    fn payments_are_summed_by_code_and_kind() {
        let p = |kind, http, code: &str| PaymentLog {
            order: "O1".into(),
            payment_id: "p".into(),
            amount_fen: 1,
            kind,
            answer: Answer {
                http,
                code: code.into(),
                latency_us: 10,
            },
        };
        let log = vec![
            p(PayKind::OnTime, 200, "paid"),
            p(PayKind::Duplicate, 200, "paid"),
            p(PayKind::AfterExpiry, 409, "order_expired"),
            p(PayKind::OnTime, 0, "transport: reset"),
        ];
        let rec =
            Recorder::new("p", Instant::now(), Duration::from_millis(100)).finish(Instant::now());
        let t = Instant::now();
        let v = payments_json(&log, &rec, Some((t, t + Duration::from_secs(2))));
        assert_eq!(v["sent"], 4);
        assert_eq!(v["ok_200"], 2);
        assert_eq!(v["per_s"], 2.0);
        assert_eq!(v["answers"]["no_answer"], 1);
        assert_eq!(v["by_kind"]["on_time"]["paid"], 1);
        assert_eq!(v["by_kind"]["after_expiry"]["order_expired"], 1);
    }
}

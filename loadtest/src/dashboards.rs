//! `dashboards`: N dashboard sockets on one room; dashboard snapshots a second per socket and
//! the delay from a snapshot's `ts_ms` to its receipt. `--with-buys RATE` runs an open-loop buy
//! load alongside, so that snapshots change (and shows whether dashboards slow the buy path),
//! and gives how soon each acked order shows on every dashboard: from its ack's arrival here to
//! the first snapshot whose `seq` covers it (the order's `seq` from the dashboards' hub's
//! export), by this process's clock. With `--dashboard-url` the dashboards watch another hub of
//! the fleet than the buys go to.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use serde_json::{json, Map, Value};

use crate::buyer::{connect_many, Conn, Mode, OkAck, Plan};
use crate::cli::DashboardsArgs;
use crate::ctx::Ctx;
use crate::dash::{run_dashboard, DashResult};
use crate::invariants::{Checker, Expect};
use crate::net::Target;
use crate::record::{Finished, Outcome, Recorder, Simple};
use crate::rest::Rest;
use crate::scenario::{self, Totals};

pub fn dashboard_path(ctx: &Ctx) -> anyhow::Result<impl Fn(usize) -> (Arc<str>, String) + '_> {
    let token = ctx
        .common
        .viewer_token
        .clone()
        .or_else(|| ctx.common.admin_token.clone())
        .context("dashboards need --viewer-token (or --admin-token)")?;
    Ok(move |i: usize| {
        (
            Arc::from(format!("d{i}")),
            format!("/ws/dashboard?room={}&token={token}", ctx.room),
        )
    })
}

/// Per-socket snapshot rates and totals.
pub fn dash_json(results: &[DashResult], window: Duration) -> Value {
    let w = window.as_secs_f64().max(1e-9);
    let mut rates: Vec<f64> = results.iter().map(|r| r.in_window as f64 / w).collect();
    rates.sort_by(|a, b| a.partial_cmp(b).unwrap());
    let r2 = |x: f64| (x * 100.0).round() / 100.0;
    let at = |q: f64| {
        rates
            .get(((rates.len().saturating_sub(1)) as f64 * q).round() as usize)
            .copied()
            .map(r2)
    };
    json!({
        "sockets": results.len(),
        "snapshots_total": results.iter().map(|r| r.total).sum::<u64>(),
        "snapshots_per_s_per_socket": {
            "mean": (!rates.is_empty()).then(|| r2(rates.iter().sum::<f64>() / rates.len() as f64)),
            "min": at(0.0), "p50": at(0.5), "max": at(1.0),
        },
        "seq_went_backwards": results.iter().map(|r| r.backwards).sum::<u64>(),
    })
}

/// How long the dashboards watch after the buys' window.
const DASHBOARD_DRAIN: Duration = Duration::from_secs(2);
/// Issue 24's bound on an order's ack → every hub's dashboards showing it, p99.
const FLOOR_SHOWN_P99_MS: f64 = 50.0;

/// How soon each acked order showed on each dashboard: from its ack's arrival here to the
/// first snapshot whose `seq` covers the order's `seq` in the dashboards' hub's export (a
/// snapshot that came before the ack counts as at once). An order a dashboard never showed is
/// counted apart.
async fn ack_to_dashboard(
    ctx: &Ctx,
    a: &DashboardsArgs,
    oks: &[OkAck],
    dashboards: &[DashResult],
) -> anyhow::Result<(Finished, Value)> {
    let rest = match &a.dashboard_url {
        Some(u) => Rest::new(
            u,
            ctx.common.admin_token.clone(),
            ctx.common.viewer_token.clone(),
        )?,
        None => ctx.rest.clone(),
    };
    let seqs: HashMap<String, u64> = rest
        .export(&ctx.room, 0)
        .await
        .context("the export of the dashboards' hub")?
        .into_iter()
        .map(|o| (o.order, o.seq))
        .collect();
    let rec = Recorder::new("ack → dashboard", ctx.started, Duration::from_secs(1));
    let (mut never, mut unknown) = (0u64, 0u64);
    for ok in oks {
        let Some(&seq) = seqs.get(&ok.order) else {
            unknown += 1;
            continue;
        };
        for d in dashboards {
            match d.shown_at(seq) {
                Some(at) => rec.record(
                    at.max(ok.at),
                    at.saturating_duration_since(ok.at).as_micros() as u64,
                    Outcome::Event,
                ),
                None => never += 1,
            }
        }
    }
    let f = rec.finish(Instant::now());
    let p99 = f.p(0.99);
    let j = json!({
        "latency": f.latency_json(),
        "pairs": f.count,
        "never_shown": never,
        "acked_not_in_export": unknown,
        "floor_p99_ms": FLOOR_SHOWN_P99_MS,
        "meets_floor": f.count > 0 && never == 0 && p99 <= FLOOR_SHOWN_P99_MS,
    });
    Ok((f, j))
}

pub async fn dashboards(ctx: Arc<Ctx>, a: DashboardsArgs) -> anyhow::Result<i32> {
    anyhow::ensure!(a.count > 0, "--count must be at least 1");
    scenario::setup_room(&ctx, &format!("load test dashboards {}", ctx.run_id)).await?;
    let skus = vec!["D1".to_owned()];
    let stock = 1_000_000_000u64;
    scenario::setup_sku(&ctx, "D1", 9900, stock, None, None).await?;
    let mut checker = Checker::new(ctx.rest.clone(), &ctx.room).await?;
    let sampler = ctx.spawn_sampler(Duration::from_secs(1));
    let target = ctx.target.clone();
    let dtarget = match &a.dashboard_url {
        Some(u) => Target::from_url(u).await?,
        None => target.clone(),
    };
    let times = Arc::new(Simple::new());
    ctx.pb
        .set_message(format!("connecting {} dashboards", a.count));
    let dconns = connect_many(
        &ctx,
        &dtarget,
        a.count,
        dashboard_path(&ctx)?,
        false,
        &times,
    )
    .await;
    let dconnected = dconns.len();
    let mut bconns: Vec<Conn> = Vec::new();
    let btimes = Arc::new(Simple::new());
    if a.with_buys.is_some() {
        bconns = connect_many(
            &ctx,
            &target,
            a.buy_connections,
            scenario::buyer_path(&ctx, false, "c")?,
            true,
            &btimes,
        )
        .await;
    }
    let bconnected = bconns.len();
    let srec = Recorder::new("snapshots", ctx.started, Duration::from_secs(1));
    ctx.add_recorder(&srec);
    let brec = Recorder::new("buys", ctx.started, Duration::from_secs(1));
    if a.with_buys.is_some() {
        ctx.add_recorder(&brec);
    }
    let w0 = scenario::soon();
    let w1 = ctx.clamp(
        w0 + a.duration,
        ctx.common.ack_timeout + Duration::from_secs(20),
    );
    // The dashboards watch on a little after the last buy, for its order to show.
    let stop_at = ctx.clamp(w1 + DASHBOARD_DRAIN, Duration::from_secs(15));
    let mut dset = tokio::task::JoinSet::new();
    for c in dconns {
        dset.spawn(run_dashboard(ctx.clone(), c, w0, w1, stop_at, srec.clone()));
    }
    let buys = a.with_buys.map(|rate| {
        let plan = Arc::new(Plan {
            t0: w0,
            end: w1,
            drain_until: ctx.clamp(w1 + ctx.common.ack_timeout, Duration::from_secs(15)),
            mode: Mode::Open {
                interval: Duration::from_secs_f64(bconnected.max(1) as f64 / rate.max(1e-6)),
                conns: bconnected.max(1),
            },
            skus: skus.clone(),
            prices: Some(scenario::prices(&skus, 9900)),
            qty: 1,
            req_prefix: format!("{}d", ctx.run_id),
            sink: None,
            dup_every: 0,
            arrival: None,
        });
        let (ctx, brec) = (ctx.clone(), brec.clone());
        tokio::spawn(async move { scenario::run_buys(&ctx, bconns, plan, &brec).await })
    });
    ctx.pb.set_length(a.duration.as_secs().max(1));
    ctx.pb.set_position(0);
    let pb = ctx.pb.clone();
    let ticker = tokio::spawn(async move {
        loop {
            tokio::time::sleep(Duration::from_secs(1)).await;
            pb.set_position(w0.elapsed().as_secs());
        }
    });
    let mut dres = Vec::new();
    while let Some(r) = dset.join_next().await {
        if let Ok(r) = r {
            dres.push(r);
        }
    }
    let (totals, acks_by_end) = match buys {
        Some(h) => h.await.unwrap_or_default(),
        None => (Totals::default(), 0),
    };
    ticker.abort();
    let window = w1.saturating_duration_since(w0);
    let sfin = srec.finish(Instant::now());
    let mut results = Map::new();
    results.insert(
        "connections".into(),
        scenario::connections_json(&ctx, a.count, dconnected, &times),
    );
    let mut dj = dash_json(&dres, window);
    dj["delay_ts_to_receipt"] = sfin.latency_json();
    results.insert("dashboards".into(), dj);
    let mut recs = vec![sfin];
    if a.with_buys.is_some() {
        let bfin = brec.finish(Instant::now());
        let mut bj = scenario::buy_json(&bfin, window, acks_by_end, &totals);
        bj["connections"] = json!({"wanted": a.buy_connections, "connected": bconnected, "connect_time": btimes.json()});
        results.insert("buys".into(), bj);
        recs.push(bfin);
        let (shown, j) = ack_to_dashboard(&ctx, &a, &totals.oks, &dres).await?;
        results.insert("ack_to_dashboard".into(), j);
        recs.push(shown);
    }
    ctx.pb.set_message("checking");
    let stock_map = HashMap::from([("D1".to_owned(), stock)]);
    let checks = checker
        .run(&Expect {
            oks: &totals.oks,
            timed_out: &totals.timed_out,
            stock: &stock_map,
            expect_sold: None,
            limit_per_user: None,
            final_check: true,
            others_buy: a.buys_elsewhere,
        })
        .await;
    sampler.store(true, Ordering::Relaxed);
    let params = json!({"count": a.count, "duration_s": a.duration.as_secs_f64(), "with_buys": a.with_buys, "buys_elsewhere": a.buys_elsewhere, "buy_connections": a.with_buys.map(|_| a.buy_connections), "dashboard_url": a.dashboard_url, "sources": ctx.common.sources});
    Ok(scenario::finish(
        &ctx,
        "dashboards",
        params,
        results,
        checks,
        recs,
        &target,
    ))
}

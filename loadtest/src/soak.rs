//! `soak`: buyers (open loop) and dashboards together for a long time, with the invariant
//! checks every `--check-every` while the load runs (and strictly at the end), and the
//! server's resident memory at each check.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{json, Map};

use crate::buyer::{connect_many, Mode, OkAck, Plan};
use crate::cli::SoakArgs;
use crate::ctx::Ctx;
use crate::dash::run_dashboard;
use crate::dashboards::{dash_json, dashboard_path};
use crate::invariants::{all_ok, Check, Checker, Expect};
use crate::record::{Recorder, Simple};
use crate::scenario;

pub async fn soak(ctx: Arc<Ctx>, a: SoakArgs) -> anyhow::Result<i32> {
    anyhow::ensure!(
        a.buyers > 0 && a.skus > 0,
        "--buyers and --skus must be at least 1"
    );
    let rate = a.rate.unwrap_or(a.buyers as f64);
    anyhow::ensure!(rate > 0.0, "--rate must be positive");
    let skus: Vec<String> = (1..=a.skus).map(|i| format!("K{i}")).collect();
    scenario::setup_room(&ctx, &format!("load test soak {}", ctx.run_id)).await?;
    for s in &skus {
        scenario::setup_sku(&ctx, s, 9900, a.stock, None, None).await?;
    }
    let stock: HashMap<String, u64> = skus.iter().map(|s| (s.clone(), a.stock)).collect();
    let mut checker = Checker::new(ctx.rest.clone(), &ctx.room).await?;
    let sampler = ctx.spawn_sampler(Duration::from_secs(1));
    let target = ctx.target.clone();
    let btimes = Arc::new(Simple::new());
    let dtimes = Arc::new(Simple::new());
    let bconns = connect_many(
        &ctx,
        &target,
        a.buyers,
        scenario::buyer_path(&ctx, false, "k")?,
        true,
        &btimes,
    )
    .await;
    let bconnected = bconns.len();
    let dconns = if a.dashboards > 0 {
        connect_many(
            &ctx,
            &target,
            a.dashboards,
            dashboard_path(&ctx)?,
            false,
            &dtimes,
        )
        .await
    } else {
        Vec::new()
    };
    let dconnected = dconns.len();
    let brec = Recorder::new("buys", ctx.started, Duration::from_secs(1));
    let srec = Recorder::new("snapshots", ctx.started, Duration::from_secs(1));
    ctx.add_recorder(&brec);
    ctx.add_recorder(&srec);
    let t0 = scenario::soon();
    let end = ctx.clamp(
        t0 + a.duration,
        ctx.common.ack_timeout + Duration::from_secs(40),
    );
    let sink: Arc<Mutex<Vec<OkAck>>> = Arc::new(Mutex::new(Vec::new()));
    let plan = Arc::new(Plan {
        t0,
        end,
        drain_until: ctx.clamp(end + ctx.common.ack_timeout, Duration::from_secs(30)),
        mode: Mode::Open {
            interval: Duration::from_secs_f64(bconnected.max(1) as f64 / rate),
            conns: bconnected.max(1),
        },
        skus: skus.clone(),
        prices: Some(scenario::prices(&skus, 9900)),
        qty: 1,
        req_prefix: format!("{}k", ctx.run_id),
        sink: Some(sink.clone()),
        dup_every: a.dup_every,
        arrival: None,
    });
    let buys = {
        let (ctx, brec, plan) = (ctx.clone(), brec.clone(), plan.clone());
        tokio::spawn(async move { scenario::run_buys(&ctx, bconns, plan, &brec).await })
    };
    let mut dset = tokio::task::JoinSet::new();
    for c in dconns {
        dset.spawn(run_dashboard(ctx.clone(), c, t0, end, end, srec.clone()));
    }
    ctx.pb.set_length(a.duration.as_secs().max(1));
    ctx.pb.set_position(0);

    // Checks while the load runs.
    let mut oks: Vec<OkAck> = Vec::new();
    let no_timeouts = Default::default();
    let mut rounds = Vec::new();
    let mut failed_checks: Vec<Check> = Vec::new();
    let mut next = t0 + a.check_every;
    while next < end {
        while Instant::now() < next {
            tokio::time::sleep(
                Duration::from_secs(1).min(next.saturating_duration_since(Instant::now())),
            )
            .await;
            ctx.pb.set_position(t0.elapsed().as_secs());
        }
        oks.append(&mut sink.lock().unwrap());
        let checks = checker
            .run(&Expect {
                oks: &oks,
                timed_out: &no_timeouts,
                stock: &stock,
                expect_sold: None,
                limit_per_user: None,
                final_check: false,
                others_buy: false,
            })
            .await;
        let m = ctx.rest.metrics().await.unwrap_or_default();
        rounds.push(json!({
            "t_s": (t0.elapsed().as_secs_f64() * 10.0).round() / 10.0,
            "ok": all_ok(&checks),
            "acked_orders": oks.len(),
            "exported_orders": checker.exported(),
            "rss_mb": m.rss_bytes.map(|b| (b / 1048576.0 * 10.0).round() / 10.0),
            "failed": checks.iter().filter(|c| !c.ok).map(|c| format!("{}: {}", c.name, c.detail)).collect::<Vec<_>>(),
        }));
        for c in checks.into_iter().filter(|c| !c.ok) {
            let mut c = c;
            c.name = format!("during_run_{}", c.name);
            failed_checks.push(c);
        }
        next += a.check_every;
    }
    let (totals, acks_by_end) = buys.await.unwrap_or_default();
    let mut dres = Vec::new();
    while let Some(r) = dset.join_next().await {
        if let Ok(r) = r {
            dres.push(r);
        }
    }
    oks.append(&mut sink.lock().unwrap());
    ctx.pb.set_message("final checks");
    let mut checks = checker
        .run(&Expect {
            oks: &oks,
            timed_out: &totals.timed_out,
            stock: &stock,
            expect_sold: None,
            limit_per_user: None,
            final_check: true,
            others_buy: false,
        })
        .await;
    let m = ctx.rest.metrics().await.unwrap_or_default();
    checks.push(Check::new(
        "checks_during_run",
        failed_checks.is_empty(),
        format!(
            "{} rounds, {} failed checks",
            rounds.len(),
            failed_checks.len()
        ),
    ));
    checks.extend(failed_checks);
    sampler.store(true, Ordering::Relaxed);
    let window = end.saturating_duration_since(t0);
    let bfin = brec.finish(Instant::now());
    let sfin = srec.finish(Instant::now());
    let mut results = Map::new();
    results.insert("connections".into(), json!({
        "buyers": scenario::connections_json(&ctx, a.buyers, bconnected, &btimes),
        "dashboards": {"wanted": a.dashboards, "connected": dconnected, "connect_time": dtimes.json()},
    }));
    let bj = scenario::buy_json(&bfin, window, acks_by_end, &totals);
    results.insert("buys".into(), bj);
    let mut dj = dash_json(&dres, window);
    dj["delay_ts_to_receipt"] = sfin.latency_json();
    results.insert("dashboards".into(), dj);
    results.insert(
        "server_rss_mb_at_end".into(),
        json!(m.rss_bytes.map(|b| (b / 1048576.0 * 10.0).round() / 10.0)),
    );
    results.insert("check_rounds".into(), json!(rounds));
    let params = json!({"duration_s": a.duration.as_secs_f64(), "buyers": a.buyers, "dashboards": a.dashboards, "rate": rate, "skus": a.skus, "stock": a.stock, "check_every_s": a.check_every.as_secs_f64(), "dup_every": a.dup_every, "sources": ctx.common.sources});
    Ok(scenario::finish(
        &ctx,
        "soak",
        params,
        results,
        checks,
        vec![bfin, sfin],
        &target,
    ))
}

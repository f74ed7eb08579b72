//! `expiry-wave`: what a wave of expiring orders costs the buys that go on meanwhile. K unpaid
//! orders are placed as fast as the server takes them on a SKU with a short pay timeout, so
//! that they expire together; meanwhile an open-loop buy load runs on another SKU of the same
//! room, in two measured phases: quiet (before the first deadline) and the wave (from just
//! before the first deadline to a second after the last). The figure is the wave's buy p99
//! over the quiet one's, from the same run. Then the wave is checked: every order expired,
//! each within a second of its `pay_by_ms`, and the SKU's stock is whole again.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{json, Map, Value};

use crate::cli::ExpiryWaveArgs;
use crate::ctx::Ctx;
use crate::invariants::Check;
use crate::record::Recorder;
use crate::scenario;
use crate::steady::{mode_of, run_load, LoadSpec};

/// The wave phase lasts from this long before the first deadline...
const BEFORE_WAVE: Duration = Duration::from_millis(300);
/// ...to this long after the last (expiries are due within a second).
const AFTER_WAVE: Duration = Duration::from_millis(1500);
/// The quiet phase ends this long before the wave phase begins.
const GAP: Duration = Duration::from_millis(500);

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// The instant of a wall-clock time in ms (now, if it has passed).
fn at_wall(ms: i64) -> Instant {
    Instant::now() + Duration::from_millis((ms - now_ms()).max(0) as u64)
}

pub async fn expiry_wave(ctx: Arc<Ctx>, a: ExpiryWaveArgs) -> anyhow::Result<i32> {
    anyhow::ensure!(
        a.orders > 0 && a.connections > 0 && a.buy_connections > 0,
        "--orders, --connections and --buy-connections must be at least 1"
    );
    scenario::setup_room(&ctx, &format!("load test expiry wave {}", ctx.run_id)).await?;
    scenario::setup_paid_sku_opening(
        &ctx,
        &a.wave_sku,
        a.price_fen,
        a.orders as u64,
        None,
        a.pay_timeout_s,
        None,
    )
    .await?;
    scenario::setup_sku(&ctx, &a.buy_sku, a.price_fen, 1_000_000_000, None, None).await?;
    let target = ctx.target.clone();

    // 1. The orders of the wave, as fast as they are taken.
    let buys = Recorder::new("placing", ctx.started, Duration::from_millis(100));
    ctx.add_recorder(&buys);
    let t_place = Instant::now();
    let end = t_place + Duration::from_secs(a.pay_timeout_s) / 2;
    let all = crate::payments::place_all(
        &ctx,
        &target,
        a.buy_connections,
        a.orders,
        a.in_flight,
        &a.wave_sku,
        "w",
        &buys,
        end,
    )
    .await?;
    let (placed, place_s) = (all.placed, all.secs);
    let bf = buys.finish(Instant::now());
    let deadlines: Vec<i64> = placed.iter().filter_map(|p| p.pay_by_ms).collect();
    let (first, last) = (
        deadlines.iter().copied().min().unwrap_or(0),
        deadlines.iter().copied().max().unwrap_or(0),
    );
    anyhow::ensure!(!deadlines.is_empty(), "no unpaid order was placed");

    // 2. Buys on the other SKU: quiet, then through the wave.
    let mode = mode_of(Some(a.rate), None, a.connections)?;
    let wave_start = at_wall(first) - BEFORE_WAVE;
    let quiet_end = wave_start - GAP;
    // Connecting takes its own time before each phase's clock starts.
    let connect_allowance = Duration::from_millis(400);
    let quiet_for = quiet_end
        .saturating_duration_since(Instant::now())
        .saturating_sub(connect_allowance);
    anyhow::ensure!(
        quiet_for >= Duration::from_secs(1),
        "placing took too long for a quiet phase before the wave ({place_s:.1} s); raise --pay-timeout-s"
    );
    let spec = |name, duration| LoadSpec {
        name,
        connections: a.connections,
        duration,
        mode,
        skus: vec![a.buy_sku.clone()],
        prices: None,
        qty: 1,
        echo: false,
        user_prefix: "b",
        req_tag: if name == "quiet" { "q" } else { "v" },
        dup_every: 0,
        split: None,
        cpu: None,
    };
    let quiet = run_load(&ctx, &target, spec("quiet", quiet_for)).await?;
    tokio::time::sleep_until(
        wave_start
            .checked_sub(connect_allowance)
            .unwrap_or(wave_start)
            .into(),
    )
    .await;
    let wave_for = at_wall(last) + AFTER_WAVE - Instant::now().min(wave_start);
    let wave = run_load(&ctx, &target, spec("wave", wave_for)).await?;

    // 3. Every order of the wave expired, in time, and its unit is back.
    ctx.pb.set_message("checking the wave");
    let wait_until = Instant::now() + Duration::from_secs(10);
    let mut audit = ctx.rest.audit(&ctx.room).await?;
    let unpaid = |v: &Value| {
        v["skus"]
            .as_array()
            .and_then(|s| s.iter().find(|s| s["sku"] == a.wave_sku.as_str()))
            .map(|s| (s["unpaid"].as_u64(), s["left"].as_u64()))
    };
    while unpaid(&audit).is_none_or(|(u, _)| u != Some(0)) && Instant::now() < wait_until {
        tokio::time::sleep(Duration::from_millis(100)).await;
        audit = ctx.rest.audit(&ctx.room).await?;
    }
    let export = ctx.rest.export_paid(&ctx.room).await?;
    let ours: HashSet<&str> = placed.iter().map(|p| p.order.as_str()).collect();
    let mut expired = 0usize;
    let mut lags = Vec::new();
    for o in export.iter().filter(|o| ours.contains(o.order.as_str())) {
        if o.status == "expired" {
            expired += 1;
            if let (Some(by), Some(end)) = (o.pay_by_ms, o.ended_at_ms) {
                lags.push(end - by);
            }
        }
    }
    lags.sort_unstable();
    let max_lag = lags.last().copied();
    let early = lags.iter().filter(|&&l| l < 0).count();
    let (left_after, unpaid_after) = match unpaid(&audit) {
        Some((u, l)) => (l, u),
        None => (None, None),
    };
    let checks = vec![
        Check::new(
            "every_order_placed",
            placed.len() == a.orders,
            format!("{} of {}", placed.len(), a.orders),
        ),
        Check::new(
            "every_order_expired",
            expired == placed.len(),
            format!("{expired} of {} expired", placed.len()),
        ),
        Check::new(
            "expired_within_1s_of_pay_by",
            early == 0 && max_lag.is_some_and(|l| l <= 1000),
            format!("latest {max_lag:?} ms after pay_by_ms, {early} before it"),
        ),
        Check::new(
            "stock_whole_again",
            left_after == Some(a.orders as u64) && unpaid_after == Some(0),
            format!("left {left_after:?}, unpaid {unpaid_after:?}"),
        ),
        Check::new(
            "audit_consistent",
            audit["consistent"] == true,
            audit["consistent"].to_string(),
        ),
    ];
    let p99 = |r: &crate::steady::LoadRun| r.finished.p(0.99);
    let ratio = (p99(&quiet) > 0.0).then(|| ((p99(&wave) / p99(&quiet)) * 100.0).round() / 100.0);
    let mut results = Map::new();
    results.insert(
        "placing".into(),
        json!({
            "placed": placed.len(),
            "orders_per_s": ((placed.len() as f64 / place_s.max(1e-9)) * 10.0).round() / 10.0,
            "deadline_spread_ms": last - first,
        }),
    );
    results.insert("quiet".into(), quiet.json(&ctx, a.connections));
    results.insert("wave".into(), wave.json(&ctx, a.connections));
    results.insert(
        "expiry".into(),
        json!({
            "expired": expired,
            "lag_ms_p50": lags.get(lags.len() / 2),
            "lag_ms_max": max_lag,
            "buy_p99_wave_over_quiet": ratio,
            "floor": "at most 2",
            "meets_floor": ratio.is_some_and(|r| r <= 2.0),
        }),
    );
    let params = json!({
        "orders": a.orders, "pay_timeout_s": a.pay_timeout_s, "rate": a.rate,
        "connections": a.connections, "buy_connections": a.buy_connections, "in_flight": a.in_flight,
    });
    Ok(scenario::finish(
        &ctx,
        "expiry-wave",
        params,
        results,
        checks,
        vec![bf, quiet.finished, wave.finished],
        &target,
    ))
}

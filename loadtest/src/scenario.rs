//! What the scenarios share: setting up the room and SKUs, running a buy load on a set of
//! connections, and turning results into the summary, the report and the exit code.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use serde_json::{json, Map, Value};

use crate::buyer::{self, Conn, ConnResult, OkAck, Plan};
use crate::ctx::Ctx;
use crate::invariants::{all_ok, Check};
use crate::net::Target;
use crate::record::{Finished, Recorder, Simple};

/// `opens_at_ms` of a SKU that waits for an explicit open (2100-01-01).
pub const FAR_FUTURE_MS: i64 = 4_102_444_800_000;

pub async fn setup_room(ctx: &Ctx, title: &str) -> anyhow::Result<()> {
    ctx.rest
        .put_room(&ctx.room, title)
        .await
        .context("creating the room (admin REST)")?;
    Ok(())
}

/// Creates a SKU; fails when it already existed with sales (the checks need a fresh SKU).
pub async fn setup_sku(
    ctx: &Ctx,
    sku: &str,
    price_fen: u64,
    stock: u64,
    limit: Option<u64>,
    opens_at_ms: Option<i64>,
) -> anyhow::Result<Value> {
    put_fresh_sku(ctx, sku, price_fen, stock, limit, opens_at_ms, None).await
}

/// Puts a SKU with `pay_timeout_s` when given, and fails when it already had sales.
async fn put_fresh_sku(
    ctx: &Ctx,
    sku: &str,
    price_fen: u64,
    stock: u64,
    limit: Option<u64>,
    opens_at_ms: Option<i64>,
    pay_timeout_s: Option<u64>,
) -> anyhow::Result<Value> {
    crate::ids::check("sku", sku)?;
    let mut body = json!({
        "name": format!("load test {sku}"),
        "price_fen": price_fen,
        "stock": stock,
        "limit_per_user": limit,
        "opens_at_ms": opens_at_ms,
        "closes_at_ms": null,
    });
    if let Some(t) = pay_timeout_s {
        body["pay_timeout_s"] = json!(t);
    }
    let v = ctx
        .rest
        .put_sku(&ctx.room, sku, body)
        .await
        .context("creating the SKU (admin REST)")?;
    let (total, sold) = (v["stock_total"].as_u64(), v["sold"].as_u64());
    if total != Some(stock) || sold != Some(0) {
        bail!(
            "SKU {sku} in room {} already exists (stock_total {:?}, sold {:?}); use a fresh --room",
            ctx.room,
            total,
            sold
        );
    }
    Ok(v)
}

/// Creates a SKU whose orders must be paid within `pay_timeout_s` (protocol v2), scheduled far
/// in the future (the run opens it); fails when the SKU already had sales, or when the server
/// does not know `pay_timeout_s`.
pub async fn setup_paid_sku(
    ctx: &Ctx,
    sku: &str,
    price_fen: u64,
    stock: u64,
    limit: Option<u64>,
    pay_timeout_s: u64,
) -> anyhow::Result<Value> {
    setup_paid_sku_opening(
        ctx,
        sku,
        price_fen,
        stock,
        limit,
        pay_timeout_s,
        Some(FAR_FUTURE_MS),
    )
    .await
}

/// [`setup_paid_sku`] with its opening time (`None`: open at once).
pub async fn setup_paid_sku_opening(
    ctx: &Ctx,
    sku: &str,
    price_fen: u64,
    stock: u64,
    limit: Option<u64>,
    pay_timeout_s: u64,
    opens_at_ms: Option<i64>,
) -> anyhow::Result<Value> {
    let v = put_fresh_sku(
        ctx,
        sku,
        price_fen,
        stock,
        limit,
        opens_at_ms,
        Some(pay_timeout_s),
    )
    .await?;
    if v["pay_timeout_s"].as_u64() != Some(pay_timeout_s) {
        bail!(
            "the server answered the SKU with pay_timeout_s {}, not {pay_timeout_s}: does it support orders that must be paid (protocol v2)?",
            v["pay_timeout_s"]
        );
    }
    Ok(v)
}

/// The path buyer `i` connects with: user `{prefix}{i}`.
pub fn buyer_path<'a>(
    ctx: &'a Ctx,
    echo: bool,
    prefix: &'static str,
) -> anyhow::Result<impl Fn(usize) -> (Arc<str>, String) + 'a> {
    buyer_path_users(ctx, echo, prefix, usize::MAX)
}

/// The path buyer `i` connects with, for `users` distinct users: user `{prefix}{i % users}`.
pub fn buyer_path_users<'a>(
    ctx: &'a Ctx,
    echo: bool,
    prefix: &'static str,
    users: usize,
) -> anyhow::Result<impl Fn(usize) -> (Arc<str>, String) + 'a> {
    let auth = if echo { None } else { Some(ctx.buyer_auth()?) };
    Ok(move |i: usize| {
        let user = format!("{prefix}{}", i % users.max(1));
        let p = match auth {
            Some(a) => a.buy_path(&ctx.room, &user),
            None => format!("/ws/buy?room=echo&user={user}"),
        };
        (Arc::from(user), p)
    })
}

/// Every connection's results together.
#[derive(Default)]
pub struct Totals {
    pub oks: Vec<OkAck>,
    pub timed_out: HashSet<(String, String)>,
    pub sent: u64,
}

impl Totals {
    pub fn add(&mut self, r: ConnResult) {
        self.oks.extend(r.oks);
        self.sent += r.sent;
        self.timed_out
            .extend(r.timed_out.into_iter().map(|(u, r)| (u.to_string(), r)));
    }
}

/// A buy load over `conns`; returns the totals and the acks counted by `plan.end`.
pub async fn run_buys(
    ctx: &Arc<Ctx>,
    conns: Vec<Conn>,
    plan: Arc<Plan>,
    rec: &Arc<Recorder>,
) -> (Totals, u64) {
    let mut set = tokio::task::JoinSet::new();
    for c in conns {
        set.spawn(buyer::run_load(ctx.clone(), c, plan.clone(), rec.clone()));
    }
    let at_end = {
        let rec = rec.clone();
        let end = plan.end;
        tokio::spawn(async move {
            tokio::time::sleep_until(end.into()).await;
            rec.count.load(Ordering::Relaxed)
        })
    };
    let mut totals = Totals::default();
    while let Some(r) = set.join_next().await {
        if let Ok(r) = r {
            totals.add(r);
        }
    }
    let acks_by_end = at_end.await.unwrap_or(0);
    (totals, acks_by_end)
}

/// Figures of a finished buy load for the summary.
pub fn buy_json(f: &Finished, window: Duration, acks_by_end: u64, totals: &Totals) -> Value {
    let w = window.as_secs_f64().max(1e-9);
    json!({
        "sent": totals.sent,
        "acks": f.count,
        "ok": f.ok,
        "rejected": f.rejected,
        "timed_out": totals.timed_out.len(),
        "acks_per_s": (acks_by_end as f64 / w * 10.0).round() / 10.0,
        "ok_per_s": ((f.ok.min(acks_by_end)) as f64 / w * 10.0).round() / 10.0,
        "latency": f.latency_json(),
        "rejections": f.reasons,
    })
}

pub fn connections_json(ctx: &Ctx, wanted: usize, connected: usize, times: &Simple) -> Value {
    json!({
        "wanted": wanted,
        "connected": connected,
        "failed": ctx.conn_failed.load(Ordering::Relaxed),
        "errors": ctx.conn_errors_json(),
        "connect_time": times.json(),
        "ulimit_n": ctx.nofile,
    })
}

/// Builds the summary (with the checks every scenario shares), prints it, writes the report,
/// and returns the exit code: 0 when every check passed, 1 otherwise.
pub fn finish(
    ctx: &Arc<Ctx>,
    scenario: &str,
    params: Value,
    results: Map<String, Value>,
    mut checks: Vec<Check>,
    recs: Vec<Finished>,
    target: &Target,
) -> i32 {
    let failed = ctx.conn_failed.load(Ordering::Relaxed);
    let errors = ctx.conn_errors.lock().unwrap().clone();
    checks.push(Check::new(
        "all_connections_established",
        failed == 0,
        if failed == 0 {
            "every connection came up".to_owned()
        } else {
            format!(
                "{failed} failed: {}",
                errors
                    .iter()
                    .map(|(k, v)| format!("{v}× {k}"))
                    .collect::<Vec<_>>()
                    .join("; ")
            )
        },
    ));
    let disc = ctx.disconnects.lock().unwrap().clone();
    checks.push(Check::new(
        "no_unexpected_disconnects",
        disc.is_empty(),
        if disc.is_empty() {
            "no connection dropped while in use".to_owned()
        } else {
            disc.iter()
                .map(|(k, v)| format!("{v}× {k}"))
                .collect::<Vec<_>>()
                .join("; ")
        },
    ));
    let (n, first) = ctx.anomalies();
    checks.push(Check::new(
        "server_frames_as_expected",
        n == 0,
        if n == 0 {
            "every frame matched the protocol and its request".to_owned()
        } else {
            format!("{n} unexpected frames, e.g. {}", first.join(" | "))
        },
    ));
    let cut = ctx.cut_short.load(Ordering::Relaxed);
    checks.push(Check::new(
        "within_max_seconds",
        !cut,
        if cut {
            "a phase was cut short by --max-seconds".to_owned()
        } else {
            format!("done in {:.1} s", ctx.secs())
        },
    ));
    let ok = all_ok(&checks);
    let mut s = Map::new();
    s.insert("scenario".into(), json!(scenario));
    s.insert("ok".into(), json!(ok));
    s.insert("room".into(), json!(ctx.room));
    s.insert("url".into(), json!(target.http_base));
    s.insert("params".into(), params);
    for (k, v) in results {
        s.insert(k, v);
    }
    s.insert(
        "elapsed_s".into(),
        json!((ctx.secs() * 10.0).round() / 10.0),
    );
    ctx.hiccups.stop();
    s.insert("machine".into(), json!({"hiccups": ctx.hiccups.json()}));
    s.insert("checks".into(), json!(checks));
    let problems: Vec<String> = checks
        .iter()
        .filter(|c| !c.ok)
        .map(|c| format!("{}: {}", c.name, c.detail))
        .collect();
    s.insert("problems".into(), json!(problems));
    let summary = Value::Object(s);
    ctx.pb.finish_and_clear();
    let table = crate::output::table(&summary);
    crate::output::print(&summary, ctx.common.json);
    if let Some(path) = &ctx.common.report {
        let mut conns = ctx.conn_timeline.lock().unwrap().clone();
        // The chart's line runs to the end of the run.
        conns.push((ctx.secs(), ctx.conns.load(Ordering::Relaxed)));
        let stalls = ctx.hiccups.stalls();
        match crate::report::write(path, &summary, &table, &recs, &conns, &stalls) {
            Ok(()) => eprintln!("report written to {}", path.display()),
            Err(e) => {
                eprintln!("error: {e:#}");
                return 2;
            }
        }
    }
    let limited: u64 = recs
        .iter()
        .filter_map(|r| r.reasons.get("rate_limited"))
        .sum();
    if limited > 0 {
        eprintln!(
            "note: the server answered {limited} buys with rate_limited (its per-connection limit, default 200 frames/s, \
             burst 400): start it with --buyer-rate 1000000 --buyer-burst 1000000, or spread the load over more connections"
        );
    }
    if !ok {
        for p in &problems {
            eprintln!("FAILED {p}");
        }
    }
    i32::from(!ok)
}

/// Prices of the SKUs of a run, for checking acks' amounts.
pub fn prices(skus: &[String], price: u64) -> HashMap<String, u64> {
    skus.iter().map(|s| (s.clone(), price)).collect()
}

/// Now plus a short lead time for every connection's loop to be waiting.
pub fn soon() -> Instant {
    Instant::now() + Duration::from_millis(200)
}

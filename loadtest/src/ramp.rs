//! `ramp`: buyer connections grow to N at R a second, then hold. Reads the server's
//! `livehub_process_resident_memory_bytes` before, at the top, at the end of the hold and after
//! closing, for the server's memory per connection. While holding, every connection pings
//! (`{"op":"ping"}`) now and then: the pong time shows whether N idle sockets slow the server.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Map};
use tokio::sync::{watch, Semaphore};
use tokio_tungstenite::tungstenite::Message;

use crate::buyer::{close, Frame};
use crate::cli::RampArgs;
use crate::ctx::{Ctx, CONNECT_TIMEOUT};
use crate::invariants::{Checker, Expect};
use crate::net::{connect_ws, Target};
use crate::peer::Peer;
use crate::record::{Outcome, Recorder, Simple};
use crate::rest::Metrics;
use crate::scenario;

fn mb(b: Option<f64>) -> Option<f64> {
    b.map(|b| (b / 1048576.0 * 10.0).round() / 10.0)
}

#[allow(clippy::too_many_arguments)]
async fn hold_conn(
    ctx: Arc<Ctx>,
    target: Target,
    idx: usize,
    path: String,
    times: Arc<Simple>,
    mut stop: watch::Receiver<bool>,
    mut pinging: watch::Receiver<bool>,
    every: Duration,
    rec: Arc<Recorder>,
    mut guard: PermitUntilOpen,
) {
    let t = Instant::now();
    let mut ws = match connect_ws(&target, ctx.source(idx), &path, CONNECT_TIMEOUT).await {
        Ok(ws) => ws,
        Err(reason) => {
            ctx.conn_error(&reason);
            return;
        }
    };
    // The hello.
    let hello = tokio::time::timeout(CONNECT_TIMEOUT, async {
        while let Some(Ok(m)) = ws.next().await {
            if let Message::Text(t) = m {
                if serde_json::from_str::<Frame>(&t).is_ok_and(|f| f.op == "hello") {
                    return true;
                }
            }
        }
        false
    })
    .await;
    if hello != Ok(true) {
        ctx.conn_error("no hello");
        return;
    }
    times.record(t.elapsed().as_micros() as u64);
    ctx.conn_opened();
    ctx.pb.inc(1);
    guard.release();
    // Spread the pings over the interval.
    let phase = every.mul_f64((idx % 997) as f64 / 997.0);
    let mut next_ping: Option<Instant> = None;
    let mut ping_sent: Option<Instant> = None;
    let far = Instant::now() + Duration::from_secs(86_400 * 365);
    let mut ping_on = false;
    loop {
        if !ping_on && *pinging.borrow() {
            ping_on = true;
            if !every.is_zero() {
                next_ping = Some(Instant::now() + phase);
            }
        }
        tokio::select! {
            msg = ws.next() => match msg {
                Some(Ok(Message::Text(t))) => {
                    if let Ok(f) = serde_json::from_str::<Frame>(&t) {
                        if f.op == "pong" {
                            if let Some(s) = ping_sent.take() {
                                let at = Instant::now();
                                rec.record(at, at.duration_since(s).as_micros() as u64, Outcome::Event);
                            }
                        }
                    }
                }
                Some(Ok(Message::Close(c))) => {
                    ctx.disconnect(&format!("server closed: {}", c.map(|c| format!("{} {}", u16::from(c.code), c.reason)).unwrap_or_default()));
                    ctx.conn_closed();
                    return;
                }
                Some(Ok(_)) => {}
                Some(Err(e)) => {
                    ctx.disconnect(&format!("broken: {e}"));
                    ctx.conn_closed();
                    return;
                }
                None => {
                    ctx.disconnect("closed without a close frame");
                    ctx.conn_closed();
                    return;
                }
            },
            _ = tokio::time::sleep_until(next_ping.unwrap_or(far).into()) => {
                next_ping = Some(Instant::now() + every);
                if ping_sent.is_none() {
                    ping_sent = Some(Instant::now());
                    if ws.send(Message::text(r#"{"op":"ping"}"#)).await.is_err() {
                        ctx.disconnect("send failed");
                        ctx.conn_closed();
                        return;
                    }
                }
            }
            r = pinging.changed(), if !ping_on => if r.is_err() { break },
            _ = stop.changed() => break,
        }
    }
    close(&ctx, ws).await;
}

/// What one server's ramp saw.
struct RampRun {
    connected: usize,
    reached_s: f64,
    still: usize,
    times: Arc<Simple>,
    finished: crate::record::Finished,
    /// The server's memory (and livehub's connection gauge) before, at the top, at the end of
    /// the hold, after closing.
    m: [Metrics; 4],
}

/// Ramps `a.connections` sockets up on `target` (socket i at `path(i)`), holds them, closes
/// them; `memory` reads the server's resident memory.
async fn ramp_on<P, M, F>(
    ctx: &Arc<Ctx>,
    a: &RampArgs,
    target: &Target,
    name: &str,
    path: P,
    memory: M,
) -> RampRun
where
    P: Fn(usize) -> String,
    M: Fn() -> F,
    F: std::future::Future<Output = Metrics>,
{
    ctx.warn_fds(a.connections);
    let m0 = memory().await;
    let rec = Recorder::new(name, ctx.started, Duration::from_secs(1));
    ctx.add_recorder(&rec);
    let times = Arc::new(Simple::new());
    let (stop_tx, stop_rx) = watch::channel(false);
    let (ping_tx, ping_rx) = watch::channel(false);
    let sem = Arc::new(Semaphore::new(ctx.common.connect_concurrency.max(1)));
    let attempts_done = Arc::new(AtomicUsize::new(0));
    let mut set = tokio::task::JoinSet::new();
    ctx.pb.set_length(a.connections as u64);
    ctx.pb.set_position(0);
    let t0 = Instant::now();
    let reserve = a.hold + Duration::from_secs(30);
    for i in 0..a.connections {
        let at = t0 + Duration::from_secs_f64(i as f64 / a.per_second);
        if at >= ctx.deadline.checked_sub(reserve).unwrap_or(ctx.deadline) {
            ctx.cut_short.store(true, Ordering::Relaxed);
            break;
        }
        tokio::time::sleep_until(at.into()).await;
        let permit = sem.clone().acquire_owned().await.expect("semaphore");
        let (ctx2, times2, stop2, ping2, rec2, done) = (
            ctx.clone(),
            times.clone(),
            stop_rx.clone(),
            ping_rx.clone(),
            rec.clone(),
            attempts_done.clone(),
        );
        let every = a.ping_every;
        // The permit covers the connect only.
        let guard = PermitUntilOpen {
            permit: Some(permit),
            done,
        };
        set.spawn(hold_conn(
            ctx2,
            target.clone(),
            i,
            path(i),
            times2,
            stop2,
            ping2,
            every,
            rec2,
            guard,
        ));
    }
    let launched = set.len();
    // All attempts finished (connected or failed)?
    while attempts_done.load(Ordering::Relaxed) < launched && !ctx.past_deadline() {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let reached_s = t0.elapsed().as_secs_f64();
    let connected = ctx.conns.load(Ordering::Relaxed).max(0) as usize;
    ctx.pb
        .set_message(format!("{name}: holding {connected} connections"));
    tokio::time::sleep(Duration::from_secs(2)).await;
    let m_top = memory().await;
    let _ = ping_tx.send(true);
    let hold_end = ctx.clamp(Instant::now() + a.hold, Duration::from_secs(20));
    tokio::time::sleep_until(hold_end.into()).await;
    let m_hold = memory().await;
    let still = ctx.conns.load(Ordering::Relaxed).max(0) as usize;
    let _ = stop_tx.send(true);
    while set.join_next().await.is_some() {}
    tokio::time::sleep(Duration::from_secs(1)).await;
    let m_after = memory().await;
    RampRun {
        connected,
        reached_s,
        still,
        times,
        finished: rec.finish(Instant::now()),
        m: [m0, m_top, m_hold, m_after],
    }
}

/// A ramp's figures for the summary.
fn ramp_json(ctx: &Ctx, a: &RampArgs, r: &RampRun) -> Map<String, serde_json::Value> {
    let [m0, m_top, m_hold, m_after] = &r.m;
    let per_conn = |m: &Metrics| match (m.rss_bytes, m0.rss_bytes) {
        (Some(x), Some(y)) if r.connected > 0 => Some(((x - y) / r.connected as f64).round()),
        _ => None,
    };
    let mut out = Map::new();
    out.insert(
        "connections".into(),
        scenario::connections_json(ctx, a.connections, r.connected, &r.times),
    );
    out.insert(
        "ramp".into(),
        json!({
            "reached_s": (r.reached_s * 100.0).round() / 100.0,
            "connections_per_s": ((r.connected as f64 / r.reached_s.max(1e-9)) * 10.0).round() / 10.0,
            "open_at_end_of_hold": r.still,
        }),
    );
    out.insert(
        "server_memory".into(),
        json!({
            "rss_mb_before": mb(m0.rss_bytes),
            "rss_mb_at_top": mb(m_top.rss_bytes),
            "rss_mb_end_of_hold": mb(m_hold.rss_bytes),
            "rss_mb_after_close": mb(m_after.rss_bytes),
            "bytes_per_connection_at_top": per_conn(m_top),
            "bytes_per_connection_end_of_hold": per_conn(m_hold),
        }),
    );
    out.insert("pong".into(), json!({"latency": r.finished.latency_json()}));
    out
}

/// A process's resident memory from `/proc/<pid>/status` (`VmRSS`), as `Metrics`.
async fn process_rss(pid: u32) -> Metrics {
    let rss_bytes = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            let line = s.lines().find(|l| l.starts_with("VmRSS:"))?;
            let kb: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
            Some(kb * 1024.0)
        });
    Metrics {
        rss_bytes,
        ..Metrics::default()
    }
}

pub async fn ramp(ctx: Arc<Ctx>, a: RampArgs) -> anyhow::Result<i32> {
    anyhow::ensure!(
        a.connections > 0 && a.per_second > 0.0,
        "--connections and --per-second must be positive"
    );
    scenario::setup_room(&ctx, &format!("load test ramp {}", ctx.run_id)).await?;
    scenario::setup_sku(&ctx, "R1", 9900, 1000, None, Some(scenario::FAR_FUTURE_MS)).await?;
    let mut checker = Checker::new(ctx.rest.clone(), &ctx.room).await?;
    let sampler = ctx.spawn_sampler(Duration::from_secs(1));
    let auth = ctx.buyer_auth()?.clone();
    let target = ctx.target.clone();
    let r = ramp_on(
        &ctx,
        &a,
        &target,
        "pongs",
        |i| auth.buy_path(&ctx.room, &format!("r{i}")),
        || async { ctx.rest.metrics().await.unwrap_or_default() },
    )
    .await;
    let gauge_delta = match (r.m[1].buyer_connections, r.m[0].buyer_connections) {
        (Some(x), y) => Some(x - y.unwrap_or(0.0)),
        _ => None,
    };
    // livehub's figures stay at the top of the summary, as before peers were added.
    let mut results = ramp_json(&ctx, &a, &r);
    results["ramp"]["server_buyer_gauge_delta_at_top"] = json!(gauge_delta);
    let mut recs = vec![r.finished.clone()];
    for p in Peer::chosen(a.against_echo, a.against_bun) {
        // A process of its own, for its own resident memory.
        let server = p.start(false).await?;
        let before_failed = ctx.conn_failed.load(Ordering::Relaxed);
        let crate::cpu::Probe::Process(pid) = server.cpu else {
            anyhow::bail!("a peer started as a child has a process of its own");
        };
        let e = ramp_on(
            &ctx,
            &a,
            &server.target(),
            &format!("{} pongs", p.name()),
            |i| format!("/ws/buy?room=peer&user=r{i}"),
            || process_rss(pid),
        )
        .await;
        let mut ej = serde_json::Value::Object(ramp_json(&ctx, &a, &e));
        ej["address"] = json!(server.addr.to_string());
        ej["connections"]["failed"] =
            json!(ctx.conn_failed.load(Ordering::Relaxed) - before_failed);
        let ratio = |x: Option<f64>, y: Option<f64>| match (x, y) {
            (Some(x), Some(y)) if y > 0.0 => Some((x / y * 100.0).round() / 100.0),
            _ => None,
        };
        let (lb, pb) = (
            results["server_memory"]["bytes_per_connection_at_top"].as_f64(),
            ej["server_memory"]["bytes_per_connection_at_top"].as_f64(),
        );
        results.insert(p.name().into(), ej);
        results.insert(
            format!("livehub_vs_{}", p.name()),
            json!({
                "bytes_per_connection_ratio": ratio(lb, pb),
                "note": format!("livehub figure / {} figure for the same sockets (VmRSS growth over the server's before)", p.name()),
            }),
        );
        recs.push(e.finished);
    }
    sampler.store(true, Ordering::Relaxed);
    let stock = HashMap::from([("R1".to_owned(), 1000u64)]);
    let mut checks = checker
        .run(&Expect {
            oks: &[],
            timed_out: &Default::default(),
            stock: &stock,
            expect_sold: None,
            limit_per_user: None,
            final_check: true,
            others_buy: false,
        })
        .await;
    if let Some(d) = gauge_delta {
        checks.push(crate::invariants::Check::new(
            "server_connection_gauge",
            d as i64 == r.connected as i64,
            format!(
                "livehub_connections{{kind=\"buyer\"}} rose by {d}, {} connected",
                r.connected
            ),
        ));
    }
    let params = json!({"connections": a.connections, "per_second": a.per_second, "hold_s": a.hold.as_secs_f64(), "ping_every_s": a.ping_every.as_secs_f64(), "sources": ctx.common.sources});
    Ok(scenario::finish(
        &ctx, "ramp", params, results, checks, recs, &target,
    ))
}

/// Holds the connect permit until the attempt is over, then counts the attempt as done.
struct PermitUntilOpen {
    permit: Option<tokio::sync::OwnedSemaphorePermit>,
    done: Arc<AtomicUsize>,
}

impl PermitUntilOpen {
    fn release(&mut self) {
        if self.permit.take().is_some() {
            self.done.fetch_add(1, Ordering::Relaxed);
        }
    }
}

impl Drop for PermitUntilOpen {
    fn drop(&mut self) {
        self.release();
    }
}

//! `steady`: a buy load held for a duration. Open loop (`--rate R`, total buys/s; each
//! connection sends on a fixed schedule and latency counts from the intended send time, so a
//! stalled server is not hidden by the client waiting: coordinated omission corrected) or
//! closed loop (`--in-flight P` buys waiting per connection; latency from the actual send).

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{json, Map, Value};

use crate::buyer::{connect_many, Mode, Plan};
use crate::cli::SteadyArgs;
use crate::cpu::Probe;
use crate::ctx::Ctx;
use crate::invariants::{Checker, Expect};
use crate::net::Target;
use crate::peer::{self, Peer};
use crate::record::{Finished, Recorder, Simple, Split};
use crate::scenario::{self, Totals};

pub struct LoadRun {
    pub totals: Totals,
    pub finished: Finished,
    pub acks_by_end: u64,
    pub window: Duration,
    pub connected: usize,
    pub connect_times: Arc<Simple>,
    /// In the open loop, the answers' latency by their arrival (`buys.latency_arrival`).
    pub arrival: Option<Arc<Simple>>,
    /// The machine's stalls while the load ran (`hiccups`).
    pub hiccups: Value,
    /// The server's CPU seconds (user + system) from the load's start to its end, when known.
    pub server_cpu_s: Option<f64>,
}

impl LoadRun {
    pub fn json(&self, ctx: &Ctx, wanted: usize) -> Value {
        let mut buys =
            scenario::buy_json(&self.finished, self.window, self.acks_by_end, &self.totals);
        if let Some(b) = buys.as_object_mut() {
            if let Some(a) = &self.arrival {
                b.insert("latency_arrival".into(), a.json());
            }
            b.insert("server_cpu_us_per_ack".into(), json!(self.cpu_us_per_ack()));
        }
        json!({
            "connections": scenario::connections_json(ctx, wanted, self.connected, &self.connect_times),
            "window_s": (self.window.as_secs_f64() * 100.0).round() / 100.0,
            "buys": buys,
            "hiccups": self.hiccups,
        })
    }

    pub fn acks_per_s(&self) -> f64 {
        self.acks_by_end as f64 / self.window.as_secs_f64().max(1e-9)
    }

    /// The server's CPU per ack answered in the window, in µs.
    pub fn cpu_us_per_ack(&self) -> Option<f64> {
        crate::cpu::us_per_ack(Some(0.0), self.server_cpu_s, self.acks_by_end)
    }
}

pub struct LoadSpec<'a> {
    pub name: &'a str,
    pub connections: usize,
    pub duration: Duration,
    pub mode: Mode,
    pub skus: Vec<String>,
    pub prices: Option<HashMap<String, u64>>,
    pub qty: u64,
    pub echo: bool,
    pub user_prefix: &'static str,
    pub req_tag: &'static str,
    pub dup_every: u64,
    /// Also file each latency under the alternating window its buy was sent in.
    pub split: Option<Split>,
    /// Where the server's CPU time is read (none: not reported).
    pub cpu: Option<Probe>,
}

/// Connects, runs the load, closes; the recorder goes into the context (progress, report).
pub async fn run_load(ctx: &Arc<Ctx>, target: &Target, s: LoadSpec<'_>) -> anyhow::Result<LoadRun> {
    let times = Arc::new(Simple::new());
    ctx.pb
        .set_message(format!("{}: connecting {}", s.name, s.connections));
    let conns = connect_many(
        ctx,
        target,
        s.connections,
        scenario::buyer_path(ctx, s.echo, s.user_prefix)?,
        true,
        &times,
    )
    .await;
    let connected = conns.len();
    let rec = Recorder::new(s.name, ctx.started, Duration::from_secs(1));
    ctx.add_recorder(&rec);
    if let Some(split) = s.split {
        rec.split(split);
    }
    let t0 = scenario::soon();
    let reserve = ctx.common.ack_timeout + Duration::from_secs(20);
    let end = ctx.clamp(t0 + s.duration, reserve);
    let drain_until = ctx.clamp(end + ctx.common.ack_timeout, Duration::from_secs(15));
    // The open loop's figure is a latency at a rate; by arrival it is also told apart from
    // this tool's own queue on a machine it shares with the server.
    let arrival = matches!(s.mode, Mode::Open { .. }).then(|| Arc::new(Simple::new()));
    let plan = Arc::new(Plan {
        t0,
        end,
        drain_until,
        mode: s.mode,
        skus: s.skus,
        prices: s.prices,
        qty: s.qty,
        req_prefix: format!("{}{}", ctx.run_id, s.req_tag),
        sink: None,
        dup_every: s.dup_every,
        arrival: arrival.clone(),
    });
    ctx.pb.set_length(s.duration.as_secs().max(1));
    ctx.pb.set_position(0);
    let pb = ctx.pb.clone();
    let ticker = tokio::spawn(async move {
        loop {
            tokio::time::sleep(Duration::from_secs(1)).await;
            pb.set_position(t0.elapsed().as_secs());
        }
    });
    // The server's CPU time at the load's start and end: the same window as the ack rate's.
    let cpu = s.cpu.map(|probe| {
        tokio::spawn(async move {
            tokio::time::sleep_until(t0.into()).await;
            let before = probe.seconds();
            tokio::time::sleep_until(end.into()).await;
            probe.seconds().zip(before).map(|(a, b)| a - b)
        })
    });
    ctx.hiccups.phase();
    let (totals, acks_by_end) = scenario::run_buys(ctx, conns, plan, &rec).await;
    let hiccups = ctx.hiccups.phase();
    ticker.abort();
    let server_cpu_s = match cpu {
        Some(task) => task.await.ok().flatten(),
        None => None,
    };
    Ok(LoadRun {
        totals,
        finished: rec.finish(Instant::now()),
        acks_by_end,
        window: end.saturating_duration_since(t0),
        connected,
        connect_times: times,
        arrival,
        hiccups,
        server_cpu_s,
    })
}

pub fn mode_of(
    rate: Option<f64>,
    in_flight: Option<usize>,
    connections: usize,
) -> anyhow::Result<Mode> {
    match (rate, in_flight) {
        (Some(r), None) => {
            anyhow::ensure!(r > 0.0 && r.is_finite(), "--rate must be positive");
            let per_conn = r / connections.max(1) as f64;
            Ok(Mode::Open {
                interval: Duration::from_secs_f64(1.0 / per_conn),
                conns: connections,
            })
        }
        (None, Some(p)) => {
            anyhow::ensure!(p > 0, "--in-flight must be at least 1");
            Ok(Mode::Closed { in_flight: p })
        }
        _ => anyhow::bail!("give exactly one of --rate (open loop) or --in-flight (closed loop)"),
    }
}

pub async fn steady(ctx: Arc<Ctx>, a: SteadyArgs) -> anyhow::Result<i32> {
    anyhow::ensure!(
        a.connections > 0 && a.skus > 0 && a.qty > 0,
        "--connections, --skus and --qty must be at least 1"
    );
    let mode = mode_of(a.rate, a.in_flight, a.connections)?;
    let skus: Vec<String> = (1..=a.skus).map(|i| format!("S{i}")).collect();
    let target = ctx.target.clone();
    let mut checker = None;
    if !a.echo_target {
        scenario::setup_room(&ctx, &format!("load test steady {}", ctx.run_id)).await?;
        for s in &skus {
            scenario::setup_sku(&ctx, s, a.price_fen, a.stock, None, None).await?;
        }
        checker = Some(Checker::new(ctx.rest.clone(), &ctx.room).await?);
    }
    let sampler = ctx.spawn_sampler(Duration::from_secs(1));
    let r = run_load(
        &ctx,
        &target,
        LoadSpec {
            name: "buys",
            connections: a.connections,
            duration: a.duration,
            mode,
            skus: skus.clone(),
            prices: (!a.echo_target).then(|| scenario::prices(&skus, a.price_fen)),
            qty: a.qty,
            echo: a.echo_target,
            user_prefix: "c",
            req_tag: "s",
            dup_every: a.dup_every,
            split: None,
            cpu: a.server_pid.map(Probe::Process),
        },
    )
    .await?;
    let mut checks = Vec::new();
    if let Some(c) = checker.as_mut() {
        ctx.pb.set_message("checking");
        let stock: HashMap<String, u64> = skus.iter().map(|s| (s.clone(), a.stock)).collect();
        checks = c
            .run(&Expect {
                oks: &r.totals.oks,
                timed_out: &r.totals.timed_out,
                stock: &stock,
                expect_sold: None,
                limit_per_user: None,
                final_check: true,
                others_buy: false,
            })
            .await;
    }
    let mut results = Map::new();
    results.insert(
        if a.echo_target {
            "echo".into()
        } else {
            "livehub".into()
        },
        r.json(&ctx, a.connections),
    );
    let mut recs = vec![r.finished.clone()];
    let peers = if a.echo_target {
        Vec::new()
    } else {
        Peer::chosen(a.against_echo, a.against_bun)
    };
    for p in peers {
        // The echo in this process (its threads' CPU is told apart), the Bun hub as a child.
        let server = p.start(true).await?;
        let target = server.target();
        if p.keeps_stock() {
            let mut control = peer::Control::connect(&target).await?;
            for sku in &skus {
                control
                    .define(&peer::SkuSetup {
                        sku,
                        price_fen: a.price_fen,
                        stock: a.stock,
                        limit: None,
                        open: true,
                    })
                    .await?;
            }
        }
        let name = format!("{} buys", p.name());
        let e = run_load(
            &ctx,
            &target,
            LoadSpec {
                name: &name,
                connections: a.connections,
                duration: a.duration,
                mode,
                skus: skus.clone(),
                prices: p
                    .keeps_stock()
                    .then(|| scenario::prices(&skus, a.price_fen)),
                qty: a.qty,
                echo: true,
                user_prefix: "c",
                req_tag: p.req_tag(),
                dup_every: a.dup_every,
                split: None,
                cpu: Some(server.cpu),
            },
        )
        .await?;
        let mut ej = e.json(&ctx, a.connections);
        ej["address"] = json!(server.addr.to_string());
        results.insert(p.name().into(), ej);
        results.insert(format!("livehub_vs_{}", p.name()), versus(&r, &e, p));
        recs.push(e.finished);
    }
    sampler.store(true, Ordering::Relaxed);
    let params = json!({
        "connections": a.connections,
        "duration_s": a.duration.as_secs_f64(),
        "mode": if a.rate.is_some() { "open" } else { "closed" },
        "rate": a.rate, "in_flight": a.in_flight, "server_pid": a.server_pid, "skus": a.skus, "stock": a.stock, "qty": a.qty, "dup_every": a.dup_every,
        "sources": ctx.common.sources,
    });
    Ok(scenario::finish(
        &ctx, "steady", params, results, checks, recs, &target,
    ))
}

/// livehub's figures over a peer's from the same run.
fn versus(r: &LoadRun, e: &LoadRun, p: Peer) -> Value {
    let ratio = |x: f64, y: f64, scale: f64| (y > 0.0).then(|| ((x / y) * scale).round() / scale);
    json!({
        "throughput_ratio": ratio(r.acks_per_s(), e.acks_per_s(), 1000.0),
        "p50_latency_ratio": ratio(r.finished.p(0.5), e.finished.p(0.5), 100.0),
        "p99_latency_ratio": ratio(r.finished.p(0.99), e.finished.p(0.99), 100.0),
        "cpu_per_ack_ratio": match (r.cpu_us_per_ack(), e.cpu_us_per_ack()) {
            (Some(x), Some(y)) => ratio(x, y, 100.0),
            _ => None,
        },
        "note": format!("livehub figure / {} figure, same connections, frames and mode, same machine", p.name()),
    })
}

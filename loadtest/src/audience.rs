//! `audience`: audience events (`POST /api/rooms/{room}/audience`, docs/protocol.md section 9)
//! at a rate, from a simulated audience ([`crate::audience_gen`]): viewers entering in waves
//! under their sources, liking, commenting, sharing, following, tapping the room's product
//! cards, leaving, some coming back; some events late and out of order. Batches of `--batch`
//! events go out on a schedule over `--connections` HTTP connections, each with one batch at a
//! time; the sending is bounded by the batches the run makes and by `--duration`.
//!
//! Every batch must be answered 200 with all of it accepted. Every `--resend-every`th batch is
//! posted again once answered, and must come back all duplicates. A few batches are made bad
//! on purpose: each must be refused with a 400 that names its bad event, and change nothing.
//! Afterwards the room's `/stats` must show what the accepted events give, each
//! `(user, type, ts_ms)` once: unique viewers, likes, comments, shares, follows, the sources,
//! the funnel's entered and clicked, clicks per SKU, the minutes' counts, viewers online (the
//! tool knows who is in a session at the end) and the average watch time.
//!
//! With `--buy-rate`, an open-loop buy load (and `--dashboards` dashboards) runs for twice
//! `--duration`, and the audience sends in every other window of `--alternate` (quiet, audience,
//! quiet, ...). Each buy's latency is filed under the window it was sent in, each snapshot's
//! delay under the window it was built in, and the summary gives the buys' p99 and the
//! dashboards' delay of both kinds of window, and their ratio.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use serde_json::{json, Map, Value};
use tokio::sync::{mpsc, watch};

use crate::audience_gen::{bad_batch, Bad, Ev, Expected, Generator, Model, Params};
use crate::buyer::connect_many;
use crate::cli::AudienceArgs;
use crate::ctx::Ctx;
use crate::dash::{run_dashboard_until, DashResult};
use crate::invariants::{Check, Checker, Expect};
use crate::net::now_ms;
use crate::record::{Alternation, Finished, Outcome, Recorder, Simple, Split};
use crate::scenario;
use crate::steady::{mode_of, run_load, LoadSpec};

/// Issue 22's floor for durable events a second.
const FLOOR_EVENTS_PER_S: f64 = 500_000.0;
/// Issue 22's bound on buys' p99 and the dashboards' delay with the audience over without.
const FLOOR_RATIO: f64 = 1.2;
/// Time kept after the phases for the checks.
const CHECK_RESERVE: Duration = Duration::from_secs(30);
/// Longest one batch may take to be answered.
const POST_TIMEOUT: Duration = Duration::from_secs(30);
/// How long the checks wait for a snapshot that shows every answered batch.
const SETTLE: Duration = Duration::from_secs(10);
/// Examples of a failure kept for the report.
const EXAMPLES: usize = 5;

/// What a posting connection takes from the generator.
enum Item {
    /// Batch `k` of the run; `resend`: post it again once answered.
    Fresh {
        k: u64,
        evs: Vec<Ev>,
        body: Vec<u8>,
        resend: bool,
    },
    /// A batch made bad on purpose.
    Bad(Bad),
}

/// The server's answer to one post.
struct Answer {
    /// 0 when none came.
    status: u16,
    body: Value,
    error: Option<String>,
    latency_us: u64,
}

impl Answer {
    fn n(&self, k: &str) -> Option<u64> {
        self.body.get(k).and_then(Value::as_u64)
    }

    fn describe(&self) -> String {
        match &self.error {
            Some(e) => e.clone(),
            None => format!("HTTP {} {:.200}", self.status, self.body.to_string()),
        }
    }
}

async fn post(http: &reqwest::Client, url: &str, auth: &str, body: Vec<u8>) -> Answer {
    let t = Instant::now();
    let r = http
        .post(url)
        .header(reqwest::header::AUTHORIZATION, auth)
        .header(reqwest::header::CONTENT_TYPE, "application/json")
        .body(body)
        .send()
        .await;
    let (status, body, error) = match r {
        Ok(r) => {
            let status = r.status().as_u16();
            match r.bytes().await {
                Ok(b) => (
                    status,
                    serde_json::from_slice(&b).unwrap_or_else(|_| {
                        Value::String(String::from_utf8_lossy(&b).chars().take(200).collect())
                    }),
                    None,
                ),
                Err(e) => (
                    status,
                    Value::Null,
                    Some(format!("reading the answer: {e}")),
                ),
            }
        }
        Err(e) => (0, Value::Null, Some(format!("no answer: {e}"))),
    };
    Answer {
        status,
        body,
        error,
        latency_us: t.elapsed().as_micros() as u64,
    }
}

/// What the posting connections saw, and the figures the accepted batches give.
struct Tally {
    model: Model,
    /// Batches answered 200 past the leading run of them.
    done: BTreeSet<u64>,
    sent: u64,
    events_sent: u64,
    ok: u64,
    accepted: u64,
    /// Fresh batches not answered 200 with every event accepted.
    wrong: u64,
    wrong_examples: Vec<String>,
    statuses: BTreeMap<String, u64>,
    resent: u64,
    resent_ok: u64,
    resent_examples: Vec<String>,
    bad: u64,
    bad_ok: u64,
    bad_examples: Vec<String>,
    first_send: Option<Instant>,
    last_answer: Option<Instant>,
    /// Wall clock of the last answer.
    last_answer_ms: i64,
    /// How late the latest batch went out against its schedule.
    behind: Duration,
}

struct Shared {
    tally: Mutex<Tally>,
    /// Batches from the first that are all answered 200.
    answered: AtomicU64,
}

fn example(v: &mut Vec<String>, what: impl FnOnce() -> String) {
    if v.len() < EXAMPLES {
        v.push(what());
    }
}

impl Shared {
    fn sending(&self, n: usize, behind: Duration) {
        let mut t = self.tally.lock().unwrap();
        t.first_send.get_or_insert_with(Instant::now);
        t.sent += 1;
        t.events_sent += n as u64;
        t.behind = behind;
    }

    fn answered_at(t: &mut Tally) {
        t.last_answer = Some(Instant::now());
        t.last_answer_ms = now_ms();
    }

    fn fresh(&self, k: u64, evs: &[Ev], a: &Answer) {
        let mut t = self.tally.lock().unwrap();
        Self::answered_at(&mut t);
        let key = if a.status == 0 {
            "no answer".to_owned()
        } else {
            a.status.to_string()
        };
        *t.statuses.entry(key).or_default() += 1;
        let n = evs.len() as u64;
        if a.status == 200 && a.n("accepted") == Some(n) && a.n("duplicates") == Some(0) {
            t.ok += 1;
            t.accepted += n;
            t.model.fold(evs);
            t.done.insert(k);
            let mut through = self.answered.load(Ordering::Relaxed);
            while t.done.remove(&through) {
                through += 1;
            }
            self.answered.store(through, Ordering::Relaxed);
        } else {
            t.wrong += 1;
            example(&mut t.wrong_examples, || {
                format!("batch {k} of {n} events: {}", a.describe())
            });
        }
    }

    fn resent(&self, n: usize, a: &Answer) {
        let mut t = self.tally.lock().unwrap();
        Self::answered_at(&mut t);
        t.resent += 1;
        let n = n as u64;
        if a.status == 200 && a.n("accepted") == Some(0) && a.n("duplicates") == Some(n) {
            t.resent_ok += 1;
        } else {
            example(&mut t.resent_examples, || {
                format!("{n} events sent again: {}", a.describe())
            });
        }
    }

    fn bad(&self, b: &Bad, a: &Answer) {
        let mut t = self.tally.lock().unwrap();
        Self::answered_at(&mut t);
        t.bad += 1;
        let index = a.body.get("index").and_then(Value::as_u64);
        let field = a.body.get("field").and_then(Value::as_str);
        if a.status == 400 && index == Some(b.index as u64) && field == Some(b.field) {
            t.bad_ok += 1;
        } else {
            example(&mut t.bad_examples, || {
                format!(
                    "{} at index {} (field {}): {}",
                    b.what,
                    b.index,
                    b.field,
                    a.describe()
                )
            });
        }
    }
}

/// How the posting connections send.
struct Plan {
    url: String,
    auth: String,
    t0: Instant,
    /// Batch k is due at `t0 + k × interval`, or that much busy time into the alternation.
    interval: Duration,
    alternation: Option<Alternation>,
    /// Nothing is sent from then on.
    end: Instant,
}

impl Plan {
    /// When batch `k` goes out.
    fn due(&self, k: u64) -> Instant {
        let busy = self.interval.mul_f64(k as f64);
        match self.alternation {
            Some(alt) => alt.busy_at(busy),
            None => self.t0 + busy,
        }
    }
}

/// One HTTP connection: takes the next item, waits for its time, posts it, and for a batch
/// to re-send, posts it again once answered. Ends when the items run out or at `plan.end`.
async fn connection(
    ctx: Arc<Ctx>,
    http: reqwest::Client,
    queue: Arc<tokio::sync::Mutex<mpsc::Receiver<Item>>>,
    shared: Arc<Shared>,
    rec: Arc<Recorder>,
    plan: Arc<Plan>,
) {
    loop {
        let item = {
            let mut q = queue.lock().await;
            tokio::select! {
                i = q.recv() => i,
                _ = tokio::time::sleep_until(plan.end.into()) => None,
            }
        };
        match item {
            None => break,
            Some(Item::Fresh {
                k,
                evs,
                body,
                resend,
            }) => {
                let due = plan.due(k);
                if due >= plan.end {
                    break;
                }
                tokio::time::sleep_until(due.into()).await;
                let again = resend.then(|| body.clone());
                shared.sending(evs.len(), Instant::now().saturating_duration_since(due));
                let a = post(&http, &plan.url, &plan.auth, body).await;
                let at = Instant::now();
                let outcome = match a.status {
                    200 => Outcome::Ok,
                    0 => Outcome::Rejected("no_answer"),
                    _ => Outcome::Rejected("not_200"),
                };
                rec.record(at, a.latency_us, outcome);
                ctx.pb.inc(1);
                let ok = a.status == 200;
                shared.fresh(k, &evs, &a);
                if let (Some(b), true) = (again, ok) {
                    let r = post(&http, &plan.url, &plan.auth, b).await;
                    shared.resent(evs.len(), &r);
                }
            }
            Some(Item::Bad(b)) => {
                let body = b.body.clone();
                let a = post(&http, &plan.url, &plan.auth, body).await;
                shared.bad(&b, &a);
            }
        }
    }
}

/// Puts the calling thread under the kernel's idle scheduling policy (`SCHED_IDLE`), or
/// else at nice 10: it runs when the buyers' clients and the server leave a core free, and a
/// waking normal thread preempts it at once. On Linux both belong to the thread. Where both
/// fail the thread keeps its priority.
fn lower_priority() {
    let param = libc::sched_param { sched_priority: 0 };
    // SAFETY: sched_setscheduler reads `param` only, setpriority takes plain integers; `0`
    // names the calling thread on Linux.
    unsafe {
        if libc::sched_setscheduler(0, libc::SCHED_IDLE, &param) != 0 {
            libc::setpriority(libc::PRIO_PROCESS, 0, 10);
        }
    }
}

/// What the audience phase gave.
struct Sent {
    finished: Finished,
    tally: Tally,
    batches_planned: u64,
    /// The generator's own count of viewers in a session at its last batch.
    generator_online: usize,
    hiccups: Value,
}

/// Runs the audience phase: the generator on a thread of its own, `a.connections` posting;
/// with an alternation, in its busy windows only.
async fn send_audience(
    ctx: &Arc<Ctx>,
    a: &AudienceArgs,
    skus: &[String],
    alternation: Option<Alternation>,
) -> anyhow::Result<Sent> {
    let token = a
        .ingest_token
        .clone()
        .or_else(|| ctx.common.admin_token.clone())
        .context("audience events need --ingest-token (or --admin-token)")?;
    let events = a
        .max_events
        .unwrap_or((a.events_per_s * a.duration.as_secs_f64()) as u64);
    let batches = events.div_ceil(a.batch);
    let started_ms = now_ms();
    let shared = Arc::new(Shared {
        tally: Mutex::new(Tally {
            model: Model::new(
                a.viewers,
                skus.to_vec(),
                started_ms - crate::audience_gen::BASE_BEFORE_MS,
            ),
            done: BTreeSet::new(),
            sent: 0,
            events_sent: 0,
            ok: 0,
            accepted: 0,
            wrong: 0,
            wrong_examples: Vec::new(),
            statuses: BTreeMap::new(),
            resent: 0,
            resent_ok: 0,
            resent_examples: Vec::new(),
            bad: 0,
            bad_ok: 0,
            bad_examples: Vec::new(),
            first_send: None,
            last_answer: None,
            last_answer_ms: started_ms,
            behind: Duration::ZERO,
        }),
        answered: AtomicU64::new(0),
    });
    let (tx, rx) = mpsc::channel::<Item>(a.connections * 2);
    let stop = Arc::new(AtomicBool::new(false));
    let generator = {
        let (shared, stop) = (shared.clone(), stop.clone());
        let params = Params {
            viewers: a.viewers,
            batches,
            batch: a.batch as usize,
            skus: skus.to_vec(),
            late_share: a.late_share,
            late_max_ms: a.late_max.as_millis() as i64,
            seed: a.seed,
        };
        let (bad_batches, resend_every) = (a.bad_batches, a.resend_every);
        // A thread of its own at a lower priority: it stands in for the video platform's
        // adapter, which runs on other machines, so it should take as little as it can from
        // the buyers' clients and the server that share these cores.
        std::thread::Builder::new()
            .name("audience-generator".into())
            .spawn(move || {
                lower_priority();
                let mut g = Generator::new(params);
                let mut bad = 0;
                let mut body_len = 0;
                for k in 0..batches {
                    if stop.load(Ordering::Relaxed) {
                        break;
                    }
                    // The bad batches spread evenly through the run.
                    while bad < bad_batches && k >= (bad + 1) * batches / (bad_batches + 1) {
                        if tx
                            .blocking_send(Item::Bad(bad_batch(bad, now_ms())))
                            .is_err()
                        {
                            return g.online();
                        }
                        bad += 1;
                    }
                    let Some(evs) = g.next_batch(now_ms(), shared.answered.load(Ordering::Relaxed))
                    else {
                        break;
                    };
                    let mut body = Vec::with_capacity(body_len + 1024);
                    g.write_json(&evs, &mut body);
                    body_len = body_len.max(body.len());
                    let resend = resend_every > 0 && k % resend_every == resend_every - 1;
                    let item = Item::Fresh {
                        k,
                        evs,
                        body,
                        resend,
                    };
                    if tx.blocking_send(item).is_err() {
                        break;
                    }
                }
                g.online()
            })?
    };
    let rec = Recorder::new("audience batches", ctx.started, Duration::from_secs(1));
    ctx.add_recorder(&rec);
    let t0 = alternation.map_or(Instant::now() + Duration::from_millis(100), |alt| alt.t0);
    let end = alternation.map_or(t0 + a.duration, |alt| alt.busy_at(a.duration));
    let plan = Arc::new(Plan {
        url: format!("{}/api/rooms/{}/audience", ctx.target.http_base, ctx.room),
        auth: format!("Bearer {token}"),
        t0,
        interval: Duration::from_secs_f64(a.batch as f64 / a.events_per_s.max(1e-3)),
        alternation,
        end: ctx.clamp(end, CHECK_RESERVE),
    });
    ctx.pb.set_length(batches);
    ctx.pb.set_position(0);
    ctx.pb.set_message("audience batches");
    ctx.hiccups.phase();
    // The posting connections run on a runtime of their own, on a thread at the generator's
    // lower priority: like the generator they stand in for the platform's adapter on other
    // machines, so bodies of hundreds of KB are not written from the runtime that times the
    // buys and the dashboards.
    let posting = {
        let (ctx, shared, rec, plan) = (ctx.clone(), shared.clone(), rec.clone(), plan.clone());
        let connections = a.connections;
        let (done_tx, done_rx) = tokio::sync::oneshot::channel::<anyhow::Result<()>>();
        std::thread::Builder::new()
            .name("audience-posting".into())
            .spawn(move || {
                lower_priority();
                let run = || -> anyhow::Result<()> {
                    let rt = tokio::runtime::Builder::new_current_thread()
                        .enable_all()
                        .build()?;
                    rt.block_on(async move {
                        let queue = Arc::new(tokio::sync::Mutex::new(rx));
                        let mut set = tokio::task::JoinSet::new();
                        for _ in 0..connections {
                            let http = reqwest::Client::builder()
                                .timeout(POST_TIMEOUT)
                                .pool_max_idle_per_host(1)
                                .tcp_nodelay(true)
                                .build()?;
                            set.spawn(connection(
                                ctx.clone(),
                                http,
                                queue.clone(),
                                shared.clone(),
                                rec.clone(),
                                plan.clone(),
                            ));
                        }
                        drop(queue);
                        while set.join_next().await.is_some() {}
                        Ok(())
                    })
                };
                let _ = done_tx.send(run());
            })?;
        done_rx
    };
    posting
        .await
        .context("the audience's posting thread ended")??;
    let hiccups = ctx.hiccups.phase();
    stop.store(true, Ordering::Relaxed);
    let generator_online = tokio::task::spawn_blocking(move || generator.join().unwrap_or(0))
        .await
        .unwrap_or(0);
    let finished = rec.finish(Instant::now());
    let shared = Arc::into_inner(shared).context("the posting connections ended")?;
    Ok(Sent {
        finished,
        tally: shared.tally.into_inner().unwrap(),
        batches_planned: batches,
        generator_online,
        hiccups,
    })
}

/// The room's `/stats` once it shows everything up to `after_ms` and the figures have
/// settled: read until a snapshot built after `after_ms` shows `want` (or [`SETTLE`] ends).
async fn settled_stats(
    ctx: &Ctx,
    after_ms: i64,
    want: impl Fn(&Value) -> bool,
) -> anyhow::Result<Value> {
    let until = Instant::now() + SETTLE;
    let mut last = None;
    loop {
        if let Some(s) = ctx.rest.stats(&ctx.room).await? {
            let fresh = s["ts_ms"].as_i64().is_some_and(|t| t > after_ms);
            if fresh && want(&s) {
                return Ok(s);
            }
            if fresh {
                last = Some(s);
            }
        }
        if Instant::now() >= until {
            return last.context("no snapshot built after the last answer");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn u(v: &Value, path: &[&str]) -> Option<u64> {
    path.iter().try_fold(v, |v, k| v.get(*k))?.as_u64()
}

/// The snapshot's figures against the expected ones.
fn compare(
    s: &Value,
    x: &Expected,
    buyers: u64,
    sold: &HashMap<String, u64>,
    bought_alongside: bool,
) -> Vec<Check> {
    let mut counts = Vec::new();
    let diff = |name: &str, got: Option<u64>, want: u64, out: &mut Vec<String>| {
        if got != Some(want) {
            out.push(format!(
                "{name} {} ≠ {want}",
                got.map_or("-".into(), |g| g.to_string())
            ));
        }
    };
    diff(
        "unique",
        u(s, &["audience", "unique"]),
        x.unique + buyers,
        &mut counts,
    );
    diff("likes", u(s, &["audience", "likes"]), x.likes, &mut counts);
    diff(
        "comments",
        u(s, &["audience", "comments"]),
        x.comments,
        &mut counts,
    );
    diff(
        "shares",
        u(s, &["audience", "shares"]),
        x.shares,
        &mut counts,
    );
    diff(
        "follows",
        u(s, &["audience", "follows"]),
        x.follows,
        &mut counts,
    );
    let got_minutes: BTreeMap<i64, [u64; 3]> = s["audience"]["per_minute"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|m| {
                    let c = [
                        m["likes"].as_u64()?,
                        m["comments"].as_u64()?,
                        m["shares"].as_u64()?,
                    ];
                    Some((m["t_ms"].as_i64()?, c))
                })
                .collect()
        })
        .unwrap_or_default();
    if got_minutes != x.per_minute {
        let wrong: Vec<String> = x
            .per_minute
            .iter()
            .filter(|(t, c)| got_minutes.get(t) != Some(c))
            .take(3)
            .map(|(t, c)| format!("{t}: {:?} ≠ {c:?}", got_minutes.get(t)))
            .collect();
        counts.push(format!(
            "per_minute: {} minutes ≠ {} ({})",
            got_minutes.len(),
            x.per_minute.len(),
            wrong.join("; ")
        ));
    }
    let mut funnel = Vec::new();
    diff(
        "funnel.entered",
        u(s, &["funnel", "entered"]),
        x.entered,
        &mut funnel,
    );
    diff(
        "funnel.clicked",
        u(s, &["funnel", "clicked"]),
        x.clicked,
        &mut funnel,
    );
    let got_sources: BTreeMap<String, u64> = s["audience"]["sources"]
        .as_object()
        .map(|m| {
            m.iter()
                .filter_map(|(k, v)| Some((k.clone(), v.as_u64()?)))
                .collect()
        })
        .unwrap_or_default();
    if got_sources != x.sources {
        funnel.push(format!("sources {got_sources:?} ≠ {:?}", x.sources));
    }
    let skus = s["skus"].as_array().cloned().unwrap_or_default();
    for (sku, want) in &x.clicks {
        let f = skus.iter().find(|f| f["sku"] == sku.as_str());
        diff(
            &format!("{sku}.clicks"),
            f.and_then(|f| f["clicks"].as_u64()),
            *want,
            &mut funnel,
        );
        let orders = sold.get(sku).copied().unwrap_or(0);
        let ratio = if *want == 0 {
            0.0
        } else {
            orders as f64 / *want as f64
        };
        let got = f.and_then(|f| f["click_to_order"].as_f64());
        if got.is_none_or(|g| (g - ratio).abs() > 1e-9 * ratio.max(1.0)) {
            funnel.push(format!("{sku}.click_to_order {got:?} ≠ {orders}/{want}"));
        }
    }
    let mut online = Vec::new();
    let got_online = u(s, &["audience", "online"]);
    diff("online", got_online, x.online, &mut online);
    let avg = s["audience"]["avg_watch_s"].as_f64();
    // The snapshot rounds to 0.1 s.
    if avg.is_none_or(|g| (g - x.avg_watch_s()).abs() > 0.1 + 1e-9) {
        online.push(format!("avg_watch_s {avg:?} ≠ {}", x.avg_watch_s()));
    }
    let peak = u(s, &["audience", "peak"]);
    if peak.is_none_or(|p| p < x.online || p > x.unique + buyers) {
        online.push(format!(
            "peak {peak:?} outside [online {}, unique {}]",
            x.online,
            x.unique + buyers
        ));
    }
    // Trend points are the seconds with orders; each carries the audience online as its
    // second ended, so with buys beside the audience some must show viewers, and none more
    // than the peak.
    let trend: Vec<u64> = s["trend"]["points"]
        .as_array()
        .map(|p| p.iter().filter_map(|p| p["online"].as_u64()).collect())
        .unwrap_or_default();
    let trend_most = trend.iter().copied().max().unwrap_or(0);
    if peak.is_some_and(|p| trend_most > p) || (bought_alongside && trend_most == 0) {
        online.push(format!(
            "the trend's points show at most {trend_most} online (peak {peak:?}, buys beside \
             the audience: {bought_alongside})"
        ));
    }
    let line = |v: &[String], ok: String| if v.is_empty() { ok } else { v.join("; ") };
    vec![
        Check::new(
            "audience_counts_match",
            counts.is_empty(),
            line(
                &counts,
                format!(
                    "unique {} (buyers {buyers}), likes {}, comments {}, shares {}, follows {}, {} minutes",
                    x.unique + buyers,
                    x.likes,
                    x.comments,
                    x.shares,
                    x.follows,
                    x.per_minute.len()
                ),
            ),
        ),
        Check::new(
            "funnel_sources_and_clicks_match",
            funnel.is_empty(),
            line(
                &funnel,
                format!(
                    "entered {}, clicked {}, sources {:?}, clicks {:?}",
                    x.entered, x.clicked, x.sources, x.clicks
                ),
            ),
        ),
        Check::new(
            "online_and_watch_time_match",
            online.is_empty(),
            line(
                &online,
                format!(
                    "online {} (peak {}), avg_watch_s {}, trend points up to {trend_most} online",
                    x.online,
                    peak.unwrap_or(0),
                    x.avg_watch_s()
                ),
            ),
        ),
    ]
}

/// The recorder of the phase being measured, if any.
type Phase = Arc<Mutex<Option<Arc<Recorder>>>>;

/// The dashboards of both phases: connected once, their snapshots counted in the recorder of
/// the phase they arrive in.
struct Dashboards {
    phase: Phase,
    stop: watch::Sender<bool>,
    tasks: tokio::task::JoinSet<DashResult>,
    connected: usize,
}

impl Dashboards {
    async fn connect(ctx: &Arc<Ctx>, n: usize) -> anyhow::Result<Dashboards> {
        let times = Arc::new(Simple::new());
        ctx.pb.set_message(format!("connecting {n} dashboards"));
        let conns = connect_many(
            ctx,
            &ctx.target,
            n,
            crate::dashboards::dashboard_path(ctx)?,
            false,
            &times,
        )
        .await;
        let phase: Phase = Arc::new(Mutex::new(None));
        let (stop, rx) = watch::channel(false);
        let mut tasks = tokio::task::JoinSet::new();
        let connected = conns.len();
        for c in conns {
            let (phase, mut rx, deadline) = (phase.clone(), rx.clone(), ctx.deadline);
            let stopped = async move {
                tokio::select! {
                    _ = rx.wait_for(|s| *s) => {}
                    _ = tokio::time::sleep_until(deadline.into()) => {}
                }
            };
            tasks.spawn(run_dashboard_until(
                ctx.clone(),
                c,
                stopped,
                move |at, delay_us| match phase.lock().unwrap().as_ref() {
                    Some(rec) => {
                        rec.record(at, delay_us, Outcome::Event);
                        true
                    }
                    None => false,
                },
            ));
        }
        Ok(Dashboards {
            phase,
            stop,
            tasks,
            connected,
        })
    }

    /// Counts the snapshots from now on in `rec` (`None`: not at all).
    fn measure(&self, rec: Option<&Arc<Recorder>>) {
        *self.phase.lock().unwrap() = rec.cloned();
    }

    /// Stops the sockets; returns their results.
    async fn close(mut self) -> Vec<DashResult> {
        let _ = self.stop.send(true);
        let mut out = Vec::new();
        while let Some(r) = self.tasks.join_next().await {
            if let Ok(r) = r {
                out.push(r);
            }
        }
        out
    }
}

fn ratio(x: f64, y: f64) -> Option<f64> {
    (y > 0.0).then(|| ((x / y) * 100.0).round() / 100.0)
}

pub async fn audience(ctx: Arc<Ctx>, a: AudienceArgs) -> anyhow::Result<i32> {
    anyhow::ensure!(
        a.connections > 0 && a.events_per_s > 0.0 && a.events_per_s.is_finite(),
        "--connections and --events-per-s must be positive"
    );
    anyhow::ensure!(
        (0.0..=1.0).contains(&a.late_share),
        "--late-share is a share, 0 to 1"
    );
    anyhow::ensure!(
        a.late_max >= Duration::from_secs(2) && a.late_max <= Duration::from_secs(540),
        "--late-max must be 2 s to 9 min (the server takes events up to 10 minutes late)"
    );
    let buys = a.buy_rate > 0.0;
    anyhow::ensure!(
        !buys || a.buy_connections > 0,
        "--buy-connections must be at least 1 with --buy-rate"
    );
    anyhow::ensure!(
        a.alternate >= Duration::from_millis(100),
        "--alternate must be at least 100ms"
    );
    scenario::setup_room(&ctx, &format!("load test audience {}", ctx.run_id)).await?;
    let skus: Vec<String> = (1..=a.skus).map(|i| format!("A{i}")).collect();
    let stock = 1_000_000_000u64;
    for s in &skus {
        scenario::setup_sku(&ctx, s, 9900, stock, None, None).await?;
    }
    let mut checker = Checker::new(ctx.rest.clone(), &ctx.room).await?;
    let sampler = ctx.spawn_sampler(Duration::from_secs(1));
    let target = ctx.target.clone();

    // 1. The buys (and dashboards) through the whole run, and the audience in every other
    // window of `--alternate`: each latency is filed under the window its buy was sent in (a
    // snapshot under the window it was built in), so a stall of the host's lands in both kinds
    // of window alike.
    let alternation = Alternation {
        t0: scenario::soon(),
        period: a.alternate,
    };
    let phases = |what: &str| {
        [
            Recorder::new(
                &format!("{what}, quiet"),
                ctx.started,
                Duration::from_secs(1),
            ),
            Recorder::new(
                &format!("{what}, audience"),
                ctx.started,
                Duration::from_secs(1),
            ),
        ]
    };
    let (buy_phases, dash_phases) = (phases("buys"), phases("snapshots"));
    let dash_all = Recorder::new("snapshots", ctx.started, Duration::from_secs(1));
    dash_all.split(Split {
        alternation,
        phases: dash_phases.clone(),
    });
    let mut dashboards = None;
    let with_buys = if buys {
        if a.dashboards > 0 {
            let d = Dashboards::connect(&ctx, a.dashboards).await?;
            d.measure(Some(&dash_all));
            dashboards = Some(d);
        }
        for r in buy_phases.iter().chain(dash_phases.iter()) {
            ctx.add_recorder(r);
        }
        let spec = LoadSpec {
            name: "buys",
            connections: a.buy_connections,
            // Every busy window has its quiet one before it.
            duration: a.duration * 2,
            mode: mode_of(Some(a.buy_rate), None, a.buy_connections)?,
            skus: vec![skus[0].clone()],
            prices: Some(scenario::prices(&skus[..1], 9900)),
            qty: 1,
            echo: false,
            user_prefix: "b",
            req_tag: "a",
            dup_every: 0,
            split: Some(Split {
                alternation,
                phases: buy_phases.clone(),
            }),
            cpu: None,
        };
        let (ctx, target) = (ctx.clone(), target.clone());
        Some(tokio::spawn(
            async move { run_load(&ctx, &target, spec).await },
        ))
    } else {
        None
    };

    // 2. The audience, in its windows when there are buys.
    let sent = send_audience(&ctx, &a, &skus, buys.then_some(alternation)).await?;
    let bought = match with_buys {
        Some(h) => Some(h.await.context("the buy load")??),
        None => None,
    };
    let now = Instant::now();
    let [quiet_buys, loud_buys] = buy_phases.map(|r| r.finish(now));
    let [quiet_dash, loud_dash] = dash_phases.map(|r| r.finish(now));
    let dash_results = match dashboards {
        Some(d) => {
            d.measure(None);
            let connected = d.connected;
            Some((d.close().await, connected))
        }
        None => None,
    };

    // 3. The checks.
    ctx.pb.set_message("checking");
    let t = &sent.tally;
    let mut checks = vec![
        Check::new(
            "every_batch_accepted",
            t.wrong == 0 && t.ok > 0,
            if t.wrong == 0 {
                format!(
                    "{} batches answered 200, {} events accepted",
                    t.ok, t.accepted
                )
            } else {
                format!(
                    "{} of {} batches not answered 200 with every event accepted: {}",
                    t.wrong,
                    t.sent,
                    t.wrong_examples.join(" | ")
                )
            },
        ),
        Check::new(
            "resent_batches_all_duplicates",
            t.resent_ok == t.resent,
            if t.resent_ok == t.resent {
                format!("{} batches sent again, all duplicates", t.resent)
            } else {
                format!(
                    "{} of {}: {}",
                    t.resent - t.resent_ok,
                    t.resent,
                    t.resent_examples.join(" | ")
                )
            },
        ),
        Check::new(
            "bad_batches_refused",
            t.bad_ok == t.bad,
            if t.bad_ok == t.bad {
                format!("{} bad batches refused with their index and field", t.bad)
            } else {
                format!(
                    "{} of {}: {}",
                    t.bad - t.bad_ok,
                    t.bad,
                    t.bad_examples.join(" | ")
                )
            },
        ),
    ];
    if t.model.overflow() > 0 {
        checks.push(Check::new(
            "tool_session_events_fit",
            false,
            format!(
                "{} session events beyond 4 a viewer (a bug of this tool)",
                t.model.overflow()
            ),
        ));
    }
    let mut oks = Vec::new();
    let mut timed_out = std::collections::HashSet::new();
    let mut buyers = 0u64;
    if let Some(r) = &bought {
        oks.extend(r.totals.oks.iter().cloned());
        timed_out.extend(r.totals.timed_out.iter().cloned());
        buyers = r.connected as u64;
    }
    let mut sold: HashMap<String, u64> = HashMap::new();
    for o in &oks {
        *sold.entry(o.sku.clone()).or_default() += o.qty;
    }
    let want_online = t.model.expected(now_ms()).online;
    let stats = settled_stats(&ctx, t.last_answer_ms, |s| {
        u(s, &["audience", "online"]) == Some(want_online)
    })
    .await;
    let expected = match &stats {
        Ok(s) => {
            let x = t.model.expected(s["ts_ms"].as_i64().unwrap_or(0));
            checks.extend(compare(s, &x, buyers, &sold, bought.is_some()));
            Some(x)
        }
        Err(e) => {
            checks.push(Check::new(
                "server_reachable_for_checks",
                false,
                format!("{e:#}"),
            ));
            None
        }
    };
    if buys {
        let stock_map: HashMap<String, u64> = skus.iter().map(|s| (s.clone(), stock)).collect();
        checks.extend(
            checker
                .run(&Expect {
                    oks: &oks,
                    timed_out: &timed_out,
                    stock: &stock_map,
                    expect_sold: None,
                    limit_per_user: None,
                    final_check: true,
                    others_buy: false,
                })
                .await,
        );
    }
    sampler.store(true, Ordering::Relaxed);

    // 4. The summary.
    let span = match (t.first_send, t.last_answer) {
        (Some(f), Some(l)) => l.saturating_duration_since(f).as_secs_f64(),
        _ => 0.0,
    };
    let durable = t.accepted as f64 / span.max(1e-9);
    let r1 = |x: f64| (x * 10.0).round() / 10.0;
    let mut results = Map::new();
    results.insert(
        "audience".into(),
        json!({
            "batches_planned": sent.batches_planned,
            "batches_sent": t.sent,
            "batches_ok": t.ok,
            "events_sent": t.events_sent,
            "accepted": t.accepted,
            "statuses": t.statuses,
            "resent_batches": t.resent,
            "bad_batches": t.bad,
            "events_per_s_asked": a.events_per_s,
            "span_s": (span * 1000.0).round() / 1000.0,
            "durable_per_s": r1(durable),
            "floor_per_s": FLOOR_EVENTS_PER_S,
            // Only a run asked for at least the floor can show whether the server meets it.
            "meets_floor": (a.events_per_s >= FLOOR_EVENTS_PER_S).then_some(durable >= FLOOR_EVENTS_PER_S),
            "last_batch_behind_schedule_ms": (t.behind.as_secs_f64() * 1000.0).round(),
            "batch_latency": sent.finished.latency_json(),
            "hiccups": sent.hiccups,
        }),
    );
    if let Some(x) = &expected {
        results.insert(
            "viewers".into(),
            json!({
                "simulated": a.viewers,
                "unique": x.unique,
                "entered": x.entered,
                "clicked": x.clicked,
                "online_at_end": x.online,
                "generator_online": sent.generator_online,
                "avg_watch_s": x.avg_watch_s(),
                "likes": x.likes, "comments": x.comments, "shares": x.shares, "follows": x.follows,
                "sources": x.sources,
                "clicks": x.clicks,
            }),
        );
    }
    let mut recs = vec![sent.finished.clone()];
    if let Some(b) = &bought {
        let (qp, lp) = (quiet_buys.p(0.99), loud_buys.p(0.99));
        let (qdp, ldp) = (quiet_dash.p(0.99), loud_dash.p(0.99));
        let buy_ratio = ratio(lp, qp);
        let dash_ratio = (quiet_dash.count > 0).then(|| ratio(ldp, qdp)).flatten();
        let mut cmp = json!({
            "alternate_s": a.alternate.as_secs_f64(),
            "buys": {"quiet": quiet_buys.count, "audience": loud_buys.count},
            "buy_p99_ms": {"quiet": qp, "audience": lp},
            "buy_p99_audience_over_quiet": buy_ratio,
            "buy_latency": {"quiet": quiet_buys.latency_json(), "audience": loud_buys.latency_json()},
            "dashboard_delay_p99_ms": {"quiet": qdp, "audience": ldp},
            "dashboard_delay_p99_audience_over_quiet": dash_ratio,
            "floor": format!("at most {FLOOR_RATIO}"),
            "meets_floor": buy_ratio.is_some_and(|r| r <= FLOOR_RATIO)
                && (quiet_dash.count == 0 || dash_ratio.is_some_and(|r| r <= FLOOR_RATIO)),
        });
        if let Some((d, connected)) = &dash_results {
            cmp["dashboards"] = json!({
                "connected": connected,
                "snapshots": d.iter().map(|r| r.total).sum::<u64>(),
                "quiet": quiet_dash.latency_json(),
                "audience": loud_dash.latency_json(),
            });
        }
        results.insert("buys".into(), b.json(&ctx, a.buy_connections));
        results.insert("comparison".into(), cmp);
        recs.push(b.finished.clone());
        recs.push(quiet_buys);
        recs.push(loud_buys);
        if quiet_dash.count > 0 {
            recs.push(quiet_dash);
            recs.push(loud_dash);
        }
    }
    let params = json!({
        "events_per_s": a.events_per_s, "batch": a.batch, "connections": a.connections,
        "duration_s": a.duration.as_secs_f64(), "max_events": a.max_events, "viewers": a.viewers,
        "skus": a.skus, "resend_every": a.resend_every, "late_share": a.late_share,
        "late_max_s": a.late_max.as_secs_f64(), "bad_batches": a.bad_batches,
        "buy_rate": a.buy_rate, "buy_connections": buys.then_some(a.buy_connections),
        "dashboards": buys.then_some(a.dashboards),
        "alternate_s": buys.then_some(a.alternate.as_secs_f64()), "seed": a.seed,
    });
    Ok(scenario::finish(
        &ctx, "audience", params, results, checks, recs, &target,
    ))
}

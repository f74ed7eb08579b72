//! What every scenario shares: flags, the server, the clock, the progress bar, and the
//! counters that are not latencies (connections, connect errors, anomalies).

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde_json::{json, Value};

use crate::cli::Common;
use crate::net::{self, BuyerAuth, Target};
use crate::record::Recorder;
use crate::rest::Rest;

/// How long one connect + upgrade may take.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(15);

pub struct Ctx {
    pub common: Common,
    pub target: Target,
    pub rest: Rest,
    pub buyer_auth: Option<BuyerAuth>,
    pub sources: Vec<IpAddr>,
    pub run_id: String,
    pub room: String,
    pub started: Instant,
    /// The whole run (checks included) ends by then.
    pub deadline: Instant,
    /// Set when a phase was cut short by the deadline.
    pub cut_short: AtomicBool,
    /// Open WebSocket connections of this run.
    pub conns: AtomicI64,
    pub conn_timeline: Mutex<Vec<(f64, i64)>>,
    pub conn_errors: Mutex<BTreeMap<String, u64>>,
    pub conn_failed: AtomicU64,
    /// Connections the server closed (or that broke) while in use, by reason.
    pub disconnects: Mutex<BTreeMap<String, u64>>,
    anomalies: Mutex<(u64, Vec<String>)>,
    pub pb: ProgressBar,
    /// Recorders the progress line and the report show.
    pub recorders: Mutex<Vec<Arc<Recorder>>>,
    pub nofile: u64,
    /// The machine's own stalls while the run went on (`machine.hiccups`).
    pub hiccups: crate::hiccups::Meter,
}

impl Ctx {
    pub async fn new(
        common: Common,
        nominal: Duration,
        buyer_ttl_s: u64,
    ) -> anyhow::Result<Arc<Ctx>> {
        let target = Target::from_url(&common.url).await?;
        let rest = Rest::new(
            &target.http_base,
            common.admin_token.clone(),
            common.viewer_token.clone(),
        )?;
        let buyer_auth = BuyerAuth::new(
            common.buyer_secret.as_deref(),
            common.open_buyers,
            buyer_ttl_s,
        )
        .ok();
        let now_ms = net::now_ms();
        let room = common
            .room
            .clone()
            .unwrap_or_else(|| format!("lt-{now_ms}"));
        crate::ids::check("room", &room)?;
        let max = common
            .max_seconds
            .map(Duration::from_secs)
            .unwrap_or(nominal + Duration::from_secs(120));
        let started = Instant::now();
        let pb = if common.no_progress {
            ProgressBar::hidden()
        } else {
            ProgressBar::with_draw_target(Some(0), ProgressDrawTarget::stderr())
        };
        pb.set_style(
            ProgressStyle::with_template(
                "{spinner} {elapsed_precise} [{bar:24}] {pos}/{len} {msg}",
            )
            .expect("valid template")
            .progress_chars("=> "),
        );
        pb.enable_steady_tick(Duration::from_millis(200));
        Ok(Arc::new(Ctx {
            sources: net::sources(common.sources),
            common,
            target,
            rest,
            buyer_auth,
            run_id: radix36(now_ms as u64),
            room,
            started,
            deadline: started + max,
            cut_short: AtomicBool::new(false),
            conns: AtomicI64::new(0),
            conn_timeline: Mutex::new(Vec::new()),
            conn_errors: Mutex::new(BTreeMap::new()),
            conn_failed: AtomicU64::new(0),
            disconnects: Mutex::new(BTreeMap::new()),
            anomalies: Mutex::new((0, Vec::new())),
            pb,
            recorders: Mutex::new(Vec::new()),
            nofile: net::nofile(),
            hiccups: crate::hiccups::Meter::start(started),
        }))
    }

    pub fn buyer_auth(&self) -> anyhow::Result<&BuyerAuth> {
        self.buyer_auth.as_ref().ok_or_else(|| {
            anyhow::anyhow!("buyers need --buyer-secret (to sign JWTs) or --open-buyers")
        })
    }

    pub fn source(&self, idx: usize) -> Option<IpAddr> {
        (!self.sources.is_empty()).then(|| self.sources[idx % self.sources.len()])
    }

    pub fn secs(&self) -> f64 {
        self.started.elapsed().as_secs_f64()
    }

    /// `end`, or the deadline when that comes first (leaving `reserve` for what follows).
    /// The reserve is at most a quarter of the whole run's bound.
    pub fn clamp(&self, end: Instant, reserve: Duration) -> Instant {
        let reserve = reserve.min(self.deadline.saturating_duration_since(self.started) / 4);
        let limit = self.deadline.checked_sub(reserve).unwrap_or(self.deadline);
        if end > limit {
            self.cut_short.store(true, Ordering::Relaxed);
            limit.max(Instant::now())
        } else {
            end
        }
    }

    /// The deadline less `reserve` (at most a quarter of the run's bound), for a phase whose
    /// natural end is the run's own.
    pub fn before_deadline(&self, reserve: Duration) -> Instant {
        let reserve = reserve.min(self.deadline.saturating_duration_since(self.started) / 4);
        self.deadline.checked_sub(reserve).unwrap_or(self.deadline)
    }

    pub fn past_deadline(&self) -> bool {
        Instant::now() >= self.deadline
    }

    /// Says so on stderr when `n` sockets will not fit under the open-file limit.
    pub fn warn_fds(&self, n: usize) {
        let open = self.conns.load(Ordering::Relaxed).max(0) as u64;
        if n as u64 + open + 64 > self.nofile {
            self.pb.suspend(|| {
                eprintln!(
                    "warning: {} more sockets need about as many file descriptors; open files: ulimit -n is {}",
                    n, self.nofile
                )
            });
        }
    }

    pub fn conn_opened(&self) {
        self.conns.fetch_add(1, Ordering::Relaxed);
    }

    pub fn conn_closed(&self) {
        self.conns.fetch_sub(1, Ordering::Relaxed);
    }

    pub fn conn_error(&self, reason: &str) {
        self.conn_failed.fetch_add(1, Ordering::Relaxed);
        *self
            .conn_errors
            .lock()
            .unwrap()
            .entry(reason.to_owned())
            .or_default() += 1;
    }

    pub fn disconnect(&self, reason: &str) {
        *self
            .disconnects
            .lock()
            .unwrap()
            .entry(reason.to_owned())
            .or_default() += 1;
    }

    /// Something the server sent that it should not have (kept: the first 20).
    pub fn anomaly(&self, what: String) {
        let mut g = self.anomalies.lock().unwrap();
        g.0 += 1;
        if g.1.len() < 20 {
            g.1.push(what);
        }
    }

    pub fn anomalies(&self) -> (u64, Vec<String>) {
        self.anomalies.lock().unwrap().clone()
    }

    pub fn add_recorder(&self, r: &Arc<Recorder>) {
        self.recorders.lock().unwrap().push(r.clone());
    }

    pub fn conn_errors_json(&self) -> Value {
        json!(self.conn_errors.lock().unwrap().clone())
    }

    /// Closes timeline buckets every `every` and keeps the progress line current, and samples
    /// the open connections every [`CONN_SAMPLE`] (kept when they changed), until the returned
    /// flag is set.
    pub fn spawn_sampler(self: &Arc<Self>, every: Duration) -> Arc<AtomicBool> {
        let stop = Arc::new(AtomicBool::new(false));
        let (ctx, flag) = (self.clone(), stop.clone());
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(CONN_SAMPLE);
            while !flag.load(Ordering::Relaxed) {
                tick.tick().await;
                let n = ctx.conns.load(Ordering::Relaxed);
                let mut tl = ctx.conn_timeline.lock().unwrap();
                // Only where the count changed: the chart steps there (the summary adds the
                // last point).
                if tl.last().is_none_or(|&(_, m)| m != n) {
                    tl.push((ctx.secs(), n));
                }
            }
        });
        let (ctx, flag) = (self.clone(), stop.clone());
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            let mut last: Option<(Instant, u64)> = None;
            while !flag.load(Ordering::Relaxed) {
                tick.tick().await;
                let now = Instant::now();
                let recs = ctx.recorders.lock().unwrap().clone();
                for r in &recs {
                    r.tick(now);
                }
                let mut msg = format!("conns {}", ctx.conns.load(Ordering::Relaxed));
                let failed = ctx.conn_failed.load(Ordering::Relaxed);
                if failed > 0 {
                    msg.push_str(&format!(" (failed {failed})"));
                }
                if let Some(r) = recs.first() {
                    let n = r.count.load(Ordering::Relaxed);
                    let rate = last
                        .map(|(t, c)| {
                            (n - c) as f64 / now.duration_since(t).as_secs_f64().max(1e-3)
                        })
                        .unwrap_or(0.0);
                    last = Some((now, n));
                    msg.push_str(&format!(
                        " | {} {} ok {} rej {} | {:.0}/s",
                        r.name,
                        n,
                        r.ok.load(Ordering::Relaxed),
                        r.rejected.load(Ordering::Relaxed),
                        rate
                    ));
                }
                ctx.pb.set_message(msg);
            }
        });
        stop
    }
}

/// How often the open connections are sampled for the report's chart.
pub const CONN_SAMPLE: Duration = Duration::from_millis(100);

fn radix36(mut n: u64) -> String {
    const D: &[u8] = b"0123456789abcdefghijklmnopqrstuvwxyz";
    let mut s = Vec::new();
    loop {
        s.push(D[(n % 36) as usize]);
        n /= 36;
        if n == 0 {
            break;
        }
    }
    s.reverse();
    String::from_utf8(s).unwrap()
}

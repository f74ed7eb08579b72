//! The per-room aggregator: an actor on a timer (tokio-console's `Aggregator::run` shape).
//! Each push interval it folds the new durable orders (in seq order) into its totals, and
//! publishes a snapshot when a figure changed, or at least once a second. Totals come only
//! from the orders, so a snapshot's totals always equal the orders export summed up to its `seq`.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::snapshot::{
    Figures, Latency, Published, Referrer, SkuFigures, TrendPoint, TREND_INTERVAL_MS,
};
use crate::clock::now_ms;
use crate::journal::OrderRecord;
use crate::protocol::RejectCode;
use crate::room::{new_latency_histogram, Room};

/// A snapshot goes out at least this often, changed or not.
pub const HEARTBEAT: Duration = Duration::from_secs(1);

/// Snapshot frames a second the feed may write to one room's dashboards. Each frame is one
/// socket write (several microseconds of CPU on the same cores as the buys), so with many
/// dashboards the push interval stretches to stay within this: 10,000 dashboards get a
/// snapshot every 500 ms instead of every 100 ms. It never stretches past [`HEARTBEAT`].
pub const FANOUT_FRAMES_PER_S: u64 = 20_000;

/// The interval between snapshots for `dashboards` connected: the configured one, or longer
/// to keep the room's fan-out within [`FANOUT_FRAMES_PER_S`], at most [`HEARTBEAT`].
pub fn stretched_interval(base: Duration, dashboards: usize) -> Duration {
    let fair = Duration::from_micros(dashboards as u64 * 1_000_000 / FANOUT_FRAMES_PER_S);
    base.max(fair).min(HEARTBEAT.max(base))
}
/// Velocity for the sell-out ETA is measured over this much recent time.
pub const VELOCITY_WINDOW_MS: i64 = 10_000;
/// Latency percentiles cover this many recent seconds.
pub const LATENCY_WINDOW_SECONDS: usize = 10;
/// Top referrers shown.
pub const TOP_REFERRERS: usize = 10;

#[derive(Debug, Default)]
struct SkuTotals {
    gmv_fen: u64,
    units: u64,
    /// `(ts_ms, qty)` of recent orders, for velocity.
    recent: VecDeque<(i64, u64)>,
}

/// Folds orders into figures and publishes snapshots for one room.
pub struct Aggregator {
    room: Arc<Room>,
    interval: Duration,
    cursor: usize,
    seq: u64,
    gmv_fen: u64,
    orders: u64,
    units: u64,
    buyers: HashSet<Arc<str>>,
    skus: HashMap<Arc<str>, SkuTotals>,
    referrers: HashMap<Arc<str>, (u64, u64)>,
    trend: Vec<TrendPoint>,
    first_changed: usize,
    latency_now: hdrhistogram::Histogram<u64>,
    latency_past: VecDeque<hdrhistogram::Histogram<u64>>,
    latency_rotated: Instant,
    number: u64,
    last: Option<Arc<Figures>>,
    last_published: Instant,
    /// Redis mode: fold the room's stream (every hub's orders) instead of this hub's journal.
    from_stream: bool,
    hub_seqs: BTreeMap<Arc<str>, u64>,
}

impl Aggregator {
    pub fn new(room: Arc<Room>, interval: Duration) -> Self {
        Aggregator {
            room,
            interval: interval.max(Duration::from_millis(1)),
            cursor: 0,
            seq: 0,
            gmv_fen: 0,
            orders: 0,
            units: 0,
            buyers: HashSet::new(),
            skus: HashMap::new(),
            referrers: HashMap::new(),
            trend: Vec::new(),
            first_changed: 0,
            latency_now: new_latency_histogram(),
            latency_past: VecDeque::new(),
            latency_rotated: Instant::now(),
            number: 0,
            last: None,
            last_published: Instant::now(),
            from_stream: false,
            hub_seqs: BTreeMap::new(),
        }
    }

    /// Redis mode: the figures come from the room's stream, so they cover every hub.
    pub fn from_stream(mut self) -> Self {
        self.from_stream = true;
        self
    }

    /// Publishes on every tick that has news, until `shutdown`.
    pub async fn run(mut self, shutdown: CancellationToken) {
        let mut tick = tokio::time::interval(self.interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tick.tick() => {
                    self.step(now_ms(), false);
                }
            }
        }
    }

    /// Folds new orders and publishes if a figure changed or the heartbeat is due (`force`
    /// publishes regardless). Returns whether it published.
    pub fn step(&mut self, now: i64, force: bool) -> bool {
        let room = self.room.clone();
        if self.from_stream {
            self.cursor = room.for_stream_from(self.cursor, |s| {
                self.fold(&s.order);
                if let Some(h) = &s.order.hub {
                    self.hub_seqs.insert(h.clone(), s.hub_seq);
                }
            });
        } else {
            self.cursor = room.for_orders_from(self.cursor, |o| self.fold(o));
        }
        self.take_latencies();
        let figures = self.figures(now);
        let changed = match &self.last {
            None => true,
            Some(prev) => !same_but_time(prev, &figures),
        };
        let since = self.last_published.elapsed();
        let due = since >= HEARTBEAT;
        let dashboards = self.room.dashboards.load(Ordering::Relaxed);
        // Ticks come every `interval`; half a tick of slack keeps a stretched interval from
        // slipping by a whole tick.
        let stretched = stretched_interval(self.interval, dashboards);
        let ready = self.last.is_none()
            || stretched <= self.interval
            || since + self.interval / 2 >= stretched;
        if !(force || (changed && ready) || due) {
            return false;
        }
        let figures = Arc::new(figures);
        self.number += 1;
        let published = Published::new(
            self.number,
            figures.clone(),
            Arc::new(self.trend.clone()),
            self.first_changed,
        );
        self.first_changed = self.trend.len().saturating_sub(1);
        self.last = Some(figures);
        self.last_published = Instant::now();
        self.room.snapshots.send_replace(Some(Arc::new(published)));
        true
    }

    fn fold(&mut self, o: &Arc<OrderRecord>) {
        self.seq = o.seq;
        self.gmv_fen += o.amount_fen;
        self.orders += 1;
        self.units += o.qty;
        if !self.buyers.contains(&o.user) {
            self.buyers.insert(o.user.clone());
        }
        let s = self.skus.entry(o.sku.clone()).or_default();
        s.gmv_fen += o.amount_fen;
        s.units += o.qty;
        s.recent.push_back((o.ts_ms, o.qty));
        if let Some(r) = &o.referrer {
            let e = self.referrers.entry(r.clone()).or_default();
            e.0 += 1;
            e.1 += o.amount_fen;
        }
        let t = o.ts_ms - o.ts_ms.rem_euclid(TREND_INTERVAL_MS);
        let i = match self.trend.last() {
            Some(p) if p.t_ms == t => self.trend.len() - 1,
            Some(p) if p.t_ms < t => {
                self.trend.push(TrendPoint {
                    t_ms: t,
                    gmv_fen: 0,
                    orders: 0,
                });
                self.trend.len() - 1
            }
            None => {
                self.trend.push(TrendPoint {
                    t_ms: t,
                    gmv_fen: 0,
                    orders: 0,
                });
                0
            }
            Some(_) => match self.trend.binary_search_by_key(&t, |p| p.t_ms) {
                Ok(i) => i,
                Err(i) => {
                    self.trend.insert(
                        i,
                        TrendPoint {
                            t_ms: t,
                            gmv_fen: 0,
                            orders: 0,
                        },
                    );
                    i
                }
            },
        };
        self.trend[i].gmv_fen += o.amount_fen;
        self.trend[i].orders += 1;
        self.first_changed = self.first_changed.min(i);
    }

    fn take_latencies(&mut self) {
        {
            let mut h = self.room.live.latency_us.lock().expect("latency lock");
            let _ = self.latency_now.add(&*h);
            h.reset();
        }
        if self.latency_rotated.elapsed() >= Duration::from_secs(1) {
            self.latency_rotated = Instant::now();
            let full = std::mem::replace(&mut self.latency_now, new_latency_histogram());
            self.latency_past.push_back(full);
            while self.latency_past.len() >= LATENCY_WINDOW_SECONDS {
                self.latency_past.pop_front();
            }
        }
    }

    fn latency(&self) -> Latency {
        let mut all = self.latency_now.clone();
        for h in &self.latency_past {
            let _ = all.add(h);
        }
        if all.is_empty() {
            return Latency::default();
        }
        Latency {
            p50: all.value_at_quantile(0.50),
            p90: all.value_at_quantile(0.90),
            p99: all.value_at_quantile(0.99),
            p999: all.value_at_quantile(0.999),
            max: all.max(),
        }
    }

    fn figures(&mut self, now: i64) -> Figures {
        let live = &self.room.live;
        let unique = live.unique_viewers.len() as u64;
        let buyers = self.buyers.len() as u64;
        let rejected = RejectCode::ALL
            .iter()
            .filter_map(|c| {
                let n = live.rejected[c.index()].load(Ordering::Relaxed);
                (n > 0).then(|| (c.as_str().to_owned(), n))
            })
            .collect();
        let mut skus = Vec::new();
        for s in self.room.skus() {
            let mut state = s.view(now);
            let t = self.skus.entry(s.id.clone()).or_default();
            while t
                .recent
                .front()
                .is_some_and(|&(ts, _)| ts < now - VELOCITY_WINDOW_MS)
            {
                t.recent.pop_front();
            }
            let recent_units: u64 = t.recent.iter().map(|&(_, q)| q).sum();
            let eta_sold_out_s = match (state.left, t.recent.front()) {
                (0, _) | (_, None) => None,
                (left, Some(&(oldest, _))) => {
                    let span_s = ((now - oldest) as f64 / 1000.0).max(1.0);
                    let per_s = recent_units as f64 / span_s;
                    (per_s > 0.0).then(|| ((left as f64 / per_s) * 10.0).round() / 10.0)
                }
            };
            // Sold units as of this snapshot's seq, like every other total.
            state.sold = t.units;
            skus.push(SkuFigures {
                state,
                gmv_fen: t.gmv_fen,
                sold_out_at_ms: s.sold_out_at_ms(),
                eta_sold_out_s,
            });
        }
        let mut top: Vec<Referrer> = self
            .referrers
            .iter()
            .map(|(r, &(orders, gmv_fen))| Referrer {
                referrer: r.clone(),
                orders,
                gmv_fen,
            })
            .collect();
        top.sort_by(|a, b| {
            b.gmv_fen
                .cmp(&a.gmv_fen)
                .then(b.orders.cmp(&a.orders))
                .then(a.referrer.cmp(&b.referrer))
        });
        top.truncate(TOP_REFERRERS);
        Figures {
            room: self.room.id.clone(),
            seq: self.seq,
            ts_ms: now,
            gmv_fen: self.gmv_fen,
            orders: self.orders,
            units: self.units,
            buyers,
            viewers: live.viewers.load(Ordering::Relaxed),
            peak_viewers: live.peak_viewers.load(Ordering::Relaxed),
            unique_viewers: unique,
            aov_fen: self.gmv_fen.checked_div(self.orders).unwrap_or(0),
            conversion: if unique == 0 {
                0.0
            } else {
                buyers as f64 / unique as f64
            },
            gpm_fen: (self.gmv_fen as u128 * 1000)
                .checked_div(unique as u128)
                .unwrap_or(0) as u64,
            rejected,
            latency_us: self.latency(),
            skus,
            top_referrers: top,
            hub_seqs: self.from_stream.then(|| self.hub_seqs.clone()),
        }
    }
}

/// Whether two figures differ only in their build time (and ETAs, which drift with time).
fn same_but_time(a: &Figures, b: &Figures) -> bool {
    let strip = |f: &Figures| {
        let mut f = f.clone();
        f.ts_ms = 0;
        for s in &mut f.skus {
            s.eta_sold_out_s = None;
        }
        f
    };
    strip(a) == strip(b)
}

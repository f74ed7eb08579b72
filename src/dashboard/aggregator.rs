//! The per-room aggregator: an actor on a timer (tokio-console's `Aggregator::run` shape). Each
//! tick it folds the new durable orders (in seq order) into its totals and builds a dashboard
//! snapshot for the fan-out slots it serves: those whose figures changed since they were last
//! served, or whose heartbeat is due. Totals come only from the orders, so a snapshot's totals
//! always equal the orders export summed up to its `seq`.
//!
//! Staggered fan-out: with few dashboards a tick comes every push interval and serves every
//! slot the same snapshot. With many, the interval stretches to keep the room within
//! [`FANOUT_FRAMES_PER_S`]; the aggregator then ticks [`FANOUT_SLOTS`] times as often and
//! serves one slot a tick, round robin, with a snapshot built at that tick. The frames a second
//! stay the same, but they go out in waves of a tenth of the audience, each with a fresh `ts_ms`.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::fanout::FANOUT_SLOTS;
use super::referrers::Referrers;
use super::snapshot::{
    AudienceFigures, Figures, Funnel, HubCounts, Latency, MinuteFigures, Published, SkuFigures,
    TrendPoint, TREND_INTERVAL_MS,
};
use crate::clock::now_ms;
use crate::journal::OrderRecord;
use crate::protocol::RejectCode;
use crate::rooms::events::{Event, Moved, What};
use crate::rooms::live::new_latency_histogram;
use crate::rooms::orders::StreamEvent;
use crate::rooms::room::Room;

/// A dashboard snapshot goes out at least this often to every dashboard, changed or not.
pub const HEARTBEAT: Duration = Duration::from_secs(1);

/// Dashboard snapshot frames a second the feed may write to one room's dashboards. Each frame
/// is one socket write on the same cores as the buys, so with many dashboards each one's push
/// interval stretches to stay within this, and the fan-out's share of the CPU stays bounded
/// however many watch: with the defaults, 1,000 dashboards get a snapshot every 100 ms, 5,000
/// every 500 ms in ten waves of 500 (one every 50 ms), 10,000 every second in ten waves of
/// 1,000. It never stretches past [`HEARTBEAT`]. What the fan-out costs the buy path:
/// BENCHMARKS.md, "Dashboards". `--dashboard-frames-per-s` and
/// [`Aggregator::with_fanout_budget`] change it.
pub const FANOUT_FRAMES_PER_S: u64 = crate::config::DEFAULT_DASHBOARD_FRAMES_PER_S;

/// Waves come at most this often: below it, building a snapshot a wave would cost more than
/// the smaller waves save.
pub const MIN_WAVE_INTERVAL: Duration = Duration::from_millis(10);

/// The interval between snapshots for each of `dashboards` connected: the configured one, or
/// longer to keep the room's fan-out within `frames_per_s`, at most [`HEARTBEAT`].
pub fn stretched_interval(base: Duration, dashboards: usize, frames_per_s: u64) -> Duration {
    let fair = Duration::from_micros(dashboards as u64 * 1_000_000 / frames_per_s.max(1));
    base.max(fair).min(HEARTBEAT.max(base))
}

/// The aggregator's tick for that stretched interval: the push interval itself when nothing
/// stretches (every tick serves every slot), else a slot's share of the stretched interval
/// (one slot a tick), not below [`MIN_WAVE_INTERVAL`].
pub fn tick_interval(base: Duration, stretched: Duration) -> Duration {
    if stretched <= base {
        base
    } else {
        (stretched / FANOUT_SLOTS as u32).max(MIN_WAVE_INTERVAL)
    }
}

/// Velocity for the sell-out ETA is measured over this much recent time.
pub const VELOCITY_WINDOW_MS: i64 = 10_000;
/// Latency percentiles cover this many recent seconds.
pub const LATENCY_WINDOW_SECONDS: usize = 10;
/// Top referrers shown.
pub const TOP_REFERRERS: usize = super::referrers::TOP;

/// Adds `delta` to a SKU's unpaid units.
fn s_unpaid(
    skus: &mut HashMap<Arc<str>, SkuTotals, foldhash::fast::RandomState>,
    sku: &Arc<str>,
    delta: i64,
) {
    let s = skus.entry(sku.clone()).or_default();
    s.unpaid = s.unpaid.saturating_add_signed(delta);
}

/// The payment figures (docs/protocol.md, "Orders that must be paid": the snapshot).
#[derive(Debug, Default, Clone)]
struct PayTotals {
    paid_gmv_fen: u64,
    /// Orders paid now (refunded ones no longer).
    paid_orders: u64,
    /// Orders that were ever paid, for the pay rate.
    ever_paid: u64,
    unpaid_fen: u64,
    expired_fen: u64,
    expired_orders: u64,
    cancelled_fen: u64,
    cancelled_orders: u64,
    refunded_fen: u64,
    late_payments: u64,
}

#[derive(Debug, Default)]
struct SkuTotals {
    gmv_fen: u64,
    /// Orders placed.
    orders: u64,
    /// Units of orders that keep them (unpaid, paid, refunded without restock).
    units: u64,
    /// Units of paid orders.
    paid: u64,
    /// Units of unpaid orders.
    unpaid: u64,
    /// `(ts_ms, qty)` of recent orders, for velocity.
    recent: VecDeque<(i64, u64)>,
}

/// What one fan-out slot was last served.
#[derive(Debug, Clone, Copy, Default)]
struct SlotState {
    /// The snapshot's number; `None` before the first.
    number: Option<u64>,
    /// The tick that served it.
    at: Option<Instant>,
    /// The figures' version it carried.
    version: u64,
    /// First trend index new or changed since.
    first_changed: usize,
}

/// Folds orders into figures and publishes dashboard snapshots for one room.
pub struct Aggregator {
    room: Arc<Room>,
    interval: Duration,
    fanout_frames_per_s: u64,
    cursor: usize,
    seq: u64,
    /// The last order event folded in.
    event: u64,
    pay: PayTotals,
    gmv_fen: u64,
    orders: u64,
    units: u64,
    /// The latest `ts_ms` of the orders folded in.
    last_order_ms: Option<i64>,
    // Every order is looked up in these: foldhash (randomly seeded, as in the request
    // table) rather than SipHash.
    buyers: HashSet<Arc<str>, foldhash::fast::RandomState>,
    /// Users who paid an order (the funnel's last step).
    payers: HashSet<Arc<str>, foldhash::fast::RandomState>,
    skus: HashMap<Arc<str>, SkuTotals, foldhash::fast::RandomState>,
    referrers: Referrers,
    /// Shared with the snapshots that carry it; copied only when an order changes it.
    trend: Arc<Vec<TrendPoint>>,
    /// First trend index new or changed since the previous tick (`usize::MAX`: none).
    first_changed: usize,
    latency_now: hdrhistogram::Histogram<u64>,
    latency_past: VecDeque<hdrhistogram::Histogram<u64>>,
    latency_rotated: Instant,
    /// Snapshots built so far (the last one's number).
    number: u64,
    /// Counts changes of the figures; a slot served an older version has news.
    version: u64,
    /// The previous tick's figures, to tell whether anything changed since.
    last: Option<Arc<Figures>>,
    slots: [SlotState; FANOUT_SLOTS],
    /// The slot the next stretched tick serves.
    turn: usize,
    /// Fleet mode: fold the room's stream (every hub's orders) instead of this hub's journal.
    from_stream: bool,
    hub_seqs: BTreeMap<Arc<str>, u64>,
    /// Fleet mode: this hub's id, which names its own counts in `hubs`.
    hub_id: Option<Arc<str>>,
    /// The audience's figures as last read, for a tick that finds them being folded.
    audience: Option<crate::audience::viewers::Figures>,
}

impl Aggregator {
    /// An aggregator for `room` whose dashboards get a snapshot at most every `interval`.
    pub fn new(room: Arc<Room>, interval: Duration) -> Self {
        Aggregator {
            room,
            interval: interval.max(Duration::from_millis(1)),
            fanout_frames_per_s: FANOUT_FRAMES_PER_S,
            cursor: 0,
            seq: 0,
            event: 0,
            pay: PayTotals::default(),
            gmv_fen: 0,
            orders: 0,
            units: 0,
            last_order_ms: None,
            buyers: HashSet::default(),
            payers: HashSet::default(),
            skus: HashMap::default(),
            referrers: Referrers::default(),
            trend: Arc::new(Vec::new()),
            first_changed: usize::MAX,
            latency_now: new_latency_histogram(),
            latency_past: VecDeque::new(),
            latency_rotated: Instant::now(),
            number: 0,
            version: 0,
            last: None,
            slots: [SlotState::default(); FANOUT_SLOTS],
            turn: 0,
            from_stream: false,
            hub_seqs: BTreeMap::new(),
            hub_id: None,
            audience: None,
        }
    }

    /// Fleet mode: the figures come from the room's stream, so they cover every hub.
    pub fn from_stream(mut self) -> Self {
        self.from_stream = true;
        self
    }

    /// Fleet mode: this hub's id, naming its own counts among the hubs'.
    pub fn hub_id(mut self, id: Arc<str>) -> Self {
        self.hub_id = Some(id);
        self
    }

    /// Dashboard snapshot frames a second the room's dashboards may get in all (default
    /// [`FANOUT_FRAMES_PER_S`]); tests set it low to stagger a few dashboards.
    pub fn with_fanout_budget(mut self, frames_per_s: u64) -> Self {
        self.fanout_frames_per_s = frames_per_s.max(1);
        self
    }

    /// The stretched interval for the dashboards connected now.
    fn stretched(&self) -> Duration {
        stretched_interval(
            self.interval,
            self.room.feeds.dashboards.load(Ordering::Relaxed),
            self.fanout_frames_per_s,
        )
    }

    /// How long until the next tick, for the dashboards connected now.
    pub fn tick_interval(&self) -> Duration {
        tick_interval(self.interval, self.stretched())
    }

    /// Ticks until `shutdown`; the tick's length follows the audience. A tick that comes late
    /// (a busy machine) delays the following ones rather than bunching them up.
    pub async fn run(mut self, shutdown: CancellationToken) {
        let mut next = Instant::now();
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep_until(next) => {
                    self.step_at(next, now_ms(), false);
                    next += self.tick_interval();
                    let now = Instant::now();
                    if next < now {
                        next = now;
                    }
                }
            }
        }
    }

    /// [`Aggregator::step_at`] for a tick now.
    pub fn step(&mut self, now: i64, force: bool) -> bool {
        self.step_at(Instant::now(), now, force)
    }

    /// One tick, scheduled at `at` (wall clock `now`, in ms): folds new orders, and serves the
    /// slots that are due (`force` serves every slot regardless). Returns whether it served any.
    ///
    /// A slot is served at most every push interval, when its figures changed since it was
    /// last served or when it would otherwise go a [`HEARTBEAT`] without a snapshot. Unstretched,
    /// every slot is considered each tick; stretched, only the slot whose turn it is, and the
    /// turn waits while that slot was served less than a push interval ago (so the waves
    /// spread out after the audience grows, without any slot ever served too often).
    pub fn step_at(&mut self, at: Instant, now: i64, force: bool) -> bool {
        let room = self.room.clone();
        if self.from_stream {
            self.cursor = room.orders.for_each_stream_from(self.cursor, |e| match e {
                StreamEvent::Placed(s) => {
                    self.fold(&s.order);
                    if let Some(h) = &s.order.hub {
                        self.hub_seqs.insert(h.clone(), s.hub_seq);
                    }
                }
                StreamEvent::Moved(m) => self.fold_move(m),
            });
            self.event = self.cursor as u64;
        } else {
            self.cursor = room.events.for_each_from(self.cursor, |e| match e {
                Event::Placed(o) => self.fold(o),
                Event::Moved(m) => self.fold_move(m),
            });
            self.event = self.cursor as u64;
        }
        self.take_latencies();
        let figures = Arc::new(self.figures(now));
        if !self
            .last
            .as_ref()
            .is_some_and(|prev| same_but_time(prev, &figures))
        {
            self.version += 1;
        }
        let changed_from = std::mem::replace(&mut self.first_changed, usize::MAX);
        for s in &mut self.slots {
            s.first_changed = s.first_changed.min(changed_from);
        }
        let stretched = self.stretched();
        let staggered = stretched > self.interval;
        // Until a slot's next chance: the next tick, or, staggered, its next turn.
        let next_chance = tick_interval(self.interval, stretched)
            * if staggered { FANOUT_SLOTS as u32 } else { 1 };
        let since = |s: &SlotState| s.at.map(|t| at.saturating_duration_since(t));
        let ready = |s: &SlotState| since(s).is_none_or(|d| d >= self.interval);
        let wants = |s: &SlotState| match since(s) {
            None => true,
            // Waiting for its next chance would take it past the heartbeat.
            Some(d) => s.version < self.version || d + next_chance > HEARTBEAT,
        };
        let mut serve = [false; FANOUT_SLOTS];
        if force {
            serve = [true; FANOUT_SLOTS];
        } else if !staggered {
            for (i, s) in self.slots.iter().enumerate() {
                serve[i] = ready(s) && wants(s);
            }
        } else {
            let s = &self.slots[self.turn];
            if ready(s) {
                serve[self.turn] = wants(s);
                self.turn = (self.turn + 1) % FANOUT_SLOTS;
            }
        }
        self.last = Some(figures.clone());
        if !serve.contains(&true) {
            return false;
        }
        self.number += 1;
        let built = Published::new(self.number, figures, self.trend.clone());
        let trend_len = self.trend.len();
        // One `Published` per distinct (previous snapshot, first changed point): slots served
        // together every tick share it, and with it the encoding of both renderings.
        let mut made: Vec<(Option<u64>, usize, Arc<Published>)> = Vec::new();
        let mut to_serve = Vec::new();
        for (i, s) in self.slots.iter_mut().enumerate() {
            if !serve[i] {
                continue;
            }
            let fc = s.first_changed.min(trend_len);
            let p = match made.iter().find(|m| m.0 == s.number && m.1 == fc) {
                Some(m) => m.2.clone(),
                None => {
                    let p = Arc::new(built.following(s.number, fc));
                    made.push((s.number, fc, p.clone()));
                    p
                }
            };
            to_serve.push((i, p));
            *s = SlotState {
                number: Some(self.number),
                at: Some(at),
                version: self.version,
                // The last point may still fill up; it always goes again.
                first_changed: trend_len.saturating_sub(1),
            };
        }
        // The room's latest first, then the slots: a dashboard takes its seat and then reads
        // the room's latest, which is so never older than what its slot held when it sat
        // down, and the slot's next snapshot follows it as a delta.
        self.room
            .feeds
            .snapshots
            .send_replace(Some(to_serve[0].1.clone()));
        for (i, p) in to_serve {
            self.room.feeds.fanout.serve(i, p);
        }
        true
    }

    fn fold(&mut self, o: &Arc<OrderRecord>) {
        self.seq = o.seq;
        add_fen(&mut self.gmv_fen, o.amount_fen);
        self.orders += 1;
        self.units += o.qty;
        self.last_order_ms = self.last_order_ms.max(Some(o.ts_ms));
        if !self.buyers.contains(&o.user) {
            self.buyers.insert(o.user.clone());
        }
        let s = self.skus.entry(o.sku.clone()).or_default();
        add_fen(&mut s.gmv_fen, o.amount_fen);
        s.orders += 1;
        s.units += o.qty;
        s.recent.push_back((o.ts_ms, o.qty));
        if let Some(r) = &o.referrer {
            self.referrers.add(r, o.amount_fen);
        }
        let i = self.trend_point(o.ts_ms);
        let trend = Arc::make_mut(&mut self.trend);
        add_fen(&mut trend[i].gmv_fen, o.amount_fen);
        trend[i].orders += 1;
        if o.pay_by_ms.is_some() {
            add_fen(&mut self.pay.unpaid_fen, o.amount_fen);
            s_unpaid(&mut self.skus, &o.sku, o.qty as i64);
        } else {
            self.paid(o, o.ts_ms);
        }
    }

    /// An order became paid at `ts_ms` (the hub's clock; on placement for a SKU without a
    /// payment timeout).
    fn paid(&mut self, o: &OrderRecord, ts_ms: i64) {
        add_fen(&mut self.pay.paid_gmv_fen, o.amount_fen);
        self.pay.paid_orders += 1;
        self.pay.ever_paid += 1;
        if !self.payers.contains(&o.user) {
            self.payers.insert(o.user.clone());
        }
        if let Some(s) = self.skus.get_mut(&o.sku) {
            s.paid += o.qty;
        }
        let i = self.trend_point(ts_ms);
        let trend = Arc::make_mut(&mut self.trend);
        add_fen(&mut trend[i].paid_gmv_fen, o.amount_fen);
    }

    /// Folds a status move.
    fn fold_move(&mut self, m: &Moved) {
        let o = &*m.order;
        let unpaid_left = |agg: &mut Self| {
            agg.pay.unpaid_fen = agg.pay.unpaid_fen.saturating_sub(o.amount_fen);
            s_unpaid(&mut agg.skus, &o.sku, -(o.qty as i64));
        };
        match &m.what {
            What::Paid(_) => {
                unpaid_left(self);
                self.paid(o, m.ts_ms);
            }
            What::Expired => {
                unpaid_left(self);
                add_fen(&mut self.pay.expired_fen, o.amount_fen);
                self.pay.expired_orders += 1;
            }
            What::Cancelled { .. } => {
                unpaid_left(self);
                add_fen(&mut self.pay.cancelled_fen, o.amount_fen);
                self.pay.cancelled_orders += 1;
            }
            What::Refunded { paid_ts_ms, .. } => {
                self.pay.paid_gmv_fen = self.pay.paid_gmv_fen.saturating_sub(o.amount_fen);
                self.pay.paid_orders = self.pay.paid_orders.saturating_sub(1);
                add_fen(&mut self.pay.refunded_fen, o.amount_fen);
                if let Some(s) = self.skus.get_mut(&o.sku) {
                    s.paid = s.paid.saturating_sub(o.qty);
                }
                let i = self.trend_point(*paid_ts_ms);
                let trend = Arc::make_mut(&mut self.trend);
                trend[i].paid_gmv_fen = trend[i].paid_gmv_fen.saturating_sub(o.amount_fen);
            }
            What::Late { .. } => self.pay.late_payments += 1,
        }
        if m.released() {
            if let Some(s) = self.skus.get_mut(&o.sku) {
                s.units = s.units.saturating_sub(o.qty);
            }
        }
    }

    /// The index of the trend point that holds `ts_ms`, made if missing, and marked changed.
    /// Copies the trend only if a published snapshot still shares it.
    fn trend_point(&mut self, ts_ms: i64) -> usize {
        let t = ts_ms - ts_ms.rem_euclid(TREND_INTERVAL_MS);
        let trend = Arc::make_mut(&mut self.trend);
        let empty = TrendPoint {
            t_ms: t,
            gmv_fen: 0,
            orders: 0,
            paid_gmv_fen: 0,
            online: 0,
        };
        let i = match trend.last() {
            Some(p) if p.t_ms == t => trend.len() - 1,
            Some(p) if p.t_ms < t => {
                trend.push(empty);
                trend.len() - 1
            }
            None => {
                trend.push(empty);
                0
            }
            Some(_) => match trend.binary_search_by_key(&t, |p| p.t_ms) {
                Ok(i) => i,
                Err(i) => {
                    trend.insert(i, empty);
                    i
                }
            },
        };
        self.first_changed = self.first_changed.min(i);
        i
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

    /// Notes the audience online now in the trend point of `now`, when that second has one (a
    /// point is a second with orders: a quiet second still has none) and the figure changed.
    fn note_online(&mut self, now: i64, online: u64) {
        let t = now - now.rem_euclid(TREND_INTERVAL_MS);
        if !self
            .trend
            .last()
            .is_some_and(|p| p.t_ms == t && p.online != online)
        {
            return;
        }
        let i = self.trend_point(now);
        Arc::make_mut(&mut self.trend)[i].online = online;
    }

    /// The audience's figures now, without waiting: while a fold holds them (or a big one is
    /// queued, which this asks the background pool for), the last tick's, and the next tick
    /// reads again. The tick runs on a runtime worker, whose buyers would wait with it.
    fn audience_figures(&mut self, now: i64) -> crate::audience::viewers::Figures {
        let audience = &self.room.audience;
        if let Some(f) = audience.try_with(|s| s.figures(now)) {
            self.audience = Some(f.clone());
            return f;
        }
        if audience.ask_fold() {
            let room = self.room.clone();
            crate::background::spawn(move || room.audience.fold());
        }
        match &self.audience {
            Some(f) => f.clone(),
            // The first tick has nothing older: the live counts, and the rest next tick.
            None => {
                let (online, peak, unique) = audience.live_counts();
                crate::audience::viewers::Figures {
                    online,
                    peak,
                    unique,
                    ..Default::default()
                }
            }
        }
    }

    fn figures(&mut self, now: i64) -> Figures {
        let mut audience = self.audience_figures(now);
        let room = self.room.clone();
        let live = &room.live;
        let own = HubCounts {
            hub: self.hub_id.clone().unwrap_or_else(|| Arc::from("")),
            viewers: live.viewers.load(Ordering::Relaxed),
            peak_viewers: live.peak_viewers.load(Ordering::Relaxed),
            unique_viewers: live.unique_viewers.len() as u64,
            online: audience.online,
            peak: audience.peak,
            unique: audience.unique,
        };
        // Fleet mode: the room's counts across the running hubs.
        let (counts, hubs) = if self.from_stream {
            let (room, hubs) = crate::fleet::live::across(own, live.other_hubs().as_deref());
            (room, Some(hubs))
        } else {
            (own, None)
        };
        (audience.online, audience.peak, audience.unique) =
            (counts.online, counts.peak, counts.unique);
        if audience.unique > 0 {
            self.note_online(now, audience.online);
        }
        let unique = counts.unique_viewers;
        let buyers = self.buyers.len() as u64;
        let rejected = RejectCode::ALL
            .iter()
            .filter_map(|c| {
                let n = live.rejected[c.index()].load(Ordering::Relaxed);
                (n > 0).then(|| (c.as_str().to_owned(), n))
            })
            .collect();
        let mut skus = Vec::new();
        for s in self.room.skus.list() {
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
            let clicks = audience.clicks.get(&s.id).copied().unwrap_or(0);
            skus.push(SkuFigures {
                clicks,
                click_to_order: if clicks == 0 {
                    0.0
                } else {
                    t.orders as f64 / clicks as f64
                },
                paid: t.paid,
                unpaid: t.unpaid,
                state,
                gmv_fen: t.gmv_fen,
                sold_out_at_ms: s.sold_out_at_ms(),
                eta_sold_out_s,
            });
        }
        let top = self.referrers.top().to_vec();
        Figures {
            room: self.room.id.clone(),
            seq: self.seq,
            ts_ms: now,
            gmv_fen: self.gmv_fen,
            orders: self.orders,
            units: self.units,
            buyers,
            viewers: counts.viewers,
            peak_viewers: counts.peak_viewers,
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
            hubs,
            event: self.event,
            paid_gmv_fen: self.pay.paid_gmv_fen,
            paid_orders: self.pay.paid_orders,
            unpaid_fen: self.pay.unpaid_fen,
            expired_fen: self.pay.expired_fen,
            cancelled_fen: self.pay.cancelled_fen,
            refunded_fen: self.pay.refunded_fen,
            late_payments: self.pay.late_payments,
            pay_rate: {
                let settled =
                    self.pay.ever_paid + self.pay.expired_orders + self.pay.cancelled_orders;
                if settled == 0 {
                    0.0
                } else {
                    self.pay.ever_paid as f64 / settled as f64
                }
            },
            funnel: Funnel {
                entered: audience.entered,
                clicked: audience.clicked,
                ordered: buyers,
                paid: self.payers.len() as u64,
            },
            last_order_ms: self.last_order_ms,
            audience: AudienceFigures {
                online: audience.online,
                peak: audience.peak,
                unique: audience.unique,
                avg_watch_s: (audience.avg_watch_s * 10.0).round() / 10.0,
                likes: audience.likes,
                comments: audience.comments,
                shares: audience.shares,
                follows: audience.follows,
                sources: audience
                    .sources
                    .iter()
                    .map(|(s, n)| (s.to_string(), *n))
                    .collect(),
                per_minute: audience
                    .per_minute
                    .iter()
                    .map(|(t, m)| MinuteFigures {
                        t_ms: *t,
                        likes: m.likes,
                        comments: m.comments,
                        shares: m.shares,
                    })
                    .collect(),
            },
        }
    }
}

/// Adds an order's amount to a sum of fen. An order is at most 10^18 fen (the catalog's price
/// and `qty` bounds), so a sum of `u64` fen holds about 18 such orders at the least and
/// 1.8 × 10^17 CNY in all; past that it stays at `u64::MAX` (never wraps) and the overflow is
/// logged and counted (`livehub_money_overflows_total`).
fn add_fen(sum: &mut u64, amount_fen: u64) {
    match sum.checked_add(amount_fen) {
        Some(v) => *sum = v,
        None => {
            *sum = u64::MAX;
            metrics::counter!("livehub_money_overflows_total").increment(1);
            tracing::error!(amount_fen, "a sum of fen reached u64::MAX; it stays there");
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sum_of_fen_stops_at_the_top_and_never_wraps() {
        let mut sum = 0;
        add_fen(&mut sum, 1_000_000_000_000_000_000);
        assert_eq!(sum, 1_000_000_000_000_000_000);
        for _ in 0..20 {
            add_fen(&mut sum, 1_000_000_000_000_000_000);
        }
        assert_eq!(sum, u64::MAX, "saturated, not wrapped");
    }
}

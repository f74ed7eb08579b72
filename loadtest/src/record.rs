//! Latency recorders: one HDR histogram for the whole run, plus a timeline of fixed-width
//! buckets (count, ok, rejected, p50/p99/max) for the charts.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use serde::Serialize;
use serde_json::{json, Value};

/// Latencies are recorded in microseconds, up to an hour.
pub(crate) const MAX_US: u64 = 3_600_000_000;

#[derive(Debug, Clone, Copy)]
pub enum Outcome<'a> {
    /// An accepted buy.
    Ok,
    /// A rejected buy, with its error code.
    Rejected(&'a str),
    /// Anything else that has a latency (a dashboard snapshot, a pong, a connect).
    Event,
}

/// One bucket of the timeline.
#[derive(Debug, Clone, Serialize)]
pub struct Point {
    /// Bucket start, seconds since the recorder started.
    pub t: f64,
    pub count: u64,
    pub ok: u64,
    pub rejected: u64,
    /// Events a second in this bucket.
    pub rate: f64,
    pub p50_ms: Option<f64>,
    pub p99_ms: Option<f64>,
    pub max_ms: Option<f64>,
}

struct Inner {
    all: Histogram<u64>,
    /// Accepted buys only: they wait for the journal, rejections do not.
    all_ok: Histogram<u64>,
    cur_idx: u64,
    cur: Histogram<u64>,
    cur_count: u64,
    cur_ok: u64,
    cur_rej: u64,
    points: Vec<Point>,
    reasons: BTreeMap<String, u64>,
}

pub struct Recorder {
    pub name: String,
    pub start: Instant,
    bucket: Duration,
    pub count: AtomicU64,
    pub ok: AtomicU64,
    pub rejected: AtomicU64,
    inner: Mutex<Inner>,
    /// Also records each value in the recorder of the window it began in.
    split: OnceLock<Split>,
}

/// Alternating windows of one run, from `t0`, each `period` long: the even ones quiet, the
/// odd ones with a second load. Short windows, one after the other, put a stall of the host's
/// into both kinds alike, where two long phases one after the other would leave it to one.
#[derive(Debug, Clone, Copy)]
pub struct Alternation {
    pub t0: Instant,
    pub period: Duration,
}

impl Alternation {
    /// 1 when `at` falls in an odd (busy) window, else 0 (before `t0` too).
    pub fn phase(&self, at: Instant) -> usize {
        let Some(d) = at.checked_duration_since(self.t0) else {
            return 0;
        };
        ((d.as_nanos() / self.period.as_nanos().max(1)) % 2) as usize
    }

    /// The instant at which the busy windows together have run for `busy`.
    pub fn busy_at(&self, busy: Duration) -> Instant {
        let p = self.period.as_nanos().max(1);
        let b = busy.as_nanos();
        let (w, rest) = (b / p, b % p);
        self.t0 + Duration::from_nanos(((2 * w + 1) * p + rest) as u64)
    }
}

/// Where a split recorder also records: by the window each value began in.
pub struct Split {
    pub alternation: Alternation,
    /// [quiet windows, busy windows].
    pub phases: [Arc<Recorder>; 2],
}

pub(crate) fn hist(sigfig: u8) -> Histogram<u64> {
    Histogram::new_with_bounds(1, MAX_US, sigfig).expect("valid histogram bounds")
}

pub fn ms(us: u64) -> f64 {
    (us as f64 / 1000.0 * 1000.0).round() / 1000.0
}

impl Recorder {
    pub fn new(name: &str, start: Instant, bucket: Duration) -> Arc<Recorder> {
        Arc::new(Recorder {
            name: name.to_owned(),
            start,
            bucket,
            count: AtomicU64::new(0),
            ok: AtomicU64::new(0),
            rejected: AtomicU64::new(0),
            inner: Mutex::new(Inner {
                all: hist(3),
                all_ok: hist(3),
                cur_idx: 0,
                cur: hist(2),
                cur_count: 0,
                cur_ok: 0,
                cur_rej: 0,
                points: Vec::new(),
                reasons: BTreeMap::new(),
            }),
            split: OnceLock::new(),
        })
    }

    /// From now on every value is also recorded in `split`'s recorder of the window it began
    /// in (its arrival less its latency). Set once.
    pub fn split(&self, split: Split) {
        let _ = self.split.set(split);
    }

    fn idx(&self, at: Instant) -> u64 {
        (at.saturating_duration_since(self.start).as_nanos() / self.bucket.as_nanos().max(1)) as u64
    }

    pub fn record(&self, at: Instant, latency_us: u64, outcome: Outcome) {
        if let Some(s) = self.split.get() {
            let began = at
                .checked_sub(Duration::from_micros(latency_us))
                .unwrap_or(at);
            s.phases[s.alternation.phase(began)].record(at, latency_us, outcome);
        }
        self.count.fetch_add(1, Ordering::Relaxed);
        let idx = self.idx(at);
        let mut g = self.inner.lock().unwrap();
        self.roll(&mut g, idx);
        let v = latency_us.clamp(1, MAX_US);
        g.all.saturating_record(v);
        g.cur.saturating_record(v);
        g.cur_count += 1;
        match outcome {
            Outcome::Ok => {
                self.ok.fetch_add(1, Ordering::Relaxed);
                g.all_ok.saturating_record(v);
                g.cur_ok += 1;
            }
            Outcome::Rejected(code) => {
                self.rejected.fetch_add(1, Ordering::Relaxed);
                g.cur_rej += 1;
                if let Some(n) = g.reasons.get_mut(code) {
                    *n += 1;
                } else {
                    g.reasons.insert(code.to_owned(), 1);
                }
            }
            Outcome::Event => {}
        }
    }

    /// Closes the buckets that ended before `now`.
    pub fn tick(&self, now: Instant) {
        let idx = self.idx(now);
        let mut g = self.inner.lock().unwrap();
        self.roll(&mut g, idx);
    }

    fn roll(&self, g: &mut Inner, idx: u64) {
        let secs = self.bucket.as_secs_f64();
        while g.cur_idx < idx {
            let empty = g.cur_count == 0;
            let p = Point {
                t: g.cur_idx as f64 * secs,
                count: g.cur_count,
                ok: g.cur_ok,
                rejected: g.cur_rej,
                rate: g.cur_count as f64 / secs,
                p50_ms: (!empty).then(|| ms(g.cur.value_at_quantile(0.5))),
                p99_ms: (!empty).then(|| ms(g.cur.value_at_quantile(0.99))),
                max_ms: (!empty).then(|| ms(g.cur.max())),
            };
            g.points.push(p);
            g.cur.reset();
            g.cur_count = 0;
            g.cur_ok = 0;
            g.cur_rej = 0;
            g.cur_idx += 1;
        }
    }

    /// Everything recorded, with the timeline closed at `end`.
    pub fn finish(&self, end: Instant) -> Finished {
        // Close the bucket `end` falls in too; its rate is over the part that elapsed.
        let idx = self.idx(end) + 1;
        let mut g = self.inner.lock().unwrap();
        self.roll(&mut g, idx);
        if let Some(last) = g.points.last_mut() {
            let covered = end.saturating_duration_since(self.start).as_secs_f64() - last.t;
            if covered > 0.0 && covered < self.bucket.as_secs_f64() {
                last.rate = last.count as f64 / covered.max(0.05 * self.bucket.as_secs_f64());
            }
        }
        Finished {
            name: self.name.clone(),
            bucket_s: self.bucket.as_secs_f64(),
            hist: g.all.clone(),
            hist_ok: g.all_ok.clone(),
            points: g.points.clone(),
            reasons: g.reasons.clone(),
            count: self.count.load(Ordering::Relaxed),
            ok: self.ok.load(Ordering::Relaxed),
            rejected: self.rejected.load(Ordering::Relaxed),
        }
    }
}

/// A recorder's final figures.
#[derive(Clone)]
pub struct Finished {
    pub name: String,
    pub bucket_s: f64,
    pub hist: Histogram<u64>,
    /// The ok acks' latencies alone.
    pub hist_ok: Histogram<u64>,
    pub points: Vec<Point>,
    pub reasons: BTreeMap<String, u64>,
    pub count: u64,
    pub ok: u64,
    pub rejected: u64,
}

/// Percentiles the distribution chart shows.
pub const DIST_PERCENTILES: [f64; 17] = [
    0.0, 10.0, 25.0, 50.0, 75.0, 90.0, 95.0, 98.0, 99.0, 99.5, 99.9, 99.95, 99.99, 99.995, 99.999,
    99.9999, 100.0,
];

impl Finished {
    pub fn latency_json(&self) -> Value {
        latency_json(&self.hist)
    }

    pub fn p(&self, q: f64) -> f64 {
        ms(self.hist.value_at_quantile(q))
    }

    pub fn distribution(&self) -> Vec<(f64, f64)> {
        distribution(&self.hist)
    }

    /// The ok acks' distribution, when some acks were not ok (otherwise it is the whole one).
    pub fn distribution_ok(&self) -> Vec<(f64, f64)> {
        if self.ok == self.count {
            return Vec::new();
        }
        distribution(&self.hist_ok)
    }
}

fn distribution(h: &Histogram<u64>) -> Vec<(f64, f64)> {
    if h.is_empty() {
        return Vec::new();
    }
    DIST_PERCENTILES
        .iter()
        .map(|&p| (p, ms(h.value_at_percentile(p))))
        .collect()
}

pub fn latency_json(h: &Histogram<u64>) -> Value {
    if h.is_empty() {
        return json!({"count": 0});
    }
    json!({
        "count": h.len(),
        "mean_ms": (h.mean() / 1000.0 * 1000.0).round() / 1000.0,
        "p50_ms": ms(h.value_at_quantile(0.5)),
        "p90_ms": ms(h.value_at_quantile(0.9)),
        "p99_ms": ms(h.value_at_quantile(0.99)),
        "p999_ms": ms(h.value_at_quantile(0.999)),
        "max_ms": ms(h.max()),
    })
}

/// A plain histogram for things measured once per connection (connect times and the like).
pub struct Simple(Mutex<Histogram<u64>>);

impl Default for Simple {
    fn default() -> Self {
        Simple::new()
    }
}

impl Simple {
    pub fn new() -> Simple {
        Simple(Mutex::new(hist(3)))
    }
    pub fn record(&self, us: u64) {
        self.0
            .lock()
            .unwrap()
            .saturating_record(us.clamp(1, MAX_US));
    }
    /// Adds a histogram of the same bounds (one connection's, say).
    pub fn merge(&self, h: &Histogram<u64>) {
        let _ = self.0.lock().unwrap().add(h);
    }
    pub fn json(&self) -> Value {
        latency_json(&self.0.lock().unwrap())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The ok acks' histogram holds them alone; the whole one holds every latency.
    #[test]
    fn ok_latencies_are_kept_apart() {
        let start = Instant::now();
        let rec = Recorder::new("t", start, Duration::from_millis(100));
        rec.record(start, 1_000, Outcome::Ok);
        rec.record(start, 2_000, Outcome::Ok);
        rec.record(start, 90_000, Outcome::Rejected("sold_out"));
        rec.record(start, 50_000, Outcome::Event);
        let f = rec.finish(start + Duration::from_millis(10));
        assert_eq!((f.count, f.ok, f.rejected), (4, 2, 1));
        assert_eq!(f.hist.len(), 4);
        assert_eq!(f.hist_ok.len(), 2);
        assert!(f.hist_ok.max() < 2_100, "{}", f.hist_ok.max());
        assert!(f.hist.max() >= 89_000);
        assert_eq!(f.reasons.get("sold_out"), Some(&1));
        let ok_max = f.distribution_ok().last().map(|d| d.1);
        assert!(ok_max.is_some_and(|m| m < 2.1), "{ok_max:?}");
        assert!(f.distribution().last().is_some_and(|d| d.1 >= 89.0));
    }

    /// Windows alternate quiet, busy, quiet, ...; busy time maps into the odd windows only.
    #[test]
    fn alternation_windows_and_busy_time() {
        let t0 = Instant::now();
        let alt = Alternation {
            t0,
            period: Duration::from_millis(100),
        };
        let ms = Duration::from_millis;
        assert_eq!(alt.phase(t0), 0);
        assert_eq!(alt.phase(t0 + ms(99)), 0);
        assert_eq!(alt.phase(t0 + ms(100)), 1);
        assert_eq!(alt.phase(t0 + ms(250)), 0);
        assert_eq!(alt.phase(t0 + ms(350)), 1);
        assert_eq!(alt.busy_at(ms(0)), t0 + ms(100));
        assert_eq!(alt.busy_at(ms(40)), t0 + ms(140));
        assert_eq!(alt.busy_at(ms(100)), t0 + ms(300));
        assert_eq!(alt.busy_at(ms(230)), t0 + ms(530));
        for k in 0..50 {
            assert_eq!(alt.phase(alt.busy_at(ms(7 * k))), 1, "busy time {k}");
        }
    }

    /// A split recorder files each value under the window it began in, not the one it ended in.
    #[test]
    fn a_split_recorder_files_values_by_their_start() {
        let start = Instant::now();
        let rec = Recorder::new("all", start, Duration::from_secs(1));
        let quiet = Recorder::new("quiet", start, Duration::from_secs(1));
        let busy = Recorder::new("busy", start, Duration::from_secs(1));
        let alternation = Alternation {
            t0: start,
            period: Duration::from_millis(100),
        };
        rec.split(Split {
            alternation,
            phases: [quiet.clone(), busy.clone()],
        });
        // Began at 50 ms (quiet), answered at 150 ms (busy).
        rec.record(start + Duration::from_millis(150), 100_000, Outcome::Ok);
        // Began at 120 ms (busy).
        rec.record(
            start + Duration::from_millis(130),
            10_000,
            Outcome::Rejected("x"),
        );
        // Began at 210 ms (quiet).
        rec.record(start + Duration::from_millis(211), 1_000, Outcome::Event);
        let end = start + Duration::from_secs(1);
        let (a, q, b) = (rec.finish(end), quiet.finish(end), busy.finish(end));
        assert_eq!(a.count, 3);
        assert_eq!((q.count, q.ok), (2, 1));
        assert!(q.hist.max() >= 99_000);
        assert_eq!((b.count, b.rejected), (1, 1));
        assert!(b.hist.max() < 11_000);
    }
}

//! A hiccup meter, after jHiccup: a thread of its own asks to sleep 1 ms at a time and records
//! by how much each wake-up came late. It does no work, so its lateness is what any thread on
//! this machine met in the same moments: runnable threads queueing for the cores, or the host
//! taking the CPU away from the VM. Every run's summary carries it (`machine.hiccups`), so a
//! latency tail can be set beside the stalls the machine itself had while it was measured.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use serde_json::{json, Value};

use crate::record::{hist, latency_json, ms, MAX_US};

/// How long the meter asks to sleep each time.
pub const TICK: Duration = Duration::from_millis(1);
/// The timeline's bucket: the report draws the latest wake-up of each.
pub const BUCKET: Duration = Duration::from_millis(100);
/// Most buckets the timeline keeps (only those with a wake-up over 1 ms late are kept: about
/// three hours if every bucket had one).
const MAX_BUCKETS: usize = 100_000;

/// What the meter saw over some span.
struct Seen {
    late: Histogram<u64>,
    /// Wake-ups over 1 ms late.
    over_1ms: u64,
    /// The wake-up that came latest (µs late) and when, since the run's start.
    worst: (u64, Duration),
}

impl Seen {
    fn new() -> Seen {
        Seen {
            late: hist(3),
            over_1ms: 0,
            worst: (0, Duration::ZERO),
        }
    }

    fn add(&mut self, late: u64, at: Duration) {
        self.late.saturating_record(late.clamp(1, MAX_US));
        if late > 1_000 {
            self.over_1ms += 1;
        }
        if late > self.worst.0 {
            self.worst = (late, at);
        }
    }

    fn json(&self) -> Value {
        json!({
            "tick_ms": TICK.as_secs_f64() * 1e3,
            "late": latency_json(&self.late),
            "over_1ms": self.over_1ms,
            "worst_at_s": (self.worst.1.as_secs_f64() * 10.0).round() / 10.0,
        })
    }
}

/// The whole run's figures, the current phase's, and the timeline.
struct Both {
    run: Seen,
    phase: Seen,
    /// (bucket index, the latest wake-up's µs late, wake-ups over 1 ms late) of each bucket
    /// that had one over 1 ms late, in order.
    stalls: Vec<(u64, u64, u32)>,
}

impl Both {
    fn add(&mut self, late: u64, at: Duration) {
        self.run.add(late, at);
        self.phase.add(late, at);
        if late <= 1_000 {
            return;
        }
        let idx = (at.as_nanos() / BUCKET.as_nanos()) as u64;
        if let Some(b) = self.stalls.last_mut().filter(|b| b.0 == idx) {
            b.1 = b.1.max(late);
            b.2 += 1;
        } else if self.stalls.len() < MAX_BUCKETS {
            self.stalls.push((idx, late, 1));
        }
    }
}

pub struct Meter {
    seen: Arc<Mutex<Both>>,
    stop: Arc<AtomicBool>,
    thread: Mutex<Option<JoinHandle<()>>>,
}

impl Meter {
    /// Starts the meter's thread; it runs until [`Meter::stop`] or the process ends. Times in
    /// its figures count from `t0` (the run's start).
    pub fn start(t0: Instant) -> Meter {
        let seen = Arc::new(Mutex::new(Both {
            run: Seen::new(),
            phase: Seen::new(),
            stalls: Vec::new(),
        }));
        let stop = Arc::new(AtomicBool::new(false));
        let (s, halt) = (seen.clone(), stop.clone());
        let thread = std::thread::Builder::new()
            .name("hiccup-meter".into())
            .spawn(move || {
                let mut due = Instant::now() + TICK;
                while !halt.load(Ordering::Relaxed) {
                    std::thread::sleep(due.saturating_duration_since(Instant::now()));
                    let woke = Instant::now();
                    let late = woke.saturating_duration_since(due).as_micros() as u64;
                    // A tick after this wake-up: the time until then counts too, so a stall
                    // while the thread was not asleep shows in the next tick.
                    due = woke + TICK;
                    s.lock()
                        .unwrap()
                        .add(late, woke.saturating_duration_since(t0));
                }
            })
            .ok();
        Meter {
            seen,
            stop,
            thread: Mutex::new(thread),
        }
    }

    /// Stops the thread (idempotent); what it saw stays readable.
    pub fn stop(&self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.lock().unwrap().take() {
            let _ = t.join();
        }
    }

    /// The run's figures so far: `{"tick_ms", "late": {count, p50_ms, ..}, "over_1ms",
    /// "worst_at_s"}` (`late` has a count of 0 when the thread could not start).
    pub fn json(&self) -> Value {
        self.seen.lock().unwrap().run.json()
    }

    /// The timeline for the report: `[t_s, ms, n]` for each [`BUCKET`] (from `t0`) in which
    /// `n` wake-ups came over 1 ms late, the latest by `ms`. Buckets without are left out.
    pub fn stalls(&self) -> Vec<Value> {
        let b = BUCKET.as_secs_f64();
        self.seen
            .lock()
            .unwrap()
            .stalls
            .iter()
            .map(|&(i, us, n)| json!([(i as f64 * b * 10.0).round() / 10.0, ms(us), n]))
            .collect()
    }

    /// The figures since the last call (or the start), in the same shape; the next phase
    /// starts empty. A scenario calls it once as a phase begins and once as it ends.
    pub fn phase(&self) -> Value {
        let mut g = self.seen.lock().unwrap();
        let j = g.phase.json();
        g.phase = Seen::new();
        j
    }
}

impl Drop for Meter {
    fn drop(&mut self) {
        self.stop();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The meter ticks about once a millisecond and sees a stall: while another thread holds
    /// the meter's lock for 30 ms, the meter's thread cannot go back to sleep, so its next tick
    /// is due long before it wakes.
    #[test]
    fn records_each_tick_and_a_stall() {
        // Not synchronisation: the meter measures the real clock, so the test lets it tick
        // for real time (100 ms, then 20 ms more) and stalls it for real (30 ms).
        let m = Meter::start(Instant::now());
        std::thread::sleep(Duration::from_millis(100));
        {
            let _held = m.seen.lock().unwrap();
            std::thread::sleep(Duration::from_millis(30));
        }
        std::thread::sleep(Duration::from_millis(20));
        m.stop();
        let p = m.phase();
        assert_eq!(m.phase()["late"]["count"], 0, "a phase starts empty");
        let j = m.json();
        assert_eq!(p["late"], j["late"], "one phase: the whole run");
        let n = j["late"]["count"].as_u64().unwrap();
        assert!((20..=160).contains(&n), "{j}");
        assert!(j["late"]["max_ms"].as_f64().unwrap() >= 20.0, "{j}");
        assert!(j["over_1ms"].as_u64().unwrap() >= 1, "{j}");
        // The stall is on the timeline, at about 100 ms, as late as the summary's worst.
        let stalls = m.stalls();
        let worst = stalls
            .iter()
            .max_by(|a, b| a[1].as_f64().partial_cmp(&b[1].as_f64()).unwrap())
            .expect("a bucket with the stall");
        let (w, max) = (
            worst[1].as_f64().unwrap(),
            j["late"]["max_ms"].as_f64().unwrap(),
        );
        assert!(
            (w - max).abs() < 0.05,
            "worst {w} ms, max {max} ms: {stalls:?}"
        );
        let t = worst[0].as_f64().unwrap();
        assert!((0.1..=0.2).contains(&t), "stall at {t} s: {stalls:?}");
    }
}

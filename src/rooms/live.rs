//! A room's live figures: its audience, its refusals by reason, its buy-to-ack times, and when
//! its buyer sockets and audience were last seen, updated by the buyer tasks (and the journal's
//! apply) and read by the room's dashboard aggregator and the overview.

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use dashmap::{DashMap, DashSet};

use crate::protocol::RejectCode;

/// Largest latency the histograms track; slower acks are counted at this value.
pub const MAX_LATENCY_US: u64 = 60_000_000;

/// An empty latency histogram: 1 µs to [`MAX_LATENCY_US`], 3 significant digits.
pub fn new_latency_histogram() -> hdrhistogram::Histogram<u64> {
    hdrhistogram::Histogram::new_with_bounds(1, MAX_LATENCY_US, 3).expect("valid histogram bounds")
}

/// Audience and buy-path figures of a room. Buyer tasks update them through the methods; the
/// aggregator reads the fields.
#[derive(Debug)]
pub struct LiveStats {
    pub viewers: AtomicU64,
    pub peak_viewers: AtomicU64,
    pub unique_viewers: DashSet<Arc<str>>,
    pub rejected: [AtomicU64; RejectCode::ALL.len()],
    /// Buy-to-ack times in microseconds since the aggregator last took them.
    pub latency_us: Mutex<hdrhistogram::Histogram<u64>>,
    /// Buyer sockets open now per user ([`LiveStats::seat`]).
    sockets_per_user: Arc<DashMap<Arc<str>, usize>>,
    /// When a buyer socket last opened or closed (Unix ms; 0: never since the hub started).
    last_socket_ms: AtomicI64,
    /// When the hub last took a batch of audience events (Unix ms, the hub's clock; 0: none
    /// in the journal since its last snapshot).
    last_audience_ms: AtomicI64,
    /// Fleet mode: the other hubs' live counts of the room and its peaks across hubs, as last
    /// read from Redis ([`crate::fleet::live`]).
    pub other_hubs: Mutex<Option<Arc<OtherHubs>>>,
}

/// The other running hubs' live counts of a room, and the room's peaks across every hub.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OtherHubs {
    /// Each other hub's counts, published within the last few seconds.
    pub hubs: Vec<crate::dashboard::snapshot::HubCounts>,
    /// The most buyer sockets open at once across the hubs (sampled once a second).
    pub peak_viewers: u64,
    /// The most audience online at once across the hubs (sampled once a second).
    pub peak_online: u64,
}

/// When a room was last active, for the overview's `live` ([`crate::overview::is_live`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Activity {
    /// Buyer sockets open now.
    pub sockets_open: u64,
    /// When a buyer socket last opened or closed.
    pub last_socket_ms: Option<i64>,
    /// When the hub last took audience events.
    pub last_audience_ms: Option<i64>,
}

/// One buyer socket's place among its user's; given back on drop.
#[derive(Debug)]
pub struct UserSeat {
    counts: Arc<DashMap<Arc<str>, usize>>,
    user: Arc<str>,
}

impl Drop for UserSeat {
    fn drop(&mut self) {
        if let Some(mut n) = self.counts.get_mut(&self.user) {
            *n -= 1;
        }
        self.counts.remove_if(&self.user, |_, n| *n == 0);
    }
}

impl Default for LiveStats {
    fn default() -> Self {
        LiveStats {
            viewers: AtomicU64::new(0),
            peak_viewers: AtomicU64::new(0),
            unique_viewers: DashSet::new(),
            rejected: Default::default(),
            latency_us: Mutex::new(new_latency_histogram()),
            sockets_per_user: Arc::default(),
            last_socket_ms: AtomicI64::new(0),
            last_audience_ms: AtomicI64::new(0),
            other_hubs: Mutex::new(None),
        }
    }
}

impl LiveStats {
    /// A buyer connected: one more viewer now, the peak raised to match, and the user
    /// remembered for the count of unique viewers.
    pub fn viewer_joined(&self, user: &Arc<str>) {
        let now = self.viewers.fetch_add(1, Ordering::AcqRel) + 1;
        self.peak_viewers.fetch_max(now, Ordering::AcqRel);
        self.last_socket_ms
            .fetch_max(crate::clock::now_ms(), Ordering::Relaxed);
        if !self.unique_viewers.contains(user) {
            self.unique_viewers.insert(user.clone());
        }
    }

    /// A place for one more buyer socket of `user`, unless it holds `max` already (0: no
    /// limit). The entry lock makes check-and-count one step.
    pub fn seat(&self, user: &Arc<str>, max: usize) -> Option<UserSeat> {
        let mut n = self.sockets_per_user.entry(user.clone()).or_insert(0);
        if max > 0 && *n >= max {
            return None;
        }
        *n += 1;
        drop(n);
        Some(UserSeat {
            counts: self.sockets_per_user.clone(),
            user: user.clone(),
        })
    }

    /// A buyer disconnected.
    pub fn viewer_left(&self) {
        self.last_socket_ms
            .fetch_max(crate::clock::now_ms(), Ordering::Relaxed);
        self.viewers.fetch_sub(1, Ordering::AcqRel);
    }

    /// The hub took a batch of audience events at `ts_ms` (the journal's apply and replay,
    /// with the record's time).
    pub fn audience_arrived(&self, ts_ms: i64) {
        self.last_audience_ms.fetch_max(ts_ms, Ordering::Relaxed);
    }

    /// Fleet mode: the other hubs' counts as last read, if any were.
    pub fn other_hubs(&self) -> Option<Arc<OtherHubs>> {
        self.other_hubs
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// When the room's buyer sockets and audience were last seen.
    pub fn activity(&self) -> Activity {
        let seen = |a: &AtomicI64| Some(a.load(Ordering::Relaxed)).filter(|&t| t > 0);
        Activity {
            sockets_open: self.viewers.load(Ordering::Acquire),
            last_socket_ms: seen(&self.last_socket_ms),
            last_audience_ms: seen(&self.last_audience_ms),
        }
    }

    /// A buy was refused for `code`.
    pub fn count_rejection(&self, code: RejectCode) {
        self.rejected[code.index()].fetch_add(1, Ordering::Relaxed);
    }

    /// One buy-to-ack time.
    pub fn record_latency(&self, us: u64) {
        self.record_latencies([us]);
    }

    /// Records several buy-to-ack times under one lock (a buyer's acks that are ready at once).
    pub fn record_latencies(&self, us: impl IntoIterator<Item = u64>) {
        let mut h = self.latency_us.lock().expect("latency lock");
        for us in us {
            h.saturating_record(us.clamp(1, MAX_LATENCY_US));
        }
    }
}

//! The dashboard snapshot (PROTOCOL.md, "Dashboard WebSocket"), and its two renderings:
//! with the whole trend (first message, REST) and with the new points only (later pushes).

use std::collections::BTreeMap;
use std::sync::{Arc, OnceLock};

use axum::extract::ws::Utf8Bytes;
use serde::{Deserialize, Serialize};

use crate::protocol::SkuState;

/// Width of a trend point.
pub const TREND_INTERVAL_MS: i64 = 1000;

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Latency {
    pub p50: u64,
    pub p90: u64,
    pub p99: u64,
    pub p999: u64,
    pub max: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SkuFigures {
    #[serde(flatten)]
    pub state: SkuState,
    pub gmv_fen: u64,
    pub sold_out_at_ms: Option<i64>,
    pub eta_sold_out_s: Option<f64>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Referrer {
    #[serde(rename = "ref")]
    pub referrer: Arc<str>,
    pub orders: u64,
    pub gmv_fen: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct TrendPoint {
    pub t_ms: i64,
    pub gmv_fen: u64,
    pub orders: u64,
}

/// Every figure of a snapshot but the trend.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Figures {
    pub room: Arc<str>,
    pub seq: u64,
    pub ts_ms: i64,
    pub gmv_fen: u64,
    pub orders: u64,
    pub units: u64,
    pub buyers: u64,
    pub viewers: u64,
    pub peak_viewers: u64,
    pub unique_viewers: u64,
    pub aov_fen: u64,
    pub conversion: f64,
    pub gpm_fen: u64,
    pub rejected: BTreeMap<String, u64>,
    pub latency_us: Latency,
    pub skus: Vec<SkuFigures>,
    pub top_referrers: Vec<Referrer>,
    /// Redis mode only (absent otherwise): per hub, the highest seq of its export included.
    /// The totals equal the sums of each hub's export over its orders up to that seq; `seq`
    /// is then the room-wide count of orders in the room's stream.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hub_seqs: Option<BTreeMap<Arc<str>, u64>>,
}

#[derive(Serialize)]
struct Wire<'a> {
    op: &'static str,
    #[serde(flatten)]
    figures: &'a Figures,
    trend: Trend<'a>,
}

#[derive(Serialize)]
struct Trend<'a> {
    interval_ms: i64,
    points: &'a [TrendPoint],
}

/// One published snapshot, shared by every dashboard of a fan-out slot (or of the room).
///
/// Each tick that serves anyone builds the figures once (`number`); the slots it serves share
/// them and their full rendering, and slots that were last served the same snapshot share one
/// `Published`, so each distinct rendering is encoded once a wave.
#[derive(Debug)]
pub struct Published {
    /// Counts built snapshots of the room, increasing: a dashboard never goes back to a lower one.
    pub number: u64,
    /// The snapshot this one's delta rendering follows: `trend[first_changed..]` holds every
    /// trend point changed since snapshot `after` was built, so the delta brings up to date a
    /// dashboard holding any snapshot numbered `after` or later. `None`: full rendering only.
    pub after: Option<u64>,
    pub figures: Arc<Figures>,
    /// The whole trend.
    pub trend: Arc<Vec<TrendPoint>>,
    /// Index in `trend` of the first point new or changed since snapshot `after`.
    pub first_changed: usize,
    delta: OnceLock<Utf8Bytes>,
    /// Shared by every `Published` of the same build.
    full: Arc<OnceLock<Utf8Bytes>>,
}

impl Published {
    /// A snapshot with nothing to follow: every dashboard gets its full rendering.
    pub fn new(number: u64, figures: Arc<Figures>, trend: Arc<Vec<TrendPoint>>) -> Self {
        Published {
            number,
            after: None,
            figures,
            trend,
            first_changed: 0,
            delta: OnceLock::new(),
            full: Arc::new(OnceLock::new()),
        }
    }

    /// The same build, for dashboards that were last served snapshot `after`, with the trend
    /// changed from index `first_changed` on. Shares the figures, trend and full rendering.
    pub fn following(&self, after: Option<u64>, first_changed: usize) -> Self {
        Published {
            number: self.number,
            after,
            figures: self.figures.clone(),
            trend: self.trend.clone(),
            first_changed,
            delta: OnceLock::new(),
            full: self.full.clone(),
        }
    }

    fn render(&self, points: &[TrendPoint]) -> Utf8Bytes {
        let wire = Wire {
            op: "snapshot",
            figures: &self.figures,
            trend: Trend {
                interval_ms: TREND_INTERVAL_MS,
                points,
            },
        };
        serde_json::to_string(&wire)
            .expect("snapshots serialize")
            .into()
    }

    /// With the new points only; encoded once, whoever asks first.
    pub fn delta_frame(&self) -> Utf8Bytes {
        self.delta
            .get_or_init(|| self.render(&self.trend[self.first_changed.min(self.trend.len())..]))
            .clone()
    }

    /// With the whole trend; encoded once per build, whoever asks first.
    pub fn full_frame(&self) -> Utf8Bytes {
        self.full.get_or_init(|| self.render(&self.trend)).clone()
    }

    /// The frame for a dashboard that was last sent snapshot `last_sent` (`None`: nothing yet):
    /// `None` when this snapshot is not newer, the delta when the dashboard holds a snapshot
    /// this one follows, else the full rendering (so a dashboard that missed one of its slot's
    /// snapshots never misses a trend point).
    pub fn frame_for(&self, last_sent: Option<u64>) -> Option<Utf8Bytes> {
        match last_sent {
            Some(n) if n >= self.number => None,
            Some(n) if self.after.is_some_and(|a| n >= a) => Some(self.delta_frame()),
            _ => Some(self.full_frame()),
        }
    }
}

//! The dashboard snapshot (docs/protocol.md, "Dashboard WebSocket"), and its two renderings:
//! with the whole trend (first message, REST) and with the new points only (later pushes).

use std::collections::BTreeMap;
use std::sync::{Arc, OnceLock};

use axum::extract::ws::Utf8Bytes;
use serde::{Deserialize, Serialize};

use crate::protocol::SkuState;

/// Width of a trend point.
pub const TREND_INTERVAL_MS: i64 = 1000;

/// Buy-to-ack latency percentiles over the recent seconds, in microseconds (0s when none).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Latency {
    /// Median.
    pub p50: u64,
    /// 90th percentile.
    pub p90: u64,
    /// 99th percentile.
    pub p99: u64,
    /// 99.9th percentile.
    pub p999: u64,
    /// Slowest.
    pub max: u64,
}

/// One SKU's figures: its state, with `sold` as of the snapshot's `seq`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SkuFigures {
    /// The SKU's state, flattened into the same object.
    #[serde(flatten)]
    pub state: SkuState,
    /// Sales of the SKU in fen.
    pub gmv_fen: u64,
    /// When the stock ran out, while it is out.
    pub sold_out_at_ms: Option<i64>,
    /// Seconds until sold out at the recent pace; `None` when sold out or nothing sells.
    pub eta_sold_out_s: Option<f64>,
    /// Units of paid orders.
    pub paid: u64,
    /// Units of orders waiting for payment: they come back on sale if not paid in time.
    pub unpaid: u64,
    /// Taps on the SKU's product card (audience `click` events).
    #[serde(default)]
    pub clicks: u64,
    /// The SKU's orders over its clicks; 0 with no click.
    #[serde(default)]
    pub click_to_order: f64,
}

/// The audience the video platform tells of (docs/protocol.md, "Audience events").
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct AudienceFigures {
    /// Viewers in the room now: entered and not left, or with a buyer socket open.
    pub online: u64,
    /// The most online at once.
    pub peak: u64,
    /// Viewers told of so far (events or buyer sockets).
    pub unique: u64,
    /// Mean watch time of the viewers who entered, in seconds.
    pub avg_watch_s: f64,
    pub likes: u64,
    pub comments: u64,
    pub shares: u64,
    pub follows: u64,
    /// Unique viewers per source of their first `enter`.
    pub sources: BTreeMap<String, u64>,
    /// Likes, comments and shares per minute, the last hour's minutes that had any.
    pub per_minute: Vec<MinuteFigures>,
}

/// Interactions in one minute.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MinuteFigures {
    /// The minute's start (Unix ms).
    pub t_ms: i64,
    pub likes: u64,
    pub comments: u64,
    pub shares: u64,
}

/// One hub's live counts of a room (fleet mode): the buyer sockets it holds and the audience
/// events posted to it. A dashboard's `viewers`, `audience.online` and the rest are their sums
/// over the hubs ([`crate::fleet::live`]).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct HubCounts {
    /// The hub's id.
    pub hub: Arc<str>,
    /// Buyer sockets open on the hub now.
    pub viewers: u64,
    /// Most buyer sockets open on the hub at once.
    pub peak_viewers: u64,
    /// Distinct users that connected to the hub.
    pub unique_viewers: u64,
    /// Audience online as the hub counts it (its events and buyer sockets).
    pub online: u64,
    /// The most online at once on the hub.
    pub peak: u64,
    /// Viewers the hub was told of.
    pub unique: u64,
}

/// Unique users at each step from entering the room to paying.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Funnel {
    /// Entered the room (an `enter` event).
    pub entered: u64,
    /// Tapped a product card.
    pub clicked: u64,
    /// Placed an order.
    pub ordered: u64,
    /// Paid an order.
    pub paid: u64,
}

/// One of the referrers that brought the most sales.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Referrer {
    /// The buy frames' `ref`.
    #[serde(rename = "ref")]
    pub referrer: Arc<str>,
    /// Orders it brought.
    pub orders: u64,
    /// Their sales in fen.
    pub gmv_fen: u64,
}

/// Sales in one [`TREND_INTERVAL_MS`] of the trend.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct TrendPoint {
    /// The interval's start (Unix ms).
    pub t_ms: i64,
    /// Sales in fen.
    pub gmv_fen: u64,
    /// Orders.
    pub orders: u64,
    /// Payments counted in this interval (orders paid on placement: at placement), less
    /// refunds of those payments.
    pub paid_gmv_fen: u64,
    /// The audience online at the interval's last snapshot.
    #[serde(default)]
    pub online: u64,
}

/// Every figure of a snapshot but the trend.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Figures {
    /// The room.
    pub room: Arc<str>,
    /// The last order folded in: every total covers the orders up to it.
    pub seq: u64,
    /// When the figures were built (Unix ms).
    pub ts_ms: i64,
    /// Gross merchandise value: the sales in fen.
    pub gmv_fen: u64,
    /// Orders.
    pub orders: u64,
    /// Units sold.
    pub units: u64,
    /// Distinct users with an order.
    pub buyers: u64,
    /// Buyer sockets open now.
    pub viewers: u64,
    /// Most buyer sockets open at once.
    pub peak_viewers: u64,
    /// Distinct users that connected.
    pub unique_viewers: u64,
    /// Average order value in fen.
    pub aov_fen: u64,
    /// `buyers / unique_viewers`.
    pub conversion: f64,
    /// Sales in fen per thousand unique viewers.
    pub gpm_fen: u64,
    /// Rejected buys by code (codes with none left out).
    pub rejected: BTreeMap<String, u64>,
    /// Buy-to-ack latency over the recent seconds.
    pub latency_us: Latency,
    /// Every SKU of the room.
    pub skus: Vec<SkuFigures>,
    /// The referrers with the most sales, best first.
    pub top_referrers: Vec<Referrer>,
    /// Fleet mode only (absent otherwise): per hub, the highest seq of its export included.
    /// The totals equal the sums of each hub's export over its orders up to that seq; `seq`
    /// is then the room-wide count of orders in the room's stream.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hub_seqs: Option<BTreeMap<Arc<str>, u64>>,
    /// Fleet mode only (absent otherwise): each running hub's own live counts, by hub id.
    /// `viewers`, `peak_viewers`, `unique_viewers` and `audience.online`, `.peak`, `.unique`
    /// are the room's across these hubs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hubs: Option<Vec<HubCounts>>,
    /// The last order event (placement or status move) folded in.
    pub event: u64,
    /// Paid orders' amounts, less refunds (成交额).
    pub paid_gmv_fen: u64,
    /// Orders paid now.
    pub paid_orders: u64,
    /// Amounts waiting for payment now.
    pub unpaid_fen: u64,
    /// Amounts of orders that expired unpaid.
    pub expired_fen: u64,
    /// Amounts of orders cancelled unpaid.
    pub cancelled_fen: u64,
    /// Amounts refunded.
    pub refunded_fen: u64,
    /// Payments that came too late (expired, cancelled or already paid orders).
    pub late_payments: u64,
    /// Paid ÷ (paid + expired + cancelled) orders; 0 when none.
    pub pay_rate: f64,
    /// The audience.
    #[serde(default)]
    pub audience: AudienceFigures,
    /// From entering to paying.
    #[serde(default)]
    pub funnel: Funnel,
    /// When the latest of the orders up to `seq` was placed (its `ts_ms`); `None` with no order.
    /// Not sent to dashboards: the overview reads it ([`crate::overview`]).
    #[serde(skip)]
    pub last_order_ms: Option<i64>,
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
    /// Every figure but the trend, shared by every `Published` of the same build.
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

#[cfg(test)]
mod tests {
    use super::*;

    fn figures() -> Arc<Figures> {
        Arc::new(Figures {
            room: "r".into(),
            seq: 3,
            ts_ms: 0,
            gmv_fen: 300,
            orders: 3,
            units: 3,
            buyers: 1,
            viewers: 0,
            peak_viewers: 0,
            unique_viewers: 0,
            aov_fen: 100,
            conversion: 0.0,
            gpm_fen: 0,
            rejected: BTreeMap::new(),
            latency_us: Latency::default(),
            skus: Vec::new(),
            top_referrers: Vec::new(),
            hub_seqs: None,
            hubs: None,
            event: 0,
            paid_gmv_fen: 0,
            paid_orders: 0,
            unpaid_fen: 0,
            expired_fen: 0,
            cancelled_fen: 0,
            refunded_fen: 0,
            late_payments: 0,
            pay_rate: 0.0,
            audience: Default::default(),
            funnel: Default::default(),
            last_order_ms: None,
        })
    }

    fn points(frame: &str) -> usize {
        let v: serde_json::Value = serde_json::from_str(frame).unwrap();
        v["trend"]["points"].as_array().unwrap().len()
    }

    #[test]
    fn the_delta_goes_only_to_dashboards_holding_what_it_follows() {
        let trend: Vec<TrendPoint> = (0..3)
            .map(|i| TrendPoint {
                t_ms: i * 1000,
                gmv_fen: 100,
                orders: 1,
                paid_gmv_fen: 100,
                online: 0,
            })
            .collect();
        let built = Published::new(9, figures(), Arc::new(trend));
        // Built at 9 for a slot last served snapshot 5, with the last two points new since.
        let p = built.following(Some(5), 1);
        assert_eq!(
            p.frame_for(None).map(|f| points(&f)),
            Some(3),
            "first: whole trend"
        );
        assert_eq!(
            p.frame_for(Some(4)).map(|f| points(&f)),
            Some(3),
            "missed 5: whole trend"
        );
        assert_eq!(
            p.frame_for(Some(5)).map(|f| points(&f)),
            Some(2),
            "holds 5: the delta"
        );
        assert_eq!(
            p.frame_for(Some(7)).map(|f| points(&f)),
            Some(2),
            "holds a newer one (its first message): the delta covers it too"
        );
        assert_eq!(p.frame_for(Some(9)), None, "already has it");
        assert_eq!(p.frame_for(Some(10)), None, "never back to an older one");
        // A slot never served before: the full rendering only, shared with the same build.
        let fresh = built.following(None, 0);
        assert_eq!(fresh.frame_for(Some(8)).map(|f| points(&f)), Some(3));
        assert_eq!(
            fresh.full_frame().as_str().as_ptr(),
            p.full_frame().as_str().as_ptr(),
            "one full encoding per build"
        );
    }
}

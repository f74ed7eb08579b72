//! The stream's report (复盘, docs/protocol.md, "Review"): what sold and when, per minute and
//! per SKU, the funnel, the sharers, the refusals and the payment outcomes of one room, built
//! from its durable state only, so it is the same before and after a restart:
//! - the orders and their status moves ([`fold`]), as the journal made them durable;
//! - the audience's per-minute series and funnel ([`crate::audience::viewers`]), journaled;
//! - the refusal counts the journal holds ([`crate::rooms::rejections`]).
//!
//! Nothing live is in it: no buyer sockets, no latency, no stock in flight.
//!
//! - [`fold`]: the order figures, folded incrementally;
//! - [`csv`]: the per-minute series as CSV;
//! - [`cache`]: built off the request path, and kept while the room does not change.

pub mod cache;
pub mod csv;
pub mod fold;

use std::collections::BTreeMap;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::dashboard::snapshot::{Funnel, Referrer};
use crate::rooms::room::Room;
pub use cache::Reviews;
pub use fold::{Fold, MINUTE_MS};

/// Sharers the review lists at most, best first.
pub const TOP_REFERRERS: usize = 100;

/// The review of one room (docs/protocol.md, "Review").
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Review {
    /// The room.
    pub room: Arc<str>,
    /// Its title.
    pub title: String,
    /// The first activity: an order, a status move or an audience event; `None` before any.
    pub from_ms: Option<i64>,
    /// The last activity.
    pub to_ms: Option<i64>,
    /// The money, order, buyer and payment figures.
    pub totals: Totals,
    /// Every minute from `from_ms`'s to `to_ms`'s, quiet ones as zeros.
    pub minutes: Vec<MinuteRow>,
    /// The minute with the most GMV (the earliest of equals); `None` with no minute.
    pub peak_minute: Option<PeakMinute>,
    /// Every SKU of the room.
    pub skus: Vec<SkuRow>,
    /// Unique users at each step from entering to paying.
    pub funnel: Funnel,
    /// The sharers with the most sales, best first, at most [`TOP_REFERRERS`].
    pub top_referrers: Vec<Referrer>,
    /// Refused buys by code, as journaled (codes with none left out).
    pub rejected: BTreeMap<String, u64>,
    /// Orders by what became of their payment.
    pub payments: Payments,
}

/// The review's totals: the dashboard snapshot's figures of the same names.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Totals {
    /// Orders placed, in fen (下单金额).
    pub gmv_fen: u64,
    /// Orders placed.
    pub orders: u64,
    /// Units placed.
    pub units: u64,
    /// Distinct users with an order.
    pub buyers: u64,
    /// `gmv_fen / orders`, 0 with none.
    pub aov_fen: u64,
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
    /// Orders ever paid ÷ (those + expired + cancelled); 0 when none.
    pub pay_rate: f64,
}

/// One minute of the series.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct MinuteRow {
    /// The minute's start (Unix ms, a multiple of 60,000).
    pub t_ms: i64,
    /// Orders placed in the minute, in fen.
    pub gmv_fen: u64,
    /// Payments counted in the minute, less refunds of those payments.
    pub paid_gmv_fen: u64,
    /// Orders placed in the minute.
    pub orders: u64,
    /// The most viewers in a session at once after an audience event of the minute; 0 in a
    /// minute without one.
    pub online: u64,
    /// Product-card taps in the minute.
    pub clicks: u64,
}

/// The best minute.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct PeakMinute {
    /// The minute's start.
    pub t_ms: i64,
    /// Its GMV.
    pub gmv_fen: u64,
}

/// One SKU's review.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SkuRow {
    /// The SKU.
    pub sku: Arc<str>,
    /// Its name now.
    pub name: Arc<str>,
    /// Units of orders that keep them (unpaid, paid, refunded without restock).
    pub sold: u64,
    /// Units of orders paid now.
    pub paid: u64,
    /// Its orders, in fen.
    pub gmv_fen: u64,
    /// When its stock ran out, while it is out.
    pub sold_out_at_ms: Option<i64>,
    /// Taps on its product card.
    pub clicks: u64,
    /// Its orders over its clicks; 0 with no click.
    pub click_to_order: f64,
}

/// Orders by what became of their payment, now.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Payments {
    /// Orders `paid` now (paid on placement or by a notice, not refunded).
    pub paid: u64,
    /// Orders `expired`.
    pub expired: u64,
    /// Orders `cancelled`.
    pub cancelled: u64,
    /// Orders `refunded`.
    pub refunded: u64,
    /// Payment notices that came too late, kept to be refunded (not orders: one order may have
    /// several).
    pub late_payments: u64,
}

/// The order of the sharers: GMV, then orders, highest first; then the sharer's id (as the
/// dashboard's).
fn rank(a: &Referrer, b: &Referrer) -> std::cmp::Ordering {
    b.gmv_fen
        .cmp(&a.gmv_fen)
        .then(b.orders.cmp(&a.orders))
        .then(a.referrer.cmp(&b.referrer))
}

impl Review {
    /// The review of `room`, with `fold` brought up to the room's durable events first.
    pub fn build(room: &Room, fold: &mut Fold) -> Review {
        fold.catch_up(room);
        let (audience_minutes, audience_span, entered, clicked, sku_clicks) =
            room.audience.with(|s| {
                let f = s.figures(0);
                (
                    s.review_minutes().clone(),
                    s.span_ms(),
                    f.entered,
                    f.clicked,
                    f.clicks,
                )
            });
        let span = match (fold.span_ms(), audience_span) {
            (Some((a, b)), Some((c, d))) => Some((a.min(c), b.max(d))),
            (a, b) => a.or(b),
        };
        let mut minutes = Vec::new();
        if let Some((from, to)) = span {
            let (first, last) = (fold::minute_of(from), fold::minute_of(to));
            let orders = fold.minutes();
            let mut t = first;
            while t <= last {
                let o = orders.get(&t).copied().unwrap_or_default();
                let a = audience_minutes.get(&t).copied().unwrap_or_default();
                minutes.push(MinuteRow {
                    t_ms: t,
                    gmv_fen: o.gmv_fen,
                    paid_gmv_fen: o.paid_gmv_fen,
                    orders: o.orders,
                    online: a.online,
                    clicks: a.clicks,
                });
                t += MINUTE_MS;
            }
        }
        let peak_minute = minutes
            .iter()
            .fold(None::<&MinuteRow>, |best, m| match best {
                Some(b) if b.gmv_fen >= m.gmv_fen => Some(b),
                _ => Some(m),
            })
            .map(|m| PeakMinute {
                t_ms: m.t_ms,
                gmv_fen: m.gmv_fen,
            });
        let skus = room
            .skus
            .list()
            .iter()
            .map(|s| {
                let t = fold.sku(&s.id);
                let clicks = sku_clicks.get(&s.id).copied().unwrap_or(0);
                SkuRow {
                    sku: s.id.clone(),
                    name: s.name(),
                    sold: t.units,
                    paid: t.paid,
                    gmv_fen: t.gmv_fen,
                    sold_out_at_ms: s.sold_out_at_ms(),
                    clicks,
                    click_to_order: if clicks == 0 {
                        0.0
                    } else {
                        t.orders as f64 / clicks as f64
                    },
                }
            })
            .collect();
        let mut top_referrers: Vec<Referrer> = fold
            .referrers()
            .map(|(r, orders, gmv_fen)| Referrer {
                referrer: r.clone(),
                orders,
                gmv_fen,
            })
            .collect();
        if top_referrers.len() > TOP_REFERRERS {
            top_referrers.select_nth_unstable_by(TOP_REFERRERS - 1, rank);
            top_referrers.truncate(TOP_REFERRERS);
        }
        top_referrers.sort_by(rank);
        let settled = fold.ever_paid + fold.expired_orders + fold.cancelled_orders;
        Review {
            room: room.id.clone(),
            title: room.title(),
            from_ms: span.map(|s| s.0),
            to_ms: span.map(|s| s.1),
            totals: Totals {
                gmv_fen: fold.gmv_fen,
                orders: fold.orders,
                units: fold.units,
                buyers: fold.buyers(),
                aov_fen: fold.gmv_fen.checked_div(fold.orders).unwrap_or(0),
                paid_gmv_fen: fold.paid_gmv_fen,
                paid_orders: fold.paid_orders,
                unpaid_fen: fold.unpaid_fen,
                expired_fen: fold.expired_fen,
                cancelled_fen: fold.cancelled_fen,
                refunded_fen: fold.refunded_fen,
                late_payments: fold.late_payments,
                pay_rate: if settled == 0 {
                    0.0
                } else {
                    fold.ever_paid as f64 / settled as f64
                },
            },
            minutes,
            peak_minute,
            skus,
            funnel: Funnel {
                entered,
                clicked,
                ordered: fold.buyers(),
                paid: fold.payers(),
            },
            top_referrers,
            rejected: room.rejections.counts(),
            payments: Payments {
                paid: fold.paid_orders,
                expired: fold.expired_orders,
                cancelled: fold.cancelled_orders,
                refunded: fold.refunded_orders,
                late_payments: fold.late_payments,
            },
        }
    }
}

#[cfg(test)]
mod tests;

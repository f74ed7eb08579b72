//! The demo's earlier stream: a short livestream that ended [`ENDED_AGO_MS`] before the demo
//! started, in room [`EARLIER_ROOM`], so the review page (`/review?room=demo-earlier`) has a
//! finished stream to show beside the live one.
//!
//! Its buys, payments, cancels, expiries, refunds and audience are journaled as a real stream's
//! are, through the hub's own journal and apply, with their times in the past: buys go through
//! the gate as of their time ([`Hub::buy_as_of`]), the audience through
//! [`Hub::ingest_events`], and the status moves are the same [`Record::Move`] and
//! [`Record::Expired`] records the hub writes, stamped with when they happened, and its refused
//! buys are [`Record::Rejections`] records, as the hub journals them. So a restart
//! rebuilds the room from the journal like any other.
//!
//! It is seeded before the hub serves and before the expiry timer starts (`server::run`), so
//! nothing else moves its orders meanwhile, and only when the room does not exist yet: a
//! restart with the same data dir keeps the one seeded first. The plan is drawn from a fixed
//! seed, so every data dir gets the same stream (at its own time of day).

use std::collections::HashSet;
use std::sync::Arc;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use crate::clock::now_ms;
use crate::hub::Hub;
use crate::inventory::SkuDef;
use crate::journal::record::{Move, Payment};
use crate::journal::{AudienceEvent, AudienceKind, Record};
use crate::protocol::BuyMsg;

/// The earlier stream's room.
pub const EARLIER_ROOM: &str = "demo-earlier";
/// Its title.
pub const EARLIER_TITLE: &str = "上午场 Morning stream";
/// How long before the demo starts the earlier stream began.
pub const STARTED_AGO_MS: i64 = 2 * 3_600_000;
/// How long it lasted, in minutes.
pub const MINUTES: i64 = 16;
/// When it ended, before the demo started: well past the 5 minutes that make a room live.
pub const ENDED_AGO_MS: i64 = STARTED_AGO_MS - MINUTES * 60_000;
/// The limited SKU that sells out.
pub const SELL_OUT_SKU: &str = "POT";
/// Its units: every one sells.
const SELL_OUT_STOCK: u64 = 40;
/// The SKU whose orders must be paid.
const PAY_SKU: &str = "FLASH";
/// Seconds its buyers have to pay.
const PAY_TIMEOUT_S: u64 = 120;
/// The flash sale opens this many minutes into the stream.
const FLASH_MINUTE: i64 = 5;
/// The fixed seed of the plan.
const SEED: u64 = 0x5eed_2024;

const MINUTE_MS: i64 = 60_000;

/// What became of an order that must be paid.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fate {
    /// Paid this long after the buy.
    Paid(i64),
    /// Cancelled by its buyer this long after the buy.
    Cancelled(i64),
    /// Left to expire; with `Some(d)`, paid anyway `d` after the expiry (a late payment).
    Expired(Option<i64>),
    /// Paid on placement (no time to pay); `Some(d)`: refunded `d` after the buy.
    PaidOnPlacement(Option<i64>),
}

/// One buy of the plan.
#[derive(Debug, Clone)]
struct PlannedBuy {
    at_ms: i64,
    user: String,
    sku: &'static str,
    qty: u64,
    referrer: Option<&'static str>,
    fate: Fate,
}

/// The whole stream: its buys and its audience, by minute.
#[derive(Debug, Default)]
struct Plan {
    buys: Vec<PlannedBuy>,
    /// Each minute's audience events.
    audience: Vec<Vec<AudienceEvent>>,
    /// Each minute's refused buys by code, as the hub journals them (in aggregate).
    rejections: Vec<Vec<(String, u64)>>,
}

fn skus(start: i64) -> Vec<(&'static str, SkuDef)> {
    let def = |name: &str, price_fen, stock, limit| SkuDef {
        name: name.to_owned(),
        price_fen,
        stock,
        limit_per_user: limit,
        opens_at_ms: None,
        closes_at_ms: None,
        pay_timeout_s: None,
    };
    vec![
        ("CUP", def("保温杯 Thermos cup", 9_900, 5_000, None)),
        ("TEA", def("明前龙井 Longjing tea", 15_800, 3_000, Some(5))),
        (
            SELL_OUT_SKU,
            def(
                "限量·紫砂壶 Limited: Yixing teapot",
                29_900,
                SELL_OUT_STOCK,
                Some(1),
            ),
        ),
        (
            PAY_SKU,
            SkuDef {
                opens_at_ms: Some(start + FLASH_MINUTE * MINUTE_MS),
                closes_at_ms: Some(start + (MINUTES - 2) * MINUTE_MS),
                pay_timeout_s: Some(PAY_TIMEOUT_S),
                ..def("秒杀·蓝牙耳机 Flash: earbuds", 9_900, 300, Some(1))
            },
        ),
    ]
}

fn event(kind: AudienceKind, user: &str, ts_ms: i64) -> AudienceEvent {
    AudienceEvent {
        kind,
        user: user.into(),
        ts_ms,
        source: None,
        referrer: None,
        count: 1,
        sku: None,
    }
}

/// Draws the stream that began at `start`: an audience that builds up to the flash sale and
/// drains at the end, steady buys of the everyday SKUs, the limited SKU selling out, the flash
/// sale's rush with its payments, cancels and expiries, and a refund or two.
fn plan(start: i64) -> Plan {
    let mut rng = StdRng::seed_from_u64(SEED);
    let mut p = Plan::default();
    // Who is in a session, and since when: a leave comes after its enter.
    let mut online: Vec<(String, i64)> = Vec::new();
    let mut next_viewer = 0u32;
    // (user, SKU) pairs that bought: each buyer buys a SKU once, so no limit refuses a buy.
    let mut bought: HashSet<(String, &'static str)> = HashSet::new();
    let mut pot_left = SELL_OUT_STOCK;
    let mut pot_sold_out: Option<i64> = None;
    let mut late_payment = false;
    for m in 0..MINUTES {
        let t0 = start + m * MINUTE_MS;
        let mut events = Vec::new();
        let sec = |rng: &mut StdRng| t0 + rng.random_range(0..MINUTE_MS);
        // The audience: up to a peak at the flash sale, down at the end; everyone left by the
        // last minute.
        let x = m as f64;
        let target = if m == MINUTES - 1 {
            0
        } else {
            (120.0 + 520.0 * (-(x - FLASH_MINUTE as f64).powi(2) / 18.0).exp()) as usize
        };
        while online.len() < target {
            next_viewer += 1;
            let user = format!("m{next_viewer}");
            let roll = rng.random_range(0..100);
            let (source, referrer) = match roll {
                0..45 => ("recommend", None),
                45..65 => ("follow", None),
                65..85 => ("share", Some(super::SHARERS[rng.random_range(0..4)])),
                85..95 => ("search", None),
                _ => ("ad", None),
            };
            let at = sec(&mut rng);
            events.push(AudienceEvent {
                source: Some(source.into()),
                referrer: referrer.map(Into::into),
                ..event(AudienceKind::Enter, &user, at)
            });
            online.push((user, at));
        }
        let leaving = if online.len() > target {
            online.len() - target
        } else {
            rng.random_range(0..8).min(online.len())
        };
        for _ in 0..leaving {
            let i = rng.random_range(0..online.len());
            let (user, entered) = online.swap_remove(i);
            // The last minute's leaves come in its first half, the stream's end.
            let at = if m == MINUTES - 1 {
                t0 + rng.random_range(0..MINUTE_MS / 2)
            } else {
                sec(&mut rng)
            };
            events.push(event(AudienceKind::Leave, &user, at.max(entered + 1_000)));
        }
        if m == MINUTES - 1 {
            p.audience.push(events);
            p.rejections.push(Vec::new());
            break;
        }
        let excitement = online.len() as f64 / 200.0;
        for (kind, per) in [
            (AudienceKind::Like, 20.0),
            (AudienceKind::Comment, 6.0),
            (AudienceKind::Share, 1.5),
            (AudienceKind::Follow, 1.0),
            (AudienceKind::Click, 8.0),
        ] {
            for _ in 0..(per * excitement) as usize {
                let user = &online[rng.random_range(0..online.len())].0;
                let mut e = event(kind, user, sec(&mut rng));
                match kind {
                    AudienceKind::Like => e.count = rng.random_range(1..=5),
                    AudienceKind::Click => {
                        // The flash sale's card is shown from a minute before it opens.
                        let cards = if m + 1 >= FLASH_MINUTE { 4 } else { 3 };
                        let sku = ["CUP", "TEA", SELL_OUT_SKU, PAY_SKU][rng.random_range(0..cards)];
                        e.sku = Some(sku.into())
                    }
                    _ => {}
                }
                events.push(e);
            }
        }
        // Buys: the everyday SKUs all along, the limited one until it is gone, the flash
        // sale's rush in its first two minutes and a trickle after.
        let mut wants: Vec<&'static str> = Vec::new();
        for _ in 0..(4.0 + 3.0 * excitement) as usize {
            wants.push(if rng.random_bool(0.6) { "CUP" } else { "TEA" });
        }
        let pot = if m == 0 {
            0
        } else {
            pot_left.min(rng.random_range(4..=8))
        };
        pot_left -= pot;
        // Refusals: buyers who came too late for the limited SKU, and the flash sale's rush
        // (a second pair of earbuds over the limit, taps faster than the rate limit).
        let mut refused = Vec::new();
        if pot_left == 0 {
            let since = *pot_sold_out.get_or_insert(m);
            if m - since <= 2 {
                refused.push(("sold_out".to_owned(), rng.random_range(6..16)));
            }
        }
        if m == FLASH_MINUTE {
            refused.push(("limit_exceeded".to_owned(), rng.random_range(4..9)));
            refused.push(("rate_limited".to_owned(), rng.random_range(1..4)));
        }
        p.rejections.push(refused);
        wants.extend(std::iter::repeat_n(SELL_OUT_SKU, pot as usize));
        let flash = match m - FLASH_MINUTE {
            0 => 70,
            1 => 35,
            d if d > 1 && m < MINUTES - 2 => rng.random_range(2..6),
            _ => 0,
        };
        wants.extend(std::iter::repeat_n(PAY_SKU, flash));
        for sku in wants {
            let Some(user) = (0..20)
                .map(|_| online[rng.random_range(0..online.len())].0.clone())
                .find(|u| !bought.contains(&(u.clone(), sku)))
            else {
                continue;
            };
            bought.insert((user.clone(), sku));
            let at_ms = if sku == PAY_SKU && m == FLASH_MINUTE {
                // The rush: in the sale's first seconds.
                t0 + rng.random_range(0..12_000)
            } else {
                sec(&mut rng)
            };
            // A buyer taps the product card before the buy button.
            events.push(AudienceEvent {
                sku: Some(sku.into()),
                ..event(
                    AudienceKind::Click,
                    &user,
                    at_ms - rng.random_range(1_000..8_000),
                )
            });
            let fate = if sku == PAY_SKU {
                match rng.random_range(0..100) {
                    0..72 => Fate::Paid(rng.random_range(8_000..90_000)),
                    72..86 => Fate::Cancelled(rng.random_range(15_000..80_000)),
                    _ if !late_payment => {
                        late_payment = true;
                        Fate::Expired(Some(40_000))
                    }
                    _ => Fate::Expired(None),
                }
            } else if sku == "CUP" && rng.random_bool(0.04) {
                Fate::PaidOnPlacement(Some(rng.random_range(60_000..180_000)))
            } else {
                Fate::PaidOnPlacement(None)
            };
            p.buys.push(PlannedBuy {
                at_ms,
                user,
                sku,
                qty: if matches!(sku, "CUP" | "TEA") && rng.random_bool(0.2) {
                    2
                } else {
                    1
                },
                referrer: rng
                    .random_bool(0.35)
                    .then(|| super::SHARERS[rng.random_range(0..5)]),
                fate,
            });
        }
        p.audience.push(events);
    }
    p.buys.sort_by_key(|b| b.at_ms);
    p
}

/// A status move of a placed order, due at `at_ms`.
struct Due {
    at_ms: i64,
    order: u64,
    /// `None`: it expires.
    to: Option<Move>,
}

/// Seeds the earlier stream unless its room exists (a restart with the same data dir), on an
/// embedded hub. Call it before the hub serves and before its expiry timer starts.
pub async fn seed(hub: &Hub) -> anyhow::Result<()> {
    if hub.room(EARLIER_ROOM).is_some() {
        return Ok(());
    }
    if hub.fleet().is_some() {
        tracing::info!(
            room = EARLIER_ROOM,
            "fleet mode: the demo's earlier stream is left out"
        );
        return Ok(());
    }
    let now = now_ms();
    let start = (now - STARTED_AGO_MS) / MINUTE_MS * MINUTE_MS;
    hub.put_room(EARLIER_ROOM, EARLIER_TITLE.to_owned()).await?;
    for (id, def) in skus(start) {
        hub.put_sku(EARLIER_ROOM, id, def).await?;
    }
    let room = hub
        .room(EARLIER_ROOM)
        .ok_or_else(|| anyhow::anyhow!("room {EARLIER_ROOM} was not made"))?;
    let plan = plan(start);
    let mut pending: Vec<Due> = Vec::new();
    let mut orders = 0usize;
    // Minute by minute: its buys at once (one group commit takes them), then the status moves
    // that fall due in it, then its audience.
    let mut buys = plan.buys.into_iter().peekable();
    for (m, (events, refused)) in plan.audience.into_iter().zip(plan.rejections).enumerate() {
        let end = start + (m as i64 + 1) * MINUTE_MS;
        let mut minute = Vec::new();
        while let Some(b) = buys.next_if(|b| b.at_ms < end) {
            minute.push(b);
        }
        let acks = futures_util::future::join_all(minute.iter().enumerate().map(|(i, b)| {
            let user = room.users.intern(&b.user);
            let msg = BuyMsg {
                req: format!("earlier-{m}-{i}"),
                sku: b.sku.to_owned(),
                qty: b.qty,
                referrer: b.referrer.map(str::to_owned),
            };
            let (hub, room) = (hub.clone(), room.clone());
            async move { hub.buy_as_of(&room, &user, &msg, b.at_ms).await }
        }))
        .await;
        for (b, ack) in minute.iter().zip(acks) {
            let order = match (ack.ok, ack.order.as_deref()) {
                (true, Some(id)) => hub.find_order(&room, id),
                _ => None,
            };
            let Some(order) = order else {
                anyhow::bail!("the earlier stream's buy of {} was refused: {ack:?}", b.sku);
            };
            orders += 1;
            let (order, amount_fen) = (order.number, order.amount_fen);
            let payment = |at_ms: i64| Payment {
                payment_id: Arc::from(format!("earlier-pay-{order}")),
                amount_fen,
                paid_at_ms: at_ms,
            };
            let due = |at_ms, to| Due { at_ms, order, to };
            let pay_by = b.at_ms + PAY_TIMEOUT_S as i64 * 1000;
            match b.fate {
                Fate::Paid(d) => {
                    pending.push(due(b.at_ms + d, Some(Move::Paid(payment(b.at_ms + d)))))
                }
                Fate::Cancelled(d) => {
                    pending.push(due(b.at_ms + d, Some(Move::Cancelled { by_admin: false })))
                }
                Fate::Expired(late) => {
                    pending.push(due(pay_by, None));
                    if let Some(d) = late {
                        let at = pay_by + d;
                        pending.push(due(at, Some(Move::LatePayment(payment(at)))));
                    }
                }
                Fate::PaidOnPlacement(Some(d)) => {
                    pending.push(due(b.at_ms + d, Some(Move::Refunded { restock: true })))
                }
                Fate::PaidOnPlacement(None) => {}
            }
        }
        // The moves due this minute (or, in the last, every one left), in time order.
        pending.sort_by_key(|d| d.at_ms);
        let last = m as i64 == MINUTES - 1;
        let cut = pending.partition_point(|d| last || d.at_ms < end);
        for d in pending.drain(..cut) {
            let record = match d.to {
                Some(to) => Record::Move {
                    room: room.id.clone(),
                    order: d.order,
                    to,
                    ts_ms: d.at_ms,
                },
                None => Record::Expired {
                    room: room.id.clone(),
                    orders: vec![d.order],
                    ts_ms: d.at_ms,
                },
            };
            hub.journal().append(record).await?;
        }
        if !refused.is_empty() {
            hub.journal()
                .append(Record::Rejections {
                    room: room.id.clone(),
                    counts: refused,
                    ts_ms: end - 1,
                })
                .await?;
        }
        if !events.is_empty() {
            hub.ingest_events(&room, events, end)
                .await
                .map_err(|e| anyhow::anyhow!("the earlier stream's audience: {e:?}"))?;
        }
    }
    tracing::info!(
        room = EARLIER_ROOM,
        orders,
        ended_min_ago = ENDED_AGO_MS / MINUTE_MS,
        "demo's earlier stream seeded; its review is at /review?room={EARLIER_ROOM}"
    );
    Ok(())
}

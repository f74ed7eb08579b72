//! `livehub --demo`: a demo room whose buyers are simulated inside the process, so a
//! newcomer sees a live dashboard within seconds. Buys go through the same hub path (gate,
//! journal, ack) as real ones; only the sockets are skipped.
//!
//! The stream: an audience that grows in waves, ordinary buys paid on placement, then the
//! flash sale ("3, 2, 1, 上链接!"), whose rush sells it out in seconds. Its orders must be paid
//! within [`Plan::pay_timeout_s`]: payments trickle in, some buyers cancel, some let the order
//! expire, and the units that come back sell again to the buyers waiting for them
//! (`buyer.rs` is one buyer's way). Now and then a paid order is refunded.
//!
//! Light and bounded, for a laptop next to the dashboard: a few new buyers a tick, more during
//! the rush (the rates are in [`run`]'s loop), a sold-out buyer waits only while fewer than
//! `buyer::MAX_WAITING` do and tries a few times at most, and every buyer's task ends
//! within a few minutes (at once at the shutdown).
//!
//! A second, smaller room ([`second_room`]) streams beside it, so the overview has more than
//! one live room, and [`earlier`] seeds a short stream that ended before the demo started, so
//! the review page has a finished stream to show.

mod audience;
mod buyer;
pub mod earlier;
pub mod second_room;

use std::sync::atomic::{AtomicU64, AtomicUsize};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rand::Rng;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::clock::now_ms;
use crate::hub::Hub;
use crate::inventory::{SkuDef, UserRef};
use crate::protocol::BuyMsg;
use crate::rooms::room::Room;

/// The demo room's id.
pub const DEMO_ROOM: &str = "demo";
/// The flash sale opens this long after start.
pub const FLASH_OPENS_IN: Duration = Duration::from_secs(15);
/// The flash sale's SKU: the one whose orders must be paid.
pub const FLASH_SKU: &str = "FLASH";
/// The flash sale's units.
pub const FLASH_STOCK: u64 = 500;
/// Seconds a flash-sale buyer has to pay. The other SKUs are paid on placement, so the
/// dashboard shows both kinds.
pub const FLASH_PAY_TIMEOUT_S: u64 = 60;
/// How long the rush at the flash sale's opening lasts.
const RUSH: Duration = Duration::from_secs(6);
/// How often the audience changes and a batch of buyers taps "buy".
const TICK: Duration = Duration::from_millis(50);

const SHARERS: [&str; 8] = [
    "mei",
    "lao_wang",
    "xiaoli",
    "tea_fan",
    "auntie_zhang",
    "ah_qiang",
    "dj_liu",
    "coco",
];

/// The demo's knobs. [`Plan::default`] is the livestream `livehub --demo` shows; a test runs
/// a quicker one.
#[derive(Debug, Clone)]
pub struct Plan {
    /// The flash sale opens this long after start.
    pub flash_opens_in: Duration,
    /// The flash sale's units.
    pub flash_stock: u64,
    /// Seconds a flash-sale buyer has to pay (`pay_timeout_s`, 10 at least).
    pub pay_timeout_s: u64,
    /// How long buyers take to pay, cancel, look again or ask for a refund, as a multiple of
    /// the life-like times in `buyer.rs`: 1.0 in the demo.
    pub human_pace: f64,
}

impl Default for Plan {
    fn default() -> Self {
        Plan {
            flash_opens_in: FLASH_OPENS_IN,
            flash_stock: FLASH_STOCK,
            pay_timeout_s: FLASH_PAY_TIMEOUT_S,
            human_pace: 1.0,
        }
    }
}

/// What the demo's buyers share.
struct Stage {
    hub: Hub,
    room: Arc<Room>,
    plan: Plan,
    /// Woken when the flash sale's stock comes back (a cancel, an expiry, a refund with
    /// restock): what a real buyer's app learns from a `stock` push.
    restocked: Notify,
    /// Sold-out buyers waiting for stock now.
    waiting: AtomicUsize,
    /// Tells this run's `req`s from an earlier run's, which the hub remembers.
    run: i64,
    /// The last `req` number given out.
    reqs: AtomicU64,
    shutdown: CancellationToken,
}

impl Stage {
    fn new(hub: Hub, room: Arc<Room>, plan: Plan, shutdown: CancellationToken) -> Arc<Stage> {
        Arc::new(Stage {
            hub,
            room,
            plan,
            restocked: Notify::new(),
            waiting: AtomicUsize::new(0),
            run: now_ms(),
            reqs: AtomicU64::new(0),
            shutdown,
        })
    }

    /// `user` taps `sku`'s product card (an event of `crowd`), then buys it in a task of its
    /// own (`buyer.rs`).
    fn buy(
        self: &Arc<Self>,
        crowd: &mut audience::Crowd,
        user: UserRef,
        sku: &str,
        qty: u64,
        referrer: Option<String>,
        now: i64,
    ) {
        let msg = BuyMsg {
            req: self.next_req(),
            sku: sku.to_owned(),
            qty,
            referrer,
        };
        crowd.clicked(&user.id, sku, now);
        self.hub.tasks().spawn(buyer::shop(self.clone(), user, msg));
    }

    /// A fresh `req` for a buy.
    fn next_req(&self) -> String {
        let n = self.reqs.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        format!("demo{}-{n}", self.run)
    }
}

fn skus(now: i64, plan: &Plan) -> Vec<(&'static str, SkuDef)> {
    let def =
        |name: &str, price_fen, stock, limit, opens: Option<i64>, closes: Option<i64>| SkuDef {
            name: name.to_owned(),
            price_fen,
            stock,
            limit_per_user: limit,
            opens_at_ms: opens,
            closes_at_ms: closes,
            pay_timeout_s: None,
        };
    vec![
        (
            "CUP",
            def("保温杯 Thermos cup", 9_900, 20_000, None, None, None),
        ),
        (
            "TEA",
            def("明前龙井 Longjing tea", 15_800, 8_000, Some(5), None, None),
        ),
        (
            "RICE",
            def("五常大米 Wuchang rice 5kg", 6_990, 30_000, None, None, None),
        ),
        (
            FLASH_SKU,
            SkuDef {
                pay_timeout_s: Some(plan.pay_timeout_s),
                ..def(
                    "秒杀·蓝牙耳机 Flash: earbuds",
                    9_900,
                    plan.flash_stock,
                    Some(1),
                    Some(now + plan.flash_opens_in.as_millis() as i64),
                    Some(now + plan.flash_opens_in.as_millis() as i64 + 20 * 60_000),
                )
            },
        ),
    ]
}

/// Sets up the demo rooms (again, on a restart) and simulates their audiences until `shutdown`.
pub async fn run(hub: Hub, shutdown: CancellationToken) {
    hub.tasks()
        .spawn(second_room::run(hub.clone(), shutdown.clone()));
    run_with(hub, Plan::default(), shutdown).await
}

/// [`run`] with the knobs of `plan`.
pub async fn run_with(hub: Hub, plan: Plan, shutdown: CancellationToken) {
    if let Err(e) = setup(&hub, &plan).await {
        tracing::error!(error = %e, "demo setup failed");
        return;
    }
    let (Some(room), Some(flash)) = (
        hub.room(DEMO_ROOM),
        hub.room(DEMO_ROOM).and_then(|r| r.skus.get(FLASH_SKU)),
    ) else {
        return;
    };
    let stage = Stage::new(hub, room, plan, shutdown);
    let room = &stage.room;
    let flash_opens = stage.plan.flash_opens_in.as_secs_f64();
    let started = Instant::now();
    let mut viewers = audience::Viewers::new("viewer");
    let mut announced = false;
    let mut flash_left = flash.left();
    let mut tick = tokio::time::interval(TICK);
    loop {
        tokio::select! {
            _ = stage.shutdown.cancelled() => break,
            _ = tick.tick() => {}
        }
        let t = started.elapsed().as_secs_f64();
        let flash_open = t >= flash_opens;
        if flash_open && !announced {
            announced = true;
            tracing::info!(
                room = DEMO_ROOM,
                sku = FLASH_SKU,
                "3, 2, 1, 上链接! the flash sale is open"
            );
        }
        // Units came back (a cancel, an expiry, a refund with restock): the waiting buyers
        // hear of it, as a `stock` push would tell them.
        let left = flash.left();
        if left > flash_left {
            stage.restocked.notify_waiters();
        }
        flash_left = left;
        // Audience: grows with a slow wave, a wave more when the flash sale is announced (the
        // ten seconds before it opens and the first twenty after), a few leave every tick.
        let now = now_ms();
        let sharing = (flash_opens - 10.0..flash_opens + 20.0).contains(&t);
        let announcement = if sharing {
            1500.0 * ((t - flash_opens + 10.0) / 30.0).min(1.0)
        } else if t > flash_opens {
            1500.0 * (-(t - flash_opens - 20.0) / 120.0).exp()
        } else {
            0.0
        };
        let target = (600.0
            + 2400.0 * (1.0 - (-t / 60.0).exp()) * (1.0 + 0.15 * (t / 17.0).sin())
            + announcement) as usize;
        let mut rng = rand::rng();
        let mut crowd = audience::Crowd::default();
        viewers.fill(room, &mut crowd, target, now, sharing, &SHARERS);
        let leaving = if viewers.len() > target + 20 { 8 } else { 3 };
        for _ in 0..rng.random_range(0..=leaving) {
            viewers.leave_one(room, &mut crowd, now, &mut rng);
        }
        let excitement = if sharing { 4.0 } else { 1.0 } * (viewers.len() as f64 / 1500.0).max(0.2);
        crowd.interact(
            || viewers.pick(&mut rand::rng()).map(|u| u.id.clone()),
            &["CUP", "TEA", "RICE", FLASH_SKU],
            now,
            excitement,
        );
        // Buys per tick: a varying base rate, and a rush when the flash sale opens.
        let rush = if flash_open && t < flash_opens + RUSH.as_secs_f64() {
            12.0
        } else {
            0.0
        };
        let rate = 1.2 + 0.9 * (t / 9.0).sin() + rush;
        let n = rate.max(0.0) as usize + usize::from(rng.random_bool(rate.fract().clamp(0.0, 1.0)));
        for _ in 0..n {
            let Some(user) = viewers.pick(&mut rng).cloned() else {
                break;
            };
            let sku = if rush > 0.0 || (flash_open && rng.random_bool(0.2)) {
                FLASH_SKU
            } else {
                ["CUP", "TEA", "RICE"][rng.random_range(0..3)]
            };
            // The flash sale's limit is one a buyer, and its buyers' apps know it.
            let qty = if sku == FLASH_SKU || rng.random_bool(0.8) {
                1
            } else {
                rng.random_range(2..=3)
            };
            let referrer = referrer(&mut rng, 0.35);
            stage.buy(&mut crowd, user, sku, qty, referrer, now);
        }
        crowd.send(&stage.hub, room, now);
    }
}

/// A sharer's id as the buy's referrer, with probability `p`.
fn referrer(rng: &mut impl Rng, p: f64) -> Option<String> {
    rng.random_bool(p)
        .then(|| SHARERS[rng.random_range(0..SHARERS.len())].to_owned())
}

/// Puts a demo room and its SKUs (again, on a restart: a SKU with less than half its stock
/// left is stocked up to full again).
async fn put_room(
    hub: &Hub,
    room: &str,
    title: &str,
    skus: impl IntoIterator<Item = (&'static str, SkuDef)>,
) -> anyhow::Result<()> {
    hub.put_room(room, title.to_owned()).await?;
    for (id, def) in skus {
        let stock = def.stock;
        let state = hub.put_sku(room, id, def).await?;
        if state.left < stock / 2 {
            hub.change_stock(room, id, (stock - state.left) as i64)
                .await?;
        }
    }
    Ok(())
}

async fn setup(hub: &Hub, plan: &Plan) -> anyhow::Result<()> {
    put_room(
        hub,
        DEMO_ROOM,
        "演示直播间 Demo livestream",
        skus(now_ms(), plan),
    )
    .await?;
    tracing::info!(
        room = DEMO_ROOM,
        opens_in_s = plan.flash_opens_in.as_secs(),
        pay_timeout_s = plan.pay_timeout_s,
        "demo room ready; the flash sale opens soon, its orders must be paid"
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hub::HubOptions;
    use crate::journal::JournalOptions;
    use crate::protocol::OrderStatus;

    /// How long the test waits for the demo's buyers at most.
    const WAIT: Duration = Duration::from_secs(30);

    #[derive(Debug, Default)]
    struct Seen {
        flash_orders: u64,
        paid: u64,
        cancelled: u64,
    }

    fn seen(room: &Room) -> Seen {
        let mut s = Seen::default();
        room.orders.for_each_from(0, |o| {
            if &*o.sku == FLASH_SKU {
                s.flash_orders += 1;
                match room.statuses.status(o) {
                    OrderStatus::Paid => s.paid += 1,
                    OrderStatus::Cancelled => s.cancelled += 1,
                    _ => {}
                }
            }
        });
        s
    }

    /// A quick demo: the flash sale opens at once with few units, and buyers act a hundred
    /// times faster than in life. Its buyers pay orders and cancel some, and the units a
    /// cancel gives back sell again to the buyers who found the sale sold out.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn buyers_pay_cancel_and_buy_the_released_units_again() {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut journal = JournalOptions::new(dir.path());
        journal.fsync = false;
        let token = CancellationToken::new();
        let (hub, _) = Hub::open(HubOptions::new(journal), token.clone()).expect("hub opens");
        hub.start_expiry().await;
        let plan = Plan {
            flash_opens_in: Duration::ZERO,
            flash_stock: 100,
            pay_timeout_s: 10,
            human_pace: 0.01,
        };
        let demo = tokio::spawn(run_with(hub.clone(), plan, token.clone()));

        let t0 = Instant::now();
        loop {
            let s = hub.room(DEMO_ROOM).map(|r| seen(&r)).unwrap_or_default();
            if s.paid > 0 && s.cancelled > 0 && s.flash_orders > 100 {
                break;
            }
            assert!(t0.elapsed() < WAIT, "not within {WAIT:?}: {s:?}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        token.cancel();
        demo.await.expect("the demo stops");
        hub.tasks().close();
        tokio::time::timeout(WAIT, hub.tasks().wait())
            .await
            .expect("the demo's buyers stop at the shutdown");

        let room = hub.room(DEMO_ROOM).expect("demo room");
        let flash = room.skus.get(FLASH_SKU).expect("flash SKU");
        let held: u64 = {
            let mut held = 0;
            room.orders.for_each_from(0, |o| {
                let keeps = matches!(
                    room.statuses.status(o),
                    OrderStatus::Unpaid | OrderStatus::Paid
                );
                if &*o.sku == FLASH_SKU && keeps {
                    held += o.qty;
                }
            });
            held
        };
        assert!(
            held + flash.left() <= flash.stock_total(),
            "never oversold: {held} held, {} left of {}",
            flash.left(),
            flash.stock_total()
        );
    }
}

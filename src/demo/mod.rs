//! `livehub --demo`: a demo room whose buyers are simulated inside the process, so a
//! newcomer sees a live dashboard within seconds. Buys go through the same hub path (gate,
//! journal, ack) as real ones; only the sockets are skipped.

use std::time::{Duration, Instant};

use rand::Rng;
use tokio_util::sync::CancellationToken;

use crate::clock::now_ms;
use crate::hub::Hub;
use crate::inventory::SkuDef;
use crate::protocol::BuyMsg;

/// The demo room's id.
pub const DEMO_ROOM: &str = "demo";
/// The flash sale opens this long after start.
pub const FLASH_OPENS_IN: Duration = Duration::from_secs(15);

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

fn skus(now: i64) -> Vec<(&'static str, SkuDef)> {
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
            "FLASH",
            def(
                "秒杀·蓝牙耳机 Flash: earbuds",
                9_900,
                500,
                Some(1),
                Some(now + FLASH_OPENS_IN.as_millis() as i64),
                Some(now + 20 * 60_000),
            ),
        ),
    ]
}

/// Sets up the demo room (again, on a restart) and simulates its audience until `shutdown`.
pub async fn run(hub: Hub, shutdown: CancellationToken) {
    if let Err(e) = setup(&hub).await {
        tracing::error!(error = %e, "demo setup failed");
        return;
    }
    let Some(room) = hub.room(DEMO_ROOM) else {
        return;
    };
    let started = Instant::now();
    let mut viewers: Vec<crate::inventory::UserRef> = Vec::new();
    let mut next_user = 0u64;
    let mut req = 0u64;
    let mut tick = tokio::time::interval(Duration::from_millis(50));
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => break,
            _ = tick.tick() => {}
        }
        let t = started.elapsed().as_secs_f64();
        let flash_open = t >= FLASH_OPENS_IN.as_secs_f64();
        // Audience: grows to ~3,000 with a slow wave, a few leave every tick.
        let target =
            (600.0 + 2400.0 * (1.0 - (-t / 60.0).exp()) * (1.0 + 0.15 * (t / 17.0).sin())) as usize;
        let mut rng = rand::rng();
        while viewers.len() < target {
            next_user += 1;
            let u = room.users.intern(&format!("viewer{next_user}"));
            room.live.viewer_joined(&u.id);
            viewers.push(u);
        }
        for _ in 0..rng.random_range(0..=3) {
            if viewers.len() > 10 {
                let i = rng.random_range(0..viewers.len());
                viewers.swap_remove(i);
                room.live.viewer_left();
            }
        }
        // Buys per tick: a varying base rate, and a rush when the flash sale opens.
        let rush = if flash_open && t < FLASH_OPENS_IN.as_secs_f64() + 6.0 {
            12.0
        } else {
            0.0
        };
        let rate = 1.2 + 0.9 * (t / 9.0).sin() + rush;
        let n = rate.max(0.0) as usize + usize::from(rng.random_bool(rate.fract().clamp(0.0, 1.0)));
        for _ in 0..n {
            if viewers.is_empty() {
                break;
            }
            let user = viewers[rng.random_range(0..viewers.len())].clone();
            let sku = if rush > 0.0 || (flash_open && rng.random_bool(0.2)) {
                "FLASH"
            } else {
                ["CUP", "TEA", "RICE"][rng.random_range(0..3)]
            };
            req += 1;
            let msg = BuyMsg {
                req: format!("demo{req}"),
                sku: sku.to_owned(),
                qty: if rng.random_bool(0.8) {
                    1
                } else {
                    rng.random_range(2..=3)
                },
                referrer: rng
                    .random_bool(0.35)
                    .then(|| SHARERS[rng.random_range(0..SHARERS.len())].to_owned()),
            };
            let (hub, room) = (hub.clone(), room.clone());
            tokio::spawn(async move {
                let t0 = Instant::now();
                let _ = hub.buy(&room, &user, &msg).await;
                room.live.record_latency(t0.elapsed().as_micros() as u64);
            });
        }
    }
}

async fn setup(hub: &Hub) -> anyhow::Result<()> {
    hub.put_room(DEMO_ROOM, "演示直播间 Demo livestream".to_owned())
        .await?;
    for (id, def) in skus(now_ms()) {
        let stock = def.stock;
        let state = hub.put_sku(DEMO_ROOM, id, def).await?;
        if state.left < stock / 2 {
            hub.change_stock(DEMO_ROOM, id, (stock - state.left) as i64)
                .await?;
        }
    }
    tracing::info!(
        room = DEMO_ROOM,
        "demo room ready; the flash sale opens in 15 s"
    );
    Ok(())
}

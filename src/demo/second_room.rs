//! The demo's second room, live beside `demo`: a smaller tea stream with a few SKUs paid on
//! placement, a few hundred viewers and a steady trickle of buys, so the overview shows more
//! than one live room. Its buyers are the main room's ([`super::buyer::shop`]), in a
//! [`Stage`] of their own.

use std::time::Instant;

use rand::Rng;
use tokio_util::sync::CancellationToken;

use super::{audience, Plan, Stage, SHARERS, TICK};
use crate::clock::now_ms;
use crate::hub::Hub;
use crate::inventory::SkuDef;

/// The second room's id.
pub const SECOND_ROOM: &str = "demo-tea";

/// Its SKUs: id, name, price in fen, stock.
const SKUS: [(&str, &str, u64, u64); 3] = [
    ("DHP", "武夷大红袍 Da Hong Pao tea", 12_800, 5_000),
    ("CLAY", "紫砂杯 Clay teacup", 6_800, 8_000),
    ("SET", "旅行茶具套装 Travel tea set", 29_900, 2_000),
];

/// Buys a tick on average: a tenth of the main room's base rate.
const BUYS_PER_TICK: f64 = 0.12;

/// Sets up the second room (again, on a restart) and simulates its audience until `shutdown`.
pub(super) async fn run(hub: Hub, shutdown: CancellationToken) {
    if let Err(e) = setup(&hub).await {
        tracing::error!(room = SECOND_ROOM, error = %e, "demo setup failed");
        return;
    }
    let Some(room) = hub.room(SECOND_ROOM) else {
        return;
    };
    let stage = Stage::new(hub, room, Plan::default(), shutdown);
    let room = &stage.room;
    let started = Instant::now();
    let mut viewers = audience::Viewers::new("tea");
    let mut tick = tokio::time::interval(TICK);
    let ids: Vec<&str> = SKUS.iter().map(|s| s.0).collect();
    loop {
        tokio::select! {
            _ = stage.shutdown.cancelled() => break,
            _ = tick.tick() => {}
        }
        let t = started.elapsed().as_secs_f64();
        let now = now_ms();
        // A small audience that grows to a few hundred and sways.
        let target =
            (80.0 + 260.0 * (1.0 - (-t / 90.0).exp()) * (1.0 + 0.2 * (t / 23.0).sin())) as usize;
        let mut rng = rand::rng();
        let mut crowd = audience::Crowd::default();
        viewers.fill(room, &mut crowd, target, now, false, &SHARERS);
        if viewers.len() > 10 && rng.random_bool(0.5) {
            viewers.leave_one(room, &mut crowd, now, &mut rng);
        }
        crowd.interact(
            || viewers.pick(&mut rand::rng()).map(|u| u.id.clone()),
            &ids,
            now,
            (viewers.len() as f64 / 1500.0).max(0.1),
        );
        if !viewers.is_empty() && rng.random_bool(BUYS_PER_TICK) {
            let user = viewers.pick(&mut rng).cloned().expect("someone watches");
            let sku = ids[rng.random_range(0..ids.len())];
            let qty = if rng.random_bool(0.85) { 1 } else { 2 };
            let referrer = super::referrer(&mut rng, 0.25);
            stage.buy(&mut crowd, user, sku, qty, referrer, now);
        }
        crowd.send(&stage.hub, room, now);
    }
}

async fn setup(hub: &Hub) -> anyhow::Result<()> {
    let skus = SKUS.map(|(id, name, price_fen, stock)| {
        let def = SkuDef {
            name: name.to_owned(),
            price_fen,
            stock,
            limit_per_user: None,
            opens_at_ms: None,
            closes_at_ms: None,
            pay_timeout_s: None,
        };
        (id, def)
    });
    super::put_room(hub, SECOND_ROOM, "茶山好物 Tea garden live", skus).await?;
    tracing::info!(room = SECOND_ROOM, "second demo room ready");
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::hub::HubOptions;
    use crate::journal::JournalOptions;

    /// The second room comes up with its SKUs, an audience and orders paid on placement.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_second_room_sells_to_its_own_audience() {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut journal = JournalOptions::new(dir.path());
        journal.fsync = false;
        let token = CancellationToken::new();
        let (hub, _) = Hub::open(HubOptions::new(journal), token.clone()).expect("hub opens");
        let demo = tokio::spawn(run(hub.clone(), token.clone()));
        let t0 = Instant::now();
        loop {
            let room = hub.room(SECOND_ROOM);
            let (orders, viewers) = room.as_ref().map_or((0, 0), |r| {
                (
                    r.orders.count(),
                    r.audience.with(|s| s.figures(now_ms()).unique),
                )
            });
            if orders >= 3 && viewers >= 50 {
                break;
            }
            assert!(
                t0.elapsed() < Duration::from_secs(30),
                "{orders} orders, {viewers} viewers"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        token.cancel();
        demo.await.expect("the room's loop stops");
        let room = hub.room(SECOND_ROOM).expect("room");
        assert_eq!(room.skus.list().len(), SKUS.len());
        assert!(room.title().contains("Tea"));
        room.orders
            .for_each_from(0, |o| assert!(o.pay_by_ms.is_none(), "paid on placement"));
        hub.tasks().close();
        tokio::time::timeout(Duration::from_secs(30), hub.tasks().wait())
            .await
            .expect("its buyers stop at the shutdown");
    }
}

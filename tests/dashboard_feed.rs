//! The dashboard feed: the aggregator alone (totals, heartbeat, trend history and increments)
//! and the WebSocket feed against a real server (coalescing, first message, slow dashboards).

mod support;

use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Value};
use support::*;

use livehub::dashboard::Aggregator;
use livehub::inventory::SkuDef;
use livehub::journal::{Apply, Mode, OrderRecord, Record};
use livehub::rooms::Rooms;

fn rooms_with_sku() -> Arc<Rooms> {
    let rooms = Arc::new(Rooms::default());
    rooms.apply(
        &Record::Room {
            room: "r".into(),
            title: "t".into(),
            ts_ms: 0,
        },
        Mode::Replay,
    );
    let def = SkuDef {
        name: "n".into(),
        price_fen: 100,
        stock: 1_000_000,
        limit_per_user: None,
        opens_at_ms: None,
        closes_at_ms: None,
    };
    rooms.apply(
        &Record::Sku {
            room: "r".into(),
            sku: "A1".into(),
            def,
            created: true,
            ts_ms: 0,
        },
        Mode::Replay,
    );
    rooms
}

fn order(seq: u64, ts_ms: i64, qty: u64, price: u64, user: &str, referrer: Option<&str>) -> Record {
    Record::Order(Arc::new(OrderRecord {
        seq,
        number: seq + 10,
        room: "r".into(),
        sku: "A1".into(),
        user: user.into(),
        req: format!("q{seq}").into(),
        qty,
        price_fen: price,
        amount_fen: qty * price,
        referrer: referrer.map(Into::into),
        ts_ms,
        left_after: 0,
        hub: None,
    }))
}

fn parse(frame: &str) -> Value {
    serde_json::from_str(frame).unwrap()
}

#[tokio::test(start_paused = true)]
async fn totals_equal_the_orders_sums_at_every_seq() {
    let rooms = rooms_with_sku();
    let room = rooms.get("r").unwrap();
    let mut agg = Aggregator::new(room.clone(), Duration::from_millis(100));
    let mut sums = (0u64, 0u64, 0u64);
    let mut seq = 0;
    for batch in 0..20u64 {
        for i in 0..(batch % 7 + 1) {
            seq += 1;
            let (qty, price) = (1 + i % 3, 100 + batch * 7);
            rooms.apply(
                &order(
                    seq,
                    1_000_000 + (seq as i64) * 137,
                    qty,
                    price,
                    &format!("u{}", seq % 9),
                    (i % 2 == 0).then_some("s1"),
                ),
                Mode::Replay,
            );
            sums = (sums.0 + qty * price, sums.1 + 1, sums.2 + qty);
        }
        assert!(agg.step(2_000_000, false), "new orders publish");
        let p = room.snapshots.borrow().clone().unwrap();
        let v = parse(&p.full_frame());
        assert_eq!(v["seq"], seq);
        assert_eq!(
            (
                v["gmv_fen"].as_u64().unwrap(),
                v["orders"].as_u64().unwrap(),
                v["units"].as_u64().unwrap()
            ),
            sums
        );
        assert_eq!(v["skus"][0]["gmv_fen"], sums.0);
        assert_eq!(v["skus"][0]["sold"], sums.2);
        let trend_gmv: u64 = v["trend"]["points"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p["gmv_fen"].as_u64().unwrap())
            .sum();
        assert_eq!(trend_gmv, sums.0, "the trend sums to the GMV");
        assert_eq!(v["buyers"], std::cmp::min(seq, 9));
        assert_eq!(v["aov_fen"], sums.0 / sums.1);
        let top = &v["top_referrers"][0];
        assert_eq!(top["ref"], "s1");
    }
}

#[tokio::test(start_paused = true)]
async fn publishes_only_on_change_and_at_least_once_a_second() {
    let rooms = rooms_with_sku();
    let room = rooms.get("r").unwrap();
    let mut agg = Aggregator::new(room.clone(), Duration::from_millis(100));
    assert!(agg.step(1_000, false), "the first step publishes");
    assert!(!agg.step(1_100, false), "nothing changed: no snapshot");
    tokio::time::advance(Duration::from_millis(500)).await;
    assert!(!agg.step(1_600, false));
    tokio::time::advance(Duration::from_millis(600)).await;
    assert!(agg.step(2_200, false), "heartbeat after a second");
    let n = room.snapshots.borrow().as_ref().unwrap().number;
    rooms.apply(&order(1, 2_300, 1, 100, "u", None), Mode::Replay);
    assert!(agg.step(2_300, false), "a new order publishes at once");
    room.live.viewer_joined(&Arc::from("v1"));
    assert!(agg.step(2_400, false), "a viewer change publishes");
    assert_eq!(room.snapshots.borrow().as_ref().unwrap().number, n + 2);
}

#[test]
fn the_push_interval_stretches_with_the_audience_up_to_a_second() {
    use livehub::dashboard::aggregator::stretched_interval;
    let base = Duration::from_millis(100);
    assert_eq!(stretched_interval(base, 0), base);
    assert_eq!(stretched_interval(base, 1_000), base);
    assert_eq!(stretched_interval(base, 10_000), Duration::from_millis(500));
    assert_eq!(stretched_interval(base, 1_000_000), Duration::from_secs(1));
    assert_eq!(
        stretched_interval(Duration::from_secs(2), 10),
        Duration::from_secs(2),
        "a configured interval above a second stays"
    );
}

#[tokio::test(start_paused = true)]
async fn with_ten_thousand_dashboards_changes_publish_every_500_ms() {
    let rooms = rooms_with_sku();
    let room = rooms.get("r").unwrap();
    room.dashboards
        .store(10_000, std::sync::atomic::Ordering::Relaxed);
    let mut agg = Aggregator::new(room.clone(), Duration::from_millis(100));
    assert!(agg.step(1_000, false));
    let mut published = 0;
    for seq in 1..=20u64 {
        tokio::time::advance(Duration::from_millis(100)).await;
        rooms.apply(
            &order(seq, 1_000 + seq as i64 * 100, 1, 100, "u", None),
            Mode::Replay,
        );
        if agg.step(1_000 + seq as i64 * 100, false) {
            published += 1;
        }
    }
    // 2 s of changes every 100 ms: one snapshot per 500 ms, none of the orders lost.
    assert_eq!(published, 4);
    let v = parse(&room.snapshots.borrow().as_ref().unwrap().full_frame());
    assert_eq!(v["orders"], 20);
}

#[tokio::test(start_paused = true)]
async fn the_trend_has_the_whole_history_first_and_increments_after() {
    let rooms = rooms_with_sku();
    let room = rooms.get("r").unwrap();
    let mut agg = Aggregator::new(room.clone(), Duration::from_millis(100));
    for s in 1..=5u64 {
        rooms.apply(
            &order(s, (s as i64) * 1000 + 10, 1, 100, "u", None),
            Mode::Replay,
        );
    }
    agg.step(6_000, false);
    let first = room.snapshots.borrow().clone().unwrap();
    assert_eq!(
        parse(&first.full_frame())["trend"]["points"]
            .as_array()
            .unwrap()
            .len(),
        5
    );
    rooms.apply(&order(6, 5_500, 2, 100, "u", None), Mode::Replay);
    rooms.apply(&order(7, 7_100, 1, 100, "u", None), Mode::Replay);
    agg.step(7_200, false);
    let second = room.snapshots.borrow().clone().unwrap();
    let delta = parse(&second.delta_frame());
    let pts: Vec<(i64, u64)> = delta["trend"]["points"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| (p["t_ms"].as_i64().unwrap(), p["gmv_fen"].as_u64().unwrap()))
        .collect();
    assert_eq!(
        pts,
        vec![(5_000, 300), (7_000, 100)],
        "the changed bucket and the new one, nothing older"
    );
    assert_eq!(delta["trend"]["interval_ms"], 1000);
    assert_eq!(
        parse(&second.full_frame())["trend"]["points"]
            .as_array()
            .unwrap()
            .len(),
        6
    );
    // The same bytes go to every dashboard: encoded once.
    assert_eq!(
        second.delta_frame().as_str().as_ptr(),
        second.delta_frame().as_str().as_ptr()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dashboards_get_the_full_trend_then_coalesced_snapshots() {
    let s = TestServer::start().await;
    s.create_room("d").await;
    s.create_sku("d", "A1", 250, 100_000, None).await;
    let mut buyer = s.buyer("d", "u1").await;
    for i in 0..5 {
        assert_eq!(buyer.buy(&format!("w{i}"), "A1", 1).await["ok"], true);
    }
    s.stats_at("d", 5).await;
    let mut dash = s.dashboard("d").await;
    let first = dash.next_json().await.unwrap();
    assert_eq!(first["op"], "snapshot");
    assert_eq!(first["seq"], 5);
    let pts: u64 = first["trend"]["points"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["orders"].as_u64().unwrap())
        .sum();
    assert_eq!(pts, 5, "the first message carries the whole history");
    // 300 buys as fast as the socket goes: far fewer snapshots than orders (one per interval).
    for i in 0..300 {
        buyer
            .send_json(json!({"op":"buy","req":format!("b{i}"),"sku":"A1","qty":1}))
            .await;
    }
    for _ in 0..300 {
        assert_eq!(buyer.reply().await["ok"], true);
    }
    let mut snapshots = 0;
    let mut gmv = 0;
    while gmv != 305 * 250 {
        let v = dash.next_json().await.unwrap();
        snapshots += 1;
        gmv = v["gmv_fen"].as_u64().unwrap();
        for k in [
            "room",
            "seq",
            "ts_ms",
            "gmv_fen",
            "orders",
            "units",
            "buyers",
            "viewers",
            "peak_viewers",
            "unique_viewers",
            "aov_fen",
            "conversion",
            "gpm_fen",
            "rejected",
            "latency_us",
            "skus",
            "top_referrers",
            "trend",
        ] {
            assert!(v.get(k).is_some(), "snapshot field {k} missing: {v}");
        }
        assert!(
            v["trend"]["points"].as_array().unwrap().len() <= 3,
            "later snapshots carry new points only"
        );
    }
    assert!(
        snapshots < 100,
        "snapshots are coalesced: {snapshots} for 300 orders"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dashboard_that_never_reads_does_not_slow_buys() {
    let s = TestServer::start().await;
    s.create_room("slow").await;
    s.create_sku("slow", "A1", 100, 1_000_000, None).await;
    // Dashboards that connect and never read a byte.
    let mut stuck = Vec::new();
    for _ in 0..20 {
        let (ws, _) = tokio_tungstenite::connect_async(format!(
            "ws://{}/ws/dashboard?room=slow&token={VIEWER}",
            s.addr
        ))
        .await
        .unwrap();
        stuck.push(ws);
    }
    let mut tasks = Vec::new();
    for u in 0..10 {
        let mut c = s.buyer("slow", &format!("u{u}")).await;
        tasks.push(tokio::spawn(async move {
            for i in 0..200 {
                assert_eq!(c.buy(&format!("r{i}"), "A1", 1).await["ok"], true);
            }
        }));
    }
    for t in tasks {
        tokio::time::timeout(WAIT, t)
            .await
            .expect("buys finish while dashboards are stuck")
            .unwrap();
    }
    // And a dashboard that reads still sees every order.
    let stats = s.stats_at("slow", 2000).await;
    assert_eq!(stats["orders"], 2000);
    let mut live = s.dashboard("slow").await;
    assert_eq!(live.next_json().await.unwrap()["orders"], 2000);
    drop(stuck);
}

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
    rooms
        .apply(
            &Record::Room {
                room: "r".into(),
                title: "t".into(),
                ts_ms: 0,
            },
            Mode::Replay,
        )
        .expect("the record applies");
    let def = SkuDef {
        name: "n".into(),
        price_fen: 100,
        stock: 1_000_000,
        limit_per_user: None,
        opens_at_ms: None,
        closes_at_ms: None,
        pay_timeout_s: None,
    };
    rooms
        .apply(
            &Record::Sku {
                room: "r".into(),
                sku: "A1".into(),
                def,
                created: true,
                ts_ms: 0,
            },
            Mode::Replay,
        )
        .expect("the record applies");
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
        pay_by_ms: None,
        hub: None,
        begun: None,
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
            rooms
                .apply(
                    &order(
                        seq,
                        1_000_000 + (seq as i64) * 137,
                        qty,
                        price,
                        &format!("u{}", seq % 9),
                        (i % 2 == 0).then_some("s1"),
                    ),
                    Mode::Replay,
                )
                .expect("the record applies");
            sums = (sums.0 + qty * price, sums.1 + 1, sums.2 + qty);
        }
        tokio::time::advance(Duration::from_millis(100)).await;
        assert!(agg.step(2_000_000, false), "new orders publish");
        let p = room.feeds.snapshots.borrow().clone().unwrap();
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
    let n = room.feeds.snapshots.borrow().as_ref().unwrap().number;
    rooms
        .apply(&order(1, 2_300, 1, 100, "u", None), Mode::Replay)
        .expect("the record applies");
    assert!(!agg.step(2_200, false), "not twice within a push interval");
    tokio::time::advance(Duration::from_millis(100)).await;
    assert!(
        agg.step(2_300, false),
        "a new order publishes at the next tick"
    );
    room.live.viewer_joined(&Arc::from("v1"));
    tokio::time::advance(Duration::from_millis(100)).await;
    assert!(agg.step(2_400, false), "a viewer change publishes");
    assert_eq!(
        room.feeds.snapshots.borrow().as_ref().unwrap().number,
        n + 2
    );
}

#[test]
fn the_push_interval_stretches_with_the_audience_up_to_a_second() {
    use livehub::dashboard::aggregator::{stretched_interval, tick_interval, FANOUT_FRAMES_PER_S};
    let base = Duration::from_millis(100);
    let s = |n| stretched_interval(base, n, FANOUT_FRAMES_PER_S);
    assert_eq!(s(0), base);
    assert_eq!(s(1_000), base);
    assert_eq!(s(5_000), Duration::from_millis(500));
    assert_eq!(s(10_000), Duration::from_secs(1));
    assert_eq!(s(1_000_000), Duration::from_secs(1));
    assert_eq!(
        stretched_interval(Duration::from_secs(2), 10, FANOUT_FRAMES_PER_S),
        Duration::from_secs(2),
        "a configured interval above a second stays"
    );
    assert_eq!(
        stretched_interval(base, 30, 100),
        Duration::from_millis(300)
    );
    // Unstretched, one tick serves every slot; stretched, a tick serves one of ten slots.
    assert_eq!(tick_interval(base, s(1_000)), base);
    assert_eq!(tick_interval(base, s(5_000)), Duration::from_millis(50));
    assert_eq!(tick_interval(base, s(10_000)), Duration::from_millis(100));
    assert_eq!(
        tick_interval(base, s(1_000_000)),
        Duration::from_millis(100)
    );
    assert_eq!(
        tick_interval(Duration::from_millis(20), Duration::from_millis(50)),
        Duration::from_millis(10),
        "waves no more often than every 10 ms"
    );
}

/// A dashboard as the feed runs it, on a slot of its own: the room's newest snapshot on
/// joining, then its slot's, each through `Published::frame_for`; it merges the trend points
/// by `t_ms` as the page does.
struct Watcher<'a> {
    seat: livehub::dashboard::fanout::Seat<'a>,
    last_sent: Option<u64>,
    trend: std::collections::BTreeMap<i64, (u64, u64)>,
    /// `(tick, number, full rendering?)` of each frame it got.
    got: Vec<(usize, u64, bool)>,
    last: Option<Value>,
}

impl<'a> Watcher<'a> {
    fn join(room: &'a livehub::rooms::room::Room, tick: usize) -> Self {
        let seat = room.feeds.fanout.join();
        let mut w = Watcher {
            seat,
            last_sent: None,
            trend: Default::default(),
            got: Vec::new(),
            last: None,
        };
        if let Some(p) = room.feeds.snapshots.borrow().clone() {
            w.take(&p, tick);
        }
        w
    }

    /// Reads its slot if it was served; returns whether a frame came.
    fn poll(&mut self, tick: usize) -> bool {
        if !self.seat.snapshots.has_changed().unwrap() {
            return false;
        }
        let p = self.seat.snapshots.borrow_and_update().clone().unwrap();
        self.take(&p, tick)
    }

    fn take(&mut self, p: &livehub::dashboard::Published, tick: usize) -> bool {
        let Some(frame) = p.frame_for(self.last_sent) else {
            return false;
        };
        let v = parse(&frame);
        let pts = v["trend"]["points"].as_array().unwrap();
        // The full rendering is one encoding per build: the same bytes.
        let full = frame.as_str().as_ptr() == p.full_frame().as_str().as_ptr();
        if self.last_sent.is_none() {
            assert!(full, "the first frame has the whole trend");
            self.trend.clear();
        }
        for pt in pts {
            self.trend.insert(
                pt["t_ms"].as_i64().unwrap(),
                (
                    pt["gmv_fen"].as_u64().unwrap(),
                    pt["orders"].as_u64().unwrap(),
                ),
            );
        }
        self.last_sent = Some(p.number);
        self.got.push((tick, p.number, full));
        self.last = Some(v);
        true
    }

    /// Its trend summed up, and the totals of the last snapshot it got.
    fn sums(&self) -> ((u64, u64), (u64, u64)) {
        let t = self
            .trend
            .values()
            .fold((0, 0), |a, &(g, o)| (a.0 + g, a.1 + o));
        let v = self.last.as_ref().unwrap();
        (
            t,
            (
                v["gmv_fen"].as_u64().unwrap(),
                v["orders"].as_u64().unwrap(),
            ),
        )
    }
}

#[tokio::test(start_paused = true)]
async fn with_ten_thousand_dashboards_slots_are_served_in_waves() {
    use livehub::dashboard::fanout::FANOUT_SLOTS;
    let rooms = rooms_with_sku();
    let room = rooms.get("r").unwrap();
    // A budget of 20,000 frames a second: 10,000 dashboards every 500 ms, a wave every 50 ms.
    let mut agg =
        Aggregator::new(room.clone(), Duration::from_millis(100)).with_fanout_budget(20_000);
    let mut slots: Vec<_> = (0..FANOUT_SLOTS)
        .map(|i| room.feeds.fanout.subscribe(i))
        .collect();
    assert!(agg.step(1_000, false), "the first tick serves every slot");
    for (i, rx) in slots.iter_mut().enumerate() {
        assert!(rx.has_changed().unwrap(), "slot {i}");
        rx.mark_unchanged();
    }
    room.feeds
        .dashboards
        .store(10_000, std::sync::atomic::Ordering::Relaxed);
    let tick = agg.tick_interval();
    assert_eq!(tick, Duration::from_millis(50));
    // 4 s of an order every tick: which slots each tick serves, and their snapshots.
    let mut served: Vec<Vec<usize>> = Vec::new();
    let mut sums = std::collections::BTreeMap::new();
    sums.insert(0u64, (0u64, 0u64));
    let (mut gmv, mut n) = (0, 0);
    for seq in 1..=80u64 {
        tokio::time::advance(tick).await;
        let now = 1_000 + seq as i64 * 50;
        rooms
            .apply(&order(seq, now, 1, 100 + seq, "u", None), Mode::Replay)
            .expect("the record applies");
        (gmv, n) = (gmv + 100 + seq, n + 1);
        sums.insert(seq, (gmv, n));
        agg.step(now, false);
        let mut this = Vec::new();
        for (i, rx) in slots.iter_mut().enumerate() {
            if rx.has_changed().unwrap() {
                let p = rx.borrow_and_update().clone().unwrap();
                assert_eq!(
                    p.figures.ts_ms, now,
                    "a wave's snapshot is built at its tick"
                );
                let f = &p.figures;
                assert_eq!(
                    (f.gmv_fen, f.orders),
                    sums[&f.seq],
                    "totals at seq {}",
                    f.seq
                );
                this.push(i);
            }
        }
        served.push(this);
    }
    assert!(
        served.iter().all(|s| s.len() <= 1),
        "one slot a tick: {served:?}"
    );
    for i in 0..FANOUT_SLOTS {
        let ticks: Vec<usize> = (0..served.len()).filter(|&t| served[t] == [i]).collect();
        let gaps: Vec<usize> = ticks.windows(2).map(|w| w[1] - w[0]).collect();
        assert!(ticks[0] < 20, "slot {i} first served at tick {}", ticks[0]);
        // Every 500 ms (ten ticks), with changes every tick; the room's latest is the last wave.
        assert!(gaps.iter().all(|&g| g == 10), "slot {i}: gaps {gaps:?}");
        assert!(ticks.len() >= 7, "slot {i}: {ticks:?}");
    }
    let latest = room.feeds.snapshots.borrow().clone().unwrap();
    assert_eq!(
        latest.figures.ts_ms,
        1_000 + 80 * 50,
        "the room's latest is the newest wave"
    );
}

#[tokio::test(start_paused = true)]
async fn every_dashboard_gets_every_trend_point_across_waves_and_audience_changes() {
    use livehub::dashboard::fanout::FANOUT_SLOTS;
    let rooms = rooms_with_sku();
    let room = rooms.get("r").unwrap();
    let base = Duration::from_millis(100);
    let mut agg = Aggregator::new(room.clone(), base);
    let mut ws: Vec<Watcher> = (0..2 * FANOUT_SLOTS)
        .map(|_| Watcher::join(&room, 0))
        .collect();
    let start = tokio::time::Instant::now();
    let mut t = start;
    let mut seq = 0u64;
    let (mut gmv, mut n) = (0u64, 0u64);
    let mut sums = std::collections::BTreeMap::new();
    sums.insert(0u64, (0u64, 0u64));
    let mut late = 0;
    // 12 s: few dashboards, then 10,000 (waves), then few again, then 10,000 with no orders.
    for tick in 0..400usize {
        let now_ms = 10_000 + (t - start).as_millis() as i64;
        let phase = tick / 100;
        room.feeds.dashboards.store(
            if phase % 2 == 1 { 10_000 } else { 20 },
            std::sync::atomic::Ordering::Relaxed,
        );
        if phase < 3 {
            // An order most ticks, now and then one in an older second (a late bucket).
            for k in 0..(tick % 3) as u64 {
                seq += 1;
                let ts = if k == 1 && tick % 7 == 0 {
                    late += 1;
                    now_ms - 2_500 - 1_000 * (late % 3)
                } else {
                    now_ms
                };
                let price = 100 + seq % 13;
                rooms
                    .apply(&order(seq, ts, 1, price, "u", None), Mode::Replay)
                    .expect("the record applies");
                (gmv, n) = (gmv + price, n + 1);
                sums.insert(seq, (gmv, n));
            }
        }
        agg.step_at(t, now_ms, false);
        if tick == 150 {
            // Late joiners, in the middle of the waves.
            for _ in 0..5 {
                ws.push(Watcher::join(&room, tick));
            }
        }
        for (k, w) in ws.iter_mut().enumerate() {
            // A few dashboards are slow: they read their slot only every fourth tick, so they
            // miss some of its snapshots and must get the full rendering then.
            if k % 4 == 3 && tick % 4 != 1 {
                continue;
            }
            w.poll(tick);
        }
        let step = agg.tick_interval();
        t += step;
        tokio::time::advance(step).await;
    }
    let mut missed = 0;
    for (k, w) in ws.iter().enumerate() {
        let (trend, totals) = w.sums();
        assert_eq!(trend, totals, "dashboard {k}: its trend sums to its totals");
        let v = w.last.as_ref().unwrap();
        let seq = v["seq"].as_u64().unwrap();
        assert_eq!(
            totals, sums[&seq],
            "dashboard {k}: totals equal the orders' sums"
        );
        assert_eq!(
            seq,
            *sums.keys().last().unwrap(),
            "dashboard {k} is up to date"
        );
        missed += w.got.iter().filter(|g| g.2).count() - 1;
    }
    assert!(
        missed > 0,
        "some slow dashboards got the full rendering again"
    );
    assert!(late > 5, "late buckets were inserted");
}

#[tokio::test(start_paused = true)]
async fn each_slot_is_served_at_most_every_interval_and_at_least_once_a_second() {
    use livehub::dashboard::fanout::FANOUT_SLOTS;
    let rooms = rooms_with_sku();
    let room = rooms.get("r").unwrap();
    let base = Duration::from_millis(100);
    let mut agg = Aggregator::new(room.clone(), base).with_fanout_budget(100);
    let mut slots: Vec<_> = (0..FANOUT_SLOTS)
        .map(|i| room.feeds.fanout.subscribe(i))
        .collect();
    let start = tokio::time::Instant::now();
    let mut t = start;
    let mut last: Vec<Option<Duration>> = vec![None; FANOUT_SLOTS];
    let mut gaps: Vec<Vec<Duration>> = vec![Vec::new(); FANOUT_SLOTS];
    let mut seq = 0;
    // The audience grows from 0 to 95 and shrinks again (budget 100 frames/s: up to 950 ms);
    // orders come for the first 15 s, then nothing changes.
    for tick in 0..1_000usize {
        let at = t - start;
        let secs = at.as_secs();
        let audience = if secs < 10 {
            secs * 10
        } else {
            (20 - secs.min(20)) * 10
        };
        room.feeds.dashboards.store(
            audience.min(95) as usize,
            std::sync::atomic::Ordering::Relaxed,
        );
        if secs < 15 && tick % 2 == 0 {
            seq += 1;
            rooms
                .apply(
                    &order(seq, at.as_millis() as i64, 1, 100, "u", None),
                    Mode::Replay,
                )
                .expect("the record applies");
        }
        agg.step_at(t, at.as_millis() as i64, false);
        for (i, rx) in slots.iter_mut().enumerate() {
            if rx.has_changed().unwrap() {
                rx.mark_unchanged();
                if let Some(prev) = last[i] {
                    gaps[i].push(at - prev);
                }
                last[i] = Some(at);
            }
        }
        let step = agg.tick_interval();
        t += step;
        tokio::time::advance(step).await;
        if at > Duration::from_secs(30) {
            break;
        }
    }
    for (i, g) in gaps.iter().enumerate() {
        assert!(g.len() > 20, "slot {i}: {} snapshots", g.len());
        assert!(
            g.iter().all(|&d| d >= base),
            "slot {i}: a gap under the interval: {g:?}"
        );
        assert!(
            g.iter().all(|&d| d <= Duration::from_secs(1)),
            "slot {i}: a gap over a second: {g:?}"
        );
        assert!(
            g.iter().any(|&d| d >= Duration::from_millis(500)),
            "slot {i} was stretched at some point: {g:?}"
        );
    }
}

#[tokio::test(start_paused = true)]
async fn the_trend_has_the_whole_history_first_and_increments_after() {
    let rooms = rooms_with_sku();
    let room = rooms.get("r").unwrap();
    let mut agg = Aggregator::new(room.clone(), Duration::from_millis(100));
    for s in 1..=5u64 {
        rooms
            .apply(
                &order(s, (s as i64) * 1000 + 10, 1, 100, "u", None),
                Mode::Replay,
            )
            .expect("the record applies");
    }
    agg.step(6_000, false);
    let first = room.feeds.snapshots.borrow().clone().unwrap();
    assert_eq!(
        parse(&first.full_frame())["trend"]["points"]
            .as_array()
            .unwrap()
            .len(),
        5
    );
    rooms
        .apply(&order(6, 5_500, 2, 100, "u", None), Mode::Replay)
        .expect("the record applies");
    rooms
        .apply(&order(7, 7_100, 1, 100, "u", None), Mode::Replay)
        .expect("the record applies");
    tokio::time::advance(Duration::from_millis(100)).await;
    assert!(agg.step(7_200, false));
    let second = room.feeds.snapshots.borrow().clone().unwrap();
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn staggered_dashboards_each_get_every_trend_point_over_real_sockets() {
    // A budget of 100 frames a second for 30 dashboards: each gets one every 300 ms, in ten
    // waves (one every 30 ms), so the slots are served at different ticks.
    let s = TestServer::start_with(Options {
        push_interval: Duration::from_millis(50),
        fanout_frames_per_s: 100,
        ..Options::default()
    })
    .await;
    s.create_room("w").await;
    s.create_sku("w", "A1", 250, 1_000_000, None).await;
    let mut dashes = Vec::new();
    for _ in 0..30 {
        dashes.push(s.dashboard("w").await);
    }
    const BUYS: u64 = 60;
    let mut readers = Vec::new();
    for mut d in dashes {
        readers.push(tokio::spawn(async move {
            let mut trend = std::collections::BTreeMap::new();
            let mut stamps = Vec::new();
            let mut last_seq = 0;
            loop {
                let v = d.next_json().await.expect("the feed stays open");
                let seq = v["seq"].as_u64().unwrap();
                assert!(seq >= last_seq, "seq went back from {last_seq} to {seq}");
                last_seq = seq;
                if stamps.is_empty() {
                    trend.clear();
                }
                for p in v["trend"]["points"].as_array().unwrap() {
                    trend.insert(
                        p["t_ms"].as_i64().unwrap(),
                        (
                            p["gmv_fen"].as_u64().unwrap(),
                            p["orders"].as_u64().unwrap(),
                        ),
                    );
                }
                stamps.push(v["ts_ms"].as_i64().unwrap());
                let totals = (
                    v["gmv_fen"].as_u64().unwrap(),
                    v["orders"].as_u64().unwrap(),
                );
                let sums = trend
                    .values()
                    .fold((0, 0), |a: (u64, u64), &(g, o)| (a.0 + g, a.1 + o));
                assert_eq!(sums, totals, "the trend sums to the totals at seq {seq}");
                assert_eq!(totals, (seq * 250, seq), "totals equal the orders' sums");
                if seq == BUYS {
                    return (stamps, trend.len());
                }
            }
        }));
    }
    // Buys spread over about three seconds, so they fall in several trend points: a pace, not
    // synchronisation. (Not paused time: the server's journal thread answers on the real
    // clock, and a paused runtime would jump its own clock ahead while it waits.)
    let mut buyer = s.buyer("w", "u1").await;
    for i in 0..BUYS {
        assert_eq!(buyer.buy(&format!("s{i}"), "A1", 1).await["ok"], true);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let mut all_stamps = std::collections::BTreeSet::new();
    let mut most = 0;
    for r in readers {
        let (stamps, points) = tokio::time::timeout(WAIT, r).await.unwrap().unwrap();
        assert!(points >= 3, "several trend points: {points}");
        most = most.max(stamps.len());
        all_stamps.extend(stamps);
    }
    assert!(
        all_stamps.len() > most,
        "different slots got snapshots built at different ticks"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dashboard_that_just_connected_gets_its_second_snapshot_an_interval_after_its_first() {
    // The snapshot on connect is off the aggregator's beat: the slot's next one may come a
    // moment later, and must wait. Six dashboards join at different points of the 300 ms beat
    // while buys change the figures every tick; with no wait, a second snapshot lands in the
    // first 250 ms of five beats in six.
    let interval = Duration::from_millis(300);
    let s = TestServer::start_with(Options {
        push_interval: interval,
        ..Options::default()
    })
    .await;
    s.create_room("g").await;
    s.create_sku("g", "A1", 100, 1_000_000, None).await;
    let buys = s
        .buy_every("g", "u1", "A1", 150, Duration::from_millis(20))
        .await;
    let mut readers = Vec::new();
    for _ in 0..6 {
        let mut d = s.dashboard("g").await;
        readers.push(tokio::spawn(async move {
            let mut at = Vec::new();
            for _ in 0..3 {
                d.next_json().await.expect("the feed stays open");
                at.push(std::time::Instant::now());
            }
            at
        }));
        // Not synchronisation: the next dashboard joins 70 ms later, at another point of the
        // beat.
        tokio::time::sleep(Duration::from_millis(70)).await;
    }
    for r in readers {
        let at = r.await.unwrap();
        let gaps: Vec<Duration> = at.windows(2).map(|w| w[1] - w[0]).collect();
        // Read times, so allow a little of this client's own scheduling.
        assert!(
            gaps.iter()
                .all(|&g| g >= interval - Duration::from_millis(50)),
            "snapshots closer than the push interval: {gaps:?}"
        );
    }
    buys.abort();
}

/// The funnel of a hand-made room: five viewers enter, three of them tap the card (one twice),
/// two order (paid on placement), and one who never entered orders too: each step counts
/// unique users, and the SKU's click-to-order is its orders over its clicks.
#[tokio::test(start_paused = true)]
async fn the_funnel_counts_unique_users_at_each_step() {
    use livehub::journal::{AudienceEvent, AudienceKind};
    let rooms = rooms_with_sku();
    let room = rooms.get("r").unwrap();
    let t = 1_000_000;
    let ev = |kind, user: &str, ts_ms| AudienceEvent {
        kind,
        user: user.into(),
        ts_ms,
        source: Some("share".into()).filter(|_| kind == AudienceKind::Enter),
        referrer: None,
        count: 1,
        sku: Some("A1".into()).filter(|_| kind == AudienceKind::Click),
    };
    let mut events: Vec<AudienceEvent> = (1..=5)
        .map(|i| ev(AudienceKind::Enter, &format!("u{i}"), t))
        .collect();
    for (u, dt) in [("u1", 1), ("u2", 1), ("u2", 2), ("u3", 1)] {
        events.push(ev(AudienceKind::Click, u, t + dt));
    }
    rooms
        .apply(
            &Record::Audience {
                room: "r".into(),
                events: events.into(),
                ts_ms: t,
                frame: Default::default(),
            },
            Mode::Replay,
        )
        .expect("the record applies");
    for (seq, user) in [(1, "u1"), (2, "u2"), (3, "stranger")] {
        rooms
            .apply(&order(seq, t + 10, 1, 100, user, None), Mode::Replay)
            .expect("the record applies");
    }
    let mut agg = Aggregator::new(room.clone(), Duration::from_millis(100));
    tokio::time::advance(Duration::from_millis(100)).await;
    assert!(agg.step(t + 20, false));
    let v = parse(&room.feeds.snapshots.borrow().clone().unwrap().full_frame());
    assert_eq!(
        v["funnel"],
        json!({"entered": 5, "clicked": 3, "ordered": 3, "paid": 3})
    );
    assert_eq!(v["skus"][0]["clicks"], 4);
    assert_eq!(v["skus"][0]["click_to_order"], 0.75);
    assert_eq!(v["audience"]["sources"], json!({"share": 5}));
    assert_eq!(v["audience"]["online"], 5);
}

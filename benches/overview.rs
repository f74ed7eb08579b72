//! The overview's cost with many rooms: building it (every room's line from its newest
//! dashboard snapshot and its activity, then the sort) and encoding it, as the publisher does
//! once a second while anyone watches. 1,000 rooms (`OVERVIEW_ROOMS` to change), each with
//! orders on three SKUs and an audience, each with a published dashboard snapshot.
//!
//! `cargo bench --bench overview`

use std::sync::Arc;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};

use livehub::dashboard::Aggregator;
use livehub::inventory::{Sku, SkuDef};
use livehub::journal::{AudienceEvent, AudienceKind, OrderRecord};
use livehub::overview::build;
use livehub::rooms::Rooms;

/// Rooms in the overview.
const ROOMS: usize = 1_000;
/// Orders per room.
const ORDERS: u64 = 200;
/// Viewers who enter each room.
const VIEWERS: usize = 100;

fn rooms_count() -> usize {
    std::env::var("OVERVIEW_ROOMS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(ROOMS)
}

/// `n` rooms with orders and an audience, each with its dashboard snapshot published.
fn rooms(n: usize, now: i64) -> Rooms {
    let rooms = Rooms::default();
    for r in 0..n {
        let id = format!("room{r:04}");
        let room = rooms.get_or_create(&id, &format!("直播间 {r} livestream"));
        for s in ["A", "B", "C"] {
            let def = SkuDef {
                name: format!("item {s}"),
                price_fen: 9_900,
                stock: 1_000_000,
                limit_per_user: None,
                opens_at_ms: None,
                closes_at_ms: None,
                pay_timeout_s: None,
            };
            room.skus.add(Arc::new(Sku::new(Arc::from(s), &def)));
        }
        for i in 0..ORDERS {
            let qty = 1 + i % 3;
            room.add_replayed_order(Arc::new(OrderRecord {
                seq: i + 1,
                number: i + 1,
                room: room.id.clone(),
                sku: Arc::from(["A", "B", "C"][(i % 3) as usize]),
                user: Arc::from(format!("u{}", i % 50)),
                req: Arc::from(format!("q{i}")),
                qty,
                price_fen: 9_900,
                amount_fen: 9_900 * qty,
                referrer: None,
                ts_ms: now - 600_000 + i as i64 * 1_000,
                left_after: 0,
                pay_by_ms: None,
                hub: None,
                begun: None,
            }));
        }
        let events: Vec<AudienceEvent> = (0..VIEWERS)
            .map(|v| AudienceEvent {
                kind: AudienceKind::Enter,
                user: format!("v{v}").into(),
                ts_ms: now - 60_000,
                source: Some("recommend".into()),
                referrer: None,
                count: 1,
                sku: None,
            })
            .collect();
        room.audience.add(&events);
        room.live.audience_arrived(now - 60_000);
        Aggregator::new(room.clone(), Duration::from_millis(100)).step(now, true);
    }
    rooms
}

fn bench(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .expect("runtime");
    let _guard = rt.enter();
    let n = rooms_count();
    let now = livehub::clock::now_ms();
    let rooms = rooms(n, now);
    let sample = build::build(&rooms.all(), now);
    assert_eq!(sample.rooms.len(), n);
    assert!(sample.rooms.iter().all(|l| l.live && l.orders == ORDERS));
    let bytes = build::encode(&sample).len();
    eprintln!("overview of {n} rooms: {bytes} bytes encoded");

    let mut g = c.benchmark_group("overview");
    g.throughput(Throughput::Elements(n as u64));
    g.bench_function(format!("build_and_encode_{n}_rooms"), |b| {
        b.iter(|| {
            let all = rooms.all();
            let o = build::build(&all, now);
            build::encode(&o)
        })
    });
    g.bench_function(format!("build_{n}_rooms"), |b| {
        b.iter(|| build::build(&rooms.all(), now))
    });
    g.bench_function(format!("encode_{n}_rooms"), |b| {
        b.iter(|| build::encode(&sample))
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);

//! The review (复盘) of a big room, built from nothing: 1,000,000 orders over an hour, on five
//! SKUs (one to pay: most of its orders paid, some expired or cancelled), 100,000 buyers,
//! 1,000 sharers, and an audience of 100,000 events. A build is what the first request after a
//! start (or the first one ever) costs: the fold of every order event, the audience's series,
//! and the JSON and CSV encodings. Later requests of an unchanged room cost a comparison.
//!
//! `cargo bench --bench review`; `BENCH_ORDERS` changes the order count.

use std::sync::Arc;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};

use livehub::journal::record::{Move, Payment};
use livehub::journal::{Apply, AudienceEvent, AudienceKind, Mode, OrderRecord, Record, SkuDef};
use livehub::review::{Fold, Review};
use livehub::rooms::Rooms;

const ORDERS: u64 = 1_000_000;
const T0: i64 = 1_700_000_040_000;
/// The stream's length: an hour.
const SPAN_MS: i64 = 3_600_000;

fn orders() -> u64 {
    std::env::var("BENCH_ORDERS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(ORDERS)
}

/// The room, its records applied as a replay applies them.
fn room(n: u64) -> Rooms {
    let rooms = Rooms::default();
    let apply = |r: Record| rooms.apply(&r, Mode::Replay).expect("applies");
    apply(Record::Room {
        room: "r".into(),
        title: "bench".into(),
        ts_ms: T0,
    });
    let skus: Vec<Arc<str>> = (0..5).map(|i| Arc::from(format!("S{i}"))).collect();
    for (i, s) in skus.iter().enumerate() {
        apply(Record::Sku {
            room: "r".into(),
            sku: s.clone(),
            def: SkuDef {
                name: format!("item {i}"),
                price_fen: 990 * (i as u64 + 1),
                stock: n * 4,
                limit_per_user: None,
                opens_at_ms: None,
                closes_at_ms: None,
                pay_timeout_s: (i == 4).then_some(600),
            },
            created: true,
            ts_ms: T0,
        });
    }
    let users: Vec<Arc<str>> = (0..100_000).map(|i| Arc::from(format!("u{i}"))).collect();
    let refs: Vec<Arc<str>> = (0..1_000).map(|i| Arc::from(format!("s{i}"))).collect();
    let room: Arc<str> = Arc::from("r");
    let mut to_pay = Vec::new();
    for i in 0..n {
        let k = (i % 5) as usize;
        let ts_ms = T0 + (i as i64 * SPAN_MS) / n as i64;
        let qty = 1 + i % 3;
        let price_fen = 990 * (k as u64 + 1);
        let number = 100 + i;
        apply(Record::Order(Arc::new(OrderRecord {
            seq: i + 1,
            number,
            room: room.clone(),
            sku: skus[k].clone(),
            user: users[(i * 7919 % 100_000) as usize].clone(),
            req: Arc::from(format!("q{i}")),
            qty,
            price_fen,
            amount_fen: qty * price_fen,
            referrer: (i % 3 == 0).then(|| refs[(i * 31 % 1_000) as usize].clone()),
            ts_ms,
            left_after: 1,
            pay_by_ms: (k == 4).then_some(ts_ms + 600_000),
            hub: None,
            begun: None,
        })));
        if k == 4 {
            to_pay.push((number, qty * price_fen, ts_ms));
        }
    }
    for (j, (number, amount_fen, ts_ms)) in to_pay.into_iter().enumerate() {
        let at = ts_ms + 30_000;
        let to = match j % 10 {
            0 => {
                apply(Record::Expired {
                    room: room.clone(),
                    orders: vec![number],
                    ts_ms: ts_ms + 600_000,
                });
                continue;
            }
            1 => Move::Cancelled { by_admin: false },
            _ => Move::Paid(Payment {
                payment_id: Arc::from(format!("p{number}")),
                amount_fen,
                paid_at_ms: at,
            }),
        };
        apply(Record::Move {
            room: room.clone(),
            order: number,
            to,
            ts_ms: at,
        });
    }
    let kinds = [
        AudienceKind::Enter,
        AudienceKind::Click,
        AudienceKind::Like,
        AudienceKind::Leave,
    ];
    let events: Vec<AudienceEvent> = (0..100_000i64)
        .map(|i| AudienceEvent {
            kind: kinds[(i % 4) as usize],
            user: format!("u{}", (i / 4) % 100_000).into(),
            ts_ms: T0 + i * SPAN_MS / 100_000,
            source: None,
            referrer: None,
            count: 1,
            sku: (i % 4 == 1).then(|| format!("S{}", i % 5).into()),
        })
        .collect();
    for chunk in events.chunks(1_000) {
        apply(Record::Audience {
            room: room.clone(),
            events: chunk.to_vec().into(),
            ts_ms: T0,
        });
    }
    rooms
}

fn review(c: &mut Criterion) {
    let n = orders();
    let rooms = room(n);
    let room = rooms.get("r").expect("the room");
    let r = Review::build(&room, &mut Fold::new(false));
    assert_eq!(r.totals.orders, n);
    assert_eq!(
        r.minutes.len(),
        70,
        "an hour of orders, expiries 10 minutes on"
    );
    let mut g = c.benchmark_group("review");
    g.sample_size(10)
        .measurement_time(Duration::from_secs(20))
        .throughput(Throughput::Elements(n));
    g.bench_function(format!("build {n} orders"), |b| {
        b.iter(|| {
            let r = Review::build(&room, &mut Fold::new(false));
            let json = serde_json::to_vec(&r).expect("encodes");
            let csv = livehub::review::csv::minutes(&r.minutes);
            (json.len(), csv.len())
        })
    });
    g.finish();
}

criterion_group!(benches, review);
criterion_main!(benches);

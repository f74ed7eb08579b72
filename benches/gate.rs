//! The inventory gate alone: decisions per second on one and two threads, for one contended
//! SKU and for buys spread over 1,000 SKUs. A decision is the full `LocalGate::decide`: SKU
//! lookup, sale-window check, per-user ledger entry, compare-and-swap on the stock.

use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};

use livehub::inventory::UserRef;
use livehub::inventory::{BuyRequest, LocalGate, Sku, SkuDef};
use livehub::rooms::room::Room;

/// Users a benchmark cycles through (distinct ledger entries, as in a real sale).
const USERS: usize = 100_000;

fn users() -> usize {
    std::env::var("BENCH_USERS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(USERS)
}
/// Stock large enough never to run out during a measurement.
const STOCK: u64 = 1 << 50;

fn room_with(skus: usize) -> (Arc<Room>, Vec<String>) {
    let room = Arc::new(Room::new(Arc::from("bench"), "bench".into()));
    let ids: Vec<String> = (0..skus).map(|i| format!("S{i}")).collect();
    for id in &ids {
        let def = SkuDef {
            name: id.clone(),
            price_fen: 9900,
            stock: STOCK,
            limit_per_user: Some(u64::MAX / 2),
            opens_at_ms: None,
            closes_at_ms: None,
            pay_timeout_s: None,
        };
        room.skus
            .add(Arc::new(Sku::new(Arc::from(id.as_str()), &def)));
    }
    (room, ids)
}

/// Runs `iters` decisions split over `threads` threads; returns the wall time.
fn run(room: &Room, skus: &[String], users: &[UserRef], threads: usize, iters: u64) -> Duration {
    let per = iters / threads as u64;
    let start = Instant::now();
    std::thread::scope(|s| {
        for t in 0..threads {
            s.spawn(move || {
                let mut u = t * 7919;
                let mut k = t * 131;
                for _ in 0..per {
                    u = (u + 1) % users.len();
                    k = (k + 1) % skus.len();
                    let r = LocalGate::decide(
                        room.skus.get(&skus[k]),
                        BuyRequest {
                            user: &users[u],
                            sku: &skus[k],
                            qty: 1,
                            now_ms: 0,
                        },
                    );
                    std::hint::black_box(r.is_ok());
                }
            });
        }
    });
    start.elapsed()
}

fn gate(c: &mut Criterion) {
    let users: Vec<String> = (0..users()).map(|i| format!("user{i}")).collect();
    // Each buyer connection interns its user once; decisions then use the key.
    let (probe, _) = room_with(1);
    let users: Vec<UserRef> = users.iter().map(|u| probe.users.intern(u)).collect();
    let mut g = c.benchmark_group("gate");
    g.throughput(Throughput::Elements(1));
    g.measurement_time(Duration::from_secs(4));
    for (label, n_skus) in [("one_contended_sku", 1), ("spread_over_1000_skus", 1000)] {
        let (room, skus) = room_with(n_skus);
        // Warm the ledgers so the measurement sees the steady state (entries exist).
        run(&room, &skus, &users, 1, users.len() as u64);
        for threads in [1, 2] {
            g.bench_with_input(
                BenchmarkId::new(label, format!("{threads}_threads")),
                &threads,
                |b, &threads| {
                    b.iter_custom(|iters| {
                        run(&room, &skus, &users, threads, iters.max(threads as u64))
                    })
                },
            );
        }
    }
    g.finish();
}

criterion_group!(benches, gate);
criterion_main!(benches);

//! Recovery time: writes a journal of N orders (default 1,000,000; `RECOVERY_ORDERS` sets it)
//! through the real writer, then times `Hub::open`, which replays it and rebuilds stock,
//! per-user counts, the idempotency table and the order list. Prints one line per run.

use std::sync::Arc;
use std::time::{Duration, Instant};

use livehub::hub::{Hub, HubOptions};
use livehub::inventory::SkuDef;
use livehub::journal::{Journal, JournalOptions, OrderRecord, Record};
use livehub::rooms::Rooms;
use tokio_util::sync::CancellationToken;

fn main() {
    let n: u64 = std::env::var("RECOVERY_ORDERS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000_000);
    let dir = tempfile::tempdir().unwrap();
    let mut opts = JournalOptions::new(dir.path());
    opts.fsync = false; // Writing the fixture only; recovery reads it back.
    let rt = tokio::runtime::Runtime::new().unwrap();
    let t0 = Instant::now();
    {
        let rooms = Arc::new(Rooms::default());
        let (journal, _) = Journal::open(&opts, rooms).unwrap();
        rt.block_on(async {
            journal
                .append(Record::Room {
                    room: "r".into(),
                    title: "t".into(),
                    ts_ms: 0,
                })
                .await
                .unwrap();
            for s in 0..10 {
                let def = SkuDef {
                    name: format!("s{s}"),
                    price_fen: 9900,
                    stock: n,
                    limit_per_user: Some(5),
                    opens_at_ms: None,
                    closes_at_ms: None,
                };
                journal
                    .append(Record::Sku {
                        room: "r".into(),
                        sku: format!("S{s}").into(),
                        def,
                        created: true,
                        ts_ms: 0,
                    })
                    .await
                    .unwrap();
            }
            let mut pending = Vec::with_capacity(4096);
            for i in 0..n {
                let o = OrderRecord {
                    seq: 0,
                    number: 0,
                    room: "r".into(),
                    sku: format!("S{}", i % 10).into(),
                    user: format!("user{}", i / 3).into(),
                    req: format!("req{i}").into(),
                    qty: 1,
                    price_fen: 9900,
                    amount_fen: 9900,
                    referrer: (i % 4 == 0).then(|| Arc::from("sharer42")),
                    ts_ms: 1_700_000_000_000 + i as i64,
                    left_after: n - i,
                    hub: None,
                };
                loop {
                    match journal.submit(Record::Order(Arc::new(o.clone()))) {
                        Ok(rx) => {
                            pending.push(rx);
                            break;
                        }
                        Err(_) => {
                            for rx in pending.drain(..) {
                                rx.await.unwrap().unwrap();
                            }
                        }
                    }
                }
                if pending.len() >= 4096 {
                    for rx in pending.drain(..) {
                        rx.await.unwrap().unwrap();
                    }
                }
            }
            for rx in pending.drain(..) {
                rx.await.unwrap().unwrap();
            }
        });
    }
    let bytes: u64 = std::fs::read_dir(dir.path().join("journal"))
        .unwrap()
        .map(|e| e.unwrap().metadata().unwrap().len())
        .sum();
    println!(
        "wrote {n} orders ({:.1} MiB) in {:.2?}",
        bytes as f64 / 1048576.0,
        t0.elapsed()
    );
    for run in 1..=3 {
        let _guard = rt.enter();
        let t = Instant::now();
        let (hub, replayed) = Hub::open(
            HubOptions {
                journal: opts.clone(),
                push_interval: Duration::from_millis(100),
                shared: None,
            },
            CancellationToken::new(),
        )
        .unwrap();
        let took = t.elapsed();
        assert_eq!(replayed.orders, n);
        assert_eq!(hub.room("r").unwrap().order_count() as u64, n);
        println!(
            "recovery run {run}: {n} orders replayed in {took:.2?} ({:.0} orders/s)",
            n as f64 / took.as_secs_f64()
        );
        hub.shutdown_token().cancel();
        hub.close_journal();
    }
}

//! Recovery time: writes a journal of N orders (default 1,000,000; `RECOVERY_ORDERS` sets it)
//! through the real writer, taking journal snapshots every `RECOVERY_SNAPSHOT_EVERY` records
//! (default the production default) without compaction, then times `Hub::open` two ways, three
//! runs each, alternating: from the newest journal snapshot plus the records after it, and as a
//! full replay of every segment (the snapshots moved aside). Each rebuilds stock, per-user
//! counts, the idempotency table and the order list. Then it times what a journal snapshot of
//! that state costs: the room state capture on the writer thread (the buy path's only stall),
//! and the encode and write on the snapshot thread. Prints one line per measurement.

use std::sync::Arc;
use std::time::{Duration, Instant};

use livehub::hub::{Hub, HubOptions};
use livehub::inventory::SkuDef;
use livehub::journal::{snapshot, Capture, Journal, JournalOptions, OrderRecord, Record};
use livehub::rooms::Rooms;
use tokio_util::sync::CancellationToken;

fn main() {
    let n: u64 = std::env::var("RECOVERY_ORDERS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000_000);
    let every: u64 = std::env::var("RECOVERY_SNAPSHOT_EVERY")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(livehub::journal::DEFAULT_SNAPSHOT_EVERY_RECORDS);
    let dir = tempfile::tempdir().unwrap();
    let mut opts = JournalOptions::new(dir.path());
    opts.fsync = false; // Writing the fixture only; recovery reads it back.
    opts.snapshot_every_records = every;
    opts.compact = false; // Keep every segment so the full replay can be timed too.
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
                    pay_timeout_s: None,
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
                    pay_by_ms: None,
                    hub: None,
                    begun: None,
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
    let journal_dir = dir.path().join("journal");
    let snaps = snapshot::list(&journal_dir).unwrap();
    let (snap_number, snap_path) = snaps.last().cloned().expect("a snapshot was taken");
    let snap_bytes = std::fs::metadata(&snap_path).unwrap().len();
    println!(
        "newest snapshot: holds records below {snap_number} ({:.1} MiB); every {every} records",
        snap_bytes as f64 / 1048576.0
    );
    // Recovery must not take new journal snapshots while it is being timed.
    let mut ropts = opts.clone();
    ropts.snapshot_every_records = 0;
    let open = |label: &str, run: u32| -> Hub {
        let _guard = rt.enter();
        let t = Instant::now();
        let cpu0 = cpu_time();
        let (hub, replayed) =
            Hub::open(HubOptions::new(ropts.clone()), CancellationToken::new()).unwrap();
        let took = t.elapsed();
        let cpu = cpu_time() - cpu0;
        assert_eq!(hub.room("r").unwrap().orders.count() as u64, n);
        println!(
            "{label} run {run}: {n} orders recovered in {took:.2?}, {cpu:.2?} CPU (snapshot {:?}, {} records replayed)",
            replayed.snapshot, replayed.records
        );
        hub
    };
    // Alternating, so that load from elsewhere on the machine hits both ways alike.
    for run in 1..=3 {
        let hub = open("from snapshot", run);
        hub.shutdown_token().cancel();
        hub.close_journal();
        drop(hub);
        let aside: Vec<_> = snaps
            .iter()
            .map(|(_, p)| {
                let to = p.with_extension("aside");
                std::fs::rename(p, &to).unwrap();
                (p.clone(), to)
            })
            .collect();
        let hub = open("full replay", run);
        hub.shutdown_token().cancel();
        hub.close_journal();
        drop(hub);
        for (p, to) in &aside {
            std::fs::rename(to, p).unwrap();
        }
    }
    let hub = open("from snapshot", 4);
    // What taking a journal snapshot of this state costs.
    let mut stalls = Vec::new();
    for _ in 0..5 {
        let t = Instant::now();
        let cap = hub.rooms().capture_state();
        stalls.push(t.elapsed());
        drop(cap);
    }
    // The encoding alone (into memory), three times: the fastest.
    let mut encodes = Vec::new();
    for _ in 0..3 {
        let t = Instant::now();
        let mut sink = snapshot::Sink::in_memory();
        Box::new(hub.rooms().capture_state()).encode(&mut sink);
        encodes.push(t.elapsed());
        drop(sink.into_bytes());
    }
    let encoded = *encodes.iter().min().unwrap();
    let out = tempfile::tempdir().unwrap();
    let meta = snapshot::Meta {
        next_number: 1,
        seqs: vec![],
    };
    let t = Instant::now();
    let (_, bytes) = snapshot::write_with(out.path(), &meta, |sink| {
        Box::new(hub.rooms().capture_state()).encode(sink)
    })
    .unwrap();
    let written = t.elapsed();
    println!(
        "snapshot of {n} orders: capture on the writer thread {:?} (5 runs: {stalls:?}); encode into memory {encoded:.2?} (fastest of {encodes:.2?}), encode+write+fsync+rename {written:.2?}, {:.1} MiB",
        stalls.iter().max().unwrap(),
        bytes as f64 / 1048576.0
    );
    hub.shutdown_token().cancel();
    hub.close_journal();
}

/// CPU time (user + system) of this process so far, from `/proc/self/stat`: less disturbed
/// than wall time by other work on a shared machine.
fn cpu_time() -> Duration {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let after = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let f: Vec<u64> = after
        .split_whitespace()
        .map(|x| x.parse().unwrap_or(0))
        .collect();
    // Fields 14 and 15 (utime, stime) are at 11 and 12 after the command name; 100 ticks/s.
    let ticks = f.get(11).copied().unwrap_or(0) + f.get(12).copied().unwrap_or(0);
    Duration::from_millis(ticks * 10)
}

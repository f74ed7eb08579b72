//! Journal snapshots: a restart from the newest snapshot plus the records after it gives the
//! same hub as a full replay of every segment (property test over random operations and
//! snapshot intervals); a damaged or torn snapshot falls back to an older one or to a full
//! replay; with the segments it needs compacted away, the start is refused, never silent.

use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use livehub::dashboard::snapshot::TrendPoint;
use livehub::dashboard::Aggregator;
use livehub::hub::buy::order_ack;
use livehub::hub::{Hub, HubOptions};
use livehub::inventory::SkuDef;
use livehub::journal::{snapshot, JournalOptions, Replayed};
use livehub::protocol::BuyMsg;
use proptest::prelude::*;
use tokio_util::sync::CancellationToken;

const ROOMS: [&str; 2] = ["r0", "r1"];
const SKUS: [&str; 3] = ["A", "B", "C"];
const USERS: u8 = 5;
const REQS: u8 = 12;
/// The time the observations are made at, so that states compare exactly.
const NOW: i64 = 4_000_000_000_000;

#[derive(Debug, Clone)]
enum Op {
    Buy {
        room: usize,
        user: u8,
        req: u8,
        sku: usize,
        qty: u64,
        referrer: Option<u8>,
    },
    Stock {
        room: usize,
        sku: usize,
        delta: i64,
    },
    Open {
        room: usize,
        sku: usize,
    },
    Close {
        room: usize,
        sku: usize,
    },
    Limit {
        room: usize,
        sku: usize,
        limit: Option<u64>,
    },
    Title {
        room: usize,
        title: u8,
    },
}

fn op() -> impl Strategy<Value = Op> {
    let room = 0..ROOMS.len();
    let sku = 0..SKUS.len();
    prop_oneof![
        8 => (room.clone(), 0..USERS, 0..REQS, sku.clone(), 1..4u64, proptest::option::of(0..3u8))
            .prop_map(|(room, user, req, sku, qty, referrer)| Op::Buy { room, user, req, sku, qty, referrer }),
        1 => (room.clone(), sku.clone(), -4..6i64).prop_map(|(room, sku, delta)| Op::Stock { room, sku, delta }),
        1 => (room.clone(), sku.clone()).prop_map(|(room, sku)| Op::Open { room, sku }),
        1 => (room.clone(), sku.clone()).prop_map(|(room, sku)| Op::Close { room, sku }),
        1 => (room.clone(), sku.clone(), proptest::option::of(1..6u64))
            .prop_map(|(room, sku, limit)| Op::Limit { room, sku, limit }),
        1 => (room, 0..4u8).prop_map(|(room, title)| Op::Title { room, title }),
    ]
}

fn def(stock: u64, limit: Option<u64>) -> SkuDef {
    SkuDef {
        name: "thing".into(),
        price_fen: 990,
        stock,
        limit_per_user: limit,
        opens_at_ms: None,
        closes_at_ms: None,
        pay_timeout_s: None,
    }
}

fn options(dir: &Path, every: u64, segment_bytes: u64, compact: bool) -> HubOptions {
    let mut journal = JournalOptions::new(dir);
    journal.fsync = false;
    journal.snapshot_every_records = every;
    journal.segment_bytes = segment_bytes;
    journal.compact = compact;
    HubOptions {
        push_interval: Duration::from_secs(3600),
        ..HubOptions::new(journal)
    }
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

fn open(rt: &tokio::runtime::Runtime, opts: HubOptions) -> Result<(Hub, Replayed), String> {
    let _g = rt.enter();
    Hub::open(opts, CancellationToken::new()).map_err(|e| e.to_string())
}

fn close(hub: Hub) {
    hub.shutdown_token().cancel();
    hub.close_journal();
}

/// Creates the rooms and SKUs, then runs `ops` one at a time.
fn run_ops(rt: &tokio::runtime::Runtime, hub: &Hub, ops: &[Op]) {
    rt.block_on(async {
        for room in ROOMS {
            hub.put_room(room, format!("{room} live")).await.unwrap();
            hub.put_sku(room, "A", def(8, Some(3))).await.unwrap();
            hub.put_sku(room, "B", def(20, None)).await.unwrap();
            hub.put_sku(room, "C", def(3, Some(1))).await.unwrap();
        }
        for op in ops {
            match *op {
                Op::Buy {
                    room,
                    user,
                    req,
                    sku,
                    qty,
                    referrer,
                } => {
                    let r = hub.room(ROOMS[room]).unwrap();
                    let u = r.users.intern(&format!("u{user}"));
                    let msg = BuyMsg {
                        req: format!("q{req}"),
                        sku: SKUS[sku].into(),
                        qty,
                        referrer: referrer.map(|x| format!("ref{x}")),
                    };
                    hub.buy(&r, &u, &msg).await;
                }
                Op::Stock { room, sku, delta } => {
                    let _ = hub.change_stock(ROOMS[room], SKUS[sku], delta).await;
                }
                Op::Open { room, sku } => {
                    hub.open_sale(ROOMS[room], SKUS[sku]).await.unwrap();
                }
                Op::Close { room, sku } => {
                    hub.close_sale(ROOMS[room], SKUS[sku]).await.unwrap();
                }
                Op::Limit { room, sku, limit } => {
                    let s = hub.room(ROOMS[room]).unwrap().skus.get(SKUS[sku]).unwrap();
                    let mut d = s.def();
                    d.limit_per_user = limit;
                    // Refused when an open and a close fell in the same millisecond.
                    let _ = hub.put_sku(ROOMS[room], SKUS[sku], d).await;
                }
                Op::Title { room, title } => {
                    hub.put_room(ROOMS[room], format!("title {title}"))
                        .await
                        .unwrap();
                }
            }
        }
    });
}

/// Everything a client can see of a room after a restart, at time [`NOW`].
#[derive(Debug, PartialEq)]
struct Observed {
    title: String,
    /// SKU state, sold-out time, and per user the units held.
    skus: Vec<(String, Option<i64>, Vec<u64>)>,
    /// The NDJSON export.
    export: Vec<String>,
    /// The audit's sums: per SKU, units sold according to the orders.
    audit: Vec<(String, u64, u64, u64)>,
    /// `status` of every (user, req).
    statuses: Vec<String>,
    /// The dashboard's figures and trend.
    figures: String,
    trend: Vec<TrendPoint>,
}

fn observe(rt: &tokio::runtime::Runtime, hub: &Hub) -> BTreeMap<String, Observed> {
    let mut out = BTreeMap::new();
    for room in hub.rooms().all() {
        let skus = room
            .skus
            .list()
            .iter()
            .map(|s| {
                let held = (0..USERS)
                    .map(|u| s.held(room.users.intern(&format!("u{u}")).key))
                    .collect();
                (
                    serde_json::to_string(&s.view(NOW)).unwrap(),
                    s.sold_out_at_ms(),
                    held,
                )
            })
            .collect();
        let orders = room.orders.page_after(0, usize::MAX);
        let export = orders
            .iter()
            .map(|o| room.statuses.export_line(o))
            .collect();
        let audit = room
            .skus
            .list()
            .iter()
            .map(|s| {
                let sold: u64 = orders.iter().filter(|o| o.sku == s.id).map(|o| o.qty).sum();
                (s.id.to_string(), s.stock_total(), sold, s.left())
            })
            .collect();
        let statuses = rt.block_on(async {
            let mut v = Vec::new();
            for u in 0..USERS {
                for q in 0..REQS {
                    let ack = hub.status(&room, &format!("u{u}"), &format!("q{q}")).await;
                    v.push(serde_json::to_string(&ack).unwrap());
                }
            }
            v
        });
        let mut agg = Aggregator::new(room.clone(), Duration::from_secs(3600));
        assert!(agg.step(NOW, true));
        let published = room.feeds.snapshots.borrow().clone().unwrap();
        out.insert(
            room.id.to_string(),
            Observed {
                title: room.title(),
                skus,
                export,
                audit,
                statuses,
                figures: serde_json::to_string(&*published.figures).unwrap(),
                trend: published.trend.to_vec(),
            },
        );
    }
    out
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to.join("journal")).unwrap();
    for e in std::fs::read_dir(from.join("journal")).unwrap() {
        let p = e.unwrap().path();
        std::fs::copy(&p, to.join("journal").join(p.file_name().unwrap())).unwrap();
    }
}

fn remove_snapshots(dir: &Path) {
    for (_, p) in snapshot::list(&dir.join("journal")).unwrap() {
        std::fs::remove_file(p).unwrap();
    }
}

/// A buy after the restart: its order id, which must be new.
fn buy_after(rt: &tokio::runtime::Runtime, hub: &Hub) -> (String, u64) {
    rt.block_on(async {
        hub.put_sku("r0", "Z", def(5, None)).await.unwrap();
        let r = hub.room("r0").unwrap();
        let u = r.users.intern("late");
        let ack = hub
            .buy(
                &r,
                &u,
                &BuyMsg {
                    req: "late".into(),
                    sku: "Z".into(),
                    qty: 1,
                    referrer: None,
                },
            )
            .await;
        assert!(ack.ok, "{ack:?}");
        let o = r.orders.page_after(0, usize::MAX).pop().unwrap();
        assert_eq!(Some(Arc::from(o.order_id())), ack.order);
        (o.order_id(), o.seq)
    })
}

fn order_ids(obs: &BTreeMap<String, Observed>) -> HashSet<String> {
    obs.values()
        .flat_map(|o| o.export.iter())
        .map(|l| {
            serde_json::from_str::<serde_json::Value>(l).unwrap()["order"]
                .as_str()
                .unwrap()
                .to_owned()
        })
        .collect()
}

fn temp() -> PathBuf {
    tempfile::Builder::new()
        .prefix("livehub-snap-")
        .tempdir()
        .unwrap()
        .keep()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 40, ..ProptestConfig::default() })]

    #[test]
    fn a_restart_from_a_snapshot_equals_a_full_replay(
        ops in proptest::collection::vec(op(), 1..140),
        every in 1..60u64,
        segment_bytes in prop_oneof![Just(64u64 << 20), 200..2_000u64],
    ) {
        let rt = runtime();
        let dir = temp();
        let (hub, _) = open(&rt, options(&dir, every, segment_bytes, false)).unwrap();
        run_ops(&rt, &hub, &ops);
        close(hub);
        let full = temp();
        copy_dir(&dir, &full);
        remove_snapshots(&full);

        let (a, ra) = open(&rt, options(&dir, 0, segment_bytes, false)).unwrap();
        let (b, rb) = open(&rt, options(&full, 0, segment_bytes, false)).unwrap();
        prop_assert!(rb.snapshot.is_none());
        let records = rb.next_number - 1;
        prop_assert!(records >= 6, "the set-up alone writes 8 records");
        // The first capture is never skipped, so once `every` records are durable a snapshot
        // exists, and the restart must have used it.
        if records >= every {
            let n = ra.snapshot.expect("a snapshot was restored");
            prop_assert_eq!(ra.records, records + 1 - n, "only the records after it were replayed");
        }
        prop_assert!(ra.bad_snapshots.is_empty());
        prop_assert_eq!(ra.next_number, rb.next_number);
        prop_assert_eq!(&ra.seqs, &rb.seqs);
        let (oa, ob) = (observe(&rt, &a), observe(&rt, &b));
        prop_assert_eq!(&oa, &ob);
        let before = order_ids(&oa);
        let (ida, seqa) = buy_after(&rt, &a);
        let (idb, seqb) = buy_after(&rt, &b);
        prop_assert_eq!((&ida, seqa), (&idb, seqb));
        prop_assert!(!before.contains(&ida), "order id {} reused", ida);
        close(a);
        close(b);
        let _ = std::fs::remove_dir_all(&dir);
        let _ = std::fs::remove_dir_all(&full);
    }
}

/// A stream with small segments and snapshots every few records, compacted as it goes.
/// Runs `ops` in `chunks` parts on a hub that snapshots every few records, waiting after each
/// part until a newer snapshot is on disk. The writer takes no capture while the snapshot
/// thread is busy, so on a loaded machine a short stream could otherwise end with fewer
/// snapshots than a test needs; this makes their number depend on the records, not the
/// scheduler (it waits for an event, with a generous bound, and asserts no time).
fn run_ops_in_snapshotted_parts(
    rt: &tokio::runtime::Runtime,
    hub: &Hub,
    dir: &Path,
    ops: &[Op],
    chunks: usize,
) {
    let newest = || {
        snapshot::list(&dir.join("journal"))
            .unwrap()
            .last()
            .map(|(n, _)| *n)
    };
    for part in ops.chunks(ops.len().div_ceil(chunks)) {
        let before = newest();
        run_ops(rt, hub, part);
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        let mut nudged = std::time::Instant::now();
        while newest() == before {
            assert!(
                std::time::Instant::now() < deadline,
                "no new snapshot within a minute of {} records",
                part.len()
            );
            // The snapshot thread may have been busy through the whole part: a few more
            // journaled records let the writer take the capture it skipped.
            if nudged.elapsed() > Duration::from_millis(200) {
                let nudge: Vec<Op> = (0..12)
                    .map(|_| Op::Stock {
                        room: 0,
                        sku: 1,
                        delta: 1,
                    })
                    .collect();
                run_ops(rt, hub, &nudge);
                nudged = std::time::Instant::now();
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }
}

fn long_stream(rt: &tokio::runtime::Runtime, dir: &Path) -> BTreeMap<String, Observed> {
    let (hub, _) = open(rt, options(dir, 25, 600, true)).unwrap();
    let ops: Vec<Op> = (0..400u32)
        .map(|i| Op::Buy {
            room: (i % 2) as usize,
            user: (i % USERS as u32) as u8,
            req: (i % REQS as u32) as u8,
            sku: 1,
            qty: 1,
            referrer: None,
        })
        .chain((0..200u32).map(|i| Op::Stock {
            room: (i % 2) as usize,
            sku: 1,
            delta: 1,
        }))
        .collect();
    run_ops_in_snapshotted_parts(rt, &hub, dir, &ops, 3);
    close(hub);
    let (hub, r) = open(rt, options(dir, 0, 600, true)).unwrap();
    assert!(r.snapshot.is_some());
    let obs = observe(rt, &hub);
    close(hub);
    let journal = dir.join("journal");
    assert_eq!(
        snapshot::list(&journal).unwrap().len(),
        2,
        "two snapshots kept"
    );
    let first_segment = livehub::journal::segment::list(&journal).unwrap()[0].clone();
    assert_ne!(
        snapshot::segment_first_number(&first_segment),
        Some(1),
        "compaction removed the oldest segments"
    );
    obs
}

fn damage(path: &Path, how: &str) {
    let mut bytes = std::fs::read(path).unwrap();
    match how {
        "flip" => {
            let i = bytes.len() / 2;
            bytes[i] ^= 0x40;
        }
        "truncate" => bytes.truncate(bytes.len() * 2 / 3),
        _ => unreachable!(),
    }
    std::fs::write(path, bytes).unwrap();
}

#[test]
fn a_damaged_or_torn_newest_snapshot_falls_back_to_the_one_before() {
    let rt = runtime();
    for how in ["flip", "truncate"] {
        let dir = temp();
        let expected = long_stream(&rt, &dir);
        let snaps = snapshot::list(&dir.join("journal")).unwrap();
        let (newest, older) = (snaps[1].clone(), snaps[0].clone());
        damage(&newest.1, how);
        let (hub, r) = open(&rt, options(&dir, 0, 600, true)).unwrap();
        assert_eq!(
            r.snapshot,
            Some(older.0),
            "{how}: the older snapshot was used"
        );
        assert_eq!(r.bad_snapshots.len(), 1, "{how}");
        assert_eq!(r.bad_snapshots[0].0, newest.1, "{how}");
        assert_eq!(observe(&rt, &hub), expected, "{how}: nothing was lost");
        close(hub);
    }
}

#[test]
fn with_every_snapshot_damaged_it_replays_everything_or_refuses_to_start() {
    let rt = runtime();
    // Segments kept: a full replay gives the same state.
    let dir = temp();
    let (hub, _) = open(&rt, options(&dir, 10, 600, false)).unwrap();
    let ops: Vec<Op> = (0..120u32)
        .map(|i| Op::Buy {
            room: 0,
            user: (i % USERS as u32) as u8,
            req: (i % REQS as u32) as u8,
            sku: 1,
            qty: 1,
            referrer: Some(1),
        })
        .collect();
    run_ops_in_snapshotted_parts(&rt, &hub, &dir, &ops, 2);
    close(hub);
    let (hub, _) = open(&rt, options(&dir, 0, 600, false)).unwrap();
    let expected = observe(&rt, &hub);
    close(hub);
    let snaps = snapshot::list(&dir.join("journal")).unwrap();
    assert!(snaps.len() >= 2);
    for (_, p) in &snaps {
        damage(p, "flip");
    }
    let (hub, r) = open(&rt, options(&dir, 0, 600, false)).unwrap();
    assert_eq!(r.snapshot, None);
    assert_eq!(r.bad_snapshots.len(), snaps.len());
    assert_eq!(observe(&rt, &hub), expected, "a full replay");
    close(hub);

    // Segments compacted away: starting would lose orders, so it is refused, naming why.
    let dir = temp();
    long_stream(&rt, &dir);
    let snaps = snapshot::list(&dir.join("journal")).unwrap();
    for (_, p) in &snaps {
        damage(p, "truncate");
    }
    let err = open(&rt, options(&dir, 0, 600, true))
        .err()
        .expect("refused");
    for (_, p) in &snaps {
        assert!(err.contains(&p.display().to_string()), "names {p:?}: {err}");
    }
    assert!(err.contains("compacted"), "{err}");
    // Nothing was deleted or cut by the refusal.
    assert_eq!(snapshot::list(&dir.join("journal")).unwrap().len(), 2);
}

#[test]
fn a_status_and_a_repeated_req_after_a_snapshot_restart_give_the_original_order() {
    let rt = runtime();
    let dir = temp();
    let (hub, _) = open(&rt, options(&dir, 3, 64 << 20, true)).unwrap();
    let (r, first) = rt.block_on(async {
        hub.put_room("r0", "t".into()).await.unwrap();
        hub.put_sku("r0", "A", def(10, Some(2))).await.unwrap();
        let r = hub.room("r0").unwrap();
        let u = r.users.intern("u1");
        let msg = BuyMsg {
            req: "q1".into(),
            sku: "A".into(),
            qty: 2,
            referrer: None,
        };
        let first = hub.buy(&r, &u, &msg).await;
        for i in 0..5 {
            let u = r.users.intern(&format!("x{i}"));
            let m = BuyMsg {
                req: "y".into(),
                sku: "A".into(),
                qty: 1,
                referrer: None,
            };
            assert!(hub.buy(&r, &u, &m).await.ok);
        }
        (r, first)
    });
    assert!(first.ok);
    drop(r);
    close(hub);
    let (hub, rep) = open(&rt, options(&dir, 0, 64 << 20, true)).unwrap();
    assert!(rep.snapshot.is_some(), "restarted from a snapshot");
    rt.block_on(async {
        let r = hub.room("r0").unwrap();
        let u = r.users.intern("u1");
        assert_eq!(hub.status(&r, "u1", "q1").await, first);
        let msg = BuyMsg {
            req: "q1".into(),
            sku: "A".into(),
            qty: 2,
            referrer: None,
        };
        assert_eq!(
            hub.buy(&r, &u, &msg).await,
            first,
            "same order, no second one"
        );
        // The per-user count survived: limit 2, 2 bought.
        let more = BuyMsg {
            req: "q2".into(),
            sku: "A".into(),
            qty: 1,
            referrer: None,
        };
        let ack = hub.buy(&r, &u, &more).await;
        assert_eq!(ack.error.map(|c| c.as_str()), Some("limit_exceeded"));
        assert_eq!(r.orders.count(), 6);
        let o = r.orders.page_after(0, 1).pop().unwrap();
        assert_eq!(order_ack(&o, "q1", &r), first);
    });
    close(hub);
}

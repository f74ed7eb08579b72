//! The journal through the whole server: restart keeps everything, failed writes acknowledge
//! nothing and lose nothing, a torn tail is cut, corruption before the tail refuses to start,
//! and batches written into a preallocated segment survive a crash.

mod support;

use std::collections::HashSet;
use std::io::Write;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use serde_json::json;
use support::*;

async fn setup(s: &TestServer, room: &str) {
    s.create_room(room).await;
    s.create_sku(room, "A1", 1234, 50, Some(5)).await;
    s.create_sku(room, "B2", 500, 10, None).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_keeps_orders_idempotency_stock_and_figures() {
    let s = TestServer::start().await;
    setup(&s, "r").await;
    let mut c = s.buyer("r", "u1").await;
    let a = c.buy("q1", "A1", 2).await;
    let b = c.buy("q2", "B2", 3).await;
    assert_eq!(
        (a["ok"].as_bool(), b["ok"].as_bool()),
        (Some(true), Some(true))
    );
    s.admin(
        "POST",
        "/api/rooms/r/skus/B2/stock",
        Some(json!({"delta": 4})),
    )
    .await;
    s.admin("POST", "/api/rooms/r/skus/A1/close", None).await;
    let before_export = s.export("r").await;
    let before_stats = s.stats_at("r", 2).await;
    drop(c);
    let dir = s.stop().await;

    let s = TestServer::start_in(&dir, Options::default()).await;
    assert_eq!(
        s.export("r").await,
        before_export,
        "the export is the same after a restart"
    );
    let audit = s.audit("r").await;
    assert_eq!(audit["consistent"], true, "{audit}");
    let b2 = &audit["skus"][1];
    assert_eq!(
        (
            b2["stock_total"].as_u64(),
            b2["sold"].as_u64(),
            b2["left"].as_u64()
        ),
        (Some(14), Some(3), Some(11))
    );
    let stats = s.stats_at("r", 2).await;
    for k in ["gmv_fen", "orders", "units", "buyers", "seq"] {
        assert_eq!(stats[k], before_stats[k], "{k}");
    }
    // The audience online is sampled live into the trend, and not kept over a restart.
    let sales = |v: &serde_json::Value| {
        let mut points = v["trend"]["points"].clone();
        for p in points.as_array_mut().unwrap() {
            p.as_object_mut().unwrap().remove("online");
        }
        points
    };
    assert_eq!(sales(&stats), sales(&before_stats));
    let mut c = s.buyer("r", "u1").await;
    // The sale stayed closed; the repeated req gets its original order.
    assert_eq!(c.buy("q9", "A1", 1).await["error"], "closed");
    assert_eq!(c.buy("q1", "A1", 2).await, a);
    c.send_json(json!({"op":"status","req":"q2"})).await;
    assert_eq!(c.reply().await, b);
    // The per-user count survived: limit 5, 2 bought before.
    s.admin("POST", "/api/rooms/r/skus/A1/open", None).await;
    assert_eq!(c.buy("q3", "A1", 4).await["error"], "limit_exceeded");
    let q4 = c.buy("q4", "A1", 3).await;
    assert_eq!(q4["ok"], true);
    // Order ids stay unique across restarts, and seq keeps growing.
    let export = s.export("r").await;
    let ids: HashSet<&str> = export
        .iter()
        .map(|o| o["order"].as_str().unwrap())
        .collect();
    assert_eq!(ids.len(), export.len());
    assert_eq!(export.last().unwrap()["seq"], 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_fsync_acknowledges_nothing_gives_stock_back_and_keeps_serving() {
    let s = TestServer::start().await;
    setup(&s, "f").await;
    let mut c = s.buyer("f", "u1").await;
    assert_eq!(c.buy("ok1", "B2", 1).await["ok"], true);
    s.faults.fail_next_syncs(1);
    let failed = c.buy("bad1", "B2", 2).await;
    assert_eq!(failed["ok"], false);
    assert_eq!(failed["error"], "unavailable");
    assert_eq!(failed["left"], 9, "its stock went back");
    c.send_json(json!({"op":"status","req":"bad1"})).await;
    assert_eq!(
        c.reply().await["error"],
        "unknown_request",
        "the refused req made nothing"
    );
    s.faults.fail_next_writes(1);
    assert_eq!(c.buy("bad2", "A1", 5).await["error"], "unavailable");
    // The hub keeps serving; the same reqs are decided afresh.
    let retry = c.buy("bad1", "B2", 2).await;
    assert_eq!(retry["ok"], true, "{retry}");
    assert_eq!(retry["left"], 7);
    assert_eq!(
        c.buy("bad2", "A1", 5).await["ok"],
        true,
        "limit 5 was not used up by the failed buy"
    );
    // An admin change whose write fails changes nothing.
    s.faults.fail_next_syncs(1);
    let (st, v) = s
        .request(
            "POST",
            "/api/rooms/f/skus/B2/stock",
            Some(ADMIN),
            Some(json!({"delta": -3})),
        )
        .await;
    assert_eq!((st, v["error"].clone()), (503, json!("unavailable")));
    let audit = s.audit("f").await;
    assert_eq!(audit["consistent"], true, "{audit}");
    assert_eq!(audit["skus"][1]["left"], 7);
    let orders: Vec<String> = s
        .export("f")
        .await
        .iter()
        .map(|o| o["req"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(orders, ["ok1", "bad1", "bad2"]);
    let dir = s.stop().await;
    // After a restart, nothing of the failed batches is there.
    let s = TestServer::start_in(&dir, Options::default()).await;
    let after: Vec<String> = s
        .export("f")
        .await
        .iter()
        .map(|o| o["req"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(after, ["ok1", "bad1", "bad2"]);
    let audit = s.audit("f").await;
    assert_eq!(audit["consistent"], true, "{audit}");
    assert_eq!(audit["skus"][1]["stock_total"], 10);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failures_under_concurrent_load_never_ack_a_lost_order() {
    let s = TestServer::start().await;
    s.create_room("L").await;
    s.create_sku("L", "A1", 100, 100_000, None).await;
    let answered = Arc::new(AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for u in 0..20 {
        let mut c = s.buyer("L", &format!("u{u}")).await;
        let answered = answered.clone();
        tasks.push(tokio::spawn(async move {
            let mut ok = Vec::new();
            for r in 0..60 {
                let ack = c.buy(&format!("r{r}"), "A1", 1).await;
                answered.fetch_add(1, Ordering::SeqCst);
                if ack["ok"] == true {
                    ok.push(ack["order"].as_str().unwrap().to_owned());
                } else {
                    assert_eq!(ack["error"], "unavailable", "{ack}");
                }
            }
            ok
        }));
    }
    // Sixteen faults spread over the load by its progress, one every 60 of its 1,200 answers,
    // the last with 240 buys still to come: each lands while buys are in flight, however fast
    // or slow this machine runs them.
    for k in 1..=16 {
        eventually(
            WAIT,
            &format!("{} of the 1,200 buys answered", 60 * k),
            async || answered.load(Ordering::SeqCst) >= 60 * k,
        )
        .await;
        if k % 2 == 1 {
            s.faults.fail_next_syncs(1);
        } else {
            s.faults.fail_next_writes(1);
        }
    }
    let mut acked = Vec::new();
    for t in tasks {
        acked.extend(t.await.unwrap());
    }
    assert!(
        acked.len() < 1200,
        "some buys were refused by the injected faults"
    );
    let dir = s.stop().await;
    let s = TestServer::start_in(&dir, Options::default()).await;
    let export = s.export("L").await;
    let exported: HashSet<&str> = export
        .iter()
        .map(|o| o["order"].as_str().unwrap())
        .collect();
    assert_eq!(
        exported.len(),
        acked.len(),
        "exactly the acknowledged orders are durable"
    );
    assert!(acked.iter().all(|o| exported.contains(o.as_str())));
    let audit = s.audit("L").await;
    assert_eq!(audit["consistent"], true, "{audit}");
    assert_eq!(audit["skus"][0]["sold"], acked.len());
}

fn last_segment(dir: &std::path::Path) -> std::path::PathBuf {
    livehub::journal::segment::list(&dir.join("journal"))
        .unwrap()
        .pop()
        .expect("a segment")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_torn_tail_is_cut_and_everything_before_it_kept() {
    let s = TestServer::start().await;
    setup(&s, "t").await;
    let mut c = s.buyer("t", "u1").await;
    for i in 0..5 {
        assert_eq!(c.buy(&format!("q{i}"), "B2", 1).await["ok"], true);
    }
    drop(c);
    let dir = s.stop().await;
    let seg = last_segment(&dir);
    let good_len = std::fs::metadata(&seg).unwrap().len();
    // A frame header announcing more bytes than were written, as a crash mid-write leaves.
    let mut f = std::fs::OpenOptions::new().append(true).open(&seg).unwrap();
    f.write_all(&[200, 0, 0, 0, 1, 2, 3, 4, 9, 9, 9]).unwrap();
    drop(f);
    let s = TestServer::start_in(&dir, Options::default()).await;
    assert_eq!(s.export("t").await.len(), 5);
    // Cut, and then the segment extended with zeros again (preallocated) for the writer.
    let after = std::fs::read(&seg).unwrap();
    assert!(after.len() as u64 >= good_len);
    assert!(
        after[good_len as usize..].iter().all(|&b| b == 0),
        "the torn tail was cut"
    );
    let mut c = s.buyer("t", "u1").await;
    assert_eq!(
        c.buy("q5", "B2", 1).await["ok"],
        true,
        "and the journal appends after it"
    );
    drop(c);
    let dir = s.stop().await;
    // Zeros after the last frame (a file extended but never written) are no damage: they
    // read as a preallocated segment's unused rest.
    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .open(last_segment(&dir))
        .unwrap();
    f.write_all(&[0u8; 4096]).unwrap();
    drop(f);
    let s = TestServer::start_in(&dir, Options::default()).await;
    assert_eq!(s.export("t").await.len(), 6);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn corruption_before_the_tail_refuses_to_start_and_names_the_place() {
    let s = TestServer::start().await;
    setup(&s, "c").await;
    let mut c = s.buyer("c", "u1").await;
    for i in 0..5 {
        assert_eq!(c.buy(&format!("q{i}"), "B2", 1).await["ok"], true);
    }
    drop(c);
    let dir = s.stop().await;
    let seg = last_segment(&dir);
    let mut bytes = std::fs::read(&seg).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x55;
    std::fs::write(&seg, &bytes).unwrap();
    let err = match TestServer::try_start_in(&dir, Options::default()).await {
        Ok(_) => panic!("a server must not start on a damaged journal"),
        Err(e) => format!("{e:#}"),
    };
    assert!(
        err.contains(&seg.display().to_string()),
        "names the file: {err}"
    );
    assert!(err.contains("offset"), "names the offset: {err}");
    assert_eq!(std::fs::read(&seg).unwrap(), bytes, "nothing was cut");
}

/// Where the whole batches (or record frames) at the start of `bytes` end.
fn records_end(bytes: &[u8]) -> usize {
    use livehub::journal::record::{read_frame, Frame};
    let mut pos = 0;
    while let Frame::Valid { len, .. } | Frame::Batch { len, .. } = read_frame(&bytes[pos..]) {
        pos += len;
    }
    pos
}

/// The files of `from`'s journal copied to a new data dir, as a crash would leave them: every
/// acked record was fsynced, so the copy holds them.
fn copy_journal(from: &std::path::Path) -> std::path::PathBuf {
    let to = temp_dir();
    std::fs::create_dir_all(to.join("journal")).unwrap();
    for e in std::fs::read_dir(from.join("journal")).unwrap() {
        let p = e.unwrap().path();
        std::fs::copy(&p, to.join("journal").join(p.file_name().unwrap())).unwrap();
    }
    to
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn orders_written_into_a_preallocated_segment_survive_a_crash_and_a_clean_stop_trims_it() {
    // Segments of 256 bytes, a few records each: the eight buys below go through rotations (B2 has 10 in stock).
    const SEGMENT: u64 = 256;
    let opts = || Options {
        segment_bytes: SEGMENT,
        ..Options::default()
    };
    let s = TestServer::start_with(opts()).await;
    setup(&s, "p").await;
    let mut c = s.buyer("p", "u1").await;
    // Every segment, the first one too, is zero-filled to a whole segment before it is
    // written: the last segment is a whole segment long, its records followed by zeros.
    let mut acked = Vec::new();
    for i in 0..8 {
        let a = c.buy(&format!("q{i}"), "B2", 1).await;
        assert_eq!(a["ok"], true, "{a}");
        acked.push(a["order"].as_str().unwrap().to_string());
        let len = std::fs::metadata(last_segment(&s.data_dir)).unwrap().len();
        assert!(len >= SEGMENT, "segment of {len} bytes");
        // Before the next buy, the writer has left a full segment (it rotates just after
        // answering) and the spare thread has filled the next one, so a rotation that buy
        // causes takes a preallocated segment.
        eventually_ok(
            WAIT,
            "a spare segment ready for the next rotation",
            async || {
                let seg = last_segment(&s.data_dir);
                let written = records_end(&std::fs::read(&seg).unwrap());
                let spare = s.data_dir.join("journal").join("spare.seg.ready").exists();
                if written < SEGMENT as usize && spare {
                    Ok(())
                } else {
                    Err(format!(
                        "{} holds {written} bytes of records, spare ready: {spare}",
                        seg.display()
                    ))
                }
            },
        )
        .await;
    }
    let seg = last_segment(&s.data_dir);
    assert_ne!(
        livehub::journal::snapshot::segment_first_number(&seg),
        Some(1),
        "a second segment: {:?}",
        std::fs::read_dir(s.data_dir.join("journal"))
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect::<Vec<_>>()
    );
    let crashed = copy_journal(&s.data_dir);
    drop(c);
    let dir = s.stop().await;
    for seg in livehub::journal::segment::list(&dir.join("journal")).unwrap() {
        let bytes = std::fs::read(&seg).unwrap();
        assert_eq!(
            records_end(&bytes),
            bytes.len(),
            "a clean stop trims the zeros: {}",
            seg.display()
        );
    }
    let leftovers: Vec<_> = std::fs::read_dir(dir.join("journal"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| n.starts_with("spare"))
        .collect();
    assert!(leftovers.is_empty(), "no spare left behind: {leftovers:?}");

    // The crash copy: the zeros are kept (not cut as a torn tail) and written into.
    let s = TestServer::start_in(&crashed, opts()).await;
    let exported: HashSet<String> = s
        .export("p")
        .await
        .iter()
        .map(|o| o["order"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(exported, acked.iter().cloned().collect::<HashSet<_>>());
    let crashed_seg = last_segment(&crashed);
    assert_eq!(std::fs::metadata(&crashed_seg).unwrap().len(), SEGMENT);
    let mut c = s.buyer("p", "u1").await;
    assert_eq!(
        c.buy("q0", "B2", 1).await["order"].as_str(),
        Some(acked[0].as_str()),
        "a retry is still answered with its order"
    );
    assert_eq!(c.buy("after", "B2", 1).await["ok"], true);
    drop(c);
    let dir = s.stop().await;
    let s = TestServer::start_in(&dir, opts()).await;
    assert_eq!(s.export("p").await.len(), acked.len() + 1);
    let dir = s.stop().await;

    // Zeros after the records of a segment that is not the last are no damage either...
    let first = livehub::journal::segment::list(&dir.join("journal")).unwrap()[0].clone();
    let mut bytes = std::fs::read(&first).unwrap();
    let records_len = bytes.len();
    bytes.extend_from_slice(&[0u8; 4096]);
    std::fs::write(&first, &bytes).unwrap();
    let s = TestServer::start_in(&dir, opts()).await;
    assert_eq!(s.export("p").await.len(), acked.len() + 1);
    let dir = s.stop().await;
    // ...but a record lost in them leaves a gap before the next segment, which is refused.
    assert_eq!(records_end(&bytes[..records_len]), records_len);
    let last_frame = records_end(&bytes[..records_len - 1]);
    bytes[last_frame..].fill(0);
    std::fs::write(&first, &bytes).unwrap();
    let err = match TestServer::try_start_in(&dir, opts()).await {
        Ok(_) => panic!("a server must not start with a record missing"),
        Err(e) => format!("{e:#}"),
    };
    assert!(err.contains("ends before record"), "{err}");
}

/// A failed batch that cannot be cut off the segment stops the hub (fail-stop): its records
/// may be on disk, so its buyer is told nothing, neither that it failed nor that it succeeded.
/// After a restart the order is there, and the buyer's retry of the same `req` gets it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_batch_that_cannot_be_cut_off_stops_the_hub_and_tells_nobody_it_failed() {
    use std::sync::{Arc, Mutex};
    let stopped: Arc<Mutex<Option<String>>> = Arc::default();
    let hook = {
        let stopped = stopped.clone();
        livehub::journal::FatalHook(Arc::new(move |reason: &str| {
            *stopped.lock().unwrap() = Some(reason.to_owned());
        }))
    };
    let s = TestServer::start_with(Options {
        on_fatal: Some(hook),
        ..Options::default()
    })
    .await;
    setup(&s, "x").await;
    let mut c = s.buyer("x", "u1").await;
    assert_eq!(c.buy("q0", "B2", 1).await["ok"], true);
    s.faults.fail_next_syncs(1);
    s.faults.fail_next_cuts(1);
    c.send_json(json!({"op":"buy","req":"q1","sku":"B2","qty":2}))
        .await;
    let reason = eventually_ok(WAIT, "the journal stops", async || {
        stopped.lock().unwrap().clone().ok_or("still running")
    })
    .await;
    assert!(reason.contains("could not be cut off"), "{reason}");
    // The buy is not answered: the next frame is the pong, not an `unavailable` ack.
    c.send_json(json!({"op":"ping"})).await;
    let next = c.reply().await;
    assert_eq!(next["op"], "pong", "the failed buy was answered: {next}");
    // The process would exit here; a restart on what is on disk has the order.
    let copy = copy_journal(&s.data_dir);
    let again = TestServer::start_in(&copy, Options::default()).await;
    let mut c2 = again.buyer("x", "u1").await;
    let retry = c2.buy("q1", "B2", 2).await;
    assert_eq!(retry["ok"], true, "{retry}");
    assert_eq!(retry["left"], 7, "the order on disk, not a second one");
    assert_eq!(again.export("x").await.len(), 2);
}

//! The demo's earlier stream (`src/demo/earlier.rs`): a finished room whose activity lies in
//! the past, seeded once, and rebuilt from the journal after a restart.

mod support;

use std::collections::BTreeMap;

use livehub::demo::earlier::{EARLIER_ROOM, ENDED_AGO_MS, SELL_OUT_SKU};
use serde_json::Value;
use support::{Options, TestServer};

fn demo() -> Options {
    Options {
        demo: true,
        fsync: false,
        ..Options::default()
    }
}

/// How many rooms of `/api/rooms` are the earlier stream's.
async fn earlier_rooms(s: &TestServer) -> usize {
    let (status, v) = s
        .request("GET", "/api/rooms", Some(support::VIEWER), None)
        .await;
    assert_eq!(status, 200, "{v}");
    let rooms = v.as_array().expect("a list of rooms");
    rooms.iter().filter(|r| r["room"] == EARLIER_ROOM).count()
}

/// Orders by status.
fn by_status(orders: &[Value]) -> BTreeMap<String, usize> {
    let mut m = BTreeMap::new();
    for o in orders {
        *m.entry(o["status"].as_str().unwrap().to_owned())
            .or_default() += 1;
    }
    m
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_earlier_stream_is_seeded_once_and_survives_a_restart() {
    let s = TestServer::start_with(demo()).await;
    assert_eq!(earlier_rooms(&s).await, 1);
    let before = s.export(EARLIER_ROOM).await;
    assert!(
        before.len() > 100,
        "a stream's worth of orders: {}",
        before.len()
    );
    let now = livehub::clock::now_ms();
    let latest = before
        .iter()
        .map(|o| o["ts_ms"].as_i64().unwrap())
        .max()
        .unwrap();
    assert!(
        latest < now - ENDED_AGO_MS + 5 * 60_000,
        "every order lies in the past: the latest {} ms ago",
        now - latest
    );
    let statuses = by_status(&before);
    for st in ["paid", "cancelled", "expired", "refunded"] {
        assert!(
            statuses.get(st).copied().unwrap_or(0) > 0,
            "some {st}: {statuses:?}"
        );
    }
    let sold_out = s.stats(EARLIER_ROOM).await["skus"]
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["sku"] == SELL_OUT_SKU)
        .cloned()
        .expect("the limited SKU");
    assert_eq!(sold_out["left"], 0, "{sold_out}");

    let dir = s.stop().await;
    let s = TestServer::start_in(&dir, demo()).await;
    assert_eq!(
        earlier_rooms(&s).await,
        1,
        "one earlier room after the restart"
    );
    let after = s.export(EARLIER_ROOM).await;
    assert_eq!(
        after, before,
        "not seeded again; the same orders, statuses included"
    );
    s.stop().await;
}

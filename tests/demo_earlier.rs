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

/// The earlier room's review.
async fn review_of(s: &TestServer) -> Value {
    let (status, v) = s
        .request(
            "GET",
            &format!("/api/rooms/{EARLIER_ROOM}/review"),
            Some(support::VIEWER),
            None,
        )
        .await;
    assert_eq!(status, 200, "{v}");
    v
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
    // The room as the gate holds it now (a dashboard snapshot may predate the seeding).
    let (status, rooms) = s
        .request("GET", "/api/rooms", Some(support::VIEWER), None)
        .await;
    assert_eq!(status, 200);
    let sold_out = rooms
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["room"] == EARLIER_ROOM)
        .and_then(|r| {
            r["skus"]
                .as_array()?
                .iter()
                .find(|k| k["sku"] == SELL_OUT_SKU)
        })
        .cloned()
        .expect("the limited SKU");
    assert_eq!(sold_out["left"], 0, "{sold_out}");
    let review = review_of(&s).await;
    let to_ms = review["to_ms"].as_i64().expect("an activity");
    assert!(
        now - to_ms > 5 * 60_000,
        "not live: its last activity {} ms ago",
        now - to_ms
    );
    let gmv: u64 = before
        .iter()
        .map(|o| o["amount_fen"].as_u64().unwrap())
        .sum();
    assert_eq!(
        review["totals"]["gmv_fen"], gmv,
        "the review's GMV is the orders'"
    );
    let pot = review["skus"]
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["sku"] == SELL_OUT_SKU)
        .unwrap();
    assert!(pot["sold_out_at_ms"].is_i64(), "a sell-out: {pot}");
    assert!(
        review["rejected"]["sold_out"].as_u64() > Some(0),
        "{}",
        review["rejected"]
    );
    for k in ["paid", "expired", "cancelled", "refunded", "late_payments"] {
        assert!(
            review["payments"][k].as_u64() > Some(0),
            "{k}: {}",
            review["payments"]
        );
    }
    assert!(review["top_referrers"].as_array().unwrap().len() >= 3);
    assert!(
        review["funnel"]["entered"].as_u64() > Some(100),
        "{}",
        review["funnel"]
    );

    let dir = s.stop().await;
    let s = TestServer::start_in(&dir, demo()).await;
    assert_eq!(
        earlier_rooms(&s).await,
        1,
        "one earlier room after the restart"
    );
    // A finished stream: everyone left, and it is not live. The overview shows a room's
    // newest dashboard snapshot: wait for one that holds every order.
    let mut line = Value::Null;
    for _ in 0..100 {
        let (status, overview) = s
            .request("GET", "/api/overview", Some(support::VIEWER), None)
            .await;
        assert_eq!(status, 200, "{overview}");
        line = overview["rooms"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["room"] == EARLIER_ROOM)
            .cloned()
            .expect("the earlier room in the overview");
        if line["orders"].as_u64() == Some(before.len() as u64) {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert_eq!(line["orders"].as_u64(), Some(before.len() as u64), "{line}");
    assert_eq!(line["live"], false, "{line}");
    assert_eq!(line["online"], 0, "everyone left at the end: {line}");
    let after = s.export(EARLIER_ROOM).await;
    assert_eq!(
        after, before,
        "not seeded again; the same orders, statuses included"
    );
    s.stop().await;
}

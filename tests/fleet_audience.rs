//! The audience across hubs (docs/fleet.md, "The audience across hubs"): two hubs on one
//! Redis, buyer sockets and audience events on each; every hub's `/stats` shows the room's
//! sums and each hub's counts in `hubs`; a hub that stops, or goes silent, drops out.

mod support;

use serde_json::{json, Value};

use livehub::fleet::keys;
use support::redis_server::RedisServer;
use support::{eventually, fleet_hub, Client, TestServer, INGEST, SECRET, WAIT};

fn buyer_url(s: &TestServer, room: &str, user: &str) -> String {
    format!(
        "ws://{}/ws/buy?room={room}&token={}",
        s.addr,
        livehub::auth::sign_buyer_token(SECRET, user, None, 600)
    )
}

async fn enter(s: &TestServer, room: &str, users: &[&str]) {
    let t = livehub::clock::now_ms();
    let events: Vec<Value> = users
        .iter()
        .map(|u| json!({"type": "enter", "user": u, "ts_ms": t, "source": "recommend"}))
        .collect();
    let r = s
        .http
        .post(s.url(&format!("/api/rooms/{room}/audience")))
        .bearer_auth(INGEST)
        .json(&events)
        .send()
        .await
        .expect("audience post");
    assert_eq!(r.status().as_u16(), 200, "{}", r.text().await.unwrap());
}

/// A snapshot's `(viewers, audience.online)` and its `hubs` as `(hub, viewers, online)`.
type Counts<H> = ((u64, u64), Vec<(H, u64, u64)>);

/// The snapshot's [`Counts`].
fn counts(v: &Value) -> Counts<String> {
    let hubs = v["hubs"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|h| {
            (
                h["hub"].as_str().unwrap_or_default().to_owned(),
                h["viewers"].as_u64().unwrap_or(0),
                h["online"].as_u64().unwrap_or(0),
            )
        })
        .collect();
    (
        (
            v["viewers"].as_u64().unwrap_or(0),
            v["audience"]["online"].as_u64().unwrap_or(0),
        ),
        hubs,
    )
}

/// Waits until `s`'s stats of `room` show `want` (as [`counts`] reads them); returns them.
async fn stats_showing(s: &TestServer, room: &str, want: Counts<&str>) -> Value {
    let want = (
        want.0,
        want.1
            .into_iter()
            .map(|(h, v, o)| (h.to_owned(), v, o))
            .collect::<Vec<_>>(),
    );
    let mut last = Value::Null;
    let found = tokio::time::timeout(WAIT, async {
        loop {
            last = s.stats(room).await;
            if counts(&last) == want {
                return;
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
    })
    .await;
    assert!(found.is_ok(), "stats never showed {want:?}: {last}");
    last
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_hub_shows_the_rooms_audience_summed_and_per_hub() {
    let redis = RedisServer::start();
    let a = fleet_hub(&redis, "a").await;
    let b = fleet_hub(&redis, "b").await;
    a.create_room("r").await;
    a.create_sku("r", "A1", 990, 10, None).await;
    b.wait_sku("r", "A1").await;

    // Two buyer sockets on a, three on b; two viewers enter on a, one on b. A buyer socket
    // counts its viewer online too: online is 4 on each hub.
    let mut sockets = Vec::new();
    for (hub, user) in [(&a, "a1"), (&a, "a2"), (&b, "b1"), (&b, "b2"), (&b, "b3")] {
        sockets.push(Client::connect(&buyer_url(hub, "r", user)).await.unwrap());
    }
    enter(&a, "r", &["v1", "v2"]).await;
    enter(&b, "r", &["v3"]).await;

    let both = ((5, 8), vec![("a", 2, 4), ("b", 3, 4)]);
    for h in [&a, &b] {
        let v = stats_showing(h, "r", both.clone()).await;
        assert_eq!(v["unique_viewers"], 5, "{v}");
        assert_eq!(v["audience"]["unique"], 8, "{v}");
        assert!(v["peak_viewers"].as_u64() >= Some(5), "{v}");
        assert!(v["audience"]["peak"].as_u64() >= Some(8), "{v}");
    }

    // A hub that dies leaves its counts behind; they stop counting after a few seconds.
    let ghost = json!({"ts_ms": livehub::clock::now_ms(), "viewers": 7, "peak_viewers": 7,
        "unique_viewers": 7, "online": 7, "peak": 7, "unique": 7});
    let _: () = redis.query(
        redis::cmd("HSET")
            .arg(keys::live("r"))
            .arg("ghost")
            .arg(ghost.to_string()),
    );
    stats_showing(
        &a,
        "r",
        ((12, 15), vec![("a", 2, 4), ("b", 3, 4), ("ghost", 7, 7)]),
    )
    .await;
    let v = stats_showing(&a, "r", both.clone()).await;
    assert!(
        v["peak_viewers"].as_u64() >= Some(12),
        "the peak across hubs stays: {v}"
    );

    // A hub that stops takes its counts away.
    sockets.truncate(2);
    b.stop().await;
    let v = stats_showing(&a, "r", ((2, 4), vec![("a", 2, 4)])).await;
    assert!(v["peak_viewers"].as_u64() >= Some(12), "{v}");
    assert!(v["audience"]["peak"].as_u64() >= Some(8), "{v}");
    eventually(WAIT, "b's field is gone from redis", async || {
        let fields: Vec<String> = redis.query(redis::cmd("HKEYS").arg(keys::live("r")));
        !fields.contains(&"b".to_owned())
    })
    .await;
    drop(sockets);
}

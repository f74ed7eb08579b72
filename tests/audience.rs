//! Audience events through the API (docs/protocol.md, "Audience events"): a batch is checked
//! whole, journaled and counted once however often it is sent; the figures reach the
//! snapshot; and they are the same after a restart, journal snapshots included.

mod support;

use serde_json::{json, Value};
use support::sku_of;
use support::{Options, TestServer, ADMIN, INGEST, VIEWER, WAIT};

fn now_ms() -> i64 {
    livehub::clock::now_ms()
}

async fn post(s: &TestServer, room: &str, token: &str, body: &str) -> (u16, Value) {
    let r = s
        .http
        .post(s.url(&format!("/api/rooms/{room}/audience")))
        .bearer_auth(token)
        .body(body.to_owned())
        .send()
        .await
        .expect("audience post");
    let status = r.status().as_u16();
    let text = r.text().await.unwrap();
    (
        status,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    )
}

/// A stream's audience: three viewers enter from two sources, like, comment, share, tap the
/// product card; one leaves after 30 s.
fn batch(t: i64) -> Value {
    json!([
        {"type": "enter", "user": "v1", "ts_ms": t, "source": "recommend"},
        {"type": "enter", "user": "v2", "ts_ms": t, "source": "share", "ref": "v1"},
        {"type": "enter", "user": "v3", "ts_ms": t + 1, "source": "share"},
        {"type": "like", "user": "v1", "ts_ms": t + 2, "count": 10},
        {"type": "like", "user": "v2", "ts_ms": t + 2},
        {"type": "comment", "user": "v2", "ts_ms": t + 3},
        {"type": "share", "user": "v3", "ts_ms": t + 4},
        {"type": "follow", "user": "v3", "ts_ms": t + 4},
        {"type": "click", "user": "v1", "ts_ms": t + 5, "sku": "A"},
        {"type": "click", "user": "v2", "ts_ms": t + 5, "sku": "A"},
        {"type": "leave", "user": "v3", "ts_ms": t + 30_000},
    ])
}

async fn stats_where(s: &TestServer, pred: impl Fn(&Value) -> bool) -> Value {
    let t0 = std::time::Instant::now();
    loop {
        let v = s.stats("r").await;
        if pred(&v) {
            return v;
        }
        assert!(t0.elapsed() < WAIT, "stats never as expected: {v}");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn a_batch_is_counted_once_and_reaches_the_snapshot() {
    let s = TestServer::start().await;
    s.create_room("r").await;
    s.create_sku("r", "A", 100, 10, None).await;
    let t = now_ms() - 60_000;
    let body = batch(t).to_string();

    let (code, v) = post(&s, "r", INGEST, &body).await;
    assert_eq!((code, v["accepted"].as_u64()), (200, Some(11)), "{v}");
    let (code, v) = post(&s, "r", ADMIN, &body).await;
    assert_eq!(
        (code, v["accepted"].as_u64(), v["duplicates"].as_u64()),
        (200, Some(0), Some(11)),
        "a re-sent batch changes nothing: {v}"
    );
    let mut b = s.buyer("r", "v1").await;
    assert_eq!(b.buy("q1", "A", 1).await["ok"], true);

    let v = stats_where(&s, |v| v["funnel"]["ordered"] == 1).await;
    let a = &v["audience"];
    assert_eq!(
        a["online"], 2,
        "v1 and v2 are in (v1 with a socket too): {a}"
    );
    assert_eq!(
        (a["unique"].as_u64(), a["peak"].as_u64()),
        (Some(3), Some(3)),
        "{a}"
    );
    assert_eq!(
        (
            a["likes"].as_u64(),
            a["comments"].as_u64(),
            a["shares"].as_u64(),
            a["follows"].as_u64()
        ),
        (Some(11), Some(1), Some(1), Some(1))
    );
    assert_eq!(a["sources"], json!({"recommend": 1, "share": 2}));
    let minutes = a["per_minute"].as_array().unwrap();
    let likes: u64 = minutes.iter().map(|m| m["likes"].as_u64().unwrap()).sum();
    assert_eq!(likes, 11);
    // v3 watched 30 s; v1 and v2 watch on (about 60 s each so far).
    let avg = a["avg_watch_s"].as_f64().unwrap();
    assert!((40.0..60.0).contains(&avg), "{avg}");
    assert_eq!(
        v["funnel"],
        json!({"entered": 3, "clicked": 2, "ordered": 1, "paid": 1})
    );
    let sku = sku_of(&v, "A");
    assert_eq!(
        (sku["clicks"].as_u64(), sku["click_to_order"].as_f64()),
        (Some(2), Some(0.5))
    );
    // The trend's points (seconds with orders) carry the audience online, noted while their
    // second lasts: buy until a point has it (a buy late in a second may see none).
    let t0 = std::time::Instant::now();
    for i in 2.. {
        assert_eq!(b.buy(&format!("q{i}"), "A", 1).await["ok"], true);
        tokio::time::sleep(std::time::Duration::from_millis(150)).await;
        let v = s.stats("r").await;
        let points = v["trend"]["points"].as_array().unwrap().clone();
        if points.iter().any(|p| p["online"] == 2) {
            break;
        }
        assert!(
            t0.elapsed() < WAIT && i < 9,
            "no point has online 2: {points:?}"
        );
    }

    // The buyer's socket closes: v1 is still in by the platform's word.
    drop(b);
    stats_where(&s, |v| v["viewers"] == 0 && v["audience"]["online"] == 2).await;
}

#[tokio::test]
async fn bad_batches_are_refused_whole_with_the_event_and_field() {
    let s = TestServer::start().await;
    s.create_room("r").await;
    s.create_sku("r", "A", 100, 10, None).await;
    let t = now_ms();
    let ok = json!({"type": "like", "user": "u1", "ts_ms": t});
    let cases = [
        (json!({"type": "wave", "user": "u2", "ts_ms": t}), "type"),
        (json!({"type": "like", "ts_ms": t}), "user"),
        (
            json!({"type": "like", "user": "u2", "ts_ms": t + 3_600_000}),
            "ts_ms",
        ),
        (
            json!({"type": "like", "user": "u2", "ts_ms": t - 700_000}),
            "ts_ms",
        ),
        (
            json!({"type": "click", "user": "u2", "ts_ms": t, "sku": "NOPE"}),
            "sku",
        ),
    ];
    for (bad, field) in cases {
        let body = json!([ok, bad]).to_string();
        let (code, v) = post(&s, "r", INGEST, &body).await;
        assert_eq!(code, 400, "{v}");
        assert_eq!(
            (v["index"].as_u64(), v["field"].as_str()),
            (Some(1), Some(field)),
            "{v}"
        );
    }
    for body in ["{", "{}", "[1]", "not json"] {
        assert_eq!(post(&s, "r", INGEST, body).await.0, 400, "{body}");
    }
    let many = json!(vec![ok.clone(); 10_001]).to_string();
    let (code, v) = post(&s, "r", INGEST, &many).await;
    assert_eq!(code, 400, "{v}");
    let huge = format!("[{}]", " ".repeat(5 << 20));
    assert_eq!(
        post(&s, "r", INGEST, &huge).await.0,
        400,
        "over the body limit"
    );
    assert_eq!(post(&s, "r", VIEWER, "[]").await.0, 401);
    assert_eq!(post(&s, "r", "nope", "[]").await.0, 401);
    assert_eq!(post(&s, "nope", INGEST, "[]").await.0, 404);
    // Nothing of the refused batches was counted: the good event of each is still new.
    let (code, v) = post(&s, "r", INGEST, &json!([ok]).to_string()).await;
    assert_eq!((code, v["accepted"].as_u64()), (200, Some(1)), "{v}");
    let v = stats_where(&s, |v| v["audience"]["likes"] == 1).await;
    assert_eq!(v["audience"]["unique"], 1, "{v}");
}

/// The figures come back the same after a restart, whether from the journal's records or
/// from a journal snapshot (one is taken every few records here).
#[tokio::test]
async fn the_audience_is_the_same_after_a_restart() {
    for snapshot_every_records in [None, Some(3)] {
        let opts = || Options {
            snapshot_every_records,
            ..Options::default()
        };
        let dir = support::temp_dir();
        let s = TestServer::start_in(&dir, opts()).await;
        s.create_room("r").await;
        s.create_sku("r", "A", 100, 10, None).await;
        let t = now_ms() - 120_000;
        for i in 0..6 {
            let body = batch(t + i * 1000)
                .to_string()
                .replace("\"v", &format!("\"b{i}v"));
            assert_eq!(post(&s, "r", INGEST, &body).await.0, 200);
        }
        let before = stats_where(&s, |v| v["audience"]["unique"] == 18).await;
        let dir = s.stop().await;
        let snapshots = livehub::journal::snapshot::list(&dir.join("journal")).unwrap();
        assert_eq!(
            !snapshots.is_empty(),
            snapshot_every_records.is_some(),
            "{snapshots:?}"
        );
        let s = TestServer::start_in(&dir, opts()).await;
        let after = stats_where(&s, |v| v["audience"]["unique"] == 18).await;
        let figures = |v: &Value| {
            let mut a = v["audience"].clone();
            a["avg_watch_s"] = json!(null); // open sessions grow with the clock
            (a, v["funnel"].clone(), sku_of(v, "A")["clicks"].clone())
        };
        assert_eq!(
            figures(&after),
            figures(&before),
            "snapshots every {snapshot_every_records:?}"
        );
        // A re-sent batch is still recognised.
        let body = batch(t).to_string().replace("\"v", "\"b0v");
        let (_, v) = post(&s, "r", INGEST, &body).await;
        assert_eq!(v["duplicates"], 11, "{v}");
    }
}

/// The dashboard socket carries the audience: a dashboard connected before the events gets a
/// snapshot with them, its funnel and the SKU's clicks, equal to `/stats`.
#[tokio::test]
async fn the_dashboard_socket_shows_the_audience() {
    let s = TestServer::start().await;
    s.create_room("r").await;
    s.create_sku("r", "A", 100, 10, None).await;
    let mut d = s.dashboard("r").await;
    let first = d.push_where(|v| v["op"] == "snapshot").await;
    assert_eq!(first["audience"]["unique"], 0, "{first}");
    assert_eq!(first["funnel"]["entered"], 0);
    let (code, _) = post(&s, "r", INGEST, &batch(now_ms() - 60_000).to_string()).await;
    assert_eq!(code, 200);
    let pushed = tokio::time::timeout(
        WAIT,
        d.push_where(|v| v["op"] == "snapshot" && v["audience"]["unique"] == 3),
    )
    .await
    .expect("a snapshot with the audience");
    assert_eq!(pushed["funnel"]["entered"], 3);
    assert_eq!(pushed["funnel"]["clicked"], 2);
    assert_eq!(sku_of(&pushed, "A")["clicks"], 2);
    assert_eq!(pushed["audience"]["likes"], 11);
    let stats = s.stats("r").await;
    assert_eq!(stats["audience"]["sources"], pushed["audience"]["sources"]);
}

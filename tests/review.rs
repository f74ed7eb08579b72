//! The review (复盘, docs/protocol.md, "Review") through the API: its figures agree with the
//! dashboard snapshot and the orders export, refusals reach it through the journal, and it is
//! byte for byte the same after a restart, from a journal snapshot or by a full replay.

mod support;

use serde_json::{json, Value};
use support::{Options, TestServer, ADMIN, INGEST, VIEWER, WAIT};

fn now_ms() -> i64 {
    livehub::clock::now_ms()
}

/// `GET /api/rooms/{room}/review{query}` as the viewer: status, content type, body.
async fn get(s: &TestServer, room: &str, query: &str) -> (u16, String, String) {
    let r = s
        .http
        .get(s.url(&format!("/api/rooms/{room}/review{query}")))
        .bearer_auth(VIEWER)
        .send()
        .await
        .expect("review request");
    let status = r.status().as_u16();
    let ct = r
        .headers()
        .get("content-type")
        .map(|v| v.to_str().unwrap().to_owned())
        .unwrap_or_default();
    (status, ct, r.text().await.unwrap())
}

/// The review once `pred` holds (refusals reach it within about a second).
async fn review_where(s: &TestServer, pred: impl Fn(&Value) -> bool) -> Value {
    support::eventually_ok(WAIT, "the review as expected", async || {
        let (status, _, body) = get(s, "r", "").await;
        let v: Value = serde_json::from_str(&body).map_err(|e| e.to_string())?;
        if status == 200 && pred(&v) {
            Ok(v)
        } else {
            Err(body)
        }
    })
    .await
}

/// A short stream: orders of a SKU paid on placement (two brought by sharers), one refused
/// for the per-user limit; orders to pay, one paid, one cancelled; a refund; an audience that
/// enters, taps product cards and leaves over three minutes. Returns the first audience
/// event's time, the start of a minute.
async fn stream(s: &TestServer) -> i64 {
    s.create_room("r").await;
    s.create_sku("r", "A", 100, 10, Some(3)).await;
    s.create_sku_to_pay("r", "B", 500, 5, None, 600).await;
    // The first three events fall in one minute, whatever the clock says now.
    let t = now_ms() - 3 * 60_000;
    let t = t - t % 60_000;
    let audience = json!([
        {"type": "enter", "user": "u1", "ts_ms": t, "source": "share"},
        {"type": "enter", "user": "u2", "ts_ms": t + 1000, "source": "recommend"},
        {"type": "click", "user": "u1", "ts_ms": t + 2000, "sku": "A"},
        {"type": "click", "user": "u2", "ts_ms": t + 60_000, "sku": "B"},
        {"type": "leave", "user": "u1", "ts_ms": t + 120_000},
    ]);
    let r = s
        .http
        .post(s.url("/api/rooms/r/audience"))
        .bearer_auth(INGEST)
        .body(audience.to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);

    let mut u1 = s.buyer("r", "u1").await;
    u1.send_json(json!({"op": "buy", "req": "a1", "sku": "A", "qty": 2, "ref": "s1"}))
        .await;
    let a1 = u1.reply().await;
    assert_eq!(a1["ok"], true, "{a1}");
    u1.send_json(json!({"op": "buy", "req": "a2", "sku": "A", "qty": 1, "ref": "s2"}))
        .await;
    assert_eq!(u1.reply().await["ok"], true);
    let refused = u1.buy("a3", "A", 1).await;
    assert_eq!(refused["error"], "limit_exceeded", "{refused}");

    let mut u2 = s.buyer("r", "u2").await;
    let b1 = u2.buy("b1", "B", 1).await;
    let b2 = u2.buy("b2", "B", 2).await;
    assert_eq!(
        (b1["status"].as_str(), b2["status"].as_str()),
        (Some("unpaid"), Some("unpaid"))
    );
    let (code, v) = s
        .pay("r", b1["order"].as_str().unwrap(), "pay-1", 500)
        .await;
    assert_eq!(code, 200, "{v}");
    u2.send_json(json!({"op": "cancel", "req": "c1", "order": b2["order"]}))
        .await;
    let cancelled = u2
        .push_where(|v| v["op"] == "ack" && v["req"] == "c1")
        .await;
    assert_eq!(cancelled["ok"], true, "{cancelled}");
    s.admin(
        "POST",
        &format!(
            "/api/rooms/r/orders/{}/refund",
            a1["order"].as_str().unwrap()
        ),
        Some(json!({"restock": true})),
    )
    .await;
    t
}

/// The review's figures against the dashboard snapshot's and the export's.
#[tokio::test]
async fn the_review_agrees_with_the_snapshot_and_the_export() {
    let s = TestServer::start().await;
    let t0 = stream(&s).await;
    let v = review_where(&s, |v| v["rejected"]["limit_exceeded"] == 1).await;
    let stats = s.stats_at("r", 4).await;
    let t = &v["totals"];
    for k in [
        "gmv_fen",
        "orders",
        "units",
        "buyers",
        "aov_fen",
        "paid_gmv_fen",
        "paid_orders",
        "unpaid_fen",
        "expired_fen",
        "cancelled_fen",
        "refunded_fen",
        "late_payments",
        "pay_rate",
    ] {
        assert_eq!(t[k], stats[k], "{k}: review {v}\nstats {stats}");
    }
    assert_eq!(v["funnel"], stats["funnel"]);
    let export = s.export("r").await;
    let sum = |f: &dyn Fn(&Value) -> bool| -> u64 {
        export
            .iter()
            .filter(|o| f(o))
            .map(|o| o["amount_fen"].as_u64().unwrap())
            .sum()
    };
    assert_eq!(t["gmv_fen"].as_u64(), Some(sum(&|_| true)));
    assert_eq!(t["gmv_fen"], 100 * 3 + 500 * 3);
    assert_eq!(
        t["paid_gmv_fen"].as_u64(),
        Some(sum(&|o| o["status"] == "paid"))
    );
    assert_eq!(
        v["payments"],
        json!({"paid": 2, "expired": 0, "cancelled": 1, "refunded": 1, "late_payments": 0})
    );
    let minutes = v["minutes"].as_array().unwrap();
    let col = |k: &str| minutes.iter().map(|m| m[k].as_u64().unwrap()).sum::<u64>();
    assert_eq!(col("gmv_fen"), 1800);
    assert_eq!(col("paid_gmv_fen"), t["paid_gmv_fen"].as_u64().unwrap());
    assert_eq!(col("orders"), 4);
    assert_eq!(col("clicks"), 2);
    assert!(
        minutes.len() >= 4,
        "three minutes of audience, then the orders: {v}"
    );
    for w in minutes.windows(2) {
        assert_eq!(
            w[1]["t_ms"].as_i64().unwrap() - w[0]["t_ms"].as_i64().unwrap(),
            60_000
        );
    }
    assert_eq!(minutes[0]["online"], 2, "{v}");
    assert_eq!(v["from_ms"].as_i64(), Some(t0));
    assert_eq!(minutes[0]["t_ms"].as_i64(), Some(t0 - t0 % 60_000));
    assert_eq!(
        minutes.last().unwrap()["t_ms"].as_i64(),
        v["to_ms"].as_i64().map(|t| t - t % 60_000)
    );
    let peak = &v["peak_minute"];
    assert!(minutes
        .iter()
        .all(|m| m["gmv_fen"].as_u64() <= peak["gmv_fen"].as_u64()));
    assert_eq!(
        v["top_referrers"],
        json!([{"ref": "s1", "orders": 1, "gmv_fen": 200}, {"ref": "s2", "orders": 1, "gmv_fen": 100}])
    );
    let a = v["skus"]
        .as_array()
        .unwrap()
        .iter()
        .find(|x| x["sku"] == "A")
        .unwrap();
    assert_eq!(
        (
            &a["sold"],
            &a["paid"],
            &a["gmv_fen"],
            &a["clicks"],
            &a["click_to_order"]
        ),
        (&json!(1), &json!(1), &json!(300), &json!(1), &json!(2.0)),
        "{a}"
    );
    assert_eq!(v["title"], "room r");
}

/// The same review, JSON and CSV, after a restart: by a full replay, and from a journal
/// snapshot (taken every few records here) with the records after it.
#[tokio::test]
async fn the_review_is_the_same_after_a_restart() {
    for snapshot_every_records in [None, Some(3)] {
        let opts = || Options {
            snapshot_every_records,
            ..Options::default()
        };
        let dir = support::temp_dir();
        let s = TestServer::start_in(&dir, opts()).await;
        stream(&s).await;
        review_where(&s, |v| v["rejected"]["limit_exceeded"] == 1).await;
        let (_, _, json_before) = get(&s, "r", "").await;
        let (_, _, csv_before) = get(&s, "r", "?format=csv").await;
        let dir = s.stop().await;
        let snapshots = livehub::journal::snapshot::list(&dir.join("journal")).unwrap();
        assert_eq!(
            !snapshots.is_empty(),
            snapshot_every_records.is_some(),
            "{snapshots:?}"
        );
        let s = TestServer::start_in(&dir, opts()).await;
        let (status, _, json_after) = get(&s, "r", "").await;
        assert_eq!(status, 200);
        assert_eq!(
            json_after, json_before,
            "snapshots every {snapshot_every_records:?}"
        );
        let (_, _, csv_after) = get(&s, "r", "?format=csv").await;
        assert_eq!(csv_after, csv_before);
        // What came back holds the journaled parts: refusals, the audience's series.
        let v: Value = serde_json::from_str(&json_after).unwrap();
        assert_eq!(v["rejected"], json!({"limit_exceeded": 1}));
        assert_eq!(v["minutes"][0]["online"], 2, "{v}");
        assert_eq!(v["totals"]["orders"], 4);
        s.stop().await;
        let _ = std::fs::remove_dir_all(&dir);
    }
}

/// Refusals counted in the last second before a clean stop are journaled by the stop.
#[tokio::test]
async fn a_clean_stop_keeps_the_last_refusals() {
    let s = TestServer::start().await;
    s.create_room("r").await;
    s.create_sku("r", "A", 100, 1, None).await;
    let mut b = s.buyer("r", "u1").await;
    assert_eq!(b.buy("q1", "A", 1).await["ok"], true);
    for i in 0..3 {
        assert_eq!(b.buy(&format!("x{i}"), "A", 1).await["error"], "sold_out");
    }
    drop(b);
    let dir = s.stop().await;
    let s = TestServer::start_in(&dir, Options::default()).await;
    let (_, _, body) = get(&s, "r", "").await;
    let v: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["rejected"], json!({"sold_out": 3}), "{v}");
}

/// The CSV has the header and a line per minute of the JSON; bad queries and unknown rooms
/// are refused like every other route's.
#[tokio::test]
async fn csv_and_bad_requests() {
    let s = TestServer::start().await;
    s.create_room("r").await;
    s.create_sku("r", "A", 100, 10, None).await;
    let mut b = s.buyer("r", "u1").await;
    assert_eq!(b.buy("q1", "A", 1).await["ok"], true);
    let (status, ct, body) = get(&s, "r", "").await;
    assert_eq!((status, ct.as_str()), (200, "application/json"), "{body}");
    let v: Value = serde_json::from_str(&body).unwrap();
    let (status, ct, csv) = get(&s, "r", "?format=csv").await;
    assert_eq!(status, 200);
    assert!(ct.starts_with("text/csv"), "{ct}");
    let mut lines = csv.lines();
    assert_eq!(
        lines.next(),
        Some("t_ms,gmv_fen,paid_gmv_fen,orders,online,clicks")
    );
    let rows: Vec<&str> = lines.collect();
    assert_eq!(rows.len(), v["minutes"].as_array().unwrap().len());
    let m = &v["minutes"][0];
    assert_eq!(
        rows[0],
        format!("{},100,100,1,0,0", m["t_ms"].as_i64().unwrap())
    );
    let (status, _, json) = get(&s, "r", "?format=json").await;
    assert_eq!((status, json), (200, body));

    let (status, _, body) = get(&s, "r", "?format=xml").await;
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("bad_request"), "{body}");
    let (status, _, body) = get(&s, "nope", "").await;
    assert_eq!(status, 404, "{body}");
    let (status, _, _) = get(&s, "bad%20id", "").await;
    assert_eq!(status, 400);
    let (status, _) = s.request("GET", "/api/rooms/r/review", None, None).await;
    assert_eq!(status, 401);
    let (status, _) = s
        .request("GET", "/api/rooms/r/review", Some(ADMIN), None)
        .await;
    assert_eq!(status, 200, "the admin token is a viewer's too");
}

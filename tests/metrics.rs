//! `/metrics` after a known sequence of buys: every documented series is there with the
//! values those buys imply. The recorder is global to the process, so this file holds the
//! only test of its binary and the counts are exact.

mod support;

use std::collections::HashMap;

use serde_json::json;
use support::TestServer;

/// `name{labels} value` lines of a Prometheus text exposition, keyed by `name{labels}`.
fn parse(text: &str) -> HashMap<String, f64> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .filter_map(|l| {
            let (key, value) = l.rsplit_once(' ')?;
            Some((key.to_owned(), value.parse().ok()?))
        })
        .collect()
}

async fn scrape(s: &TestServer) -> (String, HashMap<String, f64>) {
    let r = s.http.get(s.url("/metrics")).send().await.unwrap();
    assert_eq!(r.status().as_u16(), 200);
    let text = r.text().await.unwrap();
    let parsed = parse(&text);
    (text, parsed)
}

fn get(m: &HashMap<String, f64>, key: &str, text: &str) -> f64 {
    *m.get(key)
        .unwrap_or_else(|| panic!("no series {key} in:\n{text}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_count_what_the_buys_did() {
    let s = TestServer::start().await;
    s.create_room("m").await;
    s.create_sku("m", "A1", 500, 3, None).await;
    let mut c = s.buyer("m", "mia").await;
    let _dash = s.dashboard("m").await;

    let mut ok_acks = 0;
    let mut sold_out_acks = 0;
    let mut buy_acks = 0;
    for i in 0..5 {
        let ack = c.buy(&format!("r{i}"), "A1", 1).await;
        buy_acks += 1;
        match (ack["ok"].as_bool(), ack["error"].as_str()) {
            (Some(true), _) => ok_acks += 1,
            (_, Some("sold_out")) => sold_out_acks += 1,
            other => panic!("unexpected ack {other:?}: {ack}"),
        }
    }
    // A repeated req is a buy answered ok again (no second order); `status` is not a buy.
    assert_eq!(c.buy("r0", "A1", 1).await["ok"], true);
    ok_acks += 1;
    buy_acks += 1;
    c.send_json(json!({"op": "status", "req": "r1"})).await;
    assert_eq!(c.reply().await["ok"], true);
    assert_eq!(c.buy("u1", "NOPE", 1).await["error"], "unknown_sku");
    buy_acks += 1;
    // The buyer task records an ack's latency right after sending it, before it reads the
    // next frame: once this pong is back, every ack above is in the histogram.
    c.send_json(json!({"op": "ping"})).await;
    assert_eq!(c.reply().await["op"], "pong");
    assert_eq!((ok_acks, sold_out_acks), (4, 2));

    let (text, m) = scrape(&s).await;
    for help in [
        "# HELP livehub_connections",
        "# HELP livehub_buys_total",
        "# HELP livehub_buy_ack_seconds",
        "# HELP livehub_journal_batch_records",
        "# HELP livehub_journal_fsync_seconds",
        "# HELP livehub_process_resident_memory_bytes",
    ] {
        assert!(text.contains(help), "missing {help:?} in:\n{text}");
    }
    assert_eq!(
        get(&m, r#"livehub_buys_total{result="ok"}"#, &text),
        ok_acks as f64
    );
    assert_eq!(
        get(&m, r#"livehub_buys_total{result="sold_out"}"#, &text),
        sold_out_acks as f64
    );
    assert_eq!(
        get(&m, r#"livehub_buys_total{result="unknown_sku"}"#, &text),
        1.0
    );
    assert_eq!(get(&m, r#"livehub_connections{kind="buyer"}"#, &text), 1.0);
    assert_eq!(
        get(&m, r#"livehub_connections{kind="dashboard"}"#, &text),
        1.0
    );

    assert_eq!(
        get(&m, "livehub_buy_ack_seconds_count", &text),
        buy_acks as f64
    );
    let ack_sum = get(&m, "livehub_buy_ack_seconds_sum", &text);
    assert!(ack_sum > 0.0, "ack latency sum {ack_sum}");
    assert_eq!(
        get(&m, r#"livehub_buy_ack_seconds_bucket{le="+Inf"}"#, &text),
        buy_acks as f64
    );

    // Journal: the room, the SKU and three orders, in batches of at least one record.
    let batches = get(&m, "livehub_journal_batch_records_count", &text);
    let records = get(&m, "livehub_journal_batch_records_sum", &text);
    assert_eq!(records, 5.0, "room + sku + 3 orders");
    assert!((1.0..=records).contains(&batches), "{batches} batches");
    // Batch sizes have count buckets, not the seconds buckets of the time histograms.
    assert!(
        get(&m, r#"livehub_journal_batch_records_bucket{le="1"}"#, &text) >= 1.0,
        "{text}"
    );
    assert_eq!(
        get(&m, "livehub_journal_fsync_seconds_count", &text),
        batches,
        "one fsync a batch"
    );
    assert!(get(&m, "livehub_journal_fsync_seconds_sum", &text) > 0.0);

    let rss = get(&m, "livehub_process_resident_memory_bytes", &text);
    assert!(rss > 1e6 && rss < 64e9, "resident memory {rss}");

    // Connections go back down when the sockets close.
    drop(c);
    drop(_dash);
    let t0 = std::time::Instant::now();
    loop {
        let (text, m) = scrape(&s).await;
        let open = get(&m, r#"livehub_connections{kind="buyer"}"#, &text)
            + get(&m, r#"livehub_connections{kind="dashboard"}"#, &text);
        if open == 0.0 {
            break;
        }
        assert!(
            t0.elapsed() < support::WAIT,
            "connections stay at {open}:\n{text}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

//! The overview (docs/protocol.md, "Overview"): `GET /api/overview` and `/ws/overview` over
//! real sockets. Each room's figures equal its `/stats`; the socket is refused as
//! `/ws/dashboard` is, pushes the one overview built each second to every watcher, counts
//! against the connection limits, and closes as a dashboard does. The rule for `live` over
//! five minutes is unit-tested in `livehub::overview::build`.

mod support;

use std::collections::BTreeSet;
use std::net::IpAddr;
use std::time::Duration;

use futures_util::StreamExt;
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_tungstenite::tungstenite;

use support::{eventually_ok, Client, Options, TestServer, ADMIN, INGEST, VIEWER, WAIT};

async fn overview(s: &TestServer) -> Value {
    let (code, v) = s.request("GET", "/api/overview", Some(VIEWER), None).await;
    assert_eq!(code, 200, "{v}");
    v
}

fn line<'a>(o: &'a Value, room: &str) -> &'a Value {
    o["rooms"]
        .as_array()
        .expect("rooms")
        .iter()
        .find(|l| l["room"] == room)
        .unwrap_or_else(|| panic!("no line for {room} in {o}"))
}

fn rooms_of(o: &Value) -> Vec<String> {
    o["rooms"]
        .as_array()
        .expect("rooms")
        .iter()
        .map(|l| l["room"].as_str().unwrap().to_owned())
        .collect()
}

async fn post_audience(s: &TestServer, room: &str, events: Value) {
    let r = s
        .http
        .post(s.url(&format!("/api/rooms/{room}/audience")))
        .bearer_auth(INGEST)
        .body(events.to_string())
        .send()
        .await
        .expect("audience post");
    assert_eq!(r.status().as_u16(), 200, "{}", r.text().await.unwrap());
}

async fn overview_socket(s: &TestServer) -> Client {
    Client::connect(&format!("ws://{}/ws/overview?token={VIEWER}", s.addr))
        .await
        .expect("overview socket connects")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refusals_come_in_the_dashboards_order_with_its_codes() {
    let s = TestServer::start().await;
    // REST: a viewer or admin token, nothing else.
    assert_eq!(overview(&s).await["rooms"], json!([]));
    for (token, want) in [
        (None, 401),
        (Some("nope"), 401),
        (Some(INGEST), 401),
        (Some(ADMIN), 200),
    ] {
        let (code, v) = s.request("GET", "/api/overview", token, None).await;
        assert_eq!(code, want, "{token:?}: {v}");
        if want == 401 {
            assert_eq!(v["error"], "unauthorized", "{v}");
        }
    }
    let (code, v) = s.request("POST", "/api/overview", Some(VIEWER), None).await;
    assert_eq!(
        (code, v["error"].as_str()),
        (405, Some("method_not_allowed"))
    );
    // The socket: the query (400), then the token (401), then whether it is an upgrade (400).
    let checks: [(String, u16, &str); 5] = [
        (format!("token={VIEWER}&token={VIEWER}"), 400, "bad_request"),
        (String::new(), 401, "unauthorized"),
        ("token=nope".to_owned(), 401, "unauthorized"),
        (format!("token={INGEST}"), 401, "unauthorized"),
        (format!("token={VIEWER}&room=anything"), 400, "bad_request"),
    ];
    for (query, want, code) in checks {
        let r = s
            .http
            .get(s.url(&format!("/ws/overview?{query}")))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), want, "{query}");
        let body: Value = r.json().await.expect("a JSON error");
        assert_eq!(body["error"], code, "{query}: {body}");
    }
    // The page: no token needed to load it, the same security headers as every answer.
    let page = s.http.get(s.url("/overview")).send().await.unwrap();
    assert_eq!(page.status().as_u16(), 200);
    let csp = page.headers()["content-security-policy"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(csp.contains("default-src 'self'"), "{csp}");
    assert_eq!(page.headers()["x-frame-options"], "DENY");
    let html = page.text().await.unwrap();
    assert!(
        html.contains("overview.js") && !html.contains("<script>"),
        "no inline script"
    );
    let refused = Client::connect(&format!("ws://{}/ws/overview?token=nope", s.addr)).await;
    assert!(
        matches!(&refused, Err(tungstenite::Error::Http(r)) if r.status() == 401),
        "an upgrade with a bad token: {:?}",
        refused.err()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_rooms_figures_equal_its_stats_and_live_rooms_come_first() {
    let s = TestServer::start().await;
    for (room, title) in [("shop", "主场 Main"), ("tea", "茶 Tea"), ("quiet", "")] {
        s.admin(
            "PUT",
            &format!("/api/rooms/{room}"),
            Some(json!({"title": title})),
        )
        .await;
    }
    s.create_sku("shop", "A", 9_900, 100, None).await;
    s.create_sku_to_pay("shop", "P", 5_000, 100, None, 60).await;
    s.create_sku("tea", "T", 1_234, 100, None).await;
    // shop: three paid orders and one unpaid; tea: one order and an audience.
    let mut b = s.buyer("shop", "u1").await;
    assert_eq!(b.buy("s1", "A", 2).await["ok"], true);
    assert_eq!(b.buy("s2", "A", 1).await["ok"], true);
    assert_eq!(b.buy("s3", "P", 1).await["ok"], true);
    let mut c = s.buyer("shop", "u2").await;
    assert_eq!(c.buy("s4", "A", 1).await["ok"], true);
    let mut t = s.buyer("tea", "v1").await;
    assert_eq!(t.buy("t1", "T", 3).await["ok"], true);
    drop((b, c, t));
    let now = livehub::clock::now_ms();
    let enter =
        |u: &str| json!({"type": "enter", "user": u, "ts_ms": now - 1_000, "source": "follow"});
    post_audience(
        &s,
        "tea",
        json!([enter("w1"), enter("w2"), enter("w3"),
               {"type": "leave", "user": "w3", "ts_ms": now - 500},
               {"type": "like", "user": "w1", "ts_ms": now - 400, "count": 3}]),
    )
    .await;

    // Once every room's snapshot holds these orders and the buyer sockets are closed, the
    // overview's figures are each room's /stats.
    let o = eventually_ok(
        WAIT,
        "the overview settles on each room's stats",
        async || {
            let o = overview(&s).await;
            for room in ["shop", "tea", "quiet"] {
                let st = s.stats(room).await;
                let l = line(&o, room);
                let want = json!({
                    "room": room, "title": l["title"], "live": l["live"],
                    "gmv_fen": st["gmv_fen"], "paid_gmv_fen": st["paid_gmv_fen"],
                    "orders": st["orders"], "online": st["audience"]["online"],
                    "last_order_ms": l["last_order_ms"],
                });
                if *l != want || st["viewers"] != 0 || line(&o, "shop")["orders"] != 4 {
                    return Err(format!("{l} against {st}"));
                }
            }
            Ok(o)
        },
    )
    .await;
    let shop = line(&o, "shop");
    assert_eq!(
        (shop["gmv_fen"].as_u64(), shop["paid_gmv_fen"].as_u64()),
        (Some(4 * 9_900 + 5_000), Some(4 * 9_900)),
        "{shop}"
    );
    assert_eq!(shop["title"], "主场 Main");
    let tea = line(&o, "tea");
    assert_eq!(
        (tea["online"].as_u64(), tea["orders"].as_u64()),
        (Some(2), Some(1))
    );
    // last_order_ms: the latest order's ts_ms, from the export.
    for room in ["shop", "tea"] {
        let latest = s
            .export(room)
            .await
            .iter()
            .map(|o| o["ts_ms"].as_i64().unwrap())
            .max();
        assert_eq!(line(&o, room)["last_order_ms"].as_i64(), latest, "{room}");
    }
    let quiet = line(&o, "quiet");
    assert_eq!(
        *quiet,
        json!({"room": "quiet", "title": "", "live": false, "gmv_fen": 0, "paid_gmv_fen": 0,
               "orders": 0, "online": 0, "last_order_ms": null})
    );
    // Orders and buyer sockets a moment ago: live; a room never active: not. Live first, then
    // by GMV.
    assert_eq!(
        (shop["live"].as_bool(), tea["live"].as_bool()),
        (Some(true), Some(true))
    );
    assert_eq!(rooms_of(&o), ["shop", "tea", "quiet"]);
    assert!(o["ts_ms"].as_i64().unwrap() >= now, "{o}");
    assert_eq!(o["op"], "overview");

    // A buyer socket open now makes a room live however long ago anything else happened.
    let _open = s.buyer("quiet", "z").await;
    eventually_ok(
        WAIT,
        "a room with a buyer socket open is live",
        async || {
            let o = overview(&s).await;
            let l = line(&o, "quiet");
            if l["live"] == true && l["online"] == 1 {
                Ok(())
            } else {
                Err(l.to_string())
            }
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watchers_share_one_overview_a_second_and_the_rest_answer_is_the_same() {
    let s = TestServer::start().await;
    s.create_room("r1").await;
    let mut a = overview_socket(&s).await;
    let mut b = overview_socket(&s).await;
    let first = a.next_json().await.expect("first overview");
    assert_eq!(first["op"], "overview");
    assert_eq!(rooms_of(&first), ["r1"]);
    // A room made now shows in a later push.
    s.create_room("r2").await;
    let mut seen_a = BTreeSet::new();
    let mut seen_b = BTreeSet::new();
    let mut last_ts = first["ts_ms"].as_i64().unwrap();
    seen_a.insert(last_ts);
    let mut with_r2 = false;
    for _ in 0..3 {
        let v = a.next_json().await.expect("a later overview");
        let ts = v["ts_ms"].as_i64().unwrap();
        assert!(
            ts > last_ts,
            "each push is a newer build: {ts} after {last_ts}"
        );
        last_ts = ts;
        seen_a.insert(ts);
        with_r2 |= rooms_of(&v) == ["r1", "r2"];
    }
    assert!(with_r2, "the new room never showed");
    for _ in 0..4 {
        seen_b.insert(
            b.next_json().await.expect("b's overview")["ts_ms"]
                .as_i64()
                .unwrap(),
        );
    }
    // Both watchers got the same builds (the same ts_ms), not one build each.
    assert!(
        seen_a.intersection(&seen_b).count() >= 3,
        "{seen_a:?} and {seen_b:?}"
    );
    // While they watch, the REST answer is one of the builds they are sent.
    let rest = overview(&s).await["ts_ms"].as_i64().unwrap();
    let next = a.next_json().await.unwrap()["ts_ms"].as_i64().unwrap();
    assert!(
        seen_a.contains(&rest) || rest == next,
        "REST {rest}, pushed {seen_a:?} then {next}"
    );
    // Shutdown closes the socket with 1001.
    let stopping = tokio::spawn(async move { s.stop().await });
    assert_eq!(a.close_code().await, Some(1001));
    stopping.await.unwrap();
}

/// Reads whatever a client that sends nothing after its upgrade gets until the server closes.
async fn silent_client(addr: std::net::SocketAddr, path: &str) -> Vec<u8> {
    let mut tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let req = format!(
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
    );
    tcp.write_all(req.as_bytes()).await.unwrap();
    let mut all = Vec::new();
    tokio::time::timeout(WAIT, tcp.read_to_end(&mut all))
        .await
        .expect("server closed in time")
        .expect("read");
    assert!(all.starts_with(b"HTTP/1.1 101"), "upgraded");
    all
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_socket_is_pinged_then_closed_at_the_idle_timeout() {
    let mut opts = Options::default();
    opts.feed_limits.idle_timeout = Duration::from_millis(600);
    let s = TestServer::start_with(opts).await;
    let bytes = silent_client(s.addr, &format!("/ws/overview?token={VIEWER}")).await;
    // An overview (text, 0x81), a ping (0x89), then a close frame with 1000.
    assert!(bytes.contains(&0x81) && bytes.contains(&0x89), "{bytes:?}");
    let [hi, lo] = 1000u16.to_be_bytes();
    assert!(
        bytes
            .windows(4)
            .any(|w| w[0] == 0x88 && w[1] >= 2 && w[2] == hi && w[3] == lo),
        "closed with 1000"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn overview_sockets_count_against_the_per_address_limit() {
    let mut opts = Options::default();
    opts.conn_limits.max_per_ip = 2;
    let s = TestServer::start_with(opts).await;
    let url = format!("ws://{}/ws/overview?token={VIEWER}", s.addr);
    let from: IpAddr = "127.0.0.3".parse().unwrap();
    let mut one = Client::connect_from(&url, Some(from), None).await.unwrap();
    let _two = Client::connect_from(&url, Some(from), None).await.unwrap();
    let third = Client::connect_from(&url, Some(from), None).await;
    assert!(
        matches!(&third, Err(tungstenite::Error::Http(r)) if r.status() == 503),
        "a third socket from one address: {:?}",
        third.err()
    );
    // The first socket still gets its overviews.
    let m = tokio::time::timeout(WAIT, one.next()).await.unwrap();
    assert!(
        matches!(m, Some(Ok(tungstenite::Message::Text(_)))),
        "{m:?}"
    );
}

//! Hostile and broken clients: connection limits, the handshake and idle timeouts, clients
//! that never read, clients that flood, and a saturated journal. None of them may slow or stop
//! anyone else, and none may cost an acknowledged order.

mod support;

use std::net::IpAddr;
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_tungstenite::tungstenite::{self, Message};

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

/// The value of one Prometheus series in `/metrics`, 0 when absent. It is read from a source
/// address of its own, 127.0.0.9, which no test here limits: from 127.0.0.1 it would count
/// against the per-address limit with the test server's pooled client, and a third connection
/// from one address is refused before the request is read.
async fn metric(s: &TestServer, series: &str) -> f64 {
    let http = reqwest::Client::builder()
        .local_address(ip("127.0.0.9"))
        .build()
        .expect("http client");
    metric_via(&http, &s.addr.to_string(), series)
        .await
        .unwrap_or(0.0)
}

/// Waits until `series` reaches at least `at_least`.
async fn wait_metric(s: &TestServer, series: &str, at_least: f64) -> f64 {
    let t0 = Instant::now();
    loop {
        let v = metric(s, series).await;
        if v >= at_least {
            return v;
        }
        assert!(t0.elapsed() < WAIT, "{series} stayed at {v}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn refused_with_503(r: Result<Ws, tungstenite::Error>) -> bool {
    matches!(r, Err(tungstenite::Error::Http(resp)) if resp.status() == 503)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_over_the_per_ip_limit_are_refused_and_other_addresses_still_connect() {
    let mut opts = Options::default();
    opts.conn_limits.max_per_ip = 2;
    let s = TestServer::start_with(opts).await;
    s.create_room("r").await;
    let url = format!("ws://{}/ws/dashboard?room=r&token={VIEWER}", s.addr);
    let a1 = Client::connect_from(&url, Some(ip("127.0.0.3")), None)
        .await
        .unwrap();
    let _a2 = Client::connect_from(&url, Some(ip("127.0.0.3")), None)
        .await
        .unwrap();
    assert!(refused_with_503(
        Client::connect_from(&url, Some(ip("127.0.0.3")), None).await
    ));
    let _b1 = Client::connect_from(&url, Some(ip("127.0.0.4")), None)
        .await
        .expect("another address is not limited by the first one's count");
    drop(a1);
    // The slot comes back once the server sees the close.
    let t0 = Instant::now();
    loop {
        match Client::connect_from(&url, Some(ip("127.0.0.3")), None).await {
            Ok(_) => break,
            Err(e) => assert!(t0.elapsed() < WAIT, "slot never came back: {e}"),
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(
        metric(
            &s,
            "livehub_connections_refused_total{reason=\"max_connections_per_ip\"}"
        )
        .await
            >= 1.0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_over_the_overall_limit_are_refused_until_one_closes() {
    let mut opts = Options::default();
    opts.conn_limits.max_connections = 4;
    let s = TestServer::start_with(opts).await;
    s.create_room("r").await;
    let url = format!("ws://{}/ws/dashboard?room=r&token={VIEWER}", s.addr);
    // The test's HTTP client may hold a pooled connection too; open until refused.
    let mut open = Vec::new();
    loop {
        let r = Client::connect_from(&url, Some(ip("127.0.0.5")), None).await;
        match r {
            Ok(ws) => open.push(ws),
            Err(e) => {
                assert!(refused_with_503(Err(e)), "refused with 503");
                break;
            }
        }
        assert!(open.len() <= 4, "the limit of 4 was not enforced");
    }
    assert!(!open.is_empty());
    open.pop();
    let t0 = Instant::now();
    while Client::connect_from(&url, Some(ip("127.0.0.6")), None)
        .await
        .is_err()
    {
        assert!(
            t0.elapsed() < WAIT,
            "a closed connection's slot never came back"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_never_finishes_its_request_is_dropped_at_the_handshake_timeout() {
    let mut opts = Options::default();
    opts.conn_limits.handshake_timeout = Duration::from_millis(500);
    let s = TestServer::start_with(opts).await;
    let mut tcp = tokio::net::TcpStream::connect(s.addr).await.unwrap();
    // Half a request head, then silence (slowloris).
    tcp.write_all(b"GET /ws/buy?room=r HTTP/1.1\r\nHost: x\r\n")
        .await
        .unwrap();
    let mut buf = [0u8; 1024];
    let ended = tokio::time::timeout(WAIT, async {
        loop {
            match tcp.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {} // hyper may answer 408 first
            }
        }
    })
    .await;
    assert!(ended.is_ok(), "the server kept a half-sent request open");
    // A complete request on a fresh connection is served. (A fresh client: the pooled
    // connection of `s.http` sat idle past the 500 ms timeout, so the server has closed it.)
    let r = reqwest::Client::new()
        .get(s.url("/healthz"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
}

/// A WebSocket client made by hand that, after the upgrade, never writes a byte (so never
/// answers a ping) and only reads. Returns everything the server sent until it closed.
async fn silent_client(addr: std::net::SocketAddr, path: String) -> Vec<u8> {
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

/// Whether `bytes` hold a server close frame with `code` (unmasked: 0x88, length, code).
fn has_close_frame(bytes: &[u8], code: u16) -> bool {
    let [hi, lo] = code.to_be_bytes();
    bytes
        .windows(4)
        .any(|w| w[0] == 0x88 && w[1] >= 2 && w[2] == hi && w[3] == lo)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_sockets_close_at_the_idle_timeout_and_sockets_that_answer_pings_stay() {
    let mut opts = Options::default();
    opts.limits.idle_timeout = Duration::from_millis(600);
    opts.feed_limits.idle_timeout = Duration::from_millis(600);
    let s = TestServer::start_with(opts).await;
    s.create_room("r").await;
    s.create_sku("r", "A", 100, 10, None).await;
    // These two never answer a ping.
    let quiet_buyer = tokio::spawn(silent_client(
        s.addr,
        "/ws/buy?room=r&user=quiet".to_owned(),
    ));
    let quiet_dash = tokio::spawn(silent_client(
        s.addr,
        format!("/ws/dashboard?room=r&token={VIEWER}"),
    ));
    // This one reads all along; tungstenite answers each ping with a pong as it reads.
    let mut live = s.buyer("r", "live").await;
    let until = Instant::now() + Duration::from_millis(2500);
    while Instant::now() < until {
        match tokio::time::timeout(Duration::from_millis(100), live.ws.next()).await {
            Err(_) => {}
            Ok(Some(Ok(Message::Close(f)))) => panic!("a socket answering pings was closed: {f:?}"),
            Ok(Some(Ok(_))) => {}
            Ok(other) => panic!("live socket ended: {other:?}"),
        }
    }
    let (buyer_bytes, dash_bytes) = (quiet_buyer.await.unwrap(), quiet_dash.await.unwrap());
    // Pinged (opcode 0x89) before being closed with 1000.
    assert!(buyer_bytes.contains(&0x89) && has_close_frame(&buyer_bytes, 1000));
    assert!(dash_bytes.contains(&0x89) && has_close_frame(&dash_bytes, 1000));
    let ack = live.buy("r1", "A", 1).await;
    assert_eq!(ack["ok"], true, "{ack}");
    assert!(metric(&s, "livehub_idle_closed_total{kind=\"buyer\"}").await >= 1.0);
    assert!(metric(&s, "livehub_idle_closed_total{kind=\"dashboard\"}").await >= 1.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_buyer_that_never_reads_is_dropped_and_counted_and_others_keep_buying() {
    let mut opts = Options::default();
    opts.limits.outbound_queue = 16;
    opts.limits.write_timeout = Duration::from_millis(500);
    let s = TestServer::start_with(opts).await;
    s.create_room("r").await;
    s.create_sku("r", "A", 100, 1_000, None).await;
    let url = format!("ws://{}/ws/buy?room=r&user=stuck", s.addr);
    let stuck = Client::connect_from(&url, None, Some(4096)).await.unwrap();
    let (mut tx, _rx_never_read) = stuck.split();
    // Pings make pongs without buying anything; the pongs pile up unread.
    let mut sent = 0u32;
    let dropped_before = metric(&s, "livehub_slow_consumers_dropped_total{kind=\"buyer\"}").await;
    while sent < 400_000 {
        let mut batch =
            futures_util::stream::iter((0..1000).map(|_| Ok(Message::text(r#"{"op":"ping"}"#))));
        let r = tokio::time::timeout(WAIT, tx.send_all(&mut batch)).await;
        sent += 1000;
        if !matches!(r, Ok(Ok(()))) {
            break; // the server hung up on us
        }
        if metric(&s, "livehub_slow_consumers_dropped_total{kind=\"buyer\"}").await > dropped_before
        {
            break;
        }
    }
    wait_metric(
        &s,
        "livehub_slow_consumers_dropped_total{kind=\"buyer\"}",
        dropped_before + 1.0,
    )
    .await;
    let mut other = s.buyer("r", "reader").await;
    let ack = other.buy("b1", "A", 1).await;
    assert_eq!(ack["ok"], true, "{ack}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dashboard_that_never_reads_holds_up_neither_buys_nor_other_dashboards() {
    let mut opts = Options::default();
    opts.feed_limits.write_timeout = Duration::from_millis(500);
    opts.push_interval = Duration::from_millis(20);
    let s = TestServer::start_with(opts).await;
    s.create_room("r").await;
    // Many SKUs make each snapshot large, so the stalled socket's buffers fill quickly.
    for i in 0..150 {
        s.create_sku(
            "r",
            &format!("SKU-with-a-long-name-{i:03}"),
            100,
            1_000_000,
            None,
        )
        .await;
    }
    let url = format!("ws://{}/ws/dashboard?room=r&token={VIEWER}", s.addr);
    let _stalled = Client::connect_from(&url, None, Some(4096)).await.unwrap();
    let mut reader = s.dashboard("r").await;
    let mut buyers = Vec::new();
    for i in 0..4 {
        buyers.push(s.buyer("r", &format!("u{i}")).await);
    }
    let series = "livehub_slow_consumers_dropped_total{kind=\"dashboard\"}";
    let t0 = Instant::now();
    let mut ok = 0u64;
    let mut n = 0u64;
    // Buy until the stalled dashboard is dropped: every buy must still be answered.
    while metric(&s, series).await < 1.0 {
        assert!(
            t0.elapsed() < WAIT * 2,
            "the stalled dashboard was never dropped"
        );
        for b in buyers.iter_mut() {
            n += 1;
            let sku = format!("SKU-with-a-long-name-{:03}", n % 150);
            let ack = b.buy(&format!("q{n}"), &sku, 1).await;
            assert_eq!(ack["ok"], true, "{ack}");
            ok += 1;
        }
    }
    // The reading dashboard sees every order.
    let t0 = Instant::now();
    loop {
        let snap = reader
            .next_json()
            .await
            .expect("reader dashboard stays open");
        if snap["orders"].as_u64() == Some(ok) {
            break;
        }
        assert!(
            t0.elapsed() < WAIT,
            "reader never caught up: {}",
            snap["orders"]
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_sending_1000_frames_a_second_is_limited_then_closed_and_others_are_not() {
    let mut opts = Options::default();
    opts.limits.frames_per_s = 50.0;
    opts.limits.burst = 50.0;
    opts.limits.abuse_strikes = 200.0;
    let s = TestServer::start_with(opts).await;
    s.create_room("r").await;
    s.create_sku("r", "A", 100, 1_000_000, None).await;
    let flood = s.buyer("r", "bot").await;
    let mut polite = s.buyer("r", "human").await;

    let polite_task = tokio::spawn(async move {
        let mut acks = Vec::new();
        for i in 0..10 {
            acks.push(polite.buy(&format!("p{i}"), "A", 1).await);
            // Not synchronisation: the polite buyer's pace, ten buys a second, well under the
            // limit of 50 frames a second.
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        acks
    });
    let (mut tx, mut rx) = flood.ws.split();
    let sender = tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_millis(1));
        for i in 0..3000 {
            tick.tick().await;
            let f = json!({"op": "buy", "req": format!("f{i}"), "sku": "A", "qty": 1});
            if tx.send(Message::text(f.to_string())).await.is_err() {
                return i;
            }
        }
        3000
    });
    let mut limited = 0;
    let mut ok = 0;
    let code = loop {
        match tokio::time::timeout(WAIT, rx.next())
            .await
            .expect("frames in time")
        {
            Some(Ok(Message::Text(t))) => {
                let v: Value = serde_json::from_str(&t).unwrap();
                if v["op"] == "ack" {
                    match v["error"].as_str() {
                        None => ok += 1,
                        Some("rate_limited") => {
                            // An ack for a SKU that exists carries its `left` (docs/protocol.md).
                            assert!(v["sku"] == "A" && v["left"].is_u64(), "{v}");
                            limited += 1
                        }
                        Some(e) => panic!("unexpected {e}"),
                    }
                }
            }
            Some(Ok(Message::Close(f))) => break f.map(|f| u16::from(f.code)),
            Some(Ok(_)) => {}
            None | Some(Err(_)) => break None,
        }
    };
    let _ = sender.await;
    assert_eq!(
        code,
        Some(1008),
        "closed for policy after {ok} ok, {limited} limited"
    );
    assert!(limited > 0 && ok > 0, "ok {ok}, limited {limited}");
    for ack in polite_task.await.unwrap() {
        assert_eq!(ack["ok"], true, "a polite buyer was limited: {ack}");
    }
}

/// Buys from 20 connections, 200 each all in flight at once; the acks.
async fn flood(s: &TestServer) -> Vec<Value> {
    let mut tasks = Vec::new();
    for c in 0..20 {
        let mut b = s.buyer("r", &format!("u{c}")).await;
        tasks.push(tokio::spawn(async move {
            for i in 0..200 {
                let f = json!({"op": "buy", "req": format!("r{i}"), "sku": "A", "qty": 1});
                b.send_json(f).await;
            }
            let mut acks = Vec::new();
            while acks.len() < 200 {
                let v = b.reply().await;
                assert_eq!(v["op"], "ack", "{v}");
                acks.push(v);
            }
            acks
        }));
    }
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await.unwrap());
    }
    all
}

/// Splits acks into ok order ids and the count of `unavailable`; nothing else is expected.
fn ok_and_unavailable(acks: &[Value]) -> (Vec<String>, usize) {
    let mut ok = Vec::new();
    let mut unavailable = 0;
    for a in acks {
        match (a["ok"].as_bool(), a["error"].as_str()) {
            (Some(true), _) => ok.push(a["order"].as_str().unwrap().to_owned()),
            (_, Some("unavailable")) => unavailable += 1,
            _ => panic!("unexpected ack {a}"),
        }
    }
    (ok, unavailable)
}

/// After a restart: exactly the acked orders exist, and the audit holds.
async fn only_acked_orders_after_restart(s: TestServer, ok_orders: &[String]) {
    let dir = s.stop().await;
    let s = TestServer::start_in(&dir, Options::default()).await;
    let export = s.export("r").await;
    let exported: std::collections::HashSet<_> = export
        .iter()
        .map(|o| o["order"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(export.len(), ok_orders.len(), "only acked orders exist");
    for o in ok_orders {
        assert!(exported.contains(o), "acked order {o} lost");
    }
    let audit = s.audit("r").await;
    assert_eq!(audit["consistent"], true, "{audit}");
    assert_eq!(audit["skus"][0]["sold"], ok_orders.len() as u64);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_journal_queue_answers_unavailable_and_loses_no_acked_order() {
    let opts = Options {
        journal_queue: Some(64),
        ..Options::default()
    };
    let s = TestServer::start_with(opts).await;
    s.create_room("r").await;
    s.create_sku("r", "A", 250, 1_000_000, None).await;
    s.faults.slow_syncs(50);
    let acks = flood(&s).await;
    let (ok, unavailable) = ok_and_unavailable(&acks);
    assert_eq!(ok.len() + unavailable, 4000);
    assert!(
        unavailable > 0 && !ok.is_empty(),
        "ok {}, unavailable {unavailable}",
        ok.len()
    );
    s.faults.slow_syncs(0);
    only_acked_orders_after_restart(s, &ok).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn over_the_pending_buys_limit_buys_are_shed_and_no_acked_order_is_lost() {
    let opts = Options {
        max_pending_buys: 50,
        ..Options::default()
    };
    let s = TestServer::start_with(opts).await;
    s.create_room("r").await;
    s.create_sku("r", "A", 250, 1_000_000, None).await;
    s.faults.slow_syncs(50);
    let acks = flood(&s).await;
    let (ok, unavailable) = ok_and_unavailable(&acks);
    assert_eq!(ok.len() + unavailable, 4000);
    assert!(
        unavailable > 0 && !ok.is_empty(),
        "ok {}, unavailable {unavailable}",
        ok.len()
    );
    let shed = metric(&s, "livehub_buys_shed_total").await;
    assert!(
        shed >= unavailable as f64,
        "shed {shed} < unavailable {unavailable}"
    );
    // A refused req made nothing and is decided afresh: once the load is gone it buys.
    s.faults.slow_syncs(0);
    let mut b = s.buyer("r", "u0").await;
    let refused = acks.iter().find(|a| a["error"] == "unavailable").unwrap();
    let again = b.buy(refused["req"].as_str().unwrap(), "A", 1).await;
    assert_eq!(again["ok"], true, "{again}");
    let mut ok = ok;
    ok.push(again["order"].as_str().unwrap().to_owned());
    only_acked_orders_after_restart(s, &ok).await;
}

/// Reads what the server sends on `tcp` until it closes the connection (or `WAIT` passes).
async fn read_until_closed(tcp: &mut tokio::net::TcpStream) -> Option<Vec<u8>> {
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    tokio::time::timeout(WAIT, async {
        loop {
            match tcp.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => got.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await
    .ok()
    .map(|()| got)
}

/// Strangers that dribble their requests cannot fill `--max-connections`: they hold at most
/// `--max-unauthenticated` connections, a newcomer closes the oldest of them once it has had
/// its grace, and buyers still connect and buy. A body is never read before its token is
/// checked, and a body that stalls is cut off at the body timeout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_strangers_hold_no_slot_that_buyers_need() {
    const CAP: usize = 20;
    let mut opts = Options::default();
    opts.conn_limits.max_connections = 60;
    opts.conn_limits.max_unauthenticated = CAP;
    opts.conn_limits.unauthenticated_grace = Duration::from_millis(200);
    opts.conn_limits.body_timeout = Duration::from_millis(300);
    let s = TestServer::start_with(opts).await;
    s.create_room("r").await;
    s.create_sku("r", "A1", 100, 1000, None).await;

    // A body without a valid token is refused before it is read: the 401 comes back while
    // the client has sent none of its 1,000 bytes.
    let mut t = tokio::net::TcpStream::connect(s.addr).await.unwrap();
    t.write_all(b"PUT /api/rooms/x HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer nope\r\nContent-Length: 1000\r\n\r\n")
        .await
        .unwrap();
    let answer = read_until_closed(&mut t)
        .await
        .expect("answered and closed");
    assert!(
        String::from_utf8_lossy(&answer).starts_with("HTTP/1.1 401"),
        "{}",
        String::from_utf8_lossy(&answer)
    );

    // A body with the admin token that stalls half-way is cut off at the body timeout.
    let mut t = tokio::net::TcpStream::connect(s.addr).await.unwrap();
    t.write_all(format!("PUT /api/rooms/x HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {ADMIN}\r\nContent-Length: 100\r\n\r\n{{\"title\":").as_bytes())
        .await
        .unwrap();
    let answer = read_until_closed(&mut t).await.expect("cut off");
    assert!(
        String::from_utf8_lossy(&answer).starts_with("HTTP/1.1 400"),
        "{}",
        String::from_utf8_lossy(&answer)
    );

    // Strangers dribble request heads: as many as the overall limit. Those over the
    // unauthenticated limit are refused while every stranger is within its grace.
    let mut strangers = Vec::new();
    for _ in 0..60 {
        let mut t = tokio::net::TcpStream::connect(s.addr).await.unwrap();
        let _ = t.write_all(b"GET /api/rooms HTTP/1.1\r\nHost: x\r\n").await;
        strangers.push(t);
    }
    // The strangers are left to be there longer than their grace (part of the scenario: a
    // newcomer may close only a stranger that had its chance).
    tokio::time::sleep(Duration::from_millis(250)).await;
    assert!(
        metric(
            &s,
            "livehub_connections_refused_total{reason=\"max_unauthenticated\"}"
        )
        .await
            >= 30.0,
        "strangers over the unauthenticated limit were refused while all were in their grace"
    );

    // Buyers connect and buy: each closes a stranger for its slot.
    let mut buyers = Vec::new();
    for i in 0..30 {
        buyers.push(s.buyer("r", &format!("u{i}")).await);
    }
    for (i, b) in buyers.iter_mut().enumerate() {
        let a = b.buy(&format!("q{i}"), "A1", 1).await;
        assert_eq!(a["ok"], true, "{a}");
    }
    assert!(
        metric(&s, "livehub_unauthenticated_closed_total").await >= 1.0,
        "a buyer took a stranger's slot"
    );
    // At most the unauthenticated limit of strangers still holds a connection; the rest were
    // refused or closed.
    let mut open = 0;
    for t in &mut strangers {
        if still_open(t).await {
            open += 1;
        }
    }
    assert!(open <= CAP, "{open} strangers hold connections");
}

/// Whether the server still holds `tcp` open: nothing more to read, and no end.
async fn still_open(tcp: &mut tokio::net::TcpStream) -> bool {
    let mut b = [0u8; 1024];
    loop {
        match tokio::time::timeout(Duration::from_millis(5), tcp.read(&mut b)).await {
            Err(_) => return true,
            Ok(Ok(0)) | Ok(Err(_)) => return false,
            Ok(Ok(_)) => {}
        }
    }
}

/// One user holds at most `--max-connections-per-user` buyer sockets in a room: the next is
/// refused with 429, other users are not limited by it, and a closed socket gives its place
/// back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_user_holds_at_most_its_share_of_buyer_sockets() {
    let mut opts = Options::default();
    opts.conn_limits.max_per_user = 2;
    let s = TestServer::start_with(opts).await;
    s.create_room("r").await;
    let url = |u: &str| format!("ws://{}/ws/buy?room=r&user={u}", s.addr);
    let a1 = Client::connect(&url("u1")).await.unwrap();
    let _a2 = Client::connect(&url("u1")).await.unwrap();
    match Client::connect(&url("u1")).await {
        Err(tungstenite::Error::Http(resp)) => assert_eq!(resp.status(), 429),
        other => panic!("a third socket of u1: {:?}", other.map(|_| ())),
    }
    let _b = Client::connect(&url("u2"))
        .await
        .expect("another user is not limited by u1's sockets");
    drop(a1);
    eventually_ok(
        WAIT,
        "u1's place comes back once its socket closes",
        async || Client::connect(&url("u1")).await.map(|_| ()),
    )
    .await;
}

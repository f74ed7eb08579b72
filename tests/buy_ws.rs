//! The buyer WebSocket against a real server on 127.0.0.1:0: oversell, limits across
//! connections, idempotency, bad frames, auth, sale windows and pushes.

mod support;

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Value};
use support::*;
use tokio::sync::Barrier;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_thousand_buyers_on_stock_100_get_exactly_100_orders() {
    let s = TestServer::start().await;
    s.create_room("spike").await;
    s.create_sku("spike", "A1", 9900, 100, None).await;
    let n = 2000;
    let barrier = Arc::new(Barrier::new(n));
    let gate = Arc::new(tokio::sync::Semaphore::new(200));
    let mut tasks = Vec::new();
    for i in 0..n {
        let (barrier, gate) = (barrier.clone(), gate.clone());
        let url = format!(
            "ws://{}/ws/buy?room=spike&token={}",
            s.addr,
            livehub::auth::sign_buyer_token(SECRET, &format!("u{i}"), None, 600)
        );
        tasks.push(tokio::spawn(async move {
            let mut c = {
                let _p = gate.acquire().await.unwrap();
                Client::connect(&url).await.expect("connect")
            };
            barrier.wait().await;
            c.buy("r1", "A1", 1).await
        }));
    }
    let mut ok = Vec::new();
    let mut sold_out = 0;
    for t in tasks {
        let ack = t.await.unwrap();
        assert_eq!(ack["op"], "ack", "{ack}");
        if ack["ok"] == true {
            ok.push(ack["order"].as_str().unwrap().to_owned());
        } else {
            assert_eq!(ack["error"], "sold_out", "{ack}");
            assert_eq!(ack["left"], 0);
            sold_out += 1;
        }
    }
    assert_eq!(ok.len(), 100, "exactly the stock is sold");
    assert_eq!(sold_out, n - 100);
    assert_eq!(
        ok.iter().collect::<HashSet<_>>().len(),
        100,
        "order ids are unique"
    );
    let export = s.export("spike").await;
    assert_eq!(export.len(), 100);
    let exported: HashSet<&str> = export
        .iter()
        .map(|o| o["order"].as_str().unwrap())
        .collect();
    assert!(ok.iter().all(|o| exported.contains(o.as_str())));
    let audit = s.audit("spike").await;
    assert_eq!(audit["consistent"], true, "{audit}");
    assert_eq!(audit["skus"][0]["sold"], 100);
    assert_eq!(audit["skus"][0]["left"], 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_user_on_several_connections_never_exceeds_the_limit() {
    let s = TestServer::start().await;
    s.create_room("lim").await;
    s.create_sku("lim", "A1", 100, 1000, Some(2)).await;
    let mut tasks = Vec::new();
    for c in 0..6 {
        let mut client = s.buyer("lim", "alice").await;
        tasks.push(tokio::spawn(async move {
            for r in 0..3 {
                client
                    .send_json(json!({"op":"buy","req":format!("c{c}r{r}"),"sku":"A1","qty":1}))
                    .await;
            }
            let mut acks = Vec::new();
            for _ in 0..3 {
                acks.push(client.reply().await);
            }
            acks
        }));
    }
    let mut ok = 0;
    for t in tasks {
        for ack in t.await.unwrap() {
            if ack["ok"] == true {
                ok += 1;
            } else {
                assert_eq!(ack["error"], "limit_exceeded", "{ack}");
            }
        }
    }
    assert_eq!(ok, 2, "the limit holds across connections");
    // Another user is not affected; a qty over the limit is refused whole.
    let mut bob = s.buyer("lim", "bob").await;
    assert_eq!(bob.buy("b1", "A1", 3).await["error"], "limit_exceeded");
    assert_eq!(bob.buy("b2", "A1", 2).await["ok"], true);
    assert_eq!(s.audit("lim").await["skus"][0]["sold"], 4);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_repeated_req_gets_the_same_order() {
    let s = TestServer::start().await;
    s.create_room("idem").await;
    s.create_sku("idem", "A1", 500, 10, None).await;
    let mut a = s.buyer("idem", "carol").await;
    let mut b = s.buyer("idem", "carol").await;
    let first = a.buy("r1", "A1", 2).await;
    assert_eq!(first["ok"], true, "{first}");
    assert_eq!(first["amount_fen"], 1000);
    assert_eq!(first["left"], 8);
    let again = a.buy("r1", "A1", 2).await;
    assert_eq!(again, first, "same ack, same order");
    let other_conn = b.buy("r1", "A1", 2).await;
    assert_eq!(other_conn["order"], first["order"]);
    // The same req from another user is another request.
    let mut d = s.buyer("idem", "dave").await;
    let dave = d.buy("r1", "A1", 1).await;
    assert_eq!(dave["ok"], true);
    assert_ne!(dave["order"], first["order"]);
    // status answers with the order's ack, or unknown_request.
    b.send_json(json!({"op":"status","req":"r1"})).await;
    assert_eq!(b.reply().await, first);
    b.send_json(json!({"op":"status","req":"never"})).await;
    let unknown = b.reply().await;
    assert_eq!(unknown["ok"], false);
    assert_eq!(unknown["error"], "unknown_request");
    // A rejected req made nothing and is decided afresh.
    let too_many = a.buy("r2", "A1", 100).await;
    assert_eq!(too_many["error"], "insufficient_stock");
    assert_eq!(too_many["left"], 7);
    let fresh = a.buy("r2", "A1", 1).await;
    assert_eq!(fresh["ok"], true, "{fresh}");
    assert_eq!(s.export("idem").await.len(), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_repeats_of_one_req_make_one_order() {
    let s = TestServer::start().await;
    s.create_room("dup").await;
    s.create_sku("dup", "A1", 100, 1000, None).await;
    let mut clients = Vec::new();
    for _ in 0..8 {
        clients.push(s.buyer("dup", "erin").await);
    }
    let mut tasks = Vec::new();
    for mut c in clients {
        tasks.push(tokio::spawn(async move {
            let mut orders = Vec::new();
            for _ in 0..5 {
                let ack = c.buy("same", "A1", 1).await;
                assert_eq!(ack["ok"], true, "{ack}");
                orders.push(ack["order"].as_str().unwrap().to_owned());
            }
            orders
        }));
    }
    let mut all = HashSet::new();
    for t in tasks {
        all.extend(t.await.unwrap());
    }
    assert_eq!(all.len(), 1, "one order for one req: {all:?}");
    assert_eq!(s.export("dup").await.len(), 1);
}

/// Frames that are not valid messages. Each gets an error and makes nothing.
fn bad_frames() -> Vec<String> {
    let long_id = "x".repeat(65);
    let mut v: Vec<String> = vec![
        "not json".into(),
        "".into(),
        "{".into(),
        "[]".into(),
        "42".into(),
        "\"buy\"".into(),
        "null".into(),
        "{}".into(),
        r#"{"op":1}"#.into(),
        r#"{"op":"fly"}"#.into(),
        r#"{"op":"BUY","req":"r","sku":"A1","qty":1}"#.into(),
        r#"{"op":"buy"}"#.into(),
        r#"{"op":"buy","req":"b1","sku":"A1"}"#.into(),
        r#"{"op":"buy","req":"b2","qty":1}"#.into(),
        r#"{"op":"buy","sku":"A1","qty":1}"#.into(),
        r#"{"op":"buy","req":"b3","sku":"A1","qty":0}"#.into(),
        r#"{"op":"buy","req":"b4","sku":"A1","qty":-1}"#.into(),
        r#"{"op":"buy","req":"b5","sku":"A1","qty":1.5}"#.into(),
        r#"{"op":"buy","req":"b6","sku":"A1","qty":"1"}"#.into(),
        r#"{"op":"buy","req":"b7","sku":"A1","qty":1e30}"#.into(),
        r#"{"op":"buy","req":"b8","sku":"A1","qty":18446744073709551616}"#.into(),
        r#"{"op":"buy","req":"b9","sku":"A1","qty":1000001}"#.into(),
        r#"{"op":"buy","req":"b10","sku":"A1","qty":null}"#.into(),
        r#"{"op":"buy","req":1,"sku":"A1","qty":1}"#.into(),
        r#"{"op":"buy","req":"b11","sku":7,"qty":1}"#.into(),
        r#"{"op":"buy","req":"b12","sku":["A1"],"qty":1}"#.into(),
        r#"{"op":"buy","req":"","sku":"A1","qty":1}"#.into(),
        format!(r#"{{"op":"buy","req":"{long_id}","sku":"A1","qty":1}}"#),
        r#"{"op":"buy","req":"b13","sku":"A 1","qty":1}"#.into(),
        r#"{"op":"buy","req":"b14","sku":"","qty":1}"#.into(),
        r#"{"op":"buy","req":"b15","sku":"A1","qty":1,"ref":"bad ref"}"#.into(),
        r#"{"op":"buy","req":"b16","sku":"A1","qty":1,"ref":5}"#.into(),
        r#"{"op":"buy","req":"b17/","sku":"A1","qty":1}"#.into(),
        r#"{"op":"buy","req":"中文","sku":"A1","qty":1}"#.into(),
        r#"{"op":"status"}"#.into(),
        r#"{"op":"status","req":5}"#.into(),
        r#"{"op":"status","req":"a b"}"#.into(),
        r#"{"op":"buy","req":"b18","sku":"A1","qty":1"#.into(),
        "\u{0}\u{1}\u{2}".into(),
    ];
    v.push(format!(
        r#"{{"op":"buy","req":"b19","sku":"{}","qty":1}}"#,
        "A".repeat(100)
    ));
    v
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_frames_get_errors_make_nothing_and_leave_the_socket_usable() {
    let s = TestServer::start().await;
    s.create_room("bad").await;
    s.create_sku("bad", "A1", 100, 10, None).await;
    let mut c = s.buyer("bad", "frank").await;
    let frames = bad_frames();
    assert!(frames.len() >= 30);
    for f in &frames {
        c.send_text(f.clone()).await;
        let v = c.reply().await;
        assert_eq!(v["op"], "error", "frame {f:?} got {v}");
        assert_eq!(v["error"], "bad_request", "frame {f:?} got {v}");
        assert!(v["detail"].as_str().is_some_and(|d| !d.is_empty()));
    }
    // req is echoed when it could be read.
    c.send_text(r#"{"op":"buy","req":"echo1","sku":"A1","qty":0}"#)
        .await;
    assert_eq!(c.reply().await["req"], "echo1");
    // Binary frames are refused with an error too.
    use futures_util::SinkExt;
    c.ws.send(tokio_tungstenite::tungstenite::Message::binary(vec![
        1u8, 2, 3,
    ]))
    .await
    .unwrap();
    assert_eq!(c.reply().await["op"], "error");
    // An unknown SKU is an ack, not a bad frame.
    let unknown = c.buy("u1", "NOPE", 1).await;
    assert_eq!(unknown["error"], "unknown_sku");
    assert!(
        unknown.get("left").is_none(),
        "no left for a SKU that does not exist"
    );
    assert!(
        s.export("bad").await.is_empty(),
        "no bad frame made an order"
    );
    let ok = c.buy("good", "A1", 1).await;
    assert_eq!(ok["ok"], true, "{ok}");
    assert_eq!(s.export("bad").await.len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frame_over_4_kib_closes_with_1009() {
    let s = TestServer::start().await;
    s.create_room("big").await;
    let mut c = s.buyer("big", "gina").await;
    c.send_text(format!(r#"{{"op":"ping","pad":"{}"}}"#, "x".repeat(4200)))
        .await;
    assert_eq!(c.close_code().await, Some(1009));
    // A frame far over the library's own limit closes too.
    let mut c = s.buyer("big", "gina").await;
    c.send_text("y".repeat(200_000)).await;
    assert!(matches!(c.close_code().await, Some(1009) | None));
    // Ping still works for others.
    let mut d = s.buyer("big", "hank").await;
    d.send_json(json!({"op":"ping"})).await;
    let pong = d.reply().await;
    assert_eq!(pong["op"], "pong");
    assert!(pong["server_time_ms"].as_i64().unwrap() > 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_without_a_valid_token_are_refused() {
    let s = TestServer::start_with(Options {
        open_buyers: false,
        ..Options::default()
    })
    .await;
    s.create_room("auth").await;
    let base = format!("ws://{}/ws/buy?room=auth", s.addr);
    let status = |r: Result<Client, tokio_tungstenite::tungstenite::Error>| match r {
        Err(tokio_tungstenite::tungstenite::Error::Http(resp)) => resp.status().as_u16(),
        Err(e) => panic!("unexpected error {e}"),
        Ok(_) => 101,
    };
    assert_eq!(status(Client::connect(&base).await), 401, "no token");
    assert_eq!(
        status(Client::connect(&format!("{base}&user=ivy")).await),
        401,
        "?user= needs --open-buyers"
    );
    assert_eq!(
        status(Client::connect(&format!("{base}&token=garbage")).await),
        401
    );
    let forged = livehub::auth::sign_buyer_token("wrong-secret", "ivy", None, 600);
    assert_eq!(
        status(Client::connect(&format!("{base}&token={forged}")).await),
        401,
        "wrong secret"
    );
    let other_room = livehub::auth::sign_buyer_token(SECRET, "ivy", Some("elsewhere"), 600);
    assert_eq!(
        status(Client::connect(&format!("{base}&token={other_room}")).await),
        401,
        "other room"
    );
    let good = livehub::auth::sign_buyer_token(SECRET, "ivy", Some("auth"), 600);
    assert_eq!(
        status(Client::connect(&format!("{base}&token={good}")).await),
        101
    );
    let dash = format!("ws://{}/ws/dashboard?room=auth", s.addr);
    assert_eq!(
        status(Client::connect(&format!("{dash}&token=nope")).await),
        401
    );
    assert_eq!(status(Client::connect(&dash).await), 401);
    // REST: no token, a bad token, and a viewer token on an admin route.
    let (st, v) = s
        .request("PUT", "/api/rooms/x", None, Some(json!({"title":"t"})))
        .await;
    assert_eq!((st, v["error"].clone()), (401, json!("unauthorized")));
    assert_eq!(
        s.request(
            "PUT",
            "/api/rooms/x",
            Some("bad"),
            Some(json!({"title":"t"}))
        )
        .await
        .0,
        401
    );
    assert_eq!(
        s.request(
            "PUT",
            "/api/rooms/x",
            Some(VIEWER),
            Some(json!({"title":"t"}))
        )
        .await
        .0,
        401
    );
    assert_eq!(
        s.request("GET", "/api/rooms/auth/orders", Some(VIEWER), None)
            .await
            .0,
        401
    );
    assert_eq!(
        s.request("GET", "/api/rooms", Some(VIEWER), None).await.0,
        200
    );
    assert_eq!(
        s.request("GET", "/api/rooms", Some(ADMIN), None).await.0,
        200
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sale_windows_decide_and_push_their_changes() {
    let s = TestServer::start().await;
    s.create_room("win").await;
    let soon = livehub::clock::now_ms() + 1500;
    s.admin(
        "PUT",
        "/api/rooms/win/skus/F1",
        Some(json!({"name":"flash","price_fen":990,"stock":3,"limit_per_user":null,"opens_at_ms":soon,"closes_at_ms":null})),
    )
    .await;
    let mut c = s.buyer("win", "jack").await;
    let hello = c.hello.clone().unwrap();
    assert_eq!(hello["skus"][0]["state"], "scheduled");
    let early = c.buy("e1", "F1", 1).await;
    assert_eq!(early["error"], "not_open");
    // The clock opens it: a `sale` push arrives without anyone asking.
    let opened = c
        .push_where(|v| v["op"] == "sale" && v["state"] == "open")
        .await;
    assert_eq!(opened["sku"], "F1");
    assert_eq!(c.buy("o1", "F1", 3).await["ok"], true);
    let sold_out = c
        .push_where(|v| v["op"] == "sale" && v["state"] == "sold_out")
        .await;
    assert_eq!(sold_out["sku"], "F1");
    assert_eq!(c.buy("o2", "F1", 1).await["error"], "sold_out");
    let stock = c.push_where(|v| v["op"] == "stock" && v["left"] == 0).await;
    assert_eq!(stock["state"], "sold_out");
    // Restock, then close by hand: closed wins.
    s.admin(
        "POST",
        "/api/rooms/win/skus/F1/stock",
        Some(json!({"delta": 5})),
    )
    .await;
    c.push_where(|v| v["op"] == "sale" && v["state"] == "open")
        .await;
    let closed = s.admin("POST", "/api/rooms/win/skus/F1/close", None).await;
    assert_eq!(closed["state"], "closed");
    c.push_where(|v| v["op"] == "sale" && v["state"] == "closed")
        .await;
    assert_eq!(c.buy("c1", "F1", 1).await["error"], "closed");
    let reopened = s.admin("POST", "/api/rooms/win/skus/F1/open", None).await;
    assert_eq!(reopened["state"], "open");
    assert_eq!(reopened["closes_at_ms"], Value::Null);
    assert_eq!(c.buy("c2", "F1", 1).await["ok"], true);
    // Withdrawal beyond what is left is a conflict and changes nothing.
    let (st, v) = s
        .request(
            "POST",
            "/api/rooms/win/skus/F1/stock",
            Some(ADMIN),
            Some(json!({"delta": -5})),
        )
        .await;
    assert_eq!((st, v["error"].clone()), (409, json!("conflict")));
    let w = s
        .admin(
            "POST",
            "/api/rooms/win/skus/F1/stock",
            Some(json!({"delta": -4})),
        )
        .await;
    assert_eq!(
        (
            w["left"].as_u64(),
            w["stock_total"].as_u64(),
            w["sold"].as_u64()
        ),
        (Some(0), Some(4), Some(4))
    );
    assert_eq!(s.audit("win").await["consistent"], true);
}

/// A sale opening for more buyers than one wave (they sit in many push slots, served one
/// after another): every buyer gets the `open` push, then the `sold_out` one, never the other
/// way round, and every buy that answers the push is decided exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sale_opening_reaches_every_buyer_in_order_across_the_waves() {
    let s = TestServer::start().await;
    s.create_room("waves").await;
    s.admin(
        "PUT",
        "/api/rooms/waves/skus/W1",
        Some(json!({"name":"flash","price_fen":100,"stock":50,"limit_per_user":1,"opens_at_ms":4102444800000i64,"closes_at_ms":null})),
    )
    .await;
    let n = livehub::buyer::pushes::WAVE * 5;
    let mut buyers = Vec::new();
    for i in 0..n {
        buyers.push(s.buyer("waves", &format!("u{i}")).await);
    }
    let opened = s.admin("POST", "/api/rooms/waves/skus/W1/open", None).await;
    assert_eq!(opened["state"], "open");
    let mut tasks = tokio::task::JoinSet::new();
    for (i, mut c) in buyers.into_iter().enumerate() {
        tasks.spawn(async move {
            // Every frame up to the sold_out push, in the order they came.
            let mut sales = Vec::new();
            let mut answer = None;
            loop {
                let v = c.next_json().await.expect("socket open");
                match v["op"].as_str() {
                    Some("sale") => {
                        let state = v["state"].as_str().unwrap().to_owned();
                        if state == "open" && answer.is_none() {
                            c.send_json(
                                json!({"op":"buy","req":format!("r{i}"),"sku":"W1","qty":1}),
                            )
                            .await;
                        }
                        let done = state == "sold_out";
                        sales.push(state);
                        if done && answer.is_some() {
                            break;
                        }
                    }
                    Some("ack") => {
                        answer = Some(v["ok"] == true);
                        if sales.last().map(String::as_str) == Some("sold_out") {
                            break;
                        }
                    }
                    _ => {}
                }
            }
            (sales, answer.unwrap())
        });
    }
    let mut oks = 0;
    while let Some(r) = tasks.join_next().await {
        let (mut sales, ok) = r.unwrap();
        // The SKU's creation is pushed too ("scheduled"); a buyer that connected before the
        // room's sale feed got to it has that first, after the same state in its hello.
        if sales.first().map(String::as_str) == Some("scheduled") {
            sales.remove(0);
        }
        assert_eq!(sales, ["open", "sold_out"]);
        oks += ok as usize;
    }
    assert_eq!(oks, 50);
    assert_eq!(s.export("waves").await.len(), 50);
    assert_eq!(s.audit("waves").await["consistent"], true);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rest_input_is_validated_with_a_clear_400() {
    let s = TestServer::start().await;
    s.create_room("val").await;
    let sku = |body: Value| async {
        s.request("PUT", "/api/rooms/val/skus/A1", Some(ADMIN), Some(body))
            .await
    };
    for (body, needle) in [
        (json!({"name":"n","price_fen":-1,"stock":1}), "price_fen"),
        (
            json!({"name":"n","price_fen":1_000_000_000_001u64,"stock":1}),
            "price_fen",
        ),
        (
            json!({"name":"n","price_fen":1,"stock":1_000_000_001u64}),
            "stock",
        ),
        (json!({"name":"n","price_fen":1.5,"stock":1}), "price_fen"),
        (json!({"name":"","price_fen":1,"stock":1}), "name"),
        (json!({"price_fen":1,"stock":1}), "name"),
        (
            json!({"name":"n","price_fen":1,"stock":1,"limit_per_user":0}),
            "limit_per_user",
        ),
        (
            json!({"name":"n","price_fen":1,"stock":1,"opens_at_ms":2000,"closes_at_ms":1000}),
            "closes_at_ms",
        ),
    ] {
        let (st, v) = sku(body.clone()).await;
        assert_eq!(st, 400, "{body} -> {v}");
        assert_eq!(v["error"], "bad_request");
        assert!(
            v["detail"].as_str().unwrap().contains(needle),
            "{body} -> {v}"
        );
    }
    let (st, v) = s
        .request(
            "PUT",
            "/api/rooms/val/skus/bad%20id",
            Some(ADMIN),
            Some(json!({"name":"n","price_fen":1,"stock":1})),
        )
        .await;
    assert_eq!((st, v["error"].clone()), (400, json!("bad_request")));
    let (st, _) = s
        .request(
            "PUT",
            "/api/rooms/nope/skus/A1",
            Some(ADMIN),
            Some(json!({"name":"n","price_fen":1,"stock":1})),
        )
        .await;
    assert_eq!(st, 404);
    let (st, _) = s
        .request("POST", "/api/rooms/val/skus/NOPE/open", Some(ADMIN), None)
        .await;
    assert_eq!(st, 404);
    let (st, _) = s
        .request("GET", "/api/rooms/val/orders?limit=0", Some(ADMIN), None)
        .await;
    assert_eq!(st, 400);
    let (st, _) = s
        .request(
            "GET",
            "/api/rooms/val/orders?limit=10001",
            Some(ADMIN),
            None,
        )
        .await;
    assert_eq!(st, 400);
    let (st, _) = s
        .request(
            "GET",
            "/api/rooms/val/orders?after_seq=x",
            Some(ADMIN),
            None,
        )
        .await;
    assert_eq!(st, 400);
    // Nothing was created by the refused bodies.
    let room = s
        .admin(
            "PUT",
            "/api/rooms/val",
            Some(json!({"title":"still empty"})),
        )
        .await;
    assert_eq!(room["skus"], json!([]));
    // An update keeps the stock and changes the rest.
    s.create_sku("val", "A1", 100, 7, None).await;
    let up = s
        .admin(
            "PUT",
            "/api/rooms/val/skus/A1",
            Some(json!({"name":"renamed","price_fen":250,"stock":999,"limit_per_user":3})),
        )
        .await;
    assert_eq!(
        (
            up["name"].as_str(),
            up["price_fen"].as_u64(),
            up["stock_total"].as_u64(),
            up["limit_per_user"].as_u64()
        ),
        (Some("renamed"), Some(250), Some(7), Some(3))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stock_pushes_come_at_most_ten_a_second_with_the_latest_left() {
    let s = TestServer::start().await;
    s.create_room("tick").await;
    s.create_sku("tick", "T1", 100, 10_000, None).await;
    let mut watcher = s.buyer("tick", "w").await;
    // A buy every 10 ms for 1.5 s: the stock changes between any two pushes.
    let buys = s
        .buy_every("tick", "b", "T1", 150, Duration::from_millis(10))
        .await;
    let mut at = Vec::new();
    let mut lefts = Vec::new();
    while lefts.last() != Some(&(10_000 - 150)) {
        let v = watcher.next_json().await.expect("socket open");
        if v["op"] == "stock" && v["sku"] == "T1" {
            at.push(std::time::Instant::now());
            lefts.push(v["left"].as_u64().unwrap());
        }
    }
    buys.await.unwrap();
    assert!(
        at.len() >= 8,
        "{} stock pushes in 1.5 s of buying",
        at.len()
    );
    assert!(
        lefts.windows(2).all(|w| w[1] < w[0]),
        "left only falls: {lefts:?}"
    );
    // Read times, which this client's own scheduling can bunch: on average at least 95 ms
    // apart, and never as close as the buys (10 ms) or half the interval.
    let gaps: Vec<Duration> = at.windows(2).map(|w| w[1] - w[0]).collect();
    let mean = (at[at.len() - 1] - at[0]) / gaps.len() as u32;
    assert!(
        mean >= Duration::from_millis(95) && gaps.iter().all(|&g| g >= Duration::from_millis(50)),
        "stock pushes closer than 100 ms (mean {mean:?}): {gaps:?}"
    );
}

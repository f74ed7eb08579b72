//! Orders that must be paid (docs/protocol.md, "Orders that must be paid"), end to end over
//! the buyer socket and the REST API: unpaid orders hold their units, cancels and expiries
//! give them back (and the buyer's allowance), refunds, the change feed, the audit and the
//! dashboard's figures, across a restart.

mod support;

use std::time::Duration;

use serde_json::{json, Value};
use support::sku_of;
use support::{eventually, Options, TestServer, ADMIN, WAIT};

fn now_ms() -> i64 {
    livehub::clock::now_ms()
}

async fn cancel(c: &mut support::Client, req: &str, order: &str) -> Value {
    c.send_json(json!({"op": "cancel", "req": req, "order": order}))
        .await;
    c.reply().await
}

#[tokio::test]
async fn an_unpaid_order_holds_its_units_and_a_cancel_gives_them_back() {
    let s = TestServer::start().await;
    s.create_room("r").await;
    let state = s.create_sku_to_pay("r", "A", 990, 2, Some(1), 60).await;
    assert_eq!(state["pay_timeout_s"], 60);
    let mut u1 = s.buyer("r", "u1").await;
    let mut u2 = s.buyer("r", "u2").await;
    let mut u3 = s.buyer("r", "u3").await;

    let before = now_ms();
    let a1 = u1.buy("q1", "A", 1).await;
    assert_eq!(a1["ok"], true, "{a1}");
    assert_eq!(a1["status"], "unpaid");
    let pay_by = a1["pay_by_ms"].as_i64().expect("pay_by_ms");
    assert!(
        (before + 60_000..=now_ms() + 60_000).contains(&pay_by),
        "{pay_by}"
    );
    let a2 = u2.buy("q1", "A", 1).await;
    assert_eq!(
        (a2["ok"].clone(), a2["left"].clone()),
        (json!(true), json!(0))
    );
    let a3 = u3.buy("q1", "A", 1).await;
    assert_eq!(a3["error"], "sold_out", "unpaid orders hold their units");

    // A repeat of the req, and status, say where the order stands now.
    let again = u1.buy("q1", "A", 1).await;
    assert_eq!(
        (again["order"].clone(), again["status"].clone()),
        (a1["order"].clone(), json!("unpaid"))
    );

    // Somebody else's order is unknown to them; one's own unpaid order cancels.
    let o1 = a1["order"].as_str().unwrap();
    let theirs = cancel(&mut u2, "c0", o1).await;
    assert_eq!(
        (theirs["ok"].clone(), theirs["error"].clone()),
        (json!(false), json!("unknown_order")),
        "{theirs}"
    );
    let c1 = cancel(&mut u1, "c1", o1).await;
    assert_eq!(c1["ok"], true, "{c1}");
    assert_eq!(
        (c1["status"].clone(), c1["order"].clone()),
        (json!("cancelled"), json!(o1))
    );
    let pushed = u1
        .push_where(|v| v["op"] == "order" && v["order"] == o1)
        .await;
    assert_eq!(pushed["status"], "cancelled");
    assert_eq!(pushed["amount_fen"], 990);
    let twice = cancel(&mut u1, "c2", o1).await;
    assert_eq!(twice["error"], "not_cancellable");
    let st = u1.buy("q1", "A", 1).await;
    assert_eq!(
        st["status"], "cancelled",
        "a repeat of the req now says cancelled"
    );

    // The unit is back on sale; the waiting buyer gets it.
    let a3 = u3.buy("q2", "A", 1).await;
    assert_eq!(a3["ok"], true, "{a3}");
    // u1's allowance came back with the cancel (limit 1): refused for stock, not the limit.
    let a1b = u1.buy("q3", "A", 1).await;
    assert_eq!(a1b["error"], "sold_out", "{a1b}");

    // An operator cancel of an order already cancelled is a 409; of no order a 404.
    let (code, v) = s
        .request(
            "POST",
            &format!("/api/rooms/r/orders/{o1}/cancel"),
            Some(ADMIN),
            None,
        )
        .await;
    assert_eq!((code, v["error"].clone()), (409, json!("not_cancellable")));
    let (code, v) = s
        .request(
            "POST",
            "/api/rooms/r/orders/O999999/cancel",
            Some(ADMIN),
            None,
        )
        .await;
    assert_eq!((code, v["error"].clone()), (404, json!("unknown_order")));
    let o2 = a2["order"].as_str().unwrap();
    let v = s
        .admin("POST", &format!("/api/rooms/r/orders/{o2}/cancel"), None)
        .await;
    assert_eq!(v, json!({"order": o2, "status": "cancelled"}));

    // Audit: unpaid units are sold (held), and sold + left still equals the stock.
    let audit = s.audit("r").await;
    let a = sku_of(&audit, "A");
    assert_eq!(audit["consistent"], true, "{audit}");
    assert_eq!(
        (a["sold"].clone(), a["unpaid"].clone(), a["left"].clone()),
        (json!(1), json!(1), json!(1))
    );

    // Export: statuses and times; the change feed: every placement and move, in order.
    let export = s.export("r").await;
    let status: Vec<&str> = export
        .iter()
        .map(|o| o["status"].as_str().unwrap())
        .collect();
    assert_eq!(status, ["cancelled", "cancelled", "unpaid"]);
    assert!(export[0]["ended_at_ms"].as_i64().is_some());
    assert_eq!(export[2]["pay_by_ms"], a3["pay_by_ms"]);
    assert_eq!(export[2]["paid_at_ms"], Value::Null);
    let events = s.order_events("r").await;
    let seen: Vec<(u64, String, String)> = events
        .iter()
        .map(|e| {
            (
                e["event"].as_u64().unwrap(),
                e["order"].as_str().unwrap().to_owned(),
                e["status"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    let o3 = a3["order"].as_str().unwrap();
    let want: Vec<(u64, String, String)> = [
        (1, o1, "unpaid"),
        (2, o2, "unpaid"),
        (3, o1, "cancelled"),
        (4, o3, "unpaid"),
        (5, o2, "cancelled"),
    ]
    .into_iter()
    .map(|(n, o, st)| (n, o.to_owned(), st.to_owned()))
    .collect();
    assert_eq!(seen, want);
    assert_eq!(
        (events[2]["by"].clone(), events[4]["by"].clone()),
        (json!("buyer"), json!("operator"))
    );

    // The dashboard's figures say the same, as of the last event.
    let stats = s.stats_at("r", 3).await;
    let stats = if stats["event"].as_u64() == Some(5) {
        stats
    } else {
        let mut v = stats;
        eventually(WAIT, "stats reach event 5", async || {
            v = s.stats("r").await;
            v["event"] == 5
        })
        .await;
        v
    };
    assert_eq!(stats["gmv_fen"], 2970, "placed GMV counts every order");
    assert_eq!(stats["unpaid_fen"], 990);
    assert_eq!(stats["cancelled_fen"], 1980);
    assert_eq!(
        (stats["paid_gmv_fen"].clone(), stats["pay_rate"].clone()),
        (json!(0), json!(0.0))
    );
    let a = sku_of(&stats, "A");
    assert_eq!(
        (a["unpaid"].clone(), a["paid"].clone(), a["sold"].clone()),
        (json!(1), json!(0), json!(1))
    );
}

#[tokio::test]
async fn refunds_of_orders_paid_on_placement() {
    let s = TestServer::start().await;
    s.create_room("r").await;
    s.create_sku("r", "V", 500, 3, Some(1)).await;
    let mut u = s.buyer("r", "u1").await;
    let a = u.buy("q1", "V", 1).await;
    assert_eq!(
        (a["status"].clone(), a.get("pay_by_ms")),
        (json!("paid"), None),
        "{a}"
    );
    let o = a["order"].as_str().unwrap().to_owned();
    let (code, v) = s
        .request(
            "POST",
            &format!("/api/rooms/r/orders/{o}/cancel"),
            Some(ADMIN),
            None,
        )
        .await;
    assert_eq!(
        (code, v["error"].clone()),
        (409, json!("not_cancellable")),
        "paid is not cancellable"
    );
    let v = s
        .admin(
            "POST",
            &format!("/api/rooms/r/orders/{o}/refund"),
            Some(json!({"restock": true})),
        )
        .await;
    assert_eq!(v["status"], "refunded");
    let (code, v) = s
        .request(
            "POST",
            &format!("/api/rooms/r/orders/{o}/refund"),
            Some(ADMIN),
            Some(json!({"restock": true})),
        )
        .await;
    assert_eq!((code, v["error"].clone()), (409, json!("not_refundable")));
    let (code, _) = s
        .request(
            "POST",
            &format!("/api/rooms/r/orders/{o}/refund"),
            Some(ADMIN),
            Some(json!({"restok": true})),
        )
        .await;
    assert_eq!(code, 400, "a misspelt field is refused");
    // Restocked: the unit and the allowance are back.
    let b = u.buy("q2", "V", 1).await;
    assert_eq!(
        (b["ok"].clone(), b["left"].clone()),
        (json!(true), json!(2)),
        "{b}"
    );
    // Refunded without restock: the units stay sold.
    let ob = b["order"].as_str().unwrap();
    s.admin("POST", &format!("/api/rooms/r/orders/{ob}/refund"), None)
        .await;
    let audit = s.audit("r").await;
    let v = sku_of(&audit, "V");
    assert_eq!(
        (
            v["sold"].clone(),
            v["left"].clone(),
            v["consistent"].clone()
        ),
        (json!(1), json!(2), json!(true)),
        "{audit}"
    );
    let mut stats = s.stats("r").await;
    eventually(WAIT, "stats reach event 4", async || {
        stats = s.stats("r").await;
        stats["event"] == 4
    })
    .await;
    assert_eq!(stats["refunded_fen"], 1000);
    assert_eq!(stats["paid_gmv_fen"], 0, "paid less refunded");
    assert_eq!(stats["pay_rate"], 1.0, "both were paid");
    let points: u64 = stats["trend"]["points"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["paid_gmv_fen"].as_u64().unwrap())
        .sum();
    assert_eq!(
        points, 0,
        "the trend takes each refund off where its payment was counted"
    );
}

/// An order whose time to pay ran out while the hub was down expires before the hub serves;
/// one that runs out while it is up expires within a second of its `pay_by_ms`, and its
/// units go back on sale. Both stay expired over a restart.
#[tokio::test]
async fn unpaid_orders_expire_in_time_and_at_start() {
    let dir = support::temp_dir();
    let s = TestServer::start_in(&dir, Options::default()).await;
    s.create_room("r").await;
    s.create_sku_to_pay("r", "A", 100, 1, Some(1), 10).await;
    let mut u = s.buyer("r", "u1").await;
    let x = u.buy("q1", "A", 1).await;
    assert_eq!(x["status"], "unpaid", "{x}");
    let x_by = x["pay_by_ms"].as_i64().unwrap();
    drop(u);
    s.stop().await;
    // Down past the deadline. Not synchronisation: the hub is down, and the wait is the time
    // it must miss.
    tokio::time::sleep(Duration::from_millis((x_by - now_ms()).max(0) as u64 + 200)).await;
    let s = TestServer::start_in(&dir, Options::default()).await;
    let export = s.export("r").await;
    assert_eq!(
        export[0]["status"], "expired",
        "expired before the first request"
    );
    assert!(export[0]["ended_at_ms"].as_i64().unwrap() >= x_by);

    let mut u = s.buyer("r", "u1").await;
    let y = u.buy("q2", "A", 1).await;
    assert_eq!(
        y["ok"], true,
        "the expired unit and allowance are back: {y}"
    );
    let y_order = y["order"].as_str().unwrap().to_owned();
    let y_by = y["pay_by_ms"].as_i64().unwrap();
    let pushed = tokio::time::timeout(
        Duration::from_secs(15),
        u.push_where(|v| v["op"] == "order" && v["order"] == y_order.as_str()),
    )
    .await
    .expect("the expiry is pushed");
    assert_eq!(pushed["status"], "expired");
    let ended = s.export("r").await[1]["ended_at_ms"].as_i64().unwrap();
    assert!(
        (y_by..=y_by + 1000).contains(&ended),
        "expired at {ended}, pay_by_ms {y_by}"
    );
    let dir = s.stop().await;
    let s = TestServer::start_in(&dir, Options::default()).await;
    let statuses: Vec<Value> = s
        .export("r")
        .await
        .iter()
        .map(|o| o["status"].clone())
        .collect();
    assert_eq!(statuses, [json!("expired"), json!("expired")]);
    let audit = s.audit("r").await;
    assert_eq!(sku_of(&audit, "A")["left"], 1, "{audit}");
    assert_eq!(audit["consistent"], true);
}

#[tokio::test]
async fn the_contract_limits_of_pay_timeout() {
    let s = TestServer::start().await;
    s.create_room("r").await;
    for bad in [json!(9), json!(86_401), json!(-1), json!("60")] {
        let (code, v) = s
            .request(
                "PUT",
                "/api/rooms/r/skus/A",
                Some(ADMIN),
                Some(json!({"name": "a", "price_fen": 1, "stock": 1, "pay_timeout_s": bad})),
            )
            .await;
        assert_eq!(code, 400, "{bad}: {v}");
    }
    let v = s.create_sku("r", "B", 1, 1, None).await;
    assert_eq!(v["pay_timeout_s"], Value::Null);
}

/// Payment notices: every answer of docs/protocol.md §8, and bad notices change nothing.
#[tokio::test]
async fn payment_notices_pay_once_and_keep_late_payments() {
    let s = TestServer::start().await;
    s.create_room("r").await;
    s.create_room("other").await;
    s.create_sku_to_pay("r", "A", 990, 5, None, 60).await;
    let mut u = s.buyer("r", "u1").await;
    let mut orders = Vec::new();
    for n in 0..4 {
        let a = u.buy(&format!("q{n}"), "A", 1).await;
        assert_eq!(a["status"], "unpaid", "{a}");
        orders.push(a["order"].as_str().unwrap().to_owned());
    }
    let (o0, o1, o2, o3) = (&orders[0], &orders[1], &orders[2], &orders[3]);

    // Bad notices: each refused with its code, nothing changes.
    let body =
        json!({"order": o0, "room": "r", "payment_id": "p0", "amount_fen": 990, "paid_at_ms": 1})
            .to_string();
    let now = now_ms();
    let (code, v) = s.notice(body.as_bytes(), now, "wrong-secret").await;
    assert_eq!((code, v["error"].clone()), (401, json!("bad_signature")));
    let (code, v) = s
        .notice(body.as_bytes(), now - 301_000, support::PAYMENT_SECRET)
        .await;
    assert_eq!((code, v["error"].clone()), (401, json!("stale_timestamp")));
    let (code, v) = s.notice(b"{not json", now, support::PAYMENT_SECRET).await;
    assert_eq!((code, v["error"].clone()), (400, json!("bad_request")));
    let (code, _) = s
        .notice(&vec![b' '; 70 * 1024], now, support::PAYMENT_SECRET)
        .await;
    assert_eq!(code, 413, "a body over the limit");
    let unsigned = s
        .http
        .post(s.url("/api/payments"))
        .body(body.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(unsigned.status().as_u16(), 401);
    let (code, v) = s.pay("r", "O999999", "p0", 990).await;
    assert_eq!((code, v["error"].clone()), (404, json!("unknown_order")));
    let (code, v) = s.pay("other", o0, "p0", 990).await;
    assert_eq!(
        (code, v["error"].clone()),
        (404, json!("unknown_order")),
        "another room's order"
    );
    let (code, v) = s.pay("r", o0, "p0", 991).await;
    assert_eq!((code, v["error"].clone()), (409, json!("amount_mismatch")));
    assert_eq!(
        s.export("r").await[0]["status"],
        "unpaid",
        "nothing changed"
    );

    // Paid once; a repeat of the same payment is the same answer; its owner hears it.
    let (code, v) = s.pay("r", o0, "p0", 990).await;
    assert_eq!(
        (code, v.clone()),
        (200, json!({"order": o0, "status": "paid"}))
    );
    let (code, v) = s.pay("r", o0, "p0", 990).await;
    assert_eq!(
        (code, v["status"].clone()),
        (200, json!("paid")),
        "idempotent"
    );
    let pushed = u
        .push_where(|v| v["op"] == "order" && v["order"] == o0.as_str())
        .await;
    assert_eq!(pushed["status"], "paid");
    let (code, v) = s.pay("r", o1, "p0", 990).await;
    assert_eq!(
        (code, v["error"].clone()),
        (409, json!("payment_id_reused"))
    );

    // Late payments: kept on the order, counted once each.
    let (code, v) = s.pay("r", o0, "p0b", 990).await;
    assert_eq!((code, v["error"].clone()), (409, json!("already_paid")));
    let c = cancel(&mut u, "c1", o1).await;
    assert_eq!(c["ok"], true);
    let (code, v) = s.pay("r", o1, "p1", 990).await;
    assert_eq!((code, v["error"].clone()), (409, json!("order_cancelled")));
    let (code, _) = s.pay("r", o1, "p1", 990).await;
    assert_eq!(code, 409, "a repeat of a late payment answers the same");
    s.admin("POST", &format!("/api/rooms/r/orders/{o0}/refund"), None)
        .await;
    let (code, v) = s.pay("r", o0, "p0c", 990).await;
    assert_eq!(
        (code, v["error"].clone()),
        (409, json!("already_paid")),
        "refunded: already paid"
    );

    // Two notices for one order at once: exactly one pays it.
    let (a, b) = tokio::join!(s.pay("r", o2, "p2a", 990), s.pay("r", o2, "p2b", 990));
    let mut codes = [a.0, b.0];
    codes.sort();
    assert_eq!(codes, [200, 409], "{a:?} {b:?}");

    let export = s.export("r").await;
    let line = |o: &str| export.iter().find(|l| l["order"] == o).unwrap().clone();
    let l0 = line(o0);
    assert_eq!(
        (l0["status"].clone(), l0["payment_id"].clone()),
        (json!("refunded"), json!("p0"))
    );
    let late: Vec<&str> = l0["late_payments"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["payment_id"].as_str().unwrap())
        .collect();
    assert_eq!(late, ["p0b", "p0c"]);
    assert_eq!(line(o1)["late_payments"][0]["payment_id"], "p1");
    assert_eq!(line(o2)["status"], "paid");
    assert_eq!(line(o3)["status"], "unpaid");
    let events = s.order_events("r").await;
    let last = events.last().unwrap()["event"].as_u64().unwrap();
    let mut stats = s.stats("r").await;
    eventually(WAIT, "stats reach the last event", async || {
        stats = s.stats("r").await;
        stats["event"] == last
    })
    .await;
    assert_eq!(stats["late_payments"], 4, "p0b, p1, p0c and one of p2a/p2b");
    assert_eq!(stats["paid_gmv_fen"], 990, "o2 paid; o0 refunded");
    assert_eq!(stats["unpaid_fen"], 990, "o3");
    assert_eq!(stats["cancelled_fen"], 990);
    assert_eq!(stats["refunded_fen"], 990);
    assert_eq!(stats["paid_orders"], 1);
    let paid_events = events
        .iter()
        .filter(|e| e["status"] == "paid" && e.get("late_payment").is_none())
        .count();
    assert_eq!(paid_events, 2, "o0 and o2 were each paid once");
}

//! Security at the edges, against a real server: response headers, no CORS, a buyer can never
//! act as another user, and REST bodies out of bounds get a 400 naming the field.

mod support;

use serde_json::{json, Value};
use support::{Client, Options, TestServer, ADMIN, SECRET, VIEWER};

const SECURITY_HEADERS: [(&str, &str); 3] = [
    ("x-content-type-options", "nosniff"),
    ("x-frame-options", "DENY"),
    ("referrer-policy", "no-referrer"),
];

fn status(r: Result<Client, tokio_tungstenite::tungstenite::Error>) -> u16 {
    match r {
        Err(tokio_tungstenite::tungstenite::Error::Http(resp)) => resp.status().as_u16(),
        Err(e) => panic!("unexpected error {e}"),
        Ok(_) => 101,
    }
}

/// A token with hand-written claims, signed HS256 with the test secret.
fn token_with(claims: Value) -> String {
    jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        &claims,
        &jsonwebtoken::EncodingKey::from_secret(SECRET.as_bytes()),
    )
    .unwrap()
}

fn now_s() -> i64 {
    livehub::clock::now_ms() / 1000
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pages_and_api_answers_carry_the_security_headers() {
    let s = TestServer::start().await;
    let checks = [
        ("/", None, 200),
        ("/api/rooms", Some(VIEWER), 200),
        ("/api/rooms", None, 401),
        ("/healthz", None, 200),
    ];
    for (path, token, want) in checks {
        let mut rb = s.http.get(s.url(path));
        if let Some(t) = token {
            rb = rb.bearer_auth(t);
        }
        let r = rb.send().await.unwrap();
        assert_eq!(r.status().as_u16(), want, "{path}");
        let h = r.headers();
        let csp = h
            .get("content-security-policy")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_else(|| panic!("{path} has no CSP"));
        assert!(csp.contains("default-src 'self'"), "{path}: {csp}");
        assert!(csp.contains("frame-ancestors 'none'"), "{path}: {csp}");
        assert!(!csp.contains("unsafe-eval"), "{path}: {csp}");
        for (name, value) in SECURITY_HEADERS {
            assert_eq!(
                h.get(name).and_then(|v| v.to_str().ok()),
                Some(value),
                "{path}: {name}"
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cors_is_off_by_default() {
    let s = TestServer::start().await;
    let origin = "https://evil.example";
    let preflight = s
        .http
        .request(reqwest::Method::OPTIONS, s.url("/api/rooms"))
        .header("origin", origin)
        .header("access-control-request-method", "GET")
        .header("access-control-request-headers", "authorization")
        .send()
        .await
        .unwrap();
    let simple = s
        .http
        .get(s.url("/api/rooms"))
        .header("origin", origin)
        .bearer_auth(VIEWER)
        .send()
        .await
        .unwrap();
    assert_eq!(simple.status().as_u16(), 200);
    for r in [&preflight, &simple] {
        for name in [
            "access-control-allow-origin",
            "access-control-allow-credentials",
            "access-control-allow-headers",
            "access-control-allow-methods",
        ] {
            assert!(
                r.headers().get(name).is_none(),
                "{} answered with {name}",
                r.url()
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_buyer_can_never_act_as_another_user() {
    // --open-buyers on: the weakest setting, where ?user= alone is accepted.
    let s = TestServer::start_with(Options {
        open_buyers: true,
        ..Options::default()
    })
    .await;
    s.create_room("who").await;
    s.create_room("other").await;
    s.create_sku("who", "A1", 100, 10, None).await;
    let base = format!("ws://{}/ws/buy?room=who", s.addr);

    // A token's sub wins over ?user=, and the orders are the token's user's.
    let alice = livehub::auth::sign_buyer_token(SECRET, "alice", Some("who"), 600);
    let mut c = Client::connect(&format!("{base}&token={alice}&user=mallory"))
        .await
        .unwrap();
    assert_eq!(c.hello.as_ref().unwrap()["user"], "alice");
    assert_eq!(c.buy("w1", "A1", 1).await["ok"], true);
    let orders = s.export("who").await;
    assert_eq!(orders.len(), 1);
    assert_eq!(orders[0]["user"], "alice");

    // A token that fails is never replaced by ?user=, even with --open-buyers.
    let refused = [
        ("garbage".to_owned(), "not a JWT"),
        (
            livehub::auth::sign_buyer_token("wrong-secret", "alice", None, 600),
            "forged",
        ),
        (
            livehub::auth::sign_buyer_token(SECRET, "alice", Some("other"), 600),
            "bound to another room",
        ),
        (
            token_with(json!({"sub": "alice", "exp": now_s() - 600})),
            "expired",
        ),
        (
            token_with(json!({"sub": "alice", "exp": now_s() + 600, "nbf": now_s() + 600})),
            "not valid yet",
        ),
        (
            token_with(json!({"sub": "al ice", "exp": now_s() + 600})),
            "sub not an id",
        ),
    ];
    for (token, why) in &refused {
        assert_eq!(
            status(Client::connect(&format!("{base}&token={token}&user=mallory")).await),
            401,
            "{why}"
        );
    }
    // A room id outside the grammar is a 400 before any token is looked at.
    assert_eq!(
        status(Client::connect(&format!("ws://{}/ws/buy?room=a%20b&user=bob", s.addr)).await),
        400
    );
    assert_eq!(s.export("who").await.len(), 1, "no refused socket bought");

    // With --open-buyers off, ?user= alone is refused; a token still works.
    let closed = TestServer::start_with(Options {
        open_buyers: false,
        ..Options::default()
    })
    .await;
    closed.create_room("who").await;
    let base = format!("ws://{}/ws/buy?room=who", closed.addr);
    assert_eq!(
        status(Client::connect(&format!("{base}&user=bob")).await),
        401
    );
    let bob = livehub::auth::sign_buyer_token(SECRET, "bob", None, 600);
    let c = Client::connect(&format!("{base}&token={bob}&user=alice"))
        .await
        .unwrap();
    assert_eq!(c.hello.as_ref().unwrap()["user"], "bob");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rest_bodies_out_of_bounds_get_a_400_naming_the_field() {
    let s = TestServer::start().await;
    s.create_room("val").await;
    s.create_sku("val", "A1", 100, 10, None).await;
    let sku = "/api/rooms/val/skus/B1";
    let stock = "/api/rooms/val/skus/A1/stock";
    let room = "/api/rooms/val";
    let long_name = "名".repeat(201);
    let cases: Vec<(&str, &str, Value, &str)> = vec![
        // SKU bodies
        (
            "PUT",
            sku,
            json!({"name":"n","price_fen":-1,"stock":1}),
            "price_fen",
        ),
        (
            "PUT",
            sku,
            json!({"name":"n","price_fen":1_000_000_000_001u64,"stock":1}),
            "price_fen",
        ),
        (
            "PUT",
            sku,
            json!({"name":"n","price_fen":"100","stock":1}),
            "price_fen",
        ),
        (
            "PUT",
            sku,
            json!({"name":"n","price_fen":1,"stock":-1}),
            "stock",
        ),
        (
            "PUT",
            sku,
            json!({"name":"n","price_fen":1,"stock":1_000_000_001u64}),
            "stock",
        ),
        (
            "PUT",
            sku,
            json!({"name":"n","price_fen":1,"stock":1,"limit_per_user":0}),
            "limit_per_user",
        ),
        (
            "PUT",
            sku,
            json!({"name":"n","price_fen":1,"stock":1,"limit_per_user":1_000_000_001u64}),
            "limit_per_user",
        ),
        (
            "PUT",
            sku,
            json!({"name":long_name,"price_fen":1,"stock":1}),
            "name",
        ),
        (
            "PUT",
            sku,
            json!({"name":"","price_fen":1,"stock":1}),
            "name",
        ),
        (
            "PUT",
            sku,
            json!({"name":"n","price_fen":1,"stock":1,"opens_at_ms":-5}),
            "opens_at_ms",
        ),
        (
            "PUT",
            sku,
            json!({"name":"n","price_fen":1,"stock":1,"closes_at_ms":253_402_300_800_000i64}),
            "closes_at_ms",
        ),
        (
            "PUT",
            sku,
            json!({"name":"n","price_fen":1,"stock":1,"opens_at_ms":2000,"closes_at_ms":2000}),
            "closes_at_ms",
        ),
        (
            "PUT",
            sku,
            json!({"name":"n","price_fen":1,"stock":1,"opens_at_ms":3000,"closes_at_ms":2000}),
            "closes_at_ms",
        ),
        ("PUT", sku, json!(["n", 1, 1]), "invalid JSON body"),
        (
            "PUT",
            sku,
            json!({"name":"n","price_fen":1,"stok":100}),
            "unknown field `stok`",
        ),
        // Stock bodies
        ("POST", stock, json!({"delta":0}), "delta"),
        ("POST", stock, json!({"delta":1_000_000_001i64}), "delta"),
        ("POST", stock, json!({"delta":-1_000_000_001i64}), "delta"),
        ("POST", stock, json!({"delta":1.5}), "delta"),
        ("POST", stock, json!({"delta":"5"}), "delta"),
        ("POST", stock, json!({}), "delta"),
        // Room bodies
        ("PUT", room, json!({"title": "t".repeat(201)}), "title"),
        ("PUT", room, json!({"title": 5}), "title"),
        // Path ids
        ("PUT", "/api/rooms/bad%20room", json!({"title":"t"}), "room"),
        (
            "PUT",
            "/api/rooms/val/skus/b%2Fc",
            json!({"name":"n","price_fen":1,"stock":1}),
            "sku",
        ),
        (
            "POST",
            "/api/rooms/val/skus/A%3BB/stock",
            json!({"delta":1}),
            "sku",
        ),
    ];
    for (method, path, body, field) in &cases {
        let (st, v) = s
            .request(method, path, Some(ADMIN), Some(body.clone()))
            .await;
        assert_eq!(st, 400, "{method} {path} {body} -> {v}");
        assert_eq!(v["error"], "bad_request", "{method} {path} {body} -> {v}");
        let detail = v["detail"].as_str().unwrap_or_default();
        assert!(detail.contains(field), "{method} {path} {body}: {detail}");
    }
    // Bodies that are not one JSON value at all.
    for raw in [
        "",
        "{",
        "not json",
        r#"{"delta":5} {"delta":6}"#,
        r#"{"delta":5}x"#,
    ] {
        let r = s
            .http
            .post(s.url(stock))
            .bearer_auth(ADMIN)
            .body(raw)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), 400, "{raw:?}");
        let v: Value = r.json().await.unwrap();
        assert!(
            v["detail"]
                .as_str()
                .unwrap()
                .starts_with("invalid JSON body"),
            "{raw:?}: {v}"
        );
    }
    // Nothing above changed anything.
    let view = s.admin("PUT", room, Some(json!({"title": "still"}))).await;
    assert_eq!(view["skus"].as_array().unwrap().len(), 1);
    assert_eq!(view["skus"][0]["stock_total"], 10);
    // The bounds themselves are accepted.
    let edge = s
        .admin(
            "PUT",
            sku,
            Some(json!({"name": "名".repeat(200), "price_fen": 1_000_000_000_000u64, "stock": 1_000_000_000u64,
                "limit_per_user": 1_000_000_000u64, "opens_at_ms": 0, "closes_at_ms": 253_402_300_799_999i64})),
        )
        .await;
    assert_eq!(edge["price_fen"], 1_000_000_000_000u64);
    assert_eq!(edge["stock_total"], 1_000_000_000u64);
    let free = s
        .admin(
            "PUT",
            "/api/rooms/val/skus/F1",
            Some(json!({"name":"free","price_fen":0,"stock":0})),
        )
        .await;
    assert_eq!(free["state"], "sold_out");
    // A SKU state read back goes in again as a body: its own fields are not unknown ones.
    let again = s
        .admin("PUT", "/api/rooms/val/skus/F1", Some(free.clone()))
        .await;
    assert_eq!(again, free);
    let withdrawn = s.admin("POST", stock, Some(json!({"delta": -10}))).await;
    assert_eq!(withdrawn["left"], 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn paths_methods_and_plain_gets_nothing_serves_are_json_errors() {
    let s = TestServer::start().await;
    s.create_room("j").await;
    let checks = [
        ("GET", "/no/such/page", None, 404, "not_found"),
        // Not a GET: the static files' own 405 would have an empty body.
        ("POST", "/no/such/page", None, 404, "not_found"),
        ("GET", "/api/nothing", Some(ADMIN), 404, "not_found"),
        (
            "DELETE",
            "/api/rooms/j",
            Some(ADMIN),
            405,
            "method_not_allowed",
        ),
        (
            "POST",
            "/api/rooms",
            Some(VIEWER),
            405,
            "method_not_allowed",
        ),
        ("GET", "/ws/buy?room=j&user=u1", None, 400, "bad_request"),
        ("GET", "/ws/buy?room=nope&user=u1", None, 404, "not_found"),
        (
            "GET",
            &format!("/ws/dashboard?room=nope&token={VIEWER}"),
            None,
            404,
            "not_found",
        ),
        (
            "GET",
            &format!("/ws/dashboard?room=j&token={VIEWER}"),
            None,
            400,
            "bad_request",
        ),
    ];
    for (method, path, token, want, code) in checks {
        let mut rb = s.http.request(method.parse().unwrap(), s.url(path));
        if let Some(t) = token {
            rb = rb.bearer_auth(t);
        }
        let r = rb.send().await.unwrap();
        assert_eq!(r.status().as_u16(), want, "{method} {path}");
        if want == 405 {
            assert!(
                r.headers().contains_key("allow"),
                "{method} {path}: no Allow"
            );
        }
        let body: Value = r
            .json()
            .await
            .unwrap_or_else(|e| panic!("{method} {path}: not JSON: {e}"));
        assert_eq!(body["error"], code, "{method} {path}: {body}");
        assert!(body["detail"].is_string(), "{method} {path}: {body}");
    }
    // A plain GET with a bad token is still refused for the token.
    let r = s
        .http
        .get(s.url("/ws/dashboard?room=j&token=nope"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 401);
}

//! The loadtest's invariant checks must FAIL a run when the server breaks them.
//!
//! Each case starts an in-process fake livehub (axum, on 127.0.0.1:0) that speaks the part of
//! docs/protocol.md that `livehub-loadtest spike` and `steady` use: `PUT` room and SKU, `POST .../open`
//! with its `sale` push, `/stats`, the NDJSON orders export, `/audit`, and `/ws/buy` (open buyers)
//! with `hello`, `buy` → `ack` and `ping` → `pong`. The fake is broken in one chosen way; the
//! real binary runs against it with small numbers, and the case asserts exit code 1 and exactly
//! which checks failed. The control cases run the same fake unbroken and must exit 0 with every
//! check passing: that is what shows the fake is faithful, so that a failure in a broken case
//! comes from the breakage and nothing else.
//!
//! Every case is bounded: the tool gets `--max-seconds 20`, the child process is killed after
//! 60 s at the latest, and every socket loop of the fake is bounded in frames and time.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::body::Bytes;
use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use axum::serve::ListenerExt as _;
use axum::{Json, Router};
use serde_json::{json, Value};
use tokio::sync::broadcast;

const ADMIN_TOKEN: &str = "a";
const VIEWER_TOKEN: &str = "v";
/// Most frames one fake buyer socket handles, and how long it may live.
const MAX_FRAMES_PER_SOCKET: usize = 100_000;
const SOCKET_LIFETIME: Duration = Duration::from_secs(60);
/// Hard bound on one run of the tool (its own `--max-seconds` is 20).
const CHILD_TIMEOUT: Duration = Duration::from_secs(60);

// ---------------------------------------------------------------------------------------------
// The fake server
// ---------------------------------------------------------------------------------------------

/// How the fake breaks the protocol's rules.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Breakage {
    /// None: a faithful server.
    Faithful,
    /// Every buy is acked ok, past the stock too. The export, stats and audit all show exactly
    /// what was acked (the audit honestly reports `sold` over `stock_total`).
    Oversell,
    /// The room's first order is acked ok but left out of the orders export. Stats and audit
    /// still count it (they come from the server's in-memory figures).
    LostOrder,
    /// The room's second order gets the first order's id, in its ack and in the export.
    DuplicateOrderId,
}

struct Sku {
    name: String,
    price_fen: u64,
    stock_total: u64,
    sold: u64,
    limit_per_user: Option<u64>,
    opens_at_ms: Option<i64>,
    closes_at_ms: Option<i64>,
}

impl Sku {
    fn left(&self) -> u64 {
        self.stock_total.saturating_sub(self.sold)
    }

    fn state(&self, now: i64) -> &'static str {
        if self.closes_at_ms.is_some_and(|c| now >= c) {
            "closed"
        } else if self.opens_at_ms.is_some_and(|o| now < o) {
            "scheduled"
        } else if self.left() == 0 {
            "sold_out"
        } else {
            "open"
        }
    }

    fn json(&self, id: &str, now: i64) -> Value {
        json!({
            "sku": id,
            "name": self.name,
            "price_fen": self.price_fen,
            "stock_total": self.stock_total,
            "sold": self.sold,
            "left": self.left(),
            "limit_per_user": self.limit_per_user,
            "opens_at_ms": self.opens_at_ms,
            "closes_at_ms": self.closes_at_ms,
            "state": self.state(now),
        })
    }
}

struct Order {
    seq: u64,
    order: String,
    sku: String,
    user: String,
    req: String,
    qty: u64,
    price_fen: u64,
    amount_fen: u64,
    ts_ms: i64,
    /// False for the order a `LostOrder` fake leaves out of the export.
    exported: bool,
}

struct Room {
    title: String,
    skus: BTreeMap<String, Sku>,
    orders: Vec<Order>,
    /// (user, req) → the ok ack it got (buys are idempotent on it).
    acks: HashMap<(String, String), String>,
    /// (user, sku) → units bought.
    bought: HashMap<(String, String), u64>,
    /// `sale` pushes to every buyer socket of the room.
    push: broadcast::Sender<String>,
}

struct Fake {
    breakage: Breakage,
    rooms: Mutex<HashMap<String, Room>>,
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

fn error(status: StatusCode, code: &str, detail: &str) -> Response {
    (status, Json(json!({"error": code, "detail": detail}))).into_response()
}

/// `Authorization: Bearer` with the admin token (or, when `viewer_ok`, the viewer token).
#[allow(clippy::result_large_err)] // a test server's early return, not a hot path
fn authorized(h: &HeaderMap, viewer_ok: bool) -> Result<(), Response> {
    let token = h
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    match token {
        Some(ADMIN_TOKEN) => Ok(()),
        Some(VIEWER_TOKEN) if viewer_ok => Ok(()),
        _ => Err(error(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "no or bad token",
        )),
    }
}

fn no_room(room: &str) -> Response {
    error(
        StatusCode::NOT_FOUND,
        "unknown_room",
        &format!("no room {room}"),
    )
}

fn reject(req: &str, sku: &str, code: &str, left: Option<u64>) -> String {
    let mut a = json!({"op": "ack", "req": req, "ok": false, "error": code, "sku": sku});
    if let Some(l) = left {
        a["left"] = json!(l);
    }
    a.to_string()
}

fn error_frame(detail: &str, req: Option<&str>) -> String {
    let mut e = json!({"op": "error", "error": "bad_request", "detail": detail});
    if let Some(r) = req {
        e["req"] = json!(r);
    }
    e.to_string()
}

impl Fake {
    /// The answer to one text frame of a buyer socket.
    fn frame(&self, room: &str, user: &str, text: &str) -> String {
        let Ok(v) = serde_json::from_str::<Value>(text) else {
            return error_frame("not JSON", None);
        };
        let req = v.get("req").and_then(Value::as_str);
        match v.get("op").and_then(Value::as_str) {
            Some("ping") => json!({"op": "pong", "server_time_ms": now_ms()}).to_string(),
            Some("buy") => {
                let (Some(req), Some(sku), Some(qty)) = (
                    req,
                    v.get("sku").and_then(Value::as_str),
                    v.get("qty").and_then(Value::as_u64).filter(|q| *q >= 1),
                ) else {
                    return error_frame("a buy needs req, sku and qty >= 1", req);
                };
                self.buy(room, user, req, sku, qty)
            }
            Some("status") => {
                let Some(req) = req else {
                    return error_frame("status needs req", None);
                };
                let rooms = self.rooms.lock().unwrap();
                rooms
                    .get(room)
                    .and_then(|r| r.acks.get(&(user.to_owned(), req.to_owned())))
                    .cloned()
                    .unwrap_or_else(|| {
                        json!({"op": "ack", "req": req, "ok": false, "error": "unknown_request"})
                            .to_string()
                    })
            }
            _ => error_frame("unknown op", req),
        }
    }

    fn buy(&self, room: &str, user: &str, req: &str, sku: &str, qty: u64) -> String {
        let mut rooms = self.rooms.lock().unwrap();
        let Some(r) = rooms.get_mut(room) else {
            return reject(req, sku, "unavailable", None);
        };
        let key = (user.to_owned(), req.to_owned());
        if let Some(a) = r.acks.get(&key) {
            return a.clone();
        }
        let now = now_ms();
        let Some(s) = r.skus.get_mut(sku) else {
            return reject(req, sku, "unknown_sku", None);
        };
        let left = s.left();
        match s.state(now) {
            "scheduled" => return reject(req, sku, "not_open", Some(left)),
            "closed" => return reject(req, sku, "closed", Some(left)),
            _ => {}
        }
        let bought = r
            .bought
            .entry((user.to_owned(), sku.to_owned()))
            .or_default();
        if s.limit_per_user.is_some_and(|l| *bought + qty > l) {
            return reject(req, sku, "limit_exceeded", Some(left));
        }
        if self.breakage != Breakage::Oversell {
            if left == 0 {
                return reject(req, sku, "sold_out", Some(0));
            }
            if left < qty {
                return reject(req, sku, "insufficient_stock", Some(left));
            }
        }
        *bought += qty;
        s.sold += qty;
        let seq = r.orders.len() as u64 + 1;
        let order = if self.breakage == Breakage::DuplicateOrderId && seq == 2 {
            "O1".to_owned()
        } else {
            format!("O{seq}")
        };
        let amount_fen = s.price_fen * qty;
        let ack = json!({
            "op": "ack", "req": req, "ok": true, "order": order, "sku": sku, "qty": qty,
            "amount_fen": amount_fen, "left": s.left(),
        })
        .to_string();
        r.orders.push(Order {
            seq,
            order,
            sku: sku.to_owned(),
            user: user.to_owned(),
            req: req.to_owned(),
            qty,
            price_fen: s.price_fen,
            amount_fen,
            ts_ms: now,
            exported: !(self.breakage == Breakage::LostOrder && seq == 1),
        });
        r.acks.insert(key, ack.clone());
        ack
    }
}

type Shared = State<Arc<Fake>>;

async fn put_room(
    State(f): Shared,
    Path(room): Path<String>,
    h: HeaderMap,
    body: Bytes,
) -> Response {
    if let Err(e) = authorized(&h, false) {
        return e;
    }
    let b: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let title = b.get("title").and_then(Value::as_str).unwrap_or("");
    let mut rooms = f.rooms.lock().unwrap();
    let r = rooms.entry(room.clone()).or_insert_with(|| Room {
        title: String::new(),
        skus: BTreeMap::new(),
        orders: Vec::new(),
        acks: HashMap::new(),
        bought: HashMap::new(),
        push: broadcast::channel(64).0,
    });
    r.title = title.to_owned();
    Json(json!({"room": room, "title": r.title})).into_response()
}

async fn put_sku(
    State(f): Shared,
    Path((room, sku)): Path<(String, String)>,
    h: HeaderMap,
    body: Bytes,
) -> Response {
    if let Err(e) = authorized(&h, false) {
        return e;
    }
    let Ok(b) = serde_json::from_slice::<Value>(&body) else {
        return error(StatusCode::BAD_REQUEST, "bad_request", "body is not JSON");
    };
    let Some(price_fen) = b.get("price_fen").and_then(Value::as_u64) else {
        return error(StatusCode::BAD_REQUEST, "bad_request", "price_fen");
    };
    let name = b.get("name").and_then(Value::as_str).unwrap_or(&sku);
    let limit_per_user = b.get("limit_per_user").and_then(Value::as_u64);
    let opens_at_ms = b.get("opens_at_ms").and_then(Value::as_i64);
    let closes_at_ms = b.get("closes_at_ms").and_then(Value::as_i64);
    let mut rooms = f.rooms.lock().unwrap();
    let Some(r) = rooms.get_mut(&room) else {
        return no_room(&room);
    };
    if let Some(s) = r.skus.get_mut(&sku) {
        // An update: `stock` is ignored.
        s.name = name.to_owned();
        s.price_fen = price_fen;
        s.limit_per_user = limit_per_user;
        s.opens_at_ms = opens_at_ms;
        s.closes_at_ms = closes_at_ms;
    } else {
        let Some(stock) = b.get("stock").and_then(Value::as_u64) else {
            return error(StatusCode::BAD_REQUEST, "bad_request", "stock");
        };
        r.skus.insert(
            sku.clone(),
            Sku {
                name: name.to_owned(),
                price_fen,
                stock_total: stock,
                sold: 0,
                limit_per_user,
                opens_at_ms,
                closes_at_ms,
            },
        );
    }
    Json(r.skus[&sku].json(&sku, now_ms())).into_response()
}

async fn open_sale(
    State(f): Shared,
    Path((room, sku)): Path<(String, String)>,
    h: HeaderMap,
) -> Response {
    if let Err(e) = authorized(&h, false) {
        return e;
    }
    let now = now_ms();
    let mut rooms = f.rooms.lock().unwrap();
    let Some(r) = rooms.get_mut(&room) else {
        return no_room(&room);
    };
    let Some(s) = r.skus.get_mut(&sku) else {
        return error(StatusCode::NOT_FOUND, "unknown_sku", &sku);
    };
    s.opens_at_ms = Some(now);
    if s.closes_at_ms.is_some_and(|c| c <= now) {
        s.closes_at_ms = None;
    }
    let push = json!({
        "op": "sale", "sku": sku, "state": s.state(now),
        "opens_at_ms": s.opens_at_ms, "closes_at_ms": s.closes_at_ms,
    });
    // No receiver (no buyer connected) is not an error.
    let _ = r.push.send(push.to_string());
    Json(s.json(&sku, now)).into_response()
}

async fn stats(State(f): Shared, Path(room): Path<String>, h: HeaderMap) -> Response {
    if let Err(e) = authorized(&h, true) {
        return e;
    }
    let now = now_ms();
    let rooms = f.rooms.lock().unwrap();
    let Some(r) = rooms.get(&room) else {
        return no_room(&room);
    };
    let gmv_fen: u64 = r.orders.iter().map(|o| o.amount_fen).sum();
    let units: u64 = r.orders.iter().map(|o| o.qty).sum();
    let orders = r.orders.len() as u64;
    let buyers = r.orders.iter().map(|o| &o.user).collect::<HashSet<_>>();
    let skus: Vec<Value> = r
        .skus
        .iter()
        .map(|(id, s)| {
            let mut v = s.json(id, now);
            v["gmv_fen"] = json!(r
                .orders
                .iter()
                .filter(|o| o.sku == *id)
                .map(|o| o.amount_fen)
                .sum::<u64>());
            v
        })
        .collect();
    Json(json!({
        "op": "snapshot",
        "room": room,
        "seq": r.orders.last().map_or(0, |o| o.seq),
        "ts_ms": now,
        "gmv_fen": gmv_fen,
        "orders": orders,
        "units": units,
        "buyers": buyers.len(),
        "viewers": 0,
        "peak_viewers": 0,
        "unique_viewers": 0,
        "aov_fen": gmv_fen.checked_div(orders).unwrap_or(0),
        "conversion": 0,
        "gpm_fen": 0,
        "rejected": {},
        "latency_us": {"p50": 0, "p90": 0, "p99": 0, "p999": 0, "max": 0},
        "skus": skus,
        "top_referrers": [],
        "trend": {"interval_ms": 1000, "points": []},
    }))
    .into_response()
}

async fn export(
    State(f): Shared,
    Path(room): Path<String>,
    Query(q): Query<HashMap<String, String>>,
    h: HeaderMap,
) -> Response {
    if let Err(e) = authorized(&h, false) {
        return e;
    }
    let num = |k: &str, default: u64| q.get(k).map_or(Some(default), |v| v.parse::<u64>().ok());
    let (Some(after), Some(limit)) = (num("after_seq", 0), num("limit", 1000)) else {
        return error(StatusCode::BAD_REQUEST, "bad_request", "after_seq / limit");
    };
    if !(1..=10_000).contains(&limit) {
        return error(StatusCode::BAD_REQUEST, "bad_request", "limit is 1..=10000");
    }
    let rooms = f.rooms.lock().unwrap();
    let Some(r) = rooms.get(&room) else {
        return no_room(&room);
    };
    let mut body = String::new();
    for o in r
        .orders
        .iter()
        .filter(|o| o.exported && o.seq > after)
        .take(limit as usize)
    {
        let line = json!({
            "seq": o.seq, "order": o.order, "room": room, "sku": o.sku, "user": o.user,
            "req": o.req, "qty": o.qty, "price_fen": o.price_fen, "amount_fen": o.amount_fen,
            "ref": null, "ts_ms": o.ts_ms,
        });
        body.push_str(&line.to_string());
        body.push('\n');
    }
    ([(header::CONTENT_TYPE, "application/x-ndjson")], body).into_response()
}

async fn audit(State(f): Shared, Path(room): Path<String>, h: HeaderMap) -> Response {
    if let Err(e) = authorized(&h, true) {
        return e;
    }
    let rooms = f.rooms.lock().unwrap();
    let Some(r) = rooms.get(&room) else {
        return no_room(&room);
    };
    let skus: Vec<Value> = r
        .skus
        .iter()
        .map(|(id, s)| {
            // `sold` summed from the orders (a lost order is lost from the export only).
            let sold: u64 = r
                .orders
                .iter()
                .filter(|o| o.sku == *id)
                .map(|o| o.qty)
                .sum();
            let consistent = sold + s.left() == s.stock_total && sold <= s.stock_total;
            json!({
                "sku": id, "stock_total": s.stock_total, "sold": sold, "left": s.left(),
                "consistent": consistent,
            })
        })
        .collect();
    let consistent = skus.iter().all(|s| s["consistent"] == true);
    Json(json!({"room": room, "consistent": consistent, "skus": skus})).into_response()
}

async fn ws_buy(
    State(f): Shared,
    Query(q): Query<HashMap<String, String>>,
    ws: WebSocketUpgrade,
) -> Response {
    // `--open-buyers` only: this fake signs and checks no JWTs.
    let (Some(room), Some(user)) = (q.get("room").cloned(), q.get("user").cloned()) else {
        return error(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "this fake takes ?room=&user= only",
        );
    };
    let (hello, pushes) = {
        let rooms = f.rooms.lock().unwrap();
        let Some(r) = rooms.get(&room) else {
            return no_room(&room);
        };
        let now = now_ms();
        let skus: Vec<Value> = r.skus.iter().map(|(id, s)| s.json(id, now)).collect();
        let hello = json!({
            "op": "hello", "room": room, "user": user, "server_time_ms": now, "skus": skus,
        });
        // Subscribed before the hello goes out, so no `sale` push after it can be missed.
        (hello.to_string(), r.push.subscribe())
    };
    ws.on_upgrade(move |socket| buyer_socket(f, room, user, socket, hello, pushes))
}

async fn buyer_socket(
    f: Arc<Fake>,
    room: String,
    user: String,
    mut ws: WebSocket,
    hello: String,
    mut pushes: broadcast::Receiver<String>,
) {
    if ws.send(Message::text(hello)).await.is_err() {
        return;
    }
    let until = tokio::time::Instant::now() + SOCKET_LIFETIME;
    for _ in 0..MAX_FRAMES_PER_SOCKET {
        let out = tokio::select! {
            m = ws.recv() => match m {
                Some(Ok(Message::Text(t))) => f.frame(&room, &user, t.as_str()),
                Some(Ok(Message::Binary(_))) => error_frame("binary frame", None),
                Some(Ok(Message::Ping(_) | Message::Pong(_))) => continue,
                Some(Ok(Message::Close(_)) | Err(_)) | None => break,
            },
            p = pushes.recv() => match p {
                Ok(frame) => frame,
                Err(broadcast::error::RecvError::Lagged(_)) => continue,
                Err(broadcast::error::RecvError::Closed) => break,
            },
            // Not synchronisation: the fake's limit on a socket's life, as the loop's bound
            // limits its frames.
            _ = tokio::time::sleep_until(until) => break,
        };
        if ws.send(Message::text(out)).await.is_err() {
            break;
        }
    }
}

/// Starts a fake livehub on 127.0.0.1:0; it runs until the test's runtime ends.
async fn start_fake(breakage: Breakage) -> SocketAddr {
    let fake = Arc::new(Fake {
        breakage,
        rooms: Mutex::new(HashMap::new()),
    });
    let app = Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route("/api/rooms/{room}", put(put_room))
        .route("/api/rooms/{room}/skus/{sku}", put(put_sku))
        .route("/api/rooms/{room}/skus/{sku}/open", post(open_sale))
        .route("/api/rooms/{room}/stats", get(stats))
        .route("/api/rooms/{room}/orders", get(export))
        .route("/api/rooms/{room}/audit", get(audit))
        .route("/ws/buy", get(ws_buy))
        .with_state(fake);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind 127.0.0.1:0");
    let addr = listener.local_addr().expect("local addr");
    let listener = listener.tap_io(|tcp| {
        let _ = tcp.set_nodelay(true);
    });
    tokio::spawn(async move {
        axum::serve(listener, app).await.expect("fake livehub");
    });
    addr
}

// ---------------------------------------------------------------------------------------------
// Running the tool
// ---------------------------------------------------------------------------------------------

struct Run {
    code: Option<i32>,
    /// The `--json` summary.
    summary: Value,
    stdout: String,
    stderr: String,
}

impl Run {
    fn checks(&self) -> BTreeMap<String, bool> {
        self.summary["checks"]
            .as_array()
            .map(|a| {
                a.iter()
                    .map(|c| {
                        (
                            c["name"].as_str().unwrap_or("?").to_owned(),
                            c["ok"].as_bool().unwrap_or(false),
                        )
                    })
                    .collect()
            })
            .unwrap_or_default()
    }

    fn failed(&self) -> BTreeSet<String> {
        self.checks()
            .into_iter()
            .filter(|(_, ok)| !ok)
            .map(|(n, _)| n)
            .collect()
    }

    fn detail(&self, check: &str) -> String {
        self.summary["checks"]
            .as_array()
            .and_then(|a| a.iter().find(|c| c["name"] == check))
            .and_then(|c| c["detail"].as_str())
            .unwrap_or("")
            .to_owned()
    }

    /// Everything the tool printed, for assertion messages.
    fn dump(&self) -> String {
        format!(
            "exit code {:?}\n--- stdout ---\n{}\n--- stderr ---\n{}",
            self.code, self.stdout, self.stderr
        )
    }
}

/// Runs `livehub-loadtest` with `args` against the fake at `addr`.
async fn loadtest(addr: SocketAddr, args: &[&str]) -> Run {
    let url = format!("http://{addr}");
    let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_livehub-loadtest"));
    cmd.args(args)
        .args(["--url", &url, "--admin-token", ADMIN_TOKEN])
        .args(["--viewer-token", VIEWER_TOKEN, "--open-buyers"])
        .args(["--max-seconds", "20", "--no-progress", "--json"])
        // Flags only: nothing from the environment (a buyer secret there would win over
        // --open-buyers).
        .env_remove("LIVEHUB_URL")
        .env_remove("LIVEHUB_ADMIN_TOKEN")
        .env_remove("LIVEHUB_VIEWER_TOKEN")
        .env_remove("LIVEHUB_BUYER_SECRET")
        .stdin(std::process::Stdio::null())
        .kill_on_drop(true);
    let out = tokio::time::timeout(CHILD_TIMEOUT, cmd.output())
        .await
        .expect("livehub-loadtest ran over 60 s")
        .expect("livehub-loadtest starts");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    let summary = serde_json::from_str(stdout.trim()).unwrap_or(Value::Null);
    let run = Run {
        code: out.status.code(),
        summary,
        stdout,
        stderr,
    };
    assert!(
        run.summary.is_object(),
        "no JSON summary on stdout\n{}",
        run.dump()
    );
    run
}

/// A spike of 50 buyers on a stock of 10.
async fn spike(breakage: Breakage) -> Run {
    let addr = start_fake(breakage).await;
    loadtest(addr, &["spike", "--buyers", "50", "--stock", "10"]).await
}

/// An open-loop steady load: 4 connections, 100 buys/s in total, for 1 s.
async fn steady(breakage: Breakage) -> Run {
    let addr = start_fake(breakage).await;
    let args = [
        "steady",
        "--connections",
        "4",
        "--rate",
        "100",
        "--duration",
        "1s",
    ];
    loadtest(addr, &args).await
}

/// Checks every spike and steady run must report (so that no case passes for lack of a check).
const CORE_CHECKS: [&str; 12] = [
    "unique_order_ids",
    "acked_units_within_stock",
    "export_order_ids_unique",
    "acked_orders_in_export",
    "export_has_only_acked_orders",
    "exported_units_within_stock",
    "stats_match_orders",
    "audit_consistent",
    "all_connections_established",
    "no_unexpected_disconnects",
    "server_frames_as_expected",
    "within_max_seconds",
];

fn assert_reports_core_checks(run: &Run, extra: &[&str]) {
    let checks = run.checks();
    for c in CORE_CHECKS.iter().chain(extra) {
        assert!(checks.contains_key(*c), "check {c} missing\n{}", run.dump());
    }
}

/// The run failed (exit 1) and the checks that failed are exactly `expected`, each named on
/// stderr as `FAILED <check>: ...` and in the summary's `problems`.
fn assert_failed_exactly(run: &Run, expected: &[&str]) {
    assert_eq!(run.code, Some(1), "expected exit 1\n{}", run.dump());
    assert_eq!(run.summary["ok"], false, "{}", run.dump());
    let want: BTreeSet<String> = expected.iter().map(|s| s.to_string()).collect();
    assert_eq!(run.failed(), want, "failed checks\n{}", run.dump());
    let problems = run.summary["problems"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    for c in expected {
        assert!(
            run.stderr.contains(&format!("FAILED {c}: ")),
            "stderr does not name {c}\n{}",
            run.dump()
        );
        assert!(
            problems
                .iter()
                .any(|p| p.as_str().is_some_and(|p| p.starts_with(&format!("{c}: ")))),
            "problems do not name {c}\n{}",
            run.dump()
        );
    }
}

// ---------------------------------------------------------------------------------------------
// The cases
// ---------------------------------------------------------------------------------------------

/// Control: the unbroken fake passes every check of a spike, and sells exactly the stock.
#[tokio::test]
async fn faithful_fake_passes_spike() {
    let run = spike(Breakage::Faithful).await;
    assert_eq!(run.code, Some(0), "expected exit 0\n{}", run.dump());
    assert_eq!(run.summary["ok"], true, "{}", run.dump());
    assert!(run.failed().is_empty(), "{}", run.dump());
    assert_reports_core_checks(&run, &["sold_as_expected"]);
    let buys = &run.summary["livehub"]["buys"];
    assert_eq!(buys["sent"], 50, "{}", run.dump());
    assert_eq!(buys["ok"], 10, "{}", run.dump());
    assert_eq!(buys["rejections"]["sold_out"], 40, "{}", run.dump());
    assert!(!run.stderr.contains("FAILED"), "{}", run.dump());
}

/// Control: the unbroken fake passes every check of a steady load.
#[tokio::test]
async fn faithful_fake_passes_steady() {
    let run = steady(Breakage::Faithful).await;
    assert_eq!(run.code, Some(0), "expected exit 0\n{}", run.dump());
    assert_eq!(run.summary["ok"], true, "{}", run.dump());
    assert!(run.failed().is_empty(), "{}", run.dump());
    assert_reports_core_checks(&run, &[]);
    let buys = &run.summary["livehub"]["buys"];
    let sent = buys["sent"].as_u64().unwrap_or(0);
    assert!(sent >= 10, "too few buys sent\n{}", run.dump());
    assert_eq!(buys["ok"], sent, "{}", run.dump());
    // The open loop also dates each answer by its arrival: never later than by the read. (The
    // kernel may stamp a connection's first reads not yet, so not every ack need be there.)
    let (read, arrival) = (&buys["latency"], &buys["latency_arrival"]);
    let n = arrival["count"].as_u64().unwrap_or(0);
    assert!(
        n > 0 && n <= sent,
        "latency_arrival count {n}\n{}",
        run.dump()
    );
    for q in ["p50_ms", "p99_ms", "max_ms"] {
        let (a, r) = (arrival[q].as_f64(), read[q].as_f64());
        assert!(
            a.zip(r).is_some_and(|(a, r)| a <= r),
            "{q}: by arrival {a:?}, by the read {r:?}\n{}",
            run.dump()
        );
    }
    // The hiccup meter ticked through the load (1 ms ticks, a 1 s load) and the whole run.
    let phase = run.summary["livehub"]["hiccups"]["late"]["count"].as_u64();
    let whole = run.summary["machine"]["hiccups"]["late"]["count"].as_u64();
    assert!(
        phase.zip(whole).is_some_and(|(p, w)| p >= 100 && w >= p),
        "hiccups: load {phase:?}, run {whole:?}\n{}",
        run.dump()
    );
}

/// Oversell: all 50 buys acked on a stock of 10. The export, stats and acks agree with each
/// other, so only the checks against the stock catch it.
#[tokio::test]
async fn oversell_fails_the_stock_checks() {
    let run = spike(Breakage::Oversell).await;
    assert_failed_exactly(
        &run,
        &[
            "acked_units_within_stock",
            "exported_units_within_stock",
            "sold_as_expected",
            // The audit honestly says sold 50 > stock_total 10.
            "audit_consistent",
        ],
    );
    assert_reports_core_checks(&run, &["sold_as_expected"]);
    assert!(
        run.detail("acked_units_within_stock")
            .contains("A1: 50 acked > stock 10"),
        "{}",
        run.dump()
    );
    assert_eq!(run.summary["livehub"]["buys"]["ok"], 50, "{}", run.dump());
}

/// Lost order: order O1 is acked ok but missing from the export.
#[tokio::test]
async fn lost_order_fails_acked_orders_in_export() {
    let run = spike(Breakage::LostOrder).await;
    assert_failed_exactly(
        &run,
        &[
            "acked_orders_in_export",
            // The export sums to 9 orders where the snapshot, the audit and the demand say 10.
            "stats_match_orders",
            "audit_consistent",
            "sold_as_expected",
        ],
    );
    assert_reports_core_checks(&run, &["sold_as_expected"]);
    let d = run.detail("acked_orders_in_export");
    assert!(
        d.contains("1 acked orders missing from the export") && d.contains("\"O1\""),
        "{}",
        run.dump()
    );
}

/// Lost order under a steady load: the same breakage caught by `steady`'s checks.
#[tokio::test]
async fn lost_order_fails_steady() {
    let run = steady(Breakage::LostOrder).await;
    assert_failed_exactly(
        &run,
        &[
            "acked_orders_in_export",
            "stats_match_orders",
            "audit_consistent",
        ],
    );
    assert_reports_core_checks(&run, &[]);
    assert!(
        run.detail("acked_orders_in_export")
            .contains("1 acked orders missing from the export"),
        "{}",
        run.dump()
    );
}

/// Duplicate order id: the first two buys both get order O1.
#[tokio::test]
async fn duplicate_order_id_fails_unique_order_ids() {
    let run = spike(Breakage::DuplicateOrderId).await;
    assert_failed_exactly(
        &run,
        &[
            "unique_order_ids",
            "export_order_ids_unique",
            // O1 in the export can match only one of the two acks that name it.
            "acked_orders_in_export",
        ],
    );
    assert_reports_core_checks(&run, &["sold_as_expected"]);
    assert!(
        run.detail("unique_order_ids")
            .contains("1 order ids acked twice, e.g. [\"O1\"]"),
        "{}",
        run.dump()
    );
}

//! Test support: a livehub on 127.0.0.1:0 in this process, REST helpers, and buyer and
//! dashboard WebSocket clients.
#![allow(dead_code)]

pub mod child;
pub mod haproxy;
pub mod redis_cluster;
pub mod redis_server;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio::net::TcpStream;
use tokio::sync::oneshot;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

use livehub::auth::{sign_buyer_token, Auth};
use livehub::buyer::BuyerLimits;
use livehub::dashboard::feed::FeedLimits;
use livehub::hub::HubOptions;
use livehub::journal::{Faults, JournalOptions};
use livehub::server::accept::ConnLimits;
use livehub::server::{self, Settings};

pub const ADMIN: &str = "test-admin-token";
pub const VIEWER: &str = "test-viewer-token";
pub const SECRET: &str = "test-buyer-secret";
/// The payment secret of test servers: payment notices are signed with it
/// (`livehub::payments::sign`).
pub const PAYMENT_SECRET: &str = "test-payment-secret";
/// The video platform adapter's token: audience events only.
pub const INGEST: &str = "test-ingest-token";

/// How long any single wait in a test may take before it fails.
pub const WAIT: Duration = Duration::from_secs(20);

/// How often [`eventually`] looks again.
pub const POLL: Duration = Duration::from_millis(10);

/// Waits until `probe` says yes, asking again every [`POLL`]; fails the test naming `what`
/// when it still says no after `deadline`. This is how a test waits for something the server
/// does in its own time, instead of sleeping and hoping it is done by then.
pub async fn eventually(deadline: Duration, what: &str, mut probe: impl AsyncFnMut() -> bool) {
    eventually_ok(deadline, what, async || {
        if probe().await {
            Ok(())
        } else {
            Err("not yet")
        }
    })
    .await
}

/// [`eventually`] for a probe that returns what it waited for (`Ok`), or what it saw instead
/// (`Err`), which the failure shows as it was last seen.
pub async fn eventually_ok<T, E: std::fmt::Display>(
    deadline: Duration,
    what: &str,
    mut probe: impl AsyncFnMut() -> Result<T, E>,
) -> T {
    let t0 = std::time::Instant::now();
    loop {
        let last = match probe().await {
            Ok(v) => return v,
            Err(e) => e,
        };
        assert!(
            t0.elapsed() < deadline,
            "not within {deadline:?}: {what} (last seen: {last})"
        );
        tokio::time::sleep(POLL).await;
    }
}

pub struct TestServer {
    pub addr: SocketAddr,
    pub data_dir: PathBuf,
    pub faults: Arc<Faults>,
    stop: Option<oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<anyhow::Result<()>>>,
    pub http: reqwest::Client,
}

/// Options a test may change before the server starts.
pub struct Options {
    pub open_buyers: bool,
    pub limits: BuyerLimits,
    pub push_interval: Duration,
    /// Snapshot frames a second per room (the fan-out budget): low to stagger a few dashboards.
    pub fanout_frames_per_s: u64,
    pub fsync: bool,
    pub conn_limits: ConnLimits,
    pub feed_limits: FeedLimits,
    /// Records the journal queue holds before buys are refused `unavailable`.
    pub journal_queue: Option<usize>,
    pub max_pending_buys: usize,
    /// fleet mode (`--redis`): see `support::redis`.
    pub fleet: Option<livehub::fleet::FleetOptions>,
    /// The journal's segment size: small (1 MiB) so that the tests' journals go through
    /// rotations and preallocated spares, not only the first segment.
    pub segment_bytes: u64,
    /// What the journal does when it must stop (default: exit the process).
    pub on_fatal: Option<livehub::journal::FatalHook>,
    /// Journal records between journal snapshots (default: the hub's).
    pub snapshot_every_records: Option<u64>,
    /// Run the `--demo` livestream (and seed its earlier stream).
    pub demo: bool,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            open_buyers: true,
            limits: BuyerLimits {
                frames_per_s: 1e6,
                burst: 1e6,
                ..BuyerLimits::default()
            },
            push_interval: Duration::from_millis(50),
            fanout_frames_per_s: livehub::dashboard::aggregator::FANOUT_FRAMES_PER_S,
            fsync: true,
            conn_limits: ConnLimits::default(),
            feed_limits: FeedLimits::default(),
            journal_queue: None,
            max_pending_buys: livehub::config::DEFAULT_MAX_PENDING_BUYS,
            fleet: None,
            segment_bytes: 1 << 20,
            on_fatal: None,
            snapshot_every_records: None,
            demo: false,
        }
    }
}

/// The value of one Prometheus series (name and labels, exactly as exposed) in the `/metrics`
/// of the server at `addr`; `None` when the series is absent.
pub async fn metric_at(addr: &str, series: &str) -> Option<f64> {
    metric_via(&reqwest::Client::new(), addr, series).await
}

/// [`metric_at`] through the given client (one bound to a source address, say).
pub async fn metric_via(http: &reqwest::Client, addr: &str, series: &str) -> Option<f64> {
    let text = http
        .get(format!("http://{addr}/metrics"))
        .send()
        .await
        .expect("/metrics answers")
        .text()
        .await
        .expect("/metrics body");
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.trim().parse().ok())
}

/// Whether the server at `server` has accepted the TCP connection from `client` and read every
/// byte the client wrote on it, from Linux's `/proc/net/tcp`: the client's socket has nothing
/// unacknowledged, and the server's has an inode (it was accepted) and nothing unread. `Err`
/// says what the table showed instead.
pub fn server_read_all(server: SocketAddr, client: SocketAddr) -> Result<(), String> {
    let table =
        std::fs::read_to_string("/proc/net/tcp").map_err(|e| format!("/proc/net/tcp: {e}"))?;
    let (mut client_unacked, mut server_side) = (None, None);
    for line in table.lines().skip(1) {
        // sl local rem st tx_queue:rx_queue tr:when retrnsmt uid timeout inode ...
        let f: Vec<&str> = line.split_whitespace().collect();
        let (Some(local), Some(remote), Some(queues), Some(&inode)) = (
            f.get(1).and_then(|a| proc_tcp_addr(a)),
            f.get(2).and_then(|a| proc_tcp_addr(a)),
            f.get(4).and_then(|q| q.split_once(':')),
            f.get(9),
        ) else {
            continue;
        };
        let queue = |hex: &str| u64::from_str_radix(hex, 16).unwrap_or(u64::MAX);
        if (local, remote) == (client, server) {
            client_unacked = Some(queue(queues.0));
        } else if (local, remote) == (server, client) {
            server_side = Some((inode.to_owned(), queue(queues.1)));
        }
    }
    match (client_unacked, &server_side) {
        (Some(0), Some((inode, 0))) if inode != "0" => Ok(()),
        _ => Err(format!(
            "client's unacknowledged bytes {client_unacked:?}, server's (inode, unread bytes) \
             {server_side:?}"
        )),
    }
}

/// An IPv4 address as `/proc/net/tcp` prints it: the address's bytes as a hex u32 in the
/// machine's byte order, a colon, the port in hex.
fn proc_tcp_addr(s: &str) -> Option<SocketAddr> {
    let (ip, port) = s.split_once(':')?;
    let ip = u32::from_str_radix(ip, 16).ok()?.to_ne_bytes();
    Some(SocketAddr::from((ip, u16::from_str_radix(port, 16).ok()?)))
}

pub fn temp_dir() -> PathBuf {
    tempfile::Builder::new()
        .prefix("livehub-test-")
        .tempdir()
        .expect("temp dir")
        .keep()
}

impl TestServer {
    pub async fn start() -> TestServer {
        Self::start_in(&temp_dir(), Options::default()).await
    }

    pub async fn start_with(opts: Options) -> TestServer {
        Self::start_in(&temp_dir(), opts).await
    }

    /// Starts a server on `dir`; fails the test if it cannot start.
    pub async fn start_in(dir: &Path, opts: Options) -> TestServer {
        Self::try_start_in(dir, opts).await.expect("server starts")
    }

    pub async fn try_start_in(dir: &Path, opts: Options) -> anyhow::Result<TestServer> {
        let faults = Arc::new(Faults::default());
        let mut journal = JournalOptions::new(dir);
        journal.faults = faults.clone();
        journal.fsync = opts.fsync;
        journal.segment_bytes = opts.segment_bytes;
        if let Some(hook) = &opts.on_fatal {
            journal.on_fatal = hook.clone();
        }
        if let Some(q) = opts.journal_queue {
            journal.queue = q;
        }
        if let Some(n) = opts.snapshot_every_records {
            journal.snapshot_every_records = n;
        }
        let settings = Settings {
            hub: HubOptions {
                journal,
                push_interval: opts.push_interval,
                fanout_frames_per_s: opts.fanout_frames_per_s,
                stock_frames_per_s: livehub::buyer::sale_feed::STOCK_FRAMES_PER_S,
                max_pending_buys: opts.max_pending_buys,
                fleet: opts.fleet.clone(),
            },
            auth: Auth::new(ADMIN, VIEWER, Some(SECRET), opts.open_buyers)
                .and_then(|a| a.with_payment_secret(PAYMENT_SECRET))
                .and_then(|a| a.with_ingest_token(INGEST))
                .expect("test tokens"),
            buyer_limits: opts.limits,
            static_dir: PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("static"),
            demo: opts.demo,
            shutdown_deadline: Duration::from_secs(5),
            conn_limits: opts.conn_limits,
            feed_limits: opts.feed_limits,
        };
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(server::run(listener, settings, async move {
            let _ = stopped.await;
        }));
        let http = reqwest::Client::new();
        // Ready when /healthz answers, or failed when run() returned.
        let t0 = std::time::Instant::now();
        loop {
            if task.is_finished() {
                return Err(task
                    .await?
                    .err()
                    .unwrap_or_else(|| anyhow::anyhow!("server stopped at start")));
            }
            if let Ok(r) = http.get(format!("http://{addr}/healthz")).send().await {
                if r.status().is_success() {
                    break;
                }
            }
            anyhow::ensure!(t0.elapsed() < WAIT, "server did not become ready");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Ok(TestServer {
            addr,
            data_dir: dir.to_path_buf(),
            faults,
            stop: Some(stop),
            task: Some(task),
            http,
        })
    }

    /// Graceful shutdown; returns the data dir for a restart.
    pub async fn stop(mut self) -> PathBuf {
        let _ = self.stop.take().expect("running").send(());
        let res = tokio::time::timeout(WAIT, self.task.take().expect("running")).await;
        res.expect("server stops in time")
            .expect("server task")
            .expect("server run ok");
        self.data_dir.clone()
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    pub async fn request(
        &self,
        method: &str,
        path: &str,
        token: Option<&str>,
        body: Option<Value>,
    ) -> (u16, Value) {
        let mut rb = self.http.request(method.parse().unwrap(), self.url(path));
        if let Some(t) = token {
            rb = rb.bearer_auth(t);
        }
        if let Some(b) = body {
            rb = rb.json(&b);
        }
        let r = rb.send().await.expect("http request");
        let status = r.status().as_u16();
        let text = r.text().await.unwrap_or_default();
        (
            status,
            serde_json::from_str(&text).unwrap_or(Value::String(text)),
        )
    }

    pub async fn admin(&self, method: &str, path: &str, body: Option<Value>) -> Value {
        let (status, v) = self.request(method, path, Some(ADMIN), body).await;
        assert_eq!(status, 200, "{method} {path}: {v}");
        v
    }

    pub async fn create_room(&self, room: &str) {
        self.admin(
            "PUT",
            &format!("/api/rooms/{room}"),
            Some(json!({"title": format!("room {room}")})),
        )
        .await;
    }

    pub async fn create_sku(
        &self,
        room: &str,
        sku: &str,
        price_fen: u64,
        stock: u64,
        limit: Option<u64>,
    ) -> Value {
        self.admin(
            "PUT",
            &format!("/api/rooms/{room}/skus/{sku}"),
            Some(json!({"name": format!("item {sku}"), "price_fen": price_fen, "stock": stock, "limit_per_user": limit, "opens_at_ms": null, "closes_at_ms": null})),
        )
        .await
    }

    /// A SKU whose orders must be paid within `pay_timeout_s`.
    pub async fn create_sku_to_pay(
        &self,
        room: &str,
        sku: &str,
        price_fen: u64,
        stock: u64,
        limit: Option<u64>,
        pay_timeout_s: u64,
    ) -> Value {
        self.admin(
            "PUT",
            &format!("/api/rooms/{room}/skus/{sku}"),
            Some(json!({"name": format!("item {sku}"), "price_fen": price_fen, "stock": stock, "limit_per_user": limit, "pay_timeout_s": pay_timeout_s})),
        )
        .await
    }

    /// Sends a payment notice signed with [`PAYMENT_SECRET`] (timestamp now): its status and
    /// body.
    pub async fn pay(
        &self,
        room: &str,
        order: &str,
        payment_id: &str,
        amount_fen: u64,
    ) -> (u16, Value) {
        let body = json!({"order": order, "room": room, "payment_id": payment_id,
            "amount_fen": amount_fen, "paid_at_ms": livehub::clock::now_ms()})
        .to_string();
        self.notice(body.as_bytes(), livehub::clock::now_ms(), PAYMENT_SECRET)
            .await
    }

    /// Sends `body` to `POST /api/payments` signed with `secret` at `timestamp_ms`.
    pub async fn notice(&self, body: &[u8], timestamp_ms: i64, secret: &str) -> (u16, Value) {
        notice_via(&self.http, self.addr, body, timestamp_ms, secret).await
    }

    /// Every event of a room's change feed, through its pages.
    pub async fn order_events(&self, room: &str) -> Vec<Value> {
        self.all_pages(&format!("/api/rooms/{room}/order-events?after="), "event")
            .await
    }

    /// Every order of a room, through the paged export.
    pub async fn export(&self, room: &str) -> Vec<Value> {
        self.all_pages(&format!("/api/rooms/{room}/orders?after_seq="), "seq")
            .await
    }

    /// Fleet mode: the orders this hub took (`scope=hub`), through the paged export.
    pub async fn hub_export(&self, room: &str) -> Vec<Value> {
        self.all_pages(
            &format!("/api/rooms/{room}/orders?scope=hub&after_seq="),
            "seq",
        )
        .await
    }

    /// Fleet mode: this hub's change feed (`scope=hub`), through its pages.
    pub async fn hub_order_events(&self, room: &str) -> Vec<Value> {
        self.all_pages(
            &format!("/api/rooms/{room}/order-events?scope=hub&after="),
            "event",
        )
        .await
    }

    /// Every line of a paged NDJSON route (`path` ends where the cursor goes), 500 a page,
    /// each page after the last line's `cursor` field.
    async fn all_pages(&self, path: &str, cursor: &str) -> Vec<Value> {
        let mut out = Vec::new();
        let mut after = 0u64;
        loop {
            let r = self
                .http
                .get(self.url(&format!("{path}{after}&limit=500")))
                .bearer_auth(ADMIN)
                .send()
                .await
                .expect("a page");
            assert_eq!(r.status().as_u16(), 200, "{path}");
            let text = r.text().await.unwrap();
            let page: Vec<Value> = text
                .lines()
                .map(|l| serde_json::from_str(l).expect("ndjson line"))
                .collect();
            let n = page.len();
            if let Some(last) = page.last() {
                after = last[cursor].as_u64().unwrap();
            }
            out.extend(page);
            if n < 500 {
                return out;
            }
        }
    }

    pub async fn audit(&self, room: &str) -> Value {
        let (s, v) = self
            .request(
                "GET",
                &format!("/api/rooms/{room}/audit"),
                Some(VIEWER),
                None,
            )
            .await;
        assert_eq!(s, 200, "{v}");
        v
    }

    pub async fn stats(&self, room: &str) -> Value {
        let (s, v) = self
            .request(
                "GET",
                &format!("/api/rooms/{room}/stats"),
                Some(VIEWER),
                None,
            )
            .await;
        assert_eq!(s, 200, "{v}");
        v
    }

    /// A buyer connected with a JWT for `user`.
    pub async fn buyer(&self, room: &str, user: &str) -> Client {
        let token = sign_buyer_token(SECRET, user, Some(room), 600);
        Client::connect(&format!(
            "ws://{}/ws/buy?room={room}&token={token}",
            self.addr
        ))
        .await
        .expect("buyer connects")
    }

    /// A buyer `user` that buys one `sku` every `gap`, `n` times (reqs `{user}-0`, ...), each
    /// accepted, in a task of its own: figures that keep changing while a test watches.
    pub async fn buy_every(
        &self,
        room: &str,
        user: &str,
        sku: &str,
        n: usize,
        gap: Duration,
    ) -> tokio::task::JoinHandle<()> {
        let mut b = self.buyer(room, user).await;
        let (user, sku) = (user.to_owned(), sku.to_owned());
        tokio::spawn(async move {
            for i in 0..n {
                assert_eq!(b.buy(&format!("{user}-{i}"), &sku, 1).await["ok"], true);
                // Not synchronisation: the gap is the pace of the buys the caller asked for.
                tokio::time::sleep(gap).await;
            }
        })
    }

    /// The stats once they include every order up to `seq` (snapshots lag by a push interval).
    pub async fn stats_at(&self, room: &str, seq: u64) -> Value {
        let t0 = std::time::Instant::now();
        loop {
            let v = self.stats(room).await;
            if v["seq"].as_u64().unwrap_or(0) >= seq {
                return v;
            }
            assert!(t0.elapsed() < WAIT, "stats never reached seq {seq}: {v}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    pub async fn dashboard(&self, room: &str) -> Client {
        Client::connect(&format!(
            "ws://{}/ws/dashboard?room={room}&token={VIEWER}",
            self.addr
        ))
        .await
        .expect("dashboard connects")
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
    }
}

/// Sends `body` to the payment route of the hub at `addr`, signed with `secret` at
/// `timestamp_ms`: its status and body.
pub async fn notice_via(
    http: &reqwest::Client,
    addr: SocketAddr,
    body: &[u8],
    timestamp_ms: i64,
    secret: &str,
) -> (u16, Value) {
    try_notice_via(http, addr, body, timestamp_ms, secret)
        .await
        .expect("payment notice")
}

/// [`notice_via`] that returns a request without an answer (the hub died, say) as `Err`
/// instead of failing the test.
pub async fn try_notice_via(
    http: &reqwest::Client,
    addr: SocketAddr,
    body: &[u8],
    timestamp_ms: i64,
    secret: &str,
) -> reqwest::Result<(u16, Value)> {
    let sig = livehub::payments::sign(secret.as_bytes(), timestamp_ms, body);
    let r = http
        .post(format!("http://{addr}/api/payments"))
        .header("X-Livehub-Timestamp", timestamp_ms.to_string())
        .header("X-Livehub-Signature", sig)
        .body(body.to_vec())
        .send()
        .await?;
    let status = r.status().as_u16();
    let text = r.text().await?;
    Ok((
        status,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    ))
}

/// A payment notice of `amount_fen` for `order`, paid now, signed with [`PAYMENT_SECRET`], sent
/// to the hub at `addr`.
pub async fn signed_payment(
    http: &reqwest::Client,
    addr: SocketAddr,
    room: &str,
    order: &str,
    payment_id: &str,
    amount_fen: u64,
) -> (u16, Value) {
    try_signed_payment(http, addr, room, order, payment_id, amount_fen)
        .await
        .expect("payment notice")
}

/// [`signed_payment`] that returns a notice without an answer (the hub died, say) as `Err`
/// instead of failing the test.
pub async fn try_signed_payment(
    http: &reqwest::Client,
    addr: SocketAddr,
    room: &str,
    order: &str,
    payment_id: &str,
    amount_fen: u64,
) -> reqwest::Result<(u16, Value)> {
    let now = livehub::clock::now_ms();
    let body = json!({"order": order, "room": room, "payment_id": payment_id,
        "amount_fen": amount_fen, "paid_at_ms": now})
    .to_string();
    try_notice_via(http, addr, body.as_bytes(), now, PAYMENT_SECRET).await
}

/// The SKU `sku` of a snapshot, `/stats` or `/audit` answer.
pub fn sku_of<'a>(v: &'a Value, sku: &str) -> &'a Value {
    v["skus"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["sku"] == sku)
        .unwrap_or_else(|| panic!("no SKU {sku} in {v}"))
}

/// A hub in fleet mode on `redis`, with id `id`, on the data dir `dir`.
pub async fn fleet_hub_in(redis: &redis_server::RedisServer, id: &str, dir: &Path) -> TestServer {
    TestServer::start_in(
        dir,
        Options {
            fleet: Some(redis.hub(id)),
            ..Options::default()
        },
    )
    .await
}

/// A hub in fleet mode on `redis`, with id `id`, on a fresh data dir.
pub async fn fleet_hub(redis: &redis_server::RedisServer, id: &str) -> TestServer {
    fleet_hub_in(redis, id, &temp_dir()).await
}

impl TestServer {
    /// Waits until this hub lists `sku` in `room` (made on another hub).
    pub async fn wait_sku(&self, room: &str, sku: &str) {
        eventually(WAIT, "the SKU reaches the hub", async || {
            let (_, rooms) = self.request("GET", "/api/rooms", Some(VIEWER), None).await;
            rooms.as_array().into_iter().flatten().any(|r| {
                r["room"] == room
                    && r["skus"]
                        .as_array()
                        .is_some_and(|v| v.iter().any(|x| x["sku"] == sku))
            })
        })
        .await;
    }
}

pub type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// A WebSocket client that skips pushes when waiting for an answer.
pub struct Client {
    pub ws: Ws,
    /// Pushes (`stock`, `sale`, `order`) seen while waiting for answers.
    pub pushes: Vec<Value>,
    pub hello: Option<Value>,
}

impl Client {
    /// A client on a socket of its own making: bound to `source` (a 127.0.0.x address) and
    /// with a small receive buffer when given, so a test can play a distant or stalled peer.
    pub async fn connect_from(
        url: &str,
        source: Option<std::net::IpAddr>,
        recv_buffer: Option<u32>,
    ) -> Result<Ws, tokio_tungstenite::tungstenite::Error> {
        let addr: SocketAddr = url
            .trim_start_matches("ws://")
            .split('/')
            .next()
            .unwrap()
            .parse()
            .expect("ws://IP:PORT/...");
        let sock = tokio::net::TcpSocket::new_v4()?;
        if let Some(n) = recv_buffer {
            sock.set_recv_buffer_size(n)?;
        }
        if let Some(ip) = source {
            sock.bind(SocketAddr::new(ip, 0))?;
        }
        let tcp = sock.connect(addr).await?;
        let (ws, _) = tokio_tungstenite::client_async(url, MaybeTlsStream::Plain(tcp)).await?;
        Ok(ws)
    }

    pub async fn connect(url: &str) -> Result<Client, tokio_tungstenite::tungstenite::Error> {
        let (ws, _) = tokio_tungstenite::connect_async(url).await?;
        let mut c = Client {
            ws,
            pushes: Vec::new(),
            hello: None,
        };
        if url.contains("/ws/buy") {
            let hello = c.next_json().await.expect("hello");
            assert_eq!(hello["op"], "hello", "{hello}");
            c.hello = Some(hello);
        }
        Ok(c)
    }

    pub async fn send_text(&mut self, text: impl Into<String>) {
        self.ws
            .send(Message::text(text.into()))
            .await
            .expect("send");
    }

    pub async fn send_json(&mut self, v: Value) {
        self.send_text(v.to_string()).await;
    }

    /// The next text frame as JSON, or None when the socket closed.
    pub async fn next_json(&mut self) -> Option<Value> {
        loop {
            let m = tokio::time::timeout(WAIT, self.ws.next())
                .await
                .expect("a frame in time")?;
            match m.ok()? {
                Message::Text(t) => {
                    return Some(serde_json::from_str(&t).expect("server sends JSON"))
                }
                Message::Close(_) => return None,
                _ => continue,
            }
        }
    }

    /// The next frame that is not a `stock`/`sale`/`order` push.
    pub async fn reply(&mut self) -> Value {
        loop {
            let v = self.next_json().await.expect("socket open");
            match v["op"].as_str() {
                Some("stock" | "sale" | "order") => self.pushes.push(v),
                _ => return v,
            }
        }
    }

    pub async fn buy(&mut self, req: &str, sku: &str, qty: u64) -> Value {
        self.send_json(json!({"op": "buy", "req": req, "sku": sku, "qty": qty}))
            .await;
        self.reply().await
    }

    /// Waits for a push matching `pred`.
    pub async fn push_where(&mut self, pred: impl Fn(&Value) -> bool) -> Value {
        if let Some(i) = self.pushes.iter().position(&pred) {
            return self.pushes.remove(i);
        }
        loop {
            let v = self.next_json().await.expect("socket open");
            if pred(&v) {
                return v;
            }
        }
    }

    /// The close code the server sent, waiting for it.
    pub async fn close_code(&mut self) -> Option<u16> {
        loop {
            let m = tokio::time::timeout(WAIT, self.ws.next())
                .await
                .expect("close in time");
            match m {
                Some(Ok(Message::Close(Some(f)))) => return Some(f.code.into()),
                Some(Ok(Message::Close(None))) | None | Some(Err(_)) => return None,
                Some(Ok(_)) => continue,
            }
        }
    }
}

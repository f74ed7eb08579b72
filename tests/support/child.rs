//! A livehub child process on 127.0.0.1:0, for tests that kill or signal it.

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::{json, Value};

use super::{Client, ADMIN, PAYMENT_SECRET, SECRET, VIEWER, WAIT};

pub struct ChildHub {
    pub child: Child,
    pub addr: String,
}

/// Starts the `livehub` binary on `dir` with `extra` flags and waits until it serves.
pub async fn spawn(dir: &Path, extra: &[&str]) -> ChildHub {
    spawn_at(dir, "127.0.0.1:0", extra).await
}

/// [`spawn`] listening on `listen`: a fixed port, so that a hub restarted on its data dir is
/// found where a load balancer's config says it is.
pub async fn spawn_at(dir: &Path, listen: &str, extra: &[&str]) -> ChildHub {
    let mut child = Command::new(env!("CARGO_BIN_EXE_livehub"))
        .args(["--listen", listen, "--log-format", "json", "--open-buyers"])
        .args(["--buyer-rate", "1000000", "--buyer-burst", "1000000"])
        .args(extra)
        .arg("--data-dir")
        .arg(dir)
        .env("LIVEHUB_ADMIN_TOKEN", ADMIN)
        .env("LIVEHUB_VIEWER_TOKEN", VIEWER)
        .env("LIVEHUB_BUYER_SECRET", SECRET)
        .env("LIVEHUB_PAYMENT_SECRET", PAYMENT_SECRET)
        .env("RUST_LOG", "info")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawn livehub");
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    // Read the listening address, then keep draining so the child never blocks on its pipe.
    std::thread::spawn(move || {
        let mut tx = Some(tx);
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if let Ok(v) = serde_json::from_str::<Value>(&line) {
                if v["fields"]["message"] == "livehub listening" {
                    if let Some(tx) = tx.take() {
                        let _ =
                            tx.send(v["fields"]["addr"].as_str().unwrap_or_default().to_owned());
                    }
                }
            }
        }
    });
    let addr = rx.recv_timeout(WAIT).expect("livehub reports its address");
    let t0 = std::time::Instant::now();
    while reqwest::get(format!("http://{addr}/healthz"))
        .await
        .map(|r| r.status().as_u16())
        .ok()
        != Some(200)
    {
        assert!(t0.elapsed() < WAIT, "livehub did not become ready");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    ChildHub { child, addr }
}

impl ChildHub {
    /// Sends SIGTERM.
    pub fn terminate(&self) {
        let pid = nix::unistd::Pid::from_raw(self.child.id() as i32);
        nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).expect("SIGTERM");
    }

    /// Waits for the process to exit; its exit code.
    pub async fn exit_code(&mut self) -> Option<i32> {
        let t0 = std::time::Instant::now();
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status.code();
            }
            assert!(t0.elapsed() < WAIT, "livehub did not exit");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// An HTTP request with a bearer token: status and body.
    pub async fn http(
        &self,
        method: &str,
        path: &str,
        token: &str,
        body: Option<Value>,
    ) -> (u16, String) {
        let c = reqwest::Client::new();
        let mut rb = c
            .request(
                method.parse().unwrap(),
                format!("http://{}{path}", self.addr),
            )
            .bearer_auth(token);
        if let Some(b) = body {
            rb = rb.json(&b);
        }
        let r = rb.send().await.expect("http");
        (r.status().as_u16(), r.text().await.unwrap())
    }

    /// Every order of a room through the paged export.
    pub async fn export(&self, room: &str) -> Vec<Value> {
        self.pages(&format!("/api/rooms/{room}/orders?after_seq"), "seq")
            .await
    }

    /// Every event of a room's change feed (`order-events`) through its pages.
    pub async fn order_events(&self, room: &str) -> Vec<Value> {
        self.pages(&format!("/api/rooms/{room}/order-events?after"), "event")
            .await
    }

    /// The orders this hub took (`scope=hub`) through the paged export.
    pub async fn hub_export(&self, room: &str) -> Vec<Value> {
        self.pages(
            &format!("/api/rooms/{room}/orders?scope=hub&after_seq"),
            "seq",
        )
        .await
    }

    /// This hub's change feed (`scope=hub`) through its pages.
    pub async fn hub_order_events(&self, room: &str) -> Vec<Value> {
        self.pages(
            &format!("/api/rooms/{room}/order-events?scope=hub&after"),
            "event",
        )
        .await
    }

    /// Every line of a paged NDJSON list: `{path_and_after}=N&limit=10000`, where `N` is the
    /// `cursor` field of the previous page's last line.
    async fn pages(&self, path_and_after: &str, cursor: &str) -> Vec<Value> {
        let mut out: Vec<Value> = Vec::new();
        let mut after = 0;
        loop {
            let (st, body) = self
                .http(
                    "GET",
                    &format!("{path_and_after}={after}&limit=10000"),
                    ADMIN,
                    None,
                )
                .await;
            assert_eq!(st, 200, "{body}");
            let page: Vec<Value> = body
                .lines()
                .map(|l| serde_json::from_str(l).unwrap())
                .collect();
            let n = page.len();
            if let Some(l) = page.last() {
                after = l[cursor].as_u64().unwrap();
            }
            out.extend(page);
            if n < 10000 {
                return out;
            }
        }
    }
}

impl Drop for ChildHub {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl ChildHub {
    /// Makes `room` with one SKU `A` of `stock` units at `price_fen`, whose orders must be
    /// paid within `pay_timeout_s`.
    pub async fn set_up_sku_to_pay(
        &self,
        room: &str,
        price_fen: u64,
        stock: u64,
        limit: Option<u64>,
        pay_timeout_s: u64,
    ) {
        let (st, body) = self
            .http(
                "PUT",
                &format!("/api/rooms/{room}"),
                ADMIN,
                Some(json!({"title": room})),
            )
            .await;
        assert_eq!(st, 200, "{body}");
        let sku = json!({"name": "a", "price_fen": price_fen, "stock": stock,
            "limit_per_user": limit, "pay_timeout_s": pay_timeout_s});
        let (st, body) = self
            .http(
                "PUT",
                &format!("/api/rooms/{room}/skus/A"),
                ADMIN,
                Some(sku),
            )
            .await;
        assert_eq!(st, 200, "{body}");
    }

    /// Places `waves` × `per_wave` unpaid orders of one unit of `A` from each of `sockets`
    /// buyers `b0`, `b1`, ..., each socket's wave pipelined, with `pause` between waves (so
    /// that deadlines spread over the placement's time). Returns each order's `pay_by_ms`, as
    /// its ack said.
    pub async fn place_unpaid(
        &self,
        room: &str,
        sockets: usize,
        waves: usize,
        per_wave: usize,
        pause: Duration,
    ) -> HashMap<String, i64> {
        let tasks: Vec<_> = (0..sockets)
            .map(|k| {
                let url = format!("ws://{}/ws/buy?room={room}&user=b{k}", self.addr);
                tokio::spawn(async move {
                    let mut c = Client::connect(&url).await.expect("buyer socket");
                    let mut placed = Vec::new();
                    for w in 0..waves {
                        for i in 0..per_wave {
                            c.send_json(
                                json!({"op": "buy", "req": format!("w{w}-{i}"), "sku": "A", "qty": 1}),
                            )
                            .await;
                        }
                        for _ in 0..per_wave {
                            let ack = c.reply().await;
                            assert_eq!(ack["ok"], true, "{ack}");
                            assert_eq!(ack["status"], "unpaid", "{ack}");
                            placed.push((
                                ack["order"].as_str().unwrap().to_owned(),
                                ack["pay_by_ms"].as_i64().expect("pay_by_ms"),
                            ));
                        }
                        // Not synchronisation: the pause spreads the deadlines.
                        tokio::time::sleep(pause).await;
                    }
                    placed
                })
            })
            .collect();
        let mut all = HashMap::new();
        for t in tasks {
            all.extend(t.await.unwrap());
        }
        assert_eq!(
            all.len(),
            sockets * waves * per_wave,
            "order ids are unique"
        );
        all
    }
}

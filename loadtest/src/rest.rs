//! The server's REST API as this tool uses it.

use std::time::Duration;

use anyhow::{bail, Context as _};
use serde::de::DeserializeOwned;
use serde::Deserialize;
use serde_json::{json, Value};

/// Longest any single REST call may take.
const CALL_TIMEOUT: Duration = Duration::from_secs(15);
/// Most pages the export is read in (10,000 orders each).
const MAX_EXPORT_PAGES: usize = 100_000;

#[derive(Clone)]
pub struct Rest {
    pub http: reqwest::Client,
    pub base: String,
    admin: Option<String>,
    viewer: Option<String>,
}

/// One line of the orders export.
#[derive(Debug, Clone, Deserialize)]
pub struct Order {
    pub seq: u64,
    pub order: String,
    pub sku: String,
    pub user: String,
    pub req: String,
    pub qty: u64,
    pub price_fen: u64,
    pub amount_fen: u64,
}

/// A line of the orders export with the statuses of orders that must be paid (protocol v2).
#[derive(Debug, Clone, Deserialize)]
pub struct PaidOrder {
    pub seq: u64,
    pub order: String,
    pub sku: String,
    pub user: String,
    pub req: String,
    pub qty: u64,
    pub price_fen: u64,
    pub amount_fen: u64,
    pub ts_ms: i64,
    pub status: String,
    #[serde(default)]
    pub pay_by_ms: Option<i64>,
    #[serde(default)]
    pub paid_at_ms: Option<i64>,
    #[serde(default)]
    pub payment_id: Option<String>,
    #[serde(default)]
    pub ended_at_ms: Option<i64>,
    #[serde(default)]
    pub late_payments: Vec<LatePayment>,
}

/// A payment kept on an order that could not take it (expired, cancelled, already paid).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct LatePayment {
    pub payment_id: String,
    pub amount_fen: u64,
    pub paid_at_ms: i64,
}

/// A line of the change feed (`/order-events`).
#[derive(Debug, Clone, Deserialize)]
pub struct OrderEvent {
    pub event: u64,
    pub order: String,
    pub status: String,
    pub sku: String,
    pub user: String,
    pub qty: u64,
    pub amount_fen: u64,
    #[serde(default)]
    pub payment_id: Option<String>,
    #[serde(default)]
    pub paid_at_ms: Option<i64>,
    #[serde(default)]
    pub restock: Option<bool>,
    #[serde(default)]
    pub late_payment: Option<LatePayment>,
}

/// What an NDJSON page is paged by.
pub trait Paged {
    fn cursor(&self) -> u64;
}

impl Paged for Order {
    fn cursor(&self) -> u64 {
        self.seq
    }
}

impl Paged for PaidOrder {
    fn cursor(&self) -> u64 {
        self.seq
    }
}

impl Paged for OrderEvent {
    fn cursor(&self) -> u64 {
        self.event
    }
}

impl Rest {
    pub fn new(base: &str, admin: Option<String>, viewer: Option<String>) -> anyhow::Result<Rest> {
        let http = reqwest::Client::builder()
            .timeout(CALL_TIMEOUT)
            .pool_max_idle_per_host(4)
            .build()?;
        let viewer = viewer.or_else(|| admin.clone());
        Ok(Rest {
            http,
            base: base.to_owned(),
            admin,
            viewer,
        })
    }

    fn admin_token(&self) -> anyhow::Result<&str> {
        self.admin
            .as_deref()
            .context("this needs --admin-token (or LIVEHUB_ADMIN_TOKEN)")
    }

    fn viewer_token(&self) -> anyhow::Result<&str> {
        self.viewer
            .as_deref()
            .context("this needs --viewer-token or --admin-token")
    }

    async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        token: &str,
        body: Option<Value>,
    ) -> anyhow::Result<(u16, String)> {
        let mut rb = self
            .http
            .request(method.clone(), format!("{}{}", self.base, path))
            .bearer_auth(token);
        if let Some(b) = body {
            rb = rb.json(&b);
        }
        let r = rb
            .send()
            .await
            .with_context(|| format!("{method} {path}"))?;
        let status = r.status().as_u16();
        let text = r
            .text()
            .await
            .with_context(|| format!("{method} {path}: reading the body"))?;
        Ok((status, text))
    }

    async fn json_ok(
        &self,
        method: reqwest::Method,
        path: &str,
        token: &str,
        body: Option<Value>,
    ) -> anyhow::Result<Value> {
        let (status, text) = self.call(method.clone(), path, token, body).await?;
        if status != 200 {
            bail!(
                "{method} {path}: HTTP {status}: {}",
                text.chars().take(300).collect::<String>()
            );
        }
        serde_json::from_str(&text)
            .with_context(|| format!("{method} {path}: not JSON: {text:.200}"))
    }

    pub async fn put_room(&self, room: &str, title: &str) -> anyhow::Result<Value> {
        let t = self.admin_token()?.to_owned();
        self.json_ok(
            reqwest::Method::PUT,
            &format!("/api/rooms/{room}"),
            &t,
            Some(json!({"title": title})),
        )
        .await
    }

    pub async fn put_sku(&self, room: &str, sku: &str, body: Value) -> anyhow::Result<Value> {
        let t = self.admin_token()?.to_owned();
        self.json_ok(
            reqwest::Method::PUT,
            &format!("/api/rooms/{room}/skus/{sku}"),
            &t,
            Some(body),
        )
        .await
    }

    pub async fn open(&self, room: &str, sku: &str) -> anyhow::Result<Value> {
        let t = self.admin_token()?.to_owned();
        self.json_ok(
            reqwest::Method::POST,
            &format!("/api/rooms/{room}/skus/{sku}/open"),
            &t,
            None,
        )
        .await
    }

    /// `/stats`; `None` while the server answers 503 (no dashboard snapshot yet).
    pub async fn stats(&self, room: &str) -> anyhow::Result<Option<Value>> {
        let t = self.viewer_token()?.to_owned();
        let path = format!("/api/rooms/{room}/stats");
        let (status, text) = self.call(reqwest::Method::GET, &path, &t, None).await?;
        match status {
            200 => Ok(Some(
                serde_json::from_str(&text).context("stats: not JSON")?,
            )),
            503 => Ok(None),
            s => bail!("GET {path}: HTTP {s}: {text:.300}"),
        }
    }

    pub async fn audit(&self, room: &str) -> anyhow::Result<Value> {
        let t = self.viewer_token()?.to_owned();
        self.json_ok(
            reqwest::Method::GET,
            &format!("/api/rooms/{room}/audit"),
            &t,
            None,
        )
        .await
    }

    /// Every order with `seq > after`, paging 10,000 at a time until a short page.
    pub async fn export(&self, room: &str, after: u64) -> anyhow::Result<Vec<Order>> {
        let orders: Vec<Order> = self
            .pages(&format!("/api/rooms/{room}/orders?after_seq="), after)
            .await?;
        // The seq must only increase (the other lines' order is for the checks to judge).
        let mut last = after;
        for o in &orders {
            if o.seq <= last {
                bail!("export: seq {} after {} is not increasing", o.seq, last);
            }
            last = o.seq;
        }
        Ok(orders)
    }

    /// The whole orders export with its v2 statuses.
    pub async fn export_paid(&self, room: &str) -> anyhow::Result<Vec<PaidOrder>> {
        self.pages(&format!("/api/rooms/{room}/orders?after_seq="), 0)
            .await
    }

    /// The whole change feed (`/order-events`), oldest first.
    pub async fn order_events(&self, room: &str) -> anyhow::Result<Vec<OrderEvent>> {
        self.pages(&format!("/api/rooms/{room}/order-events?after="), 0)
            .await
    }

    /// Reads an admin NDJSON listing `{path_after}{cursor}&limit=10000` page by page, each
    /// page after the last line's cursor, until a short page. A cursor that does not move on
    /// ends the reading (the lines so far are returned for the checks to judge).
    async fn pages<T: DeserializeOwned + Paged>(
        &self,
        path_after: &str,
        after: u64,
    ) -> anyhow::Result<Vec<T>> {
        const PAGE: usize = 10_000;
        let t = self.admin_token()?.to_owned();
        let mut out: Vec<T> = Vec::new();
        let mut after = after;
        for _ in 0..MAX_EXPORT_PAGES {
            let path = format!("{path_after}{after}&limit={PAGE}");
            let (status, text) = self.call(reqwest::Method::GET, &path, &t, None).await?;
            if status != 200 {
                bail!("GET {path}: HTTP {status}: {text:.300}");
            }
            let mut n = 0;
            for line in text.lines().filter(|l| !l.trim().is_empty()) {
                let o: T = serde_json::from_str(line).with_context(|| {
                    format!("GET {path}: a line that does not parse: {line:.200}")
                })?;
                out.push(o);
                n += 1;
            }
            let last = out.last().map(Paged::cursor).unwrap_or(after);
            if n < PAGE || last <= after {
                return Ok(out);
            }
            after = last;
        }
        bail!("{path_after}: more than {MAX_EXPORT_PAGES} pages")
    }

    /// `livehub_process_resident_memory_bytes` and the `livehub_connections` gauges.
    pub async fn metrics(&self) -> anyhow::Result<Metrics> {
        let r = self
            .http
            .get(format!("{}/metrics", self.base))
            .send()
            .await
            .context("GET /metrics")?;
        let text = r.text().await?;
        let mut m = Metrics::default();
        for line in text.lines() {
            if line.starts_with('#') {
                continue;
            }
            let Some((name, value)) = line.rsplit_once(' ') else {
                continue;
            };
            let Ok(v) = value.trim().parse::<f64>() else {
                continue;
            };
            if name == "livehub_process_resident_memory_bytes" {
                m.rss_bytes = Some(v);
            } else if name.starts_with("livehub_connections{") && name.contains("kind=\"buyer\"") {
                m.buyer_connections = Some(v);
            } else if name.starts_with("livehub_connections{")
                && name.contains("kind=\"dashboard\"")
            {
                m.dashboard_connections = Some(v);
            }
        }
        Ok(m)
    }
}

#[derive(Debug, Default, Clone, Copy)]
pub struct Metrics {
    pub rss_bytes: Option<f64>,
    pub buyer_connections: Option<f64>,
    pub dashboard_connections: Option<f64>,
}

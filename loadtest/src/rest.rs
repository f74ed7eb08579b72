//! The server's REST API as this tool uses it.

use std::time::Duration;

use anyhow::{bail, Context as _};
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
        const PAGE: usize = 10_000;
        let t = self.admin_token()?.to_owned();
        let mut out = Vec::new();
        let mut after = after;
        for _ in 0..MAX_EXPORT_PAGES {
            let path = format!("/api/rooms/{room}/orders?after_seq={after}&limit={PAGE}");
            let (status, text) = self.call(reqwest::Method::GET, &path, &t, None).await?;
            if status != 200 {
                bail!("GET {path}: HTTP {status}: {text:.300}");
            }
            let mut n = 0;
            for line in text.lines().filter(|l| !l.trim().is_empty()) {
                let o: Order = serde_json::from_str(line)
                    .with_context(|| format!("export line is not an order: {line:.200}"))?;
                if o.seq <= after {
                    bail!("export: seq {} after {} is not increasing", o.seq, after);
                }
                after = o.seq;
                out.push(o);
                n += 1;
            }
            if n < PAGE {
                return Ok(out);
            }
        }
        bail!("export: more than {MAX_EXPORT_PAGES} pages")
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

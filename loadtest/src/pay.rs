//! Payment notices as a payment provider's adapter sends them (`POST /api/payments`, protocol
//! v2 "Orders that must be paid"): the body, its HMAC-SHA256 signature over
//! `"<timestamp>.<raw body>"` with the payment secret, and a client that posts them and reads
//! the answer.

use std::sync::Arc;
use std::time::{Duration, Instant};

use hmac::{Hmac, Mac};
use serde::Serialize;
use serde_json::Value;
use sha2::Sha256;

/// Longest one notice may take before it counts as unanswered.
const NOTICE_TIMEOUT: Duration = Duration::from_secs(15);

/// `sha256=<lowercase hex of HMAC-SHA256(key = secret, msg = "<ts_ms>.<body>")>`, the value of
/// `X-Livehub-Signature`.
pub fn signature(secret: &[u8], ts_ms: i64, body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret).expect("HMAC takes a key of any length");
    mac.update(ts_ms.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

/// A notice's fields, in the contract's order.
#[derive(Serialize)]
struct Notice<'a> {
    order: &'a str,
    room: &'a str,
    payment_id: &'a str,
    amount_fen: u64,
    paid_at_ms: i64,
}

/// The body of a notice, exactly the bytes that are signed and sent.
pub fn notice_body(
    order: &str,
    room: &str,
    payment_id: &str,
    amount_fen: u64,
    paid_at_ms: i64,
) -> String {
    serde_json::to_string(&Notice {
        order,
        room,
        payment_id,
        amount_fen,
        paid_at_ms,
    })
    .expect("a notice serializes")
}

/// Why a notice was sent: what the scenario meant it to exercise.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum PayKind {
    /// A buyer paying within the time allowed.
    OnTime,
    /// A buyer who bought released stock, paying.
    Resold,
    /// The same payment_id again (expects 200 with the same status).
    Duplicate,
    /// A payment for an order that expired (expects 409 `order_expired`, counted as late).
    AfterExpiry,
    /// A payment for an order the buyer cancelled (expects 409 `order_cancelled`, counted).
    AfterCancel,
    /// Another payment_id for a paid order (expects 409 `already_paid`, counted).
    Second,
}

/// What the server answered a notice.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    /// The HTTP status; 0 when no answer came (transport error or timeout).
    pub http: u16,
    /// `status` of a 200 (`paid`), or `error` of any other answer, or a transport error.
    pub code: String,
    pub latency_us: u64,
}

impl Answer {
    /// A late payment the server kept and counted: `order_expired`, `order_cancelled` or
    /// `already_paid`.
    pub fn is_late(&self) -> bool {
        self.http == 409
            && matches!(
                self.code.as_str(),
                "order_expired" | "order_cancelled" | "already_paid"
            )
    }

    pub fn is_paid(&self) -> bool {
        self.http == 200 && self.code == "paid"
    }
}

/// One notice the client sent and what came of it (the client's own log).
#[derive(Debug, Clone)]
pub struct PaymentLog {
    pub order: String,
    pub payment_id: String,
    pub amount_fen: u64,
    pub kind: PayKind,
    pub answer: Answer,
}

/// Sends signed notices to one server for one room.
#[derive(Clone)]
pub struct Payer {
    http: reqwest::Client,
    url: String,
    secret: Arc<[u8]>,
    pub room: String,
}

impl Payer {
    /// `pool` is how many idle connections to the server the client keeps.
    pub fn new(http_base: &str, secret: &str, room: &str, pool: usize) -> anyhow::Result<Payer> {
        let http = reqwest::Client::builder()
            .timeout(NOTICE_TIMEOUT)
            .pool_max_idle_per_host(pool)
            .tcp_nodelay(true)
            .build()?;
        Ok(Payer {
            http,
            url: format!("{http_base}/api/payments"),
            secret: Arc::from(secret.as_bytes()),
            room: room.to_owned(),
        })
    }

    /// Posts one signed notice, stamped now, and waits for the answer.
    pub async fn notify(&self, order: &str, payment_id: &str, amount_fen: u64) -> Answer {
        let now = crate::net::now_ms();
        let body = notice_body(order, &self.room, payment_id, amount_fen, now);
        let sig = signature(&self.secret, now, body.as_bytes());
        let t = Instant::now();
        let res = self
            .http
            .post(&self.url)
            .header("content-type", "application/json")
            .header("x-livehub-timestamp", now.to_string())
            .header("x-livehub-signature", sig)
            .body(body)
            .send()
            .await;
        let (http, code) = match res {
            Err(e) => (0, format!("transport: {e}")),
            Ok(r) => {
                let http = r.status().as_u16();
                match r.bytes().await {
                    Err(e) => (0, format!("transport: {e}")),
                    Ok(b) => (http, answer_code(http, &b)),
                }
            }
        };
        Answer {
            http,
            code,
            latency_us: t.elapsed().as_micros() as u64,
        }
    }
}

/// The code of an answer body: `status` of a 200, `error` otherwise, or what the body was.
fn answer_code(http: u16, body: &[u8]) -> String {
    let v: Option<Value> = serde_json::from_slice(body).ok();
    let field = if http == 200 { "status" } else { "error" };
    match v
        .as_ref()
        .and_then(|v| v.get(field))
        .and_then(Value::as_str)
    {
        Some(s) => s.to_owned(),
        None => format!(
            "HTTP {http}: {}",
            String::from_utf8_lossy(body)
                .chars()
                .take(80)
                .collect::<String>()
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The expected value is `openssl dgst -sha256 -hmac S` of the same message:
    /// `printf '%s' '1700000000000.{"order":"O1"}' | openssl dgst -sha256 -hmac 'S'`.
    #[test]
    fn signature_matches_openssl() {
        assert_eq!(
            signature(b"S", 1_700_000_000_000, br#"{"order":"O1"}"#),
            "sha256=6e9096d3b5cbdfba3b2a9c230e62558d0ef6422166994bca25c79688448665a7"
        );
        // A key longer than SHA-256's block (HMAC hashes it first), over a whole notice body:
        // `printf '%s' '1712345678901.<body>' | openssl dgst -sha256 -hmac '<key>'`.
        let body = notice_body("O12", "r1", "pay-1", 9900, 1_712_345_678_900);
        assert_eq!(
            body,
            r#"{"order":"O12","room":"r1","payment_id":"pay-1","amount_fen":9900,"paid_at_ms":1712345678900}"#
        );
        assert_eq!(
            signature(
                b"a-secret-longer-than-one-sha256-block-of-sixty-four-bytes-0123456789",
                1_712_345_678_901,
                body.as_bytes()
            ),
            "sha256=318c18e597907ef0812737f53ce33ba59d87a68a09d970666f02562dc996c86d"
        );
    }

    #[test]
    fn body_has_the_contract_fields() {
        let b = notice_body("O12", "r1", "pay-1", 9900, 1_700_000_000_123);
        let v: Value = serde_json::from_str(&b).unwrap();
        assert_eq!(v["order"], "O12");
        assert_eq!(v["room"], "r1");
        assert_eq!(v["payment_id"], "pay-1");
        assert_eq!(v["amount_fen"], 9900);
        assert_eq!(v["paid_at_ms"], 1_700_000_000_123_i64);
        assert_eq!(v.as_object().unwrap().len(), 5);
    }

    #[test]
    fn answers_are_read_by_status() {
        assert_eq!(
            answer_code(200, br#"{"order":"O1","status":"paid"}"#),
            "paid"
        );
        assert_eq!(
            answer_code(409, br#"{"error":"order_expired","detail":"x"}"#),
            "order_expired"
        );
        assert_eq!(answer_code(502, b"bad gateway"), "HTTP 502: bad gateway");
        let late = Answer {
            http: 409,
            code: "already_paid".into(),
            latency_us: 1,
        };
        assert!(late.is_late() && !late.is_paid());
        let mismatch = Answer {
            http: 409,
            code: "amount_mismatch".into(),
            latency_us: 1,
        };
        assert!(!mismatch.is_late());
    }
}

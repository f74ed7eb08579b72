//! One payment notice: its signature ([`verify`], [`sign`]) and its body ([`parse`]).
//!
//! The wire: headers `X-Livehub-Timestamp: <unix ms>` and
//! `X-Livehub-Signature: sha256=<hex of HMAC-SHA256(payment secret, "<timestamp>.<raw body>")>`,
//! and a JSON body `{"order", "room", "payment_id", "amount_fen", "paid_at_ms"}`.
//!
//! Choices the contract leaves open, made here:
//! - The MAC is over the timestamp header's text exactly as sent, so the hub never re-formats
//!   what was signed. That text must be decimal digits only (no sign, no spaces).
//! - Senders write lowercase hex (the contract's form, what `openssl dgst -hex` prints), and
//!   the hub accepts uppercase and mixed case too: the MAC is compared as bytes, so case
//!   changes nothing that is checked, and some platforms' hex encoders print uppercase.
//! - Every header problem (missing, malformed, not matching) is `bad_signature`, 401: without a
//!   well-formed timestamp and signature nothing can be verified. The signature is checked
//!   before the timestamp's age, so `stale_timestamp` is only ever said to a sender that holds
//!   the secret (a replay, or a clock that drifted).
//! - Fields the body does not need are ignored, so a provider may send more than the contract
//!   names; the signature covers them anyway.

use axum::http::StatusCode;
use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::Sha256;

use crate::ids;

/// How far a notice's timestamp may be from the hub's clock, either way, in milliseconds:
/// 300 s, room for a provider's retries and clocks a little apart, little for a replay.
pub const MAX_SKEW_MS: i64 = 300_000;

/// Longest `payment_id`: providers' transaction ids run longer than the 64 of other ids.
pub const MAX_PAYMENT_ID_LEN: usize = 128;

/// The header with the Unix milliseconds the notice was signed at (lowercase, as `http`'s
/// header names are).
pub const TIMESTAMP_HEADER: &str = "x-livehub-timestamp";

/// The header with `sha256=<hex>`, the notice's signature.
pub const SIGNATURE_HEADER: &str = "x-livehub-signature";

/// What comes before the hex of the signature.
const SIGNATURE_PREFIX: &str = "sha256=";

/// Hex digits of an HMAC-SHA256.
const SIGNATURE_HEX_LEN: usize = 64;

/// A payment notice's body, checked: an order of a room was paid `amount_fen` by the payment
/// `payment_id` at `paid_at_ms`. Only [`parse`] makes checked ones; unknown fields are ignored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PaymentNotice {
    /// The order paid (an id).
    pub order: String,
    /// The room the order belongs to (an id).
    pub room: String,
    /// The provider's id of this payment: 1 to [`MAX_PAYMENT_ID_LEN`] of `A-Z a-z 0-9 _ - . :`.
    /// A notice repeated with the same one changes nothing.
    pub payment_id: String,
    /// The amount paid, in fen; at least 1.
    pub amount_fen: u64,
    /// When the buyer paid, Unix milliseconds; not negative.
    pub paid_at_ms: i64,
}

/// Why a notice was refused. [`NoticeError::code`] and [`NoticeError::status`] are its answer;
/// the `Display` text is the answer's `detail`: fixed sentences and field names, never a
/// header's or a field's value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NoticeError {
    /// A header is missing or malformed, or the signature does not match: 401 `bad_signature`.
    /// The text says which, for the integrator.
    #[error("{0}")]
    BadSignature(&'static str),
    /// Signed right, but the timestamp is more than [`MAX_SKEW_MS`] from the hub's clock:
    /// 401 `stale_timestamp`. `skew_ms` is the timestamp less the hub's clock.
    #[error(
        "X-Livehub-Timestamp is {}.{:03} s {} the hub's clock; at most 300 s either way is \
         accepted",
        .skew_ms.unsigned_abs() / 1000,
        .skew_ms.unsigned_abs() % 1000,
        if *.skew_ms > 0 { "ahead of" } else { "behind" }
    )]
    StaleTimestamp {
        /// The notice's timestamp less the hub's clock, in milliseconds.
        skew_ms: i64,
    },
    /// The body is not JSON, or a field is missing, of the wrong type or out of bounds:
    /// 400 `bad_request`; the text names the field.
    #[error("{0}")]
    BadRequest(String),
}

impl NoticeError {
    /// The answer's `error` code: `bad_signature`, `stale_timestamp` or `bad_request`.
    pub fn code(&self) -> &'static str {
        match self {
            NoticeError::BadSignature(_) => "bad_signature",
            NoticeError::StaleTimestamp { .. } => "stale_timestamp",
            NoticeError::BadRequest(_) => "bad_request",
        }
    }

    /// The answer's status: 401 for the signature and the timestamp, 400 for the body.
    pub fn status(&self) -> StatusCode {
        match self {
            NoticeError::BadSignature(_) | NoticeError::StaleTimestamp { .. } => {
                StatusCode::UNAUTHORIZED
            }
            NoticeError::BadRequest(_) => StatusCode::BAD_REQUEST,
        }
    }
}

/// The MAC of a notice: HMAC-SHA256 keyed with `secret` over `"<timestamp>.<body>"`.
fn mac(secret: &[u8], timestamp: &str, body: &[u8]) -> Hmac<Sha256> {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret).expect("HMAC takes a key of any length");
    mac.update(timestamp.as_bytes());
    mac.update(b".");
    mac.update(body);
    mac
}

/// The timestamp header's milliseconds: decimal digits only, within `i64`.
fn parse_timestamp(text: &str) -> Option<i64> {
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    text.parse().ok()
}

/// The 32 bytes of `sha256=<64 hex digits>` (either case).
fn parse_signature(text: &str) -> Option<Vec<u8>> {
    let hex_digits = text.strip_prefix(SIGNATURE_PREFIX)?;
    if hex_digits.len() != SIGNATURE_HEX_LEN {
        return None;
    }
    hex::decode(hex_digits).ok()
}

/// Checks a notice's headers against `secret` and the hub's clock `now_ms`: the signature
/// must be the HMAC-SHA256 of `"<timestamp>.<body>"` (compared in constant time), then the
/// timestamp must be within [`MAX_SKEW_MS`] of `now_ms`, either way. `timestamp` and
/// `signature` are the headers' values, `None` when absent; `body` is the raw body, as
/// received. Errors: [`NoticeError::BadSignature`] or [`NoticeError::StaleTimestamp`], never
/// `BadRequest`. Call it before [`parse`]: an unsigned body is not worth reading.
pub fn verify(
    secret: &[u8],
    timestamp: Option<&str>,
    signature: Option<&str>,
    body: &[u8],
    now_ms: i64,
) -> Result<(), NoticeError> {
    let timestamp = timestamp.ok_or(NoticeError::BadSignature(
        "missing X-Livehub-Timestamp header",
    ))?;
    let timestamp_ms = parse_timestamp(timestamp).ok_or(NoticeError::BadSignature(
        "X-Livehub-Timestamp is not Unix milliseconds (decimal digits only)",
    ))?;
    let signature = signature.ok_or(NoticeError::BadSignature(
        "missing X-Livehub-Signature header",
    ))?;
    let expected = parse_signature(signature).ok_or(NoticeError::BadSignature(
        "X-Livehub-Signature is not sha256=<64 hex digits>",
    ))?;
    mac(secret, timestamp, body)
        .verify_slice(&expected)
        .map_err(|_| {
            NoticeError::BadSignature(
                "X-Livehub-Signature does not match: it must be the HMAC-SHA256 of \
                 \"<X-Livehub-Timestamp>.<raw body>\" with the payment secret",
            )
        })?;
    // i128: no pair of i64 overflows the difference.
    let skew = i128::from(timestamp_ms) - i128::from(now_ms);
    if skew.abs() > i128::from(MAX_SKEW_MS) {
        let skew_ms = i64::try_from(skew).unwrap_or(if skew > 0 { i64::MAX } else { i64::MIN });
        return Err(NoticeError::StaleTimestamp { skew_ms });
    }
    Ok(())
}

/// The `X-Livehub-Signature` value of `body` sent with `X-Livehub-Timestamp: <timestamp_ms>`:
/// `sha256=` and the lowercase hex of the MAC. For senders: tests, the demo and the load tool.
/// A negative `timestamp_ms` signs fine but never verifies (the header takes digits only).
pub fn sign(secret: &[u8], timestamp_ms: i64, body: &[u8]) -> String {
    let tag = mac(secret, &timestamp_ms.to_string(), body).finalize();
    format!("{SIGNATURE_PREFIX}{}", hex::encode(tag.into_bytes()))
}

/// Reads a notice's body: one JSON object with every field, of the right types and within
/// bounds (see [`PaymentNotice`]); unknown fields are ignored. The error is
/// [`NoticeError::BadRequest`] with a detail that names the field.
pub fn parse(body: &[u8]) -> Result<PaymentNotice, NoticeError> {
    let notice: PaymentNotice =
        crate::json_body::parse_object(body).map_err(NoticeError::BadRequest)?;
    check(&notice).map_err(NoticeError::BadRequest)?;
    Ok(notice)
}

/// The bounds serde's types do not already hold.
fn check(n: &PaymentNotice) -> Result<(), String> {
    ids::check_named("order", &n.order)?;
    ids::check_named("room", &n.room)?;
    check_payment_id(&n.payment_id)?;
    if n.amount_fen == 0 {
        return Err("amount_fen must be at least 1".to_owned());
    }
    if n.paid_at_ms < 0 {
        return Err("paid_at_ms must not be negative".to_owned());
    }
    Ok(())
}

/// `payment_id`: the id grammar's characters, up to [`MAX_PAYMENT_ID_LEN`] of them.
fn check_payment_id(id: &str) -> Result<(), String> {
    if id.is_empty() {
        return Err("payment_id is empty".to_owned());
    }
    if id.len() > MAX_PAYMENT_ID_LEN {
        return Err(format!(
            "payment_id is longer than {MAX_PAYMENT_ID_LEN} characters"
        ));
    }
    if !id.bytes().all(ids::is_id_byte) {
        return Err("payment_id has a character outside A-Z a-z 0-9 _ - . :".to_owned());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &[u8] = b"whsec-test-7d41";
    const TS: i64 = 1_700_000_000_123;
    const BODY: &str = r#"{"order":"O12","room":"live1","payment_id":"wx-4200001234","amount_fen":9900,"paid_at_ms":1700000000000}"#;

    fn check_headers(ts: Option<&str>, sig: Option<&str>, body: &[u8]) -> Result<(), NoticeError> {
        verify(SECRET, ts, sig, body, TS)
    }

    fn signed() -> (String, String) {
        (TS.to_string(), sign(SECRET, TS, BODY.as_bytes()))
    }

    fn is_bad_signature(r: Result<(), NoticeError>) -> bool {
        matches!(r, Err(NoticeError::BadSignature(_)))
    }

    /// What the README's shell line prints for this secret, timestamp and body:
    /// `printf '%s.%s' "$ts" "$body" | openssl dgst -sha256 -hmac "$SECRET" -hex`
    /// (OpenSSL 3.0), so the documented way to sign agrees with the hub's.
    #[test]
    fn sign_agrees_with_openssl() {
        assert_eq!(
            sign(SECRET, TS, BODY.as_bytes()),
            "sha256=48a9e572404d45f03d4d3860085f78c4ae8eeff587062e53d14b5ee2f1ca833e"
        );
    }

    #[test]
    fn a_signed_notice_verifies_and_parses() {
        let (ts, sig) = signed();
        assert_eq!(
            check_headers(Some(&ts), Some(&sig), BODY.as_bytes()),
            Ok(())
        );
        assert_eq!(
            parse(BODY.as_bytes()),
            Ok(PaymentNotice {
                order: "O12".into(),
                room: "live1".into(),
                payment_id: "wx-4200001234".into(),
                amount_fen: 9900,
                paid_at_ms: 1_700_000_000_000,
            })
        );
        // A notice serialized and signed by a sender reads back the same.
        let n = parse(BODY.as_bytes()).unwrap();
        let body = serde_json::to_vec(&n).unwrap();
        let sig = sign(SECRET, TS, &body);
        assert_eq!(check_headers(Some(&ts), Some(&sig), &body), Ok(()));
        assert_eq!(parse(&body), Ok(n));
    }

    #[test]
    fn a_changed_notice_or_another_secret_does_not_verify() {
        let (ts, sig) = signed();
        let mut body = BODY.as_bytes().to_vec();
        for i in [0, 30, body.len() - 1] {
            body[i] ^= 1;
            assert!(is_bad_signature(check_headers(
                Some(&ts),
                Some(&sig),
                &body
            )));
            body[i] ^= 1;
        }
        let mut longer = body.clone();
        longer.push(b' ');
        assert!(is_bad_signature(check_headers(
            Some(&ts),
            Some(&sig),
            &longer
        )));
        assert!(is_bad_signature(verify(
            b"whsec-test-7d42",
            Some(&ts),
            Some(&sig),
            &body,
            TS
        )));
        // The timestamp is signed: another one, even a second later, breaks the signature.
        let later = (TS + 1000).to_string();
        assert!(is_bad_signature(check_headers(
            Some(&later),
            Some(&sig),
            &body
        )));
        // So are its exact digits: a leading zero is another text.
        let padded = format!("0{ts}");
        assert!(is_bad_signature(check_headers(
            Some(&padded),
            Some(&sig),
            &body
        )));
        // Any bit of the signature.
        let mut flipped = sig.clone().into_bytes();
        let last = flipped.len() - 1;
        flipped[last] = if flipped[last] == b'0' { b'1' } else { b'0' };
        let flipped = String::from_utf8(flipped).unwrap();
        assert!(is_bad_signature(check_headers(
            Some(&ts),
            Some(&flipped),
            &body
        )));
    }

    #[test]
    fn missing_or_garbled_headers_are_bad_signatures() {
        let (ts, sig) = signed();
        let body = BODY.as_bytes();
        let hex = &sig["sha256=".len()..];
        let cases: Vec<(Option<&str>, Option<String>, &str)> = vec![
            (None, Some(sig.clone()), "missing X-Livehub-Timestamp"),
            (Some(&ts), None, "missing X-Livehub-Signature"),
            (None, None, "missing X-Livehub-Timestamp"),
            (Some(""), Some(sig.clone()), "not Unix milliseconds"),
            (
                Some("+1700000000123"),
                Some(sig.clone()),
                "not Unix milliseconds",
            ),
            (Some("-1"), Some(sig.clone()), "not Unix milliseconds"),
            (
                Some(" 1700000000123"),
                Some(sig.clone()),
                "not Unix milliseconds",
            ),
            (
                Some("1700000000.123"),
                Some(sig.clone()),
                "not Unix milliseconds",
            ),
            (
                Some("99999999999999999999"),
                Some(sig.clone()),
                "not Unix milliseconds",
            ),
            (Some(&ts), Some(hex.to_owned()), "not sha256="),
            (Some(&ts), Some(format!("sha1={hex}")), "not sha256="),
            (Some(&ts), Some(format!("SHA256={hex}")), "not sha256="),
            (
                Some(&ts),
                Some(format!("sha256={}", &hex[..63])),
                "not sha256=",
            ),
            (Some(&ts), Some(format!("{sig}0")), "not sha256="),
            (
                Some(&ts),
                Some(format!("sha256={}zz", &hex[..62])),
                "not sha256=",
            ),
            (
                Some(&ts),
                Some(format!("sha256= {}", &hex[..63])),
                "not sha256=",
            ),
            (Some(&ts), Some("sha256=".to_owned()), "not sha256="),
            (Some(&ts), Some(format!("{sig},{sig}")), "not sha256="),
        ];
        for (t, s, says) in cases {
            match check_headers(t, s.as_deref(), body) {
                Err(e @ NoticeError::BadSignature(_)) => {
                    assert!(e.to_string().contains(says), "{t:?} {s:?}: {e}");
                    assert_eq!(
                        (e.code(), e.status()),
                        ("bad_signature", StatusCode::UNAUTHORIZED)
                    );
                }
                other => panic!("{t:?} {s:?}: {other:?}"),
            }
        }
    }

    /// Decided: uppercase and mixed-case hex verify (see the module doc).
    #[test]
    fn uppercase_hex_is_accepted() {
        let (ts, sig) = signed();
        let upper = format!("sha256={}", sig["sha256=".len()..].to_ascii_uppercase());
        assert_eq!(
            check_headers(Some(&ts), Some(&upper), BODY.as_bytes()),
            Ok(())
        );
        let mixed: String = sig["sha256=".len()..]
            .char_indices()
            .map(|(i, c)| {
                if i % 2 == 0 {
                    c.to_ascii_uppercase()
                } else {
                    c
                }
            })
            .collect();
        let mixed = format!("sha256={mixed}");
        assert_eq!(
            check_headers(Some(&ts), Some(&mixed), BODY.as_bytes()),
            Ok(())
        );
    }

    #[test]
    fn timestamps_more_than_300_s_off_are_stale() {
        let body = BODY.as_bytes();
        for (offset_ms, ok) in [
            (0, true),
            (MAX_SKEW_MS, true),
            (-MAX_SKEW_MS, true),
            (301_000, false),
            (-301_000, false),
            (MAX_SKEW_MS + 1, false),
            (-MAX_SKEW_MS - 1, false),
        ] {
            let at = TS + offset_ms;
            let sig = sign(SECRET, at, body);
            let r = verify(SECRET, Some(&at.to_string()), Some(&sig), body, TS);
            if ok {
                assert_eq!(r, Ok(()), "{offset_ms}");
            } else {
                let e = r.unwrap_err();
                assert_eq!(e, NoticeError::StaleTimestamp { skew_ms: offset_ms });
                assert_eq!(
                    (e.code(), e.status()),
                    ("stale_timestamp", StatusCode::UNAUTHORIZED)
                );
                let side = if offset_ms > 0 { "ahead of" } else { "behind" };
                assert!(e.to_string().contains(side), "{e}");
                let secs = format!(
                    " {}.{:03} s ",
                    offset_ms.abs() / 1000,
                    offset_ms.abs() % 1000
                );
                assert!(e.to_string().contains(&secs), "{e}");
            }
        }
        // Far off either way, the clock's extremes included: no overflow, still stale.
        let sig0 = sign(SECRET, 0, body);
        assert!(matches!(
            verify(SECRET, Some("0"), Some(&sig0), body, i64::MAX),
            Err(NoticeError::StaleTimestamp {
                skew_ms: i64::MIN..=-1
            })
        ));
        let sig_max = sign(SECRET, i64::MAX, body);
        assert!(matches!(
            verify(
                SECRET,
                Some(&i64::MAX.to_string()),
                Some(&sig_max),
                body,
                i64::MIN
            ),
            Err(NoticeError::StaleTimestamp { skew_ms: i64::MAX })
        ));
        // A forged notice is told its signature is bad, however stale its timestamp.
        let forged = sign(b"not-the-secret", 0, body);
        assert!(is_bad_signature(verify(
            SECRET,
            Some("0"),
            Some(&forged),
            body,
            TS
        )));
    }

    fn bad_request(body: &str) -> String {
        match parse(body.as_bytes()) {
            Err(e @ NoticeError::BadRequest(_)) => {
                assert_eq!(
                    (e.code(), e.status()),
                    ("bad_request", StatusCode::BAD_REQUEST)
                );
                e.to_string()
            }
            other => panic!("{body}: {other:?}"),
        }
    }

    /// The notice with one field replaced by `value` (raw JSON), or left out for `None`.
    fn with(field: &str, value: Option<&str>) -> String {
        let mut v: serde_json::Map<String, serde_json::Value> = serde_json::from_str(BODY).unwrap();
        match value {
            Some(raw) => v.insert(field.to_owned(), serde_json::from_str(raw).unwrap()),
            None => v.remove(field),
        };
        serde_json::Value::Object(v).to_string()
    }

    #[test]
    fn body_errors_name_the_field() {
        for field in ["order", "room", "payment_id", "amount_fen", "paid_at_ms"] {
            let d = bad_request(&with(field, None));
            assert!(d.contains(&format!("missing field `{field}`")), "{d}");
            let d = bad_request(&with(field, Some("true")));
            assert!(d.contains(&format!("{field}: invalid type")), "{d}");
        }
        let long_id = format!("\"{}\"", "a".repeat(65));
        for (field, value, says) in [
            ("order", "\"\"", "order is empty"),
            ("order", long_id.as_str(), "order is longer than 64"),
            ("order", "\"O 12\"", "order has a character outside"),
            ("room", "\"\"", "room is empty"),
            ("room", "\"live/1\"", "room has a character outside"),
            ("payment_id", "\"\"", "payment_id is empty"),
            (
                "payment_id",
                "\"wx#1\"",
                "payment_id has a character outside",
            ),
            (
                "payment_id",
                "\"支付\"",
                "payment_id has a character outside",
            ),
            ("amount_fen", "0", "amount_fen must be at least 1"),
            ("amount_fen", "-1", "amount_fen: invalid value"),
            ("amount_fen", "99.5", "amount_fen: invalid type"),
            ("amount_fen", "\"9900\"", "amount_fen: invalid type"),
            ("amount_fen", "18446744073709551616", "amount_fen"),
            ("paid_at_ms", "-1", "paid_at_ms must not be negative"),
            ("paid_at_ms", "null", "paid_at_ms: invalid type"),
        ] {
            let d = bad_request(&with(field, Some(value)));
            assert!(d.contains(says), "{field}={value}: {d}");
        }
        for (body, says) in [
            ("", "invalid JSON body"),
            ("{", "invalid JSON body"),
            ("[\"O12\",\"live1\",\"p\",1,0]", "expected a JSON object"),
            ("null", "expected a JSON object"),
            ("{} {}", "invalid JSON body"),
        ] {
            let d = bad_request(body);
            assert!(d.contains(says), "{body:?}: {d}");
        }
    }

    #[test]
    fn bounds_that_pass_and_unknown_fields() {
        let id128 = format!(
            "\"{}\"",
            "p:._-Z9".repeat(19).chars().take(128).collect::<String>()
        );
        let n = parse(with("payment_id", Some(&id128)).as_bytes()).unwrap();
        assert_eq!(n.payment_id.len(), MAX_PAYMENT_ID_LEN);
        let id129 = format!("\"{}\"", "p".repeat(129));
        let d = bad_request(&with("payment_id", Some(&id129)));
        assert!(d.contains("payment_id is longer than 128"), "{d}");
        let order64 = format!("\"{}\"", "o".repeat(64));
        assert!(parse(with("order", Some(&order64)).as_bytes()).is_ok());
        assert!(parse(with("amount_fen", Some("1")).as_bytes()).is_ok());
        assert!(parse(with("amount_fen", Some(&u64::MAX.to_string())).as_bytes()).is_ok());
        assert!(parse(with("paid_at_ms", Some("0")).as_bytes()).is_ok());
        // A provider may send more than the contract names.
        let extra = with("currency", Some("\"CNY\""));
        assert_eq!(parse(extra.as_bytes()), parse(BODY.as_bytes()));
    }
}

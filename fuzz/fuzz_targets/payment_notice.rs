//! Payment notices (`payments::verify`, `payments::parse`, `payments::sign`).
//!
//! Invariants: any bytes as headers and body never panic; `verify` only ever answers
//! `bad_signature` or `stale_timestamp` (401), and passes only a notice whose signature is
//! `sign`'s for its timestamp and body, within `MAX_SKEW_MS` of the clock; `parse` passes only
//! a body within every bound that agrees with a plain JSON reading, and refuses with a 400
//! whose detail is never empty. A notice signed with `sign` always verifies within the skew
//! (in lowercase or uppercase hex), is stale beyond it, and fails once its body, timestamp,
//! secret or signature is changed.
//!
//! The first byte picks the kind, so seeds are mostly plain text:
//! - `0`, raw: `<timestamp>\n<signature>\n<body>`, a header written `-` being absent, checked
//!   against [`SECRET`] at the clock [`NOW_MS`];
//! - `1`, signed: 8 bytes of timestamp, 4 of clock offset, 1 picking a change, then the body,
//!   which the target signs itself.
#![no_main]

use libfuzzer_sys::fuzz_target;
use livehub::ids;
use livehub::payments::{
    parse, sign, verify, NoticeError, PaymentNotice, MAX_PAYMENT_ID_LEN, MAX_SKEW_MS,
};
use serde_json::Value;

/// The secret the raw seeds are signed with.
const SECRET: &[u8] = b"fuzz-payment-secret";
/// The hub's clock for raw inputs: the raw seeds are signed at it and around it.
const NOW_MS: i64 = 1_700_000_000_000;

/// A header's value as the route would pass it: `-` is an absent header, and bytes that are
/// not UTF-8 are absent too (`HeaderValue::to_str` fails on them).
fn header(line: &[u8]) -> Option<&str> {
    match std::str::from_utf8(line) {
        Ok("-") | Err(_) => None,
        Ok(s) => Some(s),
    }
}

/// Checks `verify`'s answer; `Ok` must be a genuine signature within the skew.
fn check_verify(
    got: &Result<(), NoticeError>,
    secret: &[u8],
    ts: Option<&str>,
    sig: Option<&str>,
    body: &[u8],
    now: i64,
) {
    match got {
        Ok(()) => {
            let ts = ts.expect("verified without a timestamp");
            let sig = sig.expect("verified without a signature");
            assert!(
                !ts.is_empty() && ts.bytes().all(|b| b.is_ascii_digit()),
                "{ts:?}"
            );
            let ts_ms: i64 = ts.parse().unwrap();
            assert!((i128::from(ts_ms) - i128::from(now)).abs() <= i128::from(MAX_SKEW_MS));
            // `sign` writes the timestamp without leading zeros; for that text the signature
            // is `sign`'s, in any case.
            if ts_ms.to_string() == ts {
                assert_eq!(sig.to_ascii_lowercase(), sign(secret, ts_ms, body));
            }
        }
        Err(e) => {
            assert!(
                matches!(
                    e,
                    NoticeError::BadSignature(_) | NoticeError::StaleTimestamp { .. }
                ),
                "verify said {e:?}"
            );
            assert_eq!(e.status().as_u16(), 401);
            assert!(!e.to_string().is_empty());
        }
    }
}

/// Checks `parse`'s answer against a plain reading of the JSON.
fn check_parse(body: &[u8]) -> Option<PaymentNotice> {
    match parse(body) {
        Ok(n) => {
            assert!(ids::check(&n.order).is_ok(), "{n:?}");
            assert!(ids::check(&n.room).is_ok(), "{n:?}");
            assert!(!n.payment_id.is_empty() && n.payment_id.len() <= MAX_PAYMENT_ID_LEN);
            assert!(n.payment_id.bytes().all(ids::is_id_byte), "{n:?}");
            assert!(n.amount_fen >= 1 && n.paid_at_ms >= 0, "{n:?}");
            let v: Value = serde_json::from_slice(body).expect("parsed, so it is JSON");
            assert_eq!(v["order"].as_str(), Some(n.order.as_str()));
            assert_eq!(v["room"].as_str(), Some(n.room.as_str()));
            assert_eq!(v["payment_id"].as_str(), Some(n.payment_id.as_str()));
            assert_eq!(v["amount_fen"].as_u64(), Some(n.amount_fen));
            assert_eq!(v["paid_at_ms"].as_i64(), Some(n.paid_at_ms));
            Some(n)
        }
        Err(e) => {
            assert!(matches!(e, NoticeError::BadRequest(_)), "parse said {e:?}");
            assert_eq!((e.code(), e.status().as_u16()), ("bad_request", 400));
            assert!(!e.to_string().is_empty());
            None
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&kind, rest)) = data.split_first() else {
        return;
    };
    match kind {
        0 => {
            let mut lines = rest.splitn(3, |&b| b == b'\n');
            let ts = lines.next().and_then(header);
            let sig = lines.next().and_then(header);
            let body = lines.next().unwrap_or_default();
            let got = verify(SECRET, ts, sig, body, NOW_MS);
            check_verify(&got, SECRET, ts, sig, body, NOW_MS);
            check_parse(body);
        }
        1 => {
            if rest.len() < 13 {
                return;
            }
            let ts_ms = (u64::from_le_bytes(rest[..8].try_into().unwrap()) >> 1) as i64;
            let offset = i32::from_le_bytes(rest[8..12].try_into().unwrap());
            let change = rest[12];
            let body = &rest[13..];
            // Half the inputs land near the skew's edges, where the verdict turns.
            let offset = if change & 0x80 != 0 {
                i64::from(offset) % (MAX_SKEW_MS + 2_000)
            } else {
                i64::from(offset)
            };
            let now = ts_ms.saturating_sub(offset);
            let within = (i128::from(ts_ms) - i128::from(now)).abs() <= i128::from(MAX_SKEW_MS);
            let ts = ts_ms.to_string();
            let sig = sign(SECRET, ts_ms, body);
            assert!(sig.starts_with("sha256=") && sig.len() == 7 + 64, "{sig}");
            assert_eq!(sig, sig.to_ascii_lowercase());

            // As signed, in either case of hex: valid within the skew, stale beyond it.
            let upper = format!("sha256={}", sig[7..].to_ascii_uppercase());
            for s in [&sig, &upper] {
                let got = verify(SECRET, Some(&ts), Some(s), body, now);
                check_verify(&got, SECRET, Some(&ts), Some(s), body, now);
                if within {
                    assert_eq!(got, Ok(()), "a signed notice must verify");
                } else {
                    assert!(
                        matches!(got, Err(NoticeError::StaleTimestamp { .. })),
                        "{got:?}"
                    );
                }
            }

            // One change, and the signature no longer holds (stale or not).
            let mut changed_body = body.to_vec();
            let (c_secret, c_ts, c_sig): (&[u8], String, String) = match (change & 0x7f) % 7 {
                0 if !body.is_empty() => {
                    let i = usize::from(change) % body.len();
                    changed_body[i] ^= 1 << (change % 8);
                    (SECRET, ts.clone(), sig.clone())
                }
                1 => {
                    changed_body.push(b' ');
                    (SECRET, ts.clone(), sig.clone())
                }
                2 => (b"another-secret", ts.clone(), sig.clone()),
                3 => (SECRET, format!("0{ts}"), sig.clone()),
                4 if ts_ms < i64::MAX => (SECRET, (ts_ms + 1).to_string(), sig.clone()),
                5 => {
                    let mut s = sig.clone().into_bytes();
                    let i = 7 + usize::from(change) % 64;
                    s[i] = if s[i] == b'0' { b'1' } else { b'0' };
                    (SECRET, ts.clone(), String::from_utf8(s).unwrap())
                }
                _ => return check_signed_body(body),
            };
            let got = verify(c_secret, Some(&c_ts), Some(&c_sig), &changed_body, now);
            check_verify(
                &got,
                c_secret,
                Some(&c_ts),
                Some(&c_sig),
                &changed_body,
                now,
            );
            assert!(
                matches!(got, Err(NoticeError::BadSignature(_))),
                "a changed notice passed: {got:?}"
            );
            check_signed_body(body);
        }
        _ => {}
    }
});

/// A signed body reads the same as an unsigned one: signing adds nothing to the body's checks.
fn check_signed_body(body: &[u8]) {
    if let Some(n) = check_parse(body) {
        let again = serde_json::to_vec(&n).unwrap();
        assert_eq!(
            parse(&again).as_ref(),
            Ok(&n),
            "a notice reads back the same"
        );
    }
}

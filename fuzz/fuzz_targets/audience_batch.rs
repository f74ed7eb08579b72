//! Audience batches (`audience::batch::parse`).
//!
//! Invariants: any bytes never panic; a batch is taken whole or refused whole; a taken batch
//! holds at most `MAX_EVENTS` events, each within every bound and agreeing with a plain JSON
//! reading of its element (type, user, ts_ms, and the fields its type allows); a refusal names
//! an index within the array and a field only with an index, and its message is never empty.
#![no_main]

use libfuzzer_sys::fuzz_target;
use livehub::audience::batch::{parse, MAX_AHEAD_MS, MAX_EVENTS, MAX_LATE_MS, MAX_LIKES};
use livehub::ids;
use livehub::journal::AudienceKind;
use serde_json::Value;

/// The hub's clock for every input.
const NOW_MS: i64 = 1_700_000_000_000;
/// The room's SKUs.
const SKUS: [&str; 2] = ["A", "FLASH"];

fuzz_target!(|data: &[u8]| {
    match parse(data, NOW_MS, |s| SKUS.contains(&s)) {
        Ok(events) => {
            assert!(events.len() <= MAX_EVENTS);
            // JSON's grammar takes a number too large for an f64 (in a field the parser
            // ignores); a plain reading cannot hold one, and has nothing to compare then.
            let v: Value = match serde_json::from_slice(data) {
                Ok(v) => v,
                Err(e) if e.to_string().starts_with("number out of range") => return,
                Err(e) => panic!("taken, so it is JSON: {e}"),
            };
            let raw = v.as_array().expect("taken, so an array");
            assert_eq!(raw.len(), events.len(), "every element is an event");
            for (e, r) in events.iter().zip(raw) {
                assert_eq!(r["type"].as_str(), Some(e.kind.as_str()));
                assert_eq!(r["user"].as_str(), Some(&*e.user));
                assert!(ids::check(&e.user).is_ok());
                assert_eq!(r["ts_ms"].as_i64(), Some(e.ts_ms));
                assert!((NOW_MS - MAX_LATE_MS..=NOW_MS + MAX_AHEAD_MS).contains(&e.ts_ms));
                assert!(e.count >= 1 && e.count <= MAX_LIKES);
                assert_eq!(r["source"].as_str(), e.source.as_deref());
                assert_eq!(r["ref"].as_str(), e.referrer.as_deref());
                if e.kind != AudienceKind::Enter {
                    assert!(e.source.is_none() && e.referrer.is_none());
                }
                match e.kind {
                    AudienceKind::Click => {
                        let sku = e.sku.as_deref().expect("a click names its SKU");
                        assert!(SKUS.contains(&sku));
                    }
                    _ => assert!(e.sku.is_none()),
                }
                if e.kind != AudienceKind::Like {
                    assert_eq!(e.count, 1);
                }
            }
        }
        Err(e) => {
            assert!(!e.message.is_empty());
            assert!(!e.to_string().is_empty());
            assert!(e.field.is_none() || e.index.is_some(), "{e:?}");
            if let Some(i) = e.index {
                assert!(i < MAX_EVENTS, "{e:?}");
            }
        }
    }
});

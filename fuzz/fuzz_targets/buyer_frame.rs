//! The buyer socket's frame parser, `ClientMsg::parse`, on any UTF-8 text up to 4 KiB (larger
//! frames close the socket before parsing).
//!
//! Invariants: a parsed buy has valid ids and 1 <= qty <= MAX_QTY, and agrees with a plain JSON
//! reading of the same text; a refused frame gets a short, non-empty detail, echoes `req` only
//! when it is a valid id, and its `error` frame is valid JSON.
#![no_main]

use libfuzzer_sys::fuzz_target;
use livehub::ids;
use livehub::protocol::{
    ClientMsg, RejectCode, ServerMsg, MAX_BUYER_FRAME, MAX_FRAME_DETAIL, MAX_QTY,
};
use serde_json::Value;

fuzz_target!(|data: &[u8]| {
    // WebSocket text frames are UTF-8 by the time they reach the parser.
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if text.len() > MAX_BUYER_FRAME {
        return;
    }
    match ClientMsg::parse(text) {
        Ok(msg) => {
            let plain: Value = serde_json::from_str(text).expect("a parsed frame is JSON");
            match msg {
                ClientMsg::Buy(b) => {
                    assert!(ids::check(&b.req).is_ok(), "req {:?}", b.req);
                    assert!(ids::check(&b.sku).is_ok(), "sku {:?}", b.sku);
                    if let Some(r) = &b.referrer {
                        assert!(ids::check(r).is_ok(), "ref {r:?}");
                    }
                    assert!((1..=MAX_QTY).contains(&b.qty), "qty {}", b.qty);
                    assert_eq!(plain["op"], "buy");
                    assert_eq!(plain["req"], b.req.as_str());
                    assert_eq!(plain["sku"], b.sku.as_str());
                    assert_eq!(plain["qty"].as_u64(), Some(b.qty));
                }
                ClientMsg::Status { req } => {
                    assert!(ids::check(&req).is_ok(), "req {req:?}");
                    assert_eq!(plain["op"], "status");
                }
                ClientMsg::Ping {} => assert_eq!(plain["op"], "ping"),
                ClientMsg::Cancel { req, order } => {
                    assert!(ids::check(&req).is_ok(), "req {req:?}");
                    assert!(ids::check(&order).is_ok(), "order {order:?}");
                    assert_eq!(plain["op"], "cancel");
                    assert_eq!(plain["order"], order.as_str());
                }
            }
        }
        Err(e) => {
            assert!(!e.detail.is_empty());
            assert!(
                e.detail.chars().count() <= MAX_FRAME_DETAIL,
                "detail of {} chars: {:?}",
                e.detail.chars().count(),
                e.detail
            );
            if let Some(req) = &e.req {
                assert!(ids::check(req).is_ok(), "echoed req {req:?}");
            }
            let frame = ServerMsg::Error {
                error: RejectCode::BadRequest,
                detail: e.detail,
                req: e.req,
            }
            .to_json();
            let back: Value = serde_json::from_str(&frame).expect("error frames are JSON");
            assert_eq!(back["op"], "error");
        }
    }
});

//! Query strings of `/ws/buy` and `/ws/dashboard` (`handshake`), the id grammar (`ids`), and
//! the REST JSON bodies for rooms, SKUs and stock (`api::parse_json` and `admin::validate_*`).
//!
//! Invariants: an admitted buyer has a valid room and user id, and the user is the token's `sub`
//! whenever a token was given; a dashboard is admitted only with the viewer or admin token; a
//! refusal says what was wrong in a fixed sentence, never echoing the token; `ids::check` agrees with the grammar written out; an accepted
//! body is within every documented bound, and a refused one is a 400 with a detail.
#![no_main]

use base64::Engine;
use libfuzzer_sys::fuzz_target;
use livehub::api::admin::{RoomBody, SkuBody, StockBody};
use livehub::api::handshake::{
    admit_buyer, admit_dashboard, parse_query, BuyQuery, DashboardQuery,
};
use livehub::api::parse_json;
use livehub::auth::Auth;
use livehub::catalog::{
    validate_delta, validate_sku, validate_title, MAX_NAME_CHARS, MAX_PRICE_FEN, MAX_STOCK,
    MAX_TIME_MS,
};
use livehub::ids::{self, KEY_SEPARATOR, MAX_ID_LEN};
use livehub::inventory::SkuDef;

const ADMIN: &str = "fuzz-admin-token";
const VIEWER: &str = "fuzz-viewer-token";
/// The seed corpus holds buyer tokens signed with this secret (see fuzz/README.md).
const SECRET: &str = "fuzz-buyer-secret";

/// What the input is: its first byte picks the kind (low bits) and `--open-buyers` (high bit);
/// the rest is the query string, id or body, so seeds are plain text after one byte.
#[derive(Debug)]
enum Input {
    BuyQuery { raw: String, open_buyers: bool },
    DashboardQuery { raw: String },
    Id(String),
    SkuBody(Vec<u8>),
    StockBody(Vec<u8>),
    RoomBody(Vec<u8>),
}

impl Input {
    fn read(data: &[u8]) -> Option<Input> {
        let (&kind, rest) = data.split_first()?;
        let text = || std::str::from_utf8(rest).ok().map(str::to_owned);
        Some(match kind & 0x7f {
            0 => Input::BuyQuery {
                raw: text()?,
                open_buyers: kind & 0x80 != 0,
            },
            1 => Input::DashboardQuery { raw: text()? },
            2 => Input::Id(text()?),
            3 => Input::SkuBody(rest.to_vec()),
            4 => Input::StockBody(rest.to_vec()),
            5 => Input::RoomBody(rest.to_vec()),
            _ => return None,
        })
    }
}

/// The unverified `sub` of a JWT, to compare with who was admitted.
fn claimed_sub(token: &str) -> Option<String> {
    let payload = token.split('.').nth(1)?;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload)
        .ok()?;
    let v: serde_json::Value = serde_json::from_slice(&bytes).ok()?;
    v.get("sub")?.as_str().map(str::to_owned)
}

fn grammar(id: &str) -> bool {
    (1..=MAX_ID_LEN).contains(&id.len())
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "_-.:".contains(c))
}

/// A refusal is a 400 or 401 whose detail is one of a few fixed sentences, so it can never
/// carry a token (or anything else the client sent) back; a malformed query's detail comes
/// from the query parser and is checked only for being there.
fn check_refusal(status: u16, detail: &str, from_query_parser: bool) {
    assert!(status == 400 || status == 401, "status {status}");
    assert!(!detail.is_empty());
    if from_query_parser {
        return;
    }
    let fixed = [
        "missing room",
        "missing token",
        "invalid token",
        "token is for another room",
        "a viewer or admin token is required",
        "room is empty",
        "room is longer than 64 characters",
        "room has a character outside A-Z a-z 0-9 _ - . :",
    ];
    assert!(
        fixed.contains(&detail),
        "unexpected refusal detail {detail:?}"
    );
}

fuzz_target!(|data: &[u8]| {
    let Some(input) = Input::read(data) else {
        return;
    };
    match input {
        Input::BuyQuery { raw, open_buyers } => {
            let auth = Auth::new(ADMIN, VIEWER, Some(SECRET), open_buyers).unwrap();
            let q: BuyQuery = match parse_query(Some(&raw)) {
                Ok(q) => q,
                Err(r) => return check_refusal(r.status.as_u16(), &r.detail, true),
            };
            match admit_buyer(&auth, &q) {
                Ok(b) => {
                    assert!(ids::check(&b.room).is_ok(), "room {:?}", b.room);
                    assert_eq!(Some(b.room.as_str()), q.room.as_deref());
                    assert!(ids::check(&b.user).is_ok(), "user {:?}", b.user);
                    match q.token.as_deref() {
                        Some(t) => assert_eq!(
                            Some(b.user.to_string()),
                            claimed_sub(t),
                            "a token was given: the user is its sub, never ?user="
                        ),
                        None => {
                            assert!(open_buyers, "?user= without --open-buyers");
                            assert_eq!(Some(b.user.as_ref()), q.user.as_deref());
                        }
                    }
                }
                Err(r) => check_refusal(r.status.as_u16(), &r.detail, false),
            }
        }
        Input::DashboardQuery { raw } => {
            let auth = Auth::new(ADMIN, VIEWER, Some(SECRET), true).unwrap();
            let q: DashboardQuery = match parse_query(Some(&raw)) {
                Ok(q) => q,
                Err(r) => return check_refusal(r.status.as_u16(), &r.detail, true),
            };
            match admit_dashboard(&auth, &q) {
                Ok(room) => {
                    assert!(ids::check(&room).is_ok());
                    assert!(matches!(q.token.as_deref(), Some(ADMIN | VIEWER)));
                }
                Err(r) => check_refusal(r.status.as_u16(), &r.detail, false),
            }
        }
        Input::Id(id) => {
            let ok = ids::check(&id).is_ok();
            assert_eq!(ok, grammar(&id), "{id:?}");
            if ok {
                assert!(!id.contains(KEY_SEPARATOR));
            } else {
                assert!(ids::check_named("sku", &id)
                    .unwrap_err()
                    .starts_with("sku "));
            }
        }
        Input::SkuBody(bytes) => match parse_json::<SkuBody>(&bytes) {
            Ok(body) => {
                assert!(serde_json::from_slice::<serde_json::Value>(&bytes).is_ok());
                let def: SkuDef = body.into();
                match validate_sku(&def) {
                    Ok(()) => {
                        let chars = def.name.chars().count();
                        assert!((1..=MAX_NAME_CHARS).contains(&chars));
                        assert!(def.price_fen <= MAX_PRICE_FEN);
                        assert!(def.stock <= MAX_STOCK);
                        assert!(def
                            .limit_per_user
                            .is_none_or(|l| (1..=MAX_STOCK).contains(&l)));
                        for t in [def.opens_at_ms, def.closes_at_ms].into_iter().flatten() {
                            assert!((0..=MAX_TIME_MS).contains(&t));
                        }
                        if let (Some(o), Some(c)) = (def.opens_at_ms, def.closes_at_ms) {
                            assert!(o < c);
                        }
                    }
                    Err(e) => {
                        let detail = e.to_string();
                        let fields = [
                            "name",
                            "price_fen",
                            "stock",
                            "limit_per_user",
                            "opens_at_ms",
                            "closes_at_ms",
                        ];
                        assert!(fields.iter().any(|f| detail.contains(f)), "{detail}");
                    }
                }
            }
            Err(e) => {
                assert_eq!(e.status.as_u16(), 400);
                assert!(e.detail.starts_with("invalid JSON body"), "{}", e.detail);
            }
        },
        Input::StockBody(bytes) => match parse_json::<StockBody>(&bytes) {
            Ok(body) => match validate_delta(body.delta) {
                Ok(()) => {
                    assert_ne!(body.delta, 0);
                    assert!(body.delta.unsigned_abs() <= MAX_STOCK);
                }
                Err(e) => assert!(e.to_string().starts_with("delta "), "{e}"),
            },
            Err(e) => assert_eq!(e.status.as_u16(), 400),
        },
        Input::RoomBody(bytes) => match parse_json::<RoomBody>(&bytes) {
            Ok(body) => match validate_title(&body.title) {
                Ok(()) => assert!(body.title.chars().count() <= MAX_NAME_CHARS),
                Err(e) => assert!(e.to_string().starts_with("title "), "{e}"),
            },
            Err(e) => assert_eq!(e.status.as_u16(), 400),
        },
    }
});

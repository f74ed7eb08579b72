//! Buyer JWTs (`Auth::buyer`) and bearer headers (`auth::bearer_token`, `Auth::access`).
//!
//! Tokens are built from fuzzed claims, algorithms, secrets and forgeries, and the verdict is
//! checked against a plain statement of the rules: accepted only when signed HS256 with the
//! buyer secret, unchanged, with a valid-id `sub`, `exp`/`nbf` within the leeway and the right
//! room; then the user is the token's `sub`, whatever `?user=` says. Raw strings must never be
//! accepted (they cannot carry our signature).
#![no_main]

use arbitrary::Arbitrary;
use base64::Engine;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use libfuzzer_sys::fuzz_target;
use livehub::auth::{bearer_token, Access, Auth, AuthError, JWT_LEEWAY_S};
use livehub::ids;
use serde_json::{json, Value};

const ADMIN: &str = "fuzz-admin-token";
const VIEWER: &str = "fuzz-viewer-token";
const SECRET: &str = "fuzz-buyer-secret";

#[derive(Arbitrary, Debug)]
enum Alg {
    Hs256,
    Hs384,
    Hs512,
    /// A header naming another algorithm over an HS256 signature.
    Named(String),
    /// `alg: none` and no signature.
    Unsigned,
}

#[derive(Arbitrary, Debug)]
enum Forgery {
    None,
    /// Another payload under the original signature.
    SwapPayload(String),
    /// The signature cut off.
    DropSignature,
}

#[derive(Arbitrary, Debug)]
enum Input {
    Signed {
        sub: Option<String>,
        exp_offset_s: Option<i32>,
        nbf_offset_s: Option<i32>,
        room_claim: Option<String>,
        room: String,
        user: Option<String>,
        alg: Alg,
        right_secret: bool,
        forgery: Forgery,
        open_buyers: bool,
    },
    Raw {
        token: String,
        room: String,
        user: Option<String>,
        open_buyers: bool,
    },
    Bearer {
        header: String,
    },
}

fn now_s() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

fn sign(alg: &Alg, claims: &Value, secret: &str) -> String {
    let key = EncodingKey::from_secret(secret.as_bytes());
    let with = |a: Algorithm| jsonwebtoken::encode(&Header::new(a), claims, &key).unwrap();
    match alg {
        Alg::Hs256 => with(Algorithm::HS256),
        Alg::Hs384 => with(Algorithm::HS384),
        Alg::Hs512 => with(Algorithm::HS512),
        Alg::Named(name) => {
            let input = format!(
                "{}.{}",
                b64(json!({"alg": name, "typ": "JWT"}).to_string().as_bytes()),
                b64(claims.to_string().as_bytes())
            );
            let sig = jsonwebtoken::crypto::sign(input.as_bytes(), &key, Algorithm::HS256).unwrap();
            format!("{input}.{sig}")
        }
        Alg::Unsigned => format!(
            "{}.{}.",
            b64(br#"{"alg":"none","typ":"JWT"}"#),
            b64(claims.to_string().as_bytes())
        ),
    }
}

/// Offsets this close to the leeway's edge may go either way as the clock ticks.
fn near_edge(offset: i32) -> bool {
    (offset.unsigned_abs() as i64 - JWT_LEEWAY_S as i64).abs() <= 2
}

fuzz_target!(|input: Input| {
    match input {
        Input::Signed {
            sub,
            exp_offset_s,
            nbf_offset_s,
            room_claim,
            room,
            user,
            alg,
            right_secret,
            forgery,
            open_buyers,
        } => {
            if exp_offset_s.is_some_and(near_edge) || nbf_offset_s.is_some_and(near_edge) {
                return;
            }
            let now = now_s();
            let mut claims = serde_json::Map::new();
            if let Some(s) = &sub {
                claims.insert("sub".into(), json!(s));
            }
            if let Some(o) = exp_offset_s {
                claims.insert("exp".into(), json!(now + o as i64));
            }
            if let Some(o) = nbf_offset_s {
                claims.insert("nbf".into(), json!(now + o as i64));
            }
            if let Some(r) = &room_claim {
                claims.insert("room".into(), json!(r));
            }
            let claims = Value::Object(claims);
            let secret = if right_secret {
                SECRET
            } else {
                "another-secret"
            };
            let mut token = sign(&alg, &claims, secret);
            let forged = match &forgery {
                Forgery::None => false,
                Forgery::SwapPayload(sub2) => {
                    let mut c = claims.clone();
                    c["sub"] = json!(sub2);
                    let parts: Vec<&str> = token.split('.').collect();
                    let swapped = b64(c.to_string().as_bytes());
                    let changed = swapped != parts[1];
                    token = format!("{}.{}.{}", parts[0], swapped, parts[2]);
                    changed
                }
                Forgery::DropSignature => {
                    let cut = token.rsplit_once('.').unwrap().0.to_owned();
                    token = format!("{cut}.");
                    true
                }
            };
            let auth = Auth::new(ADMIN, VIEWER, Some(SECRET), open_buyers).unwrap();
            let got = auth.buyer(&room, Some(&token), user.as_deref());

            let hs256 = match &alg {
                Alg::Hs256 => true,
                Alg::Named(n) => n == "HS256",
                _ => false,
            };
            let signed_by_us = hs256 && right_secret && !forged;
            let sub_ok = sub.as_deref().is_some_and(|s| ids::check(s).is_ok());
            let leeway = JWT_LEEWAY_S as i64;
            // Times before 1970 are malformed claims.
            let exp_ok = exp_offset_s.is_some_and(|o| o as i64 >= -leeway && now + o as i64 >= 0);
            let nbf_ok = nbf_offset_s.is_none_or(|o| o as i64 <= leeway && now + o as i64 >= 0);
            let room_ok = room_claim.as_deref().is_none_or(|r| r == room);
            match got {
                Ok(u) => {
                    assert!(signed_by_us, "accepted a token we did not sign: {token}");
                    assert!(sub_ok && exp_ok && nbf_ok && room_ok, "accepted {claims}");
                    assert_eq!(Some(u.as_ref()), sub.as_deref(), "the token's sub wins");
                    assert!(ids::check(&u).is_ok());
                }
                Err(AuthError::WrongRoom) => {
                    assert!(
                        signed_by_us && !room_ok,
                        "wrong room for {claims} in {room:?}"
                    )
                }
                Err(AuthError::Invalid) => {
                    assert!(
                        !(signed_by_us && sub_ok && exp_ok && nbf_ok),
                        "refused a good token: {claims}"
                    )
                }
                Err(AuthError::Missing) => panic!("a token was given"),
            }
        }
        Input::Raw {
            token,
            room,
            user,
            open_buyers,
        } => {
            let auth = Auth::new(ADMIN, VIEWER, Some(SECRET), open_buyers).unwrap();
            let got = auth.buyer(&room, Some(&token), user.as_deref());
            assert!(got.is_err(), "a raw string passed as a token: {token:?}");
            // Without a token, ?user= counts only for open buyers and only as a valid id.
            match auth.buyer(&room, None, user.as_deref()) {
                Ok(u) => {
                    assert!(open_buyers);
                    assert_eq!(Some(u.as_ref()), user.as_deref());
                    assert!(ids::check(&u).is_ok());
                }
                Err(AuthError::Missing) => assert!(!open_buyers || user.is_none()),
                Err(AuthError::Invalid) => assert!(open_buyers && user.is_some()),
                Err(AuthError::WrongRoom) => panic!("no token, no room claim"),
            }
        }
        Input::Bearer { header } => {
            let auth = Auth::new(ADMIN, VIEWER, Some(SECRET), false).unwrap();
            match bearer_token(&header) {
                Some(t) => {
                    assert!(!t.is_empty() && t == t.trim(), "{t:?}");
                    let rest = header.trim_start();
                    assert!(rest
                        .get(..7)
                        .is_some_and(|p| p.eq_ignore_ascii_case("bearer ")));
                    assert!(header.contains(t));
                    let expected = if t == ADMIN {
                        Some(Access::Admin)
                    } else if t == VIEWER {
                        Some(Access::Viewer)
                    } else {
                        None
                    };
                    assert_eq!(auth.access(t), expected);
                }
                None => assert!(
                    !header
                        .trim_start()
                        .to_ascii_lowercase()
                        .starts_with("bearer ")
                        || header.trim_start()[7..].trim().is_empty(),
                    "{header:?}"
                ),
            }
        }
    }
});

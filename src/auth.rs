//! Who may do what: admin and viewer bearer tokens (compared in constant time), buyers'
//! JWTs (HS256 only, `exp` and `sub` required, `exp` and `nbf` checked with a small leeway),
//! and payment notices signed with the payment secret ([`crate::payments`]).
//!
//! No token, secret or JWT is ever written to a log: errors name what was wrong, never the
//! value, and [`Auth`]'s `Debug` leaves them out.

use std::sync::Arc;

use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};
use subtle::ConstantTimeEq;

use crate::ids;

/// Clock skew tolerated on `exp` and `nbf`, in seconds: buyers' phones' clocks drift, and a
/// token minted by an app server a few seconds ahead must still work.
pub const JWT_LEEWAY_S: u64 = 30;

/// What a bearer token grants.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Access {
    /// Reads: rooms, stats, audit, dashboards.
    Viewer,
    /// What a viewer may, and catalog changes and the orders export.
    Admin,
}

/// Buyer JWT claims.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct BuyerClaims {
    /// The user id the socket acts for.
    pub sub: String,
    /// Expiry, in Unix seconds.
    pub exp: u64,
    /// The one room the token is good for; `None`: any room.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub room: Option<String>,
    /// Not valid before, in Unix seconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nbf: Option<u64>,
}

/// Why a buyer was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum AuthError {
    /// No token (and no open `?user=`).
    #[error("missing token")]
    Missing,
    /// A token that does not verify, has expired or names no valid user.
    #[error("invalid token")]
    Invalid,
    /// A valid token restricted to another room.
    #[error("token is for another room")]
    WrongRoom,
}

/// Why the configured tokens cannot be used; the hub refuses to start.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum TokenConfigError {
    /// The named token or secret is empty.
    #[error("the {0} must not be empty")]
    Empty(&'static str),
    /// The admin and viewer tokens are the same.
    #[error("the admin and viewer tokens must differ: a viewer token would grant admin rights")]
    SameAdminAndViewer,
    /// The ingest token is the admin or the viewer token.
    #[error("the ingest token must differ from the admin and viewer tokens")]
    SameIngest,
}

/// The tokens and secrets this hub checks against.
#[derive(Clone)]
pub struct Auth {
    admin: Arc<[u8]>,
    viewer: Arc<[u8]>,
    buyer_key: Option<Arc<DecodingKey>>,
    validation: Arc<Validation>,
    open_buyers: bool,
    /// The HMAC key of payment notices; `None`: every notice is refused.
    payment_key: Option<Arc<[u8]>>,
    /// The video platform adapter's token, good for audience events only.
    ingest: Option<Arc<[u8]>>,
}

impl std::fmt::Debug for Auth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Auth")
            .field("open_buyers", &self.open_buyers)
            .finish_non_exhaustive()
    }
}

fn ct_eq(a: &[u8], b: &[u8]) -> bool {
    // `ct_eq` on slices of different lengths is false without looking at the bytes.
    a.ct_eq(b).into()
}

impl Auth {
    /// Checks the configured tokens (non-empty, admin and viewer distinct) and builds the
    /// checker.
    pub fn new(
        admin_token: &str,
        viewer_token: &str,
        buyer_secret: Option<&str>,
        open_buyers: bool,
    ) -> Result<Self, TokenConfigError> {
        if admin_token.is_empty() {
            return Err(TokenConfigError::Empty("admin token"));
        }
        if viewer_token.is_empty() {
            return Err(TokenConfigError::Empty("viewer token"));
        }
        if buyer_secret.is_some_and(str::is_empty) {
            return Err(TokenConfigError::Empty("buyer secret"));
        }
        if ct_eq(admin_token.as_bytes(), viewer_token.as_bytes()) {
            return Err(TokenConfigError::SameAdminAndViewer);
        }
        let mut validation = Validation::new(Algorithm::HS256);
        validation.algorithms = vec![Algorithm::HS256];
        validation.leeway = JWT_LEEWAY_S;
        validation.validate_exp = true;
        validation.validate_nbf = true;
        validation.set_required_spec_claims(&["exp", "sub"]);
        Ok(Auth {
            admin: Arc::from(admin_token.as_bytes()),
            viewer: Arc::from(viewer_token.as_bytes()),
            buyer_key: buyer_secret.map(|s| Arc::new(DecodingKey::from_secret(s.as_bytes()))),
            validation: Arc::new(validation),
            open_buyers,
            payment_key: None,
            ingest: None,
        })
    }

    /// Adds the token the video platform's adapter posts audience events with; it must differ
    /// from the admin and viewer tokens.
    pub fn with_ingest_token(mut self, token: &str) -> Result<Self, TokenConfigError> {
        if token.is_empty() {
            return Err(TokenConfigError::Empty("ingest token"));
        }
        if ct_eq(token.as_bytes(), &self.admin) || ct_eq(token.as_bytes(), &self.viewer) {
            return Err(TokenConfigError::SameIngest);
        }
        self.ingest = Some(Arc::from(token.as_bytes()));
        Ok(self)
    }

    /// Whether `token` may post audience events: the ingest token or the admin token.
    pub fn may_ingest(&self, token: &str) -> bool {
        let t = token.as_bytes();
        let ingest = self.ingest.as_ref().is_some_and(|i| ct_eq(t, i));
        ingest | ct_eq(t, &self.admin)
    }

    /// Adds the payment secret that payment notices are signed with (its UTF-8 bytes are the
    /// HMAC key). Without one, [`Auth::verify_payment`] refuses every notice.
    pub fn with_payment_secret(mut self, secret: &str) -> Result<Self, TokenConfigError> {
        if secret.is_empty() {
            return Err(TokenConfigError::Empty("payment secret"));
        }
        self.payment_key = Some(Arc::from(secret.as_bytes()));
        Ok(self)
    }

    /// Checks a payment notice's `X-Livehub-Timestamp` and `X-Livehub-Signature` headers
    /// (`None` when absent) and its raw `body` against the payment secret and the hub's clock
    /// `now_ms` ([`crate::payments::verify`]). With no payment secret it is always
    /// `bad_signature`.
    pub fn verify_payment(
        &self,
        timestamp: Option<&str>,
        signature: Option<&str>,
        body: &[u8],
        now_ms: i64,
    ) -> Result<(), crate::payments::NoticeError> {
        let key = self
            .payment_key
            .as_ref()
            .ok_or(crate::payments::NoticeError::BadSignature(
                "this hub has no payment secret",
            ))?;
        crate::payments::verify(key, timestamp, signature, body, now_ms)
    }

    /// What `token` grants, if anything. Both tokens are compared in constant time, whatever
    /// the first comparison said.
    pub fn access(&self, token: &str) -> Option<Access> {
        let t = token.as_bytes();
        let (admin, viewer) = (ct_eq(t, &self.admin), ct_eq(t, &self.viewer));
        if admin {
            Some(Access::Admin)
        } else if viewer {
            Some(Access::Viewer)
        } else {
            None
        }
    }

    /// The buyer a `/ws/buy` request is for: the JWT's `sub`, or with `--open-buyers` and no
    /// token, the `user` parameter.
    pub fn buyer(
        &self,
        room: &str,
        token: Option<&str>,
        user: Option<&str>,
    ) -> Result<Arc<str>, AuthError> {
        if let Some(token) = token {
            let key = self.buyer_key.as_ref().ok_or(AuthError::Invalid)?;
            let data = jsonwebtoken::decode::<BuyerClaims>(token, key, &self.validation)
                .map_err(|_| AuthError::Invalid)?;
            let c = data.claims;
            ids::check(&c.sub).map_err(|_| AuthError::Invalid)?;
            if c.room.as_deref().is_some_and(|r| r != room) {
                return Err(AuthError::WrongRoom);
            }
            return Ok(Arc::from(c.sub));
        }
        match (self.open_buyers, user) {
            (true, Some(u)) if ids::check(u).is_ok() => Ok(Arc::from(u)),
            (true, Some(_)) => Err(AuthError::Invalid),
            _ => Err(AuthError::Missing),
        }
    }
}

/// The token of an `Authorization` header: the scheme `Bearer` (any case, RFC 7235), then the
/// token, without surrounding whitespace. `None` when there is no non-empty bearer token.
pub fn bearer_token(header: &str) -> Option<&str> {
    let (scheme, rest) = header.trim_start().split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("bearer") {
        return None;
    }
    let token = rest.trim();
    (!token.is_empty()).then_some(token)
}

/// Signs a buyer token (for tools, tests and the demo).
pub fn sign_buyer_token(secret: &str, user: &str, room: Option<&str>, ttl_s: u64) -> String {
    let exp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
        + ttl_s;
    let claims = BuyerClaims {
        sub: user.to_owned(),
        exp,
        room: room.map(str::to_owned),
        nbf: None,
    };
    jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        &claims,
        &EncodingKey::from_secret(secret.as_bytes()),
    )
    .expect("HS256 signing does not fail")
}

/// A random token: 32 bytes as hex.
pub fn random_token() -> String {
    use rand::Rng;
    let bytes: [u8; 32] = rand::rng().random();
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn now_s() -> u64 {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs()
    }

    /// A token with any header algorithm and claims, signed with HMAC-SHA256 over `secret`
    /// whatever the header says (how a forger would try it).
    fn raw_token(alg: &str, claims: serde_json::Value, secret: &[u8]) -> String {
        use base64::Engine;
        let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
        let header = b64.encode(format!(r#"{{"alg":"{alg}","typ":"JWT"}}"#));
        let body = b64.encode(claims.to_string());
        let signing_input = format!("{header}.{body}");
        let sig = jsonwebtoken::crypto::sign(
            signing_input.as_bytes(),
            &EncodingKey::from_secret(secret),
            Algorithm::HS256,
        )
        .unwrap();
        format!("{signing_input}.{sig}")
    }

    fn hs(alg: Algorithm, claims: serde_json::Value, secret: &[u8]) -> String {
        jsonwebtoken::encode(
            &Header::new(alg),
            &claims,
            &EncodingKey::from_secret(secret),
        )
        .unwrap()
    }

    #[test]
    fn tokens_grant_their_level_only() {
        let a = Auth::new("adm", "view", Some("s"), false).unwrap();
        assert_eq!(a.access("adm"), Some(Access::Admin));
        assert_eq!(a.access("view"), Some(Access::Viewer));
        assert_eq!(a.access("ad"), None);
        assert_eq!(a.access("adm "), None);
        assert_eq!(a.access(""), None);
    }

    #[test]
    fn empty_or_equal_tokens_are_refused() {
        assert_eq!(
            Auth::new("same", "same", Some("s"), false).unwrap_err(),
            TokenConfigError::SameAdminAndViewer
        );
        assert_eq!(
            Auth::new("", "v", Some("s"), false).unwrap_err(),
            TokenConfigError::Empty("admin token")
        );
        assert_eq!(
            Auth::new("a", "", Some("s"), false).unwrap_err(),
            TokenConfigError::Empty("viewer token")
        );
        assert_eq!(
            Auth::new("a", "v", Some(""), false).unwrap_err(),
            TokenConfigError::Empty("buyer secret")
        );
        assert!(Auth::new("a", "v", None, false).is_ok());
        assert_eq!(
            Auth::new("a", "v", None, false)
                .unwrap()
                .with_payment_secret("")
                .unwrap_err(),
            TokenConfigError::Empty("payment secret")
        );
    }

    #[test]
    fn the_ingest_token_posts_audience_events_only() {
        let a = Auth::new("adm", "view", Some("s"), false).unwrap();
        assert!(a.may_ingest("adm"));
        assert!(!a.may_ingest("ing"), "no ingest token configured");
        let a = a.with_ingest_token("ing").unwrap();
        assert!(a.may_ingest("ing") && a.may_ingest("adm"));
        assert!(!a.may_ingest("view") && !a.may_ingest("in"));
        assert_eq!(a.access("ing"), None, "it grants nothing else");
        assert!(a.clone().with_ingest_token("view").is_err());
        assert!(a.with_ingest_token("").is_err());
    }

    #[test]
    fn payment_notices_verify_with_the_payment_secret_only() {
        use crate::payments::{sign, NoticeError};
        let body = br#"{"order":"O1","room":"r1","payment_id":"p1","amount_fen":1,"paid_at_ms":0}"#;
        let now = 1_700_000_000_000;
        let ts = now.to_string();
        let good = sign(b"pay-secret", now, body);
        let a = Auth::new("adm", "view", Some("buyer"), false).unwrap();
        // No payment secret: nothing verifies.
        assert!(matches!(
            a.verify_payment(Some(&ts), Some(&good), body, now),
            Err(NoticeError::BadSignature(_))
        ));
        let a = a.with_payment_secret("pay-secret").unwrap();
        assert_eq!(a.verify_payment(Some(&ts), Some(&good), body, now), Ok(()));
        // The other secrets are not the payment secret.
        for other in [&b"adm"[..], b"view", b"buyer"] {
            let sig = sign(other, now, body);
            assert!(matches!(
                a.verify_payment(Some(&ts), Some(&sig), body, now),
                Err(NoticeError::BadSignature(_))
            ));
        }
    }

    #[test]
    fn bearer_headers_are_read_strictly() {
        assert_eq!(bearer_token("Bearer abc"), Some("abc"));
        assert_eq!(bearer_token("bearer abc "), Some("abc"));
        assert_eq!(bearer_token("BEARER  abc"), Some("abc"));
        for bad in [
            "",
            "Bearer",
            "Bearer ",
            "Bearer    ",
            "Basic abc",
            "Bearerabc",
            "abc",
        ] {
            assert_eq!(bearer_token(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn buyer_tokens_are_checked() {
        let a = Auth::new("adm", "view", Some("secret"), false).unwrap();
        let t = sign_buyer_token("secret", "alice", Some("r1"), 60);
        assert_eq!(a.buyer("r1", Some(&t), None).as_deref(), Ok("alice"));
        assert_eq!(
            a.buyer("r1", Some(&t), Some("mallory")).as_deref(),
            Ok("alice"),
            "the token's sub wins over ?user="
        );
        assert_eq!(a.buyer("r2", Some(&t), None), Err(AuthError::WrongRoom));
        let forged = sign_buyer_token("other", "alice", None, 60);
        assert_eq!(a.buyer("r1", Some(&forged), None), Err(AuthError::Invalid));
        assert_eq!(
            a.buyer("r1", None, Some("bob")),
            Err(AuthError::Missing),
            "no open buyers"
        );
        let bad_sub = hs(
            Algorithm::HS256,
            serde_json::json!({"sub": "a b", "exp": now_s() + 60}),
            b"secret",
        );
        assert_eq!(a.buyer("r1", Some(&bad_sub), None), Err(AuthError::Invalid));
        let no_sub = hs(
            Algorithm::HS256,
            serde_json::json!({"exp": now_s() + 60}),
            b"secret",
        );
        assert_eq!(a.buyer("r1", Some(&no_sub), None), Err(AuthError::Invalid));
        let no_exp = hs(
            Algorithm::HS256,
            serde_json::json!({"sub": "bob"}),
            b"secret",
        );
        assert_eq!(a.buyer("r1", Some(&no_exp), None), Err(AuthError::Invalid));

        let open = Auth::new("adm", "view", Some("secret"), true).unwrap();
        assert_eq!(open.buyer("r1", None, Some("bob")).as_deref(), Ok("bob"));
        assert_eq!(open.buyer("r1", None, Some("b b")), Err(AuthError::Invalid));
        assert_eq!(
            open.buyer("r1", Some("garbage"), Some("bob")),
            Err(AuthError::Invalid),
            "a bad token is refused even where ?user= alone would do"
        );
    }

    #[test]
    fn exp_and_nbf_are_checked_with_a_small_leeway() {
        let a = Auth::new("adm", "view", Some("secret"), false).unwrap();
        let check = |claims: serde_json::Value| {
            a.buyer("r1", Some(&hs(Algorithm::HS256, claims, b"secret")), None)
        };
        let now = now_s();
        let within = JWT_LEEWAY_S / 2;
        let beyond = JWT_LEEWAY_S * 4;
        assert!(check(serde_json::json!({"sub": "u", "exp": now - within})).is_ok());
        assert_eq!(
            check(serde_json::json!({"sub": "u", "exp": now - beyond})),
            Err(AuthError::Invalid),
            "expired"
        );
        assert!(
            check(serde_json::json!({"sub": "u", "exp": now + 60, "nbf": now + within})).is_ok()
        );
        assert_eq!(
            check(serde_json::json!({"sub": "u", "exp": now + 600, "nbf": now + beyond})),
            Err(AuthError::Invalid),
            "not valid yet"
        );
        assert_eq!(
            check(serde_json::json!({"sub": "u", "exp": now + 600, "nbf": "soon"})),
            Err(AuthError::Invalid),
            "malformed nbf"
        );
        assert_eq!(
            check(serde_json::json!({"sub": "u", "exp": "later"})),
            Err(AuthError::Invalid),
            "malformed exp"
        );
    }

    #[test]
    fn only_hs256_is_accepted() {
        let a = Auth::new("adm", "view", Some("secret"), false).unwrap();
        let claims = serde_json::json!({"sub": "bob", "exp": now_s() + 600});
        assert!(a
            .buyer(
                "r1",
                Some(&raw_token("HS256", claims.clone(), b"secret")),
                None
            )
            .is_ok());
        for alg in [Algorithm::HS384, Algorithm::HS512] {
            let t = hs(alg, claims.clone(), b"secret");
            assert_eq!(
                a.buyer("r1", Some(&t), None),
                Err(AuthError::Invalid),
                "{alg:?}"
            );
        }
        for alg in ["none", "None", "RS256", "ES256", "EdDSA", "HS384"] {
            let t = raw_token(alg, claims.clone(), b"secret");
            assert_eq!(
                a.buyer("r1", Some(&t), None),
                Err(AuthError::Invalid),
                "{alg}"
            );
        }
        // `alg: none` with no signature at all.
        let unsigned = {
            let t = raw_token("none", claims.clone(), b"secret");
            format!("{}.", t.rsplit_once('.').unwrap().0)
        };
        assert_eq!(
            a.buyer("r1", Some(&unsigned), None),
            Err(AuthError::Invalid)
        );
    }

    #[test]
    fn debug_output_hides_the_secrets() {
        let a = Auth::new(
            "adm-secret-1",
            "view-secret-2",
            Some("buyer-secret-3"),
            false,
        )
        .unwrap()
        .with_payment_secret("pay-secret-4")
        .unwrap();
        let shown = format!("{a:?}");
        for secret in [
            "adm-secret-1",
            "view-secret-2",
            "buyer-secret-3",
            "pay-secret-4",
        ] {
            assert!(!shown.contains(secret), "{shown}");
        }
    }
}

//! Who may do what: admin and viewer bearer tokens (compared in constant time) and buyers'
//! JWTs (HS256 only, `exp` required).

use std::sync::Arc;

use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};
use subtle::ConstantTimeEq;

use crate::ids;

/// Clock skew tolerated on `exp` and `nbf`, in seconds.
pub const JWT_LEEWAY_S: u64 = 5;

/// What a bearer token grants.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Access {
    Viewer,
    Admin,
}

/// Buyer JWT claims.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct BuyerClaims {
    pub sub: String,
    pub exp: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub room: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nbf: Option<u64>,
}

/// Why a buyer was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum AuthError {
    #[error("missing token")]
    Missing,
    #[error("invalid token")]
    Invalid,
    #[error("token is for another room")]
    WrongRoom,
}

/// The tokens and secret this hub checks against.
#[derive(Clone)]
pub struct Auth {
    admin: Arc<[u8]>,
    viewer: Arc<[u8]>,
    buyer_key: Option<Arc<DecodingKey>>,
    validation: Arc<Validation>,
    open_buyers: bool,
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
    pub fn new(
        admin_token: &str,
        viewer_token: &str,
        buyer_secret: Option<&str>,
        open_buyers: bool,
    ) -> Self {
        let mut validation = Validation::new(Algorithm::HS256);
        validation.algorithms = vec![Algorithm::HS256];
        validation.leeway = JWT_LEEWAY_S;
        validation.validate_exp = true;
        validation.validate_nbf = true;
        validation.set_required_spec_claims(&["exp", "sub"]);
        Auth {
            admin: Arc::from(admin_token.as_bytes()),
            viewer: Arc::from(viewer_token.as_bytes()),
            buyer_key: buyer_secret.map(|s| Arc::new(DecodingKey::from_secret(s.as_bytes()))),
            validation: Arc::new(validation),
            open_buyers,
        }
    }

    /// What `token` grants, if anything.
    pub fn access(&self, token: &str) -> Option<Access> {
        let t = token.as_bytes();
        if ct_eq(t, &self.admin) {
            Some(Access::Admin)
        } else if ct_eq(t, &self.viewer) {
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

    #[test]
    fn tokens_grant_their_level_only() {
        let a = Auth::new("adm", "view", Some("s"), false);
        assert_eq!(a.access("adm"), Some(Access::Admin));
        assert_eq!(a.access("view"), Some(Access::Viewer));
        assert_eq!(a.access("ad"), None);
        assert_eq!(a.access(""), None);
    }

    #[test]
    fn buyer_tokens_are_checked() {
        let a = Auth::new("adm", "view", Some("secret"), false);
        let t = sign_buyer_token("secret", "alice", Some("r1"), 60);
        assert_eq!(a.buyer("r1", Some(&t), None).as_deref(), Ok("alice"));
        assert_eq!(a.buyer("r2", Some(&t), None), Err(AuthError::WrongRoom));
        let forged = sign_buyer_token("other", "alice", None, 60);
        assert_eq!(a.buyer("r1", Some(&forged), None), Err(AuthError::Invalid));
        let expired = {
            let claims = BuyerClaims {
                sub: "bob".into(),
                exp: 1,
                room: None,
                nbf: None,
            };
            jsonwebtoken::encode(
                &Header::new(Algorithm::HS256),
                &claims,
                &EncodingKey::from_secret(b"secret"),
            )
            .unwrap()
        };
        assert_eq!(a.buyer("r1", Some(&expired), None), Err(AuthError::Invalid));
        let hs384 = {
            let claims = BuyerClaims {
                sub: "bob".into(),
                exp: u64::MAX / 2,
                room: None,
                nbf: None,
            };
            jsonwebtoken::encode(
                &Header::new(Algorithm::HS384),
                &claims,
                &EncodingKey::from_secret(b"secret"),
            )
            .unwrap()
        };
        assert_eq!(
            a.buyer("r1", Some(&hs384), None),
            Err(AuthError::Invalid),
            "algorithm is pinned"
        );
        assert_eq!(
            a.buyer("r1", None, Some("bob")),
            Err(AuthError::Missing),
            "no open buyers"
        );
        let open = Auth::new("adm", "view", None, true);
        assert_eq!(open.buyer("r1", None, Some("bob")).as_deref(), Ok("bob"));
        assert_eq!(open.buyer("r1", None, Some("b b")), Err(AuthError::Invalid));
    }
}

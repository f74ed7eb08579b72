//! Who a WebSocket upgrade is for: the `/ws/buy`, `/ws/dashboard` and `/ws/overview` query
//! strings, read and
//! checked before any socket exists. Pure functions of the query and the [`Auth`], so the
//! fuzz targets (`fuzz/`) drive exactly what the server runs.
//!
//! A refusal is logged (at debug: a flood of bad tokens must not flood the log) with the room
//! and the reason, never with a token.

use std::sync::Arc;

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;

use crate::auth::{Access, Auth};
use crate::ids;

/// `GET /ws/buy?room=&token=&user=`.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct BuyQuery {
    /// The room to buy in.
    pub room: Option<String>,
    /// The buyer's JWT.
    pub token: Option<String>,
    /// The user, only with `--open-buyers` and no token.
    pub user: Option<String>,
}

/// `GET /ws/dashboard?room=&token=`.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct DashboardQuery {
    /// The room to watch.
    pub room: Option<String>,
    /// A viewer or admin token.
    pub token: Option<String>,
}

/// `GET /ws/overview?token=`.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct OverviewQuery {
    /// A viewer or admin token.
    pub token: Option<String>,
}

/// Why an upgrade was refused: the HTTP answer `{"error": code, "detail": detail}`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    /// The HTTP status (400 or 401).
    pub status: StatusCode,
    /// The body's `error` code.
    pub code: &'static str,
    /// The body's `detail`: what was wrong, never the token.
    pub detail: String,
}

impl Refusal {
    fn bad_request(detail: impl Into<String>) -> Refusal {
        Refusal {
            status: StatusCode::BAD_REQUEST,
            code: "bad_request",
            detail: detail.into(),
        }
    }

    fn unauthorized(detail: impl Into<String>) -> Refusal {
        Refusal {
            status: StatusCode::UNAUTHORIZED,
            code: "unauthorized",
            detail: detail.into(),
        }
    }
}

impl IntoResponse for Refusal {
    fn into_response(self) -> Response {
        (
            self.status,
            axum::Json(serde_json::json!({"error": self.code, "detail": self.detail})),
        )
            .into_response()
    }
}

/// Reads a query string (without the `?`) the way the upgrade handlers do; a malformed one is
/// a 400 that says why.
pub fn parse_query<T: serde::de::DeserializeOwned>(raw: Option<&str>) -> Result<T, Refusal> {
    serde_urlencoded::from_str(raw.unwrap_or(""))
        .map_err(|e| Refusal::bad_request(format!("invalid query: {e}")))
}

/// A buyer let in: the room id (grammar checked) and the user the socket acts for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Buyer {
    /// The room id.
    pub room: String,
    /// The user id.
    pub user: Arc<str>,
}

fn checked_room(room: Option<&str>) -> Result<&str, Refusal> {
    let room = room.ok_or_else(|| Refusal::bad_request("missing room"))?;
    ids::check_named("room", room).map_err(Refusal::bad_request)?;
    Ok(room)
}

/// Who a `/ws/buy` upgrade is for. The token's `sub` decides the user; `?user=` counts only
/// with `--open-buyers` and no token at all.
pub fn admit_buyer(auth: &Auth, q: &BuyQuery) -> Result<Buyer, Refusal> {
    let room = checked_room(q.room.as_deref())?;
    match auth.buyer(room, q.token.as_deref(), q.user.as_deref()) {
        Ok(user) => Ok(Buyer {
            room: room.to_owned(),
            user,
        }),
        Err(e) => {
            tracing::debug!(
                room,
                reason = %e,
                with_token = q.token.is_some(),
                "buyer refused"
            );
            Err(Refusal::unauthorized(e.to_string()))
        }
    }
}

/// The room a `/ws/dashboard` upgrade may watch: it needs a viewer or admin token.
pub fn admit_dashboard(auth: &Auth, q: &DashboardQuery) -> Result<String, Refusal> {
    let room = checked_room(q.room.as_deref())?;
    match q.token.as_deref().and_then(|t| auth.access(t)) {
        Some(a) if a >= Access::Viewer => Ok(room.to_owned()),
        _ => {
            tracing::debug!(room, with_token = q.token.is_some(), "dashboard refused");
            Err(Refusal::unauthorized("a viewer or admin token is required"))
        }
    }
}

/// Whether a `/ws/overview` upgrade may watch every room: it needs a viewer or admin token.
pub fn admit_overview(auth: &Auth, q: &OverviewQuery) -> Result<(), Refusal> {
    match q.token.as_deref().and_then(|t| auth.access(t)) {
        Some(a) if a >= Access::Viewer => Ok(()),
        _ => {
            tracing::debug!(with_token = q.token.is_some(), "overview refused");
            Err(Refusal::unauthorized("a viewer or admin token is required"))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queries_parse_and_refuse_with_reasons() {
        let auth = Auth::new("adm", "view", Some("s"), true).unwrap();
        let q: BuyQuery = parse_query(Some("room=r1&user=bob")).unwrap();
        assert_eq!(admit_buyer(&auth, &q).unwrap().user.as_ref(), "bob");
        let q: BuyQuery = parse_query(Some("user=bob")).unwrap();
        assert_eq!(admit_buyer(&auth, &q).unwrap_err().detail, "missing room");
        let q: BuyQuery = parse_query(Some("room=a%20b&user=bob")).unwrap();
        let r = admit_buyer(&auth, &q).unwrap_err();
        assert_eq!(r.status, StatusCode::BAD_REQUEST);
        assert!(r.detail.starts_with("room "), "{}", r.detail);
        let q: DashboardQuery = parse_query(Some("room=r1&token=view")).unwrap();
        assert_eq!(admit_dashboard(&auth, &q).unwrap(), "r1");
        let q: DashboardQuery = parse_query(Some("room=r1&token=nope")).unwrap();
        assert_eq!(
            admit_dashboard(&auth, &q).unwrap_err().status,
            StatusCode::UNAUTHORIZED
        );
        let q: OverviewQuery = parse_query(Some("token=adm&room=ignored")).unwrap();
        assert!(admit_overview(&auth, &q).is_ok());
        for bad in ["", "token=", "token=nope", "token=s"] {
            let q: OverviewQuery = parse_query(Some(bad)).unwrap();
            let r = admit_overview(&auth, &q).unwrap_err();
            assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{bad}");
        }
        assert!(parse_query::<OverviewQuery>(Some("token=a&token=b")).is_err());
        assert!(parse_query::<BuyQuery>(Some("room=r1&room=r2")).is_err());
        assert!(parse_query::<BuyQuery>(None).is_ok());
    }
}

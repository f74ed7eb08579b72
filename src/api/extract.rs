//! Extractors that every handler takes before it runs, so none can forget a check: the bearer
//! token ([`Admin`], [`Viewer`]), the path's ids ([`RoomPath`], [`SkuPath`]), and the JSON body
//! ([`JsonBody`]). Axum runs the ones that read only the request head first and the body last,
//! so a request without a valid token is refused before its body is read.

use axum::extract::{FromRequest, FromRequestParts, Path, Request};
use axum::http::request::Parts;

use super::error::ApiError;
use super::state::AppState;
use crate::auth::Access;
use crate::ids;
use crate::server::accept::Authenticated;

/// The request carries the admin token.
#[derive(Debug, Clone, Copy)]
pub struct Admin;

/// The request carries the viewer token or the admin token.
#[derive(Debug, Clone, Copy)]
pub struct Viewer;

impl FromRequestParts<AppState> for Admin {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, s: &AppState) -> Result<Self, ApiError> {
        require(s, parts, Access::Admin).map(|()| Admin)
    }
}

impl FromRequestParts<AppState> for Viewer {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, s: &AppState) -> Result<Self, ApiError> {
        require(s, parts, Access::Viewer).map(|()| Viewer)
    }
}

/// Checks that the bearer token grants at least `needed`.
fn require(state: &AppState, parts: &Parts, needed: Access) -> Result<(), ApiError> {
    let token = parts
        .headers
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(crate::auth::bearer_token)
        .ok_or_else(|| ApiError::unauthorized("missing bearer token"))?;
    match state.auth.access(token) {
        Some(a) if a >= needed => {
            if let Some(mark) = parts.extensions.get::<Authenticated>() {
                mark.mark();
            }
            Ok(())
        }
        Some(_) => Err(ApiError::unauthorized("this token cannot do that")),
        None => Err(ApiError::unauthorized("invalid token")),
    }
}

/// `{room}` of the path, checked against the id grammar.
#[derive(Debug, Clone)]
pub struct RoomPath(pub String);

/// `{room}` and `{sku}` of the path, each checked against the id grammar.
#[derive(Debug, Clone)]
pub struct SkuPath(pub String, pub String);

impl<S: Send + Sync> FromRequestParts<S> for RoomPath {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, s: &S) -> Result<Self, ApiError> {
        let Path(room) = Path::<String>::from_request_parts(parts, s)
            .await
            .map_err(|e| ApiError::bad_request(e.body_text()))?;
        check_ids(&[("room", &room)])?;
        Ok(RoomPath(room))
    }
}

impl<S: Send + Sync> FromRequestParts<S> for SkuPath {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, s: &S) -> Result<Self, ApiError> {
        let Path((room, sku)) = Path::<(String, String)>::from_request_parts(parts, s)
            .await
            .map_err(|e| ApiError::bad_request(e.body_text()))?;
        check_ids(&[("room", &room), ("sku", &sku)])?;
        Ok(SkuPath(room, sku))
    }
}

/// `{room}` and `{order}` of the path, each checked against the id grammar.
#[derive(Debug, Clone)]
pub struct OrderPath(pub String, pub String);

impl<S: Send + Sync> FromRequestParts<S> for OrderPath {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, s: &S) -> Result<Self, ApiError> {
        let Path((room, order)) = Path::<(String, String)>::from_request_parts(parts, s)
            .await
            .map_err(|e| ApiError::bad_request(e.body_text()))?;
        check_ids(&[("room", &room), ("order", &order)])?;
        Ok(OrderPath(room, order))
    }
}

/// Checks ids against the id grammar; the 400 names the field.
fn check_ids(pairs: &[(&str, &str)]) -> Result<(), ApiError> {
    for (field, id) in pairs {
        ids::check_named(field, id).map_err(ApiError::bad_request)?;
    }
    Ok(())
}

/// A JSON request body, read whatever its `Content-Type` says (operators send JSON with
/// `curl -d` too); a body that is not valid JSON for `T` is a 400 saying why.
pub struct JsonBody<T>(pub T);

impl<S, T> FromRequest<S> for JsonBody<T>
where
    S: Send + Sync,
    T: serde::de::DeserializeOwned,
{
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let bytes = axum::body::Bytes::from_request(req, state)
            .await
            .map_err(|e| {
                ApiError::bad_request(format!("cannot read the body: {}", e.body_text()))
            })?;
        parse_json(&bytes).map(JsonBody)
    }
}

/// Reads a JSON body as `T` ([`crate::json_body::parse_object`]): exactly one JSON object;
/// the 400's detail names the field that is wrong (`invalid JSON body: price_fen: ...`).
pub fn parse_json<T: serde::de::DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    crate::json_body::parse_object(bytes).map_err(ApiError::bad_request)
}

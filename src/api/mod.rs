//! The REST API (PROTOCOL.md, "HTTP"): admin changes and viewer reads.

pub mod admin;
pub mod error;
pub mod viewer;

use axum::http::HeaderMap;
use axum::routing::{get, post, put};
use axum::Router;

pub use error::ApiError;

use crate::auth::Access;
use crate::ids;
use crate::server::AppState;

/// Routes under `/api`.
pub fn router() -> Router<AppState> {
    Router::new()
        .route("/api/rooms", get(viewer::list_rooms))
        .route("/api/rooms/{room}", put(admin::put_room))
        .route("/api/rooms/{room}/skus/{sku}", put(admin::put_sku))
        .route(
            "/api/rooms/{room}/skus/{sku}/stock",
            post(admin::change_stock),
        )
        .route("/api/rooms/{room}/skus/{sku}/open", post(admin::open_sale))
        .route(
            "/api/rooms/{room}/skus/{sku}/close",
            post(admin::close_sale),
        )
        .route("/api/rooms/{room}/stats", get(viewer::stats))
        .route("/api/rooms/{room}/orders", get(admin::orders))
        .route("/api/rooms/{room}/audit", get(viewer::audit))
}

/// Checks the bearer token grants at least `needed`.
pub fn require(state: &AppState, headers: &HeaderMap, needed: Access) -> Result<(), ApiError> {
    let token = headers
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(crate::auth::bearer_token)
        .ok_or_else(|| ApiError::unauthorized("missing bearer token"))?;
    match state.auth.access(token) {
        Some(a) if a >= needed => Ok(()),
        Some(_) => Err(ApiError::unauthorized("this token cannot do that")),
        None => Err(ApiError::unauthorized("invalid token")),
    }
}

/// A JSON request body, read whatever its `Content-Type` says (operators send JSON with
/// `curl -d` too); a body that is not valid JSON for `T` is a 400 saying why.
pub struct JsonBody<T>(pub T);

impl<S, T> axum::extract::FromRequest<S> for JsonBody<T>
where
    S: Send + Sync,
    T: serde::de::DeserializeOwned,
{
    type Rejection = ApiError;

    async fn from_request(req: axum::extract::Request, state: &S) -> Result<Self, Self::Rejection> {
        let bytes = axum::body::Bytes::from_request(req, state)
            .await
            .map_err(|e| {
                ApiError::bad_request(format!("cannot read the body: {}", e.body_text()))
            })?;
        parse_json(&bytes).map(JsonBody)
    }
}

/// Reads a JSON body as `T`: exactly one JSON object (serde would also take an array of the
/// fields in order, which no client means); the 400's detail names the field that is wrong
/// (`invalid JSON body: price_fen: invalid type ...`).
pub fn parse_json<T: serde::de::DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    let value: serde_json::Value = serde_json::from_slice(bytes)
        .map_err(|e| ApiError::bad_request(format!("invalid JSON body: {e}")))?;
    if !value.is_object() {
        return Err(ApiError::bad_request(
            "invalid JSON body: expected a JSON object",
        ));
    }
    serde_path_to_error::deserialize(value).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        if path == "." {
            ApiError::bad_request(format!("invalid JSON body: {inner}"))
        } else {
            ApiError::bad_request(format!("invalid JSON body: {path}: {inner}"))
        }
    })
}

/// Checks path ids.
pub fn check_ids(pairs: &[(&str, &str)]) -> Result<(), ApiError> {
    for (field, id) in pairs {
        ids::check_named(field, id).map_err(ApiError::bad_request)?;
    }
    Ok(())
}

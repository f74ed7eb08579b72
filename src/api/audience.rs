//! `POST /api/rooms/{room}/audience`: the video platform adapter's batch of audience events
//! (docs/protocol.md, "Audience events"), with the ingest token or the admin token. The token
//! is checked before the body is read; the batch is checked whole ([`crate::audience::batch`])
//! and journaled before the answer ([`crate::hub::Hub::ingest_audience`]).

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{FromRequestParts, State};
use axum::http::request::Parts;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::json;

use super::error::ApiError;
use super::extract::RoomPath;
use super::state::AppState;
use crate::hub::audience::IngestError;
use crate::server::accept::Authenticated;

/// The largest audience batch body: a full batch ([`crate::audience::batch::MAX_EVENTS`]) of
/// events of a few hundred bytes at most.
pub const MAX_AUDIENCE_BODY_BYTES: usize = 4 * 1024 * 1024;

/// The request carries the ingest token or the admin token.
#[derive(Debug, Clone, Copy)]
pub struct Ingest;

impl FromRequestParts<AppState> for Ingest {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, s: &AppState) -> Result<Self, ApiError> {
        let token = parts
            .headers
            .get(axum::http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(crate::auth::bearer_token)
            .ok_or_else(|| ApiError::unauthorized("missing bearer token"))?;
        if !s.auth.may_ingest(token) {
            return Err(ApiError::unauthorized(
                "audience events take the ingest or the admin token",
            ));
        }
        if let Some(mark) = parts.extensions.get::<Authenticated>() {
            mark.mark();
        }
        Ok(Ingest)
    }
}

/// `POST /api/rooms/{room}/audience`.
pub async fn post_audience(
    State(s): State<AppState>,
    _: Ingest,
    RoomPath(room): RoomPath,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let body = body.map_err(|e| ApiError::bad_request(format!("cannot read the body: {e}")))?;
    let room = s
        .hub
        .room(&room)
        .ok_or_else(|| ApiError::not_found(format!("room {room} does not exist")))?;
    match s.hub.ingest_audience(&room, body).await {
        Ok(done) => Ok(Json(json!({
            "accepted": done.accepted,
            "duplicates": done.duplicates,
        }))
        .into_response()),
        Err(IngestError::Bad(e)) => Ok((
            StatusCode::BAD_REQUEST,
            Json(json!({
                "error": "bad_request",
                "detail": e.to_string(),
                "index": e.index,
                "field": e.field,
            })),
        )
            .into_response()),
        Err(IngestError::Unavailable(d)) => Err(ApiError::unavailable(d)),
    }
}

//! `GET /api/rooms/{room}/review` (viewer): the stream's report (复盘, docs/protocol.md,
//! "Review"), as JSON or, with `?format=csv`, its per-minute series as CSV. Built off the
//! request path and kept while the room does not change ([`crate::review::cache`]).

use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;

use super::error::ApiError;
use super::extract::{RoomPath, Viewer};
use super::state::AppState;

/// What the review is rendered as.
#[derive(Debug, Clone, Copy, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Format {
    /// The whole review (the default).
    #[default]
    Json,
    /// The per-minute series.
    Csv,
}

/// The review's query string.
#[derive(Debug, Deserialize)]
pub struct ReviewQuery {
    /// `json` (default) or `csv`.
    #[serde(default)]
    pub format: Format,
}

/// The review of a room: 404 for no such room, 400 for a bad query.
pub async fn review(
    State(s): State<AppState>,
    _: Viewer,
    RoomPath(room): RoomPath,
    q: Result<Query<ReviewQuery>, QueryRejection>,
) -> Result<Response, ApiError> {
    let Query(q) = q?;
    let r = s
        .hub
        .room(&room)
        .ok_or_else(|| ApiError::not_found(format!("room {room} does not exist")))?;
    let built = s
        .hub
        .reviews()
        .get(&r, s.hub.fleet().is_some())
        .await
        .ok_or_else(|| ApiError::unavailable("the review could not be built; try again"))?;
    Ok(match q.format {
        Format::Json => (
            [(header::CONTENT_TYPE, "application/json")],
            built.json.clone(),
        )
            .into_response(),
        Format::Csv => (
            [
                (header::CONTENT_TYPE, "text/csv; charset=utf-8"),
                (
                    header::CONTENT_DISPOSITION,
                    "attachment; filename=\"review-minutes.csv\"",
                ),
            ],
            built.csv.clone(),
        )
            .into_response(),
    })
}

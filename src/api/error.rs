//! The one error type of the REST API: `{"error": code, "detail": text}` with a fitting
//! status. Internals are logged, never sent.

use axum::extract::rejection::QueryRejection;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::json;

use crate::catalog::CatalogError;
use crate::hub::moves::MoveError;
use crate::payments::NoticeError;

/// A REST error: its status, and the body's `error` code and `detail`.
#[derive(Debug)]
pub struct ApiError {
    /// The HTTP status.
    pub status: StatusCode,
    /// The body's `error`: a stable code clients branch on.
    pub code: &'static str,
    /// The body's `detail`: what was wrong, for a person.
    pub detail: String,
}

impl ApiError {
    /// 400 `bad_request`: the request itself is wrong.
    pub fn bad_request(detail: impl Into<String>) -> Self {
        ApiError {
            status: StatusCode::BAD_REQUEST,
            code: "bad_request",
            detail: detail.into(),
        }
    }
    /// 401 `unauthorized`: no token, or one that does not grant this.
    pub fn unauthorized(detail: impl Into<String>) -> Self {
        ApiError {
            status: StatusCode::UNAUTHORIZED,
            code: "unauthorized",
            detail: detail.into(),
        }
    }
    /// 404 `not_found`: no such room, SKU or path.
    pub fn not_found(detail: impl Into<String>) -> Self {
        ApiError {
            status: StatusCode::NOT_FOUND,
            code: "not_found",
            detail: detail.into(),
        }
    }
    /// 405 `method_not_allowed`: the path exists, the method does not.
    pub fn method_not_allowed(detail: impl Into<String>) -> Self {
        ApiError {
            status: StatusCode::METHOD_NOT_ALLOWED,
            code: "method_not_allowed",
            detail: detail.into(),
        }
    }
    /// 429 `too_many_connections`: this user holds as many buyer sockets in the room as it may.
    pub fn too_many_connections(detail: impl Into<String>) -> Self {
        ApiError {
            status: StatusCode::TOO_MANY_REQUESTS,
            code: "too_many_connections",
            detail: detail.into(),
        }
    }
    /// A status and code of the caller's choosing (the payment and order-status answers).
    pub fn coded(status: StatusCode, code: &'static str, detail: impl Into<String>) -> Self {
        ApiError {
            status,
            code,
            detail: detail.into(),
        }
    }
    /// 503 `unavailable`: the hub cannot do it now; trying again later may work.
    pub fn unavailable(detail: impl Into<String>) -> Self {
        ApiError {
            status: StatusCode::SERVICE_UNAVAILABLE,
            code: "unavailable",
            detail: detail.into(),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (
            self.status,
            Json(json!({"error": self.code, "detail": self.detail})),
        )
            .into_response()
    }
}

impl From<CatalogError> for ApiError {
    fn from(e: CatalogError) -> Self {
        match e {
            CatalogError::BadRequest(d) => ApiError::bad_request(d),
            CatalogError::NotFound(d) => ApiError::not_found(d),
            CatalogError::Conflict(d) => ApiError {
                status: StatusCode::CONFLICT,
                code: "conflict",
                detail: d,
            },
            CatalogError::Unavailable(d) => {
                tracing::error!(detail = %d, "admin change failed");
                ApiError::unavailable("the change could not be made durable; nothing changed")
            }
        }
    }
}

impl From<MoveError> for ApiError {
    fn from(e: MoveError) -> Self {
        use crate::protocol::OrderStatus;
        let detail = e.to_string();
        let (status, code) = match e {
            MoveError::UnknownOrder => (StatusCode::NOT_FOUND, "unknown_order"),
            MoveError::NotCancellable(_) => (StatusCode::CONFLICT, "not_cancellable"),
            MoveError::NotRefundable(_) => (StatusCode::CONFLICT, "not_refundable"),
            MoveError::AmountMismatch { .. } => (StatusCode::CONFLICT, "amount_mismatch"),
            MoveError::Late(OrderStatus::Expired) => (StatusCode::CONFLICT, "order_expired"),
            MoveError::Late(OrderStatus::Cancelled) => (StatusCode::CONFLICT, "order_cancelled"),
            MoveError::Late(_) => (StatusCode::CONFLICT, "already_paid"),
            MoveError::PaymentIdReused(_) => (StatusCode::CONFLICT, "payment_id_reused"),
            MoveError::Unavailable(_) => (StatusCode::SERVICE_UNAVAILABLE, "unavailable"),
        };
        ApiError::coded(status, code, detail)
    }
}

impl From<NoticeError> for ApiError {
    fn from(e: NoticeError) -> Self {
        ApiError {
            status: e.status(),
            code: e.code(),
            detail: e.to_string(),
        }
    }
}

impl From<QueryRejection> for ApiError {
    fn from(e: QueryRejection) -> Self {
        ApiError::bad_request(format!("invalid query: {}", e.body_text()))
    }
}

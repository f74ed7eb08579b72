//! `POST /api/payments`: a payment provider's notice (docs/protocol.md, section 8). No bearer
//! token: the notice is signed with the payment secret. The signature and its timestamp are
//! checked first ([`crate::auth::Auth::verify_payment`]), then the body is read
//! ([`crate::payments::parse`]), then the hub pays the order ([`crate::hub::Hub::pay`]).

use axum::body::Bytes;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::Json;
use serde::Serialize;

use super::error::ApiError;
use super::state::AppState;
use crate::clock::now_ms;
use crate::hub::moves::PaymentFor;
use crate::journal::record::Payment;
use crate::payments::{SIGNATURE_HEADER, TIMESTAMP_HEADER};
use crate::protocol::OrderStatus;

/// The answer to a notice that paid its order (or repeated one that did).
#[derive(Debug, Serialize)]
pub struct Paid {
    /// The order.
    pub order: String,
    /// `paid`.
    pub status: OrderStatus,
}

/// `POST /api/payments`.
pub async fn payment(
    State(s): State<AppState>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Json<Paid>, ApiError> {
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    s.auth.verify_payment(
        header(TIMESTAMP_HEADER),
        header(SIGNATURE_HEADER),
        &body,
        now_ms(),
    )?;
    let n = crate::payments::parse(&body)?;
    let order = s
        .hub
        .pay(PaymentFor {
            room: &n.room,
            order: &n.order,
            payment: Payment {
                payment_id: n.payment_id.as_str().into(),
                amount_fen: n.amount_fen,
                paid_at_ms: n.paid_at_ms,
            },
        })
        .await?;
    Ok(Json(Paid {
        order: order.order_id(),
        status: OrderStatus::Paid,
    }))
}

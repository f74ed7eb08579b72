//! What an operator change may hold, why one is refused, and a room as the API returns it:
//! shared by the embedded catalog and fleet mode's.

use std::sync::Arc;

use serde::Serialize;

use crate::journal::{JournalError, SkuDef};
use crate::protocol::SkuState;

/// Highest price a SKU may have, in fen (10^10 CNY).
pub const MAX_PRICE_FEN: u64 = 1_000_000_000_000;
/// Highest stock of a SKU, and highest restock or withdrawal at once.
pub const MAX_STOCK: u64 = 1_000_000_000;
/// Longest SKU name or room title, in characters.
pub const MAX_NAME_CHARS: usize = 200;
/// Fewest and most seconds a buyer may be given to pay (`pay_timeout_s`).
pub const PAY_TIMEOUT_S: std::ops::RangeInclusive<u64> = 10..=86_400;
/// Latest sale window time accepted: the last millisecond of the year 9999. Later values are
/// typos, and keeping them finite keeps timer arithmetic far from overflow.
pub const MAX_TIME_MS: i64 = 253_402_300_799_999;

/// Why an operator change was refused.
#[derive(Debug, thiserror::Error)]
pub enum CatalogError {
    /// A value out of bounds or malformed (400).
    #[error("{0}")]
    BadRequest(String),
    /// No such room or SKU (404).
    #[error("{0}")]
    NotFound(String),
    /// The change does not fit the state now, such as withdrawing more than is left (409).
    #[error("{0}")]
    Conflict(String),
    /// The change could not be made durable, or Redis did not answer (503).
    #[error("{0}")]
    Unavailable(String),
}

impl From<JournalError> for CatalogError {
    fn from(e: JournalError) -> Self {
        CatalogError::Unavailable(format!("the change could not be made durable: {e}"))
    }
}

/// A room as the API returns it.
#[derive(Debug, Clone, Serialize)]
pub struct RoomView {
    /// The room id.
    pub room: Arc<str>,
    /// The room's title.
    pub title: String,
    /// Every SKU, in creation order.
    pub skus: Vec<SkuState>,
}

/// Checks a SKU definition's values.
pub fn validate_sku(def: &SkuDef) -> Result<(), CatalogError> {
    let bad = |m: String| Err(CatalogError::BadRequest(m));
    let chars = def.name.chars().count();
    if chars == 0 || chars > MAX_NAME_CHARS {
        return bad(format!("name must have 1 to {MAX_NAME_CHARS} characters"));
    }
    if def.price_fen > MAX_PRICE_FEN {
        return bad(format!("price_fen must be between 0 and {MAX_PRICE_FEN}"));
    }
    if def.stock > MAX_STOCK {
        return bad(format!("stock must be between 0 and {MAX_STOCK}"));
    }
    if let Some(t) = def.pay_timeout_s {
        if !PAY_TIMEOUT_S.contains(&t) {
            return bad(format!(
                "pay_timeout_s must be null or between {} and {}",
                PAY_TIMEOUT_S.start(),
                PAY_TIMEOUT_S.end()
            ));
        }
    }
    if let Some(l) = def.limit_per_user {
        if l == 0 || l > MAX_STOCK {
            return bad(format!(
                "limit_per_user must be null or between 1 and {MAX_STOCK}"
            ));
        }
    }
    for (name, t) in [
        ("opens_at_ms", def.opens_at_ms),
        ("closes_at_ms", def.closes_at_ms),
    ] {
        if t.is_some_and(|t| !(0..=MAX_TIME_MS).contains(&t)) {
            return bad(format!(
                "{name} must be a Unix time in milliseconds between 0 and {MAX_TIME_MS}"
            ));
        }
    }
    if let (Some(o), Some(c)) = (def.opens_at_ms, def.closes_at_ms) {
        if c <= o {
            return bad("closes_at_ms must be after opens_at_ms".into());
        }
    }
    Ok(())
}

/// Checks a room title.
pub fn validate_title(title: &str) -> Result<(), CatalogError> {
    if title.chars().count() > MAX_NAME_CHARS {
        return Err(CatalogError::BadRequest(format!(
            "title must have at most {MAX_NAME_CHARS} characters"
        )));
    }
    Ok(())
}

/// Checks a restock (`delta > 0`) or withdrawal (`delta < 0`) amount.
pub fn validate_delta(delta: i64) -> Result<(), CatalogError> {
    if delta == 0 {
        return Err(CatalogError::BadRequest(
            "delta must not be 0: a positive delta restocks, a negative one withdraws".into(),
        ));
    }
    if delta.unsigned_abs() > MAX_STOCK {
        return Err(CatalogError::BadRequest(format!(
            "delta must be between -{MAX_STOCK} and {MAX_STOCK}"
        )));
    }
    Ok(())
}

//! Operator changes: rooms, SKUs, stock and sale windows. Each is checked, journaled, and
//! takes effect when the journal applies it, so a restart replays exactly what was answered.

use std::sync::Arc;

use serde::Serialize;

use crate::clock::now_ms;
use crate::hub::Hub;
use crate::ids;
use crate::inventory::SkuDef;
use crate::journal::{JournalError, Record};
use crate::protocol::SkuState;

/// Highest price a SKU may have, in fen (10^10 CNY).
pub const MAX_PRICE_FEN: u64 = 1_000_000_000_000;
/// Highest stock of a SKU, and highest restock or withdrawal at once.
pub const MAX_STOCK: u64 = 1_000_000_000;
/// Longest SKU name or room title, in characters.
pub const MAX_NAME_CHARS: usize = 200;
/// Latest sale window time accepted: the last millisecond of the year 9999. Later values are
/// typos, and keeping them finite keeps timer arithmetic far from overflow.
pub const MAX_TIME_MS: i64 = 253_402_300_799_999;

/// Why an operator change was refused.
#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    #[error("{0}")]
    BadRequest(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Conflict(String),
    #[error("{0}")]
    Unavailable(String),
}

impl From<JournalError> for AdminError {
    fn from(e: JournalError) -> Self {
        AdminError::Unavailable(format!("the change could not be made durable: {e}"))
    }
}

/// A room as the API returns it.
#[derive(Debug, Clone, Serialize)]
pub struct RoomView {
    pub room: Arc<str>,
    pub title: String,
    pub skus: Vec<SkuState>,
}

/// Checks a SKU definition's values.
pub fn validate_sku(def: &SkuDef) -> Result<(), AdminError> {
    let bad = |m: String| Err(AdminError::BadRequest(m));
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
pub fn validate_title(title: &str) -> Result<(), AdminError> {
    if title.chars().count() > MAX_NAME_CHARS {
        return Err(AdminError::BadRequest(format!(
            "title must have at most {MAX_NAME_CHARS} characters"
        )));
    }
    Ok(())
}

/// Checks a restock (`delta > 0`) or withdrawal (`delta < 0`) amount.
pub fn validate_delta(delta: i64) -> Result<(), AdminError> {
    if delta == 0 {
        return Err(AdminError::BadRequest(
            "delta must not be 0: a positive delta restocks, a negative one withdraws".into(),
        ));
    }
    if delta.unsigned_abs() > MAX_STOCK {
        return Err(AdminError::BadRequest(format!(
            "delta must be between -{MAX_STOCK} and {MAX_STOCK}"
        )));
    }
    Ok(())
}

impl Hub {
    /// Runs an admin change on its own task: a client hanging up mid-change cannot leave it
    /// half done.
    async fn run_admin<T: Send + 'static>(
        &self,
        f: impl std::future::Future<Output = Result<T, AdminError>> + Send + 'static,
    ) -> Result<T, AdminError> {
        tokio::spawn(f)
            .await
            .map_err(|e| AdminError::Unavailable(format!("admin task failed: {e}")))?
    }

    /// Redis mode: a room or SKU made on another hub a moment ago may not be in this hub's
    /// copy yet; look in Redis before answering 404.
    async fn refresh_if_missing(&self, room: &str, sku: Option<&str>) {
        let Some(fleet) = self.fleet() else { return };
        let known = self
            .room(room)
            .is_some_and(|r| sku.is_none_or(|s| r.sku(s).is_some()));
        if !known && ids::check(room).is_ok() {
            let _ = crate::fleet::mirror::sync_room(self, fleet, room).await;
        }
    }

    fn sku_of(&self, room: &str, sku: &str) -> Result<Arc<crate::inventory::Sku>, AdminError> {
        let r = self
            .room(room)
            .ok_or_else(|| AdminError::NotFound(format!("room {room} does not exist")))?;
        r.sku(sku)
            .ok_or_else(|| AdminError::NotFound(format!("sku {sku} does not exist in room {room}")))
    }

    pub fn room_view(&self, room: &str) -> Option<RoomView> {
        let r = self.room(room)?;
        Some(RoomView {
            room: r.id.clone(),
            title: r.title(),
            skus: r.sku_states(now_ms()),
        })
    }

    /// Creates a room or changes its title.
    pub async fn put_room(&self, room: &str, title: String) -> Result<RoomView, AdminError> {
        ids::check_named("room", room).map_err(AdminError::BadRequest)?;
        validate_title(&title)?;
        let hub = self.clone();
        let room: Arc<str> = Arc::from(room);
        if let Some(fleet) = self.fleet().cloned() {
            return self
                .run_admin(
                    async move { crate::fleet::admin::put_room(&hub, &fleet, room, title).await },
                )
                .await;
        }
        self.run_admin(async move {
            let _g = hub.admin_lock().lock().await;
            hub.journal()
                .append(Record::Room {
                    room: room.clone(),
                    title,
                    ts_ms: now_ms(),
                })
                .await?;
            let r = hub.room(&room).expect("the journal applied the room");
            hub.start_room_tasks(&r);
            Ok(hub.room_view(&room).expect("room exists"))
        })
        .await
    }

    /// Creates or updates a SKU. On update the stock is left alone.
    pub async fn put_sku(
        &self,
        room: &str,
        sku: &str,
        def: SkuDef,
    ) -> Result<SkuState, AdminError> {
        ids::check_named("sku", sku).map_err(AdminError::BadRequest)?;
        validate_sku(&def)?;
        self.refresh_if_missing(room, None).await;
        let r = self
            .room(room)
            .ok_or_else(|| AdminError::NotFound(format!("room {room} does not exist")))?;
        let hub = self.clone();
        let sku: Arc<str> = Arc::from(sku);
        if let Some(fleet) = self.fleet().cloned() {
            return self
                .run_admin(async move {
                    crate::fleet::admin::put_sku(&hub, &fleet, &r.id, &sku, def).await
                })
                .await;
        }
        self.run_admin(async move {
            let _g = hub.admin_lock().lock().await;
            let created = r.sku(&sku).is_none();
            let rec = Record::Sku {
                room: r.id.clone(),
                sku: sku.clone(),
                def,
                created,
                ts_ms: now_ms(),
            };
            hub.journal().append(rec).await?;
            Ok(r.sku(&sku)
                .expect("the journal applied the sku")
                .view(now_ms()))
        })
        .await
    }

    /// Restocks (`delta > 0`) or withdraws (`delta < 0`).
    pub async fn change_stock(
        &self,
        room: &str,
        sku: &str,
        delta: i64,
    ) -> Result<SkuState, AdminError> {
        validate_delta(delta)?;
        self.refresh_if_missing(room, Some(sku)).await;
        let s = self.sku_of(room, sku)?;
        if delta > 0 && s.stock_total() + delta as u64 > MAX_STOCK {
            return Err(AdminError::BadRequest(format!(
                "stock_total would exceed {MAX_STOCK}"
            )));
        }
        let hub = self.clone();
        let room: Arc<str> = Arc::from(room);
        if let Some(fleet) = self.fleet().cloned() {
            return self
                .run_admin(async move {
                    crate::fleet::admin::change_stock(&hub, &fleet, &room, &s.id, delta).await
                })
                .await;
        }
        self.run_admin(async move {
            let _g = hub.admin_lock().lock().await;
            let n = delta.unsigned_abs();
            if delta < 0 {
                // Take the units now so no buy can sell them while the withdrawal is journaled.
                s.reserve_withdrawal(n).map_err(|left| {
                    AdminError::Conflict(format!("cannot withdraw {n}: only {left} left"))
                })?;
            }
            let rec = Record::Stock {
                room: room.clone(),
                sku: s.id.clone(),
                delta,
                ts_ms: now_ms(),
            };
            if let Err(e) = hub.journal().append(rec).await {
                if delta < 0 {
                    s.cancel_withdrawal(n);
                }
                return Err(e.into());
            }
            Ok(s.view(now_ms()))
        })
        .await
    }

    /// Opens a sale now; a closed or scheduled sale reopens.
    pub async fn open_sale(&self, room: &str, sku: &str) -> Result<SkuState, AdminError> {
        self.set_window(room, sku, true).await
    }

    /// Closes a sale now.
    pub async fn close_sale(&self, room: &str, sku: &str) -> Result<SkuState, AdminError> {
        self.set_window(room, sku, false).await
    }

    async fn set_window(&self, room: &str, sku: &str, open: bool) -> Result<SkuState, AdminError> {
        self.refresh_if_missing(room, Some(sku)).await;
        let s = self.sku_of(room, sku)?;
        let hub = self.clone();
        let room: Arc<str> = Arc::from(room);
        if let Some(fleet) = self.fleet().cloned() {
            return self
                .run_admin(async move {
                    crate::fleet::admin::set_window(&hub, &fleet, &room, &s.id, open).await
                })
                .await;
        }
        self.run_admin(async move {
            let _g = hub.admin_lock().lock().await;
            let now = now_ms();
            let (opens, closes) = s.window();
            let (opens_at_ms, closes_at_ms) = if open {
                (Some(now), closes.filter(|&c| c > now))
            } else {
                (opens, Some(now))
            };
            let rec = Record::Window {
                room,
                sku: s.id.clone(),
                opens_at_ms,
                closes_at_ms,
                ts_ms: now,
            };
            hub.journal().append(rec).await?;
            Ok(s.view(now_ms()))
        })
        .await
    }
}

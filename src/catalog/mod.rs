//! The catalog: operator changes to rooms, SKUs, stock and sale windows. Each is checked,
//! journaled, and takes effect when the journal applies it, so a restart replays exactly what
//! was answered. In fleet mode the same changes go to Redis instead ([`crate::fleet::catalog`]).
//!
//! - [`rules`]: what a change may hold, why one is refused, and a room as the API returns it.

pub mod rules;

pub use rules::{
    validate_delta, validate_sku, validate_title, CatalogError, RoomView, MAX_NAME_CHARS,
    MAX_PRICE_FEN, MAX_STOCK, MAX_TIME_MS,
};

use std::sync::Arc;

use crate::clock::now_ms;
use crate::hub::Hub;
use crate::ids;
use crate::inventory::SkuDef;
use crate::journal::Record;
use crate::protocol::SkuState;

impl Hub {
    /// Runs a catalog change on its own task: a client hanging up mid-change cannot leave it
    /// half done.
    async fn run_admin<T: Send + 'static>(
        &self,
        f: impl std::future::Future<Output = Result<T, CatalogError>> + Send + 'static,
    ) -> Result<T, CatalogError> {
        tokio::spawn(f)
            .await
            .map_err(|e| CatalogError::Unavailable(format!("admin task failed: {e}")))?
    }

    /// Fleet mode: a room or SKU made on another hub a moment ago may not be in this hub's
    /// copy yet; look in Redis before answering 404.
    async fn refresh_if_missing(&self, room: &str, sku: Option<&str>) {
        let Some(fleet) = self.fleet() else { return };
        let known = self
            .room(room)
            .is_some_and(|r| sku.is_none_or(|s| r.skus.get(s).is_some()));
        if !known && ids::check(room).is_ok() {
            let _ = crate::fleet::mirror::sync_room(self, fleet, room).await;
        }
    }

    fn sku_of(&self, room: &str, sku: &str) -> Result<Arc<crate::inventory::Sku>, CatalogError> {
        let r = self
            .room(room)
            .ok_or_else(|| CatalogError::NotFound(format!("room {room} does not exist")))?;
        r.skus.get(sku).ok_or_else(|| {
            CatalogError::NotFound(format!("sku {sku} does not exist in room {room}"))
        })
    }

    /// The room `room` as the API returns it, if it exists.
    pub fn room_view(&self, room: &str) -> Option<RoomView> {
        let r = self.room(room)?;
        Some(RoomView {
            room: r.id.clone(),
            title: r.title(),
            skus: r.skus.states(now_ms()),
        })
    }

    /// Creates a room or changes its title.
    pub async fn put_room(&self, room: &str, title: String) -> Result<RoomView, CatalogError> {
        ids::check_named("room", room).map_err(CatalogError::BadRequest)?;
        validate_title(&title)?;
        let hub = self.clone();
        let room: Arc<str> = Arc::from(room);
        if let Some(fleet) = self.fleet().cloned() {
            return self
                .run_admin(async move {
                    crate::fleet::catalog::put_room(&hub, &fleet, room, title).await
                })
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
    ) -> Result<SkuState, CatalogError> {
        ids::check_named("sku", sku).map_err(CatalogError::BadRequest)?;
        validate_sku(&def)?;
        self.refresh_if_missing(room, None).await;
        let r = self
            .room(room)
            .ok_or_else(|| CatalogError::NotFound(format!("room {room} does not exist")))?;
        let hub = self.clone();
        let sku: Arc<str> = Arc::from(sku);
        if let Some(fleet) = self.fleet().cloned() {
            return self
                .run_admin(async move {
                    crate::fleet::catalog::put_sku(&hub, &fleet, &r.id, &sku, def).await
                })
                .await;
        }
        self.run_admin(async move {
            let _g = hub.admin_lock().lock().await;
            let created = r.skus.get(&sku).is_none();
            let rec = Record::Sku {
                room: r.id.clone(),
                sku: sku.clone(),
                def,
                created,
                ts_ms: now_ms(),
            };
            hub.journal().append(rec).await?;
            Ok(r.skus
                .get(&sku)
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
    ) -> Result<SkuState, CatalogError> {
        validate_delta(delta)?;
        self.refresh_if_missing(room, Some(sku)).await;
        let s = self.sku_of(room, sku)?;
        if delta > 0 && s.stock_total() + delta as u64 > MAX_STOCK {
            return Err(CatalogError::BadRequest(format!(
                "stock_total would exceed {MAX_STOCK}"
            )));
        }
        let hub = self.clone();
        let room: Arc<str> = Arc::from(room);
        if let Some(fleet) = self.fleet().cloned() {
            return self
                .run_admin(async move {
                    crate::fleet::catalog::change_stock(&hub, &fleet, &room, &s.id, delta).await
                })
                .await;
        }
        self.run_admin(async move {
            let _g = hub.admin_lock().lock().await;
            let n = delta.unsigned_abs();
            if delta < 0 {
                // Take the units now so no buy can sell them while the withdrawal is journaled.
                s.reserve_withdrawal(n).map_err(|left| {
                    CatalogError::Conflict(format!("cannot withdraw {n}: only {left} left"))
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
    pub async fn open_sale(&self, room: &str, sku: &str) -> Result<SkuState, CatalogError> {
        self.set_window(room, sku, true).await
    }

    /// Closes a sale now.
    pub async fn close_sale(&self, room: &str, sku: &str) -> Result<SkuState, CatalogError> {
        self.set_window(room, sku, false).await
    }

    async fn set_window(
        &self,
        room: &str,
        sku: &str,
        open: bool,
    ) -> Result<SkuState, CatalogError> {
        self.refresh_if_missing(room, Some(sku)).await;
        let s = self.sku_of(room, sku)?;
        let hub = self.clone();
        let room: Arc<str> = Arc::from(room);
        if let Some(fleet) = self.fleet().cloned() {
            return self
                .run_admin(async move {
                    crate::fleet::catalog::set_window(&hub, &fleet, &room, &s.id, open).await
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

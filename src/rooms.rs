//! The registry of rooms, and how each durable journal record changes them.

use std::sync::Arc;

use dashmap::DashMap;

use crate::inventory::Sku;
use crate::journal::{Apply, Capture, Mode, Record};
use crate::room::Room;

/// All rooms of this hub. Only [`Apply::apply`] (the journal writer, or replay) creates rooms
/// and SKUs or changes their stock, so memory follows the journal's order exactly.
#[derive(Debug, Default)]
pub struct Rooms {
    rooms: DashMap<Arc<str>, Arc<Room>>,
}

impl Rooms {
    pub fn get(&self, id: &str) -> Option<Arc<Room>> {
        self.rooms.get(id).map(|r| r.value().clone())
    }

    /// Every room, sorted by id.
    pub fn all(&self) -> Vec<Arc<Room>> {
        let mut v: Vec<Arc<Room>> = self.rooms.iter().map(|r| r.value().clone()).collect();
        v.sort_by(|a, b| a.id.cmp(&b.id));
        v
    }

    /// Adds a room restored from a snapshot.
    pub(crate) fn insert(&self, room: Arc<Room>) {
        self.rooms.insert(room.id.clone(), room);
    }

    fn sku(&self, room: &str, sku: &str) -> Option<(Arc<Room>, Arc<Sku>)> {
        let room = self.get(room)?;
        let sku = room.sku(sku)?;
        Some((room, sku))
    }
}

impl Apply for Rooms {
    fn apply(&self, record: &Record, mode: Mode) {
        match record {
            Record::Room { room, title, .. } => match self.get(room) {
                Some(r) => r.set_title(title.clone()),
                None => {
                    self.rooms.insert(
                        room.clone(),
                        Arc::new(Room::new(room.clone(), title.clone())),
                    );
                }
            },
            Record::Sku { room, sku, def, .. } => {
                let Some(r) = self.get(room) else {
                    tracing::error!(%room, %sku, "journal has a SKU of an unknown room; skipped");
                    return;
                };
                match r.sku(sku) {
                    Some(s) => s.redefine(def),
                    None => r.add_sku(Arc::new(Sku::new(sku.clone(), def))),
                }
                r.state_changed();
            }
            Record::Stock {
                room, sku, delta, ..
            } => {
                if let Some((r, s)) = self.sku(room, sku) {
                    // A live withdrawal took its units out of `left` before it was journaled.
                    s.apply_stock_delta(*delta, mode == Mode::Live && *delta < 0);
                    r.state_changed();
                }
            }
            Record::Window {
                room,
                sku,
                opens_at_ms,
                closes_at_ms,
                ..
            } => {
                if let Some((r, s)) = self.sku(room, sku) {
                    s.set_window(*opens_at_ms, *closes_at_ms);
                    r.state_changed();
                }
            }
            Record::Order(o) => {
                let Some((r, s)) = self.sku(&o.room, &o.sku) else {
                    tracing::error!(room = %o.room, sku = %o.sku, "journal has an order of an unknown SKU; skipped");
                    return;
                };
                match mode {
                    Mode::Live => s.commit(o.qty),
                    Mode::Replay => s.replay_order(r.user(&o.user).key, o.qty, o.ts_ms),
                }
                r.add_order(o.clone());
            }
        }
    }

    fn capture(&self) -> Option<Box<dyn Capture>> {
        Some(Box::new(self.capture_state()))
    }

    fn restore(&self, state: &[u8]) -> Result<(), String> {
        self.restore_state(state)
    }
}

//! The registry of rooms, and how each durable journal record changes them.

pub mod audit;
pub mod capture;
pub mod deadlines;
pub mod events;
pub mod feeds;
pub mod live;
pub mod orders;
pub mod rejections;
pub mod requests;
pub mod room;
pub mod skus;
pub mod statuses;
pub mod users;
pub mod whole;

use std::collections::HashMap;
use std::sync::Arc;

use dashmap::DashMap;

use crate::inventory::Sku;
use crate::journal::record::Move;
use crate::journal::{Apply, Capture, Mode, OrderRecord, Record};
use crate::rooms::deadlines::{Deadline, Deadlines};
use crate::rooms::room::Room;

/// All rooms of this hub. Only [`Apply::apply`] (the journal writer, or replay) creates rooms
/// and SKUs or changes their stock, so memory follows the journal's order exactly.
///
/// In fleet mode ([`Rooms::in_fleet`]) rooms and SKUs are copies of Redis made by
/// [`crate::fleet::mirror`]; the journal holds only this hub's orders, which are applied to the
/// order list (never to stock, which Redis keeps) and handed to the stream publisher.
#[derive(Debug, Default)]
pub struct Rooms {
    rooms: DashMap<Arc<str>, Arc<Room>>,
    fleet: Option<FleetApply>,
    /// When every unpaid order of every room expires.
    pub deadlines: Deadlines,
}

/// What fleet mode needs from the journal's apply.
#[derive(Debug)]
struct FleetApply {
    hub: Arc<str>,
    /// Orders as they become durable, in journal order, to the stream publisher.
    publish: tokio::sync::mpsc::UnboundedSender<Arc<OrderRecord>>,
    /// The status moves this hub's journal holds, by order id, gathered by replay for the
    /// start-up repair of claims ([`crate::fleet::moves`]), which takes them.
    replayed_moves: std::sync::Mutex<HashMap<Arc<str>, Vec<Option<Move>>>>,
}

impl Rooms {
    /// Rooms of a hub in fleet mode: orders are stamped with `hub` and, once durable, sent
    /// to `publish`.
    pub fn in_fleet(
        hub: Arc<str>,
        publish: tokio::sync::mpsc::UnboundedSender<Arc<OrderRecord>>,
    ) -> Rooms {
        Rooms {
            rooms: DashMap::new(),
            fleet: Some(FleetApply {
                hub,
                publish,
                replayed_moves: Default::default(),
            }),
            deadlines: Deadlines::default(),
        }
    }

    /// The room `id`, created with `title` if this hub does not have it yet.
    pub fn get_or_create(&self, id: &str, title: &str) -> Arc<Room> {
        if let Some(r) = self.get(id) {
            return r;
        }
        self.rooms
            .entry(Arc::from(id))
            .or_insert_with(|| {
                let (id, title) = (Arc::from(id), title.to_owned());
                Arc::new(match self.fleet {
                    Some(_) => Room::in_fleet(id, title),
                    None => Room::new(id, title),
                })
            })
            .value()
            .clone()
    }

    fn apply_in_fleet(
        &self,
        fleet: &FleetApply,
        record: &Record,
        mode: Mode,
    ) -> Result<(), String> {
        if let Record::Audience {
            room,
            events,
            ts_ms,
            ..
        } = record
        {
            // Each hub counts the audience events posted to it (docs/fleet.md).
            let r = self.get_or_create(room, "");
            r.audience.apply(events, mode);
            r.live.audience_arrived(*ts_ms);
            r.changed();
            return Ok(());
        }
        if let Record::Rejections { room, counts, .. } = record {
            // Each hub counts the buys it refused.
            let r = self.get_or_create(room, "");
            r.rejections.add(counts);
            r.changed();
            return Ok(());
        }
        if let Record::FleetMoves { moves, .. } = record {
            // Their effects are in Redis (committed, or settled by the start-up repair), and
            // come back to every hub through the room's stream.
            if mode == Mode::Replay {
                let mut m = fleet.replayed_moves.lock().expect("replayed moves lock");
                for mv in moves {
                    m.entry(mv.order.clone()).or_default().push(mv.to.clone());
                }
            }
            return Ok(());
        }
        let Record::Order(o) = record else {
            if matches!(record, Record::Move { .. } | Record::Expired { .. }) {
                return Err(format!(
                    "an embedded hub's status move ({}) in the journal of a fleet hub: this data \
                     dir was written by an embedded hub; start it without --redis",
                    record.kind()
                ));
            }
            // Redis holds rooms, SKUs and stock in this mode: such a record was written by an
            // embedded hub, whose orders belong to rooms Redis does not have.
            return Err(format!(
                "a catalog record ({}) in the journal of a fleet hub: this data dir was written \
                 by an embedded hub; start it without --redis",
                record.kind()
            ));
        };
        let o = match &o.hub {
            Some(_) => o.clone(),
            None => Arc::new(OrderRecord {
                hub: Some(fleet.hub.clone()),
                ..(**o).clone()
            }),
        };
        // An order is never dropped from the export, even if Redis forgot its room.
        let room = self.get_or_create(&o.room, "");
        match mode {
            Mode::Live => {
                // Replayed orders get their deadlines from Redis at start, where their
                // statuses are (`fleet::moves::load_deadlines`).
                if let Some(at_ms) = o.pay_by_ms {
                    self.deadlines.push(Deadline {
                        at_ms,
                        order: o.number,
                        room: room.id.clone(),
                    });
                }
                room.add_order(o.clone());
                let _ = fleet.publish.send(o);
            }
            Mode::Replay => room.add_replayed_order(o),
        }
        Ok(())
    }

    /// Fleet mode: takes the status moves replay found in this hub's journal, by order id.
    pub fn take_replayed_moves(&self) -> HashMap<Arc<str>, Vec<Option<Move>>> {
        self.fleet
            .as_ref()
            .map(|f| std::mem::take(&mut *f.replayed_moves.lock().expect("replayed moves lock")))
            .unwrap_or_default()
    }

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
        let sku = room.skus.get(sku)?;
        Some((room, sku))
    }
}

impl Rooms {
    /// Makes durable status moves of `orders` (`to`; `None`: expired): each order's status,
    /// its units and allowance back through the gate when the move gives them back, the
    /// event, and (live) the `order` push to its owner.
    fn apply_moves(
        &self,
        record: &Record,
        room: &str,
        orders: &[u64],
        to: Option<&Move>,
        ts_ms: i64,
        mode: Mode,
    ) -> Result<(), String> {
        let r = self.get(room).ok_or_else(|| unplaced(record, room, None))?;
        for &number in orders {
            let order = r
                .statuses
                .order(number)
                .or_else(|| r.orders.by_number(number))
                .ok_or_else(|| {
                    format!(
                        "{} of order number {number}, which room {room} does not hold",
                        record.kind()
                    )
                })?;
            let moved = r.statuses.apply(&order, to, ts_ms)?;
            if moved.released() {
                let sku = r
                    .skus
                    .get(&order.sku)
                    .ok_or_else(|| unplaced(record, room, Some(&order.sku)))?;
                crate::inventory::LocalGate::give_back_order(
                    &sku,
                    r.users.intern(&order.user).key,
                    order.qty,
                );
                r.feeds.notify_sale_changed();
            }
            let moved = r.record_move(moved);
            if mode == Mode::Live {
                r.feeds.order_pushes.send(&moved);
            }
        }
        Ok(())
    }
}

/// Why a record of an embedded hub's journal has no place: its room or SKU was never made by
/// a record before it. A journal written in fleet mode holds orders of rooms kept in Redis.
fn unplaced(record: &Record, room: &str, sku: Option<&str>) -> String {
    let what = match sku {
        Some(sku) => format!("room {room}, SKU {sku}"),
        None => format!("room {room}"),
    };
    format!(
        "{} of {what}, which no earlier record of this journal made (a journal written in \
         fleet mode holds orders of rooms kept in Redis: start it with --redis)",
        record.kind()
    )
}

impl Apply for Rooms {
    fn apply(&self, record: &Record, mode: Mode) -> Result<(), String> {
        if let Some(fleet) = &self.fleet {
            return self.apply_in_fleet(fleet, record, mode);
        }
        self.apply_embedded(record, mode)?;
        if let Some(r) = record_room(record).and_then(|id| self.get(id)) {
            r.changed();
        }
        Ok(())
    }

    fn capture(&self) -> Option<Box<dyn Capture>> {
        Some(Box::new(self.try_capture_state()?))
    }

    fn restore(&self, state: &[u8]) -> Result<(), String> {
        self.restore_state(state)
    }
}

/// The room a record changes.
fn record_room(record: &Record) -> Option<&str> {
    match record {
        Record::Room { room, .. }
        | Record::Sku { room, .. }
        | Record::Stock { room, .. }
        | Record::Window { room, .. }
        | Record::Move { room, .. }
        | Record::Expired { room, .. }
        | Record::FleetMoves { room, .. }
        | Record::Audience { room, .. }
        | Record::Rejections { room, .. } => Some(room),
        Record::Order(o) => Some(&o.room),
    }
}

impl Rooms {
    /// Applies a record of an embedded hub's journal.
    fn apply_embedded(&self, record: &Record, mode: Mode) -> Result<(), String> {
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
                let r = self.get(room).ok_or_else(|| unplaced(record, room, None))?;
                match r.skus.get(sku) {
                    Some(s) => s.redefine(def),
                    None => r.skus.add(Arc::new(Sku::new(sku.clone(), def))),
                }
                r.feeds.notify_sale_changed();
            }
            Record::Stock {
                room, sku, delta, ..
            } => {
                let (r, s) = self
                    .sku(room, sku)
                    .ok_or_else(|| unplaced(record, room, Some(sku)))?;
                // A live withdrawal took its units out of `left` before it was journaled.
                s.apply_stock_delta(*delta, mode == Mode::Live && *delta < 0);
                r.feeds.notify_sale_changed();
            }
            Record::Window {
                room,
                sku,
                opens_at_ms,
                closes_at_ms,
                ..
            } => {
                let (r, s) = self
                    .sku(room, sku)
                    .ok_or_else(|| unplaced(record, room, Some(sku)))?;
                s.set_window(*opens_at_ms, *closes_at_ms);
                r.feeds.notify_sale_changed();
            }
            Record::Order(o) => {
                let (r, s) = self
                    .sku(&o.room, &o.sku)
                    .ok_or_else(|| unplaced(record, &o.room, Some(&o.sku)))?;
                match mode {
                    Mode::Live => {
                        s.commit(o.qty);
                        r.add_order(o.clone());
                    }
                    Mode::Replay => {
                        s.replay_order(r.users.intern(&o.user).key, o.qty, o.ts_ms);
                        r.add_replayed_order(o.clone());
                    }
                }
                if let Some(at_ms) = o.pay_by_ms {
                    self.deadlines.push(Deadline {
                        at_ms,
                        order: o.number,
                        room: r.id.clone(),
                    });
                }
            }
            Record::Move {
                room,
                order,
                to,
                ts_ms,
            } => self.apply_moves(record, room, &[*order], Some(to), *ts_ms, mode)?,
            Record::Expired {
                room,
                orders,
                ts_ms,
            } => self.apply_moves(record, room, orders, None, *ts_ms, mode)?,
            Record::Audience {
                room,
                events,
                ts_ms,
                ..
            } => {
                let r = self.get(room).ok_or_else(|| unplaced(record, room, None))?;
                r.audience.apply(events, mode);
                r.live.audience_arrived(*ts_ms);
            }
            Record::Rejections { room, counts, .. } => {
                let r = self.get(room).ok_or_else(|| unplaced(record, room, None))?;
                r.rejections.add(counts);
            }
            Record::FleetMoves { .. } => {
                return Err(
                    "a fleet hub's status moves in the journal of an embedded hub: this data dir \
                     was written by a fleet hub; start it with --redis"
                        .to_owned(),
                )
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_record_of_a_room_or_sku_never_made_cannot_be_placed() {
        let rooms = Rooms::default();
        let order = Record::Order(crate::rooms::requests::tests::order(
            &Arc::from("u"),
            &Arc::from("q"),
        ));
        let e = rooms.apply(&order, Mode::Replay).unwrap_err();
        assert!(e.contains("order of room") && e.contains("--redis"), "{e}");
        let window = Record::Window {
            room: "nope".into(),
            sku: "S".into(),
            opens_at_ms: None,
            closes_at_ms: None,
            ts_ms: 0,
        };
        assert!(rooms.apply(&window, Mode::Replay).is_err());
        assert!(rooms.all().is_empty(), "nothing was made for them");
    }
}

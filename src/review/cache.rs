//! Reviews built off the request path and kept: a room's review is rebuilt only when the
//! room changed since the last one (its journal records applied, [`Room::changes`], and in
//! fleet mode its stream's length), so asking again for the review of an idle or finished room
//! costs a comparison, not a fold. A rebuild runs on a blocking thread and folds only the
//! events since the previous build ([`Fold`]); two requests for a changed room build once.

use std::sync::{Arc, Mutex, RwLock};

use axum::body::Bytes;
use dashmap::DashMap;

use super::{Fold, Review};
use crate::rooms::room::Room;

/// What a review was built from: the room's applied records, its events and its stream's
/// length. Any durable change to the room moves one of them.
type Version = (u64, usize, usize);

fn version(room: &Room) -> Version {
    (
        room.changes(),
        room.events.count(),
        room.orders.stream_count(),
    )
}

/// One built review, with both renderings, encoded once.
#[derive(Debug)]
pub struct Built {
    version: Version,
    /// The review.
    pub review: Review,
    /// Its JSON.
    pub json: Bytes,
    /// Its series as CSV.
    pub csv: Bytes,
}

#[derive(Default)]
struct Entry {
    /// Held while building (on a blocking thread only).
    fold: Mutex<Option<Fold>>,
    /// The last review built; read on the request path, held only to clone the `Arc`.
    built: RwLock<Option<Arc<Built>>>,
}

impl Entry {
    fn current(&self, v: Version) -> Option<Arc<Built>> {
        self.built
            .read()
            .expect("review lock")
            .as_ref()
            .filter(|b| b.version == v)
            .cloned()
    }
}

/// The reviews of a hub's rooms.
#[derive(Default)]
pub struct Reviews {
    rooms: DashMap<Arc<str>, Arc<Entry>>,
}

impl std::fmt::Debug for Reviews {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Reviews")
            .field("rooms", &self.rooms.len())
            .finish()
    }
}

impl Reviews {
    /// The review of `room` as its durable state stands now (`from_stream`: fleet mode, its
    /// orders from the room's stream). Built on a blocking thread when the room changed since
    /// the last one; `None` if that thread failed.
    pub async fn get(&self, room: &Arc<Room>, from_stream: bool) -> Option<Arc<Built>> {
        let entry = self
            .rooms
            .entry(room.id.clone())
            .or_default()
            .value()
            .clone();
        if let Some(b) = entry.current(version(room)) {
            return Some(b);
        }
        let room = room.clone();
        tokio::task::spawn_blocking(move || Self::build(&entry, &room, from_stream))
            .await
            .ok()
    }

    /// Builds the review unless a build that waited for the lock already did.
    fn build(entry: &Entry, room: &Room, from_stream: bool) -> Arc<Built> {
        // A build that panicked left a fold half done: start it again from the first event.
        let mut fold = entry.fold.lock().unwrap_or_else(|poisoned| {
            entry.fold.clear_poison();
            let mut g = poisoned.into_inner();
            *g = None;
            g
        });
        // Read before the state: a change after it makes the next request build again.
        let v = version(room);
        if let Some(b) = entry.current(v) {
            return b;
        }
        let review = Review::build(room, fold.get_or_insert_with(|| Fold::new(from_stream)));
        let built = Arc::new(Built {
            version: v,
            json: serde_json::to_vec(&review)
                .expect("reviews serialize")
                .into(),
            csv: super::csv::minutes(&review.minutes).into(),
            review,
        });
        *entry.built.write().expect("review lock") = Some(built.clone());
        built
    }
}

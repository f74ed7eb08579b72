//! The negative look-up's cache of fleet mode: when rooms were last refreshed from Redis for a
//! buy of a SKU this hub does not know.

use std::sync::Arc;
use std::time::{Duration, Instant};

/// Least time between two refreshes of one room for buys of SKUs this hub does not know. A
/// SKU made on another hub reaches this one through the change notice at once and the
/// periodic refresh within [`super::mirror::MIRROR_INTERVAL`]; a refresh on demand covers only the moment in
/// between, so one per room per interval is enough.
pub const RESYNC_ROOM_GAP: Duration = Duration::from_millis(100);
/// Least time between two refreshes on demand over all rooms.
pub const RESYNC_GAP: Duration = Duration::from_millis(20);

/// When rooms were last refreshed for a buy of an unknown SKU: the negative look-up's cache.
/// Junk buys (SKUs that do not exist) are then answered `unknown_sku` from memory, and cost
/// Redis and the refresh lock at most one room refresh a [`RESYNC_ROOM_GAP`] per room and one a
/// [`RESYNC_GAP`] in all.
#[derive(Debug, Default)]
pub struct Resyncs {
    per_room: dashmap::DashMap<Arc<str>, Instant>,
    last: std::sync::Mutex<Option<Instant>>,
}

impl Resyncs {
    /// Whether a refresh of `room` may run now; if so, it is counted as run.
    pub fn allow(&self, room: &Arc<str>, now: Instant) -> bool {
        let mut last = self.last.lock().expect("resync lock");
        if last.is_some_and(|t| now.duration_since(t) < RESYNC_GAP) {
            return false;
        }
        let mut entry = self
            .per_room
            .entry(room.clone())
            .or_insert(now - RESYNC_ROOM_GAP);
        if now.duration_since(*entry) < RESYNC_ROOM_GAP {
            return false;
        }
        *entry = now;
        *last = Some(now);
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refreshes_are_spaced_per_room_and_overall() {
        let r = Resyncs::default();
        let (a, b): (Arc<str>, Arc<str>) = ("a".into(), "b".into());
        let t0 = Instant::now();
        assert!(r.allow(&a, t0));
        assert!(
            !r.allow(&a, t0 + RESYNC_GAP),
            "the same room within its gap"
        );
        assert!(
            !r.allow(&b, t0 + RESYNC_GAP / 2),
            "any room within the overall gap"
        );
        assert!(r.allow(&b, t0 + RESYNC_GAP));
        assert!(r.allow(&a, t0 + RESYNC_ROOM_GAP));
    }
}

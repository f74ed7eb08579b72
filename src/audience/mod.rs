//! The audience (docs/protocol.md, "Audience events"): what the video platform's adapter says
//! viewers do, and the figures the host's screen shows from it.
//!
//! - [`batch`]: a posted batch of events, parsed and checked whole;
//! - [`viewers`]: a room's viewers, interned, with their sessions, sources and the running
//!   figures.
//!
//! A batch is journaled as one record ([`crate::journal::Record::Audience`]) before it is
//! answered, and counted in the journal's apply ([`crate::rooms`]), so replay rebuilds it.

pub mod batch;
pub mod viewers;

use std::sync::Mutex;

use crate::journal::AudienceEvent;

/// A room's audience state, behind one lock: the journal's apply writes it, the aggregator
/// reads its figures.
#[derive(Default)]
pub struct Audience {
    state: Mutex<viewers::State>,
}

impl std::fmt::Debug for Audience {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Audience").finish_non_exhaustive()
    }
}

impl Audience {
    /// Counts a durable batch (journal apply, replay); returns how many events were new.
    pub fn add(&self, events: &[AudienceEvent]) -> usize {
        let mut s = self.state.lock().expect("audience lock");
        events.iter().filter(|e| s.add(e)).count()
    }

    /// The events of `events` not counted yet (a re-sent batch has none).
    pub fn unseen(&self, events: Vec<AudienceEvent>) -> Vec<AudienceEvent> {
        let s = self.state.lock().expect("audience lock");
        events.into_iter().filter(|e| !s.is_seen(e)).collect()
    }

    /// A buyer socket of `user` opened (`true`) or closed: online counts it.
    pub fn socket(&self, user: &str, open: bool) {
        self.state.lock().expect("audience lock").socket(user, open);
    }

    /// The state for a journal snapshot (on the journal writer's thread, between batches).
    pub fn save(&self) -> Vec<u8> {
        self.state.lock().expect("audience lock").save()
    }

    /// Installs a journal snapshot's state (restore, before any record).
    pub fn restore(&self, bytes: &[u8]) -> Result<(), String> {
        *self.state.lock().expect("audience lock") = viewers::State::restore(bytes)?;
        Ok(())
    }

    /// Runs `f` on the state, under the lock.
    pub fn with<R>(&self, f: impl FnOnce(&viewers::State) -> R) -> R {
        f(&self.state.lock().expect("audience lock"))
    }
}

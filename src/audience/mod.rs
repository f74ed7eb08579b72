//! The audience (docs/protocol.md, "Audience events"): what the video platform's adapter says
//! viewers do, and the figures the host's screen shows from it.
//!
//! - [`batch`]: a posted batch of events, parsed and checked whole;
//! - [`viewers`]: a room's viewers, interned, with their sessions, sources and the running
//!   figures.
//!
//! A batch is journaled ([`crate::journal::Record::Audience`]) before it is answered, and
//! handed to the room's [`Audience`] by the journal's apply ([`crate::rooms`]), so replay
//! rebuilds it.

pub mod batch;
pub mod viewers;

use std::sync::{Arc, Mutex, MutexGuard};

use crate::journal::{AudienceEvent, Mode};

/// Durable events queued for the fold at most; past it, the apply folds them itself.
const MAX_QUEUED_EVENTS: usize = 200_000;

/// A room's audience state, behind one lock. The journal's apply only queues a live batch
/// ([`Audience::apply`]), which costs the journal writer nothing per event; the first reader
/// after it (the aggregator's tick, the re-sent check of the next batch, a journal snapshot's
/// capture) folds what is queued, in journal order, before it reads. So every reader sees
/// every durable batch, and the writer thread, which acks the buys of the same group commit,
/// never folds thousands of events ahead of them.
#[derive(Default)]
pub struct Audience {
    state: Mutex<viewers::State>,
    /// Durable batches not folded yet, in journal order, and how many events they hold.
    queued: Mutex<(Vec<Arc<[AudienceEvent]>>, usize)>,
}

impl std::fmt::Debug for Audience {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Audience").finish_non_exhaustive()
    }
}

impl Audience {
    /// A durable batch (the journal's apply): queued when live; folded at once on replay, whose
    /// records would otherwise pile up with no reader.
    pub fn apply(&self, events: &Arc<[AudienceEvent]>, mode: Mode) {
        if mode == Mode::Replay {
            self.add(events);
            return;
        }
        let full = {
            let mut q = self.queued.lock().expect("audience queue lock");
            q.0.push(events.clone());
            q.1 += events.len();
            q.1 > MAX_QUEUED_EVENTS
        };
        if full {
            drop(self.state());
        }
    }

    /// Counts events at once; returns how many were new.
    pub fn add(&self, events: &[AudienceEvent]) -> usize {
        let mut s = self.state();
        events.iter().filter(|e| s.add(e)).count()
    }

    /// The state with every queued batch folded in: the state lock first, then the queue's,
    /// so batches fold in the order the apply queued them.
    fn state(&self) -> MutexGuard<'_, viewers::State> {
        let mut s = self.state.lock().expect("audience lock");
        let queued = std::mem::take(&mut *self.queued.lock().expect("audience queue lock"));
        for batch in queued.0 {
            for e in batch.iter() {
                s.add(e);
            }
        }
        s
    }

    /// The events of `events` not counted yet (a re-sent batch has none).
    pub fn unseen(&self, events: Vec<AudienceEvent>) -> Vec<AudienceEvent> {
        let s = self.state();
        events.into_iter().filter(|e| !s.is_seen(e)).collect()
    }

    /// A buyer socket of `user` opened (`true`) or closed: online counts it.
    pub fn socket(&self, user: &str, open: bool) {
        self.state().socket(user, open);
    }

    /// The state for a journal snapshot (on the journal writer's thread, between batches:
    /// every batch applied so far is queued or folded, and is folded now).
    pub fn save(&self) -> Vec<u8> {
        self.state().save()
    }

    /// Installs a journal snapshot's state (restore, before any record).
    pub fn restore(&self, bytes: &[u8]) -> Result<(), String> {
        *self.state() = viewers::State::restore(bytes)?;
        Ok(())
    }

    /// Installs the state of a journal snapshot from before the review (state version 3).
    pub fn restore_before_review(&self, bytes: &[u8]) -> Result<(), String> {
        *self.state() = viewers::State::restore_before_review(bytes)?;
        Ok(())
    }

    /// Runs `f` on the state, under the lock.
    pub fn with<R>(&self, f: impl FnOnce(&viewers::State) -> R) -> R {
        f(&self.state())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::journal::AudienceKind;

    fn like(user: &str, ts_ms: i64) -> AudienceEvent {
        AudienceEvent {
            kind: AudienceKind::Like,
            user: user.into(),
            ts_ms,
            source: None,
            referrer: None,
            count: 1,
            sku: None,
        }
    }

    /// Queued batches are folded before any read, in the order they were queued, and a
    /// re-sent event among them is counted once.
    #[test]
    fn queued_batches_fold_in_order_before_any_read() {
        let a = Audience::default();
        let t = 1_700_000_000_000;
        let b1: Arc<[AudienceEvent]> = vec![like("u1", t), like("u2", t)].into();
        let b2: Arc<[AudienceEvent]> = vec![like("u1", t), like("u3", t + 1)].into();
        a.apply(&b1, Mode::Live);
        a.apply(&b2, Mode::Live);
        assert_eq!(
            a.unseen(vec![like("u3", t + 1), like("u4", t)]).len(),
            1,
            "the queued u3 counts as seen"
        );
        assert_eq!(a.with(|s| s.figures(t).likes), 3);
        let saved = a.save();
        let b = Audience::default();
        b.restore(&saved).unwrap();
        assert_eq!(b.with(|s| s.figures(t)), a.with(|s| s.figures(t)));
        // Replay folds at once.
        a.apply(&vec![like("u5", t)].into(), Mode::Replay);
        assert_eq!(a.queued.lock().unwrap().1, 0);
        assert_eq!(a.with(|s| s.figures(t).likes), 4);
    }

    /// Many threads read while the writer queues: every batch is folded exactly once.
    #[test]
    fn concurrent_readers_fold_every_batch_once() {
        let a = Arc::new(Audience::default());
        let t = 1_700_000_000_000;
        std::thread::scope(|s| {
            for _ in 0..3 {
                let a = a.clone();
                s.spawn(move || {
                    for _ in 0..200 {
                        a.with(|s| s.figures(t).likes);
                    }
                });
            }
            for i in 0..500 {
                a.apply(&vec![like(&format!("u{i}"), t + i)].into(), Mode::Live);
            }
        });
        assert_eq!(a.with(|s| s.figures(t).likes), 500);
    }
}

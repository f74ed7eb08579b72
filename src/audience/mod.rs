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

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, TryLockError};

use crate::journal::{AudienceEvent, Mode};

/// Queued events a reader that must not wait ([`Audience::try_with`]) folds itself at most:
/// a few buyer sockets and a small batch, not a full one.
const FOLD_INLINE_EVENTS: usize = 1_000;

/// A room's audience state, behind one lock, which no thread that serves buys ever waits for:
/// the work on it runs on the background pool under the kernel's idle policy
/// ([`crate::background`]), and a holder of the lock there may wait long for a core while
/// buys keep both busy. So the journal's apply only queues a live batch
/// ([`Audience::apply`]), and a buyer socket that opens or closes only queues that; the ingest
/// folds a batch once durable, on the pool ([`Audience::fold`]); the aggregator's tick and the
/// journal writer's snapshot capture read with [`Audience::try_with`], which never waits and
/// never folds more than a small batch (they use the last figures, or take the snapshot
/// later), and fleet mode's live counts come from [`Audience::live_counts`]. Readers that may
/// wait ([`Audience::with`]: the re-sent check, the review) run on the pool themselves. Every
/// reader folds what is queued, in order, before it reads, so it sees every durable batch.
#[derive(Default)]
pub struct Audience {
    state: Mutex<viewers::State>,
    /// What is not folded yet, in order.
    queued: Mutex<Queue>,
    /// A fold on the background pool was asked for and has not started.
    fold_asked: AtomicBool,
    /// `online`, `peak` and `unique` as of the last fold, for readers that must not wait.
    counts: [AtomicU64; 3],
}

/// What waits for the fold, and how many events it holds (a socket counts as one).
#[derive(Default)]
struct Queue {
    items: Vec<Queued>,
    events: usize,
}

enum Queued {
    /// A durable batch.
    Batch(Arc<[AudienceEvent]>),
    /// A buyer socket of this user opened (`true`) or closed.
    Socket(Box<str>, bool),
}

impl Queue {
    fn push(&mut self, item: Queued) -> usize {
        self.events += match &item {
            Queued::Batch(b) => b.len(),
            Queued::Socket(..) => 1,
        };
        self.items.push(item);
        self.events
    }
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
        self.queue(Queued::Batch(events.clone()));
    }

    /// A buyer socket of `user` opened (`true`) or closed: online counts it. Queued, so a
    /// socket's task never waits for a fold.
    pub fn socket(&self, user: &str, open: bool) {
        self.queue(Queued::Socket(user.into(), open));
    }

    fn queue(&self, item: Queued) {
        self.queued.lock().expect("audience queue lock").push(item);
    }

    /// Folds everything queued now (the ingest, on the background pool, right after its
    /// batch is durable), so the next reader finds nothing to fold.
    pub fn fold(&self) {
        self.fold_asked.store(false, Ordering::Relaxed);
        drop(self.state());
    }

    /// Whether the caller should run [`Audience::fold`] on the background pool: `true` for
    /// one caller until that fold starts.
    pub fn ask_fold(&self) -> bool {
        !self.fold_asked.swap(true, Ordering::Relaxed)
    }

    /// Counts events at once; returns how many were new.
    pub fn add(&self, events: &[AudienceEvent]) -> usize {
        let mut s = self.state();
        let new = events.iter().filter(|e| s.add(e)).count();
        self.keep_counts(&s);
        new
    }

    /// The state with everything queued folded in: the state lock first, then the queue's,
    /// so items fold in the order they were queued.
    fn state(&self) -> MutexGuard<'_, viewers::State> {
        let mut s = self.state.lock().expect("audience lock");
        let queued = std::mem::take(&mut *self.queued.lock().expect("audience queue lock"));
        self.fold_into(&mut s, queued);
        s
    }

    fn fold_into(&self, s: &mut viewers::State, queued: Queue) {
        for item in queued.items {
            match item {
                Queued::Batch(batch) => {
                    for e in batch.iter() {
                        s.add(e);
                    }
                }
                Queued::Socket(user, open) => s.socket(&user, open),
            }
        }
        self.keep_counts(s);
    }

    /// Keeps the state's live counts for [`Audience::live_counts`].
    fn keep_counts(&self, s: &viewers::State) {
        let (online, peak, unique) = s.live_counts();
        for (c, v) in self.counts.iter().zip([online, peak, unique]) {
            c.store(v, Ordering::Relaxed);
        }
    }

    /// `online`, `peak` and `unique` as of the last fold, without waiting for the state.
    pub fn live_counts(&self) -> (u64, u64, u64) {
        let [a, b, c] = &self.counts;
        (
            a.load(Ordering::Relaxed),
            b.load(Ordering::Relaxed),
            c.load(Ordering::Relaxed),
        )
    }

    /// Runs `f` on the state without waiting: `None` while another thread holds it (a fold
    /// on the background pool) or when more than [`FOLD_INLINE_EVENTS`] are queued (then
    /// the caller asks for a fold, [`Audience::ask_fold`], and reads again later).
    pub fn try_with<R>(&self, f: impl FnOnce(&viewers::State) -> R) -> Option<R> {
        let mut s = match self.state.try_lock() {
            Ok(s) => s,
            Err(TryLockError::WouldBlock) => return None,
            Err(TryLockError::Poisoned(e)) => panic!("audience lock: {e}"),
        };
        let queued = {
            let mut q = self.queued.lock().expect("audience queue lock");
            if q.events > FOLD_INLINE_EVENTS {
                return None;
            }
            std::mem::take(&mut *q)
        };
        self.fold_into(&mut s, queued);
        Some(f(&s))
    }

    /// The events of `events` not counted yet (a re-sent batch has none).
    pub fn unseen(&self, events: Vec<AudienceEvent>) -> Vec<AudienceEvent> {
        let s = self.state();
        events.into_iter().filter(|e| !s.is_seen(e)).collect()
    }

    /// The state for a journal snapshot (on the journal writer's thread, between batches:
    /// every batch applied so far is queued or folded, and is folded now).
    pub fn save(&self) -> Vec<u8> {
        self.state().save()
    }

    /// [`Audience::save`] without waiting: `None` while a fold holds the state or more than
    /// a small batch is queued (the journal writer then takes its snapshot after a later
    /// batch, rather than wait for the background pool).
    pub fn try_save(&self) -> Option<Vec<u8>> {
        self.try_with(|s| s.save())
    }

    /// Installs a journal snapshot's state (restore, before any record).
    pub fn restore(&self, bytes: &[u8]) -> Result<(), String> {
        let mut s = self.state();
        *s = viewers::State::restore(bytes)?;
        self.keep_counts(&s);
        Ok(())
    }

    /// Installs the state of a journal snapshot from before the review (state version 3).
    pub fn restore_before_review(&self, bytes: &[u8]) -> Result<(), String> {
        let mut s = self.state();
        *s = viewers::State::restore_before_review(bytes)?;
        self.keep_counts(&s);
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
        assert_eq!(a.queued.lock().unwrap().events, 0);
        assert_eq!(a.with(|s| s.figures(t).likes), 4);
    }

    /// A reader that must not wait gets nothing while a fold holds the state or a big batch is
    /// queued, and reads as `with` does once that is folded; sockets fold in their order.
    #[test]
    fn try_with_never_waits_for_a_fold_nor_does_a_big_one() {
        let a = Audience::default();
        let t = 1_700_000_000_000;
        a.socket("b1", true);
        a.socket("b1", false);
        a.socket("b2", true);
        assert_eq!(a.try_with(|s| s.figures(t).online), Some(1));
        assert_eq!(
            a.live_counts(),
            (1, 1, 2),
            "the fold's counts, kept for readers"
        );
        {
            let _held = a.state.lock().unwrap();
            assert_eq!(a.try_with(|s| s.figures(t).online), None, "a fold holds it");
            assert!(
                a.try_save().is_none(),
                "the snapshot waits for a later batch"
            );
            assert_eq!(a.live_counts(), (1, 1, 2), "live counts never wait");
        }
        assert!(a.try_save().is_some());
        let big: Arc<[AudienceEvent]> = (0..FOLD_INLINE_EVENTS as i64 + 1)
            .map(|i| like(&format!("u{i}"), t + i))
            .collect();
        a.apply(&big, Mode::Live);
        assert_eq!(
            a.try_with(|s| s.figures(t).likes),
            None,
            "a big batch waits for the pool"
        );
        assert!(a.ask_fold());
        assert!(!a.ask_fold(), "one fold is asked for at a time");
        a.fold();
        assert!(
            a.ask_fold(),
            "the fold started: the next one may be asked for"
        );
        assert_eq!(
            a.try_with(|s| s.figures(t).likes),
            Some(FOLD_INLINE_EVENTS as u64 + 1)
        );
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

//! Telling every buyer task that the server is stopping, at the cost of one atomic load a
//! wake-up.
//!
//! A buyer's `select!` polls its stop branch on every wake-up. Polling the hub's
//! `CancellationToken` there would take the token's mutex and its `Notify`'s (both shared by
//! every connection, so their cache lines would move between the cores on each poll), and the
//! future made and dropped each time would register and unregister a waiter under that lock
//! again (BENCHMARKS.md). Here each watcher has a slot of its own for its waker, locked only
//! when the waker is stored (a task's first poll; its waker does not change after that) and by
//! [`Stop::trigger`], once. A later poll reads the flag and compares the waker with the copy
//! the watcher kept, touching nothing another task writes: locking even its own slot on every
//! poll would cost a cache miss a poll, on a line of its own.
//!
//! Why no wake-up is lost: `trigger` sets the flag before it takes any slot's lock, and a poll
//! that stores a waker reads the flag inside its slot's lock. Either that critical section
//! comes first, and `trigger` finds and wakes the waker, or it comes after `trigger` took that
//! slot's lock, and then it sees the flag. A poll that finds its waker already stored returns
//! pending without the lock: that waker is in the slot until `trigger` takes it to wake it. A
//! watcher registered after `trigger` looked at the set of watchers took the set's lock after
//! it, so its first poll sees the flag.

use std::collections::HashMap;
use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};

type Slot = Arc<Mutex<Option<Waker>>>;

/// The stop signal: set once, seen by every [`StopWatch`].
#[derive(Debug, Default)]
pub struct Stop {
    stopping: AtomicBool,
    watchers: Mutex<HashMap<u64, Slot>>,
    next_id: AtomicU64,
}

/// One task's view of a [`Stop`]; leaves the set of watchers when dropped.
#[derive(Debug)]
pub struct StopWatch {
    stop: Arc<Stop>,
    id: u64,
    slot: Slot,
    /// A copy of the waker this watcher last stored in its slot.
    stored: Option<Waker>,
}

impl Stop {
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    /// A watcher for one task.
    pub fn watch(self: &Arc<Self>) -> StopWatch {
        let slot = Slot::default();
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        self.watchers
            .lock()
            .expect("stop watchers lock")
            .insert(id, slot.clone());
        StopWatch {
            stop: self.clone(),
            id,
            slot,
            stored: None,
        }
    }

    /// Sets the signal and wakes every watcher waiting for it. Later calls do nothing more.
    pub fn trigger(&self) {
        self.stopping.store(true, Ordering::SeqCst);
        let slots: Vec<Slot> = self
            .watchers
            .lock()
            .expect("stop watchers lock")
            .values()
            .cloned()
            .collect();
        for slot in slots {
            let waker = slot.lock().expect("stop slot lock").take();
            if let Some(w) = waker {
                w.wake();
            }
        }
    }

    pub fn is_stopping(&self) -> bool {
        self.stopping.load(Ordering::SeqCst)
    }

    /// Watchers registered now.
    pub fn watchers(&self) -> usize {
        self.watchers.lock().expect("stop watchers lock").len()
    }
}

impl StopWatch {
    /// Ready once the signal is set; otherwise keeps `cx`'s waker to be woken then.
    pub fn poll_stopped(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        if self.stop.stopping.load(Ordering::SeqCst) {
            return Poll::Ready(());
        }
        if self
            .stored
            .as_ref()
            .is_some_and(|w| w.will_wake(cx.waker()))
        {
            return Poll::Pending;
        }
        let mut slot = self.slot.lock().expect("stop slot lock");
        if self.stop.stopping.load(Ordering::SeqCst) {
            return Poll::Ready(());
        }
        *slot = Some(cx.waker().clone());
        self.stored = Some(cx.waker().clone());
        Poll::Pending
    }

    /// Resolves once the signal is set. Cheap to make and drop on every turn of a loop.
    pub fn stopped(&mut self) -> impl Future<Output = ()> + '_ {
        std::future::poll_fn(move |cx| self.poll_stopped(cx))
    }
}

impl Drop for StopWatch {
    fn drop(&mut self) {
        self.stop
            .watchers
            .lock()
            .expect("stop watchers lock")
            .remove(&self.id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    /// Tasks that poll their watchers in a few turns of a `select!` (as a buyer does), then wait
    /// on them alone, on a multi-thread runtime, all end when the signal is set, wherever it
    /// falls among their polls; one that starts watching after it ends at once; each leaves
    /// the set.
    #[test]
    fn every_watcher_sees_the_stop_wherever_it_falls() {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            for round in 0..200u64 {
                let stop = Stop::new();
                let mut tasks = Vec::new();
                for i in 0..16u64 {
                    let mut w = stop.watch();
                    tasks.push(tokio::spawn(async move {
                        // Some turns with other wake-ups, then only the stop can wake it.
                        for turn in 0..(i + round) % 9 {
                            tokio::select! {
                                biased;
                                _ = w.stopped() => return turn,
                                _ = tokio::task::yield_now(), if (turn + i) % 3 != 0 => {}
                                _ = tokio::time::sleep(Duration::from_micros(50)) => {}
                            }
                        }
                        w.stopped().await;
                        u64::MAX
                    }));
                }
                // Let the tasks reach different points of their loops.
                for _ in 0..(round % 7) {
                    tokio::task::yield_now().await;
                }
                if round % 2 == 1 {
                    tokio::time::sleep(Duration::from_micros(100 * (round % 5))).await;
                }
                stop.trigger();
                for t in tasks {
                    tokio::time::timeout(Duration::from_secs(5), t)
                        .await
                        .expect("a watcher missed the stop")
                        .unwrap();
                }
                assert_eq!(stop.watchers(), 0);
                let mut late = stop.watch();
                tokio::time::timeout(Duration::from_millis(100), late.stopped())
                    .await
                    .expect("a watcher made after the stop sees it at once");
                assert!(stop.is_stopping());
            }
        });
    }
}

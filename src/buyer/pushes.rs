//! A room's pushes to its buyers (`sale` and `stock` frames), sent in waves.
//!
//! The buyers are split over [`SLOTS`] slots, each its own `broadcast` channel. A push goes to
//! one slot after another. Each time the sender has woken about [`WAVE`] buyers, it lets the
//! runtime catch up before the next wave: it goes to the back of the run queue until a round
//! takes under [`CAUGHT_UP`] (whatever became ready meanwhile, above all the buys that answer
//! the push, runs first) and the runtime's global queue is empty (the journal's answers wake
//! their buyers from the writer thread, so they wait there), at most [`MAX_WAVE_WAIT`] a wave
//! and [`MAX_PUSH_WAIT`] a push; after that, each wave still takes one turn at the back of the
//! run queue.
//!
//! Why: when a sale opens, every buyer of the room is told at once and most of them buy at
//! once. Woken all together (one `broadcast` for the room), the buyer tasks would queue on the
//! runtime ahead of the buys that come back while the push is still going out, and ahead of
//! the journal's answers, so the spike's acks would wait for the whole fan-out
//! (BENCHMARKS.md). Each slot keeps its pushes in order, a buyer reads only its own slot, and
//! a tick's frames travel as one item.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use axum::extract::ws::Utf8Bytes;
use tokio::sync::broadcast;

use crate::seating::Seating;

/// Slots per room: 15,000 buyers make waves of ~60.
pub const SLOTS: usize = 256;
/// Buyers woken between two catch-ups, at least (a whole slot is woken at once).
pub const WAVE: usize = 64;
/// The runtime has caught up when a trip to the back of its run queue takes less than this.
pub const CAUGHT_UP: Duration = Duration::from_micros(300);
/// A wave waits at most this long for the runtime to catch up...
pub const MAX_WAVE_WAIT: Duration = Duration::from_millis(30);
/// ...and one push at most this long over all its waves, so that a runtime that never catches
/// up (a steady overload) still gets every push out within about this plus the writes (and
/// one turn of the run queue a wave).
pub const MAX_PUSH_WAIT: Duration = Duration::from_millis(250);
/// Pushes (each a tick's frames) a slot holds for a buyer that is behind. One that falls
/// further behind gets the current state instead (`RecvError::Lagged` in the buyer's task),
/// never a backlog.
pub const BUFFER: usize = 16;

/// What one send carries: the frames of one change or tick, in order.
pub type Frames = Arc<[Utf8Bytes]>;

/// The slots of one room.
#[derive(Debug)]
pub struct BuyerPushes {
    slots: Box<[broadcast::Sender<Frames>]>,
    /// Buyers per slot, for balancing and pacing.
    seating: Seating,
}

/// A buyer's place in a slot; leaves it when dropped.
#[derive(Debug)]
pub struct Subscription<'a> {
    pushes: &'a BuyerPushes,
    slot: usize,
    /// The slot's pushes from now on.
    pub rx: broadcast::Receiver<Frames>,
}

impl Drop for Subscription<'_> {
    fn drop(&mut self) {
        self.pushes.seating.leave(self.slot);
    }
}

impl Default for BuyerPushes {
    fn default() -> Self {
        BuyerPushes {
            slots: (0..SLOTS).map(|_| broadcast::channel(BUFFER).0).collect(),
            seating: Seating::new(SLOTS),
        }
    }
}

impl BuyerPushes {
    /// Subscribes a buyer to the slot with the fewest buyers (slots stay even as buyers come
    /// and go); ties go round robin. It gets every push sent after this returns.
    pub fn subscribe(&self) -> Subscription<'_> {
        let slot = self.seating.take();
        Subscription {
            pushes: self,
            slot,
            rx: self.slots[slot].subscribe(),
        }
    }

    /// Buyers subscribed now.
    pub fn buyers(&self) -> usize {
        self.seating.total()
    }

    /// Sends `frames` to every buyer, slot by slot, letting the runtime catch up between
    /// waves. Every slot is sent to (an empty one costs a lock), so a buyer that just
    /// subscribed never misses it.
    pub async fn send(&self, frames: Frames) {
        if frames.is_empty() {
            return;
        }
        let mut woken = 0;
        let mut waited = Duration::ZERO;
        for (i, tx) in self.slots.iter().enumerate() {
            let _ = tx.send(frames.clone());
            woken += self.seating.count(i);
            if woken < WAVE {
                continue;
            }
            woken = 0;
            if waited >= MAX_PUSH_WAIT {
                // Out of time to wait for catching up, but not for one turn a wave: woken all
                // at once, the rest of a big room's buyers would queue ahead of the buys that
                // came back meanwhile, and hold up their answers.
                back_of_queue().await;
                continue;
            }
            let wave_done = Instant::now();
            let limit = MAX_WAVE_WAIT.min(MAX_PUSH_WAIT - waited);
            let runtime = tokio::runtime::Handle::current().metrics();
            loop {
                let round = Instant::now();
                back_of_queue().await;
                if wave_done.elapsed() >= limit {
                    break;
                }
                if round.elapsed() < CAUGHT_UP {
                    // This worker's queue is short; tasks woken from other threads (the
                    // journal's answers) wait in the global queue, which a worker reads
                    // only now and then while its own queue is not empty: sleep, so that
                    // it empties and the workers take them in batches.
                    if runtime.global_queue_depth() == 0 {
                        break;
                    }
                    tokio::time::sleep(Duration::from_millis(1)).await;
                }
            }
            waited += wave_done.elapsed();
        }
    }
}

/// Yields to the back of this worker's run queue, so everything queued before runs first and
/// the time it takes to come back is the queue's length. (`tokio::task::yield_now` waits for
/// the driver and then comes back in the worker's LIFO slot, ahead of the queue; a task that
/// wakes itself during its own poll is what tokio queues at the back.)
pub(crate) struct BackOfQueue(bool);

/// See [`BackOfQueue`].
pub(crate) fn back_of_queue() -> BackOfQueue {
    BackOfQueue(false)
}

impl Future for BackOfQueue {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        if self.0 {
            return Poll::Ready(());
        }
        self.0 = true;
        cx.waker().wake_by_ref();
        Poll::Pending
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    fn one(f: &'static str) -> Frames {
        Arc::from([Utf8Bytes::from_static(f)])
    }

    #[tokio::test]
    async fn every_buyer_gets_every_push_in_order_and_slots_stay_even() {
        let pushes = BuyerPushes::default();
        let mut subs: Vec<_> = (0..SLOTS * 5 + 3).map(|_| pushes.subscribe()).collect();
        assert_eq!(pushes.buyers(), SLOTS * 5 + 3);
        let loads: Vec<usize> = (0..SLOTS).map(|i| pushes.seating.count(i)).collect();
        assert!(loads.iter().all(|&n| n == 5 || n == 6), "{loads:?}");
        for i in 0..3 {
            let frames: Frames = (0..2)
                .map(|j| Utf8Bytes::from(format!("p{i}.{j}")))
                .collect();
            pushes.send(frames).await;
        }
        for s in &mut subs {
            for i in 0..3 {
                let got = s.rx.try_recv().unwrap();
                let got: Vec<&str> = got.iter().map(|f| f.as_str()).collect();
                assert_eq!(got, [format!("p{i}.0"), format!("p{i}.1")]);
            }
            assert!(s.rx.try_recv().is_err());
        }
        // Leaving frees the seat, and the next buyer takes the emptiest slot.
        let gone = subs.swap_remove(0).slot;
        assert_eq!(pushes.buyers(), SLOTS * 5 + 2);
        let loads_gone = pushes.seating.count(gone);
        let next = pushes.subscribe();
        assert_eq!(pushes.seating.count(next.slot), loads_gone.min(5) + 1);
    }

    /// A task that becomes ready while a push goes out (a buy arriving) runs between two
    /// waves, not after the whole fan-out.
    #[tokio::test(flavor = "current_thread")]
    async fn other_tasks_run_between_waves() {
        let pushes = Arc::new(BuyerPushes::default());
        let mut subs: Vec<_> = (0..WAVE * 8).map(|_| pushes.subscribe()).collect();
        let (first, last) = (subs[0].slot, subs.iter().map(|s| s.slot).max().unwrap());
        assert_ne!(first, last);
        // Moved into the probe: a receiver of the first slot and one of the last.
        let pos =
            |subs: &[Subscription<'_>], slot| subs.iter().position(|s| s.slot == slot).unwrap();
        let i = pos(&subs, last);
        let mut last_rx = subs.swap_remove(i).rx.resubscribe();
        let i = pos(&subs, first);
        let mut first_rx = subs.swap_remove(i).rx.resubscribe();
        let seen = Arc::new(Mutex::new(None));
        let probe = {
            let seen = seen.clone();
            tokio::spawn(async move {
                // Runs at the sender's first yield: the first slot has the push, the last not.
                *seen.lock().unwrap() =
                    Some((first_rx.try_recv().is_ok(), last_rx.try_recv().is_ok()));
            })
        };
        pushes.send(one("open")).await;
        probe.await.unwrap();
        assert_eq!(*seen.lock().unwrap(), Some((true, false)));
    }

    /// On a runtime that never catches up (a task that stays busy longer than [`CAUGHT_UP`]
    /// every turn), a push runs out of waiting time after [`MAX_PUSH_WAIT`], and still lets
    /// other tasks run between its waves instead of waking the rest of the room at once.
    #[tokio::test(flavor = "current_thread")]
    async fn past_its_waiting_time_a_push_still_goes_in_waves() {
        let pushes = Arc::new(BuyerPushes::default());
        // Three times the waves that use up the waiting time, at a full wait each.
        let waves_to_cap = MAX_PUSH_WAIT.as_millis() / MAX_WAVE_WAIT.as_millis() + 1;
        let subs: Vec<_> = (0..WAVE * waves_to_cap as usize * 3)
            .map(|_| pushes.subscribe())
            .collect();
        let buyers_per_slot = subs.len().div_ceil(SLOTS);
        // One receiver per slot, to see how many slots the push has reached.
        let mut reached: Vec<broadcast::Receiver<Frames>> = Vec::new();
        let mut seen = vec![false; SLOTS];
        for s in &subs {
            if !std::mem::replace(&mut seen[s.slot], true) {
                reached.push(s.rx.resubscribe());
            }
        }
        let slots_used = reached.len();
        let done = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let busy = {
            let done = done.clone();
            tokio::spawn(async move {
                while !done.load(std::sync::atomic::Ordering::Relaxed) {
                    std::thread::sleep(CAUGHT_UP * 2);
                    back_of_queue().await;
                }
            })
        };
        // The most slots the push reached between two turns of the probe.
        let probe = {
            let done = done.clone();
            tokio::spawn(async move {
                let (mut before, mut most) = (0, 0);
                loop {
                    let over = done.load(std::sync::atomic::Ordering::Relaxed);
                    let now = reached.iter().filter(|rx| !rx.is_empty()).count();
                    most = most.max(now - before);
                    before = now;
                    if over {
                        break (most, now);
                    }
                    back_of_queue().await;
                }
            })
        };
        let t = Instant::now();
        pushes.send(one("open")).await;
        let took = t.elapsed();
        done.store(true, std::sync::atomic::Ordering::Relaxed);
        busy.await.unwrap();
        let (most, all) = probe.await.unwrap();
        assert_eq!(all, slots_used);
        assert!(
            took >= MAX_PUSH_WAIT,
            "the push never ran out of waiting time"
        );
        // A wave is WAVE buyers, a few slots; without a turn a wave, the waves after the
        // waiting time came as one.
        let wave_slots = WAVE.div_ceil(buyers_per_slot) + 1;
        assert!(
            most <= wave_slots,
            "{most} slots got the push between two turns of another task (a wave is {wave_slots})"
        );
    }
}

//! The per-room task that tells buyers what changed: `sale` when a sale's state or window
//! changes (at once: admin changes, sell-outs and clock boundaries wake it), and `stock` at
//! most every [`STOCK_PUSH_INTERVAL`] per SKU with the latest value, less often when the room
//! has so many buyers that this would pass its push-frame budget ([`FrameBudget`]). Each push
//! is encoded once and sent to every buyer of the room in waves ([`crate::buyer::pushes`]).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use tokio::time::{sleep_until, Instant};
use tokio_util::sync::CancellationToken;

use crate::clock::now_ms;
use crate::protocol::{SaleState, ServerMsg};
use crate::rooms::room::Room;

/// Stock pushes per SKU come at most this often (10 a second).
pub const STOCK_PUSH_INTERVAL: Duration = Duration::from_millis(100);

/// Push frames a second one room's buyers may get in all before stock pushes are held back, by
/// default (`--buyer-stock-frames-per-s`): 2,000 buyers get a stock push every 100 ms tick,
/// 20,000 one a second. In a flash sale the stock changes every tick, and at 10 a second
/// 15,000 buyers would take 150,000 frames a second, more writes than the buys and acks
/// themselves; the acks carry `left` anyway.
pub const STOCK_FRAMES_PER_S: u64 = crate::config::DEFAULT_BUYER_STOCK_FRAMES_PER_S;

/// The room's push-frame budget. It refills `per_s` frames a second, up to a second's worth
/// (or one wave, if the room has more buyers than that). Every push spends a frame per buyer:
/// `sale` pushes even into debt, as they are never held back, and a `stock` push goes out only
/// when its whole wave is covered. So right after a sale opens (15,000 frames) or sells out,
/// stock pushes wait, instead of adding a third wave to the spike.
#[derive(Debug)]
pub struct FrameBudget {
    per_s: f64,
    frames: f64,
    last: Instant,
}

impl FrameBudget {
    pub fn new(per_s: u64, now: Instant) -> Self {
        FrameBudget {
            per_s: per_s.max(1) as f64,
            frames: per_s.max(1) as f64,
            last: now,
        }
    }

    fn refill(&mut self, now: Instant, buyers: usize) {
        let dt = now.saturating_duration_since(self.last).as_secs_f64();
        self.last = now;
        self.frames = (self.frames + dt * self.per_s).min(self.per_s.max(buyers as f64));
    }

    /// Whether a wave to `buyers` is covered now.
    pub fn covers(&mut self, now: Instant, buyers: usize) -> bool {
        self.refill(now, buyers);
        self.frames >= buyers as f64
    }

    /// Spends `frames_each` frames to each of `buyers`.
    pub fn spend(&mut self, now: Instant, buyers: usize, frames_each: usize) {
        self.refill(now, buyers);
        self.frames -= (buyers * frames_each) as f64;
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct SaleSeen {
    state: SaleState,
    opens_at_ms: Option<i64>,
    closes_at_ms: Option<i64>,
}

/// Runs until `shutdown`. `stock_frames_per_s`: see [`STOCK_FRAMES_PER_S`].
pub async fn run(room: Arc<Room>, stock_frames_per_s: u64, shutdown: CancellationToken) {
    let mut sales: HashMap<Arc<str>, SaleSeen> = HashMap::new();
    let mut stocks: HashMap<Arc<str>, u64> = HashMap::new();
    // What buyers already know from `hello` is the state now.
    let now = now_ms();
    for s in room.skus.list() {
        let (o, c) = s.window();
        sales.insert(
            s.id.clone(),
            SaleSeen {
                state: s.state_at(now),
                opens_at_ms: o,
                closes_at_ms: c,
            },
        );
        stocks.insert(s.id.clone(), s.left());
    }
    // The next stock push is due a whole interval after the last one began, not on a fixed
    // beat: a late tick followed by one on time would put two pushes under 100 ms apart, and
    // 11 within a second.
    let mut stocks_at = Instant::now() + STOCK_PUSH_INTERVAL;
    let mut budget = FrameBudget::new(stock_frames_per_s, Instant::now());
    loop {
        let next_boundary = next_boundary(&room);
        let mut stocks_due = false;
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = room.feeds.sale_changed() => {}
            _ = sleep_until(next_boundary) => {}
            _ = sleep_until(stocks_at) => stocks_due = true,
        }
        let buyers = room.feeds.buyer_pushes.buyers();
        let sent = push_sales(&room, &mut sales).await;
        budget.spend(Instant::now(), buyers, sent);
        if stocks_due {
            stocks_at = Instant::now() + STOCK_PUSH_INTERVAL;
        }
        if stocks_due && budget.covers(Instant::now(), buyers) {
            let sent = push_stocks(&room, &mut stocks).await;
            budget.spend(Instant::now(), buyers, sent);
        }
    }
}

fn next_boundary(room: &Room) -> Instant {
    let now = now_ms();
    let far = Instant::now() + Duration::from_secs(3600);
    match room
        .skus
        .list()
        .iter()
        .filter_map(|s| s.next_boundary_after(now))
        .min()
    {
        // Re-checked at least hourly, so a far-off window never makes an extreme deadline.
        Some(t) => (Instant::now() + Duration::from_millis((t - now).max(0) as u64)).min(far),
        None => far,
    }
}

/// Pushes every sale whose state or window changed, as one send; returns how many.
async fn push_sales(room: &Room, seen: &mut HashMap<Arc<str>, SaleSeen>) -> usize {
    let now = now_ms();
    let mut frames = Vec::new();
    for s in room.skus.list() {
        let (o, c) = s.window();
        let current = SaleSeen {
            state: s.state_at(now),
            opens_at_ms: o,
            closes_at_ms: c,
        };
        if seen.get(&s.id) != Some(&current) {
            seen.insert(s.id.clone(), current);
            let msg = ServerMsg::Sale {
                sku: s.id.clone(),
                state: current.state,
                opens_at_ms: o,
                closes_at_ms: c,
            };
            frames.push(msg.to_json().into());
        }
    }
    send(room, frames).await
}

/// Pushes every SKU's stock that changed, as one send; returns how many.
async fn push_stocks(room: &Room, seen: &mut HashMap<Arc<str>, u64>) -> usize {
    let now = now_ms();
    let mut frames = Vec::new();
    for s in room.skus.list() {
        let left = s.left();
        if seen.get(&s.id) != Some(&left) {
            seen.insert(s.id.clone(), left);
            let msg = ServerMsg::Stock {
                sku: s.id.clone(),
                left,
                state: s.state_at(now),
            };
            frames.push(msg.to_json().into());
        }
    }
    send(room, frames).await
}

/// Sends `frames` to the room's buyers; returns how many frames each buyer gets.
async fn send(room: &Room, frames: Vec<axum::extract::ws::Utf8Bytes>) -> usize {
    let n = frames.len();
    room.feeds.buyer_pushes.send(frames.into()).await;
    n
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_small_room_gets_every_tick_and_a_big_one_waits_for_its_budget() {
        let t0 = Instant::now();
        let ms = |n| t0 + Duration::from_millis(n);
        // 1,000 buyers: 10,000 frames a second of stock pushes fit in 20,000.
        let mut b = FrameBudget::new(20_000, t0);
        for tick in 0..50 {
            assert!(b.covers(ms(tick * 100), 1_000), "tick {tick}");
            b.spend(ms(tick * 100), 1_000, 1);
        }
        // 15,000 buyers: the sale opens at 0 (a wave of 15,000), sells out at 200 ms (another).
        let mut b = FrameBudget::new(20_000, t0);
        b.spend(t0, 15_000, 1);
        assert!(!b.covers(ms(100), 15_000));
        b.spend(ms(200), 15_000, 1);
        // 20,000 - 30,000 + 4,000 at 200 ms = -6,000: a stock wave is covered from 1,250 ms.
        assert!(!b.covers(ms(1_200), 15_000));
        assert!(b.covers(ms(1_300), 15_000));
        b.spend(ms(1_300), 15_000, 1);
        // From then on about every 750 ms.
        assert!(!b.covers(ms(1_900), 15_000));
        assert!(b.covers(ms(2_100), 15_000));
    }

    #[test]
    fn a_room_bigger_than_a_second_of_budget_still_gets_stock_pushes() {
        let t0 = Instant::now();
        let mut b = FrameBudget::new(20_000, t0);
        assert!(!b.covers(t0, 30_000));
        assert!(!b.covers(t0 + Duration::from_millis(400), 30_000));
        assert!(b.covers(t0 + Duration::from_millis(500), 30_000));
    }
}

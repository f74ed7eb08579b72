//! The per-room task that tells buyers what changed: `sale` when a sale's state or window
//! changes (at once: admin changes, sell-outs and clock boundaries wake it), and `stock` at
//! most every [`STOCK_PUSH_INTERVAL`] per SKU with the latest value. Each push is encoded once
//! and broadcast to every buyer of the room.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use tokio::time::{sleep_until, Instant};
use tokio_util::sync::CancellationToken;

use crate::clock::now_ms;
use crate::protocol::{SaleState, ServerMsg};
use crate::room::Room;

/// Stock pushes per SKU come at most this often (10 a second).
pub const STOCK_PUSH_INTERVAL: Duration = Duration::from_millis(100);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct SaleSeen {
    state: SaleState,
    opens_at_ms: Option<i64>,
    closes_at_ms: Option<i64>,
}

/// Runs until `shutdown`.
pub async fn run(room: Arc<Room>, shutdown: CancellationToken) {
    let mut sales: HashMap<Arc<str>, SaleSeen> = HashMap::new();
    let mut stocks: HashMap<Arc<str>, u64> = HashMap::new();
    // What buyers already know from `hello` is the state now.
    let now = now_ms();
    for s in room.skus() {
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
    let mut tick = tokio::time::interval(STOCK_PUSH_INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let next_boundary = next_boundary(&room);
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = room.sale_changed.notified() => push_sales(&room, &mut sales),
            _ = sleep_until(next_boundary) => push_sales(&room, &mut sales),
            _ = tick.tick() => {
                push_sales(&room, &mut sales);
                push_stocks(&room, &mut stocks);
            }
        }
    }
}

fn next_boundary(room: &Room) -> Instant {
    let now = now_ms();
    let far = Instant::now() + Duration::from_secs(3600);
    match room
        .skus()
        .iter()
        .filter_map(|s| s.next_boundary_after(now))
        .min()
    {
        // Re-checked at least hourly, so a far-off window never makes an extreme deadline.
        Some(t) => (Instant::now() + Duration::from_millis((t - now).max(0) as u64)).min(far),
        None => far,
    }
}

fn push_sales(room: &Room, seen: &mut HashMap<Arc<str>, SaleSeen>) {
    let now = now_ms();
    for s in room.skus() {
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
            let _ = room.buyer_pushes.send(msg.to_json().into());
        }
    }
}

fn push_stocks(room: &Room, seen: &mut HashMap<Arc<str>, u64>) {
    let now = now_ms();
    for s in room.skus() {
        let left = s.left();
        if seen.get(&s.id) != Some(&left) {
            seen.insert(s.id.clone(), left);
            let msg = ServerMsg::Stock {
                sku: s.id.clone(),
                left,
                state: s.state_at(now),
            };
            let _ = room.buyer_pushes.send(msg.to_json().into());
        }
    }
}

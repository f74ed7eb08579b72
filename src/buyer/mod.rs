//! Buyers: one task per buyer socket, and what the room pushes to them.
//!
//! - [`connection`]: the socket task: one method per event (frames in, answers ready, a push,
//!   a tick), generic over the socket's halves;
//! - [`outbound`]: the connection's bounded outbound queue, written and flushed in batches;
//! - [`answers`]: the connection's buys and `status`es in flight (a FIFO of journal answers);
//! - [`pushes`]: a room's buyers in fan-out slots, each push sent in waves;
//! - [`sale_feed`]: the per-room task that makes the `sale` and `stock` pushes;
//! - [`rate_limit`]: the per-connection token bucket;
//! - [`stop`]: the stop signal the buyer tasks poll on every wake-up.

pub mod answers;
pub mod connection;
pub mod order_pushes;
pub mod outbound;
pub mod pushes;
pub mod rate_limit;
pub mod sale_feed;
pub mod stop;
#[cfg(test)]
mod testing;

pub use connection::{serve, BuyerLimits, Connection};

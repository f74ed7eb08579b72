//! The host's live dashboard feed: per-room [`Aggregator`], the [`snapshot`] it publishes, and
//! the [`feed`] that sends it to each dashboard socket.

pub mod aggregator;
pub mod feed;
pub mod snapshot;

pub use aggregator::Aggregator;
pub use snapshot::{Figures, Published};

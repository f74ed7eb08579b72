//! The host's live dashboard feed: per-room [`Aggregator`], the [`snapshot`] it publishes, the
//! [`fanout`] slots that stagger it over the audience, and the [`feed`] that sends it to each
//! dashboard socket, over the [`socket_loop`] that the overview's socket runs too.

pub mod aggregator;
pub mod fanout;
pub mod feed;
pub mod referrers;
pub mod snapshot;
pub mod socket_loop;

pub use aggregator::Aggregator;
pub use fanout::Fanout;
pub use snapshot::{Figures, Published};

//! Every room at a glance (docs/protocol.md, "Overview"): one line per room with its sales,
//! its audience online and whether it is live, for a merchant who runs several streams at once.
//!
//! - [`build`]: the figures of one overview, read from each room's newest dashboard snapshot
//!   and its activity, sorted live first; the rule for `live`;
//! - [`publisher`]: builds and encodes the overview at most once a second for every watcher
//!   and every request, and only while someone watches or asks;
//! - [`feed`]: one `/ws/overview` socket.

pub mod build;
pub mod feed;
pub mod publisher;

pub use build::{is_live, Overview, RoomLine, LIVE_WINDOW_MS};
pub use publisher::{Built, Overviews, OVERVIEW_INTERVAL};

//! What every handler shares.

use std::sync::Arc;

use crate::auth::Auth;
use crate::buyer::BuyerLimits;
use crate::dashboard::feed::FeedLimits;
use crate::hub::Hub;
use crate::server::accept::ConnCounts;

/// Shared by every handler.
#[derive(Clone)]
pub struct AppState {
    /// The hub the handlers act on.
    pub hub: Hub,
    /// The tokens and secrets requests are checked against: bearer tokens, buyer JWTs, and the
    /// payment secret of payment notices ([`Auth::verify_payment`]).
    pub auth: Auth,
    /// Limits of each buyer socket.
    pub buyer_limits: BuyerLimits,
    /// Limits of each dashboard socket.
    pub feed_limits: FeedLimits,
    /// Open connections, overall and by source IP.
    pub conns: Arc<ConnCounts>,
    /// Buyer sockets one user may hold in one room at once (0: no limit).
    pub max_connections_per_user: usize,
    /// Every room at a glance, built once a second for every watcher.
    pub overview: crate::overview::Overviews,
}

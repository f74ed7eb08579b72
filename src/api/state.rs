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
    pub hub: Hub,
    pub auth: Auth,
    pub buyer_limits: BuyerLimits,
    pub feed_limits: FeedLimits,
    /// Open connections, overall and by source IP.
    pub conns: Arc<ConnCounts>,
}

//! `order` pushes: a buyer's open sockets hear when one of their orders changes status
//! (paid, expired, cancelled, refunded). Unlike the room's stock and sale pushes, each goes to
//! one user's sockets only, so each socket registers for its user while it is open.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use axum::extract::ws::Utf8Bytes;
use dashmap::DashMap;
use tokio::sync::mpsc;

use crate::protocol::ServerMsg;
use crate::rooms::events::Moved;

/// `order` frames one socket may have waiting before more are dropped (the buyer can always
/// ask with `status`, and a dropped frame is counted).
pub const QUEUE: usize = 64;

/// Each user's sockets: an id per registration, and the socket's queue.
type ByUser =
    Arc<DashMap<Arc<str>, Vec<(u64, mpsc::Sender<Utf8Bytes>)>, foldhash::fast::RandomState>>;

/// The sockets of each user of a room that want their `order` pushes.
#[derive(Debug, Default)]
pub struct OrderPushes {
    by_user: ByUser,
    next: AtomicU64,
}

/// One socket's registration; leaves on drop.
#[derive(Debug)]
pub struct Listening {
    by_user: ByUser,
    user: Arc<str>,
    id: u64,
}

impl Drop for Listening {
    fn drop(&mut self) {
        if let Some(mut v) = self.by_user.get_mut(&self.user) {
            v.retain(|(id, _)| *id != self.id);
        }
        self.by_user.remove_if(&self.user, |_, v| v.is_empty());
    }
}

impl OrderPushes {
    /// Registers a socket of `user`: its frames come on the receiver until the registration
    /// is dropped.
    pub fn listen(&self, user: &Arc<str>) -> (Listening, mpsc::Receiver<Utf8Bytes>) {
        let (tx, rx) = mpsc::channel(QUEUE);
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        self.by_user.entry(user.clone()).or_default().push((id, tx));
        let seat = Listening {
            by_user: self.by_user.clone(),
            user: user.clone(),
            id,
        };
        (seat, rx)
    }

    /// Tells the order's owner, on each of their open sockets, where the order stands now.
    pub fn send(&self, moved: &Moved) {
        let Some(sockets) = self.by_user.get(&moved.order.user) else {
            return;
        };
        let o = &moved.order;
        let frame: Utf8Bytes = ServerMsg::Order {
            order: Arc::from(o.order_id()),
            sku: o.sku.clone(),
            status: moved.status(),
            amount_fen: o.amount_fen,
        }
        .to_json()
        .into();
        for (_, tx) in sockets.iter() {
            if tx.try_send(frame.clone()).is_err() {
                metrics::counter!("livehub_order_pushes_dropped_total").increment(1);
            }
        }
    }
}

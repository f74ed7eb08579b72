//! `order` pushes: a buyer's open sockets hear when one of their orders changes status
//! (paid, expired, cancelled, refunded). Unlike the room's stock and sale pushes, each goes to
//! one user's sockets only, so each socket registers for its user while it is open.

use std::collections::VecDeque;
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};

use axum::extract::ws::Utf8Bytes;
use dashmap::DashMap;

use crate::protocol::ServerMsg;
use crate::rooms::events::Moved;

/// `order` frames one socket may have waiting before more are dropped (the buyer can always
/// ask with `status`, and a dropped frame is counted).
pub const QUEUE: usize = 64;

/// Each user's sockets: an id per registration, and the socket's inbox.
type ByUser = Arc<DashMap<Arc<str>, Vec<(u64, Arc<Inbox>)>, foldhash::fast::RandomState>>;

/// The sockets of each user of a room that want their `order` pushes.
#[derive(Debug, Default)]
pub struct OrderPushes {
    by_user: ByUser,
    next: AtomicU64,
}

/// One socket's `order` frames waiting for its task, at most [`QUEUE`].
///
/// Not a channel: every buyer socket has one and almost all stay empty, and a bounded tokio
/// channel allocates its first block of slots when it is made. An empty inbox holds no
/// buffer; the frames' queue grows with the first push.
#[derive(Debug, Default)]
pub(crate) struct Inbox(Mutex<InboxState>);

#[derive(Debug, Default)]
struct InboxState {
    frames: VecDeque<Utf8Bytes>,
    /// The socket's task, waiting for a frame.
    waker: Option<Waker>,
}

impl Inbox {
    fn lock(&self) -> std::sync::MutexGuard<'_, InboxState> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Queues `frame` unless [`QUEUE`] are waiting; whether it was queued.
    fn try_push(&self, frame: Utf8Bytes) -> bool {
        let mut s = self.lock();
        if s.frames.len() >= QUEUE {
            return false;
        }
        s.frames.push_back(frame);
        let waker = s.waker.take();
        drop(s);
        if let Some(w) = waker {
            w.wake();
        }
        true
    }

    /// The oldest frame waiting, or `Pending` (woken by the next push).
    fn poll_recv(&self, cx: &mut Context<'_>) -> Poll<Utf8Bytes> {
        let mut s = self.lock();
        if let Some(f) = s.frames.pop_front() {
            if s.frames.is_empty() {
                // The frames were a burst: the socket goes back to holding no buffer.
                s.frames = VecDeque::new();
            }
            return Poll::Ready(f);
        }
        if !s.waker.as_ref().is_some_and(|w| w.will_wake(cx.waker())) {
            s.waker = Some(cx.waker().clone());
        }
        Poll::Pending
    }
}

/// One socket's registration and its inbox; leaves on drop.
#[derive(Debug)]
pub struct Listening {
    by_user: ByUser,
    user: Arc<str>,
    id: u64,
    inbox: Arc<Inbox>,
}

impl Listening {
    /// Waits for the socket's next `order` frame.
    pub fn recv(&self) -> impl Future<Output = Utf8Bytes> + '_ {
        std::future::poll_fn(|cx| self.inbox.poll_recv(cx))
    }
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
    /// Registers a socket of `user`: its frames come through [`Listening::recv`] until the
    /// registration is dropped.
    pub fn listen(&self, user: &Arc<str>) -> Listening {
        let inbox = Arc::new(Inbox::default());
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        self.by_user
            .entry(user.clone())
            // Most users have one socket: no room for more until a second comes.
            .or_insert_with(|| Vec::with_capacity(1))
            .push((id, inbox.clone()));
        Listening {
            by_user: self.by_user.clone(),
            user: user.clone(),
            id,
            inbox,
        }
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
        for (_, inbox) in sockets.iter() {
            if !inbox.try_push(frame.clone()) {
                metrics::counter!("livehub_order_pushes_dropped_total").increment(1);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures_util::FutureExt;

    fn frame(n: usize) -> Utf8Bytes {
        Utf8Bytes::from(format!(r#"{{"op":"order","n":{n}}}"#))
    }

    /// Each of a user's sockets gets the user's frames in order; a socket that leaves is
    /// forgotten, and the user with it once their last socket has left.
    #[test]
    fn a_users_sockets_each_get_their_frames() {
        let pushes = OrderPushes::default();
        let (ann, bob): (Arc<str>, Arc<str>) = ("ann".into(), "bob".into());
        let a1 = pushes.listen(&ann);
        let a2 = pushes.listen(&ann);
        let b = pushes.listen(&bob);
        let sockets = |user: &Arc<str>| pushes.by_user.get(user).map_or(0, |v| v.len());
        for n in 0..3 {
            for (_, inbox) in pushes.by_user.get(&ann).unwrap().iter() {
                assert!(inbox.try_push(frame(n)));
            }
        }
        for l in [&a1, &a2] {
            for n in 0..3 {
                assert_eq!(l.recv().now_or_never(), Some(frame(n)));
            }
            assert_eq!(l.recv().now_or_never(), None, "nothing more");
        }
        assert_eq!(b.recv().now_or_never(), None, "bob hears nothing of ann's");
        drop(a1);
        assert_eq!(sockets(&ann), 1);
        drop(a2);
        assert!(pushes.by_user.get(&ann).is_none());
        assert_eq!(sockets(&bob), 1);
    }

    /// An inbox holds no buffer until a frame comes and none once its frames are taken; it
    /// keeps at most [`QUEUE`] frames, and a push wakes the task waiting on it.
    #[tokio::test]
    async fn an_inbox_is_bounded_wakes_its_reader_and_holds_nothing_when_empty() {
        let inbox = Arc::new(Inbox::default());
        assert_eq!(inbox.lock().frames.capacity(), 0);
        for n in 0..QUEUE {
            assert!(inbox.try_push(frame(n)));
        }
        assert!(
            !inbox.try_push(frame(QUEUE)),
            "one over the bound is refused"
        );
        for n in 0..QUEUE {
            let got = std::future::poll_fn(|cx| inbox.poll_recv(cx)).await;
            assert_eq!(got, frame(n));
        }
        assert_eq!(
            inbox.lock().frames.capacity(),
            0,
            "drained, it holds no buffer"
        );
        let reader = {
            let inbox = inbox.clone();
            tokio::spawn(async move { std::future::poll_fn(|cx| inbox.poll_recv(cx)).await })
        };
        tokio::task::yield_now().await;
        assert!(inbox.try_push(frame(7)));
        let got = tokio::time::timeout(std::time::Duration::from_secs(20), reader)
            .await
            .expect("the reader is woken")
            .unwrap();
        assert_eq!(got, frame(7));
    }
}

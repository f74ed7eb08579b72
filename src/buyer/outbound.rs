//! A buyer connection's outbound queue: the frames waiting for the socket, bounded, written and
//! flushed in batches by the connection's own task.

use std::collections::VecDeque;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::extract::ws::{CloseFrame, Message, Utf8Bytes};
use futures_util::{Sink, SinkExt};

use crate::buyer::answers::Answer;
use crate::protocol::ServerMsg;

/// How long a closing socket's last frames may take to leave.
pub(crate) const CLOSE_GRACE: Duration = Duration::from_secs(2);

/// Whether a socket can still be written to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Flow {
    Open,
    /// Writing failed: the peer is gone.
    Closed,
    /// The queue is full: the peer does not read.
    Overflow,
}

/// The socket's write half and the frames waiting for it, written by the connection's own
/// task (after one turn at the back of the run queue, see [`Outbound::push`]): no second task
/// to wake and no channel between the two.
pub(crate) struct Outbound<Si> {
    sink: Si,
    /// Frames not yet handed to the socket, at most `capacity`.
    queue: VecDeque<Message>,
    capacity: usize,
    /// Frames handed to the socket since its last flush.
    unflushed: bool,
    /// The socket failed: the peer is gone.
    broken: bool,
    /// What is queued has waited its turn at the back of the run queue.
    pub(crate) waited: bool,
    /// The queue gives its memory back after the next flush
    /// (see [`Outbound::release_when_flushed`]).
    release: bool,
}

impl<Si> Outbound<Si>
where
    Si: Sink<Message> + Unpin,
{
    /// A queue of `capacity` frames (at least 2) in front of `sink`.
    pub(crate) fn new(sink: Si, capacity: usize) -> Self {
        Outbound {
            sink,
            queue: VecDeque::new(),
            capacity: capacity.max(2),
            unflushed: false,
            broken: false,
            waited: false,
            release: false,
        }
    }

    /// After the next flush the queue holds no buffer, whatever it held. For the frames an
    /// idle socket writes (its hello, the heartbeat's pings), so that a socket that only
    /// listens keeps no queue between them; a busy socket keeps its queue from batch to batch.
    #[inline]
    pub(crate) fn release_when_flushed(&mut self) {
        self.release = true;
    }

    /// Whether at least half the queue is free.
    #[inline]
    pub(crate) fn has_room(&self) -> bool {
        self.queue.len() * 2 <= self.capacity
    }

    /// Whether there is something to write or flush.
    #[inline]
    pub(crate) fn has_work(&self) -> bool {
        !self.broken && (self.unflushed || !self.queue.is_empty())
    }

    /// Whether what is queued is to be written now.
    #[inline]
    pub(crate) fn is_due(&self) -> bool {
        self.has_work() && (self.waited || self.unflushed)
    }

    /// Whether what is queued still has to wait its turn.
    #[inline]
    pub(crate) fn must_wait(&self) -> bool {
        self.has_work() && !self.is_due()
    }

    /// Queues a frame. It leaves after the tasks already queued on this worker have run: when
    /// a sale opens, the buys that thousands of buyers just sent are read (and their journal
    /// batch started) before their answers and the sale's pushes are written.
    #[inline]
    pub(crate) fn push(&mut self, msg: Message) -> Flow {
        if self.broken {
            Flow::Closed
        } else if self.queue.len() >= self.capacity {
            Flow::Overflow
        } else {
            if self.queue.capacity() == 0 {
                // Room for one frame first (the lone pong or push of a quiet socket); a busy
                // socket's queue grows from there and keeps its size between batches.
                self.queue.reserve_exact(1);
            }
            self.queue.push_back(msg);
            Flow::Open
        }
    }

    /// Queues `msg` as a JSON text frame.
    #[inline]
    pub(crate) fn push_msg(&mut self, msg: &ServerMsg) -> Flow {
        self.push(Message::Text(Utf8Bytes::from(msg.to_json())))
    }

    /// Queues the acks of `ready` while the socket is `flow`ing; returns the flow after them.
    pub(crate) fn push_acks(&mut self, ready: Vec<Answer>, mut flow: Flow) -> Flow {
        for (ack, _, _) in ready {
            if flow == Flow::Open {
                flow = self.push_msg(&ServerMsg::Ack(ack));
            }
        }
        flow
    }

    /// Hands every queued frame to the socket and flushes them together; ready when all are
    /// written, or when the socket failed. Dropped half-way, it loses nothing: frames leave the
    /// queue only as the socket takes them.
    pub(crate) fn poll_write(&mut self, cx: &mut Context<'_>) -> Poll<Flow> {
        if self.broken {
            return Poll::Ready(Flow::Closed);
        }
        let flushed = loop {
            if self.queue.is_empty() {
                if !self.unflushed {
                    break Ok(());
                }
                match self.sink.poll_flush_unpin(cx) {
                    Poll::Ready(r) => break r,
                    Poll::Pending => return Poll::Pending,
                }
            }
            match self.sink.poll_ready_unpin(cx) {
                Poll::Ready(Ok(())) => {}
                Poll::Ready(Err(e)) => break Err(e),
                Poll::Pending => return Poll::Pending,
            }
            let msg = self.queue.pop_front().expect("the queue is not empty");
            if let Err(e) = self.sink.start_send_unpin(msg) {
                break Err(e);
            }
            self.unflushed = true;
        };
        match flushed {
            Ok(()) => {
                self.unflushed = false;
                self.waited = false;
                if std::mem::take(&mut self.release) || self.queue.capacity() > 64 {
                    // A burst is over, or the socket is idle: it keeps no big buffer, or
                    // none at all.
                    self.queue = VecDeque::new();
                }
                Poll::Ready(Flow::Open)
            }
            Err(_) => {
                self.broken = true;
                self.queue.clear();
                Poll::Ready(Flow::Closed)
            }
        }
    }

    /// Writes what is queued; see [`Outbound::poll_write`].
    pub(crate) async fn write(&mut self) -> Flow {
        std::future::poll_fn(|cx| self.poll_write(cx)).await
    }

    /// Lets what is queued (and a close frame) leave, for at most [`CLOSE_GRACE`], then closes
    /// the sink.
    pub(crate) async fn finish(mut self, close: Option<(u16, &'static str)>) {
        if let Some((code, reason)) = close {
            let _ = self.push(Message::Close(Some(CloseFrame {
                code,
                reason: reason.into(),
            })));
        }
        let _ = tokio::time::timeout(CLOSE_GRACE, async {
            if self.write().await == Flow::Open {
                let _ = self.sink.close().await;
            }
        })
        .await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::buyer::testing::{Sent, Stuck, Wire};
    use tokio::sync::mpsc;

    fn text(s: &'static str) -> Message {
        Message::Text(Utf8Bytes::from_static(s))
    }

    fn wire() -> (Wire, mpsc::UnboundedReceiver<Sent>) {
        let (tx, rx) = mpsc::unbounded_channel();
        (Wire::new(tx), rx)
    }

    fn drain(rx: &mut mpsc::UnboundedReceiver<Sent>) -> Vec<String> {
        std::iter::from_fn(|| rx.try_recv().ok())
            .map(|s| match s {
                Sent::Frame(Message::Text(t)) => t.to_string(),
                Sent::Frame(Message::Close(Some(c))) => format!("close {}", c.code),
                Sent::Frame(m) => format!("{m:?}"),
                Sent::Flush => "flush".to_owned(),
                Sent::Close => "closed".to_owned(),
            })
            .collect()
    }

    /// Everything queued leaves in order with one flush; the queue is then free again.
    #[tokio::test]
    async fn a_batch_leaves_in_order_with_one_flush() {
        let (sink, mut rx) = wire();
        let mut out = Outbound::new(sink, 8);
        assert!(!out.has_work());
        for f in ["a", "b", "c"] {
            assert_eq!(out.push(text(f)), Flow::Open);
        }
        // Queued frames first wait their turn at the back of the run queue.
        assert!(out.must_wait() && !out.is_due());
        out.waited = true;
        assert!(out.is_due());
        assert_eq!(out.write().await, Flow::Open);
        assert_eq!(drain(&mut rx), ["a", "b", "c", "flush"]);
        assert!(!out.has_work() && !out.waited);
        assert_eq!(out.write().await, Flow::Open);
        assert!(
            drain(&mut rx).is_empty(),
            "nothing to write, nothing flushed"
        );
    }

    /// A quiet socket's queue: room for one frame at first, and no buffer at all after a
    /// flush it was told to give its memory back at (the hello's, a heartbeat's); a busy
    /// socket's queue keeps its size from one batch to the next.
    #[tokio::test]
    async fn an_idle_queue_holds_no_buffer_after_its_flush() {
        let (sink, mut rx) = wire();
        let mut out = Outbound::new(sink, 8);
        assert_eq!(out.queue.capacity(), 0);
        out.push(text("hello"));
        assert_eq!(out.queue.capacity(), 1, "room for the lone frame only");
        out.release_when_flushed();
        out.waited = true;
        assert_eq!(out.write().await, Flow::Open);
        assert_eq!(out.queue.capacity(), 0, "given back after the flush");
        for f in ["a", "b", "c"] {
            out.push(text(f));
        }
        out.waited = true;
        assert_eq!(out.write().await, Flow::Open);
        assert!(out.queue.capacity() >= 3, "a batch's queue is kept");
        assert_eq!(drain(&mut rx), ["hello", "flush", "a", "b", "c", "flush"]);
    }

    /// Half full is the most that has room; a full queue overflows and keeps what it has.
    #[test]
    fn a_full_queue_overflows() {
        let mut out = Outbound::new(Stuck, 4);
        for f in ["a", "b"] {
            assert_eq!(out.push(text(f)), Flow::Open);
        }
        assert!(out.has_room());
        assert_eq!(out.push(text("c")), Flow::Open);
        assert!(!out.has_room());
        assert_eq!(out.push(text("d")), Flow::Open);
        assert_eq!(out.push(text("e")), Flow::Overflow);
        assert_eq!(out.queue.len(), 4);
    }

    /// A sink that fails makes the queue closed: it drops what it holds and takes nothing more.
    #[tokio::test]
    async fn a_failed_sink_closes_the_queue() {
        let (sink, rx) = wire();
        drop(rx);
        let mut out = Outbound::new(sink, 8);
        out.push(text("a"));
        assert_eq!(out.write().await, Flow::Closed);
        assert!(!out.has_work());
        assert_eq!(out.push(text("b")), Flow::Closed);
    }

    /// Finishing sends what is queued, then the close frame, and closes the sink.
    #[tokio::test]
    async fn finish_sends_the_rest_and_the_close_frame() {
        let (sink, mut rx) = wire();
        let mut out = Outbound::new(sink, 8);
        out.push(text("a"));
        out.finish(Some((1000, "bye"))).await;
        assert_eq!(drain(&mut rx), ["a", "close 1000", "flush", "closed"]);
    }

    /// A socket that takes nothing holds up the close for [`CLOSE_GRACE`] at most.
    #[tokio::test(start_paused = true)]
    async fn finish_gives_up_on_a_stuck_socket_after_the_grace() {
        let mut out = Outbound::new(Stuck, 8);
        out.push(text("a"));
        let t0 = tokio::time::Instant::now();
        out.finish(Some((1000, "bye"))).await;
        assert_eq!(t0.elapsed(), CLOSE_GRACE);
    }
}

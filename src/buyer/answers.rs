//! A buyer connection's buys and `status`es that are not answered yet.

use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Instant;

use futures_util::stream::FuturesUnordered;
use futures_util::StreamExt;

use crate::hub::buy::Journaling;
use crate::protocol::Ack;

/// An answer: `(ack, when the frame arrived, whether it is a buy)`.
pub(crate) type Answer = (Ack, Instant, bool);

/// A rare answer that needs a future of its own (see [`Answers`]).
type Other = Pin<Box<dyn Future<Output = Answer> + Send>>;

/// The buys and `status`es of one connection that wait for their answers.
///
/// Buys waiting for the journal are answered in the order they were submitted (one task
/// submits them, one writer takes them in queue order and answers its batches in order), so
/// they wait in a FIFO and only the oldest is polled: one wake-up for a batch of this
/// connection's buys instead of one a buy, and nothing allocated to track each. The rare
/// others (a duplicate being decided elsewhere, fleet mode, `status`) are boxed in a
/// `FuturesUnordered`.
pub(crate) struct Answers {
    journal: VecDeque<(Journaling, Instant)>,
    other: FuturesUnordered<Other>,
}

impl Answers {
    pub(crate) fn new() -> Self {
        Answers {
            journal: VecDeque::new(),
            other: FuturesUnordered::new(),
        }
    }

    /// Buys and `status`es waiting.
    #[inline]
    pub(crate) fn len(&self) -> usize {
        self.journal.len() + self.other.len()
    }

    #[inline]
    pub(crate) fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Waits for a buy that is in the journal's queue; `started` is when its frame arrived.
    #[inline]
    pub(crate) fn push_journaling(&mut self, buy: Journaling, started: Instant) {
        self.journal.push_back((buy, started));
    }

    /// Waits for any other answer (boxed: these are the rare ones).
    pub(crate) fn push_other(&mut self, answer: impl Future<Output = Answer> + Send + 'static) {
        self.other.push(Box::pin(answer));
    }

    /// Every answer that is ready, once at least one is. The journal's are taken oldest first
    /// and in order; the first that is not ready stops them.
    pub(crate) fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Vec<Answer>> {
        let mut ready = Vec::new();
        while let Some((j, started)) = self.journal.front_mut() {
            match Pin::new(j).poll(cx) {
                Poll::Ready(ack) => {
                    ready.push((ack, *started, true));
                    self.journal.pop_front();
                }
                Poll::Pending => break,
            }
        }
        while let Poll::Ready(Some(answer)) = self.other.poll_next_unpin(cx) {
            ready.push(answer);
        }
        if ready.is_empty() {
            Poll::Pending
        } else {
            Poll::Ready(ready)
        }
    }

    /// Waits for the next answers; empty when nothing is waiting.
    pub(crate) async fn next(&mut self) -> Vec<Answer> {
        if self.is_empty() {
            return Vec::new();
        }
        std::future::poll_fn(|cx| self.poll_ready(cx)).await
    }
}

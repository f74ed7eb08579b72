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
/// `FuturesUnordered`, made when the first comes and dropped when the last is answered (it
/// allocates its queue when made, and most sockets never ask anything but buys).
pub(crate) struct Answers {
    journal: VecDeque<(Journaling, Instant)>,
    other: Option<FuturesUnordered<Other>>,
}

impl Answers {
    pub(crate) fn new() -> Self {
        Answers {
            journal: VecDeque::new(),
            other: None,
        }
    }

    /// Buys and `status`es waiting.
    #[inline]
    pub(crate) fn len(&self) -> usize {
        self.journal.len() + self.other.as_ref().map_or(0, FuturesUnordered::len)
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
        self.other
            .get_or_insert_with(FuturesUnordered::new)
            .push(Box::pin(answer));
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
        if let Some(other) = &mut self.other {
            while let Poll::Ready(Some(answer)) = other.poll_next_unpin(cx) {
                ready.push(answer);
            }
            if other.is_empty() {
                self.other = None;
            }
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    use futures_util::FutureExt;

    use crate::buyer::testing::{Setup, WAIT};
    use crate::hub::buy::Started;
    use crate::protocol::{BuyMsg, RejectCode};

    async fn next(answers: &mut Answers) -> Vec<Answer> {
        tokio::time::timeout(WAIT, answers.next())
            .await
            .expect("answers in time")
    }

    /// Buys in the journal's queue are answered in the order they were started, each with
    /// the time its frame arrived; nothing waiting answers at once with nothing.
    #[tokio::test]
    async fn journal_answers_come_in_the_order_the_buys_were_started() {
        let s = Setup::new(100).await;
        let who = s.room.users.intern("u1");
        let mut answers = Answers::new();
        assert!(next(&mut answers).await.is_empty());
        let t0 = Instant::now();
        for i in 0..20u64 {
            let buy = BuyMsg {
                req: format!("q{i}"),
                sku: "s".to_owned(),
                qty: 1,
                referrer: None,
            };
            match s.hub.start_buy(&s.room, &who, &buy) {
                Some(Started::Journaling(j)) => {
                    answers.push_journaling(j, t0 + Duration::from_millis(i))
                }
                _ => panic!("a fresh buy goes to the journal"),
            }
        }
        assert_eq!(answers.len(), 20);
        let mut got = Vec::new();
        while !answers.is_empty() {
            got.extend(next(&mut answers).await);
        }
        for (i, (ack, started, is_buy)) in got.iter().enumerate() {
            assert_eq!(ack.req, format!("q{i}"));
            assert!(ack.ok, "{ack:?}");
            assert_eq!(*started, t0 + Duration::from_millis(i as u64));
            assert!(is_buy);
        }
        assert_eq!(got.len(), 20);
        assert_eq!(s.room.skus.get("s").unwrap().left(), 80);
    }

    /// The other answers' set exists only while one is waiting (it allocates when made).
    #[tokio::test]
    async fn the_other_answers_set_exists_only_while_one_waits() {
        let mut answers = Answers::new();
        assert!(answers.other.is_none());
        let t0 = Instant::now();
        answers.push_other(async move {
            (
                Ack::rejected("a", RejectCode::UnknownRequest, None, None),
                t0,
                false,
            )
        });
        assert!(answers.other.is_some());
        assert_eq!(next(&mut answers).await.len(), 1);
        assert!(answers.other.is_none(), "dropped once the last is answered");
        assert!(answers.is_empty());
    }

    /// The other answers come as each is ready, whatever the order they were added in.
    #[tokio::test]
    async fn other_answers_come_as_they_are_ready() {
        let mut answers = Answers::new();
        let t0 = Instant::now();
        let mut senders = Vec::new();
        for req in ["a", "b"] {
            let (tx, rx) = tokio::sync::oneshot::channel::<()>();
            senders.push(tx);
            answers.push_other(async move {
                rx.await.unwrap();
                let ack = Ack::rejected(req, RejectCode::UnknownRequest, None, None);
                (ack, t0, false)
            });
        }
        assert!(
            answers.next().now_or_never().is_none(),
            "nothing is ready yet"
        );
        senders.pop().unwrap().send(()).unwrap();
        let got = next(&mut answers).await;
        assert_eq!(got.len(), 1);
        assert_eq!((got[0].0.req.as_str(), got[0].2), ("b", false));
        assert_eq!(answers.len(), 1);
        senders.pop().unwrap().send(()).unwrap();
        assert_eq!(next(&mut answers).await[0].0.req, "a");
        assert!(answers.is_empty());
    }
}

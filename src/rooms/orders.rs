//! A room's order log: its durable orders in seq order, and in fleet mode every hub's orders
//! as the room's Redis stream holds them.
//!
//! Both lists are append-only [`boxcar::Vec`]s, vectors of buckets that double: one writer
//! appends (the journal writer for the durable orders, the stream reader for the stream), and
//! any number of readers (the dashboard aggregator's fold, the audit, the snapshot thread,
//! exports) index them without a lock. So no reader can hold up the writer, and growing a list
//! never copies or re-faults what it holds. A `RwLock<Vec<_>>` would make readers copy pieces
//! out under the lock, and its doubling would move the whole list while the writer holds it.
//!
//! Only [`crate::rooms::room::Room`] appends durable orders, together with the idempotency
//! table, so the two never disagree about an order.

use std::sync::Arc;

use crate::journal::OrderRecord;
use crate::rooms::events::{Event, Moved};

/// How many orders ahead [`OrderLog::for_range`] asks the CPU to fetch.
const PREFETCH_AHEAD: usize = 16;

/// Asks the CPU to start loading `lines` cache lines from `p` into its caches: a hint that
/// reads nothing into the program.
#[inline]
fn prefetch(p: *const u8, lines: usize) {
    #[cfg(target_arch = "x86_64")]
    for l in 0..lines {
        use std::arch::x86_64::{_mm_prefetch, _MM_HINT_T0};
        // SAFETY: a prefetch cannot fault and has no effect the program can see, whatever the
        // address; `wrapping_add` makes no claim about the allocation.
        unsafe { _mm_prefetch::<_MM_HINT_T0>(p.wrapping_add(64 * l) as *const i8) };
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = (p, lines);
}

/// An order read from the room's Redis stream: `order.seq` is the room-wide seq, `order.hub`
/// the hub that took it, and `hub_seq` its seq in that hub's journal and export.
#[derive(Debug, Clone)]
pub struct StreamOrder {
    pub order: Arc<OrderRecord>,
    pub hub_seq: u64,
}

/// An entry of the room's Redis stream: an order placed, or a status move of one.
#[derive(Debug, Clone)]
pub enum StreamEvent {
    /// An order placed on some hub.
    Placed(StreamOrder),
    /// A status move decided on some hub.
    Moved(Arc<Moved>),
}

/// The room's orders. Reads take no lock and see the orders there were when they began.
#[derive(Debug, Default)]
pub struct OrderLog {
    /// Durable orders by seq, appended in seq order by the journal writer only.
    durable: boxcar::Vec<Arc<OrderRecord>>,
    /// fleet mode: every hub's published orders and status moves, in the room's stream order,
    /// appended by the stream reader only.
    stream: boxcar::Vec<StreamEvent>,
}

impl OrderLog {
    /// A log with room for `n` durable orders (a snapshot being restored) without growing.
    pub fn with_capacity(n: usize) -> Self {
        OrderLog {
            durable: boxcar::Vec::with_capacity(n),
            stream: boxcar::Vec::new(),
        }
    }

    /// Appends a durable order, the next by seq. [`crate::rooms::room::Room`] calls it, with
    /// the idempotency table, from the journal writer (or replay, or restore) only.
    #[inline]
    pub(super) fn push(&self, order: Arc<OrderRecord>) {
        self.durable.push(order);
    }

    /// Number of durable orders.
    pub fn count(&self) -> usize {
        self.durable.count()
    }

    /// Fleet mode: entries (orders and moves) read from the room's stream so far.
    pub fn stream_count(&self) -> usize {
        self.stream.count()
    }

    /// Calls `f` on the durable orders with index `from..to` (fewer if there are fewer), in
    /// seq order, without a lock. Returns the index after the last order handed over.
    fn for_range(&self, from: usize, to: usize, mut f: impl FnMut(&Arc<OrderRecord>)) -> usize {
        // Every index below the count is written: the one writer pushes, and the count is
        // raised after the entry (with release ordering; `count` loads with acquire).
        let to = to.min(self.durable.count());
        let at = |i: usize| self.durable.get(i).expect("an order below the count");
        for i in from..to {
            // Each order is its own allocation, long out of cache: ask for the ones ahead
            // (the record, then, once it has arrived, its `req`) while this one is handled.
            if i + PREFETCH_AHEAD < to {
                prefetch(Arc::as_ptr(at(i + PREFETCH_AHEAD)) as *const u8, 2);
            }
            if i + PREFETCH_AHEAD / 2 < to {
                prefetch(at(i + PREFETCH_AHEAD / 2).req.as_ptr(), 1);
            }
            f(at(i));
        }
        to.max(from)
    }

    /// Calls `f` on the first `n` durable orders, in seq order: the snapshot thread, which
    /// captured `n` earlier.
    pub fn for_prefix(&self, n: usize, f: impl FnMut(&Arc<OrderRecord>)) {
        self.for_range(0, n, f);
    }

    /// Calls `f` on each durable order from index `from` (not seq) to the count there is now;
    /// returns the index reached, where the next call starts.
    pub fn for_each_from(&self, from: usize, f: impl FnMut(&Arc<OrderRecord>)) -> usize {
        self.for_range(from, usize::MAX, f)
    }

    /// Durable orders with `seq > after_seq`, oldest first, at most `limit`: a page of the
    /// export.
    pub fn page_after(&self, after_seq: u64, limit: usize) -> Vec<Arc<OrderRecord>> {
        let count = self.durable.count();
        let seq = |i: usize| self.durable.get(i).expect("an order below the count").seq;
        // The first index whose seq is above `after_seq` (seqs grow with the index).
        let (mut lo, mut hi) = (0, count);
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            if seq(mid) <= after_seq {
                lo = mid + 1;
            } else {
                hi = mid;
            }
        }
        let mut page = Vec::with_capacity(limit.min(count - lo));
        self.for_range(lo, lo.saturating_add(limit), |o| page.push(o.clone()));
        page
    }

    /// The durable order numbered `number` (order numbers grow with seq in a room's log).
    pub fn by_number(&self, number: u64) -> Option<Arc<OrderRecord>> {
        let count = self.durable.count();
        let at = |i: usize| self.durable.get(i).expect("an order below the count");
        let (mut lo, mut hi) = (0, count);
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            if at(mid).number < number {
                lo = mid + 1;
            } else {
                hi = mid;
            }
        }
        (lo < count && at(lo).number == number).then(|| at(lo).clone())
    }

    /// fleet mode: appends entries read from the room's stream (the stream reader only).
    pub fn add_stream_events(&self, events: impl IntoIterator<Item = StreamEvent>) {
        for e in events {
            self.stream.push(e);
        }
    }

    /// fleet mode: calls `f` on each stream entry from index `from` to the count there is now,
    /// without a lock; returns that count, where the next call starts.
    pub fn for_each_stream_from(&self, from: usize, mut f: impl FnMut(&StreamEvent)) -> usize {
        let to = self.stream.count();
        for i in from..to {
            f(self.stream.get(i).expect("a stream order below the count"));
        }
        to
    }

    /// fleet mode: the stream's entries numbered above `after` (entry `n` is the `n`-th, from
    /// 1), oldest first, at most `limit`, as change feed events with their numbers: the whole
    /// room's change feed.
    pub fn stream_page_after(&self, after: u64, limit: usize) -> Vec<(u64, Event)> {
        let count = self.stream.count();
        let from = usize::try_from(after).unwrap_or(usize::MAX).min(count);
        let to = from.saturating_add(limit).min(count);
        (from..to)
            .map(|i| {
                let e = match self.stream.get(i).expect("a stream entry below the count") {
                    StreamEvent::Placed(s) => Event::Placed(s.order.clone()),
                    StreamEvent::Moved(m) => Event::Moved(m.clone()),
                };
                (i as u64 + 1, e)
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    /// The log's next order, by seq.
    fn next(log: &OrderLog, req: &str) -> Arc<OrderRecord> {
        let mut o = crate::rooms::requests::tests::order(&Arc::from("u"), &Arc::from(req));
        Arc::get_mut(&mut o).expect("new").seq = log.count() as u64 + 1;
        o
    }

    /// Readers take no lock: `f` itself can append (as the journal writer does meanwhile)
    /// without waiting for the reader, which would deadlock if `f` ran under a read lock. The
    /// reader stops at the count there was when it began.
    #[test]
    fn readers_never_hold_the_order_list_while_they_work() {
        // On a thread of its own: a reader that held the lock would hang it, and the wait
        // below turns that into a failure.
        let (done, finished) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            readers_work_outside_the_lock();
            let _ = done.send(());
        });
        finished
            .recv_timeout(Duration::from_secs(30))
            .expect("a reader held the order list while its callback appended");
    }

    fn readers_work_outside_the_lock() {
        let log = OrderLog::default();
        let n = 2500;
        for i in 0..n {
            log.push(next(&log, &format!("a{i}")));
        }
        // The fold sees the orders there were when it began, whatever is appended meanwhile.
        let mut seen = Vec::new();
        let reached = log.for_each_from(n / 5, |o| {
            seen.push(o.req.to_string());
            log.push(next(&log, &format!("b{}", seen.len())));
        });
        assert_eq!(reached, n);
        let want: Vec<String> = (n / 5..n).map(|i| format!("a{i}")).collect();
        assert_eq!(seen, want);
        assert_eq!(log.count(), n + want.len());
        let mut prefix = 0;
        log.for_prefix(n + 10, |o| {
            assert_eq!(o.seq, prefix as u64 + 1, "in seq order");
            prefix += 1;
            log.push(next(&log, &format!("c{prefix}")));
        });
        assert_eq!(prefix, n + 10);
        // A page after a seq starts right after it.
        let page = log.page_after(n as u64 - 3, 5);
        let seqs: Vec<u64> = page.iter().map(|o| o.seq).collect();
        assert_eq!(seqs, (n as u64 - 2..n as u64 + 3).collect::<Vec<_>>());
        assert!(log.page_after(u64::MAX - 1, 5).is_empty());
    }

    /// The stream list hands out what was appended, from any index, and says where to go on.
    #[test]
    fn stream_orders_are_read_from_where_the_last_read_stopped() {
        let log = OrderLog::default();
        let stream = |n: u64| {
            StreamEvent::Placed(StreamOrder {
                order: next(&log, &format!("s{n}")),
                hub_seq: n,
            })
        };
        let hub_seq = |e: &StreamEvent| match e {
            StreamEvent::Placed(s) => s.hub_seq,
            StreamEvent::Moved(_) => 0,
        };
        log.add_stream_events((1..=3).map(stream));
        let mut seen = Vec::new();
        let at = log.for_each_stream_from(0, |s| seen.push(hub_seq(s)));
        assert_eq!((at, &seen[..]), (3, &[1, 2, 3][..]));
        log.add_stream_events((4..=5).map(stream));
        let at = log.for_each_stream_from(at, |s| seen.push(hub_seq(s)));
        assert_eq!((at, &seen[..]), (5, &[1, 2, 3, 4, 5][..]));
        assert_eq!(
            log.count(),
            0,
            "stream orders are not durable orders of this hub"
        );
    }
}

//! The best sharers (分享裂变) of a room, kept as orders are folded: a dashboard snapshot takes
//! the top list as it is, and never sorts every sharer of the room.
//!
//! A sharer's figures only grow (an order adds to them), so the top list changes only when the
//! sharer of the order just folded grows: it moves within the list, or enters it in place of
//! the last one. The cost is a few comparisons of at most [`TOP`] entries per order with a
//! `ref`, whatever the number of sharers.

use std::cmp::Ordering;
use std::collections::HashMap;
use std::sync::Arc;

use super::snapshot::Referrer;

/// Sharers shown.
pub const TOP: usize = 10;

/// Every sharer's orders and GMV, and the best [`TOP`] of them in order.
#[derive(Debug, Default)]
pub struct Referrers {
    all: HashMap<Arc<str>, (u64, u64), foldhash::fast::RandomState>,
    top: Vec<Referrer>,
}

/// The order of the list: GMV, then orders, highest first; then the sharer's id.
fn rank(a: &Referrer, b: &Referrer) -> Ordering {
    b.gmv_fen
        .cmp(&a.gmv_fen)
        .then(b.orders.cmp(&a.orders))
        .then(a.referrer.cmp(&b.referrer))
}

impl Referrers {
    /// Counts an order of `amount_fen` brought by `referrer`.
    pub fn add(&mut self, referrer: &Arc<str>, amount_fen: u64) {
        let e = self.all.entry(referrer.clone()).or_default();
        e.0 += 1;
        e.1 = e.1.saturating_add(amount_fen);
        let now = Referrer {
            referrer: referrer.clone(),
            orders: e.0,
            gmv_fen: e.1,
        };
        match self.top.iter().position(|r| r.referrer == *referrer) {
            Some(i) => self.top[i] = now,
            None if self.top.len() < TOP => self.top.push(now),
            None => {
                let last = self.top.last().expect("a full list");
                if rank(&now, last) != Ordering::Less {
                    return;
                }
                *self.top.last_mut().expect("a full list") = now;
            }
        }
        self.top.sort_by(rank);
    }

    /// The best [`TOP`] sharers, best first.
    pub fn top(&self) -> &[Referrer] {
        &self.top
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        /// The list kept as orders come equals sorting every sharer at the end.
        #[test]
        fn the_kept_top_equals_sorting_everyone(orders in proptest::collection::vec((0u8..40, 1u64..1000), 0..400)) {
            let mut kept = Referrers::default();
            let mut all: HashMap<Arc<str>, (u64, u64)> = HashMap::new();
            for (who, amount) in orders {
                let r: Arc<str> = Arc::from(format!("s{who}"));
                kept.add(&r, amount);
                let e = all.entry(r).or_default();
                e.0 += 1;
                e.1 += amount;
            }
            let mut want: Vec<Referrer> = all
                .into_iter()
                .map(|(referrer, (orders, gmv_fen))| Referrer { referrer, orders, gmv_fen })
                .collect();
            want.sort_by(rank);
            want.truncate(TOP);
            prop_assert_eq!(kept.top(), &want[..]);
        }
    }
}

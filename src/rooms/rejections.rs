//! A room's refused buys by code, as the journal holds them ([`Record::Rejections`]): the
//! durable counterpart of the live counters in [`super::live::LiveStats`], which start from
//! zero at each start. The hub's flusher ([`crate::hub::rejections`]) journals what the live
//! counters gained, at most once a second per room; the journal's apply (live, replay and a
//! snapshot's restore) adds it here. So these counts lag the live ones by up to a second, and
//! the refusals of the last second before a crash are lost; a clean stop writes them.
//!
//! [`Record::Rejections`]: crate::journal::Record::Rejections

use std::collections::BTreeMap;
use std::sync::Mutex;

/// Durable refusal counts of one room, by code. A lock, not atomics: it is written once a
/// second at most, and codes are kept as journaled (a code this build does not know is kept).
#[derive(Debug, Default)]
pub struct Rejections {
    counts: Mutex<BTreeMap<String, u64>>,
}

impl Rejections {
    /// Adds journaled counts (the journal's apply only).
    pub fn add(&self, counts: &[(String, u64)]) {
        let mut c = self.counts.lock().expect("rejections lock");
        for (code, n) in counts {
            if *n == 0 {
                continue;
            }
            match c.get_mut(code.as_str()) {
                Some(v) => *v = v.saturating_add(*n),
                None => {
                    c.insert(code.clone(), *n);
                }
            }
        }
    }

    /// Every code refused at least once, with its count.
    pub fn counts(&self) -> BTreeMap<String, u64> {
        self.counts.lock().expect("rejections lock").clone()
    }

    /// The counts as a journal snapshot keeps them.
    pub fn to_vec(&self) -> Vec<(String, u64)> {
        self.counts().into_iter().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_add_up_by_code() {
        let r = Rejections::default();
        r.add(&[("sold_out".into(), 2), ("closed".into(), 0)]);
        r.add(&[("sold_out".into(), 3), ("rate_limited".into(), 1)]);
        let want: BTreeMap<String, u64> =
            [("rate_limited".to_owned(), 1), ("sold_out".to_owned(), 5)].into();
        assert_eq!(r.counts(), want, "codes with none are left out");
        assert_eq!(r.to_vec().len(), 2);
    }
}

//! Model check of the gate's compare-and-swap and per-user logic under shuttle: the very
//! functions the hub runs (`inventory::stock`), with shuttle's atomics and mutex, explored
//! over thousands of random and PCT schedules.

use std::collections::HashMap;

use shuttle::sync::atomic::{AtomicU64, Ordering};
use shuttle::sync::{Arc, Mutex};
use shuttle::thread;

use livehub::inventory::stock::{self, Counter, Denied, UserLedger};

struct ShuttleCounter(AtomicU64);

impl Counter for ShuttleCounter {
    fn get(&self) -> u64 {
        self.0.load(Ordering::Acquire)
    }
    fn swap_if(&self, current: u64, new: u64) -> Result<u64, u64> {
        self.0
            .compare_exchange_weak(current, new, Ordering::AcqRel, Ordering::Acquire)
    }
    fn add(&self, v: u64) -> u64 {
        self.0.fetch_add(v, Ordering::AcqRel)
    }
    fn sub(&self, v: u64) -> u64 {
        self.0.fetch_sub(v, Ordering::AcqRel)
    }
}

/// One lock per user, like the DashMap entry the hub uses.
#[derive(Default)]
struct ShuttleLedger(Mutex<HashMap<u32, Arc<Mutex<u64>>>>);

impl ShuttleLedger {
    fn slot(&self, user: u32) -> Arc<Mutex<u64>> {
        self.0.lock().unwrap().entry(user).or_default().clone()
    }
}

impl UserLedger for ShuttleLedger {
    fn update<R, E>(&self, user: u32, f: impl FnOnce(u64) -> Result<(u64, R), E>) -> Result<R, E> {
        let slot = self.slot(user);
        let mut held = slot.lock().unwrap();
        let (new, r) = f(*held)?;
        *held = new;
        Ok(r)
    }
    fn give_back(&self, user: u32, qty: u64) {
        let slot = self.slot(user);
        let mut held = slot.lock().unwrap();
        *held = held.saturating_sub(qty);
    }
    fn held(&self, user: u32) -> u64 {
        *self.slot(user).lock().unwrap()
    }
}

/// Buyers (user, qty) race on `stock` with `limit`; checks no oversell, no limit overrun,
/// and that every refusal was true of the final state (nothing is ever given back here).
fn race(stock_units: u64, limit: Option<u64>, buyers: &'static [(u32, u64)]) {
    let left = Arc::new(ShuttleCounter(AtomicU64::new(stock_units)));
    let ledger = Arc::new(ShuttleLedger::default());
    let handles: Vec<_> = buyers
        .iter()
        .map(|&(user, qty)| {
            let (left, ledger) = (left.clone(), ledger.clone());
            thread::spawn(move || {
                (
                    user,
                    qty,
                    stock::reserve(&*left, &*ledger, user, qty, limit),
                )
            })
        })
        .collect();
    let results: Vec<_> = handles.into_iter().map(|h| h.join().unwrap()).collect();
    let sold: u64 = results
        .iter()
        .filter_map(|(_, q, r)| r.as_ref().ok().map(|_| *q))
        .sum();
    assert!(sold <= stock_units, "oversold: {sold} > {stock_units}");
    assert_eq!(left.get() + sold, stock_units, "units are conserved");
    for &(user, _, _) in &results {
        let bought: u64 = results
            .iter()
            .filter(|(u, _, r)| *u == user && r.is_ok())
            .map(|(_, q, _)| q)
            .sum();
        assert_eq!(
            ledger.held(user),
            bought,
            "the ledger holds exactly what {user} bought"
        );
        if let Some(l) = limit {
            assert!(bought <= l, "{user} bought {bought} over the limit {l}");
        }
    }
    for (user, qty, r) in &results {
        match r {
            Err(Denied::Limit { .. }) => {
                let bought = ledger.held(*user);
                assert!(
                    bought + qty > limit.unwrap(),
                    "false limit_exceeded for {user}: holds {bought}"
                );
            }
            Err(Denied::Stock { left: seen }) => {
                // Stock only ever falls here, so what was seen must still be short at the end.
                assert!(
                    *seen < *qty,
                    "a stock refusal saw enough stock: {seen} >= {qty}"
                );
                assert!(
                    left.get() < *qty,
                    "false sold_out/insufficient_stock: {} left at the end",
                    left.get()
                );
            }
            Ok(_) => {}
        }
    }
}

const SAME_USER_AND_OTHERS: &[(u32, u64)] = &[(1, 1), (1, 1), (2, 1), (3, 2)];
const MANY: &[(u32, u64)] = &[(1, 1), (2, 1), (3, 1), (1, 2), (4, 1)];

#[test]
fn no_oversell_and_no_false_refusal_random() {
    shuttle::check_random(|| race(2, Some(1), SAME_USER_AND_OTHERS), 10_000);
    shuttle::check_random(|| race(3, None, MANY), 10_000);
}

#[test]
fn no_oversell_and_no_false_refusal_pct() {
    shuttle::check_pct(|| race(2, Some(1), SAME_USER_AND_OTHERS), 10_000, 3);
    shuttle::check_pct(|| race(4, Some(2), MANY), 10_000, 3);
}

/// The check itself can fail: a gate that takes stock before checking the limit and gives it
/// back on refusal produces a false `sold_out` that this harness catches.
#[test]
fn the_harness_catches_a_rollback_gate() {
    fn bad_reserve(
        left: &ShuttleCounter,
        ledger: &ShuttleLedger,
        user: u32,
        qty: u64,
        limit: u64,
    ) -> Result<u64, Denied> {
        let after = stock::take(left, qty).map_err(|left| Denied::Stock { left })?;
        ledger.update(user, |held| {
            if held + qty > limit {
                left.add(qty);
                return Err(Denied::Limit { left: after });
            }
            Ok((held + qty, after))
        })
    }
    let caught = std::panic::catch_unwind(|| {
        shuttle::check_random(
            || {
                let left = Arc::new(ShuttleCounter(AtomicU64::new(1)));
                let ledger = Arc::new(ShuttleLedger::default());
                ledger.update(1, |_| Ok::<_, ()>((1, ()))).unwrap();
                let (l1, g1) = (left.clone(), ledger.clone());
                let t1 = thread::spawn(move || bad_reserve(&l1, &g1, 1, 1, 1));
                let (l2, g2) = (left.clone(), ledger.clone());
                let t2 = thread::spawn(move || bad_reserve(&l2, &g2, 2, 1, 1));
                let _ = t1.join().unwrap();
                let r2 = t2.join().unwrap();
                if let Err(Denied::Stock { .. }) = r2 {
                    panic!("false sold_out: the unit was only borrowed by a refused buy");
                }
            },
            5_000,
        )
    });
    assert!(
        caught.is_err(),
        "the harness must find the false sold_out of a rollback gate"
    );
}

//! Property test: the gate against a simple sequential model of a SKU.

use std::collections::HashMap;
use std::sync::Arc;

use proptest::prelude::*;

use livehub::inventory::{Sku, SkuDef};
use livehub::protocol::RejectCode;

#[derive(Debug, Clone)]
enum Op {
    Buy {
        user: u8,
        qty: u64,
    },
    /// Release the n-th live reservation (a journal failure).
    Release(usize),
    Restock(u64),
    Withdraw(u64),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => (0u8..6, 1u64..5).prop_map(|(user, qty)| Op::Buy { user, qty }),
        1 => (0usize..8).prop_map(Op::Release),
        1 => (0u64..6).prop_map(Op::Restock),
        1 => (0u64..6).prop_map(Op::Withdraw),
    ]
}

/// The sequential model: plain integers.
#[derive(Debug, Default)]
struct Model {
    left: u64,
    total: u64,
    held: HashMap<u8, u64>,
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn gate_matches_the_sequential_model(stock in 0u64..20, limit in proptest::option::of(1u64..6), ops in proptest::collection::vec(op(), 1..60)) {
        let def = SkuDef { name: "x".into(), price_fen: 100, stock, limit_per_user: limit, opens_at_ms: None, closes_at_ms: None, pay_timeout_s: None };
        let sku = Sku::new(Arc::from("A1"), &def);
        let mut m = Model { left: stock, total: stock, ..Default::default() };
        let mut live: Vec<(u8, u64)> = Vec::new();
        for op in ops {
            match op {
                Op::Buy { user, qty } => {
                    let got = sku.reserve(user as u32, qty, 0);
                    let held = m.held.get(&user).copied().unwrap_or(0);
                    let want = if limit.is_some_and(|l| held + qty > l) {
                        Err((RejectCode::LimitExceeded, m.left))
                    } else if m.left == 0 {
                        Err((RejectCode::SoldOut, 0))
                    } else if m.left < qty {
                        Err((RejectCode::InsufficientStock, m.left))
                    } else {
                        m.left -= qty;
                        *m.held.entry(user).or_default() += qty;
                        live.push((user, qty));
                        Ok(m.left)
                    };
                    prop_assert_eq!(got.map(|r| r.left_after), want);
                }
                Op::Release(i) if !live.is_empty() => {
                    let (user, qty) = live.remove(i % live.len());
                    sku.release(user as u32, qty);
                    m.left += qty;
                    *m.held.get_mut(&user).unwrap() -= qty;
                }
                Op::Release(_) => {}
                Op::Restock(n) => {
                    sku.apply_stock_delta(n as i64, false);
                    m.left += n;
                    m.total += n;
                }
                Op::Withdraw(n) => {
                    let got = sku.reserve_withdrawal(n);
                    if m.left >= n {
                        prop_assert_eq!(got, Ok(m.left - n));
                        sku.apply_stock_delta(-(n as i64), true);
                        m.left -= n;
                        m.total -= n;
                    } else {
                        prop_assert_eq!(got, Err(m.left));
                    }
                }
            }
            // Invariants after every step.
            prop_assert_eq!(sku.left(), m.left);
            prop_assert_eq!(sku.stock_total(), m.total);
            let reserved: u64 = live.iter().map(|&(_, q)| q).sum();
            prop_assert_eq!(reserved + m.left, m.total, "units are conserved");
            if let Some(l) = limit {
                prop_assert!(m.held.values().all(|&h| h <= l));
            }
        }
    }
}

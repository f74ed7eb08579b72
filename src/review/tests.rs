//! The review of a room computed by hand: orders in different minutes, a payment, an expiry,
//! a cancel, a refund, a late payment, clicks, enters and leaves, refusals.

use std::sync::Arc;

use super::*;
use crate::journal::record::{Move, Payment};
use crate::journal::{Apply, AudienceEvent, AudienceKind, Mode, OrderRecord, Record, SkuDef};
use crate::rooms::Rooms;

/// A minute's start.
const M: i64 = 1_700_000_040_000;
const MIN: i64 = MINUTE_MS;

fn sku(id: &str, price_fen: u64, stock: u64, pay_timeout_s: Option<u64>) -> Record {
    Record::Sku {
        room: "r".into(),
        sku: id.into(),
        def: SkuDef {
            name: format!("item {id}"),
            price_fen,
            stock,
            limit_per_user: None,
            opens_at_ms: None,
            closes_at_ms: None,
            pay_timeout_s,
        },
        created: true,
        ts_ms: M - 10 * MIN,
    }
}

#[allow(clippy::too_many_arguments)]
fn order(
    seq: u64,
    number: u64,
    sku: &str,
    user: &str,
    qty: u64,
    price_fen: u64,
    referrer: Option<&str>,
    ts_ms: i64,
    to_pay: bool,
) -> Record {
    Record::Order(Arc::new(OrderRecord {
        seq,
        number,
        room: "r".into(),
        sku: sku.into(),
        user: user.into(),
        req: format!("q{seq}").into(),
        qty,
        price_fen,
        amount_fen: qty * price_fen,
        referrer: referrer.map(Arc::from),
        ts_ms,
        left_after: 0,
        pay_by_ms: to_pay.then_some(ts_ms + MIN),
        hub: None,
        begun: None,
    }))
}

fn mv(order: u64, to: Move, ts_ms: i64) -> Record {
    Record::Move {
        room: "r".into(),
        order,
        to,
        ts_ms,
    }
}

fn payment(id: &str, amount_fen: u64, ts_ms: i64) -> Payment {
    Payment {
        payment_id: id.into(),
        amount_fen,
        paid_at_ms: ts_ms,
    }
}

fn audience(events: Vec<(AudienceKind, &str, i64, Option<&str>)>) -> Record {
    Record::Audience {
        room: "r".into(),
        events: events
            .into_iter()
            .map(|(kind, user, ts_ms, sku)| AudienceEvent {
                kind,
                user: user.into(),
                ts_ms,
                source: (kind == AudienceKind::Enter).then(|| "share".into()),
                referrer: None,
                count: 1,
                sku: sku.map(Into::into),
            })
            .collect::<Vec<_>>()
            .into(),
        ts_ms: M,
    }
}

/// The room's records in journal order.
fn records() -> Vec<Record> {
    use AudienceKind::{Click, Enter, Leave};
    vec![
        Record::Room {
            room: "r".into(),
            title: "Spring sale".into(),
            ts_ms: M - 10 * MIN,
        },
        sku("A", 100, 10, None),
        sku("B", 500, 3, Some(60)),
        sku("C", 1000, 1, None),
        audience(vec![
            (Enter, "u1", M + 1_000, None),
            (Enter, "u2", M + 2_000, None),
            (Click, "u1", M + 3_000, Some("A")),
            (Click, "u2", M + 4_000, Some("B")),
        ]),
        // Minute 0: one order paid on placement, one to pay.
        order(1, 10, "A", "u1", 2, 100, Some("s1"), M + 5_000, false),
        order(2, 11, "B", "u2", 1, 500, Some("s2"), M + 6_000, true),
        Record::Rejections {
            room: "r".into(),
            counts: vec![("sold_out".into(), 2), ("limit_exceeded".into(), 1)],
            ts_ms: M + 7_000,
        },
        // Minute 1: quiet. Minute 2: a payment, two more orders to pay, u1 leaves.
        mv(
            11,
            Move::Paid(payment("p1", 500, M + 2 * MIN)),
            M + 2 * MIN + 1_000,
        ),
        order(
            3,
            12,
            "B",
            "u3",
            1,
            500,
            Some("s1"),
            M + 2 * MIN + 2_000,
            true,
        ),
        order(4, 13, "B", "u1", 1, 500, None, M + 2 * MIN + 3_000, true),
        audience(vec![(Leave, "u1", M + 2 * MIN + 5_000, None)]),
        // Minute 3: an expiry, a cancel, a late payment, a refund of minute 0's payment, two
        // orders paid on placement (the second sells C out).
        Record::Expired {
            room: "r".into(),
            orders: vec![12],
            ts_ms: M + 3 * MIN + 1_000,
        },
        mv(13, Move::Cancelled { by_admin: true }, M + 3 * MIN + 2_000),
        mv(
            12,
            Move::LatePayment(payment("p2", 500, M + 3 * MIN)),
            M + 3 * MIN + 3_000,
        ),
        mv(10, Move::Refunded { restock: true }, M + 3 * MIN + 4_000),
        order(
            5,
            14,
            "A",
            "u4",
            1,
            100,
            Some("s3"),
            M + 3 * MIN + 5_000,
            false,
        ),
        order(6, 15, "C", "u2", 1, 1000, None, M + 3 * MIN + 5_500, false),
        Record::Rejections {
            room: "r".into(),
            counts: vec![("sold_out".into(), 1)],
            ts_ms: M + 3 * MIN + 6_000,
        },
        // Minute 4: u2 leaves, the last activity.
        audience(vec![(Leave, "u2", M + 4 * MIN, None)]),
    ]
}

fn rooms_with(records: &[Record]) -> Rooms {
    let rooms = Rooms::default();
    for r in records {
        rooms.apply(r, Mode::Replay).expect("applies");
    }
    rooms
}

fn row(
    t_ms: i64,
    gmv_fen: u64,
    paid_gmv_fen: u64,
    orders: u64,
    online: u64,
    clicks: u64,
) -> MinuteRow {
    MinuteRow {
        t_ms,
        gmv_fen,
        paid_gmv_fen,
        orders,
        online,
        clicks,
    }
}

/// A SKU row as a tuple: sku, name, sold, paid, gmv_fen, sold_out_at_ms, clicks,
/// click_to_order.
type SkuLine<'a> = (&'a str, &'a str, u64, u64, u64, Option<i64>, u64, f64);

#[test]
fn every_field_is_as_computed_by_hand() {
    let rooms = rooms_with(&records());
    let room = rooms.get("r").unwrap();
    let r = Review::build(&room, &mut Fold::new(false));
    assert_eq!(&*r.room, "r");
    assert_eq!(r.title, "Spring sale");
    assert_eq!((r.from_ms, r.to_ms), (Some(M + 1_000), Some(M + 4 * MIN)));
    assert_eq!(
        r.totals,
        Totals {
            gmv_fen: 2800,
            orders: 6,
            units: 7,
            buyers: 4,
            aov_fen: 466,
            // Placement-paid 200 + 100 + 1000, the notice's 500, less the 200 refunded.
            paid_gmv_fen: 1600,
            paid_orders: 3,
            unpaid_fen: 0,
            expired_fen: 500,
            cancelled_fen: 500,
            refunded_fen: 200,
            late_payments: 1,
            // Ever paid 4 of 4 + 1 expired + 1 cancelled.
            pay_rate: 4.0 / 6.0,
        }
    );
    assert_eq!(
        r.minutes,
        vec![
            // The refund takes minute 0's payment back out of it.
            row(M, 700, 0, 2, 2, 2),
            row(M + MIN, 0, 0, 0, 0, 0),
            row(M + 2 * MIN, 1000, 500, 2, 1, 0),
            row(M + 3 * MIN, 1100, 1100, 2, 0, 0),
            row(M + 4 * MIN, 0, 0, 0, 0, 0),
        ]
    );
    assert_eq!(
        r.minutes.iter().map(|m| m.gmv_fen).sum::<u64>(),
        r.totals.gmv_fen
    );
    assert_eq!(
        r.minutes.iter().map(|m| m.paid_gmv_fen).sum::<u64>(),
        r.totals.paid_gmv_fen
    );
    assert_eq!(
        r.peak_minute,
        Some(PeakMinute {
            t_ms: M + 3 * MIN,
            gmv_fen: 1100
        })
    );
    let skus: Vec<SkuLine> = r
        .skus
        .iter()
        .map(|s| {
            (
                &*s.sku,
                &*s.name,
                s.sold,
                s.paid,
                s.gmv_fen,
                s.sold_out_at_ms,
                s.clicks,
                s.click_to_order,
            )
        })
        .collect();
    assert_eq!(
        skus,
        vec![
            // Refunded with restock: order 10's units are back.
            ("A", "item A", 1, 1, 300, None, 1, 2.0),
            // The expired and the cancelled order gave theirs back, and B is on sale again.
            ("B", "item B", 1, 1, 1500, None, 1, 3.0),
            ("C", "item C", 1, 1, 1000, Some(M + 3 * MIN + 5_500), 0, 0.0),
        ]
    );
    assert_eq!(
        r.funnel,
        Funnel {
            entered: 2,
            clicked: 2,
            ordered: 4,
            paid: 3
        }
    );
    let refs: Vec<(&str, u64, u64)> = r
        .top_referrers
        .iter()
        .map(|x| (&*x.referrer, x.orders, x.gmv_fen))
        .collect();
    assert_eq!(refs, vec![("s1", 2, 700), ("s2", 1, 500), ("s3", 1, 100)]);
    assert_eq!(
        r.rejected,
        [("limit_exceeded".to_owned(), 1), ("sold_out".to_owned(), 3)].into()
    );
    assert_eq!(
        r.payments,
        Payments {
            paid: 3,
            expired: 1,
            cancelled: 1,
            refunded: 1,
            late_payments: 1
        }
    );
    // The JSON has the protocol's fields, and the CSV its series.
    let v = serde_json::to_value(&r).unwrap();
    for k in [
        "room",
        "title",
        "from_ms",
        "to_ms",
        "totals",
        "minutes",
        "peak_minute",
        "skus",
        "funnel",
        "top_referrers",
        "rejected",
        "payments",
    ] {
        assert!(v.get(k).is_some(), "{k}");
    }
    assert_eq!(v["top_referrers"][0]["ref"], "s1");
    let csv = super::csv::minutes(&r.minutes);
    assert_eq!(csv.lines().count(), 6);
    assert_eq!(
        csv.lines().nth(3),
        Some(format!("{},1000,500,2,1,0", M + 2 * MIN).as_str())
    );
}

/// A fold carried on from an earlier build gives the review a fresh fold gives.
#[test]
fn an_incremental_build_equals_a_fresh_one() {
    let all = records();
    let rooms = rooms_with(&all[..9]);
    let room = rooms.get("r").unwrap();
    let mut fold = Fold::new(false);
    let early = Review::build(&room, &mut fold);
    assert_eq!(early.totals.orders, 2);
    for rec in &all[9..] {
        rooms.apply(rec, Mode::Replay).unwrap();
    }
    let carried = Review::build(&room, &mut fold);
    assert_eq!(carried, Review::build(&room, &mut Fold::new(false)));
    assert_eq!(carried.totals.orders, 6);
}

/// A room with nothing yet: no span, no minute, no peak; zeros elsewhere.
#[test]
fn an_empty_room_has_no_minutes() {
    let rooms = rooms_with(&records()[..4]);
    let r = Review::build(&rooms.get("r").unwrap(), &mut Fold::new(false));
    assert_eq!((r.from_ms, r.to_ms, r.peak_minute), (None, None, None));
    assert!(r.minutes.is_empty());
    assert_eq!(r.skus.len(), 3);
    assert_eq!(r.totals.pay_rate, 0.0);
}

/// More sharers than the review lists: the best [`TOP_REFERRERS`], in the dashboard's order.
#[test]
fn the_sharers_are_the_best_hundred() {
    let mut recs = records()[..4].to_vec();
    for i in 0..250u64 {
        // Sharer k brings orders worth (k % 50) + 1 units of A, some tied on GMV.
        let k = i % 125;
        recs.push(order(
            i + 1,
            100 + i,
            "A",
            &format!("u{i}"),
            1,
            (k % 50) + 1,
            Some(&format!("s{k:03}")),
            M + i as i64,
            false,
        ));
    }
    let rooms = rooms_with(&recs);
    let r = Review::build(&rooms.get("r").unwrap(), &mut Fold::new(false));
    assert_eq!(r.top_referrers.len(), TOP_REFERRERS);
    let mut all: Vec<Referrer> = (0..125u64)
        .map(|k| Referrer {
            referrer: format!("s{k:03}").into(),
            orders: 2,
            gmv_fen: 2 * ((k % 50) + 1),
        })
        .collect();
    all.sort_by(rank);
    all.truncate(TOP_REFERRERS);
    assert_eq!(r.top_referrers, all);
}

/// A journal snapshot of the room restores the same review: the orders and moves, the
/// audience's series and the refusal counts are all in it.
#[test]
fn a_journal_snapshot_keeps_the_review() {
    use crate::journal::{Capture, Sink};
    let rooms = rooms_with(&records());
    let want = Review::build(&rooms.get("r").unwrap(), &mut Fold::new(false));
    let mut sink = Sink::in_memory();
    Box::new(rooms.capture_state()).encode(&mut sink);
    let back = Rooms::default();
    back.restore_state(&sink.into_bytes()).unwrap();
    let got = Review::build(&back.get("r").unwrap(), &mut Fold::new(false));
    assert_eq!(got, want);
    assert_eq!(got.minutes[0].online, 2);
    assert_eq!(got.rejected.get("sold_out"), Some(&3));
}

/// The cache hands out the review it built while the room does not change, and builds again
/// after any record of the room, whatever its kind.
#[tokio::test]
async fn the_cache_builds_again_only_when_the_room_changed() {
    let rooms = rooms_with(&records());
    let room = rooms.get("r").unwrap();
    let reviews = Reviews::default();
    let a = reviews.get(&room, false).await.unwrap();
    let b = reviews.get(&room, false).await.unwrap();
    assert!(Arc::ptr_eq(&a, &b), "built once");
    assert_eq!(serde_json::to_vec(&a.review).unwrap(), a.json.to_vec());
    let refused = Record::Rejections {
        room: "r".into(),
        counts: vec![("sold_out".into(), 1)],
        ts_ms: M + 5 * MIN,
    };
    rooms.apply(&refused, Mode::Live).unwrap();
    let c = reviews.get(&room, false).await.unwrap();
    assert!(!Arc::ptr_eq(&a, &c));
    assert_eq!(c.review.rejected.get("sold_out"), Some(&4));
    let retitled = Record::Room {
        room: "r".into(),
        title: "Summer sale".into(),
        ts_ms: M + 5 * MIN,
    };
    rooms.apply(&retitled, Mode::Live).unwrap();
    let d = reviews.get(&room, false).await.unwrap();
    assert_eq!(d.review.title, "Summer sale");
    assert!(Arc::ptr_eq(&d, &reviews.get(&room, false).await.unwrap()));
}

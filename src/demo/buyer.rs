//! One simulated buyer of the demo, from the tap on "buy" to what becomes of the order. An
//! order that must be paid is paid a while later (most buyers), cancelled (a few) or left to
//! expire (some: the hub's expiry timer ends it); now and then a paid order is refunded. A
//! buyer who finds the flash sale sold out waits for its stock to come back, as a `stock`
//! push would show, or looks again later.
//!
//! The times below are life-like; [`super::Plan::human_pace`] scales them.

use std::ops::Range;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rand::Rng;

use super::Stage;
use crate::clock::now_ms;
use crate::hub::moves::{MoveError, PaymentFor};
use crate::inventory::UserRef;
use crate::journal::record::Payment;
use crate::protocol::{Ack, BuyMsg, OrderStatus, RejectCode};

/// Of 100 buyers of an order that must be paid, this many pay it...
const PAY_PER_100: u32 = 80;
/// ...this many cancel it, and the others let it expire.
const CANCEL_PER_100: u32 = 8;
/// A buyer who pays does so this many seconds after the ack: most within seconds, a few near
/// the timeout (the delay is skewed to the start, see [`pay_after`]). One that comes after
/// the order expired is kept by the hub as a late payment, as a real provider's would be.
const PAY_AFTER_S: Range<f64> = 5.0..60.0;
/// A buyer who changes their mind cancels this many seconds after the ack.
const CANCEL_AFTER_S: Range<f64> = 3.0..30.0;
/// Of 100 paid orders, this many are refunded...
const REFUND_PER_100: f64 = 3.0;
/// ...this many seconds after they were paid; half of them put the units back on sale.
const REFUND_AFTER_S: Range<f64> = 20.0..120.0;
/// A waiting buyer taps "buy" again this many seconds after the stock came back.
const REACT_S: Range<f64> = 0.3..3.0;
/// A waiting buyer who heard of no stock looks again this many seconds later.
const LOOK_AGAIN_S: Range<f64> = 10.0..40.0;
/// Times a buyer tries a sold-out sale before giving up.
const TRIES: u32 = 4;
/// Sold-out buyers who wait at once at most; the others give up at once, so that a sale
/// sold out for long never piles up tasks.
pub const MAX_WAITING: usize = 300;

/// Buys `msg` for `user`, and plays out what the buyer does then.
pub(super) async fn shop(stage: Arc<Stage>, user: UserRef, mut msg: BuyMsg) {
    let mut tries = 0;
    loop {
        let t0 = Instant::now();
        let ack = stage.hub.buy(&stage.room, &user, &msg).await;
        stage
            .room
            .live
            .record_latency(t0.elapsed().as_micros() as u64);
        if ack.ok {
            return after_order(&stage, &user, &ack).await;
        }
        tries += 1;
        if ack.error != Some(RejectCode::SoldOut) || tries >= TRIES || !wait_for_stock(&stage).await
        {
            return;
        }
        msg.req = stage.next_req();
    }
}

/// What the buyer of an order does with it.
enum Fate {
    Pays(Duration),
    Cancels(Duration),
    LetsItExpire,
}

async fn after_order(stage: &Stage, user: &UserRef, ack: &Ack) {
    let (Some(order), Some(amount_fen)) = (ack.order.as_deref(), ack.amount_fen) else {
        return;
    };
    let paid = match ack.status {
        Some(OrderStatus::Paid) => true,
        Some(OrderStatus::Unpaid) => match fate(stage.plan.human_pace) {
            Fate::Pays(after) => pause(stage, after).await && pay(stage, order, amount_fen).await,
            Fate::Cancels(after) => {
                if pause(stage, after).await {
                    cancel(stage, user, order).await;
                }
                false
            }
            Fate::LetsItExpire => false,
        },
        _ => false,
    };
    if !paid {
        return;
    }
    if let Some((after, restock)) = refund(stage.plan.human_pace) {
        if pause(stage, after).await {
            if let Err(e) = stage.hub.refund(&stage.room, order, restock).await {
                tracing::debug!(room = %stage.room.id, order, error = %e, "demo refund refused");
            }
        }
    }
}

/// Pays `order` as the payment provider's notice would. The demo runs inside the hub's
/// process, so it calls [`crate::hub::Hub::pay`] directly, with a notice's content: what
/// `POST /api/payments` ([`crate::api::payments::payment`]) calls once it has checked the
/// notice's signature. Signing a notice only to check it again would show nothing more.
async fn pay(stage: &Stage, order: &str, amount_fen: u64) -> bool {
    let payment = Payment {
        payment_id: format!("demo-pay-{order}").into(),
        amount_fen,
        paid_at_ms: now_ms(),
    };
    let notice = PaymentFor {
        room: &stage.room.id,
        order,
        payment,
    };
    match stage.hub.pay(notice).await {
        Ok(_) => true,
        Err(MoveError::Late(status)) => {
            tracing::debug!(room = %stage.room.id, order, status = status.as_str(), "demo payment came late");
            false
        }
        Err(e) => {
            tracing::debug!(room = %stage.room.id, order, error = %e, "demo payment refused");
            false
        }
    }
}

async fn cancel(stage: &Stage, user: &UserRef, order: &str) {
    if let Err(e) = stage.hub.cancel(&stage.room, order, Some(&user.id)).await {
        // A cancel that lost the race with the expiry timer, typically.
        tracing::debug!(room = %stage.room.id, order, error = %e, "demo cancel refused");
    }
}

/// Waits, as a sold-out buyer, until the stock comes back (and the buyer reacts) or until
/// the buyer looks again. `false`: give up (too many wait already, or the hub shuts down).
async fn wait_for_stock(stage: &Stage) -> bool {
    let Some(_waiting) = Waiting::join(&stage.waiting) else {
        return false;
    };
    let pace = stage.plan.human_pace;
    let (look_again, react) = {
        let mut rng = rand::rng();
        (
            human(&mut rng, LOOK_AGAIN_S, pace),
            human(&mut rng, REACT_S, pace),
        )
    };
    tokio::select! {
        _ = stage.shutdown.cancelled() => false,
        _ = stage.restocked.notified() => pause(stage, react).await,
        _ = tokio::time::sleep(look_again) => true,
    }
}

/// Sleeps `d`; `false` if the hub shuts down first.
async fn pause(stage: &Stage, d: Duration) -> bool {
    tokio::select! {
        _ = stage.shutdown.cancelled() => false,
        _ = tokio::time::sleep(d) => true,
    }
}

/// One of the buyers waiting for stock; leaves the count when dropped.
struct Waiting<'a>(&'a AtomicUsize);

impl<'a> Waiting<'a> {
    fn join(count: &'a AtomicUsize) -> Option<Self> {
        if count.fetch_add(1, Ordering::AcqRel) >= MAX_WAITING {
            count.fetch_sub(1, Ordering::AcqRel);
            return None;
        }
        Some(Waiting(count))
    }
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

fn fate(pace: f64) -> Fate {
    let mut rng = rand::rng();
    let roll = rng.random_range(0..100);
    if roll < PAY_PER_100 {
        Fate::Pays(pay_after(&mut rng, pace))
    } else if roll < PAY_PER_100 + CANCEL_PER_100 {
        Fate::Cancels(human(&mut rng, CANCEL_AFTER_S, pace))
    } else {
        Fate::LetsItExpire
    }
}

/// When a paying buyer pays: skewed to the start of [`PAY_AFTER_S`] (a square of a uniform
/// draw, whose median is a quarter of the way in), as most buyers pay at once and a few
/// dither until the timeout.
fn pay_after(rng: &mut impl Rng, pace: f64) -> Duration {
    let u: f64 = rng.random();
    let s = PAY_AFTER_S.start + (PAY_AFTER_S.end - PAY_AFTER_S.start) * u * u;
    Duration::from_secs_f64(s * pace)
}

/// Whether a paid order is refunded: when, and whether with restock.
fn refund(pace: f64) -> Option<(Duration, bool)> {
    let mut rng = rand::rng();
    rng.random_bool(REFUND_PER_100 / 100.0)
        .then(|| (human(&mut rng, REFUND_AFTER_S, pace), rng.random_bool(0.5)))
}

/// A uniform draw from `seconds`, scaled by `pace`.
fn human(rng: &mut impl Rng, seconds: Range<f64>, pace: f64) -> Duration {
    Duration::from_secs_f64(rng.random_range(seconds) * pace)
}

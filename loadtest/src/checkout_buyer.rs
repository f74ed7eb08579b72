//! One task per `checkout` buyer (orders that must be paid). The buyer buys when the sale opens,
//! then, as its drawn fate says, pays with a signed notice, cancels over its socket, or lets
//! the order expire. A sold-out buyer waits for `stock` pushes that show units given back and
//! buys again, a bounded number of times, and pays for what it gets. A few buyers pay late,
//! twice or a second time on purpose. Every wait ends by the plan's end at the latest.

use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use tokio::sync::watch;
use tokio_tungstenite::tungstenite::{self, Message};

use crate::buyer::{close, Conn, Frame};
use crate::ctx::Ctx;
use crate::net::Ws;
use crate::paid_checks::{CancelLog, Placed};
use crate::pay::{Answer, PayKind, Payer, PaymentLog};
use crate::record::{Outcome, Recorder};

/// On a `stock` push that shows `left` units, each waiting buyer buys again with probability
/// min(1, RETRY_FACTOR × left ÷ waiting buyers): the units given back are asked for by a few
/// times as many buyers, not by every waiting buyer at once.
const RETRY_FACTOR: f64 = 4.0;
/// How long after `pay_by_ms` a buyer that lets its order expire waits for the `expired` push
/// before it takes the order as expired all the same (the contract says within 1 s).
pub const EXPIRY_WAIT: Duration = Duration::from_secs(3);

/// What every buyer of a run does.
pub struct Plan {
    pub sku: String,
    pub price_fen: u64,
    pub pay_timeout: Duration,
    pub pay_share: f64,
    pub cancel_share: f64,
    pub delay_min: Duration,
    pub delay_max: Duration,
    /// Most late payments of each kind, duplicate notices and second payments.
    pub after_expiry: u64,
    pub after_cancel: u64,
    pub duplicates: u64,
    pub seconds: u64,
    pub retries: u32,
    /// Sold-out buyers stop waiting for units then.
    pub retry_until: Instant,
    /// Nothing is sent from then on, and every wait ends.
    pub end: Instant,
    pub seed: u64,
    pub req_prefix: String,
    pub payer: Payer,
    /// Buy on the `sale` open push (else on the go).
    pub use_push: bool,
}

/// A buyer's lot, drawn from the run's seed.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Fate {
    /// Pay this long after the ack.
    Pay(Duration),
    /// Cancel this long after the ack.
    Cancel(Duration),
    /// Neither: the order expires.
    Expire,
}

/// splitmix64: a small deterministic generator, one per buyer, so that a run's choices are
/// the same for the same seed.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64, idx: usize) -> Rng {
        Rng(seed ^ (idx as u64 + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15))
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in [0, 1).
    pub fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// Draws what a buyer does with an order: a buyer of units given back always pays.
pub fn draw_fate(
    rng: &mut Rng,
    pay_share: f64,
    cancel_share: f64,
    min: Duration,
    max: Duration,
    resold: bool,
) -> Fate {
    let delay = min + max.saturating_sub(min).mul_f64(rng.unit());
    let x = rng.unit();
    if resold || x < pay_share {
        Fate::Pay(delay)
    } else if x < pay_share + cancel_share {
        Fate::Cancel(delay)
    } else {
        Fate::Expire
    }
}

/// The n-th of at most `limit` (None once they are all taken).
fn take(counter: &AtomicU64, limit: u64) -> Option<u64> {
    let n = counter.fetch_add(1, Ordering::Relaxed);
    (n < limit).then_some(n)
}

/// Figures every buyer adds to; the run's coordinator reads them.
#[derive(Default)]
pub struct Shared {
    /// When the open call was sent.
    pub t_open: OnceLock<Instant>,
    /// When each buyer saw the open push, µs after the open call was sent.
    pub push_us: Mutex<Vec<u64>>,
    pub missed_push: AtomicU64,
    /// Buyers whose first buy is not answered yet.
    pub first_pending: AtomicI64,
    /// Buys sent and not answered.
    pub in_flight: AtomicI64,
    /// Ok orders whose buyer has not yet seen them end (paid, cancelled, expired).
    pub unsettled: AtomicI64,
    /// Sold-out buyers waiting for units.
    pub waiting: AtomicI64,
    /// Buyers done with their orders (they keep their sockets until the end).
    pub done: AtomicUsize,
    /// Buys sent again after a sold-out.
    pub rebuys: AtomicU64,
    /// Some buyer's wait or move was cut off by the plan's end.
    pub cut: AtomicBool,
    /// Unix ms by which every order whose end its buyer did not see must have ended (its
    /// `pay_by_ms`, or a buy without an answer's time plus the pay timeout); 0 for none.
    pub settle_by_ms: AtomicI64,
    taken_after_expiry: AtomicU64,
    taken_after_cancel: AtomicU64,
    taken_duplicate: AtomicU64,
    taken_second: AtomicU64,
    /// First notice sent and last answer received.
    pub pay_span: Mutex<Option<(Instant, Instant)>>,
}

/// What one buyer did and saw.
#[derive(Default)]
pub struct BuyerOut {
    /// Ok acks, with the attempt that got each (0: the first buy).
    pub placed: Vec<(Placed, u32)>,
    /// (user, req) of buys never answered.
    pub timed_out: Vec<(String, String)>,
    pub sent: u64,
    pub payments: Vec<PaymentLog>,
    pub cancels: Vec<CancelLog>,
    /// (order, status) of `order` pushes.
    pub pushes: Vec<(String, String)>,
    /// When the first buy was answered, and whether it was ok.
    pub first: Option<(Instant, bool)>,
    /// Orders whose end this buyer did not see (no 200, no ok cancel, no `expired` push).
    pub unsettled_pay_by_ms: Vec<i64>,
    /// When this buyer last sent a buy (unix ms).
    pub last_buy_ms: Option<i64>,
}

enum Next {
    Frame(Box<Frame>, Instant),
    Timeout,
    Closed,
}

enum Bought {
    Ok(Placed, Instant),
    Rejected(String),
    NoAnswer,
}

/// The recorders a buyer reports to.
#[derive(Clone)]
pub struct Recorders {
    pub buys: Arc<Recorder>,
    pub payments: Arc<Recorder>,
}

/// The signals a buyer watches.
pub struct Signals {
    /// The open, when no push came (or the buy trigger without push).
    pub go: watch::Receiver<bool>,
    /// Sold-out buyers stop waiting for units.
    pub stop_waiting: watch::Receiver<bool>,
    /// Everyone is done: close the sockets.
    pub over: watch::Receiver<bool>,
}

struct Buyer {
    ctx: Arc<Ctx>,
    plan: Arc<Plan>,
    shared: Arc<Shared>,
    rec: Recorders,
    ws: Ws,
    idx: usize,
    user: Arc<str>,
    alive: bool,
    rng: Rng,
    payment_n: u32,
    out: BuyerOut,
}

/// Runs one buyer to the end of the sale; its socket stays open until `over`.
pub async fn run(
    ctx: Arc<Ctx>,
    conn: Conn,
    plan: Arc<Plan>,
    shared: Arc<Shared>,
    rec: Recorders,
    mut sig: Signals,
) -> BuyerOut {
    let Conn { ws, idx, user } = conn;
    let mut b = Buyer {
        rng: Rng::new(plan.seed, idx),
        ctx,
        plan,
        shared,
        rec,
        ws,
        idx,
        user,
        alive: true,
        payment_n: 0,
        out: BuyerOut::default(),
    };
    b.wait_open(&mut sig.go).await;
    let mut attempt = 0;
    let mut bought = if b.alive && Instant::now() < b.plan.end {
        b.buy(attempt).await
    } else {
        Bought::NoAnswer
    };
    b.out.first = match &bought {
        Bought::Ok(_, at) => Some((*at, true)),
        Bought::Rejected(_) => Some((Instant::now(), false)),
        Bought::NoAnswer => None,
    };
    b.shared.first_pending.fetch_sub(1, Ordering::Relaxed);
    loop {
        match bought {
            Bought::Ok(placed, at) => {
                b.settle(placed, at, attempt).await;
                break;
            }
            Bought::Rejected(code)
                if matches!(code.as_str(), "sold_out" | "insufficient_stock")
                    && attempt < b.plan.retries =>
            {
                if !b.wait_for_units(&mut sig.stop_waiting).await {
                    break;
                }
                attempt += 1;
                b.shared.rebuys.fetch_add(1, Ordering::Relaxed);
                bought = b.buy(attempt).await;
            }
            _ => break,
        }
    }
    b.shared.done.fetch_add(1, Ordering::Relaxed);
    b.hold(&mut sig.over).await;
    if b.alive {
        close(&b.ctx, b.ws).await;
    } else {
        b.ctx.conn_closed();
    }
    b.out
}

impl Buyer {
    /// Reads one message: `None` to keep reading, else what came. Records `order` pushes.
    fn handle(&mut self, msg: Option<Result<Message, tungstenite::Error>>) -> Option<Next> {
        let text = match msg {
            Some(Ok(Message::Text(t))) => t,
            Some(Ok(Message::Close(c))) => {
                self.ctx.disconnect(&format!(
                    "server closed: {}",
                    c.map(|c| format!("{} {}", u16::from(c.code), c.reason))
                        .unwrap_or_else(|| "no code".into())
                ));
                self.alive = false;
                return Some(Next::Closed);
            }
            Some(Ok(_)) => return None,
            Some(Err(e)) => {
                self.ctx.disconnect(&format!("broken: {e}"));
                self.alive = false;
                return Some(Next::Closed);
            }
            None => {
                self.ctx.disconnect("closed without a close frame");
                self.alive = false;
                return Some(Next::Closed);
            }
        };
        let at = Instant::now();
        let f: Frame = match serde_json::from_str(&text) {
            Ok(f) => f,
            Err(_) => {
                self.ctx
                    .anomaly(format!("not a frame: {:.120}", text.as_str()));
                return None;
            }
        };
        if f.op == "order" {
            match (&f.order, &f.status) {
                (Some(o), Some(s)) => self.out.pushes.push((o.clone(), s.clone())),
                _ => self.ctx.anomaly(format!(
                    "order push without order/status: {:.160}",
                    text.as_str()
                )),
            }
        }
        if f.op == "error" {
            self.ctx
                .anomaly(format!("error frame: {:.160}", text.as_str()));
        }
        Some(Next::Frame(Box::new(f), at))
    }

    async fn next(&mut self, until: Instant) -> Next {
        if !self.alive {
            return Next::Closed;
        }
        loop {
            tokio::select! {
                msg = self.ws.next() => {
                    if let Some(n) = self.handle(msg) {
                        return n;
                    }
                }
                _ = tokio::time::sleep_until(until.into()) => return Next::Timeout,
            }
        }
    }

    /// Reads pushes until `until`.
    async fn idle_until(&mut self, until: Instant) {
        while let Next::Frame(..) = self.next(until).await {}
    }

    /// The ack (or error frame) for `req`, if it comes by `until`.
    async fn wait_answer(&mut self, req: &str, until: Instant) -> Option<(Box<Frame>, Instant)> {
        loop {
            match self.next(until).await {
                Next::Frame(f, at)
                    if (f.op == "ack" || f.op == "error") && f.req.as_deref() == Some(req) =>
                {
                    return Some((f, at))
                }
                Next::Frame(f, _) if f.op == "ack" => self.ctx.anomaly(format!(
                    "ack for a req not sent: {:?} (waiting for {req})",
                    f.req
                )),
                Next::Frame(..) => {}
                Next::Timeout | Next::Closed => return None,
            }
        }
    }

    /// Whether the push `(order, status)` came (or comes by `until`).
    async fn wait_push(&mut self, order: &str, status: &str, until: Instant) -> bool {
        let seen = |out: &BuyerOut| out.pushes.iter().any(|(o, s)| o == order && s == status);
        if seen(&self.out) {
            return true;
        }
        loop {
            match self.next(until).await {
                Next::Frame(f, _) if f.op == "order" => {
                    if seen(&self.out) {
                        return true;
                    }
                }
                Next::Frame(..) => {}
                Next::Timeout | Next::Closed => return false,
            }
        }
    }

    async fn send(&mut self, text: String) -> bool {
        if !self.alive {
            return false;
        }
        if self.ws.send(Message::text(text)).await.is_err() {
            self.ctx.disconnect("send failed");
            self.alive = false;
            return false;
        }
        true
    }

    /// Waits for the sale to open: the `sale` open push (with push triggering), or the go.
    async fn wait_open(&mut self, go: &mut watch::Receiver<bool>) {
        if *go.borrow_and_update() {
            return;
        }
        let end = self.plan.end;
        while self.alive {
            tokio::select! {
                msg = self.ws.next() => {
                    if let Some(Next::Frame(f, _)) = self.handle(msg) {
                        if f.op == "sale" && f.sku.as_deref() == Some(self.plan.sku.as_str()) && f.state.as_deref() == Some("open") {
                            if let Some(t0) = self.shared.t_open.get() {
                                self.shared.push_us.lock().unwrap().push(t0.elapsed().as_micros() as u64);
                            }
                            if self.plan.use_push {
                                return;
                            }
                        }
                    }
                }
                changed = go.changed() => {
                    if changed.is_err() || *go.borrow() {
                        if self.plan.use_push && changed.is_ok() {
                            self.shared.missed_push.fetch_add(1, Ordering::Relaxed);
                        }
                        return;
                    }
                }
                _ = tokio::time::sleep_until(end.into()) => {
                    self.shared.cut.store(true, Ordering::Relaxed);
                    return;
                }
            }
        }
    }

    /// One buy of one unit, and its answer.
    async fn buy(&mut self, attempt: u32) -> Bought {
        let req = format!("{}-{}-{attempt}", self.plan.req_prefix, self.idx);
        let frame = format!(
            r#"{{"op":"buy","req":"{req}","sku":"{}","qty":1}}"#,
            self.plan.sku
        );
        self.shared.in_flight.fetch_add(1, Ordering::Relaxed);
        self.out.sent += 1;
        self.out.last_buy_ms = Some(crate::net::now_ms());
        let t = Instant::now();
        let answer = if self.send(frame).await {
            let until = (t + self.ctx.common.ack_timeout).min(self.plan.end);
            self.wait_answer(&req, until).await
        } else {
            None
        };
        let bought = match answer {
            None => {
                self.out.timed_out.push((self.user.to_string(), req));
                let by = crate::net::now_ms() + self.plan.pay_timeout.as_millis() as i64;
                self.shared.settle_by_ms.fetch_max(by, Ordering::Relaxed);
                Bought::NoAnswer
            }
            Some((f, at)) => self.judge(*f, &req, t, at),
        };
        // An ok order is counted unsettled before the buy stops counting as in flight, so the
        // coordinator never sees a moment with neither.
        self.shared.in_flight.fetch_sub(1, Ordering::Relaxed);
        bought
    }

    fn judge(&mut self, f: Frame, req: &str, sent: Instant, at: Instant) -> Bought {
        let lat = at.saturating_duration_since(sent).as_micros() as u64;
        if f.op == "error" {
            self.rec
                .buys
                .record(at, lat, Outcome::Rejected("error_frame"));
            return Bought::Rejected("error_frame".into());
        }
        if f.ok != Some(true) {
            let code = f.error.unwrap_or_else(|| "(no error code)".into());
            self.rec.buys.record(at, lat, Outcome::Rejected(&code));
            return Bought::Rejected(code);
        }
        self.rec.buys.record(at, lat, Outcome::Ok);
        let Some(order) = f.order else {
            self.ctx
                .anomaly(format!("ok ack without an order id (req {req})"));
            return Bought::Rejected("ok_without_order".into());
        };
        let amount = f.amount_fen.unwrap_or(0);
        if f.sku.as_deref() != Some(self.plan.sku.as_str())
            || f.qty != Some(1)
            || amount != self.plan.price_fen
        {
            self.ctx.anomaly(format!(
                "ack for {req}: sku/qty/amount {:?}/{:?}/{amount}, sent {}/1/{}",
                f.sku, f.qty, self.plan.sku, self.plan.price_fen
            ));
        }
        self.shared.unsettled.fetch_add(1, Ordering::Relaxed);
        Bought::Ok(
            Placed {
                order,
                sku: self.plan.sku.clone(),
                qty: 1,
                amount_fen: amount,
                user: self.user.to_string(),
                req: req.to_owned(),
                status: f.status,
                pay_by_ms: f.pay_by_ms,
            },
            at,
        )
    }

    fn payment_id(&mut self) -> String {
        self.payment_n += 1;
        format!("{}-{}-p{}", self.plan.req_prefix, self.idx, self.payment_n)
    }

    fn log_payment(&mut self, placed: &Placed, payment_id: &str, kind: PayKind, a: Answer) {
        let now = Instant::now();
        let sent = now - Duration::from_micros(a.latency_us);
        {
            let mut span = self.shared.pay_span.lock().unwrap();
            *span = Some(match *span {
                None => (sent, now),
                Some((s, e)) => (s.min(sent), e.max(now)),
            });
        }
        let outcome = if a.is_paid() {
            Outcome::Ok
        } else if a.http == 0 {
            Outcome::Rejected("no_answer")
        } else {
            Outcome::Rejected(&a.code)
        };
        self.rec.payments.record(now, a.latency_us, outcome);
        self.out.payments.push(PaymentLog {
            order: placed.order.clone(),
            payment_id: payment_id.to_owned(),
            amount_fen: placed.amount_fen,
            kind,
            answer: a,
        });
    }

    async fn pay(&mut self, placed: &Placed, payment_id: &str, kind: PayKind) -> Answer {
        let a = self
            .plan
            .payer
            .notify(&placed.order, payment_id, placed.amount_fen)
            .await;
        self.log_payment(placed, payment_id, kind, a.clone());
        a
    }

    /// Does with an order what the buyer's fate says, until the buyer sees it end.
    async fn settle(&mut self, placed: Placed, acked: Instant, attempt: u32) {
        let p = self.plan.clone();
        let fate = draw_fate(
            &mut self.rng,
            p.pay_share,
            p.cancel_share,
            p.delay_min,
            p.delay_max,
            attempt > 0,
        );
        let mut seen_end = false;
        match fate {
            Fate::Pay(d) => {
                self.idle_until((acked + d).min(p.end)).await;
                if Instant::now() >= p.end {
                    self.shared.cut.store(true, Ordering::Relaxed);
                } else {
                    let kind = if attempt > 0 {
                        PayKind::Resold
                    } else {
                        PayKind::OnTime
                    };
                    let id = self.payment_id();
                    let paid = match take(&self.shared.taken_duplicate, p.duplicates) {
                        // Every other repeat goes out together with the first notice, so that the
                        // two race inside the server.
                        Some(n) if n % 2 == 0 => {
                            let (a, b) = tokio::join!(
                                p.payer.notify(&placed.order, &id, placed.amount_fen),
                                p.payer.notify(&placed.order, &id, placed.amount_fen)
                            );
                            let paid = a.is_paid() || b.is_paid();
                            self.log_payment(&placed, &id, kind, a);
                            self.log_payment(&placed, &id, PayKind::Duplicate, b);
                            paid
                        }
                        Some(_) => {
                            let paid = self.pay(&placed, &id, kind).await.is_paid();
                            if paid {
                                self.pay(&placed, &id, PayKind::Duplicate).await;
                            }
                            paid
                        }
                        None => self.pay(&placed, &id, kind).await.is_paid(),
                    };
                    if paid && take(&self.shared.taken_second, p.seconds).is_some() {
                        let other = self.payment_id();
                        self.pay(&placed, &other, PayKind::Second).await;
                    }
                    seen_end = paid;
                }
            }
            Fate::Cancel(d) => {
                self.idle_until((acked + d).min(p.end)).await;
                if Instant::now() >= p.end {
                    self.shared.cut.store(true, Ordering::Relaxed);
                } else if let Some(ok) = self.cancel(&placed, attempt).await {
                    seen_end = ok;
                    if ok && take(&self.shared.taken_after_cancel, p.after_cancel).is_some() {
                        let id = self.payment_id();
                        self.pay(&placed, &id, PayKind::AfterCancel).await;
                    }
                }
            }
            Fate::Expire => {
                let pay_by = placed.pay_by_ms.unwrap_or_else(crate::net::now_ms);
                let wait_ms = (pay_by - crate::net::now_ms()).max(0) as u64;
                let until =
                    (Instant::now() + Duration::from_millis(wait_ms) + EXPIRY_WAIT).min(p.end);
                seen_end = self.wait_push(&placed.order, "expired", until).await;
                if Instant::now() < p.end
                    && take(&self.shared.taken_after_expiry, p.after_expiry).is_some()
                {
                    let id = self.payment_id();
                    self.pay(&placed, &id, PayKind::AfterExpiry).await;
                }
            }
        }
        if !seen_end {
            if let Some(pb) = placed.pay_by_ms {
                self.out.unsettled_pay_by_ms.push(pb);
                self.shared.settle_by_ms.fetch_max(pb, Ordering::Relaxed);
            }
        }
        self.out.placed.push((placed, attempt));
        self.shared.unsettled.fetch_sub(1, Ordering::Relaxed);
    }

    /// Cancels over the socket; whether it was cancelled (`None` when no answer came).
    async fn cancel(&mut self, placed: &Placed, attempt: u32) -> Option<bool> {
        let req = format!("{}-{}-c{attempt}", self.plan.req_prefix, self.idx);
        let frame =
            serde_json::json!({"op": "cancel", "req": req, "order": placed.order}).to_string();
        let t = Instant::now();
        let answer = if self.send(frame).await {
            let until = (t + self.ctx.common.ack_timeout).min(self.plan.end);
            self.wait_answer(&req, until).await
        } else {
            None
        };
        let (ok, code) = match answer {
            None => (None, "no answer".to_owned()),
            Some((f, _)) => {
                let ok = f.ok == Some(true);
                if f.order.as_deref() != Some(placed.order.as_str()) {
                    self.ctx.anomaly(format!(
                        "cancel of {}: answer names order {:?}",
                        placed.order, f.order
                    ));
                }
                let code = if ok { f.status } else { f.error };
                (Some(ok), code.unwrap_or_else(|| "(none)".into()))
            }
        };
        self.out.cancels.push(CancelLog {
            order: placed.order.clone(),
            ok: ok == Some(true),
            code,
        });
        ok
    }

    /// Waits, sold out, for a `stock` push with units; whether to buy again.
    async fn wait_for_units(&mut self, stop: &mut watch::Receiver<bool>) -> bool {
        self.shared.waiting.fetch_add(1, Ordering::Relaxed);
        let until = self.plan.retry_until.min(self.plan.end);
        let again = loop {
            if *stop.borrow_and_update() || !self.alive {
                break false;
            }
            tokio::select! {
                msg = self.ws.next() => match self.handle(msg) {
                    Some(Next::Frame(f, _)) if f.op == "stock" && f.sku.as_deref() == Some(self.plan.sku.as_str()) => {
                        let left = f.left.unwrap_or(0);
                        if left > 0 {
                            let waiting = self.shared.waiting.load(Ordering::Relaxed).max(1) as f64;
                            if self.rng.unit() < (RETRY_FACTOR * left as f64 / waiting).min(1.0) {
                                break true;
                            }
                        }
                    }
                    Some(Next::Closed) => break false,
                    _ => {}
                },
                changed = stop.changed() => if changed.is_err() { break false },
                _ = tokio::time::sleep_until(until.into()) => break false,
            }
        };
        self.shared.waiting.fetch_sub(1, Ordering::Relaxed);
        again
    }

    /// Keeps the socket (and reads its pushes) until everyone is done.
    async fn hold(&mut self, over: &mut watch::Receiver<bool>) {
        let end = self.plan.end;
        while self.alive && !*over.borrow_and_update() {
            tokio::select! {
                msg = self.ws.next() => { self.handle(msg); }
                changed = over.changed() => if changed.is_err() { return },
                _ = tokio::time::sleep_until(end.into()) => return,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fates_follow_the_shares() {
        let (min, max) = (Duration::from_secs(1), Duration::from_secs(8));
        let (mut pay, mut cancel, mut expire) = (0, 0, 0);
        for idx in 0..10_000 {
            let mut rng = Rng::new(21, idx);
            match draw_fate(&mut rng, 0.6, 0.1, min, max, false) {
                Fate::Pay(d) | Fate::Cancel(d) if d < min || d > max => panic!("{d:?}"),
                Fate::Pay(_) => pay += 1,
                Fate::Cancel(_) => cancel += 1,
                Fate::Expire => expire += 1,
            }
        }
        assert!((5_700..6_300).contains(&pay), "{pay}");
        assert!((850..1_150).contains(&cancel), "{cancel}");
        assert!((2_700..3_300).contains(&expire), "{expire}");
        // Buyers of units given back pay.
        let mut rng = Rng::new(21, 1);
        assert!(matches!(
            draw_fate(&mut rng, 0.0, 0.0, min, max, true),
            Fate::Pay(_)
        ));
    }

    #[test]
    fn the_same_seed_draws_the_same() {
        let draw = |seed| {
            let mut r = Rng::new(seed, 7);
            (r.next_u64(), r.unit())
        };
        assert_eq!(draw(1), draw(1));
        assert_ne!(draw(1), draw(2));
        let mut r = Rng::new(0, 0);
        assert!((0..1000).map(|_| r.unit()).all(|x| (0.0..1.0).contains(&x)));
    }

    #[test]
    fn tickets_run_out() {
        let c = AtomicU64::new(0);
        assert_eq!(take(&c, 2), Some(0));
        assert_eq!(take(&c, 2), Some(1));
        assert_eq!(take(&c, 2), None);
        assert_eq!(take(&AtomicU64::new(0), 0), None);
    }
}

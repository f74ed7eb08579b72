//! The buy path, from a decoded `buy` frame to its ack: idempotency
//! ([`crate::rooms::requests::Requests::begin`]) → admission
//! ([`super::HubOptions::max_pending_buys`]) → the inventory gate ([`LocalGate`]) → the journal (group
//! commit; the order is durable once its batch is fsynced) → the ack. A buy the journal refuses
//! gives its stock back. Fleet mode decides in Redis instead ([`crate::fleet::buy`]).

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::task::{Context, Poll};

use tokio::sync::oneshot::{self, error::RecvError};

use super::{GateKind, Hub};
use crate::clock::now_ms;
use crate::inventory::{BuyRequest, LocalGate, Reservation, Sku, UserRef};
use crate::journal::{JournalError, OrderRecord, Record, Ticket};
use crate::protocol::{Ack, BuyMsg, OrderStatus, RejectCode};
use crate::rooms::requests::Begin;
use crate::rooms::room::Room;

impl Hub {
    /// Decides one buy and answers it. The ack is `ok` only once the order is durable.
    pub async fn buy(&self, room: &Arc<Room>, user: &UserRef, msg: &BuyMsg) -> Ack {
        if let GateKind::Fleet(fleet) = &self.inner.gate {
            return self.buy_in_fleet(fleet, room, user, msg).await;
        }
        match room.requests.begin(&user.id, &msg.req).await {
            Begin::Done(order) => counted_ok(order_ack(&order, &msg.req, room)),
            Begin::Fresh(req, ticket) => {
                match self.decide_fresh(room, user, msg, req, ticket, now_ms()) {
                    Started::Answered(ack) => ack,
                    Started::Journaling(j) => j.await,
                }
            }
        }
    }

    /// [`Hub::buy`] decided as of `at_ms` rather than the hub's clock, on the embedded gate:
    /// the same idempotency, gate, journal and apply, with the order's `ts_ms` (and its
    /// `pay_by_ms`) in the past. Only for the demo's earlier stream ([`crate::demo::earlier`]),
    /// seeded before the hub serves; every real buy is timed by the hub's clock.
    pub(crate) async fn buy_as_of(
        &self,
        room: &Arc<Room>,
        user: &UserRef,
        msg: &BuyMsg,
        at_ms: i64,
    ) -> Ack {
        if self.fleet().is_some() {
            return Ack::rejected(&msg.req, RejectCode::Unavailable, None, None);
        }
        match room.requests.begin(&user.id, &msg.req).await {
            Begin::Done(order) => order_ack(&order, &msg.req, room),
            Begin::Fresh(req, ticket) => {
                match self.decide_fresh(room, user, msg, req, ticket, at_ms) {
                    Started::Answered(ack) => ack,
                    Started::Journaling(j) => j.await,
                }
            }
        }
    }

    /// [`Hub::buy`] without waiting, for the buyer's task: the answer now (a repeated `req`,
    /// any refusal), or the order on its way to the journal. `None` when the buy needs the
    /// general path, [`Hub::buy`]: in fleet mode, or while another connection decides the same
    /// `req`. Nothing is boxed or spawned for the common cases.
    pub fn start_buy(&self, room: &Arc<Room>, user: &UserRef, msg: &BuyMsg) -> Option<Started> {
        if !matches!(self.inner.gate, GateKind::Local(_)) {
            return None;
        }
        Some(match room.requests.try_begin(&user.id, &msg.req)? {
            Begin::Done(order) => Started::Answered(counted_ok(order_ack(&order, &msg.req, room))),
            Begin::Fresh(req, ticket) => self.decide_fresh(room, user, msg, req, ticket, now_ms()),
        })
    }

    /// Admission, the embedded gate and the journal's queue, for a request this call owns,
    /// decided at `now` (Unix ms).
    fn decide_fresh(
        &self,
        room: &Arc<Room>,
        user: &UserRef,
        msg: &BuyMsg,
        req: Arc<str>,
        ticket: Ticket,
        now: i64,
    ) -> Started {
        let Some(admitted) = self.admit() else {
            room.requests.end(&user.id, &msg.req);
            metrics::counter!("livehub_buys_shed_total").increment(1);
            return Started::Answered(self.rejected_buy(room, msg, RejectCode::Unavailable));
        };
        let buy = BuyRequest {
            user,
            sku: &msg.sku,
            qty: msg.qty,
            now_ms: now,
        };
        let reservation = match LocalGate::decide(room.skus.get(&msg.sku), buy) {
            Ok(r) => {
                if r.left_after == 0 {
                    room.feeds.notify_sale_changed();
                }
                r
            }
            Err(rej) => {
                room.requests.end(&user.id, &msg.req);
                return Started::Answered(
                    self.rejected(room, &msg.req, rej.code, rej.sku, rej.left),
                );
            }
        };
        let order = OrderRecord {
            seq: 0,
            number: 0,
            room: room.id.clone(),
            sku: reservation.sku.id.clone(),
            user: user.id.clone(),
            req: req.clone(),
            qty: msg.qty,
            price_fen: reservation.price_fen,
            amount_fen: reservation.price_fen * msg.qty,
            referrer: msg.referrer.as_deref().map(Arc::from),
            ts_ms: buy.now_ms,
            left_after: reservation.left_after,
            pay_by_ms: reservation
                .sku
                .pay_timeout_s()
                .map(|t| buy.now_ms.saturating_add(t as i64 * 1000)),
            hub: None,
            begun: Some(ticket),
        };
        let order_req = req;
        match self.inner.journal.submit(Record::Order(Arc::new(order))) {
            Ok(rx) => Started::Journaling(Journaling {
                in_flight: InFlight {
                    rx: Some(rx),
                    hub: self.clone(),
                    room: room.clone(),
                    user: user.clone(),
                    req: order_req,
                    reservation,
                },
                _admitted: admitted,
            }),
            Err(e) => {
                self.undo(room, user, &msg.req, &reservation);
                Started::Answered(self.unavailable(room, &msg.req, &reservation, &e))
            }
        }
    }

    /// The ack of a buy the journal answered: ok once durable; otherwise its stock goes back.
    fn settle(
        &self,
        f: &InFlight,
        outcome: Result<Result<Record, JournalError>, RecvError>,
    ) -> Ack {
        let error = match outcome {
            Ok(Ok(Record::Order(o))) => return counted_ok(placed_ack(&o, &f.req)),
            Ok(Ok(_)) => unreachable!("the journal returns the record it was given"),
            Ok(Err(e)) => e,
            Err(_) => JournalError::Stopped,
        };
        self.undo(&f.room, &f.user, &f.req, &f.reservation);
        self.unavailable(&f.room, &f.req, &f.reservation, &error)
    }

    /// A place among the pending buys, or `None` when they are full.
    pub(crate) fn admit(&self) -> Option<Admitted> {
        let pending = &self.inner.pending;
        if pending.fetch_add(1, Ordering::AcqRel) >= self.inner.options.max_pending_buys {
            pending.fetch_sub(1, Ordering::AcqRel);
            return None;
        }
        Some(Admitted(self.clone()))
    }

    /// Buys admitted and not yet answered.
    pub fn pending_buys(&self) -> usize {
        self.inner.pending.load(Ordering::Relaxed)
    }

    /// What became of an earlier buy.
    pub async fn status(&self, room: &Room, user: &str, req: &str) -> Ack {
        match room.requests.settled(user, req).await {
            Some(order) => order_ack(&order, req, room),
            None => match self.fleet() {
                // Fleet mode: the order may have been taken by another hub.
                Some(fleet) => self.status_in_fleet(fleet, room, user, req).await,
                None => Ack::rejected(req, RejectCode::UnknownRequest, None, None),
            },
        }
    }

    /// Gives a reservation back to the embedded gate (whose release never waits) and forgets
    /// its request.
    fn undo(&self, room: &Room, user: &UserRef, req: &str, r: &Reservation) {
        LocalGate::give_back(user, r);
        room.feeds.notify_sale_changed();
        room.requests.end(&user.id, req);
    }

    fn unavailable(&self, room: &Room, req: &str, r: &Reservation, e: &JournalError) -> Ack {
        self.refused_unavailable(room, req, &r.sku, "order could not be made durable", e)
    }

    /// Answers `unavailable` for a buy of `sku` that `cause` (the journal, Redis) could not
    /// complete, and logs why; nothing was sold.
    pub(crate) fn refused_unavailable(
        &self,
        room: &Room,
        req: &str,
        sku: &Sku,
        cause: &'static str,
        error: &dyn std::fmt::Display,
    ) -> Ack {
        tracing::warn!(room = %room.id, sku = %sku.id, cause, %error, "buy refused: unavailable");
        self.rejected(
            room,
            req,
            RejectCode::Unavailable,
            Some(sku.id.clone()),
            Some(sku.left()),
        )
    }

    /// Counts and words the rejection of `msg` before it reached the inventory (shed, rate
    /// limited), with the SKU's `left` when the SKU exists, as every ack for one carries.
    pub fn rejected_buy(&self, room: &Room, msg: &BuyMsg, code: RejectCode) -> Ack {
        let sku = room.skus.get(&msg.sku);
        self.rejected(
            room,
            &msg.req,
            code,
            sku.as_ref().map(|s| s.id.clone()),
            sku.map(|s| s.left()),
        )
    }

    /// Counts and words a rejection.
    pub fn rejected(
        &self,
        room: &Room,
        req: &str,
        code: RejectCode,
        sku: Option<Arc<str>>,
        left: Option<u64>,
    ) -> Ack {
        room.live.count_rejection(code);
        crate::telemetry::buy_metrics().rejected[code.index()].increment(1);
        Ack::rejected(req, code, sku, left)
    }
}

/// One admitted buy; leaves the count when the buy is answered (or dropped).
pub(crate) struct Admitted(Hub);

impl Drop for Admitted {
    fn drop(&mut self) {
        self.0.inner.pending.fetch_sub(1, Ordering::AcqRel);
    }
}

/// What [`Hub::start_buy`] got to.
pub enum Started {
    /// Answered without the journal: a repeated `req`, or a refusal.
    Answered(Ack),
    /// Past the gate, in the journal's queue.
    Journaling(Journaling),
}

/// A buy past the gate, waiting for the journal; resolves to its ack (ok only once the order
/// is durable). A concrete type, so that a buyer's task keeps its buys in flight unboxed.
/// Dropped before the journal answers (the buyer hung up), its reservation is still settled
/// (`InFlight`).
pub struct Journaling {
    in_flight: InFlight,
    _admitted: Admitted,
}

impl Future for Journaling {
    type Output = Ack;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Ack> {
        let f = &mut self.in_flight;
        let rx =
            f.rx.as_mut()
                .expect("a journaling buy polled after its answer");
        let outcome = std::task::ready!(Pin::new(rx).poll(cx));
        f.rx = None;
        let f = &*f;
        Poll::Ready(f.hub.settle(f, outcome))
    }
}

/// Counts an ok answer to a buy frame (a `status` answer is not a buy and is not counted).
fn counted_ok(ack: Ack) -> Ack {
    crate::telemetry::buy_metrics().ok.increment(1);
    ack
}

/// The ack of an order for a repeat of its `req` and for `status`: with its status now.
pub fn order_ack(o: &OrderRecord, req: &str, room: &Room) -> Ack {
    Ack {
        status: Some(room.statuses.status(o)),
        ..placed_ack(o, req)
    }
}

/// The ack of an order just placed: `unpaid` with its `pay_by_ms`, or `paid`.
pub fn placed_ack(o: &OrderRecord, req: &str) -> Ack {
    Ack {
        status: Some(if o.pay_by_ms.is_some() {
            OrderStatus::Unpaid
        } else {
            OrderStatus::Paid
        }),
        pay_by_ms: o.pay_by_ms,
        req: req.to_owned(),
        ok: true,
        order: Some(Arc::from(o.order_id())),
        error: None,
        sku: Some(o.sku.clone()),
        qty: Some(o.qty),
        amount_fen: Some(o.amount_fen),
        left: Some(o.left_after),
    }
}

/// A reservation handed to the journal. If the buy's future is dropped before the journal
/// answers (the buyer hung up), a task waits for the answer in its place, so a refused
/// order's stock still goes back and its request is still forgotten.
struct InFlight {
    rx: Option<oneshot::Receiver<Result<Record, JournalError>>>,
    hub: Hub,
    room: Arc<Room>,
    user: UserRef,
    /// The table's own `req` (the order's), so a buy allocates it once.
    req: Arc<str>,
    reservation: Reservation,
}

impl Drop for InFlight {
    fn drop(&mut self) {
        let Some(rx) = self.rx.take() else { return };
        let (hub, room, user, req, r) = (
            self.hub.clone(),
            self.room.clone(),
            self.user.clone(),
            self.req.clone(),
            self.reservation.clone(),
        );
        let settle = async move {
            if !matches!(rx.await, Ok(Ok(_))) {
                hub.undo(&room, &user, &req, &r);
            }
        };
        match tokio::runtime::Handle::try_current() {
            Ok(h) => {
                h.spawn(settle);
            }
            Err(_) => {
                tracing::error!("buy dropped outside a runtime; its reservation may stay taken")
            }
        }
    }
}

//! The buy path in fleet mode: idempotency (this hub's table, then Redis's) → the buy script
//! takes stock and leaves a ticket → journal (the durable point) → ack; the journal's apply
//! hands the order to the publisher, which turns the ticket into the order's ack in Redis.
//!
//! A ticket whose order was not made durable is released. When a Redis call fails or times
//! out, the buy answers `unavailable` at once and a background task keeps trying to release
//! the ticket the script may have left (a release is a no-op when it is not there), so a lost
//! reply never holds a unit for long once Redis answers again.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::oneshot;

use super::scripts::{Done, Seen, Taken, Ticket};
use super::{keys, Fleet, FleetError};
use crate::clock::now_ms;
use crate::hub::buy::placed_ack;
use crate::hub::Hub;
use crate::inventory::UserRef;
use crate::journal::{JournalError, OrderRecord, Record};
use crate::protocol::{Ack, BuyMsg, OrderStatus, RejectCode};
use crate::rooms::requests::Begin;
use crate::rooms::room::Room;

/// How long a buy waits for the same request's decision on another hub before it answers
/// `unavailable` (its state is in Redis; a repeat later gets the real answer).
pub const PENDING_WAIT: Duration = Duration::from_secs(2);
/// How often it looks while waiting.
pub const PENDING_POLL: Duration = Duration::from_millis(10);
/// Longest pause between attempts to release a ticket while Redis is away.
pub const RELEASE_BACKOFF_MAX: Duration = Duration::from_secs(1);

/// Ticket nonces: random start per process, so tickets of a restarted hub never repeat.
static NONCE: AtomicU64 = AtomicU64::new(0);

fn next_nonce() -> u64 {
    if NONCE.load(Ordering::Relaxed) == 0 {
        let start = rand::random::<u64>() >> 1 | 1;
        let _ = NONCE.compare_exchange(0, start, Ordering::AcqRel, Ordering::Relaxed);
    }
    NONCE.fetch_add(1, Ordering::Relaxed)
}

/// A ticket and where it lives.
#[derive(Debug, Clone)]
pub struct TicketAt {
    /// The room whose request table holds it.
    pub room: Arc<str>,
    /// The buyer.
    pub user: Arc<str>,
    /// The request table's field for `(user, req)` ([`super::keys::request_field`]).
    pub field: String,
    /// The ticket itself.
    pub ticket: Ticket,
}

impl Fleet {
    /// Runs the buy script.
    pub async fn take(&self, at: &TicketAt, qty: u64, now_ms: i64) -> Result<Taken, FleetError> {
        let (room, sku) = (&*at.room, &*at.ticket.sku);
        let mut inv = self.scripts.take.prepare_invoke();
        inv.key(keys::sku(room, sku))
            .key(keys::held(room, sku))
            .key(keys::requests(room))
            .key(keys::pending(room, &self.hub_id))
            .arg(&*at.user)
            .arg(&at.field)
            .arg(qty)
            .arg(now_ms)
            .arg(at.ticket.encode());
        let mut c = self.conn();
        let reply: Vec<String> = self.bounded(inv.invoke_async(&mut c)).await?;
        Taken::parse(&reply).map_err(FleetError::Reply)
    }

    /// Gives a ticket back. `Ok(true)` when it was there and its units went back.
    pub async fn release(&self, at: &TicketAt) -> Result<bool, FleetError> {
        let (room, sku) = (&*at.room, &*at.ticket.sku);
        let mut inv = self.scripts.release.prepare_invoke();
        inv.key(keys::sku(room, sku))
            .key(keys::held(room, sku))
            .key(keys::requests(room))
            .key(keys::pending(room, &at.ticket.hub))
            .arg(&*at.user)
            .arg(&at.field)
            .arg(at.ticket.encode())
            .arg(at.ticket.qty);
        let mut c = self.conn();
        let n: i64 = self.bounded(inv.invoke_async(&mut c)).await?;
        Ok(n == 1)
    }

    /// Releases a ticket, retrying while Redis is away, until it is done or the hub stops.
    pub fn release_in_background(
        &self,
        at: TicketAt,
        shutdown: tokio_util::sync::CancellationToken,
    ) {
        let fleet = self.clone();
        tokio::spawn(async move {
            let mut pause = Duration::from_millis(50);
            loop {
                match fleet.release(&at).await {
                    Ok(released) => {
                        if released {
                            tracing::info!(room = %at.room, sku = %at.ticket.sku, "ticket released");
                        }
                        return;
                    }
                    Err(e) => {
                        tracing::debug!(room = %at.room, error = %e, "ticket release failed; retrying")
                    }
                }
                tokio::select! {
                    _ = shutdown.cancelled() => {
                        tracing::warn!(room = %at.room, sku = %at.ticket.sku, "hub stopping with a ticket unreleased; start-up repair will release it");
                        return;
                    }
                    _ = tokio::time::sleep(pause) => {}
                }
                pause = (pause * 2).min(RELEASE_BACKOFF_MAX);
            }
        });
    }

    /// The request's state in Redis.
    pub async fn request_state(&self, room: &str, field: &str) -> Result<Option<Seen>, FleetError> {
        let v: Option<String> = self
            .run(redis::cmd("HGET").arg(keys::requests(room)).arg(field))
            .await?;
        Ok(v.and_then(|s| Seen::decode(&s)))
    }
}

/// The ack of an order made on any hub, from its state in Redis, with its status now (an
/// order published before statuses were kept in Redis has none: it was paid on placement).
async fn done_ack(fleet: &Fleet, room: &Room, d: &Done, req: &str) -> Ack {
    let entry = match fleet.order_entry(&room.id, &d.order).await {
        Ok(e) => e,
        Err(e) => {
            tracing::warn!(room = %room.id, error = %e, "order status unanswered: redis unavailable");
            return Ack::rejected(req, RejectCode::Unavailable, None, None);
        }
    };
    crate::telemetry::buy_metrics().ok.increment(1);
    Ack {
        req: req.to_owned(),
        ok: true,
        order: Some(Arc::from(d.order.as_str())),
        error: None,
        sku: Some(d.sku.clone()),
        qty: Some(d.qty),
        amount_fen: Some(d.amount_fen),
        left: Some(d.left),
        status: Some(entry.as_ref().map_or(OrderStatus::Paid, |e| e.status)),
        pay_by_ms: entry.and_then(|e| e.pay_by_ms),
    }
}

impl Hub {
    /// [`Hub::buy`] in fleet mode.
    pub(crate) async fn buy_in_fleet(
        &self,
        fleet: &Fleet,
        room: &Arc<Room>,
        user: &UserRef,
        msg: &BuyMsg,
    ) -> Ack {
        if let Begin::Done(order) = room.requests.begin(&user.id, &msg.req).await {
            return crate::hub::buy::order_ack(&order, &msg.req, room);
        }
        // Admission control, as for the embedded gate: beyond the pending buys' limit a buy is
        // answered `unavailable` at once instead of queueing for Redis.
        let Some(_admitted) = self.admit() else {
            room.requests.end(&user.id, &msg.req);
            metrics::counter!("livehub_buys_shed_total").increment(1);
            return self.rejected_buy(room, msg, RejectCode::Unavailable);
        };
        let ack = self.decide_shared(fleet, room, user, msg).await;
        // Forgets the request unless it made an order here (the journal's apply marked it done).
        room.requests.end(&user.id, &msg.req);
        ack
    }

    async fn decide_shared(
        &self,
        fleet: &Fleet,
        room: &Arc<Room>,
        user: &UserRef,
        msg: &BuyMsg,
    ) -> Ack {
        let mut sku = room.skus.get(&msg.sku);
        if sku.is_none() {
            // Created on another hub a moment ago? Look in Redis before saying no, unless the
            // room was looked at a moment ago.
            super::mirror::resync_for_unknown_sku(self, fleet, &room.id).await;
            sku = room.skus.get(&msg.sku);
        }
        let Some(sku) = sku else {
            return self.rejected(room, &msg.req, RejectCode::UnknownSku, None, None);
        };
        let at = TicketAt {
            room: room.id.clone(),
            user: user.id.clone(),
            field: keys::request_field(&user.id, &msg.req),
            ticket: Ticket {
                hub: fleet.hub_id.clone(),
                nonce: next_nonce(),
                sku: sku.id.clone(),
                qty: msg.qty,
            },
        };
        let now = now_ms();
        let waited_since = std::time::Instant::now();
        let (left_after, price_fen, pay_timeout_s) = loop {
            let taken = match fleet.take(&at, msg.qty, now).await {
                Ok(t) => t,
                Err(e) => {
                    // The script may have run and only its reply was lost: release whatever
                    // ticket this attempt left, once Redis answers.
                    fleet.release_in_background(at.clone(), self.shutdown_token().clone());
                    return self.redis_unavailable(room, &msg.req, &sku, &e);
                }
            };
            match taken {
                Taken::Ok {
                    left_after,
                    price_fen,
                    pay_timeout_s,
                } => break (left_after, price_fen, pay_timeout_s),
                Taken::Refused { code, left } => {
                    if let Some(l) = left {
                        sku.note_left(l);
                    }
                    let sku_id = left.map(|_| sku.id.clone());
                    return self.rejected(room, &msg.req, code, sku_id, left);
                }
                Taken::Seen(Seen::Done(d)) => return done_ack(fleet, room, &d, &msg.req).await,
                Taken::Seen(Seen::Pending(_)) => {
                    // Decided elsewhere (another hub, or an earlier attempt of this one whose
                    // reply was lost): wait for its outcome, then answer it or decide afresh.
                    match self
                        .wait_pending(fleet, room, &at.field, waited_since)
                        .await
                    {
                        Ok(Some(d)) => return done_ack(fleet, room, &d, &msg.req).await,
                        Ok(None) => continue,
                        Err(e) => return self.redis_unavailable(room, &msg.req, &sku, &e),
                    }
                }
            }
        };
        sku.note_left(left_after);
        if left_after == 0 {
            room.feeds.notify_sale_changed();
        }
        let order = OrderRecord {
            seq: 0,
            number: 0,
            room: room.id.clone(),
            sku: sku.id.clone(),
            user: user.id.clone(),
            req: Arc::from(msg.req.as_str()),
            qty: msg.qty,
            price_fen,
            amount_fen: price_fen * msg.qty,
            referrer: msg.referrer.as_deref().map(Arc::from),
            ts_ms: now,
            left_after,
            pay_by_ms: pay_timeout_s.map(|t| now.saturating_add(t.saturating_mul(1000) as i64)),
            hub: Some(fleet.hub_id.clone()),
            begun: None,
        };
        let rx = match self.journal().submit(Record::Order(Arc::new(order))) {
            Ok(rx) => rx,
            Err(e) => {
                fleet.release_in_background(at, self.shutdown_token().clone());
                return self.journal_unavailable(room, &msg.req, &sku, &e);
            }
        };
        let mut in_flight = SharedInFlight {
            rx: Some(rx),
            hub: self.clone(),
            fleet: fleet.clone(),
            room: room.clone(),
            at,
        };
        let outcome = in_flight.rx.as_mut().expect("set above").await;
        in_flight.rx = None;
        let at = in_flight.at.clone();
        match outcome {
            Ok(Ok(Record::Order(o))) => placed_ack(&o, &msg.req),
            Ok(Ok(_)) => unreachable!("the journal returns the record it was given"),
            Ok(Err(e)) => {
                fleet.release_in_background(at, self.shutdown_token().clone());
                self.journal_unavailable(room, &msg.req, &sku, &e)
            }
            Err(_) => {
                fleet.release_in_background(at, self.shutdown_token().clone());
                self.journal_unavailable(room, &msg.req, &sku, &JournalError::Stopped)
            }
        }
    }

    /// [`Hub::status`] in fleet mode for a request this hub does not know: its state in Redis.
    pub(crate) async fn status_in_fleet(
        &self,
        fleet: &Fleet,
        room: &Room,
        user: &str,
        req: &str,
    ) -> Ack {
        let field = keys::request_field(user, req);
        match self
            .wait_pending(fleet, room, &field, std::time::Instant::now())
            .await
        {
            Ok(Some(d)) => done_ack(fleet, room, &d, req).await,
            Ok(None) => Ack::rejected(req, RejectCode::UnknownRequest, None, None),
            Err(e) => {
                tracing::warn!(room = %room.id, error = %e, "status unanswered: redis unavailable");
                Ack::rejected(req, RejectCode::Unavailable, None, None)
            }
        }
    }

    /// Waits for a request pending elsewhere: `Some` when it made an order, `None` when it
    /// was released (decide afresh).
    async fn wait_pending(
        &self,
        fleet: &Fleet,
        room: &Room,
        field: &str,
        since: std::time::Instant,
    ) -> Result<Option<Done>, FleetError> {
        loop {
            match fleet.request_state(&room.id, field).await? {
                Some(Seen::Done(d)) => return Ok(Some(d)),
                None => return Ok(None),
                Some(Seen::Pending(_)) => {}
            }
            if since.elapsed() >= PENDING_WAIT {
                return Err(FleetError::Reply(
                    "the same request is still being decided elsewhere".into(),
                ));
            }
            tokio::time::sleep(PENDING_POLL).await;
        }
    }

    fn redis_unavailable(
        &self,
        room: &Room,
        req: &str,
        sku: &crate::inventory::Sku,
        e: &FleetError,
    ) -> Ack {
        self.refused_unavailable(room, req, sku, "redis unavailable", e)
    }

    fn journal_unavailable(
        &self,
        room: &Room,
        req: &str,
        sku: &crate::inventory::Sku,
        e: &JournalError,
    ) -> Ack {
        self.refused_unavailable(room, req, sku, "order could not be made durable", e)
    }
}

/// A ticket handed to the journal. If the buy's future is dropped before the journal answers
/// (the buyer hung up), a task waits in its place, so a refused order's ticket is still
/// released and its request forgotten.
struct SharedInFlight {
    rx: Option<oneshot::Receiver<Result<Record, JournalError>>>,
    hub: Hub,
    fleet: Fleet,
    room: Arc<Room>,
    at: TicketAt,
}

impl Drop for SharedInFlight {
    fn drop(&mut self) {
        let Some(rx) = self.rx.take() else { return };
        let (hub, fleet, room, at) = (
            self.hub.clone(),
            self.fleet.clone(),
            self.room.clone(),
            self.at.clone(),
        );
        let settle = async move {
            if !matches!(rx.await, Ok(Ok(_))) {
                fleet.release_in_background(at.clone(), hub.shutdown_token().clone());
                let req = at
                    .field
                    .split(crate::ids::KEY_SEPARATOR)
                    .nth(1)
                    .unwrap_or("");
                room.requests.end(&at.user, req);
            }
        };
        match tokio::runtime::Handle::try_current() {
            Ok(h) => {
                h.spawn(settle);
            }
            Err(_) => {
                tracing::error!(
                    "buy dropped outside a runtime; its ticket stays until start-up repair"
                )
            }
        }
    }
}

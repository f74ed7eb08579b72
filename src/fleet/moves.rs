//! Status moves in fleet mode: payments, cancels, refunds and expiries of orders that any hub
//! may have placed (docs/protocol.md, "Orders that must be paid"; docs/fleet.md).
//!
//! Redis holds every published order's status (`keys::statuses`). A move is made in three
//! steps, as a buy is (ticket → journal → publish):
//! 1. **claim** (`lua/claim.lua`, `lua/claim_expiries.lua`): decides the move against the
//!    status in Redis and marks the order as claimed by this hub, which bars every other move
//!    of it, on any hub, until the claim is settled;
//! 2. **journal**: a [`Record::FleetMoves`] in this hub's journal, fsynced: the move is durable
//!    before it has any effect or answer;
//! 3. **commit** (`lua/commit.lua`): the new status, and for an expiry, cancel or restocking
//!    refund that order's units and allowance back, only while the order still holds this
//!    exact claim, so never twice; the move goes into the room's stream, from which every hub's
//!    dashboards, exports and buyers' `order` pushes take it ([`super::stream`]).
//!
//! A journal failure aborts the claim (`lua/abort.lua`). A commit that Redis does not answer is
//! retried until it does. A hub that stops between the steps settles its claims at its next
//! start ([`repair_claims`]): a claim whose move its journal holds is committed, any other is
//! aborted. Exact, as for tickets: only this hub makes claims with its id.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::{keys, Fleet, FleetError};
use crate::clock::now_ms;
use crate::hub::moves::{MoveError, PaymentFor};
use crate::hub::Hub;
use crate::journal::record::{FleetMove, Move, Payment};
use crate::journal::{OrderRecord, Record};
use crate::protocol::OrderStatus;

/// How long a move waits for another move of the same order (a claim of any hub) to settle
/// before it answers `unavailable`.
pub const MOVING_WAIT: Duration = Duration::from_secs(2);
/// How long a move of an order Redis does not know yet waits for it to be published: an order
/// is acked once journaled, and published a moment later.
pub const UNPUBLISHED_WAIT: Duration = Duration::from_millis(300);
/// How often it looks while waiting.
const POLL: Duration = Duration::from_millis(10);
/// Orders one claim or commit script call handles at most.
pub const SCRIPT_BATCH: usize = 1000;
/// Longest pause between attempts to settle a claim while Redis is away.
const SETTLE_BACKOFF_MAX: Duration = Duration::from_secs(1);

/// Claim nonces: random start per process, so claims of a restarted hub never repeat.
static NONCE: AtomicU64 = AtomicU64::new(0);

fn next_nonce() -> u64 {
    if NONCE.load(Ordering::Relaxed) == 0 {
        let start = rand::random::<u64>() >> 1 | 1;
        let _ = NONCE.compare_exchange(0, start, Ordering::AcqRel, Ordering::Relaxed);
    }
    NONCE.fetch_add(1, Ordering::Relaxed)
}

/// An order's status entry in Redis: `S|sku|user|qty|amount_fen|pay_by_ms|placed_ms|paid_ms`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// Its status now.
    pub status: OrderStatus,
    /// The SKU.
    pub sku: Arc<str>,
    /// The buyer.
    pub user: Arc<str>,
    /// Units.
    pub qty: u64,
    /// What it costs.
    pub amount_fen: u64,
    /// When it must be paid by; `None`: paid on placement.
    pub pay_by_ms: Option<i64>,
    /// When it was placed.
    pub placed_ms: i64,
    /// When it became paid, by the deciding hub's clock.
    pub paid_ms: Option<i64>,
}

fn letter(s: OrderStatus) -> char {
    match s {
        OrderStatus::Unpaid => 'U',
        OrderStatus::Paid => 'P',
        OrderStatus::Expired => 'E',
        OrderStatus::Cancelled => 'C',
        OrderStatus::Refunded => 'R',
    }
}

fn status_of(letter: &str) -> Option<OrderStatus> {
    Some(match letter {
        "U" => OrderStatus::Unpaid,
        "P" => OrderStatus::Paid,
        "E" => OrderStatus::Expired,
        "C" => OrderStatus::Cancelled,
        "R" => OrderStatus::Refunded,
        _ => return None,
    })
}

fn opt_num<T: std::str::FromStr>(s: &str) -> Option<Option<T>> {
    if s.is_empty() {
        Some(None)
    } else {
        s.parse().ok().map(Some)
    }
}

impl Entry {
    /// The entry of an order as it is published.
    pub fn placed(o: &OrderRecord) -> String {
        let status = if o.pay_by_ms.is_some() {
            OrderStatus::Unpaid
        } else {
            OrderStatus::Paid
        };
        let paid = if o.pay_by_ms.is_some() {
            String::new()
        } else {
            o.ts_ms.to_string()
        };
        format!(
            "{}|{}|{}|{}|{}|{}|{}|{}",
            letter(status),
            o.sku,
            o.user,
            o.qty,
            o.amount_fen,
            o.pay_by_ms.map(|t| t.to_string()).unwrap_or_default(),
            o.ts_ms,
            paid
        )
    }

    /// Reads an entry; `None` for anything else.
    pub fn decode(s: &str) -> Option<Entry> {
        let f: Vec<&str> = s.split('|').collect();
        let [st, sku, user, qty, amount, pay_by, placed, paid] = f[..] else {
            return None;
        };
        Some(Entry {
            status: status_of(st)?,
            sku: Arc::from(sku),
            user: Arc::from(user),
            qty: qty.parse().ok()?,
            amount_fen: amount.parse().ok()?,
            pay_by_ms: opt_num(pay_by)?,
            placed_ms: placed.parse().ok()?,
            paid_ms: opt_num(paid)?,
        })
    }

    /// The order this entry is of, as far as the entry tells (`req` and `seq` it does not).
    pub fn order(&self, room: &Arc<str>, id: &str) -> Option<Arc<OrderRecord>> {
        let (hub, number) = split_order_id(id)?;
        Some(Arc::new(OrderRecord {
            seq: 0,
            number,
            room: room.clone(),
            sku: self.sku.clone(),
            user: self.user.clone(),
            req: Arc::from(""),
            qty: self.qty,
            price_fen: self.amount_fen / self.qty.max(1),
            amount_fen: self.amount_fen,
            referrer: None,
            ts_ms: self.placed_ms,
            left_after: 0,
            pay_by_ms: self.pay_by_ms,
            hub: Some(Arc::from(hub)),
            begun: None,
        }))
    }
}

/// A fleet order id `hub:O<number>` as its hub and number; `None` for anything else.
pub fn split_order_id(id: &str) -> Option<(&str, u64)> {
    let (hub, n) = id.split_once(":O")?;
    let canonical =
        !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()) && (n == "0" || !n.starts_with('0'));
    if !canonical || super::check_hub_id(hub).is_err() {
        return None;
    }
    Some((hub, n.parse().ok()?))
}

/// The name of a move in the scripts and the stream.
pub fn move_name(to: Option<&Move>) -> &'static str {
    match to {
        None => "expire",
        Some(Move::Paid(_)) => "paid",
        Some(Move::LatePayment(_)) => "late",
        Some(Move::Cancelled { by_admin: false }) => "cancel",
        Some(Move::Cancelled { by_admin: true }) => "cancel_admin",
        Some(Move::Refunded { restock: false }) => "refund",
        Some(Move::Refunded { restock: true }) => "refund_restock",
    }
}

/// The claim script's kind of a move: what the claim asked for, before it was decided
/// (`pay` becomes `paid` or `late`).
fn kind_of(to: Option<&Move>) -> &'static str {
    match to {
        None => "expire",
        Some(Move::Paid(_) | Move::LatePayment(_)) => "pay",
        Some(Move::Cancelled { .. }) => "cancel",
        Some(Move::Refunded { .. }) => "refund",
    }
}

fn payment_of(to: Option<&Move>) -> Option<&Payment> {
    match to {
        Some(Move::Paid(p) | Move::LatePayment(p)) => Some(p),
        _ => None,
    }
}

/// A claim's text: `hub|nonce|kind|payment_id`.
fn claim_text(hub: &str, kind: &str, payment_id: &str) -> String {
    format!("{hub}|{}|{kind}|{payment_id}", next_nonce())
}

/// What the claim script said (`lua/claim.lua`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClaimReply {
    /// No such order (not published yet), or not the given buyer's.
    Unknown,
    /// Another move of the order is on its way: a claim stands, or this payment id is claimed
    /// for it.
    Moving,
    /// An expiry of an order whose time to pay has not run out.
    NotDue,
    /// The payment id paid, or was kept for, this other order.
    Reused(String),
    /// The payment's amount is not the order's.
    Mismatch(Entry),
    /// This payment paid the order already.
    Paid(Entry),
    /// This payment was kept on the order as a late payment already.
    LateKnown(Entry),
    /// The order is not at the status the move needs.
    Refused(Entry),
    /// Claimed: the order's entry, and the move decided (`paid`, `late`, `cancel`, `refund`,
    /// `expire`).
    Claimed(Entry, String),
}

impl ClaimReply {
    fn parse(reply: &[String]) -> Result<ClaimReply, String> {
        let bad = || format!("{reply:?}");
        let entry = |i: usize| reply.get(i).and_then(|e| Entry::decode(e)).ok_or_else(bad);
        Ok(match reply.first().map(String::as_str) {
            Some("unknown") => ClaimReply::Unknown,
            Some("moving") => ClaimReply::Moving,
            Some("not_due") => ClaimReply::NotDue,
            Some("reused") => ClaimReply::Reused(reply.get(1).ok_or_else(bad)?.clone()),
            Some("mismatch") => ClaimReply::Mismatch(entry(1)?),
            Some("paid") => ClaimReply::Paid(entry(1)?),
            Some("late_known") => ClaimReply::LateKnown(entry(1)?),
            Some("refused") => ClaimReply::Refused(entry(1)?),
            Some("claimed") => {
                ClaimReply::Claimed(entry(1)?, reply.get(2).ok_or_else(bad)?.clone())
            }
            _ => return Err(bad()),
        })
    }
}

/// One claimed move to commit.
#[derive(Debug, Clone)]
pub struct Commit {
    /// The order id.
    pub order: Arc<str>,
    /// The claim it holds.
    pub claim: String,
    /// The move, as journaled.
    pub to: Option<Move>,
    /// The order's SKU (its units go back there).
    pub sku: Arc<str>,
}

impl Fleet {
    /// Runs the claim script for one order: `claim` is the claim's text
    /// (`hub|nonce|kind|payment_id`), `user` the buyer a cancel must be by (`None`: any).
    /// Public for the property test of the scripts (tests/redis_scripts.rs).
    #[allow(clippy::too_many_arguments)]
    pub async fn claim(
        &self,
        room: &str,
        order: &str,
        claim: &str,
        kind: &str,
        user: Option<&str>,
        payment: Option<&Payment>,
        now_ms: i64,
    ) -> Result<ClaimReply, FleetError> {
        let mut inv = self.scripts.claim.prepare_invoke();
        inv.key(keys::statuses(room))
            .key(keys::claims(room))
            .key(keys::payments(room))
            .arg(order)
            .arg(claim)
            .arg(kind)
            .arg(user.unwrap_or(""))
            .arg(payment.map(|p| &*p.payment_id).unwrap_or(""))
            .arg(
                payment
                    .map(|p| p.amount_fen.to_string())
                    .unwrap_or_default(),
            )
            .arg(now_ms);
        let mut c = self.conn();
        let reply: Vec<String> = self.bounded(inv.invoke_async(&mut c)).await?;
        ClaimReply::parse(&reply).map_err(FleetError::Reply)
    }

    /// Makes journaled moves of `room` take effect; returns how many did (a move whose claim
    /// is no longer there is skipped: it was committed already).
    pub async fn commit(
        &self,
        room: &str,
        ts_ms: i64,
        moves: &[Commit],
    ) -> Result<u64, FleetError> {
        let mut made = 0;
        for chunk in moves.chunks(SCRIPT_BATCH) {
            let mut skus: Vec<&Arc<str>> = Vec::new();
            for m in chunk {
                if !skus.contains(&&m.sku) {
                    skus.push(&m.sku);
                }
            }
            let mut inv = self.scripts.commit.prepare_invoke();
            inv.key(keys::statuses(room))
                .key(keys::claims(room))
                .key(keys::payments(room))
                .key(keys::deadlines(room))
                .key(keys::sold(room))
                .key(keys::orders(room));
            for s in &skus {
                inv.key(keys::sku(room, s));
            }
            for s in &skus {
                inv.key(keys::held(room, s));
            }
            inv.arg(ts_ms).arg(skus.len());
            for m in chunk {
                let p = payment_of(m.to.as_ref());
                let k = skus
                    .iter()
                    .position(|s| **s == m.sku)
                    .expect("listed above")
                    + 1;
                inv.arg(&*m.order)
                    .arg(&m.claim)
                    .arg(move_name(m.to.as_ref()))
                    .arg(p.map(|p| &*p.payment_id).unwrap_or(""))
                    .arg(p.map(|p| p.amount_fen.to_string()).unwrap_or_default())
                    .arg(p.map(|p| p.paid_at_ms.to_string()).unwrap_or_default())
                    .arg(k);
            }
            let mut c = self.conn();
            let n: u64 = self.bounded(inv.invoke_async(&mut c)).await?;
            made += n;
        }
        Ok(made)
    }

    /// Gives back claims whose moves were not made durable.
    pub async fn abort(&self, room: &str, moves: &[Commit]) -> Result<u64, FleetError> {
        let mut given = 0;
        for chunk in moves.chunks(SCRIPT_BATCH) {
            let mut inv = self.scripts.abort.prepare_invoke();
            inv.key(keys::claims(room)).key(keys::payments(room));
            for m in chunk {
                inv.arg(&*m.order).arg(&m.claim).arg(
                    payment_of(m.to.as_ref())
                        .map(|p| &*p.payment_id)
                        .unwrap_or(""),
                );
            }
            let mut c = self.conn();
            let n: u64 = self.bounded(inv.invoke_async(&mut c)).await?;
            given += n;
        }
        Ok(given)
    }

    /// Commits (`commit`) or aborts claims, retrying while Redis is away, until done or the
    /// hub stops (the start-up repair settles them then).
    pub fn settle_in_background(
        &self,
        room: Arc<str>,
        ts_ms: i64,
        moves: Vec<Commit>,
        commit: bool,
        shutdown: tokio_util::sync::CancellationToken,
    ) {
        let fleet = self.clone();
        tokio::spawn(async move {
            let mut pause = Duration::from_millis(50);
            loop {
                let r = if commit {
                    fleet.commit(&room, ts_ms, &moves).await
                } else {
                    fleet.abort(&room, &moves).await
                };
                match r {
                    Ok(_) => return,
                    Err(e) => {
                        tracing::debug!(%room, commit, error = %e, "settling claims failed; retrying")
                    }
                }
                tokio::select! {
                    _ = shutdown.cancelled() => {
                        tracing::warn!(%room, moves = moves.len(), "hub stopping with claims unsettled; start-up repair settles them");
                        return;
                    }
                    _ = tokio::time::sleep(pause) => {}
                }
                pause = (pause * 2).min(SETTLE_BACKOFF_MAX);
            }
        });
    }

    /// The status entry of an order, if Redis has it.
    pub async fn order_entry(&self, room: &str, order: &str) -> Result<Option<Entry>, FleetError> {
        let v: Option<String> = self
            .run(redis::cmd("HGET").arg(keys::statuses(room)).arg(order))
            .await?;
        Ok(v.and_then(|s| Entry::decode(&s)))
    }
}

/// What a claimed single move asks for.
enum Ask<'a> {
    Pay(&'a Payment),
    Cancel { user: Option<&'a str> },
    Refund { restock: bool },
}

impl Hub {
    /// [`Hub::pay`] in fleet mode.
    pub(crate) async fn pay_in_fleet(
        &self,
        fleet: &Fleet,
        p: PaymentFor<'_>,
    ) -> Result<Arc<OrderRecord>, MoveError> {
        let payment = p.payment.clone();
        let (order, late) = self
            .move_in_fleet(fleet, p.room, p.order, Ask::Pay(&payment))
            .await?;
        match late {
            None => Ok(order),
            Some(status) => Err(MoveError::Late(status)),
        }
    }

    /// [`Hub::cancel`] in fleet mode.
    pub(crate) async fn cancel_in_fleet(
        &self,
        fleet: &Fleet,
        room: &str,
        order: &str,
        user: Option<&str>,
    ) -> Result<Arc<OrderRecord>, MoveError> {
        self.move_in_fleet(fleet, room, order, Ask::Cancel { user })
            .await
            .map(|(o, _)| o)
    }

    /// [`Hub::refund`] in fleet mode.
    pub(crate) async fn refund_in_fleet(
        &self,
        fleet: &Fleet,
        room: &str,
        order: &str,
        restock: bool,
    ) -> Result<Arc<OrderRecord>, MoveError> {
        self.move_in_fleet(fleet, room, order, Ask::Refund { restock })
            .await
            .map(|(o, _)| o)
    }

    /// Claims, journals and commits one move, in a task of its own (a caller that goes away
    /// never leaves a claim behind). Returns the order, and for a payment kept as a late
    /// payment the status the order stays at.
    async fn move_in_fleet(
        &self,
        fleet: &Fleet,
        room: &str,
        order: &str,
        ask: Ask<'_>,
    ) -> Result<(Arc<OrderRecord>, Option<OrderStatus>), MoveError> {
        if split_order_id(order).is_none() {
            return Err(MoveError::UnknownOrder);
        }
        let (kind, user, payment) = match &ask {
            Ask::Pay(p) => ("pay", None, Some((*p).clone())),
            Ask::Cancel { user } => ("cancel", user.map(str::to_owned), None),
            Ask::Refund { .. } => ("refund", None, None),
        };
        let by_admin = matches!(ask, Ask::Cancel { user: None });
        let restock = matches!(ask, Ask::Refund { restock: true });
        let (hub, fleet, room, order) = (
            self.clone(),
            fleet.clone(),
            Arc::<str>::from(room),
            Arc::<str>::from(order),
        );
        let task = tokio::spawn(async move {
            let started = Instant::now();
            let claim = claim_text(
                &fleet.hub_id,
                kind,
                payment.as_ref().map_or("", |p| &p.payment_id),
            );
            let (entry, decided) = loop {
                let claimed = fleet
                    .claim(
                        &room,
                        &order,
                        &claim,
                        kind,
                        user.as_deref(),
                        payment.as_ref(),
                        now_ms(),
                    )
                    .await
                    .map_err(|e| MoveError::Unavailable(format!("redis unavailable: {e}")))?;
                match claimed {
                    ClaimReply::Claimed(entry, decided) => break (entry, decided),
                    ClaimReply::Unknown if started.elapsed() < UNPUBLISHED_WAIT => {}
                    ClaimReply::Moving if started.elapsed() < MOVING_WAIT => {}
                    ClaimReply::Unknown => return Err(MoveError::UnknownOrder),
                    ClaimReply::Moving => {
                        return Err(MoveError::Unavailable(
                            "another change of this order is on its way; try again".into(),
                        ))
                    }
                    ClaimReply::NotDue => {
                        return Err(MoveError::Unavailable("unexpected reply: not_due".into()))
                    }
                    ClaimReply::Reused(other) => return Err(MoveError::PaymentIdReused(other)),
                    ClaimReply::Mismatch(e) => {
                        return Err(MoveError::AmountMismatch {
                            want: e.amount_fen,
                            got: payment.as_ref().map_or(0, |p| p.amount_fen),
                        })
                    }
                    ClaimReply::LateKnown(e) => return Err(MoveError::Late(e.status)),
                    ClaimReply::Refused(e) if kind == "cancel" => {
                        return Err(MoveError::NotCancellable(e.status.as_str()))
                    }
                    ClaimReply::Refused(e) => {
                        return Err(MoveError::NotRefundable(e.status.as_str()))
                    }
                    // This payment paid the order already: the same answer again.
                    ClaimReply::Paid(e) => {
                        let o = e.order(&room, &order).ok_or(MoveError::UnknownOrder)?;
                        return Ok((o, None));
                    }
                }
                tokio::time::sleep(POLL).await;
            };
            let to = match decided.as_str() {
                "paid" => Some(Move::Paid(payment.clone().expect("a payment's claim"))),
                "late" => Some(Move::LatePayment(
                    payment.clone().expect("a payment's claim"),
                )),
                "cancel" => Some(Move::Cancelled { by_admin }),
                "refund" => Some(Move::Refunded { restock }),
                other => {
                    return Err(MoveError::Unavailable(format!(
                        "unexpected reply: move {other}"
                    )))
                }
            };
            let late = (decided == "late").then_some(entry.status);
            let o = entry.order(&room, &order).ok_or(MoveError::UnknownOrder)?;
            let commit = Commit {
                order: order.clone(),
                claim,
                to: to.clone(),
                sku: entry.sku.clone(),
            };
            hub.journal_and_commit(&fleet, &room, vec![commit]).await?;
            if late.is_some() {
                metrics::counter!("livehub_late_payments_total").increment(1);
            }
            Ok((o, late))
        });
        task.await
            .unwrap_or_else(|e| Err(MoveError::Unavailable(e.to_string())))
    }

    /// Journals claimed moves of one room (as few records as fit) and commits them once
    /// durable; aborts them if the journal refuses. `Err` when the moves did not take effect
    /// now (a commit Redis did not answer goes on in the background).
    async fn journal_and_commit(
        &self,
        fleet: &Fleet,
        room: &Arc<str>,
        moves: Vec<Commit>,
    ) -> Result<(), MoveError> {
        let ts_ms = now_ms();
        let mut waiting = Vec::new();
        for chunk in moves.chunks(crate::hub::expiry::EXPIRED_PER_RECORD) {
            let record = Record::FleetMoves {
                room: room.clone(),
                moves: chunk
                    .iter()
                    .map(|m| FleetMove {
                        order: m.order.clone(),
                        to: m.to.clone(),
                    })
                    .collect(),
                ts_ms,
            };
            waiting.push((chunk.to_vec(), self.journal().submit(record)));
        }
        let mut durable = Vec::new();
        let mut refused = None;
        for (chunk, submitted) in waiting {
            let outcome = match submitted {
                Ok(rx) => match rx.await {
                    Ok(Ok(_)) => Ok(()),
                    Ok(Err(e)) => Err(e.to_string()),
                    Err(_) => Err("the journal stopped".to_owned()),
                },
                Err(e) => Err(e.to_string()),
            };
            match outcome {
                Ok(()) => durable.extend(chunk),
                Err(e) => {
                    tracing::warn!(%room, moves = chunk.len(), error = %e, "status moves could not be made durable");
                    fleet.settle_in_background(
                        room.clone(),
                        ts_ms,
                        chunk,
                        false,
                        self.shutdown_token().clone(),
                    );
                    refused = Some(e);
                }
            }
        }
        if !durable.is_empty() {
            if let Err(e) = fleet.commit(room, ts_ms, &durable).await {
                tracing::warn!(%room, moves = durable.len(), error = %e, "journaled status moves wait for redis");
                fleet.settle_in_background(
                    room.clone(),
                    ts_ms,
                    durable,
                    true,
                    self.shutdown_token().clone(),
                );
                return Err(MoveError::Unavailable(format!(
                    "the change is durable and takes effect when redis answers: {e}"
                )));
            }
        }
        match refused {
            Some(e) => Err(MoveError::Unavailable(format!(
                "the change could not be made durable: {e}"
            ))),
            None => Ok(()),
        }
    }

    /// Expires `orders` of `room` (any hub's) that are unpaid and due by `now_ms`: claims them
    /// together, journals them in as few records as fit, and commits them. Returns how many
    /// expired, and the orders to look at again later (another move was on its way, the order
    /// is not published yet, or Redis or the journal failed).
    pub(crate) async fn expire_in_fleet(
        &self,
        fleet: &Fleet,
        room: &Arc<str>,
        orders: &[Arc<str>],
        now_ms: i64,
    ) -> (usize, Vec<Arc<str>>) {
        let mut claimed = Vec::new();
        let mut again = Vec::new();
        let claim = claim_text(&fleet.hub_id, "expire", "");
        for chunk in orders.chunks(SCRIPT_BATCH) {
            let mut inv = fleet.scripts.claim_expiries.prepare_invoke();
            inv.key(keys::statuses(room))
                .key(keys::claims(room))
                .arg(&claim)
                .arg(now_ms);
            for o in chunk {
                inv.arg(&**o);
            }
            let mut c = fleet.conn();
            let reply: Result<Vec<String>, _> = fleet.bounded(inv.invoke_async(&mut c)).await;
            let reply = match reply {
                Ok(r) if r.len() == chunk.len() => r,
                Ok(r) => {
                    tracing::error!(%room, "unexpected reply to claim_expiries: {} for {}", r.len(), chunk.len());
                    again.extend(chunk.iter().cloned());
                    continue;
                }
                Err(e) => {
                    tracing::warn!(%room, error = %e, "cannot claim expiries; trying again");
                    again.extend(chunk.iter().cloned());
                    continue;
                }
            };
            for (o, r) in chunk.iter().zip(reply) {
                match r.strip_prefix("c|").and_then(Entry::decode) {
                    Some(entry) => claimed.push(Commit {
                        order: o.clone(),
                        claim: claim.clone(),
                        to: None,
                        sku: entry.sku,
                    }),
                    None if r == "s" => {}
                    None => again.push(o.clone()),
                }
            }
        }
        let n = claimed.len();
        if n == 0 {
            return (0, again);
        }
        match self.journal_and_commit(fleet, room, claimed.clone()).await {
            Ok(()) => (n, again),
            Err(e) => {
                tracing::warn!(%room, orders = n, error = %e, "expiries did not take effect now");
                // A claim still standing makes the next look answer "moving" until it is
                // settled; an expiry committed meanwhile makes it "settled".
                again.extend(claimed.into_iter().map(|c| c.order));
                (0, again)
            }
        }
    }
}

/// The start-up repair of this hub's claims (journal replayed, not serving yet): a claim whose
/// move the journal holds is committed, any other given back. Returns (committed, aborted).
pub async fn repair_claims(hub: &Hub, fleet: &Fleet) -> Result<(u64, u64), FleetError> {
    let journaled = hub.rooms().take_replayed_moves();
    let (mut committed, mut aborted) = (0, 0);
    for room in hub.rooms().all() {
        let claims: HashMap<String, String> = fleet
            .run(redis::cmd("HGETALL").arg(keys::claims(&room.id)))
            .await?;
        let mut commit = Vec::new();
        let mut abort = Vec::new();
        for (order, claim) in claims {
            let mut parts = claim.split('|');
            let (Some(h), Some(_nonce), Some(kind), Some(pid)) =
                (parts.next(), parts.next(), parts.next(), parts.next())
            else {
                continue;
            };
            if h != &*fleet.hub_id {
                continue;
            }
            let Some(entry) = fleet.order_entry(&room.id, &order).await? else {
                continue;
            };
            let order: Arc<str> = Arc::from(order.as_str());
            let done = journaled.get(&order).and_then(|moves| {
                moves.iter().find(|to| {
                    kind_of(to.as_ref()) == kind
                        && payment_of(to.as_ref()).map_or("", |p| &*p.payment_id) == pid
                })
            });
            let c = Commit {
                order: order.clone(),
                claim: claim.clone(),
                to: done.cloned().flatten(),
                sku: entry.sku,
            };
            match done {
                Some(_) => commit.push(c),
                None => {
                    // Its payment id, so the abort gives that back too.
                    let to = (kind == "pay" && !pid.is_empty()).then(|| {
                        Move::Paid(Payment {
                            payment_id: Arc::from(pid),
                            amount_fen: 0,
                            paid_at_ms: 0,
                        })
                    });
                    abort.push(Commit { to, ..c });
                }
            }
        }
        if !commit.is_empty() {
            committed += fleet.commit(&room.id, now_ms(), &commit).await?;
            tracing::info!(room = %room.id, moves = commit.len(), "committed status moves journaled before a stop");
        }
        if !abort.is_empty() {
            aborted += fleet.abort(&room.id, &abort).await?;
            tracing::info!(room = %room.id, claims = abort.len(), "gave back claims never journaled");
        }
    }
    Ok((committed, aborted))
}

/// Puts this hub's unpaid orders of every room into its deadlines, from Redis (where their
/// statuses are): at start, after the journal's replay and the repair.
pub async fn load_deadlines(hub: &Hub, fleet: &Fleet) -> Result<usize, FleetError> {
    let mut n = 0;
    for room in hub.rooms().all() {
        let due: Vec<(String, i64)> = fleet
            .run(
                redis::cmd("ZRANGE")
                    .arg(keys::deadlines(&room.id))
                    .arg(0)
                    .arg(-1)
                    .arg("WITHSCORES"),
            )
            .await?;
        for (order, at_ms) in due {
            if let Some((h, number)) = split_order_id(&order) {
                if h == &*fleet.hub_id {
                    hub.rooms()
                        .deadlines
                        .push(crate::rooms::deadlines::Deadline {
                            at_ms,
                            order: number,
                            room: room.id.clone(),
                        });
                    n += 1;
                }
            }
        }
    }
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_round_trip() {
        let o = crate::rooms::requests::tests::order(&Arc::from("u1"), &Arc::from("q"));
        let mut o = (*o).clone();
        o.pay_by_ms = Some(1_700_000_060_000);
        o.ts_ms = 1_700_000_000_000;
        let e = Entry::decode(&Entry::placed(&o)).unwrap();
        assert_eq!(e.status, OrderStatus::Unpaid);
        assert_eq!((e.qty, e.amount_fen, &*e.user), (o.qty, o.amount_fen, "u1"));
        assert_eq!(e.pay_by_ms, o.pay_by_ms);
        assert_eq!(e.paid_ms, None);
        o.pay_by_ms = None;
        let e = Entry::decode(&Entry::placed(&o)).unwrap();
        assert_eq!((e.status, e.paid_ms), (OrderStatus::Paid, Some(o.ts_ms)));
        assert_eq!(Entry::decode("X|a|u|1|2||3|"), None);
        assert_eq!(Entry::decode("U|a|u|1|2||3"), None);
    }

    #[test]
    fn only_fleet_order_ids_name_orders() {
        assert_eq!(split_order_id("east-1:O42"), Some(("east-1", 42)));
        for bad in [
            "O42",
            "east-1:O042",
            "east-1:O",
            ":O4",
            "e:st:O4",
            "east-1:O+4",
        ] {
            assert_eq!(split_order_id(bad), None, "{bad}");
        }
    }

    #[test]
    fn claim_replies_parse() {
        let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<Vec<_>>();
        let entry = "U|A|u|1|990|5000|1000|";
        assert_eq!(ClaimReply::parse(&s(&["moving"])), Ok(ClaimReply::Moving));
        assert!(matches!(
            ClaimReply::parse(&s(&["claimed", entry, "paid"])),
            Ok(ClaimReply::Claimed(e, m)) if m == "paid" && e.amount_fen == 990
        ));
        assert_eq!(
            ClaimReply::parse(&s(&["reused", "h:O1"])),
            Ok(ClaimReply::Reused("h:O1".into()))
        );
        assert!(ClaimReply::parse(&s(&["refused"])).is_err());
        assert!(ClaimReply::parse(&s(&["what"])).is_err());
    }
}

//! Buyer connections: connecting many, the steady load loop (open or closed), and the
//! flash-sale buyer that buys once when the sale opens.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use serde::Deserialize;
use tokio::sync::{watch, Semaphore};
use tokio_tungstenite::tungstenite::Message;

use crate::ctx::{Ctx, CONNECT_TIMEOUT};
use crate::net::{connect_ws, Target, Ws};
use crate::record::{Outcome, Recorder, Simple};

/// An open buyer socket that has received its `hello`.
pub struct Conn {
    pub ws: Ws,
    pub idx: usize,
    pub user: Arc<str>,
}

/// An accepted buy as its ack told it.
#[derive(Debug, Clone)]
pub struct OkAck {
    pub order: String,
    pub sku: String,
    pub qty: u64,
    pub amount_fen: u64,
    pub user: Arc<str>,
    pub req: String,
    /// When its ack came.
    pub at: Instant,
}

/// The fields of server frames this tool reads; everything else is skipped.
#[derive(Debug, Deserialize)]
pub struct Frame {
    pub op: String,
    #[serde(default)]
    pub req: Option<String>,
    #[serde(default)]
    pub ok: Option<bool>,
    #[serde(default)]
    pub order: Option<String>,
    #[serde(default)]
    pub error: Option<String>,
    #[serde(default)]
    pub sku: Option<String>,
    #[serde(default)]
    pub qty: Option<u64>,
    #[serde(default)]
    pub amount_fen: Option<u64>,
    #[serde(default)]
    pub state: Option<String>,
    /// A sale's opening time (`sale` pushes).
    #[serde(default)]
    pub opens_at_ms: Option<i64>,
    /// An order's status (v2 acks and `order` pushes).
    #[serde(default)]
    pub status: Option<String>,
    #[serde(default)]
    pub pay_by_ms: Option<i64>,
    /// Units left (acks and `stock` pushes).
    #[serde(default)]
    pub left: Option<u64>,
}

/// Connects `n` sockets (at most `--connect-concurrency` at once). `path(i)` is socket i's
/// path and query; with `want_hello` a socket counts as connected once its `hello` came.
/// Failed sockets are counted in the context by reason; the rest come back in index order.
pub async fn connect_many(
    ctx: &Arc<Ctx>,
    target: &Target,
    n: usize,
    path: impl Fn(usize) -> (Arc<str>, String),
    want_hello: bool,
    connect_times: &Arc<Simple>,
) -> Vec<Conn> {
    let sem = Arc::new(Semaphore::new(ctx.common.connect_concurrency.max(1)));
    let mut set = tokio::task::JoinSet::new();
    ctx.warn_fds(n);
    ctx.pb.set_length(n as u64);
    ctx.pb.set_position(0);
    for idx in 0..n {
        if ctx.past_deadline() {
            ctx.cut_short.store(true, Ordering::Relaxed);
            break;
        }
        let permit = sem.clone().acquire_owned().await.expect("semaphore open");
        let (user, p) = path(idx);
        let (ctx, target, times) = (ctx.clone(), target.clone(), connect_times.clone());
        set.spawn(async move {
            let _permit = permit;
            let t = Instant::now();
            let res = connect_ws(&target, ctx.source(idx), &p, CONNECT_TIMEOUT).await;
            let mut ws = match res {
                Ok(ws) => ws,
                Err(reason) => {
                    ctx.conn_error(&reason);
                    return None;
                }
            };
            if want_hello {
                if let Err(reason) = wait_hello(&mut ws).await {
                    ctx.conn_error(&reason);
                    return None;
                }
            }
            times.record(t.elapsed().as_micros() as u64);
            ctx.conn_opened();
            ctx.pb.inc(1);
            Some(Conn { ws, idx, user })
        });
    }
    let mut out = Vec::with_capacity(n);
    while let Some(r) = set.join_next().await {
        if let Ok(Some(c)) = r {
            out.push(c);
        }
    }
    out.sort_by_key(|c| c.idx);
    out
}

pub(crate) async fn wait_hello(ws: &mut Ws) -> Result<(), String> {
    let fut = async {
        // The hello comes first; tolerate a few pushes before it all the same.
        for _ in 0..16 {
            match ws.next().await {
                Some(Ok(Message::Text(t))) => {
                    if let Ok(f) = serde_json::from_str::<Frame>(&t) {
                        if f.op == "hello" {
                            return Ok(());
                        }
                    }
                }
                Some(Ok(Message::Close(c))) => {
                    return Err(format!(
                        "closed before hello: {}",
                        c.map(|c| format!("{} {}", u16::from(c.code), c.reason))
                            .unwrap_or_default()
                    ))
                }
                Some(Ok(_)) => {}
                Some(Err(e)) => return Err(format!("broken before hello: {e}")),
                None => return Err("closed before hello".into()),
            }
        }
        Err("no hello among the first 16 frames".into())
    };
    tokio::time::timeout(CONNECT_TIMEOUT, fut)
        .await
        .unwrap_or_else(|_| Err(format!("no hello within {} s", CONNECT_TIMEOUT.as_secs())))
}

/// Closes a socket politely, briefly.
pub async fn close(ctx: &Ctx, mut ws: Ws) {
    let _ = tokio::time::timeout(Duration::from_secs(2), ws.close(None)).await;
    ctx.conn_closed();
}

#[derive(Debug, Clone, Copy)]
pub enum Mode {
    /// Each connection sends one buy every `interval`, starting at its phase offset.
    Open { interval: Duration, conns: usize },
    /// Each connection keeps this many buys waiting for their acks.
    Closed { in_flight: usize },
}

/// What a load loop does.
pub struct Plan {
    pub t0: Instant,
    /// No new buys from then on.
    pub end: Instant,
    /// Acks not in by then are timeouts.
    pub drain_until: Instant,
    pub mode: Mode,
    pub skus: Vec<String>,
    /// Price per SKU, to check `amount_fen` (unknown against the echo server).
    pub prices: Option<HashMap<String, u64>>,
    pub qty: u64,
    pub req_prefix: String,
    /// When given, ok acks go here as they come (for checks while the load runs) instead of
    /// into the connection's result.
    pub sink: Option<Arc<Mutex<Vec<OkAck>>>>,
    /// Every this many buys, one is sent twice in a row with the same req (0: never): both
    /// answers must be the same order (idempotency while the first is in flight).
    pub dup_every: u64,
    /// When given, every connection asks the kernel to stamp what arrives, and each answer's
    /// latency by its arrival (the same start as `latency`, without the time the answer then
    /// waited in this tool's own queue) is added here when the connection ends.
    pub arrival: Option<Arc<Simple>>,
}

/// A connection's share of the results.
#[derive(Default)]
pub struct ConnResult {
    pub oks: Vec<OkAck>,
    /// (user, req) of buys sent but never answered.
    pub timed_out: Vec<(Arc<str>, String)>,
    pub sent: u64,
}

/// Most buys one connection may have waiting in the open loop; beyond it sending pauses
/// (and the pause shows in the latency, which counts from the intended send time).
const MAX_PENDING: usize = 20_000;
/// Most frames written in one go before reading again.
const MAX_BATCH: usize = 64;

fn buy_frame(prefix: &str, idx: usize, seq: u64, sku: &str, qty: u64) -> String {
    format!(r#"{{"op":"buy","req":"{prefix}-{idx}-{seq}","sku":"{sku}","qty":{qty}}}"#)
}

/// The seq of a req this connection sent, if it is one.
fn req_seq(req: &str, prefix: &str, idx: usize) -> Option<u64> {
    let rest = req.strip_prefix(prefix)?.strip_prefix('-')?;
    let (i, s) = rest.split_once('-')?;
    if i.parse::<usize>().ok()? != idx {
        return None;
    }
    s.parse().ok()
}

/// Checks an ack against the buy it answers; returns the accepted order when ok.
#[allow(clippy::too_many_arguments)]
fn judge_ack(
    ctx: &Ctx,
    f: Frame,
    sku: &str,
    qty: u64,
    price: Option<u64>,
    user: &Arc<str>,
    latency_us: u64,
    at: Instant,
    rec: &Recorder,
) -> Option<OkAck> {
    let req = f.req.clone().unwrap_or_default();
    if f.ok == Some(true) {
        rec.record(at, latency_us, Outcome::Ok);
        let Some(order) = f.order else {
            ctx.anomaly(format!("ok ack without an order id (req {req})"));
            return None;
        };
        if f.sku.as_deref() != Some(sku) || f.qty != Some(qty) {
            ctx.anomaly(format!(
                "ack for {req}: sku/qty {:?}/{:?}, sent {sku}/{qty}",
                f.sku, f.qty
            ));
        }
        let amount = f.amount_fen.unwrap_or(0);
        if let Some(p) = price {
            if amount != p * qty {
                ctx.anomaly(format!(
                    "ack for {req}: amount_fen {amount}, expected {}",
                    p * qty
                ));
            }
        }
        Some(OkAck {
            order,
            sku: sku.to_owned(),
            qty,
            amount_fen: amount,
            user: user.clone(),
            req,
            at,
        })
    } else {
        let code = f.error.as_deref().unwrap_or("(no error code)");
        rec.record(at, latency_us, Outcome::Rejected(code));
        None
    }
}

/// The steady load loop of one connection; returns when the plan ends and acks are in (or
/// the drain time passed, or the socket closed).
pub async fn run_load(
    ctx: Arc<Ctx>,
    conn: Conn,
    plan: Arc<Plan>,
    rec: Arc<Recorder>,
) -> ConnResult {
    let Conn { mut ws, idx, user } = conn;
    let mut out = ConnResult::default();
    let mut pending: HashMap<u64, Instant> = HashMap::new();
    // Repeated buys: seq → the first answer once it came (Ok(order) or Err(code)).
    let mut dups: HashMap<u64, Option<Result<String, String>>> = HashMap::new();
    let is_dup = |seq: u64| plan.dup_every > 0 && seq % plan.dup_every == plan.dup_every - 1;
    let mut seq: u64 = 0;
    let k = plan.skus.len().max(1) as u64;
    let sku_of = |seq: u64| plan.skus[((seq + idx as u64) % k) as usize].as_str();
    let mut next_due = match plan.mode {
        Mode::Open { interval, conns } => {
            plan.t0 + interval.mul_f64(idx as f64 / conns.max(1) as f64)
        }
        Mode::Closed { .. } => plan.t0,
    };
    let mut started = false;
    let mut alive = true;
    // By arrival: kept here and added to the plan's histogram at the end (one lock a run).
    let mut arrival = plan.arrival.as_ref().map(|_| crate::record::hist(3));
    if arrival.is_some() {
        // Without the stamps (a kernel that refuses them) the histogram stays empty.
        let _ = ws.get_mut().stamp_arrivals();
    }
    'run: loop {
        let now = Instant::now();
        let sending = now < plan.end;
        if !sending && ((pending.is_empty() && dups.is_empty()) || now >= plan.drain_until) {
            break;
        }
        let wake = match (sending, plan.mode) {
            (true, Mode::Open { .. }) if pending.len() < MAX_PENDING => next_due.min(plan.end),
            (true, Mode::Closed { .. }) if !started => plan.t0,
            (true, _) => plan.end,
            (false, _) => plan.drain_until,
        };
        tokio::select! {
            msg = ws.next() => {
                let text = match msg {
                    Some(Ok(Message::Text(t))) => t,
                    Some(Ok(Message::Close(c))) => {
                        ctx.disconnect(&format!("server closed: {}", c.map(|c| format!("{} {}", u16::from(c.code), c.reason)).unwrap_or_else(|| "no code".into())));
                        alive = false;
                        break 'run;
                    }
                    Some(Ok(_)) => continue,
                    Some(Err(e)) => {
                        ctx.disconnect(&format!("broken: {e}"));
                        alive = false;
                        break 'run;
                    }
                    None => {
                        ctx.disconnect("closed without a close frame");
                        alive = false;
                        break 'run;
                    }
                };
                let at = Instant::now();
                let f: Frame = match serde_json::from_str(&text) {
                    Ok(f) => f,
                    Err(_) => {
                        ctx.anomaly(format!("not a frame: {:.120}", text.as_str()));
                        continue;
                    }
                };
                match f.op.as_str() {
                    "ack" | "error" => {
                        let s = f.req.as_deref().and_then(|r| req_seq(r, &plan.req_prefix, idx));
                        let answer = match (&f.ok, &f.order) {
                            (Some(true), Some(o)) => Ok(o.clone()),
                            _ => Err(f.error.clone().unwrap_or_else(|| f.op.clone())),
                        };
                        // The second answer to a repeated buy: must match the first.
                        if let Some(Some(first)) = s.and_then(|s| dups.get(&s)) {
                            if (first.is_ok() || answer.is_ok()) && *first != answer {
                                ctx.anomaly(format!("idempotency: req {} answered {first:?} then {answer:?}", f.req.as_deref().unwrap_or("")));
                            }
                            dups.remove(&s.unwrap_or_default());
                            continue;
                        }
                        let Some((s, t)) = s.and_then(|s| pending.remove(&s).map(|t| (s, t))) else {
                            ctx.anomaly(format!("{} for a req not in flight: {:.160}", f.op, text.as_str()));
                            continue;
                        };
                        if let Some(first) = dups.get_mut(&s) {
                            *first = Some(answer);
                        }
                        let lat = at.saturating_duration_since(t).as_micros() as u64;
                        if let (Some(h), Some(arrived)) = (arrival.as_mut(), ws.get_ref().last_arrival_ns()) {
                            // What the answer waited here after it arrived, by the realtime
                            // clock of the stamp, comes off the latency; only that short span
                            // is on the other clock.
                            let waited_us = crate::net::now_ns().saturating_sub(arrived) / 1_000;
                            h.saturating_record(lat.saturating_sub(waited_us).clamp(1, crate::record::MAX_US));
                        }
                        if f.op == "error" {
                            ctx.anomaly(format!("error frame for a valid buy: {:.160}", text.as_str()));
                            rec.record(at, lat, Outcome::Rejected("error_frame"));
                        } else {
                            let sku = sku_of(s);
                            let price = plan.prices.as_ref().and_then(|p| p.get(sku).copied());
                            if let Some(ok) = judge_ack(&ctx, f, sku, plan.qty, price, &user, lat, at, &rec) {
                                match &plan.sink {
                                    Some(sink) => sink.lock().unwrap().push(ok),
                                    None => out.oks.push(ok),
                                }
                            }
                        }
                        if let Mode::Closed { .. } = plan.mode {
                            if Instant::now() < plan.end {
                                let frame = buy_frame(&plan.req_prefix, idx, seq, sku_of(seq), plan.qty);
                                pending.insert(seq, Instant::now());
                                if is_dup(seq) {
                                    dups.insert(seq, None);
                                    let _ = ws.feed(Message::text(frame.clone())).await;
                                }
                                seq += 1;
                                out.sent += 1;
                                if ws.send(Message::text(frame)).await.is_err() {
                                    ctx.disconnect("send failed");
                                    alive = false;
                                    break 'run;
                                }
                            }
                        }
                    }
                    _ => {} // hello, stock, sale, pong
                }
            }
            _ = tokio::time::sleep_until(wake.into()) => {
                let now = Instant::now();
                if now >= plan.end {
                    continue;
                }
                let mut n = 0;
                match plan.mode {
                    Mode::Open { interval, .. } => {
                        while next_due <= now && next_due < plan.end && n < MAX_BATCH && pending.len() < MAX_PENDING {
                            let frame = buy_frame(&plan.req_prefix, idx, seq, sku_of(seq), plan.qty);
                            // Latency counts from when the buy should have gone out.
                            pending.insert(seq, next_due);
                            if is_dup(seq) {
                                dups.insert(seq, None);
                                let _ = ws.feed(Message::text(frame.clone())).await;
                            }
                            seq += 1;
                            next_due += interval;
                            n += 1;
                            if ws.feed(Message::text(frame)).await.is_err() {
                                ctx.disconnect("send failed");
                                alive = false;
                                break 'run;
                            }
                        }
                    }
                    Mode::Closed { in_flight } => {
                        if !started && now >= plan.t0 {
                            started = true;
                            for _ in 0..in_flight {
                                let frame = buy_frame(&plan.req_prefix, idx, seq, sku_of(seq), plan.qty);
                                pending.insert(seq, Instant::now());
                                if is_dup(seq) {
                                    dups.insert(seq, None);
                                    let _ = ws.feed(Message::text(frame.clone())).await;
                                }
                                seq += 1;
                                n += 1;
                                if ws.feed(Message::text(frame)).await.is_err() {
                                    ctx.disconnect("send failed");
                                    alive = false;
                                    break 'run;
                                }
                            }
                        }
                    }
                }
                out.sent += n as u64;
                if n > 0 && ws.flush().await.is_err() {
                    ctx.disconnect("send failed");
                    alive = false;
                    break 'run;
                }
            }
        }
    }
    if let (Some(h), Some(all)) = (&arrival, &plan.arrival) {
        all.merge(h);
    }
    let unanswered = dups.values().filter(|a| a.is_some()).count();
    if unanswered > 0 {
        ctx.anomaly(format!("{unanswered} repeated buys got only one answer"));
    }
    out.timed_out = pending
        .keys()
        .map(|&s| (user.clone(), format!("{}-{idx}-{s}", plan.req_prefix)))
        .collect();
    if alive {
        close(&ctx, ws).await;
    } else {
        ctx.conn_closed();
    }
    out
}

/// Shared figures of a flash sale's buyers.
#[derive(Default)]
pub struct SpikeShared {
    /// When the open call was sent.
    pub t_open: std::sync::OnceLock<Instant>,
    /// The same, by the clock of the kernel's arrival stamps (ns since the Unix epoch).
    pub t_open_ns: std::sync::OnceLock<u64>,
    /// With `--trigger clock`: when the sale opens (Unix ms), which buyers wait for.
    pub opens_at_ms: std::sync::OnceLock<i64>,
    /// When each buyer read the open push, µs after the open call was sent.
    pub push_us: Mutex<Vec<u64>>,
    /// When the open push arrived at each buyer's socket by the kernel's stamp, µs after the
    /// open call was sent.
    pub push_arrival_us: Mutex<Vec<u64>>,
    pub missed_push: AtomicU64,
    /// Each answer's latency by the kernel's stamp of its arrival instead of this tool's read
    /// (`buys.latency_arrival`): the same buys without the client's own queue.
    pub arrival: Simple,
}

impl SpikeShared {
    /// A buyer read the open push now; `arrived_ns` is the kernel's stamp of its arrival.
    /// Returns that stamp, µs after the open call, if there is one.
    fn note_push(&self, arrived_ns: Option<u64>) -> Option<u64> {
        let t0 = self.t_open.get()?;
        self.push_us
            .lock()
            .unwrap()
            .push(t0.elapsed().as_micros() as u64);
        let at = arrived_ns?.saturating_sub(*self.t_open_ns.get()?) / 1_000;
        self.push_arrival_us.lock().unwrap().push(at);
        Some(at)
    }
}

pub struct SpikeResult {
    pub user: Arc<str>,
    pub res: ConnResult,
    /// When the ack came (any ack), and whether it was ok.
    pub acked_at: Option<(Instant, bool)>,
    /// When the open push arrived (kernel stamp), µs after the open call.
    pub push_arrival_us: Option<u64>,
}

/// One flash-sale buyer: waits for the go (the `sale` open push for `sku`, or `go` turning true),
/// sends one buy, waits for its ack.
#[allow(clippy::too_many_arguments)]
pub async fn spike_buyer(
    ctx: Arc<Ctx>,
    conn: Conn,
    sku: Arc<str>,
    qty: u64,
    price: Option<u64>,
    trigger: crate::cli::Trigger,
    mut go: watch::Receiver<bool>,
    shared: Arc<SpikeShared>,
    rec: Arc<Recorder>,
    req_prefix: Arc<str>,
    hold: Arc<tokio::sync::Barrier>,
) -> SpikeResult {
    // Every buyer keeps its socket until all have their answers, as a buyer's app stays in the
    // room after buying: closing at once would put 15,000 close handshakes into the spike.
    let hold = || async {
        let _ = tokio::time::timeout_at(ctx.deadline.into(), hold.wait()).await;
    };
    let use_push = trigger == crate::cli::Trigger::Push;
    let clock = trigger == crate::cli::Trigger::Clock;
    let Conn { mut ws, idx, user } = conn;
    // Without the stamps (a kernel that refuses them) only `latency_arrival` stays empty.
    let _ = ws.get_mut().stamp_arrivals();
    let mut out = SpikeResult {
        user: user.clone(),
        res: ConnResult::default(),
        acked_at: None,
        push_arrival_us: None,
    };
    let wait_until = ctx.deadline;
    // Phase 1: wait for the go.
    let mut alive = true;
    let go_already = *go.borrow_and_update();
    loop {
        if go_already {
            break;
        }
        tokio::select! {
            msg = ws.next() => match msg {
                Some(Ok(Message::Text(t))) => {
                    if let Ok(f) = serde_json::from_str::<Frame>(&t) {
                        if !clock && f.op == "sale" && f.sku.as_deref() == Some(&*sku) && f.state.as_deref() == Some("open") {
                            out.push_arrival_us = shared.note_push(ws.get_ref().last_arrival_ns());
                            if use_push {
                                break;
                            }
                        }
                        if clock && f.op == "sale" && f.sku.as_deref() == Some(&*sku) && f.state.as_deref() == Some("scheduled") {
                            if let (Some(at), Some(want)) = (f.opens_at_ms, shared.opens_at_ms.get()) {
                                if at == *want {
                                    out.push_arrival_us = shared.note_push(ws.get_ref().last_arrival_ns());
                                    // Counts down by its own clock, as an app would.
                                    let wait = (at - crate::net::now_ns() as i64 / 1_000_000).max(0);
                                    tokio::time::sleep(Duration::from_millis(wait as u64)).await;
                                    break;
                                }
                            }
                        }
                    }
                }
                Some(Ok(Message::Close(_))) | None | Some(Err(_)) => {
                    ctx.disconnect("closed while waiting for the sale");
                    alive = false;
                    break;
                }
                Some(Ok(_)) => {}
            },
            changed = go.changed() => {
                // A go, or no go can come any more: buy now.
                if changed.is_err() || *go.borrow() {
                    // In push mode the go is the fallback for a push that did not come.
                    if (use_push || clock) && changed.is_ok() {
                        shared.missed_push.fetch_add(1, Ordering::Relaxed);
                    }
                    break;
                }
            }
            _ = tokio::time::sleep_until(wait_until.into()) => {
                ctx.cut_short.store(true, Ordering::Relaxed);
                break;
            }
        }
    }
    if !alive {
        hold().await;
        ctx.conn_closed();
        return out;
    }
    if ctx.past_deadline() {
        hold().await;
        close(&ctx, ws).await;
        return out;
    }
    // Phase 2: one buy, one ack.
    let req = format!("{req_prefix}-{idx}-0");
    let frame = buy_frame(&req_prefix, idx, 0, &sku, qty);
    let sent = Instant::now();
    let sent_ns = crate::net::now_ns();
    out.res.sent = 1;
    if ws.send(Message::text(frame)).await.is_err() {
        ctx.disconnect("send failed");
        out.res.timed_out.push((user.clone(), req));
        hold().await;
        ctx.conn_closed();
        return out;
    }
    let until = (sent + ctx.common.ack_timeout).min(ctx.deadline);
    loop {
        tokio::select! {
            msg = ws.next() => match msg {
                Some(Ok(Message::Text(t))) => {
                    let at = Instant::now();
                    let Ok(f) = serde_json::from_str::<Frame>(&t) else {
                        ctx.anomaly(format!("not a frame: {:.120}", t.as_str()));
                        continue;
                    };
                    if f.op == "error" {
                        ctx.anomaly(format!("error frame for a valid buy: {:.160}", t.as_str()));
                    }
                    if trigger == crate::cli::Trigger::Response && f.op == "sale" && f.sku.as_deref() == Some(&*sku) && f.state.as_deref() == Some("open") {
                        out.push_arrival_us = shared.note_push(ws.get_ref().last_arrival_ns());
                    }
                    if (f.op == "ack" || f.op == "error") && f.req.as_deref() == Some(req.as_str()) {
                        let lat = at.saturating_duration_since(sent).as_micros() as u64;
                        if let Some(arrived) = ws.get_ref().last_arrival_ns() {
                            shared.arrival.record(arrived.saturating_sub(sent_ns) / 1_000);
                        }
                        let ok = f.ok == Some(true);
                        if f.op == "error" {
                            rec.record(at, lat, Outcome::Rejected("error_frame"));
                        } else if let Some(a) = judge_ack(&ctx, f, &sku, qty, price, &user, lat, at, &rec) {
                            out.res.oks.push(a);
                        }
                        out.acked_at = Some((at, ok));
                        break;
                    } else if f.op == "ack" {
                        ctx.anomaly(format!("ack for a req not sent: {:.160}", t.as_str()));
                    }
                }
                Some(Ok(Message::Close(_))) | None | Some(Err(_)) => {
                    ctx.disconnect("closed while waiting for an ack");
                    alive = false;
                    break;
                }
                Some(Ok(_)) => {}
            },
            _ = tokio::time::sleep_until(until.into()) => break,
        }
    }
    if out.acked_at.is_none() {
        out.res.timed_out.push((user.clone(), req));
    }
    hold().await;
    if alive {
        close(&ctx, ws).await;
    } else {
        ctx.conn_closed();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reqs_round_trip() {
        let f = buy_frame("abc", 12, 345, "A1", 2);
        let v: serde_json::Value = serde_json::from_str(&f).unwrap();
        assert_eq!(v["req"], "abc-12-345");
        assert_eq!(v["qty"], 2);
        assert_eq!(req_seq("abc-12-345", "abc", 12), Some(345));
        assert_eq!(req_seq("abc-13-345", "abc", 12), None);
        assert_eq!(req_seq("abd-12-345", "abc", 12), None);
    }
}

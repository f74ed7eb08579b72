//! `payments`: how many payment notices a second the server makes durable. K unpaid orders are
//! placed first (a SKU with a big stock, no per-user limit, and a pay timeout long enough that
//! none expires), their buyer sockets closed, and then C HTTP connections send one signed
//! notice per order, each connection its next one as soon as the last is answered. The notices
//! are bounded by K and by the run's time; the paid-order checks run on the room afterwards.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Map};
use tokio_tungstenite::tungstenite::Message;

use crate::buyer::{close, connect_many, Conn, Frame};
use crate::cli::PaymentsArgs;
use crate::ctx::Ctx;
use crate::invariants::Check;
use crate::paid_checks::{self, ClientLog, Placed, ServerView};
use crate::pay::{PayKind, Payer, PaymentLog};
use crate::record::{Outcome, Recorder, Simple};
use crate::scenario;

/// The floor issue 21 sets for durable notices a second.
const FLOOR_PER_S: f64 = 20_000.0;
/// Time kept after the notices for the checks.
const CHECK_RESERVE: Duration = Duration::from_secs(30);

/// What placing on one socket gave.
#[derive(Default)]
struct Placing {
    placed: Vec<Placed>,
    timed_out: Vec<(String, String)>,
    sent: u64,
}

/// Places `quota` buys of one unit on one socket, `in_flight` at a time.
#[allow(clippy::too_many_arguments)]
async fn place(
    ctx: Arc<Ctx>,
    conn: Conn,
    quota: usize,
    in_flight: usize,
    sku: Arc<str>,
    prefix: Arc<str>,
    rec: Arc<Recorder>,
    end: Instant,
) -> Placing {
    let Conn { mut ws, idx, user } = conn;
    let mut out = Placing::default();
    let mut pending: HashMap<String, Instant> = HashMap::new();
    let mut next = 0;
    let mut alive = true;
    'run: loop {
        let mut fed = false;
        while pending.len() < in_flight.max(1) && next < quota && Instant::now() < end {
            let req = format!("{prefix}-{idx}-{next}");
            let frame = format!(r#"{{"op":"buy","req":"{req}","sku":"{sku}","qty":1}}"#);
            next += 1;
            out.sent += 1;
            pending.insert(req, Instant::now());
            if ws.feed(Message::text(frame)).await.is_err() {
                ctx.disconnect("send failed");
                alive = false;
                break 'run;
            }
            fed = true;
        }
        if fed && ws.flush().await.is_err() {
            ctx.disconnect("send failed");
            alive = false;
            break;
        }
        if pending.is_empty() {
            break;
        }
        let oldest = pending.values().min().copied().unwrap_or_else(Instant::now);
        let until = (oldest + ctx.common.ack_timeout).min(end + ctx.common.ack_timeout);
        tokio::select! {
            msg = ws.next() => {
                let text = match msg {
                    Some(Ok(Message::Text(t))) => t,
                    Some(Ok(_)) => continue,
                    _ => {
                        ctx.disconnect("closed while placing orders");
                        alive = false;
                        break;
                    }
                };
                let at = Instant::now();
                let Ok(f) = serde_json::from_str::<Frame>(&text) else {
                    ctx.anomaly(format!("not a frame: {:.120}", text.as_str()));
                    continue;
                };
                if f.op != "ack" && f.op != "error" {
                    continue;
                }
                let Some((req, sent)) = f.req.as_ref().and_then(|r| pending.remove_entry(r)) else {
                    ctx.anomaly(format!("{} for a req not in flight: {:.160}", f.op, text.as_str()));
                    continue;
                };
                let lat = at.saturating_duration_since(sent).as_micros() as u64;
                match (f.ok, f.order) {
                    (Some(true), Some(order)) => {
                        rec.record(at, lat, Outcome::Ok);
                        out.placed.push(Placed {
                            order,
                            sku: sku.to_string(),
                            qty: 1,
                            amount_fen: f.amount_fen.unwrap_or(0),
                            user: user.to_string(),
                            req,
                            status: f.status,
                            pay_by_ms: f.pay_by_ms,
                        });
                    }
                    _ => {
                        let code = f.error.unwrap_or_else(|| f.op.clone());
                        rec.record(at, lat, Outcome::Rejected(&code));
                    }
                }
            }
            _ = tokio::time::sleep_until(until.into()) => break,
        }
    }
    out.timed_out = pending.into_keys().map(|r| (user.to_string(), r)).collect();
    if alive {
        close(&ctx, ws).await;
    } else {
        ctx.conn_closed();
    }
    out
}

/// Sends one notice per placed order from `connections` concurrent senders, each its next as
/// soon as the last is answered, until all are sent or `end`; returns the log and the span
/// from the first send to the last answer. Payment ids are `<req>-<tag><i>`.
async fn notify_all(
    ctx: &Arc<Ctx>,
    payer: &Payer,
    placed: &Arc<Vec<Placed>>,
    connections: usize,
    end: Instant,
    rec: &Arc<Recorder>,
    tag: &'static str,
) -> (Vec<PaymentLog>, (Instant, Instant)) {
    let next = Arc::new(AtomicUsize::new(0));
    let log = Arc::new(Mutex::new(Vec::with_capacity(placed.len())));
    let t0 = Instant::now();
    let mut workers = tokio::task::JoinSet::new();
    for _ in 0..connections {
        let (payer, placed, next, log, rec, ctx) = (
            payer.clone(),
            placed.clone(),
            next.clone(),
            log.clone(),
            rec.clone(),
            ctx.clone(),
        );
        workers.spawn(async move {
            let mut mine = Vec::new();
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= placed.len() {
                    break;
                }
                if Instant::now() >= end {
                    ctx.cut_short.store(true, Ordering::Relaxed);
                    break;
                }
                let p = &placed[i];
                let id = format!("{}-{tag}{i}", p.req);
                let ans = payer.notify(&p.order, &id, p.amount_fen).await;
                let outcome = if ans.is_paid() {
                    Outcome::Ok
                } else if ans.http == 0 {
                    Outcome::Rejected("no_answer")
                } else {
                    Outcome::Rejected(&ans.code)
                };
                rec.record(Instant::now(), ans.latency_us, outcome);
                ctx.pb.inc(1);
                mine.push(PaymentLog {
                    order: p.order.clone(),
                    payment_id: id,
                    amount_fen: p.amount_fen,
                    kind: PayKind::OnTime,
                    answer: ans,
                });
            }
            log.lock().unwrap().extend(mine);
        });
    }
    while workers.join_next().await.is_some() {}
    let span = (t0, Instant::now());
    let log = std::mem::take(&mut *log.lock().unwrap());
    (log, span)
}

/// What [`place_all`] placed.
pub(crate) struct PlacedAll {
    pub placed: Vec<Placed>,
    pub timed_out: HashSet<(String, String)>,
    pub sent: u64,
    pub connected: usize,
    pub times: Arc<Simple>,
    /// From the first buy to the last answer.
    pub secs: f64,
}

/// Connects `connections` buyer sockets (users tagged `tag`) and places `orders` buys of one
/// unit of `sku` over them, `in_flight` at a time each, until `end`.
#[allow(clippy::too_many_arguments)]
pub(crate) async fn place_all(
    ctx: &Arc<Ctx>,
    target: &crate::net::Target,
    connections: usize,
    orders: usize,
    in_flight: usize,
    sku: &str,
    tag: &'static str,
    rec: &Arc<Recorder>,
    end: Instant,
) -> anyhow::Result<PlacedAll> {
    let times = Arc::new(Simple::new());
    ctx.pb
        .set_message(format!("connecting {connections} buyers"));
    let conns = connect_many(
        ctx,
        target,
        connections,
        scenario::buyer_path(ctx, false, tag)?,
        true,
        &times,
    )
    .await;
    let connected = conns.len();
    anyhow::ensure!(connected > 0, "no buyer could connect");
    ctx.pb.set_message(format!("placing {orders} orders"));
    let sku: Arc<str> = Arc::from(sku);
    let prefix: Arc<str> = Arc::from(format!("{}{tag}", ctx.run_id).as_str());
    let t_place = Instant::now();
    let mut set = tokio::task::JoinSet::new();
    for (i, c) in conns.into_iter().enumerate() {
        let quota = orders / connected + usize::from(i < orders % connected);
        set.spawn(place(
            ctx.clone(),
            c,
            quota,
            in_flight,
            sku.clone(),
            prefix.clone(),
            rec.clone(),
            end,
        ));
    }
    let mut placed = Vec::with_capacity(orders);
    let mut timed_out = HashSet::new();
    let mut sent = 0;
    while let Some(r) = set.join_next().await {
        if let Ok(p) = r {
            placed.extend(p.placed);
            timed_out.extend(p.timed_out);
            sent += p.sent;
        }
    }
    Ok(PlacedAll {
        placed,
        timed_out,
        sent,
        connected,
        times,
        secs: t_place.elapsed().as_secs_f64(),
    })
}

pub async fn payments(ctx: Arc<Ctx>, a: PaymentsArgs) -> anyhow::Result<i32> {
    let secret = ctx
        .common
        .payment_secret
        .clone()
        .context("payments needs --payment-secret (the server's, to sign payment notices)")?;
    anyhow::ensure!(
        a.orders > 0 && a.connections > 0 && a.buy_connections > 0,
        "--orders, --connections and --buy-connections must be at least 1"
    );
    scenario::setup_room(&ctx, &format!("load test payments {}", ctx.run_id)).await?;
    scenario::setup_paid_sku_opening(
        &ctx,
        &a.sku,
        a.price_fen,
        a.orders as u64,
        None,
        a.pay_timeout_s,
        None,
    )
    .await?;
    let sampler = ctx.spawn_sampler(Duration::from_millis(100));
    let target = ctx.target.clone();

    // 1. The orders.
    let buys = Recorder::new("buys", ctx.started, Duration::from_millis(100));
    ctx.add_recorder(&buys);
    let end = ctx.before_deadline(CHECK_RESERVE);
    let PlacedAll {
        placed,
        timed_out,
        sent,
        connected,
        times,
        secs: place_s,
    } = place_all(
        &ctx,
        &target,
        a.buy_connections,
        a.orders,
        a.in_flight,
        &a.sku,
        "n",
        &buys,
        end,
    )
    .await?;
    let bf = buys.finish(Instant::now());

    // 2. The notices, one per order, from C connections.
    let notices = Recorder::new("notices", ctx.started, Duration::from_millis(100));
    ctx.add_recorder(&notices);
    let payer = Payer::new(&target.http_base, &secret, &ctx.room, a.connections)?;
    let placed = Arc::new(placed);
    ctx.pb.set_length(placed.len() as u64);
    ctx.pb.set_position(0);
    ctx.pb.set_message("notices");
    ctx.hiccups.phase();
    let (log, pay_span) =
        notify_all(&ctx, &payer, &placed, a.connections, end, &notices, "q").await;
    let pay_hiccups = ctx.hiccups.phase();
    let nf = notices.finish(Instant::now());

    // 3. The checks.
    ctx.pb.set_message("checking");
    let server = crate::checkout::read_server(&ctx).await;
    sampler.store(true, Ordering::Relaxed);
    let stock = HashMap::from([(a.sku.clone(), a.orders as u64)]);
    let empty = HashSet::new();
    let mut checks = match &server {
        Ok(s) => paid_checks::check(
            &stock,
            &ClientLog {
                placed: &placed,
                timed_out: &timed_out,
                payments: &log,
                cancels: &[],
                pushes: &empty,
                expect_pushes: false,
                pay_timeout_ms: a.pay_timeout_s as i64 * 1000,
            },
            &ServerView {
                export: &s.export,
                feed: &s.feed,
                audit: &s.audit,
                stats: s.stats.as_ref(),
                read_at_ms: s.read_at_ms,
            },
        ),
        Err(e) => vec![Check::new(
            "server_reachable_for_checks",
            false,
            format!("{e:#}"),
        )],
    };
    checks.push(Check::new(
        "every_order_placed",
        placed.len() == a.orders,
        format!("{} of {} orders placed", placed.len(), a.orders),
    ));

    let ok = log.iter().filter(|p| p.answer.is_paid()).count();
    let secs = pay_span
        .1
        .duration_since(pay_span.0)
        .as_secs_f64()
        .max(1e-9);
    let durable = ok as f64 / secs;
    let mut results = Map::new();
    results.insert(
        "placing".into(),
        json!({
            "connections": scenario::connections_json(&ctx, a.buy_connections, connected, &times),
            "sent": sent,
            "placed": placed.len(),
            "timed_out": timed_out.len(),
            "rejections": bf.reasons,
            "orders_per_s": ((placed.len() as f64 / place_s.max(1e-9)) * 10.0).round() / 10.0,
            "latency": bf.latency_json(),
        }),
    );
    let mut nj = crate::checkout::payments_json(&log, &nf, Some(pay_span));
    nj["http_connections"] = json!(a.connections);
    nj["durable_per_s"] = json!((durable * 10.0).round() / 10.0);
    nj["floor_per_s"] = json!(FLOOR_PER_S);
    nj["meets_floor"] = json!(durable >= FLOOR_PER_S);
    nj["hiccups"] = pay_hiccups;
    results.insert("notices".into(), nj);
    let mut recs = vec![bf, nf];
    if a.against_echo {
        ctx.pb.set_message("the same notices to the echo");
        let addr = crate::pay_echo::spawn_in_process()?;
        let echo = Recorder::new("echo notices", ctx.started, Duration::from_millis(100));
        ctx.add_recorder(&echo);
        let payer = Payer::new(&format!("http://{addr}"), &secret, &ctx.room, a.connections)?;
        ctx.pb.set_position(0);
        let (elog, espan) = notify_all(
            &ctx,
            &payer,
            &placed,
            a.connections,
            ctx.before_deadline(CHECK_RESERVE / 2),
            &echo,
            "e",
        )
        .await;
        let ef = echo.finish(Instant::now());
        let eok = elog.iter().filter(|p| p.answer.is_paid()).count();
        let eper = eok as f64 / espan.1.duration_since(espan.0).as_secs_f64().max(1e-9);
        let mut ej = crate::checkout::payments_json(&elog, &ef, Some(espan));
        ej["address"] = json!(addr.to_string());
        results.insert("echo".into(), ej);
        let ratio = |x: f64, y: f64| (y > 0.0).then(|| ((x / y) * 100.0).round() / 100.0);
        results.insert(
            "livehub_vs_echo".into(),
            json!({
                "throughput_ratio": ratio(durable, eper),
                "p50_latency_ratio": ratio(recs[1].p(0.5), ef.p(0.5)),
                "p99_latency_ratio": ratio(recs[1].p(0.99), ef.p(0.99)),
                "note": "livehub figure / echo figure: the same notices from the same connections to a server that answers 200 at once",
            }),
        );
        recs.push(ef);
    }
    let params = json!({
        "orders": a.orders, "connections": a.connections, "against_echo": a.against_echo, "buy_connections": a.buy_connections,
        "in_flight": a.in_flight, "pay_timeout_s": a.pay_timeout_s, "price_fen": a.price_fen, "sku": a.sku,
    });
    Ok(scenario::finish(
        &ctx, "payments", params, results, checks, recs, &target,
    ))
}

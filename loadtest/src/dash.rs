//! Dashboard sockets: count dashboard snapshots and measure the delay from a snapshot's `ts_ms`
//! to its receipt here (same host, same wall clock).

use std::future::Future;
use std::sync::Arc;
use std::time::Instant;

use futures_util::StreamExt;
use serde::Deserialize;
use tokio_tungstenite::tungstenite::Message;

use crate::buyer::{close, Conn};
use crate::ctx::Ctx;
use crate::net::now_us;
use crate::record::{Outcome, Recorder};

#[derive(Deserialize)]
struct Snap {
    op: String,
    #[serde(default)]
    seq: Option<u64>,
    #[serde(default)]
    ts_ms: Option<i64>,
}

#[derive(Debug, Default, Clone)]
pub struct DashResult {
    /// Snapshots received inside the measuring window.
    pub in_window: u64,
    pub total: u64,
    /// Snapshots whose `seq` was lower than the previous one's.
    pub backwards: u64,
    /// Each `seq` higher than all before it, and when its snapshot came: when each order
    /// first showed on this socket.
    pub firsts: Vec<(u64, Instant)>,
}

impl DashResult {
    /// When this socket first showed a snapshot with `seq` at least `seq`.
    pub fn shown_at(&self, seq: u64) -> Option<Instant> {
        let i = self.firsts.partition_point(|&(s, _)| s < seq);
        self.firsts.get(i).map(|&(_, at)| at)
    }
}

/// Reads snapshots until `stop_at`; counts those received in `[w0, w1)`.
pub async fn run_dashboard(
    ctx: Arc<Ctx>,
    conn: Conn,
    w0: Instant,
    w1: Instant,
    stop_at: Instant,
    rec: Arc<Recorder>,
) -> DashResult {
    run_dashboard_until(
        ctx,
        conn,
        tokio::time::sleep_until(stop_at.into()),
        move |at, delay_us| {
            let inside = at >= w0 && at < w1;
            if inside {
                rec.record(at, delay_us, Outcome::Event);
            }
            inside
        },
    )
    .await
}

/// Reads snapshots until `stop` completes. Each pushed snapshot (not the one handed over on
/// connect) goes to `measure` with when it came and its delay from its `ts_ms` (µs); it
/// counts as in the window when `measure` says so.
pub async fn run_dashboard_until(
    ctx: Arc<Ctx>,
    conn: Conn,
    stop: impl Future<Output = ()>,
    mut measure: impl FnMut(Instant, u64) -> bool,
) -> DashResult {
    let Conn { mut ws, .. } = conn;
    tokio::pin!(stop);
    let mut out = DashResult::default();
    let mut last_seq: Option<u64> = None;
    let mut alive = true;
    loop {
        tokio::select! {
            msg = ws.next() => {
                let text = match msg {
                    Some(Ok(Message::Text(t))) => t,
                    Some(Ok(Message::Close(c))) => {
                        ctx.disconnect(&format!("dashboard closed by server: {}", c.map(|c| format!("{} {}", u16::from(c.code), c.reason)).unwrap_or_default()));
                        alive = false;
                        break;
                    }
                    Some(Ok(_)) => continue,
                    Some(Err(e)) => {
                        ctx.disconnect(&format!("dashboard broken: {e}"));
                        alive = false;
                        break;
                    }
                    None => {
                        ctx.disconnect("dashboard closed without a close frame");
                        alive = false;
                        break;
                    }
                };
                let at = Instant::now();
                let recv_us = now_us();
                let s: Snap = match serde_json::from_str(&text) {
                    Ok(s) => s,
                    Err(_) => {
                        ctx.anomaly(format!("dashboard: not a frame: {:.120}", text.as_str()));
                        continue;
                    }
                };
                if s.op != "snapshot" {
                    ctx.anomaly(format!("dashboard: unexpected op {}", s.op));
                    continue;
                }
                let (Some(seq), Some(ts)) = (s.seq, s.ts_ms) else {
                    ctx.anomaly("dashboard: snapshot without seq or ts_ms".into());
                    continue;
                };
                if last_seq.is_some_and(|l| seq < l) {
                    out.backwards += 1;
                    ctx.anomaly(format!("dashboard: snapshot seq went from {} to {seq}", last_seq.unwrap_or(0)));
                }
                if out.firsts.last().is_none_or(|&(high, _)| seq > high) {
                    out.firsts.push((seq, at));
                }
                last_seq = Some(seq);
                out.total += 1;
                // The first snapshot is the current one handed over on connect, however old:
                // only pushes inside the window measure the feed.
                if out.total > 1 && measure(at, (recv_us - ts * 1000).max(0) as u64) {
                    out.in_window += 1;
                }
            }
            _ = &mut stop => break,
        }
    }
    if alive {
        close(&ctx, ws).await;
    } else {
        ctx.conn_closed();
    }
    out
}

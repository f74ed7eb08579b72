//! Command-line flags.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{ArgGroup, Args, Parser, Subcommand, ValueEnum};

/// Load tests for livehub: flash-sale spikes, steady buy load, connection ramps, dashboard
/// fan-out and soaks, each followed by invariant checks against the server's REST API.
#[derive(Debug, Parser)]
#[command(name = "livehub-loadtest", version, about)]
pub struct Cli {
    #[command(flatten)]
    pub common: Common,
    #[command(subcommand)]
    pub cmd: Cmd,
}

/// Flags every scenario takes (they may come before or after the subcommand).
#[derive(Debug, Clone, Args)]
pub struct Common {
    /// The livehub server (http only).
    #[arg(
        long,
        global = true,
        env = "LIVEHUB_URL",
        default_value = "http://127.0.0.1:8080"
    )]
    pub url: String,
    /// Admin bearer token (rooms, SKUs, the orders export).
    #[arg(
        long,
        global = true,
        env = "LIVEHUB_ADMIN_TOKEN",
        hide_env_values = true
    )]
    pub admin_token: Option<String>,
    /// Viewer bearer token (stats, audit, dashboards); defaults to the admin token.
    #[arg(
        long,
        global = true,
        env = "LIVEHUB_VIEWER_TOKEN",
        hide_env_values = true
    )]
    pub viewer_token: Option<String>,
    /// HS256 secret to sign buyer JWTs with (claims `sub`, `exp`, `room`).
    #[arg(
        long,
        global = true,
        env = "LIVEHUB_BUYER_SECRET",
        hide_env_values = true
    )]
    pub buyer_secret: Option<String>,
    /// Secret that signs payment notices (`POST /api/payments`, HMAC-SHA256); the server's
    /// `--payment-secret`. Needed by `checkout` and `payments`.
    #[arg(
        long,
        global = true,
        env = "LIVEHUB_PAYMENT_SECRET",
        hide_env_values = true
    )]
    pub payment_secret: Option<String>,
    /// Connect buyers with `?user=` (the server must run with --open-buyers).
    #[arg(long, global = true)]
    pub open_buyers: bool,
    /// Room to use; default a fresh `lt-<unix ms>`. It should be fresh: the checks compare
    /// the whole room's figures with what this run saw.
    #[arg(long, global = true)]
    pub room: Option<String>,
    /// Print the summary as one JSON object on stdout instead of a table.
    #[arg(long, global = true)]
    pub json: bool,
    /// Bind client sockets to 127.0.0.1 .. 127.0.0.N, round robin (more source ports).
    #[arg(long, global = true, default_value_t = 1, value_parser = clap::value_parser!(u8).range(1..=254))]
    pub sources: u8,
    /// Hard bound on the whole run, checks included (default: the scenario's nominal time + 120 s).
    #[arg(long, global = true)]
    pub max_seconds: Option<u64>,
    /// Write a self-contained HTML report with charts to this file.
    #[arg(long, global = true)]
    pub report: Option<PathBuf>,
    /// A buy without an ack after this long counts as timed out.
    #[arg(long, global = true, default_value = "10s", value_parser = parse_duration)]
    pub ack_timeout: Duration,
    /// Connection attempts in progress at once.
    #[arg(long, global = true, default_value_t = 128)]
    pub connect_concurrency: usize,
    /// No progress bar.
    #[arg(long, global = true)]
    pub no_progress: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Trigger {
    /// Each buyer buys the moment its socket receives `{"op":"sale","state":"open"}`.
    Push,
    /// Every buyer buys once the `POST .../open` call has returned.
    Response,
    /// A fair open: the sale is scheduled `--lead` ahead (the SKU's `opens_at_ms`) instead of
    /// opened, and each buyer buys at that time by its own clock once the `sale` push with
    /// the new `opens_at_ms` has reached it, as an app counting down would. livehub only.
    Clock,
}

#[derive(Debug, Subcommand)]
pub enum Cmd {
    /// Flash sale: N buyers wait on a scheduled SKU, the sale opens, everyone buys at once.
    Spike(SpikeArgs),
    /// Steady buy load: open loop at a total rate, or closed loop with P buys in flight per connection.
    Steady(SteadyArgs),
    /// Connections grow to N at R/s, then hold; server memory per connection from /metrics.
    Ramp(RampArgs),
    /// N dashboard sockets: snapshots/s per socket and the delay from a snapshot's ts_ms to receipt.
    Dashboards(DashboardsArgs),
    /// Mixed buyers and dashboards for a long time, with invariant checks every minute.
    Soak(SoakArgs),
    /// Orders that must be paid: a flash sale whose buyers then pay (signed notices), cancel,
    /// or let their orders expire; sold-out buyers buy the units given back.
    Checkout(CheckoutArgs),
    /// Payment notices as fast as they are answered: K unpaid orders, then signed notices from
    /// C HTTP connections; durable notices a second.
    Payments(PaymentsArgs),
    /// A wave of unpaid orders expiring together while buys go on: the buys' p99 during the
    /// wave against before it, same run.
    ExpiryWave(ExpiryWaveArgs),
    /// Audience events (`POST .../audience`) at a rate, from viewers who enter in waves,
    /// interact and leave; optionally alongside buys, in windows alternating with quiet ones.
    /// Then the room's audience figures must equal what was accepted.
    Audience(AudienceArgs),
    /// A plain WebSocket echo server speaking the buyer frames (hello on connect, ack per buy).
    EchoServer(EchoArgs),
}

#[derive(Debug, Clone, Args)]
pub struct SpikeArgs {
    /// Buyers (one connection and one buy each).
    #[arg(long)]
    pub buyers: usize,
    /// The SKU's stock.
    #[arg(long)]
    pub stock: u64,
    /// limit_per_user (default none).
    #[arg(long)]
    pub limit: Option<u64>,
    /// Distinct users (default: one per buyer). Fewer users than buyers puts several
    /// connections on one user, which tests limit_per_user across connections.
    #[arg(long)]
    pub users: Option<usize>,
    /// Units per buy.
    #[arg(long, default_value_t = 1)]
    pub qty: u64,
    #[arg(long, default_value_t = 9900)]
    pub price_fen: u64,
    #[arg(long, default_value = "A1")]
    pub sku: String,
    /// When buyers send their buy.
    #[arg(long, value_enum, default_value_t = Trigger::Push)]
    pub trigger: Trigger,
    /// With --trigger push: a buyer that has not seen the open push this long after the open
    /// call returned buys anyway (and is counted as a missed push).
    #[arg(long, default_value = "3s", value_parser = parse_duration)]
    pub push_grace: Duration,
    /// With --trigger clock: how far ahead of the schedule call the sale opens.
    #[arg(long, default_value = "1s", value_parser = parse_duration)]
    pub lead: Duration,
    /// Also run the same buyers and frames against an echo server and compare. It runs as a
    /// child process (`echo-server`: this process could not hold both sets of sockets), and it
    /// pushes the sale's opening to every socket at once, as livehub does.
    #[arg(long)]
    pub against_echo: bool,
    /// Also run the same buyers and frames against the in-memory Bun reference hub
    /// (`loadtest/peers/bun`, a child process): the same sale with the same stock and limit.
    #[arg(long)]
    pub against_bun: bool,
}

#[derive(Debug, Clone, Args)]
#[command(group(ArgGroup::new("mode").required(true).args(["rate", "in_flight"])))]
pub struct SteadyArgs {
    /// Buyer connections.
    #[arg(long)]
    pub connections: usize,
    /// How long the load runs (e.g. 30s, 2m).
    #[arg(long, value_parser = parse_duration)]
    pub duration: Duration,
    /// Open loop: total buys a second over all connections (latency from the intended send time).
    #[arg(long)]
    pub rate: Option<f64>,
    /// Closed loop: buys in flight per connection.
    #[arg(long)]
    pub in_flight: Option<usize>,
    /// SKUs the buys spread over.
    #[arg(long, default_value_t = 1)]
    pub skus: usize,
    /// Stock of each SKU.
    #[arg(long, default_value_t = 1_000_000_000)]
    pub stock: u64,
    #[arg(long, default_value_t = 1)]
    pub qty: u64,
    #[arg(long, default_value_t = 9900)]
    pub price_fen: u64,
    /// Also run the same load against an in-process echo server (answers flushed in batches,
    /// as livehub's) and report livehub / echo.
    #[arg(long)]
    pub against_echo: bool,
    /// Also run the same load against the in-memory Bun reference hub (`loadtest/peers/bun`,
    /// a child process; `LIVEHUB_BUN` names the binary) and report livehub / bun.
    #[arg(long)]
    pub against_bun: bool,
    /// livehub's process id: its CPU time (user + system, from /proc) over the load gives the
    /// server's CPU per ack. Peers' own are always reported.
    #[arg(long)]
    pub server_pid: Option<u32>,
    /// The --url is an echo server (`echo-server`): skip the REST setup and the checks.
    #[arg(long)]
    pub echo_target: bool,
    /// Every Nth buy is sent twice back to back with the same req: both answers must be the
    /// same order, and only one order may exist (idempotency under load). 0: never.
    #[arg(long, default_value_t = 0)]
    pub dup_every: u64,
}

#[derive(Debug, Clone, Args)]
pub struct RampArgs {
    /// Connections to reach.
    #[arg(long)]
    pub connections: usize,
    /// New connections a second.
    #[arg(long)]
    pub per_second: f64,
    /// How long to hold them once all are up (e.g. 30s).
    #[arg(long, value_parser = parse_duration)]
    pub hold: Duration,
    /// While holding, each connection sends `{"op":"ping"}` this often (0 for never).
    #[arg(long, default_value = "5s", value_parser = parse_duration)]
    pub ping_every: Duration,
    /// Then the same ramp on the echo server (a child process; memory from its VmRSS).
    #[arg(long)]
    pub against_echo: bool,
    /// Then the same ramp on the Bun reference hub (a child process; memory from its VmRSS).
    #[arg(long)]
    pub against_bun: bool,
}

#[derive(Debug, Clone, Args)]
pub struct DashboardsArgs {
    /// Dashboard sockets.
    #[arg(long)]
    pub count: usize,
    /// How long to watch once all are connected.
    #[arg(long, value_parser = parse_duration)]
    pub duration: Duration,
    /// Run a steady open-loop buy load of this many buys/s alongside.
    #[arg(long)]
    pub with_buys: Option<f64>,
    /// Buyer connections for --with-buys.
    #[arg(long, default_value_t = 20)]
    pub buy_connections: usize,
    /// Another load process buys in this room (scripts/bench-dashboards.sh): its orders are
    /// in the export without an ack here, so the check that every exported order was acked
    /// here is left out (that process checks its own).
    #[arg(long)]
    pub buys_elsewhere: bool,
    /// The dashboards watch this hub (another hub of the same fleet) while the buys go to
    /// --url: how soon every hub shows an order. Default: --url.
    #[arg(long)]
    pub dashboard_url: Option<String>,
}

#[derive(Debug, Clone, Args)]
pub struct SoakArgs {
    #[arg(long, value_parser = parse_duration)]
    pub duration: Duration,
    /// Buyer connections.
    #[arg(long)]
    pub buyers: usize,
    /// Dashboard sockets.
    #[arg(long)]
    pub dashboards: usize,
    /// Total buys a second (open loop); default one per buyer a second.
    #[arg(long)]
    pub rate: Option<f64>,
    #[arg(long, default_value_t = 4)]
    pub skus: usize,
    #[arg(long, default_value_t = 1_000_000_000)]
    pub stock: u64,
    /// Invariant checks this often while the load runs (and once at the end).
    #[arg(long, default_value = "60s", value_parser = parse_duration)]
    pub check_every: Duration,
    /// Every Nth buy is sent twice with the same req (see `steady --dup-every`). 0: never.
    #[arg(long, default_value_t = 0)]
    pub dup_every: u64,
}

#[derive(Debug, Clone, Args)]
pub struct CheckoutArgs {
    /// Buyers (one connection and one user each).
    #[arg(long, default_value_t = 5_000)]
    pub buyers: usize,
    /// The SKU's stock.
    #[arg(long, default_value_t = 1_000)]
    pub stock: u64,
    /// limit_per_user of the SKU.
    #[arg(long, default_value_t = 1)]
    pub limit: u64,
    #[arg(long, default_value_t = 9900)]
    pub price_fen: u64,
    #[arg(long, default_value = "P1")]
    pub sku: String,
    /// The SKU's pay_timeout_s (the contract allows 10 to 86,400).
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u64).range(10..=86_400))]
    pub pay_timeout_s: u64,
    /// Share of the orders whose buyer pays (after a delay between --delay-min and --delay-max).
    #[arg(long, default_value_t = 0.6)]
    pub pay_share: f64,
    /// Share of the orders whose buyer cancels over its socket (after such a delay); the rest
    /// let their orders expire.
    #[arg(long, default_value_t = 0.1)]
    pub cancel_share: f64,
    /// Shortest wait from the ack to paying or cancelling.
    #[arg(long, default_value = "1s", value_parser = parse_duration)]
    pub delay_min: Duration,
    /// Longest wait from the ack to paying or cancelling (below the pay timeout).
    #[arg(long, default_value = "8s", value_parser = parse_duration)]
    pub delay_max: Duration,
    /// Payments sent on purpose after the order ended: half of them once an order expired
    /// (answer `order_expired`), half once a cancel was acked (`order_cancelled`).
    #[arg(long, default_value_t = 20)]
    pub late_payments: u64,
    /// Paid orders whose notice is sent twice with the same payment_id (every other pair at
    /// once, the rest one after the other): both answers must be 200 `paid`.
    #[arg(long, default_value_t = 20)]
    pub duplicate_payments: u64,
    /// Paid orders that then get a notice with another payment_id (`already_paid`, counted
    /// as a late payment).
    #[arg(long, default_value_t = 5)]
    pub second_payments: u64,
    /// Most buys a sold-out buyer sends again when a `stock` push shows units given back.
    #[arg(long, default_value_t = 5)]
    pub retries: u32,
    /// Sold-out buyers stop waiting for units this long after the open.
    #[arg(long, default_value = "40s", value_parser = parse_duration)]
    pub retry_for: Duration,
    /// Hard bound on the sale from the open: buys, payments, cancels, expiries and re-buys.
    #[arg(long, default_value = "60s", value_parser = parse_duration)]
    pub deadline: Duration,
    /// A buyer that has not seen the open push this long after the open call returned buys
    /// anyway (counted as a missed push).
    #[arg(long, default_value = "3s", value_parser = parse_duration)]
    pub push_grace: Duration,
    /// With --trigger clock: how far ahead of the schedule call the sale opens.
    #[arg(long, default_value = "1s", value_parser = parse_duration)]
    pub lead: Duration,
    /// Seed of the buyers' choices (pay, cancel or expire; delays; retries).
    #[arg(long, default_value_t = 21)]
    pub seed: u64,
}

#[derive(Debug, Clone, Args)]
pub struct PaymentsArgs {
    /// Unpaid orders to place, and so notices to send (one each).
    #[arg(long, default_value_t = 20_000)]
    pub orders: usize,
    /// Concurrent HTTP connections sending notices.
    #[arg(long, default_value_t = 64)]
    pub connections: usize,
    /// Buyer sockets placing the orders.
    #[arg(long, default_value_t = 32)]
    pub buy_connections: usize,
    /// Buys in flight per buyer socket while placing.
    #[arg(long, default_value_t = 32)]
    pub in_flight: usize,
    /// pay_timeout_s of the SKU (long enough that no order expires during the run).
    #[arg(long, default_value_t = 3_600, value_parser = clap::value_parser!(u64).range(10..=86_400))]
    pub pay_timeout_s: u64,
    #[arg(long, default_value_t = 9900)]
    pub price_fen: u64,
    #[arg(long, default_value = "N1")]
    pub sku: String,
    /// Also send the same notices, from as many connections, to an in-process HTTP server that
    /// answers each 200 at once (no signature check, no journal): the ceiling this client and
    /// machine allow, and livehub's ratio to it.
    #[arg(long)]
    pub against_echo: bool,
}

#[derive(Debug, Clone, Args)]
pub struct ExpiryWaveArgs {
    /// Unpaid orders placed together, to expire together.
    #[arg(long, default_value_t = 100_000)]
    pub orders: usize,
    /// pay_timeout_s of their SKU: the time to place them and measure the quiet phase.
    #[arg(long, default_value_t = 15, value_parser = clap::value_parser!(u64).range(10..=86_400))]
    pub pay_timeout_s: u64,
    /// Buyer sockets placing the orders.
    #[arg(long, default_value_t = 50)]
    pub buy_connections: usize,
    /// Buys in flight per placing socket.
    #[arg(long, default_value_t = 32)]
    pub in_flight: usize,
    /// Open-loop buys a second on the other SKU, through both phases.
    #[arg(long, default_value_t = 20_000.0)]
    pub rate: f64,
    /// Connections of that load.
    #[arg(long, default_value_t = 50)]
    pub connections: usize,
    #[arg(long, default_value_t = 9900)]
    pub price_fen: u64,
    /// The SKU whose orders expire.
    #[arg(long, default_value = "W1")]
    pub wave_sku: String,
    /// The SKU the buys go to meanwhile.
    #[arg(long, default_value = "B1")]
    pub buy_sku: String,
}

#[derive(Debug, Clone, Args)]
pub struct AudienceArgs {
    /// Audience events a second asked for (batches go out on a schedule; a connection whose
    /// last batch is still unanswered sends its next when the answer comes).
    #[arg(long, default_value_t = 500_000.0)]
    pub events_per_s: f64,
    /// Events a batch (the contract allows 1 to 10,000).
    #[arg(long, default_value_t = 10_000, value_parser = clap::value_parser!(u64).range(1..=10_000))]
    pub batch: u64,
    /// HTTP connections posting batches, each one batch at a time.
    #[arg(long, default_value_t = 8)]
    pub connections: usize,
    /// How long the audience phase sends (e.g. 10s).
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    pub duration: Duration,
    /// Most events sent (default: --events-per-s × --duration).
    #[arg(long)]
    pub max_events: Option<u64>,
    /// Distinct viewers (`v100000`, `v100001`, ...).
    #[arg(long, default_value_t = 100_000, value_parser = clap::value_parser!(u32).range(1..=10_000_000))]
    pub viewers: u32,
    /// SKUs in the room (`A1`, `A2`, ...): viewers click their cards; buys go to A1.
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u64).range(1..=100))]
    pub skus: u64,
    /// Every Nth batch is posted again once answered: all of it must come back as
    /// duplicates. 0: never.
    #[arg(long, default_value_t = 25)]
    pub resend_every: u64,
    /// Share of the interactions dated in the past, up to --late-max before they are sent.
    #[arg(long, default_value_t = 0.02)]
    pub late_share: f64,
    /// How late a late interaction is at most (the contract takes up to 10 minutes).
    #[arg(long, default_value = "3m", value_parser = parse_duration)]
    pub late_max: Duration,
    /// Batches made bad on purpose (each with one bad event among good ones): each must be
    /// refused with a 400 naming that event's index and field, and change nothing.
    #[arg(long, default_value_t = 3)]
    pub bad_batches: u64,
    /// Open-loop buys a second on A1 alongside (0: none). With buys, the audience alternates
    /// with quiet windows of the same buys (and dashboards), and the summary compares the two.
    #[arg(long, default_value_t = 0.0)]
    pub buy_rate: f64,
    /// Buyer connections for --buy-rate.
    #[arg(long, default_value_t = 50)]
    pub buy_connections: usize,
    /// Dashboard sockets watching through both phases (with --buy-rate), for the delay from a
    /// snapshot's `ts_ms` to its receipt.
    #[arg(long, default_value_t = 10)]
    pub dashboards: usize,
    /// With --buy-rate: the buys run for twice --duration, and the audience sends only in
    /// every other window of this length; the summary compares the two kinds of window.
    #[arg(long, default_value = "1s", value_parser = parse_duration)]
    pub alternate: Duration,
    /// The ingest token (`--ingest-token` of the server); defaults to the admin token.
    #[arg(long, env = "LIVEHUB_INGEST_TOKEN", hide_env_values = true)]
    pub ingest_token: Option<String>,
    /// Seed of the audience's choices (waves, stays, interactions).
    #[arg(long, default_value_t = 22)]
    pub seed: u64,
}

#[derive(Debug, Clone, Args)]
pub struct EchoArgs {
    #[arg(long, default_value = "127.0.0.1:18790")]
    pub listen: SocketAddr,
    /// Leave Nagle's algorithm on for accepted sockets (no TCP_NODELAY), as a server that does
    /// not set it would: shows what that costs in latency.
    #[arg(long)]
    pub nagle: bool,
    /// Also push a `{"op":"stock",...}` frame to every socket this often, like livehub's stock
    /// pushes (at most 10 a second per SKU). 0 for none.
    #[arg(long, default_value = "0ms", value_parser = parse_duration)]
    pub push_every: Duration,
}

/// `250ms`, `30s`, `2m`, `1h`, or plain seconds (`1.5`).
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let (num, mult) = if let Some(n) = s.strip_suffix("ms") {
        (n, 0.001)
    } else if let Some(n) = s.strip_suffix('s') {
        (n, 1.0)
    } else if let Some(n) = s.strip_suffix('m') {
        (n, 60.0)
    } else if let Some(n) = s.strip_suffix('h') {
        (n, 3600.0)
    } else {
        (s, 1.0)
    };
    let v: f64 = num
        .trim()
        .parse()
        .map_err(|_| format!("`{s}` is not a duration (e.g. 500ms, 30s, 2m, 1h)"))?;
    if !(v.is_finite() && v >= 0.0) || v * mult > 1e7 {
        return Err(format!("`{s}` is out of range"));
    }
    Ok(Duration::from_secs_f64(v * mult))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("250ms").unwrap(), Duration::from_millis(250));
        assert_eq!(parse_duration("30s").unwrap(), Duration::from_secs(30));
        assert_eq!(parse_duration("2m").unwrap(), Duration::from_secs(120));
        assert_eq!(parse_duration("1.5").unwrap(), Duration::from_millis(1500));
        assert!(parse_duration("x").is_err());
        assert!(parse_duration("-1s").is_err());
    }
}

//! Command-line flags, each also read from a `LIVEHUB_<FLAG>` environment variable. An on/off
//! flag's variable reads `1`/`0`, `yes`/`no`, `on`/`off` or `true`/`false`.
//!
//! | flag | environment | default |
//! |---|---|---|
//! | `--listen` | `LIVEHUB_LISTEN` | `127.0.0.1:8080` |
//! | `--data-dir` | `LIVEHUB_DATA_DIR` | `./data` |
//! | `--admin-token` | `LIVEHUB_ADMIN_TOKEN` | generated into `DATA_DIR/admin.token` |
//! | `--viewer-token` | `LIVEHUB_VIEWER_TOKEN` | generated into `DATA_DIR/viewer.token` |
//! | `--buyer-secret` | `LIVEHUB_BUYER_SECRET` | generated into `DATA_DIR/buyer.secret` |
//! | `--payment-secret` | `LIVEHUB_PAYMENT_SECRET` | generated into `DATA_DIR/payment.secret` |
//! | `--ingest-token` | `LIVEHUB_INGEST_TOKEN` | generated into `DATA_DIR/ingest.token` |
//! | `--open-buyers` | `LIVEHUB_OPEN_BUYERS` | off |
//! | `--demo` | `LIVEHUB_DEMO` | off |
//! | `--push-interval-ms` | `LIVEHUB_PUSH_INTERVAL_MS` | 100 |
//! | `--dashboard-frames-per-s` | `LIVEHUB_DASHBOARD_FRAMES_PER_S` | 10,000 a room |
//! | `--buyer-stock-frames-per-s` | `LIVEHUB_BUYER_STOCK_FRAMES_PER_S` | 20,000 a room |
//! | `--buyer-rate` / `--buyer-burst` | `LIVEHUB_BUYER_RATE` / `LIVEHUB_BUYER_BURST` | 200 / 400 frames |
//! | `--commit-window-us` | `LIVEHUB_COMMIT_WINDOW_US` | 250, when busy |
//! | `--snapshot-every-records` | `LIVEHUB_SNAPSHOT_EVERY_RECORDS` | 1,000,000 (0: no journal snapshots) |
//! | `--segment-bytes` | `LIVEHUB_SEGMENT_BYTES` | 67,108,864 (64 MiB) |
//! | `--no-preallocate` | `LIVEHUB_NO_PREALLOCATE` | off: the next segment is zero-filled ahead |
//! | `--shutdown-deadline-s` | `LIVEHUB_SHUTDOWN_DEADLINE_S` | 10 |
//! | `--max-connections` | `LIVEHUB_MAX_CONNECTIONS` | open-file limit − 512 |
//! | `--max-connections-per-ip` | `LIVEHUB_MAX_CONNECTIONS_PER_IP` | 0 (no limit) |
//! | `--handshake-timeout-s` | `LIVEHUB_HANDSHAKE_TIMEOUT_S` | 10 |
//! | `--idle-timeout-s` | `LIVEHUB_IDLE_TIMEOUT_S` | 60 |
//! | `--outbound-queue` | `LIVEHUB_OUTBOUND_QUEUE` | 1024 frames |
//! | `--buyer-abuse-strikes` | `LIVEHUB_BUYER_ABUSE_STRIKES` | 2000 |
//! | `--write-timeout-s` | `LIVEHUB_WRITE_TIMEOUT_S` | 10 |
//! | `--max-pending-buys` | `LIVEHUB_MAX_PENDING_BUYS` | 8192 |
//! | `--log-format` | `LIVEHUB_LOG_FORMAT` | `text` |
//! | `--unsafe-no-fsync` | `LIVEHUB_UNSAFE_NO_FSYNC` | off (benchmarks only) |
//! | `--redis` | `LIVEHUB_REDIS` | none: inventory in this process; a URL or cluster seeds: fleet mode |
//! | `--hub-id` | `LIVEHUB_HUB_ID` | generated into `DATA_DIR/hub.id` (fleet mode) |
//! | `--redis-timeout-ms` | `LIVEHUB_REDIS_TIMEOUT_MS` | 500 |

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::builder::BoolishValueParser;
use clap::{Parser, Subcommand, ValueEnum};

/// Default `--listen`: loopback only, so a first run is not open to the network.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:8080";
/// Default `--data-dir`.
pub const DEFAULT_DATA_DIR: &str = "./data";
/// Default `--push-interval-ms`: dashboard snapshots at most ten a second.
pub const DEFAULT_PUSH_INTERVAL_MS: u64 = 100;
/// Default `--buyer-rate`: frames a second one buyer connection may send on average.
pub const DEFAULT_BUYER_RATE: f64 = 200.0;
/// Default `--buyer-burst`: frames one buyer connection may send in a burst.
pub const DEFAULT_BUYER_BURST: f64 = 400.0;
/// Default `--commit-window-us` ([`crate::journal::DEFAULT_COMMIT_WINDOW_US`]).
pub const DEFAULT_COMMIT_WINDOW_US: u64 = crate::journal::DEFAULT_COMMIT_WINDOW_US;
/// Default `--shutdown-deadline-s`.
pub const DEFAULT_SHUTDOWN_DEADLINE_S: u64 = 10;
/// File descriptors kept free for the journal, the listener and headroom when
/// `--max-connections` is derived from the open-file limit.
pub const FD_RESERVE: u64 = 512;
/// 0: no per-IP limit by default, because behind a reverse proxy or a carrier's NAT many
/// buyers share one address.
pub const DEFAULT_MAX_CONNECTIONS_PER_IP: usize = 0;
/// Default `--handshake-timeout-s`.
pub const DEFAULT_HANDSHAKE_TIMEOUT_S: u64 = 10;
/// Buyer sockets one user may hold in one room at once (`--max-connections-per-user`): an app
/// on a phone or two, with room to spare for reconnects that overlap the old socket's close.
pub const DEFAULT_MAX_CONNECTIONS_PER_USER: usize = 32;
/// Connections open at once that have not shown a valid token yet (`--max-unauthenticated`).
pub const DEFAULT_MAX_UNAUTHENTICATED: usize = 4096;
/// How long a new connection is safe from being closed for a newcomer while it has shown no
/// token: far longer than a handshake takes.
pub const DEFAULT_UNAUTHENTICATED_GRACE_MS: u64 = 1000;
/// Time a request body has to arrive once its head has (`--body-timeout-s`).
pub const DEFAULT_BODY_TIMEOUT_S: u64 = 10;
/// Default `--idle-timeout-s`.
pub const DEFAULT_IDLE_TIMEOUT_S: u64 = 60;
/// Default `--outbound-queue`, in frames.
pub const DEFAULT_OUTBOUND_QUEUE: usize = 1024;
/// Default `--buyer-abuse-strikes`.
pub const DEFAULT_BUYER_ABUSE_STRIKES: f64 = 2000.0;
/// Default `--write-timeout-s`.
pub const DEFAULT_WRITE_TIMEOUT_S: u64 = 10;
/// Buys admitted at once; by Little's law the queueing it allows is this divided by the acks a
/// second the machine sustains.
pub const DEFAULT_MAX_PENDING_BUYS: usize = 8192;
/// Journal records between journal snapshots: a restart restores the newest one and replays
/// at most about this many records after it.
pub const DEFAULT_SNAPSHOT_EVERY_RECORDS: u64 = crate::journal::DEFAULT_SNAPSHOT_EVERY_RECORDS;
/// Journal segment size; compaction deletes whole segments, so smaller ones free disk sooner.
pub const DEFAULT_SEGMENT_BYTES: u64 = crate::journal::DEFAULT_SEGMENT_BYTES;
/// Default `--redis-timeout-ms` ([`crate::fleet::DEFAULT_REDIS_TIMEOUT`]).
pub const DEFAULT_REDIS_TIMEOUT_MS: u64 = 500;
/// Dashboard snapshot frames a second one room's dashboards may get in all; beyond it each
/// dashboard's interval stretches.
pub const DEFAULT_DASHBOARD_FRAMES_PER_S: u64 = 10_000;
/// Stock frames a second one room's buyers may get in all; beyond it stock pushes come less
/// often.
pub const DEFAULT_BUYER_STOCK_FRAMES_PER_S: u64 = 20_000;

/// How log lines are written (`--log-format`). The values have no clap `help`, so that
/// `--help` keeps one paragraph a flag.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// One human-readable line an event.
    #[value(help = None::<&str>)]
    Text,
    /// One JSON object a line, for log collectors.
    #[value(help = None::<&str>)]
    Json,
}

/// livehub: flash sales and the host's live dashboard for livestream commerce.
#[derive(Debug, Clone, Parser)]
#[command(version, about)]
pub struct Config {
    /// Address to listen on.
    #[arg(long, env = "LIVEHUB_LISTEN", default_value = DEFAULT_LISTEN)]
    pub listen: SocketAddr,
    /// Where the journal and generated tokens live.
    #[arg(long, env = "LIVEHUB_DATA_DIR", default_value = DEFAULT_DATA_DIR)]
    pub data_dir: PathBuf,
    /// Admin bearer token. Generated and stored in the data dir when not given.
    #[arg(long, env = "LIVEHUB_ADMIN_TOKEN", hide_env_values = true)]
    pub admin_token: Option<String>,
    /// Viewer bearer token (dashboards, stats, audit). Generated when not given.
    #[arg(long, env = "LIVEHUB_VIEWER_TOKEN", hide_env_values = true)]
    pub viewer_token: Option<String>,
    /// HS256 secret that signs buyers' JWTs. Generated when not given.
    #[arg(long, env = "LIVEHUB_BUYER_SECRET", hide_env_values = true)]
    pub buyer_secret: Option<String>,
    /// HMAC-SHA256 secret that signs payment notices (POST /api/payments). Generated when not
    /// given.
    #[arg(long, env = "LIVEHUB_PAYMENT_SECRET", hide_env_values = true)]
    pub payment_secret: Option<String>,
    /// Bearer token of the video platform's adapter, for audience events only
    /// (POST /api/rooms/{room}/audience). Generated when not given.
    #[arg(long, env = "LIVEHUB_INGEST_TOKEN", hide_env_values = true)]
    pub ingest_token: Option<String>,
    /// Accept `?user=` instead of a JWT on /ws/buy (demos and quick tests only).
    #[arg(long, env = "LIVEHUB_OPEN_BUYERS", value_parser = BoolishValueParser::new())]
    pub open_buyers: bool,
    /// Create two demo rooms and simulate their livestreams' audiences and buyers.
    #[arg(long, env = "LIVEHUB_DEMO", value_parser = BoolishValueParser::new())]
    pub demo: bool,
    /// Dashboard snapshots come at most this often.
    #[arg(long, env = "LIVEHUB_PUSH_INTERVAL_MS", default_value_t = DEFAULT_PUSH_INTERVAL_MS)]
    pub push_interval_ms: u64,
    /// Dashboard snapshot frames a second one room's dashboards may get in all; with more
    /// dashboards than this allows at the push interval, each one's interval stretches (to a
    /// second at most). Lower trades the freshness of a big audience's screens for CPU for the
    /// buys.
    #[arg(long, env = "LIVEHUB_DASHBOARD_FRAMES_PER_S", default_value_t = DEFAULT_DASHBOARD_FRAMES_PER_S)]
    pub dashboard_frames_per_s: u64,
    /// Stock frames a second one room's buyers may get in all; with more buyers than this
    /// allows at 10 a second, stock pushes come less often (the acks still carry `left`, and
    /// sale state changes are never held back). Lower leaves more CPU for the buys in a spike.
    #[arg(long, env = "LIVEHUB_BUYER_STOCK_FRAMES_PER_S", default_value_t = DEFAULT_BUYER_STOCK_FRAMES_PER_S)]
    pub buyer_stock_frames_per_s: u64,
    /// Frames a second one buyer connection may send on average.
    #[arg(long, env = "LIVEHUB_BUYER_RATE", default_value_t = DEFAULT_BUYER_RATE)]
    pub buyer_rate: f64,
    /// Frames one buyer connection may send in a burst.
    #[arg(long, env = "LIVEHUB_BUYER_BURST", default_value_t = DEFAULT_BUYER_BURST)]
    pub buyer_burst: f64,
    /// How long the journal waits for more records before writing a batch when the hub is busy
    /// (at least 16 records queued during the last fsync), in microseconds; 0 never waits.
    #[arg(long, env = "LIVEHUB_COMMIT_WINDOW_US", default_value_t = DEFAULT_COMMIT_WINDOW_US)]
    pub commit_window_us: u64,
    /// Journal records between journal snapshots of the durable state (0 takes none). Restart
    /// time is restoring the newest snapshot plus replaying at most this many records.
    #[arg(long, env = "LIVEHUB_SNAPSHOT_EVERY_RECORDS", default_value_t = DEFAULT_SNAPSHOT_EVERY_RECORDS)]
    pub snapshot_every_records: u64,
    /// Size at which the journal starts a new segment file.
    #[arg(long, env = "LIVEHUB_SEGMENT_BYTES", default_value_t = DEFAULT_SEGMENT_BYTES)]
    pub segment_bytes: u64,
    /// Do not zero-fill the next journal segment ahead of use (then every batch's fdatasync
    /// also writes the file's size). For filesystems that copy on write, where it buys nothing.
    #[arg(long, env = "LIVEHUB_NO_PREALLOCATE", value_parser = BoolishValueParser::new())]
    pub no_preallocate: bool,
    /// Longest time a graceful shutdown may take.
    #[arg(long, env = "LIVEHUB_SHUTDOWN_DEADLINE_S", default_value_t = DEFAULT_SHUTDOWN_DEADLINE_S)]
    pub shutdown_deadline_s: u64,
    /// Open connections of every kind at once. Default: the open-file limit minus 512.
    #[arg(long, env = "LIVEHUB_MAX_CONNECTIONS")]
    pub max_connections: Option<usize>,
    /// Open connections from one source IP at once (0: no limit).
    #[arg(long, env = "LIVEHUB_MAX_CONNECTIONS_PER_IP", default_value_t = DEFAULT_MAX_CONNECTIONS_PER_IP)]
    pub max_connections_per_ip: usize,
    /// Seconds a new connection has to send its request (WebSocket upgrade included).
    #[arg(long, env = "LIVEHUB_HANDSHAKE_TIMEOUT_S", default_value_t = DEFAULT_HANDSHAKE_TIMEOUT_S)]
    pub handshake_timeout_s: u64,
    /// Connections open at once that have not shown a valid token; past it a newcomer closes
    /// the oldest of them that has had a second to show one (0: no limit).
    #[arg(long, env = "LIVEHUB_MAX_UNAUTHENTICATED", default_value_t = DEFAULT_MAX_UNAUTHENTICATED)]
    pub max_unauthenticated: usize,
    /// Buyer sockets one user may hold in one room at once; past it the upgrade is refused
    /// with 429 (0: no limit).
    #[arg(long, env = "LIVEHUB_MAX_CONNECTIONS_PER_USER", default_value_t = DEFAULT_MAX_CONNECTIONS_PER_USER)]
    pub max_connections_per_user: usize,
    /// Seconds a request body has to arrive once its head has.
    #[arg(long, env = "LIVEHUB_BODY_TIMEOUT_S", default_value_t = DEFAULT_BODY_TIMEOUT_S)]
    pub body_timeout_s: u64,
    /// A socket that sends nothing (not even a pong to the server's pings, sent every third
    /// of this) for this many seconds is closed.
    #[arg(long, env = "LIVEHUB_IDLE_TIMEOUT_S", default_value_t = DEFAULT_IDLE_TIMEOUT_S)]
    pub idle_timeout_s: u64,
    /// Frames waiting to be written to one buyer socket; while more than half are waiting the
    /// socket is not read.
    #[arg(long, env = "LIVEHUB_OUTBOUND_QUEUE", default_value_t = DEFAULT_OUTBOUND_QUEUE)]
    pub outbound_queue: usize,
    /// Rate-limited frames a buyer connection may send (refilled at --buyer-rate) before it is
    /// closed with 1008.
    #[arg(long, env = "LIVEHUB_BUYER_ABUSE_STRIKES", default_value_t = DEFAULT_BUYER_ABUSE_STRIKES)]
    pub buyer_abuse_strikes: f64,
    /// Seconds a socket may leave its frames unread (a dashboard's snapshot write pending, a
    /// buyer's queue more than half full) before it is dropped as a slow consumer.
    #[arg(long, env = "LIVEHUB_WRITE_TIMEOUT_S", default_value_t = DEFAULT_WRITE_TIMEOUT_S)]
    pub write_timeout_s: u64,
    /// Buys being decided or made durable at once; beyond it new buys are answered
    /// `unavailable` at once (admission control).
    #[arg(long, env = "LIVEHUB_MAX_PENDING_BUYS", default_value_t = DEFAULT_MAX_PENDING_BUYS)]
    pub max_pending_buys: usize,
    /// How log lines are written.
    #[arg(long, env = "LIVEHUB_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
    /// Skip fdatasync: acknowledged orders can be lost. For benchmarks that measure its cost only.
    #[arg(long, env = "LIVEHUB_UNSAFE_NO_FSYNC", hide = true, value_parser = BoolishValueParser::new())]
    pub unsafe_no_fsync: bool,
    /// Fleet mode: share rooms, stock and limits with the fleet's other hubs through this Redis
    /// (`redis://host:port/db`) or Redis Cluster (`redis+cluster://host:port,host:port`, or
    /// several comma-separated `redis://host:port`); without it, inventory lives in this process.
    #[arg(long, env = "LIVEHUB_REDIS", hide_env_values = true)]
    pub redis: Option<String>,
    /// This hub's id in the fleet (1-32 of A-Z a-z 0-9 _ - .); it prefixes order ids. Generated
    /// and pinned in the data dir when not given.
    #[arg(long, env = "LIVEHUB_HUB_ID")]
    pub hub_id: Option<String>,
    /// Longest wait for one Redis call; past it a buy answers `unavailable`.
    #[arg(long, env = "LIVEHUB_REDIS_TIMEOUT_MS", default_value_t = DEFAULT_REDIS_TIMEOUT_MS)]
    pub redis_timeout_ms: u64,
    /// A tool to run instead of the server.
    #[command(subcommand)]
    pub command: Option<Command>,
}

/// `livehub`'s tools besides the server.
#[derive(Debug, Clone, Subcommand)]
pub enum Command {
    /// Print a buyer JWT signed with the buyer secret (from --buyer-secret or the data dir).
    Token {
        /// The buyer's user id.
        #[arg(long)]
        user: String,
        /// Restrict the token to one room.
        #[arg(long)]
        room: Option<String>,
        /// Lifetime in seconds.
        #[arg(long, default_value_t = 3600)]
        ttl_s: u64,
    },
    /// Check a stopped hub's data dir offline: every checksum, a replay into a scratch state,
    /// and per room the orders, GMV and per-SKU consistency, as JSON. Exits 1 on damage
    /// (naming the file and offset) or an inconsistency. Changes nothing on disk.
    Verify {
        /// The data dir to check (default: --data-dir).
        #[arg(long = "data-dir")]
        data_dir: Option<PathBuf>,
    },
    /// Compare Redis (--redis) with the hubs' journals and report as JSON; exits 1 when
    /// something does not add up. With --repair, publish the given hubs' unpublished orders
    /// and release their tickets that have no journaled order (those hubs must be stopped).
    Reconcile {
        /// A stopped hub's data dir; repeat for each hub.
        #[arg(long = "journal")]
        journals: Vec<PathBuf>,
        /// Repair the given hubs first.
        #[arg(long)]
        repair: bool,
    },
}

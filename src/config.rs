//! Command-line flags, each also read from a `LIVEHUB_<FLAG>` environment variable.
//!
//! | flag | environment | default |
//! |---|---|---|
//! | `--listen` | `LIVEHUB_LISTEN` | `127.0.0.1:8080` |
//! | `--data-dir` | `LIVEHUB_DATA_DIR` | `./data` |
//! | `--admin-token` | `LIVEHUB_ADMIN_TOKEN` | generated into `DATA_DIR/admin.token` |
//! | `--viewer-token` | `LIVEHUB_VIEWER_TOKEN` | generated into `DATA_DIR/viewer.token` |
//! | `--buyer-secret` | `LIVEHUB_BUYER_SECRET` | generated into `DATA_DIR/buyer.secret` |
//! | `--open-buyers` | `LIVEHUB_OPEN_BUYERS` | off |
//! | `--demo` | `LIVEHUB_DEMO` | off |
//! | `--push-interval-ms` | `LIVEHUB_PUSH_INTERVAL_MS` | 100 |
//! | `--buyer-rate` / `--buyer-burst` | `LIVEHUB_BUYER_RATE` / `LIVEHUB_BUYER_BURST` | 200 / 400 frames |
//! | `--commit-window-us` | `LIVEHUB_COMMIT_WINDOW_US` | 200 |
//! | `--shutdown-deadline-s` | `LIVEHUB_SHUTDOWN_DEADLINE_S` | 10 |
//! | `--log-format` | `LIVEHUB_LOG_FORMAT` | `text` |
//! | `--unsafe-no-fsync` | `LIVEHUB_UNSAFE_NO_FSYNC` | off (benchmarks only) |
//! | `--redis` | `LIVEHUB_REDIS` | none: inventory in this process |
//! | `--hub-id` | `LIVEHUB_HUB_ID` | generated into `DATA_DIR/hub.id` (Redis mode) |
//! | `--redis-timeout-ms` | `LIVEHUB_REDIS_TIMEOUT_MS` | 500 |

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use clap::{Parser, Subcommand, ValueEnum};

pub const DEFAULT_LISTEN: &str = "127.0.0.1:8080";
pub const DEFAULT_DATA_DIR: &str = "./data";
pub const DEFAULT_PUSH_INTERVAL_MS: u64 = 100;
pub const DEFAULT_BUYER_RATE: f64 = 200.0;
pub const DEFAULT_BUYER_BURST: f64 = 400.0;
pub const DEFAULT_COMMIT_WINDOW_US: u64 = 200;
pub const DEFAULT_SHUTDOWN_DEADLINE_S: u64 = 10;
pub const DEFAULT_REDIS_TIMEOUT_MS: u64 = 500;

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Text,
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
    /// Accept `?user=` instead of a JWT on /ws/buy (demos and quick tests only).
    #[arg(long, env = "LIVEHUB_OPEN_BUYERS")]
    pub open_buyers: bool,
    /// Create a demo room and simulate a livestream's buyers.
    #[arg(long, env = "LIVEHUB_DEMO")]
    pub demo: bool,
    /// Dashboard snapshots come at most this often.
    #[arg(long, env = "LIVEHUB_PUSH_INTERVAL_MS", default_value_t = DEFAULT_PUSH_INTERVAL_MS)]
    pub push_interval_ms: u64,
    /// Frames a second one buyer connection may send on average.
    #[arg(long, env = "LIVEHUB_BUYER_RATE", default_value_t = DEFAULT_BUYER_RATE)]
    pub buyer_rate: f64,
    /// Frames one buyer connection may send in a burst.
    #[arg(long, env = "LIVEHUB_BUYER_BURST", default_value_t = DEFAULT_BUYER_BURST)]
    pub buyer_burst: f64,
    /// How long the journal waits for more records before writing a batch, in microseconds.
    #[arg(long, env = "LIVEHUB_COMMIT_WINDOW_US", default_value_t = DEFAULT_COMMIT_WINDOW_US)]
    pub commit_window_us: u64,
    /// Longest time a graceful shutdown may take.
    #[arg(long, env = "LIVEHUB_SHUTDOWN_DEADLINE_S", default_value_t = DEFAULT_SHUTDOWN_DEADLINE_S)]
    pub shutdown_deadline_s: u64,
    #[arg(long, env = "LIVEHUB_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
    /// Skip fdatasync: acknowledged orders can be lost. For benchmarks that measure its cost only.
    #[arg(long, env = "LIVEHUB_UNSAFE_NO_FSYNC", hide = true)]
    pub unsafe_no_fsync: bool,
    /// Share rooms, stock and limits with other hubs through this Redis
    /// (`redis://host:port/db`); without it, inventory lives in this process.
    #[arg(long, env = "LIVEHUB_REDIS", hide_env_values = true)]
    pub redis: Option<String>,
    /// This hub's id among the hubs sharing Redis (1-32 of A-Z a-z 0-9 _ - .); it prefixes
    /// order ids. Generated and pinned in the data dir when not given.
    #[arg(long, env = "LIVEHUB_HUB_ID")]
    pub hub_id: Option<String>,
    /// Longest wait for one Redis call; past it a buy answers `unavailable`.
    #[arg(long, env = "LIVEHUB_REDIS_TIMEOUT_MS", default_value_t = DEFAULT_REDIS_TIMEOUT_MS)]
    pub redis_timeout_ms: u64,
    #[command(subcommand)]
    pub command: Option<Command>,
}

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
    /// Compare Redis (--redis) with the hubs' journals and report as JSON; exits 1 when
    /// something does not add up. With --repair, publish the given hubs' unpublished orders
    /// and release their tickets that have no journaled order (those hubs must be stopped).
    Reconcile {
        /// A stopped hub's data dir; repeat for each hub.
        #[arg(long = "journal")]
        journals: Vec<PathBuf>,
        #[arg(long)]
        repair: bool,
    },
}

/// A secret from its flag, or from `data_dir/file`, or newly generated into that file.
/// Returns the value and whether it was generated now.
pub fn secret_or_generate(
    given: &Option<String>,
    data_dir: &Path,
    file: &str,
) -> std::io::Result<(String, bool)> {
    if let Some(v) = given {
        return Ok((v.clone(), false));
    }
    let path = data_dir.join(file);
    if let Ok(v) = std::fs::read_to_string(&path) {
        let v = v.trim().to_owned();
        if !v.is_empty() {
            return Ok((v, false));
        }
    }
    std::fs::create_dir_all(data_dir)?;
    let v = crate::auth::random_token();
    write_private(&path, &v)?;
    Ok((v, true))
}

fn write_private(path: &Path, value: &str) -> std::io::Result<()> {
    use std::io::Write;
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o600);
    }
    let mut f = opts.open(path)?;
    f.write_all(value.as_bytes())?;
    f.sync_all()
}

//! The `livehub` binary: parse flags, set up tracing and secrets, bind, and call
//! `server::run`. It only wires.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use clap::Parser;

use livehub::auth::{self, Auth};
use livehub::buyer::BuyerLimits;
use livehub::config::{Command, Config, FD_RESERVE};
use livehub::dashboard::feed::FeedLimits;
use livehub::data_dir::secret_or_generate;
use livehub::hub::HubOptions;
use livehub::journal::JournalOptions;
use livehub::server::accept::ConnLimits;
use livehub::server::{self, Settings};

/// mimalloc instead of glibc's malloc: buys allocate on the runtime's threads and are freed on
/// the journal writer's, and glibc's arena locks make those frees contend (futex waits and
/// wakes on the buy path).
/// Built without transparent huge pages (`no_thp`): the order state grows all stream long, and
/// faulting it in 2 MiB pages costs the hub CPU in `clear_page` that 4 KiB pages do not. Both
/// choices are measured in BENCHMARKS.md.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cfg = Config::parse();
    livehub::telemetry::init_tracing(cfg.log_format);
    if let Some(Command::Verify { data_dir }) = &cfg.command {
        let dir = data_dir.as_ref().unwrap_or(&cfg.data_dir);
        let report = livehub::verify::verify(dir).map_err(anyhow::Error::msg)?;
        println!("{}", serde_json::to_string_pretty(&report)?);
        if !report.ok {
            for d in &report.damage {
                eprintln!(
                    "damage in {} at offset {}: {}",
                    d.file.display(),
                    d.offset,
                    d.detail
                );
            }
            std::process::exit(1);
        }
        return Ok(());
    }
    if let Some(Command::Reconcile { journals, repair }) = &cfg.command {
        let url = cfg
            .redis
            .as_deref()
            .context("reconcile needs --redis URL (or LIVEHUB_REDIS)")?;
        let report = livehub::fleet::reconcile::reconcile(url, journals, *repair).await?;
        println!("{}", serde_json::to_string_pretty(&report)?);
        if !report.consistent {
            std::process::exit(1);
        }
        return Ok(());
    }
    if cfg.redis_timeout_ms == 0 {
        anyhow::bail!("--redis-timeout-ms must be at least 1");
    }
    let fleet = match &cfg.redis {
        None => None,
        Some(url) => {
            livehub::fleet::Target::parse(url)
                .map_err(|e| anyhow::anyhow!("--redis {url}: {e}"))?;
            let hub_id = livehub::fleet::hub_id_for(&cfg.data_dir, cfg.hub_id.as_deref())
                .map_err(anyhow::Error::msg)?;
            Some(livehub::fleet::FleetOptions {
                url: url.clone(),
                hub_id: hub_id.into(),
                timeout: Duration::from_millis(cfg.redis_timeout_ms),
            })
        }
    };

    let (buyer_secret, _) = secret_or_generate(&cfg.buyer_secret, &cfg.data_dir, "buyer.secret")
        .with_context(|| format!("cannot read or write secrets in {}", cfg.data_dir.display()))?;
    if let Some(Command::Token { user, room, ttl_s }) = &cfg.command {
        livehub::ids::check_named("user", user).map_err(anyhow::Error::msg)?;
        println!(
            "{}",
            auth::sign_buyer_token(&buyer_secret, user, room.as_deref(), *ttl_s)
        );
        return Ok(());
    }
    let (admin_token, admin_new) =
        secret_or_generate(&cfg.admin_token, &cfg.data_dir, "admin.token")?;
    let (viewer_token, _) = secret_or_generate(&cfg.viewer_token, &cfg.data_dir, "viewer.token")?;
    let (payment_secret, _) =
        secret_or_generate(&cfg.payment_secret, &cfg.data_dir, "payment.secret")?;
    let (ingest_token, _) = secret_or_generate(&cfg.ingest_token, &cfg.data_dir, "ingest.token")?;
    if admin_new {
        println!(
            "admin token (generated, stored in {}): {admin_token}",
            cfg.data_dir.join("admin.token").display()
        );
    }
    if cfg.open_buyers {
        tracing::warn!("--open-buyers: buyers are accepted by ?user= without a token; for demos and tests only");
    }
    if cfg.unsafe_no_fsync {
        tracing::warn!(
            "--unsafe-no-fsync: acknowledged orders can be lost on a crash; for benchmarks only"
        );
    }

    let mut journal = JournalOptions::new(&cfg.data_dir);
    journal.fsync = !cfg.unsafe_no_fsync;
    journal.commit_window = Duration::from_micros(cfg.commit_window_us);
    journal.snapshot_every_records = cfg.snapshot_every_records;
    journal.segment_bytes = cfg.segment_bytes.max(1);
    journal.preallocate = !cfg.no_preallocate;
    let settings = Settings {
        hub: HubOptions {
            journal,
            push_interval: Duration::from_millis(cfg.push_interval_ms.max(1)),
            fanout_frames_per_s: cfg.dashboard_frames_per_s.max(1),
            stock_frames_per_s: cfg.buyer_stock_frames_per_s.max(1),
            max_pending_buys: cfg.max_pending_buys.max(1),
            fleet,
        },
        auth: Auth::new(
            &admin_token,
            &viewer_token,
            Some(&buyer_secret),
            cfg.open_buyers,
        )
        .and_then(|auth| auth.with_payment_secret(&payment_secret))
        .and_then(|auth| auth.with_ingest_token(&ingest_token))
        .context("refusing to start")?,
        buyer_limits: BuyerLimits {
            frames_per_s: cfg.buyer_rate,
            burst: cfg.buyer_burst,
            abuse_strikes: cfg.buyer_abuse_strikes,
            outbound_queue: cfg.outbound_queue,
            idle_timeout: Duration::from_secs(cfg.idle_timeout_s.max(1)),
            write_timeout: Duration::from_secs(cfg.write_timeout_s.max(1)),
            ..BuyerLimits::default()
        },
        static_dir: static_dir(),
        demo: cfg.demo,
        shutdown_deadline: Duration::from_secs(cfg.shutdown_deadline_s),
        conn_limits: ConnLimits {
            max_connections: cfg
                .max_connections
                .unwrap_or_else(max_connections_from_fd_limit),
            max_per_ip: cfg.max_connections_per_ip,
            handshake_timeout: Duration::from_secs(cfg.handshake_timeout_s.max(1)),
            max_unauthenticated: cfg.max_unauthenticated,
            max_per_user: cfg.max_connections_per_user,
            body_timeout: Duration::from_secs(cfg.body_timeout_s.max(1)),
            ..ConnLimits::default()
        },
        feed_limits: FeedLimits {
            write_timeout: Duration::from_secs(cfg.write_timeout_s.max(1)),
            idle_timeout: Duration::from_secs(cfg.idle_timeout_s.max(1)),
        },
    };
    let listener = tokio::net::TcpListener::bind(cfg.listen)
        .await
        .with_context(|| format!("cannot listen on {}", cfg.listen))?;
    let addr = listener.local_addr()?;
    tracing::info!(%addr, data_dir = %cfg.data_dir.display(), "livehub listening");
    if cfg.demo {
        println!("\n  livehub demo is live. Open the host dashboard:\n\n    http://{addr}/?room={}&token={viewer_token}\n\n  or every room at a glance:\n\n    http://{addr}/overview?token={viewer_token}\n", livehub::demo::DEMO_ROOM);
    }
    server::run(listener, settings, shutdown_signal()).await
}

/// Raises the soft open-file limit to the hard one and leaves [`FD_RESERVE`] of it for the
/// journal, the listener and headroom; every connection is one file descriptor.
fn max_connections_from_fd_limit() -> usize {
    let limit = rlimit::increase_nofile_limit(u64::MAX)
        .or_else(|_| rlimit::getrlimit(rlimit::Resource::NOFILE).map(|(soft, _)| soft))
        .unwrap_or(1024);
    let max = limit.saturating_sub(FD_RESERVE).max(16);
    tracing::info!(
        open_file_limit = limit,
        max_connections = max,
        "connection limit"
    );
    max as usize
}

/// The page's files: `static/` next to the working directory, or the crate's own when run
/// with `cargo run` from elsewhere.
fn static_dir() -> PathBuf {
    let local = PathBuf::from("static");
    if local.join("index.html").exists() {
        local
    } else {
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("static")
    }
}

/// Completes on ctrl-c or SIGTERM. A second signal exits at once.
async fn shutdown_signal() {
    wait_signal().await;
    tokio::spawn(async {
        wait_signal().await;
        eprintln!("second signal: exiting now");
        std::process::exit(130);
    });
}

async fn wait_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! { _ = ctrl_c => {}, _ = term => {} }
}

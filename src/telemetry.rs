//! Prometheus metrics (through the `metrics` facade and its Prometheus exporter) and the
//! tracing subscriber.

use std::sync::OnceLock;

use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

use crate::config::LogFormat;
use crate::protocol::RejectCode;

static PROMETHEUS: OnceLock<PrometheusHandle> = OnceLock::new();

/// Buckets of the time histograms (ack latency, fsync), in seconds.
const SECONDS_BUCKETS: [f64; 13] = [
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0,
];

/// Buckets of `livehub_journal_batch_records`: records per group commit, up to the batch cap.
const BATCH_BUCKETS: [f64; 13] = [
    1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0, 1024.0, 2048.0, 4096.0,
];

/// Buckets of `livehub_fleet_stream_delay_seconds`: finest at a few milliseconds and up to the
/// target delay of an order on every hub's dashboards (issue 24), coarser beyond.
const STREAM_DELAY_BUCKETS: [f64; 16] = [
    0.001, 0.002, 0.003, 0.005, 0.0075, 0.01, 0.015, 0.02, 0.025, 0.03, 0.04, 0.05, 0.075, 0.1,
    0.25, 1.0,
];

/// The process's metrics recorder, installed on first use.
pub fn prometheus() -> PrometheusHandle {
    PROMETHEUS
        .get_or_init(|| {
            let recorder = PrometheusBuilder::new()
                .set_buckets(&SECONDS_BUCKETS)
                .expect("valid buckets")
                .set_buckets_for_metric(
                    Matcher::Full("livehub_journal_batch_records".into()),
                    &BATCH_BUCKETS,
                )
                .expect("valid buckets")
                .set_buckets_for_metric(
                    Matcher::Full("livehub_fleet_stream_delay_seconds".into()),
                    &STREAM_DELAY_BUCKETS,
                )
                .expect("valid buckets")
                .build_recorder();
            let handle = recorder.handle();
            // Another recorder may be installed already (tests); then this one only renders.
            let _ = metrics::set_global_recorder(recorder);
            describe();
            handle
        })
        .clone()
}

/// The `# HELP` line of every series livehub exports.
fn describe() {
    use metrics::{describe_counter, describe_gauge, describe_histogram, Unit};
    describe_gauge!(
        "livehub_connections",
        "Open WebSocket connections, by kind (buyer, dashboard)"
    );
    describe_counter!(
        "livehub_buys_total",
        "Buy frames answered, by result (ok or the rejection code)"
    );
    describe_histogram!(
        "livehub_buy_ack_seconds",
        Unit::Seconds,
        "Time from a buy frame's arrival to its ack being sent"
    );
    describe_histogram!(
        "livehub_fleet_stream_delay_seconds",
        Unit::Seconds,
        "Fleet mode: from an order's placement on another hub (its ts_ms) to this hub's reading it from the room's stream"
    );
    describe_histogram!(
        "livehub_journal_batch_records",
        Unit::Count,
        "Records written per journal group commit"
    );
    describe_histogram!(
        "livehub_journal_fsync_seconds",
        Unit::Seconds,
        "Time to write and fdatasync one journal batch"
    );
    describe_counter!(
        "livehub_journal_failed_batches_total",
        "Journal batches that could not be made durable (their buys were answered unavailable)"
    );
    describe_gauge!(
        "livehub_process_resident_memory_bytes",
        Unit::Bytes,
        "Resident set size of the livehub process"
    );
}

/// Handles of the series every buy touches, registered once, so that a buy never looks a
/// series up in the recorder's registry (`counter!` with labels hashes its key and labels each
/// time). Taken after the recorder is installed, so they are never no-ops in a server.
pub struct BuyMetrics {
    /// `livehub_buys_total{result="ok"}`.
    pub ok: metrics::Counter,
    /// `livehub_buys_total{result=CODE}`, by [`RejectCode::index`].
    pub rejected: Vec<metrics::Counter>,
    /// `livehub_buy_ack_seconds`.
    pub ack_seconds: metrics::Histogram,
}

/// The buy path's metric handles.
pub fn buy_metrics() -> &'static BuyMetrics {
    static HANDLES: OnceLock<BuyMetrics> = OnceLock::new();
    HANDLES.get_or_init(|| {
        let _ = prometheus();
        BuyMetrics {
            ok: metrics::counter!("livehub_buys_total", "result" => "ok"),
            rejected: RejectCode::ALL
                .iter()
                .map(|c| metrics::counter!("livehub_buys_total", "result" => c.as_str()))
                .collect(),
            ack_seconds: metrics::histogram!("livehub_buy_ack_seconds"),
        }
    })
}

/// The text exposition, with the process's resident memory.
pub fn render() -> String {
    if let Some(rss) = resident_bytes() {
        metrics::gauge!("livehub_process_resident_memory_bytes").set(rss as f64);
    }
    prometheus().render()
}

/// Resident set size from /proc (Linux); `None` elsewhere.
pub fn resident_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

/// Installs the tracing subscriber; `RUST_LOG` filters (default `info`).
pub fn init_tracing(format: LogFormat) {
    let filter =
        tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into());
    let builder = tracing_subscriber::fmt().with_env_filter(filter);
    let _ = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().try_init(),
    };
}

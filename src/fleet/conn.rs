//! The connection to Redis: one server through a [`ConnectionManager`], or a Redis Cluster
//! through the `redis` crate's cluster client, behind one type ([`Conn`]) that every call of
//! the fleet uses.
//!
//! `--redis` names the target ([`Target::parse`]):
//! - one `redis://host:port/db` URL: one server;
//! - several comma-separated `redis://host:port` seed nodes, or a
//!   `redis+cluster://host:port[,host:port…]` URL: a cluster. The client learns the slot map
//!   from any seed, follows `MOVED`/`ASK` redirects, refreshes the map after a resharding or a
//!   failover, and retries `TRYAGAIN`/`CLUSTERDOWN` a few times within the call timeout.
//!
//! Every command and script of the fleet names keys of one room only (one hash slot, see
//! [`super::keys`]) or a single key outside any room, so each runs on one node. `SCRIPT LOAD`
//! goes to every node, so `EVALSHA`'s `NOSCRIPT` fallback works on whichever master answers.
//!
//! While a slot migrates key by key, a script whose keys are split between the two masters
//! is answered `TRYAGAIN`, and `ASK`/`MOVED` can bounce between them faster than the client's
//! own retries last. Such answers mean the command did not run, so [`Conn`] sends it again
//! after a short pause (`REDIRECT_PAUSE_FIRST`, doubling up to `REDIRECT_PAUSE_MAX`) until the
//! call timeout ends it; a buy then answers `unavailable` only when the migration or failover outlasts the timeout.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use redis::aio::{ConnectionLike, ConnectionManager, ConnectionManagerConfig};
use redis::cluster::{ClusterClient, ClusterClientBuilder};
use redis::cluster_async::ClusterConnection;
use redis::{Cmd, Pipeline, RedisFuture, Value};

/// The scheme that names a cluster in `--redis`.
pub const CLUSTER_SCHEME: &str = "redis+cluster://";

/// Retries of one cluster call after a redirect loop, `TRYAGAIN`, `CLUSTERDOWN` or a lost
/// node, all within the call timeout.
const CLUSTER_RETRIES: u32 = 6;
/// Shortest pause before a cluster retry: short, so a resharding's `TRYAGAIN` resolves
/// within one call timeout.
const CLUSTER_MIN_RETRY_WAIT_MS: u64 = 10;
/// First pause before [`Conn`] sends again a command a cluster answered with a redirect,
/// `TRYAGAIN` or `CLUSTERDOWN` after the client's own retries.
const REDIRECT_PAUSE_FIRST: Duration = Duration::from_millis(10);
/// Longest such pause.
const REDIRECT_PAUSE_MAX: Duration = Duration::from_millis(100);

/// What `--redis` names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// One server: its `redis://` URL.
    Single(String),
    /// A cluster: the `redis://host:port` URLs of its seed nodes.
    Cluster(Vec<String>),
}

impl Target {
    /// Reads `--redis`: one URL is one server, several comma-separated ones or a
    /// `redis+cluster://` URL are a cluster's seeds. A user and password given on the first
    /// seed apply to every seed (a cluster has one set of credentials).
    pub fn parse(spec: &str) -> Result<Target, String> {
        let spec = spec.trim();
        let (cluster, rest) = match spec.strip_prefix(CLUSTER_SCHEME) {
            Some(rest) => (true, rest),
            None => (spec.contains(','), spec),
        };
        if !cluster {
            redis::Client::open(spec).map_err(|e| format!("not a redis URL: {e}"))?;
            return Ok(Target::Single(spec.to_owned()));
        }
        let mut auth: Option<&str> = None;
        let mut seeds = Vec::new();
        for (i, part) in rest.split(',').map(str::trim).enumerate() {
            if part.is_empty() {
                return Err("empty seed node in the list".into());
            }
            let bare = part
                .strip_prefix("redis://")
                .or_else(|| part.strip_prefix(CLUSTER_SCHEME))
                .unwrap_or(part);
            if bare.contains("://") {
                return Err(format!("{part}: a cluster seed must be redis://host:port"));
            }
            let url = match (bare.rsplit_once('@'), auth) {
                (Some((a, _)), _) => {
                    if i == 0 {
                        auth = Some(a);
                    }
                    format!("redis://{bare}")
                }
                (None, Some(a)) => format!("redis://{a}@{bare}"),
                (None, None) => format!("redis://{bare}"),
            };
            let info = redis::IntoConnectionInfo::into_connection_info(url.as_str())
                .map_err(|e| format!("{part}: not a redis address: {e}"))?;
            if info.redis_settings().db() != 0 {
                return Err(format!("{part}: a cluster has database 0 only"));
            }
            seeds.push(url);
        }
        Ok(Target::Cluster(seeds))
    }

    /// The servers to subscribe to for the change channel: the one server, or each seed
    /// (a cluster forwards `PUBLISH` to every node, so any node hears every notice).
    pub fn pubsub_urls(&self) -> Vec<String> {
        match self {
            Target::Single(u) => vec![u.clone()],
            Target::Cluster(seeds) => seeds.clone(),
        }
    }
}

/// A multiplexed connection to Redis, one server or a cluster. Cheap to clone; clones share
/// the connection(s).
#[derive(Clone)]
pub enum Conn {
    /// One server, reconnected in the background when it drops.
    Single(ConnectionManager),
    /// A cluster: one connection per node, routed by each command's key slot.
    Cluster(Arc<Cluster>),
}

impl Conn {
    /// Connects to `target`; `timeout` bounds each connection attempt and each answer.
    pub async fn connect(target: &Target, timeout: Duration) -> redis::RedisResult<Conn> {
        match target {
            Target::Single(url) => {
                let client = redis::Client::open(url.as_str())?;
                // Short timeouts: while Redis is away, every call fails at once instead of
                // queueing; the manager keeps reconnecting in the background, so the hub
                // recovers by itself.
                let config = ConnectionManagerConfig::new()
                    .set_connection_timeout(Some(timeout))
                    .set_response_timeout(Some(timeout))
                    .set_number_of_retries(1)
                    .set_max_delay(Duration::from_millis(500));
                Ok(Conn::Single(
                    client.get_connection_manager_with_config(config).await?,
                ))
            }
            Target::Cluster(seeds) => {
                // Retries pause `CLUSTER_MIN_RETRY_WAIT_MS`, then longer, up to a quarter of the call timeout: a
                // redirect or a `TRYAGAIN` during a slot's migration resolves within the
                // call, and a failover that takes longer answers `unavailable` until the new
                // master is known (the client refreshes its slot map by itself).
                let max_wait = (timeout.as_millis() as u64 / 4).max(CLUSTER_MIN_RETRY_WAIT_MS + 1);
                let client = ClusterClientBuilder::new(seeds.iter().map(String::as_str))
                    .connection_timeout(timeout)
                    .response_timeout(timeout)
                    .overall_response_timeout(Some(timeout))
                    .retries(CLUSTER_RETRIES)
                    .min_retry_wait(CLUSTER_MIN_RETRY_WAIT_MS)
                    .max_retry_wait(max_wait)
                    .build()?;
                let conn = client.get_async_connection().await?;
                Ok(Conn::Cluster(Arc::new(Cluster {
                    client,
                    current: RwLock::new(conn),
                    patience: timeout,
                    born: Instant::now(),
                    last_answer_ms: AtomicU64::new(0),
                    rebuilding: AtomicBool::new(false),
                })))
            }
        }
    }

    /// Whether this is a cluster connection.
    pub fn is_cluster(&self) -> bool {
        matches!(self, Conn::Cluster(_))
    }
}

/// The cluster client's connection, and what replaces it when it stops answering.
///
/// The client refreshes its slot map by itself after redirects and lost nodes, but while a
/// slot moved or a master handed over under load, its recovery was seen to stall for good,
/// every call then timing out. So when no call has had an answer for a whole call timeout,
/// a fresh connection is made from the seeds (one at a time) and replaces it; calls made
/// meanwhile answer `unavailable` as for any timeout.
pub struct Cluster {
    client: ClusterClient,
    current: RwLock<ClusterConnection>,
    /// The call timeout.
    patience: Duration,
    born: Instant,
    /// When a call last had an answer, in ms after `born`.
    last_answer_ms: AtomicU64,
    rebuilding: AtomicBool,
}

impl Cluster {
    fn conn(&self) -> ClusterConnection {
        self.current
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    fn answered(&self) {
        self.last_answer_ms
            .store(self.born.elapsed().as_millis() as u64, Ordering::Relaxed);
    }

    /// Bounds one attempt by the call timeout and notes whether the cluster answered.
    async fn attempt<T>(
        self: &Arc<Self>,
        f: impl std::future::Future<Output = redis::RedisResult<T>>,
    ) -> redis::RedisResult<T> {
        match tokio::time::timeout(self.patience, f).await {
            Ok(Err(e)) if e.is_timeout() => {
                self.stalled();
                Err(e)
            }
            Ok(r) => {
                self.answered();
                r
            }
            Err(_) => {
                self.stalled();
                Err(std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    "redis cluster did not answer",
                )
                .into())
            }
        }
    }

    /// A call had no answer: replaces the connection when none had one for a call timeout.
    fn stalled(self: &Arc<Self>) {
        let last = Duration::from_millis(self.last_answer_ms.load(Ordering::Relaxed));
        let silent = self.born.elapsed().saturating_sub(last);
        if silent < self.patience || self.rebuilding.swap(true, Ordering::AcqRel) {
            return;
        }
        let me = self.clone();
        tokio::spawn(async move {
            tracing::warn!(
                ?silent,
                "no answer from the redis cluster; connecting afresh"
            );
            metrics::counter!("livehub_fleet_cluster_reconnects_total").increment(1);
            match tokio::time::timeout(me.patience * 4, me.client.get_async_connection()).await {
                Ok(Ok(c)) => {
                    *me.current.write().unwrap_or_else(|e| e.into_inner()) = c;
                    me.answered();
                    tracing::info!("connected to the redis cluster afresh");
                }
                Ok(Err(e)) => tracing::warn!(error = %e, "cannot connect to the redis cluster"),
                Err(_) => tracing::warn!("cannot connect to the redis cluster in time"),
            }
            me.rebuilding.store(false, Ordering::Release);
        });
    }
}

/// Paces sending again a command the cluster did not run (`MOVED`, `ASK`, `TRYAGAIN`,
/// `CLUSTERDOWN`): pauses [`REDIRECT_PAUSE_FIRST`], doubling up to [`REDIRECT_PAUSE_MAX`], for up
/// to `patience` in all.
struct WhileMoving {
    t0: Instant,
    pause: Duration,
    patience: Duration,
}

impl WhileMoving {
    fn new(patience: Duration) -> WhileMoving {
        WhileMoving {
            t0: Instant::now(),
            pause: REDIRECT_PAUSE_FIRST,
            patience,
        }
    }

    /// Whether to send again after `e`; pauses first when so.
    async fn again(&mut self, e: &redis::RedisError) -> bool {
        if !e.is_cluster_error() || self.t0.elapsed() + self.pause >= self.patience {
            return false;
        }
        tracing::debug!(error = %e, "redis cluster is moving a slot; sending again");
        tokio::time::sleep(self.pause).await;
        self.pause = (self.pause * 2).min(REDIRECT_PAUSE_MAX);
        true
    }
}

impl ConnectionLike for Conn {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Conn::Single(c) => c.req_packed_command(cmd),
            Conn::Cluster(cl) => {
                let cl = cl.clone();
                Box::pin(async move {
                    let mut moving = WhileMoving::new(cl.patience);
                    loop {
                        let mut c = cl.conn();
                        match cl.attempt(c.req_packed_command(cmd)).await {
                            Err(e) if moving.again(&e).await => {}
                            r => return r,
                        }
                    }
                })
            }
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Conn::Single(c) => c.req_packed_commands(pipeline, offset, count),
            Conn::Cluster(cl) => {
                let cl = cl.clone();
                Box::pin(async move {
                    let mut moving = WhileMoving::new(cl.patience);
                    loop {
                        let mut c = cl.conn();
                        let r = cl
                            .attempt(c.req_packed_commands(pipeline, offset, count))
                            .await;
                        match r {
                            Err(e) if moving.again(&e).await => {}
                            r => return r,
                        }
                    }
                })
            }
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Conn::Single(c) => c.get_db(),
            Conn::Cluster(_) => 0,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_url_is_one_server_and_several_or_the_cluster_scheme_a_cluster() {
        assert_eq!(
            Target::parse("redis://127.0.0.1:6379/2"),
            Ok(Target::Single("redis://127.0.0.1:6379/2".into()))
        );
        assert_eq!(
            Target::parse("redis://a:1,redis://b:2"),
            Ok(Target::Cluster(vec![
                "redis://a:1".into(),
                "redis://b:2".into()
            ]))
        );
        assert_eq!(
            Target::parse("redis+cluster://a:1,b:2"),
            Ok(Target::Cluster(vec![
                "redis://a:1".into(),
                "redis://b:2".into()
            ]))
        );
        assert_eq!(
            Target::parse("redis+cluster://a:1"),
            Ok(Target::Cluster(vec!["redis://a:1".into()]))
        );
        assert_eq!(
            Target::parse("redis+cluster://:pw@a:1,b:2"),
            Ok(Target::Cluster(vec![
                "redis://:pw@a:1".into(),
                "redis://:pw@b:2".into()
            ])),
            "the first seed's password applies to every seed"
        );
        assert!(Target::parse("redis+cluster://a:1,,b:2").is_err());
        assert!(Target::parse("redis+cluster://a:1/3").is_err());
        assert!(Target::parse("redis://a:1,http://b:2").is_err());
        assert!(Target::parse("not a url").is_err());
        assert_eq!(
            Target::parse("redis+cluster://a:1,b:2")
                .unwrap()
                .pubsub_urls(),
            vec!["redis://a:1".to_owned(), "redis://b:2".to_owned()]
        );
    }
}

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

use std::time::Duration;

use redis::aio::{ConnectionLike, ConnectionManager, ConnectionManagerConfig};
use redis::cluster::ClusterClientBuilder;
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
    Cluster(ClusterConnection),
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
                // Retries pause 10 ms, then longer, up to a quarter of the call timeout: a
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
                Ok(Conn::Cluster(client.get_async_connection().await?))
            }
        }
    }

    /// Whether this is a cluster connection.
    pub fn is_cluster(&self) -> bool {
        matches!(self, Conn::Cluster(_))
    }
}

impl ConnectionLike for Conn {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Conn::Single(c) => c.req_packed_command(cmd),
            Conn::Cluster(c) => c.req_packed_command(cmd),
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
            Conn::Cluster(c) => c.req_packed_commands(pipeline, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Conn::Single(c) => c.get_db(),
            Conn::Cluster(c) => c.get_db(),
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
            Ok(Target::Cluster(vec!["redis://a:1".into(), "redis://b:2".into()]))
        );
        assert_eq!(
            Target::parse("redis+cluster://a:1,b:2"),
            Ok(Target::Cluster(vec!["redis://a:1".into(), "redis://b:2".into()]))
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
            Target::parse("redis+cluster://a:1,b:2").unwrap().pubsub_urls(),
            vec!["redis://a:1".to_owned(), "redis://b:2".to_owned()]
        );
    }
}

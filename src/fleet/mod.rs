//! Fleet mode (`--redis URL`): several hubs serving the same rooms through one Redis, or one
//! Redis Cluster.
//!
//! Redis holds what every hub must agree on: rooms and SKU definitions, stock, per-user
//! units, and the state of each `(room, user, req)`. Each hub still journals the orders it
//! takes (the journal stays the record of truth) and then publishes them to a Redis Stream
//! per room, which every hub's aggregator reads.
//!
//! - [`keys`]: key names; every key of a room shares the hash tag `{room}`;
//! - [`scripts`]: the Lua scripts (one `EVALSHA` per buy) and their replies;
//! - [`buy`]: the buy path in fleet mode: ticket → journal → publish;
//! - [`catalog`]: catalog changes written to Redis and announced to every hub;
//! - [`conn`]: the connection, to one server or to a cluster, behind one type;
//! - [`connect`]: joining the fleet at start-up;
//! - [`mirror`]: each hub's in-memory copy of rooms and SKUs, kept in step with Redis;
//! - [`publish`]: journaled orders → the room's stream, in order, exactly once;
//! - [`stream`]: the rooms' streams → the aggregators: one blocking reader per hub;
//! - [`resync`]: how often a buy of an unknown SKU may refresh its room from Redis;
//! - [`moves`]: payments, cancels, refunds and expiries: claim → journal → commit;
//! - [`live`]: the audience across hubs: each hub's live counts of a room, summed;
//! - [`expiry`]: this hub's heartbeat, and the expiry of orders whose hub is gone;
//! - [`reconcile`]: start-up repair of this hub's tickets, and `livehub reconcile`.

pub mod buy;
pub mod catalog;
pub mod conn;
pub mod connect;
pub mod expiry;
pub mod keys;
pub mod live;
pub mod mirror;
pub mod moves;
pub mod publish;
pub mod reconcile;
pub mod resync;
pub mod scripts;
pub mod stream;

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

pub use conn::{Conn, Target};
pub use scripts::{Scripts, Ticket};

/// Longest wait for one Redis call on the buy path before the buy answers `unavailable`.
pub const DEFAULT_REDIS_TIMEOUT: Duration = Duration::from_millis(500);
/// Longest hub id.
pub const MAX_HUB_ID_LEN: usize = 32;

/// How a hub joins the fleet.
#[derive(Debug, Clone)]
pub struct FleetOptions {
    /// `redis://host:port/db` (one server), or a cluster's seeds: `redis://a:1,redis://b:2` or
    /// `redis+cluster://a:1,b:2` ([`Target::parse`]).
    pub url: String,
    /// This hub's id: unique among the hubs, stable for its data dir; it prefixes order ids.
    pub hub_id: Arc<str>,
    /// Longest wait for one Redis call on the buy and catalog paths.
    pub timeout: Duration,
}

/// Why Redis could not do something.
#[derive(Debug, thiserror::Error)]
pub enum FleetError {
    /// No answer within the call timeout.
    #[error("redis did not answer within {0:?}")]
    Timeout(Duration),
    /// Redis or the connection to it failed.
    #[error("redis: {0}")]
    Redis(#[from] redis::RedisError),
    /// `--redis` names neither one server nor a cluster's seeds.
    #[error("--redis: {0}")]
    Target(String),
    /// An answer this hub cannot read (a script of another version, a damaged key).
    #[error("unexpected reply from redis: {0}")]
    Reply(String),
}

/// The connection to Redis shared by every task of a hub. Cheap to clone.
#[derive(Clone)]
pub struct Fleet {
    /// This hub's id in the fleet.
    pub hub_id: Arc<str>,
    /// What `--redis` names, for connections of their own (the change channel's subscription).
    pub target: Arc<Target>,
    conn: Conn,
    /// The Lua scripts, run by `EVALSHA`.
    pub scripts: Arc<Scripts>,
    /// Longest wait for one Redis call.
    pub timeout: Duration,
    /// Serialises refreshes of the in-memory copy ([`mirror`]), so two never add one SKU twice.
    pub(crate) sync_lock: Arc<tokio::sync::Mutex<()>>,
    /// Refreshes of one room made for a buy of a SKU this hub does not know ([`resync::Resyncs`]).
    pub(crate) resyncs: Arc<resync::Resyncs>,
    /// The rooms handed to this hub's stream reader ([`stream::run`]).
    pub(crate) follow: stream::Follow,
}

impl std::fmt::Debug for Fleet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Fleet")
            .field("hub_id", &self.hub_id)
            .finish()
    }
}

impl Fleet {
    /// Connects to Redis, failing with a clear error when it does not answer.
    pub async fn connect(opts: &FleetOptions) -> Result<Fleet, FleetError> {
        let target = Target::parse(&opts.url).map_err(FleetError::Target)?;
        let conn = tokio::time::timeout(opts.timeout * 4, Conn::connect(&target, opts.timeout))
            .await
            .map_err(|_| FleetError::Timeout(opts.timeout * 4))??;
        let fleet = Fleet {
            hub_id: opts.hub_id.clone(),
            target: Arc::new(target),
            conn,
            scripts: Arc::new(Scripts::new()),
            timeout: opts.timeout,
            sync_lock: Arc::default(),
            resyncs: Arc::default(),
            follow: stream::Follow::default(),
        };
        Ok(fleet)
    }

    /// Records this hub's id in Redis, so `livehub reconcile` looks at its tickets.
    pub async fn register(&self) -> Result<(), FleetError> {
        self.run(redis::cmd("SADD").arg(keys::HUBS).arg(&*self.hub_id))
            .await
    }

    /// A handle to the shared multiplexed connection.
    pub fn conn(&self) -> Conn {
        self.conn.clone()
    }

    /// Runs one command with the call timeout.
    pub async fn run<T: redis::FromRedisValue>(&self, cmd: &redis::Cmd) -> Result<T, FleetError> {
        let mut c = self.conn.clone();
        self.bounded(async move { cmd.query_async(&mut c).await })
            .await
    }

    /// Runs a pipeline with the call timeout.
    pub async fn run_pipe<T: redis::FromRedisValue>(
        &self,
        pipe: &redis::Pipeline,
    ) -> Result<T, FleetError> {
        let mut c = self.conn.clone();
        self.bounded(async move { pipe.query_async(&mut c).await })
            .await
    }

    /// Bounds a Redis future by the call timeout.
    pub async fn bounded<T>(
        &self,
        f: impl std::future::Future<Output = redis::RedisResult<T>>,
    ) -> Result<T, FleetError> {
        match tokio::time::timeout(self.timeout, f).await {
            Ok(r) => Ok(r?),
            Err(_) => Err(FleetError::Timeout(self.timeout)),
        }
    }
}

/// Checks a hub id: 1 to 32 characters of `A-Z a-z 0-9 _ - .` (no `:`, which separates it
/// from the number in an order id).
pub fn check_hub_id(id: &str) -> Result<(), String> {
    if id.is_empty() || id.len() > MAX_HUB_ID_LEN {
        return Err(format!("hub id must have 1 to {MAX_HUB_ID_LEN} characters"));
    }
    if !id
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'))
    {
        return Err("hub id may only hold A-Z a-z 0-9 _ - .".into());
    }
    Ok(())
}

/// File in the data dir that pins the hub id: order ids carry it, so it must never change
/// for a journal.
pub const HUB_ID_FILE: &str = "hub.id";

/// The hub id for `data_dir`: the one stored there, or `given`, or a new random one, stored
/// on first use. A `given` id that differs from the stored one is refused: the journal's
/// order ids were made with the stored one.
pub fn hub_id_for(data_dir: &Path, given: Option<&str>) -> Result<String, String> {
    let path = data_dir.join(HUB_ID_FILE);
    let stored = std::fs::read_to_string(&path)
        .ok()
        .map(|s| s.trim().to_owned())
        .filter(|s| !s.is_empty());
    if let Some(g) = given {
        check_hub_id(g)?;
    }
    match (stored, given) {
        (Some(s), Some(g)) if s != g => Err(format!(
            "--hub-id {g} differs from {s} stored in {}: the journal's order ids carry {s}; \
             use a new data dir for a new hub id",
            path.display()
        )),
        (Some(s), _) => {
            check_hub_id(&s).map_err(|e| format!("{}: {e}", path.display()))?;
            Ok(s)
        }
        (None, g) => {
            let id = match g {
                Some(g) => g.to_owned(),
                None => format!(
                    "h{}",
                    &crate::auth::random_token()[..8].to_ascii_lowercase()
                ),
            };
            let id: String = id
                .chars()
                .filter(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'))
                .collect();
            check_hub_id(&id)?;
            crate::data_dir::create(data_dir)
                .and_then(|_| crate::data_dir::write_durably(&path, id.as_bytes(), false))
                .map_err(|e| format!("cannot store the hub id in {}: {e}", path.display()))?;
            Ok(id)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hub_ids_are_checked_and_pinned_to_the_data_dir() {
        assert!(check_hub_id("h1").is_ok());
        assert!(check_hub_id("").is_err());
        assert!(check_hub_id("a:b").is_err());
        assert!(check_hub_id(&"a".repeat(33)).is_err());
        let dir = tempfile::tempdir().unwrap();
        let first = hub_id_for(dir.path(), None).unwrap();
        assert!(check_hub_id(&first).is_ok());
        assert_eq!(hub_id_for(dir.path(), None).unwrap(), first);
        assert_eq!(hub_id_for(dir.path(), Some(&first)).unwrap(), first);
        let err = hub_id_for(dir.path(), Some("other")).unwrap_err();
        assert!(err.contains("differs"), "{err}");
        let dir2 = tempfile::tempdir().unwrap();
        assert_eq!(hub_id_for(dir2.path(), Some("east-1")).unwrap(), "east-1");
        assert!(hub_id_for(dir2.path(), Some("bad:id")).is_err());
    }
}

//! A real local Redis Cluster for tests: `redis-server` ×N with `--cluster-enabled yes` on free
//! loopback ports, joined by `redis-cli --cluster create`, in one temp dir, every server killed
//! and the dir removed when dropped. Missing binaries fail the test with a clear message (never
//! a skip): `scripts/test.sh` installs `redis-server`, whose package depends on `redis-tools`
//! (`redis-cli`).
//!
//! Besides starting, it moves one slot to another master the way `redis-cli --cluster
//! reshard` does (`CLUSTER SETSLOT … IMPORTING/MIGRATING`, `MIGRATE` key by key, `SETSLOT …
//! NODE`), slowly so commands meet the migration half done, and makes a replica take over its
//! master (`CLUSTER FAILOVER`).

use std::collections::HashMap;
use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use livehub::fleet::FleetOptions;

use super::WAIT;

/// Longest wait for the cluster to form or to settle after a change.
const SETTLE: Duration = Duration::from_secs(60);

pub struct Node {
    pub port: u16,
    child: Option<Child>,
}

pub struct RedisCluster {
    pub nodes: Vec<Node>,
    pub dir: PathBuf,
}

/// Two free loopback ports: the client port and the cluster bus port.
fn free_ports() -> (u16, u16) {
    let a = TcpListener::bind("127.0.0.1:0").expect("bind a free port");
    let b = TcpListener::bind("127.0.0.1:0").expect("bind a free port");
    (
        a.local_addr().unwrap().port(),
        b.local_addr().unwrap().port(),
    )
}

fn binary(var: &str, default: &str) -> String {
    std::env::var(var).unwrap_or_else(|_| default.into())
}

impl RedisCluster {
    /// Starts `masters` masters with `replicas` replicas each and waits until every node says
    /// `cluster_state:ok`.
    pub fn start(masters: usize, replicas: usize) -> RedisCluster {
        assert!(masters >= 3, "redis-cli --cluster create needs 3 masters");
        let dir = super::temp_dir();
        let server = binary("LIVEHUB_TEST_REDIS_SERVER", "redis-server");
        let mut nodes = Vec::new();
        for _ in 0..masters * (1 + replicas) {
            let (port, bus) = free_ports();
            let child = Command::new(&server)
                .args(["--port", &port.to_string()])
                .args(["--cluster-port", &bus.to_string()])
                .args(["--bind", "127.0.0.1"])
                .args(["--cluster-enabled", "yes"])
                .arg("--cluster-config-file")
                .arg(dir.join(format!("nodes-{port}.conf")))
                .args(["--cluster-node-timeout", "5000"])
                .args(["--save", "", "--appendonly", "no"])
                .arg("--dir")
                .arg(&dir)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .unwrap_or_else(|e| {
                    panic!(
                        "cannot start `{server}` ({e}): the Redis Cluster tests need \
                         redis-server; install it with `apt-get install -y redis-server` \
                         (scripts/test.sh does)"
                    )
                });
            nodes.push(Node {
                port,
                child: Some(child),
            });
        }
        let cluster = RedisCluster { nodes, dir };
        for n in &cluster.nodes {
            let t0 = Instant::now();
            while cluster
                .try_query::<String>(n.port, &mut redis::cmd("PING"))
                .is_err()
            {
                assert!(
                    t0.elapsed() < WAIT,
                    "redis-server on {} did not answer",
                    n.port
                );
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        let cli = binary("LIVEHUB_TEST_REDIS_CLI", "redis-cli");
        let out = Command::new(&cli)
            .arg("--cluster")
            .arg("create")
            .args(
                cluster
                    .nodes
                    .iter()
                    .map(|n| format!("127.0.0.1:{}", n.port)),
            )
            .args(["--cluster-replicas", &replicas.to_string(), "--cluster-yes"])
            .stdin(Stdio::null())
            .output()
            .unwrap_or_else(|e| {
                panic!(
                    "cannot run `{cli}` ({e}): install redis-tools (a dependency of \
                     redis-server)"
                )
            });
        assert!(
            out.status.success(),
            "redis-cli --cluster create failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        cluster.wait_settled(masters);
        cluster
    }

    /// `redis+cluster://` with every node as a seed.
    pub fn url(&self) -> String {
        let seeds: Vec<String> = self
            .nodes
            .iter()
            .map(|n| format!("127.0.0.1:{}", n.port))
            .collect();
        format!("redis+cluster://{}", seeds.join(","))
    }

    /// Options for a hub on this cluster (the call timeout as in
    /// [`super::redis_server::RedisServer::hub`]).
    pub fn hub(&self, id: &str) -> FleetOptions {
        FleetOptions {
            url: self.url(),
            hub_id: Arc::from(id),
            timeout: Duration::from_secs(10),
        }
    }

    fn client(port: u16) -> redis::Client {
        redis::Client::open(format!("redis://127.0.0.1:{port}/")).unwrap()
    }

    pub fn try_query<T: redis::FromRedisValue>(
        &self,
        port: u16,
        cmd: &mut redis::Cmd,
    ) -> redis::RedisResult<T> {
        let mut c = Self::client(port).get_connection_with_timeout(Duration::from_millis(500))?;
        cmd.query(&mut c)
    }

    /// A command on the node at `port`.
    pub fn query<T: redis::FromRedisValue>(&self, port: u16, cmd: &mut redis::Cmd) -> T {
        self.try_query(port, cmd)
            .unwrap_or_else(|e| panic!("{cmd:?} on {port}: {e}"))
    }

    /// A command on the master that owns `key`'s slot.
    pub fn query_key<T: redis::FromRedisValue>(&self, key: &str, cmd: &mut redis::Cmd) -> T {
        let port = self.master_of(livehub::fleet::keys::slot(key));
        self.query(port, cmd)
    }

    fn running(&self) -> impl Iterator<Item = &Node> {
        self.nodes.iter().filter(|n| n.child.is_some())
    }

    /// The node id of the node at `port`.
    pub fn node_id(&self, port: u16) -> String {
        self.query(port, redis::cmd("CLUSTER").arg("MYID"))
    }

    /// Each running node's view: `port → (id, is master, master id when a replica)`.
    fn roles(&self, asked: u16) -> HashMap<u16, (String, bool, Option<String>)> {
        let text: String = self.query(asked, redis::cmd("CLUSTER").arg("NODES"));
        let mut out = HashMap::new();
        for line in text.lines() {
            let f: Vec<&str> = line.split(' ').collect();
            if f.len() < 8 {
                continue;
            }
            let port: u16 = f[1]
                .split('@')
                .next()
                .and_then(|a| a.rsplit(':').next())
                .and_then(|p| p.parse().ok())
                .unwrap_or(0);
            let master = f[2].contains("master");
            let of = (f[3] != "-").then(|| f[3].to_owned());
            out.insert(port, (f[0].to_owned(), master, of));
        }
        out
    }

    /// The port of the master that owns `slot`, as the first running node sees it.
    pub fn master_of(&self, slot: u16) -> u16 {
        let asked = self.running().next().expect("a running node").port;
        let slots: redis::Value = self.query(asked, redis::cmd("CLUSTER").arg("SLOTS"));
        let redis::Value::Array(ranges) = slots else {
            panic!("CLUSTER SLOTS: {slots:?}")
        };
        for r in ranges {
            let redis::Value::Array(r) = r else { continue };
            let num = |v: &redis::Value| match v {
                redis::Value::Int(i) => *i,
                _ => -1,
            };
            if num(&r[0]) <= slot as i64 && slot as i64 <= num(&r[1]) {
                if let redis::Value::Array(m) = &r[2] {
                    return num(&m[1]) as u16;
                }
            }
        }
        panic!("no master owns slot {slot}")
    }

    /// The ports of the running masters.
    pub fn masters(&self) -> Vec<u16> {
        let asked = self.running().next().expect("a running node").port;
        let roles = self.roles(asked);
        let mut m: Vec<u16> = self
            .running()
            .map(|n| n.port)
            .filter(|p| roles.get(p).is_some_and(|r| r.1))
            .collect();
        m.sort();
        m
    }

    /// The port of a replica of the master at `master`.
    pub fn replica_of(&self, master: u16) -> u16 {
        let roles = self.roles(master);
        let id = &roles[&master].0;
        *roles
            .iter()
            .find(|(_, r)| r.2.as_deref() == Some(id.as_str()))
            .unwrap_or_else(|| panic!("no replica of {master}"))
            .0
    }

    /// Waits until every running node says `cluster_state:ok`, there are `masters` masters,
    /// and every node maps every slot to the same master.
    pub fn wait_settled(&self, masters: usize) {
        let t0 = Instant::now();
        loop {
            let ok = self.running().all(|n| {
                self.try_query::<String>(n.port, redis::cmd("CLUSTER").arg("INFO"))
                    .is_ok_and(|i| {
                        i.contains("cluster_state:ok") && i.contains("cluster_slots_ok:16384")
                    })
            });
            let agreed = ok && {
                let views: Vec<String> = self
                    .running()
                    .filter_map(|n| {
                        self.try_query::<String>(n.port, redis::cmd("CLUSTER").arg("NODES"))
                            .ok()
                    })
                    .map(|t| {
                        let mut masters: Vec<String> = t
                            .lines()
                            .filter(|l| l.contains("master") && !l.contains("fail"))
                            .map(|l| {
                                let f: Vec<&str> = l.split(' ').collect();
                                format!("{} {}", f[0], f[8..].join(" "))
                            })
                            .collect();
                        masters.sort();
                        masters.join("\n")
                    })
                    .collect();
                views.len() == self.running().count()
                    && views.windows(2).all(|w| w[0] == w[1])
                    && views[0].lines().count() == masters
            };
            if agreed {
                return;
            }
            assert!(
                t0.elapsed() < SETTLE,
                "the cluster did not settle with {masters} masters"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Moves `slot` to the master at `to`, as a resharding does: marks it importing and
    /// migrating, moves its keys one at a time with `pause` between them (so commands meet the
    /// slot half moved: `ASK` redirects and `TRYAGAIN`), then gives it to `to` on every master.
    pub fn move_slot(&self, slot: u16, to: u16, pause: Duration) {
        let masters = self.masters();
        let from = self.master_of(slot);
        assert_ne!(from, to, "slot {slot} is already on {to}");
        let (from_id, to_id) = (self.node_id(from), self.node_id(to));
        let setslot = |port: u16, args: &[&str]| {
            let () = self.query(
                port,
                redis::cmd("CLUSTER").arg("SETSLOT").arg(slot).arg(args),
            );
        };
        setslot(to, &["IMPORTING", &from_id]);
        setslot(from, &["MIGRATING", &to_id]);
        std::thread::sleep(pause);
        loop {
            let keys: Vec<String> = self.query(
                from,
                redis::cmd("CLUSTER").arg("GETKEYSINSLOT").arg(slot).arg(1),
            );
            let Some(key) = keys.first() else { break };
            let () = self.query(
                from,
                redis::cmd("MIGRATE")
                    .arg("127.0.0.1")
                    .arg(to)
                    .arg("")
                    .arg(0)
                    .arg(5000)
                    .arg("KEYS")
                    .arg(key),
            );
            std::thread::sleep(pause);
        }
        for &m in &masters {
            setslot(m, &["NODE", &to_id]);
        }
        self.wait_settled(masters.len());
    }

    /// Makes the replica of the master at `master` take over by a manual failover (the master
    /// stops taking writes, the replica catches up, then they swap roles), and waits until
    /// every node agrees.
    pub fn failover(&self, master: u16) {
        let masters = self.masters().len();
        let replica = self.replica_of(master);
        let () = self.query(replica, redis::cmd("CLUSTER").arg("FAILOVER"));
        let t0 = Instant::now();
        loop {
            let roles = self.roles(replica);
            if roles.get(&replica).is_some_and(|r| r.1) && roles.get(&master).is_some_and(|r| !r.1)
            {
                break;
            }
            assert!(t0.elapsed() < SETTLE, "replica {replica} did not take over");
            std::thread::sleep(Duration::from_millis(20));
        }
        self.wait_settled(masters);
    }
}

impl Drop for RedisCluster {
    fn drop(&mut self) {
        for n in &mut self.nodes {
            if let Some(mut c) = n.child.take() {
                let _ = c.kill();
                let _ = c.wait();
            }
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

//! A real `redis-server` for tests: on a free loopback port, without persistence, in its own
//! temp dir, killed when dropped. A missing `redis-server` fails the test with a clear message
//! (never a skip): `scripts/test.sh` installs it.

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use livehub::fleet::FleetOptions;

use super::WAIT;

pub struct RedisServer {
    pub port: u16,
    pub dir: PathBuf,
    binary: String,
    child: Option<Child>,
}

fn binary() -> String {
    std::env::var("LIVEHUB_TEST_REDIS_SERVER").unwrap_or_else(|_| "redis-server".into())
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .expect("bind a free port")
        .local_addr()
        .unwrap()
        .port()
}

impl RedisServer {
    /// Starts one; panics with how to install it when `redis-server` is missing.
    pub fn start() -> RedisServer {
        Self::start_with(&binary())
    }

    /// Starts `binary` as the server.
    pub fn start_with(binary: &str) -> RedisServer {
        let dir = super::temp_dir();
        let mut r = RedisServer {
            port: free_port(),
            dir,
            binary: binary.to_owned(),
            child: None,
        };
        r.spawn();
        r
    }

    fn spawn(&mut self) {
        let child = Command::new(&self.binary)
            .args(["--port", &self.port.to_string()])
            .args(["--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .arg("--dir")
            .arg(&self.dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| {
                panic!(
                    "cannot start `{}` ({e}): the Redis-mode tests need redis-server; \
                     install it with `apt-get install -y redis-server` (scripts/test.sh does)",
                    self.binary
                )
            });
        self.child = Some(child);
        let t0 = Instant::now();
        while self.ping().is_err() {
            assert!(
                t0.elapsed() < WAIT,
                "redis-server did not answer on port {}",
                self.port
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }

    /// Options for a hub on this Redis. The call timeout is long: in these tests thousands of
    /// client sockets share the servers' two-thread runtime, so an answer can wait seconds
    /// for a worker (a debug build on two cores). A stopped Redis refuses connections, which
    /// fails a call at once whatever the timeout.
    pub fn hub(&self, id: &str) -> FleetOptions {
        FleetOptions {
            url: self.url(),
            hub_id: Arc::from(id),
            timeout: Duration::from_secs(10),
        }
    }

    pub fn client(&self) -> redis::Client {
        redis::Client::open(self.url()).unwrap()
    }

    fn ping(&self) -> redis::RedisResult<()> {
        let mut c = self
            .client()
            .get_connection_with_timeout(Duration::from_millis(200))?;
        redis::cmd("PING").query::<String>(&mut c).map(|_| ())
    }

    /// Stops Redis the way an operator restarting a persistent Redis does: writes its data
    /// (SHUTDOWN SAVE, into its dir) and exits, so [`RedisServer::restart`] loads it back.
    pub fn stop(&mut self) {
        if let Ok(mut c) = self.client().get_connection() {
            let _ = redis::cmd("SHUTDOWN").arg("SAVE").query::<()>(&mut c);
        }
        if let Some(mut child) = self.child.take() {
            let _ = child.wait();
        }
    }

    /// Starts Redis again on the same port and dir.
    pub fn restart(&mut self) {
        assert!(self.child.is_none(), "stop first");
        self.spawn();
    }

    /// Freezes the server (SIGSTOP): connections stay open and nothing is answered, as a
    /// hung Redis behaves.
    pub fn pause(&self) {
        self.signal("-STOP");
    }

    /// Wakes a paused server (SIGCONT); it then runs what it was sent meanwhile.
    pub fn resume(&self) {
        self.signal("-CONT");
    }

    fn signal(&self, sig: &str) {
        let pid = self.child.as_ref().expect("running").id().to_string();
        let ok = Command::new("kill")
            .args([sig, &pid])
            .status()
            .is_ok_and(|s| s.success());
        assert!(ok, "kill {sig} {pid} failed");
    }

    /// A synchronous command, for checks.
    pub fn query<T: redis::FromRedisValue>(&self, cmd: &mut redis::Cmd) -> T {
        let mut c = self.client().get_connection().expect("redis connection");
        cmd.query(&mut c).expect("redis command")
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

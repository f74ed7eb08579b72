//! A real HAProxy for tests, running the repo's own `deploy/haproxy.cfg`: its `bind` address
//! and its `server` addresses are replaced by a free loopback port and the given hubs',
//! `chroot`, `user`, `group` and the syslog target (`log ADDR …`) are left out, since the test
//! runs it as a child in the foreground (`haproxy -f FILE -db`) where there may be no
//! `/dev/log`, and `maxconn` is [`TEST_MAXCONN`], since HAProxy refuses to start when it
//! cannot raise its open-file limit to twice that. Killed when dropped. A missing `haproxy` fails the test
//! with how to install it (never a skip): `scripts/test.sh` installs it.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::WAIT;

/// `maxconn` in the test: above the test's sockets, within a test machine's open files.
pub const TEST_MAXCONN: u32 = 4000;

pub struct HaProxy {
    /// `127.0.0.1:PORT`, where HAProxy listens.
    pub addr: String,
    pub dir: PathBuf,
    child: Child,
}

/// The committed config.
pub fn committed_config() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/haproxy.cfg")
}

/// `config` to listen on `bind` and balance over `hubs`: each `server` line of the config is
/// dropped, and in place of the first one a line per hub is put in with that line's options
/// (`server hubN ADDR` plus whatever followed the address). See the module's doc for the rest.
pub fn rewrite(config: &str, bind: &str, hubs: &[&str]) -> String {
    let mut out = Vec::new();
    let (mut binds, mut servers) = (0, 0);
    for line in config.lines() {
        let words: Vec<&str> = line.split_whitespace().collect();
        match words.first().copied() {
            Some("chroot" | "user" | "group") => {}
            Some("log") if words.get(1) != Some(&"global") => {}
            Some("maxconn") => {
                let indent = &line[..line.len() - line.trim_start().len()];
                out.push(format!("{indent}maxconn {TEST_MAXCONN}"));
            }
            Some("bind") => {
                binds += 1;
                let indent = &line[..line.len() - line.trim_start().len()];
                let rest = words[2..].join(" ");
                out.push(format!("{indent}bind {bind} {rest}").trim_end().to_owned());
            }
            Some("server") => {
                servers += 1;
                if servers == 1 {
                    let indent = &line[..line.len() - line.trim_start().len()];
                    let options = words[3..].join(" ");
                    for (i, hub) in hubs.iter().enumerate() {
                        out.push(
                            format!("{indent}server hub{} {hub} {options}", i + 1)
                                .trim_end()
                                .to_owned(),
                        );
                    }
                }
            }
            _ => out.push(line.to_owned()),
        }
    }
    assert_eq!(binds, 1, "deploy/haproxy.cfg has one bind line");
    assert!(servers >= 1, "deploy/haproxy.cfg has server lines");
    out.join("\n") + "\n"
}

impl HaProxy {
    /// Starts HAProxy with the committed config over `hubs` (`IP:PORT` each) and waits until
    /// `/healthz` answers through it.
    pub async fn start(hubs: &[&str]) -> HaProxy {
        let dir = super::temp_dir();
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .expect("bind a free port")
            .local_addr()
            .unwrap()
            .port();
        let addr = format!("127.0.0.1:{port}");
        let config = std::fs::read_to_string(committed_config()).expect("deploy/haproxy.cfg");
        let file = dir.join("haproxy.cfg");
        std::fs::write(&file, rewrite(&config, &addr, hubs)).unwrap();
        let binary = std::env::var("LIVEHUB_TEST_HAPROXY").unwrap_or_else(|_| "haproxy".to_owned());
        let child = Command::new(&binary)
            .arg("-f")
            .arg(&file)
            .arg("-db")
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap_or_else(|e| {
                panic!(
                    "cannot start `{binary}` ({e}): this test needs HAProxy; install it with \
                     `apt-get install -y haproxy` (scripts/test.sh does)"
                )
            });
        let mut lb = HaProxy { addr, dir, child };
        let http = reqwest::Client::new();
        let t0 = Instant::now();
        loop {
            if let Some(status) = lb.child.try_wait().unwrap() {
                panic!("haproxy exited at start ({status}); its config: {file:?}");
            }
            let r = http.get(format!("http://{}/healthz", lb.addr)).send().await;
            if r.is_ok_and(|r| r.status().is_success()) {
                return lb;
            }
            assert!(t0.elapsed() < WAIT, "haproxy did not serve /healthz");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

impl Drop for HaProxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

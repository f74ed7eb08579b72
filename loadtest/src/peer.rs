//! The servers livehub is measured beside, in the same run and with the same load: the echo
//! server on livehub's own stack (the transport's ceiling, `echo.rs`) and an in-memory
//! reference hub on Bun (`loadtest/peers/bun/`, uWebSockets underneath), which speaks the
//! buyer protocol for real (stock, limits, idempotent `req`s) but writes nothing down.
//!
//! Both take buyers with `?user=` and no token, and both take the sale's setup over a control
//! socket (`define` and `open` frames), so a scenario drives them the same way.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use tokio_tungstenite::tungstenite::Message;

use crate::buyer::{wait_hello, Frame};
use crate::net::{connect_ws, Target, Ws};

/// A server run beside livehub.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Peer {
    /// `echo-server`: an ack-shaped answer to every buy, nothing kept.
    Echo,
    /// `loadtest/peers/bun/hub.js` on Bun.
    Bun,
}

impl Peer {
    /// Its key in the summary (`echo`, `bun`) and in `livehub_vs_<name>`.
    pub fn name(self) -> &'static str {
        match self {
            Peer::Echo => "echo",
            Peer::Bun => "bun",
        }
    }

    /// Tells its requests apart from livehub's in the same run.
    pub fn req_tag(self) -> &'static str {
        match self {
            Peer::Echo => "e",
            Peer::Bun => "b",
        }
    }

    /// Whether its acks carry real amounts, stock and orders (checked like livehub's).
    pub fn keeps_stock(self) -> bool {
        self == Peer::Bun
    }

    /// The peers a scenario's `--against-echo` and `--against-bun` ask for, in that order.
    pub fn chosen(echo: bool, bun: bool) -> Vec<Peer> {
        [(echo, Peer::Echo), (bun, Peer::Bun)]
            .into_iter()
            .filter_map(|(on, p)| on.then_some(p))
            .collect()
    }

    /// Starts it: the echo in this process (`in_process`, its own runtime) or as a child, the
    /// Bun hub always as a child.
    pub async fn start(self, in_process: bool) -> anyhow::Result<Running> {
        match (self, in_process) {
            (Peer::Echo, true) => Ok(Running {
                addr: crate::echo::spawn_in_process()?,
                cpu: crate::cpu::Probe::Threads(crate::echo::WORKER_NAME),
                _child: None,
            }),
            (Peer::Echo, false) => {
                let exe = std::env::current_exe()?;
                let args = ["echo-server", "--listen", "127.0.0.1:0"];
                spawn_child(exe, &args, "echo server listening on ").await
            }
            (Peer::Bun, _) => {
                let (bun, hub) = bun_paths()?;
                let hub = hub.to_string_lossy().into_owned();
                spawn_child(
                    bun,
                    &[hub.as_str(), "--listen", "127.0.0.1:0"],
                    "bun peer listening on ",
                )
                .await
            }
        }
    }
}

/// A peer that is up.
pub struct Running {
    pub addr: SocketAddr,
    /// Where its CPU time is read.
    pub cpu: crate::cpu::Probe,
    /// A child process dies with this.
    _child: Option<tokio::process::Child>,
}

impl Running {
    pub fn target(&self) -> Target {
        Target::from_addr(self.addr)
    }
}

/// The Bun binary (`LIVEHUB_BUN`, else what `npm ci` put in `loadtest/peers/bun`) and the
/// hub's script (`LIVEHUB_BUN_HUB`, else `loadtest/peers/bun/hub.js`).
pub fn bun_paths() -> anyhow::Result<(PathBuf, PathBuf)> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("peers/bun");
    let bun = std::env::var_os("LIVEHUB_BUN")
        .map(PathBuf::from)
        .unwrap_or_else(|| dir.join("node_modules/.bin/bun"));
    let hub = std::env::var_os("LIVEHUB_BUN_HUB")
        .map(PathBuf::from)
        .unwrap_or_else(|| dir.join("hub.js"));
    anyhow::ensure!(
        bun.exists(),
        "no Bun at {}: run `npm ci --prefix loadtest/peers/bun` (the `bun` npm package), or set LIVEHUB_BUN",
        bun.display()
    );
    anyhow::ensure!(
        hub.exists(),
        "no Bun hub at {} (set LIVEHUB_BUN_HUB)",
        hub.display()
    );
    Ok((bun, hub))
}

/// Starts `program args` on a free loopback port, for loads whose sockets would not fit in
/// this process's open-file limit twice (the spike's 15,000 buyers) and for a server's CPU
/// time of its own. It says `{banner}ADDR ...` on stderr once listening; it dies with the
/// returned handle.
async fn spawn_child(program: PathBuf, args: &[&str], banner: &str) -> anyhow::Result<Running> {
    use tokio::io::AsyncBufReadExt;
    let mut child = tokio::process::Command::new(&program)
        .args(args)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| anyhow::anyhow!("starting {}: {e}", program.display()))?;
    let stderr = child.stderr.take().expect("piped stderr");
    let mut lines = tokio::io::BufReader::new(stderr).lines();
    let line = tokio::time::timeout(Duration::from_secs(10), lines.next_line())
        .await
        .map_err(|_| anyhow::anyhow!("{} did not start within 10 s", program.display()))??
        .unwrap_or_default();
    let addr = line
        .strip_prefix(banner)
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|a| a.parse().ok())
        .ok_or_else(|| anyhow::anyhow!("{} said {line:?}", program.display()))?;
    // Keep reading its stderr so that it never blocks on a full pipe.
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    let pid = child
        .id()
        .ok_or_else(|| anyhow::anyhow!("{} exited at once", program.display()))?;
    Ok(Running {
        addr,
        cpu: crate::cpu::Probe::Process(pid),
        _child: Some(child),
    })
}

/// A SKU as a scenario sets it up.
pub struct SkuSetup<'a> {
    pub sku: &'a str,
    pub price_fen: u64,
    pub stock: u64,
    pub limit: Option<u64>,
    /// Open at once (else it waits for [`Control::open`]).
    pub open: bool,
}

/// The control socket through which a scenario sets up and opens a peer's sale.
pub struct Control {
    ws: Ws,
}

impl Control {
    pub async fn connect(target: &Target) -> anyhow::Result<Control> {
        let mut ws = connect_ws(
            target,
            None,
            "/ws/buy?room=peer&user=lt-control&control=1",
            Duration::from_secs(10),
        )
        .await
        .map_err(|e| anyhow::anyhow!("control socket to the peer: {e}"))?;
        wait_hello(&mut ws)
            .await
            .map_err(|e| anyhow::anyhow!("control socket to the peer: {e}"))?;
        Ok(Control { ws })
    }

    /// Creates (or resets) a SKU; returns once the peer said so.
    pub async fn define(&mut self, s: &SkuSetup<'_>) -> anyhow::Result<()> {
        let frame = serde_json::json!({
            "op": "define", "sku": s.sku, "price_fen": s.price_fen, "stock": s.stock,
            "limit_per_user": s.limit, "open": s.open,
        });
        self.call(frame.to_string(), "defined").await
    }

    /// Opens the sale of `sku`: the peer pushes `sale` to every socket. Returns once the peer
    /// answered.
    pub async fn open(&mut self, sku: &str) -> anyhow::Result<()> {
        let frame = serde_json::json!({"op": "open", "sku": sku});
        self.call(frame.to_string(), "opened").await
    }

    async fn call(&mut self, frame: String, want: &str) -> anyhow::Result<()> {
        self.ws.send(Message::text(frame)).await?;
        let answer = async {
            while let Some(m) = self.ws.next().await {
                if let Message::Text(t) = m? {
                    let f: Frame = serde_json::from_str(&t)?;
                    if f.op == want {
                        return Ok(());
                    }
                    if f.op == "error" {
                        anyhow::bail!("the peer refused a control frame: {t}");
                    }
                }
            }
            anyhow::bail!("the peer closed the control socket")
        };
        tokio::time::timeout(Duration::from_secs(10), answer)
            .await
            .map_err(|_| anyhow::anyhow!("the peer did not answer a control frame in 10 s"))?
    }
}

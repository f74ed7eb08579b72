//! Connecting: the target address, source-address binding, WebSocket upgrades, buyer JWTs,
//! and naming the limit a failed connection hit.

use std::io;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::OnceLock;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context as _};
use serde::{Deserialize, Serialize};
use tokio::net::{TcpSocket, TcpStream};
use tokio_tungstenite::tungstenite::{self, protocol::WebSocketConfig};

/// Read buffer of each client socket (see `connect`).
pub const CLIENT_READ_BUFFER: usize = 8 * 1024;
use tokio_tungstenite::WebSocketStream;

pub type Ws = WebSocketStream<TcpStream>;

/// Where the server is.
#[derive(Debug, Clone)]
pub struct Target {
    /// `http://host:port`, no trailing slash.
    pub http_base: String,
    /// `host:port` as written (the Host header of upgrades).
    pub authority: String,
    pub addr: SocketAddr,
}

impl Target {
    pub async fn from_url(url: &str) -> anyhow::Result<Target> {
        let u = reqwest::Url::parse(url).with_context(|| format!("--url {url}"))?;
        if u.scheme() != "http" {
            bail!("--url must be http://host:port (this tool speaks ws://, not TLS): {url}");
        }
        let host = u.host_str().context("--url has no host")?.to_owned();
        let port = u.port_or_known_default().unwrap_or(80);
        let authority = if host.contains(':') {
            format!("[{host}]:{port}")
        } else {
            format!("{host}:{port}")
        };
        let addr = tokio::net::lookup_host(authority.clone())
            .await
            .with_context(|| format!("resolving {authority}"))?
            .next()
            .with_context(|| format!("{authority} resolves to nothing"))?;
        Ok(Target {
            http_base: format!("http://{authority}"),
            authority,
            addr,
        })
    }

    pub fn from_addr(addr: SocketAddr) -> Target {
        Target {
            http_base: format!("http://{addr}"),
            authority: addr.to_string(),
            addr,
        }
    }
}

/// Source addresses 127.0.0.1 .. 127.0.0.N; empty when N is 1 (let the kernel choose).
pub fn sources(n: u8) -> Vec<IpAddr> {
    if n <= 1 {
        return Vec::new();
    }
    (1..=n)
        .map(|i| IpAddr::V4(Ipv4Addr::new(127, 0, 0, i)))
        .collect()
}

static NOFILE: OnceLock<u64> = OnceLock::new();

/// Raises the open-file soft limit to the hard limit; returns the limit now in force.
pub fn raise_nofile() -> u64 {
    let lim = rlimit::increase_nofile_limit(u64::MAX)
        .or_else(|_| rlimit::getrlimit(rlimit::Resource::NOFILE).map(|(s, _)| s))
        .unwrap_or(1024);
    let _ = NOFILE.set(lim);
    lim
}

pub fn nofile() -> u64 {
    *NOFILE.get().unwrap_or(&0)
}

fn port_range() -> String {
    std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .map(|s| s.split_whitespace().collect::<Vec<_>>().join("-"))
        .unwrap_or_else(|_| "?".into())
}

/// Names the limit behind an I/O error where there is one.
pub fn describe_io(e: &io::Error, source: Option<IpAddr>) -> String {
    match e.raw_os_error() {
        Some(24) => format!("open files: ulimit -n is {} (EMFILE)", nofile()),
        Some(23) => "open files: the system-wide file table is full (ENFILE, fs.file-max)".into(),
        Some(99) => format!(
            "source ports: no free ephemeral port for {} (EADDRNOTAVAIL; ip_local_port_range {}); use --sources",
            source.map(|s| s.to_string()).unwrap_or_else(|| "the default source".into()),
            port_range()
        ),
        Some(98) => "source address in use (EADDRINUSE); use --sources".into(),
        Some(111) => "connection refused (server down, or its listen backlog overflowed)".into(),
        Some(104) => "connection reset by the server".into(),
        Some(110) => "connect timed out in the kernel (ETIMEDOUT)".into(),
        Some(12) | Some(105) => "out of memory / socket buffers (ENOMEM/ENOBUFS)".into(),
        _ => match e.kind() {
            io::ErrorKind::UnexpectedEof => "server closed the connection during the handshake".into(),
            _ => format!("i/o: {e}"),
        },
    }
}

fn describe_ws(e: &tungstenite::Error, source: Option<IpAddr>) -> String {
    match e {
        tungstenite::Error::Io(io) => describe_io(io, source),
        tungstenite::Error::Http(resp) => {
            let body = resp
                .body()
                .as_ref()
                .map(|b| {
                    String::from_utf8_lossy(b)
                        .chars()
                        .take(160)
                        .collect::<String>()
                })
                .unwrap_or_default();
            format!(
                "upgrade refused: HTTP {} {}",
                resp.status().as_u16(),
                body.trim()
            )
        }
        tungstenite::Error::ConnectionClosed | tungstenite::Error::AlreadyClosed => {
            "server closed the connection during the handshake".into()
        }
        other => format!("websocket: {other}"),
    }
}

/// Opens a TCP connection (bound to `source` when given) and upgrades it to a WebSocket on
/// `path_and_query`. The error is a short reason naming the limit hit where possible.
pub async fn connect_ws(
    target: &Target,
    source: Option<IpAddr>,
    path_and_query: &str,
    timeout: Duration,
) -> Result<Ws, String> {
    let fut = async {
        let sock = match target.addr {
            SocketAddr::V4(_) => TcpSocket::new_v4(),
            SocketAddr::V6(_) => TcpSocket::new_v6(),
        }
        .map_err(|e| describe_io(&e, source))?;
        if let Some(src) = source {
            sock.bind(SocketAddr::new(src, 0))
                .map_err(|e| describe_io(&e, source))?;
        }
        let stream = sock
            .connect(target.addr)
            .await
            .map_err(|e| describe_io(&e, source))?;
        let _ = stream.set_nodelay(true);
        let url = format!("ws://{}{}", target.authority, path_and_query);
        // tungstenite zero-fills its whole read buffer before every read, even one that finds
        // nothing: at the default 128 KiB that memset was the load client's top cost. Frames
        // larger than the buffer still arrive, over several reads.
        let config = WebSocketConfig::default().read_buffer_size(CLIENT_READ_BUFFER);
        let (ws, _) = tokio_tungstenite::client_async_with_config(url, stream, Some(config))
            .await
            .map_err(|e| describe_ws(&e, source))?;
        Ok::<Ws, String>(ws)
    };
    match tokio::time::timeout(timeout, fut).await {
        Ok(r) => r,
        Err(_) => Err(format!(
            "connect + upgrade took over {} s (server overloaded or backlog full)",
            timeout.as_secs()
        )),
    }
}

pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

pub fn now_us() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_micros() as i64)
        .unwrap_or(0)
}

#[derive(Serialize, Deserialize)]
struct Claims<'a> {
    sub: &'a str,
    exp: u64,
    room: &'a str,
}

/// How buyers identify themselves.
#[derive(Clone)]
pub enum BuyerAuth {
    Jwt(jsonwebtoken::EncodingKey, u64),
    Open,
}

impl BuyerAuth {
    pub fn new(secret: Option<&str>, open: bool, ttl_s: u64) -> anyhow::Result<BuyerAuth> {
        match (secret, open) {
            (Some(s), _) => Ok(BuyerAuth::Jwt(
                jsonwebtoken::EncodingKey::from_secret(s.as_bytes()),
                ttl_s,
            )),
            (None, true) => Ok(BuyerAuth::Open),
            (None, false) => bail!("buyers need --buyer-secret (to sign JWTs) or --open-buyers"),
        }
    }

    /// The query string for `/ws/buy`.
    pub fn buy_path(&self, room: &str, user: &str) -> String {
        match self {
            BuyerAuth::Open => format!("/ws/buy?room={room}&user={user}"),
            BuyerAuth::Jwt(key, ttl) => {
                let exp = (now_ms() / 1000) as u64 + ttl;
                let token = jsonwebtoken::encode(
                    &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
                    &Claims {
                        sub: user,
                        exp,
                        room,
                    },
                    key,
                )
                .expect("HS256 signing does not fail");
                format!("/ws/buy?room={room}&token={token}")
            }
        }
    }
}

//! Connecting: the target address, source-address binding, WebSocket upgrades over a socket
//! that can stamp arrivals ([`Stamped`]), buyer JWTs, and naming the limit a failed connection
//! hit.

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

pub type Ws = WebSocketStream<Stamped>;

/// A client socket that remembers when the kernel received the data of its last read
/// (`SO_TIMESTAMPNS`, once [`Stamped::stamp_arrivals`] asked for it), so that an answer can be
/// dated by its arrival rather than by when this tool's task got round to reading it: in a
/// spike the two differ by the client's own queue on the cores it shares with the server
/// (BENCHMARKS.md). Reads go through `recvmsg`; writes straight to the stream.
pub struct Stamped {
    inner: TcpStream,
    /// Room for a read's control message, once stamps were asked for; until then reads are
    /// plain `recv`s.
    cmsg: Option<Vec<u8>>,
    /// `CLOCK_REALTIME` ns of the last read's data, 0 when that read came without a stamp.
    last_arrival_ns: u64,
}

impl Stamped {
    pub fn new(inner: TcpStream) -> Self {
        Stamped {
            inner,
            cmsg: None,
            last_arrival_ns: 0,
        }
    }

    /// Asks the kernel to stamp what arrives from now on.
    pub fn stamp_arrivals(&mut self) -> io::Result<()> {
        nix::sys::socket::setsockopt(
            &self.inner,
            nix::sys::socket::sockopt::ReceiveTimestampns,
            &true,
        )
        .map_err(io::Error::from)?;
        self.cmsg = Some(nix::cmsg_space!(nix::sys::time::TimeSpec));
        Ok(())
    }

    /// When the data of the last read arrived, as ns since the epoch, if it was stamped.
    pub fn last_arrival_ns(&self) -> Option<u64> {
        (self.last_arrival_ns != 0).then_some(self.last_arrival_ns)
    }

    /// One read into `dst`: the bytes read and the arrival stamp, if one came (a `recvmsg`
    /// with room for it in `cmsg`, or a plain `recv` without).
    fn recv(
        inner: &TcpStream,
        cmsg: Option<&mut Vec<u8>>,
        dst: &mut [u8],
    ) -> io::Result<(usize, Option<u64>)> {
        use nix::sys::socket::{recv, recvmsg, ControlMessageOwned, MsgFlags};
        use std::os::fd::AsRawFd;
        let Some(cmsg) = cmsg else {
            let n = recv(inner.as_raw_fd(), dst, MsgFlags::empty()).map_err(io::Error::from)?;
            return Ok((n, None));
        };
        let mut iov = [io::IoSliceMut::new(dst)];
        let msg = recvmsg::<()>(inner.as_raw_fd(), &mut iov, Some(cmsg), MsgFlags::empty())
            .map_err(io::Error::from)?;
        let mut at = None;
        if let Ok(cmsgs) = msg.cmsgs() {
            for c in cmsgs {
                if let ControlMessageOwned::ScmTimestampns(ts) = c {
                    at = Some(ts.tv_sec() as u64 * 1_000_000_000 + ts.tv_nsec() as u64);
                }
            }
        }
        Ok((msg.bytes, at))
    }
}

impl tokio::io::AsyncRead for Stamped {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<io::Result<()>> {
        loop {
            std::task::ready!(self.inner.poll_read_ready(cx))?;
            let this = &mut *self;
            let dst = buf.initialize_unfilled();
            let (inner, cmsg) = (&this.inner, this.cmsg.as_mut());
            match inner.try_io(tokio::io::Interest::READABLE, || {
                Stamped::recv(inner, cmsg, dst)
            }) {
                Ok((n, at)) => {
                    // A read without a stamp (the kernel turns stamping on a moment after the
                    // first socket asks) leaves none, never the stamp of an older read.
                    this.last_arrival_ns = at.unwrap_or(0);
                    buf.advance(n);
                    return std::task::Poll::Ready(Ok(()));
                }
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted
                    ) =>
                {
                    continue
                }
                Err(e) => return std::task::Poll::Ready(Err(e)),
            }
        }
    }
}

impl tokio::io::AsyncWrite for Stamped {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<io::Result<usize>> {
        std::pin::Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<io::Result<()>> {
        std::pin::Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<io::Result<()>> {
        std::pin::Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

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
        // nothing, so a buffer much smaller than its default keeps that memset off the load
        // client's profile. Frames larger than the buffer still arrive, over several reads.
        let config = WebSocketConfig::default().read_buffer_size(CLIENT_READ_BUFFER);
        let (ws, _) =
            tokio_tungstenite::client_async_with_config(url, Stamped::new(stream), Some(config))
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

/// ns since the epoch (`CLOCK_REALTIME`, the clock of the kernel's arrival stamps).
pub fn now_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
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

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// Data read through a stamped socket carries the kernel's arrival time: after the write
    /// began and before the read returned; an unstamped socket reads the same bytes, no stamp.
    /// The kernel turns stamping on a moment after a first socket asks for it, so the stamped
    /// socket may read a few unstamped messages first (each of them with no stamp).
    #[tokio::test]
    async fn reads_carry_the_arrival_stamp_once_asked() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        for stamped in [true, false] {
            let client = TcpStream::connect(addr).await.unwrap();
            let (mut server, _) = listener.accept().await.unwrap();
            let mut s = Stamped::new(client);
            if stamped {
                s.stamp_arrivals().unwrap();
            }
            let mut got_stamp = false;
            for _ in 0..100 {
                let before = now_ns();
                server.write_all(b"first").await.unwrap();
                let mut buf = [0u8; 16];
                let n = s.read(&mut buf).await.unwrap();
                let after = now_ns();
                assert_eq!(&buf[..n], b"first");
                if let Some(at) = s.last_arrival_ns() {
                    assert!(stamped, "a stamp without asking for one");
                    assert!(before <= at && at <= after, "{before} <= {at} <= {after}");
                    got_stamp = true;
                    break;
                }
                if !stamped {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            assert_eq!(got_stamp, stamped, "asked for stamps: {stamped}");
            // Writes go straight through.
            s.write_all(b"back").await.unwrap();
            let mut got = [0u8; 4];
            server.read_exact(&mut got).await.unwrap();
            assert_eq!(&got, b"back");
        }
    }
}

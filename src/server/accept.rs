//! The accept loop: TCP_NODELAY, connection limits (overall and per source IP), the handshake
//! timeout, and a graceful stop.
//!
//! A connection's slot lives in its I/O object ([`Counted`]), so an upgraded WebSocket holds
//! its slot until the socket closes, and a plain HTTP connection until it ends. A connection
//! over a limit gets a one-shot `503` written without waiting and is closed: it never costs a
//! task. The handshake timeout is hyper's header-read timeout: a client that does not finish
//! its request head (a WebSocket upgrade included) within it is dropped (slowloris).
//!
//! A connection is *unauthenticated* until a request on it shows a valid token (a REST call
//! past its [`crate::api::extract`] check, or an admitted socket upgrade): strangers may hold
//! at most [`ConnLimits::max_unauthenticated`] connections. When that many are open, a new
//! connection closes the oldest unauthenticated one that has had
//! [`ConnLimits::unauthenticated_grace`] to show a token, and is refused only when none has.
//! So sockets that dribble a byte now and then can neither fill `--max-connections` nor keep
//! buyers out, while a flash crowd's handshakes, each done in milliseconds, are never cut.

use std::cell::RefCell;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use axum::extract::ConnectInfo;
use axum::Router;
use dashmap::DashMap;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tower::ServiceExt;

/// Limits the accept loop enforces. Zero means no limit.
#[derive(Debug, Clone, Copy)]
pub struct ConnLimits {
    /// Open connections of every kind at once.
    pub max_connections: usize,
    /// Open connections from one source IP at once.
    pub max_per_ip: usize,
    /// Time a new connection has to send its request head (the WebSocket upgrade included).
    pub handshake_timeout: Duration,
    /// Connections open at once that have not shown a valid token yet.
    pub max_unauthenticated: usize,
    /// How long an unauthenticated connection is safe from being closed for a newcomer.
    pub unauthenticated_grace: Duration,
    /// Time a request body has to arrive once its head has.
    pub body_timeout: Duration,
    /// Buyer sockets one user may hold in one room at once (checked at the upgrade).
    pub max_per_user: usize,
}

impl Default for ConnLimits {
    fn default() -> Self {
        ConnLimits {
            max_connections: 0,
            max_per_ip: 0,
            handshake_timeout: Duration::from_secs(10),
            max_unauthenticated: crate::config::DEFAULT_MAX_UNAUTHENTICATED,
            unauthenticated_grace: Duration::from_millis(
                crate::config::DEFAULT_UNAUTHENTICATED_GRACE_MS,
            ),
            body_timeout: Duration::from_secs(crate::config::DEFAULT_BODY_TIMEOUT_S),
            max_per_user: crate::config::DEFAULT_MAX_CONNECTIONS_PER_USER,
        }
    }
}

/// Why a connection was refused at accept.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// `--max-connections` are open.
    MaxConnections,
    /// `--max-connections-per-ip` are open from this address.
    MaxPerIp,
    /// `--max-unauthenticated` connections are open, and none of them is past its grace.
    MaxUnauthenticated,
}

impl Refusal {
    /// The limit's name, as the refusal metric's `reason` and the `503`'s detail give it.
    pub fn as_str(self) -> &'static str {
        match self {
            Refusal::MaxConnections => "max_connections",
            Refusal::MaxPerIp => "max_connections_per_ip",
            Refusal::MaxUnauthenticated => "max_unauthenticated",
        }
    }
}

/// Open connections, overall and by source IP. Atomics for the total (one add per accept);
/// a DashMap for the per-IP counts, whose entry lock makes check-and-increment one step.
#[derive(Debug, Default)]
pub struct ConnCounts {
    total: AtomicUsize,
    per_ip: DashMap<IpAddr, usize>,
    /// Connections that have not shown a valid token yet: when each was accepted, and how
    /// to close it. An entry leaves when its connection authenticates or closes.
    unauthenticated: DashMap<u64, (Instant, CancellationToken)>,
    next_id: AtomicU64,
}

impl ConnCounts {
    /// Open connections now.
    pub fn open(&self) -> usize {
        self.total.load(Ordering::Relaxed)
    }

    /// Connections open now that have not shown a valid token.
    pub fn unauthenticated(&self) -> usize {
        self.unauthenticated.len()
    }

    /// Registers a new connection as unauthenticated, closing the oldest unauthenticated one
    /// past its grace if the limit is reached; refused when none is.
    fn admit_stranger(
        self: &Arc<Self>,
        limits: &ConnLimits,
        close: CancellationToken,
    ) -> Result<Stranger, Refusal> {
        if limits.max_unauthenticated > 0
            && self.unauthenticated.len() >= limits.max_unauthenticated
        {
            let now = Instant::now();
            let oldest = self
                .unauthenticated
                .iter()
                .filter(|e| now.duration_since(e.value().0) >= limits.unauthenticated_grace)
                .min_by_key(|e| e.value().0)
                .map(|e| *e.key());
            let Some((_, (_, victim))) = oldest.and_then(|id| self.unauthenticated.remove(&id))
            else {
                return Err(Refusal::MaxUnauthenticated);
            };
            metrics::counter!("livehub_unauthenticated_closed_total").increment(1);
            victim.cancel();
        }
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        self.unauthenticated.insert(id, (Instant::now(), close));
        Ok(Stranger {
            counts: self.clone(),
            id,
        })
    }

    /// Takes a slot for a connection from `ip`, or says which limit is full.
    pub fn try_take(self: &Arc<Self>, ip: IpAddr, limits: &ConnLimits) -> Result<Slot, Refusal> {
        let before = self.total.fetch_add(1, Ordering::AcqRel);
        if limits.max_connections > 0 && before >= limits.max_connections {
            self.total.fetch_sub(1, Ordering::AcqRel);
            return Err(Refusal::MaxConnections);
        }
        {
            let mut n = self.per_ip.entry(ip).or_insert(0);
            if limits.max_per_ip > 0 && *n >= limits.max_per_ip {
                drop(n);
                self.total.fetch_sub(1, Ordering::AcqRel);
                return Err(Refusal::MaxPerIp);
            }
            *n += 1;
        }
        Ok(Slot {
            counts: self.clone(),
            ip,
        })
    }
}

/// One open connection's place in the counts, given back on drop.
#[derive(Debug)]
pub struct Slot {
    counts: Arc<ConnCounts>,
    ip: IpAddr,
}

impl Drop for Slot {
    fn drop(&mut self) {
        if let Some(mut n) = self.counts.per_ip.get_mut(&self.ip) {
            *n -= 1;
        }
        self.counts.per_ip.remove_if(&self.ip, |_, n| *n == 0);
        self.counts.total.fetch_sub(1, Ordering::AcqRel);
    }
}

/// A connection's place among the unauthenticated ones, until it authenticates
/// ([`Authenticated::mark`]) or closes.
#[derive(Debug)]
struct Stranger {
    counts: Arc<ConnCounts>,
    id: u64,
}

impl Drop for Stranger {
    fn drop(&mut self) {
        self.counts.unauthenticated.remove(&self.id);
    }
}

/// Put in every request's extensions: the handler that checks a token marks the connection
/// authenticated, which takes it out of the unauthenticated ones for good.
#[derive(Debug, Clone)]
pub struct Authenticated(Arc<std::sync::Mutex<Option<Stranger>>>);

impl Authenticated {
    /// The connection showed a valid token.
    pub fn mark(&self) {
        if let Ok(mut s) = self.0.lock() {
            s.take();
        }
    }
}

/// Bytes one read asks the kernel for when the reader's own buffer is smaller.
pub const READ_CHUNK: usize = 4 * 1024;

thread_local! {
    /// Where a socket read into a small reader's buffer lands first: one a thread, not one a
    /// connection.
    static SCRATCH: RefCell<Box<[u8]>> = RefCell::new(vec![0; READ_CHUNK].into_boxed_slice());
}

/// A TCP stream that holds its connection slot.
///
/// A reader with a small buffer (a WebSocket's, see `api::sockets`) still gets the kernel's
/// bytes [`READ_CHUNK`] at a time: they are read into the thread's scratch buffer, the reader
/// takes what fits, and the rest waits in `unread` for its next reads. So an idle socket holds
/// only its reader's small buffer, and a busy one makes no more read calls than with a big
/// buffer of its own.
#[derive(Debug)]
pub struct Counted {
    tcp: TcpStream,
    _slot: Slot,
    /// Bytes read from the socket that the reader had no room for, from `unread_at` on; no
    /// allocation while there are none.
    unread: Vec<u8>,
    unread_at: usize,
}

impl Counted {
    /// `tcp`, holding `slot`.
    fn new(tcp: TcpStream, slot: Slot) -> Self {
        Counted {
            tcp,
            _slot: slot,
            unread: Vec::new(),
            unread_at: 0,
        }
    }

    /// Bytes read from the socket and not handed to the reader yet.
    fn unread(&self) -> usize {
        self.unread.len() - self.unread_at
    }
}

impl AsyncRead for Counted {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.unread() > 0 {
            let rest = &this.unread[this.unread_at..];
            let n = rest.len().min(buf.remaining());
            buf.put_slice(&rest[..n]);
            this.unread_at += n;
            if this.unread() == 0 {
                this.unread = Vec::new();
                this.unread_at = 0;
            }
            return Poll::Ready(Ok(()));
        }
        if buf.remaining() >= READ_CHUNK || buf.remaining() == 0 {
            return Pin::new(&mut this.tcp).poll_read(cx, buf);
        }
        SCRATCH.with_borrow_mut(|scratch| {
            let mut chunk = ReadBuf::new(scratch);
            std::task::ready!(Pin::new(&mut this.tcp).poll_read(cx, &mut chunk))?;
            let got = chunk.filled();
            let n = got.len().min(buf.remaining());
            buf.put_slice(&got[..n]);
            if n < got.len() {
                this.unread.extend_from_slice(&got[n..]);
            }
            Poll::Ready(Ok(()))
        })
    }
}

impl AsyncWrite for Counted {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.tcp).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.tcp).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.tcp.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.tcp).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.tcp).poll_shutdown(cx)
    }
}

/// Accepts and serves connections with `app` until `stop` is cancelled. Each connection's
/// task is tracked by `tasks`; on stop, idle HTTP connections close and requests in progress
/// finish (WebSockets are told by the same token through their own tasks).
pub async fn serve(
    listener: TcpListener,
    app: Router,
    limits: ConnLimits,
    counts: Arc<ConnCounts>,
    stop: CancellationToken,
    tasks: TaskTracker,
) {
    loop {
        let accepted = tokio::select! {
            _ = stop.cancelled() => break,
            a = listener.accept() => a,
        };
        let (tcp, remote) = match accepted {
            Ok(a) => a,
            Err(e) => {
                // Out of file descriptors (EMFILE/ENFILE) or a connection reset before accept:
                // say which, and back off briefly instead of spinning.
                tracing::warn!(error = %e, "accept failed");
                metrics::counter!("livehub_accept_errors_total").increment(1);
                tokio::time::sleep(Duration::from_millis(20)).await;
                continue;
            }
        };
        // Acks are small frames that must leave at once: without TCP_NODELAY, Nagle's
        // algorithm holds them back behind the delayed ACK of the previous one (up to 40 ms).
        let _ = tcp.set_nodelay(true);
        let slot = match counts.try_take(remote.ip(), &limits) {
            Ok(s) => s,
            Err(why) => {
                refuse(&tcp, why);
                continue;
            }
        };
        let closed = CancellationToken::new();
        let stranger = match counts.admit_stranger(&limits, closed.clone()) {
            Ok(s) => s,
            Err(why) => {
                drop(slot);
                refuse(&tcp, why);
                continue;
            }
        };
        let authenticated = Authenticated(Arc::new(std::sync::Mutex::new(Some(stranger))));
        let io = TokioIo::new(Counted::new(tcp, slot));
        let service = TowerToHyperService::new(app.clone().map_request(
            move |mut req: axum::http::Request<Incoming>| {
                req.extensions_mut()
                    .insert(ConnectInfo::<SocketAddr>(remote));
                req.extensions_mut().insert(authenticated.clone());
                req
            },
        ));
        let stop = stop.clone();
        tasks.spawn(async move {
            let mut http = hyper::server::conn::http1::Builder::new();
            http.timer(TokioTimer::new())
                .header_read_timeout(Some(limits.handshake_timeout));
            let conn = http.serve_connection(io, service).with_upgrades();
            tokio::pin!(conn);
            tokio::select! {
                _ = conn.as_mut() => {}
                // Closed for a newcomer while it had shown no token: dropped at once.
                _ = closed.cancelled() => {}
                _ = stop.cancelled() => {
                    conn.as_mut().graceful_shutdown();
                    let _ = conn.await;
                }
            }
        });
    }
}

/// Answers a connection over a limit with a 503 if its send buffer takes it at once, and
/// closes it.
fn refuse(tcp: &TcpStream, why: Refusal) {
    metrics::counter!("livehub_connections_refused_total", "reason" => why.as_str()).increment(1);
    let body = format!(
        r#"{{"error":"unavailable","detail":"connection limit reached ({})"}}"#,
        why.as_str()
    );
    let response = format!(
        "HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\nconnection: close\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    );
    let _ = tcp.try_write(response.as_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_limit_overall_and_per_ip_and_give_back_on_drop() {
        let counts = Arc::new(ConnCounts::default());
        let limits = ConnLimits {
            max_connections: 3,
            max_per_ip: 2,
            ..ConnLimits::default()
        };
        let a: IpAddr = "127.0.0.1".parse().unwrap();
        let b: IpAddr = "127.0.0.2".parse().unwrap();
        let a1 = counts.try_take(a, &limits).unwrap();
        let _a2 = counts.try_take(a, &limits).unwrap();
        assert_eq!(counts.try_take(a, &limits).unwrap_err(), Refusal::MaxPerIp);
        let _b1 = counts.try_take(b, &limits).unwrap();
        assert_eq!(
            counts.try_take(b, &limits).unwrap_err(),
            Refusal::MaxConnections
        );
        assert_eq!(counts.open(), 3);
        drop(a1);
        assert_eq!(counts.open(), 2);
        let _a3 = counts.try_take(a, &limits).unwrap();
        assert_eq!(counts.per_ip.get(&a).map(|n| *n), Some(2));
    }

    /// A reader with a small buffer gets a burst piece by piece from one read of the socket,
    /// and the connection holds none of it once it is all taken; a reader with a big buffer
    /// reads the socket directly.
    #[tokio::test]
    async fn small_reads_share_one_socket_read_and_keep_nothing_after() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let mut client = TcpStream::connect(listener.local_addr().unwrap())
            .await
            .unwrap();
        let (tcp, remote) = listener.accept().await.unwrap();
        let counts = Arc::new(ConnCounts::default());
        let slot = counts
            .try_take(remote.ip(), &ConnLimits::default())
            .unwrap();
        let mut io = Counted::new(tcp, slot);
        let burst: Vec<u8> = (0..1000u32).map(|i| i as u8).collect();
        client.write_all(&burst).await.unwrap();
        // Wait until the whole burst is in the socket, then take it in small reads.
        let mut peek = [0u8; 1000];
        while io.tcp.peek(&mut peek).await.unwrap() < burst.len() {
            tokio::task::yield_now().await;
        }
        let mut got = Vec::new();
        let mut small = [0u8; 256];
        let n = io.read(&mut small).await.unwrap();
        assert_eq!(n, small.len());
        assert_eq!(io.unread(), burst.len() - n, "the rest was read with it");
        got.extend_from_slice(&small[..n]);
        while got.len() < burst.len() {
            let n = io.read(&mut small).await.unwrap();
            got.extend_from_slice(&small[..n]);
        }
        assert_eq!(got, burst);
        assert_eq!(io.unread(), 0);
        assert_eq!(io.unread.capacity(), 0, "nothing kept once taken");

        client.write_all(&burst).await.unwrap();
        let mut big = vec![0u8; READ_CHUNK];
        let mut n = 0;
        while n < burst.len() {
            n += io.read(&mut big[n..]).await.unwrap();
        }
        assert_eq!(&big[..n], &burst[..]);
        assert_eq!(io.unread.capacity(), 0, "a big read keeps nothing either");
    }

    #[test]
    fn an_ip_with_no_connections_leaves_no_entry() {
        let counts = Arc::new(ConnCounts::default());
        let ip: IpAddr = "127.0.0.9".parse().unwrap();
        let s = counts.try_take(ip, &ConnLimits::default()).unwrap();
        drop(s);
        assert!(counts.per_ip.is_empty());
        assert_eq!(counts.open(), 0);
    }
}

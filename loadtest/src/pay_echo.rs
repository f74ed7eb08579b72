//! The ceiling of `payments --against-echo`: an HTTP/1.1 server that answers every request
//! with 200 `{"order":"","status":"paid"}` as soon as it has read the body, keeping the
//! connection open. It checks no signature and journals nothing, so the same notices from the
//! same number of connections measure what this client and the loopback alone allow on this
//! machine.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// Largest request head and body taken; a bigger one closes the connection.
const MAX_REQUEST: usize = 64 * 1024;
const ANSWER: &[u8] = b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 30\r\n\r\n{\"order\":\"\",\"status\":\"paid\"}\r\n";

/// The length of the first request in `buf` (head and body) once all of it is there;
/// `Err` for a head without a readable `content-length` where a body follows, or too large.
fn request_len(buf: &[u8]) -> Option<Result<usize, ()>> {
    let head_end = match buf.windows(4).position(|w| w == b"\r\n\r\n") {
        Some(i) => i + 4,
        None if buf.len() > MAX_REQUEST => return Some(Err(())),
        None => return None,
    };
    let head = std::str::from_utf8(&buf[..head_end]).ok()?;
    let mut body = 0;
    for line in head.split("\r\n").skip(1) {
        if let Some((k, v)) = line.split_once(':') {
            if k.trim().eq_ignore_ascii_case("content-length") {
                match v.trim().parse::<usize>() {
                    Ok(n) => body = n,
                    Err(_) => return Some(Err(())),
                }
            }
        }
    }
    let total = head_end + body;
    if total > MAX_REQUEST {
        return Some(Err(()));
    }
    (buf.len() >= total).then_some(Ok(total))
}

async fn connection(mut s: TcpStream) {
    let _ = s.set_nodelay(true);
    let mut buf = Vec::with_capacity(4096);
    let mut chunk = [0u8; 8192];
    loop {
        match request_len(&buf) {
            Some(Ok(n)) => {
                buf.drain(..n);
                if s.write_all(ANSWER).await.is_err() {
                    return;
                }
            }
            Some(Err(())) => return,
            None => match s.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            },
        }
    }
}

async fn serve(listener: TcpListener) {
    loop {
        match listener.accept().await {
            Ok((s, _)) => {
                tokio::spawn(connection(s));
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(10)).await,
        }
    }
}

/// Starts the server on `127.0.0.1:0` on its own runtime (two worker threads, as a separate
/// server process would have), and returns its address.
pub fn spawn_in_process() -> anyhow::Result<SocketAddr> {
    let std_listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    std_listener.set_nonblocking(true)?;
    let addr = std_listener.local_addr()?;
    std::thread::Builder::new()
        .name("pay-echo".into())
        .spawn(move || {
            let rt = crate::runtime(Some(2), Some("pay-echo-worker")).expect("pay echo runtime");
            rt.block_on(async move {
                let listener = TcpListener::from_std(std_listener).expect("pay echo listener");
                serve(listener).await
            });
        })?;
    Ok(addr)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_are_cut_by_their_length() {
        let req = b"POST /api/payments HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello";
        assert_eq!(request_len(req), Some(Ok(req.len())));
        assert_eq!(request_len(&req[..req.len() - 1]), None);
        assert_eq!(request_len(b"POST / HTTP/1.1\r\nHost: x"), None);
        let two = [&req[..], &req[..]].concat();
        assert_eq!(request_len(&two), Some(Ok(req.len())));
        assert_eq!(request_len(b"GET / HTTP/1.1\r\n\r\n"), Some(Ok(18)));
        assert_eq!(
            request_len(b"POST / HTTP/1.1\r\ncontent-length: x\r\n\r\n"),
            Some(Err(()))
        );
        assert_eq!(
            request_len(b"POST / HTTP/1.1\r\ncontent-length: 99999999\r\n\r\n"),
            Some(Err(()))
        );
    }

    #[tokio::test]
    async fn answers_each_notice_paid() {
        let addr = spawn_in_process().unwrap();
        let payer = crate::pay::Payer::new(&format!("http://{addr}"), "k", "r", 2).unwrap();
        for i in 0..3 {
            let a = payer.notify("O1", &format!("p{i}"), 100).await;
            assert!(a.is_paid(), "{a:?}");
        }
    }
}

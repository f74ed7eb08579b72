//! Tokens never reach the logs: the real `livehub` binary, given its tokens and secrets by flag
//! and by environment and logging at `trace`, serves good and bad credentials of every kind
//! (payment notices signed right and wrong included), shuts down, and none of those strings
//! appear in anything it printed. A payment secret it generates is stored in the data dir and
//! never printed. And it refuses to start when the admin and viewer tokens are the same,
//! without printing the token.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

const ADMIN: &str = "admin-tok-7f3a9c1e5b";
const VIEWER: &str = "viewer-tok-2d8e4f6a0c";
const SECRET: &str = "buyer-secret-9b1d3f5e7a";
const PAYMENT_SECRET: &str = "payment-secret-6c3e8a0f4d";
const WAIT: Duration = Duration::from_secs(30);

fn livehub(data_dir: &std::path::Path) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_livehub"));
    cmd.arg("--listen")
        .arg("127.0.0.1:0")
        .arg("--data-dir")
        .arg(data_dir)
        .env_remove("LIVEHUB_ADMIN_TOKEN")
        .env_remove("LIVEHUB_VIEWER_TOKEN")
        .env_remove("LIVEHUB_OPEN_BUYERS")
        .env_remove("LIVEHUB_BUYER_SECRET")
        .env_remove("LIVEHUB_PAYMENT_SECRET")
        .env("NO_COLOR", "1")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    cmd
}

/// Every line the child prints, from both streams, as it comes.
fn collect_lines(child: &mut Child) -> mpsc::Receiver<String> {
    let (tx, rx) = mpsc::channel();
    let out = child.stdout.take().unwrap();
    let err = child.stderr.take().unwrap();
    let tx2 = tx.clone();
    std::thread::spawn(move || {
        for l in BufReader::new(out).lines().map_while(Result::ok) {
            let _ = tx.send(l);
        }
    });
    std::thread::spawn(move || {
        for l in BufReader::new(err).lines().map_while(Result::ok) {
            let _ = tx2.send(l);
        }
    });
    rx
}

/// The listening address, read from the start-up log line; every line read goes to `log`.
fn listening_addr(lines: &mpsc::Receiver<String>, log: &mut Vec<String>) -> String {
    loop {
        let l = lines.recv_timeout(WAIT).expect("livehub logs its address");
        let found = l.contains("livehub listening").then(|| {
            let at = l.find("addr=").expect("addr field") + 5;
            l[at..].split_whitespace().next().unwrap().to_owned()
        });
        log.push(l);
        if let Some(a) = found {
            return a;
        }
    }
}

/// Stops the child gracefully (SIGTERM) and adds everything else it printed to `log`.
fn stop(mut child: Child, lines: &mpsc::Receiver<String>, log: &mut Vec<String>) {
    let stopped = Command::new("kill")
        .arg("-TERM")
        .arg(child.id().to_string())
        .status()
        .unwrap();
    assert!(stopped.success());
    let exit = {
        let t0 = std::time::Instant::now();
        loop {
            if let Some(s) = child.try_wait().unwrap() {
                break s;
            }
            assert!(t0.elapsed() < WAIT, "livehub did not stop");
            std::thread::sleep(Duration::from_millis(20));
        }
    };
    assert!(exit.success(), "{exit:?}");
    while let Ok(l) = lines.recv_timeout(Duration::from_secs(5)) {
        log.push(l);
    }
}

/// Fails, showing the lines, when any line holds `probe`.
fn assert_absent(log: &[String], probe: &str) {
    assert!(
        !log.iter().any(|l| l.contains(probe)),
        "the log contains {probe:?}:\n{}",
        log.iter()
            .filter(|l| l.contains(probe))
            .cloned()
            .collect::<Vec<_>>()
            .join("\n")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_and_secrets_never_appear_in_the_logs() {
    let dir = tempfile::tempdir().unwrap();
    let mut child = livehub(dir.path())
        .arg("--admin-token")
        .arg(ADMIN)
        .arg("--viewer-token")
        .arg(VIEWER)
        .arg("--payment-secret")
        .arg(PAYMENT_SECRET)
        .env("LIVEHUB_BUYER_SECRET", SECRET)
        .env("RUST_LOG", "trace")
        .spawn()
        .expect("livehub starts");
    let lines = collect_lines(&mut child);
    let mut log: Vec<String> = Vec::new();
    let addr = listening_addr(&lines, &mut log);
    let http = reqwest::Client::new();
    let url = |p: &str| format!("http://{addr}{p}");
    let good_jwt = livehub::auth::sign_buyer_token(SECRET, "alice", Some("logs"), 600);
    let forged_jwt = livehub::auth::sign_buyer_token("not-the-secret-4c2e", "alice", None, 600);
    let other_room_jwt = livehub::auth::sign_buyer_token(SECRET, "alice", Some("elsewhere"), 600);
    let wrong_bearer = "wrong-bearer-5e1a7c";

    let r = http
        .put(url("/api/rooms/logs"))
        .bearer_auth(ADMIN)
        .json(&serde_json::json!({"title": "t"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    for bearer in [wrong_bearer, VIEWER] {
        let r = http
            .put(url("/api/rooms/logs2"))
            .bearer_auth(bearer)
            .json(&serde_json::json!({"title": "t"}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), 401);
    }
    let ws = |q: String| format!("ws://{addr}{q}");
    let ok =
        tokio_tungstenite::connect_async(ws(format!("/ws/buy?room=logs&token={good_jwt}"))).await;
    assert!(ok.is_ok(), "a good buyer token connects");
    drop(ok);
    for bad in [&forged_jwt, &other_room_jwt, &wrong_bearer.to_owned()] {
        let r =
            tokio_tungstenite::connect_async(ws(format!("/ws/buy?room=logs&token={bad}"))).await;
        assert!(r.is_err(), "a bad buyer token is refused");
    }
    let dash =
        tokio_tungstenite::connect_async(ws(format!("/ws/dashboard?room=logs&token={VIEWER}")))
            .await;
    assert!(dash.is_ok());
    drop(dash);
    let r = tokio_tungstenite::connect_async(ws(format!(
        "/ws/dashboard?room=logs&token={wrong_bearer}"
    )))
    .await;
    assert!(r.is_err());

    // Payment notices, signed with the payment secret and with another one. Whatever the
    // route answers (an unknown order, a bad signature), it must not log the secret.
    let notice =
        br#"{"order":"O1","room":"logs","payment_id":"p-1","amount_fen":100,"paid_at_ms":0}"#;
    let ts = livehub::clock::now_ms();
    for secret in [PAYMENT_SECRET, "not-the-payment-secret-1b7d"] {
        let r = http
            .post(url("/api/payments"))
            .header("X-Livehub-Timestamp", ts.to_string())
            .header(
                "X-Livehub-Signature",
                livehub::payments::sign(secret.as_bytes(), ts, notice),
            )
            .body(notice.to_vec())
            .send()
            .await
            .unwrap();
        assert!(!r.status().is_server_error(), "{}", r.status());
    }

    // Stop it gracefully and read everything it printed.
    stop(child, &lines, &mut log);
    let all = log.join("\n");
    // The capture works: the refusals were logged, with their reasons.
    assert!(all.contains("buyer refused"), "{all}");
    assert!(all.contains("invalid token"), "{all}");
    assert!(all.contains("token is for another room"), "{all}");
    assert!(all.contains("dashboard refused"), "{all}");
    assert!(all.contains("journal closed"), "{all}");
    for secret in [
        ADMIN,
        VIEWER,
        SECRET,
        PAYMENT_SECRET,
        wrong_bearer,
        &good_jwt,
        &forged_jwt,
        &other_room_jwt,
    ] {
        // The whole string, and its tail (a JWT's signature), which no other text shares.
        let tail = &secret[secret.len() - 12..];
        for probe in [secret, tail] {
            assert_absent(&log, probe);
        }
    }
}

/// A payment secret generated at start is stored (owner-only) in the data dir, like the buyer
/// secret, and never printed: unlike the admin token, no person needs to read it from the log.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_generated_payment_secret_is_stored_and_never_printed() {
    let dir = tempfile::tempdir().unwrap();
    let mut child = livehub(dir.path())
        .env("RUST_LOG", "trace")
        .spawn()
        .expect("livehub starts");
    let lines = collect_lines(&mut child);
    let mut log: Vec<String> = Vec::new();
    let addr = listening_addr(&lines, &mut log);
    // Serving, so its signal handler is in place for the graceful stop below.
    let healthz = reqwest::get(format!("http://{addr}/healthz"))
        .await
        .unwrap();
    assert_eq!(healthz.status().as_u16(), 200);
    let path = dir.path().join("payment.secret");
    let secret = std::fs::read_to_string(&path).expect("payment.secret is generated");
    assert!(
        secret.len() == 64 && secret.bytes().all(|b| b.is_ascii_hexdigit()),
        "{secret:?}"
    );
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }
    let buyer = std::fs::read_to_string(dir.path().join("buyer.secret")).unwrap();
    assert_ne!(secret, buyer, "each secret is its own");
    stop(child, &lines, &mut log);
    // The capture works: the admin token it generated was printed.
    let admin = std::fs::read_to_string(dir.path().join("admin.token")).unwrap();
    assert!(log.join("\n").contains(&admin));
    assert_absent(&log, &secret);
    assert_absent(&log, &secret[secret.len() - 12..]);
}

#[test]
fn equal_admin_and_viewer_tokens_refuse_to_start() {
    let dir = tempfile::tempdir().unwrap();
    let same = "same-token-for-both-8a2c";
    let out = livehub(dir.path())
        .arg("--admin-token")
        .arg(same)
        .env("LIVEHUB_VIEWER_TOKEN", same)
        .output()
        .expect("livehub runs");
    assert!(!out.status.success(), "it must not start");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.contains("must differ"), "{text}");
    assert!(!text.contains(same), "{text}");
}

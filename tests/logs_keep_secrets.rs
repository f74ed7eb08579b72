//! Tokens never reach the logs: the real `livehub` binary, given its tokens and secret by flag
//! and by environment and logging at `trace`, serves good and bad credentials of every kind,
//! shuts down, and none of those strings appear in anything it printed. And it refuses to
//! start when the admin and viewer tokens are the same, without printing the token.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

const ADMIN: &str = "admin-tok-7f3a9c1e5b";
const VIEWER: &str = "viewer-tok-2d8e4f6a0c";
const SECRET: &str = "buyer-secret-9b1d3f5e7a";
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_and_secrets_never_appear_in_the_logs() {
    let dir = tempfile::tempdir().unwrap();
    let mut child = livehub(dir.path())
        .arg("--admin-token")
        .arg(ADMIN)
        .arg("--viewer-token")
        .arg(VIEWER)
        .env("LIVEHUB_BUYER_SECRET", SECRET)
        .env("RUST_LOG", "trace")
        .spawn()
        .expect("livehub starts");
    let lines = collect_lines(&mut child);
    let mut log: Vec<String> = Vec::new();
    // The listening address, from the start-up log line.
    let addr = loop {
        let l = lines.recv_timeout(WAIT).expect("livehub logs its address");
        let found = l.contains("livehub listening").then(|| {
            let at = l.find("addr=").expect("addr field") + 5;
            l[at..].split_whitespace().next().unwrap().to_owned()
        });
        log.push(l);
        if let Some(a) = found {
            break a;
        }
    };
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

    // Stop it gracefully and read everything it printed.
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
        wrong_bearer,
        &good_jwt,
        &forged_jwt,
        &other_room_jwt,
    ] {
        // The whole string, and its tail (a JWT's signature), which no other text shares.
        let tail = &secret[secret.len() - 12..];
        for probe in [secret, tail] {
            assert!(
                !all.contains(probe),
                "the log contains {probe:?}:\n{}",
                log.iter()
                    .filter(|l| l.contains(probe))
                    .cloned()
                    .collect::<Vec<_>>()
                    .join("\n")
            );
        }
    }
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

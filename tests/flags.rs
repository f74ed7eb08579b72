//! Flags from the environment (docs/protocol.md, "Process"): the real `livehub` binary reads an
//! on/off flag as people write one in a shell or a unit file, `1`/`0`, `yes`/`no`, `on`/`off`
//! or `true`/`false`, and refuses anything else with an error naming the flag.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Starts livehub with `LIVEHUB_OPEN_BUYERS=value` until it listens; whether it warned that
/// buyers are open.
fn open_buyers_warned(value: &str) -> bool {
    let dir = tempfile::tempdir().unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_livehub"))
        .args(["--listen", "127.0.0.1:0", "--data-dir"])
        .arg(dir.path())
        .env("LIVEHUB_OPEN_BUYERS", value)
        .env("NO_COLOR", "1")
        .env_remove("RUST_LOG")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("livehub starts");
    let out = BufReader::new(child.stdout.take().unwrap());
    let start = Instant::now();
    let mut warned = false;
    for line in out.lines().map_while(Result::ok) {
        warned |= line.contains("--open-buyers");
        if line.contains("livehub listening") {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "livehub did not start"
        );
    }
    let _ = child.kill();
    let _ = child.wait();
    warned
}

#[test]
fn on_off_flags_read_one_and_zero_yes_and_no_from_the_environment() {
    for v in ["1", "yes", "on", "true"] {
        assert!(open_buyers_warned(v), "LIVEHUB_OPEN_BUYERS={v} is on");
    }
    for v in ["0", "no", "off", "false"] {
        assert!(!open_buyers_warned(v), "LIVEHUB_OPEN_BUYERS={v} is off");
    }
    let refused = Command::new(env!("CARGO_BIN_EXE_livehub"))
        .args([
            "--data-dir",
            "/nonexistent/never-made",
            "--listen",
            "127.0.0.1:0",
        ])
        .env("LIVEHUB_OPEN_BUYERS", "maybe")
        .output()
        .unwrap();
    assert!(!refused.status.success());
    let err = String::from_utf8_lossy(&refused.stderr);
    assert!(
        err.contains("--open-buyers") && err.contains("maybe"),
        "{err}"
    );
}

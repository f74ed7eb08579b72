//! `livehub verify --data-dir DIR` on a stopped hub's data dir: the real binary, its exit code
//! and its report. It changes nothing on disk.

mod support;

use livehub::journal::record::{read_frame, Frame};
use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::{json, Value};
use support::*;

/// Runs `livehub verify --data-dir dir`: exit code, report, stderr.
fn verify(dir: &Path) -> (i32, Value, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_livehub"))
        .args(["verify", "--data-dir"])
        .arg(dir)
        .env("RUST_LOG", "warn")
        .output()
        .expect("run livehub verify");
    let report = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
    (
        out.status.code().unwrap_or(-1),
        report,
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Every file of the journal and its bytes.
fn files(dir: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    let mut v: Vec<_> = std::fs::read_dir(dir.join("journal"))
        .unwrap()
        .map(|e| {
            let p = e.unwrap().path();
            let b = std::fs::read(&p).unwrap();
            (p, b)
        })
        .collect();
    v.sort();
    v
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verify_reports_a_sound_data_dir_and_names_damage_without_changing_anything() {
    let s = TestServer::start().await;
    s.create_room("r").await;
    s.create_sku("r", "A1", 1234, 50, None).await;
    s.create_sku("r", "B2", 500, 10, None).await;
    let mut c = s.buyer("r", "u1").await;
    assert_eq!(c.buy("q1", "A1", 2).await["ok"], true);
    assert_eq!(c.buy("q2", "B2", 3).await["ok"], true);
    s.admin(
        "POST",
        "/api/rooms/r/skus/B2/stock",
        Some(json!({"delta": 4})),
    )
    .await;
    assert_eq!(c.buy("q3", "B2", 1).await["ok"], true);
    drop(c);
    let dir = s.stop().await;

    let (code, report, _) = verify(&dir);
    assert_eq!(code, 0, "{report}");
    assert_eq!(report["ok"], true);
    let room = &report["rooms"]["r"];
    assert_eq!(room["orders"], 3);
    assert_eq!(room["gmv_fen"], 2 * 1234 + 4 * 500);
    assert_eq!(room["skus"]["B2"]["stock_total"], 14);
    assert_eq!(room["skus"]["B2"]["units_in_orders"], 4);
    assert_eq!(room["skus"]["B2"]["left"], 10);
    assert_eq!(room["skus"]["A1"]["consistent"], true);

    // A torn last batch is not damage: reported, not cut.
    let seg = files(&dir)
        .into_iter()
        .map(|(p, _)| p)
        .rfind(|p| p.extension().is_some_and(|e| e == "seg"))
        .unwrap();
    let mut bytes = std::fs::read(&seg).unwrap();
    // Where the records end: after the last whole frame or batch (a record may end in a zero
    // byte, so the last non-zero byte does not say).
    let mut end = 0;
    while let Frame::Valid { len, .. } | Frame::Batch { len, .. } = read_frame(&bytes[end..]) {
        end += len;
    }
    bytes.truncate(end);
    let records_end = bytes.len();
    bytes.extend_from_slice(&[0x20, 0, 0, 0x80, 1, 2, 3, 4, 9, 9]);
    std::fs::write(&seg, &bytes).unwrap();
    let before = files(&dir);
    let (code, report, _) = verify(&dir);
    assert_eq!(code, 0, "{report}");
    assert_eq!(report["torn_last_batch"]["offset"], records_end as u64);
    assert_eq!(files(&dir), before, "verify changed nothing");

    // A flipped byte in an acknowledged batch is damage: exit 1, naming file and offset.
    bytes[12] ^= 0x01;
    std::fs::write(&seg, &bytes).unwrap();
    let before = files(&dir);
    let (code, report, stderr) = verify(&dir);
    assert_eq!(code, 1, "{report}");
    assert_eq!(report["ok"], false);
    assert!(
        stderr.contains(&seg.display().to_string()) && stderr.contains("offset"),
        "{stderr}"
    );
    assert_eq!(files(&dir), before, "verify changed nothing");
}

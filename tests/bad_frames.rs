//! The bad-frame corpus (`tests/corpus/bad_frames/*.txt`, one frame a file, exactly as sent):
//! hand-written hostile frames and every buyer frame the fuzz targets (`fuzz/`) ever failed
//! on. Each one, sent to a real server's buyer socket, gets an `error` frame with a short
//! detail (or a 1009 close when it is over 4 KiB), makes no order, and the socket still buys.

mod support;

use std::path::PathBuf;

use futures_util::SinkExt;
use livehub::protocol::{MAX_BUYER_FRAME, MAX_FRAME_DETAIL};
use support::TestServer;
use tokio_tungstenite::tungstenite::Message;

fn corpus() -> Vec<(String, Vec<u8>)> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/corpus/bad_frames");
    let mut frames: Vec<(String, Vec<u8>)> = std::fs::read_dir(&dir)
        .expect("the bad-frame corpus exists")
        .map(|e| e.expect("corpus entry").path())
        .filter(|p| p.extension().is_some_and(|x| x == "txt"))
        .map(|p| {
            let name = p.file_name().unwrap().to_string_lossy().into_owned();
            (name, std::fs::read(&p).expect("corpus file"))
        })
        .collect();
    frames.sort();
    frames
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_frame_of_the_bad_frame_corpus_is_refused_and_the_socket_still_buys() {
    let frames = corpus();
    assert!(frames.len() >= 15, "the corpus has {} frames", frames.len());
    assert!(
        frames.iter().any(|(n, _)| n.starts_with("fuzz-")),
        "the fuzzers' findings are in the corpus"
    );
    assert!(
        frames.iter().any(|(_, f)| f.len() > MAX_BUYER_FRAME),
        "the corpus has an oversized frame"
    );
    let s = TestServer::start().await;
    s.create_room("corpus").await;
    s.create_sku("corpus", "A1", 100, 10, None).await;
    let mut c = s.buyer("corpus", "olga").await;
    let mut errors = 0;
    let mut closes = 0;
    for (name, frame) in &frames {
        let msg = match String::from_utf8(frame.clone()) {
            Ok(text) => Message::text(text),
            Err(_) => Message::binary(frame.clone()),
        };
        c.ws.send(msg).await.expect("send");
        if frame.len() > MAX_BUYER_FRAME {
            assert_eq!(c.close_code().await, Some(1009), "{name}");
            closes += 1;
            c = s.buyer("corpus", "olga").await;
            continue;
        }
        let v = c.reply().await;
        assert_eq!(v["op"], "error", "{name} got {v}");
        assert_eq!(v["error"], "bad_request", "{name} got {v}");
        let detail = v["detail"].as_str().unwrap_or_default();
        assert!(
            !detail.is_empty() && detail.chars().count() <= MAX_FRAME_DETAIL,
            "{name}: detail of {} characters",
            detail.chars().count()
        );
        errors += 1;
    }
    assert_eq!(errors + closes, frames.len());
    assert!(
        s.export("corpus").await.is_empty(),
        "no bad frame made an order"
    );
    let ok = c.buy("after-the-corpus", "A1", 1).await;
    assert_eq!(ok["ok"], true, "{ok}");
    assert_eq!(s.export("corpus").await.len(), 1);
    assert_eq!(s.audit("corpus").await["consistent"], true);
}

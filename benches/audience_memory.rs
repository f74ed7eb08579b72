//! Memory of a room's audience (issue 22: at most 64 bytes per unique viewer for all of it):
//! `N` viewers (default 10 million; `AUDIENCE_VIEWERS` to change) enter from a mix of sources
//! over a stream's half hour, a tenth of them like, comment or tap a card, a third leave; then
//! the process's resident memory growth is divided by `N`, beside the structure's own count
//! of its heap bytes. With mimalloc, the hub's allocator. Prints one line of JSON.
//!
//! `cargo bench --bench audience_memory`

use livehub::audience::viewers::State;
use livehub::journal::{AudienceEvent, AudienceKind};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn rss_bytes() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").expect("/proc/self/statm");
    let pages: u64 = statm.split_whitespace().nth(1).unwrap().parse().unwrap();
    pages * 4096
}

fn main() {
    let n: u64 = std::env::var("AUDIENCE_VIEWERS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10_000_000);
    let start_ms = 1_700_000_000_000i64;
    let span_ms = 30 * 60 * 1000;
    let sources = ["recommend", "follow", "share", "search", "ad"];
    let before = rss_bytes();
    let t0 = std::time::Instant::now();
    let mut s = State::default();
    let mut events = 0u64;
    let mut add = |s: &mut State, e: AudienceEvent| {
        s.add(&e);
        events += 1;
    };
    for i in 0..n {
        let ts = start_ms + (i as i64 * span_ms) / n as i64;
        let user: Box<str> = format!("v{i}").into();
        let ev = |kind, ts_ms| AudienceEvent {
            kind,
            user: user.clone(),
            ts_ms,
            source: None,
            referrer: None,
            count: 1,
            sku: None,
        };
        add(
            &mut s,
            AudienceEvent {
                source: Some(sources[(i % 5) as usize].into()),
                ..ev(AudienceKind::Enter, ts)
            },
        );
        match i % 10 {
            0 => add(&mut s, ev(AudienceKind::Like, ts + 500)),
            1 => add(&mut s, ev(AudienceKind::Comment, ts + 700)),
            2 => add(
                &mut s,
                AudienceEvent {
                    sku: Some("A".into()),
                    ..ev(AudienceKind::Click, ts + 900)
                },
            ),
            _ => {}
        }
        if i % 3 == 0 {
            add(&mut s, ev(AudienceKind::Leave, ts + 60_000));
        }
    }
    let built_s = t0.elapsed().as_secs_f64();
    let grown = rss_bytes().saturating_sub(before);
    let f = s.figures(start_ms + span_ms);
    assert_eq!(f.unique, n);
    println!(
        "{{\"viewers\": {n}, \"events\": {events}, \"rss_growth_bytes_per_viewer\": {:.1}, \
         \"counted_viewer_bytes_per_viewer\": {:.1}, \"counted_dedup_bytes_per_viewer\": {:.1}, \
         \"events_per_s_folded\": {:.0}}}",
        grown as f64 / n as f64,
        s.viewer_bytes() as f64 / n as f64,
        s.dedup_bytes() as f64 / n as f64,
        events as f64 / built_s,
    );
}

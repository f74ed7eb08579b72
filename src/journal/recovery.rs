//! Recovery at start: replays every segment through [`Apply`], cuts a torn tail, and
//! refuses to start on damage anywhere else.
//!
//! A torn tail is what a crash in the middle of a batch write leaves: a frame cut short, or
//! garbage or zeros after the last whole frame, in the last segment, with no whole frame after
//! it. A bad frame with a valid one anywhere after it, or in any segment but the last, is
//! corruption of data that may have been acknowledged: recovery stops and names the file and
//! offset rather than dropping orders silently.

use std::collections::HashMap;
use std::fs::{self, OpenOptions};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::record::{self, Frame, Record, HEADER_LEN};
use super::{segment, Apply, JournalError, Mode};

/// What replay found.
#[derive(Debug, Default)]
pub struct Replayed {
    /// The number the next record gets.
    pub next_number: u64,
    /// The highest order seq per room.
    pub seqs: HashMap<Arc<str>, u64>,
    pub records: u64,
    pub orders: u64,
    /// The last segment and its length after any cut.
    pub last_segment: Option<(PathBuf, u64)>,
    /// A torn tail that was cut off: file, offset and bytes removed.
    pub cut: Option<(PathBuf, u64, u64)>,
}

/// Records handed from the reading thread to the applying one at a time.
const CHUNK: usize = 4096;

/// What the reading thread found besides the records.
#[derive(Default)]
struct Read {
    last_segment: Option<(PathBuf, u64)>,
    cut: Option<(PathBuf, u64, u64)>,
}

/// Replays the segments in `dir`. One thread reads, checks and decodes frames while the
/// caller's thread applies them, so recovery uses two cores.
pub fn replay(dir: &Path, apply: &dyn Apply) -> Result<Replayed, JournalError> {
    let segments = segment::list(dir).map_err(|source| JournalError::Io {
        path: dir.to_path_buf(),
        source,
    })?;
    let mut out = Replayed {
        next_number: 1,
        ..Default::default()
    };
    let read = std::thread::scope(|s| {
        let (tx, rx) = std::sync::mpsc::sync_channel::<Vec<Record>>(16);
        let reader = s.spawn(move || read_segments(&segments, tx));
        for chunk in rx {
            for rec in chunk {
                out.records += 1;
                out.next_number += 1;
                if let Record::Order(o) = &rec {
                    out.orders += 1;
                    out.next_number = out.next_number.max(o.number + 1);
                    let s = out.seqs.entry(o.room.clone()).or_insert(0);
                    *s = (*s).max(o.seq);
                }
                apply.apply(&rec, Mode::Replay);
            }
        }
        reader.join().expect("journal reader thread")
    })?;
    out.last_segment = read.last_segment;
    out.cut = read.cut;
    Ok(out)
}

fn read_segments(
    segments: &[PathBuf],
    tx: std::sync::mpsc::SyncSender<Vec<Record>>,
) -> Result<Read, JournalError> {
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source| JournalError::Io { path, source }
    };
    let mut out = Read::default();
    let mut chunk = Vec::with_capacity(CHUNK);
    for (i, path) in segments.iter().enumerate() {
        let is_last = i + 1 == segments.len();
        let buf = fs::read(path).map_err(io(path))?;
        let mut pos = 0usize;
        while pos < buf.len() {
            match record::read_frame(&buf[pos..]) {
                Frame::Valid { payload, len } => {
                    let rec = record::decode(payload).map_err(|e| JournalError::Corrupt {
                        path: path.clone(),
                        offset: pos as u64,
                        detail: format!("undecodable record: {e}"),
                    })?;
                    chunk.push(rec);
                    if chunk.len() == CHUNK
                        && tx
                            .send(std::mem::replace(&mut chunk, Vec::with_capacity(CHUNK)))
                            .is_err()
                    {
                        return Ok(out);
                    }
                    pos += len;
                }
                bad => {
                    let what = if bad == Frame::Corrupt {
                        "checksum mismatch"
                    } else {
                        "truncated frame"
                    };
                    if !is_last || has_valid_frame_after(&buf, pos + 1) {
                        return Err(JournalError::Corrupt {
                            path: path.clone(),
                            offset: pos as u64,
                            detail: format!("{what} before the end of the journal"),
                        });
                    }
                    let removed = (buf.len() - pos) as u64;
                    tracing::warn!(path = %path.display(), offset = pos, bytes = removed, what, "cutting a torn journal tail");
                    let f = OpenOptions::new()
                        .write(true)
                        .open(path)
                        .map_err(io(path))?;
                    f.set_len(pos as u64)
                        .and_then(|_| f.sync_all())
                        .map_err(io(path))?;
                    out.cut = Some((path.clone(), pos as u64, removed));
                    break;
                }
            }
        }
        if is_last {
            let len = fs::metadata(path).map_err(io(path))?.len();
            out.last_segment = Some((path.clone(), len));
        }
    }
    let _ = tx.send(chunk);
    Ok(out)
}

/// Whether any whole, valid frame starts at or after `from`.
fn has_valid_frame_after(buf: &[u8], from: usize) -> bool {
    (from..buf.len().saturating_sub(HEADER_LEN))
        .any(|p| matches!(record::read_frame(&buf[p..]), Frame::Valid { .. }))
}

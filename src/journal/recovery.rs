//! Recovery at start: restores the newest usable journal snapshot, replays the segments after
//! it through [`Apply`], cuts a torn tail, and refuses to start on damage anywhere else.
//!
//! A snapshot that is torn, fails its checksum or cannot be decoded is passed over with a
//! warning for the one before it, and then for a full replay; if the segments it would need
//! were compacted away, the start is refused with the snapshots and the reason named, because
//! starting would lose orders.
//!
//! A torn tail is what a crash in the middle of a batch write leaves: a frame cut short, or
//! garbage after the last whole frame, in the last segment, with no whole frame after it; it
//! is cut off. Zeros alone after the last whole frame are no damage: they are the rest of a
//! preallocated segment ([`super::spare`]), which the writer goes on writing into. (In any
//! segment but the last, records lost in zeros would show as a gap in the numbering: each
//! segment's name says where its records start, and a gap is refused.) A bad frame with a
//! valid one anywhere after it, or in any segment but the last, is corruption of data that may
//! have been acknowledged: recovery stops and names the file and offset rather than dropping
//! orders silently.

use std::collections::HashMap;
use std::fs::{self, OpenOptions};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::apply::{Apply, Mode};
use super::error::JournalError;
use super::record::{self, Frame, Record, HEADER_LEN};
use super::{segment, snapshot};

/// What replay found.
#[derive(Debug, Default)]
pub struct Replayed {
    /// The number the next record gets.
    pub next_number: u64,
    /// The highest order seq per room.
    pub seqs: HashMap<Arc<str>, u64>,
    /// The snapshot restored (the number of the first record after it), if any.
    pub snapshot: Option<u64>,
    /// Snapshots passed over as damaged: file and reason.
    pub bad_snapshots: Vec<(PathBuf, String)>,
    /// Records replayed from the segments (after the snapshot, if any).
    pub records: u64,
    /// Of those records, the orders.
    pub orders: u64,
    /// The last segment and where its records end (after any cut; a preallocated segment's
    /// zeros may follow).
    pub last_segment: Option<(PathBuf, u64)>,
    /// A torn tail that was cut off: file, offset and bytes removed.
    pub cut: Option<(PathBuf, u64, u64)>,
}

/// A record and where it is: the index of its segment and its offset there.
struct Placed {
    record: Record,
    segment: u32,
    offset: u64,
}

/// Records handed from the reading thread to the applying one at a time.
const CHUNK: usize = 4096;

/// What the reading thread found besides the records.
#[derive(Default)]
struct Read {
    last_segment: Option<(PathBuf, u64)>,
    cut: Option<(PathBuf, u64, u64)>,
    /// The number the record after the last one read has.
    end_number: u64,
}

/// How recovery treats the files.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Check {
    /// At start: leftovers are removed, a torn last batch is cut, and segments wholly covered
    /// by the snapshot are not read.
    #[default]
    Start,
    /// Offline (`livehub verify`): nothing is changed on disk (a torn last batch is only
    /// reported, in [`Replayed::cut`]), and every frame of every segment is checked.
    ReadOnly,
}

/// Restores the newest usable snapshot in `dir`, then replays the segments after it. One
/// thread reads, checks and decodes frames while the caller's thread applies them, so
/// recovery uses two cores.
pub fn replay(dir: &Path, apply: &dyn Apply) -> Result<Replayed, JournalError> {
    replay_with(dir, apply, Check::Start)
}

/// [`replay`], with the files treated as `check` says.
pub fn replay_with(dir: &Path, apply: &dyn Apply, check: Check) -> Result<Replayed, JournalError> {
    let io = |source| JournalError::Io {
        path: dir.to_path_buf(),
        source,
    };
    if check == Check::Start {
        snapshot::remove_leftovers(dir).map_err(io)?;
        super::spare::remove_leftovers(dir).map_err(io)?;
    }
    let segments = segment::list(dir).map_err(io)?;
    let snapshots = snapshot::list(dir).map_err(io)?;
    let first_in_segments = match segments.first() {
        Some(p) => snapshot::segment_first_number(p).ok_or_else(|| JournalError::Corrupt {
            path: p.clone(),
            offset: 0,
            detail: "a segment name that is not a record number".into(),
        })?,
        None => 1,
    };
    let mut out = Replayed {
        next_number: 1,
        ..Default::default()
    };
    let mut start = 1;
    for (number, path) in snapshots.iter().rev() {
        if *number < first_in_segments {
            out.bad_snapshots.push((
                path.clone(),
                format!("the segments before record {first_in_segments} are gone"),
            ));
            continue;
        }
        let restored =
            snapshot::load(path, *number).and_then(|l| apply.restore(l.state()).map(|()| l.meta));
        match restored {
            Ok(meta) => {
                tracing::info!(path = %path.display(), "restored a snapshot");
                out.next_number = meta.next_number;
                out.seqs = snapshot::seqs_map(&meta);
                out.snapshot = Some(*number);
                start = *number;
                break;
            }
            Err(detail) => {
                tracing::warn!(path = %path.display(), %detail, "snapshot damaged; falling back to an older one or to a full replay");
                out.bad_snapshots.push((path.clone(), detail));
            }
        }
    }
    if out.snapshot.is_none() && first_in_segments > 1 {
        let tried: Vec<String> = out
            .bad_snapshots
            .iter()
            .map(|(p, d)| format!("{} ({d})", p.display()))
            .collect();
        return Err(JournalError::Unrecoverable(format!(
            "the journal starts at record {first_in_segments} (older segments were compacted) and no snapshot covering them is usable: [{}]; refusing to start so that no order is dropped silently",
            tried.join(", ")
        )));
    }
    let read = std::thread::scope(|s| {
        let (tx, rx) = std::sync::mpsc::sync_channel::<Vec<Placed>>(16);
        let segments = &segments;
        let reader = s.spawn(move || read_segments(segments, start, check, tx));
        let mut refused = None;
        'chunks: for chunk in &rx {
            for placed in chunk {
                let rec = &placed.record;
                out.records += 1;
                if let Record::Order(o) = rec {
                    out.orders += 1;
                    out.next_number = out.next_number.max(o.number + 1);
                    let s = out.seqs.entry(o.room.clone()).or_insert(0);
                    *s = (*s).max(o.seq);
                }
                if let Err(detail) = apply.apply(rec, Mode::Replay) {
                    refused = Some(JournalError::Corrupt {
                        path: segments[placed.segment as usize].clone(),
                        offset: placed.offset,
                        detail,
                    });
                    break 'chunks;
                }
            }
        }
        // Dropping the receiver stops the reader at its next chunk.
        drop(rx);
        let read = reader.join().expect("journal reader thread");
        match refused {
            Some(e) => Err(e),
            None => read,
        }
    })?;
    out.next_number = out.next_number.max(read.end_number);
    // The writer appends to the last segment only if numbering goes on from its end; a
    // snapshot newer than every segment (its records' bytes lost with fsync off) starts a
    // new one.
    out.last_segment = read
        .last_segment
        .filter(|_| read.end_number == out.next_number);
    out.cut = read.cut;
    Ok(out)
}

/// Reads the segments, sending the records numbered `start` and above. A segment's records
/// are numbered from the number in its name; a segment that does not start where the one
/// before it ended is damage (records missing or doubled).
fn read_segments(
    segments: &[PathBuf],
    start: u64,
    check: Check,
    tx: std::sync::mpsc::SyncSender<Vec<Placed>>,
) -> Result<Read, JournalError> {
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source| JournalError::Io { path, source }
    };
    let mut out = Read {
        end_number: 1,
        ..Default::default()
    };
    let mut chunk = Vec::with_capacity(CHUNK);
    for (i, path) in segments.iter().enumerate() {
        let is_last = i + 1 == segments.len();
        let first = snapshot::segment_first_number(path).ok_or_else(|| JournalError::Corrupt {
            path: path.clone(),
            offset: 0,
            detail: "a segment name that is not a record number".into(),
        })?;
        if i > 0 && first != out.end_number {
            return Err(JournalError::Corrupt {
                path: path.clone(),
                offset: 0,
                detail: format!(
                    "the segment starts at record {first} but the one before it ends before record {}",
                    out.end_number
                ),
            });
        }
        let mut number = first;
        let next_first = segments
            .get(i + 1)
            .and_then(|p| snapshot::segment_first_number(p));
        // A segment wholly before the snapshot is not even read at start.
        if check == Check::Start && next_first.is_some_and(|n| n <= start) {
            out.end_number = next_first.expect("checked");
            continue;
        }
        let buf = fs::read(path).map_err(io(path))?;
        // A segment of bare record frames was written before batches existed; the writer
        // never appends to one (it starts a new segment), so it is read by its own rules.
        let legacy = matches!(record::read_frame(&buf), Frame::Valid { .. });
        let mut pos = 0usize;
        // Where the records end, when zeros (preallocated space) follow them.
        let mut records_end = None;
        let mut next = |payload: &[u8], at: usize| -> Result<bool, JournalError> {
            number += 1;
            if number <= start {
                // Covered by the snapshot: checked, not applied.
                return Ok(true);
            }
            let rec = record::decode(payload).map_err(|e| JournalError::Corrupt {
                path: path.clone(),
                offset: at as u64,
                detail: format!("undecodable record: {e}"),
            })?;
            chunk.push(Placed {
                record: rec,
                segment: i as u32,
                offset: at as u64,
            });
            if chunk.len() == CHUNK {
                let full = std::mem::replace(&mut chunk, Vec::with_capacity(CHUNK));
                return Ok(tx.send(full).is_ok());
            }
            Ok(true)
        };
        while pos < buf.len() {
            match record::read_frame(&buf[pos..]) {
                Frame::Valid { payload, len } => {
                    if !next(payload, pos)? {
                        return Ok(out);
                    }
                    pos += len;
                }
                Frame::Batch { body, len } => {
                    let mut at = 0;
                    while at < body.len() {
                        let offset = pos + HEADER_LEN + at;
                        let Frame::Valid { payload, len } = record::read_frame(&body[at..]) else {
                            return Err(JournalError::Corrupt {
                                path: path.clone(),
                                offset: offset as u64,
                                detail: "a bad record frame inside a whole batch".into(),
                            });
                        };
                        if !next(payload, offset)? {
                            return Ok(out);
                        }
                        at += len;
                    }
                    pos += len;
                }
                _ if buf[pos..].iter().all(|&b| b == 0) => {
                    records_end = Some(pos as u64);
                    break;
                }
                bad => {
                    let what = if bad == Frame::Corrupt {
                        "checksum mismatch"
                    } else {
                        "truncated frame"
                    };
                    // Only the last batch can be torn: it was never acknowledged. A whole
                    // batch (or, in a segment of bare frames, a whole frame) after the bad
                    // bytes means they are damage to what may have been acknowledged.
                    let whole_after = if legacy {
                        has_valid_frame_after(&buf, pos + 1)
                    } else {
                        has_valid_batch_after(&buf, pos + 1)
                    };
                    if !is_last || whole_after {
                        return Err(JournalError::Corrupt {
                            path: path.clone(),
                            offset: pos as u64,
                            detail: format!("{what} before the end of the journal"),
                        });
                    }
                    let removed = (buf.len() - pos) as u64;
                    if check == Check::ReadOnly {
                        out.cut = Some((path.clone(), pos as u64, removed));
                        break;
                    }
                    tracing::warn!(path = %path.display(), offset = pos, bytes = removed, what, "cutting the torn last batch off the journal");
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
        out.end_number = number;
        // The writer goes on in the last segment unless it holds bare frames.
        if is_last && !legacy {
            let len = match records_end {
                Some(end) => end,
                None => fs::metadata(path).map_err(io(path))?.len(),
            };
            out.last_segment = Some((path.clone(), len));
        }
    }
    let _ = tx.send(chunk);
    Ok(out)
}

/// Whether any whole, valid record frame or batch starts at or after `from`. Only up to the
/// last non-zero byte: zeros are never a frame, and a preallocated segment ends in megabytes
/// of them.
fn has_valid_frame_after(buf: &[u8], from: usize) -> bool {
    any_after(buf, from, |f| {
        matches!(f, Frame::Valid { .. } | Frame::Batch { .. })
    })
}

/// Whether any whole, valid batch starts at or after `from`. The record frames inside a torn
/// batch may be whole; only a whole batch is something that was acknowledged.
fn has_valid_batch_after(buf: &[u8], from: usize) -> bool {
    any_after(buf, from, |f| matches!(f, Frame::Batch { .. }))
}

fn any_after(buf: &[u8], from: usize, found: impl Fn(&Frame<'_>) -> bool) -> bool {
    let end = buf.iter().rposition(|&b| b != 0).map_or(0, |i| i + 1);
    (from..end.min(buf.len().saturating_sub(HEADER_LEN)))
        .any(|p| found(&record::read_frame(&buf[p..])))
}

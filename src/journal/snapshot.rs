//! Snapshots: the durable state as of a record number, so that a restart replays only the
//! segments after it, and segments wholly before it can be deleted (compaction).
//!
//! File: `journal/snapshot-<N, 20 digits>.snap` holds the effect of every record numbered
//! below `N`. Layout: a 32-byte header `magic (8) | N: u64 LE | body length: u64 LE |
//! crc32c(body): u32 LE | crc32c(first 28 header bytes): u32 LE`, then the body:
//! `meta length: u32 LE | meta (postcard: next record number, seq per room) | state`, where
//! `state` is whatever [`Apply::capture`](super::Apply::capture) encodes.
//!
//! How one is taken without stalling the buy path: after a batch is durable and applied, the
//! writer thread asks the state for a [`Capture`] (a consistent picture that costs a few
//! counters per room and SKU, not a copy of the orders) and hands it to the snapshot thread,
//! which encodes it, writes `*.snap.tmp`, fsyncs it, renames it into place and fsyncs the
//! directory. Only then are older files removed: the two newest snapshots are kept, and a
//! segment is deleted only when the older of the two covers it entirely, so one damaged
//! snapshot always leaves a usable one (or a full replay) behind.

use std::collections::HashMap;
use std::fs::{self, File};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::Receiver;
use std::sync::Arc;
use std::time::Instant;

use serde::{Deserialize, Serialize};

use super::segment;

/// Snapshots kept on disk. Two, so that a damaged newest one falls back to the one before.
pub const KEEP_SNAPSHOTS: usize = 2;

const MAGIC: &[u8; 8] = b"LHSNAP\x00\x01";
const HEADER_LEN: usize = 32;

/// A consistent picture of the state, taken on the writer thread between batches, encoded
/// later on the snapshot thread.
pub trait Capture: Send {
    /// The state's part of the snapshot body.
    fn encode(self: Box<Self>) -> Vec<u8>;
}

/// What the journal itself keeps in a snapshot besides the state.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Meta {
    /// The number the first record after the snapshot has (the `N` of the file name).
    pub next_number: u64,
    /// The highest order seq per room.
    pub seqs: Vec<(Arc<str>, u64)>,
}

/// One snapshot to write: handed from the writer to the snapshot thread.
pub(crate) struct Job {
    pub meta: Meta,
    pub state: Box<dyn Capture>,
    /// Time the writer thread spent taking the capture.
    pub capture_us: u64,
}

/// The path of the snapshot that holds every record numbered below `number`.
pub fn snapshot_path(dir: &Path, number: u64) -> PathBuf {
    dir.join(format!("snapshot-{number:020}.snap"))
}

/// The snapshots in `dir` with their numbers, oldest first.
pub fn list(dir: &Path) -> io::Result<Vec<(u64, PathBuf)>> {
    let mut v: Vec<(u64, PathBuf)> = fs::read_dir(dir)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter_map(|p| {
            let name = p.file_name()?.to_str()?;
            let n = name.strip_prefix("snapshot-")?.strip_suffix(".snap")?;
            Some((n.parse().ok()?, p))
        })
        .collect();
    v.sort();
    Ok(v)
}

/// Removes temp files a crash left in the middle of writing a snapshot.
pub fn remove_leftovers(dir: &Path) -> io::Result<()> {
    for e in fs::read_dir(dir)? {
        let p = e?.path();
        if p.file_name()
            .and_then(|n| n.to_str())
            .is_some_and(|n| n.starts_with("snapshot-") && n.ends_with(".tmp"))
        {
            tracing::info!(path = %p.display(), "removing an unfinished snapshot");
            fs::remove_file(&p)?;
        }
    }
    Ok(())
}

/// Frames a snapshot: header, meta, state.
pub fn encode(meta: &Meta, state: &[u8]) -> Vec<u8> {
    let meta_bytes = postcard::to_allocvec(meta).expect("snapshot meta encodes");
    let body_len = 4 + meta_bytes.len() + state.len();
    let mut out = Vec::with_capacity(HEADER_LEN + body_len);
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&meta.next_number.to_le_bytes());
    out.extend_from_slice(&(body_len as u64).to_le_bytes());
    out.extend_from_slice(&[0u8; 8]);
    out.extend_from_slice(&(meta_bytes.len() as u32).to_le_bytes());
    out.extend_from_slice(&meta_bytes);
    out.extend_from_slice(state);
    let body_crc = crc32c::crc32c(&out[HEADER_LEN..]);
    out[24..28].copy_from_slice(&body_crc.to_le_bytes());
    let header_crc = crc32c::crc32c(&out[..28]);
    out[28..32].copy_from_slice(&header_crc.to_le_bytes());
    out
}

/// A snapshot read back and checked: its meta, and the state's bytes.
#[derive(Debug)]
pub struct Loaded {
    pub meta: Meta,
    pub state: Vec<u8>,
    state_at: usize,
}

impl Loaded {
    /// The state's part of the body.
    pub fn state(&self) -> &[u8] {
        &self.state[self.state_at..]
    }
}

/// Reads and checks the snapshot at `path`, which must hold records below `number`.
/// Any damage (short file, bad checksum, undecodable meta) is an error naming what was wrong.
pub fn load(path: &Path, number: u64) -> Result<Loaded, String> {
    let buf = fs::read(path).map_err(|e| format!("cannot read: {e}"))?;
    if buf.len() < HEADER_LEN {
        return Err(format!("{} bytes, shorter than its header", buf.len()));
    }
    if &buf[..8] != MAGIC {
        return Err("not a livehub snapshot (bad magic)".into());
    }
    let u64_at = |i: usize| u64::from_le_bytes(buf[i..i + 8].try_into().expect("8 bytes"));
    let u32_at = |i: usize| u32::from_le_bytes(buf[i..i + 4].try_into().expect("4 bytes"));
    if crc32c::crc32c(&buf[..28]) != u32_at(28) {
        return Err("header checksum mismatch".into());
    }
    if u64_at(8) != number {
        return Err(format!(
            "holds records below {}, its name says {number}",
            u64_at(8)
        ));
    }
    let body_len = u64_at(16) as usize;
    if buf.len() != HEADER_LEN + body_len {
        return Err(format!(
            "torn: {} body bytes, header says {body_len}",
            buf.len() - HEADER_LEN
        ));
    }
    if crc32c::crc32c(&buf[HEADER_LEN..]) != u32_at(24) {
        return Err("body checksum mismatch".into());
    }
    if body_len < 4 {
        return Err("body too short".into());
    }
    let meta_len = u32_at(HEADER_LEN) as usize;
    let meta_at = HEADER_LEN + 4;
    if meta_at + meta_len > buf.len() {
        return Err("meta runs past the end".into());
    }
    let meta: Meta = postcard::from_bytes(&buf[meta_at..meta_at + meta_len])
        .map_err(|e| format!("undecodable meta: {e}"))?;
    if meta.next_number != number {
        return Err("meta and header disagree on the record number".into());
    }
    Ok(Loaded {
        meta,
        state: buf,
        state_at: meta_at + meta_len,
    })
}

/// A snapshot is written and synced this much at a time, so that the journal's own fdatasync,
/// which the buys wait for, never queues behind a whole snapshot (43 MB for a million orders)
/// at the disk.
pub const WRITE_PIECE: usize = 1 << 20;

/// Writes `bytes` as the snapshot `number`: temp file (in synced pieces), fsync, rename,
/// directory fsync.
pub fn write(dir: &Path, number: u64, bytes: &[u8]) -> io::Result<PathBuf> {
    let path = snapshot_path(dir, number);
    let tmp = path.with_extension("snap.tmp");
    let res = (|| {
        let mut f = File::create(&tmp)?;
        for piece in bytes.chunks(WRITE_PIECE) {
            f.write_all(piece)?;
            f.sync_data()?;
        }
        f.sync_all()?;
        drop(f);
        fs::rename(&tmp, &path)?;
        File::open(dir)?.sync_all()
    })();
    if res.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    res.map(|_| path)
}

/// The first record number of a segment, from its name.
pub fn segment_first_number(path: &Path) -> Option<u64> {
    path.file_stem()?.to_str()?.parse().ok()
}

/// Keeps the [`KEEP_SNAPSHOTS`] newest snapshots, and deletes the segments that the older of
/// them covers entirely (a segment whose successor starts at or below its number). The
/// segment being written is never deleted: it has no successor. Returns the files removed.
pub fn compact(dir: &Path) -> io::Result<Vec<PathBuf>> {
    let snaps = list(dir)?;
    let mut removed = Vec::new();
    if snaps.len() < KEEP_SNAPSHOTS {
        return Ok(removed);
    }
    let (old, kept) = snaps.split_at(snaps.len() - KEEP_SNAPSHOTS);
    for (_, p) in old {
        fs::remove_file(p)?;
        removed.push(p.clone());
    }
    let covered = kept[0].0;
    let segments = segment::list(dir)?;
    for pair in segments.windows(2) {
        match segment_first_number(&pair[1]) {
            Some(next_first) if next_first <= covered => {
                fs::remove_file(&pair[0])?;
                removed.push(pair[0].clone());
            }
            _ => break,
        }
    }
    if !removed.is_empty() {
        File::open(dir)?.sync_all()?;
    }
    Ok(removed)
}

/// The snapshot thread: encodes and writes each job, then compacts. `idle` tells the writer
/// it may hand over the next capture. Ends when the writer drops its sender.
pub(crate) fn run(dir: PathBuf, rx: Receiver<Job>, idle: Arc<AtomicBool>, compaction: bool) {
    for job in rx {
        let number = job.meta.next_number;
        let t = Instant::now();
        let state = job.state.encode();
        let bytes = encode(&job.meta, &state);
        drop(state);
        let encoded = t.elapsed();
        match write(&dir, number, &bytes) {
            Ok(path) => {
                let written = t.elapsed();
                metrics::histogram!("livehub_snapshot_seconds").record(written.as_secs_f64());
                tracing::info!(
                    path = %path.display(),
                    bytes = bytes.len(),
                    capture_us = job.capture_us,
                    encode_ms = encoded.as_millis() as u64,
                    total_ms = written.as_millis() as u64,
                    "snapshot written"
                );
                match if compaction {
                    compact(&dir)
                } else {
                    Ok(Vec::new())
                } {
                    Ok(removed) if !removed.is_empty() => {
                        tracing::info!(
                            files = removed.len(),
                            "compacted: old snapshots and covered segments removed"
                        )
                    }
                    Ok(_) => {}
                    Err(e) => {
                        tracing::warn!(error = %e, "compaction failed; will try after the next snapshot")
                    }
                }
            }
            Err(e) => {
                metrics::counter!("livehub_snapshot_failures_total").increment(1);
                tracing::warn!(error = %e, number, "snapshot failed; the journal is intact and the next interval tries again")
            }
        }
        idle.store(true, Ordering::Release);
    }
}

/// Seqs as the writer keeps them.
pub fn seqs_map(meta: &Meta) -> HashMap<Arc<str>, u64> {
    meta.seqs.iter().cloned().collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meta() -> Meta {
        Meta {
            next_number: 42,
            seqs: vec![("r".into(), 7)],
        }
    }

    #[test]
    fn a_snapshot_round_trips_and_any_damage_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let bytes = encode(&meta(), b"state bytes");
        let path = write(dir.path(), 42, &bytes).unwrap();
        let l = load(&path, 42).unwrap();
        assert_eq!(l.meta, meta());
        assert_eq!(l.state(), b"state bytes");
        assert!(load(&path, 43).is_err(), "a name that disagrees is refused");
        for cut in [0, 10, HEADER_LEN, bytes.len() - 1] {
            fs::write(&path, &bytes[..cut]).unwrap();
            assert!(load(&path, 42).is_err(), "cut at {cut}");
        }
        for i in [0, 9, 20, 30, HEADER_LEN + 2, bytes.len() - 1] {
            let mut bad = bytes.clone();
            bad[i] ^= 0x10;
            fs::write(&path, &bad).unwrap();
            assert!(load(&path, 42).is_err(), "flip at {i}");
        }
    }

    #[test]
    fn compaction_keeps_two_snapshots_and_the_segments_they_need() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        for first in [1u64, 100, 200, 300] {
            fs::write(segment::segment_path(d, first), b"x").unwrap();
        }
        for n in [150u64, 250, 320] {
            write(
                d,
                n,
                &encode(
                    &Meta {
                        next_number: n,
                        seqs: vec![],
                    },
                    b"",
                ),
            )
            .unwrap();
        }
        compact(d).unwrap();
        let snaps: Vec<u64> = list(d).unwrap().into_iter().map(|(n, _)| n).collect();
        assert_eq!(snaps, [250, 320]);
        let segs: Vec<u64> = segment::list(d)
            .unwrap()
            .iter()
            .map(|p| segment_first_number(p).unwrap())
            .collect();
        // Snapshot 250 needs records 250.. : the segment starting at 200 stays.
        assert_eq!(segs, [200, 300]);
    }
}

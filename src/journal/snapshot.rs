//! Journal snapshots: the durable state as of a record number, so that a restart replays only
//! the segments after it, and segments wholly before it can be deleted (compaction).
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
    /// Encodes the state's part of the snapshot body into `out`, calling
    /// [`Sink::piece_done`] now and then (after each item) so it leaves in pieces.
    fn encode(self: Box<Self>, out: &mut Sink);
}

/// Where a snapshot body is encoded: a buffer of about [`WRITE_PIECE`] that goes to the file
/// (written and synced) each time it fills, so a snapshot of any size needs one piece of
/// memory and never queues a whole snapshot at the disk ahead of the journal's fdatasync.
/// The body's length and checksum are kept as it goes. The first I/O error stops the writing
/// and is returned at the end.
pub struct Sink {
    buf: Vec<u8>,
    /// `None`: the body stays in `buf` (tests, benchmarks).
    file: Option<File>,
    crc: u32,
    len: u64,
    error: Option<io::Error>,
}

impl Sink {
    fn to_file(file: File) -> Self {
        Sink {
            buf: Vec::with_capacity(WRITE_PIECE + (WRITE_PIECE >> 4)),
            file: Some(file),
            crc: 0,
            len: 0,
            error: None,
        }
    }

    /// A sink that keeps the whole body in memory: [`Sink::into_bytes`].
    pub fn in_memory() -> Self {
        Sink {
            buf: Vec::new(),
            file: None,
            crc: 0,
            len: 0,
            error: None,
        }
    }

    /// The buffer to append encoded bytes to.
    pub fn buf(&mut self) -> &mut Vec<u8> {
        &mut self.buf
    }

    /// Appends `bytes`.
    pub fn put(&mut self, bytes: &[u8]) {
        self.buf.extend_from_slice(bytes);
        self.piece_done();
    }

    /// Writes the buffer out if it holds a piece.
    pub fn piece_done(&mut self) {
        if self.buf.len() >= WRITE_PIECE && self.file.is_some() {
            self.flush();
        }
    }

    fn flush(&mut self) {
        self.crc = crc32c::crc32c_append(self.crc, &self.buf);
        self.len += self.buf.len() as u64;
        if self.error.is_none() {
            if let Some(f) = self.file.as_mut() {
                if let Err(e) = f.write_all(&self.buf).and_then(|()| f.sync_data()) {
                    self.error = Some(e);
                }
            }
        }
        self.buf.clear();
    }

    /// Body bytes so far, written or not.
    pub fn len(&self) -> u64 {
        self.len + self.buf.len() as u64
    }

    /// Whether no body byte was encoded yet.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The body an in-memory sink holds.
    pub fn into_bytes(self) -> Vec<u8> {
        assert!(self.file.is_none(), "a file sink's bytes are in its file");
        self.buf
    }

    /// Writes what is left; the file, the body's length and its checksum.
    fn finish(mut self) -> io::Result<(File, u64, u32)> {
        self.flush();
        if let Some(e) = self.error.take() {
            return Err(e);
        }
        let file = self.file.take().expect("a file sink");
        Ok((file, self.len, self.crc))
    }
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

/// The 32-byte header of a snapshot whose body has this length and checksum.
fn header(number: u64, body_len: u64, body_crc: u32) -> [u8; HEADER_LEN] {
    let mut h = [0u8; HEADER_LEN];
    h[..8].copy_from_slice(MAGIC);
    h[8..16].copy_from_slice(&number.to_le_bytes());
    h[16..24].copy_from_slice(&body_len.to_le_bytes());
    h[24..28].copy_from_slice(&body_crc.to_le_bytes());
    let header_crc = crc32c::crc32c(&h[..28]);
    h[28..32].copy_from_slice(&header_crc.to_le_bytes());
    h
}

/// A snapshot read back and checked: its meta, and the state's bytes.
#[derive(Debug)]
pub struct Loaded {
    /// What the journal keeps besides the state.
    pub meta: Meta,
    /// The whole body as read; `state()` is the state's part of it.
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

/// A journal snapshot is written and synced this much at a time, so that the journal's own
/// fdatasync, which the buys wait for, never queues at the disk behind a whole snapshot, which
/// grows with the orders it holds.
pub const WRITE_PIECE: usize = 1 << 20;

/// Writes the snapshot `meta.next_number`, its state encoded by `state` into the file as it
/// goes: temp file (in synced pieces), header, fsync, rename, directory fsync. Returns the
/// path and the file's size.
pub fn write_with(
    dir: &Path,
    meta: &Meta,
    state: impl FnOnce(&mut Sink),
) -> io::Result<(PathBuf, u64)> {
    let number = meta.next_number;
    let path = snapshot_path(dir, number);
    let tmp = path.with_extension("snap.tmp");
    let res = (|| {
        use std::os::unix::fs::FileExt;
        let mut f = File::create(&tmp)?;
        // The header, with the body's length and checksum, is written last, over these.
        f.write_all(&[0u8; HEADER_LEN])?;
        let mut sink = Sink::to_file(f);
        let meta_bytes = postcard::to_allocvec(meta).expect("snapshot meta encodes");
        sink.put(&(meta_bytes.len() as u32).to_le_bytes());
        sink.put(&meta_bytes);
        state(&mut sink);
        let (f, body_len, body_crc) = sink.finish()?;
        f.write_all_at(&header(number, body_len, body_crc), 0)?;
        f.sync_all()?;
        drop(f);
        fs::rename(&tmp, &path)?;
        File::open(dir)?.sync_all()?;
        Ok(HEADER_LEN as u64 + body_len)
    })();
    if res.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    res.map(|len| (path, len))
}

/// Writes a snapshot whose state is these bytes.
pub fn write(dir: &Path, meta: &Meta, state: &[u8]) -> io::Result<PathBuf> {
    write_with(dir, meta, |sink| sink.put(state)).map(|(path, _)| path)
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
        match write_with(&dir, &job.meta, |sink| job.state.encode(sink)) {
            Ok((path, bytes)) => {
                let written = t.elapsed();
                metrics::histogram!("livehub_snapshot_seconds").record(written.as_secs_f64());
                tracing::info!(
                    path = %path.display(),
                    bytes,
                    capture_us = job.capture_us,
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
        let path = write(dir.path(), &meta(), b"state bytes").unwrap();
        let bytes = fs::read(&path).unwrap();
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

    /// A body of several pieces is written piece by piece and reads back whole.
    #[test]
    fn a_body_of_many_pieces_round_trips() {
        let dir = tempfile::tempdir().unwrap();
        let body: Vec<u8> = (0..WRITE_PIECE * 5 / 2)
            .map(|i| (i * 7 % 251) as u8)
            .collect();
        let (path, len) = write_with(dir.path(), &meta(), |sink| {
            for chunk in body.chunks(1000) {
                sink.buf().extend_from_slice(chunk);
                sink.piece_done();
                assert!(
                    sink.buf().len() < WRITE_PIECE + 1000,
                    "a piece was left in memory"
                );
            }
        })
        .unwrap();
        assert_eq!(len, fs::metadata(&path).unwrap().len());
        assert_eq!(load(&path, 42).unwrap().state(), &body[..]);
    }

    #[test]
    fn compaction_keeps_two_snapshots_and_the_segments_they_need() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        for first in [1u64, 100, 200, 300] {
            fs::write(segment::segment_path(d, first), b"x").unwrap();
        }
        for n in [150u64, 250, 320] {
            let meta = Meta {
                next_number: n,
                seqs: vec![],
            };
            write(d, &meta, b"").unwrap();
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

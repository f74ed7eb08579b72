//! The spare segment: the next segment file, zero-filled ahead of time by a thread of its own,
//! so that the writer's batches overwrite bytes the file already has instead of appending.
//!
//! Why: an append changes the file's size, and then every batch's `fdatasync` must also write
//! the inode, a second I/O the batch waits for. Writing inside the file's length leaves only
//! the data to flush, which makes each batch's fdatasync shorter (BENCHMARKS.md). `fallocate`
//! would not do: it leaves unwritten extents, whose conversion on the first write is again a
//! metadata change; the bytes have to be really written once, which is what write-ahead logs
//! such as PostgreSQL's do for their segments too.
//!
//! The segment the writer starts in is extended with zeros the same way at start (before the
//! writer runs, so nothing else writes the file meanwhile), so that the first rotation, and
//! the first refill of the spare, come only once a whole segment is written.
//!
//! Files: `journal/spare.seg.partial` while it is filled, renamed to `journal/spare.seg.ready`
//! once filled and synced. Neither has the `.seg` extension, so recovery never reads them; they
//! are removed at start and at a clean stop. The writer renames the ready spare to the next
//! segment's name when it rotates (see `writer.rs` for the order of steps that keeps every
//! segment but the last free of a zero tail).

use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender, TrySendError};
use std::sync::Arc;
use std::thread::JoinHandle;

use super::snapshot::WRITE_PIECE;

/// Largest segment that is zero-filled ahead: filling costs a write of the whole segment (at
/// start too), so segments bigger than this (`--segment-bytes`) grow by appends instead.
pub const MAX_BYTES: u64 = 1 << 30;

const PARTIAL: &str = "spare.seg.partial";
const READY: &str = "spare.seg.ready";

/// Removes spare files a previous run left.
pub fn remove_leftovers(dir: &Path) -> io::Result<()> {
    for name in [PARTIAL, READY] {
        match fs::remove_file(dir.join(name)) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
            _ => {}
        }
    }
    Ok(())
}

/// Writes zeros over `from..to` of `f` in synced pieces (so that the journal's own fdatasync
/// never queues behind the whole range at the disk), then syncs the file's size too.
pub(crate) fn zero_fill(f: &File, from: u64, to: u64) -> io::Result<()> {
    let zeros = vec![0u8; WRITE_PIECE];
    let mut at = from;
    while at < to {
        let n = (to - at).min(WRITE_PIECE as u64) as usize;
        f.write_all_at(&zeros[..n], at)?;
        f.sync_data()?;
        at += n as u64;
    }
    f.sync_all()
}

/// Writes a zero-filled spare of `bytes`, then renames it ready.
fn fill(dir: &Path, bytes: u64) -> io::Result<()> {
    let partial = dir.join(PARTIAL);
    let f = OpenOptions::new()
        .create(true)
        .write(true)
        .truncate(true)
        .open(&partial)?;
    zero_fill(&f, 0, bytes)?;
    fs::rename(&partial, dir.join(READY))
}

/// The writer's handle on the spare thread.
pub(crate) struct Spare {
    dir: PathBuf,
    ready: Arc<AtomicBool>,
    /// Asks the thread for the next spare; dropping it stops the thread.
    ask: SyncSender<()>,
}

impl Spare {
    /// Starts the thread, which fills the first spare at once.
    pub fn start(dir: PathBuf, bytes: u64) -> io::Result<(Spare, JoinHandle<()>)> {
        let ready = Arc::new(AtomicBool::new(false));
        let (ask, asked) = sync_channel(1);
        let (d, r) = (dir.clone(), ready.clone());
        let thread = std::thread::Builder::new()
            .name("journal-spare".into())
            .spawn(move || run(d, bytes, r, asked))?;
        let _ = ask.try_send(());
        Ok((Spare { dir, ready, ask }, thread))
    }

    /// Whether a spare is ready to be taken.
    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Acquire)
    }

    /// Makes the ready spare the segment at `path` (rename, then a directory fsync) and asks
    /// for the next one. `None` when no spare is ready.
    pub fn take(&self, path: &Path) -> Option<io::Result<File>> {
        if !self.is_ready() {
            return None;
        }
        self.ready.store(false, Ordering::Release);
        let res = (|| {
            fs::rename(self.dir.join(READY), path)?;
            File::open(&self.dir)?.sync_all()?;
            OpenOptions::new().write(true).open(path)
        })();
        match self.ask.try_send(()) {
            Ok(()) | Err(TrySendError::Full(())) => {}
            Err(TrySendError::Disconnected(())) => {
                tracing::warn!("the journal's spare thread is gone; segments grow by appends")
            }
        }
        Some(res)
    }
}

fn run(dir: PathBuf, bytes: u64, ready: Arc<AtomicBool>, asked: Receiver<()>) {
    for () in asked {
        match fill(&dir, bytes) {
            Ok(()) => ready.store(true, Ordering::Release),
            Err(e) => {
                tracing::warn!(error = %e, dir = %dir.display(), "cannot fill a spare journal segment; the next one grows by appends");
                let _ = fs::remove_file(dir.join(PARTIAL));
            }
        }
    }
    // The writer stopped: a spare is of no use to anybody now.
    if let Err(e) = remove_leftovers(&dir) {
        tracing::warn!(error = %e, "cannot remove the spare journal segment");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_spare_is_filled_with_zeros_taken_as_a_segment_and_replaced() {
        let dir = tempfile::tempdir().unwrap();
        let (spare, thread) = Spare::start(dir.path().to_path_buf(), 3 * 1024 * 1024 + 5).unwrap();
        let t0 = std::time::Instant::now();
        while !spare.is_ready() {
            assert!(t0.elapsed().as_secs() < 30, "the spare was never filled");
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        let seg = dir.path().join("00000000000000000001.seg");
        let f = spare.take(&seg).expect("ready").unwrap();
        assert_eq!(f.metadata().unwrap().len(), 3 * 1024 * 1024 + 5);
        assert!(fs::read(&seg).unwrap().iter().all(|&b| b == 0));
        // The next spare comes by itself.
        let t0 = std::time::Instant::now();
        while !spare.is_ready() {
            assert!(t0.elapsed().as_secs() < 30, "no second spare");
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        assert!(spare
            .take(&dir.path().join("00000000000000000009.seg"))
            .is_some());
        // Stopping removes the spare the thread made meanwhile.
        drop(spare);
        thread.join().unwrap();
        assert!(!dir.path().join(READY).exists());
        assert!(!dir.path().join(PARTIAL).exists());
        assert_eq!(
            super::super::segment::list(dir.path()).unwrap().len(),
            2,
            "the spares never look like segments"
        );
    }
}

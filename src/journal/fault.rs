//! Fault injection for the journal's file I/O, so tests can prove that a failed write or
//! fsync acknowledges nothing, gives stock back and leaves the hub serving.

use std::io;
use std::sync::atomic::{AtomicU32, Ordering};

/// Counts of upcoming I/O calls to fail. Zero (the default) injects nothing; production never
/// sets them.
#[derive(Debug, Default)]
pub struct Faults {
    writes: AtomicU32,
    syncs: AtomicU32,
    cuts: AtomicU32,
    sync_delay_ms: AtomicU32,
}

impl Faults {
    /// Makes the next `n` batch writes fail (as a full disk would).
    pub fn fail_next_writes(&self, n: u32) {
        self.writes.store(n, Ordering::SeqCst);
    }

    /// Makes the next `n` fsyncs fail (as an I/O error would).
    pub fn fail_next_syncs(&self, n: u32) {
        self.syncs.store(n, Ordering::SeqCst);
    }

    /// Makes the next `n` cuts of a failed batch off the segment fail.
    pub fn fail_next_cuts(&self, n: u32) {
        self.cuts.store(n, Ordering::SeqCst);
    }

    /// Makes every fsync take `ms` longer (a saturated disk), until set back to 0.
    pub fn slow_syncs(&self, ms: u32) {
        self.sync_delay_ms.store(ms, Ordering::SeqCst);
    }

    pub(crate) fn check_write(&self) -> io::Result<()> {
        take_one(&self.writes, || {
            io::Error::new(
                io::ErrorKind::StorageFull,
                "injected: no space left on device",
            )
        })
    }

    pub(crate) fn check_cut(&self) -> io::Result<()> {
        take_one(&self.cuts, || {
            io::Error::other("injected: cannot cut the segment")
        })
    }

    pub(crate) fn check_sync(&self) -> io::Result<()> {
        let delay = self.sync_delay_ms.load(Ordering::Relaxed);
        if delay > 0 {
            std::thread::sleep(std::time::Duration::from_millis(delay as u64));
        }
        take_one(&self.syncs, || io::Error::other("injected: fsync failed"))
    }
}

fn take_one(counter: &AtomicU32, err: impl FnOnce() -> io::Error) -> io::Result<()> {
    match counter.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1)) {
        Ok(_) => Err(err()),
        Err(_) => Ok(()),
    }
}

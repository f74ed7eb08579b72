//! The group-commit writer: one thread that batches records, writes them, calls fdatasync
//! once per batch, applies them to the hub's memory in journal order, and only then releases
//! the batch's waiters. That call to `sync_data` is the one point after which an order is
//! durable; no ack is sent before it.

use std::collections::HashMap;
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, TryRecvError, TrySendError};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::oneshot;

use super::apply::{Apply, Mode};
use super::error::JournalError;
#[cfg(feature = "fault-injection")]
use super::fault::Faults;
use super::record::{self, Record};
use super::segment;
use super::snapshot::{Job, Meta};
use super::spare::Spare;

/// A record waiting to be made durable, and who waits for it.
pub(crate) struct Pending {
    pub record: Record,
    pub done: oneshot::Sender<Result<Record, JournalError>>,
}

pub(crate) enum Msg {
    Append(Pending),
    /// Write everything queued before this, then stop.
    Stop,
}

/// The writer's state; lives on its own thread.
pub(crate) struct Writer {
    pub dir: PathBuf,
    pub file: File,
    /// Bytes of the current segment known to be durable: where the next batch is written.
    pub durable_len: u64,
    /// The current segment file's length. Batches inside it leave the size alone, so their
    /// fdatasync writes no inode.
    pub allocated: u64,
    /// Whether the current segment was zero-filled to `segment_bytes` ahead of use.
    pub preallocated: bool,
    /// The next segment, zero-filled ahead; `None` when preallocation is off.
    pub spare: Option<Spare>,
    pub segment_bytes: u64,
    pub next_number: u64,
    pub seqs: HashMap<Arc<str>, u64>,
    pub fsync: bool,
    pub window: Duration,
    pub max_batch: usize,
    #[cfg(feature = "fault-injection")]
    pub faults: Arc<Faults>,
    pub apply: Arc<dyn Apply>,
    /// Called when a failed batch cannot be cut off; the writer then stops.
    pub on_fatal: super::FatalHook,
    pub snapshots: Option<Snapshots>,
}

/// The writer's side of snapshotting.
pub(crate) struct Snapshots {
    /// To the snapshot thread; holds one job at most.
    pub tx: SyncSender<Job>,
    /// Set by the snapshot thread when it waits for the next job. While it is busy the writer
    /// takes no capture, so a slow disk delays snapshots, never buys.
    pub idle: Arc<AtomicBool>,
    pub every: u64,
    /// Records durable since the last capture handed over.
    pub since: u64,
}

/// Records queued while the last batch was written and synced that make the hub busy enough
/// for the commit window: then each fsync is paid by more records, for a wait a fraction of
/// the latency already there. A quieter hub writes at once, so a lone buy never waits out the
/// window (where the threshold falls in buys a second: BENCHMARKS.md, "commit window").
pub const BUSY_BATCH: usize = 16;

/// Whether a batch of `len` records waits out `window` for more before it is written.
fn holds_open(window: Duration, len: usize, max_batch: usize) -> bool {
    !window.is_zero() && len >= BUSY_BATCH && len < max_batch
}

impl Writer {
    /// Group commit. The writer blocks for the first record of a batch (the one wake-up a
    /// batch costs a producer), then holds the batch open for the commit window by sleeping,
    /// not by waiting on the channel: a producer that finds the writer asleep or busy only
    /// queues its record, so a batch of N records costs one wake-up, not N. Whatever queued
    /// meanwhile (during the window, or during the previous batch's fsync) joins the batch,
    /// up to `max_batch`. The window is held only when the hub is busy ([`BUSY_BATCH`]
    /// records queued during the last fsync); otherwise, and with a zero window, the batch is
    /// what queued during the last fsync.
    pub fn run(mut self, rx: Receiver<Msg>) {
        let mut batch: Vec<Pending> = Vec::with_capacity(self.max_batch);
        let mut buf: Vec<u8> = Vec::with_capacity(1 << 20);
        let mut stopping = false;
        while !stopping {
            match rx.recv() {
                Ok(Msg::Append(p)) => batch.push(p),
                Ok(Msg::Stop) | Err(_) => break,
            }
            stopping = self.drain(&rx, &mut batch);
            if !stopping && holds_open(self.window, batch.len(), self.max_batch) {
                std::thread::sleep(self.window);
                stopping = self.drain(&rx, &mut batch);
            }
            if !self.commit(&mut batch, &mut buf) {
                return;
            }
        }
        // A clean stop leaves the segment as long as its records.
        self.trim();
        tracing::debug!(next_number = self.next_number, "journal writer stopped");
    }

    /// Moves what is queued into `batch`, up to `max_batch`, without waiting. Returns whether
    /// the writer is told to stop (what came before the stop is in the batch).
    fn drain(&self, rx: &Receiver<Msg>, batch: &mut Vec<Pending>) -> bool {
        while batch.len() < self.max_batch {
            match rx.try_recv() {
                Ok(Msg::Append(p)) => batch.push(p),
                Ok(Msg::Stop) | Err(TryRecvError::Disconnected) => return true,
                Err(TryRecvError::Empty) => return false,
            }
        }
        false
    }

    /// Writes and answers one batch. Returns whether the writer may go on: `false` after a
    /// fail-stop ([`Writer::fail_stop`]).
    fn commit(&mut self, batch: &mut Vec<Pending>, buf: &mut Vec<u8>) -> bool {
        if batch.is_empty() {
            return true;
        }
        buf.clear();
        let header = record::begin_batch(buf);
        let first_number = self.next_number;
        let mut seqs_before: Vec<(Arc<str>, u64)> = Vec::new();
        for p in batch.iter_mut() {
            let number = self.next_number;
            self.next_number += 1;
            if let Record::Order(o) = &mut p.record {
                let seq = self.seqs.entry(o.room.clone()).or_insert(0);
                if !seqs_before.iter().any(|(r, _)| *r == o.room) {
                    seqs_before.push((o.room.clone(), *seq));
                }
                *seq += 1;
                let o = Arc::get_mut(o).expect("an order being journaled has one owner");
                o.seq = *seq;
                o.number = number;
            }
            p.record.encode_into(buf);
        }
        record::end_batch(buf, header);
        let batch_len = batch.len() as u64;
        let started = Instant::now();
        match self.write_durably(buf) {
            Ok(()) => {
                self.durable_len += buf.len() as u64;
                metrics::histogram!("livehub_journal_batch_records").record(batch.len() as f64);
                metrics::histogram!("livehub_journal_fsync_seconds")
                    .record(started.elapsed().as_secs_f64());
                for p in batch.drain(..) {
                    if let Err(e) = self.apply.apply(&p.record, Mode::Live) {
                        // The gate placed it before it was journaled: a bug, not damage.
                        tracing::error!(error = %e, "a durable record could not be applied");
                    }
                    let _ = p.done.send(Ok(p.record));
                }
                // A segment that grows by appends is left as soon as a preallocated one is
                // ready (the first one after a start, or after a failed fill).
                let spare_ready = self.spare.as_ref().is_some_and(Spare::is_ready);
                if self.durable_len >= self.segment_bytes || (!self.preallocated && spare_ready) {
                    self.rotate();
                }
                self.maybe_snapshot(batch_len);
            }
            Err(e) => {
                metrics::counter!("livehub_journal_failed_batches_total").increment(1);
                tracing::error!(error = %e, records = batch.len(), "journal write failed; the batch is refused");
                self.next_number = first_number;
                for (room, seq) in seqs_before {
                    self.seqs.insert(room, seq);
                }
                if let Err(cut) = self.cut_back() {
                    self.fail_stop(
                        batch,
                        &format!("a failed batch ({e}) could not be cut off the journal: {cut}"),
                    );
                    return false;
                }
                for p in batch.drain(..) {
                    let _ = p.done.send(Err(JournalError::Unavailable(e.to_string())));
                }
            }
        }
        true
    }

    /// Stops the writer without answering the batch: its records may be on disk, so none of
    /// its buyers may be told it failed, and none may be told it succeeded (it was not synced).
    /// The waiters are never answered (their senders are leaked, not dropped, since a dropped
    /// sender reads as a failure), and [`FatalHook`](super::FatalHook) ends the process.
    fn fail_stop(&mut self, batch: &mut Vec<Pending>, reason: &str) {
        metrics::counter!("livehub_journal_fail_stops_total").increment(1);
        std::mem::forget(std::mem::take(batch));
        (self.on_fatal.0)(reason);
    }

    /// Hands a capture of the state to the snapshot thread when the interval is reached and
    /// the thread is idle. The capture runs here, between batches, so it sees exactly the
    /// records below `next_number`; its cost is the writer's only stall.
    fn maybe_snapshot(&mut self, records: u64) {
        let Some(s) = &mut self.snapshots else { return };
        s.since += records;
        if s.since < s.every || !s.idle.load(Ordering::Acquire) {
            return;
        }
        let t = Instant::now();
        let Some(state) = self.apply.capture() else {
            return;
        };
        let meta = Meta {
            next_number: self.next_number,
            seqs: self.seqs.iter().map(|(r, s)| (r.clone(), *s)).collect(),
        };
        let capture_us = t.elapsed().as_micros() as u64;
        metrics::histogram!("livehub_snapshot_capture_seconds").record(t.elapsed().as_secs_f64());
        s.idle.store(false, Ordering::Release);
        match s.tx.try_send(Job {
            meta,
            state,
            capture_us,
        }) {
            Ok(()) => s.since = 0,
            Err(TrySendError::Full(_)) => s.idle.store(true, Ordering::Release),
            Err(TrySendError::Disconnected(_)) => {
                tracing::error!("the snapshot thread is gone; no more snapshots this run");
                self.snapshots = None;
            }
        }
    }

    fn write_durably(&mut self, buf: &[u8]) -> std::io::Result<()> {
        #[cfg(feature = "fault-injection")]
        self.faults.check_write()?;
        self.file.write_all_at(buf, self.durable_len)?;
        self.allocated = self.allocated.max(self.durable_len + buf.len() as u64);
        if self.fsync {
            #[cfg(feature = "fault-injection")]
            self.faults.check_sync()?;
            self.file.sync_data()?;
        }
        Ok(())
    }

    /// Cuts a failed batch off the segment so that a restart never finds records whose
    /// buyers were told `unavailable`.
    fn cut_back(&mut self) -> std::io::Result<()> {
        #[cfg(feature = "fault-injection")]
        self.faults.check_cut()?;
        self.file.set_len(self.durable_len)?;
        if self.fsync {
            self.file.sync_data()?;
        }
        self.allocated = self.durable_len;
        Ok(())
    }

    /// Cuts the current segment's unused zeros off, durably, so that a segment the writer
    /// leaves (for the next one, or at a clean stop) is as long as its records. Returns
    /// whether it now is.
    fn trim(&mut self) -> bool {
        if self.allocated <= self.durable_len {
            return true;
        }
        match self
            .file
            .set_len(self.durable_len)
            .and_then(|_| self.file.sync_all())
        {
            Ok(()) => {
                self.allocated = self.durable_len;
                true
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot cut the segment's unused tail off");
                false
            }
        }
    }

    /// Starts the next segment: the ready spare renamed, or a new empty file. The current one
    /// is trimmed first; if that fails, writing goes on in it, into its zeros.
    fn rotate(&mut self) {
        if !self.trim() {
            return;
        }
        let path = segment::segment_path(&self.dir, self.next_number);
        let (opened, preallocated) = match self.spare.as_ref().and_then(|s| s.take(&path)) {
            Some(Ok(f)) => (Ok(f), true),
            Some(Err(e)) => {
                tracing::warn!(error = %e, "cannot use the spare segment; starting an empty one");
                (segment::open(&path), false)
            }
            None => (segment::open(&path), false),
        };
        match opened.and_then(|f| f.metadata().map(|m| (f, m.len()))) {
            Ok((f, len)) => {
                self.file = f;
                self.durable_len = 0;
                self.allocated = len;
                self.preallocated = preallocated;
                tracing::info!(path = %path.display(), preallocated, "journal segment started");
            }
            Err(e) => {
                tracing::warn!(error = %e, path = %path.display(), "cannot start a new segment; continuing the old one")
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_busy_batch_waits_out_the_window() {
        let w = Duration::from_micros(100);
        assert!(!holds_open(w, 1, 4096), "a lone buy is written at once");
        assert!(!holds_open(w, BUSY_BATCH - 1, 4096));
        assert!(holds_open(w, BUSY_BATCH, 4096));
        assert!(
            !holds_open(w, 4096, 4096),
            "a full batch is written at once"
        );
        assert!(
            !holds_open(Duration::ZERO, 100, 4096),
            "a zero window never waits"
        );
    }
}

//! The durable journal: the record of truth for orders and every stock change.
//!
//! - [`record`]: what is recorded and its checksummed frame;
//! - [`apply`]: what the journal asks of the state it keeps; [`error`]: its errors;
//! - `writer`: group commit on one thread, the point where an order becomes durable;
//! - [`recovery`]: journal snapshot restore and replay at start, torn-tail cut, refusal on
//!   corruption;
//! - [`snapshot`]: journal snapshots, the state as of a record number, written in the
//!   background; compaction;
//! - [`segment`]: segment files; [`spare`]: the next segment, zero-filled ahead;
//! - `fault`: I/O fault injection for tests, only with the cargo feature `fault-injection`
//!   (the tests turn it on; release builds leave it out).

pub mod apply;
pub mod audience;
pub mod error;
#[cfg(feature = "fault-injection")]
pub mod fault;
pub mod record;
pub mod recovery;
pub mod segment;
pub mod snapshot;
pub mod spare;
mod writer;

use std::path::PathBuf;
use std::sync::atomic::AtomicBool;
use std::sync::mpsc::{sync_channel, SyncSender, TrySendError};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use tokio::sync::oneshot;

pub use apply::{Apply, Mode};
pub use audience::{AudienceEvent, AudienceKind};
pub use error::JournalError;
#[cfg(feature = "fault-injection")]
pub use fault::Faults;
pub use record::{OrderRecord, Record, SkuDef, Ticket};
pub use recovery::Replayed;
pub use snapshot::{Capture, Sink};

/// Default time the writer holds a busy batch open for more records (when 16 or more records
/// queued during the last fsync; a quiet hub writes at once), so that each fsync answers more
/// buys without delaying a lone one. Measured in BENCHMARKS.md ("commit window").
pub const DEFAULT_COMMIT_WINDOW_US: u64 = 250;
/// [`DEFAULT_COMMIT_WINDOW_US`] as a duration.
pub const DEFAULT_COMMIT_WINDOW: Duration = Duration::from_micros(DEFAULT_COMMIT_WINDOW_US);
/// Default largest batch, in records.
pub const DEFAULT_MAX_BATCH: usize = 4096;
/// Default segment size before a new segment starts.
pub const DEFAULT_SEGMENT_BYTES: u64 = 64 << 20;
/// Records that may wait for the writer. When it is full, new buys get `unavailable` at once
/// (admission control) instead of queueing without bound.
pub const DEFAULT_QUEUE: usize = 64 * 1024;
/// Default records between snapshots. A restart replays at most about this many records
/// after restoring the newest snapshot (replay speed: BENCHMARKS.md, "restart").
pub const DEFAULT_SNAPSHOT_EVERY_RECORDS: u64 = 1_000_000;

/// How the journal writes.
#[derive(Debug, Clone)]
pub struct JournalOptions {
    /// The data dir; segments go in its `journal/` folder.
    pub data_dir: PathBuf,
    /// fdatasync each batch. Off only for benchmarks that measure its cost.
    pub fsync: bool,
    /// How long a busy batch is held open for more records ([`DEFAULT_COMMIT_WINDOW`]).
    pub commit_window: Duration,
    /// Largest batch, in records ([`DEFAULT_MAX_BATCH`]).
    pub max_batch: usize,
    /// Segment size before a new segment starts ([`DEFAULT_SEGMENT_BYTES`]).
    pub segment_bytes: u64,
    /// Records that may wait for the writer ([`DEFAULT_QUEUE`]).
    pub queue: usize,
    /// Records between journal snapshots; 0 takes none.
    pub snapshot_every_records: u64,
    /// Zero-fill the next segment ahead of use ([`spare`]), so that batches never change a
    /// segment's size and their fdatasync writes no inode. Only with `fsync` (without it there
    /// is no fdatasync to spare) and for segments up to [`spare::MAX_BYTES`].
    pub preallocate: bool,
    /// Delete old snapshots and the segments they cover after each snapshot. Off only in
    /// tests that compare a snapshot's restart with a full replay of every segment.
    pub compact: bool,
    /// Faults to inject into the journal's I/O (tests only).
    #[cfg(feature = "fault-injection")]
    pub faults: Arc<Faults>,
    /// What the writer does when it cannot go on safely: a failed batch could not be cut off
    /// the segment, so records whose buyers would be told they failed may be on disk. It then
    /// answers nobody and stops; this is called with the reason. The default logs it and exits
    /// the process (fail-stop): a restart replays what is on disk, and a buyer who retries the
    /// same `req` gets its order. Tests set their own.
    pub on_fatal: FatalHook,
}

/// See [`JournalOptions::on_fatal`].
#[derive(Clone)]
pub struct FatalHook(pub Arc<dyn Fn(&str) + Send + Sync>);

impl std::fmt::Debug for FatalHook {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("FatalHook")
    }
}

impl Default for FatalHook {
    fn default() -> Self {
        FatalHook(Arc::new(|reason: &str| {
            tracing::error!(
                reason,
                "journal: fail-stop; exiting so that a restart replays what is on disk"
            );
            eprintln!("livehub: journal fail-stop: {reason}");
            std::process::exit(EXIT_FAIL_STOP);
        }))
    }
}

/// The process's exit code when the journal stops it ([`JournalOptions::on_fatal`]).
pub const EXIT_FAIL_STOP: i32 = 75;

impl JournalOptions {
    /// The defaults, with the journal in `data_dir`.
    pub fn new(data_dir: impl Into<PathBuf>) -> Self {
        JournalOptions {
            data_dir: data_dir.into(),
            fsync: true,
            commit_window: DEFAULT_COMMIT_WINDOW,
            max_batch: DEFAULT_MAX_BATCH,
            segment_bytes: DEFAULT_SEGMENT_BYTES,
            queue: DEFAULT_QUEUE,
            snapshot_every_records: DEFAULT_SNAPSHOT_EVERY_RECORDS,
            preallocate: true,
            compact: true,
            #[cfg(feature = "fault-injection")]
            faults: Arc::default(),
            on_fatal: FatalHook::default(),
        }
    }
}

/// A handle to the journal. Cheap to share behind an `Arc`.
pub struct Journal {
    tx: SyncSender<writer::Msg>,
    thread: Mutex<Option<JoinHandle<()>>>,
    snapshot_thread: Mutex<Option<JoinHandle<()>>>,
    spare_thread: Mutex<Option<JoinHandle<()>>>,
}

impl Journal {
    /// Replays the journal in `opts.data_dir` through `apply`, then starts the writer.
    pub fn open(
        opts: &JournalOptions,
        apply: Arc<dyn Apply>,
    ) -> Result<(Journal, Replayed), JournalError> {
        let dir = segment::journal_dir(&opts.data_dir);
        std::fs::create_dir_all(&dir).map_err(|source| JournalError::Io {
            path: dir.clone(),
            source,
        })?;
        let replayed = recovery::replay(&dir, apply.as_ref())?;
        let (path, len) = match &replayed.last_segment {
            Some((p, len)) => (p.clone(), *len),
            None => (segment::segment_path(&dir, replayed.next_number), 0),
        };
        let opened = segment::open(&path).and_then(|f| f.metadata().map(|m| (f, m.len())));
        let (file, mut allocated) = opened.map_err(|source| JournalError::Io {
            path: path.clone(),
            source,
        })?;
        let wanted = opts.preallocate && opts.fsync;
        let preallocate = wanted && opts.segment_bytes <= spare::MAX_BYTES;
        if wanted && !preallocate {
            tracing::info!(
                segment_bytes = opts.segment_bytes,
                max = spare::MAX_BYTES,
                "segments this large are not zero-filled ahead; they grow by appends"
            );
        }
        if preallocate && allocated < opts.segment_bytes {
            match spare::zero_fill(&file, allocated, opts.segment_bytes) {
                Ok(()) => allocated = opts.segment_bytes,
                Err(e) => {
                    tracing::warn!(error = %e, path = %path.display(), "cannot preallocate the journal segment; it grows by appends");
                    allocated = file.metadata().map_or(allocated, |m| m.len());
                }
            }
        }
        let dir_for_err = dir.clone();
        let spawn_err = move |source| JournalError::Io {
            path: dir_for_err.clone(),
            source,
        };
        let (snapshots, snapshot_thread) = if opts.snapshot_every_records > 0 {
            let (tx, rx) = sync_channel(1);
            let idle = Arc::new(AtomicBool::new(true));
            let (d, i, c) = (dir.clone(), idle.clone(), opts.compact);
            let t = std::thread::Builder::new()
                .name("journal-snapshot".into())
                .spawn(move || snapshot::run(d, rx, i, c))
                .map_err(&spawn_err)?;
            (
                Some(writer::Snapshots {
                    tx,
                    idle,
                    every: opts.snapshot_every_records,
                    since: replayed.records,
                }),
                Some(t),
            )
        } else {
            (None, None)
        };
        let (spare, spare_thread) = if preallocate {
            let (s, t) =
                spare::Spare::start(dir.clone(), opts.segment_bytes).map_err(&spawn_err)?;
            (Some(s), Some(t))
        } else {
            (None, None)
        };
        let w = writer::Writer {
            dir,
            file,
            durable_len: len,
            allocated,
            preallocated: allocated >= opts.segment_bytes,
            spare,
            segment_bytes: opts.segment_bytes,
            next_number: replayed.next_number,
            seqs: replayed.seqs.clone(),
            fsync: opts.fsync,
            window: opts.commit_window,
            max_batch: opts.max_batch.max(1),
            #[cfg(feature = "fault-injection")]
            faults: opts.faults.clone(),
            apply,
            on_fatal: opts.on_fatal.clone(),
            snapshots,
        };
        let (tx, rx) = sync_channel(opts.queue.max(1));
        let thread = std::thread::Builder::new()
            .name("journal-writer".into())
            .spawn(move || w.run(rx))
            .map_err(&spawn_err)?;
        Ok((
            Journal {
                tx,
                thread: Mutex::new(Some(thread)),
                snapshot_thread: Mutex::new(snapshot_thread),
                spare_thread: Mutex::new(spare_thread),
            },
            replayed,
        ))
    }

    /// Queues a record. Fails at once when the queue is full or the writer stopped; the
    /// receiver answers when the record is durable (and applied) or refused.
    pub fn submit(
        &self,
        record: Record,
    ) -> Result<oneshot::Receiver<Result<Record, JournalError>>, JournalError> {
        let (done, rx) = oneshot::channel();
        match self
            .tx
            .try_send(writer::Msg::Append(writer::Pending { record, done }))
        {
            Ok(()) => Ok(rx),
            Err(TrySendError::Full(_)) => Err(JournalError::Busy),
            Err(TrySendError::Disconnected(_)) => Err(JournalError::Stopped),
        }
    }

    /// Makes one record durable and returns it as written (with its seq and number).
    pub async fn append(&self, record: Record) -> Result<Record, JournalError> {
        self.submit(record)?
            .await
            .map_err(|_| JournalError::Stopped)?
    }

    /// Writes what is queued, stops the writer and waits for it (and for a snapshot being
    /// written). Blocking.
    pub fn close(&self) {
        let _ = self.tx.send(writer::Msg::Stop);
        if let Some(t) = self.thread.lock().expect("journal thread lock").take() {
            let _ = t.join();
        }
        if let Some(t) = self
            .snapshot_thread
            .lock()
            .expect("snapshot thread lock")
            .take()
        {
            let _ = t.join();
        }
        if let Some(t) = self.spare_thread.lock().expect("spare thread lock").take() {
            let _ = t.join();
        }
    }
}

impl Drop for Journal {
    fn drop(&mut self) {
        self.close();
    }
}

//! The durable journal: the record of truth for orders and every stock change.
//!
//! - [`record`]: what is recorded and its checksummed frame;
//! - [`writer`]: group commit on one thread, the point where an order becomes durable;
//! - [`recovery`]: replay at start, torn-tail cut, refusal on corruption;
//! - [`segment`]: segment files; [`fault`]: I/O fault injection for tests.

pub mod fault;
pub mod record;
pub mod recovery;
pub mod segment;
mod writer;

use std::path::PathBuf;
use std::sync::mpsc::{sync_channel, SyncSender, TrySendError};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use tokio::sync::oneshot;

pub use fault::Faults;
pub use record::{OrderRecord, Record};
pub use recovery::Replayed;

/// Default time the writer waits for more records after the first of a batch.
pub const DEFAULT_COMMIT_WINDOW: Duration = Duration::from_micros(200);
/// Default largest batch, in records.
pub const DEFAULT_MAX_BATCH: usize = 4096;
/// Default segment size before a new segment starts.
pub const DEFAULT_SEGMENT_BYTES: u64 = 64 << 20;
/// Records that may wait for the writer. When it is full, new buys get `unavailable` at once
/// (admission control) instead of queueing without bound.
pub const DEFAULT_QUEUE: usize = 64 * 1024;

/// Whether a record is applied as it becomes durable or replayed at start-up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Just made durable; for an order, its reservation was made before.
    Live,
    /// Read back at start-up; nothing was reserved.
    Replay,
}

/// What the journal tells about each durable record, in journal order. Called on the writer
/// thread after the batch's fsync and before any waiter is released, so memory never shows a
/// record that is not durable, and shows them in the order of their `seq`.
pub trait Apply: Send + Sync + 'static {
    fn apply(&self, record: &Record, mode: Mode);
}

/// Journal errors.
#[derive(Debug, thiserror::Error)]
pub enum JournalError {
    #[error("journal unavailable: {0}")]
    Unavailable(String),
    #[error("journal queue is full")]
    Busy,
    #[error("journal stopped")]
    Stopped,
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("journal damaged in {path} at offset {offset}: {detail}; refusing to start so that no order is dropped silently")]
    Corrupt {
        path: PathBuf,
        offset: u64,
        detail: String,
    },
}

/// How the journal writes.
#[derive(Debug, Clone)]
pub struct JournalOptions {
    /// The data dir; segments go in its `journal/` folder.
    pub data_dir: PathBuf,
    /// fdatasync each batch. Off only for benchmarks that measure its cost.
    pub fsync: bool,
    pub commit_window: Duration,
    pub max_batch: usize,
    pub segment_bytes: u64,
    pub queue: usize,
    pub faults: Arc<Faults>,
}

impl JournalOptions {
    pub fn new(data_dir: impl Into<PathBuf>) -> Self {
        JournalOptions {
            data_dir: data_dir.into(),
            fsync: true,
            commit_window: DEFAULT_COMMIT_WINDOW,
            max_batch: DEFAULT_MAX_BATCH,
            segment_bytes: DEFAULT_SEGMENT_BYTES,
            queue: DEFAULT_QUEUE,
            faults: Arc::default(),
        }
    }
}

/// A handle to the journal. Cheap to share behind an `Arc`.
pub struct Journal {
    tx: SyncSender<writer::Msg>,
    thread: Mutex<Option<JoinHandle<()>>>,
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
        let file = segment::open_for_append(&path).map_err(|source| JournalError::Io {
            path: path.clone(),
            source,
        })?;
        let w = writer::Writer {
            dir,
            file,
            durable_len: len,
            segment_bytes: opts.segment_bytes,
            next_number: replayed.next_number,
            seqs: replayed.seqs.clone(),
            fsync: opts.fsync,
            window: opts.commit_window,
            max_batch: opts.max_batch.max(1),
            faults: opts.faults.clone(),
            apply,
            damaged: false,
        };
        let (tx, rx) = sync_channel(opts.queue.max(1));
        let thread = std::thread::Builder::new()
            .name("journal-writer".into())
            .spawn(move || w.run(rx))
            .map_err(|source| JournalError::Io {
                path: path.clone(),
                source,
            })?;
        Ok((
            Journal {
                tx,
                thread: Mutex::new(Some(thread)),
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

    /// Writes what is queued, stops the writer and waits for it. Blocking.
    pub fn close(&self) {
        let _ = self.tx.send(writer::Msg::Stop);
        if let Some(t) = self.thread.lock().expect("journal thread lock").take() {
            let _ = t.join();
        }
    }
}

impl Drop for Journal {
    fn drop(&mut self) {
        self.close();
    }
}

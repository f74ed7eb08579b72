//! What the journal asks of the state it keeps: to apply each durable record, and to capture
//! and restore itself for journal snapshots.

use super::record::Record;
use super::snapshot::Capture;

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
    /// Makes `record`'s change in memory: just made durable, or replayed (`mode`). `Err`
    /// says why the record cannot be placed (an order of a room or SKU this state does not
    /// hold): replay then refuses to start, naming the file and offset, rather than drop it.
    fn apply(&self, record: &Record, mode: Mode) -> Result<(), String>;

    /// A consistent picture of the durable state after every record applied so far, for a
    /// snapshot. Called on the writer thread between batches, so it must be cheap (it stalls
    /// the buy path while it runs); the expensive part belongs in [`Capture::encode`].
    /// `None`: this state takes no snapshots.
    fn capture(&self) -> Option<Box<dyn Capture>> {
        None
    }

    /// Installs a snapshot's state (what [`Capture::encode`] wrote) into this state, which has
    /// seen no record yet. On `Err` nothing was changed, so recovery can try an older snapshot.
    fn restore(&self, state: &[u8]) -> Result<(), String> {
        let _ = state;
        Err("this state does not restore snapshots".into())
    }
}

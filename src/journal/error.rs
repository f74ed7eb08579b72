//! The journal's errors.

use std::path::PathBuf;

/// Journal errors.
#[derive(Debug, thiserror::Error)]
pub enum JournalError {
    /// A batch could not be written or synced: its records were not made durable.
    #[error("journal unavailable: {0}")]
    Unavailable(String),
    /// The writer's queue is full (admission control); nothing was queued.
    #[error("journal queue is full")]
    Busy,
    /// The writer has stopped; nothing was queued.
    #[error("journal stopped")]
    Stopped,
    /// A file of the journal could not be opened, read or written at start.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// What the OS said.
        source: std::io::Error,
    },
    /// Recovery cannot rebuild the state without losing orders; the reason names the files.
    #[error("{0}")]
    Unrecoverable(String),
    /// Damage that is no torn tail (a bad frame before a good one, a gap in the numbering):
    /// recovery refuses to start.
    #[error("journal damaged in {path} at offset {offset}: {detail}; refusing to start so that no order is dropped silently")]
    Corrupt {
        /// The segment.
        path: PathBuf,
        /// Where in it the damage starts.
        offset: u64,
        /// What is wrong with it.
        detail: String,
    },
}

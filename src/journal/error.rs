//! The journal's errors.

use std::path::PathBuf;

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
    #[error("{0}")]
    Unrecoverable(String),
    #[error("journal damaged in {path} at offset {offset}: {detail}; refusing to start so that no order is dropped silently")]
    Corrupt {
        path: PathBuf,
        offset: u64,
        detail: String,
    },
}

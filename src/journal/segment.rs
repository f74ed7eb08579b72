//! Segment files: `journal/<first record number, 20 digits>.seg`, appended to in order.

use std::fs::{self, File, OpenOptions};
use std::io;
use std::path::{Path, PathBuf};

/// The journal's folder inside the data dir.
pub fn journal_dir(data_dir: &Path) -> PathBuf {
    data_dir.join("journal")
}

/// The path of the segment whose first record is `first_number`.
pub fn segment_path(dir: &Path, first_number: u64) -> PathBuf {
    dir.join(format!("{first_number:020}.seg"))
}

/// The segments in `dir`, oldest first.
pub fn list(dir: &Path) -> io::Result<Vec<PathBuf>> {
    let mut v: Vec<PathBuf> = fs::read_dir(dir)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "seg"))
        .collect();
    v.sort();
    Ok(v)
}

/// Opens a segment for writing, creating it if needed, and makes its directory entry durable.
/// Not in append mode: the writer writes at its own offset, inside a preallocated file's
/// length ([`super::spare`]) or past its end.
pub fn open(path: &Path) -> io::Result<File> {
    let created = !path.exists();
    let f = OpenOptions::new()
        .create(true)
        .write(true)
        .truncate(false)
        .open(path)?;
    if created {
        if let Some(dir) = path.parent() {
            File::open(dir)?.sync_all()?;
        }
    }
    Ok(f)
}

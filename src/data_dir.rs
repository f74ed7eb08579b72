//! The data dir's own files besides the journal: the generated secrets, and the marker of the
//! mode that wrote it. Each is written durably (a temp file, fsync, rename, and an fsync of the
//! directory), and the data dir itself is made durably, so that a power cut right after the
//! first start never loses a secret that was already printed or a marker already relied on.

use std::io::Write;
use std::path::{Path, PathBuf};

/// The file that names the mode that wrote the data dir.
pub const MODE_FILE: &str = "mode";

/// Which kind of hub a data dir belongs to. The two journals are not interchangeable: an
/// embedded hub's journal holds its rooms and SKUs, a fleet hub's only its orders (the rooms
/// and SKUs are in Redis).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HubMode {
    /// Rooms, stock and orders in this process and its journal (no `--redis`).
    Embedded,
    /// Fleet mode (`--redis`): rooms and stock in Redis, orders in this journal.
    Fleet,
}

impl HubMode {
    fn as_str(self) -> &'static str {
        match self {
            HubMode::Embedded => "embedded",
            HubMode::Fleet => "fleet",
        }
    }

    fn parse(s: &str) -> Option<HubMode> {
        match s.trim() {
            "embedded" => Some(HubMode::Embedded),
            "fleet" => Some(HubMode::Fleet),
            _ => None,
        }
    }
}

/// Makes `dir` (and its missing parents), fsyncing each new directory's parent so that the
/// new entries survive a power cut.
pub fn create(dir: &Path) -> std::io::Result<()> {
    let mut missing: Vec<PathBuf> = Vec::new();
    let mut at = Some(dir);
    while let Some(d) = at {
        if d.as_os_str().is_empty() || d.exists() {
            break;
        }
        missing.push(d.to_path_buf());
        at = d.parent();
    }
    std::fs::create_dir_all(dir)?;
    for d in missing.iter().rev() {
        sync_parent(d)?;
    }
    Ok(())
}

/// Writes `contents` to `path` durably: a temp file beside it, fsync, rename, fsync of the
/// directory. `private` files are readable by their owner only.
pub fn write_durably(path: &Path, contents: &[u8], private: bool) -> std::io::Result<()> {
    let tmp = path.with_extension("tmp");
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create(true).truncate(true);
    #[cfg(unix)]
    if private {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o600);
    }
    #[cfg(not(unix))]
    let _ = private;
    let mut f = opts.open(&tmp)?;
    f.write_all(contents)?;
    f.sync_all()?;
    drop(f);
    std::fs::rename(&tmp, path)?;
    sync_parent(path)
}

/// fsyncs the directory that holds `path`.
fn sync_parent(path: &Path) -> std::io::Result<()> {
    let parent = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    std::fs::File::open(parent)?.sync_all()
}

/// The value `given`, or the one stored in `data_dir/file`, or a new random one generated and
/// stored there (readable by the owner only). The flag is whether it was generated now.
pub fn secret_or_generate(
    given: &Option<String>,
    data_dir: &Path,
    file: &str,
) -> std::io::Result<(String, bool)> {
    if let Some(v) = given {
        return Ok((v.clone(), false));
    }
    let path = data_dir.join(file);
    if let Ok(v) = std::fs::read_to_string(&path) {
        let v = v.trim().to_owned();
        if !v.is_empty() {
            return Ok((v, false));
        }
    }
    create(data_dir)?;
    let v = crate::auth::random_token();
    write_durably(&path, v.as_bytes(), true)?;
    Ok((v, true))
}

/// Checks that `data_dir` was written by a hub of `mode`. Another mode is refused with what to
/// do: replaying an embedded journal in fleet mode, or a fleet journal without Redis, would
/// misplace or drop acknowledged orders. `Ok(false)`: the data dir has no marker yet (it is
/// new, or from before the marker); [`mark`] it once the hub has opened it.
pub fn check(data_dir: &Path, mode: HubMode) -> Result<bool, String> {
    let path = data_dir.join(MODE_FILE);
    match std::fs::read_to_string(&path) {
        Ok(s) => match HubMode::parse(&s) {
            Some(m) if m == mode => Ok(true),
            Some(HubMode::Fleet) => Err(format!(
                "{} was written by a hub in fleet mode (--redis): its journal holds orders of \
                 rooms and SKUs kept in Redis. Start it with --redis URL (and its --hub-id), \
                 or give an embedded hub a fresh --data-dir",
                data_dir.display()
            )),
            Some(HubMode::Embedded) => Err(format!(
                "{} was written by an embedded hub (without --redis): its rooms, SKUs and \
                 orders are in its own journal, not in Redis. Start it without --redis, or give \
                 a fleet hub a fresh --data-dir",
                data_dir.display()
            )),
            None => Err(format!(
                "{}: unknown mode {:?}; expected \"embedded\" or \"fleet\"",
                path.display(),
                s.trim()
            )),
        },
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(format!("cannot read {}: {e}", path.display())),
    }
}

/// Marks `data_dir` as written by a hub of `mode`.
pub fn mark(data_dir: &Path, mode: HubMode) -> Result<(), String> {
    let path = data_dir.join(MODE_FILE);
    create(data_dir)
        .and_then(|()| write_durably(&path, mode.as_str().as_bytes(), false))
        .map_err(|e| format!("cannot mark the data dir {}: {e}", path.display()))
}

/// [`check`], then [`mark`] when there was no marker.
pub fn claim(data_dir: &Path, mode: HubMode) -> Result<(), String> {
    if !check(data_dir, mode)? {
        mark(data_dir, mode)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_data_dir_keeps_the_mode_that_wrote_it() {
        let d = tempfile::tempdir().unwrap();
        let dir = d.path().join("a/b");
        claim(&dir, HubMode::Embedded).unwrap();
        claim(&dir, HubMode::Embedded).unwrap();
        let e = claim(&dir, HubMode::Fleet).unwrap_err();
        assert!(
            e.contains("embedded hub") && e.contains("without --redis"),
            "{e}"
        );
        let d2 = tempfile::tempdir().unwrap();
        claim(d2.path(), HubMode::Fleet).unwrap();
        let e = claim(d2.path(), HubMode::Embedded).unwrap_err();
        assert!(e.contains("fleet mode") && e.contains("--redis URL"), "{e}");
        std::fs::write(d2.path().join(MODE_FILE), "sharded").unwrap();
        assert!(claim(d2.path(), HubMode::Fleet)
            .unwrap_err()
            .contains("unknown mode"));
    }

    #[test]
    fn a_secret_is_generated_once_and_kept_private() {
        let d = tempfile::tempdir().unwrap();
        let dir = d.path().join("new");
        let (a, generated) = secret_or_generate(&None, &dir, "s.secret").unwrap();
        assert!(generated && !a.is_empty());
        let (b, generated) = secret_or_generate(&None, &dir, "s.secret").unwrap();
        assert_eq!((a.as_str(), generated), (b.as_str(), false));
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(dir.join("s.secret"))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        assert!(!dir.join("s.tmp").exists(), "no temp file left");
    }
}

//! The node's staging area, `uploads/` in the data directory: bytes on their way into the
//! region's store (a session's chunks, a single-request push, a fetch from another
//! region) accumulate here, hashed as they arrive, whatever store commits them after.

use super::{modified_ms, Leftover};
use std::path::{Path, PathBuf};

pub(super) struct Staging {
    dir: PathBuf,
}

impl Staging {
    /// Opens (creating) the area. Single-request uploads and fetches from other regions
    /// cannot resume after a restart (their hash state was in memory): their partial files
    /// are garbage and go now. Sessions' files stay: a session resumes.
    pub(super) fn open(dir: PathBuf) -> std::io::Result<Staging> {
        std::fs::create_dir_all(&dir)?;
        for entry in std::fs::read_dir(&dir)? {
            let entry = entry?;
            let name = entry.file_name();
            let name = name.to_string_lossy();
            if name.starts_with("direct-") || name.starts_with("fetch-") {
                std::fs::remove_file(entry.path())?;
            }
        }
        Ok(Staging { dir })
    }

    pub(super) fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    pub(super) async fn discard(&self, path: &Path) {
        if let Err(e) = tokio::fs::remove_file(path).await {
            if e.kind() != std::io::ErrorKind::NotFound {
                tracing::warn!(path = %path.display(), error = %e, "could not remove upload file");
            }
        }
    }

    /// The staged files, for the sweep.
    pub(super) fn leftovers(&self, out: &mut Vec<Leftover>) -> std::io::Result<()> {
        files_in(&self.dir, false, out)
    }
}

/// Every file directly in `dir` (none when it does not exist), as leftovers.
pub(super) fn files_in(dir: &Path, quarantined: bool, out: &mut Vec<Leftover>) -> std::io::Result<()> {
    for entry in read_dir_if_exists(dir)? {
        let entry = entry?;
        let meta = match entry.metadata() {
            Ok(m) => m,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(e),
        };
        if !meta.is_file() {
            continue;
        }
        out.push(Leftover {
            path: entry.path(),
            name: entry.file_name().to_string_lossy().to_string(),
            size: meta.len(),
            modified_ms: modified_ms(&meta),
            quarantined,
        });
    }
    Ok(())
}

/// Removes a file, already gone counting as removed.
pub(super) fn remove_file_if_present(path: &Path) -> std::io::Result<()> {
    match std::fs::remove_file(path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

/// The entries of `dir`, none when it does not exist.
pub(super) fn read_dir_if_exists(dir: &Path) -> std::io::Result<Box<dyn Iterator<Item = std::io::Result<std::fs::DirEntry>>>> {
    match std::fs::read_dir(dir) {
        Ok(entries) => Ok(Box::new(entries)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Box::new(std::iter::empty())),
        Err(e) => Err(e),
    }
}

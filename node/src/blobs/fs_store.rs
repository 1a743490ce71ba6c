//! Content-addressed filesystem blob store: `blobs/<algorithm>/<first two hex>/<hex>`
//! on this node's disk, committed by rename.

use super::pins::{BlobPins, Pin};
use super::staging::{files_in, read_dir_if_exists, remove_file_if_present, Staging};
use super::store::{modified_ms, BlobReader, BlobStore, Leftover, StoredBlob};
use super::BlobError;
use meridian_replication::Digest;
use std::path::{Path, PathBuf};
use std::sync::Arc;

#[derive(Clone)]
pub struct FsBlobStore {
    blobs_dir: PathBuf,
    staging: Arc<Staging>,
    pins: Arc<BlobPins>,
}

impl FsBlobStore {
    pub fn open(data_dir: &Path) -> Result<FsBlobStore, BlobError> {
        let blobs_dir = data_dir.join("blobs");
        std::fs::create_dir_all(&blobs_dir)?;
        let staging = Arc::new(Staging::open(data_dir.join("uploads"))?);
        Ok(FsBlobStore { blobs_dir, staging, pins: Arc::default() })
    }

    /// Where the blob's file is (for offline tools that fill a store, like `meridian-load`).
    pub fn blob_path(&self, digest: &Digest) -> PathBuf {
        let hex = digest.hex();
        self.blobs_dir.join(digest.algorithm().name()).join(&hex[..2]).join(hex)
    }

    /// Where the sweep puts files it is about to delete (a crash leaves them there; the
    /// next sweep empties it).
    fn trash_dir(&self) -> PathBuf {
        self.blobs_dir.with_file_name("gc-trash")
    }

    fn quarantine_dir(&self) -> PathBuf {
        self.blobs_dir.with_file_name("quarantine")
    }
}

#[async_trait::async_trait]
impl BlobStore for FsBlobStore {
    async fn size(&self, digest: &Digest) -> Result<Option<u64>, BlobError> {
        match tokio::fs::metadata(self.blob_path(digest)).await {
            Ok(m) => Ok(Some(m.len())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    async fn open(&self, digest: &Digest) -> Result<Option<BlobReader>, BlobError> {
        let file = match tokio::fs::File::open(self.blob_path(digest)).await {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e.into()),
        };
        let size = file.metadata().await?.len();
        Ok(Some(BlobReader::File { file: file.into_std().await, size }))
    }

    async fn commit(&self, written: &Path, digest: &Digest) -> Result<(), BlobError> {
        let target = self.blob_path(digest);
        let written = written.to_path_buf();
        tokio::task::spawn_blocking(move || -> Result<(), BlobError> {
            let dir = target.parent().ok_or_else(|| std::io::Error::other("blob path has no parent"))?;
            std::fs::create_dir_all(dir)?;
            match std::fs::File::options().write(true).open(&target) {
                // Already stored: keep that copy, marked used now (as `touch` does).
                Ok(existing) => {
                    existing.set_modified(std::time::SystemTime::now())?;
                    std::fs::remove_file(&written)?;
                    return Ok(());
                }
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(e.into()),
            }
            crate::failpoints::io("blob-rename")?;
            std::fs::rename(&written, &target)?;
            std::fs::File::open(dir)?.sync_all()?;
            Ok(())
        })
        .await
        .map_err(|e| BlobError::Io(std::io::Error::other(e.to_string())))?
    }

    /// Moves the file to `quarantine/`.
    async fn quarantine(&self, digest: &Digest) -> Result<(), BlobError> {
        let dir = self.quarantine_dir();
        tokio::fs::create_dir_all(&dir).await?;
        let target = dir.join(format!("{}-{}-{}", digest.algorithm().name(), digest.hex(), uuid::Uuid::new_v4()));
        tokio::fs::rename(self.blob_path(digest), &target).await?;
        // Kept for inspection for the garbage-collection grace from now (a rename keeps
        // the old modification time).
        if let Ok(f) = std::fs::File::options().write(true).open(&target) {
            let _ = f.set_modified(std::time::SystemTime::now());
        }
        Ok(())
    }

    /// The file's modification time is the mark (garbage collection reads it with the
    /// stat it makes anyway: no index).
    async fn touch(&self, digest: &Digest) -> Result<bool, BlobError> {
        // One small syscall: not worth a trip to the blocking pool.
        match std::fs::File::options().write(true).open(self.blob_path(digest)) {
            Ok(f) => {
                f.set_modified(std::time::SystemTime::now())?;
                Ok(true)
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(e.into()),
        }
    }

    fn stat(&self, digest: &Digest) -> std::io::Result<Option<StoredBlob>> {
        match std::fs::metadata(self.blob_path(digest)) {
            Ok(m) => Ok(Some(StoredBlob { digest: digest.clone(), size: m.len(), modified_ms: modified_ms(&m) })),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    }

    fn pin(&self, digests: Vec<String>) -> Pin {
        self.pins.pin(digests)
    }

    fn unless_pinned(&self, digest: &Digest, f: &mut dyn FnMut()) -> bool {
        self.pins.unless_pinned(&digest.to_string(), f).is_some()
    }

    /// Walks the tree one directory at a time; files whose names are not a digest are
    /// left out.
    fn for_each_stored_blob(&self, f: &mut dyn FnMut(StoredBlob)) -> std::io::Result<()> {
        for alg in read_dir_if_exists(&self.blobs_dir)? {
            let alg = alg?;
            for prefix in read_dir_if_exists(&alg.path())? {
                let prefix = prefix?;
                for file in read_dir_if_exists(&prefix.path())? {
                    let file = file?;
                    let name = format!("{}:{}", alg.file_name().to_string_lossy(), file.file_name().to_string_lossy());
                    let Ok(digest) = Digest::parse(&name) else { continue };
                    let meta = match file.metadata() {
                        Ok(m) => m,
                        // Removed meanwhile (another sweep, a quarantine): not ours to list.
                        Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                        Err(e) => return Err(e),
                    };
                    f(StoredBlob { digest, size: meta.len(), modified_ms: modified_ms(&meta) });
                }
            }
        }
        Ok(())
    }

    /// Under the pin lock the file is only renamed out of the store (quick); freeing a
    /// large file's blocks happens after, so pins taken on the async workers never wait
    /// for it.
    fn remove_unneeded(&self, digest: &Digest, unneeded: &mut dyn FnMut() -> bool) -> std::io::Result<Option<u64>> {
        let path = self.blob_path(digest);
        let trash = self.trash_dir();
        let moved = self
            .pins
            .unless_pinned(&digest.to_string(), || -> std::io::Result<Option<(PathBuf, u64)>> {
                if !unneeded() {
                    return Ok(None);
                }
                let size = match std::fs::metadata(&path) {
                    Ok(m) => m.len(),
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
                    Err(e) => return Err(e),
                };
                std::fs::create_dir_all(&trash)?;
                let target = trash.join(format!("{}-{}", digest.hex(), uuid::Uuid::new_v4()));
                std::fs::rename(&path, &target)?;
                Ok(Some((target, size)))
            })
            .unwrap_or(Ok(None))?;
        match moved {
            Some((target, size)) => {
                // A reader that already opened the file keeps reading it (POSIX unlink).
                std::fs::remove_file(&target)?;
                Ok(Some(size))
            }
            None => Ok(None),
        }
    }

    /// Files under `uploads/`, `quarantine/` and `gc-trash/`.
    fn leftovers(&self) -> std::io::Result<Vec<Leftover>> {
        let mut out = Vec::new();
        self.staging.leftovers(&mut out)?;
        files_in(&self.quarantine_dir(), true, &mut out)?;
        files_in(&self.trash_dir(), true, &mut out)?;
        Ok(out)
    }

    fn remove_leftover(&self, leftover: &Leftover) -> std::io::Result<()> {
        remove_file_if_present(&leftover.path)
    }

    fn staging_path(&self, name: &str) -> PathBuf {
        self.staging.path(name)
    }

    async fn discard(&self, path: &Path) {
        self.staging.discard(path).await
    }
}

//! Content-addressed filesystem blob store.

use super::BlobError;
use meridian_replication::Digest;
use std::path::{Path, PathBuf};

#[derive(Clone)]
pub struct FsBlobStore {
    blobs_dir: PathBuf,
    uploads_dir: PathBuf,
}

impl FsBlobStore {
    pub fn open(data_dir: &Path) -> Result<FsBlobStore, BlobError> {
        let blobs_dir = data_dir.join("blobs");
        let uploads_dir = data_dir.join("uploads");
        std::fs::create_dir_all(&blobs_dir)?;
        std::fs::create_dir_all(&uploads_dir)?;
        // Single-request uploads and fetches from other regions cannot resume after a
        // restart (their hash state was in memory): their partial files are garbage.
        for entry in std::fs::read_dir(&uploads_dir)? {
            let entry = entry?;
            let name = entry.file_name();
            let name = name.to_string_lossy();
            if name.starts_with("direct-") || name.starts_with("fetch-") {
                std::fs::remove_file(entry.path())?;
            }
        }
        Ok(FsBlobStore { blobs_dir, uploads_dir })
    }

    pub fn blob_path(&self, digest: &Digest) -> PathBuf {
        let hex = digest.hex();
        self.blobs_dir.join(digest.algorithm().name()).join(&hex[..2]).join(hex)
    }

    /// Where a session's (or a single-request upload's) bytes accumulate.
    pub fn upload_path(&self, id: &str) -> PathBuf {
        self.uploads_dir.join(id)
    }

    pub fn uploads_dir(&self) -> &Path {
        &self.uploads_dir
    }

    /// Size of the stored blob, if this region holds it.
    pub async fn size(&self, digest: &Digest) -> Result<Option<u64>, BlobError> {
        match tokio::fs::metadata(self.blob_path(digest)).await {
            Ok(m) => Ok(Some(m.len())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    pub async fn open_blob(&self, digest: &Digest) -> Result<Option<tokio::fs::File>, BlobError> {
        match tokio::fs::File::open(self.blob_path(digest)).await {
            Ok(f) => Ok(Some(f)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    /// Moves a fully written, fsynced and digest-checked file into place under `digest`
    /// and makes the rename durable. When the blob is already stored (same digest, so
    /// same bytes) the new copy is discarded.
    pub async fn commit(&self, written: &Path, digest: &Digest) -> Result<(), BlobError> {
        let target = self.blob_path(digest);
        let written = written.to_path_buf();
        tokio::task::spawn_blocking(move || -> Result<(), BlobError> {
            let dir = target.parent().ok_or_else(|| std::io::Error::other("blob path has no parent"))?;
            std::fs::create_dir_all(dir)?;
            if target.exists() {
                std::fs::remove_file(&written)?;
                return Ok(());
            }
            crate::failpoints::io("blob-rename")?;
            std::fs::rename(&written, &target)?;
            std::fs::File::open(dir)?.sync_all()?;
            Ok(())
        })
        .await
        .map_err(|e| BlobError::Io(std::io::Error::other(e.to_string())))?
    }

    /// Moves a stored blob whose bytes no longer match its digest out of the store (to
    /// `quarantine/`, kept for inspection), so this region stops serving it and fetches
    /// a good copy when it is next needed.
    pub async fn quarantine(&self, digest: &Digest) -> Result<(), BlobError> {
        let dir = self.blobs_dir.with_file_name("quarantine");
        tokio::fs::create_dir_all(&dir).await?;
        let target = dir.join(format!("{}-{}-{}", digest.algorithm().name(), digest.hex(), uuid::Uuid::new_v4()));
        tokio::fs::rename(self.blob_path(digest), target).await?;
        Ok(())
    }

    /// Removes a file from the uploads area (cancelled or refused upload).
    pub async fn discard(&self, path: &Path) {
        if let Err(e) = tokio::fs::remove_file(path).await {
            if e.kind() != std::io::ErrorKind::NotFound {
                tracing::warn!(path = %path.display(), error = %e, "could not remove upload file");
            }
        }
    }
}

//! The region's blob store and the upload sessions that feed it.
//!
//! Layout under the data directory: `blobs/<algorithm>/<first two hex>/<hex>` holds
//! verified blobs; `uploads/<uuid>` holds the bytes of sessions in progress. A blob
//! appears under its digest only by an atomic rename of a fully written, fsynced and
//! hash-checked file, so a reader never sees a partial blob.

mod fs_store;
pub mod pins;
mod store;
#[cfg(test)]
mod store_suite;
pub mod uploads;
mod writer;

pub use fs_store::{modified_ms, FsBlobStore, Leftover, StoredBlob};
pub use store::{BlobReader, BlobStore, Blobs};
pub use writer::{stream_to_file, BlobCap, WriteError, WriteOutcome};

#[derive(Debug, thiserror::Error)]
pub enum BlobError {
    #[error("blob store I/O: {0}")]
    Io(#[from] std::io::Error),
}

/// Feeds a whole file to `hasher` (used when a running hash must be rebuilt or a
/// different algorithm was asked for at the end of an upload).
pub async fn hash_file(
    path: std::path::PathBuf,
    mut hasher: meridian_replication::DigestHasher,
) -> Result<meridian_replication::DigestHasher, BlobError> {
    tokio::task::spawn_blocking(move || -> std::io::Result<meridian_replication::DigestHasher> {
        use std::io::Read;
        let mut f = std::fs::File::open(path)?;
        let mut buf = vec![0u8; 1 << 20];
        loop {
            let n = f.read(&mut buf)?;
            if n == 0 {
                return Ok(hasher);
            }
            hasher.update(&buf[..n]);
        }
    })
    .await
    .map_err(|e| std::io::Error::other(e.to_string()))?
    .map_err(BlobError::from)
}

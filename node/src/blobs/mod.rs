//! The region's blob store and the upload sessions that feed it.
//!
//! `store.rs` is the seam (`BlobStore`); two stores sit behind it. The filesystem store
//! keeps `blobs/<algorithm>/<first two hex>/<hex>` under the data directory; the S3 store
//! keeps `<prefix>/blobs/<algorithm>/<hex>` in a bucket. Both take bytes from the local
//! staging area (`uploads/<uuid>`: sessions in progress, single-request pushes, fetches
//! from other regions), and a blob appears under its digest only once fully written,
//! hash-checked and committed (an atomic rename; a completed upload of the object), so a
//! reader never sees a partial blob.

mod fs_store;
pub mod pins;
mod read;
mod s3_store;
mod staging;
mod store;
#[cfg(test)]
mod store_suite;
pub mod uploads;
mod writer;

pub use fs_store::FsBlobStore;
pub use s3_store::S3BlobStore;
pub use store::{modified_ms, BlobReader, BlobStore, Blobs, Leftover, StoredBlob};
pub use writer::{stream_to_file, BlobCap, BlobFile, WriteError, WriteOutcome};

#[derive(Debug, thiserror::Error)]
pub enum BlobError {
    #[error("blob store I/O: {0}")]
    Io(#[from] std::io::Error),
    /// The region's object store failed or did not answer: pushes get 503 and retry.
    #[error("object store: {0}")]
    ObjectStore(#[from] object_store::Error),
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

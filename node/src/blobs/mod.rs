//! The region's blob store and the upload sessions that feed it.
//!
//! Layout under the data directory: `blobs/<algorithm>/<first two hex>/<hex>` holds
//! verified blobs; `uploads/<uuid>` holds the bytes of sessions in progress. A blob
//! appears under its digest only by an atomic rename of a fully written, fsynced and
//! hash-checked file, so a reader never sees a partial blob.

mod fs_store;
pub mod uploads;
mod writer;

pub use fs_store::FsBlobStore;
pub use writer::{stream_to_file, WriteError, WriteOutcome};

#[derive(Debug, thiserror::Error)]
pub enum BlobError {
    #[error("blob store I/O: {0}")]
    Io(#[from] std::io::Error),
}

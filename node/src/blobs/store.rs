//! The seam between the registry and where a region keeps blob bytes.
//!
//! Everything above `blobs/` (the registry, replication, the blob transfer service,
//! garbage collection) holds a `Blobs` (`Arc<dyn BlobStore>`) and never a concrete
//! store, so a region can keep its blobs on its own disk (`FsBlobStore`) or, per issue
//! 14, in an object store. Bytes on their way in are staged in the node's local upload
//! area (`uploads/` in the data directory: a session's chunks, a single-request push, a
//! fetch from another region), hashed as they arrive, and `commit` makes a verified staged
//! file visible under its digest, atomically: a reader never sees a partial blob.

use super::pins::Pin;
use super::{BlobError, Leftover, StoredBlob};
use meridian_replication::Digest;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// The region's blob store, as every caller holds it.
pub type Blobs = Arc<dyn BlobStore>;

/// A stored blob opened for reading.
pub enum BlobReader {
    /// A file on this node's disk: served with positioned reads.
    File { file: std::fs::File, size: u64 },
}

impl BlobReader {
    pub fn size(&self) -> u64 {
        match self {
            BlobReader::File { size, .. } => *size,
        }
    }
}

#[async_trait::async_trait]
pub trait BlobStore: Send + Sync {
    /// Size of the stored blob, if this region holds it.
    async fn size(&self, digest: &Digest) -> Result<Option<u64>, BlobError>;

    /// The stored blob's bytes, if this region holds it.
    async fn open(&self, digest: &Digest) -> Result<Option<BlobReader>, BlobError>;

    /// Makes a staged file (fully written, fsynced and checked against `digest`) visible
    /// under `digest`, durably. When the blob is already stored (same digest, same bytes)
    /// the staged copy is discarded.
    async fn commit(&self, staged: &Path, digest: &Digest) -> Result<(), BlobError>;

    /// Takes a stored blob whose bytes no longer match its digest out of service (kept
    /// aside for inspection), so this region fetches a good copy when next needed.
    async fn quarantine(&self, digest: &Digest) -> Result<(), BlobError>;

    /// Marks the blob as used here now: garbage collection keeps a blob linked into a
    /// repository for the upload grace from then (blocking, small).
    fn touch(&self, digest: &Digest) -> std::io::Result<()>;

    /// The stored blob as garbage collection sees it (size, when last written or
    /// touched), if this region holds it (blocking, small).
    fn stat(&self, digest: &Digest) -> std::io::Result<Option<StoredBlob>>;

    /// Keeps garbage collection off `digests` until the returned pin is dropped.
    fn pin(&self, digests: Vec<String>) -> Pin;

    /// Runs `f` under the pin lock unless `digest` is pinned; false when it is.
    fn unless_pinned(&self, digest: &Digest, f: &mut dyn FnMut()) -> bool;

    /// Calls `f` with every stored blob, streaming (blocking; memory stays flat however
    /// many blobs there are).
    fn for_each_stored_blob(&self, f: &mut dyn FnMut(StoredBlob)) -> std::io::Result<()>;

    /// Removes the blob unless it is pinned or `unneeded` (run under the pin lock, after
    /// the caller's own checks) says it is needed after all. Returns the bytes freed;
    /// `None` when it stayed (blocking).
    fn remove_unneeded(&self, digest: &Digest, unneeded: &mut dyn FnMut() -> bool) -> std::io::Result<Option<u64>>;

    /// Staged files and blobs taken aside (quarantined, or on their way out), for the
    /// sweep to clean up (blocking).
    fn leftovers(&self) -> std::io::Result<Vec<Leftover>>;

    /// Where a staged upload or fetch named `name` accumulates on this node.
    fn staging_path(&self, name: &str) -> PathBuf;

    /// Removes a staged file (a cancelled, refused or failed upload or fetch).
    async fn discard(&self, staged: &Path);
}

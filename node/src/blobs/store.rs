//! The seam between the registry and where a region keeps blob bytes.
//!
//! Everything above `blobs/` (the registry, replication, the blob transfer service,
//! garbage collection) holds a `Blobs` (`Arc<dyn BlobStore>`) and never a concrete
//! store, so a region can keep its blobs on its own disk (`FsBlobStore`) or in an
//! S3-compatible object store (`S3BlobStore`). Bytes on their way in are staged in the
//! node's local upload area (`uploads/` in the data directory: a session's chunks, a
//! single-request push, a fetch from another region), hashed as they arrive, and `commit`
//! makes a verified staged file visible under its digest, atomically: a reader never sees
//! a partial blob.

use super::pins::Pin;
use super::BlobError;
use bytes::Bytes;
use meridian_replication::Digest;
use futures::stream::BoxStream;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// A stored blob as garbage collection sees it.
#[derive(Debug, Clone)]
pub struct StoredBlob {
    pub digest: Digest,
    pub size: u64,
    /// Last use (Unix milliseconds): when it was written, or linked here since.
    pub modified_ms: u64,
}

/// Something outside the blob store proper: an upload's staged bytes or a quarantined copy.
#[derive(Debug, Clone)]
pub struct Leftover {
    /// Where it is: a file on this node, or an object store's key for a copy kept there.
    pub path: PathBuf,
    /// The file name: an upload session's id, `direct-…`, `fetch-…`, or a quarantined copy.
    pub name: String,
    pub size: u64,
    pub modified_ms: u64,
    pub quarantined: bool,
}

/// A file's modification time in Unix milliseconds (0 when unknown: counts as old).
pub fn modified_ms(meta: &std::fs::Metadata) -> u64 {
    meta.modified()
        .ok()
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// The region's blob store, as every caller holds it.
pub type Blobs = Arc<dyn BlobStore>;

/// A stored blob opened for reading.
pub enum BlobReader {
    /// A file on this node's disk: served with positioned reads.
    File { file: std::fs::File, size: u64 },
    /// An object in the region's object store: served by ranged GETs.
    Object { store: Arc<dyn object_store::ObjectStore>, path: object_store::path::Path, size: u64 },
}

impl BlobReader {
    pub fn size(&self) -> u64 {
        match self {
            BlobReader::File { size, .. } | BlobReader::Object { size, .. } => *size,
        }
    }

    /// The bytes `start..start+len` (within the blob), in chunks as they are read.
    pub fn stream(self, start: u64, len: u64) -> BoxStream<'static, std::io::Result<Bytes>> {
        match self {
            BlobReader::File { file, .. } => super::read::read_file_range(file, start, len),
            BlobReader::Object { store, path, .. } => super::read::read_object_range(store, path, start, len),
        }
    }
}

#[async_trait::async_trait]
pub trait BlobStore: Send + Sync {
    /// Size of the stored blob, if this region holds it.
    async fn size(&self, digest: &Digest) -> Result<Option<u64>, BlobError>;

    /// The stored blob's bytes, if this region holds it.
    async fn open(&self, digest: &Digest) -> Result<Option<BlobReader>, BlobError>;

    /// A short-lived URL the client can fetch the stored blob from directly, bypassing
    /// this node (object stores with `storage.redirect`); `None`: serve it here.
    async fn redirect_url(&self, _digest: &Digest) -> Result<Option<String>, BlobError> {
        Ok(None)
    }

    /// Makes a staged file (fully written, fsynced and checked against `digest`) visible
    /// under `digest`, durably. When the blob is already stored (same digest, same bytes)
    /// the staged copy is discarded and the stored blob is marked used now, as `touch`
    /// does (so a blob pushed again is kept for the upload grace from now); either way the
    /// blob is stored, and recent, when this returns.
    async fn commit(&self, staged: &Path, digest: &Digest) -> Result<(), BlobError>;

    /// Takes a stored blob whose bytes no longer match its digest out of service (kept
    /// aside for inspection), so this region fetches a good copy when next needed.
    async fn quarantine(&self, digest: &Digest) -> Result<(), BlobError>;

    /// Marks the blob as used now, for the whole region (every node of it sees the mark):
    /// garbage collection keeps a blob linked into a repository for the upload grace from
    /// then. Returns whether the blob is stored once marked — the answer to trust before
    /// counting on it: a sweep on another node of the region (whose check this node's pins
    /// do not reach) either finishes before it, or sees the mark and keeps the blob.
    /// Callers hold a pin on the digest, which covers this node's own sweep.
    async fn touch(&self, digest: &Digest) -> Result<bool, BlobError>;

    /// Whether `link_repo` records are the region's record of uploads and mounts (a store
    /// several nodes share): then a node reads them rather than its own `local_blob_links`,
    /// which a DELETE through another node would not reach.
    fn shares_links(&self) -> bool {
        false
    }

    /// Records, where every node of the region sees it, that `repo` may use the stored
    /// blob (it was pushed or mounted into the repository), so a manifest PUT arriving at
    /// another node of the region finds it. A store only one node uses keeps nothing here:
    /// the node's own `local_blob_links` is the record.
    async fn link_repo(&self, _repo: &str, _digest: &Digest, _size: u64) -> Result<(), BlobError> {
        Ok(())
    }

    /// The size a `link_repo` of another node recorded, when the blob is still stored.
    async fn repo_link(&self, _repo: &str, _digest: &Digest) -> Result<Option<u64>, BlobError> {
        Ok(None)
    }

    /// Takes back a `link_repo` (a blob deleted from the repository).
    async fn unlink_repo(&self, _repo: &str, _digest: &Digest) -> Result<(), BlobError> {
        Ok(())
    }

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

    /// Removes one of the `leftovers` (blocking).
    fn remove_leftover(&self, leftover: &Leftover) -> std::io::Result<()>;

    /// Where a staged upload or fetch named `name` accumulates on this node.
    fn staging_path(&self, name: &str) -> PathBuf;

    /// Removes a staged file (a cancelled, refused or failed upload or fetch).
    async fn discard(&self, staged: &Path);
}

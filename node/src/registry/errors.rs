//! The registry's error type: what went wrong, in the distribution spec's terms. The
//! mapping onto HTTP statuses and OCI error codes lives in one place, `api::errors`.

use crate::blobs::uploads::SessionError;
use crate::blobs::{BlobError, WriteError};
use crate::meta::quotas::{Quota, QuotaExceeded};
use crate::meta::store::{io_out_of_space, StoreError};
use crate::meta::MetaError;

#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    #[error("invalid repository name {0:?}")]
    NameInvalid(String),
    #[error("repository {0} is not known")]
    NameUnknown(String),
    #[error("invalid tag {0:?}")]
    TagInvalid(String),
    #[error("invalid digest: {0}")]
    DigestInvalid(String),
    #[error("blob {0} is not known in this repository")]
    BlobUnknown(String),
    #[error("upload session is not known")]
    BlobUploadUnknown,
    #[error("upload invalid: {0}")]
    BlobUploadInvalid(String),
    /// A chunk that does not start where the session's bytes end.
    #[error("chunk does not continue the upload: expected offset {offset}")]
    ChunkOutOfOrder { offset: u64, location: String, upload_id: String },
    /// A blob `Range` request past the end.
    #[error("range not satisfiable for a blob of {size} bytes")]
    RangeNotSatisfiable { size: u64 },
    #[error("size invalid: {0}")]
    SizeInvalid(String),
    #[error("manifest invalid: {0}")]
    ManifestInvalid(String),
    #[error("manifest larger than the {limit} bytes accepted")]
    ManifestTooLarge { limit: usize },
    /// A client upload that would make a blob larger than `max_blob_bytes`.
    #[error("blob larger than the {limit} bytes this registry accepts (max_blob_bytes)")]
    BlobTooLarge { limit: u64 },
    #[error("manifest {0} is not known in this repository")]
    ManifestUnknown(String),
    /// `DELETE` of a blob manifests of the repository still reference.
    #[error("blob {0} is referenced by manifests of this repository; delete them first (the blob goes with the last)")]
    BlobReferenced(String),
    /// A manifest reference that is neither a tag nor a digest: nothing can be stored
    /// under it, so reading or deleting it finds nothing (404 `MANIFEST_UNKNOWN`, as CNCF
    /// Distribution and zot answer). Writing under it is `TagInvalid`/`DigestInvalid`.
    #[error("manifest {0:?} is not known: the reference is neither a tag nor a digest")]
    ReferenceUnknown(String),
    #[error("manifest references {0}, which is not known in this repository")]
    ManifestBlobUnknown(String),
    #[error("unsupported: {0}")]
    Unsupported(String),
    /// The cluster cannot commit from this region right now.
    #[error("no quorum reachable from this region: {0}")]
    NoQuorum(String),
    /// The blob is acknowledged but this region has no copy and no region holding one
    /// sent bytes in time (cut off from them, or they are down).
    #[error("blob not yet in this region and no region holding it answered: {0}")]
    SourceUnavailable(String),
    /// The region's blob store (an object store) failed or did not answer; nothing of the
    /// request was kept.
    #[error("the region's blob store is unavailable: {0}")]
    StorageUnavailable(String),
    /// This node's disk (or its quota) is full: the bytes were not stored, nothing of the
    /// request was kept, and the upload can be retried once space is freed.
    #[error("no space left for blobs in this region: {0}")]
    StorageFull(String),
    /// The upload session lives on another node of this region, which did not answer;
    /// nothing of the request was kept.
    #[error("the node holding this upload session is unavailable: {0}")]
    UploadOwnerUnavailable(String),
    /// The client went away or sent a broken body; nothing was kept.
    #[error("request body failed: {0}")]
    BodyFailed(String),
    /// No usable credentials; `challenge` is the `WWW-Authenticate` value.
    #[error("{message}")]
    Unauthorized { challenge: String, message: String },
    /// The caller may not do this. `challenge` is set when a token merely lacks the scope
    /// its identity could get (RFC 6750 `insufficient_scope`: clients fetch a new token).
    #[error("requested access to the resource is denied")]
    Denied { challenge: Option<String> },
    /// A namespace's storage quota: a manifest PUT that would take it past the limit, or
    /// an upload into a namespace already at it.
    #[error("{0}")]
    QuotaExceeded(QuotaRefusal),
    /// Too many failed logins from this name or address.
    #[error("{message}")]
    TooManyRequests { retry_after: u64, message: String },
    #[error("internal error: {0}")]
    Internal(String),
}

/// Why a quota refused: the message names the quota, the usage and the limit.
#[derive(Debug)]
pub enum QuotaRefusal {
    Push(QuotaExceeded),
    Upload(Quota),
}

impl std::fmt::Display for QuotaRefusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            QuotaRefusal::Push(q) => write!(
                f,
                "storage quota {:?} exceeded: the namespace uses {} of its {} bytes and this push adds {} bytes",
                q.pattern, q.used_bytes, q.limit_bytes, q.adding_bytes
            ),
            QuotaRefusal::Upload(q) => write!(
                f,
                "storage quota {:?} is full: the namespace uses {} of its {} bytes; delete images to push again",
                q.pattern, q.used_bytes, q.limit_bytes
            ),
        }
    }
}

impl From<StoreError> for RegistryError {
    fn from(e: StoreError) -> Self {
        RegistryError::Internal(e.to_string())
    }
}

impl From<BlobError> for RegistryError {
    fn from(e: BlobError) -> Self {
        match e {
            BlobError::ObjectStore(_) => RegistryError::StorageUnavailable(e.to_string()),
            BlobError::Io(ref io) if io_out_of_space(io) => RegistryError::StorageFull(io.to_string()),
            BlobError::Io(_) => RegistryError::Internal(e.to_string()),
        }
    }
}

impl From<SessionError> for RegistryError {
    fn from(e: SessionError) -> Self {
        match e {
            // Sessions end when finished, cancelled or idle: a hint, not a promise.
            SessionError::TooMany { .. } => RegistryError::TooManyRequests { retry_after: 60, message: e.to_string() },
            other => RegistryError::Internal(other.to_string()),
        }
    }
}

impl From<WriteError> for RegistryError {
    fn from(e: WriteError) -> Self {
        match e {
            WriteError::Body(m) => RegistryError::BodyFailed(m),
            WriteError::TooLong { limit } => {
                RegistryError::SizeInvalid(format!("body longer than the {limit} bytes announced"))
            }
            WriteError::OverCap { max } => RegistryError::BlobTooLarge { limit: max },
            WriteError::Io(io) if io_out_of_space(&io) => RegistryError::StorageFull(io.to_string()),
            WriteError::Io(io) => RegistryError::Internal(io.to_string()),
        }
    }
}

impl From<MetaError> for RegistryError {
    fn from(e: MetaError) -> Self {
        match e {
            MetaError::NoQuorum(m) => RegistryError::NoQuorum(m),
            other => RegistryError::Internal(other.to_string()),
        }
    }
}

//! The registry's operations, independent of HTTP: axum handlers parse a request, call
//! one of these, and render the result. The same operations serve tests and, later,
//! gRPC fetch-through.

mod blobs;
pub use blobs::BlobSource;
pub mod discovery;
pub mod errors;
pub mod manifest_parse;
mod manifests;
pub mod names;
pub mod uploads;

use crate::blobs::uploads::UploadSessions;
use crate::blobs::Blobs;
use crate::meta::{Meta, Store};
use std::sync::Arc;

pub use errors::RegistryError;
pub use manifests::{ManifestRead, PushedManifest};
pub use names::Reference;

pub type Result<T> = std::result::Result<T, RegistryError>;

#[derive(Clone)]
pub struct Registry {
    pub store: Store,
    pub meta: Meta,
    pub blobs: Blobs,
    pub sessions: Arc<UploadSessions>,
    pub replicator: Arc<crate::replicas::Replicator>,
    pub region: String,
    pub max_manifest_bytes: usize,
    /// Largest blob a client may upload (0: no cap).
    pub max_blob_bytes: u64,
    /// A request body that delivers nothing for this long is cut off (slow clients).
    pub body_idle_timeout: std::time::Duration,
    /// Soft delete: a deleted manifest stays in the trash this long (`None`: deleted at once).
    pub trash_for: Option<std::time::Duration>,
    /// Manifests served, sent in batches for retention's pull times.
    pub pulls: Arc<crate::lifecycle::PullRecorder>,
    /// Pushed and pulled bytes per repository, sent in batches for usage metering.
    pub usage: Arc<crate::usage::UsageRecorder>,
}

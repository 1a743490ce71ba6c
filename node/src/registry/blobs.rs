//! Blob reads, deletes and cross-repository mounts.

use super::{Registry, RegistryError, Result};
use crate::meta::command::proposer_clock;
use crate::meta::records::LocalLink;
use crate::meta::store::{repo_key, CF_LOCAL_BLOB_LINKS, CF_SM_BLOB_LINKS};
use meridian_replication::Digest;
use std::sync::Arc;

/// How long a GET for a blob not yet in this region waits for the first bytes from
/// another region before answering 503.
const FIRST_BYTES_WITHIN: std::time::Duration = std::time::Duration::from_secs(10);

/// Where a blob's bytes come from for one GET.
pub enum BlobSource {
    Local(crate::blobs::BlobReader),
    /// Arriving from another region right now (shared with other readers).
    Remote(Arc<crate::replicas::transfer::Transfer>),
    /// Arriving at another node of this region, which fetches it for the region and
    /// streams it on as it lands.
    Peer(crate::replicas::relay::Relay),
}

impl BlobSource {
    pub fn size(&self) -> u64 {
        match self {
            BlobSource::Local(reader) => reader.size(),
            BlobSource::Remote(t) => t.size,
            BlobSource::Peer(relay) => relay.size,
        }
    }

    /// The bytes `start..start+len`, as they are read or arrive.
    pub fn into_stream(self, start: u64, len: u64) -> futures::stream::BoxStream<'static, std::io::Result<bytes::Bytes>> {
        use futures::StreamExt;
        match self {
            BlobSource::Local(reader) => reader.stream(start, len),
            BlobSource::Remote(transfer) => crate::replicas::transfer::read_stream(transfer, start, len).boxed(),
            BlobSource::Peer(relay) => relay.into_stream(start, len),
        }
    }

    /// The whole blob in memory, when it is at most `max` bytes (`None` otherwise, or
    /// when reading fails).
    pub async fn read_small(self, max: u64) -> Option<Vec<u8>> {
        use futures::StreamExt;
        let size = self.size();
        if size > max {
            return None;
        }
        let mut stream = self.into_stream(0, size);
        let mut out = Vec::with_capacity(size as usize);
        while let Some(chunk) = stream.next().await {
            out.extend_from_slice(&chunk.ok()?);
        }
        (out.len() as u64 == size).then_some(out)
    }
}

impl Registry {
    /// Size of a blob this repository may serve. Answered from the applied state (the
    /// link records the size), so a HEAD never waits for a transfer.
    pub async fn blob_size(&self, repo: &str, digest: &Digest) -> Result<u64> {
        self.linked_size(repo, digest).await?.ok_or_else(|| RegistryError::BlobUnknown(digest.to_string()))
    }

    /// Size of a blob the repository may serve: referenced by one of its manifests
    /// (cluster-wide), or pushed or mounted into it — as this node's `local_blob_links`
    /// record, or, on a store the region's nodes share, as the link any node of the region
    /// left there (so an upload through one node and a DELETE through another both count).
    pub(super) async fn linked_size(&self, repo: &str, digest: &Digest) -> Result<Option<u64>> {
        if !self.blobs.shares_links() {
            return Ok(self.store.linked_blob_size(repo, digest)?);
        }
        if let Some(size) = self.store.referenced_blob_size(repo, digest)? {
            return Ok(Some(size));
        }
        Ok(self.blobs.repo_link(repo, digest).await?)
    }

    /// Where a client may fetch the blob straight from the region's object store (a
    /// presigned URL, with `storage.redirect`), with its size; `None`: serve it here.
    pub async fn blob_redirect(&self, repo: &str, digest: &Digest) -> Result<Option<(String, u64)>> {
        let Some(size) = self.linked_size(repo, digest).await? else {
            return Err(RegistryError::BlobUnknown(digest.to_string()));
        };
        Ok(self.blobs.redirect_url(digest).await?.map(|url| (url, size)))
    }

    /// The blob's bytes: the local copy, or — when the cluster knows the blob but this
    /// region has no copy yet — the shared transfer from the nearest region that holds it.
    pub async fn open_blob(&self, repo: &str, digest: &Digest) -> Result<BlobSource> {
        let Some(linked_size) = self.linked_size(repo, digest).await? else {
            return Err(RegistryError::BlobUnknown(digest.to_string()));
        };
        if let Some(reader) = self.blobs.open(digest).await? {
            return Ok(BlobSource::Local(reader));
        }
        if self.replicator.holders(digest).is_empty() {
            return Err(RegistryError::BlobUnknown(digest.to_string()));
        }
        // In a region of several nodes one of them fetches this blob for all: join its
        // transfer rather than start a second (its own answer stands if it cannot).
        if let Some(fetcher) = self.replicator.region_fetcher(digest) {
            let opened =
                tokio::time::timeout(FIRST_BYTES_WITHIN, crate::replicas::relay::Relay::open(self.meta.peers(), &fetcher.grpc_addr, digest))
                    .await;
            match opened {
                Ok(Ok(relay)) => return Ok(BlobSource::Peer(relay)),
                Ok(Err(status)) => {
                    tracing::info!(%digest, node = %fetcher.grpc_addr, error = %status.message(), "the region's fetching node did not serve the blob; fetching it here");
                }
                Err(_) => tracing::info!(%digest, node = %fetcher.grpc_addr, "no bytes from the region's fetching node in time; fetching it here"),
            }
        }
        let transfer = self
            .replicator
            .fetch(digest, linked_size, crate::replicas::Reason::ClientWaiting)
            .map_err(|e| RegistryError::Internal(e.to_string()))?;
        // A 200 is a promise the body will come: make it only once bytes flow. A region
        // cut off from every holder answers 503 (clients retry) instead of a 200 whose
        // body hangs; the transfer itself carries on in the background.
        match tokio::time::timeout(FIRST_BYTES_WITHIN, transfer.started()).await {
            Ok(true) => Ok(BlobSource::Remote(transfer)),
            Ok(false) => Err(RegistryError::SourceUnavailable(format!("{digest}: the transfer failed"))),
            Err(_) => Err(RegistryError::SourceUnavailable(format!("{digest}: no bytes within {FIRST_BYTES_WITHIN:?}"))),
        }
    }

    /// Records that `repo` may serve `digest` (after an upload or a mount), durably. The
    /// caller has just had the blob marked used — a commit does it, a mount touches — and
    /// that mark keeps it from garbage collection for the upload grace (the sweep reads
    /// it from the store: a file's time, an object in the bucket; one stat per blob).
    pub(super) async fn link_local(&self, repo: &str, digest: &Digest, size: u64) -> Result<()> {
        self.blobs.link_repo(repo, digest, size).await?;
        let mut batch = rocksdb::WriteBatch::default();
        let link = LocalLink { size, linked_unix: proposer_clock() };
        batch.put_cf(self.store.cf(CF_LOCAL_BLOB_LINKS)?, repo_key(repo, &digest.to_string()), link.encode());
        self.store.write_durable(batch)?;
        Ok(())
    }

    /// Removes a blob pushed or mounted into the repository that no manifest of it
    /// references (its bytes go with garbage collection). A blob manifests of the
    /// repository reference is refused: removing it would leave them pointing at nothing
    /// (promise 3); it goes when the last of them is deleted.
    pub async fn delete_blob(&self, repo: &str, digest: &Digest) -> Result<()> {
        let key = repo_key(repo, &digest.to_string());
        if self.store.exists(CF_SM_BLOB_LINKS, &key)? {
            return Err(RegistryError::BlobReferenced(digest.to_string()));
        }
        let here = self.store.exists(CF_LOCAL_BLOB_LINKS, &key)?;
        if !here && self.blobs.repo_link(repo, digest).await?.is_none() {
            return Err(RegistryError::BlobUnknown(digest.to_string()));
        }
        // The region's shared link first: once it is gone no node of the region serves
        // the blob from this repository (this node's row goes right after).
        self.blobs.unlink_repo(repo, digest).await?;
        if here {
            let mut batch = rocksdb::WriteBatch::default();
            batch.delete_cf(self.store.cf(CF_LOCAL_BLOB_LINKS)?, &key);
            self.store.write_durable(batch)?;
        }
        Ok(())
    }

    /// Mounts `digest` into `repo` from `from` (or from anywhere when `from` is None).
    /// Returns false when the blob is not available to mount.
    pub async fn mount_blob(&self, repo: &str, digest: &Digest, from: Option<&str>) -> Result<bool> {
        let available = match from {
            Some(source) => self.linked_size(source, digest).await?.is_some(),
            // Without `from`, any verified copy in this region will do.
            None => true,
        };
        if !available {
            return Ok(false);
        }
        let _pin = self.blobs.pin(vec![digest.to_string()]);
        let Some(size) = self.blobs.size(digest).await? else { return Ok(false) };
        // Gone by the time it is marked (a sweep of another node of the region): the
        // client uploads it instead.
        if !self.blobs.touch(digest).await? {
            return Ok(false);
        }
        self.link_local(repo, digest, size).await?;
        Ok(true)
    }
}

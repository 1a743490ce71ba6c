//! Blob uploads: sessions, chunks, single-request pushes and the closing PUT.

use super::errors::QuotaRefusal;
use super::{Registry, RegistryError, Result};
use crate::blobs::{stream_to_file, BlobCap};
use crate::blobs::uploads::SessionState;
use bytes::Bytes;
use futures::Stream;
use meridian_replication::{Algorithm, Digest, DigestHasher};
use std::fmt::Display;

/// A chunk's declared placement: the inclusive `Content-Range` and the `Content-Length`.
#[derive(Debug, Clone, Copy, Default)]
pub struct ChunkHeaders {
    pub range: Option<(u64, u64)>,
    pub content_length: Option<u64>,
}

/// Where an upload session stands.
#[derive(Debug, Clone)]
pub struct UploadStatus {
    pub id: String,
    pub offset: u64,
}

impl Registry {
    /// Opens an upload session for `owner` (the identity the per-identity cap counts).
    pub async fn start_upload(&self, repo: &str, algorithm: Algorithm, owner: &str) -> Result<UploadStatus> {
        self.admit_upload(repo)?;
        let id = self.sessions.create(repo, algorithm, owner).await?;
        Ok(UploadStatus { id, offset: 0 })
    }

    /// Refuses an upload into a namespace whose quota is already full, before any of its
    /// bytes are read (the manifest PUT enforces the quota exactly; this spares the bytes).
    fn admit_upload(&self, repo: &str) -> Result<()> {
        match self.store.full_quota(repo)? {
            Some(quota) => Err(RegistryError::QuotaExceeded(QuotaRefusal::Upload(quota))),
            None => Ok(()),
        }
    }

    pub async fn upload_status(&self, repo: &str, id: &str) -> Result<UploadStatus> {
        let handle = self.sessions.get(repo, id).await?.ok_or(RegistryError::BlobUploadUnknown)?;
        let state = handle.lock().await;
        Ok(UploadStatus { id: state.id.clone(), offset: state.offset })
    }

    pub async fn cancel_upload(&self, repo: &str, id: &str) -> Result<()> {
        let handle = self.sessions.get(repo, id).await?.ok_or(RegistryError::BlobUploadUnknown)?;
        let _state = handle.lock().await;
        self.sessions.remove(id).await?;
        Ok(())
    }

    /// Single-request upload (`POST ?digest=`): the body is the whole blob.
    pub async fn upload_whole<S, E>(&self, repo: &str, digest: &Digest, length: Option<u64>, body: S) -> Result<()>
    where
        S: Stream<Item = std::result::Result<Bytes, E>> + Unpin,
        E: Display,
    {
        self.admit_upload(repo)?;
        let cap = self.blob_cap(0, length)?;
        let path = self.blobs.staging_path(&format!("direct-{}", uuid::Uuid::new_v4()));
        let outcome = stream_to_file(path.clone(), digest.algorithm().hasher(), body, length, cap, true).await;
        let outcome = match outcome {
            Ok(o) => o,
            Err(e) => {
                self.blobs.discard(&path).await;
                return Err(e.into());
            }
        };
        if let Some(len) = length {
            if outcome.written != len {
                self.blobs.discard(&path).await;
                return Err(RegistryError::SizeInvalid(format!("received {} of {len} bytes", outcome.written)));
            }
        }
        let actual = outcome.hasher.finish();
        if &actual != digest {
            self.blobs.discard(&path).await;
            return Err(RegistryError::DigestInvalid(format!("content hashes to {actual}, not {digest}")));
        }
        // Pinned from before the commit (which keeps an existing copy) until the link is
        // durable: garbage collection cannot take the blob in between.
        let _pin = self.blobs.pin(vec![digest.to_string()]);
        if let Err(e) = self.blobs.commit(&path, digest).await {
            // Nothing resumes a single-request upload: its bytes go with it.
            self.blobs.discard(&path).await;
            return Err(e.into());
        }
        self.link_local(repo, digest, outcome.written).await?;
        self.usage.pushed(repo, outcome.written, false);
        Ok(())
    }

    /// Appends one chunk (`PATCH`). A chunk must start exactly where the session ends; a
    /// failed chunk leaves the session as it was.
    pub async fn append_chunk<S, E>(&self, repo: &str, id: &str, chunk: ChunkHeaders, body: S) -> Result<UploadStatus>
    where
        S: Stream<Item = std::result::Result<Bytes, E>> + Unpin,
        E: Display,
    {
        let handle = self.sessions.get(repo, id).await?.ok_or(RegistryError::BlobUploadUnknown)?;
        let mut state = handle.lock().await;
        self.append_to_session(&mut state, repo, chunk, body, false).await?;
        Ok(UploadStatus { id: state.id.clone(), offset: state.offset })
    }

    /// Closes a session (`PUT ?digest=`), with an optional final chunk. On a digest
    /// mismatch the session and its bytes are dropped: nothing of it remains.
    pub async fn finish_upload<S, E>(&self, repo: &str, id: &str, digest: &Digest, chunk: ChunkHeaders, body: S) -> Result<()>
    where
        S: Stream<Item = std::result::Result<Bytes, E>> + Unpin,
        E: Display,
    {
        let handle = self.sessions.get(repo, id).await?.ok_or(RegistryError::BlobUploadUnknown)?;
        let mut state = handle.lock().await;
        let hasher = self.append_to_session(&mut state, repo, chunk, body, true).await?;
        let path = self.blobs.staging_path(&state.id);
        let actual = if hasher.algorithm() == digest.algorithm() {
            hasher.finish()
        } else {
            // The client closed with another algorithm than the session hashed with:
            // hash the file once more with the one it asked for.
            crate::blobs::hash_file(path.clone(), digest.algorithm().hasher()).await?.finish()
        };
        if &actual != digest {
            self.sessions.remove(&state.id).await?;
            return Err(RegistryError::DigestInvalid(format!("content hashes to {actual}, not {digest}")));
        }
        let _pin = self.blobs.pin(vec![digest.to_string()]);
        self.blobs.commit(&path, digest).await?;
        self.sessions.forget(&state.id)?;
        self.link_local(repo, digest, state.offset).await?;
        self.usage.pushed(repo, state.offset, false);
        Ok(())
    }

    /// How much more a client may add to a blob that holds `offset` bytes, under
    /// `max_blob_bytes`. A body that announces more is refused before any of it is read.
    fn blob_cap(&self, offset: u64, announced: Option<u64>) -> Result<Option<BlobCap>> {
        if self.max_blob_bytes == 0 {
            return Ok(None);
        }
        let room = self.max_blob_bytes.saturating_sub(offset);
        if announced.is_some_and(|len| len > room) {
            return Err(RegistryError::BlobTooLarge { limit: self.max_blob_bytes });
        }
        Ok(Some(BlobCap { room, max: self.max_blob_bytes }))
    }

    /// Checks a chunk's placement, streams it onto the session file and advances the
    /// session; on failure truncates the file back so the session is as it was. Returns
    /// the hash of everything received so far.
    async fn append_to_session<S, E>(
        &self,
        state: &mut SessionState,
        repo: &str,
        chunk: ChunkHeaders,
        body: S,
        sync: bool,
    ) -> Result<DigestHasher>
    where
        S: Stream<Item = std::result::Result<Bytes, E>> + Unpin,
        E: Display,
    {
        let limit = check_chunk(&state.id, repo, state.offset, chunk)?;
        let cap = self.blob_cap(state.offset, limit)?;
        let hasher = state.hasher(self.blobs.as_ref()).await?;
        let (id, offset) = (state.id.as_str(), state.offset);
        let path = self.blobs.staging_path(id);
        let result = stream_to_file(path.clone(), hasher, body, limit, cap, sync).await;
        let short = match (&result, limit) {
            (Ok(o), Some(l)) if o.written != l => Some(o.written),
            _ => None,
        };
        if result.is_err() || short.is_some() {
            let truncate = tokio::task::spawn_blocking(move || -> std::io::Result<()> {
                std::fs::OpenOptions::new().write(true).open(&path)?.set_len(offset)
            })
            .await;
            if !matches!(truncate, Ok(Ok(()))) {
                tracing::warn!(upload = id, "could not roll back a failed chunk");
            }
        }
        if let (Some(got), Some(l)) = (short, limit) {
            return Err(RegistryError::SizeInvalid(format!("chunk carried {got} of {l} bytes")));
        }
        let outcome = result?;
        state.advance(outcome.hasher.clone(), outcome.written);
        Ok(outcome.hasher)
    }
}

/// Validates a chunk's placement against the session's offset; returns the exact byte
/// count the body must carry, when the client declared one.
fn check_chunk(id: &str, repo: &str, offset: u64, chunk: ChunkHeaders) -> Result<Option<u64>> {
    match chunk.range {
        Some((start, end)) => {
            if end < start {
                return Err(RegistryError::BlobUploadInvalid(format!("Content-Range {start}-{end} is reversed")));
            }
            if start != offset {
                return Err(RegistryError::ChunkOutOfOrder {
                    offset,
                    location: format!("/v2/{repo}/blobs/uploads/{id}"),
                    upload_id: id.to_string(),
                });
            }
            let len = end - start + 1;
            if let Some(cl) = chunk.content_length {
                if cl != len {
                    return Err(RegistryError::ChunkOutOfOrder {
                        offset,
                        location: format!("/v2/{repo}/blobs/uploads/{id}"),
                        upload_id: id.to_string(),
                    });
                }
            }
            Ok(Some(len))
        }
        None => Ok(chunk.content_length),
    }
}

//! Manifest push, pull and delete. A push becomes one Raft entry carrying the bytes,
//! the tags and every blob referenced; the 201 goes out after it is applied here.

use super::manifest_parse::parse_manifest;
use super::names::{validate_tag, Reference};
use super::errors::QuotaRefusal;
use super::{Registry, RegistryError, Result};
use crate::meta::bases::{BASE_DIGEST_ANNOTATION, BASE_NAME_ANNOTATION};
use crate::meta::command::{proposer_clock, BlobRef, Command, CommandResult, ImageShape, PutManifest, Referrer};
use crate::meta::events::Origin;
use crate::meta::records::StoredManifest;
use bytes::Bytes;
use meridian_replication::{Algorithm, Digest};

pub struct PushedManifest {
    pub digest: Digest,
    pub subject: Option<Digest>,
    /// Tags set by `?tag=` parameters (reported back in `OCI-Tag`).
    pub query_tags: Vec<String>,
}

pub struct ManifestRead {
    pub digest: Digest,
    pub manifest: StoredManifest,
}

impl Registry {
    pub async fn put_manifest(
        &self,
        repo: &str,
        reference: &Reference,
        content_type: Option<&str>,
        body: Bytes,
        query_tags: Vec<String>,
        origin: Origin,
    ) -> Result<PushedManifest> {
        if body.len() > self.max_manifest_bytes {
            return Err(RegistryError::ManifestTooLarge { limit: self.max_manifest_bytes });
        }
        for tag in &query_tags {
            validate_tag(tag)?;
        }
        let digest = match reference {
            Reference::Digest(expected) => {
                let actual = Digest::of_bytes(expected.algorithm(), &body);
                if &actual != expected {
                    return Err(RegistryError::DigestInvalid(format!("manifest hashes to {actual}, not {expected}")));
                }
                actual
            }
            Reference::Tag(_) => Digest::of_bytes(Algorithm::Sha256, &body),
        };
        let parsed = parse_manifest(content_type, &body)?;
        let body_len = body.len() as u64;
        let text = String::from_utf8(body.to_vec())
            .map_err(|_| RegistryError::ManifestInvalid("manifest is not UTF-8".into()))?;

        // Garbage collection keeps off these blobs until the entry is applied, so a blob
        // this region says it holds is still here when every region learns that.
        let _pin = self.blobs.pin(parsed.blobs.iter().map(|d| d.digest.to_string()).collect());
        let mut blobs = Vec::with_capacity(parsed.blobs.len());
        for d in &parsed.blobs {
            let size = self
                .linked_size(repo, &d.digest)
                .await?
                .ok_or_else(|| RegistryError::ManifestBlobUnknown(d.digest.to_string()))?;
            if size != d.size {
                return Err(RegistryError::ManifestInvalid(format!(
                    "descriptor of {} says {} bytes, the blob has {size}",
                    d.digest, d.size
                )));
            }
            // Held here if stored once marked. The pin ends with this request, but the
            // entry may commit later (a timeout, a client gone): the mark keeps the sweep
            // off the blob for the grace from now too, on every node of the region.
            let held_here = self.blobs.touch(&d.digest).await?;
            blobs.push(BlobRef { digest: d.digest.clone(), size, held_here });
        }
        for child in &parsed.children {
            if !self.store.manifest_exists(repo, &child.digest)? {
                return Err(RegistryError::ManifestBlobUnknown(child.digest.to_string()));
            }
        }
        let mut tags = query_tags.clone();
        if let Reference::Tag(t) = reference {
            tags.push(t.clone());
        }
        let subject = parsed.subject.as_ref().map(|s| s.digest.clone());
        let referrer = parsed.subject.as_ref().map(|s| Referrer {
            subject: s.digest.clone(),
            artifact_type: parsed.artifact_type.clone(),
            annotations: parsed.annotations.clone(),
        });
        // Images and indexes (not artifacts, not referrers) are linked to their base.
        let image = (parsed.subject.is_none() && (parsed.is_image || !parsed.children.is_empty())).then(|| {
            // Builders write these empty on an image built from scratch.
            let annotation = |key: &str| parsed.annotations.as_ref().and_then(|a| a.get(key)).filter(|v| !v.is_empty()).cloned();
            ImageShape {
                layers: parsed.layers.clone(),
                base_digest: annotation(BASE_DIGEST_ANNOTATION),
                base_name: annotation(BASE_NAME_ANNOTATION),
            }
        });
        let put = PutManifest {
            repo: repo.to_string(),
            digest: digest.clone(),
            media_type: parsed.media_type,
            body: text,
            tags,
            blobs,
            children: parsed.children.into_iter().map(|c| c.digest).collect(),
            referrer,
            region: self.region.clone(),
            at_unix: proposer_clock(),
            origin: Some(origin),
            image,
        };
        match self.meta.propose(Command::PutManifest(put)).await? {
            CommandResult::Applied => {
                self.usage.pushed(repo, body_len, true);
                Ok(PushedManifest { digest, subject, query_tags })
            }
            CommandResult::ManifestBlobUnknown(d) => Err(RegistryError::ManifestBlobUnknown(d.to_string())),
            CommandResult::QuotaExceeded(q) => Err(RegistryError::QuotaExceeded(QuotaRefusal::Push(q))),
            other => Err(RegistryError::Internal(format!("unexpected apply result {other:?}"))),
        }
    }

    pub fn get_manifest(&self, repo: &str, reference: &Reference) -> Result<ManifestRead> {
        let unknown = || RegistryError::ManifestUnknown(format!("{repo}:{reference:?}"));
        let digest = match reference {
            Reference::Digest(d) => d.clone(),
            Reference::Tag(t) => self.store.resolve_tag(repo, t)?.ok_or_else(unknown)?,
        };
        let manifest = self.store.manifest(repo, &digest)?.ok_or_else(unknown)?;
        self.pulls.record(repo, &digest);
        Ok(ManifestRead { digest, manifest })
    }

    /// Deleting by digest removes the manifest and every tag on it; deleting by tag
    /// removes only the tag.
    pub async fn delete_manifest(&self, repo: &str, reference: &Reference, origin: Origin) -> Result<()> {
        let cmd = match reference {
            Reference::Digest(d) => {
                let at_unix = proposer_clock();
                let trash_until = self.trash_for.map(|keep| at_unix + keep.as_secs());
                Command::DeleteManifest {
                    repo: repo.to_string(),
                    digest: d.clone(),
                    at_unix,
                    trash_until,
                    only_if_untagged: false,
                    origin: Some(origin),
                }
            }
            Reference::Tag(t) => Command::DeleteTag { repo: repo.to_string(), tag: t.clone(), if_digest: None, origin: Some(origin) },
        };
        match self.meta.propose(cmd).await? {
            CommandResult::Applied => Ok(()),
            _ => Err(RegistryError::ManifestUnknown(format!("{repo}:{reference:?}"))),
        }
    }
}

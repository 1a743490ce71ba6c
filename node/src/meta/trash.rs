//! Soft delete's trash: manifests deleted while `retention.soft_delete_days > 0` leave the
//! API but keep their record and their references on blobs (so nothing they need is
//! collected) until restored, purged, or expired.
//!
//! `sm_trash` keys: `repo\0digest` → a JSON header (`TrashHeader`) after its length
//! (u32 BE), then the manifest's stored record as it was.

use super::records::StoredManifest;
use super::store::{repo_key, Store, StoreError, CF_SM_TRASH};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TrashHeader {
    pub deleted_unix: u64,
    /// Purged for good from then on.
    pub expires_unix: u64,
    /// The tags it had when it was deleted.
    pub tags: Vec<String>,
    /// Its referrers-API descriptor (JSON), for a manifest with a subject.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub referrer: Option<String>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct TrashEntry {
    pub repo: String,
    pub digest: String,
    pub header: TrashHeader,
    pub manifest: StoredManifest,
}

fn corrupt(reason: impl Into<String>) -> StoreError {
    StoreError::Corrupt { cf: CF_SM_TRASH, reason: reason.into() }
}

pub(super) fn trash_key(repo: &str, digest: &str) -> Vec<u8> {
    repo_key(repo, digest)
}

pub(super) fn encode(header: &TrashHeader, manifest_record: &[u8]) -> Vec<u8> {
    let json = serde_json::to_vec(header).unwrap_or_default();
    let mut out = Vec::with_capacity(4 + json.len() + manifest_record.len());
    out.extend_from_slice(&(json.len() as u32).to_be_bytes());
    out.extend_from_slice(&json);
    out.extend_from_slice(manifest_record);
    out
}

/// The header and the manifest's stored record (still encoded).
pub(super) fn decode(raw: &[u8]) -> Result<(TrashHeader, &[u8]), StoreError> {
    let len: [u8; 4] = raw.get(..4).and_then(|b| b.try_into().ok()).ok_or_else(|| corrupt("short"))?;
    let len = u32::from_be_bytes(len) as usize;
    let json = raw.get(4..4 + len).ok_or_else(|| corrupt("short header"))?;
    let header = serde_json::from_slice(json).map_err(|e| corrupt(e.to_string()))?;
    Ok((header, &raw[4 + len..]))
}

fn entry(key: &[u8], raw: &[u8]) -> Result<TrashEntry, StoreError> {
    let split = key.iter().position(|b| *b == 0).ok_or_else(|| corrupt("key"))?;
    let (header, record) = decode(raw)?;
    Ok(TrashEntry {
        repo: String::from_utf8_lossy(&key[..split]).into_owned(),
        digest: String::from_utf8_lossy(&key[split + 1..]).into_owned(),
        header,
        manifest: StoredManifest::decode(record)?,
    })
}

impl Store {
    /// Trashed manifests, of one repository or all, in key order.
    pub fn trash(&self, repo: Option<&str>) -> Result<Vec<TrashEntry>, StoreError> {
        let prefix = repo.map(super::store::repo_prefix).unwrap_or_default();
        self.scan_prefix(CF_SM_TRASH, &prefix, None, usize::MAX)?.iter().map(|(k, v)| entry(k, v)).collect()
    }

    pub fn trash_entry(&self, repo: &str, digest: &str) -> Result<Option<TrashEntry>, StoreError> {
        let key = trash_key(repo, digest);
        self.get(CF_SM_TRASH, &key)?.map(|raw| entry(&key, &raw)).transpose()
    }
}

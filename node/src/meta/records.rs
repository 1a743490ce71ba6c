//! Value encodings of the state machine's column families.

use super::store::{StoreError, CF_SM_AUTH, CF_SM_BLOBS, CF_SM_MANIFESTS};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// A manifest as stored: a small JSON header, then the client's exact bytes. The body is
/// kept raw (not inside JSON) so a GET copies it out without decoding.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredManifest {
    pub media_type: String,
    pub subject: Option<String>,
    /// The distinct blobs (config, layers) it references: deleting it gives back one
    /// reference on each (garbage collection counts references, never parses manifests).
    pub blobs: Vec<String>,
    pub body: Vec<u8>,
}

#[derive(Serialize, Deserialize)]
struct ManifestHeader {
    media_type: String,
    subject: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    blobs: Vec<String>,
}

impl StoredManifest {
    pub fn encode(&self) -> Vec<u8> {
        let header = ManifestHeader {
            media_type: self.media_type.clone(),
            subject: self.subject.clone(),
            blobs: self.blobs.clone(),
        };
        // Serializing a struct of strings cannot fail.
        let header = serde_json::to_vec(&header).unwrap_or_default();
        let mut out = Vec::with_capacity(4 + header.len() + self.body.len());
        out.extend_from_slice(&(header.len() as u32).to_be_bytes());
        out.extend_from_slice(&header);
        out.extend_from_slice(&self.body);
        out
    }

    /// The length of the client's bytes in an encoded manifest, without decoding it.
    pub fn body_len(raw: &[u8]) -> Result<u64, StoreError> {
        let corrupt = || StoreError::Corrupt { cf: CF_SM_MANIFESTS, reason: "short".into() };
        let len_bytes: [u8; 4] = raw.get(..4).and_then(|b| b.try_into().ok()).ok_or_else(corrupt)?;
        let header = u32::from_be_bytes(len_bytes) as usize;
        raw.len().checked_sub(4 + header).map(|n| n as u64).ok_or_else(corrupt)
    }

    pub fn decode(raw: &[u8]) -> Result<StoredManifest, StoreError> {
        let corrupt = |reason: &str| StoreError::Corrupt { cf: CF_SM_MANIFESTS, reason: reason.to_string() };
        let len_bytes: [u8; 4] = raw.get(..4).and_then(|b| b.try_into().ok()).ok_or_else(|| corrupt("short"))?;
        let len = u32::from_be_bytes(len_bytes) as usize;
        let header_bytes = raw.get(4..4 + len).ok_or_else(|| corrupt("short header"))?;
        let header: ManifestHeader = serde_json::from_slice(header_bytes).map_err(|e| corrupt(&e.to_string()))?;
        Ok(StoredManifest {
            media_type: header.media_type,
            subject: header.subject,
            blobs: header.blobs,
            body: raw[4 + len..].to_vec(),
        })
    }
}

/// Where a blob's verified copies are, cluster-wide, and whether anything still needs it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BlobLocation {
    pub size: u64,
    pub regions: Vec<String>,
    /// Repositories whose manifests reference the blob (rows of `sm_blob_links`). `None`
    /// for a record written before references were counted: never collected.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub links: Option<u64>,
    /// When `links` last fell to zero (Unix seconds, the clock of the entry that did it);
    /// the blob may be collected once it has stayed unreferenced for the grace period.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unreferenced_since: Option<u64>,
}

/// A repository's link to a blob in `sm_blob_links`: the blob's size and how many of the
/// repository's manifests reference it. Encoded as two u64 BE; a record from before
/// references were counted is the size alone (counted as one reference).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BlobLink {
    pub size: u64,
    pub refs: u64,
}

impl BlobLink {
    pub fn encode(&self) -> [u8; 16] {
        two_words(self.size, self.refs)
    }

    pub fn decode(raw: &[u8]) -> Result<BlobLink, StoreError> {
        match read_words(raw) {
            Some((size, None)) => Ok(BlobLink { size, refs: 1 }),
            Some((size, Some(refs))) => Ok(BlobLink { size, refs }),
            None => Err(StoreError::Corrupt { cf: super::store::CF_SM_BLOB_LINKS, reason: "blob link".into() }),
        }
    }
}

/// Two u64 BE.
fn two_words(a: u64, b: u64) -> [u8; 16] {
    let mut out = [0u8; 16];
    out[..8].copy_from_slice(&a.to_be_bytes());
    out[8..].copy_from_slice(&b.to_be_bytes());
    out
}

/// One u64 BE, or two; `None` for any other length.
fn read_words(raw: &[u8]) -> Option<(u64, Option<u64>)> {
    let word = |b: &[u8]| -> Option<u64> { Some(u64::from_be_bytes(b.try_into().ok()?)) };
    match raw.len() {
        8 => Some((word(raw)?, None)),
        16 => Some((word(&raw[..8])?, Some(word(&raw[8..])?))),
        _ => None,
    }
}

/// A blob pushed or mounted into a repository on this node (`local_blob_links`): its size
/// and when it was linked, which keeps it from garbage collection for the upload grace.
/// Two u64 BE; a record from before link times were kept is the size alone (linked at 0).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LocalLink {
    pub size: u64,
    pub linked_unix: u64,
}

impl LocalLink {
    pub fn encode(&self) -> [u8; 16] {
        two_words(self.size, self.linked_unix)
    }

    pub fn decode(raw: &[u8]) -> Result<LocalLink, StoreError> {
        let (size, linked_unix) = read_words(raw)
            .ok_or_else(|| StoreError::Corrupt { cf: super::store::CF_LOCAL_BLOB_LINKS, reason: "local blob link".into() })?;
        Ok(LocalLink { size, linked_unix: linked_unix.unwrap_or(0) })
    }
}

/// What one region's garbage-collection sweep did (kept in the state machine under
/// `sm_meta` `gc/<region>`, so `meridian admin gc status` answers from any region).
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct GcSweepReport {
    pub region: String,
    pub finished_unix: u64,
    pub duration_ms: u64,
    pub dry_run: bool,
    /// Blob files found that nothing needs (no cluster record, no link within the grace).
    pub candidates: u64,
    pub blobs_removed: u64,
    pub bytes_freed: u64,
    /// Leftover upload and quarantine files removed.
    pub leftovers_removed: u64,
    pub errors: Vec<String>,
}

impl BlobLocation {
    /// Whether garbage collection may take the blob at `now` (entry clock). Strictly
    /// later than the grace: both times are whole seconds, so this guarantees at least
    /// `grace_secs` really passed.
    pub fn collectable(&self, now: u64, grace_secs: u64) -> bool {
        self.links == Some(0) && self.unreferenced_since.is_some_and(|since| since.saturating_add(grace_secs) < now)
    }

    pub fn encode(&self) -> Vec<u8> {
        serde_json::to_vec(self).unwrap_or_default()
    }

    pub fn decode(raw: &[u8]) -> Result<BlobLocation, StoreError> {
        serde_json::from_slice(raw).map_err(|e| StoreError::Corrupt { cf: CF_SM_BLOBS, reason: e.to_string() })
    }
}

/// One entry of a referrers response, as the distribution spec shapes it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ReferrerDescriptor {
    pub media_type: String,
    pub size: u64,
    pub digest: String,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub artifact_type: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub annotations: Option<BTreeMap<String, String>>,
}

/// What an identity may do on every repository. Finer grants (scope maps) come with robot
/// tokens.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, PartialOrd, Ord)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// pull
    Reader,
    /// pull, push
    Writer,
    /// pull, push, delete, and the catalog
    Admin,
}

impl Role {
    pub fn parse(s: &str) -> Option<Role> {
        match s {
            "reader" => Some(Role::Reader),
            "writer" => Some(Role::Writer),
            "admin" => Some(Role::Admin),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Role::Reader => "reader",
            Role::Writer => "writer",
            Role::Admin => "admin",
        }
    }
}

/// A user: the password only as an argon2 PHC string.
#[derive(Clone, PartialEq, Serialize, Deserialize)]
pub struct UserRecord {
    pub name: String,
    pub password_hash: String,
    pub role: Role,
    pub created_unix: u64,
}

impl std::fmt::Debug for UserRecord {
    // Not even the hash reaches a log line (a debug print of a Raft entry would carry it):
    // an offline guess against it needs nothing else.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UserRecord")
            .field("name", &self.name)
            .field("role", &self.role)
            .field("created_unix", &self.created_unix)
            .finish_non_exhaustive()
    }
}

/// One grant of a scope map: actions (`pull`, `push`, `delete`, or `*` for all three) on
/// the repositories a pattern covers (`team-a/*`, `team-a/app`, `*`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Grant {
    pub pattern: String,
    pub actions: Vec<String>,
}

/// A named set of grants that robot tokens refer to.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ScopeMap {
    pub name: String,
    pub grants: Vec<Grant>,
    pub created_unix: u64,
}

/// One secret of a robot token: only its SHA-256 is kept (secrets are 32 random
/// characters, so a fast hash is enough).
#[derive(Clone, PartialEq, Serialize, Deserialize)]
pub struct RobotSecret {
    pub id: String,
    pub sha256: String,
    pub created_unix: u64,
    /// No login with this secret (nor use of tokens issued for it) from this time on.
    pub expires_unix: Option<u64>,
}

impl std::fmt::Debug for RobotSecret {
    // The hash stays out of debug output, like the secret itself.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RobotSecret")
            .field("id", &self.id)
            .field("created_unix", &self.created_unix)
            .field("expires_unix", &self.expires_unix)
            .finish_non_exhaustive()
    }
}

/// A robot token (ACR-style): logs in as `robot$<name>` with any of its secrets and may
/// do what its scope map — a custom one, or a built-in role's (`reader`, `writer`,
/// `admin`) — grants.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RobotRecord {
    pub name: String,
    pub scope_map: String,
    pub secrets: Vec<RobotSecret>,
    pub created_unix: u64,
}

/// A token-signing key (HMAC-SHA256). Every listed key verifies; the newest signs, so a
/// rotation leaves tokens signed by the previous key valid until they expire.
#[derive(Clone, PartialEq, Serialize, Deserialize)]
pub struct SigningKey {
    pub kid: String,
    /// Base64 of 32 random bytes.
    pub secret: String,
    pub created_unix: u64,
}

impl std::fmt::Debug for SigningKey {
    // The secret never reaches a log line, even through a debug print of a command.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SigningKey").field("kid", &self.kid).field("created_unix", &self.created_unix).finish()
    }
}

pub fn encode_json<T: Serialize>(value: &T) -> Vec<u8> {
    serde_json::to_vec(value).unwrap_or_default()
}

pub fn decode_auth<T: serde::de::DeserializeOwned>(raw: &[u8]) -> Result<T, StoreError> {
    serde_json::from_slice(raw).map_err(|e| StoreError::Corrupt { cf: CF_SM_AUTH, reason: e.to_string() })
}

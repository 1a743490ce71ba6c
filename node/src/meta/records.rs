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
    pub body: Vec<u8>,
}

#[derive(Serialize, Deserialize)]
struct ManifestHeader {
    media_type: String,
    subject: Option<String>,
}

impl StoredManifest {
    pub fn encode(&self) -> Vec<u8> {
        let header = ManifestHeader { media_type: self.media_type.clone(), subject: self.subject.clone() };
        // Serializing a struct of strings cannot fail.
        let header = serde_json::to_vec(&header).unwrap_or_default();
        let mut out = Vec::with_capacity(4 + header.len() + self.body.len());
        out.extend_from_slice(&(header.len() as u32).to_be_bytes());
        out.extend_from_slice(&header);
        out.extend_from_slice(&self.body);
        out
    }

    pub fn decode(raw: &[u8]) -> Result<StoredManifest, StoreError> {
        let corrupt = |reason: &str| StoreError::Corrupt { cf: CF_SM_MANIFESTS, reason: reason.to_string() };
        let len_bytes: [u8; 4] = raw.get(..4).and_then(|b| b.try_into().ok()).ok_or_else(|| corrupt("short"))?;
        let len = u32::from_be_bytes(len_bytes) as usize;
        let header_bytes = raw.get(4..4 + len).ok_or_else(|| corrupt("short header"))?;
        let header: ManifestHeader = serde_json::from_slice(header_bytes).map_err(|e| corrupt(&e.to_string()))?;
        Ok(StoredManifest { media_type: header.media_type, subject: header.subject, body: raw[4 + len..].to_vec() })
    }
}

/// Where a blob's verified copies are, cluster-wide.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BlobLocation {
    pub size: u64,
    pub regions: Vec<String>,
}

impl BlobLocation {
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

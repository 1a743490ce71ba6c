//! Upload sessions: node-local state (never in Raft). The record in RocksDB names the
//! repository and digest algorithm; the bytes so far are the session's file; the running
//! hash lives in memory and is rebuilt from the file after a restart.

use super::{BlobError, BlobStore, Blobs};
use crate::meta::store::{Store, StoreError, CF_LOCAL_UPLOADS};
use meridian_replication::{Algorithm, DigestHasher};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Blob(#[from] BlobError),
    /// The identity already has `limit` sessions open.
    #[error("{owner:?} already has {limit} upload sessions open; finish or cancel some first")]
    TooMany { owner: String, limit: usize },
}

#[derive(Serialize, Deserialize)]
struct SessionRecord {
    repo: String,
    algorithm: String,
    created_unix: u64,
    /// Who opened it (a user or robot, or `addr:<ip>` without auth), for the per-identity cap.
    #[serde(default)]
    owner: String,
}

/// The mutable state of one session; hold its lock for the whole of a PATCH or PUT so
/// chunks of one session apply one at a time.
pub struct SessionState {
    pub id: String,
    pub repo: String,
    pub algorithm: Algorithm,
    /// Bytes received so far (the next chunk must start here).
    pub offset: u64,
    /// Hash of bytes `0..offset`; `None` until rebuilt from the file after a restart.
    hasher: Option<DigestHasher>,
    pub touched: SystemTime,
}

pub type SessionHandle = Arc<tokio::sync::Mutex<SessionState>>;

/// A session id names the node that owns the session: a session's running hash and
/// staged bytes live on that node, so another node of the region passes the session's
/// requests on to it (`api/upload_forward.rs`). The id stays a UUID (clients see it as
/// `Docker-Upload-UUID`): a version-8 UUID whose first 48 bits are the node id and the
/// other 74 free bits random. A version-4 id (sessions from before several nodes per
/// region, or from a node whose id does not fit in 48 bits) names no node: this node's own.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionId {
    /// The owning node; `None` when the id names none.
    pub node: Option<u64>,
}

/// Node ids a session id can carry.
const NODE_BITS: u32 = 48;

impl SessionId {
    pub fn new_for(node: u64) -> String {
        if node >> NODE_BITS != 0 {
            return uuid::Uuid::new_v4().to_string();
        }
        let mut bytes: [u8; 16] = rand::random();
        bytes[..6].copy_from_slice(&node.to_be_bytes()[2..]);
        bytes[6] = 0x80 | (bytes[6] & 0x0f); // version 8
        bytes[8] = 0x80 | (bytes[8] & 0x3f); // RFC 9562 variant
        uuid::Uuid::from_bytes(bytes).to_string()
    }

    /// `None` for anything this registry did not generate (it never touches a path).
    pub fn parse(id: &str) -> Option<SessionId> {
        if id.len() != 36 {
            return None;
        }
        let uuid = uuid::Uuid::parse_str(id).ok()?;
        if uuid.get_version_num() != 8 {
            return Some(SessionId { node: None });
        }
        let mut node = [0u8; 8];
        node[2..].copy_from_slice(&uuid.as_bytes()[..6]);
        Some(SessionId { node: Some(u64::from_be_bytes(node)) })
    }
}

pub struct UploadSessions {
    store: Store,
    /// This node's id, which every session id it creates starts with.
    node_id: u64,
    blobs: Blobs,
    live: Mutex<HashMap<String, SessionHandle>>,
    /// Session id → owner, for every session on disk (rebuilt at start).
    owners: Mutex<HashMap<String, String>>,
    /// Sessions one owner may have open at once (0: no cap).
    per_owner_limit: usize,
}

fn now_unix() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

impl UploadSessions {
    pub fn new(store: Store, blobs: Blobs, node_id: u64, per_owner_limit: usize) -> Result<UploadSessions, SessionError> {
        let mut owners = HashMap::new();
        for (k, v) in store.scan_prefix(CF_LOCAL_UPLOADS, b"", None, usize::MAX)? {
            let owner = serde_json::from_slice::<SessionRecord>(&v).map(|r| r.owner).unwrap_or_default();
            owners.insert(String::from_utf8_lossy(&k).into_owned(), owner);
        }
        Ok(UploadSessions { store, node_id, blobs, live: Mutex::new(HashMap::new()), owners: Mutex::new(owners), per_owner_limit })
    }

    fn owners(&self) -> std::sync::MutexGuard<'_, HashMap<String, String>> {
        self.owners.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn blobs(&self) -> &Blobs {
        &self.blobs
    }

    fn live(&self) -> std::sync::MutexGuard<'_, HashMap<String, SessionHandle>> {
        // A poisoned map only means another request panicked mid-insert; the map itself
        // is still consistent (inserts and removes are single operations).
        self.live.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Opens a session for `owner`, unless it has `per_owner_limit` open already.
    pub async fn create(&self, repo: &str, algorithm: Algorithm, owner: &str) -> Result<String, SessionError> {
        let id = SessionId::new_for(self.node_id);
        {
            // Counted and reserved under one lock, so concurrent POSTs cannot overshoot.
            let mut owners = self.owners();
            let open = owners.values().filter(|o| *o == owner).count();
            if self.per_owner_limit > 0 && open >= self.per_owner_limit {
                return Err(SessionError::TooMany { owner: owner.to_string(), limit: self.per_owner_limit });
            }
            owners.insert(id.clone(), owner.to_string());
        }
        if let Err(e) = tokio::fs::File::create(self.blobs.staging_path(&id)).await {
            self.owners().remove(&id);
            return Err(BlobError::from(e).into());
        }
        let record = SessionRecord {
            repo: repo.to_string(),
            algorithm: algorithm.name().to_string(),
            created_unix: now_unix(),
            owner: owner.to_string(),
        };
        let mut batch = rocksdb::WriteBatch::default();
        batch.put_cf(self.store.cf(CF_LOCAL_UPLOADS)?, id.as_bytes(), serde_json::to_vec(&record).unwrap_or_default());
        self.store.write(batch)?;
        let state = SessionState {
            id: id.clone(),
            repo: repo.to_string(),
            algorithm,
            offset: 0,
            hasher: Some(algorithm.hasher()),
            touched: SystemTime::now(),
        };
        self.live().insert(id.clone(), Arc::new(tokio::sync::Mutex::new(state)));
        Ok(id)
    }

    /// The session `id` of repository `repo`, if it exists. `id` must already be a
    /// validated UUID (it becomes a file name).
    pub async fn get(&self, repo: &str, id: &str) -> Result<Option<SessionHandle>, SessionError> {
        let existing = self.live().get(id).cloned();
        let handle = match existing {
            Some(h) => h,
            None => {
                let Some(raw) = self.store.get(CF_LOCAL_UPLOADS, id.as_bytes())? else { return Ok(None) };
                let record: SessionRecord = serde_json::from_slice(&raw)
                    .map_err(|e| StoreError::Corrupt { cf: CF_LOCAL_UPLOADS, reason: e.to_string() })?;
                let algorithm: Algorithm = record
                    .algorithm
                    .parse()
                    .map_err(|_| StoreError::Corrupt { cf: CF_LOCAL_UPLOADS, reason: "algorithm".into() })?;
                let offset = match tokio::fs::metadata(self.blobs.staging_path(id)).await {
                    Ok(m) => m.len(),
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
                    Err(e) => return Err(BlobError::from(e).into()),
                };
                let state = SessionState {
                    id: id.to_string(),
                    repo: record.repo,
                    algorithm,
                    offset,
                    hasher: None,
                    touched: SystemTime::now(),
                };
                let handle = Arc::new(tokio::sync::Mutex::new(state));
                self.live().entry(id.to_string()).or_insert(handle).clone()
            }
        };
        if handle.lock().await.repo != repo {
            return Ok(None);
        }
        Ok(Some(handle))
    }

    /// Forgets a session and deletes its bytes.
    pub async fn remove(&self, id: &str) -> Result<(), SessionError> {
        self.live().remove(id);
        self.owners().remove(id);
        let mut batch = rocksdb::WriteBatch::default();
        batch.delete_cf(self.store.cf(CF_LOCAL_UPLOADS)?, id.as_bytes());
        self.store.write(batch)?;
        self.blobs.discard(&self.blobs.staging_path(id)).await;
        Ok(())
    }

    /// Forgets a session whose file was already moved into the blob store.
    pub fn forget(&self, id: &str) -> Result<(), SessionError> {
        self.live().remove(id);
        self.owners().remove(id);
        let mut batch = rocksdb::WriteBatch::default();
        batch.delete_cf(self.store.cf(CF_LOCAL_UPLOADS)?, id.as_bytes());
        self.store.write(batch)?;
        Ok(())
    }

    /// Removes sessions idle for longer than `max_idle` (with their bytes).
    pub async fn expire_idle(&self, max_idle: Duration) -> Result<usize, SessionError> {
        let cutoff = now_unix().saturating_sub(max_idle.as_secs());
        let mut expired = Vec::new();
        for (k, v) in self.store.scan_prefix(CF_LOCAL_UPLOADS, b"", None, usize::MAX)? {
            let id = String::from_utf8_lossy(&k).into_owned();
            let touched = match self.live().get(&id).cloned() {
                Some(h) => match h.try_lock() {
                    Ok(s) => s.touched.duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0),
                    Err(_) => continue, // in use right now
                },
                None => serde_json::from_slice::<SessionRecord>(&v).map(|r| r.created_unix).unwrap_or(0),
            };
            if touched < cutoff {
                expired.push(id);
            }
        }
        for id in &expired {
            self.remove(id).await?;
        }
        Ok(expired.len())
    }
}

impl SessionState {
    /// The hash of the bytes so far, rebuilding it from the file when needed.
    pub async fn hasher(&mut self, blobs: &dyn BlobStore) -> Result<DigestHasher, BlobError> {
        if let Some(h) = &self.hasher {
            return Ok(h.clone());
        }
        let rebuilt = super::hash_file(blobs.staging_path(&self.id), self.algorithm.hasher()).await?;
        self.hasher = Some(rebuilt.clone());
        Ok(rebuilt)
    }

    pub fn advance(&mut self, hasher: DigestHasher, written: u64) {
        self.hasher = Some(hasher);
        self.offset += written;
        self.touched = SystemTime::now();
    }
}

#[cfg(test)]
mod tests {
    use super::SessionId;

    #[test]
    fn session_ids_are_uuids_that_name_their_node() {
        for node in [1u64, 7, 65_535, (1 << 48) - 1] {
            let id = SessionId::new_for(node);
            let uuid = uuid::Uuid::parse_str(&id).expect("a UUID");
            assert_eq!(uuid.get_version_num(), 8);
            assert_eq!(SessionId::parse(&id), Some(SessionId { node: Some(node) }));
        }
        assert_ne!(SessionId::new_for(3), SessionId::new_for(3));
        let old = uuid::Uuid::new_v4().to_string();
        assert_eq!(SessionId::parse(&old), Some(SessionId { node: None }), "an earlier session is this node's");
        assert_eq!(SessionId::parse(&SessionId::new_for(1 << 50)), Some(SessionId { node: None }));
        for bad in ["", "../../etc", "1-2", &format!("{old}x"), "zzzzzzzz-zzzz-zzzz-zzzz-zzzzzzzzzzzz"] {
            assert_eq!(SessionId::parse(bad), None, "{bad:?}");
        }
    }
}

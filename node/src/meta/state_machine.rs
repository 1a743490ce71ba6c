//! The replicated state machine: applies commands to the `sm_*` column families.
//!
//! Applying is deterministic: any refusal (an index naming a child manifest that was
//! deleted meanwhile) is decided from the state alone, so every node agrees. Writes here
//! are not synced on their own: the Raft log is, and shares the WAL, so a crash replays
//! whatever the state machine had not yet persisted.

use super::command::{BlobRef, Command, CommandResult, PutManifest};
use super::records::{encode_json, BlobLocation, ReferrerDescriptor, StoredManifest};
use super::store::{
    auth_key, queue_key, repo_key, repo_prefix, SpaceWait, Store, StoreError, CF_LOCAL_REPLICATION_QUEUE, CF_SM_AUTH, QUEUE_BACKFILL, QUEUE_RECENT, CF_SM_BLOBS, CF_SM_BLOB_LINKS, CF_SM_MANIFESTS, CF_SM_META,
    CF_SM_REFERRERS, CF_SM_REPOS, CF_SM_TAGS, STATE_MACHINE_CFS,
};
use super::types::{Entry, LogId, Snapshot, SnapshotMeta, StorageError, StoredMembership, TypeConfig};
use openraft::storage::{RaftSnapshotBuilder, RaftStateMachine};
use openraft::{EntryPayload, OptionalSend, RaftLogId, StorageIOError};
use rocksdb::WriteBatch;
use std::io::Cursor;
use std::path::PathBuf;

const KEY_LAST_APPLIED: &[u8] = b"last_applied";
const KEY_MEMBERSHIP: &[u8] = b"membership";

#[derive(Clone)]
pub struct StateMachine {
    store: Store,
    /// This node's region: applying a manifest from elsewhere queues the blobs it lacks.
    region: String,
    /// Where the current snapshot is kept (`<data_dir>/snapshot`).
    snapshot_path: PathBuf,
}

fn sm_read_err(e: impl std::error::Error + 'static) -> StorageError {
    StorageIOError::read_state_machine(&e).into()
}

fn sm_write_err(e: impl std::error::Error + 'static) -> StorageError {
    StorageIOError::write_state_machine(&e).into()
}

fn snapshot_err(e: impl std::error::Error + 'static) -> StorageError {
    StorageIOError::write_snapshot(None, &e).into()
}

impl StateMachine {
    pub fn new(store: Store, region: String, snapshot_path: PathBuf) -> StateMachine {
        StateMachine { store, region, snapshot_path }
    }

    fn read_json<T: serde::de::DeserializeOwned>(&self, key: &[u8]) -> Result<Option<T>, StorageError> {
        match self.store.get(CF_SM_META, key).map_err(sm_read_err)? {
            Some(bytes) => serde_json::from_slice(&bytes).map(Some).map_err(sm_read_err),
            None => Ok(None),
        }
    }

    /// Adds one command's writes to `batch`; reads see the state before the batch, which
    /// is why `apply` writes each entry's batch before applying the next.
    fn apply_command(&self, batch: &mut WriteBatch, cmd: &Command) -> Result<CommandResult, StoreError> {
        match cmd {
            Command::PutManifest(put) => self.apply_put_manifest(batch, put),
            Command::DeleteManifest { repo, digest } => {
                let key = repo_key(repo, &digest.to_string());
                let Some(raw) = self.store.get(CF_SM_MANIFESTS, &key)? else {
                    return Ok(CommandResult::ManifestUnknown);
                };
                batch.delete_cf(self.store.cf(CF_SM_MANIFESTS)?, &key);
                let digest_str = digest.to_string();
                for (tag_key, value) in self.store.scan_prefix(CF_SM_TAGS, &repo_prefix(repo), None, usize::MAX)? {
                    if value == digest_str.as_bytes() {
                        batch.delete_cf(self.store.cf(CF_SM_TAGS)?, tag_key);
                    }
                }
                let stored = StoredManifest::decode(&raw)?;
                if let Some(subject) = &stored.subject {
                    let rkey = repo_key(repo, &format!("{subject}\0{digest_str}"));
                    batch.delete_cf(self.store.cf(CF_SM_REFERRERS)?, rkey);
                }
                Ok(CommandResult::Applied)
            }
            Command::DeleteTag { repo, tag } => {
                let key = repo_key(repo, tag);
                if !self.store.exists(CF_SM_TAGS, &key)? {
                    return Ok(CommandResult::ManifestUnknown);
                }
                batch.delete_cf(self.store.cf(CF_SM_TAGS)?, key);
                Ok(CommandResult::Applied)
            }
            Command::AddReplicas { region, digests } => {
                for digest in digests {
                    let key = digest.to_string();
                    let Some(raw) = self.store.get(CF_SM_BLOBS, key.as_bytes())? else { continue };
                    let mut location = BlobLocation::decode(&raw)?;
                    if !location.regions.contains(region) {
                        location.regions.push(region.clone());
                        location.regions.sort();
                        batch.put_cf(self.store.cf(CF_SM_BLOBS)?, key.as_bytes(), location.encode());
                    }
                    if region == &self.region {
                        for priority in [QUEUE_RECENT, QUEUE_BACKFILL] {
                            batch.delete_cf(self.store.cf(CF_LOCAL_REPLICATION_QUEUE)?, queue_key(priority, &key));
                        }
                    }
                }
                Ok(CommandResult::Applied)
            }
            Command::DropReplica { region, digest } => {
                let key = digest.to_string();
                let Some(raw) = self.store.get(CF_SM_BLOBS, key.as_bytes())? else {
                    return Ok(CommandResult::BlobUnknown);
                };
                let mut location = BlobLocation::decode(&raw)?;
                location.regions.retain(|r| r != region);
                batch.put_cf(self.store.cf(CF_SM_BLOBS)?, key.as_bytes(), location.encode());
                if region == &self.region {
                    // This region lost its copy: fetch a good one again.
                    batch.put_cf(
                        self.store.cf(CF_LOCAL_REPLICATION_QUEUE)?,
                        queue_key(QUEUE_RECENT, &key),
                        location.size.to_be_bytes(),
                    );
                }
                Ok(CommandResult::Applied)
            }
            Command::PutUser { user, create_only } => {
                let key = auth_key("user", &user.name);
                if *create_only && self.store.exists(CF_SM_AUTH, &key)? {
                    return Ok(CommandResult::AlreadyExists);
                }
                batch.put_cf(self.store.cf(CF_SM_AUTH)?, key, encode_json(user));
                Ok(CommandResult::Applied)
            }
            Command::RemoveUser { name } => self.remove_auth(batch, "user", name),
            Command::AddSigningKey { key } => {
                let k = auth_key("key", &key.kid);
                if self.store.exists(CF_SM_AUTH, &k)? {
                    return Ok(CommandResult::AlreadyExists);
                }
                batch.put_cf(self.store.cf(CF_SM_AUTH)?, k, encode_json(key));
                Ok(CommandResult::Applied)
            }
            Command::RemoveSigningKey { kid } => self.remove_auth(batch, "key", kid),
            Command::PutScopeMap { map } => {
                batch.put_cf(self.store.cf(CF_SM_AUTH)?, auth_key("scopemap", &map.name), encode_json(map));
                Ok(CommandResult::Applied)
            }
            Command::RemoveScopeMap { name } => self.remove_auth(batch, "scopemap", name),
            Command::PutRobot { robot } => {
                batch.put_cf(self.store.cf(CF_SM_AUTH)?, auth_key("robot", &robot.name), encode_json(robot));
                Ok(CommandResult::Applied)
            }
            Command::RemoveRobot { name } => self.remove_auth(batch, "robot", name),
            Command::UnlinkBlob { repo, digest } => {
                let key = repo_key(repo, &digest.to_string());
                if !self.store.exists(CF_SM_BLOB_LINKS, &key)? {
                    return Ok(CommandResult::BlobUnknown);
                }
                batch.delete_cf(self.store.cf(CF_SM_BLOB_LINKS)?, key);
                Ok(CommandResult::Applied)
            }
        }
    }

    /// Deletes an `sm_auth` record; `UserUnknown` when there is none.
    fn remove_auth(&self, batch: &mut WriteBatch, kind: &str, name: &str) -> Result<CommandResult, StoreError> {
        let key = auth_key(kind, name);
        if !self.store.exists(CF_SM_AUTH, &key)? {
            return Ok(CommandResult::UserUnknown);
        }
        batch.delete_cf(self.store.cf(CF_SM_AUTH)?, key);
        Ok(CommandResult::Applied)
    }

    fn apply_put_manifest(&self, batch: &mut WriteBatch, put: &PutManifest) -> Result<CommandResult, StoreError> {
        for child in &put.children {
            if !self.store.exists(CF_SM_MANIFESTS, &repo_key(&put.repo, &child.to_string()))? {
                return Ok(CommandResult::ManifestBlobUnknown(child.clone()));
            }
        }
        let digest = put.digest.to_string();
        for BlobRef { digest: blob, size, held_here } in &put.blobs {
            let blob_key = blob.to_string();
            let mut location = match self.store.get(CF_SM_BLOBS, blob_key.as_bytes())? {
                Some(raw) => BlobLocation::decode(&raw)?,
                None => BlobLocation { size: *size, regions: Vec::new() },
            };
            if *held_here && !location.regions.contains(&put.region) {
                location.regions.push(put.region.clone());
                location.regions.sort();
            }
            if !location.regions.contains(&self.region) {
                // Node-local: this region lacks a referenced blob, so it goes on the
                // replication queue (size, u64 BE).
                batch.put_cf(
                    self.store.cf(CF_LOCAL_REPLICATION_QUEUE)?,
                    queue_key(QUEUE_RECENT, &blob_key),
                    size.to_be_bytes(),
                );
            }
            batch.put_cf(self.store.cf(CF_SM_BLOBS)?, blob_key.as_bytes(), location.encode());
            batch.put_cf(self.store.cf(CF_SM_BLOB_LINKS)?, repo_key(&put.repo, &blob_key), size.to_be_bytes());
        }
        let stored = StoredManifest {
            media_type: put.media_type.clone(),
            subject: put.referrer.as_ref().map(|r| r.subject.to_string()),
            body: put.body.as_bytes().to_vec(),
        };
        batch.put_cf(self.store.cf(CF_SM_MANIFESTS)?, repo_key(&put.repo, &digest), stored.encode());
        for tag in &put.tags {
            batch.put_cf(self.store.cf(CF_SM_TAGS)?, repo_key(&put.repo, tag), digest.as_bytes());
        }
        batch.put_cf(self.store.cf(CF_SM_REPOS)?, put.repo.as_bytes(), b"");
        if let Some(referrer) = &put.referrer {
            let descriptor = ReferrerDescriptor {
                media_type: put.media_type.clone(),
                size: put.body.len() as u64,
                digest: digest.clone(),
                artifact_type: referrer.artifact_type.clone(),
                annotations: referrer.annotations.clone(),
            };
            let key = repo_key(&put.repo, &format!("{}\0{}", referrer.subject, digest));
            let value = serde_json::to_vec(&descriptor)
                .map_err(|e| StoreError::Corrupt { cf: CF_SM_REFERRERS, reason: e.to_string() })?;
            batch.put_cf(self.store.cf(CF_SM_REFERRERS)?, key, value);
        }
        Ok(CommandResult::Applied)
    }

    /// Serializes every state machine column family, in key order, into one buffer.
    fn dump(&self) -> Result<Vec<u8>, StoreError> {
        let mut out = Vec::new();
        for (i, name) in STATE_MACHINE_CFS.iter().enumerate() {
            let cf = self.store.cf(name)?;
            for item in self.store.db().iterator_cf(cf, rocksdb::IteratorMode::Start) {
                let (k, v) = item?;
                out.push(i as u8);
                out.extend_from_slice(&(k.len() as u32).to_be_bytes());
                out.extend_from_slice(&k);
                out.extend_from_slice(&(v.len() as u32).to_be_bytes());
                out.extend_from_slice(&v);
            }
        }
        Ok(out)
    }

    /// The batch that replaces the whole state machine with a dump (atomically, once written).
    fn restore_batch(&self, data: &[u8]) -> Result<WriteBatch, StoreError> {
        let corrupt = |reason: &str| StoreError::Corrupt { cf: CF_SM_META, reason: format!("snapshot: {reason}") };
        let mut batch = WriteBatch::default();
        for name in STATE_MACHINE_CFS {
            let cf = self.store.cf(name)?;
            if let Some(Ok((first, _))) = self.store.db().iterator_cf(cf, rocksdb::IteratorMode::Start).next() {
                // delete_range is exclusive at the end: cover every key with a 0xFF.. bound,
                // then the few keys that sort above it (none with our key grammar).
                batch.delete_range_cf(cf, &first[..], [0xFFu8; 64].as_slice());
            }
        }
        let mut pos = 0usize;
        let take = |pos: &mut usize, n: usize| -> Result<&[u8], StoreError> {
            let end = pos.checked_add(n).filter(|e| *e <= data.len()).ok_or_else(|| corrupt("truncated"))?;
            let s = &data[*pos..end];
            *pos = end;
            Ok(s)
        };
        while pos < data.len() {
            let cf_index = take(&mut pos, 1)?[0] as usize;
            let name = STATE_MACHINE_CFS.get(cf_index).ok_or_else(|| corrupt("unknown column family"))?;
            let klen = u32::from_be_bytes(take(&mut pos, 4)?.try_into().map_err(|_| corrupt("length"))?) as usize;
            let key = take(&mut pos, klen)?.to_vec();
            let vlen = u32::from_be_bytes(take(&mut pos, 4)?.try_into().map_err(|_| corrupt("length"))?) as usize;
            let value = take(&mut pos, vlen)?;
            batch.put_cf(self.store.cf(name)?, key, value);
        }
        Ok(batch)
    }
}

impl RaftSnapshotBuilder<TypeConfig> for StateMachine {
    async fn build_snapshot(&mut self) -> Result<Snapshot, StorageError> {
        // A RocksDB snapshot view would let applies continue meanwhile; openraft already
        // serializes build_snapshot with apply on this state machine, so a plain read is
        // consistent.
        let last_applied: Option<LogId> = self.read_json(KEY_LAST_APPLIED)?;
        let membership: StoredMembership = self.read_json(KEY_MEMBERSHIP)?.unwrap_or_default();
        let data = self.dump().map_err(snapshot_err)?;
        let snapshot_id = match &last_applied {
            Some(id) => format!("{}-{}-{}", id.leader_id, id.index, rand::random::<u32>()),
            None => format!("empty-{}", rand::random::<u32>()),
        };
        let meta = SnapshotMeta { last_log_id: last_applied, last_membership: membership, snapshot_id };
        save_snapshot_waiting_for_space(&self.snapshot_path, &meta, &data).await.map_err(snapshot_err)?;
        Ok(Snapshot { meta, snapshot: Box::new(Cursor::new(data)) })
    }
}

/// Snapshot file: meta JSON length (u32 BE), meta JSON, dump. Written to a temp file,
/// fsynced and renamed, so a crash leaves the old snapshot or the new one.
fn save_snapshot(path: &PathBuf, meta: &SnapshotMeta, data: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    crate::failpoints::io("snapshot-write")?;
    let meta_json = serde_json::to_vec(meta).map_err(std::io::Error::other)?;
    let tmp = path.with_extension("tmp");
    {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(&(meta_json.len() as u32).to_be_bytes())?;
        f.write_all(&meta_json)?;
        f.write_all(data)?;
        f.sync_all()?;
    }
    std::fs::rename(&tmp, path)?;
    if let Some(dir) = path.parent() {
        std::fs::File::open(dir)?.sync_all()?;
    }
    Ok(())
}

/// `save_snapshot`, waiting while the disk is full like every other Raft storage write:
/// openraft stops for good on a snapshot error, and a follower too far behind for the
/// log has no other way to catch up.
async fn save_snapshot_waiting_for_space(path: &PathBuf, meta: &SnapshotMeta, data: &[u8]) -> Result<(), StoreError> {
    SpaceWait::retry(|| save_snapshot(path, meta, data).map_err(StoreError::Refused)).await
}

fn load_snapshot(path: &PathBuf) -> std::io::Result<Option<(SnapshotMeta, Vec<u8>)>> {
    let bytes = match std::fs::read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    let bad = || std::io::Error::new(std::io::ErrorKind::InvalidData, "corrupt snapshot file");
    let len = u32::from_be_bytes(bytes.get(..4).ok_or_else(bad)?.try_into().map_err(|_| bad())?) as usize;
    let meta_json = bytes.get(4..4 + len).ok_or_else(bad)?;
    let meta: SnapshotMeta = serde_json::from_slice(meta_json).map_err(std::io::Error::other)?;
    Ok(Some((meta, bytes[4 + len..].to_vec())))
}

impl RaftStateMachine<TypeConfig> for StateMachine {
    type SnapshotBuilder = StateMachine;

    async fn applied_state(&mut self) -> Result<(Option<LogId>, StoredMembership), StorageError> {
        let last_applied = self.read_json(KEY_LAST_APPLIED)?;
        let membership = self.read_json(KEY_MEMBERSHIP)?.unwrap_or_default();
        Ok((last_applied, membership))
    }

    async fn apply<I>(&mut self, entries: I) -> Result<Vec<CommandResult>, StorageError>
    where
        I: IntoIterator<Item = Entry> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let mut results = Vec::new();
        for entry in entries {
            let log_id = *entry.get_log_id();
            let mut batch = WriteBatch::default();
            let result = match &entry.payload {
                EntryPayload::Blank => CommandResult::Applied,
                EntryPayload::Normal(cmd) => self
                    .apply_command(&mut batch, cmd)
                    .map_err(|e| StorageError::from(StorageIOError::apply(log_id, &e)))?,
                EntryPayload::Membership(m) => {
                    let stored = StoredMembership::new(Some(log_id), m.clone());
                    let bytes = serde_json::to_vec(&stored).map_err(sm_write_err)?;
                    batch.put_cf(self.store.cf(CF_SM_META).map_err(sm_write_err)?, KEY_MEMBERSHIP, bytes);
                    CommandResult::Applied
                }
            };
            let applied = serde_json::to_vec(&Some(log_id)).map_err(sm_write_err)?;
            batch.put_cf(self.store.cf(CF_SM_META).map_err(sm_write_err)?, KEY_LAST_APPLIED, applied);
            // A full disk waits for space, like the log (openraft cannot skip an apply).
            self.store.write_waiting_for_space(batch, false).await.map_err(sm_write_err)?;
            if matches!(&entry.payload, EntryPayload::Normal(cmd) if cmd.is_auth()) {
                self.store.bump_auth_epoch();
            }
            crate::observability::record_raft_applied(log_id.index);
            results.push(result);
        }
        Ok(results)
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        self.clone()
    }

    async fn begin_receiving_snapshot(&mut self) -> Result<Box<Cursor<Vec<u8>>>, StorageError> {
        Ok(Box::new(Cursor::new(Vec::new())))
    }

    async fn install_snapshot(&mut self, meta: &SnapshotMeta, snapshot: Box<Cursor<Vec<u8>>>) -> Result<(), StorageError> {
        let data = snapshot.into_inner();
        let mut batch = self.restore_batch(&data).map_err(snapshot_err)?;
        // The dump carries sm_meta, but the snapshot's own meta is authoritative. One
        // batch: a crash leaves the old state machine or the new one with its meta.
        let cf = self.store.cf(CF_SM_META).map_err(snapshot_err)?;
        batch.put_cf(cf, KEY_LAST_APPLIED, serde_json::to_vec(&meta.last_log_id).map_err(snapshot_err)?);
        batch.put_cf(cf, KEY_MEMBERSHIP, serde_json::to_vec(&meta.last_membership).map_err(snapshot_err)?);
        // A full disk waits for space here, as appends and applies do.
        self.store.write_waiting_for_space(batch, true).await.map_err(snapshot_err)?;
        self.store.bump_auth_epoch();
        save_snapshot_waiting_for_space(&self.snapshot_path, meta, &data).await.map_err(snapshot_err)?;
        Ok(())
    }

    async fn get_current_snapshot(&mut self) -> Result<Option<Snapshot>, StorageError> {
        Ok(load_snapshot(&self.snapshot_path)
            .map_err(|e| StorageError::from(StorageIOError::read_snapshot(None, &e)))?
            .map(|(meta, data)| Snapshot { meta, snapshot: Box::new(Cursor::new(data)) }))
    }
}

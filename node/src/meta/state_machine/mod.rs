//! The replicated state machine: applies commands to the `sm_*` column families.
//!
//! Applying is deterministic: any refusal (an index naming a child manifest that was
//! deleted meanwhile) is decided from the state alone, so every node agrees. Writes here
//! are not synced on their own: the Raft log is, and shares the WAL, so a crash replays
//! whatever the state machine had not yet persisted.

use super::command::{Command, CommandResult};
mod manifests;
mod snapshot_files;
#[cfg(test)]
mod bases_tests;
#[cfg(test)]
mod batch_tests;
#[cfg(test)]
mod events_tests;
#[cfg(test)]
mod snapshot_tests;
#[cfg(test)]
mod test_machine;

use super::completion;
use super::events::{self, EventBook, Outcome};
use super::quotas::{self, Item, QuotaBook};
use super::retention::ActivityBook;
use super::usage::{self, StorageDeltas};
use super::records::{encode_json, BlobLocation};
use super::store::{
    auth_key, queue_key, repo_key, SpaceWait, Store, StoreError, CF_LOCAL_REPLICATION_QUEUE, CF_SM_AUTH, CF_SM_BLOBS,
    CF_SM_BLOB_LINKS, CF_SM_META, QUEUE_BACKFILL, QUEUE_RECENT, STATE_MACHINE_CFS,
};
use super::types::{Entry, LogId, Snapshot, SnapshotMeta, StorageError, StoredMembership, TypeConfig};
use openraft::storage::{RaftSnapshotBuilder, RaftStateMachine};
use openraft::{EntryPayload, OptionalSend, RaftLogId, StorageIOError};
use meridian_replication::Digest;
use rocksdb::WriteBatch;
use snapshot_files::SnapshotFiles;
use std::io::{BufRead, BufReader, Read, Write};
use std::path::Path;

const KEY_LAST_APPLIED: &[u8] = b"last_applied";
const KEY_MEMBERSHIP: &[u8] = b"membership";
/// Present while a snapshot is being restored (its id): the state machine is partial
/// until the key is gone, and a restart restores the current snapshot again.
const KEY_RESTORING: &[u8] = b"restoring";
/// How far the apply of a `Batch` entry got, while it is under way (`BatchProgress`).
const KEY_BATCH_PROGRESS: &[u8] = b"batch_progress";
/// A restore writes the dump in batches of about this many bytes.
const RESTORE_BATCH_BYTES: usize = 8 << 20;

/// The result of a webhook command.
fn outcome(o: Outcome) -> CommandResult {
    match o {
        Outcome::Done => CommandResult::Applied,
        Outcome::AlreadyExists => CommandResult::AlreadyExists,
        Outcome::NotFound => CommandResult::NotFound,
    }
}

/// `sm_meta` key of a region's last garbage-collection sweep.
pub fn gc_report_key(region: &str) -> Vec<u8> {
    format!("gc/{region}").into_bytes()
}

#[derive(Clone)]
pub struct StateMachine {
    pub(super) store: Store,
    /// This node's region: applying a manifest from elsewhere queues the blobs it lacks.
    pub(super) region: String,
    /// Where snapshots are kept (`<data_dir>/snapshots/`).
    snapshots: SnapshotFiles,
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
    /// `data_dir` holds the snapshots (the store may live elsewhere in tests).
    pub fn new(store: Store, region: String, data_dir: &Path) -> StateMachine {
        StateMachine { store, region, snapshots: SnapshotFiles::new(data_dir) }
    }

    fn read_json<T: serde::de::DeserializeOwned>(&self, key: &[u8]) -> Result<Option<T>, StorageError> {
        match self.store.get(CF_SM_META, key).map_err(sm_read_err)? {
            Some(bytes) => serde_json::from_slice(&bytes).map(Some).map_err(sm_read_err),
            None => Ok(None),
        }
    }

    /// Adds one command's writes to `batch`; reads see the state before the batch, which
    /// is why `apply` writes each entry's batch before applying the next.
    /// Events the change causes go into the same batch, through `events`.
    fn apply_command(&self, batch: &mut WriteBatch, cmd: &Command, events: &mut EventBook) -> Result<CommandResult, StoreError> {
        let mut storage = StorageDeltas::default();
        let result = self.apply_command_counting(batch, cmd, &mut storage, events)?;
        for (region, stored) in storage.write(&self.store, batch)? {
            crate::observability::record_region_storage(&region, stored.bytes, stored.blobs);
        }
        Ok(result)
    }

    /// `apply_command`, summing the changes to what each region stores into `storage`.
    fn apply_command_counting(
        &self,
        batch: &mut WriteBatch,
        cmd: &Command,
        storage: &mut StorageDeltas,
        events: &mut EventBook,
    ) -> Result<CommandResult, StoreError> {
        match cmd {
            Command::PutManifest(put) => self.apply_put_manifest(batch, put, storage, events),
            // `apply_batch` applies a batch's commands one by one; a nested one is never
            // proposed, and would be applied as nothing.
            Command::Batch(_) => Ok(CommandResult::Applied),
            Command::DeleteManifest { repo, digest, at_unix, trash_until, only_if_untagged, origin } => {
                let delete = manifests::Delete { at_unix: *at_unix, trash_until: *trash_until, only_if_untagged: *only_if_untagged, origin: origin.as_ref() };
                self.apply_delete_manifest(batch, repo, &digest.to_string(), delete, events)
            }
            Command::DeleteTag { repo, tag, if_digest, origin } => {
                self.apply_delete_tag(batch, repo, tag, if_digest.as_ref(), origin.as_ref(), events)
            }
            Command::RecordPulls { at_unix, pulls } => {
                ActivityBook { store: &self.store }.pulled(batch, pulls, *at_unix)?;
                Ok(CommandResult::Applied)
            }
            Command::PutRetentionPolicy { policy } => {
                ActivityBook { store: &self.store }.put_policy(batch, policy)?;
                Ok(CommandResult::Applied)
            }
            Command::RemoveRetentionPolicy { name } => {
                let removed = ActivityBook { store: &self.store }.remove_policy(batch, name)?;
                Ok(if removed { CommandResult::Applied } else { CommandResult::NotFound })
            }
            Command::RestoreTrash { repo, digest, tag, at_unix, origin } => {
                self.apply_restore(batch, repo, &digest.to_string(), tag.as_deref(), *at_unix, origin.as_ref(), events)
            }
            Command::PurgeTrash { repo, digest, at_unix, expired_only } => {
                self.apply_purge(batch, repo, &digest.to_string(), *at_unix, *expired_only)
            }
            Command::AddReplicas { region, digests, at_ms } => {
                let mut newly = Vec::new();
                for digest in digests {
                    let key = digest.to_string();
                    let Some(raw) = self.store.get(CF_SM_BLOBS, key.as_bytes())? else { continue };
                    let mut location = BlobLocation::decode(&raw)?;
                    if !location.regions.contains(region) {
                        newly.push(key.clone());
                        storage.add(region, location.size);
                        location.regions.push(region.clone());
                        location.regions.sort();
                        batch.put_cf(self.store.cf(CF_SM_BLOBS)?, key.as_bytes(), location.encode());
                    }
                    if region == &self.region {
                        self.dequeue(batch, &key)?;
                    }
                }
                completion::landed(&self.store, batch, events, region, &newly, *at_ms)?;
                Ok(CommandResult::Applied)
            }
            Command::DropReplica { region, digest } => {
                let key = digest.to_string();
                let Some(raw) = self.store.get(CF_SM_BLOBS, key.as_bytes())? else {
                    return Ok(CommandResult::BlobUnknown);
                };
                let mut location = BlobLocation::decode(&raw)?;
                if location.regions.contains(region) {
                    storage.remove(region, location.size);
                }
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
            Command::UnlinkBlob { repo, digest, at_unix } => {
                let key = repo_key(repo, &digest.to_string());
                if !self.store.exists(CF_SM_BLOB_LINKS, &key)? {
                    return Ok(CommandResult::BlobUnknown);
                }
                batch.delete_cf(self.store.cf(CF_SM_BLOB_LINKS)?, key);
                self.drop_repo_reference(batch, &digest.to_string(), *at_unix)?;
                QuotaBook::for_repo(&self.store, repo)?.remove(batch, &[Item::Blob(digest.to_string())])?;
                Ok(CommandResult::Applied)
            }
            Command::CollectBlobs { digests, at_unix, grace_secs } => {
                self.apply_collect(batch, digests, *at_unix, *grace_secs, storage)
            }
            Command::RecordUsage { region, at_unix, keep_from_unix, repos, replicated } => {
                usage::apply_record(&self.store, batch, region, *at_unix, *keep_from_unix, repos, replicated)?;
                Ok(CommandResult::Applied)
            }
            Command::SetQuota { pattern, limit_bytes } => {
                quotas::apply_set(&self.store, batch, pattern, *limit_bytes)?;
                Ok(CommandResult::Applied)
            }
            Command::RemoveQuota { pattern } => Ok(if quotas::apply_remove(&self.store, batch, pattern)? {
                CommandResult::Applied
            } else {
                CommandResult::QuotaUnknown
            }),
            Command::RecordGcSweep { report } => {
                batch.put_cf(self.store.cf(CF_SM_META)?, gc_report_key(&report.region), encode_json(report));
                Ok(CommandResult::Applied)
            }
            Command::PutWebhook { webhook, create_only } => {
                Ok(outcome(events::apply_put(&self.store, batch, events.cursor_here(), webhook, *create_only)?))
            }
            Command::RemoveWebhook { name } => Ok(outcome(events::apply_remove(&self.store, batch, name)?)),
            Command::AckEvents { lane, updates } => {
                events::apply_ack(&self.store, batch, lane, updates)?;
                Ok(CommandResult::Applied)
            }
            Command::ParkEvents { name, lane, from, range } => {
                Ok(outcome(events::apply_park(&self.store, batch, name, lane, *from, range)?))
            }
            Command::ResendParked { name, only } => {
                let only = only.as_ref().map(|(lane, from)| (lane.as_str(), *from));
                Ok(outcome(events::apply_resend(&self.store, batch, name, only)?))
            }
            Command::ParkedDone { name, lane, from, delivered, status } => {
                events::apply_parked_done(&self.store, batch, name, lane, *from, *delivered, status)?;
                Ok(CommandResult::Applied)
            }
            Command::ExpireParked { before_unix } => {
                events::apply_expire_parked(&self.store, batch, *before_unix)?;
                Ok(CommandResult::Applied)
            }
        }
    }

    /// A membership entry: stored; regions it no longer has wait for no image.
    pub(super) fn apply_membership(&self, batch: &mut WriteBatch, stored: StoredMembership) -> Result<(), StoreError> {
        let next: std::collections::BTreeSet<String> = stored.membership().nodes().map(|(_, n)| n.region.clone()).collect();
        completion::regions_left(&self.store, batch, &next)?;
        batch.put_cf(self.store.cf(CF_SM_META)?, KEY_MEMBERSHIP, encode_json(&stored));
        Ok(())
    }

    /// Forgets every listed blob that is still unreferenced and has been for the grace:
    /// its record and this region's queued fetch of it go in this entry, its bytes in
    /// each region's sweep. Anything a manifest or link took back meanwhile stays.
    fn apply_collect(
        &self,
        batch: &mut WriteBatch,
        digests: &[Digest],
        at_unix: u64,
        grace_secs: u64,
        storage: &mut StorageDeltas,
    ) -> Result<CommandResult, StoreError> {
        let (mut blobs, mut bytes) = (0u64, 0u64);
        for digest in digests {
            let key = digest.to_string();
            let Some(raw) = self.store.get(CF_SM_BLOBS, key.as_bytes())? else { continue };
            let location = BlobLocation::decode(&raw)?;
            if !location.collectable(at_unix, grace_secs) {
                continue;
            }
            batch.delete_cf(self.store.cf(CF_SM_BLOBS)?, key.as_bytes());
            self.dequeue(batch, &key)?;
            for region in &location.regions {
                storage.remove(region, location.size);
            }
            blobs += 1;
            bytes += location.size;
        }
        Ok(CommandResult::Collected { blobs, bytes })
    }

    /// Takes `digest` off this region's replication queue, whatever its priority.
    pub(super) fn dequeue(&self, batch: &mut WriteBatch, digest: &str) -> Result<(), StoreError> {
        for priority in [QUEUE_RECENT, QUEUE_BACKFILL] {
            batch.delete_cf(self.store.cf(CF_LOCAL_REPLICATION_QUEUE)?, queue_key(priority, digest));
        }
        Ok(())
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

    /// Writes every state machine column family, in key order, as records of
    /// (family index u8, key length u32 BE, key, value length u32 BE, value).
    #[cfg(test)]
    fn dump_to(&self, out: &mut dyn Write) -> std::io::Result<()> {
        self.dump_view(&self.store.db().snapshot(), out)
    }

    /// Every state machine family as `view` sees it, in the dump format `DumpReader` reads.
    fn dump_view(&self, view: &rocksdb::Snapshot<'_>, out: &mut dyn Write) -> std::io::Result<()> {
        for (i, name) in STATE_MACHINE_CFS.iter().enumerate() {
            let cf = self.store.cf(name).map_err(std::io::Error::other)?;
            let mut options = Store::bulk_read_options();
            options.set_snapshot(view);
            let mut iter = self.store.db().raw_iterator_cf_opt(cf, options);
            iter.seek_to_first();
            while let (Some(k), Some(v)) = (iter.key(), iter.value()) {
                out.write_all(&[i as u8])?;
                out.write_all(&(k.len() as u32).to_be_bytes())?;
                out.write_all(k)?;
                out.write_all(&(v.len() as u32).to_be_bytes())?;
                out.write_all(v)?;
                iter.next();
            }
            iter.status().map_err(std::io::Error::other)?;
        }
        Ok(())
    }

    /// Replaces the whole state machine with the snapshot whose dump is at `data`, in
    /// bounded memory: the families are emptied and the marker set (durably), the dump is
    /// written in batches, then the snapshot's meta lands and the marker goes in one
    /// durable batch. A crash in between leaves the marker, and the next start restores
    /// the (already current) snapshot again.
    async fn restore(&self, meta: &SnapshotMeta, data: &Path) -> Result<(), StoreError> {
        let meta_cf = self.store.cf(CF_SM_META)?;
        let mut batch = WriteBatch::default();
        for name in STATE_MACHINE_CFS {
            let cf = self.store.cf(name)?;
            if let Some(Ok((first, _))) = self.store.db().iterator_cf(cf, rocksdb::IteratorMode::Start).next() {
                // delete_range is exclusive at the end: cover every key with a 0xFF.. bound
                // (no key of our grammar sorts above it).
                batch.delete_range_cf(cf, &first[..], [0xFFu8; 64].as_slice());
            }
        }
        batch.put_cf(meta_cf, KEY_RESTORING, meta.snapshot_id.as_bytes());
        self.store.write_waiting_for_space(batch, true).await?;

        let mut records = DumpReader::open(data)?;
        let mut batch = WriteBatch::default();
        while let Some((cf_index, key, value)) = records.next()? {
            batch.put_cf(self.store.cf(STATE_MACHINE_CFS[cf_index])?, key, value);
            if batch.size_in_bytes() >= RESTORE_BATCH_BYTES {
                self.store.write_waiting_for_space(std::mem::take(&mut batch), false).await?;
            }
        }
        // The dump carries sm_meta, but the snapshot's own meta is authoritative.
        batch.put_cf(meta_cf, KEY_LAST_APPLIED, encode_json(&meta.last_log_id));
        batch.put_cf(meta_cf, KEY_MEMBERSHIP, encode_json(&meta.last_membership));
        batch.delete_cf(meta_cf, KEY_RESTORING);
        self.store.write_waiting_for_space(batch, true).await
    }

    /// Finishes a restore a crash interrupted (see `restore`), before anything reads the
    /// state machine.
    pub(super) async fn finish_interrupted_restore(&self) -> Result<(), StoreError> {
        if self.store.get(CF_SM_META, KEY_RESTORING)?.is_none() {
            return Ok(());
        }
        let (meta, data) = self.snapshots.current()?.ok_or_else(|| StoreError::Corrupt {
            cf: CF_SM_META,
            reason: "a snapshot restore was interrupted and the snapshot is gone".into(),
        })?;
        tracing::warn!(snapshot = %meta.snapshot_id, "a snapshot restore was interrupted: restoring it again");
        self.restore(&meta, &data).await?;
        self.after_restore();
        Ok(())
    }

    /// What a new state machine invalidates: cached identities, and blobs this region
    /// stores that the snapshot may have forgotten.
    fn after_restore(&self) {
        self.store.bump_auth_epoch();
        self.store.notify_collected();
        self.store.notify_events();
    }
}

/// Reads a dump (see `dump_to`) record by record through a buffer.
struct DumpReader {
    reader: BufReader<std::fs::File>,
    key: Vec<u8>,
    value: Vec<u8>,
}

impl DumpReader {
    fn open(path: &Path) -> Result<DumpReader, StoreError> {
        let reader = BufReader::with_capacity(1 << 20, std::fs::File::open(path)?);
        Ok(DumpReader { reader, key: Vec::new(), value: Vec::new() })
    }

    /// The next record: its family's index in `STATE_MACHINE_CFS`, key and value.
    fn next(&mut self) -> Result<Option<(usize, &[u8], &[u8])>, StoreError> {
        let corrupt = |reason: &str| StoreError::Corrupt { cf: CF_SM_META, reason: format!("snapshot: {reason}") };
        if self.reader.fill_buf()?.is_empty() {
            return Ok(None);
        }
        let mut cf_index = [0u8; 1];
        self.reader.read_exact(&mut cf_index)?;
        let cf_index = cf_index[0] as usize;
        if cf_index >= STATE_MACHINE_CFS.len() {
            return Err(corrupt("unknown column family"));
        }
        read_field(&mut self.reader, &mut self.key).map_err(|_| corrupt("truncated"))?;
        read_field(&mut self.reader, &mut self.value).map_err(|_| corrupt("truncated"))?;
        Ok(Some((cf_index, &self.key, &self.value)))
    }

    /// Reads a whole dump, so one that is cut short or garbled is refused before the state
    /// machine is touched.
    fn check(path: &Path) -> Result<(), StoreError> {
        let mut records = DumpReader::open(path)?;
        while records.next()?.is_some() {}
        Ok(())
    }
}

/// Reads one length-prefixed (u32 BE) field of a dump into `buf`.
fn read_field(reader: &mut impl Read, buf: &mut Vec<u8>) -> std::io::Result<()> {
    let mut len = [0u8; 4];
    reader.read_exact(&mut len)?;
    buf.resize(u32::from_be_bytes(len) as usize, 0);
    reader.read_exact(buf)
}

impl RaftSnapshotBuilder<TypeConfig> for StateMachine {
    async fn build_snapshot(&mut self) -> Result<Snapshot, StorageError> {
        // Streamed to disk, never whole in memory. A full disk waits for space like every
        // other Raft storage write: openraft stops for good on a snapshot error, and a
        // follower too far behind for the log has no other way to catch up.
        let (meta, path) = SpaceWait::retry(|| self.write_snapshot()).await.map_err(snapshot_err)?;
        let data = tokio::fs::File::open(&path).await.map_err(snapshot_err)?;
        Ok(Snapshot { meta, snapshot: Box::new(data) })
    }
}

impl StateMachine {
    /// Writes a snapshot of one point-in-time view of the state machine. openraft 0.9 runs
    /// `build_snapshot` in a task of its own while entries go on being applied, so reading
    /// the live families would mix states: a follower installing such a snapshot would
    /// apply again entries whose effects it already holds. A RocksDB snapshot pins the
    /// view; `last_applied`, the membership and every family are read from it. A view
    /// taken between two commands of a batch carries its progress record (`sm_meta`), so
    /// whoever installs it resumes that batch where the view left it.
    fn write_snapshot(&self) -> Result<(SnapshotMeta, std::path::PathBuf), StoreError> {
        let view = self.store.db().snapshot();
        let meta_cf = self.store.cf(CF_SM_META)?;
        let read = |key: &[u8]| -> Result<Option<Vec<u8>>, StoreError> { Ok(view.get_cf(meta_cf, key)?) };
        let corrupt = |e: serde_json::Error| StoreError::Corrupt { cf: CF_SM_META, reason: e.to_string() };
        let last_applied: Option<LogId> = match read(KEY_LAST_APPLIED)? {
            Some(bytes) => serde_json::from_slice(&bytes).map_err(corrupt)?,
            None => None,
        };
        let membership: StoredMembership = match read(KEY_MEMBERSHIP)? {
            Some(bytes) => serde_json::from_slice(&bytes).map_err(corrupt)?,
            None => StoredMembership::default(),
        };
        let snapshot_id = match &last_applied {
            Some(id) => format!("{}-{}-{}", id.leader_id, id.index, rand::random::<u32>()),
            None => format!("empty-{}", rand::random::<u32>()),
        };
        let meta = SnapshotMeta { last_log_id: last_applied, last_membership: membership, snapshot_id };
        let path = self.snapshots.write(&meta, |out| self.dump_view(&view, out))?;
        Ok((meta, path))
    }
}

/// How far the apply of a `Batch` entry got: written with every command's write but the
/// last, removed with the last (see `StateMachine::apply_batch`).
#[derive(serde::Serialize, serde::Deserialize)]
struct BatchProgress {
    index: u64,
    /// Commands already written.
    next: usize,
    /// Events they wrote (the next one's number within the entry).
    events: u32,
}

impl StateMachine {
    /// One entry, one write: its changes, its events and `last_applied` together.
    async fn apply_entry(&self, log_id: LogId, payload: &EntryPayload<TypeConfig>) -> Result<CommandResult, StorageError> {
        let mut batch = WriteBatch::default();
        let mut events = EventBook::new(&self.store, log_id.index);
        let result = match payload {
            EntryPayload::Blank => CommandResult::Applied,
            EntryPayload::Normal(cmd) => self
                .apply_command(&mut batch, cmd, &mut events)
                .map_err(|e| StorageError::from(StorageIOError::apply(log_id, &e)))?,
            EntryPayload::Membership(m) => {
                self.apply_membership(&mut batch, StoredMembership::new(Some(log_id), m.clone())).map_err(sm_write_err)?;
                CommandResult::Applied
            }
        };
        self.put_last_applied(&mut batch, log_id)?;
        // A full disk waits for space, like the log (openraft cannot skip an apply).
        self.store.write_waiting_for_space(batch, false).await.map_err(sm_write_err)?;
        if let EntryPayload::Normal(cmd) = payload {
            self.after_apply(cmd, &result, events.written);
        }
        Ok(result)
    }

    /// A batch's commands in order, one write each, so each reads what the ones before it
    /// wrote (the apply code reads the store, not the pending write). Every write but the
    /// last records how far the batch got (`BatchProgress`); the last sets `last_applied`
    /// and drops the record. After a crash in between, openraft applies the entry again
    /// (it is past `last_applied`): what is written is skipped, and events are numbered on
    /// from where they stopped, so every node ends with the same state and event keys.
    async fn apply_batch(&self, log_id: LogId, cmds: &[Command]) -> Result<CommandResult, StorageError> {
        self.apply_batch_steps(log_id, cmds, usize::MAX).await
    }

    /// `apply_batch`, writing at most `steps` commands (tests stop there, as a crash would).
    async fn apply_batch_steps(&self, log_id: LogId, cmds: &[Command], mut steps: usize) -> Result<CommandResult, StorageError> {
        let progress = self.read_json::<BatchProgress>(KEY_BATCH_PROGRESS)?.filter(|p| p.index == log_id.index);
        let (done, mut events_written) = progress.map_or((0, 0), |p| (p.next, p.events));
        let meta_cf = self.store.cf(CF_SM_META).map_err(sm_write_err)?;
        let mut results = Vec::with_capacity(cmds.len());
        for (i, cmd) in cmds.iter().enumerate() {
            if i < done {
                // Written before a crash; nobody waits for its result any more.
                results.push(CommandResult::Applied);
                continue;
            }
            if steps == 0 {
                break;
            }
            steps -= 1;
            let mut batch = WriteBatch::default();
            // A fresh book per command: one before it may have changed the webhooks.
            let mut events = EventBook::new(&self.store, log_id.index);
            events.written = events_written;
            events.batched = true;
            let result = match cmd {
                // Never proposed; applied as nothing, the same way on every node.
                Command::Batch(_) => CommandResult::Applied,
                cmd => self
                    .apply_command(&mut batch, cmd, &mut events)
                    .map_err(|e| StorageError::from(StorageIOError::apply(log_id, &e)))?,
            };
            if i + 1 == cmds.len() {
                self.put_last_applied(&mut batch, log_id)?;
                batch.delete_cf(meta_cf, KEY_BATCH_PROGRESS);
            } else {
                let progress = BatchProgress { index: log_id.index, next: i + 1, events: events.written };
                batch.put_cf(meta_cf, KEY_BATCH_PROGRESS, encode_json(&progress));
            }
            self.store.write_waiting_for_space(batch, false).await.map_err(sm_write_err)?;
            self.after_apply(cmd, &result, events.written - events_written);
            events_written = events.written;
            results.push(result);
        }
        if cmds.is_empty() {
            let mut batch = WriteBatch::default();
            self.put_last_applied(&mut batch, log_id)?;
            self.store.write_waiting_for_space(batch, false).await.map_err(sm_write_err)?;
        }
        Ok(CommandResult::Batch(results))
    }

    fn put_last_applied(&self, batch: &mut WriteBatch, log_id: LogId) -> Result<(), StorageError> {
        let applied = serde_json::to_vec(&Some(log_id)).map_err(sm_write_err)?;
        batch.put_cf(self.store.cf(CF_SM_META).map_err(sm_write_err)?, KEY_LAST_APPLIED, applied);
        Ok(())
    }

    /// What an applied command tells the rest of the node: identities changed, events to
    /// deliver, blobs to sweep.
    fn after_apply(&self, cmd: &Command, result: &CommandResult, events_written: u32) {
        if cmd.is_auth() {
            self.store.bump_auth_epoch();
        }
        if events_written > 0 || cmd.is_events() {
            self.store.notify_events();
        }
        if matches!(result, CommandResult::Collected { blobs, .. } if *blobs > 0) {
            self.store.notify_collected();
        }
    }
}

impl RaftStateMachine<TypeConfig> for StateMachine {
    type SnapshotBuilder = StateMachine;

    async fn applied_state(&mut self) -> Result<(Option<LogId>, StoredMembership), StorageError> {
        // openraft asks this first at startup: a restore cut short must be finished first.
        self.finish_interrupted_restore().await.map_err(sm_read_err)?;
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
            let result = match &entry.payload {
                EntryPayload::Normal(Command::Batch(cmds)) => self.apply_batch(log_id, cmds).await?,
                payload => self.apply_entry(log_id, payload).await?,
            };
            crate::observability::record_raft_applied(log_id.index);
            results.push(result);
        }
        Ok(results)
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        self.clone()
    }

    async fn begin_receiving_snapshot(&mut self) -> Result<Box<tokio::fs::File>, StorageError> {
        let file = self.snapshots.begin_receiving().map_err(snapshot_err)?;
        Ok(Box::new(tokio::fs::File::from_std(file)))
    }

    async fn install_snapshot(&mut self, meta: &SnapshotMeta, snapshot: Box<tokio::fs::File>) -> Result<(), StorageError> {
        use tokio::io::AsyncWriteExt;
        let mut received = *snapshot;
        // tokio's File buffers a write in flight: flush it before the fsync.
        received.flush().await.map_err(snapshot_err)?;
        received.sync_all().await.map_err(snapshot_err)?;
        drop(received);
        DumpReader::check(&self.snapshots.receiving_path()).map_err(snapshot_err)?;
        // Current first, then restored: a crash in the restore finds it (see `restore`).
        let data = SpaceWait::retry(|| self.snapshots.adopt_received(meta).map_err(StoreError::Refused))
            .await
            .map_err(snapshot_err)?;
        self.restore(meta, &data).await.map_err(snapshot_err)?;
        self.after_restore();
        Ok(())
    }

    async fn get_current_snapshot(&mut self) -> Result<Option<Snapshot>, StorageError> {
        let read_err = |e: std::io::Error| StorageError::from(StorageIOError::read_snapshot(None, &e));
        let Some((meta, path)) = self.snapshots.current().map_err(read_err)? else {
            return Ok(None);
        };
        // An open file, not its bytes: openraft reads it as it sends it.
        let data = tokio::fs::File::open(&path).await.map_err(read_err)?;
        Ok(Some(Snapshot { meta, snapshot: Box::new(data) }))
    }
}

#[cfg(test)]
mod tests {
    //! Reference counting and collection at apply time: what every region decides alike.
    use super::*;
    use crate::meta::command::{BlobRef, PutManifest};
    use meridian_replication::Algorithm;

    fn machine() -> (tempfile::TempDir, StateMachine) {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("db")).unwrap();
        let sm = StateMachine::new(store, "us".into(), dir.path());
        (dir, sm)
    }

    fn apply(sm: &StateMachine, cmd: Command) -> CommandResult {
        static INDEX: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
        let mut batch = WriteBatch::default();
        let mut events = EventBook::new(&sm.store, INDEX.fetch_add(1, std::sync::atomic::Ordering::Relaxed));
        let result = sm.apply_command(&mut batch, &cmd, &mut events).unwrap();
        sm.store.write(batch).unwrap();
        result
    }

    fn digest(seed: &str) -> Digest {
        Digest::of_bytes(Algorithm::Sha256, seed.as_bytes())
    }

    fn put(repo: &str, manifest: &str, blobs: &[(&Digest, bool)]) -> Command {
        Command::PutManifest(PutManifest {
            repo: repo.into(),
            digest: digest(manifest),
            media_type: "application/vnd.oci.image.manifest.v1+json".into(),
            body: manifest.into(),
            tags: vec![],
            blobs: blobs.iter().map(|(d, held)| BlobRef { digest: (*d).clone(), size: 10, held_here: *held }).collect(),
            children: vec![],
            referrer: None,
            region: "us".into(),
            at_unix: 0,
            origin: None,
            image: None,
        })
    }

    fn location(sm: &StateMachine, d: &Digest) -> Option<BlobLocation> {
        sm.store.blob_location(d).unwrap()
    }

    #[test]
    fn collectable_blobs_come_in_pages_in_digest_order() {
        let (_dir, sm) = machine();
        let mut all: Vec<Digest> = ["p", "q", "r"].iter().map(|s| digest(s)).collect();
        assert_eq!(apply(&sm, put("r", "a", &[(&all[0], true), (&all[1], true), (&all[2], true)])), CommandResult::Applied);
        apply(&sm, Command::DeleteManifest { repo: "r".into(), digest: digest("a"), at_unix: 1000, trash_until: None, only_if_untagged: false, origin: None });
        all.sort_by_key(|d| d.to_string());
        let page = |after: Option<&Digest>| -> Vec<Digest> {
            sm.store.collectable_blobs(2000, 60, after, 2).unwrap().into_iter().map(|(d, _)| d).collect()
        };
        assert_eq!(page(None), all[..2].to_vec());
        assert_eq!(page(Some(&all[1])), all[2..].to_vec());
        assert_eq!(page(Some(&all[2])), Vec::<Digest>::new());
    }

    #[test]
    fn references_are_counted_and_only_unreferenced_blobs_past_the_grace_are_collected() {
        let (_dir, sm) = machine();
        let (x, y) = (digest("x"), digest("y"));
        // Two manifests of one repository share x; y is a's alone (named twice: counted once).
        assert_eq!(apply(&sm, put("r", "a", &[(&x, true), (&y, true), (&y, true)])), CommandResult::Applied);
        assert_eq!(apply(&sm, put("r", "b", &[(&x, true)])), CommandResult::Applied);
        // Pushing a again changes nothing.
        assert_eq!(apply(&sm, put("r", "a", &[(&x, true), (&y, true)])), CommandResult::Applied);
        assert_eq!(location(&sm, &x).unwrap().links, Some(1));
        apply(&sm, Command::DeleteManifest { repo: "r".into(), digest: digest("a"), at_unix: 1000, trash_until: None, only_if_untagged: false, origin: None });
        let lx = location(&sm, &x).unwrap();
        let ly = location(&sm, &y).unwrap();
        assert_eq!((lx.links, lx.unreferenced_since), (Some(1), None), "b still references x");
        assert_eq!((ly.links, ly.unreferenced_since), (Some(0), Some(1000)));
        assert_eq!(sm.store.collectable_blobs(1000 + 60, 60, None, 100).unwrap(), vec![], "within the grace");
        assert_eq!(sm.store.collectable_blobs(1000 + 61, 60, None, 100).unwrap(), vec![(y.clone(), 10)]);

        // A collection re-checks at apply: x is referenced, y goes (and from the queue).
        let collect = |at| Command::CollectBlobs { digests: vec![x.clone(), y.clone()], at_unix: at, grace_secs: 60 };
        assert_eq!(apply(&sm, collect(1030)), CommandResult::Collected { blobs: 0, bytes: 0 }, "too early");
        assert_eq!(apply(&sm, collect(1061)), CommandResult::Collected { blobs: 1, bytes: 10 });
        assert!(location(&sm, &y).is_none());
        assert!(location(&sm, &x).is_some());

        // A push ordered after the collection that names y: refused unless it brings y.
        assert_eq!(apply(&sm, put("r", "c", &[(&y, false)])), CommandResult::ManifestBlobUnknown(y.clone()));
        assert_eq!(sm.store.manifest("r", &digest("c")).unwrap(), None, "nothing half-written");
        assert_eq!(apply(&sm, put("r", "c", &[(&y, true)])), CommandResult::Applied);
        assert_eq!(location(&sm, &y).unwrap().links, Some(1));
    }

    #[test]
    fn a_blob_referenced_again_within_the_grace_is_not_collected() {
        let (_dir, sm) = machine();
        let x = digest("x");
        apply(&sm, put("r", "a", &[(&x, true)]));
        apply(&sm, Command::DeleteManifest { repo: "r".into(), digest: digest("a"), at_unix: 1000, trash_until: None, only_if_untagged: false, origin: None });
        // Another repository references x before the collection is applied.
        apply(&sm, put("s", "b", &[(&x, false)]));
        let collect = Command::CollectBlobs { digests: vec![x.clone()], at_unix: 5000, grace_secs: 60 };
        assert_eq!(apply(&sm, collect), CommandResult::Collected { blobs: 0, bytes: 0 });
        // Unlinking the last repository's link makes it unreferenced again.
        apply(&sm, Command::UnlinkBlob { repo: "s".into(), digest: x.clone(), at_unix: 6000 });
        assert_eq!(location(&sm, &x).unwrap().unreferenced_since, Some(6000));
    }

    fn quota_used(sm: &StateMachine, pattern: &str) -> u64 {
        sm.store.quotas().unwrap().into_iter().find(|q| q.pattern == pattern).map(|q| q.used_bytes).unwrap()
    }

    #[test]
    fn quotas_count_distinct_items_and_the_trash_keeps_them_until_purged() {
        let (_dir, sm) = machine();
        let (x, y) = (digest("x"), digest("y"));
        assert_eq!(apply(&sm, put("ns/a", "a", &[(&x, true)])), CommandResult::Applied);
        // A quota set afterwards counts what is there: blob x (10) and manifest a (1 byte).
        apply(&sm, Command::SetQuota { pattern: "ns/*".into(), limit_bytes: 30 });
        assert_eq!(quota_used(&sm, "ns/*"), 11);
        // Another repository of the namespace sharing x adds only its manifest; y fits.
        assert_eq!(apply(&sm, put("ns/b", "b", &[(&x, true), (&y, true)])), CommandResult::Applied);
        assert_eq!(quota_used(&sm, "ns/*"), 11 + 1 + 10);
        // 30 - 22 = 8 left: a new 10-byte blob does not fit, and nothing is written.
        let z = digest("z");
        match apply(&sm, put("ns/a", "c", &[(&z, true)])) {
            CommandResult::QuotaExceeded(q) => assert_eq!((q.used_bytes, q.limit_bytes, q.adding_bytes), (22, 30, 11)),
            other => panic!("{other:?}"),
        }
        assert!(location(&sm, &z).is_none(), "a refused push leaves no blob record");
        // Into the trash: still counted; purged: b's own items go, x stays (a has it).
        let trash = Command::DeleteManifest { repo: "ns/b".into(), digest: digest("b"), at_unix: 100, trash_until: Some(200), only_if_untagged: false, origin: None };
        assert_eq!(apply(&sm, trash), CommandResult::Applied);
        assert_eq!(quota_used(&sm, "ns/*"), 22);
        assert_eq!(location(&sm, &y).unwrap().links, Some(1), "a trashed manifest keeps its blobs referenced");
        let early = Command::PurgeTrash { repo: "ns/b".into(), digest: digest("b"), at_unix: 150, expired_only: true };
        apply(&sm, early);
        assert_eq!(sm.store.trash(None).unwrap().len(), 1, "not expired yet");
        let due = Command::PurgeTrash { repo: "ns/b".into(), digest: digest("b"), at_unix: 200, expired_only: true };
        apply(&sm, due);
        assert!(sm.store.trash(None).unwrap().is_empty());
        assert_eq!(quota_used(&sm, "ns/*"), 11);
        assert_eq!(location(&sm, &y).unwrap().unreferenced_since, Some(200));
        assert_eq!(location(&sm, &x).unwrap().links, Some(1));
    }

    #[test]
    fn a_manifest_deleted_for_good_while_an_older_copy_is_in_the_trash_releases_each_copy_once() {
        let (_dir, sm) = machine();
        let x = digest("x");
        let delete = |trash_until| Command::DeleteManifest {
            repo: "r".into(),
            digest: digest("a"),
            at_unix: 100,
            trash_until,
            only_if_untagged: false,
            origin: None,
        };
        apply(&sm, put("r", "a", &[(&x, true)]));
        assert_eq!(apply(&sm, delete(Some(500))), CommandResult::Applied);
        // Pushed again, then deleted for good: only the live copy's reference goes.
        apply(&sm, put("r", "a", &[(&x, true)]));
        assert_eq!(apply(&sm, delete(None)), CommandResult::Applied);
        assert_eq!(sm.store.trash(None).unwrap().len(), 1, "the older copy stays in the trash");
        let lx = location(&sm, &x).unwrap();
        assert_eq!((lx.links, lx.unreferenced_since), (Some(1), None), "the trashed copy still references x");
        // Purged: the last reference goes, and x becomes collectable.
        let purge = Command::PurgeTrash { repo: "r".into(), digest: digest("a"), at_unix: 600, expired_only: true };
        assert_eq!(apply(&sm, purge), CommandResult::Applied);
        let lx = location(&sm, &x).unwrap();
        assert_eq!((lx.links, lx.unreferenced_since), (Some(0), Some(600)));
    }
}

//! Restoring a whole cluster from a backup: turns a stopped copy of one region's
//! `data_dir` into the first region of a new cluster (`meridian restore`).
//!
//! A copy of any region's data directory holds all of the cluster's metadata — the state
//! machine is the same everywhere — but also its membership, so a node started from it
//! would wait forever for a quorum of regions that are gone. Restoring rewrites, offline
//! and through the same apply code as Raft entries:
//!
//! * each blob's holders: the other regions' copies went with them (`DropReplica`), so
//!   they are neither fetched from nor counted; blobs no surviving copy holds are
//!   reported (their manifests stay, their bytes are not in this backup);
//! * first, the log entries past the applied point (committed writes not yet applied when
//!   the copy was taken, and the unanswered tail);
//! * the membership: this node alone, as its configuration describes it now (the restore
//!   may run on another host with other addresses).
//!
//! The Raft log and vote of the old cluster are dropped and so are its snapshot files
//! (their membership is the old one): the node starts with the state machine ahead of an
//! empty log, elects itself and serves. Other regions then join it as new ones.

use super::command::Command;
use super::records::BlobLocation;
use super::state_machine::StateMachine;
use super::log_store::LogStore;
use super::store::{Store, StoreError, CF_SM_BLOBS};
use super::types::{Entry, NodeInfo, Vote};
use meridian_replication::Digest;
use openraft::storage::{RaftLogReader, RaftStateMachine};
use openraft::{EntryPayload, Membership};
use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

#[derive(Debug, thiserror::Error)]
pub enum RestoreError {
    #[error("the data directory has no applied Raft state: nothing to restore")]
    NotInitialized,
    #[error("this copy is of region {found:?}, not {expected:?}: restore a region under its own name")]
    OtherRegion { found: String, expected: String },
    #[error("state machine: {0}")]
    StateMachine(String),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("removing the old snapshots: {0}")]
    Snapshots(std::io::Error),
}

/// What a restore did.
#[derive(Debug, Default)]
pub struct Restored {
    /// The applied index the metadata was restored at.
    pub applied_index: u64,
    /// Log entries past the copy's applied point, applied by the restore.
    pub replayed_entries: u64,
    /// Regions of the old cluster that are no longer members.
    pub dropped_regions: Vec<String>,
    /// Blobs whose only copies were in those regions (bytes not in this backup).
    pub lost_blobs: u64,
    pub lost_bytes: u64,
}

/// Restores the stopped copy in `data_dir` as the single region `me` (node `node_id`).
pub async fn restore(data_dir: &Path, node_id: u64, me: NodeInfo) -> Result<Restored, RestoreError> {
    let store = Store::open(&data_dir.join("db"))?;
    let mut sm = StateMachine::new(store.clone(), me.region.clone(), data_dir);
    let (last, membership) = sm.applied_state().await.map_err(|e| RestoreError::StateMachine(e.to_string()))?;
    let mut last = last.ok_or(RestoreError::NotInitialized)?;
    let old_regions: BTreeSet<String> = membership.membership().nodes().map(|(_, n)| n.region.clone()).collect();
    // Whose copy this is: recorded at the node's first start (older directories lack it;
    // then the region must at least have been a member).
    let owner = store.owner_region()?;
    if owner.as_ref().is_some_and(|o| *o != me.region) || !old_regions.contains(&me.region) {
        let found = owner.unwrap_or_else(|| old_regions.iter().cloned().collect::<Vec<_>>().join(", "));
        return Err(RestoreError::OtherRegion { found, expected: me.region });
    }

    let mut restored = Restored { dropped_regions: old_regions.iter().filter(|r| **r != me.region).cloned().collect(), ..Restored::default() };
    // First what the log holds past the applied point: writes acknowledged (committed)
    // but not yet applied when the copy was taken — a crash-consistent copy has some, as
    // state-machine writes are not synced — and the uncommitted tail, whose clients got
    // no answer (their outcome was unknown; this is the last copy of them).
    let mut log = LogStore::new(store.clone());
    let pending = log.try_get_log_entries(last.index + 1..).await.map_err(|e| RestoreError::StateMachine(e.to_string()))?;
    if let Some(tail) = pending.last() {
        last = tail.log_id;
        restored.replayed_entries = pending.len() as u64;
        sm.apply(pending).await.map_err(|e| RestoreError::StateMachine(e.to_string()))?;
    }

    // Every other region's copies are gone with it.
    let mut commands = Vec::new();
    for item in store.db().iterator_cf_opt(store.cf(CF_SM_BLOBS)?, Store::bulk_read_options(), rocksdb::IteratorMode::Start) {
        let (key, raw) = item.map_err(StoreError::from)?;
        let location = BlobLocation::decode(&raw)?;
        let Some(digest) = std::str::from_utf8(&key).ok().and_then(|k| Digest::parse(k).ok()) else { continue };
        if !location.regions.contains(&me.region) && !location.regions.is_empty() {
            restored.lost_blobs += 1;
            restored.lost_bytes += location.size;
        }
        for region in location.regions.iter().filter(|r| **r != me.region) {
            commands.push(Command::DropReplica { region: region.clone(), digest: digest.clone() });
        }
    }
    let mut entries = Vec::with_capacity(commands.len() + 1);
    for cmd in commands {
        last.index += 1;
        entries.push(Entry { log_id: last, payload: EntryPayload::Normal(cmd) });
    }
    last.index += 1;
    let alone = Membership::new(vec![BTreeSet::from([node_id])], BTreeMap::from([(node_id, me)]));
    entries.push(Entry { log_id: last, payload: EntryPayload::Membership(alone) });
    sm.apply(entries).await.map_err(|e| RestoreError::StateMachine(e.to_string()))?;
    restored.applied_index = last.index;

    // The old cluster's log, vote and commit point: none of it applies to the new one. A
    // vote past every term of the old log: the node's first election then takes a term
    // above its entries' (a log only ever moves to greater leader ids).
    log.start_over(&Vote::new(last.leader_id.term + 1, node_id))?;
    store.db().flush_wal(true).map_err(StoreError::from)?;
    drop(sm);
    match std::fs::remove_dir_all(data_dir.join("snapshots")) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(RestoreError::Snapshots(e)),
    }
    Ok(restored)
}

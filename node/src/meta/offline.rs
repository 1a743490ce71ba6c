//! Bulk loading: applies commands to a stopped one-node region's state machine as if its
//! Raft group had committed them.
//!
//! Benchmarks need states far larger than the API can push in reasonable time (a million
//! manifests take about twenty minutes of PUTs on this machine; this path takes about a
//! minute). The commands are the ones proposals carry and go through the same apply code,
//! so the state is exactly what those proposals would have built. The entries get the
//! indexes after the last applied one; on the next start openraft finds the state machine
//! ahead of its log and purges the log up to it. Only a lone voter may be loaded this
//! way: other members would never see the entries.

use super::command::{Command, CommandResult};
use super::state_machine::StateMachine;
use super::store::{Store, StoreError};
use super::types::{Entry, LogId};
use openraft::storage::RaftStateMachine;
use openraft::EntryPayload;
use std::path::Path;

#[derive(Debug, thiserror::Error)]
pub enum OfflineError {
    #[error("the data directory has no Raft state yet: start the region once with `meridian serve`, stop it, then load")]
    NotInitialized,
    #[error("the region is one of {0} voters: bulk loading would bypass the others")]
    NotAlone(usize),
    #[error("the data directory belongs to region {owner:?}, not {region:?}")]
    OtherRegion { owner: String, region: String },
    #[error("state machine: {0}")]
    StateMachine(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

pub struct OfflineLoader {
    sm: StateMachine,
    last: LogId,
}

impl OfflineLoader {
    /// Opens the region whose data directory is `data_dir` (its process must be stopped:
    /// RocksDB holds a lock on the directory).
    pub async fn open(data_dir: &Path, region: &str) -> Result<OfflineLoader, OfflineError> {
        let store = Store::open(&data_dir.join("db"))?;
        if let Some(owner) = store.owner_region()?.filter(|o| o != region) {
            return Err(OfflineError::OtherRegion { owner, region: region.to_string() });
        }
        let mut sm = StateMachine::new(store, region.to_string(), data_dir);
        let (last, membership) = sm.applied_state().await.map_err(|e| OfflineError::StateMachine(e.to_string()))?;
        let last = last.ok_or(OfflineError::NotInitialized)?;
        let voters = membership.membership().voter_ids().count();
        if voters != 1 {
            return Err(OfflineError::NotAlone(voters));
        }
        Ok(OfflineLoader { sm, last })
    }

    /// Applies `commands` in order, each as the next log entry, and returns their results.
    pub async fn apply(&mut self, commands: Vec<Command>) -> Result<Vec<CommandResult>, OfflineError> {
        let mut entries = Vec::with_capacity(commands.len());
        for cmd in commands {
            self.last.index += 1;
            entries.push(Entry { log_id: self.last, payload: EntryPayload::Normal(cmd) });
        }
        self.sm.apply(entries).await.map_err(|e| OfflineError::StateMachine(e.to_string()))
    }

    /// The store, for what a region writes beside its state machine (its blob links).
    pub fn store(&self) -> &Store {
        &self.sm.store
    }

    /// Makes everything applied durable (applies are not synced on their own: the log is,
    /// and there is none here).
    pub fn finish(self) -> Result<(), OfflineError> {
        self.sm.store.db().flush_wal(true).map_err(StoreError::from)?;
        Ok(())
    }
}

//! openraft's log storage on RocksDB (`raft_log`, `raft_meta`).
//!
//! Every append, vote and truncation is a synced write: an entry counts as stored only
//! once it is on disk, which is what lets a 201 promise durability.

use super::store::{Store, StoreError, CF_RAFT_LOG, CF_RAFT_META};
use super::types::{Entry, LogId, StorageError, TypeConfig, Vote};
use openraft::storage::{LogFlushed, LogState, RaftLogReader, RaftLogStorage};
use openraft::{OptionalSend, RaftLogId, StorageIOError};
use rocksdb::WriteBatch;
use std::fmt::Debug;
use std::ops::{Bound, RangeBounds};

const KEY_VOTE: &[u8] = b"vote";
const KEY_COMMITTED: &[u8] = b"committed";
const KEY_LAST_PURGED: &[u8] = b"last_purged";

#[derive(Clone)]
pub struct LogStore {
    store: Store,
}

fn index_key(index: u64) -> [u8; 8] {
    index.to_be_bytes()
}

fn index_of(key: &[u8]) -> u64 {
    let mut buf = [0u8; 8];
    buf.copy_from_slice(&key[..8]);
    u64::from_be_bytes(buf)
}

fn read_err(e: impl std::error::Error + 'static) -> StorageError {
    StorageIOError::read_logs(&e).into()
}

fn write_err(e: impl std::error::Error + 'static) -> StorageError {
    StorageIOError::write_logs(&e).into()
}

impl LogStore {
    pub fn new(store: Store) -> LogStore {
        LogStore { store }
    }

    /// Drops the whole log, the commit point and the purge point, and sets `vote`, in one
    /// synced write: what `meta::restore` leaves of an old cluster's Raft state.
    pub fn start_over(&self, vote: &Vote) -> Result<(), StoreError> {
        let mut batch = WriteBatch::default();
        batch.delete_range_cf(self.store.cf(CF_RAFT_LOG)?, index_key(0).as_slice(), [0xffu8; 9].as_slice());
        let meta = self.store.cf(CF_RAFT_META)?;
        batch.delete_cf(meta, KEY_COMMITTED);
        batch.delete_cf(meta, KEY_LAST_PURGED);
        let vote = serde_json::to_vec(vote).map_err(|e| StoreError::Corrupt { cf: CF_RAFT_META, reason: e.to_string() })?;
        batch.put_cf(meta, KEY_VOTE, vote);
        self.store.write_durable(batch)
    }

    fn meta<T: serde::de::DeserializeOwned>(&self, key: &[u8]) -> Result<Option<T>, StorageError> {
        match self.store.get(CF_RAFT_META, key).map_err(read_err)? {
            Some(bytes) => serde_json::from_slice(&bytes).map(Some).map_err(read_err),
            None => Ok(None),
        }
    }

    async fn put_meta_durable<T: serde::Serialize>(&self, key: &[u8], value: &T) -> Result<(), StorageError> {
        let bytes = serde_json::to_vec(value).map_err(write_err)?;
        let mut batch = WriteBatch::default();
        batch.put_cf(self.store.cf(CF_RAFT_META).map_err(write_err)?, key, bytes);
        self.write_durable(batch).await
    }

    /// The log store's small durable writes (vote, truncation, purge):
    /// inline as always (moving them to a blocking thread cost 40–60 % of unpaced manifest
    /// PUT throughput in `benches/cluster.sh`), waiting for space on a full disk without
    /// holding a runtime thread (openraft stops for good on any storage error).
    async fn write_durable(&self, batch: WriteBatch) -> Result<(), StorageError> {
        self.store.write_waiting_for_space(batch, true).await.map_err(write_err)
    }

    fn last_entry_log_id(&self) -> Result<Option<LogId>, StorageError> {
        let cf = self.store.cf(CF_RAFT_LOG).map_err(read_err)?;
        let mut iter = self.store.db().iterator_cf(cf, rocksdb::IteratorMode::End);
        match iter.next() {
            Some(Ok((_, v))) => {
                let entry: Entry = serde_json::from_slice(&v).map_err(read_err)?;
                Ok(Some(*entry.get_log_id()))
            }
            Some(Err(e)) => Err(read_err(e)),
            None => Ok(None),
        }
    }
}

impl RaftLogReader<TypeConfig> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry>, StorageError> {
        let start = match range.start_bound() {
            Bound::Included(i) => *i,
            Bound::Excluded(i) => i + 1,
            Bound::Unbounded => 0,
        };
        let cf = self.store.cf(CF_RAFT_LOG).map_err(read_err)?;
        let iter = self.store.db().iterator_cf(
            cf,
            rocksdb::IteratorMode::From(&index_key(start), rocksdb::Direction::Forward),
        );
        let mut out = Vec::new();
        for item in iter {
            let (k, v) = item.map_err(read_err)?;
            if !range.contains(&index_of(&k)) {
                break;
            }
            out.push(serde_json::from_slice(&v).map_err(read_err)?);
        }
        Ok(out)
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = LogStore;

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>, StorageError> {
        let last_purged: Option<LogId> = self.meta(KEY_LAST_PURGED)?;
        let last = self.last_entry_log_id()?.or(last_purged);
        Ok(LogState { last_purged_log_id: last_purged, last_log_id: last })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote) -> Result<(), StorageError> {
        self.put_meta_durable(KEY_VOTE, vote).await
    }

    async fn read_vote(&mut self) -> Result<Option<Vote>, StorageError> {
        self.meta(KEY_VOTE)
    }

    /// Not synced: openraft treats the committed index as a hint (one lost to a crash only
    /// means applying from `last_applied` again once a leader says so), and RocksDB's
    /// write-ahead log is ordered, so the next synced append persists it anyway. Syncing
    /// it put one more fsync on the Raft loop for every commit, on every node.
    async fn save_committed(&mut self, committed: Option<LogId>) -> Result<(), StorageError> {
        let bytes = serde_json::to_vec(&committed).map_err(write_err)?;
        let mut batch = WriteBatch::default();
        batch.put_cf(self.store.cf(CF_RAFT_META).map_err(write_err)?, KEY_COMMITTED, bytes);
        self.store.write_waiting_for_space(batch, false).await.map_err(write_err)
    }

    async fn read_committed(&mut self) -> Result<Option<LogId>, StorageError> {
        Ok(self.meta::<Option<LogId>>(KEY_COMMITTED)?.flatten())
    }

    async fn append<I>(&mut self, entries: I, callback: LogFlushed<TypeConfig>) -> Result<(), StorageError>
    where
        I: IntoIterator<Item = Entry> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let mut batch = WriteBatch::default();
        {
            let cf = self.store.cf(CF_RAFT_LOG).map_err(write_err)?;
            for entry in entries {
                let bytes = serde_json::to_vec(&entry).map_err(write_err)?;
                batch.put_cf(cf, index_key(entry.get_log_id().index), bytes);
            }
        }
        // As `write_durable`, but the flush callback wants the I/O result itself.
        let store = self.store.clone();
        let result = tokio::task::spawn_blocking(move || store.write_durable_waiting_for_space(batch))
            .await
            .map_err(|e| std::io::Error::other(e.to_string()))
            .and_then(|r| r.map_err(|e: StoreError| std::io::Error::other(e.to_string())));
        let ok = result.as_ref().map(|_| ()).map_err(|e| std::io::Error::other(e.to_string()));
        callback.log_io_completed(result);
        ok.map_err(write_err)
    }

    async fn truncate(&mut self, log_id: LogId) -> Result<(), StorageError> {
        let cf = self.store.cf(CF_RAFT_LOG).map_err(write_err)?;
        let mut batch = WriteBatch::default();
        batch.delete_range_cf(cf, index_key(log_id.index), index_key(u64::MAX));
        self.write_durable(batch).await
    }

    async fn purge(&mut self, log_id: LogId) -> Result<(), StorageError> {
        // Record the purge point first: a crash between the two writes leaves extra
        // entries, never a gap the state claims is not there.
        self.put_meta_durable(KEY_LAST_PURGED, &log_id).await?;
        let cf = self.store.cf(CF_RAFT_LOG).map_err(write_err)?;
        let mut batch = WriteBatch::default();
        batch.delete_range_cf(cf, index_key(0), index_key(log_id.index + 1));
        self.write_durable(batch).await
    }
}


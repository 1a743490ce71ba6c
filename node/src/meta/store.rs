//! The node's RocksDB: one database, one column family per kind of record.
//!
//! Raft's own state (`raft_log`, `raft_meta`) and the replicated state machine
//! (`sm_*`) live next to node-local state (`local_*`) that never goes through Raft.
//! Keys that belong to a repository start with the repository name and a NUL byte; the
//! name grammar has no NUL, so a prefix scan over `repo\0` sees exactly that repository.

use rocksdb::{BlockBasedOptions, Cache, ColumnFamily, ColumnFamilyDescriptor, Options, WriteBatch, WriteBufferManager, WriteOptions, DB};
use std::path::Path;
use std::sync::Arc;

/// Raft log entries; key: index as u64 big-endian.
pub const CF_RAFT_LOG: &str = "raft_log";
/// Raft vote, committed log id, last purged log id.
pub const CF_RAFT_META: &str = "raft_meta";
/// State machine bookkeeping: last applied log id and membership.
pub const CF_SM_META: &str = "sm_meta";
/// `repo` → empty; every repository that holds a manifest.
pub const CF_SM_REPOS: &str = "sm_repos";
/// `repo\0digest` → stored manifest (see `state_machine::StoredManifest`).
pub const CF_SM_MANIFESTS: &str = "sm_manifests";
/// `repo\0tag` → digest string.
pub const CF_SM_TAGS: &str = "sm_tags";
/// `repo\0digest` → `BlobLink` (size, how many of the repository's manifests reference it).
pub const CF_SM_BLOB_LINKS: &str = "sm_blob_links";
/// `digest` → `BlobLocation` (size, regions holding a verified copy, references).
pub const CF_SM_BLOBS: &str = "sm_blobs";
/// Key in `CF_RAFT_META` of the region the data directory belongs to.
const OWNER_REGION_KEY: &[u8] = b"owner_region";
/// `repo\0subject\0referrer` → descriptor JSON for the referrers API.
pub const CF_SM_REFERRERS: &str = "sm_referrers";
/// Identities and token-signing keys: `user/<name>` → `UserRecord`, `key/<kid>` → `SigningKey`.
pub const CF_SM_AUTH: &str = "sm_auth";
/// Storage quotas per namespace and what each counts (see `meta::quotas`).
pub const CF_SM_QUOTAS: &str = "sm_quotas";
/// Retention policies: `policy/<name>` → `RetentionPolicy` (see `meta::retention`).
pub const CF_SM_RETENTION: &str = "sm_retention";
/// When manifests were pushed and pulled and tags set (see `meta::retention`).
pub const CF_SM_ACTIVITY: &str = "sm_activity";
/// Soft-deleted manifests: `repo\0digest` → trash entry (see `meta::trash`).
pub const CF_SM_TRASH: &str = "sm_trash";
/// Usage metering: traffic buckets and what each region stores (see `meta::usage`).
pub const CF_SM_USAGE: &str = "sm_usage";
/// Webhooks, how far each has been served, and parked deliveries (see `meta::events`).
pub const CF_SM_WEBHOOKS: &str = "sm_webhooks";
/// The outbox: events waiting for their webhooks (see `meta::events`).
pub const CF_SM_EVENTS: &str = "sm_events";
/// Images waiting to be complete in a region, for `replicated` events (see `meta::completion`).
pub const CF_SM_COMPLETION: &str = "sm_completion";
/// Which image was built on which, for `base_updated` events (see `meta::bases`).
pub const CF_SM_BASES: &str = "sm_bases";
/// Upload sessions in progress on this node: `uuid` → session record.
pub const CF_LOCAL_UPLOADS: &str = "local_uploads";
/// `repo\0digest` → `LocalLink` (size, when): blobs pushed or mounted into the repository on
/// this node.
pub const CF_LOCAL_BLOB_LINKS: &str = "local_blob_links";
/// `priority byte, digest` → size: referenced blobs this region lacks, waiting to be
/// fetched; keys sort by priority, so a scan takes recently pushed blobs first.
pub const CF_LOCAL_REPLICATION_QUEUE: &str = "local_replication_queue";

/// Queue priority of blobs referenced by a manifest applied just now.
pub const QUEUE_RECENT: u8 = b'0';
/// Queue priority of blobs found missing by the backfill scan.
pub const QUEUE_BACKFILL: u8 = b'1';

/// `sm_auth` key of a record: `<kind>/<name>` (kind `user` or `key`).
pub fn auth_key(kind: &str, name: &str) -> Vec<u8> {
    format!("{kind}/{name}").into_bytes()
}

/// The replication-queue key of `digest` at `priority`.
pub fn queue_key(priority: u8, digest: &str) -> Vec<u8> {
    let mut k = Vec::with_capacity(digest.len() + 1);
    k.push(priority);
    k.extend_from_slice(digest.as_bytes());
    k
}

/// The column families that make up the replicated state machine (what a snapshot holds).
pub const STATE_MACHINE_CFS: [&str; 17] = [
    CF_SM_META,
    CF_SM_REPOS,
    CF_SM_MANIFESTS,
    CF_SM_TAGS,
    CF_SM_BLOB_LINKS,
    CF_SM_BLOBS,
    CF_SM_REFERRERS,
    CF_SM_AUTH,
    // New families go last: a snapshot names each family by its index here.
    CF_SM_QUOTAS,
    CF_SM_RETENTION,
    CF_SM_ACTIVITY,
    CF_SM_TRASH,
    CF_SM_USAGE,
    CF_SM_WEBHOOKS,
    CF_SM_EVENTS,
    CF_SM_COMPLETION,
    CF_SM_BASES,
];

/// Raft's own column families.
const RAFT_CFS: [&str; 2] = [CF_RAFT_LOG, CF_RAFT_META];
/// Node-local state that never goes through Raft.
const LOCAL_CFS: [&str; 3] = [CF_LOCAL_UPLOADS, CF_LOCAL_BLOB_LINKS, CF_LOCAL_REPLICATION_QUEUE];

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("rocksdb: {0}")]
    Rocks(#[from] rocksdb::Error),
    #[error("column family {0} missing")]
    MissingColumnFamily(&'static str),
    #[error("corrupt record in {cf}: {reason}")]
    Corrupt { cf: &'static str, reason: String },
    /// A write that failed outside RocksDB: the snapshot file, or a failpoint refusing
    /// a batch before it reached RocksDB.
    #[error("write refused: {0}")]
    Refused(#[from] std::io::Error),
}

/// What RocksDB may hold in memory: the block cache (data, index and filter blocks), of
/// which memtables may take up to `MEMTABLE_BYTES`.
const CACHE_BYTES: usize = 128 << 20;
const MEMTABLE_BYTES: usize = 64 << 20;

/// Shared handle to the node's database.
#[derive(Clone)]
pub struct Store {
    db: Arc<DB>,
    /// Bumped whenever identities or keys change (an auth entry applied, a snapshot
    /// installed), so caches of verified credentials know to look again.
    auth_epoch: Arc<std::sync::atomic::AtomicU64>,
    /// Woken when a `CollectBlobs` entry is applied (or a snapshot installed), so this
    /// region's garbage-collection sweep removes the copies it no longer needs.
    collected: Arc<tokio::sync::Notify>,
    /// Counts applied entries that wrote events (or changed webhooks), so the deliverer
    /// wakes for new work without polling.
    events: Arc<tokio::sync::watch::Sender<u64>>,
}

impl Store {
    pub fn open(path: &Path) -> Result<Store, StoreError> {
        let mut opts = Options::default();
        opts.create_if_missing(true);
        opts.create_missing_column_families(true);
        opts.increase_parallelism(2);
        // One memory budget for the whole database. RocksDB's defaults give every column
        // family its own memtables (up to 2 × 64 MiB) and block cache, and keep index and
        // filter blocks outside any cache, so a node's memory could grow with its column
        // families and its data. Memtables are charged to the one cache, which holds index
        // and filter blocks too.
        let cache = Cache::new_lru_cache(CACHE_BYTES);
        opts.set_write_buffer_manager(&WriteBufferManager::new_write_buffer_manager_with_cache(MEMTABLE_BYTES, false, cache.clone()));
        let mut table = BlockBasedOptions::default();
        table.set_block_cache(&cache);
        table.set_cache_index_and_filter_blocks(true);
        table.set_pin_l0_filter_and_index_blocks_in_cache(true);
        // Most reads are point lookups (a blob's record, a repository's link, a tag).
        table.set_bloom_filter(10.0, false);
        let mut cf_opts = Options::default();
        cf_opts.set_block_based_table_factory(&table);
        cf_opts.set_write_buffer_size(MEMTABLE_BYTES / 2);
        // One WAL for all column families: a synced Raft append also makes every earlier
        // state machine write durable.
        let cfs = RAFT_CFS
            .iter()
            .chain(STATE_MACHINE_CFS.iter())
            .chain(LOCAL_CFS.iter())
            .map(|name| ColumnFamilyDescriptor::new(*name, cf_opts.clone()));
        let db = DB::open_cf_descriptors(&opts, path, cfs)?;
        Ok(Store {
            db: Arc::new(db),
            auth_epoch: Arc::default(),
            collected: Arc::default(),
            events: Arc::new(tokio::sync::watch::channel(0).0),
        })
    }

    pub fn auth_epoch(&self) -> u64 {
        self.auth_epoch.load(std::sync::atomic::Ordering::Acquire)
    }

    pub fn bump_auth_epoch(&self) {
        self.auth_epoch.fetch_add(1, std::sync::atomic::Ordering::AcqRel);
    }

    /// Tells this region's sweeper that blobs were forgotten.
    pub fn notify_collected(&self) {
        self.collected.notify_one();
    }

    /// Resolves after the next `notify_collected` (or at once if one is pending).
    pub async fn collected(&self) {
        self.collected.notified().await
    }

    /// Wakes the event deliverer: events were written or webhooks changed.
    pub fn notify_events(&self) {
        self.events.send_modify(|n| *n = n.wrapping_add(1));
    }

    /// Changes whenever `notify_events` is called.
    pub fn events_changed(&self) -> tokio::sync::watch::Receiver<u64> {
        self.events.subscribe()
    }

    pub fn db(&self) -> &DB {
        &self.db
    }

    pub fn cf(&self, name: &'static str) -> Result<&ColumnFamily, StoreError> {
        self.db.cf_handle(name).ok_or(StoreError::MissingColumnFamily(name))
    }

    pub fn get(&self, cf: &'static str, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self.db.get_cf(self.cf(cf)?, key)?)
    }

    pub fn exists(&self, cf: &'static str, key: &[u8]) -> Result<bool, StoreError> {
        Ok(self.db.get_pinned_cf(self.cf(cf)?, key)?.is_some())
    }

    /// The region this data directory belongs to, as its first start recorded it (local,
    /// beside the Raft vote: every region's state machine is the same, so nothing else in
    /// a copy of a data directory says whose it was).
    pub fn owner_region(&self) -> Result<Option<String>, StoreError> {
        Ok(self.get(CF_RAFT_META, OWNER_REGION_KEY)?.map(|raw| String::from_utf8_lossy(&raw).into_owned()))
    }

    /// Records the region this data directory belongs to.
    pub fn set_owner_region(&self, region: &str) -> Result<(), StoreError> {
        let mut batch = WriteBatch::default();
        batch.put_cf(self.cf(CF_RAFT_META)?, OWNER_REGION_KEY, region.as_bytes());
        self.write_durable(batch)
    }

    /// Writes a batch and waits until it is on disk (WAL fsync).
    pub fn write_durable(&self, batch: WriteBatch) -> Result<(), StoreError> {
        crate::failpoints::io("rocksdb-write")?;
        let mut opts = WriteOptions::default();
        opts.set_sync(true);
        Ok(self.db.write_opt(batch, &opts)?)
    }

    /// Writes a batch without waiting for fsync; the next durable write (or the Raft log,
    /// which can replay it) covers it.
    pub fn write(&self, batch: WriteBatch) -> Result<(), StoreError> {
        crate::failpoints::io("rocksdb-write")?;
        Ok(self.db.write(batch)?)
    }

    /// `write_durable` for the Raft log: a full disk waits for space (on this blocking
    /// thread) instead of failing, because openraft stops for good on a storage error and
    /// a log cannot skip an entry. Any other error still fails.
    pub fn write_durable_waiting_for_space(&self, batch: WriteBatch) -> Result<(), StoreError> {
        let mut batches = Rewritable::new(batch);
        SpaceWait::retry_blocking(|| self.write_durable(batches.next()))
    }


    /// Read options for a pass over every key of a family (a GC scan, a snapshot dump):
    /// its blocks are read once and must not push the hot ones (manifests, tags, blob
    /// locations that pulls read) out of the block cache, nor grow it.
    pub fn bulk_read_options() -> rocksdb::ReadOptions {
        let mut read = rocksdb::ReadOptions::default();
        read.fill_cache(false);
        read
    }

    /// Key/value pairs whose key starts with `prefix`, beginning after `start_after`
    /// (exclusive) when given, at most `limit` of them.
    pub fn scan_prefix(
        &self,
        cf: &'static str,
        prefix: &[u8],
        start_after: Option<&[u8]>,
        limit: usize,
    ) -> Result<Vec<(Vec<u8>, Vec<u8>)>, StoreError> {
        let handle = self.cf(cf)?;
        let start: Vec<u8> = match start_after {
            Some(after) => {
                let mut k = after.to_vec();
                k.push(0);
                k
            }
            None => prefix.to_vec(),
        };
        let iter = self
            .db
            .iterator_cf(handle, rocksdb::IteratorMode::From(&start, rocksdb::Direction::Forward));
        let mut out = Vec::new();
        for item in iter {
            let (k, v) = item?;
            if !k.starts_with(prefix) || out.len() >= limit {
                break;
            }
            out.push((k.to_vec(), v.to_vec()));
        }
        Ok(out)
    }
}

/// `repo\0rest` keys.
pub fn repo_key(repo: &str, rest: &str) -> Vec<u8> {
    let mut k = Vec::with_capacity(repo.len() + rest.len() + 1);
    k.extend_from_slice(repo.as_bytes());
    k.push(0);
    k.extend_from_slice(rest.as_bytes());
    k
}

/// The prefix of all `repo\0…` keys of one repository.
pub fn repo_prefix(repo: &str) -> Vec<u8> {
    repo_key(repo, "")
}

impl Store {
    /// A write (durable or not) from async code that waits for space on a full disk
    /// without holding a runtime thread: the write itself runs inline as always, only the
    /// waits between attempts yield. For the Raft log store and the state machine, which
    /// openraft cannot let fail. Other errors fail at once.
    pub async fn write_waiting_for_space(&self, batch: WriteBatch, durable: bool) -> Result<(), StoreError> {
        let mut batches = Rewritable::new(batch);
        SpaceWait::retry(|| {
            let batch = batches.next();
            if durable {
                self.write_durable(batch)
            } else {
                self.write(batch)
            }
        })
        .await
    }
}

/// A batch to write, and again after a failed attempt: RocksDB consumes a batch it
/// writes, so its bytes are kept to rebuild it.
struct Rewritable {
    first: Option<WriteBatch>,
    data: Vec<u8>,
}

impl Rewritable {
    fn new(batch: WriteBatch) -> Rewritable {
        Rewritable { data: batch.data().to_vec(), first: Some(batch) }
    }

    fn next(&mut self) -> WriteBatch {
        self.first.take().unwrap_or_else(|| WriteBatch::from_data(&self.data))
    }
}

/// Backoff and logging while the disk is full: `retry` (async code, yielding between
/// attempts) and `retry_blocking` (a blocking thread) run a write until it goes through,
/// waiting on ENOSPC/EDQUOT; any other error fails at once.
#[derive(Default)]
pub struct SpaceWait {
    waits: u32,
}

impl SpaceWait {
    /// Runs `attempt` until it succeeds, yielding while the disk is full.
    pub async fn retry<T>(mut attempt: impl FnMut() -> Result<T, StoreError>) -> Result<T, StoreError> {
        let mut wait = SpaceWait::default();
        loop {
            match attempt() {
                Ok(v) => return Ok(wait.done(v)),
                Err(e) => tokio::time::sleep(wait.next(e)?).await,
            }
        }
    }

    /// `retry` on a blocking thread, which it holds while it waits.
    pub fn retry_blocking<T>(mut attempt: impl FnMut() -> Result<T, StoreError>) -> Result<T, StoreError> {
        let mut wait = SpaceWait::default();
        loop {
            match attempt() {
                Ok(v) => return Ok(wait.done(v)),
                Err(e) => std::thread::sleep(wait.next(e)?),
            }
        }
    }

    /// How long to wait before trying again, or the error when it is not a full disk.
    fn next(&mut self, e: StoreError) -> Result<std::time::Duration, StoreError> {
        if !e.is_out_of_space() {
            return Err(e);
        }
        if self.waits == 0 {
            tracing::error!(error = %e, "disk full: Raft storage waits for space; reads are still served");
            metrics::counter!("meridian_storage_full_waits_total").increment(1);
        }
        self.waits += 1;
        Ok(std::time::Duration::from_millis((50u64 << self.waits.min(5)).min(1000)))
    }

    /// Called once the write went through; passes its result on.
    fn done<T>(&self, value: T) -> T {
        if self.waits > 0 {
            tracing::warn!(retries = self.waits, "disk accepts writes again");
        }
        value
    }
}

/// An I/O error that says the disk (ENOSPC) or the disk quota (EDQUOT) is full: a
/// condition that passes when space is freed.
pub fn io_out_of_space(io: &std::io::Error) -> bool {
    matches!(io.raw_os_error(), Some(libc::ENOSPC) | Some(libc::EDQUOT))
}

impl StoreError {
    /// The disk (or quota) is full: a condition that passes when space is freed.
    pub fn is_out_of_space(&self) -> bool {
        match self {
            StoreError::Refused(io) => io_out_of_space(io),
            StoreError::Rocks(e) => {
                let text = e.to_string();
                text.contains("No space left on device") || text.contains("Disk quota exceeded")
            }
            _ => false,
        }
    }
}

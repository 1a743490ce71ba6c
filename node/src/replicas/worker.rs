//! The background replication queue: blobs referenced by manifests that this region
//! lacks are fetched with bounded concurrency, retried with exponential backoff and
//! jitter; the queue lives in RocksDB and survives restarts.

use super::transfer::Progress;
use super::{Reason, Replicator};
use crate::meta::store::{queue_key, Store, CF_LOCAL_REPLICATION_QUEUE, CF_SM_BLOBS, QUEUE_BACKFILL, QUEUE_RECENT};
use crate::meta::records::BlobLocation;
use meridian_replication::Digest;
use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Background transfers at once (clients waiting on fetch-through are not limited by this).
const CONCURRENCY: usize = 2;
const SCAN_INTERVAL: Duration = Duration::from_millis(500);
/// How often the whole blob table is checked for blobs this region lacks (catches what a
/// snapshot install or a new region brings, which no apply enqueued).
const BACKFILL_INTERVAL: Duration = Duration::from_secs(30);
const MAX_BACKOFF: Duration = Duration::from_secs(60);

struct Retry {
    attempts: u32,
    next: Instant,
}

/// Named background task: drains the replication queue until shutdown.
pub async fn run_replication_worker(rep: Arc<Replicator>, mut shutdown: tokio::sync::watch::Receiver<bool>) {
    let retries: Arc<Mutex<HashMap<Digest, Retry>>> = Arc::default();
    let permits = Arc::new(tokio::sync::Semaphore::new(CONCURRENCY));
    let mut last_backfill: Option<Instant> = None;
    let mut last_sample = (Instant::now(), 0u64);
    let mut last_snapshot = None;
    let mut last_pending: Option<Instant> = None;
    loop {
        // A snapshot install brings blob records no apply queued: scan right after one.
        let snapshot = rep.meta.raft().metrics().borrow().snapshot;
        let snapshot_changed = snapshot != last_snapshot;
        last_snapshot = snapshot;
        if snapshot_changed || last_backfill.is_none_or(|t| t.elapsed() >= BACKFILL_INTERVAL) {
            // A scan of every blob record: off the async workers.
            let scanning = rep.clone();
            match tokio::task::spawn_blocking(move || backfill(&scanning)).await {
                Ok(Err(e)) => tracing::warn!(error = %e, "replication backfill scan failed"),
                Err(e) => tracing::warn!(error = %e, "replication backfill scan stopped"),
                Ok(Ok(())) => {}
            }
            last_backfill = Some(Instant::now());
        }
        // The full queue scan for the figures runs at the tick's pace, not on every wake-up.
        if last_pending.is_none_or(|t| t.elapsed() >= SCAN_INTERVAL) {
            update_pending(&rep, &mut last_sample);
            last_pending = Some(Instant::now());
        }
        match rep.store().scan_prefix(CF_LOCAL_REPLICATION_QUEUE, b"", None, 256) {
            Ok(entries) => {
                let members = rep.meta.members();
                for (key, value) in entries {
                    let Some(digest_bytes) = key.get(1..) else { continue };
                    let Ok(digest) = Digest::parse(&String::from_utf8_lossy(digest_bytes)) else { continue };
                    let Ok(size_bytes) = <[u8; 8]>::try_from(value.as_slice()) else { continue };
                    let size = u64::from_be_bytes(size_bytes);
                    // Garbage collection forgot it (a snapshot install can leave such
                    // entries behind): nothing to fetch, ever.
                    if let Ok(false) = rep.store().exists(CF_SM_BLOBS, digest.to_string().as_bytes()) {
                        let mut batch = rocksdb::WriteBatch::default();
                        if let Ok(cf) = rep.store().cf(CF_LOCAL_REPLICATION_QUEUE) {
                            batch.delete_cf(cf, &key);
                            let _ = rep.store().write(batch);
                        }
                        continue;
                    }
                    if let Ok(Some(_)) = rep.blobs().size(&digest).await {
                        // Already here (fetched for a client, or pushed): record it, which
                        // also takes it off the queue when applied.
                        let _ = rep.recorder.send(digest);
                        continue;
                    }
                    // Another node of this region fetches it (its region-wide store
                    // then holds it for this node too).
                    if !rep.fetches_for_region(&members, &digest) {
                        continue;
                    }
                    let due = retries.lock().map(|r| r.get(&digest).is_none_or(|x| x.next <= Instant::now())).unwrap_or(true);
                    if !due {
                        continue;
                    }
                    let Ok(permit) = permits.clone().try_acquire_owned() else { break };
                    let transfer = match rep.fetch(&digest, size, Reason::Background) {
                        Ok(t) => t,
                        Err(e) => {
                            tracing::warn!(%digest, error = %e, "could not start a background transfer");
                            continue;
                        }
                    };
                    let retries = retries.clone();
                    tokio::spawn(async move {
                        let outcome = transfer.finished().await;
                        if let Ok(mut r) = retries.lock() {
                            if outcome == Progress::Failed {
                                let entry = r.entry(digest).or_insert(Retry { attempts: 0, next: Instant::now() });
                                entry.attempts += 1;
                                let base = Duration::from_millis(500) * 2u32.saturating_pow(entry.attempts.min(8));
                                let jitter = Duration::from_millis(rand::random::<u64>() % 500);
                                entry.next = Instant::now() + base.min(MAX_BACKOFF) + jitter;
                            } else {
                                r.remove(&digest);
                            }
                        }
                        drop(permit);
                    });
                }
            }
            Err(e) => tracing::warn!(error = %e, "cannot read the replication queue"),
        }
        // Next scan: after SCAN_INTERVAL, or as soon as this node applies a new entry (a
        // manifest from another region may just have queued blobs).
        let applied = rep.meta.applied_index();
        let mut metrics = rep.meta.raft().metrics();
        let new_entry = async {
            while metrics.changed().await.is_ok() {
                if metrics.borrow().last_applied.map(|l| l.index).unwrap_or(0) > applied {
                    return;
                }
            }
            std::future::pending::<()>().await
        };
        tokio::select! {
            _ = tokio::time::sleep(SCAN_INTERVAL) => {}
            _ = new_entry => {}
            _ = shutdown.changed() => return,
        }
    }
}

/// Queued entries written per batch by the backfill scan.
const BACKFILL_BATCH: usize = 10_000;

/// Queues every referenced blob that no copy in this region covers. Streams `sm_blobs`
/// (a million blobs would be hundreds of MiB held at once) past the block cache, and
/// writes what it queues in batches.
fn backfill(rep: &Replicator) -> Result<(), crate::meta::store::StoreError> {
    let store = rep.store();
    let me = rep.meta.me().region.clone();
    let queue = store.cf(CF_LOCAL_REPLICATION_QUEUE)?;
    let mut batch = rocksdb::WriteBatch::default();
    let mut queued = 0usize;
    let blobs = store.cf(CF_SM_BLOBS)?;
    for item in store.db().iterator_cf_opt(blobs, Store::bulk_read_options(), rocksdb::IteratorMode::Start) {
        let (key, value) = item?;
        let location = BlobLocation::decode(&value)?;
        // A blob nothing references is on its way out (garbage collection): not worth a copy.
        if location.regions.contains(&me) || location.links == Some(0) {
            continue;
        }
        let digest = String::from_utf8_lossy(&key);
        let already = store.exists(CF_LOCAL_REPLICATION_QUEUE, &queue_key(QUEUE_RECENT, &digest))?
            || store.exists(CF_LOCAL_REPLICATION_QUEUE, &queue_key(QUEUE_BACKFILL, &digest))?;
        if !already {
            batch.put_cf(queue, queue_key(QUEUE_BACKFILL, &digest), location.size.to_be_bytes());
            queued += 1;
            if batch.len() >= BACKFILL_BATCH {
                store.write(std::mem::take(&mut batch))?;
            }
        }
    }
    store.write(batch)?;
    if queued > 0 {
        tracing::info!(queued, "backfill: queued blobs this region lacks");
    }
    Ok(())
}

/// Refreshes the pending-queue figures and the receive rate.
fn update_pending(rep: &Replicator, last: &mut (Instant, u64)) {
    // Counted as it streams by: a region that just joined may have a million entries.
    if let Ok(cf) = rep.store().cf(CF_LOCAL_REPLICATION_QUEUE) {
        let (mut blobs, mut bytes) = (0u64, 0u64);
        for (_, v) in rep.store().db().iterator_cf(cf, rocksdb::IteratorMode::Start).map_while(Result::ok) {
            blobs += 1;
            bytes += <[u8; 8]>::try_from(&v[..]).map(u64::from_be_bytes).unwrap_or(0);
        }
        rep.stats.pending_blobs.store(blobs, Ordering::Relaxed);
        rep.stats.pending_bytes.store(bytes, Ordering::Relaxed);
        metrics::gauge!("meridian_replication_queue_pending").set(blobs as f64);
        metrics::gauge!("meridian_replication_queue_pending_bytes").set(bytes as f64);
    }
    let received = rep.stats.bytes_received.load(Ordering::Relaxed);
    let elapsed = last.0.elapsed().as_secs_f64();
    if elapsed >= 1.0 {
        let rate = (received.saturating_sub(last.1)) as f64 / elapsed;
        rep.stats.throughput_bits.store(rate.to_bits(), Ordering::Relaxed);
        metrics::gauge!("meridian_replication_throughput_bytes_per_second").set(rate);
        *last = (Instant::now(), received);
    }
}

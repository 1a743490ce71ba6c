//! Storage lifecycle: what leaves the disk, and when. One door, [`Lifecycle`]; the admin
//! service and the schedule call it, nothing else does.
//!
//! Garbage collection in two steps, so that "this blob is garbage" is decided once, in
//! the Raft log, ordered against every push and mount (see `docs/architecture.md`):
//!
//! 1. **Collect** (`collect.rs`, any node; the schedule runs it on the leader): blobs
//!    that no manifest has referenced for `gc.upload_grace_secs` are proposed in
//!    `CollectBlobs` entries. Applying one re-checks every blob, so a push or mount
//!    ordered before it keeps its blob; every region forgets the same blobs, including
//!    a region that was down and applies the entry later.
//! 2. **Sweep** (`sweep.rs`, every region on its own): blob files the cluster state no
//!    longer knows, not pinned by a push in flight here and not written or linked here
//!    within the grace, are removed, as are upload leftovers and quarantined copies past
//!    the grace. Applying a `CollectBlobs` entry wakes it; a crash mid-sweep leaves
//!    files the next sweep removes.

mod collect;
mod sweep;

pub use collect::Collection;

use crate::blobs::FsBlobStore;
use crate::config::GcConfig;
use crate::meta::command::Command;
use crate::meta::records::GcSweepReport;
use crate::meta::{Meta, MetaError, Store};
use std::sync::Arc;
use std::time::Duration;

#[derive(Debug, thiserror::Error)]
pub enum LifecycleError {
    #[error(transparent)]
    Meta(#[from] MetaError),
    #[error("reading the state: {0}")]
    Store(#[from] crate::meta::store::StoreError),
    #[error("sweep failed: {0}")]
    Sweep(String),
}

pub struct Lifecycle {
    meta: Meta,
    store: Store,
    blobs: FsBlobStore,
    region: String,
    cfg: GcConfig,
    /// One sweep at a time in this region (the schedule, a wake-up and an operator's run).
    sweeping: tokio::sync::Mutex<()>,
}

/// What `meridian admin gc run` did.
pub struct GcRun {
    pub collection: Collection,
    /// This region's sweep right after (the other regions sweep when they apply the
    /// collection, and report in `gc status`).
    pub sweep: GcSweepReport,
}

impl Lifecycle {
    pub fn new(meta: Meta, store: Store, blobs: FsBlobStore, region: String, cfg: GcConfig) -> Arc<Lifecycle> {
        Arc::new(Lifecycle { meta, store, blobs, region, cfg, sweeping: tokio::sync::Mutex::new(()) })
    }

    pub fn grace(&self) -> Duration {
        Duration::from_secs(self.cfg.upload_grace_secs)
    }

    /// A whole garbage collection from this node: the cluster-wide decision, then this
    /// region's sweep. A dry run proposes, removes and records nothing.
    pub async fn run_gc(&self, dry_run: bool) -> Result<GcRun, LifecycleError> {
        let collection = collect::collect(&self.meta, &self.store, self.cfg.upload_grace_secs, dry_run).await?;
        let sweep = self.sweep(dry_run).await?;
        Ok(GcRun { collection, sweep })
    }

    /// This region's sweep; a real one is recorded in the cluster state for `gc status`.
    pub async fn sweep(&self, dry_run: bool) -> Result<GcSweepReport, LifecycleError> {
        let _one = self.sweeping.lock().await;
        let (store, blobs, region, grace) = (self.store.clone(), self.blobs.clone(), self.region.clone(), self.cfg.upload_grace_secs);
        let now_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0);
        let report = tokio::task::spawn_blocking(move || sweep::sweep_region(&store, &blobs, &region, grace, now_ms, dry_run))
            .await
            .map_err(|e| LifecycleError::Sweep(e.to_string()))?;
        metrics::counter!("meridian_gc_blobs_removed_total").increment(report.blobs_removed);
        metrics::counter!("meridian_gc_bytes_freed_total").increment(report.bytes_freed);
        if report.blobs_removed > 0 || report.leftovers_removed > 0 || !report.errors.is_empty() {
            tracing::info!(
                region = %report.region,
                removed = report.blobs_removed,
                bytes = report.bytes_freed,
                leftovers = report.leftovers_removed,
                errors = report.errors.len(),
                dry_run,
                "garbage collection sweep"
            );
        }
        if !dry_run {
            self.meta.propose(Command::RecordGcSweep { report: report.clone() }).await?;
        }
        Ok(report)
    }

    /// The last sweep of every region, from this node's applied state.
    pub fn status(&self) -> Result<Vec<GcSweepReport>, LifecycleError> {
        Ok(self.store.gc_sweep_reports()?)
    }
}

/// Named background task: every `gc.interval_secs` (unless 0) the leader collects and
/// every region sweeps; a region also sweeps whenever it applied a collection.
pub async fn run_gc_schedule(lifecycle: Arc<Lifecycle>, mut shutdown: tokio::sync::watch::Receiver<bool>) {
    let interval = (lifecycle.cfg.interval_secs > 0).then(|| Duration::from_secs(lifecycle.cfg.interval_secs));
    loop {
        let scheduled = async {
            match interval {
                Some(every) => tokio::time::sleep(every).await,
                None => std::future::pending().await,
            }
        };
        let full_run = tokio::select! {
            _ = scheduled => true,
            _ = lifecycle.store.collected() => false,
            _ = shutdown.changed() => return,
        };
        let result = if full_run && lifecycle.meta.is_leader() {
            lifecycle.run_gc(false).await.map(|_| ())
        } else {
            lifecycle.sweep(false).await.map(|_| ())
        };
        if let Err(e) = result {
            tracing::warn!(error = %e, "garbage collection: will try again at the next occasion");
        }
    }
}

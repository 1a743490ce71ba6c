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
mod pulls;
mod retention;
mod sweep;

pub use collect::Collection;
pub use pulls::{run_pull_recorder, PullRecorder};
pub use retention::{glob_matches, Deletion};

use crate::blobs::Blobs;
use crate::config::{GcConfig, RetentionConfig};
use crate::meta::command::{proposer_clock, Command, CommandResult};
use crate::meta::events::Origin;
use crate::meta::records::GcSweepReport;
use crate::meta::{Meta, MetaError, Store};
use std::sync::Arc;
use std::time::Duration;

/// The actor of events about a retention policy's deletes.
const RETENTION_ACTOR: &str = "meridian/retention";
/// The actor of events about an operator's trash restore.
const ADMIN_ACTOR: &str = "meridian/admin";

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
    blobs: Blobs,
    region: String,
    cfg: GcConfig,
    retention: RetentionConfig,
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
    pub fn new(meta: Meta, store: Store, blobs: Blobs, region: String, cfg: GcConfig, retention: RetentionConfig) -> Arc<Lifecycle> {
        Arc::new(Lifecycle { meta, store, blobs, region, cfg, retention, sweeping: tokio::sync::Mutex::new(()) })
    }

    /// Deleted manifests go to the trash.
    pub fn soft_delete(&self) -> bool {
        self.retention.trash_for().is_some()
    }

    pub fn grace(&self) -> Duration {
        Duration::from_secs(self.cfg.upload_grace_secs)
    }

    /// A whole garbage collection from this node: the cluster-wide decision, then this
    /// region's sweep. A dry run proposes, removes and records nothing.
    pub async fn run_gc(&self, dry_run: bool) -> Result<GcRun, LifecycleError> {
        if !dry_run {
            // Expired trash is garbage too: its references go first, its blobs with the
            // collection once unreferenced for the grace.
            self.purge_trash(None, false).await?;
        }
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
        let report = tokio::task::spawn_blocking(move || sweep::sweep_region(&store, blobs.as_ref(), &region, grace, now_ms, dry_run))
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

    /// Applies the retention policies now: each deletion is proposed on its own,
    /// conditionally (a tag still on the planned digest, a manifest still untagged), and
    /// soft when soft delete is on. A dry run proposes nothing.
    pub async fn run_retention(&self, dry_run: bool) -> Result<Vec<(Deletion, &'static str)>, LifecycleError> {
        let _ = self.meta.catch_up(Duration::from_secs(5)).await;
        let now = proposer_clock();
        let plan = retention::plan(&self.store, now)?;
        let mut done = Vec::with_capacity(plan.len());
        for d in plan {
            if dry_run {
                done.push((d, "would delete"));
                continue;
            }
            let digest = meridian_replication::Digest::parse(&d.digest).map_err(|e| LifecycleError::Sweep(e.to_string()))?;
            let cmd = match &d.tag {
                Some(tag) => Command::DeleteTag {
                    repo: d.repo.clone(),
                    tag: tag.clone(),
                    if_digest: Some(digest),
                    origin: Some(Origin::internal(RETENTION_ACTOR, &self.meta)),
                },
                None => Command::DeleteManifest {
                    repo: d.repo.clone(),
                    digest,
                    at_unix: proposer_clock(),
                    trash_until: self.retention.trash_for().map(|t| proposer_clock() + t.as_secs()),
                    only_if_untagged: true,
                    origin: Some(Origin::internal(RETENTION_ACTOR, &self.meta)),
                },
            };
            let outcome = match self.meta.propose(cmd).await? {
                CommandResult::Applied => "deleted",
                CommandResult::StillNeeded => "kept: changed since planned",
                _ => "already gone",
            };
            tracing::info!(
                policy = %d.policy,
                repo = %d.repo,
                tag = d.tag.as_deref().unwrap_or(""),
                digest = %d.digest,
                reason = %d.reason,
                outcome,
                "retention"
            );
            done.push((d, outcome));
        }
        Ok(done)
    }

    /// Deletes for good the trashed manifests whose time is up (all of them, or of one
    /// repository, with `all`); returns how many went.
    pub async fn purge_trash(&self, repo: Option<&str>, all: bool) -> Result<usize, LifecycleError> {
        // What is in the trash is read here, and a follower may not have applied a delete
        // its client already got 202 for: catch up with the leader first.
        self.meta.read_barrier().await?;
        let now = proposer_clock();
        let entries: Vec<(String, meridian_replication::Digest)> = self
            .store
            .trash(repo)?
            .into_iter()
            .filter(|e| all || e.header.expires_unix <= now)
            .filter_map(|e| Some((e.repo, meridian_replication::Digest::parse(&e.digest).ok()?)))
            .collect();
        for (repo, digest) in &entries {
            let cmd = Command::PurgeTrash { repo: repo.clone(), digest: digest.clone(), at_unix: now, expired_only: !all };
            self.meta.propose(cmd).await?;
        }
        Ok(entries.len())
    }

    /// Puts a trashed manifest back, with `tag` on it when given.
    pub async fn restore(&self, repo: &str, digest: &meridian_replication::Digest, tag: Option<String>) -> Result<bool, LifecycleError> {
        let cmd = Command::RestoreTrash {
            repo: repo.to_string(),
            digest: digest.clone(),
            tag,
            at_unix: proposer_clock(),
            origin: Some(Origin::internal(ADMIN_ACTOR, &self.meta)),
        };
        Ok(self.meta.propose(cmd).await? == CommandResult::Applied)
    }

    /// What the schedule runs on the leader: retention, then garbage collection (expired
    /// trash, the collection, this region's sweep).
    async fn run_scheduled(&self) -> Result<(), LifecycleError> {
        if !self.store.retention_policies()?.is_empty() {
            self.run_retention(false).await?;
        }
        self.run_gc(false).await.map(|_| ())
    }

    /// The last sweep of every region, from this node's applied state.
    pub fn status(&self) -> Result<Vec<GcSweepReport>, LifecycleError> {
        Ok(self.store.gc_sweep_reports()?)
    }
}

/// Named background task: every `gc.interval_secs` (unless 0) the leader applies the
/// retention policies, purges expired trash and collects, and every region sweeps; a region also sweeps whenever it applied a collection.
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
            lifecycle.run_scheduled().await
        } else {
            lifecycle.sweep(false).await.map(|_| ())
        };
        if let Err(e) = result {
            tracing::warn!(error = %e, "garbage collection: will try again at the next occasion");
        }
    }
}

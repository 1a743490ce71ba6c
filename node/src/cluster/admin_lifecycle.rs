//! The admin service's storage-lifecycle calls: garbage collection now, what every
//! region's last sweep did, and quotas. The work is `crate::lifecycle`'s and the state
//! machine's; this maps it onto the API.

use super::admin_service::{meta_status, AdminServiceImpl};
use crate::lifecycle::LifecycleError;
use crate::meta::records::GcSweepReport;
use crate::meta::command::{Command, CommandResult};
use crate::meta::quotas::Quota;
use meridian_proto::admin::{
    GcCandidate, GcRunReply, GcStatusReply, GcSweep, ListQuotasReply, QuotaInfo, ReplicationUsage, UsageReply, UsageRequest, UsageRow,
};
use tonic::Status;

pub(super) fn lifecycle_status(e: LifecycleError) -> Status {
    match e {
        LifecycleError::Meta(m) => meta_status(m),
        other => Status::internal(other.to_string()),
    }
}

fn sweep_message(r: GcSweepReport) -> GcSweep {
    GcSweep {
        region: r.region,
        finished_unix: r.finished_unix,
        duration_ms: r.duration_ms,
        dry_run: r.dry_run,
        candidates: r.candidates,
        blobs_removed: r.blobs_removed,
        bytes_freed: r.bytes_freed,
        leftovers_removed: r.leftovers_removed,
        errors: r.errors,
    }
}

pub async fn gc_run(svc: &AdminServiceImpl, dry_run: bool) -> Result<GcRunReply, Status> {
    let run = svc.lifecycle.run_gc(dry_run).await.map_err(lifecycle_status)?;
    Ok(GcRunReply {
        candidates: run
            .collection
            .candidates
            .into_iter()
            .map(|(digest, size)| GcCandidate { digest: digest.to_string(), size })
            .collect(),
        candidate_count: run.collection.candidate_count,
        candidate_bytes: run.collection.candidate_bytes,
        collected_blobs: run.collection.blobs,
        collected_bytes: run.collection.bytes,
        sweep: Some(sweep_message(run.sweep)),
        grace_secs: svc.lifecycle.grace().as_secs(),
    })
}

pub fn gc_status(svc: &AdminServiceImpl) -> Result<GcStatusReply, Status> {
    let mut regions: Vec<GcSweep> = svc.lifecycle.status().map_err(lifecycle_status)?.into_iter().map(sweep_message).collect();
    regions.sort_by(|a, b| a.region.cmp(&b.region));
    Ok(GcStatusReply { regions })
}

fn quota_info(q: Quota) -> QuotaInfo {
    QuotaInfo { pattern: q.pattern, limit_bytes: q.limit_bytes, used_bytes: q.used_bytes }
}

fn check_pattern(pattern: &str) -> Result<(), Status> {
    if crate::registry::names::is_repository_pattern(pattern) {
        Ok(())
    } else {
        Err(Status::invalid_argument(format!("{pattern:?} is not `*`, a repository name or NAME/*")))
    }
}

pub async fn set_quota(svc: &AdminServiceImpl, pattern: String, limit_bytes: u64) -> Result<QuotaInfo, Status> {
    check_pattern(&pattern)?;
    match svc.meta.propose(Command::SetQuota { pattern: pattern.clone(), limit_bytes }).await.map_err(meta_status)? {
        CommandResult::Applied => {}
        other => return Err(Status::internal(format!("unexpected result of a quota change: {other:?}"))),
    }
    // Applied here before the proposal returned: the store has the counted usage.
    let quota = svc.replicator.store().quotas().map_err(|e| Status::internal(e.to_string()))?.into_iter().find(|q| q.pattern == pattern);
    quota.map(quota_info).ok_or_else(|| Status::internal("the quota vanished right after it was set"))
}

pub async fn remove_quota(svc: &AdminServiceImpl, pattern: String) -> Result<(), Status> {
    match svc.meta.propose(Command::RemoveQuota { pattern: pattern.clone() }).await.map_err(meta_status)? {
        CommandResult::Applied => Ok(()),
        CommandResult::QuotaUnknown => Err(Status::not_found(format!("no quota for {pattern:?}"))),
        other => Err(Status::internal(format!("unexpected result of a quota change: {other:?}"))),
    }
}

pub fn list_quotas(svc: &AdminServiceImpl) -> Result<ListQuotasReply, Status> {
    let quotas = svc.replicator.store().quotas().map_err(|e| Status::internal(e.to_string()))?;
    Ok(ListQuotasReply { quotas: quotas.into_iter().map(quota_info).collect() })
}

pub fn usage(svc: &AdminServiceImpl, req: UsageRequest) -> Result<UsageReply, Status> {
    use crate::usage::report::{self, GroupBy, UsageQuery};
    let by = GroupBy::parse(&req.by).ok_or_else(|| Status::invalid_argument(format!("--by {:?}: repo, region or day", req.by)))?;
    let repo = Some(req.repo).filter(|r| !r.is_empty());
    if let Some(p) = &repo {
        check_pattern(p)?;
    }
    let since_unix = match req.since_secs {
        0 => 0,
        secs => crate::meta::command::proposer_clock().saturating_sub(secs),
    };
    let q = UsageQuery { repo, region: Some(req.region).filter(|r| !r.is_empty()), since_unix, by };
    let r = report::usage(svc.replicator.store(), &q).map_err(|e| Status::internal(e.to_string()))?;
    Ok(UsageReply {
        rows: r
            .rows
            .into_iter()
            .map(|row| UsageRow {
                key: row.key,
                has_stored: row.stored.is_some(),
                stored_bytes: row.stored.map(|s| s.0).unwrap_or(0),
                stored_items: row.stored.map(|s| s.1).unwrap_or(0),
                pushed_bytes: row.traffic.pushed_bytes,
                pushed_count: row.traffic.pushed_count,
                pulled_bytes: row.traffic.pulled_bytes,
                pulled_count: row.traffic.pulled_count,
            })
            .collect(),
        replication: r
            .replication
            .into_iter()
            .map(|p| ReplicationUsage { from: p.from, to: p.to, bytes: p.bytes, blobs: p.blobs })
            .collect(),
    })
}

//! The admin service's retention calls: policies, running them, and soft delete's trash.
//! The decisions are `crate::lifecycle`'s; this checks input and maps onto the API.

use super::admin_lifecycle::lifecycle_status;
use super::admin_service::{meta_status, AdminServiceImpl};
use crate::auth::now_unix;
use crate::meta::command::{Command, CommandResult};
use crate::meta::retention::RetentionPolicy;
use meridian_proto::admin::*;
use meridian_replication::Digest;
use tonic::Status;

fn policy_info(p: RetentionPolicy) -> RetentionPolicyInfo {
    RetentionPolicyInfo {
        name: p.name,
        repos: p.repos,
        keep_tags: p.keep_tags,
        keep_last: p.keep_last,
        keep_pushed_within_secs: p.keep_pushed_within_secs,
        keep_pulled_within_secs: p.keep_pulled_within_secs,
        untagged_after_secs: p.untagged_after_secs,
        created_unix: p.created_unix,
    }
}

/// A policy must name its repositories and say what it does: with no keep rule and no
/// `untagged_after` it would do nothing, which is surely not what was meant.
fn check_policy(p: &RetentionPolicyInfo) -> Result<(), Status> {
    let name_ok = !p.name.is_empty()
        && p.name.len() <= 64
        && p.name.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || "._-".contains(c));
    if !name_ok {
        return Err(Status::invalid_argument(format!("policy name {:?}: 1-64 of a-z 0-9 . _ -", p.name)));
    }
    if !crate::registry::names::is_repository_pattern(&p.repos) {
        return Err(Status::invalid_argument(format!("--repos {:?} is not `*`, a repository name or NAME/*", p.repos)));
    }
    if let Some(bad) = p.keep_tags.iter().find(|g| g.is_empty() || g.len() > 128) {
        return Err(Status::invalid_argument(format!("--keep-tags: {bad:?} is not a tag pattern")));
    }
    let keeps = !p.keep_tags.is_empty() || p.keep_last.is_some() || p.keep_pushed_within_secs.is_some() || p.keep_pulled_within_secs.is_some();
    if !keeps && p.untagged_after_secs.is_none() {
        return Err(Status::invalid_argument(
            "a policy needs a keep rule (--keep-tags, --keep-last, --keep-pushed-within, --keep-pulled-within) or --untagged-after",
        ));
    }
    Ok(())
}

pub async fn put_policy(svc: &AdminServiceImpl, info: RetentionPolicyInfo) -> Result<RetentionPolicyInfo, Status> {
    check_policy(&info)?;
    let policy = RetentionPolicy {
        name: info.name,
        repos: info.repos,
        keep_tags: info.keep_tags,
        keep_last: info.keep_last,
        keep_pushed_within_secs: info.keep_pushed_within_secs,
        keep_pulled_within_secs: info.keep_pulled_within_secs,
        untagged_after_secs: info.untagged_after_secs,
        created_unix: now_unix(),
    };
    match svc.meta.propose(Command::PutRetentionPolicy { policy: policy.clone() }).await.map_err(meta_status)? {
        CommandResult::Applied => Ok(policy_info(policy)),
        other => Err(Status::internal(format!("unexpected result of a policy change: {other:?}"))),
    }
}

pub async fn remove_policy(svc: &AdminServiceImpl, name: String) -> Result<(), Status> {
    match svc.meta.propose(Command::RemoveRetentionPolicy { name: name.clone() }).await.map_err(meta_status)? {
        CommandResult::Applied => Ok(()),
        CommandResult::NotFound => Err(Status::not_found(format!("no retention policy named {name:?}"))),
        other => Err(Status::internal(format!("unexpected result of a policy change: {other:?}"))),
    }
}

pub fn list_policies(svc: &AdminServiceImpl) -> Result<ListRetentionPoliciesReply, Status> {
    let policies = svc.replicator.store().retention_policies().map_err(|e| Status::internal(e.to_string()))?;
    Ok(ListRetentionPoliciesReply { policies: policies.into_iter().map(policy_info).collect() })
}

pub async fn run(svc: &AdminServiceImpl, dry_run: bool) -> Result<RetentionRunReply, Status> {
    let done = svc.lifecycle.run_retention(dry_run).await.map_err(lifecycle_status)?;
    Ok(RetentionRunReply {
        deletions: done
            .into_iter()
            .map(|(d, outcome)| RetentionDeletion {
                policy: d.policy,
                repo: d.repo,
                tag: d.tag.unwrap_or_default(),
                digest: d.digest,
                reason: d.reason,
                outcome: outcome.to_string(),
            })
            .collect(),
        to_trash: svc.lifecycle.soft_delete(),
    })
}

pub fn trash_list(svc: &AdminServiceImpl, repo: String) -> Result<TrashListReply, Status> {
    let repo = Some(repo).filter(|r| !r.is_empty());
    let entries = svc.replicator.store().trash(repo.as_deref()).map_err(|e| Status::internal(e.to_string()))?;
    Ok(TrashListReply {
        entries: entries
            .into_iter()
            .map(|e| TrashEntryInfo {
                size: e.manifest.body.len() as u64,
                media_type: e.manifest.media_type,
                repo: e.repo,
                digest: e.digest,
                tags: e.header.tags,
                deleted_unix: e.header.deleted_unix,
                expires_unix: e.header.expires_unix,
            })
            .collect(),
    })
}

pub async fn trash_restore(svc: &AdminServiceImpl, req: TrashRestoreRequest) -> Result<(), Status> {
    let digest = Digest::parse(&req.digest).map_err(|e| Status::invalid_argument(format!("digest {:?}: {e}", req.digest)))?;
    let tag = Some(req.tag).filter(|t| !t.is_empty());
    if let Some(t) = &tag {
        crate::registry::names::validate_tag(t).map_err(|e| Status::invalid_argument(e.to_string()))?;
    }
    if svc.lifecycle.restore(&req.repo, &digest, tag).await.map_err(lifecycle_status)? {
        Ok(())
    } else {
        Err(Status::not_found(format!("{}@{} is not in the trash", req.repo, req.digest)))
    }
}

pub async fn trash_purge(svc: &AdminServiceImpl, repo: String) -> Result<TrashPurgeReply, Status> {
    let repo = Some(repo).filter(|r| !r.is_empty());
    let purged = svc.lifecycle.purge_trash(repo.as_deref(), true).await.map_err(lifecycle_status)?;
    Ok(TrashPurgeReply { purged: purged as u64 })
}

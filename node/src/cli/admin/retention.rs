//! `meridian admin retention …` and `meridian admin trash …`: retention policies, running
//! them, and soft delete's trash.

use super::units::{duration_secs, duration_text};
use super::{call, human_bytes, pretty, rfc3339_utc, Admin, CliError, LONG_CALL_TIMEOUT, SHORT_CALL_TIMEOUT};
use crate::cli::table::{Align, Table};
use clap::Subcommand;
use meridian_proto::admin::{
    Empty, Name, RetentionDeletion, RetentionPolicyInfo, RetentionRunReply, RetentionRunRequest, TrashEntryInfo, TrashListRequest,
    TrashPurgeRequest, TrashRestoreRequest,
};
use serde_json::{json, Value};

/// `meridian admin retention …`
#[derive(Subcommand, Debug)]
pub enum RetentionCommand {
    /// Create or replace a policy. In the repositories it covers, a tag that matches any
    /// keep rule stays and other tags go (with their manifest, when it has no other tag);
    /// untagged manifests go after --untagged-after. Referrers follow their subject.
    Set {
        /// The policy's name: 1-64 of a-z 0-9 . _ -.
        name: String,
        /// `team-a/*`, `*` or one repository.
        #[arg(long)]
        repos: String,
        /// Tags matching any of these globs stay: `v*,release-*`.
        #[arg(long, value_delimiter = ',')]
        keep_tags: Vec<String>,
        /// The N most recently pushed tags of each repository stay.
        #[arg(long)]
        keep_last: Option<u64>,
        /// Tags pushed within this long stay (30d, 12h).
        #[arg(long, value_parser = duration_secs)]
        keep_pushed_within: Option<u64>,
        /// Tags whose manifest was pulled within this long stay.
        #[arg(long, value_parser = duration_secs)]
        keep_pulled_within: Option<u64>,
        /// Manifests without a tag go once pushed longer ago than this.
        #[arg(long, value_parser = duration_secs)]
        untagged_after: Option<u64>,
    },
    /// Every policy.
    List,
    /// Remove a policy (nothing is deleted).
    Remove { name: String },
    /// Apply every policy now; with --dry-run show each tag and manifest that would go,
    /// and why, and change nothing.
    Run {
        #[arg(long)]
        dry_run: bool,
    },
}

/// `meridian admin trash …`
#[derive(Subcommand, Debug)]
pub enum TrashCommand {
    /// Manifests deleted while soft delete is on, restorable until they expire.
    List {
        #[arg(long)]
        repo: Option<String>,
    },
    /// Put a manifest back, byte-identical: REPO@DIGEST.
    Restore {
        reference: String,
        /// Tag it with this once restored.
        #[arg(long)]
        tag: Option<String>,
    },
    /// Delete trashed manifests for good now (their blobs go at the next collection).
    Purge {
        #[arg(long)]
        repo: Option<String>,
    },
}

pub async fn run_retention(admin: &Admin, cmd: RetentionCommand, json: bool) -> Result<String, CliError> {
    let mut client = admin.client.clone();
    match cmd {
        RetentionCommand::Set { name, repos, keep_tags, keep_last, keep_pushed_within, keep_pulled_within, untagged_after } => {
            let info = RetentionPolicyInfo {
                name,
                repos,
                keep_tags: keep_tags.into_iter().map(|t| t.trim().to_string()).filter(|t| !t.is_empty()).collect(),
                keep_last,
                keep_pushed_within_secs: keep_pushed_within,
                keep_pulled_within_secs: keep_pulled_within,
                untagged_after_secs: untagged_after,
                created_unix: 0,
            };
            let saved = call(SHORT_CALL_TIMEOUT, client.put_retention_policy(admin.request(info))).await?;
            Ok(if json { pretty(&policy_json(&saved)) } else { format!("policy {} saved: {}", saved.name, rules_text(&saved)) })
        }
        RetentionCommand::List => {
            let reply = call(SHORT_CALL_TIMEOUT, client.list_retention_policies(admin.request(Empty {}))).await?;
            Ok(if json {
                pretty(&json!({ "policies": reply.policies.iter().map(policy_json).collect::<Vec<_>>() }))
            } else {
                render_policies(&reply.policies)
            })
        }
        RetentionCommand::Remove { name } => {
            call(SHORT_CALL_TIMEOUT, client.remove_retention_policy(admin.request(Name { name: name.clone() }))).await?;
            Ok(if json { pretty(&json!({ "removed": name })) } else { format!("policy {name} removed") })
        }
        RetentionCommand::Run { dry_run } => {
            let reply = call(LONG_CALL_TIMEOUT, client.run_retention(admin.request(RetentionRunRequest { dry_run }))).await?;
            Ok(if json { pretty(&run_json(&reply, dry_run)) } else { render_run(&reply, dry_run) })
        }
    }
}

pub async fn run_trash(admin: &Admin, cmd: TrashCommand, json: bool) -> Result<String, CliError> {
    let mut client = admin.client.clone();
    match cmd {
        TrashCommand::List { repo } => {
            let reply = call(SHORT_CALL_TIMEOUT, client.trash_list(admin.request(TrashListRequest { repo: repo.unwrap_or_default() }))).await?;
            Ok(if json {
                pretty(&json!({ "entries": reply.entries.iter().map(trash_json).collect::<Vec<_>>() }))
            } else {
                render_trash(&reply.entries)
            })
        }
        TrashCommand::Restore { reference, tag } => {
            let (repo, digest) = reference
                .split_once('@')
                .ok_or_else(|| CliError::Usage(format!("{reference:?}: expected REPO@DIGEST, e.g. team-a/app@sha256:…")))?;
            let req = TrashRestoreRequest { repo: repo.to_string(), digest: digest.to_string(), tag: tag.clone().unwrap_or_default() };
            call(SHORT_CALL_TIMEOUT, client.trash_restore(admin.request(req))).await?;
            Ok(if json {
                pretty(&json!({ "restored": reference, "tag": tag }))
            } else {
                match tag {
                    Some(t) => format!("restored {reference} as {repo}:{t}"),
                    None => format!("restored {reference}"),
                }
            })
        }
        TrashCommand::Purge { repo } => {
            let reply = call(LONG_CALL_TIMEOUT, client.trash_purge(admin.request(TrashPurgeRequest { repo: repo.unwrap_or_default() }))).await?;
            Ok(if json {
                pretty(&json!({ "purged": reply.purged }))
            } else {
                format!("purged {} manifest(s) for good; their blobs go at the next garbage collection", reply.purged)
            })
        }
    }
}

fn rules_text(p: &RetentionPolicyInfo) -> String {
    let mut rules = Vec::new();
    if !p.keep_tags.is_empty() {
        rules.push(format!("keep tags {}", p.keep_tags.join(",")));
    }
    if let Some(n) = p.keep_last {
        rules.push(format!("keep last {n}"));
    }
    if let Some(s) = p.keep_pushed_within_secs {
        rules.push(format!("keep pushed within {}", duration_text(s)));
    }
    if let Some(s) = p.keep_pulled_within_secs {
        rules.push(format!("keep pulled within {}", duration_text(s)));
    }
    if let Some(s) = p.untagged_after_secs {
        rules.push(format!("untagged after {}", duration_text(s)));
    }
    format!("{}: {}", p.repos, rules.join("; "))
}

fn policy_json(p: &RetentionPolicyInfo) -> Value {
    json!({
        "name": p.name,
        "repos": p.repos,
        "keep_tags": p.keep_tags,
        "keep_last": p.keep_last,
        "keep_pushed_within_secs": p.keep_pushed_within_secs,
        "keep_pulled_within_secs": p.keep_pulled_within_secs,
        "untagged_after_secs": p.untagged_after_secs,
        "created": rfc3339_utc(p.created_unix),
    })
}

fn render_policies(policies: &[RetentionPolicyInfo]) -> String {
    if policies.is_empty() {
        return "no retention policies".to_string();
    }
    let mut table = Table::new(&[("NAME", Align::Left), ("REPOSITORIES", Align::Left), ("RULES", Align::Left)]);
    for p in policies {
        let rules = rules_text(p);
        let rules = rules.split_once(": ").map(|(_, r)| r.to_string()).unwrap_or(rules);
        table.row(vec![p.name.clone(), p.repos.clone(), rules]);
    }
    table.render()
}

fn deletion_json(d: &RetentionDeletion) -> Value {
    json!({
        "policy": d.policy,
        "repo": d.repo,
        "tag": (!d.tag.is_empty()).then_some(&d.tag),
        "digest": d.digest,
        "reason": d.reason,
        "outcome": d.outcome,
    })
}

fn run_json(r: &RetentionRunReply, dry_run: bool) -> Value {
    json!({ "dry_run": dry_run, "to_trash": r.to_trash, "deletions": r.deletions.iter().map(deletion_json).collect::<Vec<_>>() })
}

fn render_run(r: &RetentionRunReply, dry_run: bool) -> String {
    if r.deletions.is_empty() {
        return "nothing to delete: every tag and manifest is kept".to_string();
    }
    let mut table = Table::new(&[
        ("REPOSITORY", Align::Left),
        ("TAG", Align::Left),
        ("DIGEST", Align::Left),
        ("WHY", Align::Left),
        ("OUTCOME", Align::Left),
    ]);
    for d in &r.deletions {
        table.row(vec![
            d.repo.clone(),
            if d.tag.is_empty() { "-".into() } else { d.tag.clone() },
            d.digest.clone(),
            format!("{} ({})", d.reason, d.policy),
            d.outcome.clone(),
        ]);
    }
    let note = match (dry_run, r.to_trash) {
        (true, _) => "dry run: nothing was deleted\n",
        (false, true) => "deleted manifests are in the trash (meridian admin trash list)\n",
        (false, false) => "",
    };
    format!("{note}{}", table.render())
}

fn trash_json(e: &TrashEntryInfo) -> Value {
    json!({
        "repo": e.repo,
        "digest": e.digest,
        "media_type": e.media_type,
        "size": e.size,
        "tags": e.tags,
        "deleted": rfc3339_utc(e.deleted_unix),
        "expires": rfc3339_utc(e.expires_unix),
    })
}

fn render_trash(entries: &[TrashEntryInfo]) -> String {
    if entries.is_empty() {
        return "the trash is empty".to_string();
    }
    let mut table = Table::new(&[
        ("REPOSITORY", Align::Left),
        ("DIGEST", Align::Left),
        ("TAGS", Align::Left),
        ("SIZE", Align::Right),
        ("DELETED", Align::Left),
        ("EXPIRES", Align::Left),
    ]);
    for e in entries {
        table.row(vec![
            e.repo.clone(),
            e.digest.clone(),
            if e.tags.is_empty() { "-".into() } else { e.tags.join(",") },
            human_bytes(e.size),
            rfc3339_utc(e.deleted_unix),
            rfc3339_utc(e.expires_unix),
        ]);
    }
    table.render()
}

//! What retention policies decide from, kept in the cluster state: the policies, and when
//! each manifest was pushed, each tag set and each manifest last pulled.
//!
//! Times are the proposer's clock carried in the entries (a push, a batch of pulls), so
//! every node holds the same figures. Pull times arrive in batches, at most one entry per
//! region per `retention.pull_record_secs`, never one per pull.
//!
//! `sm_retention` keys: `policy/<name>` → `RetentionPolicy` (JSON).
//! `sm_activity` keys (u64 BE Unix seconds): `repo\0m\0digest` pushed, `repo\0t\0tag`
//! tagged, `repo\0p\0digest` last pulled.

use super::records::encode_json;
use super::store::{repo_key, Store, StoreError, CF_SM_ACTIVITY, CF_SM_MANIFESTS, CF_SM_RETENTION};
use meridian_replication::Digest;
use rocksdb::WriteBatch;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;

/// A retention policy: which repositories it covers, and what in them it keeps.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RetentionPolicy {
    pub name: String,
    /// `team-a/*`, `*` or one repository.
    pub repos: String,
    /// Tags matching any of these globs (`v*`, `release-*`) stay.
    #[serde(default)]
    pub keep_tags: Vec<String>,
    /// The N most recently pushed tags of each repository stay.
    #[serde(default)]
    pub keep_last: Option<u64>,
    /// Tags pushed within this many seconds stay.
    #[serde(default)]
    pub keep_pushed_within_secs: Option<u64>,
    /// Tags whose manifest was pulled within this many seconds stay.
    #[serde(default)]
    pub keep_pulled_within_secs: Option<u64>,
    /// Manifests without a tag go once pushed longer ago than this.
    #[serde(default)]
    pub untagged_after_secs: Option<u64>,
    pub created_unix: u64,
}

/// Kinds of time in `sm_activity`.
pub(super) const PUSHED: &str = "m";
pub(super) const TAGGED: &str = "t";
const PULLED: &str = "p";

pub(super) fn activity_key(repo: &str, kind: &str, name: &str) -> Vec<u8> {
    repo_key(repo, &format!("{kind}\0{name}"))
}

fn policy_key(name: &str) -> Vec<u8> {
    format!("policy/{name}").into_bytes()
}

fn corrupt(cf: &'static str, reason: impl Into<String>) -> StoreError {
    StoreError::Corrupt { cf, reason: reason.into() }
}

fn time_value(raw: &[u8]) -> Result<u64, StoreError> {
    Ok(u64::from_be_bytes(raw.try_into().map_err(|_| corrupt(CF_SM_ACTIVITY, "time"))?))
}

/// Writes to `sm_activity` and `sm_retention` as entries are applied.
pub(super) struct ActivityBook<'a> {
    pub store: &'a Store,
}

impl ActivityBook<'_> {
    /// A manifest pushed (again) at `at`, with these tags set on it.
    pub fn pushed(&self, batch: &mut WriteBatch, repo: &str, digest: &str, tags: &[String], at: u64) -> Result<(), StoreError> {
        let cf = self.store.cf(CF_SM_ACTIVITY)?;
        batch.put_cf(cf, activity_key(repo, PUSHED, digest), at.to_be_bytes());
        for tag in tags {
            batch.put_cf(cf, activity_key(repo, TAGGED, tag), at.to_be_bytes());
        }
        Ok(())
    }

    pub fn manifest_gone(&self, batch: &mut WriteBatch, repo: &str, digest: &str) -> Result<(), StoreError> {
        let cf = self.store.cf(CF_SM_ACTIVITY)?;
        batch.delete_cf(cf, activity_key(repo, PUSHED, digest));
        batch.delete_cf(cf, activity_key(repo, PULLED, digest));
        Ok(())
    }

    pub fn tag_gone(&self, batch: &mut WriteBatch, repo: &str, tag: &str) -> Result<(), StoreError> {
        batch.delete_cf(self.store.cf(CF_SM_ACTIVITY)?, activity_key(repo, TAGGED, tag));
        Ok(())
    }

    /// A region's batch of pulls at `at`: each manifest still there is pulled no earlier.
    pub fn pulled(&self, batch: &mut WriteBatch, pulls: &[(String, Digest)], at: u64) -> Result<(), StoreError> {
        let cf = self.store.cf(CF_SM_ACTIVITY)?;
        for (repo, digest) in pulls {
            let digest = digest.to_string();
            if !self.store.exists(CF_SM_MANIFESTS, &repo_key(repo, &digest))? {
                continue;
            }
            let key = activity_key(repo, PULLED, &digest);
            let before = match self.store.get(CF_SM_ACTIVITY, &key)? {
                Some(raw) => time_value(&raw)?,
                None => 0,
            };
            if at > before {
                batch.put_cf(cf, key, at.to_be_bytes());
            }
        }
        Ok(())
    }

    pub fn put_policy(&self, batch: &mut WriteBatch, policy: &RetentionPolicy) -> Result<(), StoreError> {
        batch.put_cf(self.store.cf(CF_SM_RETENTION)?, policy_key(&policy.name), encode_json(policy));
        Ok(())
    }

    /// False when there was no such policy.
    pub fn remove_policy(&self, batch: &mut WriteBatch, name: &str) -> Result<bool, StoreError> {
        if !self.store.exists(CF_SM_RETENTION, &policy_key(name))? {
            return Ok(false);
        }
        batch.delete_cf(self.store.cf(CF_SM_RETENTION)?, policy_key(name));
        Ok(true)
    }
}

/// One repository's times, for evaluating policies.
#[derive(Debug, Default)]
pub struct RepoActivity {
    /// digest → pushed (Unix seconds).
    pub pushed: HashMap<String, u64>,
    /// tag → when it was last set.
    pub tagged: HashMap<String, u64>,
    /// digest → last pulled.
    pub pulled: HashMap<String, u64>,
}

impl Store {
    pub fn retention_policies(&self) -> Result<Vec<RetentionPolicy>, StoreError> {
        self.scan_prefix(CF_SM_RETENTION, b"policy/", None, usize::MAX)?
            .into_iter()
            .map(|(_, v)| serde_json::from_slice(&v).map_err(|e| corrupt(CF_SM_RETENTION, e.to_string())))
            .collect()
    }

    /// Every tag of `repo` with the digest it points at.
    pub fn tag_targets(&self, repo: &str) -> Result<Vec<(String, String)>, StoreError> {
        let prefix = super::store::repo_prefix(repo);
        Ok(self
            .scan_prefix(super::store::CF_SM_TAGS, &prefix, None, usize::MAX)?
            .into_iter()
            .map(|(k, v)| (String::from_utf8_lossy(&k[prefix.len()..]).into_owned(), String::from_utf8_lossy(&v).into_owned()))
            .collect())
    }

    /// Every manifest of `repo`, by digest.
    pub fn repo_manifests(&self, repo: &str) -> Result<Vec<(String, super::records::StoredManifest)>, StoreError> {
        let prefix = super::store::repo_prefix(repo);
        self.scan_prefix(CF_SM_MANIFESTS, &prefix, None, usize::MAX)?
            .into_iter()
            .map(|(k, v)| Ok((String::from_utf8_lossy(&k[prefix.len()..]).into_owned(), super::records::StoredManifest::decode(&v)?)))
            .collect()
    }

    pub fn repo_activity(&self, repo: &str) -> Result<RepoActivity, StoreError> {
        let mut activity = RepoActivity::default();
        for (kind, map) in [(PUSHED, &mut activity.pushed), (TAGGED, &mut activity.tagged), (PULLED, &mut activity.pulled)] {
            let prefix = activity_key(repo, kind, "");
            for (k, v) in self.scan_prefix(CF_SM_ACTIVITY, &prefix, None, usize::MAX)? {
                map.insert(String::from_utf8_lossy(&k[prefix.len()..]).into_owned(), time_value(&v)?);
            }
        }
        Ok(activity)
    }
}

//! Storage quotas per namespace (a repository pattern), kept exactly at apply time.
//!
//! A namespace's usage is the size of the distinct blobs and manifests its repositories'
//! manifests reference: a layer shared by ten tags, or by two repositories of the
//! namespace, counts once. Each quota keeps a reference count per item (how many of the
//! namespace's repositories hold it), so applying a push or a delete changes the usage by
//! exactly what appeared or went — no scan, and every node reaches the same figure.
//! Because the check runs in the apply, two regions pushing into one namespace at once
//! are ordered by the log and cannot overshoot together.
//!
//! `sm_quotas` keys: `q\0<pattern>` → `Quota` (JSON); `r\0<pattern>\0<item>` → size and
//! count (two u64 BE), where an item is `b:<digest>` (blob) or `m:<digest>` (manifest).

use super::patterns::pattern_matches;
use super::records::{encode_json, BlobLink, StoredManifest};
use super::store::{repo_prefix, Store, StoreError, CF_SM_BLOB_LINKS, CF_SM_MANIFESTS, CF_SM_QUOTAS, CF_SM_REPOS};
use rocksdb::WriteBatch;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Quota {
    pub pattern: String,
    pub limit_bytes: u64,
    /// Bytes the namespace's manifests reference now.
    pub used_bytes: u64,
}

/// Something a namespace stores: a blob or a manifest's own bytes.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum Item {
    Blob(String),
    Manifest(String),
}

impl Item {
    fn key_part(&self) -> String {
        match self {
            Item::Blob(d) => format!("b:{d}"),
            Item::Manifest(d) => format!("m:{d}"),
        }
    }
}

/// A refusal: applying would take the namespace past its limit.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct QuotaExceeded {
    pub pattern: String,
    pub used_bytes: u64,
    pub limit_bytes: u64,
    /// What the refused change would have added.
    pub adding_bytes: u64,
}

fn quota_key(pattern: &str) -> Vec<u8> {
    format!("q\0{pattern}").into_bytes()
}

fn ref_prefix(pattern: &str) -> Vec<u8> {
    format!("r\0{pattern}\0").into_bytes()
}

fn ref_key(pattern: &str, item: &Item) -> Vec<u8> {
    let mut k = ref_prefix(pattern);
    k.extend_from_slice(item.key_part().as_bytes());
    k
}

fn corrupt(reason: impl Into<String>) -> StoreError {
    StoreError::Corrupt { cf: CF_SM_QUOTAS, reason: reason.into() }
}

impl Store {
    /// Every quota, in pattern order.
    pub fn quotas(&self) -> Result<Vec<Quota>, StoreError> {
        self.scan_prefix(CF_SM_QUOTAS, b"q\0", None, usize::MAX)?
            .into_iter()
            .map(|(_, v)| serde_json::from_slice(&v).map_err(|e| corrupt(e.to_string())))
            .collect()
    }

    /// The quotas whose pattern covers `repo`.
    pub fn quotas_covering(&self, repo: &str) -> Result<Vec<Quota>, StoreError> {
        Ok(self.quotas()?.into_iter().filter(|q| pattern_matches(&q.pattern, repo)).collect())
    }

    /// A quota covering `repo` that is already full: new uploads into it are refused
    /// before their bytes are read.
    pub fn full_quota(&self, repo: &str) -> Result<Option<Quota>, StoreError> {
        Ok(self.quotas_covering(repo)?.into_iter().find(|q| q.used_bytes >= q.limit_bytes))
    }
}

/// Applying quota changes: what a push adds, what a delete gives back.
pub(super) struct QuotaBook<'a> {
    store: &'a Store,
    quotas: Vec<Quota>,
}

impl<'a> QuotaBook<'a> {
    pub fn for_repo(store: &'a Store, repo: &str) -> Result<QuotaBook<'a>, StoreError> {
        Ok(QuotaBook { store, quotas: store.quotas_covering(repo)? })
    }

    fn refs(&self, pattern: &str, item: &Item) -> Result<Option<BlobLink>, StoreError> {
        match self.store.get(CF_SM_QUOTAS, &ref_key(pattern, item))? {
            Some(raw) => Ok(Some(BlobLink::decode(&raw).map_err(|_| corrupt("quota reference"))?)),
            None => Ok(None),
        }
    }

    /// `added` are items that become the repository's (each at most once, none it already
    /// had). Refused when a covering quota would go past its limit; otherwise their
    /// counts and the usage go into `batch`.
    pub fn add(&self, batch: &mut WriteBatch, added: &[(Item, u64)]) -> Result<Result<(), QuotaExceeded>, StoreError> {
        let mut updates = Vec::with_capacity(self.quotas.len());
        for quota in &self.quotas {
            let mut adding = 0u64;
            let mut counts = Vec::with_capacity(added.len());
            for (item, size) in added {
                let refs = match self.refs(&quota.pattern, item)? {
                    Some(link) => link.refs + 1,
                    None => {
                        adding += size;
                        1
                    }
                };
                counts.push((ref_key(&quota.pattern, item), BlobLink { size: *size, refs }));
            }
            let used = quota.used_bytes.saturating_add(adding);
            if adding > 0 && used > quota.limit_bytes {
                return Ok(Err(QuotaExceeded {
                    pattern: quota.pattern.clone(),
                    used_bytes: quota.used_bytes,
                    limit_bytes: quota.limit_bytes,
                    adding_bytes: adding,
                }));
            }
            updates.push((Quota { used_bytes: used, ..quota.clone() }, counts));
        }
        let cf = self.store.cf(CF_SM_QUOTAS)?;
        for (quota, counts) in updates {
            for (key, link) in counts {
                batch.put_cf(cf, key, link.encode());
            }
            batch.put_cf(cf, quota_key(&quota.pattern), encode_json(&quota));
        }
        Ok(Ok(()))
    }

    /// `removed` are items the repository no longer has (each at most once).
    pub fn remove(&self, batch: &mut WriteBatch, removed: &[Item]) -> Result<(), StoreError> {
        let cf = self.store.cf(CF_SM_QUOTAS)?;
        for quota in &self.quotas {
            let mut freed = 0u64;
            for item in removed {
                let key = ref_key(&quota.pattern, item);
                match self.refs(&quota.pattern, item)? {
                    Some(link) if link.refs > 1 => batch.put_cf(cf, key, BlobLink { refs: link.refs - 1, ..link }.encode()),
                    Some(link) => {
                        batch.delete_cf(cf, key);
                        freed += link.size;
                    }
                    None => {}
                }
            }
            if freed > 0 {
                let quota = Quota { used_bytes: quota.used_bytes.saturating_sub(freed), ..quota.clone() };
                batch.put_cf(cf, quota_key(&quota.pattern), encode_json(&quota));
            }
        }
        Ok(())
    }
}

/// Sets a quota's limit. A new quota counts what its namespace holds now (one scan of the
/// covered repositories, at apply, so every node counts the same); an existing one keeps
/// its counts. A limit below the usage is allowed: pushes that add bytes are refused
/// until deletes bring the namespace under.
pub(super) fn apply_set(store: &Store, batch: &mut WriteBatch, pattern: &str, limit_bytes: u64) -> Result<(), StoreError> {
    let cf = store.cf(CF_SM_QUOTAS)?;
    if let Some(raw) = store.get(CF_SM_QUOTAS, &quota_key(pattern))? {
        let quota: Quota = serde_json::from_slice(&raw).map_err(|e| corrupt(e.to_string()))?;
        batch.put_cf(cf, quota_key(pattern), encode_json(&Quota { limit_bytes, ..quota }));
        return Ok(());
    }
    let mut items: BTreeMap<Item, BlobLink> = BTreeMap::new();
    let mut count = |item: Item, size: u64| {
        items.entry(item).and_modify(|l| l.refs += 1).or_insert(BlobLink { size, refs: 1 });
    };
    for (repo, _) in store.scan_prefix(CF_SM_REPOS, b"", None, usize::MAX)? {
        let repo = String::from_utf8_lossy(&repo).into_owned();
        if !pattern_matches(pattern, &repo) {
            continue;
        }
        let prefix = repo_prefix(&repo);
        for (key, value) in store.scan_prefix(CF_SM_BLOB_LINKS, &prefix, None, usize::MAX)? {
            let digest = String::from_utf8_lossy(&key[prefix.len()..]).into_owned();
            count(Item::Blob(digest), BlobLink::decode(&value)?.size);
        }
        for (key, value) in store.scan_prefix(CF_SM_MANIFESTS, &prefix, None, usize::MAX)? {
            let digest = String::from_utf8_lossy(&key[prefix.len()..]).into_owned();
            count(Item::Manifest(digest), StoredManifest::body_len(&value)?);
        }
    }
    let used_bytes = items.values().map(|l| l.size).sum();
    for (item, link) in &items {
        batch.put_cf(cf, ref_key(pattern, item), link.encode());
    }
    batch.put_cf(cf, quota_key(pattern), encode_json(&Quota { pattern: pattern.to_string(), limit_bytes, used_bytes }));
    Ok(())
}

/// Removes a quota and its counts; false when there was none.
pub(super) fn apply_remove(store: &Store, batch: &mut WriteBatch, pattern: &str) -> Result<bool, StoreError> {
    if !store.exists(CF_SM_QUOTAS, &quota_key(pattern))? {
        return Ok(false);
    }
    let cf = store.cf(CF_SM_QUOTAS)?;
    batch.delete_cf(cf, quota_key(pattern));
    let prefix = ref_prefix(pattern);
    let mut end = prefix.clone();
    // `\0` ends the pattern in every key of this quota; `\x01` bounds them all.
    if let Some(last) = end.last_mut() {
        *last = 1;
    }
    batch.delete_range_cf(cf, &prefix, &end);
    Ok(true)
}

//! Content discovery: tags, the catalog, referrers.

use super::{Registry, RegistryError, Result};
use crate::meta::records::ReferrerDescriptor;
use meridian_replication::Digest;

/// One page of a listing and whether more follow.
pub struct Page {
    pub items: Vec<String>,
    pub more: bool,
}

fn page(mut items: Vec<String>, n: Option<usize>) -> Page {
    match n {
        Some(n) if items.len() > n => {
            items.truncate(n);
            Page { items, more: true }
        }
        _ => Page { items, more: false },
    }
}

impl Registry {
    pub fn list_tags(&self, repo: &str, n: Option<usize>, last: Option<&str>) -> Result<Page> {
        if !self.store.repo_exists(repo)? {
            return Err(RegistryError::NameUnknown(repo.to_string()));
        }
        if n == Some(0) {
            return Ok(Page { items: Vec::new(), more: false });
        }
        let limit = n.map(|n| n + 1).unwrap_or(usize::MAX);
        Ok(page(self.store.tags(repo, last, limit)?, n))
    }

    /// Repositories after `last` that `visible` lets the caller see, at most `n`.
    pub fn catalog(&self, n: Option<usize>, last: Option<&str>, visible: impl Fn(&str) -> bool) -> Result<Page> {
        if n == Some(0) {
            return Ok(Page { items: Vec::new(), more: false });
        }
        let limit = n.map(|n| n + 1).unwrap_or(usize::MAX);
        // Scan in batches, filtering, until a page (plus one, to know whether more follow)
        // is full or the repositories run out.
        const BATCH: usize = 1000;
        let mut items = Vec::new();
        let mut cursor = last.map(str::to_string);
        while items.len() < limit {
            let batch = self.store.repositories(cursor.as_deref(), BATCH)?;
            let exhausted = batch.len() < BATCH;
            cursor = batch.last().cloned();
            items.extend(batch.into_iter().filter(|r| visible(r)).take(limit - items.len()));
            if exhausted {
                break;
            }
        }
        Ok(page(items, n))
    }

    pub fn referrers(&self, repo: &str, subject: &Digest, artifact_type: Option<&str>) -> Result<Vec<ReferrerDescriptor>> {
        let mut all = self.store.referrers(repo, subject)?;
        if let Some(filter) = artifact_type {
            all.retain(|d| d.artifact_type.as_deref() == Some(filter));
        }
        Ok(all)
    }
}

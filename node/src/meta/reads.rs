//! Read queries over the local applied state. No network, no Raft: a read in any region
//! answers from what this node has applied.

use super::records::{
    decode_auth, BlobLink, BlobLocation, GcSweepReport, LocalLink, ReferrerDescriptor, RobotRecord, ScopeMap, SigningKey,
    StoredManifest, UserRecord,
};
use super::store::{
    auth_key, repo_key, repo_prefix, Store, StoreError, CF_SM_AUTH, CF_LOCAL_BLOB_LINKS, CF_SM_BLOBS, CF_SM_BLOB_LINKS,
    CF_SM_MANIFESTS, CF_SM_REFERRERS, CF_SM_REPOS, CF_SM_TAGS,
};
use meridian_replication::Digest;

impl Store {
    pub fn manifest(&self, repo: &str, digest: &Digest) -> Result<Option<StoredManifest>, StoreError> {
        match self.get(CF_SM_MANIFESTS, &repo_key(repo, &digest.to_string()))? {
            Some(raw) => Ok(Some(StoredManifest::decode(&raw)?)),
            None => Ok(None),
        }
    }

    pub fn manifest_exists(&self, repo: &str, digest: &Digest) -> Result<bool, StoreError> {
        self.exists(CF_SM_MANIFESTS, &repo_key(repo, &digest.to_string()))
    }

    /// The digest a tag points at.
    pub fn resolve_tag(&self, repo: &str, tag: &str) -> Result<Option<Digest>, StoreError> {
        match self.get(CF_SM_TAGS, &repo_key(repo, tag))? {
            Some(raw) => {
                let s = std::str::from_utf8(&raw)
                    .map_err(|e| StoreError::Corrupt { cf: CF_SM_TAGS, reason: e.to_string() })?;
                Digest::parse(s)
                    .map(Some)
                    .map_err(|e| StoreError::Corrupt { cf: CF_SM_TAGS, reason: e.to_string() })
            }
            None => Ok(None),
        }
    }

    pub fn repo_exists(&self, repo: &str) -> Result<bool, StoreError> {
        self.exists(CF_SM_REPOS, repo.as_bytes())
    }

    /// Tags in ASCII order, starting after `last`, at most `limit`.
    pub fn tags(&self, repo: &str, last: Option<&str>, limit: usize) -> Result<Vec<String>, StoreError> {
        let prefix = repo_prefix(repo);
        let after = last.map(|l| repo_key(repo, l));
        Ok(self
            .scan_prefix(CF_SM_TAGS, &prefix, after.as_deref(), limit)?
            .into_iter()
            .map(|(k, _)| String::from_utf8_lossy(&k[prefix.len()..]).into_owned())
            .collect())
    }

    /// Calls `f` with every repository name in ASCII order, a page at a time (no listing
    /// of all names held in memory).
    pub fn for_each_repository(&self, mut f: impl FnMut(&str) -> Result<(), StoreError>) -> Result<(), StoreError> {
        const PAGE: usize = 1000;
        let mut last: Option<String> = None;
        loop {
            let page = self.repositories(last.as_deref(), PAGE)?;
            for repo in &page {
                f(repo)?;
            }
            match page.last() {
                Some(l) if page.len() == PAGE => last = Some(l.clone()),
                _ => return Ok(()),
            }
        }
    }

    /// Repository names in ASCII order, starting after `last`, at most `limit`.
    pub fn repositories(&self, last: Option<&str>, limit: usize) -> Result<Vec<String>, StoreError> {
        Ok(self
            .scan_prefix(CF_SM_REPOS, b"", last.map(|l| l.as_bytes()), limit)?
            .into_iter()
            .map(|(k, _)| String::from_utf8_lossy(&k).into_owned())
            .collect())
    }

    pub fn referrers(&self, repo: &str, subject: &Digest) -> Result<Vec<ReferrerDescriptor>, StoreError> {
        let prefix = repo_key(repo, &format!("{subject}\0"));
        self.scan_prefix(CF_SM_REFERRERS, &prefix, None, usize::MAX)?
            .into_iter()
            .map(|(_, v)| {
                serde_json::from_slice(&v).map_err(|e| StoreError::Corrupt { cf: CF_SM_REFERRERS, reason: e.to_string() })
            })
            .collect()
    }

    /// Size of a blob the repository may serve: referenced by one of its manifests
    /// (cluster-wide) or pushed/mounted into it on this node.
    pub fn linked_blob_size(&self, repo: &str, digest: &Digest) -> Result<Option<u64>, StoreError> {
        if let Some(size) = self.referenced_blob_size(repo, digest)? {
            return Ok(Some(size));
        }
        let key = repo_key(repo, &digest.to_string());
        if let Some(raw) = self.get(CF_LOCAL_BLOB_LINKS, &key)? {
            return Ok(Some(LocalLink::decode(&raw)?.size));
        }
        Ok(None)
    }

    /// Size of a blob one of the repository's manifests references (cluster-wide state).
    pub fn referenced_blob_size(&self, repo: &str, digest: &Digest) -> Result<Option<u64>, StoreError> {
        match self.get(CF_SM_BLOB_LINKS, &repo_key(repo, &digest.to_string()))? {
            Some(raw) => Ok(Some(BlobLink::decode(&raw)?.size)),
            None => Ok(None),
        }
    }

    pub fn blob_location(&self, digest: &Digest) -> Result<Option<BlobLocation>, StoreError> {
        match self.get(CF_SM_BLOBS, digest.to_string().as_bytes())? {
            Some(raw) => Ok(Some(BlobLocation::decode(&raw)?)),
            None => Ok(None),
        }
    }

    pub fn user(&self, name: &str) -> Result<Option<UserRecord>, StoreError> {
        self.get(CF_SM_AUTH, &auth_key("user", name))?.map(|raw| decode_auth(&raw)).transpose()
    }

    pub fn users(&self) -> Result<Vec<UserRecord>, StoreError> {
        self.auth_records("user/")
    }

    pub fn robot(&self, name: &str) -> Result<Option<RobotRecord>, StoreError> {
        self.get(CF_SM_AUTH, &auth_key("robot", name))?.map(|raw| decode_auth(&raw)).transpose()
    }

    pub fn robots(&self) -> Result<Vec<RobotRecord>, StoreError> {
        self.auth_records("robot/")
    }

    pub fn scope_map(&self, name: &str) -> Result<Option<ScopeMap>, StoreError> {
        self.get(CF_SM_AUTH, &auth_key("scopemap", name))?.map(|raw| decode_auth(&raw)).transpose()
    }

    pub fn scope_maps(&self) -> Result<Vec<ScopeMap>, StoreError> {
        self.auth_records("scopemap/")
    }

    /// Every token-signing key, oldest first.
    pub fn signing_keys(&self) -> Result<Vec<SigningKey>, StoreError> {
        let mut keys: Vec<SigningKey> = self.auth_records("key/")?;
        keys.sort_by(|a, b| (a.created_unix, &a.kid).cmp(&(b.created_unix, &b.kid)));
        Ok(keys)
    }

    /// Whether the applied state holds a token-signing key and at least one user: what
    /// a node needs before it can check a login.
    pub fn has_identities(&self) -> Result<bool, StoreError> {
        let any = |prefix: &str| self.scan_prefix(CF_SM_AUTH, prefix.as_bytes(), None, 1).map(|found| !found.is_empty());
        Ok(any("key/")? && any("user/")?)
    }

    /// Blobs no manifest has referenced for `grace_secs` before `now`, with their sizes:
    /// garbage collection's candidates, at most `limit` of them in digest order after
    /// `after` (a page: the caller proposes one page at a time, so memory stays flat
    /// however many blobs the cluster holds).
    pub fn collectable_blobs(&self, now: u64, grace_secs: u64, after: Option<&Digest>, limit: usize) -> Result<Vec<(Digest, u64)>, StoreError> {
        let mut out = Vec::new();
        let start = after.map(|d| d.to_string());
        let mode = match &start {
            Some(key) => rocksdb::IteratorMode::From(key.as_bytes(), rocksdb::Direction::Forward),
            None => rocksdb::IteratorMode::Start,
        };
        for item in self.db().iterator_cf_opt(self.cf(CF_SM_BLOBS)?, Store::bulk_read_options(), mode) {
            let (key, raw) = item?;
            if start.as_deref().is_some_and(|s| s.as_bytes() == &key[..]) {
                continue;
            }
            let location = BlobLocation::decode(&raw)?;
            if !location.collectable(now, grace_secs) {
                continue;
            }
            let text = std::str::from_utf8(&key).map_err(|e| StoreError::Corrupt { cf: CF_SM_BLOBS, reason: e.to_string() })?;
            let digest = Digest::parse(text).map_err(|e| StoreError::Corrupt { cf: CF_SM_BLOBS, reason: e.to_string() })?;
            out.push((digest, location.size));
            if out.len() >= limit {
                break;
            }
        }
        Ok(out)
    }

    /// The last garbage-collection sweep of every region that reported one.
    pub fn gc_sweep_reports(&self) -> Result<Vec<GcSweepReport>, StoreError> {
        self.scan_prefix(super::store::CF_SM_META, b"gc/", None, usize::MAX)?
            .into_iter()
            .map(|(_, raw)| serde_json::from_slice(&raw).map_err(|e| StoreError::Corrupt { cf: super::store::CF_SM_META, reason: e.to_string() }))
            .collect()
    }

    fn auth_records<T: serde::de::DeserializeOwned>(&self, prefix: &str) -> Result<Vec<T>, StoreError> {
        self.scan_prefix(CF_SM_AUTH, prefix.as_bytes(), None, usize::MAX)?
            .into_iter()
            .map(|(_, raw)| decode_auth(&raw))
            .collect()
    }
}

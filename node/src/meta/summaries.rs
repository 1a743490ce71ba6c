//! What a page of the web console shows about one repository, read from the cluster
//! state with bounded scans: a page of huge repositories costs at most `cap` rows each.

use super::retention::{activity_key, PUSHED, TAGGED};
use super::records::BlobLink;
use super::store::{repo_key, repo_prefix, Store, StoreError, CF_SM_ACTIVITY, CF_SM_BLOB_LINKS, CF_SM_TAGS};

/// One tag of a repository's tag list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TagRow {
    pub tag: String,
    pub digest: String,
    /// When the tag was last set (Unix seconds).
    pub tagged_unix: Option<u64>,
}

/// One repository's figures for a list row.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RepoSummary {
    /// Tags, counted up to the cap.
    pub tags: u64,
    /// More tags than the cap (the count is a lower bound).
    pub tags_capped: bool,
    /// Bytes of its distinct blobs (the first `cap` of them).
    pub bytes: u64,
    /// More blobs than the cap (the size is a lower bound).
    pub bytes_capped: bool,
    /// When a manifest was last pushed to it (Unix seconds), among the first `cap`.
    pub last_push_unix: Option<u64>,
}

impl Store {
    /// `repo`'s list-row figures, each scan stopping after `cap` rows.
    pub fn repo_summary(&self, repo: &str, cap: usize) -> Result<RepoSummary, StoreError> {
        let tags = self.scan_prefix(CF_SM_TAGS, &repo_prefix(repo), None, cap.saturating_add(1))?.len();
        let links = self.scan_prefix(CF_SM_BLOB_LINKS, &repo_prefix(repo), None, cap.saturating_add(1))?;
        let bytes_capped = links.len() > cap;
        let mut bytes = 0u64;
        for (_, v) in links.iter().take(cap) {
            bytes = bytes.saturating_add(BlobLink::decode(v)?.size);
        }
        let pushed = activity_key(repo, PUSHED, "");
        let last_push_unix = self
            .scan_prefix(CF_SM_ACTIVITY, &pushed, None, cap)?
            .into_iter()
            .filter_map(|(_, v)| Some(u64::from_be_bytes(v.as_slice().try_into().ok()?)))
            .max();
        Ok(RepoSummary { tags: tags.min(cap) as u64, tags_capped: tags > cap, bytes, bytes_capped, last_push_unix })
    }

    /// Up to `limit` tags of `repo` after `after`, in ASCII order, with what they point at
    /// and when they were set.
    pub fn tag_rows(&self, repo: &str, after: Option<&str>, limit: usize) -> Result<Vec<TagRow>, StoreError> {
        let prefix = repo_prefix(repo);
        let start = after.map(|a| repo_key(repo, a));
        let rows = self.scan_prefix(CF_SM_TAGS, &prefix, start.as_deref(), limit)?;
        let mut out = Vec::with_capacity(rows.len());
        for (k, v) in rows {
            let tag = String::from_utf8_lossy(&k[prefix.len()..]).into_owned();
            let tagged_unix = self
                .get(CF_SM_ACTIVITY, &activity_key(repo, TAGGED, &tag))?
                .and_then(|raw| Some(u64::from_be_bytes(raw.as_slice().try_into().ok()?)));
            out.push(TagRow { digest: String::from_utf8_lossy(&v).into_owned(), tag, tagged_unix });
        }
        Ok(out)
    }

    /// The tags of `repo` pointing at `digest` (at most `cap` read).
    pub fn tags_of(&self, repo: &str, digest: &str, cap: usize) -> Result<Vec<String>, StoreError> {
        let prefix = repo_prefix(repo);
        Ok(self
            .scan_prefix(CF_SM_TAGS, &prefix, None, cap)?
            .into_iter()
            .filter(|(_, v)| v.as_slice() == digest.as_bytes())
            .map(|(k, _)| String::from_utf8_lossy(&k[prefix.len()..]).into_owned())
            .collect())
    }
}

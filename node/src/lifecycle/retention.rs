//! Retention policies: which tags and manifests go, and why.
//!
//! Semantics (ECR lifecycle rules, zot's keepTags):
//! - In a repository some policy with keep rules covers, a tag stays when any covering
//!   policy keeps it (`keep_tags` glob, among the `keep_last` most recently pushed tags,
//!   pushed within, pulled within); other tags go.
//! - A manifest whose last tag goes, goes with it (the image expired). A manifest that
//!   was already untagged goes once pushed longer ago than a covering policy's
//!   `untagged_after`.
//! - What a staying manifest needs stays: an index's children, and referrers
//!   (signatures, SBOMs, attestations) follow their subject — kept with it, deleted with
//!   it.
//!
//! The plan is made from this node's applied state; each deletion is then an ordinary
//! replicated delete, conditional so that a push ordered before it wins: a tag goes only
//! while it still points at the planned digest, a manifest only while no tag points at it.

use crate::meta::retention::{RepoActivity, RetentionPolicy};
use crate::meta::store::StoreError;
use crate::meta::Store;
use crate::meta::patterns::pattern_matches;
use crate::meta::records::StoredManifest;
use std::collections::{BTreeMap, BTreeSet, HashMap};

/// One deletion a policy decided.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Deletion {
    /// The policies covering the repository (the one that decided, for a manifest aged out).
    pub policy: String,
    pub repo: String,
    /// Set for a tag; the manifest it points at is `digest`.
    pub tag: Option<String>,
    pub digest: String,
    pub reason: String,
}

/// `*` any run of characters, `?` one; everything else literally.
pub fn glob_matches(pattern: &str, text: &str) -> bool {
    let (p, t): (Vec<char>, Vec<char>) = (pattern.chars().collect(), text.chars().collect());
    let (mut pi, mut ti) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while ti < t.len() {
        if pi < p.len() && (p[pi] == '?' || p[pi] == t[ti]) {
            pi += 1;
            ti += 1;
        } else if pi < p.len() && p[pi] == '*' {
            star = Some((pi, ti));
            pi += 1;
        } else if let Some((sp, st)) = star {
            pi = sp + 1;
            ti = st + 1;
            star = Some((sp, st + 1));
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|c| *c == '*')
}

fn has_keep_rules(p: &RetentionPolicy) -> bool {
    !p.keep_tags.is_empty() || p.keep_last.is_some() || p.keep_pushed_within_secs.is_some() || p.keep_pulled_within_secs.is_some()
}

fn age(now: u64, then: u64) -> String {
    let secs = now.saturating_sub(then);
    match secs {
        s if s >= 86_400 => format!("{}d", s / 86_400),
        s if s >= 3_600 => format!("{}h", s / 3_600),
        s if s >= 60 => format!("{}m", s / 60),
        s => format!("{s}s"),
    }
}

/// Every deletion the policies call for now, repository by repository.
pub fn plan(store: &Store, now: u64) -> Result<Vec<Deletion>, StoreError> {
    let policies = store.retention_policies()?;
    let mut out = Vec::new();
    if policies.is_empty() {
        return Ok(out);
    }
    store.for_each_repository(|repo| {
        let covering: Vec<&RetentionPolicy> = policies.iter().filter(|p| pattern_matches(&p.repos, repo)).collect();
        if !covering.is_empty() {
            out.extend(plan_repo(store, repo, &covering, now)?);
        }
        Ok(())
    })?;
    Ok(out)
}

/// Why a tag stays, if any covering policy keeps it.
fn kept_by(policies: &[&RetentionPolicy], tag: &str, digest: &str, rank: usize, activity: &RepoActivity, now: u64) -> Option<String> {
    let tagged = activity.tagged.get(tag).copied().unwrap_or(0);
    let pulled = activity.pulled.get(digest).copied();
    for p in policies {
        if let Some(g) = p.keep_tags.iter().find(|g| glob_matches(g, tag)) {
            return Some(format!("{}: matches {g}", p.name));
        }
        if p.keep_last.is_some_and(|n| (rank as u64) < n) {
            return Some(format!("{}: among the last {}", p.name, p.keep_last.unwrap_or(0)));
        }
        if p.keep_pushed_within_secs.is_some_and(|w| tagged.saturating_add(w) >= now) {
            return Some(format!("{}: pushed {} ago", p.name, age(now, tagged)));
        }
        if let (Some(w), Some(at)) = (p.keep_pulled_within_secs, pulled) {
            if at.saturating_add(w) >= now {
                return Some(format!("{}: pulled {} ago", p.name, age(now, at)));
            }
        }
    }
    None
}

/// The digests an index lists (`manifests[].digest`); none for anything else.
fn children(m: &StoredManifest) -> Vec<String> {
    #[derive(serde::Deserialize)]
    struct Child {
        digest: String,
    }
    #[derive(serde::Deserialize)]
    struct Index {
        #[serde(default)]
        manifests: Vec<Child>,
    }
    serde_json::from_slice::<Index>(&m.body).map(|i| i.manifests.into_iter().map(|c| c.digest).collect()).unwrap_or_default()
}

fn plan_repo(store: &Store, repo: &str, policies: &[&RetentionPolicy], now: u64) -> Result<Vec<Deletion>, StoreError> {
    let names = policies.iter().map(|p| p.name.as_str()).collect::<Vec<_>>().join(",");
    let activity = store.repo_activity(repo)?;
    let manifests: BTreeMap<String, StoredManifest> = store.repo_manifests(repo)?.into_iter().collect();
    let tags = store.tag_targets(repo)?;
    let mut out = Vec::new();

    // Tags: newest first, so `keep_last` keeps the first N.
    let mut staying_tags: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let mut untagged_now: BTreeSet<String> = BTreeSet::new();
    let tag_rules = policies.iter().any(|p| has_keep_rules(p));
    let mut ordered: Vec<&(String, String)> = tags.iter().collect();
    ordered.sort_by_key(|(tag, _)| (std::cmp::Reverse(activity.tagged.get(tag).copied().unwrap_or(0)), tag.clone()));
    for (rank, (tag, digest)) in ordered.into_iter().enumerate() {
        if !tag_rules || kept_by(policies, tag, digest, rank, &activity, now).is_some() {
            staying_tags.entry(digest.clone()).or_default().push(tag.clone());
            continue;
        }
        let tagged = activity.tagged.get(tag).copied().unwrap_or(0);
        out.push(Deletion {
            policy: names.clone(),
            repo: repo.to_string(),
            tag: Some(tag.clone()),
            digest: digest.clone(),
            reason: format!("no keep rule matches (pushed {} ago)", age(now, tagged)),
        });
        untagged_now.insert(digest.clone());
    }

    // Manifests: what stays on its own, then everything that needs.
    let subject_here = |m: &StoredManifest| m.subject.as_ref().is_some_and(|s| manifests.contains_key(s));
    let listed: BTreeSet<String> = manifests.values().flat_map(children).collect();
    let untagged_after = policies.iter().filter_map(|p| p.untagged_after_secs.map(|s| (s, p.name.as_str()))).min();
    let mut reasons: HashMap<String, String> = HashMap::new();
    let mut keep: Vec<String> = Vec::new();
    for (digest, m) in &manifests {
        if staying_tags.contains_key(digest) {
            keep.push(digest.clone());
            continue;
        }
        if subject_here(m) || listed.contains(digest) {
            // Follows its subject or the indexes that list it.
            continue;
        }
        if untagged_now.contains(digest) {
            reasons.insert(digest.clone(), "its last tag goes".to_string());
            continue;
        }
        let pushed = activity.pushed.get(digest).copied().unwrap_or(0);
        match untagged_after {
            Some((after, policy)) if pushed.saturating_add(after) < now => {
                reasons.insert(digest.clone(), format!("{policy}: untagged, pushed {} ago", age(now, pushed)));
            }
            _ => keep.push(digest.clone()),
        }
    }
    // Referrers of a staying manifest and children of a staying index stay too.
    let mut referrers: HashMap<&str, Vec<&str>> = HashMap::new();
    for (digest, m) in &manifests {
        if let Some(s) = &m.subject {
            referrers.entry(s.as_str()).or_default().push(digest.as_str());
        }
    }
    let mut kept: BTreeSet<String> = BTreeSet::new();
    while let Some(d) = keep.pop() {
        if !kept.insert(d.clone()) {
            continue;
        }
        if let Some(m) = manifests.get(&d) {
            keep.extend(children(m).into_iter().filter(|c| manifests.contains_key(c)));
        }
        keep.extend(referrers.get(d.as_str()).into_iter().flatten().map(|r| r.to_string()));
    }
    // Going: referrers first, then indexes, then the rest, so nothing staying points at a
    // manifest already gone.
    let mut going: Vec<(u8, &String, &StoredManifest)> = manifests
        .iter()
        .filter(|(d, _)| !kept.contains(*d))
        .map(|(d, m)| {
            let order = if m.subject.is_some() { 0 } else if children(m).is_empty() { 2 } else { 1 };
            (order, d, m)
        })
        .collect();
    going.sort_by_key(|(order, d, _)| (*order, (*d).clone()));
    for (_, digest, m) in going {
        let reason = match reasons.get(digest) {
            Some(r) => r.clone(),
            None if m.subject.is_some() => format!("its subject {} goes", m.subject.clone().unwrap_or_default()),
            None => "only manifests that go need it".to_string(),
        };
        out.push(Deletion { policy: names.clone(), repo: repo.to_string(), tag: None, digest: digest.clone(), reason });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::glob_matches;

    #[test]
    fn globs() {
        assert!(glob_matches("v*", "v1.2"));
        assert!(glob_matches("release-*", "release-2024"));
        assert!(!glob_matches("release-*", "pre-release-1"));
        assert!(glob_matches("*-rc?", "1.0-rc1"));
        assert!(!glob_matches("*-rc?", "1.0-rc10"));
        assert!(glob_matches("latest", "latest"));
        assert!(glob_matches("*", ""));
    }
}

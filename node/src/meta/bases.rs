//! Which image each image was built on, and whom to tell when a base moves: the registry
//! half of base-image triggers (ACR Tasks), decided at apply from the log alone, so every
//! region gives the same answer.
//!
//! A pushed image's base is what its annotations (`org.opencontainers.image.base.digest`,
//! `org.opencontainers.image.base.name`) name, when the state can tell what they name (see
//! `find_bases`); otherwise the longest image of another repository whose layers are a
//! prefix of its own (equal layers count: a `FROM base` build that only sets `CMD` adds
//! none). An index's bases are its platform manifests' bases. Images are linked when they
//! are pushed: an image pushed before its base is not linked by layers.
//!
//! When a tag moves away from a digest, every tagged image recorded on that digest (or on
//! one of its platform manifests, when it is an index) gets one `base_updated` event.
//!
//! `sm_bases` keys:
//! - `c\0chain\0digest\0repo` → empty: an image manifest's layer chain (its layer digests
//!   hashed in order, `chain`), for the prefix search;
//! - `b\0repo\0digest` → `Lineage` (JSON): an image's bases, how they were found, its
//!   chain, an index's children;
//! - `d\0base\0repo\0digest` → empty: the reverse of `b`, one row per base;
//! - `h\0repo\0tag` → the digests the tag pointed at before (JSON, newest first, at most
//!   `TAG_HISTORY`), so `dependents` can say which images are built on an old base.

use super::command::ImageShape;
use super::events::{EventBook, EventRecord, Origin, CLUSTER_LANE};
use super::records::{encode_json, StoredManifest};
use super::store::{repo_key, repo_prefix, Store, StoreError, CF_SM_BASES, CF_SM_MANIFESTS, CF_SM_TAGS};
use rocksdb::WriteBatch;
use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};
use std::collections::BTreeSet;

/// The annotation naming the base image's manifest digest.
pub const BASE_DIGEST_ANNOTATION: &str = "org.opencontainers.image.base.digest";
/// The annotation naming the base image (`[host/]repo[:tag|@digest]`).
pub const BASE_NAME_ANNOTATION: &str = "org.opencontainers.image.base.name";
/// How many earlier digests of a tag are remembered.
const TAG_HISTORY: usize = 8;
/// At most this many images of one layer chain are taken as bases (images that differ
/// only in their config).
const MAX_BASES: usize = 16;

/// How an image's bases were found.
pub const VIA_ANNOTATION: &str = "annotation";
pub const VIA_LAYERS: &str = "layers";
pub const VIA_PLATFORMS: &str = "platforms";

/// What is recorded of one image.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Lineage {
    /// Digests of the manifests it was built on.
    pub bases: Vec<String>,
    /// `VIA_*`; empty when it has no base.
    #[serde(default)]
    pub via: String,
    /// The base as the annotation named it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub base_name: Option<String>,
    /// Its layer chain (image manifests with layers).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub chain: Option<String>,
    /// An index's platform manifests.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub children: Vec<String>,
}

/// An image built on a base, as `dependents` lists it.
#[derive(Debug, Clone, PartialEq)]
pub struct Dependent {
    pub repo: String,
    pub digest: String,
    pub tags: Vec<String>,
    pub via: String,
    /// The base's digest it was built on.
    pub base: String,
    /// Built on a digest the base's tag pointed at before, not the current one.
    pub outdated: bool,
}

/// A tag moving from `old` to `new`.
pub(super) struct TagMove<'a> {
    pub repo: &'a str,
    pub tag: &'a str,
    pub old: &'a str,
    pub new: &'a str,
    pub origin: Option<&'a Origin>,
    pub region: &'a str,
    pub at_ms: u64,
    /// False for a second tag of the entry moving away from the same digest: its
    /// dependents are told once.
    pub tell: bool,
}

fn corrupt(reason: impl Into<String>) -> StoreError {
    StoreError::Corrupt { cf: CF_SM_BASES, reason: reason.into() }
}

fn lineage_key(repo: &str, digest: &str) -> Vec<u8> {
    format!("b\0{repo}\0{digest}").into_bytes()
}

fn dependent_key(base: &str, repo: &str, digest: &str) -> Vec<u8> {
    format!("d\0{base}\0{repo}\0{digest}").into_bytes()
}

fn chain_key(chain: &str, digest: &str, repo: &str) -> Vec<u8> {
    format!("c\0{chain}\0{digest}\0{repo}").into_bytes()
}

fn history_key(repo: &str, tag: &str) -> Vec<u8> {
    format!("h\0{repo}\0{tag}").into_bytes()
}

/// The chains of every prefix of `layers`: `C1 = sha256(L1)`, `Ck = sha256(Ck-1 " " Lk)`
/// (hex). Layer digests, not the config's DiffIDs: configs are never parsed.
pub fn layer_chains(layers: &[String]) -> Vec<String> {
    let mut chains: Vec<String> = Vec::with_capacity(layers.len());
    for layer in layers {
        let mut h = Sha256::new();
        if let Some(prev) = chains.last() {
            h.update(prev.as_bytes());
            h.update(b" ");
        }
        h.update(layer.as_bytes());
        chains.push(hex::encode(h.finalize()));
    }
    chains
}

/// `[host/]repo[:tag|@digest]` without its host: the first component is a host when it
/// has a `.` or `:` or is `localhost` (the rule Docker uses for image names).
fn strip_host(name: &str) -> &str {
    match name.split_once('/') {
        Some((first, rest)) if first.contains('.') || first.contains(':') || first == "localhost" => rest,
        _ => name,
    }
}

fn read_lineage(store: &Store, repo: &str, digest: &str) -> Result<Option<Lineage>, StoreError> {
    match store.get(CF_SM_BASES, &lineage_key(repo, digest))? {
        Some(raw) => serde_json::from_slice(&raw).map(Some).map_err(|e| corrupt(e.to_string())),
        None => Ok(None),
    }
}

/// A `base.name` annotation taken apart: the repository, and the tag or digest it names.
fn parse_base_name(name: &str) -> (&str, Option<&str>, Option<&str>) {
    let name = strip_host(name);
    if let Some((named, digest)) = name.split_once('@') {
        // `repo:tag@digest`: the digest decides; a `:` after the last `/` starts the tag.
        let repo = match named.rsplit_once(':') {
            Some((repo, tag)) if !tag.contains('/') => repo,
            _ => named,
        };
        return (repo, None, Some(digest));
    }
    // `repo:tag`, the tag defaulting to `latest`; a `:` before the last `/` is a port.
    match name.rsplit_once(':') {
        Some((repo, tag)) if !tag.contains('/') => (repo, Some(tag), None),
        _ => (name, Some("latest"), None),
    }
}

fn is_digest(s: &str) -> bool {
    meridian_replication::Digest::parse(s).is_ok()
}

/// The images of the longest known layer chain that is a prefix of `chains` among those
/// `accept` takes (digest, repository), still in the registry (not trashed or deleted).
fn layer_bases(store: &Store, chains: &[String], accept: impl Fn(&str, &str) -> bool) -> Result<Vec<String>, StoreError> {
    for chain in chains.iter().rev() {
        let prefix = format!("c\0{chain}\0").into_bytes();
        let mut found = BTreeSet::new();
        for (key, _) in store.scan_prefix(CF_SM_BASES, &prefix, None, 4 * MAX_BASES)? {
            let rest = String::from_utf8_lossy(&key[prefix.len()..]).into_owned();
            let (base, base_repo) = rest.split_once('\0').ok_or_else(|| corrupt("chain key"))?;
            if accept(base, base_repo) && store.exists(CF_SM_MANIFESTS, &repo_key(base_repo, base))? {
                found.insert(base.to_string());
            }
        }
        if !found.is_empty() {
            return Ok(found.into_iter().take(MAX_BASES).collect());
        }
    }
    Ok(Vec::new())
}

/// The bases of a new image of `repo` and how they were found.
///
/// The annotations win when the state can tell what they name. Builders differ in what
/// they write: podman (buildah) writes the digest of the base's manifest in its own
/// storage, which the registry never saw when a push re-compressed it; so a digest only
/// counts when the named repository holds it, else the named repository's images with a
/// layer prefix of this one, else the named tag. Without annotations: the images of the
/// longest layer prefix, in other repositories (an image's own earlier builds are not its
/// base).
fn find_bases(store: &Store, repo: &str, digest: &str, shape: &ImageShape, chains: &[String]) -> Result<(Vec<String>, &'static str), StoreError> {
    let annotated_digest = shape.base_digest.as_deref().filter(|d| is_digest(d));
    let named = shape.base_name.as_deref().filter(|n| !n.is_empty()).map(parse_base_name);
    match (named, annotated_digest) {
        (None, Some(d)) => return Ok((vec![d.to_string()], VIA_ANNOTATION)),
        (Some((named_repo, tag, name_digest)), _) => {
            for d in [annotated_digest, name_digest.filter(|d| is_digest(d))].into_iter().flatten() {
                if store.exists(CF_SM_MANIFESTS, &repo_key(named_repo, d))? {
                    return Ok((vec![d.to_string()], VIA_ANNOTATION));
                }
            }
            let in_named = layer_bases(store, chains, |d, r| d != digest && r == named_repo)?;
            if !in_named.is_empty() {
                return Ok((in_named, VIA_ANNOTATION));
            }
            if let Some(tag) = tag {
                if let Some(d) = store.get(CF_SM_TAGS, &repo_key(named_repo, tag))? {
                    return Ok((vec![String::from_utf8_lossy(&d).into_owned()], VIA_ANNOTATION));
                }
            }
        }
        (None, None) => {}
    }
    // An image's own repository holds its earlier builds, not its base.
    Ok((layer_bases(store, chains, |d, r| d != digest && r != repo)?, VIA_LAYERS))
}

/// A new manifest of `repo`: finds and records its bases.
pub(super) fn record(store: &Store, batch: &mut WriteBatch, repo: &str, digest: &str, shape: &ImageShape, children: &[String]) -> Result<(), StoreError> {
    let chains = layer_chains(&shape.layers.iter().map(|l| l.to_string()).collect::<Vec<_>>());
    let mut lineage = Lineage {
        chain: chains.last().cloned(),
        children: children.to_vec(),
        base_name: shape.base_name.clone(),
        ..Lineage::default()
    };
    let annotated = shape.base_digest.is_some() || shape.base_name.is_some();
    if !annotated && chains.is_empty() && children.is_empty() {
        return Ok(());
    }
    if annotated || !chains.is_empty() {
        let (bases, via) = find_bases(store, repo, digest, shape, &chains)?;
        lineage.bases = bases;
        lineage.via = via.into();
    }
    if lineage.bases.is_empty() && !children.is_empty() {
        let mut bases = BTreeSet::new();
        for child in children {
            if let Some(l) = read_lineage(store, repo, child)? {
                bases.extend(l.bases);
            }
        }
        lineage.bases = bases.into_iter().collect();
        lineage.via = VIA_PLATFORMS.into();
    }
    if lineage.bases.is_empty() {
        lineage.via.clear();
    }
    let cf = store.cf(CF_SM_BASES)?;
    if let Some(chain) = &lineage.chain {
        batch.put_cf(cf, chain_key(chain, digest, repo), b"");
    }
    for base in &lineage.bases {
        batch.put_cf(cf, dependent_key(base, repo, digest), b"");
    }
    batch.put_cf(cf, lineage_key(repo, digest), encode_json(&lineage));
    Ok(())
}

/// A manifest of `repo` is gone for good: it is nobody's base by layers any more, and no
/// longer anybody's dependent.
pub(super) fn forget(store: &Store, batch: &mut WriteBatch, repo: &str, digest: &str) -> Result<(), StoreError> {
    let Some(lineage) = read_lineage(store, repo, digest)? else { return Ok(()) };
    let cf = store.cf(CF_SM_BASES)?;
    if let Some(chain) = &lineage.chain {
        batch.delete_cf(cf, chain_key(chain, digest, repo));
    }
    for base in &lineage.bases {
        batch.delete_cf(cf, dependent_key(base, repo, digest));
    }
    batch.delete_cf(cf, lineage_key(repo, digest));
    Ok(())
}

/// The tags of `repo` pointing at `digest`.
fn tags_of(store: &Store, repo: &str, digest: &str) -> Result<Vec<String>, StoreError> {
    let prefix = repo_prefix(repo);
    Ok(store
        .scan_prefix(CF_SM_TAGS, &prefix, None, usize::MAX)?
        .into_iter()
        .filter(|(_, v)| v.as_slice() == digest.as_bytes())
        .map(|(k, _)| String::from_utf8_lossy(&k[prefix.len()..]).into_owned())
        .collect())
}

/// The images built on `base` or on one of its platform manifests (`base` of `repo`), that
/// still exist; an index's platform manifests are left out when the index is listed.
fn dependents_of(store: &Store, repo: &str, base: &str, outdated: bool, out: &mut Vec<Dependent>) -> Result<(), StoreError> {
    let mut bases = vec![base.to_string()];
    if let Some(l) = read_lineage(store, repo, base)? {
        bases.extend(l.children);
    }
    let mut found: Vec<(String, String)> = Vec::new();
    for b in &bases {
        let prefix = format!("d\0{b}\0").into_bytes();
        for (key, _) in store.scan_prefix(CF_SM_BASES, &prefix, None, usize::MAX)? {
            let rest = String::from_utf8_lossy(&key[prefix.len()..]).into_owned();
            let (dep_repo, dep_digest) = rest.split_once('\0').ok_or_else(|| corrupt("dependent key"))?;
            let item = (dep_repo.to_string(), dep_digest.to_string());
            if !found.contains(&item) && !out.iter().any(|d| d.repo == item.0 && d.digest == item.1) {
                found.push(item);
            }
        }
    }
    let mut listed = Vec::new();
    let mut platforms = BTreeSet::new();
    for (dep_repo, dep_digest) in found {
        // Trashed (or deleted) images are nobody's to rebuild.
        if !store.exists(CF_SM_MANIFESTS, &repo_key(&dep_repo, &dep_digest))? {
            continue;
        }
        let lineage = read_lineage(store, &dep_repo, &dep_digest)?.unwrap_or_default();
        for child in &lineage.children {
            platforms.insert((dep_repo.clone(), child.clone()));
        }
        let tags = tags_of(store, &dep_repo, &dep_digest)?;
        let base = lineage.bases.iter().find(|b| bases.contains(*b)).cloned().unwrap_or_else(|| base.to_string());
        listed.push(Dependent { repo: dep_repo, digest: dep_digest, tags, via: lineage.via, base, outdated });
    }
    out.extend(listed.into_iter().filter(|d| !platforms.contains(&(d.repo.clone(), d.digest.clone()))));
    Ok(())
}

/// A tag moved from `old` to `new` in this entry: `old` joins the tag's history, and each
/// tagged image built on `old` gets a `base_updated` event (after the push's own events).
/// Reads see the state before the entry, so the new digest's own dependents (none yet)
/// are not told.
pub(super) fn tag_moved(store: &Store, batch: &mut WriteBatch, events: &mut EventBook, mv: &TagMove) -> Result<(), StoreError> {
    let key = history_key(mv.repo, mv.tag);
    let mut history: Vec<String> = match store.get(CF_SM_BASES, &key)? {
        Some(raw) => serde_json::from_slice(&raw).map_err(|e| corrupt(e.to_string()))?,
        None => Vec::new(),
    };
    history.retain(|d| d != mv.old && d != mv.new);
    history.insert(0, mv.old.to_string());
    history.truncate(TAG_HISTORY);
    batch.put_cf(store.cf(CF_SM_BASES)?, key, encode_json(&history));
    if !mv.tell || !events.wants_action("base_updated")? {
        return Ok(());
    }
    let mut dependents = Vec::new();
    dependents_of(store, mv.repo, mv.old, false, &mut dependents)?;
    for dep in dependents {
        // An untagged image (an old build) is nothing a pipeline rebuilds.
        let Some(tag) = dep.tags.first() else { continue };
        let Some(raw) = store.get(CF_SM_MANIFESTS, &repo_key(&dep.repo, &dep.digest))? else { continue };
        let stored = StoredManifest::decode(&raw)?;
        let event = EventRecord {
            action: "base_updated".into(),
            repo: dep.repo.clone(),
            digest: dep.digest.clone(),
            media_type: stored.media_type.clone(),
            size: stored.body.len() as u64,
            tag: Some(tag.clone()),
            region: mv.region.to_string(),
            at_ms: mv.at_ms,
            origin: mv.origin.cloned(),
            push_region: None,
            push_index: None,
            base: Some(BaseChange {
                repository: mv.repo.to_string(),
                tag: mv.tag.to_string(),
                old_digest: dep.base.clone(),
                new_digest: mv.new.to_string(),
            }),
        };
        events.emit(batch, CLUSTER_LANE, &event)?;
    }
    Ok(())
}

/// What moved under a `base_updated` event's image.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BaseChange {
    /// The base image's repository and the tag that moved.
    pub repository: String,
    pub tag: String,
    /// The digest the image was built on (the tag's old digest, or one of its platform
    /// manifests), and the tag's new digest.
    pub old_digest: String,
    pub new_digest: String,
}

impl Store {
    /// The images built on `repo@digest` (tagged `tag`, when asked by tag), then those
    /// built on digests `tag` pointed at before (`outdated`).
    pub fn dependents(&self, repo: &str, digest: &str, tag: Option<&str>) -> Result<Vec<Dependent>, StoreError> {
        let mut out = Vec::new();
        dependents_of(self, repo, digest, false, &mut out)?;
        if let Some(tag) = tag {
            let history: Vec<String> = match self.get(CF_SM_BASES, &history_key(repo, tag))? {
                Some(raw) => serde_json::from_slice(&raw).map_err(|e| corrupt(e.to_string()))?,
                None => Vec::new(),
            };
            for old in history.iter().filter(|d| d.as_str() != digest) {
                dependents_of(self, repo, old, true, &mut out)?;
            }
        }
        Ok(out)
    }

    /// What is recorded of `repo@digest`'s base.
    pub fn lineage(&self, repo: &str, digest: &str) -> Result<Option<Lineage>, StoreError> {
        read_lineage(self, repo, digest)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chains_grow_with_each_layer_and_depend_on_order() {
        let a = layer_chains(&["sha256:a".into(), "sha256:b".into()]);
        let b = layer_chains(&["sha256:b".into(), "sha256:a".into()]);
        assert_eq!(a.len(), 2);
        assert_eq!(a[0], layer_chains(&["sha256:a".into()])[0]);
        assert_ne!(a[1], b[1]);
    }

    #[test]
    fn hosts_are_stripped_from_base_names() {
        assert_eq!(strip_host("docker.io/library/alpine:3"), "library/alpine:3");
        assert_eq!(strip_host("localhost:5000/base/alpine:1"), "base/alpine:1");
        assert_eq!(strip_host("localhost/base"), "base");
        assert_eq!(strip_host("base/alpine:1"), "base/alpine:1");
        assert_eq!(strip_host("alpine"), "alpine");
    }
}

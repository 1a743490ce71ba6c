//! "This image is now complete in region X": the `replicated` event, decided at apply.
//!
//! When a new manifest is applied, each region of the membership either already holds
//! every blob of the image (of an index: of its children) — its event goes out in the
//! same batch — or is left waiting for the blobs it lacks. `AddReplicas`, which a region
//! proposes only once a verified copy is on its own disk, takes landed blobs off the
//! waiting images; an image left waiting for nothing gets its event then. So the event
//! for region X means every blob is readable from X's own disk, once per image and region,
//! decided from the log alone (every node agrees).
//!
//! Tracked only while some enabled webhook wants `replicated` events: an image pushed
//! before such a webhook existed gets none.
//!
//! `sm_completion` keys: `p\0region\0repo\0digest` → `Waiting` (JSON);
//! `w\0region\0blob\0repo\0digest` → empty, one per blob a waiting image lacks.

use super::events::{EventBook, EventRecord, Origin};
use super::records::{encode_json, BlobLocation, StoredManifest};
use super::store::{repo_key, Store, StoreError, CF_SM_BLOBS, CF_SM_COMPLETION, CF_SM_MANIFESTS, CF_SM_META};
use super::types::StoredMembership;
use rocksdb::WriteBatch;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};

/// An image waiting to be complete in a region.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Waiting {
    missing: BTreeSet<String>,
    #[serde(default)]
    push_index: u64,
    media_type: String,
    size: u64,
    tag: Option<String>,
    push_region: String,
    #[serde(default)]
    origin: Option<Origin>,
}

/// What the `replicated` events of one pushed image say.
pub(super) struct Pushed<'a> {
    pub repo: &'a str,
    pub digest: &'a str,
    pub media_type: &'a str,
    pub size: u64,
    pub tag: Option<&'a str>,
    pub push_region: &'a str,
    pub origin: Option<&'a Origin>,
    pub at_ms: u64,
    /// The log index of the push.
    pub push_index: u64,
}

fn waiting_key(region: &str, repo: &str, digest: &str) -> Vec<u8> {
    format!("p\0{region}\0{repo}\0{digest}").into_bytes()
}

fn waiter_prefix(region: &str, blob: &str) -> Vec<u8> {
    format!("w\0{region}\0{blob}\0").into_bytes()
}

fn corrupt(reason: impl Into<String>) -> StoreError {
    StoreError::Corrupt { cf: CF_SM_COMPLETION, reason: reason.into() }
}

/// The regions of the membership (voters and learners).
fn regions(store: &Store) -> Result<BTreeSet<String>, StoreError> {
    let Some(raw) = store.get(CF_SM_META, b"membership")? else { return Ok(BTreeSet::new()) };
    let m: StoredMembership = serde_json::from_slice(&raw).map_err(|e| StoreError::Corrupt { cf: CF_SM_META, reason: e.to_string() })?;
    Ok(m.membership().nodes().map(|(_, n)| n.region.clone()).collect())
}

fn event(p: &Pushed, region: &str, at_ms: u64) -> EventRecord {
    EventRecord {
        action: "replicated".into(),
        repo: p.repo.into(),
        digest: p.digest.into(),
        media_type: p.media_type.into(),
        size: p.size,
        tag: p.tag.map(str::to_string),
        region: region.into(),
        at_ms,
        origin: p.origin.cloned(),
        push_region: Some(p.push_region.into()),
        push_index: Some(p.push_index),
        base: None,
    }
}

/// A new manifest: `own` are its blobs with the regions holding each once this entry is
/// written; `children` the manifests an index lists (their blobs count too).
pub(super) fn track_push(
    store: &Store,
    batch: &mut WriteBatch,
    events: &mut EventBook,
    pushed: &Pushed,
    own: &BTreeMap<String, Vec<String>>,
    children: &[String],
) -> Result<(), StoreError> {
    if !events.wants_action("replicated")? {
        return Ok(());
    }
    let mut blobs = own.clone();
    for child in children {
        let Some(raw) = store.get(CF_SM_MANIFESTS, &repo_key(pushed.repo, child))? else { continue };
        for blob in StoredManifest::decode(&raw)?.blobs {
            if blobs.contains_key(&blob) {
                continue;
            }
            let held = match store.get(CF_SM_BLOBS, blob.as_bytes())? {
                Some(raw) => BlobLocation::decode(&raw)?.regions,
                None => Vec::new(),
            };
            blobs.insert(blob, held);
        }
    }
    let cf = store.cf(CF_SM_COMPLETION)?;
    for region in regions(store)? {
        let missing: BTreeSet<String> = blobs.iter().filter(|(_, held)| !held.contains(&region)).map(|(b, _)| b.clone()).collect();
        if missing.is_empty() {
            events.emit(batch, &region, &event(pushed, &region, pushed.at_ms))?;
            continue;
        }
        for blob in &missing {
            let mut key = waiter_prefix(&region, blob);
            key.extend_from_slice(&repo_key(pushed.repo, pushed.digest));
            batch.put_cf(cf, key, b"");
        }
        let waiting = Waiting {
            missing,
            push_index: pushed.push_index,
            media_type: pushed.media_type.into(),
            size: pushed.size,
            tag: pushed.tag.map(str::to_string),
            push_region: pushed.push_region.into(),
            origin: pushed.origin.cloned(),
        };
        batch.put_cf(cf, waiting_key(&region, pushed.repo, pushed.digest), encode_json(&waiting));
    }
    Ok(())
}

/// Verified copies of `blobs` landed in `region` (each newly there): images waiting for
/// them that now lack nothing get their event.
pub(super) fn landed(store: &Store, batch: &mut WriteBatch, events: &mut EventBook, region: &str, blobs: &[String], at_ms: u64) -> Result<(), StoreError> {
    // Reads see the state before this entry: gather every blob's waiters first, so an
    // image two landed blobs complete is decided once.
    let mut arrived: BTreeMap<Vec<u8>, Vec<String>> = BTreeMap::new();
    let cf = store.cf(CF_SM_COMPLETION)?;
    for blob in blobs {
        let prefix = waiter_prefix(region, blob);
        for (key, _) in store.scan_prefix(CF_SM_COMPLETION, &prefix, None, usize::MAX)? {
            arrived.entry(key[prefix.len()..].to_vec()).or_default().push(blob.clone());
            batch.delete_cf(cf, key);
        }
    }
    for (image, landed) in arrived {
        let text = String::from_utf8_lossy(&image).into_owned();
        let (repo, digest) = text.split_once('\0').ok_or_else(|| corrupt("waiter key"))?;
        let key = waiting_key(region, repo, digest);
        let Some(raw) = store.get(CF_SM_COMPLETION, &key)? else { continue };
        let mut waiting: Waiting = serde_json::from_slice(&raw).map_err(|e| corrupt(e.to_string()))?;
        for blob in &landed {
            waiting.missing.remove(blob);
        }
        if !waiting.missing.is_empty() {
            batch.put_cf(cf, key, encode_json(&waiting));
            continue;
        }
        batch.delete_cf(cf, key);
        let pushed = Pushed {
            repo,
            digest,
            media_type: &waiting.media_type,
            size: waiting.size,
            tag: waiting.tag.as_deref(),
            push_region: &waiting.push_region,
            origin: waiting.origin.as_ref(),
            at_ms,
            push_index: waiting.push_index,
        };
        events.emit(batch, region, &event(&pushed, region, at_ms))?;
    }
    Ok(())
}

/// The membership changes to one with the regions `next`: images waiting in a region that
/// left wait for nothing (it sends no `replicated` event any more).
pub(super) fn regions_left(store: &Store, batch: &mut WriteBatch, next: &BTreeSet<String>) -> Result<(), StoreError> {
    let cf = store.cf(CF_SM_COMPLETION)?;
    for region in regions(store)?.difference(next) {
        for kind in ['p', 'w'] {
            let start = format!("{kind}\0{region}\0").into_bytes();
            let mut end = start.clone();
            if let Some(last) = end.last_mut() {
                *last = 1;
            }
            batch.delete_range_cf(cf, start, end);
        }
    }
    Ok(())
}

/// A manifest deleted: it waits for nothing any more.
pub(super) fn forget(store: &Store, batch: &mut WriteBatch, repo: &str, digest: &str) -> Result<(), StoreError> {
    let cf = store.cf(CF_SM_COMPLETION)?;
    for region in regions(store)? {
        let key = waiting_key(&region, repo, digest);
        let Some(raw) = store.get(CF_SM_COMPLETION, &key)? else { continue };
        let waiting: Waiting = serde_json::from_slice(&raw).map_err(|e| corrupt(e.to_string()))?;
        for blob in &waiting.missing {
            let mut w = waiter_prefix(&region, blob);
            w.extend_from_slice(&repo_key(repo, digest));
            batch.delete_cf(cf, w);
        }
        batch.delete_cf(cf, key);
    }
    Ok(())
}

//! Applying manifest changes: pushes, deletes (for good or to the trash), tags, and the
//! reference counts on blobs and quotas they move.

use super::StateMachine;
use crate::meta::bases::{self, TagMove};
use crate::meta::command::{BlobRef, CommandResult, PutManifest};
use crate::meta::completion;
use crate::meta::events::{EventBook, EventRecord, Origin, CLUSTER_LANE};
use crate::meta::quotas::{Item, QuotaBook};
use crate::meta::records::{BlobLink, BlobLocation, ReferrerDescriptor, StoredManifest};
use crate::meta::retention::ActivityBook;
use crate::meta::store::{
    queue_key, repo_key, repo_prefix, StoreError, CF_LOCAL_REPLICATION_QUEUE, CF_SM_BLOBS, CF_SM_BLOB_LINKS, CF_SM_MANIFESTS,
    CF_SM_REFERRERS, CF_SM_REPOS, CF_SM_TAGS, CF_SM_TRASH, QUEUE_RECENT,
};
use crate::meta::trash::{self, TrashHeader};
use crate::meta::usage::StorageDeltas;
use meridian_replication::Digest;
use rocksdb::WriteBatch;

/// How a manifest delete goes (see `Command::DeleteManifest`).
pub(super) struct Delete<'a> {
    pub at_unix: u64,
    pub trash_until: Option<u64>,
    pub only_if_untagged: bool,
    pub origin: Option<&'a Origin>,
}

/// Where moved tags now point, and who moved them (for `base_updated` events).
struct Moves<'a> {
    repo: &'a str,
    digest: &'a str,
    origin: Option<&'a Origin>,
    region: &'a str,
    at_ms: u64,
}

/// A cluster-wide event about `repo`, stamped from its origin (or, for entries without
/// one, the entry's own clock).
fn event(action: &str, repo: &str, digest: &str, origin: Option<&Origin>, at_unix: u64) -> EventRecord {
    EventRecord {
        action: action.to_string(),
        repo: repo.to_string(),
        digest: digest.to_string(),
        media_type: String::new(),
        size: 0,
        tag: None,
        region: origin.map(|o| o.region.clone()).unwrap_or_default(),
        at_ms: origin.map(|o| o.at_ms).filter(|ms| *ms > 0).unwrap_or(at_unix.saturating_mul(1000)),
        origin: origin.cloned(),
        push_region: None,
        push_index: None,
        base: None,
    }
}

/// One `push` event per tag set (one untagged event when none is).
fn push_events(batch: &mut WriteBatch, events: &mut EventBook, template: EventRecord, tags: &[String]) -> Result<(), StoreError> {
    if tags.is_empty() {
        return events.emit(batch, CLUSTER_LANE, &template);
    }
    for tag in tags {
        events.emit(batch, CLUSTER_LANE, &EventRecord { tag: Some(tag.clone()), ..template.clone() })?;
    }
    Ok(())
}

impl StateMachine {
    pub(super) fn apply_put_manifest(
        &self,
        batch: &mut WriteBatch,
        put: &PutManifest,
        storage: &mut StorageDeltas,
        events: &mut EventBook,
    ) -> Result<CommandResult, StoreError> {
        for child in &put.children {
            if !self.store.exists(CF_SM_MANIFESTS, &repo_key(&put.repo, &child.to_string()))? {
                return Ok(CommandResult::ManifestBlobUnknown(child.clone()));
            }
        }
        // Each blob once, however often the manifest names it.
        let mut seen = std::collections::BTreeSet::new();
        let blobs: Vec<&BlobRef> = put.blobs.iter().filter(|b| seen.insert(b.digest.to_string())).collect();
        // No dangling reference: a blob the pushing region does not hold must be held
        // somewhere. Garbage collection may have forgotten it since the push checked its
        // link (the collection was ordered first): the client gets MANIFEST_BLOB_UNKNOWN
        // and uploads it again.
        for b in &blobs {
            if b.held_here {
                continue;
            }
            let held = match self.store.get(CF_SM_BLOBS, b.digest.to_string().as_bytes())? {
                Some(raw) => !BlobLocation::decode(&raw)?.regions.is_empty(),
                None => false,
            };
            if !held {
                return Ok(CommandResult::ManifestBlobUnknown(b.digest.clone()));
            }
        }
        let digest = put.digest.to_string();
        // Pushing the same manifest again changes tags only: its references are counted once.
        let is_new = !self.store.exists(CF_SM_MANIFESTS, &repo_key(&put.repo, &digest))?;
        // Quotas first, before anything goes into the batch: a refused push writes nothing.
        let mut added = Vec::new();
        if is_new {
            added.push((Item::Manifest(digest.clone()), put.body.len() as u64));
        }
        for b in &blobs {
            if !self.store.exists(CF_SM_BLOB_LINKS, &repo_key(&put.repo, &b.digest.to_string()))? {
                added.push((Item::Blob(b.digest.to_string()), b.size));
            }
        }
        if let Err(exceeded) = QuotaBook::for_repo(&self.store, &put.repo)?.add(batch, &added)? {
            return Ok(CommandResult::QuotaExceeded(exceeded));
        }
        // Where each blob is once this entry is written (for `replicated` events).
        let mut held_after = std::collections::BTreeMap::new();
        // Blobs this push is the first copy of in its region: images pushed before and
        // waiting there for them are complete too.
        let mut landed_here = Vec::new();
        for BlobRef { digest: blob, size, held_here } in blobs.iter().copied() {
            let blob_key = blob.to_string();
            let link_key = repo_key(&put.repo, &blob_key);
            let link = match self.store.get(CF_SM_BLOB_LINKS, &link_key)? {
                Some(raw) => Some(BlobLink::decode(&raw)?),
                None => None,
            };
            let mut location = match self.store.get(CF_SM_BLOBS, blob_key.as_bytes())? {
                Some(raw) => BlobLocation::decode(&raw)?,
                None => BlobLocation { size: *size, regions: Vec::new(), links: Some(0), unreferenced_since: None },
            };
            if link.is_none() {
                // A new repository references the blob.
                location.links = location.links.map(|n| n + 1);
                location.unreferenced_since = None;
            }
            let refs = match (link, is_new) {
                (Some(l), true) => l.refs + 1,
                (Some(l), false) => l.refs,
                (None, _) => 1,
            };
            if *held_here && !location.regions.contains(&put.region) {
                landed_here.push(blob_key.clone());
                storage.add(&put.region, location.size);
                location.regions.push(put.region.clone());
                location.regions.sort();
            }
            if !location.regions.contains(&self.region) {
                // Node-local: this region lacks a referenced blob, so it goes on the
                // replication queue (size, u64 BE).
                batch.put_cf(
                    self.store.cf(CF_LOCAL_REPLICATION_QUEUE)?,
                    queue_key(QUEUE_RECENT, &blob_key),
                    size.to_be_bytes(),
                );
            }
            batch.put_cf(self.store.cf(CF_SM_BLOBS)?, blob_key.as_bytes(), location.encode());
            batch.put_cf(self.store.cf(CF_SM_BLOB_LINKS)?, link_key, BlobLink { size: *size, refs }.encode());
            held_after.insert(blob_key, location.regions);
        }
        let stored = StoredManifest {
            media_type: put.media_type.clone(),
            subject: put.referrer.as_ref().map(|r| r.subject.to_string()),
            blobs: blobs.iter().map(|b| b.digest.to_string()).collect(),
            body: put.body.as_bytes().to_vec(),
        };
        batch.put_cf(self.store.cf(CF_SM_MANIFESTS)?, repo_key(&put.repo, &digest), stored.encode());
        let moved = self.set_tags(batch, &put.repo, &put.tags, &digest)?;
        ActivityBook { store: &self.store }.pushed(batch, &put.repo, &digest, &put.tags, put.at_unix)?;
        batch.put_cf(self.store.cf(CF_SM_REPOS)?, put.repo.as_bytes(), b"");
        if let Some(referrer) = &put.referrer {
            let descriptor = ReferrerDescriptor {
                media_type: put.media_type.clone(),
                size: put.body.len() as u64,
                digest: digest.clone(),
                artifact_type: referrer.artifact_type.clone(),
                annotations: referrer.annotations.clone(),
            };
            let key = repo_key(&put.repo, &format!("{}\0{}", referrer.subject, digest));
            let value = serde_json::to_vec(&descriptor)
                .map_err(|e| StoreError::Corrupt { cf: CF_SM_REFERRERS, reason: e.to_string() })?;
            batch.put_cf(self.store.cf(CF_SM_REFERRERS)?, key, value);
        }
        // Only now, past every refusal: a refused push has no event.
        let mut pushed = event("push", &put.repo, &digest, put.origin.as_ref(), put.at_unix);
        pushed.media_type = put.media_type.clone();
        pushed.size = put.body.len() as u64;
        if pushed.region.is_empty() {
            pushed.region = put.region.clone();
        }
        completion::landed(&self.store, batch, events, &put.region, &landed_here, pushed.at_ms)?;
        let children: Vec<String> = put.children.iter().map(|c| c.to_string()).collect();
        if is_new {
            let done = completion::Pushed {
                repo: &put.repo,
                digest: &digest,
                media_type: &pushed.media_type,
                size: pushed.size,
                tag: put.tags.first().map(String::as_str),
                push_region: &put.region,
                origin: put.origin.as_ref(),
                at_ms: pushed.at_ms,
                push_index: events.index,
            };
            completion::track_push(&self.store, batch, events, &done, &held_after, &children)?;
        }
        if let (true, Some(shape)) = (is_new, &put.image) {
            bases::record(&self.store, batch, &put.repo, &digest, shape, &children)?;
        }
        let (region, at_ms) = (pushed.region.clone(), pushed.at_ms);
        push_events(batch, events, pushed, &put.tags)?;
        let moves = Moves { repo: &put.repo, digest: &digest, origin: put.origin.as_ref(), region: &region, at_ms };
        self.tell_moved(batch, events, &moved, &moves)?;
        Ok(CommandResult::Applied)
    }

    /// Deletes a manifest and every tag on it: for good (its references on blobs and
    /// quotas given back), or into the trash until `trash_until` (references kept).
    pub(super) fn apply_delete_manifest(
        &self,
        batch: &mut WriteBatch,
        repo: &str,
        digest: &str,
        delete: Delete,
        events: &mut EventBook,
    ) -> Result<CommandResult, StoreError> {
        let Delete { at_unix, trash_until, only_if_untagged, origin } = delete;
        let key = repo_key(repo, digest);
        let Some(raw) = self.store.get(CF_SM_MANIFESTS, &key)? else {
            return Ok(CommandResult::ManifestUnknown);
        };
        let mut tags = Vec::new();
        for (tag_key, value) in self.store.scan_prefix(CF_SM_TAGS, &repo_prefix(repo), None, usize::MAX)? {
            if value == digest.as_bytes() {
                tags.push((tag_key.clone(), String::from_utf8_lossy(&tag_key[repo.len() + 1..]).into_owned()));
            }
        }
        if only_if_untagged && !tags.is_empty() {
            return Ok(CommandResult::StillNeeded);
        }
        let activity = ActivityBook { store: &self.store };
        batch.delete_cf(self.store.cf(CF_SM_MANIFESTS)?, &key);
        for (tag_key, tag) in &tags {
            batch.delete_cf(self.store.cf(CF_SM_TAGS)?, tag_key);
            activity.tag_gone(batch, repo, tag)?;
        }
        activity.manifest_gone(batch, repo, digest)?;
        let stored = StoredManifest::decode(&raw)?;
        let mut referrer = None;
        if let Some(subject) = &stored.subject {
            let rkey = repo_key(repo, &format!("{subject}\0{digest}"));
            referrer = self.store.get(CF_SM_REFERRERS, &rkey)?.map(|v| String::from_utf8_lossy(&v).into_owned());
            batch.delete_cf(self.store.cf(CF_SM_REFERRERS)?, rkey);
        }
        // At most one release per entry: reads see the state before it, so releasing two
        // copies of one manifest here would count both from the same figures.
        match trash_until {
            Some(expires_unix) => {
                // A manifest deleted before (and pushed again since) may already be in the
                // trash: that older copy's references go now, the newer copy takes its place.
                let trash_key = trash::trash_key(repo, digest);
                if let Some(old) = self.store.get(CF_SM_TRASH, &trash_key)? {
                    let (_, record) = trash::decode(&old)?;
                    self.release_manifest(batch, repo, digest, &StoredManifest::decode(record)?, at_unix)?;
                }
                let tags = tags.into_iter().map(|(_, t)| t).collect();
                let header = TrashHeader { deleted_unix: at_unix, expires_unix, tags, referrer };
                batch.put_cf(self.store.cf(CF_SM_TRASH)?, &trash_key, trash::encode(&header, &raw));
            }
            // An older trashed copy stays in the trash, to be restored or purged on its own.
            None => {
                self.release_manifest(batch, repo, digest, &stored, at_unix)?;
                bases::forget(&self.store, batch, repo, digest)?;
            }
        }
        completion::forget(&self.store, batch, repo, digest)?;
        let mut deleted = event("delete", repo, digest, origin, at_unix);
        deleted.media_type = stored.media_type.clone();
        events.emit(batch, CLUSTER_LANE, &deleted)?;
        Ok(CommandResult::Applied)
    }

    /// A manifest of `repo` is gone for good: its references on blobs and on the quotas
    /// covering `repo` are given back.
    fn release_manifest(&self, batch: &mut WriteBatch, repo: &str, digest: &str, stored: &StoredManifest, at_unix: u64) -> Result<(), StoreError> {
        let mut gone = vec![Item::Manifest(digest.to_string())];
        for blob in &stored.blobs {
            if self.release_link(batch, repo, blob, at_unix)? {
                gone.push(Item::Blob(blob.clone()));
            }
        }
        QuotaBook::for_repo(&self.store, repo)?.remove(batch, &gone)
    }

    pub(super) fn apply_delete_tag(
        &self,
        batch: &mut WriteBatch,
        repo: &str,
        tag: &str,
        if_digest: Option<&Digest>,
        origin: Option<&Origin>,
        events: &mut EventBook,
    ) -> Result<CommandResult, StoreError> {
        let key = repo_key(repo, tag);
        let Some(current) = self.store.get(CF_SM_TAGS, &key)? else {
            return Ok(CommandResult::ManifestUnknown);
        };
        if if_digest.is_some_and(|d| d.to_string().as_bytes() != current.as_slice()) {
            return Ok(CommandResult::StillNeeded);
        }
        batch.delete_cf(self.store.cf(CF_SM_TAGS)?, key);
        ActivityBook { store: &self.store }.tag_gone(batch, repo, tag)?;
        let mut deleted = event("delete", repo, &String::from_utf8_lossy(&current), origin, 0);
        deleted.tag = Some(tag.to_string());
        events.emit(batch, CLUSTER_LANE, &deleted)?;
        Ok(CommandResult::Applied)
    }

    /// Puts a trashed manifest back as it was (its references never left), with `tag`.
    /// When the same manifest was pushed again meanwhile, the trashed copy's references
    /// go and only the tag is set.
    pub(super) fn apply_restore(
        &self,
        batch: &mut WriteBatch,
        repo: &str,
        digest: &str,
        tag: Option<&str>,
        at_unix: u64,
        origin: Option<&Origin>,
        events: &mut EventBook,
    ) -> Result<CommandResult, StoreError> {
        let trash_key = trash::trash_key(repo, digest);
        let Some(raw) = self.store.get(CF_SM_TRASH, &trash_key)? else {
            return Ok(CommandResult::NotFound);
        };
        let (header, record) = trash::decode(&raw)?;
        let stored = StoredManifest::decode(record)?;
        let key = repo_key(repo, digest);
        batch.delete_cf(self.store.cf(CF_SM_TRASH)?, &trash_key);
        if self.store.exists(CF_SM_MANIFESTS, &key)? {
            self.release_manifest(batch, repo, digest, &stored, at_unix)?;
        } else {
            batch.put_cf(self.store.cf(CF_SM_MANIFESTS)?, &key, record);
            batch.put_cf(self.store.cf(CF_SM_REPOS)?, repo.as_bytes(), b"");
            if let (Some(subject), Some(referrer)) = (&stored.subject, &header.referrer) {
                let rkey = repo_key(repo, &format!("{subject}\0{digest}"));
                batch.put_cf(self.store.cf(CF_SM_REFERRERS)?, rkey, referrer.as_bytes());
            }
        }
        let tags: Vec<String> = tag.map(|t| vec![t.to_string()]).unwrap_or_default();
        let moved = self.set_tags(batch, repo, &tags, digest)?;
        ActivityBook { store: &self.store }.pushed(batch, repo, digest, &tags, at_unix)?;
        // Back in the registry: to a receiver, the same as a push.
        let mut restored = event("push", repo, digest, origin, at_unix);
        restored.media_type = stored.media_type.clone();
        restored.size = stored.body.len() as u64;
        let (region, at_ms) = (restored.region.clone(), restored.at_ms);
        push_events(batch, events, restored, &tags)?;
        self.tell_moved(batch, events, &moved, &Moves { repo, digest, origin, region: &region, at_ms })?;
        Ok(CommandResult::Applied)
    }

    /// Points `tags` of `repo` at `digest`; returns the tags that pointed elsewhere, with
    /// the digest each left (for the `base_updated` fan-out).
    fn set_tags(&self, batch: &mut WriteBatch, repo: &str, tags: &[String], digest: &str) -> Result<Vec<(String, String)>, StoreError> {
        let mut moved = Vec::new();
        for tag in tags {
            let key = repo_key(repo, tag);
            if let Some(old) = self.store.get(CF_SM_TAGS, &key)?.filter(|old| old != digest.as_bytes()) {
                moved.push((tag.clone(), String::from_utf8_lossy(&old).into_owned()));
            }
            batch.put_cf(self.store.cf(CF_SM_TAGS)?, key, digest.as_bytes());
        }
        Ok(moved)
    }

    /// Records each moved tag's old digest and tells the images built on it, each old
    /// digest once however many tags left it in this entry.
    fn tell_moved(&self, batch: &mut WriteBatch, events: &mut EventBook, moved: &[(String, String)], to: &Moves) -> Result<(), StoreError> {
        for (i, (tag, old)) in moved.iter().enumerate() {
            let tell = !moved[..i].iter().any(|(_, earlier)| earlier == old);
            let mv = TagMove { repo: to.repo, tag, old, new: to.digest, origin: to.origin, region: to.region, at_ms: to.at_ms, tell };
            bases::tag_moved(&self.store, batch, events, &mv)?;
        }
        Ok(())
    }

    /// Deletes a trashed manifest for good (with `expired_only`, if expired at `at_unix`).
    pub(super) fn apply_purge(&self, batch: &mut WriteBatch, repo: &str, digest: &str, at_unix: u64, expired_only: bool) -> Result<CommandResult, StoreError> {
        let trash_key = trash::trash_key(repo, digest);
        let Some(raw) = self.store.get(CF_SM_TRASH, &trash_key)? else {
            return Ok(CommandResult::NotFound);
        };
        let (header, record) = trash::decode(&raw)?;
        if expired_only && header.expires_unix > at_unix {
            return Ok(CommandResult::StillNeeded);
        }
        self.release_manifest(batch, repo, digest, &StoredManifest::decode(record)?, at_unix)?;
        batch.delete_cf(self.store.cf(CF_SM_TRASH)?, &trash_key);
        // Its base rows stayed while it was restorable; a copy pushed again since owns them.
        if !self.store.exists(CF_SM_MANIFESTS, &repo_key(repo, digest))? {
            bases::forget(&self.store, batch, repo, digest)?;
        }
        Ok(CommandResult::Applied)
    }

    /// A manifest of `repo` that referenced `blob` is gone: one reference less on the
    /// repository's link, and when that was the last, one repository less on the blob
    /// (true: the repository no longer has the blob).
    fn release_link(&self, batch: &mut WriteBatch, repo: &str, blob: &str, at_unix: u64) -> Result<bool, StoreError> {
        let key = repo_key(repo, blob);
        let Some(raw) = self.store.get(CF_SM_BLOB_LINKS, &key)? else { return Ok(false) };
        let link = BlobLink::decode(&raw)?;
        if link.refs > 1 {
            batch.put_cf(self.store.cf(CF_SM_BLOB_LINKS)?, &key, BlobLink { refs: link.refs - 1, ..link }.encode());
            return Ok(false);
        }
        batch.delete_cf(self.store.cf(CF_SM_BLOB_LINKS)?, &key);
        self.drop_repo_reference(batch, blob, at_unix)?;
        Ok(true)
    }

    /// One repository less links `blob`; the last one makes it unreferenced from `at_unix`.
    pub(super) fn drop_repo_reference(&self, batch: &mut WriteBatch, blob: &str, at_unix: u64) -> Result<(), StoreError> {
        let Some(raw) = self.store.get(CF_SM_BLOBS, blob.as_bytes())? else { return Ok(()) };
        let mut location = BlobLocation::decode(&raw)?;
        if let Some(links) = location.links {
            let links = links.saturating_sub(1);
            location.links = Some(links);
            if links == 0 {
                location.unreferenced_since = Some(at_unix);
            }
            batch.put_cf(self.store.cf(CF_SM_BLOBS)?, blob.as_bytes(), location.encode());
        }
        Ok(())
    }
}

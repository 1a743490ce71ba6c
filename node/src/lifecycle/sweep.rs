//! One region's half of garbage collection: remove what this region stores and nothing
//! needs. Runs on a blocking thread.
//!
//! A blob file stays while the cluster state knows the blob (referenced, or unreferenced
//! but within the grace and not yet collected), while a push in flight here pins it, and
//! while it was written or linked here within the grace (linking touches the file, so the
//! file's time is the newest of both). Everything is re-checked under the pin lock just
//! before the file goes, together with the removal of the repositories' local links to
//! it, so an upload or mount that raced the sweep either came first (and keeps the blob)
//! or comes after (and writes it anew).

use crate::blobs::{BlobStore, StoredBlob};
use crate::meta::records::{GcSweepReport, LocalLink};
use crate::meta::store::{Store, StoreError, CF_LOCAL_BLOB_LINKS, CF_LOCAL_UPLOADS, CF_SM_BLOBS};
use meridian_replication::Digest;
use std::collections::{HashMap, HashSet};
use std::time::Instant;

/// Errors listed in a report at most (the count of the rest is added).
const MAX_ERRORS: usize = 20;
/// Blob files removed per round. A round reads the local links once to find the
/// candidates' own, so memory holds one round and its links, never the whole store
/// (a region of millions of blobs sweeps in tens of MiB).
const ROUND: usize = 20_000;

/// What one sweep compares file times against, in Unix milliseconds: with whole seconds
/// a file written 0.1 s ago could look a second old, and a one-second grace would not
/// protect it.
struct Clock {
    now_ms: u64,
    grace_ms: u64,
}

impl Clock {
    fn recent(&self, modified_ms: u64) -> bool {
        modified_ms.saturating_add(self.grace_ms) > self.now_ms
    }

    /// Link times are whole seconds: count them from the end of their second.
    fn recent_link(&self, linked_unix: u64) -> bool {
        self.recent(linked_unix.saturating_mul(1000).saturating_add(999))
    }
}

/// `now_ms`: the clock at the start, Unix milliseconds.
pub fn sweep_region(store: &Store, blobs: &dyn BlobStore, region: &str, grace_secs: u64, now_ms: u64, dry_run: bool) -> GcSweepReport {
    sweep_in_rounds(store, blobs, region, grace_secs, now_ms, dry_run, ROUND)
}

fn sweep_in_rounds(
    store: &Store,
    blobs: &dyn BlobStore,
    region: &str,
    grace_secs: u64,
    now_ms: u64,
    dry_run: bool,
    round_size: usize,
) -> GcSweepReport {
    let started = Instant::now();
    let mut report = GcSweepReport { region: region.to_string(), dry_run, ..Default::default() };
    let mut errors = Vec::new();
    let clock = Clock { now_ms, grace_ms: grace_secs.saturating_mul(1000) };

    // Files the cluster no longer knows, past the grace, removed a round at a time.
    let mut round: Vec<StoredBlob> = Vec::new();
    let listed = blobs.for_each_stored_blob(&mut |blob| {
        match store.exists(CF_SM_BLOBS, blob.digest.to_string().as_bytes()) {
            Ok(true) => return,
            Ok(false) => {}
            Err(e) => {
                errors.push(format!("{}: {e}", blob.digest));
                return;
            }
        }
        if clock.recent(blob.modified_ms) {
            return;
        }
        report.candidates += 1;
        if dry_run {
            return;
        }
        round.push(blob);
        if round.len() >= round_size {
            remove_round(store, blobs, &clock, std::mem::take(&mut round), &mut report, &mut errors);
        }
    });
    if let Err(e) = listed {
        errors.push(format!("listing blobs: {e}"));
    }
    if !dry_run {
        remove_round(store, blobs, &clock, round, &mut report, &mut errors);
        drop_stale_links(store, blobs, &clock, &mut errors);
    }

    sweep_leftovers(store, blobs, &|ms| clock.recent(ms), dry_run, &mut report, &mut errors);

    report.duration_ms = started.elapsed().as_millis() as u64;
    report.finished_unix = now_ms / 1000;
    if errors.len() > MAX_ERRORS {
        let more = errors.len() - MAX_ERRORS;
        errors.truncate(MAX_ERRORS);
        errors.push(format!("… and {more} more"));
    }
    report.errors = errors;
    report
}

/// Removes one round of candidate files with the repositories' local links to them.
fn remove_round(
    store: &Store,
    blobs: &dyn BlobStore,
    clock: &Clock,
    round: Vec<StoredBlob>,
    report: &mut GcSweepReport,
    errors: &mut Vec<String>,
) {
    if round.is_empty() {
        return;
    }
    let wanted: HashSet<String> = round.iter().map(|b| b.digest.to_string()).collect();
    let mut links: HashMap<String, Vec<Vec<u8>>> = HashMap::new();
    let scanned = for_each_local_link(store, |key, digest, _| {
        if wanted.contains(digest) {
            links.entry(digest.to_string()).or_default().push(key.to_vec());
        }
        Ok(())
    });
    if let Err(e) = scanned {
        // Without the links a removal would leave them pointing at nothing: keep the
        // files for the next sweep.
        errors.push(format!("reading local links: {e}"));
        return;
    }
    for blob in round {
        let digest = blob.digest.to_string();
        let keys = links.remove(&digest).unwrap_or_default();
        // Test builds can slow or fail each removal (the crash-during-sweep test).
        if let Err(e) = crate::failpoints::io("gc-sweep-remove") {
            errors.push(format!("removing {digest}: {e}"));
            continue;
        }
        let removed = blobs.remove_unneeded(&blob.digest, &mut || {
            // Under the pin lock: nothing may have taken the blob back since the look above.
            let still_old = matches!(blobs.stat(&blob.digest), Ok(Some(now)) if !clock.recent(now.modified_ms));
            if !still_old || !matches!(store.exists(CF_SM_BLOBS, digest.as_bytes()), Ok(false)) {
                return false;
            }
            // The links go first: a link must never outlive its bytes (a HEAD would say
            // the blob is there). Unsynced: a crash that loses the deletes leaves links to
            // nothing, which `drop_stale_links` drops on a later sweep.
            delete_keys(store, &keys).is_ok()
        });
        match removed {
            Ok(Some(bytes)) => {
                report.blobs_removed += 1;
                report.bytes_freed += bytes;
            }
            Ok(None) => {}
            Err(e) => errors.push(format!("removing {digest}: {e}")),
        }
    }
}

/// Links to blobs neither stored here nor known to the cluster, past the grace: what a
/// crash between a link's and its file's removal, or a lost upload, left behind. Each
/// is re-read under the pin lock: an upload may have just written it anew.
fn drop_stale_links(store: &Store, blobs: &dyn BlobStore, clock: &Clock, errors: &mut Vec<String>) {
    let mut stale: HashMap<Digest, Vec<Vec<u8>>> = HashMap::new();
    let scanned = for_each_local_link(store, |key, digest, raw| {
        // Most links name a blob the cluster knows: one point read settles them.
        if store.exists(CF_SM_BLOBS, digest.as_bytes())? || clock.recent_link(LocalLink::decode(raw)?.linked_unix) {
            return Ok(());
        }
        if let Ok(parsed) = Digest::parse(digest) {
            if matches!(blobs.stat(&parsed), Ok(None)) {
                stale.entry(parsed).or_default().push(key.to_vec());
            }
        }
        Ok(())
    });
    if let Err(e) = scanned {
        errors.push(format!("reading local links: {e}"));
        return;
    }
    for (digest, keys) in stale {
        let mut dropped = Ok(());
        blobs.unless_pinned(&digest, &mut || dropped = drop_if_stale(store, blobs, clock, &digest, &keys));
        if let Err(e) = dropped {
            errors.push(format!("dropping stale links of {digest}: {e}"));
        }
    }
}

/// Under the pin lock: drops `keys`, links of `digest` past the grace, unless the blob is
/// stored here or known to the cluster after all.
fn drop_if_stale(store: &Store, blobs: &dyn BlobStore, clock: &Clock, digest: &Digest, keys: &[Vec<u8>]) -> Result<(), StoreError> {
            if blobs.stat(digest)?.is_some() || store.exists(CF_SM_BLOBS, digest.to_string().as_bytes())? {
                return Ok(());
            }
            let mut gone = Vec::new();
            for key in keys {
                if let Some(raw) = store.get(CF_LOCAL_BLOB_LINKS, key)? {
                    if !clock.recent_link(LocalLink::decode(&raw)?.linked_unix) {
                        gone.push(key.clone());
                    }
                }
            }
            delete_keys(store, &gone)
}

/// Upload files without a session (a crash, a refused request), single-request uploads
/// and fetches that stopped long ago, and quarantined copies, once past the grace. Live
/// sessions are the upload sweeper's (`upload_timeout_secs`).
fn sweep_leftovers(
    store: &Store,
    blobs: &dyn BlobStore,
    recent: &dyn Fn(u64) -> bool,
    dry_run: bool,
    report: &mut GcSweepReport,
    errors: &mut Vec<String>,
) {
    let leftovers = match blobs.leftovers() {
        Ok(l) => l,
        Err(e) => {
            errors.push(format!("listing uploads and quarantine: {e}"));
            return;
        }
    };
    for file in leftovers {
        if recent(file.modified_ms) {
            continue;
        }
        let is_session = !file.quarantined && !file.name.starts_with("direct-") && !file.name.starts_with("fetch-");
        if is_session && !matches!(store.exists(CF_LOCAL_UPLOADS, file.name.as_bytes()), Ok(false)) {
            continue;
        }
        if dry_run {
            continue;
        }
        match blobs.remove_leftover(&file) {
            Ok(()) => {
                report.leftovers_removed += 1;
                report.bytes_freed += file.size;
            }
            Err(e) => errors.push(format!("removing {}: {e}", file.path.display())),
        }
    }
}

/// Calls `f` with every local link's key (`repo\0digest`), digest and value, in key
/// order.
fn for_each_local_link(store: &Store, mut f: impl FnMut(&[u8], &str, &[u8]) -> Result<(), StoreError>) -> Result<(), StoreError> {
    let links = store.cf(CF_LOCAL_BLOB_LINKS)?;
    for item in store.db().iterator_cf_opt(links, Store::bulk_read_options(), rocksdb::IteratorMode::Start) {
        let (key, raw) = item?;
        let Some(pos) = key.iter().position(|b| *b == 0) else { continue };
        let digest = String::from_utf8_lossy(&key[pos + 1..]);
        f(&key, &digest, &raw)?;
    }
    Ok(())
}

fn delete_keys(store: &Store, keys: &[Vec<u8>]) -> Result<(), StoreError> {
    if keys.is_empty() {
        return Ok(());
    }
    let mut batch = rocksdb::WriteBatch::default();
    let cf = store.cf(CF_LOCAL_BLOB_LINKS)?;
    for k in keys {
        batch.delete_cf(cf, k);
    }
    store.write(batch)
}

#[cfg(test)]
mod tests {
    //! The sweep over several rounds, on a real RocksDB and directory: exactly the files
    //! the cluster does not know go, each with its links; known ones and their links stay.
    use super::*;
    use crate::blobs::FsBlobStore;
    use crate::meta::records::BlobLocation;
    use crate::meta::store::repo_key;
    use meridian_replication::Algorithm;

    #[test]
    fn rounds_remove_unknown_files_with_their_links_and_drop_stale_links() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("db")).unwrap();
        let blobs = FsBlobStore::open(dir.path()).unwrap();
        let digests: Vec<Digest> = (0..7).map(|i| Digest::of_bytes(Algorithm::Sha256, format!("blob {i}").as_bytes())).collect();
        let mut batch = rocksdb::WriteBatch::default();
        for (i, d) in digests.iter().enumerate() {
            let path = blobs.blob_path(d);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(&path, format!("blob {i}")).unwrap();
            for repo in ["a", "b"] {
                let link = LocalLink { size: 6, linked_unix: 1 };
                batch.put_cf(store.cf(CF_LOCAL_BLOB_LINKS).unwrap(), repo_key(repo, &d.to_string()), link.encode());
            }
        }
        // The cluster knows the first two.
        for d in &digests[..2] {
            let location = BlobLocation { size: 6, regions: vec!["us".into()], links: Some(1), unreferenced_since: None };
            batch.put_cf(store.cf(CF_SM_BLOBS).unwrap(), d.to_string().as_bytes(), location.encode());
        }
        // A link to a blob neither stored nor known: a crash left it.
        let lost = Digest::of_bytes(Algorithm::Sha256, b"lost");
        batch.put_cf(store.cf(CF_LOCAL_BLOB_LINKS).unwrap(), repo_key("a", &lost.to_string()), LocalLink { size: 4, linked_unix: 1 }.encode());
        store.write(batch).unwrap();
        let later = crate::meta::command::proposer_clock() * 1000 + 10_000;

        let dry = sweep_in_rounds(&store, &blobs, "us", 1, later, true, 2);
        assert_eq!((dry.candidates, dry.blobs_removed), (5, 0));
        assert!(digests.iter().all(|d| blobs.blob_path(d).exists()), "a dry run removes nothing");

        let report = sweep_in_rounds(&store, &blobs, "us", 1, later, false, 2);
        assert_eq!((report.candidates, report.blobs_removed, report.bytes_freed), (5, 5, 30), "{report:?}");
        assert!(report.errors.is_empty(), "{report:?}");
        for (i, d) in digests.iter().enumerate() {
            let known = i < 2;
            assert_eq!(blobs.blob_path(d).exists(), known, "blob {i}");
            for repo in ["a", "b"] {
                assert_eq!(store.exists(CF_LOCAL_BLOB_LINKS, &repo_key(repo, &d.to_string())).unwrap(), known, "{repo} link to blob {i}");
            }
        }
        assert!(!store.exists(CF_LOCAL_BLOB_LINKS, &repo_key("a", &lost.to_string())).unwrap(), "the stale link is dropped");
    }
}

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

use crate::blobs::FsBlobStore;
use crate::meta::records::{GcSweepReport, LocalLink};
use crate::meta::store::{Store, StoreError, CF_LOCAL_BLOB_LINKS, CF_LOCAL_UPLOADS, CF_SM_BLOBS};
use meridian_replication::Digest;
use std::collections::HashMap;
use std::time::Instant;

/// Errors listed in a report at most (the count of the rest is added).
const MAX_ERRORS: usize = 20;

/// `now_ms`: the clock at the start, Unix milliseconds. Times are compared in
/// milliseconds: with whole seconds a file written 0.1 s ago could look a second old, and
/// a one-second grace would not protect it.
pub fn sweep_region(store: &Store, blobs: &FsBlobStore, region: &str, grace_secs: u64, now_ms: u64, dry_run: bool) -> GcSweepReport {
    let started = Instant::now();
    let mut report = GcSweepReport { region: region.to_string(), dry_run, ..Default::default() };
    let mut errors = Vec::new();
    let grace_ms = grace_secs.saturating_mul(1000);
    let recent = |modified_ms: u64| modified_ms.saturating_add(grace_ms) > now_ms;
    // Link times are whole seconds: count them from the end of their second.
    let recent_link = |linked_unix: u64| recent(linked_unix.saturating_mul(1000).saturating_add(999));

    // Local links by digest, to drop with the blob (and to drop when the blob is gone).
    let mut links: HashMap<String, Vec<(Vec<u8>, LocalLink)>> = HashMap::new();
    match local_links(store) {
        Ok(all) => {
            for (key, digest, link) in all {
                links.entry(digest).or_default().push((key, link));
            }
        }
        Err(e) => errors.push(format!("reading local links: {e}")),
    }

    let stored = match blobs.stored_blobs() {
        Ok(s) => s,
        Err(e) => {
            errors.push(format!("listing blobs: {e}"));
            Vec::new()
        }
    };
    for blob in stored {
        let digest = blob.digest.to_string();
        // What is left in `links` after this loop belongs to blobs not stored here.
        let keys: Vec<Vec<u8>> = links.remove(&digest).unwrap_or_default().into_iter().map(|(k, _)| k).collect();
        let known = |store: &Store| store.exists(CF_SM_BLOBS, digest.as_bytes());
        match known(store) {
            Ok(true) => continue,
            Ok(false) => {}
            Err(e) => {
                errors.push(format!("{digest}: {e}"));
                continue;
            }
        }
        if recent(blob.modified_ms) {
            continue;
        }
        report.candidates += 1;
        if dry_run {
            continue;
        }
        // Test builds can slow or fail each removal (the crash-during-sweep test).
        if let Err(e) = crate::failpoints::io("gc-sweep-remove") {
            errors.push(format!("removing {digest}: {e}"));
            continue;
        }
        let removed = blobs.remove_unneeded(&blob.digest, || {
            // Under the pin lock: nothing may have taken the blob back since the look above.
            let still_old =
                std::fs::metadata(blobs.blob_path(&blob.digest)).is_ok_and(|m| !recent(crate::blobs::modified_ms(&m)));
            if !still_old || !matches!(known(store), Ok(false)) {
                return false;
            }
            // The links go first: a link must never outlive its bytes (a HEAD would say
            // the blob is there). Unsynced: a crash that loses the deletes leaves links to
            // nothing, which the next sweep drops below.
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

    if !dry_run {
        // Links to blobs neither stored here nor known to the cluster, past the grace:
        // what a crash between the two steps above, or a lost upload, left behind. Each
        // is re-read under the pin lock: an upload may have just written it anew.
        for (digest, entries) in &links {
            if entries.iter().all(|(_, l)| recent_link(l.linked_unix)) {
                continue;
            }
            let Ok(parsed) = Digest::parse(digest) else { continue };
            let dropped = blobs.unless_pinned(&parsed, || -> Result<(), StoreError> {
                if blobs.blob_path(&parsed).exists() || store.exists(CF_SM_BLOBS, digest.as_bytes())? {
                    return Ok(());
                }
                let mut stale = Vec::new();
                for (key, _) in entries {
                    if let Some(raw) = store.get(CF_LOCAL_BLOB_LINKS, key)? {
                        if !recent_link(LocalLink::decode(&raw)?.linked_unix) {
                            stale.push(key.clone());
                        }
                    }
                }
                delete_keys(store, &stale)
            });
            if let Some(Err(e)) = dropped {
                errors.push(format!("dropping stale links of {digest}: {e}"));
            }
        }
    }

    sweep_leftovers(store, blobs, &recent, dry_run, &mut report, &mut errors);

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

/// Upload files without a session (a crash, a refused request), single-request uploads
/// and fetches that stopped long ago, and quarantined copies, once past the grace. Live
/// sessions are the upload sweeper's (`upload_timeout_secs`).
fn sweep_leftovers(
    store: &Store,
    blobs: &FsBlobStore,
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
        match std::fs::remove_file(&file.path) {
            Ok(()) => {
                report.leftovers_removed += 1;
                report.bytes_freed += file.size;
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => errors.push(format!("removing {}: {e}", file.path.display())),
        }
    }
}

/// Every local link: (key, digest, link).
fn local_links(store: &Store) -> Result<Vec<(Vec<u8>, String, LocalLink)>, StoreError> {
    let mut out = Vec::new();
    for item in store.db().iterator_cf(store.cf(CF_LOCAL_BLOB_LINKS)?, rocksdb::IteratorMode::Start) {
        let (key, raw) = item?;
        // `repo\0digest`
        let Some(pos) = key.iter().position(|b| *b == 0) else { continue };
        let digest = String::from_utf8_lossy(&key[pos + 1..]).to_string();
        out.push((key.to_vec(), digest, LocalLink::decode(&raw)?));
    }
    Ok(out)
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

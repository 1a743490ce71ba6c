//! The `BlobStore` contract, as one suite every implementation runs: the filesystem store
//! today, the object store next (issue 14). Each case takes a fresh store from `open`.

use super::store::{BlobReader, BlobStore, Blobs};
use super::{stream_to_file, FsBlobStore};
use bytes::Bytes;
use meridian_replication::{Algorithm, Digest};
use std::io::Read;
use std::path::Path;
use std::sync::Arc;

/// Stages `bytes` the way an upload does (streamed and hashed into the staging area,
/// fsynced) and returns the staged file and the digest the stream hashed to.
async fn stage(blobs: &dyn BlobStore, name: &str, bytes: &[u8]) -> (std::path::PathBuf, Digest) {
    let path = blobs.staging_path(name);
    let chunks: Vec<Result<Bytes, std::io::Error>> =
        bytes.chunks(7).map(|c| Ok(Bytes::copy_from_slice(c))).collect();
    let body = futures::stream::iter(chunks);
    let outcome = stream_to_file(path.clone(), Algorithm::Sha256.hasher(), body, Some(bytes.len() as u64), None, true)
        .await
        .unwrap();
    assert_eq!(outcome.written, bytes.len() as u64);
    (path, outcome.hasher.finish())
}

fn read_all(reader: BlobReader) -> Vec<u8> {
    match reader {
        BlobReader::File { mut file, size } => {
            let mut out = Vec::new();
            file.read_to_end(&mut out).unwrap();
            assert_eq!(out.len() as u64, size);
            out
        }
    }
}

fn listed(blobs: &dyn BlobStore) -> Vec<(Digest, u64)> {
    let mut out = Vec::new();
    blobs.for_each_stored_blob(&mut |b| out.push((b.digest, b.size))).unwrap();
    out.sort_by_key(|(d, _)| d.to_string());
    out
}

/// Runs every case against stores made by `open` (one per case, each in its own
/// directory).
async fn contract(open: impl Fn(&Path) -> Blobs) {
    written_blobs_appear_only_once_committed(&open).await;
    two_writers_of_one_digest_leave_one_blob(&open).await;
    a_crash_between_write_and_commit_leaves_nothing_visible(&open).await;
    removal_respects_pins_and_the_callers_check(&open).await;
    a_quarantined_blob_is_out_of_service(&open).await;
}

async fn written_blobs_appear_only_once_committed(open: &impl Fn(&Path) -> Blobs) {
    let dir = tempfile::tempdir().unwrap();
    let blobs = open(dir.path());
    let bytes = b"layer bytes, a few of them".repeat(100);
    let (staged, digest) = stage(blobs.as_ref(), "session-1", &bytes).await;
    assert_eq!(digest, Digest::of_bytes(Algorithm::Sha256, &bytes));
    assert!(blobs.size(&digest).await.unwrap().is_none(), "staged is not stored");
    assert!(blobs.open(&digest).await.unwrap().is_none());
    blobs.commit(&staged, &digest).await.unwrap();
    assert_eq!(blobs.size(&digest).await.unwrap(), Some(bytes.len() as u64));
    let stat = blobs.stat(&digest).unwrap().expect("stored");
    assert_eq!(stat.size, bytes.len() as u64);
    assert_eq!(read_all(blobs.open(&digest).await.unwrap().unwrap()), bytes);
    assert_eq!(listed(blobs.as_ref()), vec![(digest.clone(), bytes.len() as u64)]);
    assert!(blobs.leftovers().unwrap().is_empty(), "the commit took the staged file");
    let other = Digest::of_bytes(Algorithm::Sha256, b"never written");
    assert!(blobs.size(&other).await.unwrap().is_none());
    assert!(blobs.stat(&other).unwrap().is_none());
    blobs.touch(&other).unwrap();
}

async fn two_writers_of_one_digest_leave_one_blob(open: &impl Fn(&Path) -> Blobs) {
    let dir = tempfile::tempdir().unwrap();
    let blobs = open(dir.path());
    let bytes = b"the same layer pushed twice at once".to_vec();
    let (a, digest) = stage(blobs.as_ref(), "writer-a", &bytes).await;
    let (b, _) = stage(blobs.as_ref(), "writer-b", &bytes).await;
    let (ra, rb) = tokio::join!(blobs.commit(&a, &digest), blobs.commit(&b, &digest));
    ra.unwrap();
    rb.unwrap();
    assert_eq!(listed(blobs.as_ref()), vec![(digest.clone(), bytes.len() as u64)]);
    assert_eq!(read_all(blobs.open(&digest).await.unwrap().unwrap()), bytes);
    assert!(blobs.leftovers().unwrap().is_empty(), "neither staged copy is left behind");
}

async fn a_crash_between_write_and_commit_leaves_nothing_visible(open: &impl Fn(&Path) -> Blobs) {
    let dir = tempfile::tempdir().unwrap();
    let bytes = b"written, never committed".to_vec();
    let digest = {
        let blobs = open(dir.path());
        let (_staged, digest) = stage(blobs.as_ref(), "direct-crashed", &bytes).await;
        digest
    };
    // The process is gone; a new one opens the same store.
    let blobs = open(dir.path());
    assert!(blobs.size(&digest).await.unwrap().is_none());
    assert!(listed(blobs.as_ref()).is_empty());
    // Single-request uploads cannot resume: their staged bytes are gone on open, and
    // nothing is left for the sweep either.
    assert!(blobs.leftovers().unwrap().is_empty());
    // A session's staged bytes stay (it resumes) and are listed for the sweep.
    let (staged, _) = stage(blobs.as_ref(), "session-kept", &bytes).await;
    let leftovers = blobs.leftovers().unwrap();
    assert_eq!(leftovers.len(), 1);
    assert_eq!(leftovers[0].name, "session-kept");
    assert!(!leftovers[0].quarantined);
    blobs.discard(&staged).await;
    assert!(blobs.leftovers().unwrap().is_empty());
}

async fn removal_respects_pins_and_the_callers_check(open: &impl Fn(&Path) -> Blobs) {
    let dir = tempfile::tempdir().unwrap();
    let blobs = open(dir.path());
    let bytes = b"garbage, eventually".to_vec();
    let (staged, digest) = stage(blobs.as_ref(), "s", &bytes).await;
    blobs.commit(&staged, &digest).await.unwrap();

    let pin = blobs.pin(vec![digest.to_string()]);
    let mut asked = false;
    assert_eq!(blobs.remove_unneeded(&digest, &mut || { asked = true; true }).unwrap(), None);
    assert!(!asked, "a pinned blob is not even considered");
    assert!(!blobs.unless_pinned(&digest, &mut || {}));
    drop(pin);

    assert_eq!(blobs.remove_unneeded(&digest, &mut || false).unwrap(), None, "the caller still needs it");
    assert!(blobs.size(&digest).await.unwrap().is_some());
    // A reader that opened the blob before it went keeps reading it.
    let reader = blobs.open(&digest).await.unwrap().unwrap();
    assert_eq!(blobs.remove_unneeded(&digest, &mut || true).unwrap(), Some(bytes.len() as u64));
    assert!(blobs.size(&digest).await.unwrap().is_none());
    assert!(listed(blobs.as_ref()).is_empty());
    assert_eq!(read_all(reader), bytes);
    assert_eq!(blobs.remove_unneeded(&digest, &mut || true).unwrap(), None, "already gone");
    let mut ran = false;
    assert!(blobs.unless_pinned(&digest, &mut || ran = true));
    assert!(ran);
}

async fn a_quarantined_blob_is_out_of_service(open: &impl Fn(&Path) -> Blobs) {
    let dir = tempfile::tempdir().unwrap();
    let blobs = open(dir.path());
    let (staged, digest) = stage(blobs.as_ref(), "s", b"bytes that rot").await;
    blobs.commit(&staged, &digest).await.unwrap();
    blobs.quarantine(&digest).await.unwrap();
    assert!(blobs.size(&digest).await.unwrap().is_none());
    assert!(blobs.open(&digest).await.unwrap().is_none());
    assert!(listed(blobs.as_ref()).is_empty());
    let leftovers = blobs.leftovers().unwrap();
    assert_eq!(leftovers.len(), 1, "kept aside for inspection");
    assert!(leftovers[0].quarantined);
}

#[tokio::test]
async fn the_filesystem_store_keeps_the_contract() {
    contract(|dir| Arc::new(FsBlobStore::open(dir).unwrap()) as Blobs).await;
}

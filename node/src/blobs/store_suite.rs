//! The `BlobStore` contract, as one suite every implementation runs: the filesystem store,
//! and the S3 store against a real Garage. Each case takes a fresh store from `open`.

use super::store::{BlobReader, BlobStore, Blobs};
use super::{stream_to_file, FsBlobStore, S3BlobStore};
use bytes::Bytes;
use futures::StreamExt;
use meridian_replication::{Algorithm, Digest};
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

async fn read_all(reader: BlobReader) -> Vec<u8> {
    let size = reader.size();
    let out = read_range(reader, 0, size).await;
    assert_eq!(out.len() as u64, size);
    out
}

async fn read_range(reader: BlobReader, start: u64, len: u64) -> Vec<u8> {
    let mut out = Vec::new();
    let mut chunks = reader.stream(start, len);
    while let Some(chunk) = chunks.next().await {
        out.extend_from_slice(&chunk.unwrap());
    }
    out
}

/// Bytes that differ from one offset to the next, so a misplaced range shows.
fn patterned(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i * 7 + i / 251) as u8).collect()
}

fn listed(blobs: &dyn BlobStore) -> Vec<(Digest, u64)> {
    let mut out = Vec::new();
    blobs.for_each_stored_blob(&mut |b| out.push((b.digest, b.size))).unwrap();
    out.sort_by_key(|(d, _)| d.to_string());
    out
}

/// Runs every case against stores made by `open` (one per case, each in its own
/// directory; opening the same directory again is the same store after a restart).
async fn contract(open: &impl AsyncFn(&Path) -> Blobs) {
    written_blobs_appear_only_once_committed(open).await;
    large_blobs_read_back_whole_and_by_range(open).await;
    two_writers_of_one_digest_leave_one_blob(open).await;
    a_crash_between_write_and_commit_leaves_nothing_visible(open).await;
    removal_respects_pins_and_the_callers_check(open).await;
    a_quarantined_blob_is_out_of_service(open).await;
    a_touch_is_seen_through_every_handle_on_the_store(open).await;
}

/// What one node of a region touches, garbage collection on any node sees as recent.
async fn a_touch_is_seen_through_every_handle_on_the_store(open: &impl AsyncFn(&Path) -> Blobs) {
    let dir = tempfile::tempdir().unwrap();
    let (here, there) = (open(dir.path()).await, open(dir.path()).await);
    let (staged, digest) = stage(here.as_ref(), "s", b"a layer two nodes serve").await;
    here.commit(&staged, &digest).await.unwrap();
    let written = there.stat(&digest).unwrap().expect("committed through the other handle").modified_ms;
    // Object stores keep times to the second.
    tokio::time::sleep(std::time::Duration::from_millis(2100)).await;
    assert!(here.touch(&digest).await.unwrap(), "a touch of a stored blob finds it");
    let touched = there.stat(&digest).unwrap().unwrap().modified_ms;
    assert!(touched >= written + 1000, "the touch is not seen: written {written}, now {touched}");
}

async fn large_blobs_read_back_whole_and_by_range(open: &impl AsyncFn(&Path) -> Blobs) {
    let dir = tempfile::tempdir().unwrap();
    let blobs = open(dir.path()).await;
    // Past the object store's single-PUT size: a multipart upload of three parts.
    let bytes = patterned(20 * 1024 * 1024 + 12_345);
    let (staged, digest) = stage(blobs.as_ref(), "big", &bytes).await;
    blobs.commit(&staged, &digest).await.unwrap();
    assert_eq!(blobs.size(&digest).await.unwrap(), Some(bytes.len() as u64));
    assert!(read_all(blobs.open(&digest).await.unwrap().unwrap()).await == bytes);
    for (start, len) in [(0u64, 1u64), (8 * 1024 * 1024 - 3, 10), (bytes.len() as u64 - 100, 100), (1_000_000, 5_000_000)] {
        let got = read_range(blobs.open(&digest).await.unwrap().unwrap(), start, len).await;
        assert!(got == bytes[start as usize..(start + len) as usize], "range {start}+{len}");
    }
    assert!(blobs.leftovers().unwrap().is_empty(), "the commit took the staged file");
}

async fn written_blobs_appear_only_once_committed(open: &impl AsyncFn(&Path) -> Blobs) {
    let dir = tempfile::tempdir().unwrap();
    let blobs = open(dir.path()).await;
    let bytes = b"layer bytes, a few of them".repeat(100);
    let (staged, digest) = stage(blobs.as_ref(), "session-1", &bytes).await;
    assert_eq!(digest, Digest::of_bytes(Algorithm::Sha256, &bytes));
    assert!(blobs.size(&digest).await.unwrap().is_none(), "staged is not stored");
    assert!(blobs.open(&digest).await.unwrap().is_none());
    blobs.commit(&staged, &digest).await.unwrap();
    assert_eq!(blobs.size(&digest).await.unwrap(), Some(bytes.len() as u64));
    let stat = blobs.stat(&digest).unwrap().expect("stored");
    assert_eq!(stat.size, bytes.len() as u64);
    assert_eq!(read_all(blobs.open(&digest).await.unwrap().unwrap()).await, bytes);
    assert_eq!(listed(blobs.as_ref()), vec![(digest.clone(), bytes.len() as u64)]);
    assert!(blobs.leftovers().unwrap().is_empty(), "the commit took the staged file");
    let other = Digest::of_bytes(Algorithm::Sha256, b"never written");
    assert!(blobs.size(&other).await.unwrap().is_none());
    assert!(blobs.stat(&other).unwrap().is_none());
    assert!(!blobs.touch(&other).await.unwrap(), "a touch of a missing blob says so");
}

async fn two_writers_of_one_digest_leave_one_blob(open: &impl AsyncFn(&Path) -> Blobs) {
    let dir = tempfile::tempdir().unwrap();
    let blobs = open(dir.path()).await;
    let bytes = b"the same layer pushed twice at once".to_vec();
    let (a, digest) = stage(blobs.as_ref(), "writer-a", &bytes).await;
    let (b, _) = stage(blobs.as_ref(), "writer-b", &bytes).await;
    let (ra, rb) = tokio::join!(blobs.commit(&a, &digest), blobs.commit(&b, &digest));
    ra.unwrap();
    rb.unwrap();
    assert_eq!(listed(blobs.as_ref()), vec![(digest.clone(), bytes.len() as u64)]);
    assert_eq!(read_all(blobs.open(&digest).await.unwrap().unwrap()).await, bytes);
    assert!(blobs.leftovers().unwrap().is_empty(), "neither staged copy is left behind");
}

async fn a_crash_between_write_and_commit_leaves_nothing_visible(open: &impl AsyncFn(&Path) -> Blobs) {
    let dir = tempfile::tempdir().unwrap();
    let bytes = b"written, never committed".to_vec();
    let digest = {
        let blobs = open(dir.path()).await;
        let (_staged, digest) = stage(blobs.as_ref(), "direct-crashed", &bytes).await;
        digest
    };
    // The process is gone; a new one opens the same store.
    let blobs = open(dir.path()).await;
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

async fn removal_respects_pins_and_the_callers_check(open: &impl AsyncFn(&Path) -> Blobs) {
    let dir = tempfile::tempdir().unwrap();
    let blobs = open(dir.path()).await;
    // Several read chunks long, so the read below is under way when the blob goes.
    let bytes = patterned(3 * 1024 * 1024 + 17);
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
    // A read under way when the blob goes finishes.
    let mut reading = blobs.open(&digest).await.unwrap().unwrap().stream(0, bytes.len() as u64);
    let mut read = reading.next().await.unwrap().unwrap().to_vec();
    assert_eq!(blobs.remove_unneeded(&digest, &mut || true).unwrap(), Some(bytes.len() as u64));
    assert!(blobs.size(&digest).await.unwrap().is_none());
    assert!(listed(blobs.as_ref()).is_empty());
    while let Some(chunk) = reading.next().await {
        read.extend_from_slice(&chunk.unwrap());
    }
    assert!(read == bytes);
    assert_eq!(blobs.remove_unneeded(&digest, &mut || true).unwrap(), None, "already gone");
    let mut ran = false;
    assert!(blobs.unless_pinned(&digest, &mut || ran = true));
    assert!(ran);
}

async fn a_quarantined_blob_is_out_of_service(open: &impl AsyncFn(&Path) -> Blobs) {
    let dir = tempfile::tempdir().unwrap();
    let blobs = open(dir.path()).await;
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
    contract(&async |dir: &Path| Arc::new(FsBlobStore::open(dir).unwrap()) as Blobs).await;
}

/// Against a real Garage, one bucket; each case's store under its own prefix (the name of
/// its directory, so reopening the directory reopens the same store).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_s3_store_keeps_the_contract() {
    let garage = chaos_tests::harness::garage::Garage::start().await;
    let settings = crate::config::StorageConfig {
        kind: crate::config::StorageKind::S3,
        bucket: garage.bucket.clone(),
        endpoint: Some(garage.endpoint.clone()),
        region: garage.region.clone(),
        path_style: true,
        access_key_id: Some(garage.access_key_id.clone()),
        secret_access_key: Some(crate::config::Secret::new(garage.secret_access_key.clone())),
        ..Default::default()
    };
    let open = async |dir: &Path| {
        let prefix = dir.file_name().unwrap().to_string_lossy().to_string();
        let settings = crate::config::StorageConfig { prefix, ..settings.clone() };
        Arc::new(S3BlobStore::open(&settings, dir).await.unwrap()) as Blobs
    };
    contract(&open).await;

    // Two nodes of one region: their own data directories, one bucket prefix. What one
    // commits the other serves, and its touch the other's sweep sees.
    let (dir_a, dir_b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let shared = crate::config::StorageConfig { prefix: "region-two-nodes".into(), ..settings.clone() };
    let a = S3BlobStore::open(&shared, dir_a.path()).await.unwrap();
    let b = S3BlobStore::open(&shared, dir_b.path()).await.unwrap();
    let (staged, digest) = stage(&a, "s", b"stored by node a").await;
    a.commit(&staged, &digest).await.unwrap();
    assert_eq!(read_all(b.open(&digest).await.unwrap().unwrap()).await, b"stored by node a");
    let written = b.stat(&digest).unwrap().unwrap().modified_ms;
    tokio::time::sleep(std::time::Duration::from_millis(2100)).await;
    a.touch(&digest).await.unwrap();
    assert!(b.stat(&digest).unwrap().unwrap().modified_ms >= written + 1000, "b does not see a's touch");
    assert_eq!(b.remove_unneeded(&digest, &mut || true).unwrap(), Some(16));
    assert!(a.size(&digest).await.unwrap().is_none());

    // b's sweep decides to remove a blob just as a starts using it again (a's pins do not
    // reach b): a's mark lands after b's check, and the blob stays.
    let (staged, digest) = stage(&a, "r", b"raced by a sweep").await;
    a.commit(&staged, &digest).await.unwrap();
    let a = Arc::new(a);
    let b = Arc::new(b);
    let (racer, raced) = (a.clone(), digest.clone());
    let sweep = b.clone();
    let swept = tokio::task::spawn_blocking(move || {
        let runtime = tokio::runtime::Handle::current();
        sweep.remove_unneeded(&raced, &mut || {
            assert!(runtime.block_on(racer.touch(&raced)).unwrap(), "a finds the blob");
            true
        })
    })
    .await
    .unwrap()
    .unwrap();
    assert_eq!(swept, None, "the sweep put the blob back");
    assert_eq!(read_all(a.open(&digest).await.unwrap().unwrap()).await, b"raced by a sweep");
    assert!(b.leftovers().unwrap().is_empty(), "nothing left aside");
}

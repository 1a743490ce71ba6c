//! Snapshots as files: built by streaming the state machine to disk, sent as the file's
//! bytes, restored in batches, finished after a crash, converted from the old layout.

use super::*;
use crate::meta::command::{BlobRef, PutManifest};
use meridian_replication::Algorithm;
use openraft::{CommittedLeaderId, Membership};
use std::collections::BTreeSet;
use tokio::io::{AsyncReadExt, AsyncSeekExt, AsyncWriteExt};

fn machine(dir: &Path) -> StateMachine {
    let store = Store::open(&dir.join("db")).unwrap();
    StateMachine::new(store, "us".into(), dir)
}

fn put(repo: &str, manifest: &str) -> Command {
    let layer = Digest::of_bytes(Algorithm::Sha256, format!("layer of {manifest}").as_bytes());
    Command::PutManifest(PutManifest {
        repo: repo.into(),
        digest: Digest::of_bytes(Algorithm::Sha256, manifest.as_bytes()),
        media_type: "application/vnd.oci.image.manifest.v1+json".into(),
        body: manifest.into(),
        tags: vec![format!("t-{manifest}")],
        blobs: vec![BlobRef { digest: layer, size: 10, held_here: true }],
        children: vec![],
        referrer: None,
        region: "us".into(),
        at_unix: 0,
        origin: None,
        image: None,
    })
}

/// Applies a membership entry, then one manifest per name, as committed entries.
async fn apply_entries(sm: &mut StateMachine, repo: &str, names: &[&str]) {
    let log_id = |index| LogId::new(CommittedLeaderId::new(1, 1), index);
    let mut entries = vec![Entry {
        log_id: log_id(1),
        payload: EntryPayload::Membership(Membership::new(vec![BTreeSet::from([1])], None)),
    }];
    for (i, name) in names.iter().enumerate() {
        entries.push(Entry { log_id: log_id(2 + i as u64), payload: EntryPayload::Normal(put(repo, name)) });
    }
    sm.apply(entries).await.unwrap();
}

fn dump(sm: &StateMachine) -> Vec<u8> {
    let mut out = Vec::new();
    sm.dump_to(&mut out).unwrap();
    out
}

fn files_in(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> =
        std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
    names.sort();
    names
}

/// What a leader sends: the snapshot file's bytes, from its start.
async fn snapshot_bytes(snapshot: Snapshot) -> Vec<u8> {
    let mut file = *snapshot.snapshot;
    file.seek(std::io::SeekFrom::Start(0)).await.unwrap();
    let mut bytes = Vec::new();
    file.read_to_end(&mut bytes).await.unwrap();
    bytes
}

#[tokio::test]
async fn a_snapshot_is_streamed_to_a_file_and_restored_exactly_in_place_of_the_old_state() {
    let (a_dir, b_dir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let mut leader = machine(a_dir.path());
    let names: Vec<String> = (0..200).map(|i| format!("m{i}")).collect();
    apply_entries(&mut leader, "team/app", &names.iter().map(String::as_str).collect::<Vec<_>>()).await;
    let built = leader.build_snapshot().await.unwrap();
    let meta = built.meta.clone();
    assert_eq!(meta.last_log_id.map(|l| l.index), Some(201));
    let sent = snapshot_bytes(built).await;
    // The file is the dump itself, nothing before or after it.
    assert_eq!(sent, dump(&leader));
    let current = leader.get_current_snapshot().await.unwrap().expect("the built snapshot is current");
    assert_eq!(current.meta, meta);
    assert_eq!(snapshot_bytes(current).await, sent);

    // A follower with a state of its own receives it in chunks, out of order as a retry
    // would send them, and installs it.
    let mut follower = machine(b_dir.path());
    apply_entries(&mut follower, "other/stale", &["s1", "s2"]).await;
    let mut receiving = follower.begin_receiving_snapshot().await.unwrap();
    let half = sent.len() / 2;
    receiving.seek(std::io::SeekFrom::Start(half as u64)).await.unwrap();
    receiving.write_all(&sent[half..]).await.unwrap();
    receiving.seek(std::io::SeekFrom::Start(0)).await.unwrap();
    receiving.write_all(&sent[..half]).await.unwrap();
    follower.install_snapshot(&meta, receiving).await.unwrap();

    assert_eq!(dump(&follower), dump(&leader), "the follower's state is the leader's, the stale one gone");
    let (applied, membership) = follower.applied_state().await.unwrap();
    assert_eq!((applied, membership), (meta.last_log_id, meta.last_membership.clone()));
    assert!(follower.store.get(CF_SM_META, KEY_RESTORING).unwrap().is_none());
    let current = follower.get_current_snapshot().await.unwrap().expect("the installed snapshot is current");
    assert_eq!(current.meta, meta);
    assert_eq!(snapshot_bytes(current).await, sent);
    let files = files_in(&b_dir.path().join("snapshots"));
    assert_eq!(files.len(), 2, "current.json and one data file: {files:?}");
    assert!(files.contains(&"current.json".to_string()));

    // A newer snapshot replaces the data file rather than adding one.
    follower.build_snapshot().await.unwrap();
    assert_eq!(files_in(&b_dir.path().join("snapshots")).len(), 2);
}

#[tokio::test]
async fn a_restore_cut_short_by_a_crash_is_finished_before_the_state_is_read() {
    let dir = tempfile::tempdir().unwrap();
    let mut sm = machine(dir.path());
    apply_entries(&mut sm, "team/app", &["a", "b", "c"]).await;
    let meta = sm.build_snapshot().await.unwrap().meta;
    let whole = dump(&sm);

    // What a crash midway through `restore` leaves: the marker, part of the state, and
    // meta that is not the snapshot's.
    let mut batch = WriteBatch::default();
    let manifests = sm.store.cf(crate::meta::store::CF_SM_MANIFESTS).unwrap();
    batch.delete_range_cf(manifests, [0u8].as_slice(), [0xFFu8; 64].as_slice());
    let meta_cf = sm.store.cf(CF_SM_META).unwrap();
    batch.put_cf(meta_cf, KEY_RESTORING, meta.snapshot_id.as_bytes());
    batch.delete_cf(meta_cf, KEY_LAST_APPLIED);
    sm.store.write(batch).unwrap();
    assert_ne!(dump(&sm), whole);
    drop(sm);

    let mut restarted = machine(dir.path());
    let (applied, _) = restarted.applied_state().await.unwrap();
    assert_eq!(applied, meta.last_log_id);
    assert_eq!(dump(&restarted), whole);
    assert!(restarted.store.get(CF_SM_META, KEY_RESTORING).unwrap().is_none());
}

#[tokio::test]
async fn a_snapshot_in_the_old_single_file_layout_is_converted() {
    let dir = tempfile::tempdir().unwrap();
    let mut sm = machine(dir.path());
    apply_entries(&mut sm, "team/app", &["a", "b"]).await;
    let (last_log_id, last_membership) = sm.applied_state().await.unwrap();
    let meta = SnapshotMeta { last_log_id, last_membership, snapshot_id: "old-1".into() };
    let data = dump(&sm);
    let meta_json = serde_json::to_vec(&meta).unwrap();
    let mut legacy = (meta_json.len() as u32).to_be_bytes().to_vec();
    legacy.extend_from_slice(&meta_json);
    legacy.extend_from_slice(&data);
    std::fs::write(dir.path().join("snapshot"), legacy).unwrap();

    let current = sm.get_current_snapshot().await.unwrap().expect("the old snapshot is current");
    assert_eq!(current.meta, meta);
    assert_eq!(snapshot_bytes(current).await, data);
    assert!(!dir.path().join("snapshot").exists());
}

#[tokio::test]
async fn a_truncated_snapshot_is_refused_before_the_state_is_touched() {
    let (a_dir, b_dir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let mut leader = machine(a_dir.path());
    apply_entries(&mut leader, "team/app", &["a", "b"]).await;
    let built = leader.build_snapshot().await.unwrap();
    let meta = built.meta.clone();
    let sent = snapshot_bytes(built).await;
    let mut follower = machine(b_dir.path());
    apply_entries(&mut follower, "other/own", &["x"]).await;
    let before = dump(&follower);
    let mut receiving = follower.begin_receiving_snapshot().await.unwrap();
    receiving.write_all(&sent[..sent.len() - 3]).await.unwrap();
    let err = follower.install_snapshot(&meta, receiving).await.unwrap_err();
    assert!(err.to_string().contains("truncated"), "{err}");
    assert_eq!(dump(&follower), before);
    assert!(follower.get_current_snapshot().await.unwrap().is_none());
}

/// openraft 0.9 builds a snapshot in a task of its own while entries go on being
/// applied: the dump reads one point-in-time view, never a mix of before and after.
#[tokio::test]
async fn a_snapshot_reads_one_point_in_time_while_entries_are_applied() {
    let dir = tempfile::tempdir().unwrap();
    let mut sm = machine(dir.path());
    apply_entries(&mut sm, "team/app", &["a", "b"]).await;
    let before = dump(&sm);
    let store = sm.store.clone();
    let view = store.db().snapshot();
    let log_id = LogId::new(CommittedLeaderId::new(1, 1), 4);
    sm.apply(vec![Entry { log_id, payload: EntryPayload::Normal(put("team/app", "c")) }]).await.unwrap();
    let mut during = Vec::new();
    sm.dump_view(&view, &mut during).unwrap();
    assert_eq!(during, before, "the view moved with the apply");
    assert_ne!(dump(&sm), before, "the entry was applied");
    drop(view);
    let (meta, _) = sm.write_snapshot().unwrap();
    assert_eq!(meta.last_log_id, Some(log_id));
}

//! `Command::Batch`: a batch applies exactly as its commands would one entry each (each
//! sees what the ones before it wrote), and one cut short by a crash finishes the same.

use super::test_machine::webhook;
use super::*;
use crate::meta::command::{BlobRef, PutManifest};
use crate::meta::events::{Seq, CLUSTER_LANE};
use crate::meta::store::{CF_SM_EVENTS, CF_SM_WEBHOOKS};
use meridian_replication::Algorithm;
use openraft::{CommittedLeaderId, Membership};
use std::collections::BTreeSet;

fn machine(dir: &Path) -> StateMachine {
    let store = Store::open(&dir.join("db")).unwrap();
    StateMachine::new(store, "us".into(), dir)
}

fn log_id(index: u64) -> LogId {
    LogId::new(CommittedLeaderId::new(1, 1), index)
}

fn put(repo: &str, manifest: &str, tag: &str, layer: &str) -> Command {
    Command::PutManifest(PutManifest {
        repo: repo.into(),
        digest: Digest::of_bytes(Algorithm::Sha256, manifest.as_bytes()),
        media_type: "application/vnd.oci.image.manifest.v1+json".into(),
        body: manifest.into(),
        tags: vec![tag.into()],
        blobs: vec![BlobRef { digest: Digest::of_bytes(Algorithm::Sha256, layer.as_bytes()), size: 10, held_here: true }],
        children: vec![],
        referrer: None,
        region: "us".into(),
        at_unix: 1_700_000_000,
        origin: None,
        image: None,
    })
}

/// Commands that depend on each other: the webhook must see the pushes after it, the
/// second push shares the first one's layer (a reference count read and written twice),
/// the tag moves, the delete finds the manifest the first push wrote.
fn commands() -> Vec<Command> {
    vec![
        Command::PutWebhook { webhook: webhook("ci", &["push", "delete"]), create_only: true },
        put("app/a", "m1", "latest", "shared"),
        put("app/a", "m2", "latest", "shared"),
        put("app/b", "m3", "v1", "shared"),
        Command::DeleteManifest {
            repo: "app/a".into(),
            digest: Digest::of_bytes(Algorithm::Sha256, b"m1"),
            at_unix: 1_700_000_001,
            trash_until: None,
            only_if_untagged: false,
            origin: None,
        },
        // Refused by the state the commands before it left: the webhook exists.
        Command::PutWebhook { webhook: webhook("ci", &["push"]), create_only: true },
    ]
}

fn membership() -> Entry {
    Entry { log_id: log_id(1), payload: EntryPayload::Membership(Membership::new(vec![BTreeSet::from([1])], None)) }
}

/// Every state machine family's rows, except what is numbered by log index (`sm_meta`'s
/// `last_applied`, the events' keys, a new webhook's starting point), which is compared
/// separately.
fn rows(sm: &StateMachine) -> Vec<(&'static str, Vec<u8>, Vec<u8>)> {
    let mut out = Vec::new();
    for cf in STATE_MACHINE_CFS {
        if cf == CF_SM_META || cf == CF_SM_EVENTS || cf == CF_SM_WEBHOOKS {
            continue;
        }
        let handle = sm.store.cf(cf).unwrap();
        for item in sm.store.db().iterator_cf(handle, rocksdb::IteratorMode::Start) {
            let (k, v) = item.unwrap();
            out.push((cf, k.to_vec(), v.to_vec()));
        }
    }
    out
}

fn events(sm: &StateMachine) -> Vec<(Seq, crate::meta::events::EventRecord)> {
    sm.store.events_after(CLUSTER_LANE, Seq::default(), usize::MAX).unwrap()
}

fn dump(sm: &StateMachine) -> Vec<u8> {
    let mut out = Vec::new();
    sm.dump_to(&mut out).unwrap();
    out
}

#[tokio::test]
async fn a_batch_applies_like_its_commands_one_entry_each() {
    let (one_dir, batch_dir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let (mut one, mut batched) = (machine(one_dir.path()), machine(batch_dir.path()));

    let mut entries = vec![membership()];
    for (i, cmd) in commands().into_iter().enumerate() {
        entries.push(Entry { log_id: log_id(2 + i as u64), payload: EntryPayload::Normal(cmd) });
    }
    let singles: Vec<CommandResult> = one.apply(entries).await.unwrap().into_iter().skip(1).collect();
    let results = batched
        .apply(vec![membership(), Entry { log_id: log_id(2), payload: EntryPayload::Normal(Command::Batch(commands())) }])
        .await
        .unwrap();

    assert_eq!(results[1], CommandResult::Batch(singles.clone()));
    assert_eq!(singles.last(), Some(&CommandResult::AlreadyExists), "the last command saw the first one's webhook");
    assert_eq!(rows(&batched), rows(&one));
    // The same events in the same order; in the batch, numbered within its one entry.
    let (ev_one, ev_batched) = (events(&one), events(&batched));
    assert_eq!(ev_batched.iter().map(|e| &e.1).collect::<Vec<_>>(), ev_one.iter().map(|e| &e.1).collect::<Vec<_>>());
    assert_eq!(ev_batched.iter().map(|e| e.0).collect::<Vec<_>>(), (0..ev_one.len() as u32).map(|i| Seq::new(2, i)).collect::<Vec<_>>());
    assert!(ev_one.len() >= 4, "pushes and the delete made events: {ev_one:?}");
    // The webhook created first in the batch gets the batch's pushes, as it would get the
    // pushes of the entries after its own.
    let mut hooks = Vec::new();
    for (sm, events) in [(&one, &ev_one), (&batched, &ev_batched)] {
        let mut hook = sm.store.webhook("ci").unwrap().expect("webhook");
        assert!(hook.since < events[0].0, "webhook starts after {:?}, the first push is {:?}", hook.since, events[0].0);
        hook.since = Seq::default();
        hooks.push(hook);
    }
    assert_eq!(hooks[0], hooks[1], "the same webhook but for where it starts");
    assert_eq!(batched.applied_state().await.unwrap().0, Some(log_id(2)));
}

#[tokio::test]
async fn a_batch_cut_short_by_a_crash_finishes_as_if_whole() {
    let (whole_dir, cut_dir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let (mut whole, mut cut) = (machine(whole_dir.path()), machine(cut_dir.path()));
    let entry = || Entry { log_id: log_id(2), payload: EntryPayload::Normal(Command::Batch(commands())) };
    whole.apply(vec![membership(), entry()]).await.unwrap();

    cut.apply(vec![membership()]).await.unwrap();
    let partial = cut.apply_batch_steps(log_id(2), &commands(), 3).await.unwrap();
    assert!(matches!(&partial, CommandResult::Batch(r) if r.len() == 3), "{partial:?}");
    // The crash: the entry is not applied yet, so openraft applies it again on restart.
    drop(cut);
    let mut cut = machine(cut_dir.path());
    assert_eq!(cut.applied_state().await.unwrap().0, Some(log_id(1)));
    let results = cut.apply(vec![entry()]).await.unwrap();
    let CommandResult::Batch(results) = &results[0] else { panic!("{results:?}") };
    assert_eq!(results.len(), commands().len());
    assert_eq!(results[..3], [CommandResult::Applied, CommandResult::Applied, CommandResult::Applied]);

    assert_eq!(dump(&cut), dump(&whole), "same rows, same event numbers, no progress record left");
    assert_eq!(cut.applied_state().await.unwrap().0, Some(log_id(2)));
}

/// A webhook created in the middle of a batch gets the events after it and none before,
/// as it would between entries.
#[tokio::test]
async fn a_webhook_created_mid_batch_starts_where_it_stands() {
    let dir = tempfile::tempdir().unwrap();
    let mut sm = machine(dir.path());
    let cmds = vec![
        Command::PutWebhook { webhook: webhook("early", &["push"]), create_only: true },
        put("app/a", "m1", "v1", "l1"),
        Command::PutWebhook { webhook: webhook("late", &["push"]), create_only: true },
        put("app/a", "m2", "v2", "l2"),
    ];
    sm.apply(vec![membership(), Entry { log_id: log_id(2), payload: EntryPayload::Normal(Command::Batch(cmds)) }]).await.unwrap();
    let ev = events(&sm);
    assert_eq!(ev.len(), 2, "{ev:?}");
    let since = |name: &str| sm.store.webhook(name).unwrap().expect("webhook").since;
    assert!(since("early") < ev[0].0, "the first webhook gets the first push");
    assert!(since("late") >= ev[0].0 && since("late") < ev[1].0, "the second gets only the push after it");
}

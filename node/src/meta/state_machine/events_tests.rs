//! Events at apply time: written in the entry's own batch, numbered by the log, only for
//! changes that happened and only when a webhook wants them; dropped once every webhook
//! is done with them.

use super::test_machine::{digest, webhook, Machine};
use super::*;
use crate::meta::command::{BlobRef, PutManifest};
use crate::meta::events::{DeliveryStatus, DeliveryUpdate, EventRecord, ParkedRange, Seq, CLUSTER_LANE};

fn put(repo: &str, manifest: &str, tags: &[&str]) -> Command {
    Command::PutManifest(PutManifest {
        repo: repo.into(),
        digest: digest(manifest),
        media_type: "application/vnd.oci.image.manifest.v1+json".into(),
        body: manifest.into(),
        tags: tags.iter().map(|t| t.to_string()).collect(),
        blobs: vec![BlobRef { digest: digest(&format!("layer {manifest}")), size: 100, held_here: true }],
        children: vec![],
        referrer: None,
        region: "us".into(),
        at_unix: 1000,
        origin: None,
        image: None,
    })
}

fn ack(name: &str, through: Seq) -> Command {
    let update = DeliveryUpdate { name: name.into(), through: Some(through), delivered: 1, status: None };
    Command::AckEvents { lane: CLUSTER_LANE.into(), updates: vec![update] }
}

#[test]
fn with_no_webhook_nothing_is_recorded() {
    let mut m = Machine::new();
    m.apply(put("r", "a", &["v1"]));
    assert!(m.events().is_empty());
}

#[test]
fn a_push_records_one_event_per_tag_numbered_by_its_entry() {
    let mut m = Machine::new();
    m.apply(Command::PutWebhook { webhook: webhook("ci", &["push"]), create_only: true });
    m.apply(put("r", "a", &["v1", "latest"]));
    m.apply(put("r", "b", &[]));
    let events = m.events();
    let seqs: Vec<Seq> = events.iter().map(|(s, _)| *s).collect();
    assert_eq!(seqs, [Seq::new(2, 0), Seq::new(2, 1), Seq::new(3, 0)]);
    let tags: Vec<Option<String>> = events.iter().map(|(_, e)| e.tag.clone()).collect();
    assert_eq!(tags, [Some("v1".to_string()), Some("latest".to_string()), None]);
    assert!(events.iter().all(|(_, e)| e.action == "push" && e.repo == "r" && e.region == "us" && e.at_ms == 1_000_000));
    assert_eq!(events[0].1.size, 1);
}

#[test]
fn refused_changes_and_unwanted_actions_record_nothing() {
    let mut m = Machine::new();
    m.apply(Command::PutWebhook { webhook: webhook("ci", &["push"]), create_only: true });
    m.apply(Command::SetQuota { pattern: "small/*".into(), limit_bytes: 10 });
    assert!(matches!(m.apply(put("small/x", "a", &["v1"])), CommandResult::QuotaExceeded(_)));
    let mut index = put("r", "idx", &[]);
    if let Command::PutManifest(p) = &mut index {
        p.children = vec![digest("missing")];
    }
    assert!(matches!(m.apply(index), CommandResult::ManifestBlobUnknown(_)));
    assert!(m.events().is_empty(), "a refused push has no event");
    // Deletes are not what this webhook asked for.
    m.apply(put("r", "a", &["v1"]));
    m.apply(Command::DeleteTag { repo: "r".into(), tag: "v1".into(), if_digest: None, origin: None });
    assert_eq!(m.events().len(), 1);
    // A conditional delete that finds the tag moved changes nothing, so says nothing.
    m.apply(Command::PutWebhook { webhook: webhook("all", &["push", "delete"]), create_only: true });
    m.apply(put("r", "b", &["v2"]));
    let before = m.events().len();
    let moved = Command::DeleteTag { repo: "r".into(), tag: "v2".into(), if_digest: Some(digest("a")), origin: None };
    assert_eq!(m.apply(moved), CommandResult::StillNeeded);
    assert_eq!(m.events().len(), before);
    let gone = Command::DeleteManifest { repo: "r".into(), digest: digest("b"), at_unix: 5, trash_until: None, only_if_untagged: false, origin: None };
    assert_eq!(m.apply(gone), CommandResult::Applied);
    let last = m.events().pop().unwrap().1;
    assert_eq!((last.action.as_str(), last.digest.clone()), ("delete", digest("b").to_string()));
}

#[test]
fn events_go_once_every_webhook_is_past_them_and_parked_ones_stay() {
    let mut m = Machine::new();
    m.apply(Command::PutWebhook { webhook: webhook("a", &["push"]), create_only: true });
    m.apply(Command::PutWebhook { webhook: webhook("b", &["push"]), create_only: true });
    for name in ["x", "y", "z"] {
        m.apply(put("r", name, &["t"]));
    }
    let seqs: Vec<Seq> = m.events().iter().map(|(s, _)| *s).collect();
    assert_eq!(seqs.len(), 3);
    m.apply(ack("a", seqs[2]));
    assert_eq!(m.events().len(), 3, "b still needs them");
    m.apply(ack("b", seqs[0]));
    assert_eq!(m.events().len(), 2);
    // An older report from a deposed deliverer moves nothing back.
    m.apply(ack("a", seqs[0]));
    assert_eq!(m.sm.store.event_cursor(&m.sm.store.webhook("a").unwrap().unwrap(), CLUSTER_LANE).unwrap(), seqs[2]);
    // b parks the rest: they stay until re-sent.
    let range = ParkedRange { through: seqs[2], attempts: 3, last_status: 500, last_error: "500".into(), parked_unix: 1, resend: false };
    m.apply(Command::ParkEvents { name: "b".into(), lane: CLUSTER_LANE.into(), from: seqs[1], range });
    assert_eq!(m.events().len(), 2);
    assert_eq!(m.sm.store.parked("b").unwrap().len(), 1);
    m.apply(Command::ResendParked { name: "b".into(), only: None });
    assert!(m.sm.store.parked("b").unwrap()[0].range.resend);
    let done = DeliveryStatus::default();
    m.apply(Command::ParkedDone { name: "b".into(), lane: CLUSTER_LANE.into(), from: seqs[1], delivered: true, status: done });
    assert!(m.sm.store.parked("b").unwrap().is_empty());
    assert!(m.events().is_empty(), "nothing left that a webhook needs");
}

#[test]
fn a_new_or_re_enabled_webhook_starts_after_its_entry_and_removal_frees_the_outbox() {
    let mut m = Machine::new();
    m.apply(Command::PutWebhook { webhook: webhook("a", &["push"]), create_only: true });
    m.apply(put("r", "x", &["t"]));
    m.apply(Command::PutWebhook { webhook: webhook("late", &["push"]), create_only: true });
    let late = m.sm.store.webhook("late").unwrap().unwrap();
    assert_eq!(m.sm.store.event_cursor(&late, CLUSTER_LANE).unwrap(), Seq::new(3, 0), "the push before it is not for it");
    assert_eq!(
        m.apply(Command::PutWebhook { webhook: webhook("late", &["push"]), create_only: true }),
        CommandResult::AlreadyExists
    );
    assert_eq!(m.apply(Command::PutWebhook { webhook: webhook("nope", &["push"]), create_only: false }), CommandResult::NotFound);
    let mut off = webhook("a", &["push"]);
    off.enabled = false;
    m.apply(Command::PutWebhook { webhook: off, create_only: false });
    assert!(m.events().is_empty(), "a disabled webhook holds nothing, and the one left is past the event");
    m.apply(put("r", "y", &["t"]));
    assert_eq!(m.events().len(), 1);
    assert_eq!(m.apply(Command::RemoveWebhook { name: "late".into() }), CommandResult::Applied);
    assert!(m.events().is_empty());
    assert_eq!(m.apply(Command::RemoveWebhook { name: "late".into() }), CommandResult::NotFound);
}

#[test]
fn the_secret_never_shows_in_debug_output() {
    let mut hook = webhook("a", &["push"]);
    hook.secret = Some(crate::config::Secret::new("hunter2"));
    hook.headers = vec![("Authorization".into(), crate::config::Secret::new("Bearer tok"))];
    let text = format!("{:?}", Command::PutWebhook { webhook: hook, create_only: true });
    assert!(!text.contains("hunter2") && !text.contains("Bearer tok"), "{text}");
}

/// Two regions, us and eu, in the membership.
fn two_regions(m: &Machine) {
    use crate::meta::types::{NodeInfo, StoredMembership};
    let node = |region: &str| NodeInfo { region: region.into(), ..NodeInfo::default() };
    let nodes = std::collections::BTreeMap::from([(1u64, node("us")), (2u64, node("eu"))]);
    let membership = openraft::Membership::new(vec![std::collections::BTreeSet::from([1, 2])], nodes);
    let stored = StoredMembership::new(None, membership);
    m.sm.store.db().put_cf(m.sm.store.cf(CF_SM_META).unwrap(), KEY_MEMBERSHIP, encode_json(&stored)).unwrap();
}

fn replicated_in(m: &Machine, region: &str) -> Vec<EventRecord> {
    m.sm.store.events_after(region, Seq::default(), usize::MAX).unwrap().into_iter().map(|(_, e)| e).collect()
}

#[test]
fn an_index_is_complete_in_a_region_once_its_last_child_blob_lands_and_only_once() {
    let mut m = Machine::new();
    two_regions(&m);
    m.apply(Command::PutWebhook { webhook: webhook("cd", &["replicated"]), create_only: true });
    m.apply(put("r", "amd", &[]));
    m.apply(put("r", "arm", &[]));
    // Complete in us (the pushing region holds every blob) at once.
    assert_eq!(replicated_in(&m, "us").len(), 2);
    let mut index = put("r", "idx", &["v1"]);
    if let Command::PutManifest(p) = &mut index {
        p.blobs.clear();
        p.children = vec![digest("amd"), digest("arm")];
    }
    m.apply(index);
    assert_eq!(replicated_in(&m, "us").len(), 3);
    assert!(replicated_in(&m, "eu").is_empty());
    let land = |blobs: &[&str]| Command::AddReplicas {
        region: "eu".into(),
        digests: blobs.iter().map(|b| digest(&format!("layer {b}"))).collect(),
        at_ms: 7,
    };
    m.apply(land(&["amd"]));
    let eu: Vec<String> = replicated_in(&m, "eu").iter().map(|e| e.digest.clone()).collect();
    assert_eq!(eu, [digest("amd").to_string()], "the index still lacks arm's blob");
    // arm's blob landing twice (one entry, then again) completes arm and the index once.
    m.apply(land(&["arm", "arm"]));
    m.apply(land(&["arm"]));
    let eu = replicated_in(&m, "eu");
    let digests: Vec<String> = eu.iter().map(|e| e.digest.clone()).collect();
    assert_eq!(digests.len(), 3, "{digests:?}");
    assert_eq!(digests[0], digest("amd").to_string());
    let last_two: std::collections::BTreeSet<&String> = digests[1..].iter().collect();
    assert_eq!(last_two, [digest("arm").to_string(), digest("idx").to_string()].iter().collect());
    assert!(eu.iter().all(|e| e.region == "eu" && e.push_region.as_deref() == Some("us") && e.at_ms == 7));
    let idx = eu.iter().find(|e| e.digest == digest("idx").to_string()).unwrap();
    assert_eq!(idx.tag.as_deref(), Some("v1"));
}

#[test]
fn a_deleted_image_waits_for_nothing() {
    let mut m = Machine::new();
    two_regions(&m);
    m.apply(Command::PutWebhook { webhook: webhook("cd", &["replicated"]), create_only: true });
    m.apply(put("r", "a", &["v1"]));
    let gone = Command::DeleteManifest { repo: "r".into(), digest: digest("a"), at_unix: 5, trash_until: None, only_if_untagged: false, origin: None };
    m.apply(gone);
    m.apply(Command::AddReplicas { region: "eu".into(), digests: vec![digest("layer a")], at_ms: 1 });
    assert!(replicated_in(&m, "eu").is_empty());
    assert!(m.sm.store.scan_prefix(crate::meta::store::CF_SM_COMPLETION, b"", None, 10).unwrap().is_empty());
}

#[test]
fn an_image_waiting_in_a_region_completes_when_a_push_there_brings_its_blob() {
    let mut m = Machine::new();
    two_regions(&m);
    m.apply(Command::PutWebhook { webhook: webhook("cd", &["replicated"]), create_only: true });
    m.apply(put("r", "a", &["v1"]));
    assert!(replicated_in(&m, "eu").is_empty());
    // Another image pushed in eu uploads the same layer: eu now holds it, and no
    // AddReplicas will ever come for it.
    let mut same_layer = put("r2", "b", &[]);
    if let Command::PutManifest(p) = &mut same_layer {
        p.region = "eu".into();
        p.blobs = vec![BlobRef { digest: digest("layer a"), size: 100, held_here: true }];
    }
    m.apply(same_layer);
    let eu: Vec<String> = replicated_in(&m, "eu").iter().map(|e| e.digest.clone()).collect();
    assert!(eu.contains(&digest("a").to_string()), "{eu:?}");
    assert!(eu.contains(&digest("b").to_string()), "{eu:?}");
}

#[test]
fn parked_ranges_past_their_keep_go_with_their_events() {
    let mut m = Machine::new();
    m.apply(Command::PutWebhook { webhook: webhook("a", &["push"]), create_only: true });
    for name in ["x", "y"] {
        m.apply(put("r", name, &["t"]));
    }
    let seqs: Vec<Seq> = m.events().iter().map(|(s, _)| *s).collect();
    let range = ParkedRange { through: seqs[0], attempts: 3, last_status: 500, last_error: "boom".into(), parked_unix: 100, resend: false };
    m.apply(Command::ParkEvents { name: "a".into(), lane: CLUSTER_LANE.into(), from: seqs[0], range });
    m.apply(ack("a", seqs[1]));
    assert_eq!(m.events().len(), 2, "the parked range holds the outbox from its first event");
    m.apply(Command::ExpireParked { before_unix: 100 });
    assert_eq!(m.sm.store.parked("a").unwrap().len(), 1, "parked at 100 is not parked before 100");
    assert_eq!(m.sm.store.oldest_parked_unix().unwrap(), Some(100));
    m.apply(Command::ExpireParked { before_unix: 101 });
    assert!(m.sm.store.parked("a").unwrap().is_empty());
    assert!(m.events().is_empty(), "its events go with it");
    assert_eq!(m.sm.store.oldest_parked_unix().unwrap(), None);
}

#[test]
fn images_waiting_in_a_region_that_left_wait_for_nothing() {
    use crate::meta::types::{NodeInfo, StoredMembership};
    let mut m = Machine::new();
    two_regions(&m);
    m.apply(Command::PutWebhook { webhook: webhook("cd", &["replicated"]), create_only: true });
    m.apply(put("r", "a", &["v1"]));
    let waiting = |m: &Machine| m.sm.store.scan_prefix(crate::meta::store::CF_SM_COMPLETION, b"", None, 10).unwrap().len();
    assert_eq!(waiting(&m), 2, "eu waits for the image, and for its blob");
    // eu leaves: only us in the membership entry.
    let nodes = std::collections::BTreeMap::from([(1u64, NodeInfo { region: "us".into(), ..NodeInfo::default() })]);
    let only_us = StoredMembership::new(None, openraft::Membership::new(vec![std::collections::BTreeSet::from([1])], nodes));
    let mut batch = WriteBatch::default();
    m.sm.apply_membership(&mut batch, only_us).unwrap();
    m.sm.store.write(batch).unwrap();
    assert_eq!(waiting(&m), 0);
    m.apply(Command::AddReplicas { region: "eu".into(), digests: vec![digest("layer a")], at_ms: 1 });
    assert!(replicated_in(&m, "eu").is_empty(), "a region that left says nothing");
}

//! Base images at apply time: what each image was built on (annotations, else shared
//! layers), and the `base_updated` events when a base's tag moves.

use super::test_machine::{digest, webhook, Machine};
use super::*;
use crate::meta::command::{BlobRef, ImageShape, PutManifest};
use crate::meta::events::EventRecord;

/// An image manifest of `repo` named by `seed`, with `layers` (seeds of layer blobs).
fn image(repo: &str, seed: &str, layers: &[&str], tags: &[&str], base_digest: Option<&Digest>) -> Command {
    let layers: Vec<Digest> = layers.iter().map(|l| digest(l)).collect();
    let mut blobs = vec![BlobRef { digest: digest(&format!("config {seed}")), size: 10, held_here: true }];
    blobs.extend(layers.iter().map(|l| BlobRef { digest: l.clone(), size: 100, held_here: true }));
    Command::PutManifest(PutManifest {
        repo: repo.into(),
        digest: digest(seed),
        media_type: "application/vnd.oci.image.manifest.v1+json".into(),
        body: seed.into(),
        tags: tags.iter().map(|t| t.to_string()).collect(),
        blobs,
        children: vec![],
        referrer: None,
        region: "us".into(),
        at_unix: 1000,
        origin: None,
        image: Some(ImageShape { layers, base_digest: base_digest.map(|d| d.to_string()), base_name: None }),
    })
}

/// An index of `repo` over `children` (seeds of manifests already pushed there).
fn index(repo: &str, seed: &str, children: &[&str], tags: &[&str]) -> Command {
    Command::PutManifest(PutManifest {
        repo: repo.into(),
        digest: digest(seed),
        media_type: "application/vnd.oci.image.index.v1+json".into(),
        body: seed.into(),
        tags: tags.iter().map(|t| t.to_string()).collect(),
        blobs: vec![],
        children: children.iter().map(|c| digest(c)).collect(),
        referrer: None,
        region: "us".into(),
        at_unix: 1000,
        origin: None,
        image: Some(ImageShape::default()),
    })
}

fn base_events(m: &Machine) -> Vec<EventRecord> {
    m.events().into_iter().map(|(_, e)| e).filter(|e| e.action == "base_updated").collect()
}

fn names(deps: &[crate::meta::bases::Dependent]) -> Vec<(String, bool)> {
    let mut out: Vec<(String, bool)> = deps.iter().map(|d| (format!("{}:{}", d.repo, d.tags.join(",")), d.outdated)).collect();
    out.sort();
    out
}

#[test]
fn moving_a_base_tag_tells_each_image_built_on_it_once() {
    let mut m = Machine::new();
    m.apply(Command::PutWebhook { webhook: webhook("ci", &["base_updated"]), create_only: true });
    m.apply(image("base/alpine", "alpine-1", &["l1", "l2"], &["1"], None));
    // One names its base; the other only shares its layers.
    m.apply(image("app/a", "a-1", &["l1", "l2", "a"], &["1"], Some(&digest("alpine-1"))));
    m.apply(image("app/b", "b-1", &["l1", "l2", "b"], &["1"], None));
    // Neither a stranger nor the base's own next build is built on it.
    m.apply(image("other/x", "x-1", &["l9", "l1", "l2"], &["1"], None));
    m.apply(image("base/alpine", "alpine-edge", &["l1", "l2", "edge"], &["edge"], None));
    let deps = m.sm.store.dependents("base/alpine", &digest("alpine-1").to_string(), Some("1")).unwrap();
    assert_eq!(names(&deps), [("app/a:1".to_string(), false), ("app/b:1".to_string(), false)]);
    let via: Vec<&str> = deps.iter().map(|d| d.via.as_str()).collect();
    assert!(via.contains(&"annotation") && via.contains(&"layers"), "{via:?}");
    assert!(base_events(&m).is_empty(), "nothing moved yet");

    m.apply(image("base/alpine", "alpine-1b", &["l1x", "l2x"], &["1"], None));
    let events = base_events(&m);
    let mut told: Vec<String> = events.iter().map(|e| format!("{}:{}", e.repo, e.tag.clone().unwrap_or_default())).collect();
    told.sort();
    assert_eq!(told, ["app/a:1", "app/b:1"]);
    for e in &events {
        let base = e.base.as_ref().unwrap();
        assert_eq!((base.repository.as_str(), base.tag.as_str()), ("base/alpine", "1"));
        assert_eq!(base.old_digest, digest("alpine-1").to_string());
        assert_eq!(base.new_digest, digest("alpine-1b").to_string());
    }
    // The push's own event (none wanted here) and then the fan-out, in one entry.
    let after = m.sm.store.dependents("base/alpine", &digest("alpine-1b").to_string(), Some("1")).unwrap();
    assert_eq!(names(&after), [("app/a:1".to_string(), true), ("app/b:1".to_string(), true)]);
    // Pushing the same digest again under the tag moves nothing.
    m.apply(image("base/alpine", "alpine-1b", &["l1x", "l2x"], &["1"], None));
    assert_eq!(base_events(&m).len(), 2);
}

#[test]
fn an_index_is_told_once_not_once_per_platform() {
    let mut m = Machine::new();
    m.apply(Command::PutWebhook { webhook: webhook("ci", &["base_updated"]), create_only: true });
    m.apply(image("base/os", "os-amd", &["amd1"], &[], None));
    m.apply(image("base/os", "os-arm", &["arm1"], &[], None));
    m.apply(index("base/os", "os-1", &["os-amd", "os-arm"], &["1"]));
    m.apply(image("app/multi", "m-amd", &["amd1", "m-amd-top"], &[], None));
    m.apply(image("app/multi", "m-arm", &["arm1", "m-arm-top"], &[], None));
    m.apply(index("app/multi", "m-1", &["m-amd", "m-arm"], &["1", "latest"]));
    let lineage = m.sm.store.lineage("app/multi", &digest("m-1").to_string()).unwrap().unwrap();
    assert_eq!(lineage.via, "platforms");
    assert_eq!(lineage.bases.len(), 2);
    let deps = m.sm.store.dependents("base/os", &digest("os-1").to_string(), None).unwrap();
    assert_eq!(names(&deps), [("app/multi:1,latest".to_string(), false)], "the platform manifests are not listed apart");

    m.apply(image("base/os", "os-amd-2", &["amd2"], &[], None));
    m.apply(index("base/os", "os-2", &["os-amd-2"], &["1"]));
    let events = base_events(&m);
    assert_eq!(events.len(), 1, "{events:?}");
    assert_eq!((events[0].repo.as_str(), events[0].digest.clone()), ("app/multi", digest("m-1").to_string()));
    assert_eq!(events[0].tag.as_deref(), Some("1"));
    assert_eq!(events[0].media_type, "application/vnd.oci.image.index.v1+json");
}

#[test]
fn untagged_and_deleted_dependents_are_not_told() {
    let mut m = Machine::new();
    m.apply(Command::PutWebhook { webhook: webhook("ci", &["base_updated"]), create_only: true });
    m.apply(image("base/alpine", "alpine-1", &["l1"], &["1"], None));
    m.apply(image("app/old", "old-build", &["l1", "o"], &[], None));
    m.apply(image("app/gone", "gone-1", &["l1", "g"], &["1"], None));
    m.apply(image("app/trashed", "t-1", &["l1", "t"], &["1"], None));
    let gone = Command::DeleteManifest { repo: "app/gone".into(), digest: digest("gone-1"), at_unix: 5, trash_until: None, only_if_untagged: false, origin: None };
    assert_eq!(m.apply(gone), CommandResult::Applied);
    let trashed = Command::DeleteManifest { repo: "app/trashed".into(), digest: digest("t-1"), at_unix: 5, trash_until: Some(99), only_if_untagged: false, origin: None };
    assert_eq!(m.apply(trashed), CommandResult::Applied);
    let deps = m.sm.store.dependents("base/alpine", &digest("alpine-1").to_string(), Some("1")).unwrap();
    assert_eq!(names(&deps), [("app/old:".to_string(), false)]);
    assert!(m.sm.store.lineage("app/gone", &digest("gone-1").to_string()).unwrap().is_none(), "a deleted image's rows go");
    assert!(m.sm.store.lineage("app/trashed", &digest("t-1").to_string()).unwrap().is_some(), "a trashed one's stay, to be restored");
    m.apply(image("base/alpine", "alpine-2", &["l2"], &["1"], None));
    assert!(base_events(&m).is_empty(), "{:?}", base_events(&m));
    // Restored with its tag, it is built on the old digest: listed as outdated.
    let restore = Command::RestoreTrash { repo: "app/trashed".into(), digest: digest("t-1"), tag: Some("1".into()), at_unix: 6, origin: None };
    assert_eq!(m.apply(restore), CommandResult::Applied);
    let deps = m.sm.store.dependents("base/alpine", &digest("alpine-2").to_string(), Some("1")).unwrap();
    assert_eq!(names(&deps), [("app/old:".to_string(), true), ("app/trashed:1".to_string(), true)]);
}

#[test]
fn a_base_name_annotation_resolves_against_the_tags() {
    let mut m = Machine::new();
    m.apply(image("base/alpine", "alpine-1", &["l1"], &["3.20"], None));
    let mut named = image("app/n", "n-1", &["own-layer"], &["1"], None);
    if let Command::PutManifest(p) = &mut named {
        p.image.as_mut().unwrap().base_name = Some("registry.example.com:5000/base/alpine:3.20".into());
    }
    m.apply(named);
    let lineage = m.sm.store.lineage("app/n", &digest("n-1").to_string()).unwrap().unwrap();
    assert_eq!((lineage.bases, lineage.via.as_str()), (vec![digest("alpine-1").to_string()], "annotation"));
    // podman writes the digest its own storage gave the base, which the registry never
    // saw: the named repository's image with a layer prefix wins, even after the tag moved.
    m.apply(image("base/alpine", "alpine-2", &["l2"], &["3.20"], None));
    let mut podman = image("app/p", "p-1", &["l1", "p"], &["1"], Some(&digest("local storage's digest")));
    if let Command::PutManifest(p) = &mut podman {
        p.image.as_mut().unwrap().base_name = Some("127.0.0.1:5000/base/alpine:3.20".into());
    }
    m.apply(podman);
    let lineage = m.sm.store.lineage("app/p", &digest("p-1").to_string()).unwrap().unwrap();
    assert_eq!((lineage.bases, lineage.via.as_str()), (vec![digest("alpine-1").to_string()], "annotation"));
    // Nothing known by that name and no shared layer: no base.
    let mut unknown = image("app/u", "u-1", &["u-layer"], &["1"], None);
    if let Command::PutManifest(p) = &mut unknown {
        p.image.as_mut().unwrap().base_name = Some("docker.io/library/debian:12".into());
    }
    m.apply(unknown);
    let lineage = m.sm.store.lineage("app/u", &digest("u-1").to_string()).unwrap().unwrap();
    assert!(lineage.bases.is_empty() && lineage.via.is_empty(), "{lineage:?}");
}

#[test]
fn a_rebuild_with_the_same_layers_still_finds_the_base_and_trashed_images_are_no_base() {
    let mut m = Machine::new();
    m.apply(Command::PutWebhook { webhook: webhook("ci", &["base_updated"]), create_only: true });
    m.apply(image("base/alpine", "alpine-1", &["l1"], &["1", "latest"], None));
    m.apply(image("app/a", "a-1", &["l1", "a"], &["1"], None));
    // Only the config changed: its full chain is its own repository's earlier build.
    m.apply(image("app/a", "a-1-relabelled", &["l1", "a"], &["1"], None));
    let lineage = m.sm.store.lineage("app/a", &digest("a-1-relabelled").to_string()).unwrap().unwrap();
    assert_eq!(lineage.bases, [digest("alpine-1").to_string()]);
    // A trashed image is nobody's base.
    m.apply(image("mid/python", "py-1", &["l1", "py"], &["1"], None));
    let trashed = Command::DeleteManifest { repo: "mid/python".into(), digest: digest("py-1"), at_unix: 5, trash_until: Some(99), only_if_untagged: false, origin: None };
    assert_eq!(m.apply(trashed), CommandResult::Applied);
    m.apply(image("app/p", "p-1", &["l1", "py", "p"], &["1"], None));
    let lineage = m.sm.store.lineage("app/p", &digest("p-1").to_string()).unwrap().unwrap();
    assert_eq!(lineage.bases, [digest("alpine-1").to_string()]);
    // Two tags of one push leave the same digest: each dependent is told once.
    m.apply(image("base/alpine", "alpine-2", &["l2"], &["1", "latest"], None));
    let mut told: Vec<String> = base_events(&m).iter().map(|e| e.repo.clone()).collect();
    told.sort();
    assert_eq!(told, ["app/a", "app/p"], "{:?}", base_events(&m));
}

//! Retention policies and soft delete, through the registry API and `meridian admin
//! retention|trash|gc`, on three real processes:
//!
//! - each keep rule (tag globs, keep-last, pulled-within from batched pull times), tags
//!   that go taking their manifest along, untagged manifests aging out, an index keeping
//!   its children, a signature following its subject; a dry run lists exactly that and
//!   changes nothing; every region ends the same;
//! - with soft delete on, a deleted manifest leaves the API but its blobs survive
//!   collection; restoring it brings it back byte-identical in every region; once it
//!   expires (or is purged) it goes for good and its blobs are collected.

mod common;

use common::cluster::{Cluster, ClusterOptions};
use common::oci::{self, Descriptor, OCI_INDEX, OCI_LAYER, OCI_MANIFEST};
use serde_json::Value;
use std::collections::BTreeSet;
use std::time::{Duration, Instant};

const REGIONS: [&str; 3] = ["us", "eu", "ap"];

fn options() -> ClusterOptions {
    ClusterOptions::new(3)
        .names(&REGIONS)
        .env("MERIDIAN_GC_INTERVAL_SECS", "0")
        .env("MERIDIAN_GC_UPLOAD_GRACE_SECS", "1")
        .env("MERIDIAN_RETENTION_PULL_RECORD_SECS", "1")
}

/// What a run (or dry run) deletes: `repo:tag` for tags, `repo@digest` for manifests.
fn deletions(run: &Value) -> BTreeSet<String> {
    run["deletions"]
        .as_array()
        .unwrap_or_else(|| panic!("no deletions array: {run}"))
        .iter()
        .map(|d| match d["tag"].as_str() {
            Some(tag) => format!("{}:{tag}", d["repo"].as_str().unwrap()),
            None => format!("{}@{}", d["repo"].as_str().unwrap(), d["digest"].as_str().unwrap()),
        })
        .collect()
}

async fn tags(c: &Cluster, i: usize, repo: &str) -> Vec<String> {
    let mut t = oci::list_tags(&c[i], repo).await.unwrap_or_default();
    t.sort();
    t
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn policies_keep_what_their_rules_say_and_delete_the_rest_everywhere() {
    let c = Cluster::start_with(options()).await;
    let repo = "team-a/app";
    let v1 = oci::push_image(&c[0], repo, "v1", "v1").await;
    let release = oci::push_image(&c[1], repo, "release-1", "release-1").await;
    let dev1 = oci::push_image(&c[2], repo, "dev-1", "dev-1").await;
    let dev2 = oci::push_image(&c[0], repo, "dev-2", "dev-2").await;
    let dev3 = oci::push_image(&c[0], repo, "dev-3", "dev-3").await;
    // v2 is an index over two untagged platform images: they stay with it.
    let amd = oci::push_image(&c[1], repo, "", "v2-amd64").await;
    let arm = oci::push_image(&c[1], repo, "", "v2-arm64").await;
    let index = oci::to_bytes(&oci::image_index(&[amd.descriptor(), arm.descriptor()]));
    oci::push_manifest(&c[1], repo, "v2", OCI_INDEX, &index).await;
    // A signature of dev-1, pushed by digest: it follows its subject.
    let empty = oci::push_empty_config(&c[2], repo).await;
    let sig_layer = oci::push_blob_desc(&c[2], repo, OCI_LAYER, b"signature of dev-1").await;
    let sig = oci::to_bytes(&oci::artifact_manifest("application/vnd.dev.cosign.artifact.sig.v1+json", &sig_layer, Some(&dev1.descriptor()), None));
    let _ = empty;
    let sig_digest = oci::push_manifest(&c[2], repo, &oci::sha256_digest(&sig), OCI_MANIFEST, &sig).await;
    // An untagged image pushed by digest, which ages out.
    let orphan = oci::push_image(&c[0], repo, "", "orphan").await;
    // `latest`, pushed a second later than the rest: the most recent tag.
    tokio::time::sleep(Duration::from_millis(2100)).await;
    let latest = oci::push_image(&c[2], repo, "latest", "latest").await;
    // Another namespace no policy covers.
    oci::push_image(&c[0], "team-b/app", "dev-1", "team-b").await;

    c.admin_json_at(0, &["retention", "set", "releases", "--repos", "team-a/*", "--keep-tags", "v*,release-*", "--keep-last", "1", "--untagged-after", "2s"]).await;
    c.admin_json_at(1, &["retention", "set", "in-use", "--repos", "team-a/app", "--keep-pulled-within", "1h"]).await;
    let listed = c.admin_json_at(2, &["retention", "list"]).await;
    assert_eq!(listed["policies"].as_array().map(Vec::len), Some(2), "{listed}");

    // dev-3 is pulled (in eu): once that region's batch of pull times lands, it is kept.
    let resp = oci::get_manifest(&c[1], repo, "dev-3").await;
    assert_eq!(resp.status(), 200);
    let expected: BTreeSet<String> = [
        format!("{repo}:dev-1"),
        format!("{repo}:dev-2"),
        format!("{repo}@{}", dev1.digest),
        format!("{repo}@{}", dev2.digest),
        format!("{repo}@{sig_digest}"),
        format!("{repo}@{}", orphan.digest),
    ]
    .into_iter()
    .collect();
    let deadline = Instant::now() + Duration::from_secs(20);
    let dry = loop {
        let dry = c.admin_json_at(0, &["retention", "run", "--dry-run"]).await;
        if deletions(&dry) == expected {
            break dry;
        }
        assert!(Instant::now() < deadline, "the dry run never settled on {expected:?}: {dry}");
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    assert!(dry["deletions"].as_array().unwrap().iter().all(|d| d["outcome"] == "would delete" && d["reason"].is_string()), "{dry}");
    let table = c.admin_at(0, &["retention", "run", "--dry-run"]).await;
    assert!(table.stdout.contains("dry run") && table.stdout.contains("dev-1"), "{table}");
    // The dry run changed nothing.
    assert_eq!(tags(&c, 2, repo).await, ["dev-1", "dev-2", "dev-3", "latest", "release-1", "v1", "v2"]);
    assert_eq!(oci::manifest_status(&c[2], repo, &sig_digest).await, 200);

    let run = c.admin_json_at(1, &["retention", "run"]).await;
    assert_eq!(deletions(&run), expected, "{run}");
    assert!(run["deletions"].as_array().unwrap().iter().all(|d| d["outcome"] == "deleted"), "{run}");

    for i in 0..3 {
        assert_eq!(tags(&c, i, repo).await, ["dev-3", "latest", "release-1", "v1", "v2"], "in {}", c[i].name);
        for gone in [&dev1.digest, &dev2.digest, &sig_digest, &orphan.digest] {
            assert_eq!(oci::manifest_status(&c[i], repo, gone).await, 404, "{gone} in {}", c[i].name);
        }
        for kept in [&v1, &release, &dev3, &latest, &amd, &arm] {
            oci::assert_manifest_content(&c[i], repo, &kept.digest, OCI_MANIFEST, &kept.manifest).await;
        }
        oci::assert_manifest_content(&c[i], repo, "v2", OCI_INDEX, &index).await;
        assert_eq!(tags(&c, i, "team-b/app").await, ["dev-1"], "a repository no policy covers is untouched");
    }
    // Nothing left to do.
    let again = c.admin_json_at(0, &["retention", "run", "--dry-run"]).await;
    assert!(deletions(&again).is_empty(), "{again}");

    // Bad policies are refused; removing one works.
    let bad = c.admin_at(0, &["retention", "set", "nothing", "--repos", "team-a/*"]).await;
    assert_ne!(bad.code, 0, "a policy without rules is refused: {bad}");
    let bad = c.admin_at(0, &["retention", "set", "x", "--repos", "Team A", "--keep-last", "1"]).await;
    assert_ne!(bad.code, 0, "{bad}");
    let bad = c.admin_at(0, &["retention", "set", "x", "--repos", "a", "--untagged-after", "7w"]).await;
    assert_ne!(bad.code, 0, "{bad}");
    c.admin_json_at(0, &["retention", "remove", "in-use"]).await;
    let listed = c.admin_json_at(2, &["retention", "list"]).await;
    assert_eq!(listed["policies"].as_array().map(Vec::len), Some(1), "{listed}");
}

fn blob_on_disk_everywhere(c: &Cluster, digest: &str) -> bool {
    (0..3).all(|i| oci::blob_path(&c[i], digest).exists())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn soft_deleted_manifests_restore_byte_identical_until_they_expire() {
    // 0.0001 days: 8.64 s in the trash.
    let c = Cluster::start_with(options().env("MERIDIAN_RETENTION_SOFT_DELETE_DAYS", "0.0001")).await;
    let repo = "team/app";
    let layer = oci::test_bytes("trash-layer", 50_000);
    let config = oci::push_blob_desc(&c[0], repo, oci::OCI_CONFIG, br#"{"seed":"trash"}"#).await;
    let layer_desc: Descriptor = oci::push_blob_desc(&c[0], repo, OCI_LAYER, &layer).await;
    let manifest = oci::to_bytes(&oci::image_manifest(&config, &[layer_desc.clone()]));
    let digest = oci::push_manifest(&c[0], repo, "v1", OCI_MANIFEST, &manifest).await;
    c.wait_image_complete(0, &format!("{repo}:v1"), &REGIONS, Duration::from_secs(60)).await.expect("replicated");
    for i in 0..3 {
        oci::wait_blob_files(&c[i], &[layer_desc.digest.clone()], Duration::from_secs(30)).await.expect("layer everywhere");
    }

    // Deleted: gone from the API in every region, listed in the trash with its tag.
    let resp = oci::client().delete(c[1].url(&format!("/v2/{repo}/manifests/{digest}"))).send().await.unwrap();
    assert_eq!(resp.status(), 202);
    for i in 0..3 {
        assert_eq!(oci::manifest_status(&c[i], repo, &digest).await, 404);
        assert_eq!(oci::manifest_status(&c[i], repo, "v1").await, 404);
    }
    let trash = c.admin_json_at(2, &["trash", "list"]).await;
    let entries = trash["entries"].as_array().unwrap();
    assert_eq!(entries.len(), 1, "{trash}");
    assert_eq!(entries[0]["digest"], digest.as_str());
    assert_eq!(entries[0]["tags"], serde_json::json!(["v1"]));

    // Collection past the grace keeps the trashed manifest's blobs.
    tokio::time::sleep(Duration::from_millis(2200)).await;
    c.admin_json_at(0, &["gc", "run"]).await;
    assert!(blob_on_disk_everywhere(&c, &layer_desc.digest), "a trashed manifest's layer was collected");

    // Restored under its tag: byte-identical everywhere, blobs too.
    let out = c.admin_at(1, &["trash", "restore", &format!("{repo}@{digest}"), "--tag", "v1"]).await;
    assert_eq!(out.code, 0, "{out}");
    for i in 0..3 {
        oci::assert_manifest_content(&c[i], repo, "v1", OCI_MANIFEST, &manifest).await;
        oci::assert_blob_content(&c[i], repo, &layer_desc.digest, &layer).await;
    }
    assert!(c.admin_json_at(0, &["trash", "list"]).await["entries"].as_array().unwrap().is_empty());
    let missing = c.admin_at(1, &["trash", "restore", &format!("{repo}@{digest}")]).await;
    assert_ne!(missing.code, 0, "restoring what is not in the trash fails: {missing}");

    // Deleted again and left to expire: the next collection purges it, the one after
    // (past the grace) frees its blobs in every region.
    let resp = oci::client().delete(c[2].url(&format!("/v2/{repo}/manifests/{digest}"))).send().await.unwrap();
    assert_eq!(resp.status(), 202);
    tokio::time::sleep(Duration::from_secs(9)).await;
    c.admin_json_at(0, &["gc", "run"]).await;
    assert!(c.admin_json_at(0, &["trash", "list"]).await["entries"].as_array().unwrap().is_empty(), "expired entries are purged");
    tokio::time::sleep(Duration::from_millis(2200)).await;
    c.admin_json_at(0, &["gc", "run"]).await;
    let deadline = Instant::now() + Duration::from_secs(20);
    while (0..3).any(|i| oci::blob_path(&c[i], &layer_desc.digest).exists()) {
        assert!(Instant::now() < deadline, "the expired manifest's layer is still on disk");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // `trash purge` deletes for good at once.
    let other = oci::push_image(&c[0], repo, "v2", "purged").await;
    let resp = oci::client().delete(c[0].url(&format!("/v2/{repo}/manifests/{}", other.digest))).send().await.unwrap();
    assert_eq!(resp.status(), 202);
    let purged = c.admin_json_at(1, &["trash", "purge"]).await;
    assert_eq!(purged["purged"], 1, "{purged}");
    let missing = c.admin_at(1, &["trash", "restore", &format!("{repo}@{}", other.digest)]).await;
    assert_ne!(missing.code, 0, "{missing}");
}

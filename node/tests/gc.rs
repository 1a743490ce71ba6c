//! Garbage collection across regions, through the registry API and `meridian admin gc`,
//! on three real processes (grace 2 s, no schedule: the tests run it):
//!
//! - blobs only a deleted manifest referenced leave every region's disk; a layer another
//!   image shares stays, and that image pulls byte-identical everywhere;
//! - a blob uploaded within the grace is kept, and goes after it; pushing an image again
//!   after its blobs were collected works (the client uploads them again);
//! - a region that was down during the collection frees the same bytes when it returns,
//!   including blobs it never fetched;
//! - a dry run changes nothing.

mod common;

use common::cluster::{Cluster, ClusterOptions};
use common::oci::{self, holds_blob, Descriptor, OCI_CONFIG, OCI_LAYER, OCI_MANIFEST};
use common::Node;
use serde_json::Value;
use std::time::{Duration, Instant};

const GRACE_SECS: u64 = 2;
const REGIONS: [&str; 3] = ["us", "eu", "ap"];

/// Three regions; under `MERIDIAN_TEST_STORE=s3` each keeps its blobs in a bucket.
async fn three_regions() -> Cluster {
    let mut opts = ClusterOptions::new(3)
        .names(&REGIONS)
        .env("MERIDIAN_GC_UPLOAD_GRACE_SECS", &GRACE_SECS.to_string())
        .env("MERIDIAN_GC_INTERVAL_SECS", "0");
    if common::store_under_test_is_s3() {
        opts = opts.s3_regions(&REGIONS);
    }
    Cluster::start_with(opts).await
}

async fn gc_run(c: &Cluster, i: usize, dry_run: bool) -> Value {
    let args: &[&str] = if dry_run { &["gc", "run", "--dry-run"] } else { &["gc", "run"] };
    c.admin_json_at(i, args).await
}

fn past_grace() -> Duration {
    Duration::from_millis(GRACE_SECS * 1000 + 1200)
}

/// An image of a config and the given layers, each uploaded into `repo` at `node`.
async fn push_image(node: &Node, repo: &str, tag: &str, seed: &str, layers: &[Vec<u8>]) -> (String, Vec<String>) {
    let config = oci::push_blob_desc(node, repo, OCI_CONFIG, &oci::to_bytes(&serde_json::json!({"seed": seed}))).await;
    let mut descs = Vec::new();
    for l in layers {
        descs.push(oci::push_blob_desc(node, repo, OCI_LAYER, l).await);
    }
    let manifest = oci::to_bytes(&oci::image_manifest(&config, &descs));
    let digest = oci::push_manifest(node, repo, tag, OCI_MANIFEST, &manifest).await;
    let mut blobs = vec![config.digest];
    blobs.extend(descs.into_iter().map(|d: Descriptor| d.digest));
    (digest, blobs)
}

/// Waits until `digest`'s file is gone from every listed region.
async fn wait_gone(c: &Cluster, members: &[usize], digests: &[String], timeout: Duration) {
    let deadline = Instant::now() + timeout;
    loop {
        let left: Vec<String> = members
            .iter()
            .flat_map(|&i| digests.iter().filter(move |d| holds_blob(&c[i], d)).map(move |d| format!("{}:{d}", c[i].name)))
            .collect();
        if left.is_empty() {
            return;
        }
        assert!(Instant::now() < deadline, "still on disk after {timeout:?}: {left:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn delete_manifest(node: &Node, repo: &str, digest: &str) {
    let resp = oci::client().delete(node.url(&format!("/v2/{repo}/manifests/{digest}"))).send().await.unwrap();
    assert_eq!(resp.status(), 202, "DELETE {repo}@{digest}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreferenced_blobs_leave_every_region_and_shared_ones_stay() {
    let c = three_regions().await;
    let shared = oci::test_bytes("gc-shared-layer", 40_000);
    let only_a = oci::test_bytes("gc-only-a", 30_000);
    let only_b = oci::test_bytes("gc-only-b", 20_000);
    let (a, a_blobs) = push_image(&c[0], "team/a", "v1", "a", &[shared.clone(), only_a]).await;
    let (_, b_blobs) = push_image(&c[0], "team/b", "v1", "b", &[shared.clone(), only_b.clone()]).await;
    for image in ["team/a:v1", "team/b:v1"] {
        c.wait_image_complete(0, image, &REGIONS, Duration::from_secs(60)).await.expect("replicated");
    }
    for i in 0..3 {
        oci::wait_blob_files(&c[i], &a_blobs, Duration::from_secs(30)).await.expect("a's blobs everywhere");
    }

    // A dry run right away: a's blobs are referenced, nothing is a candidate, nothing changes.
    let dry = gc_run(&c, 1, true).await;
    assert_eq!(dry["candidates"], serde_json::json!([]), "{dry}");

    // Delete a (in eu); past the grace, collect from ap.
    delete_manifest(&c[1], "team/a", &a).await;
    tokio::time::sleep(past_grace()).await;
    let dry = gc_run(&c, 2, true).await;
    let mut listed: Vec<String> = dry["candidates"].as_array().unwrap().iter().map(|c| c["digest"].as_str().unwrap().to_string()).collect();
    listed.sort();
    let mut only_a_blobs = vec![a_blobs[0].clone(), a_blobs[2].clone()];
    only_a_blobs.sort();
    assert_eq!(listed, only_a_blobs, "the dry run lists exactly a's own blobs: {dry}");
    assert_eq!(dry["candidate_count"], 2, "{dry}");
    for i in 0..3 {
        assert!(only_a_blobs.iter().all(|d| holds_blob(&c[i], d)), "a dry run removed something in {}", c[i].name);
    }

    let run = gc_run(&c, 2, false).await;
    assert_eq!(run["collected_blobs"], 2, "{run}");
    let collected_bytes = run["collected_bytes"].as_u64().unwrap();
    assert!(collected_bytes > 30_000, "{run}");
    wait_gone(&c, &[0, 1, 2], &only_a_blobs, Duration::from_secs(20)).await;

    // The shared layer and b stay, and b pulls byte-identical in every region.
    for i in 0..3 {
        for d in &b_blobs {
            assert!(oci::blob_file_verified(&c[i], d), "{} lost {d}", c[i].name);
        }
        oci::assert_blob_content(&c[i], "team/b", &b_blobs[1], &shared).await;
        oci::assert_blob_content(&c[i], "team/b", &b_blobs[2], &only_b).await;
        // a's own blobs are unknown everywhere now (no link outlives the bytes).
        for d in &only_a_blobs {
            assert_eq!(oci::blob_status(&c[i], "team/a", d).await, 404, "{}: {d} still linked", c[i].name);
        }
    }

    // Every region reported its sweep.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let out = c.admin_at(0, &["--json", "gc", "status"]).await;
        let v: Value = serde_json::from_str(&out.stdout).unwrap_or(Value::Null);
        let regions: Vec<&str> = v["regions"].as_array().map(|a| a.iter().filter_map(|r| r["region"].as_str()).collect()).unwrap_or_default();
        if REGIONS.iter().all(|r| regions.contains(r)) {
            break;
        }
        assert!(Instant::now() < deadline, "gc status never listed every region: {out}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recent_uploads_are_kept_and_collected_images_can_be_pushed_again() {
    let c = three_regions().await;
    // An upload no manifest references yet: kept within the grace, removed after it.
    let loose = oci::test_bytes("gc-loose", 10_000);
    let loose_digest = oci::push_blob(&c[0], "team/c", &loose).await;
    let run = gc_run(&c, 0, false).await;
    assert_eq!(run["sweep"]["blobs_removed"], 0, "{run}");
    assert!(holds_blob(&c[0], &loose_digest), "a fresh upload was removed");
    assert_eq!(oci::blob_status(&c[0], "team/c", &loose_digest).await, 200);
    tokio::time::sleep(past_grace()).await;
    let run = gc_run(&c, 0, false).await;
    assert_eq!(run["sweep"]["blobs_removed"], 1, "{run}");
    assert!(!holds_blob(&c[0], &loose_digest));
    assert_eq!(oci::blob_status(&c[0], "team/c", &loose_digest).await, 404, "the link outlived the bytes");

    // An image collected after its deletion can be pushed again, as a client does it: the
    // blob HEADs say 404, so it uploads them, and the push is pullable everywhere.
    let layer = oci::test_bytes("gc-again", 25_000);
    let (digest, blobs) = push_image(&c[0], "team/d", "v1", "d", &[layer.clone()]).await;
    c.wait_image_complete(0, "team/d:v1", &REGIONS, Duration::from_secs(60)).await.expect("replicated");
    delete_manifest(&c[0], "team/d", &digest).await;
    tokio::time::sleep(past_grace()).await;
    let run = gc_run(&c, 1, false).await;
    assert_eq!(run["collected_blobs"], 2, "{run}");
    wait_gone(&c, &[0, 1, 2], &blobs, Duration::from_secs(20)).await;
    for d in &blobs {
        assert_eq!(oci::blob_status(&c[0], "team/d", d).await, 404);
    }
    let (again, _) = push_image(&c[0], "team/d", "v1", "d", &[layer.clone()]).await;
    assert_eq!(again, digest, "the same image");
    for i in 0..3 {
        oci::assert_blob_content(&c[i], "team/d", &blobs[1], &layer).await;
    }
    c.wait_image_complete(0, "team/d:v1", &REGIONS, Duration::from_secs(60)).await.expect("replicated again");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_region_down_during_a_collection_frees_the_same_bytes_when_it_returns() {
    let mut c = three_regions().await;
    // One image ap holds, one pushed while ap is down (ap never fetches it).
    let (held, held_blobs) = push_image(&c[0], "team/e", "v1", "e", &[oci::test_bytes("gc-held", 15_000)]).await;
    c.wait_image_complete(0, "team/e:v1", &REGIONS, Duration::from_secs(60)).await.expect("replicated");
    c.stop(2);
    let (missed, missed_blobs) = push_image(&c[0], "team/f", "v1", "f", &[oci::test_bytes("gc-missed", 15_000)]).await;
    delete_manifest(&c[0], "team/e", &held).await;
    delete_manifest(&c[0], "team/f", &missed).await;
    tokio::time::sleep(past_grace()).await;
    let run = gc_run(&c, 0, false).await;
    assert_eq!(run["collected_blobs"], 4, "{run}");
    let all: Vec<String> = held_blobs.iter().chain(missed_blobs.iter()).cloned().collect();
    wait_gone(&c, &[0, 1], &all, Duration::from_secs(20)).await;
    assert!(held_blobs.iter().all(|d| holds_blob(&c[2], d)), "ap was down: its copies are still there");

    // ap returns, applies the collection, and frees the same bytes; it never keeps the
    // image it missed (a copy fetched while catching up is swept once past the grace).
    c.restart(2).await;
    tokio::time::sleep(past_grace()).await;
    gc_run(&c, 2, false).await;
    wait_gone(&c, &[2], &all, Duration::from_secs(20)).await;
}

//! `meridian-load` against a real region: what it loads is served over the API exactly as
//! if it had been pushed, and garbage collection frees exactly what its deletions left.
//! Runs the `meridian` binary of the same build (`cargo test --workspace` builds it).

use chaos_tests::harness::cluster::{Cluster, ClusterOptions};
use chaos_tests::harness::oci;
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};
use std::process::Command;

const MANIFESTS: u64 = 300;
const REPOS: u64 = 4;
const LAYERS: u64 = 40;
const DELETE_EVERY: u64 = 3;

fn load(data_dir: &std::path::Path, region: &str) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_meridian-load"))
        .arg("--data-dir")
        .arg(data_dir)
        .args(["--region", region])
        .args(["--manifests", &MANIFESTS.to_string(), "--repos", &REPOS.to_string()])
        .args(["--layers", &LAYERS.to_string(), "--delete-every", &DELETE_EVERY.to_string()])
        .output()
        .expect("running meridian-load")
}

fn blob_files(data_dir: &std::path::Path) -> usize {
    fn walk(dir: &std::path::Path) -> usize {
        std::fs::read_dir(dir)
            .map(|entries| {
                entries.flatten().map(|e| if e.path().is_dir() { walk(&e.path()) } else { 1 }).sum()
            })
            .unwrap_or(0)
    }
    walk(&data_dir.join("blobs"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn loaded_images_are_served_and_their_garbage_collected() {
    let mut c = Cluster::start_with(
        ClusterOptions::new(1).env("MERIDIAN_GC_UPLOAD_GRACE_SECS", "1").env("MERIDIAN_GC_INTERVAL_SECS", "0"),
    )
    .await;
    let region = c[0].name.clone();
    let data_dir = c[0].node.data_dir.clone();

    // Never into a running node (RocksDB's lock), nor into a directory that never ran.
    let refused = load(&data_dir, &region);
    assert!(!refused.status.success(), "loading a running node must fail");
    let empty = tempfile::tempdir().unwrap();
    let refused = load(empty.path(), &region);
    assert!(!refused.status.success());
    assert!(String::from_utf8_lossy(&refused.stderr).contains("start the region once"), "{refused:?}");

    c.stop(0);
    let loaded = load(&data_dir, &region);
    assert!(loaded.status.success(), "{loaded:?}");
    let summary: Value = serde_json::from_slice(&loaded.stdout).expect("a JSON summary");
    assert_eq!(summary["deleted"], MANIFESTS.div_ceil(DELETE_EVERY), "{summary}");
    c.restart(0).await;

    // Manifest i is in load/r{i mod REPOS} as v{i div REPOS}; every DELETE_EVERY-th is gone.
    let deleted = |i: u64| i % DELETE_EVERY == 0;
    let mut want: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for i in (0..MANIFESTS).filter(|i| !deleted(*i)) {
        want.entry(format!("load/r{}", i % REPOS)).or_default().insert(format!("v{}", i / REPOS));
    }
    for (repo, tags) in &want {
        let listed: BTreeSet<String> = oci::list_tags(&c[0], repo).await.expect("repository listed").into_iter().collect();
        assert_eq!(&listed, tags, "{repo}");
    }
    // A loaded image pulls whole: the manifest, then its blobs, each matching its digest.
    let resp = oci::get_manifest(&c[0], "load/r1", "v0").await;
    assert_eq!(resp.status(), 200);
    let manifest: Value = resp.json().await.unwrap();
    let config = manifest["config"]["digest"].as_str().unwrap().to_string();
    let layer = manifest["layers"][0]["digest"].as_str().unwrap().to_string();
    for digest in [&config, &layer] {
        let (status, body) = oci::get_blob(&c[0], "load/r1", digest).await.unwrap();
        assert_eq!(status, 200, "{digest}");
        assert_eq!(&oci::sha256_digest(&body), digest);
    }

    // What the deletions left unreferenced: each deleted manifest's own config, and each
    // pool layer only deleted manifests used.
    let orphan_layers = (0..LAYERS).filter(|l| (0..MANIFESTS).filter(|i| i % LAYERS == *l).all(deleted)).count() as u64;
    let garbage = MANIFESTS.div_ceil(DELETE_EVERY) + orphan_layers;
    let files = blob_files(&data_dir);
    assert_eq!(files as u64, MANIFESTS + LAYERS);
    tokio::time::sleep(std::time::Duration::from_millis(1500)).await;
    let run = c.admin_json_at(0, &["gc", "run"]).await;
    assert_eq!(run["candidate_count"], garbage, "{run}");
    assert_eq!(run["collected_blobs"], garbage, "{run}");
    // The region sweeps as it applies the collection, and within the run: poll the disk.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while blob_files(&data_dir) as u64 != MANIFESTS + LAYERS - garbage {
        assert!(std::time::Instant::now() < deadline, "{} files left, want {}", blob_files(&data_dir), MANIFESTS + LAYERS - garbage);
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    // What is left still pulls.
    let (status, _) = oci::get_blob(&c[0], "load/r1", &config).await.unwrap();
    assert_eq!(status, 200);
}

//! `kill -9` in the middle of a garbage-collection sweep: nothing referenced is missing
//! after the restart, and the next run finishes the job. The sweep is slowed with the
//! `gc-sweep-remove` failpoint so the kill lands while it removes files.

use chaos_tests::harness::cluster::{Cluster, ClusterOptions};
use chaos_tests::harness::oci::{self, blob_path, OCI_CONFIG, OCI_LAYER, OCI_MANIFEST};
use std::time::{Duration, Instant};

const LOOSE: usize = 40;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sweep_killed_half_way_loses_nothing_referenced_and_the_next_run_finishes() {
    chaos_tests::harness::use_binary(env!("CARGO_BIN_EXE_meridian-chaos-node"));
    let mut c = Cluster::start_with(
        ClusterOptions::new(1)
            .env("MERIDIAN_FAILPOINTS_API", "1")
            .env("MERIDIAN_GC_UPLOAD_GRACE_SECS", "1")
            .env("MERIDIAN_GC_INTERVAL_SECS", "0"),
    )
    .await;

    // Kept: an image that stays tagged. Garbage: uploads no manifest references, and the
    // blobs of an image deleted by digest.
    let kept_config = oci::push_blob_desc(&c[0], "team/kept", OCI_CONFIG, b"{\"kept\":true}").await;
    let kept_layer_bytes = oci::test_bytes("kept-layer", 50_000);
    let kept_layer = oci::push_blob_desc(&c[0], "team/kept", OCI_LAYER, &kept_layer_bytes).await;
    let kept = oci::to_bytes(&oci::image_manifest(&kept_config, &[kept_layer.clone()]));
    oci::push_manifest(&c[0], "team/kept", "v1", OCI_MANIFEST, &kept).await;
    let mut garbage = Vec::new();
    for n in 0..LOOSE {
        garbage.push(oci::push_blob(&c[0], "team/loose", &oci::test_bytes(&format!("loose-{n}"), 4_000)).await);
    }
    let gone_config = oci::push_blob_desc(&c[0], "team/gone", OCI_CONFIG, b"{\"gone\":true}").await;
    let gone_layer = oci::push_blob_desc(&c[0], "team/gone", OCI_LAYER, &oci::test_bytes("gone-layer", 9_000)).await;
    let gone = oci::to_bytes(&oci::image_manifest(&gone_config, &[gone_layer.clone()]));
    let gone_digest = oci::push_manifest(&c[0], "team/gone", "v1", OCI_MANIFEST, &gone).await;
    let resp = oci::client().delete(c[0].url(&format!("/v2/team/gone/manifests/{gone_digest}"))).send().await.unwrap();
    assert_eq!(resp.status(), 202);
    garbage.push(gone_config.digest.clone());
    garbage.push(gone_layer.digest.clone());
    tokio::time::sleep(Duration::from_millis(2_200)).await;

    // A slow sweep, killed once it has removed some but not all of the garbage.
    c.failpoint(0, "gc-sweep-remove", "sleep(100)").await;
    let run = {
        let addr = c[0].grpc_url();
        tokio::spawn(async move { Cluster::admin_raw(&addr, chaos_tests::harness::cluster::ADMIN_TOKEN, &["gc", "run"]).await })
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let removed = garbage.iter().filter(|d| !blob_path(&c[0], d).exists()).count();
        if removed >= 5 {
            assert!(removed < garbage.len(), "the sweep finished before the kill");
            break;
        }
        assert!(Instant::now() < deadline, "the sweep never started removing");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    c.kill9(0);
    let _ = run.await;
    let left_after_kill = garbage.iter().filter(|d| blob_path(&c[0], d).exists()).count();
    assert!(left_after_kill > 0, "nothing left for the next run to do");

    // After the restart: every referenced blob is there and serves its bytes.
    c.restart(0).await;
    for d in [&kept_config.digest, &kept_layer.digest] {
        assert!(oci::blob_file_verified(&c[0], d), "referenced blob {d} lost");
    }
    oci::assert_manifest_content(&c[0], "team/kept", "v1", OCI_MANIFEST, &kept).await;
    oci::assert_blob_content(&c[0], "team/kept", &kept_layer.digest, &kept_layer_bytes).await;

    // The next run (failpoint gone with the old process) removes the rest.
    let out = c.admin_at(0, &["--json", "gc", "run"]).await;
    assert_eq!(out.code, 0, "gc run after the restart: {out}");
    let left: Vec<&String> = garbage.iter().filter(|d| blob_path(&c[0], d).exists()).collect();
    assert!(left.is_empty(), "the next run left {} of {} garbage blobs: {left:?}", left.len(), garbage.len());
    for d in garbage.iter().take(3) {
        assert_eq!(oci::blob_status(&c[0], "team/loose", d).await, 404);
    }
    oci::assert_blob_content(&c[0], "team/kept", &kept_layer.digest, &kept_layer_bytes).await;
}

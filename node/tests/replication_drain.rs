//! Removing a region never loses a blob: `region remove` is refused while the region
//! holds the only copy of a referenced blob, `region drain` copies those away, and after
//! the removal every image stays pullable, byte-identical, in the remaining regions.

mod common;

use common::cluster::{Cluster, ClusterOptions};
use common::oci;
use std::time::Duration;

const REPO: &str = "drain/app";

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn drain_then_remove_keeps_every_blob() {
    // 1 MB/s per source: an 8 MiB layer stays A's alone for several seconds.
    let mut c = Cluster::start_with(ClusterOptions::new(3).env("MERIDIAN_REPLICATION_BANDWIDTH_LIMIT", "1000000")).await;
    let (a, b, cc) = (0, 1, 2);
    let name_a = c[a].name.clone();
    let name_b = c[b].name.clone();
    let pushed = oci::push_image_sized(&c[a], REPO, "v1", "drain", &[8 << 20]).await;
    let digests = pushed.blob_digests();

    // A leads (it bootstrapped); leadership must move before A can go.
    let out = c.admin(&["leader", "transfer", &name_b]).await;
    assert_eq!(out.code, 0, "leader transfer: {}", out.text());

    let out = c.admin(&["region", "remove", &name_a]).await;
    assert_ne!(out.code, 0, "removing the only holder of a blob must be refused: {}", out.text());
    assert!(out.stderr.contains("only copy"), "the refusal says why: {}", out.stderr);
    let regions = c.regions_at(b).await.unwrap();
    assert!(regions.iter().any(|r| r.name == name_a), "{name_a} must still be a member after the refusal");

    let out = c.admin(&["region", "drain", &name_a]).await;
    assert_eq!(out.code, 0, "drain: {}", out.text());
    assert!(out.stdout.contains("copied"), "drain reports what it copied: {}", out.stdout);
    // The leader's region (B) now holds every blob, verified.
    oci::wait_blob_files(&c[b], &digests, Duration::from_secs(5)).await.unwrap();

    let out = c.admin(&["region", "remove", &name_a]).await;
    assert_eq!(out.code, 0, "remove after drain: {}", out.text());
    c.stop(a);

    // Nothing became unpullable: B and C serve the image and every blob, byte-identical.
    for i in [b, cc] {
        oci::assert_manifest_content(&c[i], REPO, "v1", oci::OCI_MANIFEST, &pushed.image.manifest).await;
        for (d, bytes) in pushed.image.layers.iter().zip(&pushed.layer_bytes) {
            oci::assert_blob_content(&c[i], REPO, &d.digest, bytes).await;
        }
    }
}

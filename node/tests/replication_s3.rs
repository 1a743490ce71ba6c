//! Three regions, the middle one (`eu`) keeping its blobs in an S3-compatible store (a
//! real Garage): an image pushed in a filesystem region is pulled from `eu` at once
//! (fetched through into the bucket), one pushed in `eu` is pulled from a filesystem
//! region at once (served to it from the bucket), both land everywhere in the background,
//! and `eu` serves its copies from the bucket with the region it came from stopped.

mod common;

use common::cluster::{wait_manifest, Cluster, ClusterOptions};
use common::oci::{self, OCI_MANIFEST};
use std::time::{Duration, Instant};

const REPO: &str = "geo/s3";

/// Pushes a config and one layer of `size` bytes under `tag` in `region`; returns the
/// manifest, the config digest and the layer.
async fn push(c: &Cluster, region: usize, tag: &str, size: usize) -> (Vec<u8>, String, (String, Vec<u8>)) {
    let layer_bytes = oci::test_bytes(&format!("s3-layer-{tag}"), size);
    let config = oci::push_blob_desc(&c[region], REPO, oci::OCI_CONFIG, format!("{{\"tag\":\"{tag}\"}}").as_bytes()).await;
    let layer = oci::push_blob_desc(&c[region], REPO, oci::OCI_LAYER, &layer_bytes).await;
    let manifest = oci::to_bytes(&oci::image_manifest(&config, &[layer.clone()]));
    oci::push_manifest(&c[region], REPO, tag, OCI_MANIFEST, &manifest).await;
    (manifest, config.digest, (layer.digest, layer_bytes))
}

async fn wait_held(c: &Cluster, region: usize, digests: &[&str], within: Duration) {
    let deadline = Instant::now() + within;
    while !digests.iter().all(|d| oci::holds_blob(&c[region], d)) {
        assert!(Instant::now() < deadline, "{digests:?} did not land in {}", c[region].name);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_s3_region_is_a_fetch_through_source_and_destination() {
    let mut c = Cluster::start_with(ClusterOptions::new(3).names(&["us", "eu", "ap"]).s3_regions(&["eu"])).await;
    let (us, eu, ap) = (0, 1, 2);

    // us (filesystem) → eu (bucket): pulled at once, then stored in the bucket.
    let (manifest, config, (layer, bytes)) = push(&c, us, "from-us", 24 << 20).await;
    wait_manifest(&c[eu], REPO, "from-us", &manifest, Duration::from_secs(10)).await.unwrap();
    oci::assert_blob_content(&c[eu], REPO, &layer, &bytes).await;
    wait_held(&c, eu, &[&layer, &config], Duration::from_secs(30)).await;
    assert!(
        oci::files_under(&c[eu].data_dir.join("blobs")).is_empty(),
        "the S3 region wrote blobs to its local disk"
    );

    // eu (bucket) → ap (filesystem): served to ap from the bucket at once, then landed.
    let (manifest, config2, (layer2, bytes2)) = push(&c, eu, "from-eu", 24 << 20).await;
    wait_manifest(&c[ap], REPO, "from-eu", &manifest, Duration::from_secs(10)).await.unwrap();
    oci::assert_blob_content(&c[ap], REPO, &layer2, &bytes2).await;
    wait_held(&c, ap, &[&layer2, &config2], Duration::from_secs(30)).await;
    wait_held(&c, us, &[&layer2, &config2], Duration::from_secs(30)).await;

    // With us stopped, eu serves what came from us out of its bucket.
    c.stop(us);
    oci::assert_blob_content(&c[eu], REPO, &layer, &bytes).await;
}

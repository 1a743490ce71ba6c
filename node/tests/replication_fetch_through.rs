//! Pull anywhere (promise 4), first slice: three `meridian` processes.
//!
//! * A blob pushed in region A (with a manifest referencing it) is served by B and C at
//!   once, byte-identical — fetched through from A while it is stored.
//! * Many concurrent GETs of the same not-yet-local blob in B share one transfer
//!   (asserted with B's `meridian_replication_transfers_total`).
//! * The background queue lands the blob in every region; afterwards B serves it from its
//!   own disk (no new transfer) even with A stopped.

mod common;

use common::cluster::{self, Cluster};
use common::oci::{self, OCI_MANIFEST};
use sha2::{Digest as _, Sha256};
use std::time::{Duration, Instant};

const REPO: &str = "geo/app";

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn blobs_pushed_in_one_region_are_pulled_everywhere() {
    let mut c = Cluster::start(3).await;
    let (a, b, cc) = (0, 1, 2);

    // A 24 MiB layer, big enough that many readers overlap with the transfer.
    let layer_bytes = oci::test_bytes("geo-layer", 24 << 20);
    let layer_digest = format!("sha256:{}", hex::encode(Sha256::digest(&layer_bytes)));
    let config = oci::push_empty_config(&c[a], REPO).await;
    let layer = oci::push_blob_desc(&c[a], REPO, oci::OCI_LAYER, &layer_bytes).await;
    assert_eq!(layer.digest, layer_digest);
    let manifest = oci::to_bytes(&oci::image_manifest(&config, &[layer.clone()]));
    oci::push_manifest(&c[a], REPO, "v1", OCI_MANIFEST, &manifest).await;

    // The manifest reaches B. Once the small config blob has landed there (background
    // queue), every further transfer in B can only be the layer's.
    common::cluster::wait_manifest(&c[b], REPO, "v1", &manifest, Duration::from_secs(5)).await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while !oci::blob_path(&c[b], &config.digest).exists() {
        assert!(Instant::now() < deadline, "config blob did not replicate to B in the background");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let before = cluster::metric(&c[b], "meridian_replication_transfers_total", &[]).await;

    // 40 concurrent GETs in B: all byte-identical, one transfer between them.
    let client = reqwest::Client::new();
    let url = c[b].url(&format!("/v2/{REPO}/blobs/{layer_digest}"));
    let gets = (0..40).map(|_| {
        let client = client.clone();
        let url = url.clone();
        async move {
            let r = client.get(&url).send().await.expect("GET");
            assert_eq!(r.status(), 200);
            let body = r.bytes().await.expect("body");
            format!("sha256:{}", hex::encode(Sha256::digest(&body)))
        }
    });
    let digests = futures::future::join_all(gets).await;
    assert!(digests.iter().all(|d| d == &layer_digest), "a reader in B got wrong bytes");
    let after = cluster::metric(&c[b], "meridian_replication_transfers_total", &[]).await;
    assert!(
        after - before <= 1.0,
        "40 readers of one blob must share one transfer (transfers before {before}, after {after})"
    );

    // C serves it too, byte-identical, right away.
    oci::assert_blob_content(&c[cc], REPO, &layer_digest, &layer_bytes).await;

    // The blob lands on B's and C's disks (fetch-through stored it, or the queue did).
    let deadline = Instant::now() + Duration::from_secs(20);
    while !(oci::blob_path(&c[b], &layer_digest).exists() && oci::blob_path(&c[cc], &layer_digest).exists()) {
        assert!(Instant::now() < deadline, "blob did not land in B and C");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // The config blob too (the background queue fetches what no client asked for).
    while !(oci::blob_path(&c[b], &config.digest).exists() && oci::blob_path(&c[cc], &config.digest).exists()) {
        assert!(Instant::now() < deadline, "config blob did not replicate in the background");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // With A gone, B serves from its own copy without a transfer.
    c.stop(a);
    let before = cluster::metric(&c[b], "meridian_replication_transfers_total", &[]).await;
    oci::assert_blob_content(&c[b], REPO, &layer_digest, &layer_bytes).await;
    let after = cluster::metric(&c[b], "meridian_replication_transfers_total", &[]).await;
    assert_eq!(before, after, "a local blob must not be fetched again");
}

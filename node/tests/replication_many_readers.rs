//! A hundred clients in region B ask at once for the same 256 MiB blob that only region A
//! holds: exactly one transfer from A happens (B's transfer counter), and every client
//! gets the correct bytes, streamed while the copy lands.

mod common;

use common::cluster::{self, Cluster, ClusterOptions};
use common::oci::{self, OCI_MANIFEST};
use futures::StreamExt;
use sha2::{Digest as _, Sha256};
use std::time::{Duration, Instant};

const REPO: &str = "many/readers";
const READERS: usize = 100;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn hundred_readers_share_one_transfer() {
    // 128 MB/s per source region: the 256 MiB transfer takes about two seconds, so all
    // readers arrive while it is in flight.
    let c = Cluster::start_with(ClusterOptions::new(3).env("MERIDIAN_REPLICATION_BANDWIDTH_LIMIT", "128000000")).await;
    let (a, b) = (0, 1);
    let layer_bytes = oci::test_bytes("many-readers", 256 << 20);
    let layer_digest = format!("sha256:{}", hex::encode(Sha256::digest(&layer_bytes)));
    let config = oci::push_empty_config(&c[a], REPO).await;
    let layer = oci::push_blob_desc(&c[a], REPO, oci::OCI_LAYER, &layer_bytes).await;
    drop(layer_bytes);
    let manifest = oci::to_bytes(&oci::image_manifest(&config, &[layer.clone()]));
    oci::push_manifest(&c[a], REPO, "v1", OCI_MANIFEST, &manifest).await;
    common::cluster::wait_manifest(&c[b], REPO, "v1", &manifest, Duration::from_secs(5)).await.unwrap();
    // Let the tiny config blob land first, so any further transfer in B is the layer's.
    let deadline = Instant::now() + Duration::from_secs(20);
    while !oci::blob_file_verified(&c[b], &config.digest) {
        assert!(Instant::now() < deadline, "config blob did not replicate to B");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let before = cluster::metric(&c[b], "meridian_replication_transfers_total", &[]).await;

    let client = reqwest::Client::builder().pool_max_idle_per_host(READERS).build().unwrap();
    let url = c[b].url(&format!("/v2/{REPO}/blobs/{layer_digest}"));
    let started = Instant::now();
    let readers = (0..READERS).map(|_| {
        let (client, url) = (client.clone(), url.clone());
        tokio::spawn(async move {
            let r = client.get(&url).send().await.map_err(|e| e.to_string())?;
            if r.status() != 200 {
                return Err(format!("status {}", r.status()));
            }
            let mut hasher = Sha256::new();
            let mut len = 0usize;
            let mut body = r.bytes_stream();
            while let Some(chunk) = body.next().await {
                let chunk = chunk.map_err(|e| e.to_string())?;
                len += chunk.len();
                hasher.update(&chunk);
            }
            Ok::<_, String>((len, format!("sha256:{}", hex::encode(hasher.finalize()))))
        })
    });
    let results = futures::future::join_all(readers).await;
    eprintln!("{READERS} readers done in {:?}", started.elapsed());
    for (i, r) in results.into_iter().enumerate() {
        let (len, digest) = r.expect("reader task").unwrap_or_else(|e| panic!("reader {i}: {e}"));
        assert_eq!(len, 256 << 20, "reader {i}: length");
        assert_eq!(digest, layer_digest, "reader {i}: bytes");
    }
    let after = cluster::metric(&c[b], "meridian_replication_transfers_total", &[]).await;
    assert!(after - before <= 1.0, "{READERS} readers must share one transfer (before {before}, after {after})");
    assert!(oci::blob_file_verified(&c[b], &layer_digest), "the shared transfer stored a verified copy in B");
}

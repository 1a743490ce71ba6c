//! A region serving a blob that stops sending mid-stream, its connection healthy (HTTP/2
//! pings still answered — a stuck disk, say), must not hold the transfer hostage: the
//! receiver gives up on it after 15 s and resumes from another holder at the same offset.
//! Before the stall timeout the transfer waited as long as the source did.

use chaos_tests::harness::cluster::{Cluster, ClusterOptions};
use chaos_tests::harness::oci::{get_blob, push_image_sized, wait_blob_files};
use std::time::{Duration, Instant};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transfer_resumes_elsewhere_when_its_source_stalls() {
    chaos_tests::harness::use_binary(env!("CARGO_BIN_EXE_meridian-chaos-node"));
    let c = Cluster::start_with(ClusterOptions::new(3).link_proxies().env("MERIDIAN_FAILPOINTS_API", "1")).await;
    let (origin, second, fetcher) = (0, 1, 2);

    // The fetcher stores nothing yet; the second region gets a full copy.
    c.failpoint(fetcher, "blob-write", "return").await;
    let image = push_image_sized(&c[origin], "team/app", "v1", "stall", &[6 << 20]).await;
    let layer = image.image.layers[0].digest.clone();
    wait_blob_files(&c[second], &[layer.clone()], Duration::from_secs(30)).await.expect("second region never got the layer");

    // The origin is the fetcher's nearest holder; it stalls after its first chunk for
    // longer than the client below waits.
    for (a, b) in [(fetcher, second), (second, fetcher)] {
        c.link(a, b).set_delay(Duration::from_millis(60));
    }
    tokio::time::sleep(Duration::from_secs(3)).await; // RTT probes run every 2 s
    c.failpoint(origin, "blob-serve-stall", "return(120000)").await;
    c.failpoint(fetcher, "blob-write", "off").await;

    let t = Instant::now();
    let got = tokio::time::timeout(Duration::from_secs(60), get_blob(&c[fetcher], "team/app", &layer)).await;
    let waited = t.elapsed();
    let (status, body) = got.expect("the pull waited on the stalled source for 60 s").expect("pull failed");
    assert_eq!(status, 200);
    assert_eq!(body, image.layer_bytes[0], "wrong bytes after the resume");
    let log = c[fetcher].log();
    assert!(log.contains("transfer stalled; resuming elsewhere"), "the fetcher never gave up on the stalled source");
    eprintln!("pull through a stalled source completed in {waited:?}");
    c.failpoint(origin, "blob-serve-stall", "off").await;
}

//! The background replication queue survives a crash: three `meridian` processes with
//! `replication_bandwidth_limit` = 2 MB/s; an image of three 4 MiB layers is pushed in A;
//! B is SIGKILLed while it is still fetching, then restarted on its data dir. Asserted:
//!
//! * when B was killed it lacked at least one layer (the test's premise);
//! * while B is down, `meridian admin replication status` on A reports it unreachable;
//! * after the restart B lands every blob of the image by itself (files hash to their
//!   digests) within 30 s, with background transfers only — nobody pulls from B;
//! * B's restart did not need the rescan to rediscover the blobs (no "backfill: queued"
//!   line since the restart): they were still in its persistent queue.

mod common;

use common::cluster::{self, Cluster, ClusterOptions};
use common::oci::{self, OCI_MANIFEST};
use std::time::{Duration, Instant};

const REPO: &str = "geo/crash";
const LIMIT: &str = "2000000";

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_queue_survives_a_crash_and_drains_after_restart() {
    let opts = ClusterOptions::new(3).env("MERIDIAN_REPLICATION_BANDWIDTH_LIMIT", LIMIT);
    let mut c = Cluster::start_with(opts).await;
    let (a, b) = (0, 1);

    let pushed = oci::push_image_sized(&c[a], REPO, "v1", "crash", &[4 << 20, 4 << 20, 4 << 20]).await;
    let digests = pushed.blob_digests();
    let pushed_at = Instant::now();

    // B has applied the manifest (so its queue holds the blobs) and has started fetching.
    cluster::wait_manifest(&c[b], REPO, "v1", &pushed.image.manifest, Duration::from_secs(10)).await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let received = cluster::metric(&c[b], "meridian_replication_bytes_received_total", &[]).await;
        if received >= (1 << 20) as f64 {
            eprintln!("B received {received} bytes {:.2}s after the push", pushed_at.elapsed().as_secs_f64());
            break;
        }
        assert!(Instant::now() < deadline, "B received only {received} bytes in 5 s");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let metrics = cluster::metrics_text(&c[b]).await;
    eprintln!(
        "B before the kill: queue_pending {} pending bytes {}",
        cluster::metric_sum(&metrics, "meridian_replication_queue_pending", &[]),
        cluster::metric_sum(&metrics, "meridian_replication_queue_pending_bytes", &[]),
    );
    c.kill9(b);
    let missing: Vec<&String> = digests.iter().filter(|d| !oci::blob_file_verified(&c[b], d)).collect();
    eprintln!("B lacks {} of {} blobs after the kill", missing.len(), digests.len());
    assert!(
        pushed.image.layers.iter().any(|l| missing.contains(&&l.digest)),
        "premise: B should still lack a layer when killed (bandwidth limit not applied?)"
    );

    // While B is down, A reports it unreachable.
    let regions = c.replication_status_at(a).await.unwrap();
    let row = regions.iter().find(|r| r["name"] == "r2").cloned().unwrap_or_default();
    assert_eq!(row["reachable"], false, "replication status on A while B is down: {regions:?}");

    tokio::time::sleep(Duration::from_millis(500)).await;
    c.restart(b).await;
    let took = oci::wait_blob_files(&c[b], &digests, Duration::from_secs(30)).await.unwrap_or_else(|e| {
        panic!("B did not drain its queue after the restart: {e}\nB since restart:\n{}", c[b].log_since_start())
    });
    eprintln!("B holds every blob {:.1}s after its restart", took.as_secs_f64());

    let metrics = cluster::metrics_text(&c[b]).await;
    let through = cluster::metric_sum(&metrics, "meridian_replication_transfers_total", &["reason=\"fetch_through\""]);
    let background = cluster::metric_sum(&metrics, "meridian_replication_transfers_total", &["reason=\"background\""]);
    assert_eq!(through, 0.0, "nobody pulled from B, yet it counted fetch-through transfers");
    assert!(background >= missing.len() as f64, "B landed {} blobs with {background} background transfers", missing.len());

    let since = c[b].log_since_start();
    let rescued: Vec<&str> = since.lines().filter(|l| l.contains("backfill: queued")).collect();
    assert!(
        rescued.is_empty(),
        "after the restart B's rescan had to queue blobs again (the persistent queue lost them): {rescued:?}"
    );
    let leftovers: Vec<_> = oci::files_under(&c[b].data_dir.join("uploads"))
        .into_iter()
        .filter(|p| p.file_name().is_some_and(|n| n.to_string_lossy().starts_with("fetch-")))
        .collect();
    if !leftovers.is_empty() {
        eprintln!("NOTE: partial fetch files left in B's uploads dir after the crash: {leftovers:?}");
    }

    for (layer, bytes) in pushed.image.layers.iter().zip(&pushed.layer_bytes) {
        oci::assert_blob_content(&c[b], REPO, &layer.digest, bytes).await;
    }
    oci::assert_manifest_content(&c[b], REPO, "v1", OCI_MANIFEST, &pushed.image.manifest).await;
}

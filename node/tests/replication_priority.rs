//! A waiting client comes first on the wire: two regions, eu's link to us capped at
//! 2 MB/s (the fault proxy's cap, shared by every connection on the link, as a real
//! bottleneck is). us gets an image of two 16 MiB layers, which eu starts copying in the
//! background; then clients pull from eu:
//!
//! * a layer eu is already copying in the background — the client joins that transfer,
//!   which is promoted (us is told, and sends it ahead of eu's other background streams);
//! * a layer of a new image eu has not started on (fetch-through, a client waiting).
//!
//! Asserted: both pulls give the right bytes; us held eu's background stream back while
//! a client of eu waited (`meridian_replication_background_hold_seconds`); eu promoted the
//! joined transfer; every blob lands at eu verified, no transfer failed and none stalled —
//! a held-back stream stays alive on its keep-alive chunks. How much sooner the client
//! gets its bytes is measured in `benches/waiting_client.sh`, not here.

mod common;

use common::cluster::{self, Cluster, ClusterOptions};
use common::oci;
use std::time::{Duration, Instant};

const US: usize = 0;
const EU: usize = 1;

/// The backlog layer eu is copying in the background now (its staging file has at least
/// `min_bytes`), if any.
fn in_flight_at_eu(c: &Cluster, layers: &[String], min_bytes: u64) -> Option<String> {
    oci::files_under(&c[EU].data_dir).into_iter().find_map(|path| {
        let name = path.file_name()?.to_str()?.to_string();
        let big_enough = std::fs::metadata(&path).map(|m| m.len() >= min_bytes).unwrap_or(false);
        layers.iter().find(|d| big_enough && name.starts_with(&format!("fetch-{}-", oci::encoded(d)))).cloned()
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_client_waiting_in_a_region_is_served_before_the_background_backlog() {
    let c = Cluster::start_with(ClusterOptions::new(2).names(&["us", "eu"]).link_proxies()).await;
    // eu dials us through this proxy: blob bytes from us to eu cross it.
    c.link(EU, US).set_bandwidth(2_000_000);

    let backlog = oci::push_image_sized(&c[US], "prio/backlog", "v1", "prio-backlog", &[16 << 20, 16 << 20]).await;
    let backlog_layers: Vec<String> = backlog.image.layers.iter().map(|l| l.digest.clone()).collect();

    // A client asks eu for a layer it is copying in the background.
    let deadline = Instant::now() + Duration::from_secs(30);
    let joined = loop {
        if let Some(d) = in_flight_at_eu(&c, &backlog_layers, 1 << 20) {
            break d;
        }
        assert!(Instant::now() < deadline, "eu never started copying the backlog");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let index = backlog_layers.iter().position(|d| d == &joined).expect("a backlog layer");
    let (status, body) = oci::get_blob(&c[EU], "prio/backlog", &joined).await.expect("GET the joined layer");
    assert_eq!(status, 200);
    assert_eq!(body, backlog.layer_bytes[index], "the joined layer's bytes");
    let promoted = cluster::metric(&c[EU], "meridian_replication_transfers_promoted_total", &[]).await;
    assert!(promoted >= 1.0, "eu did not promote the background transfer the client joined");

    // A new image: its layer is fetched through for the client, ahead of the backlog.
    let wanted = oci::push_image_sized(&c[US], "prio/wanted", "v1", "prio-wanted", &[8 << 20]).await;
    let layer = &wanted.image.layers[0].digest;
    let (status, body) = oci::get_blob(&c[EU], "prio/wanted", layer).await.expect("GET the wanted layer");
    assert_eq!(status, 200);
    assert_eq!(&body, &wanted.layer_bytes[0], "the wanted layer's bytes");

    let holds = cluster::metric(&c[US], "meridian_replication_background_hold_seconds_count", &[]).await;
    assert!(holds >= 1.0, "us never held eu's background stream back while a client of eu waited");

    // Nothing lost on the way: everything lands at eu, verified, without a failed or
    // stalled transfer.
    let mut digests = backlog.blob_digests();
    digests.extend(wanted.blob_digests());
    oci::wait_blob_files(&c[EU], &digests, Duration::from_secs(90)).await.expect("every blob at eu");
    let failures = cluster::metric(&c[EU], "meridian_replication_failures_total", &[]).await;
    assert_eq!(failures, 0.0, "a transfer failed at eu");
    let stalls = c[EU].log_lines_with(&["transfer stalled"]);
    assert!(stalls.is_empty(), "a held-back stream was given up on: {stalls:?}");
}

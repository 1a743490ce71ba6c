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
//!
//! A receiver of this version steps aside by itself (its background streams from a source
//! are dropped while its client's fetch from there runs: `yields` below), so the source's
//! own hold is asked for directly over gRPC, as a receiver of an older version would.

mod common;

use common::cluster::{self, Cluster, ClusterOptions};
use common::oci;
use futures::StreamExt;
use meridian_proto::replication::blob_transfer_client::BlobTransferClient;
use meridian_proto::replication::{ClientFetchDoneRequest, FetchBlobRequest};
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


    // Nothing lost on the way: everything lands at eu, verified, without a failed or
    // stalled transfer.
    let mut digests = backlog.blob_digests();
    digests.extend(wanted.blob_digests());
    oci::wait_blob_files(&c[EU], &digests, Duration::from_secs(90)).await.expect("every blob at eu");
    let failures = cluster::metric(&c[EU], "meridian_replication_failures_total", &[]).await;
    assert_eq!(failures, 0.0, "a transfer failed at eu");
    let stalls = c[EU].log_lines_with(&["transfer stalled"]);
    assert!(stalls.is_empty(), "a held-back stream was given up on: {stalls:?}");
    // Counted as each transfer lands.
    let holds = cluster::metric(&c[US], "meridian_replication_background_hold_seconds_count", &[]).await;
    let yields = cluster::metric(&c[EU], "meridian_replication_yields_total", &[]).await;
    eprintln!("us held eu's background streams {holds} times; eu's stepped aside {yields} times");
    assert!(yields >= 1.0, "eu's background stream from us never stepped aside while a client of eu waited");
}

/// A source holds a requester's background stream while a fetch that requester's client
/// waits for is in flight there, and until the requester says its bytes all arrived.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_source_holds_background_streams_until_the_clients_bytes_arrived() {
    const REQUESTER: u64 = 42;
    const SIZE: usize = 32 << 20;
    let c = Cluster::start_with(ClusterOptions::new(1).names(&["us"])).await;
    let backlog = oci::push_image_sized(&c[US], "hold/backlog", "v1", "hold-backlog", &[SIZE]).await;
    let wanted = oci::push_image_sized(&c[US], "hold/wanted", "v1", "hold-wanted", &[1 << 20]).await;
    let mut client = BlobTransferClient::connect(format!("http://{}", c[US].grpc_addr()))
        .await
        .expect("gRPC connection")
        .max_decoding_message_size(16 << 20);
    let fetch = |digest: &str, background: bool| FetchBlobRequest {
        digest: digest.to_string(),
        offset: 0,
        for_region_peer: false,
        background,
        requester: REQUESTER,
    };

    // A background stream starts; then a client's fetch by the same requester runs to its end.
    let mut backlog_stream =
        client.fetch_blob(fetch(&backlog.image.layers[0].digest, true)).await.expect("background fetch").into_inner();
    let first = backlog_stream.next().await.expect("a first chunk").expect("a chunk");
    let mut received = first.data.len();
    let wanted_digest = wanted.image.layers[0].digest.clone();
    let mut wanted_stream = client.fetch_blob(fetch(&wanted_digest, false)).await.expect("client's fetch").into_inner();
    let mut wanted_bytes = Vec::new();
    while let Some(chunk) = wanted_stream.next().await {
        wanted_bytes.extend(chunk.expect("client's chunk").data);
    }
    assert_eq!(wanted_bytes, wanted.layer_bytes[0], "the client's bytes");

    // Not told that the bytes arrived, the source holds the background stream: what it had
    // already sent arrives (a window or so), the rest does not — unheld, 32 MiB over
    // loopback take well under the three seconds read here.
    let read_until = tokio::time::Instant::now() + Duration::from_secs(3);
    while let Ok(Some(chunk)) = tokio::time::timeout_at(read_until, backlog_stream.next()).await {
        received += chunk.expect("background chunk").data.len();
    }
    assert!(received < SIZE, "the background stream was not held: all {received} bytes arrived");

    // Told, it lets the stream go on to its end.
    client
        .client_fetch_done(ClientFetchDoneRequest { digest: wanted_digest.clone(), requester: REQUESTER })
        .await
        .expect("ClientFetchDone");
    let rest = tokio::time::timeout(Duration::from_secs(20), async {
        while let Some(chunk) = backlog_stream.next().await {
            received += chunk.expect("background chunk").data.len();
        }
        received
    })
    .await
    .expect("the background stream went on once the client's bytes had arrived");
    assert_eq!(rest, SIZE, "the whole background blob");
    let holds = cluster::metric(&c[US], "meridian_replication_background_hold_seconds_count", &[]).await;
    assert!(holds >= 1.0, "no hold recorded");
}

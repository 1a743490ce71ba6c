//! Several nodes per region: two `meridian` nodes of region `eu` on one Garage bucket
//! prefix serve one regional endpoint, as behind a load balancer that sends every request
//! to the other node. Upload sessions continue across them (the session's requests are
//! passed on to the node that holds it), blobs pushed through one are usable through the
//! other, pulls are byte-identical from both and from a filesystem region, and a node of
//! the region killed mid-upload leaves the other serving — and delivering the region's
//! `replicated` events, which its lowest node delivered until then. Membership: a node whose store
//! differs from its region's is refused; `region remove` takes one node of a region.

mod common;

use common::cluster::{wait_manifest, Cluster, ClusterOptions};
use common::oci::{self, OCI_MANIFEST};
use common::receiver::Receiver;
use common::Node;
use std::time::{Duration, Instant};

const REPO: &str = "multi/app";

fn blob_digests(image: &oci::PushedImage) -> Vec<String> {
    std::iter::once(image.config.digest.clone()).chain(image.layers.iter().map(|l| l.digest.clone())).collect()
}

/// The same request path on another node (a load balancer's choice).
fn on(node: &Node, url: &str) -> String {
    let path = url.find("/v2/").map(|i| &url[i..]).unwrap_or(url);
    node.url(path)
}

async fn patch(url: &str, start: usize, chunk: &[u8]) -> reqwest::Response {
    let end = start + chunk.len() - 1;
    oci::client()
        .patch(url)
        .header("content-type", "application/octet-stream")
        .header("content-range", format!("{start}-{end}"))
        .header("content-length", chunk.len().to_string())
        .body(chunk.to_vec())
        .send()
        .await
        .expect("PATCH")
}

/// A cluster of `us` and `ap` (filesystem) and `eu` (Garage), plus a second node of `eu`
/// on the same prefix, all voters. Returns the cluster and the indexes of us, eu's first
/// and second node (ap is index 2).
async fn two_node_region() -> (Cluster, usize, usize, usize) {
    // Copies between regions capped at 8 MiB/s, so a 16 MiB layer is still arriving
    // while clients ask for it.
    let opts = ClusterOptions::new(3).names(&["us", "eu", "ap"]).s3_regions(&["eu"]).env("MERIDIAN_REPLICATION_BANDWIDTH_LIMIT", "8388608");
    let mut c = Cluster::start_with(opts).await;
    let eu2 = c.spawn_region_node("eu", "eu");
    c.wait_ready(eu2).await;
    let names: Vec<String> = ["us", "eu", "ap", "eu"].iter().map(|s| s.to_string()).collect();
    c.wait_voters(&names, Duration::from_secs(30)).await;
    // The region's nodes share out the copying once they have measured each other (RTT
    // probes every 2 s).
    let deadline = Instant::now() + Duration::from_secs(10);
    for (i, peer) in [(1, eu2), (eu2, 1)] {
        let label = format!("node=\"{}\"", c[peer].grpc_addr());
        while common::cluster::metric(&c[i], "meridian_region_rtt_seconds", &[&label]).await <= 0.0 {
            assert!(Instant::now() < deadline, "node {} never measured node {}", c[i].node_id, c[peer].node_id);
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    (c, 0, 1, eu2)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_nodes_of_a_region_serve_one_endpoint() {
    let (c, us, eu1, eu2) = two_node_region().await;

    // region list: both nodes, grouped under eu, reporting the same shared store.
    let regions = c.admin_json_at(us, &["region", "list"]).await;
    let rows = regions["regions"].as_array().expect("regions").clone();
    let names: Vec<&str> = rows.iter().map(|r| r["name"].as_str().unwrap_or("")).collect();
    assert_eq!(names, ["ap", "eu", "eu", "us"], "nodes grouped by region: {regions}");
    assert_ne!(rows[1]["node_id"], rows[2]["node_id"]);
    let store = rows[1]["shared_store"].as_str().unwrap_or("");
    assert!(store.starts_with("s3://") && store.contains("/eu at http://"), "eu's store: {regions}");
    assert_eq!(rows[2]["shared_store"], rows[1]["shared_store"]);
    assert_eq!(rows[3]["shared_store"], "", "us keeps blobs on its disk");

    // A chunked upload whose every request goes to the other node.
    let layer = oci::test_bytes("two-node-layer", 6 << 20);
    let layer_digest = oci::sha256_digest(&layer);
    let (url, _) = oci::start_upload(&c[eu1], REPO).await;
    let (a, b) = layer.split_at(2 << 20);
    let (b, rest) = b.split_at(3 << 20);
    let r = oci::expect_status(patch(&on(&c[eu2], &url), 0, a).await, 202).await;
    assert_eq!(oci::header(&r, "range").as_deref(), Some(&*format!("0-{}", a.len() - 1)));
    oci::expect_status(patch(&on(&c[eu1], &url), a.len(), b).await, 202).await;
    let (status, range) = oci::upload_status(&on(&c[eu2], &url)).await;
    assert_eq!((status, range.as_deref()), (204, Some(&*format!("0-{}", a.len() + b.len() - 1))), "status through eu2");
    let done = oci::client()
        .put(oci::with_query(&on(&c[eu2], &url), &format!("digest={layer_digest}")))
        .header("content-type", "application/octet-stream")
        .body(rest.to_vec())
        .send()
        .await
        .expect("PUT");
    oci::expect_status(done, 201).await;

    // The config goes in through eu1, the manifest through eu2: each node finds the blobs
    // the other linked into the repository.
    let config = oci::push_blob_desc(&c[eu1], REPO, oci::OCI_CONFIG, br#"{"two":"nodes"}"#).await;
    let layer_desc = oci::Descriptor::of(oci::OCI_LAYER, &layer);
    let manifest = oci::to_bytes(&oci::image_manifest(&config, &[layer_desc]));
    oci::push_manifest(&c[eu2], REPO, "v1", OCI_MANIFEST, &manifest).await;

    // Byte-identical pulls from both nodes, and from us and ap at once (fetched through
    // from the bucket).
    for i in [eu1, eu2, us, 2] {
        oci::assert_manifest_content(&c[i], REPO, "v1", OCI_MANIFEST, &manifest).await;
        oci::assert_blob_content(&c[i], REPO, &layer_digest, &layer).await;
        oci::assert_blob_content(&c[i], REPO, &config.digest, br#"{"two":"nodes"}"#).await;
    }

    // A blob pushed through eu1 and named by no manifest yet mounts into another
    // repository through eu2, and HEADs there.
    let loose = oci::test_bytes("two-node-loose", 4096);
    let loose_digest = oci::push_blob(&c[eu1], REPO, &loose).await;
    assert_eq!(oci::blob_status(&c[eu2], REPO, &loose_digest).await, 200, "eu2 sees eu1's upload");
    let mount = oci::client()
        .post(c[eu2].url(&format!("/v2/other/app/blobs/uploads/?mount={loose_digest}&from={REPO}")))
        .header("content-length", "0")
        .send()
        .await
        .expect("mount");
    oci::expect_status(mount, 201).await;
    oci::assert_blob_content(&c[eu1], "other/app", &loose_digest, &loose).await;

    // Deleted through eu2, gone through eu1 as well.
    let del = oci::client().delete(c[eu2].url(&format!("/v2/{REPO}/blobs/{loose_digest}"))).send().await.expect("DELETE");
    oci::expect_status(del, 202).await;
    assert_eq!(oci::blob_status(&c[eu1], REPO, &loose_digest).await, 404, "deleted through the other node");

    // One copy in the bucket, none on either node's disk.
    assert!(oci::holds_blob(&c[eu1], &layer_digest));
    for i in [eu1, eu2] {
        assert!(oci::files_under(&c[i].data_dir.join("blobs")).is_empty(), "{} wrote blobs to its disk", c[i].name);
    }

    // An image pushed in us, pulled through both eu nodes at once while eu copies it in
    // the background: the region fetches each blob once, whichever node a client asks.
    let before = transfers(&c, &[eu1, eu2]).await;
    let big = oci::test_bytes("two-node-from-us", 16 << 20);
    let big_config = oci::push_blob_desc(&c[us], REPO, oci::OCI_CONFIG, br#"{"from":"us"}"#).await;
    let big_layer = oci::push_blob_desc(&c[us], REPO, oci::OCI_LAYER, &big).await;
    let big_manifest = oci::to_bytes(&oci::image_manifest(&big_config, &[big_layer.clone()]));
    oci::push_manifest(&c[us], REPO, "from-us", OCI_MANIFEST, &big_manifest).await;
    let (one, two) =
        tokio::join!(oci::get_blob(&c[eu1], REPO, &big_layer.digest), oci::get_blob(&c[eu2], REPO, &big_layer.digest));
    for (node, got) in [(eu1, one), (eu2, two)] {
        let (status, body) = got.expect("GET");
        assert_eq!(status, 200, "through {}", c[node].node_id);
        assert!(body == big, "the layer through node {} differs", c[node].node_id);
    }
    oci::assert_blob_content(&c[2], REPO, &big_layer.digest, &big).await;
    let deadline = Instant::now() + Duration::from_secs(30);
    while !(oci::holds_blob(&c[eu1], &big_layer.digest) && oci::holds_blob(&c[eu1], &big_config.digest)) {
        assert!(Instant::now() < deadline, "the image did not land in eu's bucket");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(transfers(&c, &[eu1, eu2]).await - before, 2.0, "eu fetched each of the 2 blobs once");
    let relayed = common::cluster::metric(&c[eu1], "meridian_replication_region_relays_total", &[]).await
        + common::cluster::metric(&c[eu2], "meridian_replication_region_relays_total", &[]).await;
    assert!(relayed >= 1.0, "the node not fetching the layer served it from the other's transfer");
}

/// Transfers from other regions started by these nodes, together.
async fn transfers(c: &Cluster, nodes: &[usize]) -> f64 {
    let mut sum = 0.0;
    for &i in nodes {
        sum += common::cluster::metric(&c[i], "meridian_replication_transfers_total", &[]).await;
    }
    sum
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_node_killed_mid_upload_leaves_the_region_serving() {
    let (mut c, us, eu1, eu2) = two_node_region().await;
    // "Complete in eu" events: delivered by eu's lowest node (eu1) while it is up.
    let rx = Receiver::start(None).await;
    c.admin_json_at(us, &["webhook", "add", "eu-done", "--url", &rx.url(), "--actions", "replicated", "--region", "eu"]).await;
    let image = oci::push_image(&c[eu1], REPO, "before", "killed-node").await;
    let first = rx.wait_distinct(1, Duration::from_secs(20)).await;
    assert_eq!(first[0]["target"]["digest"], image.digest.as_str(), "{first:?}");

    // A session on eu1 with one chunk in; then eu1 dies.
    let layer = oci::test_bytes("killed-node-layer", 3 << 20);
    let digest = oci::sha256_digest(&layer);
    let (url, _) = oci::start_upload(&c[eu1], REPO).await;
    let (a, b) = layer.split_at(1 << 20);
    oci::expect_status(patch(&on(&c[eu1], &url), 0, a).await, 202).await;
    c.kill9(eu1);

    // eu2 cannot reach the session's node: a clean 503 (retry later), nothing kept.
    let r = patch(&on(&c[eu2], &url), a.len(), b).await;
    let err = oci::assert_oci_error(r, 503, "UNAVAILABLE").await;
    assert!(err.to_string().contains("upload session"), "{err}");

    // eu2 goes on serving: pulls of what eu1 pushed, and new pushes.
    for d in blob_digests(&image) {
        let (status, _) = oci::get_blob(&c[eu2], REPO, &d).await.expect("GET through eu2");
        assert_eq!(status, 200, "{d} through eu2 with eu1 down");
    }
    let pushed = oci::push_image(&c[eu2], REPO, "during", "killed-node-during").await;
    wait_manifest(&c[us], REPO, "during", &pushed.manifest, Duration::from_secs(10)).await.unwrap();
    // eu2 takes over eu's events once its probes find eu1 gone.
    let events = rx.wait_distinct(2, Duration::from_secs(30)).await;
    assert_eq!(events[1]["target"]["digest"], pushed.digest.as_str(), "{events:?}");
    assert_eq!(events[1]["region"], "eu");

    // eu1 back: the session continues where it was, through eu2.
    c.restart(eu1).await;
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let r = patch(&on(&c[eu2], &url), a.len(), b).await;
        if r.status() == 202 {
            break;
        }
        assert!(Instant::now() < deadline, "the session never continued: {}", r.status());
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let done = oci::client()
        .put(oci::with_query(&on(&c[eu2], &url), &format!("digest={digest}")))
        .header("content-length", "0")
        .send()
        .await
        .expect("PUT");
    oci::expect_status(done, 201).await;
    oci::assert_blob_content(&c[eu1], REPO, &digest, &layer).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_region_takes_only_nodes_on_its_store_and_removes_them_one_by_one() {
    let (mut c, us, eu1, eu2) = two_node_region().await;
    let image = oci::push_image(&c[eu2], REPO, "kept", "removal").await;

    // A node of eu on another prefix, and one on its own disk: both refused, neither listed.
    let wrong_prefix = c.spawn_region_node("eu", "elsewhere");
    let own_disk = c.add_member("eu", vec![c[us].grpc_url()]);
    c[own_disk].spawn();
    let deadline = Instant::now() + Duration::from_secs(30);
    let (a, b) = ("every node of a region must use the same store", "several nodes only when every node keeps its blobs");
    while c[wrong_prefix].log_lines_with(&[a]).is_empty() || c[own_disk].log_lines_with(&[b]).is_empty() {
        assert!(Instant::now() < deadline, "refusals not logged:\n{}\n{}", c[wrong_prefix].log_tail(20), c[own_disk].log_tail(20));
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let regions = c.regions_at(us).await.expect("region list");
    assert_eq!(regions.len(), 4, "{regions:?}");
    c.kill9(wrong_prefix);
    c.kill9(own_disk);

    // `region remove eu` must say which node.
    let out = c.admin_at(us, &["region", "remove", "eu"]).await;
    assert_ne!(out.code, 0, "{out}");
    assert!(out.text().contains("--node"), "{out}");

    // One node goes without a drain (its region keeps every blob); the other stays serving.
    let id = c[eu2].node_id.to_string();
    let out = c.admin_at(us, &["region", "remove", "eu", "--node", &id]).await;
    assert_eq!(out.code, 0, "{out}");
    assert!(out.text().contains("1 node(s) of eu remain"), "{out}");
    let regions = c.regions_at(us).await.expect("region list");
    let names: Vec<&str> = regions.iter().map(|r| r.name.as_str()).collect();
    assert_eq!(names, ["ap", "eu", "us"], "{regions:?}");
    for d in blob_digests(&image) {
        let (status, _) = oci::get_blob(&c[eu1], REPO, &d).await.expect("GET through eu1");
        assert_eq!(status, 200);
    }

    // With one node left, `region remove eu` means the region (no --node needed), and
    // the drain rule holds: a layer just pushed there (still being copied out at 8 MiB/s)
    // has its only copy in eu.
    let layer = oci::test_bytes("removal-sole-copy", 32 << 20);
    let config = oci::push_blob_desc(&c[eu1], REPO, oci::OCI_CONFIG, br#"{"sole":"copy"}"#).await;
    let layer = oci::push_blob_desc(&c[eu1], REPO, oci::OCI_LAYER, &layer).await;
    let manifest = oci::to_bytes(&oci::image_manifest(&config, &[layer]));
    oci::push_manifest(&c[eu1], REPO, "sole", OCI_MANIFEST, &manifest).await;
    let out = c.admin_at(us, &["region", "remove", "eu"]).await;
    assert_ne!(out.code, 0, "{out}");
    assert!(!out.text().contains("--node") && out.text().contains("region drain eu"), "{out}");
}

//! Links between regions, each directed link through its own fault proxy (`dial_via`).
//!
//! * Every member reaches every other member through the proxy configured for that link
//!   (Raft, RTT probes and forwarding all follow `dial_via`).
//! * Pull anywhere (promise 4) when a region lags: with the leader's link to one region
//!   delayed, that region has not applied a push when the pushing client gets its `201`.
//!   A pull there right away still gets the manifest (by tag and by digest, GET and HEAD)
//!   and its blobs — the region catches up with the leader before it would answer
//!   `MANIFEST_UNKNOWN` / `BLOB_UNKNOWN`. Content that was never pushed is still unknown.

mod common;

use common::cluster::{metric, Cluster, ClusterOptions};
use common::oci::{self, OCI_MANIFEST};
use std::time::{Duration, Instant};

const REPO: &str = "links/app";

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_lagging_region_catches_up_instead_of_answering_unknown() {
    let mut c = Cluster::start_with(ClusterOptions::new(3).link_proxies()).await;

    // Every directed link carries traffic: Raft from the leader, RTT probes from everyone.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let idle: Vec<(usize, usize)> = (0..3)
            .flat_map(|i| (0..3).filter(move |&j| j != i).map(move |j| (i, j)))
            .filter(|&(i, j)| c.link(i, j).connections() == 0)
            .collect();
        if idle.is_empty() {
            break;
        }
        assert!(Instant::now() < deadline, "links never used (dial_via not followed?): {idle:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    let leader = c.leader().await;
    let lagging = (0..3).find(|&i| i != leader).expect("a follower");
    // What the leader sends to `lagging` arrives 400 ms late each way; `lagging`'s own
    // calls to the leader (catch-up, blob fetches) are not delayed.
    c.link(leader, lagging).set_delay(Duration::from_millis(400));
    let client = oci::client();

    for round in 0..3 {
        let tag = format!("v{round}");
        let image = oci::push_image(&c[leader], REPO, &tag, &format!("links-{round}")).await;
        let applied_leader = metric(&c[leader], "meridian_raft_applied_index", &[]).await;
        let applied_lagging = metric(&c[lagging], "meridian_raft_applied_index", &[]).await;
        assert!(
            applied_lagging < applied_leader,
            "premise: {} had already applied the push ({applied_lagging} vs leader {applied_leader})",
            c[lagging].name
        );

        // By tag and by digest, GET and HEAD: never MANIFEST_UNKNOWN.
        for reference in [tag.as_str(), image.digest.as_str()] {
            let resp = oci::get_manifest(&c[lagging], REPO, reference).await;
            let resp = oci::expect_status(resp, 200).await;
            assert_eq!(resp.bytes().await.expect("body").as_ref(), image.manifest.as_slice(), "{reference}");
        }
        let head = client
            .head(c[lagging].url(&format!("/v2/{REPO}/manifests/{tag}")))
            .header("accept", OCI_MANIFEST)
            .send()
            .await
            .expect("HEAD");
        assert_eq!(head.status(), 200);
        assert_eq!(oci::header(&head, "docker-content-digest").as_deref(), Some(image.digest.as_str()));
        // The layer too (fetched through from the leader's region).
        let layer = &image.layers[0];
        let resp = client.get(c[lagging].url(&format!("/v2/{REPO}/blobs/{}", layer.digest))).send().await.expect("GET");
        let resp = oci::expect_status(resp, 200).await;
        let body = resp.bytes().await.expect("blob body");
        assert_eq!(oci::sha256_digest(&body), layer.digest);
    }

    // Never pushed: still unknown after catching up.
    let missing = oci::sha256_digest(b"never pushed");
    oci::assert_oci_error(oci::get_manifest(&c[lagging], REPO, &missing).await, 404, "MANIFEST_UNKNOWN").await;
    oci::assert_oci_error(oci::get_manifest(&c[lagging], REPO, "no-such-tag").await, 404, "MANIFEST_UNKNOWN").await;
    let resp = client.get(c[lagging].url(&format!("/v2/{REPO}/blobs/{missing}"))).send().await.expect("GET");
    oci::assert_oci_error(resp, 404, "BLOB_UNKNOWN").await;
    c.link(leader, lagging).heal();
}

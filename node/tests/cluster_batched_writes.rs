//! Many concurrent writes across regions, batched at the leader: three `meridian`
//! processes 200 ms apart (fault proxies on every link), 96 manifest PUTs by tag at once,
//! spread over the three regions. Every PUT gets its 201 with its digest, every region
//! then serves every tag with the right digest to 96 linearizable reads at once, and the
//! leader's `meridian_raft_commands_per_entry` shows entries that carried more than one
//! write — many writes shared one log append and one round of replication.

mod common;

use common::cluster::{self, http_client, try_get_manifest, Cluster, ClusterOptions};
use common::oci::OCI_MANIFEST;
use std::time::Duration;

const REPO: &str = "team/batched";
const WRITES: usize = 96;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_pushes_across_regions_share_entries_and_all_land() {
    // Wide-area timings (the defaults), with regions 200 ms apart: a commit takes long
    // enough that writes queue behind the leader's 16 entry slots even on 2 busy cores.
    let mut c = Cluster::start_with(
        ClusterOptions::new(3).link_proxies().wide_area_raft(),
    )
    .await;
    for from in 0..3 {
        for to in (0..3).filter(|&t| t != from) {
            c.link(from, to).set_delay(Duration::from_millis(100));
        }
    }
    let leader = c.leader().await;
    // Batches are formed once the leader's probes found every member able to apply them.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while cluster::metric(&c[leader], "meridian_raft_batching", &[]).await != 1.0 {
        assert!(tokio::time::Instant::now() < deadline, "batching never enabled at the leader");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let (config, layer) = cluster::seed_blobs(&[&c[0], &c[1], &c[2]], REPO, "batched").await;
    let entries_before = cluster::metric(&c[leader], "meridian_raft_commands_per_entry_count", &[]).await;
    let commands_before = cluster::metric(&c[leader], "meridian_raft_commands_per_entry_sum", &[]).await;

    let client = http_client(Duration::from_secs(30));
    let pushes = (0..WRITES).map(|i| {
        let client = client.clone();
        let url = c[i % 3].url(&format!("/v2/{REPO}/manifests/t{i}"));
        let body = cluster::numbered_manifest(&config, &layer, &format!("write-{i}"));
        async move {
            let reply = client.put(url).header("content-type", OCI_MANIFEST).body(body.clone()).send().await;
            (i, body, reply)
        }
    });
    let mut expected = Vec::new();
    for (i, body, reply) in futures::future::join_all(pushes).await {
        let reply = reply.unwrap_or_else(|e| panic!("PUT t{i}: {e}"));
        let (status, digest) = (reply.status().as_u16(), common::oci::header(&reply, "docker-content-digest"));
        assert_eq!(status, 201, "PUT t{i} at {}: {}", c[i % 3].name, reply.text().await.unwrap_or_default());
        let digest = digest.expect("Docker-Content-Digest");
        assert_eq!(digest, common::oci::sha256_digest(&body), "t{i}: the digest of the bytes sent");
        expected.push((i, digest));
    }

    // All the linearizable reads at once in each region: the leader confirms its
    // leadership once for all the reads waiting (one heartbeat round each would queue them
    // rounds behind each other on every follower link and time out).
    let tags: Vec<String> = expected.iter().map(|(i, _)| format!("t{i}")).collect();
    for node in 0..3 {
        let reads = tags.iter().map(|tag| try_get_manifest(&client, &c[node], REPO, tag, true));
        let replies = futures::future::join_all(reads).await;
        for ((i, digest), r) in expected.iter().zip(replies) {
            let r = r.expect("GET");
            assert_eq!(r.status, 200, "{} serves t{i}: {}", c[node].name, r.text());
            assert_eq!(r.header("docker-content-digest").as_ref(), Some(digest), "{}: t{i}", c[node].name);
        }
    }

    let entries = cluster::metric(&c[leader], "meridian_raft_commands_per_entry_count", &[]).await - entries_before;
    let commands = cluster::metric(&c[leader], "meridian_raft_commands_per_entry_sum", &[]).await - commands_before;
    eprintln!("{commands} commands in {entries} entries at the leader");
    assert!(commands >= WRITES as f64, "every PUT went through the leader's queue: {commands}");
    assert!(entries < commands, "no entry carried more than one write: {entries} entries for {commands} commands");
}

//! Pipelined Raft appends over slow links that lose their connections. The leader sends a
//! follower's log entries behind unanswered ones, on one ordered `AppendStream` per
//! follower (the patched openraft's pipelining, `node/vendor/openraft/MERIDIAN.md`); when
//! a link's connections are reset, the request lost and everything behind it are sent
//! again from the last acknowledged entry. Asserted: every write the leader acknowledged
//! is served, byte for byte, in every region; and the leader did send appends while
//! earlier ones to the same follower were unanswered (its
//! `meridian_raft_appends_in_flight` histogram has samples above 1 for each follower) —
//! without pipelining every sample is 1.

use chaos_tests::harness::cluster::{self, http_client, Cluster, ClusterOptions};
use std::time::Duration;

const REPO: &str = "pipelined/app";
const WRITERS: usize = 16;
const WRITES_EACH: usize = 12;

/// The `_bucket{le="1"}` and `_count` samples of the in-flight histogram for `follower`.
fn in_flight_samples(metrics: &str, follower: u64) -> (u64, u64) {
    let label = format!("follower=\"{follower}\"");
    let value = |prefix: &str, extra: &str| {
        metrics
            .lines()
            .find(|l| l.starts_with(prefix) && l.contains(&label) && l.contains(extra))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse::<f64>().ok())
            .map(|v| v as u64)
            .unwrap_or(0)
    };
    (value("meridian_raft_appends_in_flight_bucket", "le=\"1\""), value("meridian_raft_appends_in_flight_count", ""))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn appends_go_pipelined_over_slow_links_and_survive_connection_resets() {
    chaos_tests::harness::use_binary(env!("CARGO_BIN_EXE_meridian-chaos-node"));
    let mut c = Cluster::start_with(ClusterOptions::new(3).link_proxies().wide_area_raft()).await;
    let leader = c.leader().await;
    let (config, layer) = cluster::seed_blobs(&[&c[leader]], REPO, "pipelined").await;
    // 60 ms each way on every link: an append is answered 120 ms after it was sent.
    for a in 0..3 {
        for b in (0..3).filter(|&b| b != a) {
            c.link(a, b).set_delay(Duration::from_millis(60));
        }
    }

    let mut writers = Vec::new();
    for w in 0..WRITERS {
        let base = c[leader].base.clone();
        let (config, layer) = (config.clone(), layer.clone());
        writers.push(tokio::spawn(async move {
            let client = http_client(Duration::from_secs(20));
            let mut acknowledged = Vec::new();
            for i in 0..WRITES_EACH {
                let tag = format!("w{w}-{i}");
                let body = cluster::numbered_manifest(&config, &layer, &tag);
                let sent = client
                    .put(format!("{base}/v2/{REPO}/manifests/{tag}"))
                    .header("content-type", "application/vnd.oci.image.manifest.v1+json")
                    .body(body.clone())
                    .send()
                    .await;
                // A reset may cost the leader its quorum for a moment: such a write is
                // refused (or times out) and is simply not counted.
                if let Ok(resp) = sent {
                    if resp.status().as_u16() == 201 {
                        acknowledged.push((tag, body));
                    }
                }
            }
            acknowledged
        }));
    }

    // Meanwhile the leader's links to each follower lose their connections in turn.
    let followers: Vec<usize> = (0..3).filter(|&i| i != leader).collect();
    let mut resets: usize = 0;
    while !writers.iter().all(|w| w.is_finished()) {
        tokio::time::sleep(Duration::from_millis(250 + 150 * (resets % 3) as u64)).await;
        c.link(leader, followers[resets % 2]).reset_connections();
        resets += 1;
    }
    let mut acknowledged = Vec::new();
    for w in writers {
        acknowledged.extend(w.await.expect("writer"));
    }
    eprintln!("{} of {} writes acknowledged, {resets} connection resets", acknowledged.len(), WRITERS * WRITES_EACH);
    assert!(
        acknowledged.len() >= WRITERS * WRITES_EACH / 2,
        "only {} of {} writes were acknowledged",
        acknowledged.len(),
        WRITERS * WRITES_EACH
    );

    for &f in &followers {
        for (tag, body) in &acknowledged {
            if let Err(e) = cluster::wait_manifest(&c[f], REPO, tag, body, Duration::from_secs(30)).await {
                c.dump_logs(40);
                panic!("{} does not serve acknowledged {REPO}:{tag}: {e}", c[f].name);
            }
        }
    }

    let metrics = http_client(Duration::from_secs(5))
        .get(c[leader].url("/metrics"))
        .send()
        .await
        .expect("GET /metrics")
        .text()
        .await
        .expect("metrics text");
    for &f in &followers {
        let node_id = c[f].node_id;
        let (alone, all) = in_flight_samples(&metrics, node_id);
        eprintln!("appends to node {node_id}: {all}, {} sent behind unanswered ones", all - alone);
        assert!(all > alone, "every append to node {node_id} waited for the one before ({all} sent); metrics:\n{metrics}");
    }
}

//! A region that was down while the log was compacted catches up through a snapshot.
//!
//! Three `meridian` processes with `raft.snapshot_every = 50` and `raft.max_logs_kept = 10`.
//! Region C (a follower) is stopped; ~300 manifest writes go to the leader A (so A
//! snapshots several times and purges the log C would need); C is restarted on its data
//! dir. Asserted:
//!
//! * the leader's snapshot index passed C's last applied index while C was down (the
//!   entries C misses are no longer in the log);
//! * C catches up (its `/readyz` and `status` last_applied reach the leader's);
//! * C installed a snapshot: its log since the restart has a snapshot-install message,
//!   or its `admin status` snapshot_index lies beyond what it had applied before;
//! * C then serves every tag with the same digest as A, every written manifest by
//!   digest byte-identical, and the same tags list.

mod common;

use common::cluster::{self, http_client, Cluster, ClusterOptions};
use common::oci::{self, OCI_MANIFEST};
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

const REPO: &str = "snap/app";
const WRITES: usize = 300;
const TAGS: usize = 60;

fn num(v: &serde_json::Value, key: &str) -> u64 {
    v[key].as_u64().unwrap_or_else(|| panic!("status has no numeric {key}: {v}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn stopped_region_catches_up_through_a_snapshot() {
    let opts = ClusterOptions::new(3).raft("snapshot_every", "50").raft("max_logs_kept", "10");
    let mut c = Cluster::start_with(opts).await;
    let a = c.leader().await;
    let cc = (0..3).rev().find(|&i| i != a).unwrap();
    eprintln!("A (leader) = {}, C = {}", c[a].name, c[cc].name);

    let (config, layer) = cluster::seed_blobs(&[&c[a]], REPO, "snapshot").await;
    // A few writes C sees before it goes down.
    for i in 0..5 {
        let body = cluster::numbered_manifest(&config, &layer, &format!("before-{i}"));
        oci::push_manifest(&c[a], REPO, "before", OCI_MANIFEST, &body).await;
    }
    let before_body = cluster::numbered_manifest(&config, &layer, "before-4");
    cluster::wait_manifest(&c[cc], REPO, "before", &before_body, Duration::from_secs(5)).await.unwrap();
    let c_before = c.status_at(cc).await.expect("status of C");
    let c_applied_before = num(&c_before, "last_applied");
    eprintln!("C before stop: last_applied {c_applied_before}, snapshot_index {}", num(&c_before, "snapshot_index"));

    c.stop(cc);

    // ~300 writes through A, 4 concurrent streams over 60 tags.
    let t0 = Instant::now();
    let mut tasks = Vec::new();
    for s in 0..4usize {
        let node_base = c[a].base.clone();
        let (config, layer) = (config.clone(), layer.clone());
        tasks.push(tokio::spawn(async move {
            let client = http_client(Duration::from_secs(10));
            let mut out = Vec::new();
            for i in (s..WRITES).step_by(4) {
                let tag = format!("t{}", i % TAGS);
                let body = cluster::numbered_manifest(&config, &layer, &format!("w{i}"));
                let resp = client
                    .put(format!("{node_base}/v2/{REPO}/manifests/{tag}"))
                    .header("content-type", OCI_MANIFEST)
                    .body(body.clone())
                    .send()
                    .await
                    .expect("PUT manifest");
                assert_eq!(resp.status().as_u16(), 201, "write {i}: {}", resp.text().await.unwrap_or_default());
                out.push((i, tag, body));
            }
            out
        }));
    }
    let mut written = Vec::new();
    for t in tasks {
        written.extend(t.await.expect("writer"));
    }
    written.sort_by_key(|w| w.0);
    eprintln!("{} writes acknowledged by {} in {:?}", written.len(), c[a].name, t0.elapsed());
    // Tags are written by one stream each (i % 60 fixes i % 4), so the last index wins.
    let mut expected: BTreeMap<String, Vec<u8>> = BTreeMap::new();
    for (_, tag, body) in &written {
        expected.insert(tag.clone(), body.clone());
    }

    let a_status = c.status_at(a).await.expect("status of A");
    eprintln!(
        "A after writes: last_applied {}, last_log_index {}, snapshot_index {}",
        num(&a_status, "last_applied"),
        num(&a_status, "last_log_index"),
        num(&a_status, "snapshot_index")
    );
    assert!(
        num(&a_status, "snapshot_index") > c_applied_before + 10,
        "the leader's snapshot ({}) should be well past C's last applied index ({c_applied_before}) \
         with snapshot_every = 50; status: {a_status}",
        num(&a_status, "snapshot_index")
    );

    c.restart(cc).await;
    let target = num(&a_status, "last_applied");
    let deadline = Instant::now() + Duration::from_secs(20);
    let c_after = loop {
        let s = c.status_at(cc).await;
        if let Ok(s) = &s {
            if num(s, "last_applied") >= target {
                break s.clone();
            }
        }
        if Instant::now() > deadline {
            panic!("C did not reach last_applied {target} within 20 s; last status: {s:?}");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    eprintln!(
        "C after restart: last_applied {}, snapshot_index {}",
        num(&c_after, "last_applied"),
        num(&c_after, "snapshot_index")
    );

    let log = c[cc].log_since_start();
    let snapshot_lines: Vec<&str> = log
        .lines()
        .filter(|l| {
            let l = l.to_ascii_lowercase();
            l.contains("snapshot") && (l.contains("install") || l.contains("received") || l.contains("receiv"))
        })
        .collect();
    eprintln!("C's snapshot log lines since restart:\n{}", snapshot_lines.join("\n"));
    assert!(
        !snapshot_lines.is_empty() || num(&c_after, "snapshot_index") > c_applied_before + 10,
        "C shows no sign of installing a snapshot: no snapshot-install line in its log and \
         snapshot_index {} (applied before stop: {c_applied_before})",
        num(&c_after, "snapshot_index")
    );

    // C serves the same data as A.
    let client = http_client(Duration::from_secs(5));
    for (tag, body) in &expected {
        oci::assert_manifest_content(&c[a], REPO, tag, OCI_MANIFEST, body).await;
        let took = cluster::wait_manifest(&c[cc], REPO, tag, body, Duration::from_secs(5))
            .await
            .unwrap_or_else(|e| panic!("C: {e}"));
        assert!(took < Duration::from_secs(5));
    }
    for (i, _, body) in &written {
        let d = oci::sha256_digest(body);
        let r = cluster::try_get_manifest(&client, &c[cc], REPO, &d, false).await.expect("GET");
        assert!(r.status == 200 && &r.body == body, "C: write {i} ({d}) → {}", r.status);
    }
    let mut tags_a = oci::list_tags(&c[a], REPO).await.expect("tags in A");
    let mut tags_c = oci::list_tags(&c[cc], REPO).await.expect("tags in C");
    tags_a.sort();
    tags_c.sort();
    assert_eq!(tags_a, tags_c, "tags list differs between A and C");
    assert_eq!(tags_a.len(), TAGS + 1);
}

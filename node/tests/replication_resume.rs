//! A transfer whose source dies mid-stream resumes at another holder from the last byte
//! received. Three `meridian` processes with `replication_bandwidth_limit` = 4 MB/s.
//!
//! B is paused (SIGSTOP) while a 16 MiB layer is pushed in A and C fetches it, so that
//! afterwards A and C both hold it and B lacks it. B is resumed and the layer is
//! requested in B (fetch-through, sharing B's transfer of it). As soon as one holder has
//! served B a few MiB, that holder is SIGKILLed (A or C — whichever B picked; holders are
//! tried nearest-first, so the test watches `meridian_replication_bytes_served_total` on
//! both). Asserted:
//!
//! * the GET in B returns 200 and exactly the pushed bytes;
//! * B's log shows the break with a non-zero `offset=`, and its "replica landed" line for
//!   the layer shows `resumes=1` (or more) and both holders among the sources;
//! * B's `meridian_replication_resumes_total` counts it and B's file hashes to the digest.

mod common;

use common::cluster::{self, Cluster, ClusterOptions};
use common::oci;
use std::time::{Duration, Instant};

const REPO: &str = "geo/resume";
const LIMIT: &str = "4000000";
const SERVED: &str = "meridian_replication_bytes_served_total";

/// The number after `key=` in a log line.
fn field_u64(line: &str, key: &str) -> Option<u64> {
    let at = line.find(&format!("{key}="))? + key.len() + 1;
    line[at..].chars().take_while(|c| c.is_ascii_digit()).collect::<String>().parse().ok()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_broken_transfer_resumes_at_another_holder() {
    // B's copy may start in the background (then a client joins it): a 4 MiB window keeps
    // the source from handing over all 16 MiB before the kill, as the default 16 MiB would.
    let opts = ClusterOptions::new(3)
        .env("MERIDIAN_REPLICATION_BANDWIDTH_LIMIT", LIMIT)
        .env("MERIDIAN_REPLICATION_WINDOW_MIB", "4");
    let mut c = Cluster::start_with(opts).await;
    let (a, b, cc) = (0, 1, 2);

    c.pause(b);
    let pushed = oci::push_image_sized(&c[a], REPO, "v1", "resume", &[16 << 20]).await;
    let layer = pushed.image.layers[0].digest.clone();
    let took = oci::wait_blob_files(&c[cc], &pushed.blob_digests(), Duration::from_secs(20)).await.unwrap();
    eprintln!("C holds the layer {:.1}s after the push", took.as_secs_f64());
    c.wait_image_complete(a, &format!("{REPO}:v1"), &["r1", "r3"], Duration::from_secs(10)).await.unwrap();

    let served_before = [cluster::metric(&c[a], SERVED, &[]).await, cluster::metric(&c[cc], SERVED, &[]).await];
    c.resume(b);
    cluster::wait_manifest(&c[b], REPO, "v1", &pushed.image.manifest, Duration::from_secs(10)).await.unwrap();
    assert!(!oci::blob_path(&c[b], &layer).exists(), "premise: B should not hold the layer yet");

    let get = {
        let node_url = c[b].url(&format!("/v2/{REPO}/blobs/{layer}"));
        tokio::spawn(async move {
            let t0 = Instant::now();
            let resp = reqwest::get(&node_url).await.map_err(|e| e.to_string())?;
            let status = resp.status().as_u16();
            let body = resp.bytes().await.map_err(|e| format!("body after {:.1}s: {e}", t0.elapsed().as_secs_f64()))?;
            Ok::<_, String>((status, body.to_vec(), t0.elapsed()))
        })
    };

    // Kill whichever holder is streaming to B once it has sent a few MiB.
    let deadline = Instant::now() + Duration::from_secs(10);
    let victim = loop {
        let served = [cluster::metric(&c[a], SERVED, &[]).await, cluster::metric(&c[cc], SERVED, &[]).await];
        let delta = [served[0] - served_before[0], served[1] - served_before[1]];
        if let Some(k) = (0..2).find(|&k| delta[k] >= (6 << 20) as f64) {
            eprintln!("served to B so far: A {} bytes, C {} bytes", delta[0], delta[1]);
            break [a, cc][k];
        }
        assert!(Instant::now() < deadline, "no holder served B 6 MiB within 10 s (A {}, C {})", delta[0], delta[1]);
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let survivor = if victim == a { cc } else { a };
    c.kill9(victim);

    let (status, body, took) = get.await.unwrap().unwrap_or_else(|e| panic!("GET in B failed after the kill: {e}"));
    eprintln!("GET in B: {status}, {} bytes in {:.1}s", body.len(), took.as_secs_f64());
    assert_eq!(status, 200);
    assert_eq!(body.len(), pushed.layer_bytes[0].len(), "length of the body B served");
    assert!(body == pushed.layer_bytes[0], "B served bytes that differ from the pushed layer");

    let took = oci::wait_blob_files(&c[b], &[layer.clone()], Duration::from_secs(20)).await.unwrap();
    eprintln!("B holds a verified copy {:.1}s later", took.as_secs_f64());

    let broke = c[b].log_lines_with(&["transfer broke"]);
    let landed = c[b].log_lines_with(&["replica landed", &layer]);
    eprintln!("B's log:\n{}\n{}", broke.join("\n"), landed.join("\n"));
    let (victim_name, survivor_name) = (c[victim].name.clone(), c[survivor].name.clone());
    assert!(
        broke.iter().any(|l| l.contains(&victim_name) && field_u64(l, "offset").is_some_and(|o| o > 0)),
        "B's log has no 'transfer broke' line for {victim_name} with a non-zero offset: {broke:?}"
    );
    let line = landed.last().unwrap_or_else(|| panic!("no 'replica landed' line for the layer in B"));
    assert!(field_u64(line, "resumes").is_some_and(|r| r >= 1), "landed without a resume: {line}");
    assert!(line.contains(&victim_name) && line.contains(&survivor_name), "sources should be {victim_name} then {survivor_name}: {line}");
    let resumes = cluster::metric(&c[b], "meridian_replication_resumes_total", &[]).await;
    assert!(resumes >= 1.0, "B's meridian_replication_resumes_total is {resumes}");
}

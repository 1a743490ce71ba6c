//! A region that joins after the images were pushed gets every blob without anyone
//! pulling: three `meridian` processes, three images pushed in A, then region D joins.
//! Two ways of joining:
//!
//! * `..._through_the_log`: D receives the log entries and applies the manifest writes
//!   itself (which queue the blobs it lacks);
//! * `..._through_a_snapshot`: the log is compacted first (`snapshot_every = 10`,
//!   `max_logs_kept = 2` and an explicit `admin snapshot` on the leader), so D learns the
//!   blob table from a snapshot install and applies no manifest write: only the worker's
//!   rescan for missing blobs (backfill) can queue them.
//!
//! Asserted in both:
//!
//! * within 30 s of D being ready, D holds a file for every blob of the three images and
//!   each hashes to its digest (nobody GETs anything from D meanwhile);
//! * those transfers were background ones (`reason="background"`), none fetch-through;
//! * `meridian admin replication image` reports every image complete in D and
//!   `replication status` reports D with nothing pending (JSON and table); a malformed
//!   reference is a usage error (exit 2), an unknown tag the server's error (exit 1);
//! * GETs in D (manifests and blobs) are byte-identical to what was pushed in A.

mod common;

use common::cluster::{self, Cluster, ClusterOptions};
use common::oci::{self, SizedImage, OCI_MANIFEST};
use std::time::{Duration, Instant};

const REPO: &str = "geo/backfill";

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_region_joining_later_gets_every_blob_through_the_log() {
    joining_region_gets_every_blob(false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_region_joining_later_gets_every_blob_through_a_snapshot() {
    joining_region_gets_every_blob(true).await;
}

async fn joining_region_gets_every_blob(via_snapshot: bool) {
    let opts = match via_snapshot {
        true => ClusterOptions::new(3).raft("snapshot_every", "10").raft("max_logs_kept", "2"),
        false => ClusterOptions::new(3),
    };
    let mut c = Cluster::start_with(opts).await;
    let a = 0;

    // Three images, each a config and two layers of different sizes.
    let mut images: Vec<SizedImage> = Vec::new();
    for (n, sizes) in [[300 << 10, 1 << 20], [2 << 20, 4096], [700 << 10, 3 << 20]].iter().enumerate() {
        images.push(oci::push_image_sized(&c[a], REPO, &format!("v{n}"), &format!("backfill-{n}"), sizes).await);
    }
    let digests: Vec<String> = images.iter().flat_map(|i| i.blob_digests()).collect();
    eprintln!("pushed {} images, {} blobs, in {}", images.len(), digests.len(), c[a].name);

    // B and C land them too (so D may fetch from any region); then compact the log.
    for i in 1..3 {
        oci::wait_blob_files(&c[i], &digests, Duration::from_secs(20)).await.unwrap();
    }
    if via_snapshot {
        let leader = c.leader().await;
        let out = c.admin_at(leader, &["snapshot"]).await;
        assert_eq!(out.code, 0, "admin snapshot on the leader: {out}");
    }

    let d = c.join_new_member("r4").await;
    let ready_at = Instant::now();
    let took = match oci::wait_blob_files(&c[d], &digests, Duration::from_secs(30)).await {
        Ok(t) => t,
        Err(e) => {
            // Say when the blobs did arrive, if they do soon after.
            let late = oci::wait_blob_files(&c[d], &digests, Duration::from_secs(15)).await;
            panic!(
                "D did not get every blob by itself within 30 s of being ready: {e}\n\
                 (all there {:.1}s after it was ready: {})\nD's backfill/replica log lines:\n{}\n{}",
                ready_at.elapsed().as_secs_f64(),
                late.is_ok(),
                c[d].log_lines_with(&["backfill"]).join("\n"),
                c[d].log_lines_with(&["replica"]).join("\n"),
            )
        }
    };
    eprintln!("D holds all {} blobs {:.1}s after it was ready", digests.len(), took.as_secs_f64());
    let installed = !c[d].log_lines_with(&["install_full_snapshot"]).is_empty();
    eprintln!("D installed a snapshot: {installed}");
    if via_snapshot {
        assert!(installed, "premise: D should have caught up through a snapshot");
    }

    let metrics = cluster::metrics_text(&c[d]).await;
    let background = cluster::metric_sum(&metrics, "meridian_replication_transfers_total", &["reason=\"background\""]);
    let through = cluster::metric_sum(&metrics, "meridian_replication_transfers_total", &["reason=\"fetch_through\""]);
    assert_eq!(through, 0.0, "nobody pulled from D, yet it counted fetch-through transfers");
    assert!(
        background >= digests.len() as f64,
        "D landed {} blobs but counted {background} background transfers",
        digests.len()
    );

    // The admin CLI sees D complete for every image, and nothing pending in D.
    for (n, img) in images.iter().enumerate() {
        let v = c
            .wait_image_complete(d, &format!("{REPO}:v{n}"), &["r1", "r2", "r3", "r4"], Duration::from_secs(10))
            .await
            .unwrap();
        assert_eq!(v["repository"], REPO, "{v}");
        assert_eq!(v["digest"], img.image.digest, "{v}");
        assert_eq!(v["blobs"], 3, "{v}");
        let bytes: u64 = img.image.config.size + img.image.layers.iter().map(|l| l.size).sum::<u64>();
        assert_eq!(v["bytes"], bytes, "{v}");
        let by_digest = c.replication_image_at(a, &format!("{REPO}@{}", img.image.digest)).await.unwrap();
        assert_eq!(by_digest["digest"], img.image.digest, "{by_digest}");
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let regions = c.replication_status_at(d).await.unwrap();
        let row = regions.iter().find(|r| r["name"] == "r4").cloned().unwrap_or_default();
        if row["pending_blobs"] == 0 && row["reachable"] == true && regions.len() == 4 {
            assert!(row["bytes_received"].as_u64().unwrap_or(0) > 0, "D received bytes: {row}");
            break;
        }
        assert!(Instant::now() < deadline, "replication status never showed D with nothing pending: {regions:?}");
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    let table = c.admin_at(d, &["replication", "status"]).await;
    eprintln!("$ meridian admin replication status\n{}", table.stdout);
    assert_eq!(table.code, 0, "{table}");
    assert!(table.stdout.starts_with("REGION"), "{table}");
    assert!(table.stdout.contains("MISMATCHES") && table.stdout.lines().count() == 5, "{table}");
    let table = c.admin_at(d, &["replication", "image", &format!("{REPO}:v0")]).await;
    eprintln!("$ meridian admin replication image {REPO}:v0\n{}", table.stdout);
    assert_eq!(table.code, 0, "{table}");
    assert!(table.stdout.starts_with(&format!("{REPO}@{}: 3 blobs, ", images[0].image.digest)), "{table}");

    // A reference that cannot be an image is refused before connecting (usage, exit 2);
    // an unknown image is the server's error (exit 1).
    let bad = c.admin_at(d, &["replication", "image", REPO]).await;
    assert_eq!(bad.code, 2, "{bad}");
    assert!(bad.stderr.contains("repo:tag or repo@sha256"), "{bad}");
    let unknown = c.admin_at(d, &["replication", "image", &format!("{REPO}:no-such-tag")]).await;
    assert_eq!(unknown.code, 1, "{unknown}");
    assert!(unknown.stderr.starts_with("error: ") && unknown.stdout.is_empty(), "{unknown}");

    // GETs in D are byte-identical.
    for (n, img) in images.iter().enumerate() {
        oci::assert_manifest_content(&c[d], REPO, &format!("v{n}"), OCI_MANIFEST, &img.image.manifest).await;
        for (layer, bytes) in img.image.layers.iter().zip(&img.layer_bytes) {
            oci::assert_blob_content(&c[d], REPO, &layer.digest, bytes).await;
        }
        oci::assert_blob_content(&c[d], REPO, &img.image.config.digest, &std::fs::read(oci::blob_path(&c[a], &img.image.config.digest)).unwrap()).await;
    }
    eprintln!("done {:.1}s after D was ready", ready_at.elapsed().as_secs_f64());
}

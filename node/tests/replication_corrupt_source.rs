//! A corrupt copy in a source region is never passed on: regions A, B, C hold a layer;
//! A's and B's files are overwritten with garbage of the same length (disk rot) and C is
//! killed, so the only reachable holders of the layer are corrupt. Region D joins.
//! Asserted:
//!
//! * D tries the reachable (corrupt) holders and fails: its digest-mismatch counter rises
//!   (or the fetch fails), it keeps no file for the layer, and a GET of the layer in D
//!   never delivers a complete 200 body with the wrong bytes;
//! * A and B, having served their whole (corrupt) copies, detect it and quarantine them;
//! * once C is back, D lands the layer by itself (background): its file hashes to the
//!   digest, C's copy is never rejected, and a GET in D returns the pushed bytes;
//! * A and B heal: they record the lost copies and fetch good ones again;
//! * `meridian admin replication status` reports D's digest mismatches (while the fetches
//!   are failing and after the layer landed).

mod common;

use common::cluster::{self, Cluster};
use common::oci::{self, OCI_MANIFEST};
use std::time::{Duration, Instant};

const REPO: &str = "geo/rot";

/// Overwrites a blob file with different bytes of the same length.
fn corrupt(path: &std::path::Path) {
    use std::os::unix::fs::PermissionsExt;
    let len = std::fs::metadata(path).unwrap_or_else(|e| panic!("{}: {e}", path.display())).len() as usize;
    let _ = std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o644));
    let garbage = oci::test_bytes("garbage", len);
    std::fs::write(path, &garbage).unwrap_or_else(|e| panic!("overwrite {}: {e}", path.display()));
    eprintln!("INJECT: overwrote {} ({len} bytes) with garbage", path.display());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_corrupt_source_is_skipped_and_never_served() {
    let mut c = Cluster::start(3).await;
    let (a, b, cc) = (0, 1, 2);

    let pushed = oci::push_image_sized(&c[a], REPO, "v1", "rot", &[2 << 20]).await;
    let layer = pushed.image.layers[0].digest.clone();
    let layer_bytes = pushed.layer_bytes[0].clone();
    let digests = pushed.blob_digests();
    for i in [b, cc] {
        oci::wait_blob_files(&c[i], &digests, Duration::from_secs(20)).await.unwrap();
    }
    // Every region is recorded as a holder before the rot sets in.
    if let Err(e) = c.wait_image_complete(a, &format!("{REPO}:v1"), &["r1", "r2", "r3"], Duration::from_secs(10)).await {
        panic!("replica records did not show all three regions: {e}");
    }

    corrupt(&oci::blob_path(&c[a], &layer));
    corrupt(&oci::blob_path(&c[b], &layer));
    c.kill9(cc);

    let d = c.join_new_member("r4").await;
    oci::wait_blob_files(&c[d], &[pushed.image.config.digest.clone()], Duration::from_secs(20)).await.unwrap();

    // D tries the corrupt holders and gives up on them.
    let deadline = Instant::now() + Duration::from_secs(20);
    let (mismatches, failures) = loop {
        let m = cluster::metrics_text(&c[d]).await;
        let mismatches = cluster::metric_sum(&m, "meridian_replication_digest_mismatch_total", &[]);
        let failures = cluster::metric_sum(&m, "meridian_replication_failures_total", &[]);
        if failures >= 1.0 {
            break (mismatches, failures);
        }
        assert!(Instant::now() < deadline, "D never finished an attempt at the layer (mismatches {mismatches})");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    eprintln!("D: {mismatches} digest mismatches, {failures} failed transfers while only corrupt holders were up");
    assert!(mismatches >= 1.0, "D fetched from corrupt holders only, yet counted no digest mismatch");
    assert!(!oci::blob_path(&c[d], &layer).exists(), "D stored a copy while only corrupt holders were reachable");
    assert!(
        !c[d].log_lines_with(&["replica landed", &layer]).iter().any(|_| true),
        "D reported the layer landed while only corrupt holders were reachable"
    );
    // A client in D never gets a complete 200 body with the wrong bytes.
    match oci::get_blob(&c[d], REPO, &layer).await {
        Ok((200, body)) => assert!(
            body == layer_bytes,
            "D served a complete 200 body of {} bytes that does not match the digest",
            body.len()
        ),
        Ok((status, _)) => eprintln!("GET in D while only corrupt holders are up: {status}"),
        Err(e) => eprintln!("GET in D while only corrupt holders are up was cut: {e}"),
    }
    assert!(!oci::blob_path(&c[d], &layer).exists(), "D stored a corrupt copy after a fetch-through");

    // The replication status shows it (checked again at the end; reported, not fatal yet,
    // so the rest of the scenario still runs).
    let mut problems: Vec<String> = Vec::new();
    let regions = c.replication_status_at(d).await.unwrap();
    let row = regions.iter().find(|r| r["name"] == "r4").cloned().unwrap_or_default();
    if row["digest_mismatches"].as_u64().unwrap_or(0) < 1 {
        problems.push(format!(
            "while D's fetches were failing, `replication status` showed no digest mismatch for D \
             (its /metrics counted {mismatches}): {row}"
        ));
    }

    // A source that served its whole corrupt copy noticed and quarantined it: it no
    // longer sits under the digest in A's or B's blob store.
    for i in [a, b] {
        let quarantined = !oci::blob_path(&c[i], &layer).exists()
            && std::fs::read_dir(c[i].data_dir.join("quarantine")).map(|d| d.count() > 0).unwrap_or(false);
        if !quarantined {
            let served = common::cluster::metric_sum(&common::cluster::metrics_text(&c[i]).await, "meridian_blob_corrupt_local_copies_total", &[]);
            problems.push(format!("{} still stores its corrupt copy under the digest (corrupt copies detected: {served})", c[i].name));
        }
    }

    // With C back, D lands a good copy by itself.
    c.restart(cc).await;
    let took = oci::wait_blob_files(&c[d], &[layer.clone()], Duration::from_secs(30)).await.unwrap();
    eprintln!("D holds a verified copy {:.1}s after C came back", took.as_secs_f64());
    let landed = c[d].log_lines_with(&["replica landed", &layer]);
    assert!(!landed.is_empty(), "no 'replica landed' line for the layer in D");
    eprintln!("{}", landed.join("\n"));
    // D's copy comes from C, or from A or B once they healed themselves from C (they
    // quarantine their corrupt copies and fetch good ones); either way it was verified.
    assert!(
        landed.iter().any(|l| l.contains("r3") || l.contains("r1") || l.contains("r2")),
        "D's copy has no recorded source: {landed:?}"
    );
    let rejected = c[d].log_lines_with(&["does not match its digest"]);
    eprintln!("D rejected copies:\n{}", rejected.join("\n"));
    assert!(rejected.iter().all(|l| !l.contains("r3")), "C's good copy was rejected: {rejected:?}");

    oci::assert_blob_content(&c[d], REPO, &layer, &layer_bytes).await;
    oci::assert_manifest_content(&c[d], REPO, "v1", OCI_MANIFEST, &pushed.image.manifest).await;

    let m = cluster::metrics_text(&c[d]).await;
    let mismatches = cluster::metric_sum(&m, "meridian_replication_digest_mismatch_total", &[]);
    let regions = c.replication_status_at(d).await.unwrap();
    let row = regions.iter().find(|r| r["name"] == "r4").cloned().unwrap_or_default();
    if row["digest_mismatches"].as_u64().unwrap_or(0) < 1 {
        problems.push(format!(
            "after D landed the layer, `replication status` still shows no digest mismatch for D \
             (its /metrics counted {mismatches}): {row}"
        ));
    }
    // A and B heal themselves: having recorded the loss of their copies, they fetch a
    // good one again (from C or D) without anyone pulling there.
    for i in [a, b] {
        if let Err(e) = oci::wait_blob_files(&c[i], &[layer.clone()], Duration::from_secs(30)).await {
            problems.push(format!("{} did not re-fetch a good copy after quarantining its own: {e}", c[i].name));
        }
    }
    assert!(problems.is_empty(), "problems:\n{}", problems.join("\n"));
}

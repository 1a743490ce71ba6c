//! Restoring a whole cluster from a backup (`meridian restore`), with real processes:
//!
//! * A three-region cluster (us, eu, ap) holds an image replicated everywhere, and an
//!   image pushed in eu whose 8 MiB layer us has not copied yet (copies are slowed down). All three regions are lost; what remains is a copy of us's
//!   stopped data directory (the backup deploy/vm/README.md describes).
//! * `meridian restore --config` on that copy, with a new node's config (other ports),
//!   says which regions it dropped and that the big layer's bytes are not in the backup.
//! * The node started from it serves alone: the image pulls byte-identical, `region list`
//!   shows only us, and pushes work (it leads its own one-region cluster).
//! * A new eu joins it and gets the image replicated, byte-identical.
//! * Bad input: a copy restored under another region's name is refused, and so is a
//!   directory without Raft state.

mod common;

use common::cluster::{Cluster, ClusterOptions};
use common::oci;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

const REPO: &str = "team/app";


fn restore(config: &Path) -> (i32, String) {
    let out = Command::new(common::meridian_bin()).args(["restore", "--config"]).arg(config).output().expect("run meridian restore");
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    eprintln!("$ meridian restore --config {}\n{text}", config.display());
    (out.status.code().unwrap_or(-1), text)
}

async fn assert_image(node: &common::Node, image: &oci::PushedImage) {
    oci::assert_manifest_content(node, REPO, "v1", oci::OCI_MANIFEST, &image.manifest).await;
    for d in std::iter::once(&image.config).chain(&image.layers) {
        let resp = oci::client().get(node.url(&format!("/v2/{REPO}/blobs/{}", d.digest))).send().await.unwrap();
        let body = oci::expect_status(resp, 200).await.bytes().await.unwrap();
        assert_eq!(oci::sha256_digest(&body), d.digest);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_whole_cluster_comes_back_from_one_regions_backup() {
    // Copies between regions at 100 kB/s: a small image replicates at once, an 8 MiB
    // layer does not before the regions are lost.
    let mut c = Cluster::start_with(
        ClusterOptions::new(3).names(&["us", "eu", "ap"]).env("MERIDIAN_REPLICATION_BANDWIDTH_LIMIT", "100000"),
    )
    .await;
    let image = oci::push_image(&c[0], REPO, "v1", "restore").await;
    c.wait_image_complete(0, &format!("{REPO}:v1"), &["us", "eu", "ap"], Duration::from_secs(60)).await.expect("replicated");
    // An image pushed in eu whose big layer us never gets: us has applied its manifest
    // (it answers for it) but holds no copy of the layer when everything is lost.
    let big = oci::push_image_sized(&c[1], "team/big", "v1", "big", &[8 << 20]).await;
    let resp = oci::get_manifest(&c[0], "team/big", "v1").await;
    assert_eq!(resp.status(), 200);

    // Everything is lost but a copy of us's data directory, taken with us stopped.
    for i in 0..3 {
        c[i].stop();
    }
    let backup = c[0].dir.join("backup");
    common::copy_dir(&c[0].data_dir, &backup);

    // A data directory serves the region it was created for: eu's, started as "ap", stops.
    let renamed = c[1].dir.join("as-ap.toml");
    let text = std::fs::read_to_string(&c[1].config_path).unwrap().replace("region = \"eu\"", "region = \"ap\"");
    assert!(text.contains("region = \"ap\""), "{text}");
    std::fs::write(&renamed, text).unwrap();
    let out = Command::new(common::meridian_bin()).args(["serve", "--config"]).arg(&renamed).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && stderr.contains("belongs to region \"eu\""), "{stderr}");

    // A copy restored under another region's name, and an empty directory: refused.
    let wrong = c.add_member_with("ap", 11, Vec::new());
    common::copy_dir(&backup, &c[wrong].data_dir);
    let (code, out) = restore(&c[wrong].config_path);
    assert_ne!(code, 0, "{out}");
    assert!(out.contains("not \"ap\"") || out.contains("not ap"), "{out}");
    let empty = c.add_member_with("us", 12, Vec::new());
    std::fs::create_dir_all(&c[empty].data_dir).unwrap();
    let (code, out) = restore(&c[empty].config_path);
    assert_ne!(code, 0, "{out}");
    assert!(out.contains("no applied Raft state"), "{out}");

    // The restore: a new node (new ports) on the copy.
    let us = c.add_member_with("us", 21, Vec::new());
    common::copy_dir(&backup, &c[us].data_dir);
    let (code, out) = restore(&c[us].config_path);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("region \"us\" (node 21) alone"), "{out}");
    assert!(out.contains("ap, eu"), "{out}");
    // The big layer is not in the backup, and the restore says so.
    let lost_bytes: u64 = out
        .lines()
        .find(|l| l.contains("were held only by those regions"))
        .and_then(|l| l.split_once(" blobs (")?.1.split_once(" bytes)")?.0.parse().ok())
        .unwrap_or_else(|| panic!("no lost blobs reported: {out}"));
    assert!(lost_bytes >= big.layer_bytes[0].len() as u64, "{out}");
    c[us].spawn();
    c[us].wait_ready().await;
    assert_image(&c[us], &image).await;
    let regions = c.admin_json_at(us, &["region", "list"]).await;
    let names: Vec<&str> = regions["regions"].as_array().unwrap().iter().map(|r| r["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["us"], "{regions:#}");
    // It leads its own cluster: a push commits.
    let after = oci::push_image(&c[us], REPO, "v2", "after-restore").await;

    // A new eu joins the restored cluster and gets both images.
    let eu = c.add_member("eu", vec![c[us].grpc_url()]);
    c[eu].spawn();
    c[eu].wait_ready().await;
    c.wait_image_complete(us, &format!("{REPO}:v1"), &["us", "eu"], Duration::from_secs(60)).await.expect("v1 replicated to the new eu");
    assert_image(&c[eu], &image).await;
    oci::assert_manifest_content(&c[eu], REPO, "v2", oci::OCI_MANIFEST, &after.manifest).await;
}

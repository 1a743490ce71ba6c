//! containerd (`ctr`) against three regions with auth on, as the README's "Push and pull"
//! section shows: a two-platform index pushed in us (by skopeo) is pulled with
//! `ctr images pull --all-platforms` in eu, pushed back with `ctr images push` to ap under
//! another name, and pulled from us byte-identical; a single-platform pull unpacks; wrong
//! credentials are refused.

mod common;

use common::cluster::{Cluster, ClusterOptions};
use common::containerd::Containerd;
use common::oci;
use common::skopeo::{build_layout, ensure_skopeo, run_skopeo};

const ADMIN_PW: &str = "containerd-admin-password";

/// GET a manifest as admin from `host`; returns (status, bytes).
async fn manifest_at(host: &str, repo: &str, reference: &str) -> (u16, Vec<u8>) {
    let resp = oci::client()
        .get(format!("http://{host}/v2/{repo}/manifests/{reference}"))
        .basic_auth("admin", Some(ADMIN_PW))
        .header("accept", [oci::OCI_MANIFEST, oci::OCI_INDEX].join(", "))
        .send()
        .await
        .expect("GET manifest");
    let status = resp.status().as_u16();
    (status, resp.bytes().await.map(|b| b.to_vec()).unwrap_or_default())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ctr_pulls_and_pushes_multi_platform_images_across_regions() {
    let skopeo = ensure_skopeo();
    let ctr = Containerd::start().await;
    let c = Cluster::start_with(
        ClusterOptions::new(3)
            .names(&["us", "eu", "ap"])
            .env("MERIDIAN_AUTH_ENABLED", "true")
            .env("MERIDIAN_ADMIN_PASSWORD", ADMIN_PW),
    )
    .await;
    let (us, eu, ap) = (c[0].http_addr(), c[1].http_addr(), c[2].http_addr());
    let user = format!("admin:{ADMIN_PW}");

    // The seed: a two-platform OCI index pushed to us.
    let work = tempfile::tempdir().unwrap();
    let layout = build_layout(work.path(), 20_000);
    let index_digest = oci::sha256_digest(&layout.index);
    let src = format!("oci:{}:v1", work.path().display());
    let dest = format!("docker://{us}/team/multi:v1");
    run_skopeo(&skopeo, &["--insecure-policy", "copy", "--all", "--preserve-digests", "--dest-tls-verify=false", "--dest-creds", &user, &src, &dest])
        .await;

    // Pull every platform in eu.
    let from_eu = format!("{eu}/team/multi:v1");
    ctr.run(&["images", "pull", "--plain-http", "--user", &user, "--all-platforms", &from_eu]).await;
    assert_eq!(ctr.image_digest(&from_eu).await, index_digest, "eu served another index");

    // Push it to ap under another name; every platform travels.
    let to_ap = format!("{ap}/team/copied:v2");
    ctr.run(&["images", "tag", &from_eu, &to_ap]).await;
    ctr.run(&["images", "push", "--plain-http", "--user", &user, &to_ap]).await;
    let (status, body) = manifest_at(&us, "team/copied", "v2").await;
    assert_eq!(status, 200, "the index ctr pushed to ap, read in us");
    assert_eq!(body, layout.index, "ctr's push changed the index");
    for (arch, manifest, _, _) in &layout.children {
        let (status, body) = manifest_at(&us, "team/copied", &oci::sha256_digest(manifest)).await;
        assert_eq!(status, 200, "{arch} manifest of the copy");
        assert_eq!(&body, manifest);
    }

    // Forget it locally; pull it from us, one platform, unpacked.
    ctr.run(&["images", "rm", &from_eu, &to_ap]).await;
    let from_us = format!("{us}/team/copied:v2");
    ctr.run(&["images", "pull", "--plain-http", "--user", &user, "--platform", "linux/arm64/v8", &from_us]).await;
    assert_eq!(ctr.image_digest(&from_us).await, index_digest);

    // Wrong credentials: refused.
    let wrong = "admin:not-the-password".to_string();
    let r = ctr.try_run(&["images", "pull", "--plain-http", "--user", &wrong, &format!("{eu}/team/multi:v1")]).await;
    assert!(!r.ok, "a pull with a wrong password succeeded");
}

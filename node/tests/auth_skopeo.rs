//! A real client through the token flow: skopeo with `--creds` pushes a multi-arch image
//! into one region of a two-region cluster with auth on and pulls it back byte-identical
//! from the other (skopeo reads the
//! `WWW-Authenticate` challenge, gets a bearer token from `/token` with basic
//! credentials, retries). Without credentials, or with a wrong password, or as a reader
//! pushing, skopeo is refused and nothing is stored.

mod common;

use common::cluster::{Cluster, ClusterOptions};
use common::oci;
use common::skopeo::{build_layout, check_skopeo_capabilities, ensure_skopeo, read_layout_blobs, run_skopeo};
use std::time::Duration;

const ADMIN_PW: &str = "skopeo-admin-password";

fn as_refs(v: &[String]) -> Vec<&str> {
    v.iter().map(String::as_str).collect()
}

/// Runs skopeo expecting failure; returns its stderr.
async fn skopeo_fails(skopeo: &std::path::Path, args: &[&str]) -> String {
    println!("$ skopeo {} (expected to fail)", args.join(" "));
    let out = tokio::time::timeout(
        Duration::from_secs(120),
        tokio::process::Command::new(skopeo).args(args).kill_on_drop(true).output(),
    )
    .await
    .expect("skopeo timed out")
    .expect("spawn skopeo");
    assert!(!out.status.success(), "skopeo {} succeeded but should have been refused", args.join(" "));
    String::from_utf8_lossy(&out.stderr).to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn skopeo_pushes_and_pulls_with_credentials_and_is_refused_without() {
    let skopeo = ensure_skopeo();
    check_skopeo_capabilities(&skopeo);
    let c = Cluster::start_with(
        ClusterOptions::new(2).env("MERIDIAN_AUTH_ENABLED", "true").env("MERIDIAN_ADMIN_PASSWORD", ADMIN_PW),
    )
    .await;
    c.wait_for_user(0, "admin").await;
    let viewer_pw = c.add_user(0, "viewer", "reader").await;

    let work = tempfile::tempdir().unwrap();
    let src = work.path().join("src");
    let dst = work.path().join("dst");
    let layout = build_layout(&src, 30_000);
    let index_digest = oci::sha256_digest(&layout.index);
    let host = c[0].http_addr();
    let remote = format!("docker://{host}/team/app:v1");
    // Pulls go to the other region.
    let remote_elsewhere = format!("docker://{}/team/app:v1", c[1].http_addr());
    let src_ref = format!("oci:{}:v1", src.display());
    let dst_ref = format!("oci:{}:v1", dst.display());
    let admin_creds = format!("admin:{ADMIN_PW}");
    let viewer_creds = format!("viewer:{viewer_pw}");
    let push = |creds: Option<&str>| {
        let mut args = vec!["--insecure-policy", "copy", "--all", "--preserve-digests", "--dest-tls-verify=false"];
        if let Some(c) = creds {
            args.push("--dest-creds");
            args.push(c);
        }
        args.push(&src_ref);
        args.push(&remote);
        args.into_iter().map(String::from).collect::<Vec<_>>()
    };

    // Refused: no credentials, a wrong password, a reader pushing.
    let err = skopeo_fails(&skopeo, &as_refs(&push(None))).await;
    assert!(err.to_lowercase().contains("unauthorized") || err.contains("authentication required"), "{err}");
    skopeo_fails(&skopeo, &as_refs(&push(Some("admin:not-the-password")))).await;
    skopeo_fails(&skopeo, &as_refs(&push(Some(&viewer_creds)))).await;
    let probe = reqwest::Client::new()
        .get(format!("http://{host}/v2/team/app/manifests/v1"))
        .basic_auth("admin", Some(ADMIN_PW))
        .send()
        .await
        .unwrap();
    assert_eq!(probe.status(), 404, "a refused push stored the image");

    // Pushed with credentials, byte-identical.
    run_skopeo(&skopeo, &as_refs(&push(Some(&admin_creds)))).await;
    let raw = run_skopeo(&skopeo, &["inspect", "--raw", "--tls-verify=false", "--creds", &viewer_creds, &remote]).await;
    assert!(raw == layout.index, "inspect --raw: index bytes differ");

    // Pulled back by the reader in the other region, digests preserved; anonymous pulls
    // are refused.
    skopeo_fails(&skopeo, &["--insecure-policy", "copy", "--all", "--src-tls-verify=false", &remote_elsewhere, &dst_ref]).await;
    run_skopeo(
        &skopeo,
        &[
            "--insecure-policy",
            "copy",
            "--all",
            "--preserve-digests",
            "--src-tls-verify=false",
            "--src-creds",
            &viewer_creds,
            &remote_elsewhere,
            &dst_ref,
        ],
    )
    .await;
    let pulled = read_layout_blobs(&dst);
    assert!(pulled.contains_key(&index_digest), "pulled layout lacks the index {index_digest}");
    for (arch, m, cfg, l) in &layout.children {
        for b in [m, cfg, l] {
            let d = oci::sha256_digest(b);
            assert!(pulled.get(&d) == Some(b), "linux/{arch}: blob {d} missing or different after the pull");
        }
    }
}

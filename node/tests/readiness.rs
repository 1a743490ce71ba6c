//! A script that starts the registry and logs in at once must work: `/readyz` says ready
//! only once a node can authenticate the bootstrap admin and has applied the cluster's
//! state, and a login that arrives earlier waits for the identities instead of getting a
//! 401 for a correct password.

mod common;

use common::cluster::{Cluster, ClusterOptions};
use common::{oci, Node};
use reqwest::StatusCode;
use std::time::{Duration, Instant};

const ADMIN_PW: &str = "readiness-admin-password";

fn client() -> reqwest::Client {
    reqwest::Client::builder().timeout(Duration::from_secs(20)).build().expect("client")
}

/// Polls `/readyz` until 200; returns the bodies of the non-ready answers seen before.
async fn wait_readyz(base: &str) -> Vec<String> {
    let http = client();
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut not_ready = Vec::new();
    loop {
        if let Ok(r) = http.get(format!("{base}/readyz")).send().await {
            if r.status() == StatusCode::OK {
                return not_ready;
            }
            assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE, "/readyz answered neither 200 nor 503");
            not_ready.push(r.text().await.unwrap_or_default());
        }
        assert!(Instant::now() < deadline, "/readyz never said ready");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// `GET /v2/` with the admin's basic credentials, retried only while nothing listens.
async fn first_login_status(base: &str) -> StatusCode {
    let http = client();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        match http.get(format!("{base}/v2/")).basic_auth("admin", Some(ADMIN_PW)).send().await {
            Ok(r) => return r.status(),
            Err(e) => assert!(Instant::now() < deadline, "the node never answered: {e}"),
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

async fn token_status(base: &str) -> StatusCode {
    client()
        .get(format!("{base}/token?service=meridian&scope=repository:team/app:pull,push"))
        .basic_auth("admin", Some(ADMIN_PW))
        .send()
        .await
        .expect("GET /token")
        .status()
}

/// `meridian serve & login`: the very first answer to a login with the right password is
/// 200, whether the client waits for `/readyz` or only for the port to open.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_login_right_after_the_first_start_succeeds() {
    let env = [("MERIDIAN_AUTH_ENABLED", "true"), ("MERIDIAN_ADMIN_PASSWORD", ADMIN_PW)];

    // A client that only waits for the port: its first login is not refused.
    let node = Node::spawn_with_env(&env);
    assert_eq!(first_login_status(&node.base).await, StatusCode::OK, "first login before /readyz");
    assert_eq!(token_status(&node.base).await, StatusCode::OK, "first token");

    // A client that waits for /readyz: ready means logins work at once.
    let node = Node::spawn_with_env(&env);
    let before = wait_readyz(&node.base).await;
    assert_eq!(token_status(&node.base).await, StatusCode::OK, "token right after /readyz said ready");
    let login = client().get(format!("{}/v2/", node.base)).basic_auth("admin", Some(ADMIN_PW)).send().await.unwrap();
    assert_eq!(login.status(), StatusCode::OK, "login right after /readyz said ready");
    for reason in &before {
        assert!(reason.starts_with("starting:"), "a starting node's /readyz says why: {reason:?}");
    }
}

/// A region that joins says ready only once it has applied the cluster's state: right
/// then it authenticates the admin and serves an image pushed before it joined, without
/// asking anyone else.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_joining_region_is_ready_only_with_the_clusters_state() {
    let mut c = Cluster::start_with(
        ClusterOptions::new(1).env("MERIDIAN_AUTH_ENABLED", "true").env("MERIDIAN_ADMIN_PASSWORD", ADMIN_PW),
    )
    .await;
    let http = client();
    // Push an image (as admin, basic credentials) before the second region exists.
    let manifest = push_as_admin(&http, &c[0].base, "team/app", "v1").await;

    let join = vec![c[0].grpc_url()];
    let i = c.add_member("r2", join);
    c[i].spawn();
    wait_readyz(&c[i].base).await;
    // No linearizable read, no retry: the state is there when /readyz says so.
    let resp = http
        .get(c[i].url("/v2/team/app/manifests/v1"))
        .basic_auth("admin", Some(ADMIN_PW))
        .header("accept", oci::OCI_MANIFEST)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK, "manifest pushed before the join");
    assert_eq!(resp.bytes().await.unwrap().as_ref(), manifest.as_slice());
    assert_eq!(token_status(&c[i].base).await, StatusCode::OK, "login at the new region");
}

/// Pushes a config blob (single POST) and an image manifest under `tag` with the admin's
/// basic credentials; returns the manifest bytes.
async fn push_as_admin(http: &reqwest::Client, base: &str, repo: &str, tag: &str) -> Vec<u8> {
    let config_bytes = oci::to_bytes(&serde_json::json!({"architecture": "amd64", "os": "linux", "seed": tag}));
    let config = oci::Descriptor::of(oci::OCI_CONFIG, &config_bytes);
    let resp = http
        .post(format!("{base}/v2/{repo}/blobs/uploads/?digest={}", config.digest))
        .basic_auth("admin", Some(ADMIN_PW))
        .header("content-type", "application/octet-stream")
        .body(config_bytes)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::CREATED, "config upload");
    let manifest = oci::to_bytes(&oci::image_manifest(&config, &[]));
    let resp = http
        .put(format!("{base}/v2/{repo}/manifests/{tag}"))
        .basic_auth("admin", Some(ADMIN_PW))
        .header("content-type", oci::OCI_MANIFEST)
        .body(manifest.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::CREATED, "manifest push");
    manifest
}

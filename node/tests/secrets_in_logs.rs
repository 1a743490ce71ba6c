//! Logs go to journald or a log pipeline that many people read: no secret a node
//! generates is ever written to its log. A fresh node keeps the generated `admin`
//! password in `<data_dir>/admin-password` only (its log says where); in a fresh
//! three-region cluster neither that password nor a robot token's generated secret
//! appears in any region's log.

mod common;

use common::cluster::{Cluster, ClusterOptions};
use common::Node;
use std::path::Path;
use std::time::{Duration, Instant};

/// The generated admin password, once the node that created it wrote its file.
async fn admin_password(data_dir: &Path) -> String {
    let path = data_dir.join("admin-password");
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Ok(text) = std::fs::read_to_string(&path) {
            let pw = text.trim().to_string();
            if !pw.is_empty() {
                return pw;
            }
        }
        assert!(Instant::now() < deadline, "no generated password in {}", path.display());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn assert_not_logged(log: &Path, secret: &str, what: &str) {
    let text = std::fs::read_to_string(log).expect("read the log");
    let hits: Vec<&str> = text.lines().filter(|l| l.contains(secret)).collect();
    assert!(hits.is_empty(), "{what} in {}:\n{}", log.display(), hits.join("\n"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fresh_node_keeps_the_generated_password_out_of_its_log() {
    let node = Node::start_with_env(&[("MERIDIAN_AUTH_ENABLED", "true")]).await;
    let pw = admin_password(&node.data_dir).await;
    // The password works (it is the real one), and the log points at the file.
    let resp = reqwest::Client::new()
        .get(node.url("/v2/"))
        .basic_auth("admin", Some(&pw))
        .send()
        .await
        .expect("GET /v2/");
    assert_eq!(resp.status(), 200, "admin logs in with the password from the file");
    let log = std::fs::read_to_string(&node.log_path).unwrap();
    assert!(log.contains("admin-password"), "the log says where the password is");
    assert_not_logged(&node.log_path, &pw, "the generated admin password");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fresh_cluster_logs_no_generated_secret() {
    let c = Cluster::start_with(ClusterOptions::new(3).names(&["us", "eu", "ap"]).env("MERIDIAN_AUTH_ENABLED", "true")).await;
    // The first leader (us) created the admin user.
    let pw = admin_password(&c[0].data_dir).await;
    c.admin_json_at(1, &["scope-map", "create", "ci-push", "--grant", "team/*:pull,push"]).await;
    let token = c.admin_json_at(1, &["token", "create", "ci", "--scope-map", "ci-push"]).await;
    let secret = token["secret"].as_str().expect("the token's secret").to_string();
    assert!(secret.len() >= 16, "{token}");
    // Let every region apply and log whatever it logs about the token.
    tokio::time::sleep(Duration::from_secs(1)).await;
    for i in 0..3 {
        assert_not_logged(&c[i].node.log_path, &pw, "the generated admin password");
        assert_not_logged(&c[i].node.log_path, &secret, "a robot token's secret");
    }
}

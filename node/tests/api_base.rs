//! Base endpoints: API version check, health probes and metrics.

mod common;

use common::oci::*;
use common::Node;

#[tokio::test]
async fn v2_root_returns_200() {
    let node = Node::start().await;
    let resp = client().get(node.url("/v2/")).send().await.unwrap();
    expect_status(resp, 200).await;
}

#[tokio::test]
async fn health_and_readiness_return_200() {
    let node = Node::start().await;
    for path in ["/healthz", "/readyz"] {
        let resp = client().get(node.url(path)).send().await.unwrap();
        expect_status(resp, 200).await;
    }
}

#[tokio::test]
async fn metrics_expose_http_request_counter() {
    let node = Node::start().await;
    expect_status(client().get(node.url("/v2/")).send().await.unwrap(), 200).await;
    let resp = expect_status(client().get(node.url("/metrics")).send().await.unwrap(), 200).await;
    let text = resp.text().await.unwrap();
    assert!(
        text.contains("meridian_http_requests_total"),
        "metrics lack meridian_http_requests_total:\n{text}"
    );
}

/// `systemctl reload` sends SIGHUP (deploy/vm/meridian.service's ExecReload): a node on
/// plain HTTP has no certificate to reload and must keep serving, not die of the signal.
#[tokio::test]
async fn a_plain_http_node_keeps_serving_after_sighup() {
    let node = Node::start().await;
    unsafe { libc::kill(node.pid() as i32, libc::SIGHUP) };
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    while !std::fs::read_to_string(&node.log_path).unwrap().contains("SIGHUP: no TLS certificate to reload") {
        assert!(std::time::Instant::now() < deadline, "no SIGHUP line in the log");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let resp = client().get(node.url("/readyz")).send().await.unwrap();
    expect_status(resp, 200).await;
}

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

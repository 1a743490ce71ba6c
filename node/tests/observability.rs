//! Logs as JSON when configured, the OTLP exporter configured without breaking serving,
//! and the Prometheus metrics the README lists.

mod common;

use common::Node;

#[tokio::test]
async fn json_logs_otlp_and_metrics() {
    // A closed port: spans are exported in the background and the failure must not
    // affect requests.
    let closed = format!("http://127.0.0.1:{}", common::free_port());
    let node = Node::start_with_env(&[
        ("MERIDIAN_LOG_FORMAT", "json"),
        ("MERIDIAN_OTLP_ENDPOINT", closed.as_str()),
        ("RUST_LOG", "debug,h2=info,hyper=info,tower=info,openraft=info,tonic=info"),
    ])
    .await;
    let client = reqwest::Client::new();
    let missing = client.get(node.url("/v2/obs/app/manifests/nope")).send().await.unwrap();
    assert_eq!(missing.status(), 404);
    let ok = client.get(node.url("/v2/")).send().await.unwrap();
    assert_eq!(ok.status(), 200);

    let metrics = client.get(node.url("/metrics")).send().await.unwrap().text().await.unwrap();
    for name in [
        "meridian_http_requests_total",
        "meridian_http_request_duration_seconds_bucket",
        "meridian_http_request_bytes_total",
        "meridian_http_response_bytes_total",
        "meridian_raft_applied_index",
    ] {
        assert!(metrics.contains(name), "metric {name} missing:\n{metrics}");
    }
    assert!(
        metrics.lines().any(|l| l.starts_with("meridian_http_requests_total")
            && l.contains("route=\"manifest\"")
            && l.contains("status=\"404\"")),
        "no per-route/status counter for the 404:\n{metrics}"
    );

    // Every log line is a JSON object; the request span carries method, route,
    // repository, status and duration.
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    let log = std::fs::read_to_string(&node.log_path).unwrap();
    let mut saw_request = false;
    for line in log.lines().filter(|l| !l.trim().is_empty()) {
        let v: serde_json::Value = serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
        let text = v.to_string();
        if text.contains("\"route\":\"manifest\"") && text.contains("obs/app") {
            for field in ["\"method\"", "\"status\"", "\"duration_ms\"", "\"repository\""] {
                assert!(text.contains(field), "request log lacks {field}: {line}");
            }
            saw_request = true;
        }
    }
    assert!(saw_request, "no request line for the manifest GET in:\n{log}");
}

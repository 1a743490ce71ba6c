//! A blob upload that meets a full disk (ENOSPC on the blob's write) is refused with
//! `507 Insufficient Storage` and an OCI error body saying so — not a bare `500` — and
//! nothing of it is kept: the blob is unknown, and the same push succeeds once space
//! returns.

use chaos_tests::harness::cluster::{Cluster, ClusterOptions};
use chaos_tests::harness::oci;

const REPO: &str = "full/app";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upload_on_a_full_disk_is_refused_with_507_and_kept_nowhere() {
    chaos_tests::harness::use_binary(env!("CARGO_BIN_EXE_meridian-chaos-node"));
    let mut c = Cluster::start_with(ClusterOptions::new(1).env("MERIDIAN_FAILPOINTS_API", "1")).await;
    let node = c.leader().await;
    // Larger than the writer's buffers, so the disk refuses it while the client is still
    // sending: the answer must reach a client that reads only after sending its body.
    let data = oci::test_bytes("full-disk", 24 << 20);
    let digest = oci::sha256_digest(&data);

    c.failpoint(node, "blob-write", "return(enospc)").await;

    // Monolithic, in one request.
    let resp = oci::post_blob(&c[node], REPO, &data, &digest).await;
    let body = oci::assert_oci_error(resp, 507, "UNAVAILABLE").await;
    let message = body["errors"][0]["message"].as_str().unwrap_or_default().to_string();
    assert!(message.contains("no space left"), "the message should say the disk is full: {message}");
    oci::assert_blob_absent(&c[node], REPO, &digest).await;

    // POST then PUT with the body.
    let (url, _) = oci::start_upload(&c[node], REPO).await;
    let resp = oci::client()
        .put(oci::with_query(&url, &format!("digest={digest}")))
        .header("content-type", "application/octet-stream")
        .body(data.clone())
        .send()
        .await
        .expect("PUT upload");
    oci::assert_oci_error(resp, 507, "UNAVAILABLE").await;
    oci::assert_blob_absent(&c[node], REPO, &digest).await;
    assert!(c[node].is_running(), "the node exited on a full disk:\n{}", c[node].log_tail(40));

    // Space returns: the same push goes through and serves the same bytes.
    c.failpoint(node, "blob-write", "off").await;
    oci::push_blob_with_digest(&c[node], REPO, &data, &digest).await;
    oci::assert_blob_content(&c[node], REPO, &digest, &data).await;
}

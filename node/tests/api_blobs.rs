//! Blob pull, HEAD, ranges, repository scoping and deletion.

mod common;

use common::oci::*;
use common::Node;

async fn get_range(node: &Node, repo: &str, digest: &str, range: &str) -> reqwest::Response {
    client()
        .get(node.url(&format!("/v2/{repo}/blobs/{digest}")))
        .header("range", range)
        .send()
        .await
        .unwrap()
}

#[tokio::test]
async fn get_returns_bytes_and_headers() {
    let node = Node::start().await;
    let data = test_bytes("get", 5000);
    let digest = push_blob(&node, "library/app", &data).await;

    let resp = client().get(node.url(&format!("/v2/library/app/blobs/{digest}"))).send().await.unwrap();
    let resp = expect_status(resp, 200).await;
    assert_eq!(require_header(&resp, "docker-content-digest"), digest);
    assert_eq!(require_header(&resp, "content-length"), "5000");
    assert_eq!(require_header(&resp, "accept-ranges"), "bytes");
    let body = resp.bytes().await.unwrap();
    assert!(body.as_ref() == data.as_slice());
}

#[tokio::test]
async fn head_returns_headers_without_body() {
    let node = Node::start().await;
    let data = test_bytes("head", 1234);
    let digest = push_blob(&node, "library/app", &data).await;

    let resp = client().head(node.url(&format!("/v2/library/app/blobs/{digest}"))).send().await.unwrap();
    let resp = expect_status(resp, 200).await;
    assert_eq!(require_header(&resp, "docker-content-digest"), digest);
    assert_eq!(require_header(&resp, "content-length"), "1234");
    assert!(resp.bytes().await.unwrap().is_empty());
}

#[tokio::test]
async fn range_requests_return_partial_content() {
    let node = Node::start().await;
    let data = test_bytes("range", 1000);
    let digest = push_blob(&node, "r", &data).await;

    // (Range header, first byte, last byte)
    for (range, start, end) in [("bytes=0-99", 0usize, 99usize), ("bytes=100-199", 100, 199), ("bytes=900-", 900, 999), ("bytes=-10", 990, 999), ("bytes=990-5000", 990, 999), ("bytes=999-999", 999, 999)] {
        let resp = get_range(&node, "r", &digest, range).await;
        assert_eq!(resp.status().as_u16(), 206, "{range}");
        assert_eq!(require_header(&resp, "content-range"), format!("bytes {start}-{end}/1000"), "{range}");
        assert_eq!(require_header(&resp, "content-length"), (end - start + 1).to_string(), "{range}");
        let body = resp.bytes().await.unwrap();
        assert!(body.as_ref() == &data[start..=end], "{range}: wrong bytes");
    }
}

#[tokio::test]
async fn unsatisfiable_range_returns_416() {
    let node = Node::start().await;
    let data = test_bytes("416", 100);
    let digest = push_blob(&node, "r", &data).await;
    for range in ["bytes=100-", "bytes=100-200", "bytes=5000-6000"] {
        let resp = get_range(&node, "r", &digest, range).await;
        assert_eq!(resp.status().as_u16(), 416, "{range}");
        assert_eq!(require_header(&resp, "content-range"), "bytes */100", "{range}");
    }
}

#[tokio::test]
async fn unknown_blob_is_404_blob_unknown() {
    let node = Node::start().await;
    // Make the repository exist so the 404 is about the blob.
    push_blob(&node, "known", b"something").await;
    assert_blob_absent(&node, "known", &sha256_digest(b"never uploaded")).await;
    assert_blob_absent(&node, "never-pushed", &sha256_digest(b"never uploaded")).await;
}

#[tokio::test]
async fn blob_is_only_visible_in_its_repository() {
    let node = Node::start().await;
    let data = test_bytes("scoped", 300);
    let digest = push_blob(&node, "tenant-a/app", &data).await;
    assert_blob_content(&node, "tenant-a/app", &digest, &data).await;
    push_blob(&node, "tenant-b/app", b"other tenant's own blob").await;
    assert_blob_absent(&node, "tenant-b/app", &digest).await;
    assert_blob_absent(&node, "tenant-a/other", &digest).await;
}

#[tokio::test]
async fn delete_blob_then_404() {
    let node = Node::start().await;
    let data = test_bytes("delete", 200);
    let digest = push_blob(&node, "d", &data).await;
    let resp = client().delete(node.url(&format!("/v2/d/blobs/{digest}"))).send().await.unwrap();
    expect_status(resp, 202).await;
    assert_blob_absent(&node, "d", &digest).await;
}

#[tokio::test]
async fn delete_blob_in_one_repo_keeps_it_in_another() {
    let node = Node::start().await;
    let data = test_bytes("shared", 200);
    let digest = push_blob(&node, "one", &data).await;
    push_blob(&node, "two", &data).await;
    let resp = client().delete(node.url(&format!("/v2/one/blobs/{digest}"))).send().await.unwrap();
    expect_status(resp, 202).await;
    assert_blob_absent(&node, "one", &digest).await;
    assert_blob_content(&node, "two", &digest, &data).await;
}

#[tokio::test]
async fn delete_unknown_blob_is_404_blob_unknown() {
    let node = Node::start().await;
    push_blob(&node, "d", b"present").await;
    let missing = sha256_digest(b"missing");
    let resp = client().delete(node.url(&format!("/v2/d/blobs/{missing}"))).send().await.unwrap();
    assert_oci_error(resp, 404, "BLOB_UNKNOWN").await;
}

#[tokio::test]
async fn sha512_blob_pull_head_and_range() {
    let node = Node::start().await;
    let data = test_bytes("sha512", 700);
    let digest = sha512_digest(&data);
    let resp = post_blob(&node, "s512", &data, &digest).await;
    let resp = expect_status(resp, 201).await;
    assert_eq!(require_header(&resp, "docker-content-digest"), digest);

    assert_blob_content(&node, "s512", &digest, &data).await;
    let resp = client().head(node.url(&format!("/v2/s512/blobs/{digest}"))).send().await.unwrap();
    let resp = expect_status(resp, 200).await;
    assert_eq!(require_header(&resp, "content-length"), "700");
    let resp = get_range(&node, "s512", &digest, "bytes=10-19").await;
    assert_eq!(resp.status().as_u16(), 206);
    assert_eq!(require_header(&resp, "content-range"), "bytes 10-19/700");
    assert!(resp.bytes().await.unwrap().as_ref() == &data[10..20]);
    let resp = client().delete(node.url(&format!("/v2/s512/blobs/{digest}"))).send().await.unwrap();
    expect_status(resp, 202).await;
    assert_blob_absent(&node, "s512", &digest).await;
}

#[tokio::test]
async fn nested_repository_names_work() {
    let node = Node::start().await;
    let data = test_bytes("nested", 64);
    let digest = push_blob(&node, "team/app/x", &data).await;
    assert_blob_content(&node, "team/app/x", &digest, &data).await;
    assert_blob_absent(&node, "team/app", &digest).await;
}

#[tokio::test]
async fn empty_blob_round_trips() {
    let node = Node::start().await;
    let digest = push_blob(&node, "e", b"").await;
    assert_eq!(digest, "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
    let resp = client().get(node.url(&format!("/v2/e/blobs/{digest}"))).send().await.unwrap();
    let resp = expect_status(resp, 200).await;
    assert_eq!(require_header(&resp, "content-length"), "0");
    assert!(resp.bytes().await.unwrap().is_empty());
}

/// A blob the repository's manifests reference cannot be deleted on its own (the image
/// would point at nothing): `405 UNSUPPORTED`, and it keeps serving. Once the last
/// manifest that references it is gone, the delete works.
#[tokio::test]
async fn a_blob_a_manifest_references_is_not_deleted_on_its_own() {
    let node = Node::start().await;
    let image = push_image(&node, "ref", "v1", "referenced").await;
    let layer = &image.layers[0].digest;
    let resp = client().delete(node.url(&format!("/v2/ref/blobs/{layer}"))).send().await.unwrap();
    assert_oci_error(resp, 405, "UNSUPPORTED").await;
    assert_eq!(blob_status(&node, "ref", layer).await, 200);
    let resp = client().delete(node.url(&format!("/v2/ref/manifests/{}", image.digest))).send().await.unwrap();
    expect_status(resp, 202).await;
    let resp = client().delete(node.url(&format!("/v2/ref/blobs/{layer}"))).send().await.unwrap();
    expect_status(resp, 202).await;
    assert_blob_absent(&node, "ref", layer).await;
}

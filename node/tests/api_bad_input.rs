//! Bad input is refused cleanly: the spec's JSON error, a 4xx, and nothing
//! stored (checked through the API and in the data directory).

mod common;

use common::oci::*;
use common::Node;
use serde_json::json;

fn malformed_digests() -> Vec<String> {
    vec![
        "sha256:xyz".to_string(),
        format!("md5:{}", "a".repeat(32)),
        format!("sha256:{}", "a".repeat(63)),
        format!("sha256:{}", "a".repeat(65)),
        "sha256:".to_string(),
        format!("sha512:{}", "a".repeat(64)),
    ]
}

// ------------------------------------------------------------------ digests

#[tokio::test]
async fn malformed_digest_on_blob_get_head_delete() {
    let node = Node::start().await;
    push_blob(&node, "repo", b"content").await;
    for bad in malformed_digests() {
        let url = node.url(&format!("/v2/repo/blobs/{bad}"));
        let resp = client().get(&url).send().await.unwrap();
        assert_oci_error(resp, 400, "DIGEST_INVALID").await;
        let resp = client().head(&url).send().await.unwrap();
        assert_eq!(resp.status().as_u16(), 400, "HEAD {bad}");
        let resp = client().delete(&url).send().await.unwrap();
        assert_oci_error(resp, 400, "DIGEST_INVALID").await;
    }
}

#[tokio::test]
async fn malformed_digest_on_single_post_leaves_nothing() {
    let node = Node::start().await;
    let data = test_bytes("bad-post", 500);
    for bad in malformed_digests() {
        let resp = post_blob(&node, "repo", &data, &bad).await;
        assert_oci_error(resp, 400, "DIGEST_INVALID").await;
    }
    assert_eq!(blob_status(&node, "repo", &sha256_digest(&data)).await, 404);
    assert_no_upload_files(&node);
    assert_no_blob_files(&node);
}

#[tokio::test]
async fn malformed_digest_on_put_leaves_no_blob() {
    let node = Node::start().await;
    let data = test_bytes("bad-put", 500);
    for bad in malformed_digests() {
        let (url, _) = start_upload(&node, "repo").await;
        let resp = client()
            .put(with_query(&url, &format!("digest={bad}")))
            .header("content-type", "application/octet-stream")
            .body(data.clone())
            .send()
            .await
            .unwrap();
        assert_oci_error(resp, 400, "DIGEST_INVALID").await;
        let _ = client().delete(&url).send().await;
    }
    assert_eq!(blob_status(&node, "repo", &sha256_digest(&data)).await, 404);
    assert_no_upload_files(&node);
    assert_no_blob_files(&node);
}

/// A manifest reference that is neither a tag nor a digest names nothing: reading or
/// deleting it is 404 MANIFEST_UNKNOWN (as CNCF Distribution and zot answer, and the
/// conformance suite's `.INVALID_MANIFEST_NAME` expects); writing under it is refused
/// with the grammar's error.
#[tokio::test]
async fn malformed_digest_on_manifest_get_and_put() {
    let node = Node::start().await;
    let config = push_blob_desc(&node, "repo", OCI_CONFIG, b"{}").await;
    let manifest = to_bytes(&image_manifest(&config, &[]));
    push_manifest(&node, "repo", "kept", OCI_MANIFEST, &manifest).await;
    for bad in [format!("sha256:{}", "a".repeat(63)), "sha256:xyz".to_string(), format!("md5:{}", "a".repeat(32))] {
        assert_reference_names_nothing(&node, "repo", &bad).await;
        let resp = put_manifest(&node, "repo", &bad, OCI_MANIFEST, &manifest).await;
        assert_oci_error(resp, 400, "DIGEST_INVALID").await;
    }
    assert_manifest_content(&node, "repo", "kept", OCI_MANIFEST, &manifest).await;
}

/// GET, HEAD and DELETE of `reference` answer 404 (MANIFEST_UNKNOWN where there is a body).
async fn assert_reference_names_nothing(node: &Node, repo: &str, reference: &str) {
    let resp = get_manifest(node, repo, reference).await;
    assert_oci_error(resp, 404, "MANIFEST_UNKNOWN").await;
    let url = node.url(&format!("/v2/{repo}/manifests/{reference}"));
    let resp = client().head(&url).send().await.unwrap();
    assert_eq!(resp.status().as_u16(), 404, "HEAD {reference}");
    let resp = client().delete(&url).send().await.unwrap();
    assert_oci_error(resp, 404, "MANIFEST_UNKNOWN").await;
}

// ------------------------------------------------------------------ upload ranges

#[tokio::test]
async fn malformed_content_range_is_refused_and_nothing_appended() {
    let node = Node::start().await;
    let (url, _) = start_upload(&node, "repo").await;
    let resp = client().patch(&url).header("content-range", "0-4").body("01234").send().await.unwrap();
    let resp = expect_status(resp, 202).await;
    let url = abs_url(&node, &require_header(&resp, "location"));
    for bad in ["abc", "5-", "-9", "9-5"] {
        let resp = client().patch(&url).header("content-range", bad).body("56789").send().await.unwrap();
        assert_oci_error_any(resp, &[400, 416], &["BLOB_UPLOAD_INVALID", "SIZE_INVALID"]).await;
        let (status, range) = upload_status(&url).await;
        assert_eq!(status, 204);
        assert_eq!(range.as_deref(), Some("0-4"), "Content-Range {bad:?} appended data");
    }
}

// ------------------------------------------------------------------ names

#[tokio::test]
async fn invalid_repository_names_are_name_invalid() {
    let node = Node::start().await;
    for name in ["Foo", "foo-", "-foo", "_foo", "foo___bar", "foo..bar", "foo/", "/foo", "foo//bar", "a/Upper/b"] {
        let path = format!("/v2/{name}/tags/list");
        let raw = raw_request(&node, "GET", &path, &[], b"").await;
        raw.assert_oci_error(&path, 400, "NAME_INVALID");
    }
}

#[tokio::test]
async fn uppercase_name_is_name_invalid() {
    let node = Node::start().await;
    let resp = client().get(node.url("/v2/Foo/tags/list")).send().await.unwrap();
    assert_oci_error(resp, 400, "NAME_INVALID").await;
    let resp = client().get(node.url("/v2/Foo/manifests/latest")).send().await.unwrap();
    assert_oci_error(resp, 400, "NAME_INVALID").await;
    let resp = client().get(node.url(&format!("/v2/Foo/blobs/{}", sha256_digest(b"x")))).send().await.unwrap();
    assert_oci_error(resp, 400, "NAME_INVALID").await;
}

#[tokio::test]
async fn trailing_slash_name_is_name_invalid() {
    let node = Node::start().await;
    let resp = client().get(node.url("/v2/foo//tags/list")).send().await.unwrap();
    assert!(resp.url().path().contains("foo//tags"), "client normalised the path");
    assert_oci_error(resp, 400, "NAME_INVALID").await;
}

#[tokio::test]
async fn dot_dot_segments_are_name_invalid() {
    let node = Node::start().await;
    push_image(&node, "b", "x", "dotdot").await;
    for path in ["/v2/a/../b/manifests/x", "/v2/../b/manifests/x", "/v2/a/%2e%2e/b/manifests/x", "/v2/./b/manifests/x"] {
        let raw = raw_request(&node, "GET", path, &[], b"").await;
        raw.assert_oci_error(path, 400, "NAME_INVALID");
    }
    let raw = raw_request(&node, "PUT", "/v2/a/../c/manifests/x", &[("Content-Type", OCI_MANIFEST)], b"{}").await;
    raw.assert_oci_error("PUT ..", 400, "NAME_INVALID");
    assert_manifest_absent(&node, "c", "x").await;
}

#[tokio::test]
async fn upload_to_invalid_name_leaves_nothing() {
    let node = Node::start().await;
    let resp = client().post(node.url("/v2/Bad/blobs/uploads/")).header("content-length", "0").send().await.unwrap();
    assert_oci_error(resp, 400, "NAME_INVALID").await;
    let data = b"payload";
    let resp = post_blob(&node, "Bad", data, &sha256_digest(data)).await;
    assert_oci_error(resp, 400, "NAME_INVALID").await;
    assert_no_upload_files(&node);
    assert_no_blob_files(&node);
}

#[tokio::test]
async fn manifest_push_to_invalid_name_is_not_stored() {
    let node = Node::start().await;
    let config = push_blob_desc(&node, "good", OCI_CONFIG, b"{}").await;
    let manifest = to_bytes(&image_manifest(&config, &[]));
    let resp = put_manifest(&node, "Good", "v1", OCI_MANIFEST, &manifest).await;
    assert_oci_error(resp, 400, "NAME_INVALID").await;
    let repos = catalog(&node).await;
    assert!(!repos.iter().any(|r| r.eq_ignore_ascii_case("good") && r != "good"), "catalog: {repos:?}");
}

// ------------------------------------------------------------------ manifests

/// PUTs `body` and expects 400 MANIFEST_INVALID with nothing stored under the tag or digest.
async fn assert_manifest_refused(node: &Node, repo: &str, tag: &str, media_type: &str, body: &[u8]) {
    let resp = put_manifest(node, repo, tag, media_type, body).await;
    assert_oci_error(resp, 400, "MANIFEST_INVALID").await;
    assert_manifest_absent(node, repo, tag).await;
    assert_manifest_absent(node, repo, &sha256_digest(body)).await;
    assert_tag_not_listed(node, repo, tag).await;
}

#[tokio::test]
async fn malformed_json_manifest_is_manifest_invalid() {
    let node = Node::start().await;
    push_image(&node, "repo", "existing", "existing").await;
    let bodies: [&[u8]; 6] = [b"{not json", b"", b"[]", b"\"a string\"", b"{\"schemaVersion\":2,", b"\xff\xfe"];
    for body in bodies {
        assert_manifest_refused(&node, "repo", "bad", OCI_MANIFEST, body).await;
    }
}

#[tokio::test]
async fn missing_or_wrong_schema_version_is_manifest_invalid() {
    let node = Node::start().await;
    let config = push_blob_desc(&node, "repo", OCI_CONFIG, b"{}").await;
    let mut v = image_manifest(&config, &[]);
    v.as_object_mut().unwrap().remove("schemaVersion");
    assert_manifest_refused(&node, "repo", "nosv", OCI_MANIFEST, &to_bytes(&v)).await;
    for sv in [json!(1), json!(3), json!("2"), json!(null)] {
        let mut v = image_manifest(&config, &[]);
        v["schemaVersion"] = sv;
        assert_manifest_refused(&node, "repo", "badsv", OCI_MANIFEST, &to_bytes(&v)).await;
    }
}

#[tokio::test]
async fn bad_descriptor_is_manifest_invalid() {
    let node = Node::start().await;
    let config = push_blob_desc(&node, "repo", OCI_CONFIG, b"{}").await;
    let layer = push_blob_desc(&node, "repo", OCI_LAYER, b"layer").await;

    let cases = [
        // bad digest in a layer
        json!({"mediaType": OCI_LAYER, "digest": "sha256:xyz", "size": 5}),
        json!({"mediaType": OCI_LAYER, "digest": format!("sha256:{}", "a".repeat(63)), "size": 5}),
        json!({"mediaType": OCI_LAYER, "digest": "md5:abc", "size": 5}),
        // missing digest
        json!({"mediaType": OCI_LAYER, "size": 5}),
        // size of the wrong type / negative
        json!({"mediaType": OCI_LAYER, "digest": layer.digest, "size": "five"}),
        json!({"mediaType": OCI_LAYER, "digest": layer.digest, "size": -1}),
    ];
    for bad_layer in cases {
        let mut v = image_manifest(&config, &[]);
        v["layers"] = json!([bad_layer]);
        assert_manifest_refused(&node, "repo", "badlayer", OCI_MANIFEST, &to_bytes(&v)).await;
    }
    // bad digest in the config descriptor
    let mut v = image_manifest(&config, &[layer.clone()]);
    v["config"]["digest"] = json!("sha256:nothex");
    assert_manifest_refused(&node, "repo", "badconfig", OCI_MANIFEST, &to_bytes(&v)).await;
    // bad digest in the subject
    let mut v = image_manifest(&config, &[layer.clone()]);
    v["subject"] = json!({"mediaType": OCI_MANIFEST, "digest": "sha256:1234", "size": 10});
    assert_manifest_refused(&node, "repo", "badsubject", OCI_MANIFEST, &to_bytes(&v)).await;
    // bad digest in an index entry
    let index = json!({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": [
        {"mediaType": OCI_MANIFEST, "digest": "sha256:zz", "size": 10}
    ]});
    assert_manifest_refused(&node, "repo", "badindex", OCI_INDEX, &to_bytes(&index)).await;
}

#[tokio::test]
async fn media_type_field_disagreeing_with_content_type_is_manifest_invalid() {
    let node = Node::start().await;
    let config = push_blob_desc(&node, "repo", OCI_CONFIG, b"{}").await;
    let manifest = to_bytes(&image_manifest(&config, &[]));
    // Body says OCI manifest, header says OCI index / Docker manifest.
    assert_manifest_refused(&node, "repo", "mismatch", OCI_INDEX, &manifest).await;
    assert_manifest_refused(&node, "repo", "mismatch", DOCKER_MANIFEST, &manifest).await;
}

#[tokio::test]
async fn oversized_manifest_is_413_manifest_invalid() {
    let node = Node::start().await;
    let config = push_blob_desc(&node, "repo", OCI_CONFIG, b"{}").await;
    let mut v = image_manifest(&config, &[]);
    v["annotations"] = json!({"filler": "x".repeat(4 * 1024 * 1024 + 1024)});
    let body = to_bytes(&v);
    assert!(body.len() > 4 * 1024 * 1024);
    let resp = put_manifest(&node, "repo", "huge", OCI_MANIFEST, &body).await;
    assert_oci_error(resp, 413, "MANIFEST_INVALID").await;
    assert_manifest_absent(&node, "repo", "huge").await;
    assert_manifest_absent(&node, "repo", &sha256_digest(&body)).await;
}

#[tokio::test]
async fn manifest_just_under_limit_is_accepted() {
    let node = Node::start().await;
    let config = push_blob_desc(&node, "repo", OCI_CONFIG, b"{}").await;
    let mut v = image_manifest(&config, &[]);
    v["annotations"] = json!({"filler": "x".repeat(3 * 1024 * 1024)});
    let body = to_bytes(&v);
    push_manifest(&node, "repo", "big", OCI_MANIFEST, &body).await;
    assert_manifest_content(&node, "repo", "big", OCI_MANIFEST, &body).await;
}

#[tokio::test]
async fn invalid_tags_are_refused() {
    let node = Node::start().await;
    let config = push_blob_desc(&node, "repo", OCI_CONFIG, b"{}").await;
    let manifest = to_bytes(&image_manifest(&config, &[]));
    let long = "a".repeat(129);
    for tag in ["-bad", ".bad", long.as_str(), "bad%21tag", ".INVALID_MANIFEST_NAME"] {
        let resp = put_manifest(&node, "repo", tag, OCI_MANIFEST, &manifest).await;
        assert_oci_error(resp, 400, "TAG_INVALID").await;
        assert_reference_names_nothing(&node, "repo", tag).await;
    }
    assert_manifest_absent(&node, "repo", &sha256_digest(&manifest)).await;
    assert!(list_tags(&node, "repo").await.unwrap_or_default().is_empty());
}

#[tokio::test]
async fn invalid_tag_parameter_on_push_by_digest_is_refused() {
    let node = Node::start().await;
    let config = push_blob_desc(&node, "repo", OCI_CONFIG, b"{}").await;
    let manifest = to_bytes(&image_manifest(&config, &[]));
    let digest = sha256_digest(&manifest);
    let resp = put_manifest(&node, "repo", &format!("{digest}?tag=good&tag=-bad"), OCI_MANIFEST, &manifest).await;
    assert_oci_error(resp, 400, "TAG_INVALID").await;
    assert_manifest_absent(&node, "repo", "good").await;
    assert_manifest_absent(&node, "repo", &digest).await;
}

#[tokio::test]
async fn refused_requests_never_crash_the_node() {
    let node = Node::start().await;
    // A burst of garbage on every endpoint, then the node must still serve.
    let garbage: &[(&str, &str)] = &[
        ("GET", "/v2/repo/blobs/"),
        ("GET", "/v2/repo/manifests/"),
        ("PATCH", "/v2/repo/blobs/uploads/not-a-uuid"),
        ("PUT", "/v2/repo/blobs/uploads/not-a-uuid?digest=sha256:00"),
        ("GET", "/v2/repo/tags/list?n=-1"),
        ("GET", "/v2/repo/tags/list?n=abc"),
        ("GET", "/v2/repo/referrers/"),
        ("DELETE", "/v2/repo/blobs/uploads/"),
        ("GET", "/v2/repo/blobs/sha256:%00"),
    ];
    for (method, path) in garbage {
        let raw = raw_request(&node, method, path, &[], b"").await;
        assert!((400..500).contains(&raw.status), "{method} {path} → {}", raw.status);
    }
    expect_status(client().get(node.url("/v2/")).send().await.unwrap(), 200).await;
    assert_no_upload_files(&node);
}

#[tokio::test]
async fn malformed_mount_digest_is_digest_invalid() {
    let node = Node::start().await;
    push_blob(&node, "src", b"mountable").await;
    for bad in malformed_digests() {
        let resp = client()
            .post(node.url(&format!("/v2/dst/blobs/uploads/?mount={bad}&from=src")))
            .header("content-length", "0")
            .send()
            .await
            .unwrap();
        assert_oci_error(resp, 400, "DIGEST_INVALID").await;
    }
    assert_eq!(blob_status(&node, "dst", &sha256_digest(b"mountable")).await, 404);
    assert_no_upload_files(&node);
}

#[tokio::test]
async fn unsupported_digest_algorithm_is_refused() {
    let node = Node::start().await;
    for alg in ["md5", "sha1", "bogus"] {
        let resp = client()
            .post(node.url(&format!("/v2/repo/blobs/uploads/?digest-algorithm={alg}")))
            .header("content-length", "0")
            .send()
            .await
            .unwrap();
        assert_oci_error_any(resp, &[400], &["DIGEST_INVALID", "UNSUPPORTED"]).await;
    }
    assert_no_upload_files(&node);
}

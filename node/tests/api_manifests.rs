//! Manifest push, pull, content negotiation, references, tags-on-push and deletion.

mod common;

use common::oci::*;
use common::Node;
use serde_json::json;

#[tokio::test]
async fn push_by_tag_then_pull_by_tag_and_digest() {
    let node = Node::start().await;
    let config = push_blob_desc(&node, "library/app", OCI_CONFIG, br#"{"os":"linux"}"#).await;
    let layer = push_blob_desc(&node, "library/app", OCI_LAYER, &test_bytes("layer", 2000)).await;
    // Pretty-printed and with unusual key order: the registry must keep these exact bytes.
    let manifest = serde_json::to_vec_pretty(&image_manifest(&config, &[layer])).unwrap();
    let digest = sha256_digest(&manifest);

    let resp = put_manifest(&node, "library/app", "v1", OCI_MANIFEST, &manifest).await;
    let resp = expect_status(resp, 201).await;
    assert_eq!(require_header(&resp, "docker-content-digest"), digest);
    require_header(&resp, "location");

    assert_manifest_content(&node, "library/app", "v1", OCI_MANIFEST, &manifest).await;
    assert_manifest_content(&node, "library/app", &digest, OCI_MANIFEST, &manifest).await;

    for reference in ["v1", digest.as_str()] {
        let resp = client().head(node.url(&format!("/v2/library/app/manifests/{reference}"))).send().await.unwrap();
        let resp = expect_status(resp, 200).await;
        assert_eq!(require_header(&resp, "docker-content-digest"), digest);
        assert_eq!(require_header(&resp, "content-length"), manifest.len().to_string());
        assert_eq!(require_header(&resp, "content-type"), OCI_MANIFEST);
        assert!(resp.bytes().await.unwrap().is_empty());
    }
}

#[tokio::test]
async fn location_of_pushed_manifest_is_pullable() {
    let node = Node::start().await;
    let config = push_blob_desc(&node, "loc", OCI_CONFIG, b"{}").await;
    let manifest = to_bytes(&image_manifest(&config, &[]));
    let resp = expect_status(put_manifest(&node, "loc", "latest", OCI_MANIFEST, &manifest).await, 201).await;
    let loc = abs_url(&node, &require_header(&resp, "location"));
    let resp = expect_status(client().get(loc).send().await.unwrap(), 200).await;
    assert!(resp.bytes().await.unwrap().as_ref() == manifest.as_slice());
}

#[tokio::test]
async fn push_by_digest() {
    let node = Node::start().await;
    let img = push_image(&node, "bydigest", "", "by-digest").await;
    assert_manifest_content(&node, "bydigest", &img.digest, OCI_MANIFEST, &img.manifest).await;
}

#[tokio::test]
async fn push_by_digest_with_tag_parameters() {
    let node = Node::start().await;
    let config = push_blob_desc(&node, "multi", OCI_CONFIG, b"{\"a\":1}").await;
    let manifest = to_bytes(&image_manifest(&config, &[]));
    let digest = sha256_digest(&manifest);
    let resp = put_manifest(&node, "multi", &format!("{digest}?tag=a&tag=b"), OCI_MANIFEST, &manifest).await;
    let resp = expect_status(resp, 201).await;
    assert_eq!(require_header(&resp, "docker-content-digest"), digest);
    let mut tags = header_list(&resp, "oci-tag");
    tags.sort();
    assert_eq!(tags, vec!["a", "b"], "OCI-Tag headers");
    assert_manifest_content(&node, "multi", "a", OCI_MANIFEST, &manifest).await;
    assert_manifest_content(&node, "multi", "b", OCI_MANIFEST, &manifest).await;
    let listed = list_tags(&node, "multi").await.expect("repository exists");
    assert_eq!(listed, vec!["a", "b"]);
}

#[tokio::test]
async fn oci_index_is_accepted() {
    let node = Node::start().await;
    let amd = push_image(&node, "multiarch", "", "amd64").await;
    let arm = push_image(&node, "multiarch", "", "arm64").await;
    let index = to_bytes(&image_index(&[amd.descriptor(), arm.descriptor()]));
    push_manifest(&node, "multiarch", "latest", OCI_INDEX, &index).await;
    assert_manifest_content(&node, "multiarch", "latest", OCI_INDEX, &index).await;
}

#[tokio::test]
async fn docker_schema2_manifest_and_list_are_accepted() {
    let node = Node::start().await;
    let config = push_blob_desc(&node, "docker", DOCKER_CONFIG, br#"{"architecture":"amd64"}"#).await;
    let layer = push_blob_desc(&node, "docker", DOCKER_LAYER, &test_bytes("docker-layer", 512)).await;
    let manifest = to_bytes(&json!({
        "schemaVersion": 2,
        "mediaType": DOCKER_MANIFEST,
        "config": config.json(),
        "layers": [layer.json()],
    }));
    let digest = push_manifest(&node, "docker", "v2", DOCKER_MANIFEST, &manifest).await;
    assert_manifest_content(&node, "docker", "v2", DOCKER_MANIFEST, &manifest).await;

    let list = to_bytes(&json!({
        "schemaVersion": 2,
        "mediaType": DOCKER_LIST,
        "manifests": [{
            "mediaType": DOCKER_MANIFEST,
            "size": manifest.len(),
            "digest": digest,
            "platform": {"architecture": "amd64", "os": "linux"}
        }],
    }));
    push_manifest(&node, "docker", "list", DOCKER_LIST, &list).await;
    assert_manifest_content(&node, "docker", "list", DOCKER_LIST, &list).await;
}

#[tokio::test]
async fn artifact_with_empty_config_is_accepted() {
    let node = Node::start().await;
    push_empty_config(&node, "artifacts").await;
    let layer = push_blob_desc(&node, "artifacts", "application/vnd.example.data.v1", b"payload").await;
    let manifest = to_bytes(&artifact_manifest("application/vnd.example.thing.v1", &layer, None, None));
    push_manifest(&node, "artifacts", "thing", OCI_MANIFEST, &manifest).await;
    assert_manifest_content(&node, "artifacts", "thing", OCI_MANIFEST, &manifest).await;
}

#[tokio::test]
async fn artifact_without_uploaded_empty_config_is_blob_unknown() {
    let node = Node::start().await;
    let layer = push_blob_desc(&node, "artifacts", "application/vnd.example.data.v1", b"payload").await;
    let manifest = to_bytes(&artifact_manifest("application/vnd.example.thing.v1", &layer, None, None));
    let resp = put_manifest(&node, "artifacts", "thing", OCI_MANIFEST, &manifest).await;
    assert_oci_error(resp, 400, "MANIFEST_BLOB_UNKNOWN").await;
    assert_manifest_absent(&node, "artifacts", "thing").await;
}

#[tokio::test]
async fn accept_header_negotiation() {
    let node = Node::start().await;
    let img = push_image(&node, "neg", "v1", "negotiation").await;
    let url = node.url("/v2/neg/manifests/v1");

    // Lists other types only: not acceptable → 404 MANIFEST_UNKNOWN.
    let resp = client()
        .get(&url)
        .header("accept", format!("{DOCKER_MANIFEST}, {DOCKER_LIST}"))
        .send()
        .await
        .unwrap();
    assert_oci_error(resp, 404, "MANIFEST_UNKNOWN").await;
    let resp = client().get(node.url(&format!("/v2/neg/manifests/{}", img.digest))).header("accept", DOCKER_MANIFEST).send().await.unwrap();
    assert_oci_error(resp, 404, "MANIFEST_UNKNOWN").await;

    // Lists the stored type among others (also as separate header lines).
    let resp = client()
        .get(&url)
        .header("accept", format!("{DOCKER_MANIFEST}, {OCI_MANIFEST}, {OCI_INDEX}"))
        .send()
        .await
        .unwrap();
    let resp = expect_status(resp, 200).await;
    assert_eq!(require_header(&resp, "content-type"), OCI_MANIFEST);
    let resp = client().get(&url).header("accept", DOCKER_MANIFEST).header("accept", OCI_MANIFEST).send().await.unwrap();
    expect_status(resp, 200).await;

    // */* → the stored manifest.
    let resp = client().get(&url).header("accept", "*/*").send().await.unwrap();
    let resp = expect_status(resp, 200).await;
    assert!(resp.bytes().await.unwrap().as_ref() == img.manifest.as_slice());

    // No Accept header at all (reqwest would add one): raw request.
    let raw = raw_request(&node, "GET", "/v2/neg/manifests/v1", &[], b"").await;
    assert_eq!(raw.status, 200);
    assert_eq!(raw.header("content-type"), Some(OCI_MANIFEST));
    assert!(raw.body == img.manifest);
}

#[tokio::test]
async fn missing_layer_is_manifest_blob_unknown_and_nothing_stored() {
    let node = Node::start().await;
    let config = push_blob_desc(&node, "dangling", OCI_CONFIG, b"{}").await;
    let missing = Descriptor::of(OCI_LAYER, b"never uploaded");
    let manifest = to_bytes(&image_manifest(&config, &[missing]));
    let resp = put_manifest(&node, "dangling", "v1", OCI_MANIFEST, &manifest).await;
    assert_oci_error(resp, 400, "MANIFEST_BLOB_UNKNOWN").await;
    assert_manifest_absent(&node, "dangling", "v1").await;
    assert_manifest_absent(&node, "dangling", &sha256_digest(&manifest)).await;
    assert_tag_not_listed(&node, "dangling", "v1").await;
}

#[tokio::test]
async fn missing_config_is_manifest_blob_unknown() {
    let node = Node::start().await;
    let layer = push_blob_desc(&node, "dangling", OCI_LAYER, b"layer").await;
    let config = Descriptor::of(OCI_CONFIG, b"{\"never\":\"uploaded\"}");
    let manifest = to_bytes(&image_manifest(&config, &[layer]));
    let resp = put_manifest(&node, "dangling", "v1", OCI_MANIFEST, &manifest).await;
    assert_oci_error(resp, 400, "MANIFEST_BLOB_UNKNOWN").await;
    assert_manifest_absent(&node, "dangling", "v1").await;
}

#[tokio::test]
async fn layer_only_in_another_repository_is_manifest_blob_unknown() {
    let node = Node::start().await;
    let config = push_blob_desc(&node, "mine", OCI_CONFIG, b"{}").await;
    let foreign = push_blob_desc(&node, "theirs", OCI_LAYER, &test_bytes("foreign", 100)).await;
    let manifest = to_bytes(&image_manifest(&config, &[foreign]));
    let resp = put_manifest(&node, "mine", "v1", OCI_MANIFEST, &manifest).await;
    assert_oci_error(resp, 400, "MANIFEST_BLOB_UNKNOWN").await;
    assert_manifest_absent(&node, "mine", "v1").await;
}

#[tokio::test]
async fn index_with_unknown_child_is_manifest_blob_unknown() {
    let node = Node::start().await;
    let known = push_image(&node, "idx", "", "known").await;
    let unknown = Descriptor::of(OCI_MANIFEST, b"{\"not\":\"pushed\"}");
    let index = to_bytes(&image_index(&[known.descriptor(), unknown]));
    let resp = put_manifest(&node, "idx", "latest", OCI_INDEX, &index).await;
    assert_oci_error(resp, 400, "MANIFEST_BLOB_UNKNOWN").await;
    assert_manifest_absent(&node, "idx", "latest").await;
    assert_manifest_absent(&node, "idx", &sha256_digest(&index)).await;
}

#[tokio::test]
async fn dangling_subject_is_accepted_with_oci_subject_header() {
    let node = Node::start().await;
    push_empty_config(&node, "sub").await;
    let layer = push_blob_desc(&node, "sub", "application/vnd.example.sig.v1", b"signature").await;
    let subject = Descriptor::of(OCI_MANIFEST, b"{\"image\":\"not pushed yet\"}");
    let manifest = to_bytes(&artifact_manifest("application/vnd.example.sig.v1", &layer, Some(&subject), None));
    let digest = sha256_digest(&manifest);
    let resp = put_manifest(&node, "sub", &digest, OCI_MANIFEST, &manifest).await;
    let resp = expect_status(resp, 201).await;
    assert_eq!(require_header(&resp, "oci-subject"), subject.digest);
    assert_eq!(require_header(&resp, "docker-content-digest"), digest);
    assert_manifest_content(&node, "sub", &digest, OCI_MANIFEST, &manifest).await;
}

#[tokio::test]
async fn put_by_digest_with_mismatching_body_is_digest_invalid() {
    let node = Node::start().await;
    let config = push_blob_desc(&node, "mm", OCI_CONFIG, b"{}").await;
    let manifest = to_bytes(&image_manifest(&config, &[]));
    let claimed = sha256_digest(b"another manifest");
    let resp = put_manifest(&node, "mm", &claimed, OCI_MANIFEST, &manifest).await;
    assert_oci_error(resp, 400, "DIGEST_INVALID").await;
    assert_manifest_absent(&node, "mm", &claimed).await;
    assert_manifest_absent(&node, "mm", &sha256_digest(&manifest)).await;
}

#[tokio::test]
async fn put_by_sha512_digest() {
    let node = Node::start().await;
    let config = push_blob_desc(&node, "s512", OCI_CONFIG, b"{}").await;
    let manifest = to_bytes(&image_manifest(&config, &[]));
    let digest = sha512_digest(&manifest);
    let resp = put_manifest(&node, "s512", &digest, OCI_MANIFEST, &manifest).await;
    let resp = expect_status(resp, 201).await;
    assert_eq!(require_header(&resp, "docker-content-digest"), digest);
    let resp = expect_status(get_manifest(&node, "s512", &digest).await, 200).await;
    assert_eq!(require_header(&resp, "docker-content-digest"), digest);
    assert!(resp.bytes().await.unwrap().as_ref() == manifest.as_slice());
}

#[tokio::test]
async fn sha512_blobs_can_be_referenced() {
    let node = Node::start().await;
    let config_bytes = b"{\"sha\":512}";
    let layer_bytes = test_bytes("sha512-layer", 300);
    let config = Descriptor { media_type: OCI_CONFIG.into(), digest: sha512_digest(config_bytes), size: config_bytes.len() as u64 };
    let layer = Descriptor { media_type: OCI_LAYER.into(), digest: sha512_digest(&layer_bytes), size: layer_bytes.len() as u64 };
    push_blob_with_digest(&node, "s512", config_bytes, &config.digest).await;
    push_blob_with_digest(&node, "s512", &layer_bytes, &layer.digest).await;
    let manifest = to_bytes(&image_manifest(&config, &[layer]));
    push_manifest(&node, "s512", "v1", OCI_MANIFEST, &manifest).await;
    assert_manifest_content(&node, "s512", "v1", OCI_MANIFEST, &manifest).await;
}

#[tokio::test]
async fn unknown_tag_and_digest_are_manifest_unknown() {
    let node = Node::start().await;
    push_image(&node, "known", "v1", "known").await;
    let resp = get_manifest(&node, "known", "nope").await;
    assert_oci_error(resp, 404, "MANIFEST_UNKNOWN").await;
    let resp = get_manifest(&node, "known", &sha256_digest(b"nope")).await;
    assert_oci_error(resp, 404, "MANIFEST_UNKNOWN").await;
    assert_eq!(manifest_status(&node, "known", "nope").await, 404);
    // A repository that was never pushed to.
    assert_manifest_absent(&node, "never/pushed", "v1").await;
}

#[tokio::test]
async fn retagging_moves_the_tag_and_keeps_the_old_manifest() {
    let node = Node::start().await;
    let first = push_image(&node, "retag", "latest", "first").await;
    let second = push_image(&node, "retag", "latest", "second").await;
    assert_manifest_content(&node, "retag", "latest", OCI_MANIFEST, &second.manifest).await;
    assert_manifest_content(&node, "retag", &first.digest, OCI_MANIFEST, &first.manifest).await;
    assert_eq!(list_tags(&node, "retag").await.unwrap(), vec!["latest"]);
}

#[tokio::test]
async fn delete_by_digest_removes_manifest_and_its_tags() {
    let node = Node::start().await;
    let img = push_image(&node, "del", "v1", "delete").await;
    push_manifest(&node, "del", "v1-alias", OCI_MANIFEST, &img.manifest).await;
    let keep = push_image(&node, "del", "keep", "keep").await;

    let resp = client().delete(node.url(&format!("/v2/del/manifests/{}", img.digest))).send().await.unwrap();
    expect_status(resp, 202).await;
    assert_manifest_absent(&node, "del", &img.digest).await;
    assert_manifest_absent(&node, "del", "v1").await;
    assert_manifest_absent(&node, "del", "v1-alias").await;
    assert_tag_not_listed(&node, "del", "v1").await;
    assert_tag_not_listed(&node, "del", "v1-alias").await;
    assert_manifest_content(&node, "del", "keep", OCI_MANIFEST, &keep.manifest).await;
}

#[tokio::test]
async fn delete_by_tag_removes_only_the_tag() {
    let node = Node::start().await;
    let img = push_image(&node, "deltag", "v1", "delete-tag").await;
    push_manifest(&node, "deltag", "v2", OCI_MANIFEST, &img.manifest).await;
    let resp = client().delete(node.url("/v2/deltag/manifests/v1")).send().await.unwrap();
    expect_status(resp, 202).await;
    assert_manifest_absent(&node, "deltag", "v1").await;
    assert_tag_not_listed(&node, "deltag", "v1").await;
    assert_manifest_content(&node, "deltag", &img.digest, OCI_MANIFEST, &img.manifest).await;
    assert_manifest_content(&node, "deltag", "v2", OCI_MANIFEST, &img.manifest).await;
}

#[tokio::test]
async fn delete_unknown_manifest_is_404() {
    let node = Node::start().await;
    push_image(&node, "du", "v1", "du").await;
    let resp = client().delete(node.url(&format!("/v2/du/manifests/{}", sha256_digest(b"nope")))).send().await.unwrap();
    assert_oci_error(resp, 404, "MANIFEST_UNKNOWN").await;
    let resp = client().delete(node.url("/v2/du/manifests/nope")).send().await.unwrap();
    assert_oci_error(resp, 404, "MANIFEST_UNKNOWN").await;
}

#[tokio::test]
async fn manifest_in_nested_repository() {
    let node = Node::start().await;
    let img = push_image(&node, "team/app/x", "1.0", "nested").await;
    assert_manifest_content(&node, "team/app/x", "1.0", OCI_MANIFEST, &img.manifest).await;
    assert_manifest_absent(&node, "team/app", "1.0").await;
    assert_manifest_absent(&node, "team/app/x/y", "1.0").await;
}

#[tokio::test]
async fn manifest_is_not_visible_in_another_repository() {
    let node = Node::start().await;
    let img = push_image(&node, "tenant-a", "v1", "tenant").await;
    push_image(&node, "tenant-b", "v0", "other").await;
    assert_manifest_absent(&node, "tenant-b", &img.digest).await;
    assert_manifest_absent(&node, "tenant-b", "v1").await;
}

#[tokio::test]
async fn valid_tag_shapes_are_accepted() {
    let node = Node::start().await;
    let config = push_blob_desc(&node, "tags", OCI_CONFIG, b"{}").await;
    let manifest = to_bytes(&image_manifest(&config, &[]));
    let long = "a".repeat(128);
    for tag in ["latest", "v1.2.3", "_underscore", "UPPER_case-1", "9", long.as_str()] {
        push_manifest(&node, "tags", tag, OCI_MANIFEST, &manifest).await;
        assert_manifest_content(&node, "tags", tag, OCI_MANIFEST, &manifest).await;
    }
}

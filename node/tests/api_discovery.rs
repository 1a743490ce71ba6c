//! Content discovery: tags list, catalog and the referrers API.

mod common;

use common::oci::*;
use common::Node;
use serde_json::{json, Value};

/// Pushes one small manifest under every tag given.
async fn push_tags(node: &Node, repo: &str, tags: &[&str]) -> String {
    let config = push_blob_desc(node, repo, OCI_CONFIG, format!("{{\"repo\":\"{repo}\"}}").as_bytes()).await;
    let manifest = to_bytes(&image_manifest(&config, &[]));
    let mut digest = String::new();
    for tag in tags {
        digest = push_manifest(node, repo, tag, OCI_MANIFEST, &manifest).await;
    }
    digest
}

async fn get_json(node: &Node, path: &str) -> (reqwest::header::HeaderMap, Value) {
    let resp = expect_status(client().get(node.url(path)).send().await.unwrap(), 200).await;
    let headers = resp.headers().clone();
    let v: Value = resp.json().await.unwrap();
    (headers, v)
}

fn strings(v: &Value) -> Vec<String> {
    v.as_array().map(|a| a.iter().map(|s| s.as_str().unwrap().to_string()).collect()).unwrap_or_default()
}

fn link(headers: &reqwest::header::HeaderMap) -> Option<String> {
    headers.get("link").map(|v| v.to_str().unwrap().to_string())
}

/// The path inside `<…>; rel="next"`.
fn next_path(link: &str) -> String {
    assert!(link.ends_with("; rel=\"next\""), "Link {link:?} lacks rel=\"next\"");
    let start = link.find('<').expect("Link has <") + 1;
    let end = link.find('>').expect("Link has >");
    link[start..end].to_string()
}

// ------------------------------------------------------------------ tags

#[tokio::test]
async fn tags_are_listed_asciibetically() {
    let node = Node::start().await;
    let tags = ["b", "A", "a", "1.0", "_x", "Z", "latest", "10", "2"];
    push_tags(&node, "sorted", &tags).await;
    let (_, v) = get_json(&node, "/v2/sorted/tags/list").await;
    assert_eq!(v["name"], "sorted");
    let mut want: Vec<String> = tags.iter().map(|s| s.to_string()).collect();
    want.sort();
    assert_eq!(strings(&v["tags"]), want);
}

#[tokio::test]
async fn tags_pagination_follows_link_headers() {
    let node = Node::start().await;
    let tags = ["t1", "t2", "t3", "t4", "t5"];
    push_tags(&node, "paged", &tags).await;

    let (h, v) = get_json(&node, "/v2/paged/tags/list?n=2").await;
    assert_eq!(strings(&v["tags"]), vec!["t1", "t2"]);
    assert_eq!(link(&h).as_deref(), Some("</v2/paged/tags/list?n=2&last=t2>; rel=\"next\""));

    let (h, v) = get_json(&node, &next_path(&link(&h).unwrap())).await;
    assert_eq!(strings(&v["tags"]), vec!["t3", "t4"]);
    assert_eq!(link(&h).as_deref(), Some("</v2/paged/tags/list?n=2&last=t4>; rel=\"next\""));

    let (h, v) = get_json(&node, &next_path(&link(&h).unwrap())).await;
    assert_eq!(strings(&v["tags"]), vec!["t5"]);
    assert_eq!(link(&h), None, "last page must not have a Link");

    // n larger than the list: everything, no Link.
    let (h, v) = get_json(&node, "/v2/paged/tags/list?n=100").await;
    assert_eq!(strings(&v["tags"]), tags.to_vec());
    assert_eq!(link(&h), None);
}

#[tokio::test]
async fn tags_last_without_n() {
    let node = Node::start().await;
    push_tags(&node, "paged", &["a", "b", "c", "d"]).await;
    let (_, v) = get_json(&node, "/v2/paged/tags/list?last=b").await;
    assert_eq!(strings(&v["tags"]), vec!["c", "d"]);
    // `last` need not be an existing tag: results start after it lexically.
    let (_, v) = get_json(&node, "/v2/paged/tags/list?n=1&last=bb").await;
    assert_eq!(strings(&v["tags"]), vec!["c"]);
    let (h, v) = get_json(&node, "/v2/paged/tags/list?n=5&last=d").await;
    assert!(strings(&v["tags"]).is_empty());
    assert_eq!(link(&h), None);
}

#[tokio::test]
async fn tags_page_ending_exactly_at_the_end_has_no_link() {
    let node = Node::start().await;
    push_tags(&node, "exact", &["a", "b", "c", "d"]).await;
    let (h, v) = get_json(&node, "/v2/exact/tags/list?n=4").await;
    assert_eq!(strings(&v["tags"]), vec!["a", "b", "c", "d"]);
    assert_eq!(link(&h), None, "no more tags remain");
    let (h, v) = get_json(&node, "/v2/exact/tags/list?n=2&last=b").await;
    assert_eq!(strings(&v["tags"]), vec!["c", "d"]);
    assert_eq!(link(&h), None, "no more tags remain");
}

#[tokio::test]
async fn tags_n_zero_is_empty_without_link() {
    let node = Node::start().await;
    push_tags(&node, "zero", &["a", "b"]).await;
    let (h, v) = get_json(&node, "/v2/zero/tags/list?n=0").await;
    assert_eq!(v["name"], "zero");
    assert!(strings(&v["tags"]).is_empty(), "n=0 returned {v}");
    assert_eq!(link(&h), None);
}

#[tokio::test]
async fn tags_of_unknown_repository_is_name_unknown() {
    let node = Node::start().await;
    push_tags(&node, "exists", &["a"]).await;
    let resp = client().get(node.url("/v2/does/not/exist/tags/list")).send().await.unwrap();
    assert_oci_error(resp, 404, "NAME_UNKNOWN").await;
}

#[tokio::test]
async fn tags_in_nested_repository() {
    let node = Node::start().await;
    push_tags(&node, "team/app/x", &["v2", "v1"]).await;
    let (_, v) = get_json(&node, "/v2/team/app/x/tags/list").await;
    assert_eq!(v["name"], "team/app/x");
    assert_eq!(strings(&v["tags"]), vec!["v1", "v2"]);
}

// ------------------------------------------------------------------ catalog

#[tokio::test]
async fn catalog_lists_repositories_sorted() {
    let node = Node::start().await;
    for repo in ["zeta", "alpha", "team/app/x", "alpha-2", "beta"] {
        push_tags(&node, repo, &["v1"]).await;
    }
    let (_, v) = get_json(&node, "/v2/_catalog").await;
    assert_eq!(strings(&v["repositories"]), vec!["alpha", "alpha-2", "beta", "team/app/x", "zeta"]);
}

#[tokio::test]
async fn catalog_pagination_follows_link_headers() {
    let node = Node::start().await;
    for repo in ["r1", "r2", "r3", "r4", "r5"] {
        push_tags(&node, repo, &["v1"]).await;
    }
    let (h, v) = get_json(&node, "/v2/_catalog?n=2").await;
    assert_eq!(strings(&v["repositories"]), vec!["r1", "r2"]);
    assert_eq!(link(&h).as_deref(), Some("</v2/_catalog?n=2&last=r2>; rel=\"next\""));
    let (h, v) = get_json(&node, &next_path(&link(&h).unwrap())).await;
    assert_eq!(strings(&v["repositories"]), vec!["r3", "r4"]);
    assert_eq!(link(&h).as_deref(), Some("</v2/_catalog?n=2&last=r4>; rel=\"next\""));
    let (h, v) = get_json(&node, &next_path(&link(&h).unwrap())).await;
    assert_eq!(strings(&v["repositories"]), vec!["r5"]);
    assert_eq!(link(&h), None);

    let (h, v) = get_json(&node, "/v2/_catalog?last=r3").await;
    assert_eq!(strings(&v["repositories"]), vec!["r4", "r5"]);
    assert_eq!(link(&h), None);
}

#[tokio::test]
async fn catalog_n_zero_is_empty_without_link() {
    let node = Node::start().await;
    push_tags(&node, "one", &["v1"]).await;
    let (h, v) = get_json(&node, "/v2/_catalog?n=0").await;
    assert!(strings(&v["repositories"]).is_empty(), "n=0 returned {v}");
    assert_eq!(link(&h), None);
}

#[tokio::test]
async fn catalog_of_empty_registry_is_empty() {
    let node = Node::start().await;
    let (_, v) = get_json(&node, "/v2/_catalog").await;
    assert!(strings(&v["repositories"]).is_empty());
}

// ------------------------------------------------------------------ referrers

struct Referrers {
    subject: PushedImage,
    sbom: (String, usize),
    signature: (String, usize),
    index: (String, usize),
}

/// Pushes an image and three referrers: an artifact with artifactType and annotations,
/// an image manifest without artifactType (config media type counts), and an index.
async fn push_referrers(node: &Node, repo: &str) -> Referrers {
    let subject = push_image(node, repo, "v1", "subject").await;
    push_empty_config(node, repo).await;

    let sbom_layer = push_blob_desc(node, repo, "application/spdx+json", b"{\"spdx\":true}").await;
    let sbom = to_bytes(&artifact_manifest(
        "application/vnd.example.sbom.v1",
        &sbom_layer,
        Some(&subject.descriptor()),
        Some(json!({"org.opencontainers.image.created": "2024-01-01T00:00:00Z", "org.example.format": "json"})),
    ));
    let sbom_digest = push_manifest(node, repo, &sha256_digest(&sbom), OCI_MANIFEST, &sbom).await;

    let sig_config = push_blob_desc(node, repo, "application/vnd.example.signature.config.v1+json", b"{\"sig\":1}").await;
    let sig_layer = push_blob_desc(node, repo, "application/vnd.example.signature.v1", b"sig-bytes").await;
    let mut sig = image_manifest(&sig_config, &[sig_layer]);
    sig["subject"] = subject.descriptor().json();
    let sig = to_bytes(&sig);
    let sig_digest = push_manifest(node, repo, &sha256_digest(&sig), OCI_MANIFEST, &sig).await;

    let child = push_image(node, repo, "", "index-child").await;
    let mut index = image_index(&[child.descriptor()]);
    index["subject"] = subject.descriptor().json();
    index["annotations"] = json!({"org.example.kind": "bundle"});
    let index = to_bytes(&index);
    let resp = put_manifest(node, repo, &sha256_digest(&index), OCI_INDEX, &index).await;
    let resp = expect_status(resp, 201).await;
    assert_eq!(require_header(&resp, "oci-subject"), subject.digest);
    let index_digest = sha256_digest(&index);

    Referrers {
        subject,
        sbom: (sbom_digest, sbom.len()),
        signature: (sig_digest, sig.len()),
        index: (index_digest, index.len()),
    }
}

async fn get_referrers(node: &Node, path: &str) -> (reqwest::header::HeaderMap, Vec<Value>) {
    let resp = expect_status(client().get(node.url(path)).send().await.unwrap(), 200).await;
    let headers = resp.headers().clone();
    assert_eq!(headers.get("content-type").unwrap(), OCI_INDEX);
    let v: Value = resp.json().await.unwrap();
    assert_eq!(v["schemaVersion"], 2);
    assert_eq!(v["mediaType"], OCI_INDEX);
    let manifests = v["manifests"].as_array().unwrap_or_else(|| panic!("no manifests array: {v}")).clone();
    (headers, manifests)
}

fn find<'a>(list: &'a [Value], digest: &str) -> &'a Value {
    list.iter().find(|d| d["digest"] == digest).unwrap_or_else(|| panic!("{digest} not among referrers {list:?}"))
}

fn no_annotations(d: &Value) -> bool {
    d.get("annotations").map(|a| a.is_null() || a.as_object().is_some_and(|o| o.is_empty())).unwrap_or(true)
}

#[tokio::test]
async fn referrers_list_describes_each_referrer() {
    let node = Node::start().await;
    let r = push_referrers(&node, "signed").await;
    let (_, list) = get_referrers(&node, &format!("/v2/signed/referrers/{}", r.subject.digest)).await;
    assert_eq!(list.len(), 3, "referrers: {list:?}");

    let sbom = find(&list, &r.sbom.0);
    assert_eq!(sbom["mediaType"], OCI_MANIFEST);
    assert_eq!(sbom["size"], r.sbom.1);
    assert_eq!(sbom["artifactType"], "application/vnd.example.sbom.v1");
    assert_eq!(
        sbom["annotations"],
        json!({"org.opencontainers.image.created": "2024-01-01T00:00:00Z", "org.example.format": "json"})
    );

    let sig = find(&list, &r.signature.0);
    assert_eq!(sig["mediaType"], OCI_MANIFEST);
    assert_eq!(sig["size"], r.signature.1);
    assert_eq!(sig["artifactType"], "application/vnd.example.signature.config.v1+json");
    assert!(no_annotations(sig), "unexpected annotations: {sig}");

    let idx = find(&list, &r.index.0);
    assert_eq!(idx["mediaType"], OCI_INDEX);
    assert_eq!(idx["size"], r.index.1);
    assert!(idx.get("artifactType").is_none_or(|a| a.is_null()), "index without artifactType got one: {idx}");
    assert_eq!(idx["annotations"], json!({"org.example.kind": "bundle"}));
}

#[tokio::test]
async fn referrers_filter_by_artifact_type() {
    let node = Node::start().await;
    let r = push_referrers(&node, "filtered").await;
    let path = format!("/v2/filtered/referrers/{}?artifactType=application/vnd.example.sbom.v1", r.subject.digest);
    let (h, list) = get_referrers(&node, &path).await;
    assert_eq!(h.get("oci-filters-applied").map(|v| v.to_str().unwrap()), Some("artifactType"));
    assert_eq!(list.len(), 1, "{list:?}");
    assert_eq!(list[0]["digest"], r.sbom.0.as_str());

    let path = format!("/v2/filtered/referrers/{}?artifactType=application/vnd.example.none", r.subject.digest);
    let (h, list) = get_referrers(&node, &path).await;
    assert_eq!(h.get("oci-filters-applied").map(|v| v.to_str().unwrap()), Some("artifactType"));
    assert!(list.is_empty());
}

#[tokio::test]
async fn referrers_of_manifest_without_referrers_is_empty() {
    let node = Node::start().await;
    let img = push_image(&node, "lonely", "v1", "lonely").await;
    let (_, list) = get_referrers(&node, &format!("/v2/lonely/referrers/{}", img.digest)).await;
    assert!(list.is_empty());
    // A digest nothing in the repository refers to.
    let (_, list) = get_referrers(&node, &format!("/v2/lonely/referrers/{}", sha256_digest(b"unknown"))).await;
    assert!(list.is_empty());
}

#[tokio::test]
async fn referrers_with_invalid_digest_is_digest_invalid() {
    let node = Node::start().await;
    push_image(&node, "bad", "v1", "bad").await;
    let short = format!("sha256:{}", "a".repeat(63));
    for bad in ["sha256:xyz", "notadigest", short.as_str()] {
        let resp = client().get(node.url(&format!("/v2/bad/referrers/{bad}"))).send().await.unwrap();
        assert_oci_error(resp, 400, "DIGEST_INVALID").await;
    }
}

#[tokio::test]
async fn deleted_referrer_disappears_from_the_list() {
    let node = Node::start().await;
    let r = push_referrers(&node, "pruned").await;
    let resp = client().delete(node.url(&format!("/v2/pruned/manifests/{}", r.sbom.0))).send().await.unwrap();
    expect_status(resp, 202).await;
    let (_, list) = get_referrers(&node, &format!("/v2/pruned/referrers/{}", r.subject.digest)).await;
    assert_eq!(list.len(), 2, "{list:?}");
    assert!(list.iter().all(|d| d["digest"] != r.sbom.0.as_str()));
}

#[tokio::test]
async fn referrer_pushed_before_its_subject_is_listed() {
    let node = Node::start().await;
    push_empty_config(&node, "early").await;
    let layer = push_blob_desc(&node, "early", "application/vnd.example.sig.v1", b"early-sig").await;
    let subject = Descriptor::of(OCI_MANIFEST, b"{\"future\":\"image\"}");
    let sig = to_bytes(&artifact_manifest("application/vnd.example.sig.v1", &layer, Some(&subject), None));
    let resp = put_manifest(&node, "early", &sha256_digest(&sig), OCI_MANIFEST, &sig).await;
    let resp = expect_status(resp, 201).await;
    assert_eq!(require_header(&resp, "oci-subject"), subject.digest);
    let (_, list) = get_referrers(&node, &format!("/v2/early/referrers/{}", subject.digest)).await;
    assert_eq!(list.len(), 1);
    assert_eq!(list[0]["digest"], sha256_digest(&sig).as_str());
    assert_eq!(list[0]["artifactType"], "application/vnd.example.sig.v1");
}

#[tokio::test]
async fn referrers_are_scoped_to_the_repository() {
    let node = Node::start().await;
    let r = push_referrers(&node, "scoped-a").await;
    push_image(&node, "scoped-b", "v1", "b").await;
    let (_, list) = get_referrers(&node, &format!("/v2/scoped-b/referrers/{}", r.subject.digest)).await;
    assert!(list.is_empty(), "referrers leaked across repositories: {list:?}");
}

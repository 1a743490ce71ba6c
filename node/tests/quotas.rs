//! Storage quotas per namespace, through the registry API and `meridian admin quota`, on
//! three real processes:
//!
//! - a new quota counts what its namespace holds, byte for byte (a layer two
//!   repositories share counts once); pushes add exactly their new bytes;
//! - a manifest push that would go past the limit is refused with 403 DENIED naming the
//!   quota, the usage and the limit, and leaves nothing behind in any region;
//! - an upload into a full namespace is refused before its bytes are read; other
//!   namespaces are not affected; deleting makes room and pushes work again;
//! - two regions pushing into one namespace at once never take it past the limit.

mod common;

use common::cluster::{Cluster, ClusterOptions};
use common::oci::{self, Descriptor, OCI_CONFIG, OCI_LAYER, OCI_MANIFEST};
use common::Node;
use serde_json::Value;
use std::time::Duration;

const REGIONS: [&str; 3] = ["us", "eu", "ap"];

async fn three_regions() -> Cluster {
    Cluster::start_with(ClusterOptions::new(3).names(&REGIONS).env("MERIDIAN_GC_INTERVAL_SECS", "0")).await
}

/// An image whose blobs are uploaded into `repo` at `node` but whose manifest is not yet
/// pushed: the manifest bytes and each item's size.
struct Staged {
    manifest: Vec<u8>,
    config: Descriptor,
    layers: Vec<Descriptor>,
}

impl Staged {
    fn digest(&self) -> String {
        oci::sha256_digest(&self.manifest)
    }

    /// Bytes the image adds to a namespace that holds none of it.
    fn size(&self) -> u64 {
        self.manifest.len() as u64 + self.config.size + self.layers.iter().map(|l| l.size).sum::<u64>()
    }
}

async fn stage(node: &Node, repo: &str, seed: &str, layers: &[&[u8]]) -> Staged {
    let config = oci::push_blob_desc(node, repo, OCI_CONFIG, &oci::to_bytes(&serde_json::json!({ "seed": seed }))).await;
    let mut descs = Vec::new();
    for l in layers {
        descs.push(oci::push_blob_desc(node, repo, OCI_LAYER, l).await);
    }
    let manifest = oci::to_bytes(&oci::image_manifest(&config, &descs));
    Staged { manifest, config, layers: descs }
}

async fn quota_list(c: &Cluster, i: usize) -> Vec<Value> {
    c.admin_json_at(i, &["quota", "list"]).await["quotas"].as_array().cloned().unwrap_or_default()
}

async fn quota_field(c: &Cluster, i: usize, pattern: &str, field: &str) -> u64 {
    let list = quota_list(c, i).await;
    let q = list.iter().find(|q| q["pattern"] == pattern).unwrap_or_else(|| panic!("no quota {pattern}: {list:?}"));
    q[field].as_u64().unwrap()
}

/// `field` of quota `pattern` as region `i` reports it, once that region has applied
/// everything up to `want` (its Raft log catches up within milliseconds); after ten
/// seconds, the last figure, for the caller's assertion. Each region checks uploads and
/// reports usage from its own applied state, so a change made through one region is
/// waited for before another is asked.
async fn wait_for_quota(c: &Cluster, i: usize, pattern: &str, field: &str, want: u64) -> u64 {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let now = quota_field(c, i, pattern, field).await;
        if now == want || std::time::Instant::now() >= deadline {
            return now;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn wait_for_used(c: &Cluster, i: usize, pattern: &str, want: u64) -> u64 {
    wait_for_quota(c, i, pattern, "used_bytes", want).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_quota_counts_exactly_refuses_what_would_not_fit_and_deleting_makes_room() {
    let c = three_regions().await;
    let shared = oci::test_bytes("quota-shared", 30_000);
    let a = stage(&c[0], "team-a/app", "a", &[&shared]).await;
    oci::push_manifest(&c[0], "team-a/app", "v1", OCI_MANIFEST, &a.manifest).await;

    // A new quota counts what is there: a, exactly.
    let set = c.admin_json_at(1, &["quota", "set", "team-a/*", "1GiB"]).await;
    assert_eq!(set["used_bytes"], a.size(), "{set}");
    assert_eq!(set["limit_bytes"], 1u64 << 30, "{set}");

    // b in another repository of the namespace shares a's layer: it counts once.
    let own_b = oci::test_bytes("quota-own-b", 20_000);
    let b = stage(&c[1], "team-a/other", "b", &[&shared, &own_b]).await;
    let b_new = b.manifest.len() as u64 + b.config.size + own_b.len() as u64;
    let limit = a.size() + b_new + 10_000;
    c.admin_json_at(0, &["quota", "set", "team-a/*", &limit.to_string()]).await;
    oci::push_manifest(&c[1], "team-a/other", "v1", OCI_MANIFEST, &b.manifest).await;
    assert_eq!(wait_for_used(&c, 2, "team-a/*", a.size() + b_new).await, a.size() + b_new, "b adds only what a did not have");

    // c needs 25 kB more than the 10 kB left: refused, in full, with the figures.
    let big = oci::test_bytes("quota-big", 25_000);
    let staged_c = stage(&c[2], "team-a/app", "c", &[&big]).await;
    let resp = oci::put_manifest(&c[2], "team-a/app", "v2", OCI_MANIFEST, &staged_c.manifest).await;
    let body = oci::assert_oci_error(resp, 403, "DENIED").await;
    let message = body["errors"][0]["message"].as_str().unwrap().to_string();
    for part in ["team-a/*".to_string(), (a.size() + b_new).to_string(), limit.to_string(), staged_c.size().to_string()] {
        assert!(message.contains(&part), "the refusal names {part}: {message}");
    }
    for i in 0..3 {
        oci::assert_manifest_absent(&c[i], "team-a/app", "v2").await;
        oci::assert_manifest_absent(&c[i], "team-a/app", &staged_c.digest()).await;
    }
    assert_eq!(oci::list_tags(&c[0], "team-a/app").await, Some(vec!["v1".to_string()]));
    assert_eq!(wait_for_used(&c, 0, "team-a/*", a.size() + b_new).await, a.size() + b_new, "a refused push counts nothing");

    // A limit at the usage: the namespace is full, so uploads are refused before any byte
    // is read, both as sessions and as single requests. Other namespaces are unaffected.
    c.admin_json_at(0, &["quota", "set", "team-a/*", &(a.size() + b_new).to_string()]).await;
    for i in [1, 2] {
        let full = a.size() + b_new;
        assert_eq!(wait_for_quota(&c, i, "team-a/*", "limit_bytes", full).await, full, "region {i} has the new limit");
    }
    let resp = oci::client()
        .post(c[1].url("/v2/team-a/app/blobs/uploads/"))
        .header("content-length", "0")
        .send()
        .await
        .unwrap();
    let body = oci::assert_oci_error(resp, 403, "DENIED").await;
    assert!(body["errors"][0]["message"].as_str().unwrap().contains("team-a/*"), "{body}");
    let blob = oci::test_bytes("quota-refused-upload", 5_000);
    let resp = oci::post_blob(&c[2], "team-a/new", &blob, &oci::sha256_digest(&blob)).await;
    oci::assert_oci_error(resp, 403, "DENIED").await;
    oci::assert_blob_absent(&c[2], "team-a/new", &oci::sha256_digest(&blob)).await;
    oci::push_image(&c[0], "team-b/app", "v1", "other namespace").await;

    // Deleting b gives back exactly what was b's alone (a still holds the shared layer):
    // 30 kB free, and the push that did not fit before goes through.
    c.admin_json_at(0, &["quota", "set", "team-a/*", &limit.to_string()]).await;
    let resp = oci::client().delete(c[0].url(&format!("/v2/team-a/other/manifests/{}", b.digest()))).send().await.unwrap();
    assert_eq!(resp.status(), 202);
    assert_eq!(wait_for_used(&c, 1, "team-a/*", a.size()).await, a.size());
    oci::push_manifest(&c[2], "team-a/app", "v2", OCI_MANIFEST, &staged_c.manifest).await;
    let want = a.size() + staged_c.size();
    assert_eq!(wait_for_used(&c, 1, "team-a/*", want).await, want);
    c.wait_image_complete(1, "team-a/app:v2", &REGIONS, Duration::from_secs(60)).await.expect("v2 replicated");

    // The table view, then removal.
    let table = c.admin_at(0, &["quota", "list"]).await;
    assert_eq!(table.code, 0, "{table}");
    assert!(table.stdout.contains("team-a/*") && table.stdout.contains("USED"), "{table}");
    c.admin_json_at(0, &["quota", "remove", "team-a/*"]).await;
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while !quota_list(&c, 2).await.is_empty() {
        assert!(std::time::Instant::now() < deadline, "region 2 still lists the removed quota");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let again = c.admin_at(0, &["quota", "remove", "team-a/*"]).await;
    assert_ne!(again.code, 0, "removing a quota that is not there fails: {again}");
    let bad = c.admin_at(0, &["quota", "set", "Team A", "1GiB"]).await;
    assert_ne!(bad.code, 0, "an invalid pattern is refused: {bad}");
    let bad = c.admin_at(0, &["quota", "set", "team-a/*", "12 parsecs"]).await;
    assert_ne!(bad.code, 0, "an invalid size is refused: {bad}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_regions_pushing_into_one_namespace_at_once_never_overshoot() {
    let c = three_regions().await;
    // Ten images staged in us and ten in eu, each with its own 10 kB layer; room for
    // about seven.
    let mut staged: Vec<(usize, String, Staged)> = Vec::new();
    for i in 0..20 {
        let region = i % 2;
        let repo = format!("ci/app{region}");
        let layer = oci::test_bytes(&format!("quota-race-{i}"), 10_000);
        let image = stage(&c[region], &repo, &format!("race-{i}"), &[&layer]).await;
        staged.push((region, repo, image));
    }
    let one = staged[0].2.size();
    let limit = one * 7 + one / 2;
    c.admin_json_at(2, &["quota", "set", "ci/*", &limit.to_string()]).await;

    let pushes = staged.iter().enumerate().map(|(i, (region, repo, image))| {
        let node = &c[*region];
        async move {
            let resp = oci::put_manifest(node, repo, &format!("t{i}"), OCI_MANIFEST, &image.manifest).await;
            (resp.status().as_u16(), resp.text().await.unwrap_or_default())
        }
    });
    let results = futures::future::join_all(pushes).await;
    let mut accepted = 0u64;
    for ((_, _, image), (status, body)) in staged.iter().zip(&results) {
        match status {
            201 => accepted += image.size(),
            403 => assert!(body.contains("DENIED") && body.contains("ci/*"), "{body}"),
            other => panic!("unexpected {other}: {body}"),
        }
    }
    assert!(accepted <= limit, "accepted {accepted} bytes past the {limit} limit");
    assert!(accepted + one > limit, "refused pushes that would have fit: {accepted} of {limit}");
    for i in 0..3 {
        assert_eq!(wait_for_used(&c, i, "ci/*", accepted).await, accepted, "every region counts what was accepted");
    }
    // Every accepted image is whole; every refused one left nothing.
    for (i, ((_, repo, image), (status, _))) in staged.iter().zip(&results).enumerate() {
        let want = if *status == 201 { 200 } else { 404 };
        assert_eq!(oci::manifest_status(&c[2], repo, &format!("t{i}")).await, want);
        assert_eq!(oci::manifest_status(&c[2], repo, &image.digest()).await, want);
    }
}

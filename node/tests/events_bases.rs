//! Base-image updates, end to end, with images podman builds: `base/alpine:1`, then
//! `app/a:1` and `app/b:1` built `FROM` it — app/a pushed as OCI with the base annotations
//! podman writes, app/b as Docker v2s2, which has no annotations (shared layers only) —
//! then `base/alpine:1` rebuilt and pushed again. Exactly two `base_updated` events arrive
//! at a real receiver on loopback, naming app/a:1 and app/b:1 with the old and new base
//! digests; `meridian admin image dependents` gives the same answer in both regions.

mod common;

use common::cluster::{Cluster, ClusterOptions};
use common::podman::Podman;
use common::receiver::Receiver;
use serde_json::Value;
use std::time::{Duration, Instant};

/// `image dependents REF --json` at member `i`, once it lists `n` images (regions apply
/// the log at their own pace).
async fn dependents_at(c: &Cluster, i: usize, reference: &str, n: usize) -> Value {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let v = c.admin_json_at(i, &["image", "dependents", reference]).await;
        if v["dependents"].as_array().is_some_and(|d| d.len() == n) || Instant::now() > deadline {
            return v;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// `repository:tag` → (via, outdated, base digest), sorted.
fn listed(v: &Value) -> Vec<(String, String, bool, String)> {
    let mut out: Vec<_> = v["dependents"]
        .as_array()
        .unwrap_or(&Vec::new())
        .iter()
        .map(|d| {
            let tags: Vec<&str> = d["tags"].as_array().unwrap().iter().filter_map(Value::as_str).collect();
            (
                format!("{}:{}", d["repository"].as_str().unwrap(), tags.join(",")),
                d["via"].as_str().unwrap().to_string(),
                d["outdated"].as_bool().unwrap(),
                d["base_digest"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    out.sort();
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn moving_a_base_tag_gives_one_base_updated_event_per_image_built_on_it() {
    let podman = Podman::new();
    let c = Cluster::start_with(
        ClusterOptions::new(2)
            .names(&["us", "eu"])
            .env("MERIDIAN_EVENTS_BACKOFF_INITIAL_MS", "50")
            .env("MERIDIAN_EVENTS_ACK_INTERVAL_MS", "100"),
    )
    .await;
    let rx = Receiver::start(Some("rebuild-secret")).await;
    c.admin_json_at(0, &["webhook", "add", "rebuild", "--url", &rx.url(), "--actions", "base_updated", "--secret", "rebuild-secret"])
        .await;
    let us = c[0].http_addr();
    let base = format!("{us}/base/alpine:1");

    podman.build_scratch(&base, "linux/amd64", b"base, first build").await;
    let base_v1 = podman.push(&base, &[]).await;
    let app_a = format!("{us}/app/a:1");
    podman.build_from(&app_a, &base, "linux/amd64", b"app a").await;
    podman.push(&app_a, &[]).await;
    let app_b = format!("{us}/app/b:1");
    podman.build_from(&app_b, &base, "linux/amd64", b"app b").await;
    podman.push(&app_b, &["--format", "v2s2"]).await;

    // Before the base moves: both are built on its current digest, in both regions.
    let expect_now = vec![
        ("app/a:1".to_string(), "annotation".to_string(), false, base_v1.clone()),
        ("app/b:1".to_string(), "layers".to_string(), false, base_v1.clone()),
    ];
    for i in 0..2 {
        let v = dependents_at(&c, i, "base/alpine:1", 2).await;
        assert_eq!(listed(&v), expect_now, "region {i}: {v}");
        assert_eq!(v["digest"], base_v1.as_str());
    }
    let text = c.admin_at(1, &["image", "dependents", "base/alpine:1"]).await;
    assert!(text.code == 0 && text.stdout.contains("2 images built on it") && text.stdout.contains("app/b@"), "{text}");

    // The base rebuilt and pushed under the same tag.
    podman.build_scratch(&base, "linux/amd64", b"base, second build (a security fix)").await;
    let base_v2 = podman.push(&base, &[]).await;
    assert_ne!(base_v1, base_v2);
    let events = rx.wait_distinct(2, Duration::from_secs(20)).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(rx.accepted().len(), 2, "exactly two events: {:#?}", rx.accepted());
    assert!(rx.received().iter().all(|r| r.signature_ok));
    let mut told: Vec<String> = events.iter().map(|e| format!("{}:{}", e["target"]["repository"].as_str().unwrap(), e["target"]["tag"].as_str().unwrap())).collect();
    told.sort();
    assert_eq!(told, ["app/a:1", "app/b:1"]);
    for e in &events {
        assert_eq!(e["action"], "base_updated", "{e}");
        assert_eq!(e["base"]["repository"], "base/alpine", "{e}");
        assert_eq!(e["base"]["tag"], "1", "{e}");
        assert_eq!(e["base"]["oldDigest"], base_v1.as_str(), "{e}");
        assert_eq!(e["base"]["newDigest"], base_v2.as_str(), "{e}");
        assert_eq!(e["region"], "us", "{e}");
        assert!(e["target"]["digest"].as_str().is_some_and(|d| d.starts_with("sha256:")), "{e}");
    }

    // Now both are built on a digest the tag has left: listed as outdated, everywhere.
    let expect_after: Vec<_> = expect_now.into_iter().map(|(n, via, _, d)| (n, via, true, d)).collect();
    for i in 0..2 {
        let v = dependents_at(&c, i, "base/alpine:1", 2).await;
        assert_eq!(listed(&v), expect_after, "region {i}: {v}");
        assert_eq!(v["digest"], base_v2.as_str());
    }
    // By digest, the old base still has both; the new one none yet.
    let old = c.admin_json_at(0, &["image", "dependents", &format!("base/alpine@{base_v1}")]).await;
    assert_eq!(old["dependents"].as_array().map(Vec::len), Some(2), "{old}");
    let new = c.admin_json_at(0, &["image", "dependents", &format!("base/alpine@{base_v2}")]).await;
    assert_eq!(new["dependents"].as_array().map(Vec::len), Some(0), "{new}");

    // Bad references: a usage error before connecting, or not found.
    let out = c.admin_at(0, &["image", "dependents", "base/alpine"]).await;
    assert_eq!(out.code, 2, "{out}");
    let out = c.admin_at(0, &["image", "dependents", "base/alpine:nope"]).await;
    assert!(out.code == 1 && out.stderr.contains("not known"), "{out}");
}

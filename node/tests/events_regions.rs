//! Events across three regions (real processes, a real receiver on loopback):
//!
//! - a push in us gives one `push` event (not three) and one `replicated` event per region
//!   and image — an index's only once its children's blobs have landed;
//! - each `replicated` event for eu arrives only once every blob of the image is on eu's
//!   own disk, checked by the receiver the moment the event arrives;
//! - a webhook filtered to eu gets only eu's events;
//! - a `replicated` event never reaches a receiver before the image's `push` event.

mod common;

use common::cluster::{Cluster, ClusterOptions};
use common::oci::{self, Descriptor, OCI_CONFIG, OCI_INDEX, OCI_LAYER, OCI_MANIFEST};
use common::receiver::Receiver;
use serde_json::{json, Value};
use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

const REGIONS: [&str; 3] = ["us", "eu", "ap"];

/// An image as `oci::push_image` builds it from `seed`: its manifest digest and blobs,
/// known before it is pushed.
fn planned(seed: &str) -> (Descriptor, Vec<String>) {
    let config = Descriptor::of(OCI_CONFIG, &oci::to_bytes(&json!({"architecture": "amd64", "os": "linux", "seed": seed})));
    let layer = Descriptor::of(OCI_LAYER, &oci::test_bytes(&format!("layer-{seed}"), 1000));
    let manifest = oci::to_bytes(&oci::image_manifest(&config, &[layer.clone()]));
    (Descriptor::of(OCI_MANIFEST, &manifest), vec![config.digest, layer.digest])
}

/// Whether `digest`'s file under a node's data directory holds its bytes.
fn verified_at(data_dir: &PathBuf, digest: &str) -> bool {
    let (alg, hex) = digest.split_once(':').unwrap_or(("sha256", digest));
    std::fs::read(data_dir.join("blobs").join(alg).join(&hex[..2]).join(hex)).is_ok_and(|b| oci::sha256_digest(&b) == digest)
}

fn count(events: &[Value], action: &str, region: &str) -> usize {
    events.iter().filter(|e| e["action"] == action && e["region"] == region).count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_push_gives_one_push_event_and_one_replicated_event_per_region_once_its_blobs_are_there() {
    let c = Cluster::start_with(
        ClusterOptions::new(3)
            .names(&REGIONS)
            .env("MERIDIAN_EVENTS_BACKOFF_INITIAL_MS", "50")
            .env("MERIDIAN_EVENTS_ACK_INTERVAL_MS", "100"),
    )
    .await;
    // What each image needs on eu's disk, known before anything is pushed.
    let (single, single_blobs) = planned("single");
    let (amd, amd_blobs) = planned("amd64");
    let (arm, arm_blobs) = planned("arm64");
    let index = oci::to_bytes(&oci::image_index(&[amd.clone(), arm.clone()]));
    let index_digest = oci::sha256_digest(&index);
    let mut needs: BTreeMap<String, Vec<String>> = BTreeMap::new();
    needs.insert(single.digest.clone(), single_blobs);
    needs.insert(amd.digest.clone(), amd_blobs.clone());
    needs.insert(arm.digest.clone(), arm_blobs.clone());
    needs.insert(index_digest.clone(), amd_blobs.into_iter().chain(arm_blobs).collect());
    let eu_dir = c[1].data_dir.clone();
    let check: common::receiver::Check = Arc::new(move |e: &Value| {
        if e["action"] != "replicated" || e["region"] != "eu" {
            return true;
        }
        let digest = e["target"]["digest"].as_str().unwrap_or_default();
        needs.get(digest).is_some_and(|blobs| blobs.iter().all(|b| verified_at(&eu_dir, b)))
    });
    let all = Receiver::start_checking(check).await;
    let eu_only = Receiver::start(None).await;
    c.admin_json_at(0, &["webhook", "add", "all", "--url", &all.url(), "--actions", "push,replicated"]).await;
    c.admin_json_at(2, &["webhook", "add", "eu-only", "--url", &eu_only.url(), "--actions", "push,replicated", "--region", "eu"]).await;

    let pushed = oci::push_image(&c[0], "team/app", "v1", "single").await;
    assert_eq!(pushed.digest, single.digest);
    oci::push_image(&c[0], "team/app", "", "amd64").await;
    oci::push_image(&c[0], "team/app", "", "arm64").await;
    oci::push_manifest(&c[0], "team/app", "v2", OCI_INDEX, &index).await;

    // 4 pushes (in us) and 4 manifests complete in each of 3 regions.
    let events = all.wait_distinct(4 + 4 * 3, Duration::from_secs(60)).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let events = { let again = all.distinct(); assert_eq!(again.len(), events.len(), "no more events than expected: {again:#?}"); again };
    assert_eq!(count(&events, "push", "us"), 4, "one push event per push, not one per region");
    for region in REGIONS {
        assert_eq!(count(&events, "replicated", region), 4, "{region}: {events:#?}");
        let images: BTreeSet<&str> = events
            .iter()
            .filter(|e| e["action"] == "replicated" && e["region"] == region)
            .filter_map(|e| e["target"]["digest"].as_str())
            .collect();
        assert!(images.contains(index_digest.as_str()) && images.contains(single.digest.as_str()), "{region}: {images:?}");
    }
    // "Complete in X" never comes before "pushed", whichever region delivers it.
    for (i, e) in events.iter().enumerate().filter(|(_, e)| e["action"] == "replicated") {
        let digest = &e["target"]["digest"];
        let pushed_at = events.iter().position(|p| p["action"] == "push" && &p["target"]["digest"] == digest);
        assert!(pushed_at.is_some_and(|p| p < i), "replicated before its push: {e}");
    }
    let replicated_eu = events.iter().find(|e| e["action"] == "replicated" && e["region"] == "eu" && e["target"]["tag"] == "v1").unwrap();
    assert_eq!(replicated_eu["pushRegion"], "us");
    assert!(all.received().iter().all(|r| r.check_ok), "a replicated event for eu came before eu held every blob");

    // The eu webhook: eu's events only (no push happened in eu; its four completions).
    let got = eu_only.wait_distinct(4, Duration::from_secs(30)).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let got_now = eu_only.distinct();
    assert_eq!(got_now.len(), 4, "{got:#?}");
    assert!(got_now.iter().all(|e| e["region"] == "eu" && e["action"] == "replicated"), "{got_now:#?}");
}

//! Usage metering through `meridian admin usage` and `/metrics`, on three real processes:
//! the figures equal what the test pushed, pulled and replicated, byte for byte — per
//! repository (logical stored bytes), per region (what its disk holds), per day, and per
//! pair of regions for replication.

mod common;

use common::cluster::{metric, Cluster, ClusterOptions};
use common::oci::{self, OCI_CONFIG, OCI_LAYER, OCI_MANIFEST};
use common::Node;
use serde_json::Value;
use std::time::{Duration, Instant};

const REGIONS: [&str; 3] = ["us", "eu", "ap"];

struct Pushed {
    manifest: Vec<u8>,
    blobs: u64,
}

async fn push(node: &Node, repo: &str, seed: &str, layer_len: usize) -> Pushed {
    let config = oci::push_blob_desc(node, repo, OCI_CONFIG, &oci::to_bytes(&serde_json::json!({ "seed": seed }))).await;
    let layer = oci::push_blob_desc(node, repo, OCI_LAYER, &oci::test_bytes(seed, layer_len)).await;
    let manifest = oci::to_bytes(&oci::image_manifest(&config, &[layer.clone()]));
    oci::push_manifest(node, repo, "v1", OCI_MANIFEST, &manifest).await;
    Pushed { manifest, blobs: config.size + layer.size }
}

/// Pulls `repo:v1` whole from `node`; the blob bytes received.
async fn pull(node: &Node, repo: &str) -> u64 {
    let resp = oci::get_manifest(node, repo, "v1").await;
    assert_eq!(resp.status(), 200);
    let manifest: Value = serde_json::from_slice(&resp.bytes().await.unwrap()).unwrap();
    let mut bytes = 0u64;
    let digests = std::iter::once(&manifest["config"]).chain(manifest["layers"].as_array().unwrap().iter());
    for d in digests {
        let digest = d["digest"].as_str().unwrap();
        let resp = oci::client().get(node.url(&format!("/v2/{repo}/blobs/{digest}"))).send().await.unwrap();
        assert_eq!(resp.status(), 200);
        bytes += resp.bytes().await.unwrap().len() as u64;
    }
    bytes
}

fn row<'a>(usage: &'a Value, key_name: &str, key: &str) -> Option<&'a Value> {
    usage["rows"].as_array()?.iter().find(|r| r[key_name] == key)
}

fn pair(usage: &Value, from: &str, to: &str) -> (u64, u64) {
    usage["replication"]
        .as_array()
        .and_then(|a| a.iter().find(|p| p["from"] == from && p["to"] == to))
        .map(|p| (p["bytes"].as_u64().unwrap(), p["blobs"].as_u64().unwrap()))
        .unwrap_or((0, 0))
}

/// Polls `meridian admin usage ARGS` at member `i` until `check` passes (figures arrive
/// in each region's next batch).
async fn usage_until(c: &Cluster, i: usize, args: &[&str], check: impl Fn(&Value) -> Result<(), String>) -> Value {
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut full = vec!["usage"];
    full.extend_from_slice(args);
    loop {
        let v = c.admin_json_at(i, &full).await;
        match check(&v) {
            Ok(()) => return v,
            Err(e) if Instant::now() > deadline => panic!("usage {args:?} never matched: {e}\n{v:#}"),
            Err(_) => tokio::time::sleep(Duration::from_millis(300)).await,
        }
    }
}

fn expect(v: Option<&Value>, field: &str, want: u64) -> Result<(), String> {
    let got = v.and_then(|r| r[field].as_u64());
    if got == Some(want) {
        Ok(())
    } else {
        Err(format!("{field}: want {want}, got {got:?}"))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn usage_figures_equal_what_was_pushed_pulled_and_replicated() {
    let c = Cluster::start_with(ClusterOptions::new(3).names(&REGIONS).env("MERIDIAN_USAGE_RECORD_SECS", "1")).await;
    let a = push(&c[0], "team/a", "usage-a", 100_000).await;
    let b = push(&c[1], "team/b", "usage-b", 30_000).await;
    for image in ["team/a:v1", "team/b:v1"] {
        c.wait_image_complete(0, image, &REGIONS, Duration::from_secs(60)).await.expect("replicated");
    }
    // team/a pulled once in eu, twice in ap.
    let mut pulled_eu = pull(&c[1], "team/a").await;
    pulled_eu += a.manifest.len() as u64;
    let mut pulled_ap = pull(&c[2], "team/a").await + pull(&c[2], "team/a").await;
    pulled_ap += 2 * a.manifest.len() as u64;
    assert_eq!(pulled_eu, a.blobs + a.manifest.len() as u64);
    let a_size = a.blobs + a.manifest.len() as u64;
    let b_size = b.blobs + b.manifest.len() as u64;

    // Per repository: logical stored bytes, pushes, pulls in every region together.
    let by_repo = usage_until(&c, 2, &[], |v| {
        let ra = row(v, "repo", "team/a");
        expect(ra, "stored_bytes", a_size)?;
        expect(ra, "pushed_bytes", a_size)?;
        expect(ra, "pushed_count", 1)?;
        expect(ra, "pulled_bytes", pulled_eu + pulled_ap)?;
        expect(ra, "pulled_count", 3)?;
        let rb = row(v, "repo", "team/b");
        expect(rb, "stored_bytes", b_size)?;
        expect(rb, "pushed_bytes", b_size)?;
        expect(rb, "pulled_count", 0)?;
        // Replication into each region: the blobs of the image pushed elsewhere, each once.
        // The source is whichever holder was nearest when the copy started (a region that
        // already has a copy counts as one), so only the totals per destination are fixed.
        for (to, bytes, blobs) in [("us", b.blobs, 2), ("eu", a.blobs, 2), ("ap", a.blobs + b.blobs, 4)] {
            let got = REGIONS.iter().filter(|&&from| from != to).fold((0, 0), |acc, from| {
                let (x, n) = pair(v, from, to);
                (acc.0 + x, acc.1 + n)
            });
            if got != (bytes, blobs) {
                return Err(format!("into {to}: want ({bytes}, {blobs}), got {got:?}"));
            }
        }
        Ok(())
    })
    .await;
    let pairs = by_repo["replication"].as_array().unwrap();
    assert!(pairs.iter().all(|p| p["from"] != p["to"]) && pairs.len() <= 6, "{by_repo:#}");

    // Per region: what each disk holds (every blob, replicated everywhere) and each
    // region's own traffic; filtered to one region and one repository pattern.
    let on_disk = a.blobs + b.blobs;
    usage_until(&c, 0, &["--by", "region"], |v| {
        for region in REGIONS {
            expect(row(v, "region", region), "stored_bytes", on_disk)?;
            expect(row(v, "region", region), "stored_items", 4)?;
        }
        expect(row(v, "region", "us"), "pushed_bytes", a_size)?;
        expect(row(v, "region", "eu"), "pushed_bytes", b_size)?;
        expect(row(v, "region", "eu"), "pulled_bytes", pulled_eu)?;
        expect(row(v, "region", "ap"), "pulled_bytes", pulled_ap)?;
        expect(row(v, "region", "ap"), "pulled_count", 2)
    })
    .await;
    let eu_only = c.admin_json_at(1, &["usage", "--by", "region", "--region", "eu", "--since", "1h"]).await;
    assert_eq!(eu_only["rows"].as_array().unwrap().len(), 1, "{eu_only:#}");
    assert_eq!(pair(&eu_only, "us", "ap"), (0, 0), "pairs not touching eu are left out");
    let team_a = c.admin_json_at(1, &["usage", "--repo", "team/a"]).await;
    assert_eq!(team_a["rows"].as_array().unwrap().len(), 1, "{team_a:#}");
    let by_day = c.admin_json_at(1, &["usage", "--by", "day"]).await;
    let days = by_day["rows"].as_array().unwrap();
    assert_eq!(days.len(), 1, "{by_day:#}");
    assert_eq!(days[0]["pushed_bytes"].as_u64(), Some(a_size + b_size));
    assert_eq!(days[0]["pulled_bytes"].as_u64(), Some(pulled_eu + pulled_ap));
    let table = c.admin_at(1, &["usage"]).await;
    assert!(table.stdout.contains("team/a") && table.stdout.contains("REPLICATED"), "{table}");

    // Prometheus: per region, on every node, no label per repository.
    for i in 0..3 {
        for region in REGIONS {
            let label = format!("region=\"{region}\"");
            assert_eq!(metric(&c[i], "meridian_storage_bytes", &[&label]).await, on_disk as f64, "{} about {region}", c[i].name);
            assert_eq!(metric(&c[i], "meridian_storage_blobs", &[&label]).await, 4.0);
        }
    }
    let bad = c.admin_at(0, &["usage", "--by", "week"]).await;
    assert_ne!(bad.code, 0, "{bad}");
}

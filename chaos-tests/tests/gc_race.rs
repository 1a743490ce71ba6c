//! Garbage collection and retention racing pushes, in three regions, with a region killed
//! and restarted in the middle. Retention, collection and sweeps run every second with a
//! one-second grace while pushers in every region push images that share a base layer —
//! reused the way docker does it (HEAD, and upload only on a 404) or mounted from another
//! repository — move their tag, and delete older images by digest or by tag. Half the
//! pushers push into `ret/`, where a policy keeps `latest` and deletes untagged images
//! after 2 s.
//!
//! At the end, in every region:
//! - every acknowledged image not deleted (by its pusher, or in `ret/` by the policy)
//!   pulls byte-identical (manifest and blobs); in `ret/` only what `latest` points at
//!   is left once the policy has nothing more to do;
//! - no push got `MANIFEST_BLOB_UNKNOWN` for a blob it had itself uploaded or mounted
//!   moments before (the Harbor and Quay failures this design closes);
//! - `blobs/` holds exactly the blobs of the images that exist (give or take those whose
//!   push or delete had an unknown outcome), once past the grace.

use chaos_tests::harness::cluster::{Cluster, ClusterOptions};
use chaos_tests::harness::oci::{self, Descriptor, OCI_CONFIG, OCI_LAYER, OCI_MANIFEST};
use chaos_tests::harness::Node;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const RUN_FOR: Duration = Duration::from_secs(20);
const PUSHERS_PER_REGION: usize = 2;

/// What the pushers saw, shared.
#[derive(Default)]
struct Record {
    /// Acknowledged manifests: (repo, digest) → (manifest bytes, blob digest → bytes).
    acked: BTreeMap<(String, String), (Vec<u8>, BTreeMap<String, Vec<u8>>)>,
    /// Deleted with a 202.
    deleted: BTreeSet<(String, String)>,
    /// Pushes or deletes whose outcome is unknown (5xx, timeout): may or may not exist.
    unknown: BTreeMap<(String, String), BTreeMap<String, Vec<u8>>>,
    /// MANIFEST_BLOB_UNKNOWN for a blob the push itself had just uploaded or mounted.
    violations: Vec<String>,
    /// MANIFEST_BLOB_UNKNOWN for a blob the push had only HEAD-checked (allowed: collected
    /// in between; the pusher uploads and retries).
    blob_unknown_after_head: u64,
    pushes: u64,
}

fn http() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap()
}

/// How a pusher got one blob into its repository.
enum Got {
    /// Uploaded or mounted by this push, just now.
    Placed,
    /// A HEAD said the repository has it.
    AlreadyThere,
}

async fn place_blob(
    h: &reqwest::Client,
    base: &str,
    repo: &str,
    bytes: &[u8],
    mount_from: Option<&str>,
) -> Result<Got, String> {
    let digest = oci::sha256_digest(bytes);
    if let Some(from) = mount_from {
        let r = h
            .post(format!("{base}/v2/{repo}/blobs/uploads/?mount={digest}&from={from}"))
            .send()
            .await
            .map_err(|e| e.to_string())?;
        if r.status() == 201 {
            return Ok(Got::Placed);
        }
    } else {
        let r = h
            .head(format!("{base}/v2/{repo}/blobs/{digest}"))
            .send()
            .await
            .map_err(|e| e.to_string())?;
        if r.status() == 200 {
            return Ok(Got::AlreadyThere);
        }
    }
    let r = h
        .post(format!("{base}/v2/{repo}/blobs/uploads/?digest={digest}"))
        .header("content-type", "application/octet-stream")
        .body(bytes.to_vec())
        .send()
        .await
        .map_err(|e| e.to_string())?;
    if r.status() != 201 {
        return Err(format!("upload {}", r.status()));
    }
    Ok(Got::Placed)
}

async fn pusher(
    base: String,
    repo: String,
    base_layer: Vec<u8>,
    record: Arc<Mutex<Record>>,
    stop: Instant,
    seed: u64,
) {
    let h = http();
    let mut rng = StdRng::seed_from_u64(seed);
    let mut previous: Vec<String> = Vec::new();
    let mut n = 0u64;
    while Instant::now() < stop {
        n += 1;
        let unique = oci::test_bytes(&format!("{repo}-{n}"), 3_000);
        let config_bytes = oci::to_bytes(&serde_json::json!({"repo": repo, "n": n}));
        let mount = rng.random_bool(0.5).then_some("team/base");
        let mut placed = BTreeSet::new();
        let mut failed = false;
        for (bytes, from) in [(&base_layer, mount), (&unique, None), (&config_bytes, None)] {
            match place_blob(&h, &base, &repo, bytes, from).await {
                Ok(Got::Placed) => {
                    placed.insert(oci::sha256_digest(bytes));
                }
                Ok(Got::AlreadyThere) => {}
                Err(_) => failed = true,
            }
        }
        if failed {
            tokio::time::sleep(Duration::from_millis(200)).await;
            continue;
        }
        let config = Descriptor::of(OCI_CONFIG, &config_bytes);
        let layers = [
            Descriptor::of(OCI_LAYER, &base_layer),
            Descriptor::of(OCI_LAYER, &unique),
        ];
        let manifest = oci::to_bytes(&oci::image_manifest(&config, &layers));
        let digest = oci::sha256_digest(&manifest);
        let blobs: BTreeMap<String, Vec<u8>> = [&config_bytes, &base_layer, &unique]
            .into_iter()
            .map(|b| (oci::sha256_digest(b), b.clone()))
            .collect();
        let key = (repo.clone(), digest.clone());
        let resp = h
            .put(format!("{base}/v2/{repo}/manifests/latest"))
            .header("content-type", OCI_MANIFEST)
            .body(manifest.clone())
            .send()
            .await;
        // (status, body) of the PUT; None when it never answered.
        let answer = match resp {
            Ok(r) => {
                let status = r.status().as_u16();
                Some((status, r.text().await.unwrap_or_default()))
            }
            Err(_) => None,
        };
        {
            let mut rec = record.lock().unwrap();
            rec.pushes += 1;
            match answer {
                Some((201, _)) => {
                    rec.acked.insert(key, (manifest, blobs));
                    previous.push(digest);
                }
                Some((400, body)) if body.contains("MANIFEST_BLOB_UNKNOWN") => {
                    // The message names the digest.
                    if placed.iter().any(|d| body.contains(d.as_str())) {
                        rec.violations.push(format!("{repo}: {body}"));
                    } else {
                        rec.blob_unknown_after_head += 1;
                    }
                }
                Some((status, body)) if status < 500 => {
                    rec.violations.push(format!("{repo}: unexpected {status} {body}"))
                }
                _ => {
                    rec.unknown.insert(key, blobs);
                }
            }
        }
        // Sometimes delete an older image by digest, or only the tag.
        if previous.len() > 1 && rng.random_bool(0.5) {
            let victim = previous.remove(rng.random_range(0..previous.len() - 1));
            let key = (repo.clone(), victim.clone());
            let r = h.delete(format!("{base}/v2/{repo}/manifests/{victim}")).send().await;
            let mut rec = record.lock().unwrap();
            match r {
                Ok(r) if r.status() == 202 => {
                    rec.deleted.insert(key);
                }
                Ok(r) if r.status() == 404 => {}
                _ => {
                    if let Some((_, blobs)) = rec.acked.get(&key).cloned() {
                        rec.unknown.insert(key, blobs);
                    }
                }
            }
        } else if rng.random_bool(0.1) {
            let _ = h.delete(format!("{base}/v2/{repo}/manifests/latest")).send().await;
        }
    }
}

fn files_in(node: &Node) -> BTreeSet<String> {
    oci::files_under(&node.data_dir.join("blobs"))
        .into_iter()
        .filter_map(|p| {
            let hex = p.file_name()?.to_str()?.to_string();
            let alg = p.parent()?.parent()?.file_name()?.to_str()?.to_string();
            Some(format!("{alg}:{hex}"))
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn collection_racing_pushes_mounts_and_deletes_loses_nothing_and_leaves_nothing() {
    chaos_tests::harness::use_binary(env!("CARGO_BIN_EXE_meridian-chaos-node"));
    let mut c = Cluster::start_with(
        ClusterOptions::new(3)
            .names(&["us", "eu", "ap"])
            .env("MERIDIAN_GC_UPLOAD_GRACE_SECS", "1")
            .env("MERIDIAN_GC_INTERVAL_SECS", "1"),
    )
    .await;
    // The base layer lives in team/base for good (the mount source).
    let base_layer = oci::test_bytes("gc-race-base", 64_000);
    let base_config = oci::push_blob_desc(&c[0], "team/base", OCI_CONFIG, b"{\"base\":true}").await;
    let base_desc = oci::push_blob_desc(&c[0], "team/base", OCI_LAYER, &base_layer).await;
    let base_manifest = oci::to_bytes(&oci::image_manifest(&base_config, &[base_desc]));
    oci::push_manifest(&c[0], "team/base", "v1", OCI_MANIFEST, &base_manifest).await;
    c.wait_image_complete(0, "team/base:v1", &["us", "eu", "ap"], Duration::from_secs(60))
        .await
        .expect("base everywhere");

    // Retention in `ret/`: `latest` stays, untagged images go after 2 s.
    c.admin_json_at(0, &["retention", "set", "race", "--repos", "ret/*", "--keep-tags", "latest", "--untagged-after", "2s"]).await;

    let record = Arc::new(Mutex::new(Record::default()));
    let stop = Instant::now() + RUN_FOR;
    let mut tasks = Vec::new();
    let mut retained: Vec<String> = Vec::new();
    for i in 0..3 {
        for k in 0..PUSHERS_PER_REGION {
            let repo = if k % 2 == 1 { format!("ret/{}-{k}", c[i].name) } else { format!("team/{}-{k}", c[i].name) };
            if repo.starts_with("ret/") {
                retained.push(repo.clone());
            }
            tasks.push(tokio::spawn(pusher(
                c[i].base.clone(),
                repo,
                base_layer.clone(),
                record.clone(),
                stop,
                (i * 10 + k) as u64,
            )));
        }
    }
    // A region killed and restarted in the middle.
    tokio::time::sleep(RUN_FOR / 3).await;
    c.kill9(1);
    tokio::time::sleep(Duration::from_secs(3)).await;
    c.restart(1).await;
    for t in tasks {
        t.await.unwrap();
    }

    // Let the policy finish with what the pushers left: then `ret/` holds only what
    // `latest` points at. An image a pusher untagged in its last 2 s is not the policy's
    // yet (`--untagged-after 2s`), so an empty dry run right after the pushers stop can
    // still leave one behind: wait that out first (and a second more for the clocks).
    tokio::time::sleep(Duration::from_secs(3)).await;
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let dry = c.admin_json_at(0, &["retention", "run", "--dry-run"]).await;
        if dry["deletions"].as_array().is_some_and(|d| d.is_empty()) {
            break;
        }
        assert!(Instant::now() < deadline, "retention never finished: {dry}");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let mut latest: BTreeMap<String, String> = BTreeMap::new();
    for repo in &retained {
        let r = oci::get_manifest(&c[0], repo, "latest").await;
        if r.status() == 200 {
            latest.insert(repo.clone(), oci::require_header(&r, "docker-content-digest"));
        }
    }

    let mut rec = record.lock().unwrap();
    // In `ret/`, an image `latest` does not point at is gone (the policy's), whatever its
    // pusher saw.
    let in_ret = |repo: &str| repo.starts_with("ret/");
    let policy_deleted: Vec<(String, String)> = rec
        .acked
        .keys()
        .chain(rec.unknown.keys())
        .filter(|(repo, digest)| in_ret(repo) && latest.get(repo) != Some(digest))
        .cloned()
        .collect();
    for key in &policy_deleted {
        rec.deleted.insert(key.clone());
        rec.unknown.remove(key);
    }
    for (repo, digest) in &latest {
        rec.deleted.remove(&(repo.clone(), digest.clone()));
    }
    eprintln!("[gc-race] the policy left {} image(s) in ret/ and took {}", latest.len(), policy_deleted.len());
    for key in &policy_deleted {
        for i in 0..3 {
            assert_eq!(oci::manifest_status(&c[i], &key.0, &key.1).await, 404, "{}: {}@{} outlived the policy", c[i].name, key.0, key.1);
        }
    }
    eprintln!(
        "[gc-race] {} pushes, {} acknowledged, {} deleted, {} unknown, {} MANIFEST_BLOB_UNKNOWN after a HEAD",
        rec.pushes,
        rec.acked.len(),
        rec.deleted.len(),
        rec.unknown.len(),
        rec.blob_unknown_after_head
    );
    assert!(
        rec.violations.is_empty(),
        "pushes refused for blobs they had just placed: {:#?}",
        rec.violations
    );
    assert!(
        rec.acked.len() > 50,
        "too little work to mean anything: {}",
        rec.acked.len()
    );
    assert!(!rec.deleted.is_empty(), "no deletes happened");

    // Every acknowledged image not deleted pulls byte-identical in every region.
    let h = http();
    let live: Vec<(&(String, String), &(Vec<u8>, BTreeMap<String, Vec<u8>>))> = rec
        .acked
        .iter()
        .filter(|(k, _)| !rec.deleted.contains(*k) && !rec.unknown.contains_key(*k))
        .collect();
    for i in 0..3 {
        for ((repo, digest), (manifest, blobs)) in &live {
            let r = h
                .get(c[i].url(&format!("/v2/{repo}/manifests/{digest}")))
                .header("accept", OCI_MANIFEST)
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), 200, "{}: {repo}@{digest}", c[i].name);
            assert_eq!(&r.bytes().await.unwrap().to_vec(), manifest);
            for (d, bytes) in blobs {
                let (status, body) = oci::get_blob(&c[i], repo, d).await.unwrap();
                assert_eq!(status, 200, "{}: {repo} blob {d}", c[i].name);
                assert!(&body == bytes, "{}: {repo} blob {d} differs", c[i].name);
            }
        }
    }

    // Once replication settled and the grace passed, each region's disk holds exactly
    // the referenced blobs (plus, at most, those of images with an unknown outcome).
    let mut must: BTreeSet<String> = live.iter().flat_map(|(_, (_, blobs))| blobs.keys().cloned()).collect();
    must.insert(base_config.digest.clone());
    must.insert(oci::sha256_digest(&base_layer));
    let maybe: BTreeSet<String> = rec.unknown.values().flat_map(|b| b.keys().cloned()).collect();
    drop(rec);
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let mut problems = Vec::new();
        for i in 0..3 {
            let files = files_in(&c[i]);
            let missing: Vec<&String> = must.iter().filter(|d| !files.contains(*d)).collect();
            let extra: Vec<&String> = files
                .iter()
                .filter(|d| !must.contains(*d) && !maybe.contains(*d))
                .collect();
            if !missing.is_empty() || !extra.is_empty() {
                problems.push(format!(
                    "{}: {} missing {:?}…, {} extra {:?}…",
                    c[i].name,
                    missing.len(),
                    missing.first(),
                    extra.len(),
                    extra.first()
                ));
            }
        }
        if problems.is_empty() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "blob stores never matched the referenced set: {problems:?}"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    for d in &must {
        for i in 0..3 {
            assert!(oci::blob_file_verified(&c[i], d), "{}: {d} does not verify", c[i].name);
        }
    }
}

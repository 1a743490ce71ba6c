//! Crash safety: concurrent pushers while the server is repeatedly `kill -9`ed.
//!
//! Several pusher tasks push small unique images (2 random layers of 1–200 KiB +
//! config + OCI manifest, unique tags per pusher, sometimes retagging). Every
//! acknowledged write (HTTP 201) is recorded. At random moments (seeded RNG, seed
//! printed; override with MERIDIAN_CRASH_SEED) the server is SIGKILLed and restarted
//! on the same data dir and port. After the last restart:
//!
//! * every acknowledged manifest is GETtable by digest, byte-identical, and by its tag
//!   (the last acknowledged write of that tag, or a later write that was in flight
//!   when the server died); every blob it references GETs byte-identical;
//! * every acknowledged blob upload is GETtable byte-identical;
//! * no half state is visible: every manifest reachable via `_catalog` → `tags/list`
//!   has all of its blobs GETtable with the right digest;
//! * every file under `<data>/blobs` is named by (ends with) the digest of its content:
//!   no torn or temporary files survive in the content-addressed store.

mod common;

use common::oci::{self, OCI_MANIFEST};
use common::{free_port, Node};
use futures::future::{BoxFuture, FutureExt};
use futures::StreamExt;
use rand::rngs::StdRng;
use rand::{Rng, RngCore, SeedableRng};
use sha2::{Digest, Sha256, Sha512};
use std::collections::{BTreeMap, BTreeSet};
use std::io::Read;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Fallible variants of the OCI calls: while the server is being killed, a failed
/// request is an expected outcome ("not acknowledged"), not a test failure. The
/// panicking helpers in `common::oci` are used for everything else.
mod net {
    use super::common::oci::{self, DOCKER_LIST, DOCKER_MANIFEST, OCI_CONFIG, OCI_INDEX, OCI_LAYER, OCI_MANIFEST};
    use reqwest::{Client, Response, StatusCode};

    fn accept_all() -> String {
        [OCI_MANIFEST, OCI_INDEX, DOCKER_MANIFEST, DOCKER_LIST].join(", ")
    }

    async fn fail(what: &str, resp: Response) -> String {
        let status = resp.status();
        let body = resp.text().await.unwrap_or_default();
        format!("{what}: unexpected status {status}: {body}")
    }

    pub fn resolve(base: &str, location: &str) -> String {
        if location.starts_with("http://") || location.starts_with("https://") {
            location.to_string()
        } else {
            format!("{base}{location}")
        }
    }

    fn location(base: &str, resp: &Response) -> Result<String, String> {
        let loc = oci::header(resp, "location")
            .ok_or_else(|| format!("no Location header (status {})", resp.status()))?;
        Ok(resolve(base, &loc))
    }

    fn digest_query(url: &str, digest: &str) -> String {
        oci::with_query(url, &format!("digest={digest}"))
    }

    pub async fn start_upload(c: &Client, base: &str, repo: &str) -> Result<String, String> {
        let resp = c
            .post(format!("{base}/v2/{repo}/blobs/uploads/"))
            .header("content-length", "0")
            .send()
            .await
            .map_err(|e| format!("POST upload: {e}"))?;
        if resp.status() != StatusCode::ACCEPTED {
            return Err(fail("POST upload", resp).await);
        }
        location(base, &resp)
    }

    /// POST + PUT ?digest= with the whole body.
    pub async fn upload_monolithic(c: &Client, base: &str, repo: &str, bytes: &[u8]) -> Result<String, String> {
        let digest = oci::sha256_digest(bytes);
        let loc = start_upload(c, base, repo).await?;
        let resp = c
            .put(digest_query(&loc, &digest))
            .header("content-type", "application/octet-stream")
            .body(bytes.to_vec())
            .send()
            .await
            .map_err(|e| format!("PUT upload: {e}"))?;
        if resp.status() != StatusCode::CREATED {
            return Err(fail("PUT upload", resp).await);
        }
        Ok(digest)
    }

    /// Single request: POST ?digest= with the body.
    pub async fn upload_single_post(c: &Client, base: &str, repo: &str, bytes: &[u8]) -> Result<String, String> {
        let digest = oci::sha256_digest(bytes);
        let resp = c
            .post(format!("{base}/v2/{repo}/blobs/uploads/?digest={digest}"))
            .header("content-type", "application/octet-stream")
            .body(bytes.to_vec())
            .send()
            .await
            .map_err(|e| format!("POST ?digest upload: {e}"))?;
        if resp.status() != StatusCode::CREATED {
            return Err(fail("POST ?digest upload", resp).await);
        }
        Ok(digest)
    }

    /// POST, PATCH chunks with Content-Range, PUT ?digest= with an empty body.
    pub async fn upload_chunked(c: &Client, base: &str, repo: &str, bytes: &[u8], chunk: usize) -> Result<String, String> {
        let digest = oci::sha256_digest(bytes);
        let mut loc = start_upload(c, base, repo).await?;
        let mut off = 0usize;
        while off < bytes.len() {
            let end = (off + chunk).min(bytes.len());
            let resp = c
                .patch(&loc)
                .header("content-type", "application/octet-stream")
                .header("content-range", format!("{}-{}", off, end - 1))
                .body(bytes[off..end].to_vec())
                .send()
                .await
                .map_err(|e| format!("PATCH upload: {e}"))?;
            if resp.status() != StatusCode::ACCEPTED {
                return Err(fail("PATCH upload", resp).await);
            }
            loc = location(base, &resp)?;
            off = end;
        }
        let resp = c
            .put(digest_query(&loc, &digest))
            .header("content-length", "0")
            .send()
            .await
            .map_err(|e| format!("PUT upload (close): {e}"))?;
        if resp.status() != StatusCode::CREATED {
            return Err(fail("PUT upload (close)", resp).await);
        }
        Ok(digest)
    }

    pub async fn push_manifest(c: &Client, base: &str, repo: &str, reference: &str, media_type: &str, bytes: &[u8]) -> Result<String, String> {
        let resp = c
            .put(format!("{base}/v2/{repo}/manifests/{reference}"))
            .header("content-type", media_type)
            .body(bytes.to_vec())
            .send()
            .await
            .map_err(|e| format!("PUT manifest: {e}"))?;
        if resp.status() != StatusCode::CREATED {
            return Err(fail("PUT manifest", resp).await);
        }
        Ok(oci::sha256_digest(bytes))
    }

    /// GET a manifest (any type): (Docker-Content-Digest, body).
    pub async fn get_manifest(c: &Client, base: &str, repo: &str, reference: &str) -> Result<(Option<String>, Vec<u8>), String> {
        let resp = c
            .get(format!("{base}/v2/{repo}/manifests/{reference}"))
            .header("accept", accept_all())
            .send()
            .await
            .map_err(|e| format!("GET manifest: {e}"))?;
        if resp.status() != StatusCode::OK {
            return Err(fail(&format!("GET manifest {repo}:{reference}"), resp).await);
        }
        let dcd = oci::header(&resp, "docker-content-digest");
        let body = resp.bytes().await.map_err(|e| format!("GET manifest body: {e}"))?;
        Ok((dcd, body.to_vec()))
    }

    pub async fn get_blob(c: &Client, base: &str, repo: &str, digest: &str) -> Result<Vec<u8>, String> {
        let resp = c
            .get(format!("{base}/v2/{repo}/blobs/{digest}"))
            .send()
            .await
            .map_err(|e| format!("GET blob: {e}"))?;
        if resp.status() != StatusCode::OK {
            return Err(fail(&format!("GET blob {repo}@{digest}"), resp).await);
        }
        let body = resp.bytes().await.map_err(|e| format!("GET blob body: {e}"))?;
        Ok(body.to_vec())
    }

    /// OCI image manifest bytes over a config and layers.
    pub fn image_manifest(config: &[u8], layers: &[Vec<u8>]) -> Vec<u8> {
        let layers: Vec<oci::Descriptor> = layers.iter().map(|l| oci::Descriptor::of(OCI_LAYER, l)).collect();
        oci::to_bytes(&oci::image_manifest(&oci::Descriptor::of(OCI_CONFIG, config), &layers))
    }
}

const PUSHERS: u64 = 4;
const KILL_CYCLES: usize = 5;

/// Random bytes regenerated on demand from (seed, len), so acknowledged layers need
/// not be kept in memory.
#[derive(Clone, Copy, Debug)]
struct Blob {
    seed: u64,
    len: usize,
}

impl Blob {
    fn bytes(&self) -> Vec<u8> {
        let mut v = vec![0u8; self.len];
        StdRng::seed_from_u64(self.seed).fill_bytes(&mut v);
        v
    }
}

#[derive(Clone, Debug)]
struct AckedManifest {
    pusher: u64,
    repo: String,
    tag: String,
    digest: String,
    bytes: Vec<u8>,
    config: Vec<u8>,
    layers: Vec<Blob>,
}

#[derive(Clone, Debug)]
struct TagWrite {
    digest: String,
    acked: bool,
}

#[derive(Default)]
struct PusherLog {
    acked_manifests: Vec<AckedManifest>,
    /// (repo, digest, content) of every blob upload answered 201.
    acked_blobs: Vec<(String, String, BlobContent)>,
    /// Every tag write in order (only this pusher writes these tags).
    tag_history: BTreeMap<(String, String), Vec<TagWrite>>,
    attempts: usize,
    errors: usize,
    unexpected_statuses: Vec<String>,
}

#[derive(Clone, Debug)]
enum BlobContent {
    Random(Blob),
    Literal(Vec<u8>),
}

impl BlobContent {
    fn bytes(&self) -> Vec<u8> {
        match self {
            BlobContent::Random(b) => b.bytes(),
            BlobContent::Literal(v) => v.clone(),
        }
    }
}

fn record_err(log: &mut PusherLog, e: String) {
    log.errors += 1;
    // Connection errors are expected while the server is dead; anything carrying an
    // HTTP status came from a live server and is worth reporting.
    if e.contains("unexpected status") && log.unexpected_statuses.len() < 20 {
        log.unexpected_statuses.push(e);
    }
}

/// Uploads one blob with a randomly chosen upload flavour.
async fn upload_random_way(
    client: &reqwest::Client,
    base: &str,
    repo: &str,
    bytes: &[u8],
    rng: &mut StdRng,
) -> Result<String, String> {
    match rng.random_range(0..3) {
        0 => net::upload_monolithic(client, base, repo, bytes).await,
        1 => net::upload_single_post(client, base, repo, bytes).await,
        _ => {
            let chunk = rng.random_range(16 * 1024..=96 * 1024);
            net::upload_chunked(client, base, repo, bytes, chunk).await
        }
    }
}

async fn pusher(
    id: u64,
    seed: u64,
    base: String,
    stop: Arc<AtomicBool>,
    acks: Arc<AtomicUsize>,
) -> PusherLog {
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(60))
        .build()
        .unwrap();
    let mut rng = StdRng::seed_from_u64(seed);
    let mut log = PusherLog::default();
    let repos = [
        "crash/shared".to_string(),
        format!("crash/p{id}"),
        format!("crash/p{id}/nested"),
    ];
    let mut n = 0u64;
    while !stop.load(Ordering::SeqCst) {
        n += 1;
        log.attempts += 1;
        let repo = repos[rng.random_range(0..repos.len())].clone();
        let my_acked_in_repo: Vec<usize> = log
            .acked_manifests
            .iter()
            .enumerate()
            .filter(|(_, m)| m.repo == repo)
            .map(|(i, _)| i)
            .collect();
        let my_tags_in_repo: Vec<String> = log
            .tag_history
            .keys()
            .filter(|(r, _)| *r == repo)
            .map(|(_, t)| t.clone())
            .collect();
        let roll: f64 = rng.random();

        // Case A (~15%): retag an already-acknowledged manifest (same bytes) onto an
        // existing or new tag of this pusher.
        if roll < 0.15 && !my_acked_in_repo.is_empty() {
            let src = log.acked_manifests[my_acked_in_repo[rng.random_range(0..my_acked_in_repo.len())]].clone();
            let tag = if !my_tags_in_repo.is_empty() && rng.random_bool(0.5) {
                my_tags_in_repo[rng.random_range(0..my_tags_in_repo.len())].clone()
            } else {
                format!("p{id}-r{n}")
            };
            let key = (repo.clone(), tag.clone());
            log.tag_history.entry(key.clone()).or_default().push(TagWrite {
                digest: src.digest.clone(),
                acked: false,
            });
            match net::push_manifest(&client, &base, &repo, &tag, OCI_MANIFEST, &src.bytes).await {
                Ok(d) => {
                    assert_eq!(d, src.digest);
                    log.tag_history.get_mut(&key).unwrap().last_mut().unwrap().acked = true;
                    log.acked_manifests.push(AckedManifest { tag, ..src });
                    acks.fetch_add(1, Ordering::SeqCst);
                }
                Err(e) => {
                    record_err(&mut log, e);
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            }
            continue;
        }

        // Case B: a brand-new image; ~20% of the time onto an existing tag (retag),
        // and ~10% of layers re-use an earlier acknowledged layer (dedup path).
        let tag = if roll < 0.35 && !my_tags_in_repo.is_empty() {
            my_tags_in_repo[rng.random_range(0..my_tags_in_repo.len())].clone()
        } else {
            format!("p{id}-{n}")
        };
        let mut layers = Vec::new();
        for _ in 0..2 {
            let reuse = !log.acked_manifests.is_empty() && rng.random_bool(0.1);
            if reuse {
                let m = &log.acked_manifests[rng.random_range(0..log.acked_manifests.len())];
                layers.push(m.layers[rng.random_range(0..m.layers.len())]);
            } else {
                layers.push(Blob {
                    seed: rng.random(),
                    len: rng.random_range(1024..=200 * 1024),
                });
            }
        }
        let layer_bytes: Vec<Vec<u8>> = layers.iter().map(|b| b.bytes()).collect();
        let config = serde_json::to_vec(&serde_json::json!({
            "architecture": "amd64",
            "os": "linux",
            "config": { "Labels": { "pusher": id.to_string(), "n": n.to_string(), "nonce": rng.random::<u64>().to_string() } },
            "rootfs": { "type": "layers", "diff_ids": layer_bytes.iter().map(|l| oci::sha256_digest(l)).collect::<Vec<_>>() },
        }))
        .unwrap();
        let manifest = net::image_manifest(&config, &layer_bytes);
        let mdigest = oci::sha256_digest(&manifest);

        let mut ok = true;
        for (blob, bytes) in layers.iter().zip(&layer_bytes) {
            match upload_random_way(&client, &base, &repo, bytes, &mut rng).await {
                Ok(d) => log.acked_blobs.push((repo.clone(), d, BlobContent::Random(*blob))),
                Err(e) => {
                    record_err(&mut log, e);
                    ok = false;
                    break;
                }
            }
        }
        if ok {
            match upload_random_way(&client, &base, &repo, &config, &mut rng).await {
                Ok(d) => log.acked_blobs.push((repo.clone(), d, BlobContent::Literal(config.clone()))),
                Err(e) => {
                    record_err(&mut log, e);
                    ok = false;
                }
            }
        }
        if !ok {
            tokio::time::sleep(Duration::from_millis(20)).await;
            continue;
        }
        let key = (repo.clone(), tag.clone());
        log.tag_history.entry(key.clone()).or_default().push(TagWrite {
            digest: mdigest.clone(),
            acked: false,
        });
        match net::push_manifest(&client, &base, &repo, &tag, OCI_MANIFEST, &manifest).await {
            Ok(_) => {
                log.tag_history.get_mut(&key).unwrap().last_mut().unwrap().acked = true;
                log.acked_manifests.push(AckedManifest {
                    pusher: id,
                    repo,
                    tag,
                    digest: mdigest,
                    bytes: manifest,
                    config,
                    layers,
                });
                acks.fetch_add(1, Ordering::SeqCst);
            }
            Err(e) => {
                record_err(&mut log, e);
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    }
    log
}

/// Follows `Link: <...>; rel="next"` pagination.
fn next_link(resp: &reqwest::Response) -> Option<String> {
    let v = resp.headers().get("link")?.to_str().ok()?;
    if !v.contains("rel=\"next\"") && !v.contains("rel=next") {
        return None;
    }
    let start = v.find('<')? + 1;
    let end = v[start..].find('>')? + start;
    Some(v[start..end].to_string())
}

async fn get_paginated_list(
    client: &reqwest::Client,
    base: &str,
    first: String,
    field: &str,
) -> Result<Vec<String>, String> {
    let mut out = Vec::new();
    let mut url = Some(first);
    let mut pages = 0;
    while let Some(u) = url.take() {
        pages += 1;
        if pages > 1000 {
            return Err("pagination does not terminate".into());
        }
        let full = net::resolve(base, &u);
        let resp = client.get(&full).send().await.map_err(|e| format!("GET {full}: {e}"))?;
        if !resp.status().is_success() {
            return Err(format!("GET {full}: status {}", resp.status()));
        }
        url = next_link(&resp);
        let v: serde_json::Value = resp.json().await.map_err(|e| format!("GET {full}: bad json {e}"))?;
        match v.get(field) {
            Some(serde_json::Value::Array(a)) => {
                out.extend(a.iter().filter_map(|s| s.as_str().map(String::from)))
            }
            Some(serde_json::Value::Null) | None => {}
            Some(other) => return Err(format!("GET {full}: field {field} is {other}")),
        }
    }
    Ok(out)
}

/// Expected digest encoded in a blob file's path under `<data>/blobs`: the last
/// path component that is a full hex digest, or the trailing all-hex components
/// concatenated (sharded layouts like `ab/cdef…`).
fn digest_from_path(rel: &Path) -> Option<String> {
    let comps: Vec<String> = rel
        .components()
        .map(|c| c.as_os_str().to_string_lossy().to_string())
        .collect();
    let is_hex = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase());
    let full = |s: &str| is_hex(s) && (s.len() == 64 || s.len() == 128);
    // The file name itself ends with the digest (possibly "sha256:<hex>" or "sha256-<hex>").
    let name = comps.last()?;
    for sep in [':', '-', '_', '.'] {
        if let Some(idx) = name.rfind(sep) {
            if full(&name[idx + 1..]) && name[..idx].starts_with("sha") {
                return Some(name[idx + 1..].to_string());
            }
        }
    }
    if full(name) {
        return Some(name.clone());
    }
    let mut acc = String::new();
    for c in comps.iter().rev() {
        if !is_hex(c) {
            break;
        }
        acc = format!("{c}{acc}");
        if full(&acc) {
            return Some(acc);
        }
    }
    None
}

fn hash_file(path: &Path, hex_len: usize) -> std::io::Result<String> {
    let mut f = std::fs::File::open(path)?;
    let mut buf = vec![0u8; 1 << 20];
    if hex_len == 128 {
        let mut h = Sha512::new();
        loop {
            let n = f.read(&mut buf)?;
            if n == 0 {
                break;
            }
            h.update(&buf[..n]);
        }
        Ok(hex::encode(h.finalize()))
    } else {
        let mut h = Sha256::new();
        loop {
            let n = f.read(&mut buf)?;
            if n == 0 {
                break;
            }
            h.update(&buf[..n]);
        }
        Ok(hex::encode(h.finalize()))
    }
}

/// Collects every blob digest referenced by a manifest body (image manifest or index).
fn referenced(body: &[u8]) -> Result<(Vec<String>, Vec<String>), String> {
    let v: serde_json::Value =
        serde_json::from_slice(body).map_err(|e| format!("manifest is not JSON: {e}"))?;
    let mut blobs = Vec::new();
    let mut children = Vec::new();
    if let Some(c) = v.get("config").and_then(|c| c.get("digest")).and_then(|d| d.as_str()) {
        blobs.push(c.to_string());
    }
    for l in v.get("layers").and_then(|l| l.as_array()).into_iter().flatten() {
        if let Some(d) = l.get("digest").and_then(|d| d.as_str()) {
            blobs.push(d.to_string());
        }
    }
    for m in v.get("manifests").and_then(|l| l.as_array()).into_iter().flatten() {
        if let Some(d) = m.get("digest").and_then(|d| d.as_str()) {
            children.push(d.to_string());
        }
    }
    Ok((blobs, children))
}

fn log_tail(path: &Path, lines: usize) -> String {
    let s = std::fs::read_to_string(path).unwrap_or_default();
    let v: Vec<&str> = s.lines().collect();
    v[v.len().saturating_sub(lines)..].join("\n")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_pushes_survive_kill9_and_no_half_state_is_visible() {
    let seed: u64 = std::env::var("MERIDIAN_CRASH_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos() as u64
        });
    println!("crash_safety seed = {seed} (rerun with MERIDIAN_CRASH_SEED={seed})");
    let mut rng = StdRng::seed_from_u64(seed);

    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().to_path_buf();
    let port = free_port();
    let mut node = Node::start_in(&dir, port).await;
    let base = node.base.clone();
    let log_path = node.log_path.clone();
    println!("node log: {}", log_path.display());

    let stop = Arc::new(AtomicBool::new(false));
    let acks = Arc::new(AtomicUsize::new(0));
    let mut handles = Vec::new();
    for id in 0..PUSHERS {
        let pseed = seed ^ (0x9E37_79B9_7F4A_7C15u64.wrapping_mul(id + 1));
        handles.push(tokio::spawn(pusher(id, pseed, base.clone(), stop.clone(), acks.clone())));
    }

    let started = Instant::now();
    for cycle in 1..=KILL_CYCLES {
        let wait = Duration::from_millis(rng.random_range(1500..4500));
        tokio::time::sleep(wait).await;
        let before = acks.load(Ordering::SeqCst);
        node.kill9();
        println!(
            "[{:>5.1}s] cycle {cycle}: kill -9 after {wait:?} ({before} acknowledged manifest writes so far)",
            started.elapsed().as_secs_f64()
        );
        if cycle == KILL_CYCLES {
            break;
        }
        tokio::time::sleep(Duration::from_millis(rng.random_range(0..300))).await;
        let t = Instant::now();
        node = Node::start_in(&dir, port).await;
        println!("           restarted in {:?}", t.elapsed());
    }
    // The server is dead: stop the pushers (their in-flight requests fail), then restart.
    stop.store(true, Ordering::SeqCst);
    let mut logs = Vec::new();
    for h in handles {
        logs.push(h.await.expect("pusher panicked"));
    }
    let t = Instant::now();
    let node = Node::start_in(&dir, port).await;
    println!(
        "[{:>5.1}s] final restart in {:?}; verifying",
        started.elapsed().as_secs_f64(),
        t.elapsed()
    );

    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(60))
        .build()
        .unwrap();
    let mut failures: Vec<String> = Vec::new();

    let total_acked: usize = logs.iter().map(|l| l.acked_manifests.len()).sum();
    let total_blobs: usize = logs.iter().map(|l| l.acked_blobs.len()).sum();
    for (i, l) in logs.iter().enumerate() {
        println!(
            "pusher {i}: {} attempts, {} acknowledged manifest writes, {} acknowledged blobs, {} failed requests",
            l.attempts,
            l.acked_manifests.len(),
            l.acked_blobs.len(),
            l.errors
        );
        for s in &l.unexpected_statuses {
            println!("  pusher {i} got an HTTP error from a live server: {s}");
        }
    }

    // Verification requests run concurrently (thousands of GETs).
    const PAR: usize = 16;
    type Check = BoxFuture<'static, Vec<String>>;

    // Expected content of every blob that must read back: the blobs of acknowledged
    // manifests and every acknowledged blob upload.
    let mut expected_blobs: BTreeMap<(String, String), BlobContent> = BTreeMap::new();
    let mut expected_manifests: BTreeMap<(String, String), (Vec<u8>, u64, String)> = BTreeMap::new();
    for m in logs.iter().flat_map(|l| &l.acked_manifests) {
        let (digests, _) = referenced(&m.bytes).expect("own manifest parses");
        let contents = std::iter::once(BlobContent::Literal(m.config.clone()))
            .chain(m.layers.iter().map(|l| BlobContent::Random(*l)));
        for (d, c) in digests.into_iter().zip(contents) {
            expected_blobs.entry((m.repo.clone(), d)).or_insert(c);
        }
        expected_manifests
            .entry((m.repo.clone(), m.digest.clone()))
            .or_insert_with(|| (m.bytes.clone(), m.pusher, m.tag.clone()));
    }
    for (repo, d, content) in logs.iter().flat_map(|l| &l.acked_blobs) {
        expected_blobs.entry((repo.clone(), d.clone())).or_insert_with(|| content.clone());
    }

    let mut checks: Vec<Check> = Vec::new();
    // 1. Every acknowledged manifest by digest, byte-identical.
    for ((repo, digest), (bytes, pusher, tag)) in &expected_manifests {
        let (c, base, repo, digest, bytes, pusher, tag) =
            (client.clone(), base.clone(), repo.clone(), digest.clone(), bytes.clone(), *pusher, tag.clone());
        checks.push(
            async move {
                let mut f = Vec::new();
                match net::get_manifest(&c, &base, &repo, &digest).await {
                    Ok((dcd, body)) => {
                        if body != bytes {
                            f.push(format!(
                                "acked manifest {repo}@{digest} (pusher {pusher}, tag {tag}): GET by digest returned different bytes ({} vs {} bytes)",
                                body.len(),
                                bytes.len()
                            ));
                        }
                        if let Some(d) = dcd {
                            if d != digest {
                                f.push(format!("{repo}@{digest}: Docker-Content-Digest is {d}"));
                            }
                        }
                    }
                    Err(e) => f.push(format!("acked manifest {repo}@{digest} (pusher {pusher}, tag {tag}) lost: {e}")),
                }
                f
            }
            .boxed(),
        );
    }
    // 2. Every blob of an acknowledged manifest and every acknowledged blob upload.
    for ((repo, digest), content) in &expected_blobs {
        let (c, base, repo, digest, content) =
            (client.clone(), base.clone(), repo.clone(), digest.clone(), content.clone());
        checks.push(
            async move {
                let want = content.bytes();
                match net::get_blob(&c, &base, &repo, &digest).await {
                    Ok(got) if got == want => vec![],
                    Ok(got) => vec![format!(
                        "acknowledged blob {repo}@{digest}: content differs ({} bytes, digest {})",
                        got.len(),
                        oci::sha256_digest(&got)
                    )],
                    Err(e) => vec![format!("acknowledged blob {repo}@{digest} lost: {e}")],
                }
            }
            .boxed(),
        );
    }
    // 3. Every tag with an acknowledged write resolves to the last acknowledged value
    //    (or to a later write that was in flight when the server died).
    let mut acked_repos: BTreeSet<String> = BTreeSet::new();
    let mut tags_checked = 0;
    for l in &logs {
        for ((repo, tag), writes) in &l.tag_history {
            let Some(last_ack) = writes.iter().rposition(|w| w.acked) else { continue };
            acked_repos.insert(repo.clone());
            tags_checked += 1;
            let allowed: Vec<String> = writes[last_ack..].iter().map(|w| w.digest.clone()).collect();
            let (c, base, repo, tag) = (client.clone(), base.clone(), repo.clone(), tag.clone());
            checks.push(
                async move {
                    let want = &allowed[0];
                    match net::get_manifest(&c, &base, &repo, &tag).await {
                        Ok((_, body)) => {
                            let got = oci::sha256_digest(&body);
                            if !allowed.contains(&got) {
                                return vec![format!(
                                    "tag {repo}:{tag} resolves to {got}, expected last acknowledged {want} (in-doubt later writes allowed: {:?})",
                                    &allowed[1..]
                                )];
                            } else if got != *want {
                                println!("note: tag {repo}:{tag} points to the in-flight (unacknowledged) write {got}");
                            }
                            vec![]
                        }
                        Err(e) => vec![format!("tag {repo}:{tag} (acked {want}) not resolvable: {e}")],
                    }
                }
                .boxed(),
            );
        }
    }
    let n_checks = checks.len();
    let results: Vec<Vec<String>> = futures::stream::iter(checks).buffer_unordered(PAR).collect().await;
    failures.extend(results.into_iter().flatten());
    println!(
        "[{:>5.1}s] {n_checks} acknowledged-state checks done",
        started.elapsed().as_secs_f64()
    );

    // 4. No half state: every manifest reachable from the catalog is complete.
    let mut reachable_manifests = 0;
    let mut to_visit: Vec<(String, String)> = Vec::new();
    match get_paginated_list(&client, &base, "/v2/_catalog?n=1000".to_string(), "repositories").await {
        Err(e) => failures.push(format!("catalog: {e}")),
        Ok(repos) => {
            for r in &acked_repos {
                if !repos.contains(r) {
                    failures.push(format!("repository {r} has acknowledged manifests but is missing from /v2/_catalog"));
                }
            }
            for repo in &repos {
                let tags = match get_paginated_list(&client, &base, format!("/v2/{repo}/tags/list?n=1000"), "tags").await {
                    Ok(t) => t,
                    Err(e) => {
                        failures.push(format!("tags/list of {repo}: {e}"));
                        continue;
                    }
                };
                for l in &logs {
                    for ((r, t), writes) in &l.tag_history {
                        if r == repo && writes.iter().any(|w| w.acked) && !tags.contains(t) {
                            failures.push(format!("acknowledged tag {r}:{t} missing from tags/list"));
                        }
                    }
                }
                to_visit.extend(tags.into_iter().map(|t| (repo.clone(), t)));
            }
        }
    }
    let mut visited: BTreeSet<(String, String)> = BTreeSet::new();
    let mut referenced_blobs: BTreeMap<(String, String), String> = BTreeMap::new();
    while !to_visit.is_empty() {
        let round: Vec<(String, String)> = to_visit.drain(..).filter(|k| visited.insert(k.clone())).collect();
        reachable_manifests += round.len();
        let fetched: Vec<_> = futures::stream::iter(round.into_iter().map(|(repo, reference)| {
            let (c, base) = (client.clone(), base.clone());
            async move {
                let r = net::get_manifest(&c, &base, &repo, &reference).await;
                (repo, reference, r)
            }
        }))
        .buffer_unordered(PAR)
        .collect()
        .await;
        for (repo, reference, r) in fetched {
            match r.and_then(|(_, body)| referenced(&body)) {
                Err(e) => failures.push(format!("{repo}:{reference} is listed but not readable: {e}")),
                Ok((blobs, children)) => {
                    to_visit.extend(children.into_iter().map(|d| (repo.clone(), d)));
                    for d in blobs {
                        referenced_blobs.entry((repo.clone(), d)).or_insert_with(|| reference.clone());
                    }
                }
            }
        }
    }
    let half: Vec<Vec<String>> = futures::stream::iter(
        referenced_blobs
            .into_iter()
            .filter(|(k, _)| !expected_blobs.contains_key(k))
            .map(|((repo, d), reference)| {
                let (c, base) = (client.clone(), base.clone());
                async move {
                    match net::get_blob(&c, &base, &repo, &d).await {
                        Ok(got) if oci::sha256_digest(&got) == d => vec![],
                        Ok(got) => vec![format!(
                            "half state: {repo}:{reference} references {d} but the blob GETs with digest {}",
                            oci::sha256_digest(&got)
                        )],
                        Err(e) => vec![format!(
                            "half state: manifest {repo}:{reference} is visible but its blob {d} is not: {e}"
                        )],
                    }
                }
            }),
    )
    .buffer_unordered(PAR)
    .collect()
    .await;
    failures.extend(half.into_iter().flatten());

    // 5. The content-addressed store holds only complete, correctly named blobs.
    let blobs_dir = node.data_dir.join("blobs");
    let files = oci::files_under(&blobs_dir);
    let mut on_disk: BTreeSet<String> = BTreeSet::new();
    for f in &files {
        let rel = f.strip_prefix(&blobs_dir).unwrap();
        match digest_from_path(rel) {
            None => failures.push(format!(
                "file under data/blobs not named by a digest (torn/temporary file left behind?): {} ({} bytes)",
                f.display(),
                std::fs::metadata(f).map(|m| m.len()).unwrap_or(0)
            )),
            Some(hexd) => match hash_file(f, hexd.len()) {
                Ok(actual) if actual == hexd => {
                    on_disk.insert(hexd);
                }
                Ok(actual) => failures.push(format!(
                    "blob file {} has content digest {actual} (size {}): torn write survived a crash",
                    f.display(),
                    std::fs::metadata(f).map(|m| m.len()).unwrap_or(0)
                )),
                Err(e) => failures.push(format!("cannot read blob file {}: {e}", f.display())),
            },
        }
    }
    let mut missing_on_disk = 0;
    for (_, d) in expected_blobs.keys() {
        let hexd = d.trim_start_matches("sha256:");
        if !on_disk.contains(hexd) {
            missing_on_disk += 1;
            if missing_on_disk <= 5 {
                failures.push(format!(
                    "acknowledged blob {d} has no content-addressed file under {}",
                    blobs_dir.display()
                ));
            }
        }
    }

    println!(
        "verified: {total_acked} acknowledged manifest writes, {total_blobs} acknowledged blob uploads, \
         {tags_checked} tags, {reachable_manifests} manifests reachable from the catalog, \
         {} blob files on disk ({} distinct digests); elapsed {:.1}s",
        files.len(),
        on_disk.len(),
        started.elapsed().as_secs_f64()
    );

    assert!(
        total_acked >= 20,
        "only {total_acked} manifest pushes were acknowledged across {KILL_CYCLES} kill cycles; \
         the test is not meaningful (server too slow or failing?). Node log {} tail:\n{}",
        log_path.display(),
        log_tail(&log_path, 60)
    );
    if !failures.is_empty() {
        println!("---- node log (tail) ----\n{}", log_tail(&log_path, 80));
        let shown: Vec<&String> = failures.iter().take(40).collect();
        panic!(
            "{} crash-safety violations (seed {seed}); first {}:\n{}\nnode log: {}",
            failures.len(),
            shown.len(),
            shown.iter().map(|s| format!("  - {s}")).collect::<Vec<_>>().join("\n"),
            log_path.display()
        );
    }
    drop(node);
    drop(tmp);
}

/// The on-disk check must recognise content-addressed names and flag everything else.
#[test]
fn blob_file_names_are_parsed_as_digests() {
    let h = "a".repeat(64);
    for ok in [
        format!("sha256/aa/{h}"),
        format!("sha256/{h}"),
        h.clone(),
        format!("sha256:{h}"),
        format!("sha256/{}/{}", &h[..2], &h[2..]),
    ] {
        assert_eq!(digest_from_path(Path::new(&ok)).as_deref(), Some(h.as_str()), "{ok}");
    }
    for bad in [
        format!("sha256/aa/{h}.tmp"),
        format!("sha256/aa/.{h}.partial"),
        "sha256/aa/upload-1234".to_string(),
        format!("sha256/aa/{}", &h[..63]),
    ] {
        assert_eq!(digest_from_path(Path::new(&bad)), None, "{bad}");
    }
}

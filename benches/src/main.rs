//! `meridian-bench`: a load generator speaking the OCI Distribution API over
//! plain HTTP/1.1 to any registry URL (Meridian, CNCF Distribution, ...).
//!
//! Scenarios:
//! * `blob-push`    — POST /v2/<repo>/blobs/uploads/ then a monolithic
//!   PUT <Location>?digest=… with a unique body per op.
//! * `blob-pull`    — GET /v2/<repo>/blobs/<digest> of blobs pushed before
//!   the measurement starts (body streamed and dropped; hashed with --verify).
//! * `image-push`   — per op: N unique layers + config + OCI image manifest
//!   PUT by a unique tag.
//! * `manifest-get` — GET /v2/<repo>/manifests/<tag> of a pre-pushed image.
//! * `manifest-put` — PUT /v2/<repo>/manifests/<tag> of a new small OCI image
//!   manifest per op (unique annotation), referencing one config blob and one
//!   layer uploaded once before the measurement.
//!
//! `geo` holds one-shot cross-region measurements (see `geo.rs`); `receiver` is a webhook
//! receiver that records delivery latency (see `receiver.rs`); `machine` measures this
//! machine's SHA-256 and disk write throughput (see `machine.rs`).
//!
//! `report` turns JSON-lines result files into a markdown comparison table.
//!
//! Payloads: one random buffer of `size` bytes is generated once and shared
//! by every worker; each op gets a unique 32-byte tail (run id, worker id,
//! counter, random). Because SHA-256 is a Merkle–Damgård hash, the hasher
//! state over the shared prefix is computed once and cloned per op, so the
//! per-op digest costs one 64-byte block regardless of the blob size, and the
//! body is sent as two chunks (shared prefix `Bytes` + tail) without copying.

mod geo;
mod machine;
mod receiver;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use bytes::Bytes;
use clap::{Args, Parser, Subcommand, ValueEnum};
use futures::StreamExt;
use rand::rngs::SmallRng;
use rand::{RngCore, SeedableRng};
use reqwest::header::{ACCEPT, CONTENT_LENGTH, CONTENT_TYPE, LOCATION};
use reqwest::{Client, StatusCode, Url};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
const OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
const OCI_LAYER: &str = "application/vnd.oci.image.layer.v1.tar+gzip";
const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
const DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
const TAIL: usize = 32;

#[derive(Parser, Debug)]
#[command(
    name = "meridian-bench",
    version,
    about = "Load generator for OCI Distribution registries (plain HTTP/1.1)",
    after_help = "Examples:\n  meridian-bench blob-push --url http://127.0.0.1:5501 --size 1MiB -c 8 --duration 10s\n  meridian-bench --scenario manifest-get --url http://127.0.0.1:5502 -c 16 --ops 10000 --json\n  meridian-bench report --target Distribution=dist.jsonl --target Meridian=meridian.jsonl"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Option<Cmd>,
    /// Scenario to run (alternative to giving it as a subcommand).
    #[arg(long, value_enum, global = true)]
    scenario: Option<Scenario>,
    #[command(flatten)]
    opts: Opts,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// Monolithic blob uploads (POST + PUT ?digest=), unique content per op.
    BlobPush,
    /// Blob downloads of pre-pushed blobs.
    BlobPull,
    /// Image pushes: N layers + config + OCI manifest PUT by tag.
    ImagePush,
    /// Manifest GETs by tag of a pre-pushed image.
    ManifestGet,
    /// Manifest PUTs: a new OCI manifest per op (blobs uploaded once in setup).
    ManifestPut,
    /// Render JSON-lines result files as a markdown comparison table.
    Report(ReportArgs),
    /// A webhook receiver recording delivery latency (for `benches/events.sh`).
    Receiver(receiver::ReceiverArgs),
    /// This machine's SHA-256 and disk write throughput, through the node's own code.
    Machine(machine::MachineArgs),
    /// One-shot measurements across regions (visibility lag, image push/pull).
    Geo {
        #[command(subcommand)]
        cmd: geo::GeoCmd,
    },
}

#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
enum Scenario {
    BlobPush,
    BlobPull,
    ImagePush,
    ManifestGet,
    ManifestPut,
}

impl Scenario {
    fn name(self) -> &'static str {
        match self {
            Scenario::BlobPush => "blob-push",
            Scenario::BlobPull => "blob-pull",
            Scenario::ImagePush => "image-push",
            Scenario::ManifestGet => "manifest-get",
            Scenario::ManifestPut => "manifest-put",
        }
    }
}

#[derive(Args, Debug, Clone)]
struct Opts {
    /// Registry base URL (plain http).
    #[arg(
        long,
        global = true,
        env = "BENCH_URL",
        default_value = "http://127.0.0.1:5000"
    )]
    url: String,
    /// blob-pull: base URLs the measured GETs go to instead of --url, comma-separated;
    /// client i uses the (i mod n)th, as a load balancer in front of several nodes of a
    /// region would spread them (setup still pushes through --url).
    #[arg(long, global = true)]
    pull_urls: Option<String>,
    /// Number of concurrent clients (each runs one op at a time).
    #[arg(short = 'c', long, global = true, default_value_t = 1)]
    concurrency: usize,
    /// Blob size (blob-push/blob-pull, default 1MiB) or layer size (image-push,
    /// default 64KiB; manifest-get and manifest-put setup, default 1KiB). Accepts 512, 64KiB, 1MiB, 256MiB, 1GiB, 10MB…
    #[arg(long, global = true)]
    size: Option<String>,
    /// Layers per image (image-push, manifest-get setup).
    #[arg(long, global = true, default_value_t = 3)]
    layers: usize,
    /// Measurement duration (e.g. 10s, 500ms, 2m; bare number = seconds).
    /// Defaults to 10s unless --ops is given.
    #[arg(short = 'd', long, global = true)]
    duration: Option<String>,
    /// Number of measured ops (total across all clients). With --duration, whichever ends first.
    #[arg(short = 'n', long, global = true)]
    ops: Option<u64>,
    /// Pause each client this long after every op (not counted in the latency), e.g. to
    /// measure an isolated write's latency without queueing behind the previous one.
    #[arg(long, global = true, default_value = "0s")]
    think: String,
    /// Warm-up duration before measuring (same workload, results discarded).
    #[arg(long, global = true, default_value = "0s")]
    warmup: String,
    /// Repository name (default: bench/<scenario>).
    #[arg(long, global = true)]
    repo: Option<String>,
    /// Number of distinct pre-pushed blobs for blob-pull (default: max(concurrency, 2)).
    #[arg(long, global = true)]
    blobs: Option<usize>,
    /// manifest-put: tags are <prefix><n> (see --tags).
    #[arg(long, global = true, default_value = "put-")]
    tag_prefix: String,
    /// manifest-put: number of tags the PUTs rotate over (<prefix>0 … <prefix>N-1);
    /// 0 = a new unique tag per op.
    #[arg(long, global = true, default_value_t = 4)]
    tags: u64,
    /// Hash pulled blobs / manifests and check them against their digest.
    #[arg(long, global = true)]
    verify: bool,
    /// manifest-get: GET the images `meridian-load` wrote instead of one pushed in setup:
    /// `load/r<i>:v<j>` for i < REPOS and j < TAGS, picked at random for every op (a
    /// registry's working set rather than one hot manifest). Given as REPOS,TAGS.
    #[arg(long, global = true, value_name = "REPOS,TAGS")]
    loaded: Option<String>,
    /// Print one JSON object instead of the human one-line summary.
    #[arg(long, global = true)]
    json: bool,
    /// Tokio worker threads for the client (default 2).
    #[arg(long, global = true, default_value_t = 2)]
    threads: usize,
    /// Per-request timeout.
    #[arg(long, global = true, default_value = "300s")]
    timeout: String,
    /// Also report the CPU used by this server process during the measurement (Linux /proc).
    #[arg(long, global = true)]
    server_pid: Option<u32>,
    /// Free-form label copied into the JSON result (e.g. target name).
    #[arg(long, global = true)]
    label: Option<String>,
    /// `Authorization` header sent with every request (e.g. `Bearer <token>`).
    #[arg(long, global = true, env = "BENCH_AUTHORIZATION", hide_env_values = true)]
    authorization: Option<String>,
}

#[derive(Args, Debug)]
struct ReportArgs {
    /// NAME=FILE of JSON-lines results, in column order. With two targets a
    /// ratio column (second / first, on throughput) is added.
    #[arg(long = "target", required = true)]
    targets: Vec<String>,
}

#[derive(Serialize, Deserialize, Debug, Clone)]
struct BenchResult {
    scenario: String,
    #[serde(default)]
    label: Option<String>,
    url: String,
    repo: String,
    concurrency: usize,
    /// Blob size (blob-*) or layer size (image-push), bytes.
    size: u64,
    size_human: String,
    #[serde(default)]
    layers: Option<usize>,
    duration_s: f64,
    ops: u64,
    errors: u64,
    bytes: u64,
    ops_per_sec: f64,
    /// Decimal megabytes (10^6 bytes) of payload per second.
    mb_per_sec: f64,
    mean_ms: f64,
    p50_ms: f64,
    p90_ms: f64,
    p99_ms: f64,
    max_ms: f64,
    #[serde(default)]
    client_cpu_pct: Option<f64>,
    #[serde(default)]
    server_cpu_pct: Option<f64>,
    #[serde(default)]
    first_error: Option<String>,
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    let scenario = match (&cli.cmd, cli.scenario) {
        (Some(Cmd::Report(args)), _) => return report(args),
        (Some(Cmd::Geo { cmd }), _) => return runtime(&cli.opts)?.block_on(geo::run(cmd, &cli.opts)),
        (Some(Cmd::Receiver(args)), _) => return runtime(&cli.opts)?.block_on(receiver::run(args)),
        (Some(Cmd::Machine(args)), _) => return machine::run(args),
        (Some(Cmd::BlobPush), _) => Scenario::BlobPush,
        (Some(Cmd::BlobPull), _) => Scenario::BlobPull,
        (Some(Cmd::ImagePush), _) => Scenario::ImagePush,
        (Some(Cmd::ManifestGet), _) => Scenario::ManifestGet,
        (Some(Cmd::ManifestPut), _) => Scenario::ManifestPut,
        (None, Some(s)) => s,
        (None, None) => bail!("no scenario given: use a subcommand or --scenario (see --help)"),
    };
    runtime(&cli.opts)?.block_on(run(scenario, cli.opts))
}

fn runtime(o: &Opts) -> Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread().worker_threads(o.threads.max(1)).enable_all().build()?)
}

// ---------------------------------------------------------------- parsing

fn parse_size(s: &str) -> Result<u64> {
    let t = s.trim();
    let idx = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (num, unit) = t.split_at(idx);
    let n: f64 = num.parse().with_context(|| format!("bad size {s:?}"))?;
    let mult: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kib" | "ki" => 1 << 10,
        "m" | "mib" | "mi" => 1 << 20,
        "g" | "gib" | "gi" => 1 << 30,
        "kb" => 1_000,
        "mb" => 1_000_000,
        "gb" => 1_000_000_000,
        u => bail!("unknown size unit {u:?} in {s:?}"),
    };
    Ok((n * mult as f64).round() as u64)
}

fn human_size(n: u64) -> String {
    for (m, u) in [(1u64 << 30, "GiB"), (1 << 20, "MiB"), (1 << 10, "KiB")] {
        if n >= m && n % m == 0 {
            return format!("{}{}", n / m, u);
        }
    }
    for (m, u) in [(1u64 << 30, "GiB"), (1 << 20, "MiB"), (1 << 10, "KiB")] {
        if n >= m {
            return format!("{:.1}{}", n as f64 / m as f64, u);
        }
    }
    format!("{n}B")
}

fn parse_duration(s: &str) -> Result<Duration> {
    let t = s.trim();
    let idx = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (num, unit) = t.split_at(idx);
    let n: f64 = num.parse().with_context(|| format!("bad duration {s:?}"))?;
    let secs = match unit.trim() {
        "" | "s" => n,
        "ms" => n / 1000.0,
        "m" | "min" => n * 60.0,
        "h" => n * 3600.0,
        u => bail!("unknown duration unit {u:?} in {s:?}"),
    };
    Ok(Duration::from_secs_f64(secs))
}

// ---------------------------------------------------------------- payloads

/// Shared random prefix + per-op unique tail.
struct Payload {
    size: usize,
    prefix: Bytes,
    prefix_hasher: Sha256,
}

impl Payload {
    fn new(size: usize) -> Self {
        let plen = size.saturating_sub(TAIL);
        let mut buf = vec![0u8; plen];
        SmallRng::from_os_rng().fill_bytes(&mut buf);
        let mut h = Sha256::new();
        h.update(&buf);
        Payload {
            size,
            prefix: Bytes::from(buf),
            prefix_hasher: h,
        }
    }

    /// A unique blob: (body chunks, digest).
    fn make(&self, w: &mut WorkerState) -> (Vec<Bytes>, String) {
        let tlen = self.size - self.prefix.len();
        let mut tail = [0u8; TAIL];
        tail[0..8].copy_from_slice(&w.run_id.to_le_bytes());
        tail[8..12].copy_from_slice(&(w.id as u32).to_le_bytes());
        tail[12..20].copy_from_slice(&w.counter.to_le_bytes());
        tail[20..28].copy_from_slice(&w.rng.next_u64().to_le_bytes());
        tail[28..32].copy_from_slice(&w.rng.next_u32().to_le_bytes());
        w.counter += 1;
        if tlen < TAIL && tlen > 0 {
            // Tiny blobs: fold all 32 unique bytes into the few available.
            let full = tail;
            tail = [0u8; TAIL];
            for (i, b) in full.iter().enumerate() {
                tail[i % tlen] ^= b.rotate_left((i / tlen) as u32);
            }
        }
        let tail = &tail[..tlen];
        let mut h = self.prefix_hasher.clone();
        h.update(tail);
        let digest = format!("sha256:{}", hex::encode(h.finalize()));
        let mut chunks = Vec::with_capacity(2);
        if !self.prefix.is_empty() {
            chunks.push(self.prefix.clone());
        }
        if !tail.is_empty() {
            chunks.push(Bytes::copy_from_slice(tail));
        }
        (chunks, digest)
    }
}

fn sha256_digest(b: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(b)))
}

struct WorkerState {
    id: usize,
    run_id: u64,
    counter: u64,
    rng: SmallRng,
}

// ---------------------------------------------------------------- registry ops

struct Ctx {
    scenario: Scenario,
    client: Client,
    base: String,
    repo: String,
    size: u64,
    layers: usize,
    verify: bool,
    payload: Payload,
    /// blob-pull: where the measured GETs go (`--pull-urls`, or `base`).
    pull_bases: Vec<String>,
    /// blob-pull: digests of pre-pushed blobs.
    pull_digests: Vec<String>,
    /// manifest-get: tag and digest of the pre-pushed manifest.
    manifest_tag: String,
    manifest_digest: String,
    /// manifest-get `--loaded`: how many `load/r<i>` repositories and `v<j>` tags to pick from.
    loaded: Option<(u64, u64)>,
    /// manifest-put: descriptors of the config and layer uploaded in setup.
    put_config: serde_json::Value,
    put_layer: serde_json::Value,
    tag_prefix: String,
    tags: u64,
    /// Pause after every op (--think).
    think: Duration,
}

fn body_of(chunks: Vec<Bytes>) -> reqwest::Body {
    if chunks.len() == 1 {
        return reqwest::Body::from(chunks.into_iter().next().unwrap());
    }
    reqwest::Body::wrap_stream(futures::stream::iter(
        chunks.into_iter().map(Ok::<Bytes, std::io::Error>),
    ))
}

async fn err_status(what: &str, resp: reqwest::Response) -> anyhow::Error {
    let st = resp.status();
    let body = resp.text().await.unwrap_or_default();
    let body: String = body.chars().take(300).collect();
    anyhow!("{what}: HTTP {st}: {}", body.trim())
}

impl Ctx {
    /// Monolithic upload: POST /v2/<repo>/blobs/uploads/ then PUT <Location>?digest=.
    async fn push_blob(&self, chunks: Vec<Bytes>, len: u64, digest: &str) -> Result<()> {
        let start_url = format!("{}/v2/{}/blobs/uploads/", self.base, self.repo);
        let resp = self
            .client
            .post(&start_url)
            .header(CONTENT_LENGTH, 0)
            .send()
            .await
            .context("POST upload")?;
        if resp.status() != StatusCode::ACCEPTED {
            return Err(err_status("POST blobs/uploads/", resp).await);
        }
        let loc = resp
            .headers()
            .get(LOCATION)
            .ok_or_else(|| anyhow!("POST blobs/uploads/: no Location header"))?
            .to_str()?
            .to_owned();
        let _ = resp.bytes().await;
        let mut put_url = Url::parse(&start_url)?.join(&loc).context("bad Location")?;
        put_url.query_pairs_mut().append_pair("digest", digest);
        let resp = self
            .client
            .put(put_url)
            .header(CONTENT_TYPE, "application/octet-stream")
            .header(CONTENT_LENGTH, len)
            .body(body_of(chunks))
            .send()
            .await
            .context("PUT upload")?;
        if resp.status() != StatusCode::CREATED {
            return Err(err_status("PUT upload", resp).await);
        }
        let _ = resp.bytes().await;
        Ok(())
    }

    async fn push_unique_blob(&self, w: &mut WorkerState) -> Result<(String, u64)> {
        let (chunks, digest) = self.payload.make(w);
        let len = self.payload.size as u64;
        self.push_blob(chunks, len, &digest).await?;
        Ok((digest, len))
    }

    /// Push `layers` unique layers, a config and an OCI manifest under `tag`.
    /// Returns (bytes pushed, manifest digest).
    /// PUT an OCI manifest by tag; anything but 201 is an error.
    async fn send_manifest(&self, tag: &str, manifest: Vec<u8>) -> anyhow::Result<()> {
        let resp = self
            .client
            .put(format!("{}/v2/{}/manifests/{}", self.base, self.repo, tag))
            .header(CONTENT_TYPE, OCI_MANIFEST)
            .body(manifest)
            .send()
            .await
            .context("PUT manifest")?;
        if resp.status() != StatusCode::CREATED {
            return Err(err_status("PUT manifest", resp).await);
        }
        let _ = resp.bytes().await;
        Ok(())
    }

    async fn push_image(&self, w: &mut WorkerState, tag: &str) -> Result<(u64, String)> {
        let mut total = 0u64;
        let mut layers = Vec::with_capacity(self.layers);
        for _ in 0..self.layers {
            let (d, len) = self.push_unique_blob(w).await?;
            total += len;
            layers.push(serde_json::json!({"mediaType": OCI_LAYER, "digest": d, "size": len}));
        }
        let diff_ids: Vec<_> = layers.iter().map(|l| l["digest"].clone()).collect();
        let config = serde_json::to_vec(&serde_json::json!({
            "architecture": "amd64",
            "os": "linux",
            "config": {"Labels": {"meridian.bench.nonce": format!("{:x}-{}-{}", w.run_id, w.id, w.counter)}},
            "rootfs": {"type": "layers", "diff_ids": diff_ids},
        }))?;
        w.counter += 1;
        let cdigest = sha256_digest(&config);
        let clen = config.len() as u64;
        self.push_blob(vec![Bytes::from(config)], clen, &cdigest)
            .await?;
        total += clen;
        let manifest = serde_json::to_vec(&serde_json::json!({
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "config": {"mediaType": OCI_CONFIG, "digest": cdigest, "size": clen},
            "layers": layers,
        }))?;
        let mdigest = sha256_digest(&manifest);
        let mlen = manifest.len() as u64;
        self.send_manifest(&tag, manifest).await?;
        Ok((total + mlen, mdigest))
    }

    async fn pull_blob(&self, base: &str, digest: &str) -> Result<u64> {
        self.pull_blob_from(base, digest, self.size).await
    }

    async fn pull_blob_of_size(&self, digest: &str, size: u64) -> Result<u64> {
        self.pull_blob_from(&self.base, digest, size).await
    }

    /// GET one blob from the registry at `base`, streaming the body; errors unless it has
    /// `size` bytes (and, with --verify, hashes to `digest`).
    async fn pull_blob_from(&self, base: &str, digest: &str, size: u64) -> Result<u64> {
        let resp = self
            .client
            .get(format!("{}/v2/{}/blobs/{}", base, self.repo, digest))
            .send()
            .await
            .context("GET blob")?;
        if resp.status() != StatusCode::OK {
            return Err(err_status("GET blob", resp).await);
        }
        let mut stream = resp.bytes_stream();
        let mut n = 0u64;
        let mut h = self.verify.then(Sha256::new);
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.context("reading blob body")?;
            n += chunk.len() as u64;
            if let Some(h) = h.as_mut() {
                h.update(&chunk);
            }
        }
        if n != size {
            bail!("GET blob {digest}: got {n} bytes, expected {size}");
        }
        if let Some(h) = h {
            let got = format!("sha256:{}", hex::encode(h.finalize()));
            if got != digest {
                bail!("GET blob {digest}: content hashes to {got}");
            }
        }
        Ok(n)
    }

    /// GET a manifest by tag or digest, accepting every manifest type; the body.
    async fn fetch_manifest(&self, reference: &str) -> Result<Bytes> {
        self.fetch_manifest_in(&self.repo, reference).await
    }

    async fn fetch_manifest_in(&self, repo: &str, reference: &str) -> Result<Bytes> {
        let resp = self
            .client
            .get(format!("{}/v2/{repo}/manifests/{reference}", self.base))
            .header(
                ACCEPT,
                format!("{OCI_MANIFEST}, {OCI_INDEX}, {DOCKER_MANIFEST}, {DOCKER_LIST}"),
            )
            .send()
            .await
            .context("GET manifest")?;
        if resp.status() != StatusCode::OK {
            return Err(err_status("GET manifest", resp).await);
        }
        resp.bytes().await.context("reading manifest body")
    }

    async fn get_manifest(&self, w: &mut WorkerState) -> Result<u64> {
        if let Some((repos, tags)) = self.loaded {
            let (i, j) = (w.rng.next_u64() % repos, w.rng.next_u64() % tags);
            return Ok(self.fetch_manifest_in(&format!("load/r{i}"), &format!("v{j}")).await?.len() as u64);
        }
        let body = self.fetch_manifest(&self.manifest_tag).await?;
        if self.verify {
            let got = sha256_digest(&body);
            if got != self.manifest_digest {
                bail!(
                    "GET manifest: body hashes to {got}, pushed {}",
                    self.manifest_digest
                );
            }
        }
        Ok(body.len() as u64)
    }

    /// manifest-put setup: upload one layer and one config blob to the repo.
    async fn setup_manifest_put(&mut self, w: &mut WorkerState) -> Result<()> {
        let (ld, llen) = self.push_unique_blob(w).await.context("uploading the layer")?;
        let config = serde_json::to_vec(&serde_json::json!({
            "architecture": "amd64",
            "os": "linux",
            "config": {"Labels": {"meridian.bench.nonce": format!("{:x}", w.run_id)}},
            "rootfs": {"type": "layers", "diff_ids": [ld]},
        }))?;
        let cdigest = sha256_digest(&config);
        let clen = config.len() as u64;
        self.push_blob(vec![Bytes::from(config)], clen, &cdigest)
            .await
            .context("uploading the config")?;
        self.put_config = serde_json::json!({"mediaType": OCI_CONFIG, "digest": cdigest, "size": clen});
        self.put_layer = serde_json::json!({"mediaType": OCI_LAYER, "digest": ld, "size": llen});
        Ok(())
    }

    /// manifest-put op: a new manifest (unique annotation) PUT by tag, expecting 201.
    async fn put_manifest(&self, w: &mut WorkerState, seq: u64) -> Result<u64> {
        let tag = if self.tags == 0 {
            format!("{}{:x}-{}-{}", self.tag_prefix, w.run_id, w.id, w.counter)
        } else {
            format!("{}{}", self.tag_prefix, (w.id as u64 + seq) % self.tags)
        };
        let manifest = self.small_manifest(w)?;
        let mlen = manifest.len() as u64;
        self.send_manifest(&tag, manifest).await?;
        Ok(mlen)
    }

    /// A new small manifest (unique annotation) over the blobs uploaded by
    /// `setup_manifest_put`.
    fn small_manifest(&self, w: &mut WorkerState) -> Result<Vec<u8>> {
        let manifest = serde_json::to_vec(&serde_json::json!({
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "config": self.put_config,
            "layers": [self.put_layer],
            "annotations": {
                "meridian.bench.nonce": format!("{:x}-{}-{}", w.run_id, w.id, w.counter),
            },
        }))?;
        w.counter += 1;
        Ok(manifest)
    }

    /// One measured op; returns payload bytes moved.
    async fn op(&self, w: &mut WorkerState, seq: u64) -> Result<u64> {
        match self.scenario {
            Scenario::BlobPush => Ok(self.push_unique_blob(w).await?.1),
            Scenario::BlobPull => {
                let d = &self.pull_digests[(w.id + seq as usize) % self.pull_digests.len()];
                let base = &self.pull_bases[w.id % self.pull_bases.len()];
                self.pull_blob(base, d).await
            }
            Scenario::ImagePush => {
                let tag = format!("b{:x}-{}-{}", w.run_id, w.id, w.counter);
                Ok(self.push_image(w, &tag).await?.0)
            }
            Scenario::ManifestGet => self.get_manifest(w).await,
            Scenario::ManifestPut => self.put_manifest(w, seq).await,
        }
    }
}

// ---------------------------------------------------------------- load loop

#[derive(Default)]
struct PhaseStats {
    lat_us: Vec<u64>,
    ops: u64,
    errors: u64,
    bytes: u64,
    first_error: Option<String>,
    elapsed: Duration,
}

async fn run_phase(
    ctx: Arc<Ctx>,
    concurrency: usize,
    run_id: u64,
    worker_base: usize,
    deadline: Option<Duration>,
    ops_limit: Option<u64>,
    quiet: bool,
) -> PhaseStats {
    let start = Instant::now();
    let claimed = Arc::new(AtomicU64::new(0));
    let err_logged = Arc::new(AtomicU64::new(0));
    let mut handles = Vec::with_capacity(concurrency);
    for i in 0..concurrency {
        let ctx = ctx.clone();
        let claimed = claimed.clone();
        let err_logged = err_logged.clone();
        handles.push(tokio::spawn(async move {
            let id = worker_base + i;
            let mut w = WorkerState {
                id,
                run_id,
                counter: 0,
                rng: SmallRng::seed_from_u64(run_id ^ ((id as u64 + 1) * 0x9E37_79B9_7F4A_7C15)),
            };
            let mut st = PhaseStats::default();
            let mut seq = 0u64;
            loop {
                if let Some(d) = deadline {
                    if start.elapsed() >= d {
                        break;
                    }
                }
                if let Some(n) = ops_limit {
                    if claimed.fetch_add(1, Ordering::Relaxed) >= n {
                        break;
                    }
                }
                let t0 = Instant::now();
                match ctx.op(&mut w, seq).await {
                    Ok(b) => {
                        st.lat_us.push(t0.elapsed().as_micros() as u64);
                        st.ops += 1;
                        st.bytes += b;
                    }
                    Err(e) => {
                        st.errors += 1;
                        let msg = format!("{e:#}");
                        if !quiet && err_logged.fetch_add(1, Ordering::Relaxed) < 5 {
                            eprintln!("meridian-bench: worker {id}: {msg}");
                        }
                        st.first_error.get_or_insert(msg);
                        tokio::time::sleep(Duration::from_millis(20)).await;
                    }
                }
                seq += 1;
                if !ctx.think.is_zero() {
                    tokio::time::sleep(ctx.think).await;
                }
            }
            st
        }));
    }
    let mut total = PhaseStats::default();
    for h in handles {
        match h.await {
            Ok(st) => {
                total.lat_us.extend(st.lat_us);
                total.ops += st.ops;
                total.errors += st.errors;
                total.bytes += st.bytes;
                if total.first_error.is_none() {
                    total.first_error = st.first_error;
                }
            }
            Err(e) => {
                total.errors += 1;
                total
                    .first_error
                    .get_or_insert(format!("worker panicked: {e}"));
            }
        }
    }
    total.elapsed = start.elapsed();
    total
}

/// utime+stime of a process in seconds (Linux /proc; assumes USER_HZ = 100).
fn proc_cpu_secs(pid: Option<u32>) -> Option<f64> {
    let path = match pid {
        Some(p) => format!("/proc/{p}/stat"),
        None => "/proc/self/stat".to_string(),
    };
    let s = std::fs::read_to_string(path).ok()?;
    let rest = &s[s.rfind(')')? + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    // fields after "pid (comm) ": state=0, ..., utime=11, stime=12
    let ut: f64 = f.get(11)?.parse().ok()?;
    let stt: f64 = f.get(12)?.parse().ok()?;
    Some((ut + stt) / 100.0)
}

fn percentile(sorted: &[u64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    let idx = rank.clamp(1, sorted.len()) - 1;
    sorted[idx] as f64 / 1000.0
}

/// The HTTP/1.1 client every scenario uses: a pool sized for `concurrency` clients.
fn http_client(concurrency: usize, timeout: Duration, authorization: Option<&str>) -> Result<Client> {
    let mut headers = reqwest::header::HeaderMap::new();
    if let Some(a) = authorization {
        let mut value = reqwest::header::HeaderValue::from_str(a).context("--authorization is not a valid header value")?;
        value.set_sensitive(true);
        headers.insert(reqwest::header::AUTHORIZATION, value);
    }
    Ok(Client::builder()
        .default_headers(headers)
        .http1_only()
        .pool_max_idle_per_host(concurrency * 2 + 4)
        .pool_idle_timeout(Duration::from_secs(60))
        .tcp_nodelay(true)
        .timeout(timeout)
        .connect_timeout(Duration::from_secs(5))
        .build()?)
}

/// Fails fast when the registry at `base` does not answer `GET /v2/` with success.
async fn check_reachable(client: &Client, base: &str) -> Result<()> {
    let resp = client
        .get(format!("{base}/v2/"))
        .send()
        .await
        .with_context(|| format!("cannot reach {base}/v2/"))?;
    if !resp.status().is_success() {
        bail!("GET {base}/v2/ returned {}", resp.status());
    }
    let _ = resp.bytes().await;
    Ok(())
}

/// `--loaded REPOS,TAGS`.
fn parse_loaded(s: &str) -> Result<(u64, u64)> {
    let parsed = s.split_once(',').and_then(|(r, t)| Some((r.trim().parse::<u64>().ok()?, t.trim().parse::<u64>().ok()?)));
    match parsed {
        Some((r, t)) if r > 0 && t > 0 => Ok((r, t)),
        _ => bail!("--loaded wants REPOS,TAGS (two positive numbers), got {s:?}"),
    }
}

impl Ctx {
    fn new(scenario: Scenario, client: Client, base: String, repo: String, size: u64, o: &Opts) -> Result<Ctx> {
        let pull_bases = match &o.pull_urls {
            Some(list) => list.split(',').map(|u| u.trim().trim_end_matches('/').to_string()).filter(|u| !u.is_empty()).collect(),
            None => vec![base.clone()],
        };
        if pull_bases.is_empty() || pull_bases.iter().any(|u| !u.starts_with("http://")) {
            bail!("--pull-urls must list plain http:// URLs");
        }
        Ok(Ctx {
            scenario,
            client,
            pull_bases,
            base,
            repo,
            size,
            layers: o.layers,
            verify: o.verify,
            payload: Payload::new(size as usize),
            pull_digests: Vec::new(),
            manifest_tag: String::new(),
            manifest_digest: String::new(),
            loaded: o.loaded.as_deref().map(parse_loaded).transpose()?,
            put_config: serde_json::Value::Null,
            put_layer: serde_json::Value::Null,
            tag_prefix: o.tag_prefix.clone(),
            tags: o.tags,
            think: parse_duration(&o.think)?,
        })
    }
}

async fn run(scenario: Scenario, o: Opts) -> Result<()> {
    if o.concurrency == 0 {
        bail!("--concurrency must be >= 1");
    }
    let default_size = match scenario {
        Scenario::BlobPush | Scenario::BlobPull => "1MiB",
        Scenario::ImagePush => "64KiB",
        Scenario::ManifestGet | Scenario::ManifestPut => "1KiB",
    };
    let size = parse_size(o.size.as_deref().unwrap_or(default_size))?;
    let duration = match (&o.duration, o.ops) {
        (Some(d), _) => Some(parse_duration(d)?),
        (None, Some(_)) => None,
        (None, None) => Some(Duration::from_secs(10)),
    };
    let warmup = parse_duration(&o.warmup)?;
    let timeout = parse_duration(&o.timeout)?;
    let base = o.url.trim_end_matches('/').to_string();
    if !base.starts_with("http://") {
        bail!("--url must be a plain http:// URL, got {base:?}");
    }
    let repo = o
        .repo
        .clone()
        .unwrap_or_else(|| format!("bench/{}", scenario.name()));
    let client = http_client(o.concurrency, timeout, o.authorization.as_deref())?;
    check_reachable(&client, &base).await?;

    let run_id: u64 = rand::random();
    let mut ctx = Ctx::new(scenario, client, base.clone(), repo.clone(), size, &o)?;

    // Setup (not measured). Setup workers use ids above the measured ones.
    let mut setup_w = WorkerState {
        id: 1_000_000,
        run_id,
        counter: 0,
        rng: SmallRng::seed_from_u64(run_id.wrapping_add(1)),
    };
    match scenario {
        Scenario::BlobPull => {
            let n = o.blobs.unwrap_or(o.concurrency.max(2)).max(1);
            for _ in 0..n {
                let (d, _) = ctx
                    .push_unique_blob(&mut setup_w)
                    .await
                    .context("setup: pushing blobs to pull")?;
                ctx.pull_digests.push(d);
            }
        }
        Scenario::ManifestGet if ctx.loaded.is_some() => {}
        Scenario::ManifestGet => {
            let tag = format!("bench-{run_id:x}");
            let (_, md) = ctx
                .push_image(&mut setup_w, &tag)
                .await
                .context("setup: pushing image for manifest-get")?;
            ctx.manifest_tag = tag;
            ctx.manifest_digest = md;
        }
        Scenario::ManifestPut => {
            ctx.setup_manifest_put(&mut setup_w)
                .await
                .context("setup: uploading blobs for manifest-put")?;
        }
        _ => {}
    }
    let ctx = Arc::new(ctx);

    if !warmup.is_zero() {
        let st = run_phase(
            ctx.clone(),
            o.concurrency,
            run_id,
            2_000_000,
            Some(warmup),
            None,
            true,
        )
        .await;
        if st.ops == 0 && st.errors > 0 {
            eprintln!(
                "meridian-bench: warm-up had only errors: {}",
                st.first_error.as_deref().unwrap_or("?")
            );
        }
    }

    let cpu0 = proc_cpu_secs(None);
    let scpu0 = o.server_pid.and_then(|p| proc_cpu_secs(Some(p)));
    let mut st = run_phase(
        ctx.clone(),
        o.concurrency,
        run_id,
        0,
        duration,
        o.ops,
        false,
    )
    .await;
    let cpu1 = proc_cpu_secs(None);
    let scpu1 = o.server_pid.and_then(|p| proc_cpu_secs(Some(p)));

    let secs = st.elapsed.as_secs_f64();
    st.lat_us.sort_unstable();
    let mean_ms = if st.lat_us.is_empty() {
        0.0
    } else {
        st.lat_us.iter().sum::<u64>() as f64 / st.lat_us.len() as f64 / 1000.0
    };
    let pct = |a: Option<f64>, b: Option<f64>| match (a, b) {
        (Some(a), Some(b)) if secs > 0.0 => Some(((b - a) / secs * 1000.0).round() / 10.0),
        _ => None,
    };
    let r = BenchResult {
        scenario: scenario.name().to_string(),
        label: o.label.clone(),
        url: base,
        repo,
        concurrency: o.concurrency,
        size,
        size_human: human_size(size),
        layers: match scenario {
            Scenario::ImagePush | Scenario::ManifestGet => Some(o.layers),
            Scenario::ManifestPut => Some(1),
            _ => None,
        },
        duration_s: round3(secs),
        ops: st.ops,
        errors: st.errors,
        bytes: st.bytes,
        ops_per_sec: round3(st.ops as f64 / secs),
        mb_per_sec: round3(st.bytes as f64 / secs / 1e6),
        mean_ms: round3(mean_ms),
        p50_ms: round3(percentile(&st.lat_us, 50.0)),
        p90_ms: round3(percentile(&st.lat_us, 90.0)),
        p99_ms: round3(percentile(&st.lat_us, 99.0)),
        max_ms: round3(st.lat_us.last().copied().unwrap_or(0) as f64 / 1000.0),
        client_cpu_pct: pct(cpu0, cpu1),
        server_cpu_pct: pct(scpu0, scpu1),
        first_error: st.first_error.clone(),
    };
    if o.json {
        println!("{}", serde_json::to_string(&r)?);
    } else {
        let what = match scenario {
            Scenario::ImagePush => format!("{}x{}", r.layers.unwrap_or(0), r.size_human),
            Scenario::ManifestGet | Scenario::ManifestPut => "manifest".to_string(),
            _ => r.size_human.clone(),
        };
        let mut line = format!(
            "{:<12} {:>10} c={:<3} ops={:<7} err={:<4} {:>9.1} ops/s {:>8.1} MB/s  p50={:.2}ms p99={:.2}ms max={:.2}ms  ({:.1}s",
            r.scenario, what, r.concurrency, r.ops, r.errors, r.ops_per_sec, r.mb_per_sec,
            r.p50_ms, r.p99_ms, r.max_ms, r.duration_s
        );
        if let Some(c) = r.client_cpu_pct {
            line += &format!(", client cpu {c:.0}%");
        }
        if let Some(c) = r.server_cpu_pct {
            line += &format!(", server cpu {c:.0}%");
        }
        line += ")";
        println!("{line}");
    }
    if st.ops == 0 && st.errors > 0 {
        bail!("every op failed: {}", st.first_error.unwrap_or_default());
    }
    Ok(())
}

fn round3(x: f64) -> f64 {
    if x.is_finite() {
        (x * 1000.0).round() / 1000.0
    } else {
        0.0
    }
}

// ---------------------------------------------------------------- report

fn row_key(r: &BenchResult) -> String {
    let clients = if r.concurrency == 1 {
        "1 client".to_string()
    } else {
        format!("{} clients", r.concurrency)
    };
    match r.scenario.as_str() {
        "image-push" => format!(
            "{} ({}×{}) × {}",
            r.scenario,
            r.layers.unwrap_or(0),
            r.size_human,
            clients
        ),
        "manifest-get" | "manifest-put" => format!("{} × {}", r.scenario, clients),
        _ => format!("{} {} × {}", r.scenario, r.size_human, clients),
    }
}

fn fmt_tp(r: &BenchResult) -> String {
    let mut s = if r.scenario.starts_with("manifest-") {
        format!("{:.1} ops/s", r.ops_per_sec)
    } else {
        format!("{:.1} ops/s, {:.1} MB/s", r.ops_per_sec, r.mb_per_sec)
    };
    if r.errors > 0 {
        s += &format!(" ({} err)", r.errors);
    }
    s
}

fn report(args: &ReportArgs) -> Result<()> {
    let mut names = Vec::new();
    let mut order: Vec<String> = Vec::new();
    let mut data: BTreeMap<(usize, String), BenchResult> = BTreeMap::new();
    for (ti, t) in args.targets.iter().enumerate() {
        let (name, path) = t
            .split_once('=')
            .ok_or_else(|| anyhow!("--target wants NAME=FILE, got {t:?}"))?;
        names.push(name.to_string());
        let path = PathBuf::from(path);
        let text = std::fs::read_to_string(&path)
            .with_context(|| format!("reading {}", path.display()))?;
        for line in text.lines().filter(|l| l.trim_start().starts_with('{')) {
            let r: BenchResult = serde_json::from_str(line)
                .with_context(|| format!("parsing a line of {}", path.display()))?;
            let k = row_key(&r);
            if !order.contains(&k) {
                order.push(k.clone());
            }
            data.insert((ti, k), r);
        }
    }
    let mut out = String::new();
    out += "| scenario |";
    for n in &names {
        out += &format!(" {n} throughput | {n} p50 / p99 (ms) |");
    }
    // Each target after the first against the first (the baseline).
    for n in names.iter().skip(1) {
        out += &format!(" {n} / {} |", names[0]);
    }
    out += "\n|---|";
    for _ in &names {
        out += "---:|---:|";
    }
    for _ in names.iter().skip(1) {
        out += "---:|";
    }
    out += "\n";
    for k in &order {
        out += &format!("| {k} |");
        for ti in 0..names.len() {
            match data.get(&(ti, k.clone())) {
                Some(r) => out += &format!(" {} | {:.2} / {:.2} |", fmt_tp(r), r.p50_ms, r.p99_ms),
                None => out += " — | — |",
            }
        }
        for ti in 1..names.len() {
            match (data.get(&(0, k.clone())), data.get(&(ti, k.clone()))) {
                (Some(a), Some(b)) if a.ops_per_sec > 0.0 => {
                    out += &format!(" {:.2}× |", b.ops_per_sec / a.ops_per_sec)
                }
                _ => out += " — |",
            }
        }
        out += "\n";
    }
    // CPU table, when measured.
    let has_cpu = data
        .values()
        .any(|r| r.client_cpu_pct.is_some() || r.server_cpu_pct.is_some());
    if has_cpu {
        out += "\nCPU during the measurement (% of one core; 200% = both cores):\n\n| scenario |";
        for n in &names {
            out += &format!(" {n} server CPU | {n} client CPU |");
        }
        out += "\n|---|";
        for _ in &names {
            out += "---:|---:|";
        }
        out += "\n";
        let f = |x: Option<f64>| x.map(|v| format!("{v:.0}%")).unwrap_or_else(|| "—".into());
        for k in &order {
            out += &format!("| {k} |");
            for ti in 0..names.len() {
                match data.get(&(ti, k.clone())) {
                    Some(r) => {
                        out += &format!(" {} | {} |", f(r.server_cpu_pct), f(r.client_cpu_pct))
                    }
                    None => out += " — | — |",
                }
            }
            out += "\n";
        }
    }
    print!("{out}");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!(parse_size("64MiB").unwrap(), 64 << 20);
        assert_eq!(parse_size("1MiB").unwrap(), 1 << 20);
        assert_eq!(parse_size("256MiB").unwrap(), 256 << 20);
        assert_eq!(parse_size("64KiB").unwrap(), 64 << 10);
        assert_eq!(parse_size("10MB").unwrap(), 10_000_000);
        assert_eq!(parse_size("512").unwrap(), 512);
        assert_eq!(parse_size("1.5k").unwrap(), 1536);
        assert!(parse_size("3 parsecs").is_err());
        assert_eq!(human_size(64 << 20), "64MiB");
        assert_eq!(human_size(100), "100B");
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("10s").unwrap(), Duration::from_secs(10));
        assert_eq!(parse_duration("10").unwrap(), Duration::from_secs(10));
        assert_eq!(parse_duration("250ms").unwrap(), Duration::from_millis(250));
        assert_eq!(parse_duration("2m").unwrap(), Duration::from_secs(120));
    }

    #[test]
    fn payload_digest_matches_content() {
        for size in [0usize, 5, 32, 33, 4096, 100_000] {
            let p = Payload::new(size);
            let mut w = WorkerState {
                id: 3,
                run_id: 7,
                counter: 0,
                rng: SmallRng::seed_from_u64(1),
            };
            let (c1, d1) = p.make(&mut w);
            let (c2, d2) = p.make(&mut w);
            let b1: Vec<u8> = c1.iter().flat_map(|c| c.iter().copied()).collect();
            let b2: Vec<u8> = c2.iter().flat_map(|c| c.iter().copied()).collect();
            assert_eq!(b1.len(), size);
            assert_eq!(sha256_digest(&b1), d1);
            assert_eq!(sha256_digest(&b2), d2);
            if size > 0 {
                assert_ne!(d1, d2);
            }
        }
    }

    #[test]
    fn percentiles() {
        let v: Vec<u64> = (1..=100).map(|x| x * 1000).collect();
        assert_eq!(percentile(&v, 50.0), 50.0);
        assert_eq!(percentile(&v, 99.0), 99.0);
        assert_eq!(percentile(&v, 100.0), 100.0);
    }
}

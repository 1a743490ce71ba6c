//! One-shot measurements across regions (`meridian-bench geo …`), driven by
//! `benches/replication.sh`:
//!
//! * `visibility` — PUT a new small manifest at `--url` (region A), then GET it by digest
//!   at `--peer-url` (region B) until it answers 200; the lag is the time from A's `201`
//!   to B's first `200`. Repeated `--ops` times, one at a time.
//! * `push-image` — push one image (`--layers` unique layers of `--size`, a config, an
//!   OCI manifest) under `--tag`.
//! * `pull-image` — pull an image by `--tag` the way docker does: the manifest, then the
//!   config and every layer at once, each hashed and checked against its digest.
//!
//! Each prints one JSON object.

use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use clap::Subcommand;
use rand::rngs::SmallRng;
use rand::SeedableRng;
use reqwest::header::ACCEPT;
use reqwest::StatusCode;
use serde::Serialize;

use super::{
    check_reachable, err_status, http_client, parse_duration, parse_size, percentile, round3, sha256_digest, Ctx,
    Opts, Scenario, WorkerState, OCI_MANIFEST,
};

#[derive(Subcommand, Debug)]
pub enum GeoCmd {
    /// Visibility lag: PUT a manifest at --url, poll GET by digest at --peer-url until 200.
    Visibility {
        /// The region where the manifest must become visible.
        #[arg(long)]
        peer_url: String,
        /// Give up on one manifest after this long (counts as an error).
        #[arg(long, default_value = "30s")]
        give_up: String,
    },
    /// Push one image of --layers layers of --size under --tag.
    PushImage {
        #[arg(long)]
        tag: String,
    },
    /// Pull the image under --tag: manifest, then all blobs concurrently, verified.
    PullImage {
        #[arg(long)]
        tag: String,
    },
}

#[derive(Serialize)]
struct VisibilityResult {
    scenario: &'static str,
    label: Option<String>,
    url: String,
    peer_url: String,
    ops: usize,
    errors: usize,
    /// `404 MANIFEST_UNKNOWN` answers at --peer-url for manifests already acknowledged.
    misses: usize,
    /// Manifest PUT at --url, sent → 201.
    put_p50_ms: f64,
    /// 201 at --url → first 200 at --peer-url.
    lag_p50_ms: f64,
    lag_p90_ms: f64,
    lag_p99_ms: f64,
    lag_max_ms: f64,
    first_error: Option<String>,
}

#[derive(Serialize)]
struct ImageResult {
    scenario: &'static str,
    label: Option<String>,
    url: String,
    repo: String,
    tag: String,
    manifest_digest: String,
    blobs: usize,
    bytes: u64,
    seconds: f64,
    mb_per_sec: f64,
}

pub async fn run(cmd: &GeoCmd, o: &Opts) -> Result<()> {
    let timeout = parse_duration(&o.timeout)?;
    let base = o.url.trim_end_matches('/').to_string();
    let client = http_client(o.layers.max(1), timeout, o.authorization.as_deref())?;
    check_reachable(&client, &base).await?;
    let repo = o.repo.clone().unwrap_or_else(|| "bench/geo".to_string());
    // Visibility's manifests reference one tiny layer: large blobs replicating in the
    // background would only take bandwidth from what is measured next.
    let size = match cmd {
        GeoCmd::Visibility { .. } => 1024,
        _ => parse_size(o.size.as_deref().unwrap_or("64MiB"))?,
    };
    let mut ctx = Ctx::new(Scenario::ManifestPut, client.clone(), base.clone(), repo.clone(), size, o)?;
    let run_id: u64 = rand::random();
    let mut w = WorkerState { id: 0, run_id, counter: 0, rng: SmallRng::seed_from_u64(run_id) };
    let line = match cmd {
        GeoCmd::Visibility { peer_url, give_up } => {
            let peer = peer_url.trim_end_matches('/').to_string();
            check_reachable(&client, &peer).await?;
            ctx.setup_manifest_put(&mut w).await.context("setup: uploading the manifest's blobs")?;
            let give_up = parse_duration(give_up)?;
            let r = visibility(&ctx, &mut w, &peer, o.ops.unwrap_or(50) as usize, give_up, o.label.clone()).await?;
            serde_json::to_string(&r)?
        }
        GeoCmd::PushImage { tag } => {
            let start = Instant::now();
            let (bytes, digest) = ctx.push_image(&mut w, tag).await.context("pushing the image")?;
            let secs = start.elapsed().as_secs_f64();
            serde_json::to_string(&ImageResult {
                scenario: "push-image",
                label: o.label.clone(),
                url: base,
                repo,
                tag: tag.clone(),
                manifest_digest: digest,
                blobs: o.layers + 1,
                bytes,
                seconds: round3(secs),
                mb_per_sec: round3(bytes as f64 / secs / 1e6),
            })?
        }
        GeoCmd::PullImage { tag } => {
            ctx.verify = true;
            let r = pull_image(&ctx, tag, o.label.clone()).await?;
            serde_json::to_string(&r)?
        }
    };
    println!("{line}");
    Ok(())
}

async fn visibility(
    ctx: &Ctx,
    w: &mut WorkerState,
    peer: &str,
    ops: usize,
    give_up: Duration,
    label: Option<String>,
) -> Result<VisibilityResult> {
    let mut put_us = Vec::with_capacity(ops);
    let mut lag_us = Vec::with_capacity(ops);
    let mut errors = 0;
    let mut misses = 0;
    let mut first_error = None;
    for i in 0..ops {
        let manifest = ctx.small_manifest(w)?;
        let digest = sha256_digest(&manifest);
        let sent = Instant::now();
        ctx.send_manifest(&format!("vis-{:x}-{i}", w.run_id), manifest).await?;
        let acked = Instant::now();
        put_us.push((acked - sent).as_micros() as u64);
        let url = format!("{peer}/v2/{}/manifests/{digest}", ctx.repo);
        loop {
            let resp = ctx.client.get(&url).header(ACCEPT, OCI_MANIFEST).send().await;
            match resp {
                Ok(r) if r.status() == StatusCode::OK => {
                    lag_us.push(acked.elapsed().as_micros() as u64);
                    let _ = r.bytes().await;
                    break;
                }
                Ok(r) if r.status() == StatusCode::NOT_FOUND => {
                    misses += 1;
                    let _ = r.bytes().await;
                }
                Ok(r) => {
                    errors += 1;
                    first_error.get_or_insert(err_status("GET manifest at the peer", r).await.to_string());
                    break;
                }
                Err(e) => {
                    errors += 1;
                    first_error.get_or_insert(format!("GET manifest at the peer: {e}"));
                    break;
                }
            }
            if acked.elapsed() > give_up {
                errors += 1;
                first_error.get_or_insert(format!("{digest} not visible at {peer} after {give_up:?}"));
                break;
            }
            // Poll every millisecond: fine enough for lags of tens of ms, and a loopback
            // 404 costs the peer little.
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    }
    put_us.sort_unstable();
    lag_us.sort_unstable();
    if lag_us.is_empty() {
        bail!("no manifest became visible: {}", first_error.unwrap_or_default());
    }
    Ok(VisibilityResult {
        scenario: "visibility",
        label,
        url: ctx.base.clone(),
        peer_url: peer.to_string(),
        ops: lag_us.len(),
        errors,
        misses,
        put_p50_ms: round3(percentile(&put_us, 50.0)),
        lag_p50_ms: round3(percentile(&lag_us, 50.0)),
        lag_p90_ms: round3(percentile(&lag_us, 90.0)),
        lag_p99_ms: round3(percentile(&lag_us, 99.0)),
        lag_max_ms: round3(lag_us.last().copied().unwrap_or(0) as f64 / 1000.0),
        first_error,
    })
}

async fn pull_image(ctx: &Ctx, tag: &str, label: Option<String>) -> Result<ImageResult> {
    let start = Instant::now();
    let body = ctx.fetch_manifest(tag).await?;
    let manifest_digest = sha256_digest(&body);
    let manifest: serde_json::Value = serde_json::from_slice(&body).context("manifest is not JSON")?;
    let mut blobs: Vec<(String, u64)> = Vec::new();
    let descriptors = manifest["layers"].as_array().cloned().unwrap_or_default();
    for d in std::iter::once(&manifest["config"]).chain(descriptors.iter()) {
        let (Some(digest), Some(size)) = (d["digest"].as_str(), d["size"].as_u64()) else {
            bail!("manifest {manifest_digest} has a descriptor without digest or size: {d}");
        };
        blobs.push((digest.to_string(), size));
    }
    let pulls = blobs.iter().map(|(digest, size)| ctx.pull_blob_of_size(digest, *size));
    let sizes = futures::future::try_join_all(pulls).await?;
    let secs = start.elapsed().as_secs_f64();
    let bytes = sizes.iter().sum::<u64>() + body.len() as u64;
    Ok(ImageResult {
        scenario: "pull-image",
        label,
        url: ctx.base.clone(),
        repo: ctx.repo.clone(),
        tag: tag.to_string(),
        manifest_digest,
        blobs: blobs.len(),
        bytes,
        seconds: round3(secs),
        mb_per_sec: round3(bytes as f64 / secs / 1e6),
    })
}

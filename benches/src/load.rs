//! `meridian-load`: fills a stopped one-node Meridian region with a large synthetic state —
//! a million manifests in about a minute, where pushing them over the API takes twenty.
//!
//! Each manifest is an OCI image manifest with its own small config blob and one layer
//! from a shared pool, tagged once, spread over `--repos` repositories. The blob files are
//! written into the region's blob store and linked into their repositories as an upload
//! would; the manifests go through the state machine as the same `PutManifest` commands a
//! push proposes (see `meridian_node::meta::offline`). `--delete-every K` then deletes
//! every K-th manifest (as `DeleteManifest` commands), so their configs become garbage.
//!
//!   meridian serve --data-dir D …   # once, then stop it
//!   meridian-load --data-dir D --region local --manifests 1000000 --repos 1000 --delete-every 10

use anyhow::{bail, Context, Result};
use clap::Parser;
use meridian_node::blobs::FsBlobStore;
use meridian_node::meta::command::{BlobRef, Command, CommandResult, ImageShape, PutManifest};
use meridian_node::meta::offline::OfflineLoader;
use meridian_node::meta::records::LocalLink;
use meridian_node::meta::store::{repo_key, CF_LOCAL_BLOB_LINKS};
use meridian_replication::{Algorithm, Digest};
use std::path::PathBuf;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
const OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
const OCI_LAYER: &str = "application/vnd.oci.image.layer.v1.tar+gzip";
/// Commands applied per call (and blob links per write batch).
const BATCH: usize = 1000;

#[derive(Parser, Debug)]
#[command(name = "meridian-load", version, about = "Bulk-loads a stopped one-node Meridian region with synthetic images")]
struct Args {
    /// The region's data directory (the node must be stopped, and must have run once).
    #[arg(long)]
    data_dir: PathBuf,
    /// The region's name, as the node is configured (`region`).
    #[arg(long, default_value = "local")]
    region: String,
    #[arg(long, default_value_t = 1_000_000)]
    manifests: u64,
    /// Repositories the manifests are spread over (`load/r<n>`).
    #[arg(long, default_value_t = 1000)]
    repos: u64,
    /// Layers in the shared pool (1 KiB each); manifest i uses layer i mod this.
    #[arg(long, default_value_t = 1000)]
    layers: u64,
    /// Delete every K-th manifest after loading (0: none).
    #[arg(long, default_value_t = 0)]
    delete_every: u64,
    /// How long ago the pushes (and deletions) happened, in seconds.
    #[arg(long, default_value_t = 86_400)]
    age_secs: u64,
}

struct Image {
    repo: String,
    tag: String,
    manifest: Vec<u8>,
    config: Vec<u8>,
    layer: u64,
}

fn sha256(bytes: &[u8]) -> Digest {
    Digest::of_bytes(Algorithm::Sha256, bytes)
}

fn layer_bytes(n: u64) -> Vec<u8> {
    let seed = format!("meridian-load layer {n}\n");
    seed.as_bytes().iter().copied().cycle().take(1024).collect()
}

fn image(i: u64, repos: u64, layers: u64, layer_digests: &[Digest]) -> Image {
    let config = format!(r#"{{"architecture":"amd64","os":"linux","rootfs":{{"type":"layers","diff_ids":[]}},"config":{{"Labels":{{"n":"{i}"}}}}}}"#)
        .into_bytes();
    let layer = i % layers;
    let manifest = format!(
        r#"{{"schemaVersion":2,"mediaType":"{OCI_MANIFEST}","config":{{"mediaType":"{OCI_CONFIG}","digest":"{}","size":{}}},"layers":[{{"mediaType":"{OCI_LAYER}","digest":"{}","size":1024}}]}}"#,
        sha256(&config),
        config.len(),
        layer_digests[layer as usize],
    )
    .into_bytes();
    Image { repo: format!("load/r{}", i % repos), tag: format!("v{}", i / repos), manifest, config, layer }
}

fn write_blob(blobs: &FsBlobStore, digest: &Digest, bytes: &[u8]) -> Result<()> {
    let path = blobs.blob_path(digest);
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    std::fs::write(&path, bytes).with_context(|| format!("writing {}", path.display()))
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<()> {
    let args = Args::parse();
    if args.repos == 0 || args.layers == 0 {
        bail!("--repos and --layers must be at least 1");
    }
    let started = Instant::now();
    let now = SystemTime::now().duration_since(UNIX_EPOCH)?.as_secs();
    let at_unix = now.saturating_sub(args.age_secs);
    let blobs = FsBlobStore::open(&args.data_dir).context("opening the blob store")?;
    let mut loader = OfflineLoader::open(&args.data_dir, &args.region).await?;

    let layer_digests: Vec<Digest> = (0..args.layers).map(|n| sha256(&layer_bytes(n))).collect();
    for (n, digest) in layer_digests.iter().enumerate() {
        write_blob(&blobs, digest, &layer_bytes(n as u64))?;
    }
    // A repository's link to a pool layer is written once.
    let mut linked_layers = std::collections::HashSet::new();

    let mut deleted = Vec::new();
    let mut i = 0;
    while i < args.manifests {
        let end = (i + BATCH as u64).min(args.manifests);
        let mut commands = Vec::with_capacity(BATCH);
        let mut links = rocksdb::WriteBatch::default();
        let links_cf = loader.store().cf(CF_LOCAL_BLOB_LINKS)?;
        for n in i..end {
            let img = image(n, args.repos, args.layers, &layer_digests);
            let config = sha256(&img.config);
            let layer = layer_digests[img.layer as usize].clone();
            write_blob(&blobs, &config, &img.config)?;
            links.put_cf(links_cf, repo_key(&img.repo, &config.to_string()), LocalLink { size: img.config.len() as u64, linked_unix: at_unix }.encode());
            if linked_layers.insert((n % args.repos, img.layer)) {
                links.put_cf(links_cf, repo_key(&img.repo, &layer.to_string()), LocalLink { size: 1024, linked_unix: at_unix }.encode());
            }
            let digest = sha256(&img.manifest);
            if args.delete_every > 0 && n % args.delete_every == 0 {
                deleted.push((img.repo.clone(), digest.clone()));
            }
            commands.push(Command::PutManifest(PutManifest {
                repo: img.repo,
                digest,
                media_type: OCI_MANIFEST.to_string(),
                body: String::from_utf8(img.manifest)?,
                tags: vec![img.tag],
                blobs: vec![
                    BlobRef { digest: config, size: img.config.len() as u64, held_here: true },
                    BlobRef { digest: layer.clone(), size: 1024, held_here: true },
                ],
                children: Vec::new(),
                referrer: None,
                region: args.region.clone(),
                at_unix,
                origin: None,
                // As a push of an image would: linked to its base by its layer.
                image: Some(ImageShape { layers: vec![layer.clone()], ..ImageShape::default() }),
            }));
        }
        loader.store().write(links)?;
        check(loader.apply(commands).await?, "PutManifest")?;
        i = end;
        if i % 100_000 == 0 {
            eprintln!("{i} manifests ({:.0} s)", started.elapsed().as_secs_f64());
        }
    }
    for chunk in deleted.chunks(BATCH) {
        let commands = chunk
            .iter()
            .map(|(repo, digest)| Command::DeleteManifest {
                repo: repo.clone(),
                digest: digest.clone(),
                at_unix,
                trash_until: None,
                only_if_untagged: false,
                origin: None,
            })
            .collect();
        check(loader.apply(commands).await?, "DeleteManifest")?;
    }
    loader.finish()?;
    println!(
        "{{\"manifests\":{},\"repos\":{},\"layers\":{},\"deleted\":{},\"seconds\":{:.1}}}",
        args.manifests,
        args.repos,
        args.layers,
        deleted.len(),
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

fn check(results: Vec<CommandResult>, what: &str) -> Result<()> {
    if let Some(bad) = results.iter().find(|r| !matches!(r, CommandResult::Applied)) {
        bail!("a {what} was not applied: {bad:?}");
    }
    Ok(())
}

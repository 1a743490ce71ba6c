//! `meridian-bench machine`: what this machine can do for one big push, measured the way
//! the store does it, so a push can be reported as a fraction of it. Two figures:
//!
//! * SHA-256 on one core: the upload hasher (`meridian_replication`'s, the node's own)
//!   over an in-memory buffer of `--size` bytes, fed in body-sized slices.
//! * Sequential writes to `--dir`: `meridian_node::blobs::BlobFile`, the file an upload
//!   writes through (direct I/O in aligned blocks where the filesystem allows it, the
//!   unaligned tail through the page cache), ended with the same fdatasync.
//!
//! Each is run `--rounds` times; the JSON line carries every round and the median.

use anyhow::{Context, Result};
use clap::Args;
use meridian_node::blobs::BlobFile;
use meridian_replication::Algorithm;
use rand::rngs::SmallRng;
use rand::{RngCore, SeedableRng};
use std::path::PathBuf;
use std::time::Instant;

/// Slice handed to the hasher and the file at a time: about what an HTTP body yields.
const SLICE: usize = 64 << 10;

#[derive(Args, Debug)]
pub struct MachineArgs {
    /// Directory on the filesystem the node stores blobs on (a scratch file is written there).
    #[arg(long)]
    dir: PathBuf,
    /// Bytes hashed and written per round (e.g. 256MiB).
    #[arg(long, default_value = "256MiB")]
    size: String,
    #[arg(long, default_value_t = 3)]
    rounds: usize,
    /// Label carried into the JSON line.
    #[arg(long)]
    label: Option<String>,
}

#[derive(serde::Serialize)]
struct MachineResult {
    scenario: &'static str,
    label: Option<String>,
    size: u64,
    sha256_mb_per_sec: f64,
    write_mb_per_sec: f64,
    sha256_rounds: Vec<f64>,
    write_rounds: Vec<f64>,
}

pub fn run(args: &MachineArgs) -> Result<()> {
    let size = crate::parse_size(&args.size)? as usize;
    let mut data = vec![0u8; size];
    SmallRng::from_os_rng().fill_bytes(&mut data);
    std::fs::create_dir_all(&args.dir).with_context(|| format!("create {}", args.dir.display()))?;
    let path = args.dir.join(format!("machine-baseline-{}", std::process::id()));

    let mut sha = Vec::new();
    let mut write = Vec::new();
    for _ in 0..args.rounds.max(1) {
        let start = Instant::now();
        let mut hasher = Algorithm::Sha256.hasher();
        for slice in data.chunks(SLICE) {
            hasher.update(slice);
        }
        std::hint::black_box(hasher.finish());
        sha.push(mb_per_sec(size, start));

        let _ = std::fs::remove_file(&path);
        let start = Instant::now();
        let mut file = BlobFile::open(&path, Some(size as u64)).context("open the scratch file")?;
        for slice in data.chunks(SLICE) {
            file.write_all(slice)?;
        }
        file.finish(true)?;
        write.push(mb_per_sec(size, start));
        std::fs::remove_file(&path)?;
    }
    let result = MachineResult {
        scenario: "machine",
        label: args.label.clone(),
        size: size as u64,
        sha256_mb_per_sec: median(&sha),
        write_mb_per_sec: median(&write),
        sha256_rounds: sha,
        write_rounds: write,
    };
    println!("{}", serde_json::to_string(&result)?);
    Ok(())
}

fn mb_per_sec(bytes: usize, since: Instant) -> f64 {
    let mb = bytes as f64 / 1e6 / since.elapsed().as_secs_f64();
    (mb * 10.0).round() / 10.0
}

fn median(v: &[f64]) -> f64 {
    let mut s = v.to_vec();
    s.sort_by(|a, b| a.total_cmp(b));
    s[s.len() / 2]
}

//! Usage metering: what each repository and region costs. One door, [`UsageRecorder`]:
//! the registry notes pushes and pulls, the replicator notes copies landed from other
//! regions, all in memory; every `usage.record_secs` the region sends the sums as one
//! `RecordUsage` entry, so every node answers `meridian admin usage` for the whole
//! cluster from its own state. The queries are in [`report`].

pub mod report;

use crate::meta::command::{proposer_clock, Command};
use crate::meta::usage::{Replicated, Traffic};
use crate::meta::Meta;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

#[derive(Default)]
struct Pending {
    repos: HashMap<String, Traffic>,
    /// source region → (bytes, blobs) landed here.
    replicated: HashMap<String, (u64, u64)>,
}

pub struct UsageRecorder {
    region: String,
    /// How long hourly buckets are kept (`usage.keep_days`).
    keep: Duration,
    pending: Mutex<Pending>,
}

impl UsageRecorder {
    pub fn new(region: String, keep: Duration) -> UsageRecorder {
        UsageRecorder { region, keep, pending: Mutex::default() }
    }

    fn with<T>(&self, f: impl FnOnce(&mut Pending) -> T) -> T {
        f(&mut self.pending.lock().unwrap_or_else(|p| p.into_inner()))
    }

    fn repo(&self, repo: &str, f: impl FnOnce(&mut Traffic)) {
        self.with(|p| match p.repos.get_mut(repo) {
            Some(t) => f(t),
            None => f(p.repos.entry(repo.to_string()).or_default()),
        })
    }

    /// A blob upload committed (`manifest` false) or a manifest accepted.
    pub fn pushed(&self, repo: &str, bytes: u64, manifest: bool) {
        self.repo(repo, |t| {
            t.pushed_bytes += bytes;
            t.pushed_count += manifest as u64;
        });
    }

    /// Bytes served to a client: a blob (or a range of one), or a manifest.
    pub fn pulled(&self, repo: &str, bytes: u64, manifest: bool) {
        self.repo(repo, |t| {
            t.pulled_bytes += bytes;
            t.pulled_count += manifest as u64;
        });
    }

    /// A verified copy of `bytes` landed here from `from`.
    pub fn replicated(&self, from: &str, bytes: u64) {
        self.with(|p| {
            let e = p.replicated.entry(from.to_string()).or_default();
            e.0 += bytes;
            e.1 += 1;
        });
    }

    /// Sends what was noted since the last batch; what cannot be sent is noted again.
    pub async fn flush(&self, meta: &Meta) {
        let pending = self.with(std::mem::take);
        if pending.repos.is_empty() && pending.replicated.is_empty() {
            return;
        }
        let at_unix = proposer_clock();
        let mut repos: Vec<(String, Traffic)> = pending.repos.iter().map(|(r, t)| (r.clone(), *t)).collect();
        repos.sort_by(|a, b| a.0.cmp(&b.0));
        let mut replicated: Vec<Replicated> =
            pending.replicated.iter().map(|(from, (bytes, blobs))| Replicated { from: from.clone(), bytes: *bytes, blobs: *blobs }).collect();
        replicated.sort_by(|a, b| a.from.cmp(&b.from));
        let cmd = Command::RecordUsage {
            region: self.region.clone(),
            at_unix,
            keep_from_unix: at_unix.saturating_sub(self.keep.as_secs()),
            repos,
            replicated,
        };
        if let Err(e) = meta.propose(cmd).await {
            tracing::debug!(error = %e, "usage not recorded; kept for the next batch");
            self.with(|p| {
                for (repo, t) in pending.repos {
                    p.repos.entry(repo).or_default().add(&t);
                }
                for (from, (bytes, blobs)) in pending.replicated {
                    let e = p.replicated.entry(from).or_default();
                    e.0 += bytes;
                    e.1 += blobs;
                }
            });
        }
    }
}

/// Named background task: sends this region's usage every `every` (what was noted after
/// the last batch before a stop is not counted).
pub async fn run_usage_recorder(recorder: Arc<UsageRecorder>, meta: Meta, every: Duration, mut shutdown: tokio::sync::watch::Receiver<bool>) {
    loop {
        tokio::select! {
            _ = tokio::time::sleep(every) => recorder.flush(&meta).await,
            _ = shutdown.changed() => return,
        }
    }
}

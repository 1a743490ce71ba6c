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
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

/// One repository's counters since the last batch. Atomics, so the hot path (a pull of a
/// repository already counted) takes only the shared read lock of the map.
#[derive(Default)]
struct Counters {
    pushed_bytes: AtomicU64,
    pushed_count: AtomicU64,
    pulled_bytes: AtomicU64,
    pulled_count: AtomicU64,
}

impl Counters {
    /// The counts so far, zeroing them.
    fn take(&self) -> Traffic {
        Traffic {
            pushed_bytes: self.pushed_bytes.swap(0, Relaxed),
            pushed_count: self.pushed_count.swap(0, Relaxed),
            pulled_bytes: self.pulled_bytes.swap(0, Relaxed),
            pulled_count: self.pulled_count.swap(0, Relaxed),
        }
    }

    fn add(&self, t: &Traffic) {
        self.pushed_bytes.fetch_add(t.pushed_bytes, Relaxed);
        self.pushed_count.fetch_add(t.pushed_count, Relaxed);
        self.pulled_bytes.fetch_add(t.pulled_bytes, Relaxed);
        self.pulled_count.fetch_add(t.pulled_count, Relaxed);
    }
}

#[derive(Default)]
struct Pending {
    /// source region → (bytes, blobs) landed here.
    replicated: HashMap<String, (u64, u64)>,
}

pub struct UsageRecorder {
    region: String,
    /// How long hourly buckets are kept (`usage.keep_days`).
    keep: Duration,
    /// Repositories seen since the node started (a handful of counters each; an idle
    /// repository's stay zero and are skipped in a batch).
    repos: RwLock<HashMap<String, Arc<Counters>>>,
    pending: Mutex<Pending>,
}

impl UsageRecorder {
    pub fn new(region: String, keep: Duration) -> UsageRecorder {
        UsageRecorder { region, keep, repos: RwLock::default(), pending: Mutex::default() }
    }

    fn with<T>(&self, f: impl FnOnce(&mut Pending) -> T) -> T {
        f(&mut self.pending.lock().unwrap_or_else(|p| p.into_inner()))
    }

    fn counters(&self, repo: &str) -> Arc<Counters> {
        if let Some(c) = self.repos.read().unwrap_or_else(|p| p.into_inner()).get(repo) {
            return c.clone();
        }
        self.repos.write().unwrap_or_else(|p| p.into_inner()).entry(repo.to_string()).or_default().clone()
    }

    /// A blob upload committed (`manifest` false) or a manifest accepted.
    pub fn pushed(&self, repo: &str, bytes: u64, manifest: bool) {
        self.counters(repo).add(&Traffic { pushed_bytes: bytes, pushed_count: manifest as u64, ..Default::default() });
    }

    /// Bytes served to a client: a blob (or a range of one), or a manifest.
    pub fn pulled(&self, repo: &str, bytes: u64, manifest: bool) {
        self.counters(repo).add(&Traffic { pulled_bytes: bytes, pulled_count: manifest as u64, ..Default::default() });
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
        let mut repos: Vec<(String, Traffic)> = self
            .repos
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .map(|(r, c)| (r.clone(), c.take()))
            .filter(|(_, t)| *t != Traffic::default())
            .collect();
        if repos.is_empty() && pending.replicated.is_empty() {
            return;
        }
        let at_unix = proposer_clock();
        repos.sort_by(|a, b| a.0.cmp(&b.0));
        let mut replicated: Vec<Replicated> =
            pending.replicated.iter().map(|(from, (bytes, blobs))| Replicated { from: from.clone(), bytes: *bytes, blobs: *blobs }).collect();
        replicated.sort_by(|a, b| a.from.cmp(&b.from));
        let cmd = Command::RecordUsage {
            region: self.region.clone(),
            at_unix,
            keep_from_unix: at_unix.saturating_sub(self.keep.as_secs()),
            repos: repos.clone(),
            replicated,
        };
        if let Err(e) = meta.propose(cmd).await {
            tracing::debug!(error = %e, "usage not recorded; kept for the next batch");
            for (repo, t) in &repos {
                self.counters(repo).add(t);
            }
            self.with(|p| {
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

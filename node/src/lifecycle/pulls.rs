//! Pull times for `--keep-pulled-within`, at no cost per pull: a manifest GET notes
//! (repository, digest) in memory; every `retention.pull_record_secs` the region sends
//! what it noted as one `RecordPulls` entry. A pull served twice in an interval is one
//! note, so the log grows with the distinct manifests pulled, not with the pulls.

use crate::meta::command::{proposer_clock, Command};
use crate::meta::Meta;
use meridian_replication::Digest;
use std::collections::{HashMap, HashSet};
use std::sync::{Arc, RwLock};
use std::time::Duration;

/// Notes kept between batches at most; past it, pulls of further manifests wait for the
/// next interval (they are pulled again, or not worth a policy's attention).
const MAX_PENDING: usize = 100_000;
/// Pulls per entry: entries stay well under a megabyte.
const PER_ENTRY: usize = 5_000;

#[derive(Default)]
pub struct PullRecorder {
    /// repository → digests pulled since the last batch. A manifest pulled again in the
    /// same interval (the common case) takes only the shared read lock, no allocation.
    pending: RwLock<HashMap<String, HashSet<Digest>>>,
}

impl PullRecorder {
    /// Notes a manifest served to a client.
    pub fn record(&self, repo: &str, digest: &Digest) {
        {
            let pending = self.pending.read().unwrap_or_else(|p| p.into_inner());
            if pending.get(repo).is_some_and(|seen| seen.contains(digest)) {
                return;
            }
        }
        let mut pending = self.pending.write().unwrap_or_else(|p| p.into_inner());
        let total: usize = pending.values().map(HashSet::len).sum();
        if total < MAX_PENDING {
            pending.entry(repo.to_string()).or_default().insert(digest.clone());
        }
    }

    fn take(&self) -> Vec<(String, Digest)> {
        let pending = std::mem::take(&mut *self.pending.write().unwrap_or_else(|p| p.into_inner()));
        pending.into_iter().flat_map(|(repo, digests)| digests.into_iter().map(move |d| (repo.clone(), d))).collect()
    }

    /// Sends what was noted since the last batch; what cannot be sent is noted again.
    pub async fn flush(&self, meta: &Meta) {
        let pulls = self.take();
        for chunk in pulls.chunks(PER_ENTRY) {
            let cmd = Command::RecordPulls { at_unix: proposer_clock(), pulls: chunk.to_vec() };
            if let Err(e) = meta.propose(cmd).await {
                tracing::debug!(error = %e, "pull times not recorded; kept for the next batch");
                for (repo, digest) in chunk {
                    self.record(repo, digest);
                }
            }
        }
    }
}

/// Named background task: sends this region's pulls every `every`.
pub async fn run_pull_recorder(recorder: Arc<PullRecorder>, meta: Meta, every: Duration, mut shutdown: tokio::sync::watch::Receiver<bool>) {
    loop {
        tokio::select! {
            _ = tokio::time::sleep(every) => recorder.flush(&meta).await,
            _ = shutdown.changed() => return,
        }
    }
}

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
    /// What was pulled since the last batch. A manifest pulled again in the same interval
    /// (the common case), or any pull once the batch is full, takes only the shared read
    /// lock: no allocation, no waiting behind other pulls.
    pending: RwLock<Pending>,
}

#[derive(Default)]
struct Pending {
    /// repository → digests pulled since the last batch.
    by_repo: HashMap<String, HashSet<Digest>>,
    /// Notes in `by_repo`, kept alongside so the cap costs nothing to check: summing the
    /// sets on every new note took the write lock for a walk over every repository pulled,
    /// which on a registry of many repositories was a fifth of a manifest GET's CPU.
    notes: usize,
}

impl Pending {
    fn has(&self, repo: &str, digest: &Digest) -> bool {
        self.by_repo.get(repo).is_some_and(|seen| seen.contains(digest))
    }
}

impl PullRecorder {
    /// Notes a manifest served to a client.
    pub fn record(&self, repo: &str, digest: &Digest) {
        {
            let pending = self.pending.read().unwrap_or_else(|p| p.into_inner());
            if pending.notes >= MAX_PENDING || pending.has(repo, digest) {
                return;
            }
        }
        let mut pending = self.pending.write().unwrap_or_else(|p| p.into_inner());
        if pending.notes >= MAX_PENDING {
            return;
        }
        let added = match pending.by_repo.get_mut(repo) {
            Some(seen) => seen.insert(digest.clone()),
            None => pending.by_repo.insert(repo.to_string(), HashSet::from([digest.clone()])).is_none(),
        };
        if added {
            pending.notes += 1;
        }
    }

    fn take(&self) -> Vec<(String, Digest)> {
        let pending = std::mem::take(&mut *self.pending.write().unwrap_or_else(|p| p.into_inner()));
        pending.by_repo.into_iter().flat_map(|(repo, digests)| digests.into_iter().map(move |d| (repo.clone(), d))).collect()
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

#[cfg(test)]
mod tests {
    use super::*;

    fn digest(i: usize) -> Digest {
        format!("sha256:{i:064x}").parse().expect("a valid digest")
    }

    #[test]
    fn a_pull_is_noted_once_per_interval_and_the_batch_is_capped() {
        let recorder = PullRecorder::default();
        recorder.record("a", &digest(1));
        recorder.record("a", &digest(1));
        recorder.record("b", &digest(1));
        assert_eq!(recorder.take().len(), 2);
        assert!(recorder.take().is_empty(), "taking empties the batch");

        for i in 0..MAX_PENDING + 10 {
            recorder.record(&format!("r{}", i % 1000), &digest(i));
        }
        // A pull of something already noted is still noted (no growth), a new one is not.
        recorder.record("r0", &digest(0));
        recorder.record("new", &digest(0));
        let taken = recorder.take();
        assert_eq!(taken.len(), MAX_PENDING);
        assert!(!taken.iter().any(|(repo, _)| repo == "new"));
        // The count starts again after a batch is taken.
        recorder.record("new", &digest(0));
        assert_eq!(recorder.take(), vec![("new".to_string(), digest(0))]);
    }
}

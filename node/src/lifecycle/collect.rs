//! The cluster-wide half of garbage collection: which blobs every region may forget.

use super::LifecycleError;
use crate::meta::command::{proposer_clock, Command, CommandResult};
use crate::meta::{Meta, Store};
use meridian_replication::Digest;
use std::time::Duration;

/// Digests per `CollectBlobs` entry: entries stay well under a megabyte.
const BATCH: usize = 1000;
/// How long the decision waits to catch up with the leader first (it is re-checked when
/// applied, so a stale view costs only a smaller collection).
const CATCH_UP: Duration = Duration::from_secs(5);

/// Candidates a run reports by name (all of them are counted): a dry run over a large
/// store must not answer with a message of millions of digests.
pub const LISTED: usize = 1000;

#[derive(Debug, Default)]
pub struct Collection {
    /// The first `LISTED` blobs unreferenced for longer than the grace when this node
    /// looked, in digest order.
    pub candidates: Vec<(Digest, u64)>,
    /// All of them, and their bytes.
    pub candidate_count: u64,
    pub candidate_bytes: u64,
    /// What the applied entries forgot (0 on a dry run).
    pub blobs: u64,
    pub bytes: u64,
}

pub async fn collect(meta: &Meta, store: &Store, grace_secs: u64, dry_run: bool) -> Result<Collection, LifecycleError> {
    // Best effort: a node that cannot reach the leader decides on what it has.
    let _ = meta.catch_up(CATCH_UP).await;
    let now = proposer_clock();
    let mut collection = Collection::default();
    // One page of candidates at a time, each proposed before the next is read: memory
    // holds one page, however many blobs the cluster knows.
    let mut after: Option<Digest> = None;
    loop {
        let page = store.collectable_blobs(now, grace_secs, after.as_ref(), BATCH)?;
        let Some((last, _)) = page.last() else { break };
        after = Some(last.clone());
        collection.candidate_count += page.len() as u64;
        collection.candidate_bytes += page.iter().map(|(_, size)| size).sum::<u64>();
        let room = LISTED.saturating_sub(collection.candidates.len());
        collection.candidates.extend(page.iter().take(room).cloned());
        if !dry_run {
            let digests = page.into_iter().map(|(d, _)| d).collect();
            if let CommandResult::Collected { blobs, bytes } =
                meta.propose(Command::CollectBlobs { digests, at_unix: now, grace_secs }).await?
            {
                collection.blobs += blobs;
                collection.bytes += bytes;
            }
        }
    }
    Ok(collection)
}

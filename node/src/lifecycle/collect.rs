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

#[derive(Debug, Default)]
pub struct Collection {
    /// Blobs unreferenced for longer than the grace when this node looked.
    pub candidates: Vec<(Digest, u64)>,
    /// What the applied entries forgot (0 on a dry run).
    pub blobs: u64,
    pub bytes: u64,
}

pub async fn collect(meta: &Meta, store: &Store, grace_secs: u64, dry_run: bool) -> Result<Collection, LifecycleError> {
    // Best effort: a node that cannot reach the leader decides on what it has.
    let _ = meta.catch_up(CATCH_UP).await;
    let now = proposer_clock();
    let candidates = store.collectable_blobs(now, grace_secs)?;
    let mut collection = Collection { candidates, blobs: 0, bytes: 0 };
    if dry_run {
        return Ok(collection);
    }
    for batch in collection.candidates.chunks(BATCH) {
        let digests = batch.iter().map(|(d, _)| d.clone()).collect();
        if let CommandResult::Collected { blobs, bytes } =
            meta.propose(Command::CollectBlobs { digests, at_unix: now, grace_secs }).await?
        {
            collection.blobs += blobs;
            collection.bytes += bytes;
        }
    }
    Ok(collection)
}

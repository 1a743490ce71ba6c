//! Fetching a blob from the regions that hold it: nearest first, resuming from the last
//! byte received when a source fails mid-stream, hashing every byte, and keeping nothing
//! that does not match the digest.

use crate::digest::Digest;
use crate::throttle::RegionThrottle;
use crate::yielding::{ClientFetches, MAX_YIELD};
use bytes::Bytes;
use futures::StreamExt;
use meridian_proto::replication::blob_transfer_client::BlobTransferClient;
use meridian_proto::replication::FetchBlobRequest;
use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use tonic::transport::Channel;

/// A node of a region that holds a verified copy, and how to reach it (a region with several
/// nodes is several holders; they serve one store, so a bad copy rules out the region).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Holder {
    pub region: String,
    pub grpc_addr: String,
}

/// Where fetched bytes go. `reset` discards everything written (after a digest mismatch
/// the transfer starts over from another source).
pub trait ChunkSink: Send {
    fn write(&mut self, data: Bytes) -> impl Future<Output = std::io::Result<()>> + Send;
    fn reset(&mut self) -> impl Future<Output = std::io::Result<()>> + Send;
    /// The fetch is alive but receives nothing for now (it stepped aside, or its source
    /// holds it back): a sink whose idle files get cleaned up marks them as in use.
    fn keep_fresh(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// How often a waiting fetch marks its sink as in use: well inside the shortest grace a
/// sweep of idle staging files is given.
const KEEP_FRESH_EVERY: std::time::Duration = std::time::Duration::from_millis(250);

#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    #[error("no region holding {0} could be reached")]
    NoSource(String),
    #[error("every copy of {digest} that was fetched hashed to something else (last from {region})")]
    DigestMismatch { digest: String, region: String },
    #[error("writing the fetched blob: {0}")]
    Sink(#[from] std::io::Error),
}

/// What a finished fetch did, for metrics and tests.
#[derive(Debug, Default, Clone)]
pub struct FetchReport {
    pub bytes: u64,
    /// Sources that streamed bytes, in order (more than one after a resume).
    pub sources: Vec<String>,
    /// Streams that broke and were resumed from an offset.
    pub resumes: u32,
    /// Times a background stream stepped aside for a client's fetch from its source (and
    /// asked again from the same byte once it ended).
    pub yields: u32,
    /// Copies discarded because they did not match the digest.
    pub mismatches: u32,
}

/// Whether a client waits for a fetch, as its source is told (`FetchBlobRequest.background`).
/// A background fetch a client joins is promoted: the caller tells the source so
/// (`PromoteFetch`), and any later request for the rest goes as a client's.
#[derive(Debug)]
pub struct FetchPriority {
    background: AtomicBool,
    /// This node's id, so a source can tell its fetches from other nodes'.
    requester: u64,
    /// Wakes the fetch when it is promoted (it asks again on a client's lane).
    promoted: tokio::sync::Notify,
}

impl FetchPriority {
    pub fn new(background: bool, requester: u64) -> FetchPriority {
        FetchPriority { background: AtomicBool::new(background), requester, promoted: tokio::sync::Notify::new() }
    }

    /// A client now waits for this fetch; `false` when one already did.
    pub fn promote(&self) -> bool {
        let promoted = self.background.swap(false, Ordering::Relaxed);
        if promoted {
            // Stores a permit when the fetch is not waiting right now.
            self.promoted.notify_one();
        }
        promoted
    }

    /// Resolves once a client waits for this fetch.
    async fn until_promoted(&self) {
        if self.is_background() {
            self.promoted.notified().await;
        }
    }

    pub fn is_background(&self) -> bool {
        self.background.load(Ordering::Relaxed)
    }
}

/// A source that sends nothing for this long is given up on (the transfer resumes from
/// the next holder at the same offset). HTTP/2 keepalive catches a dead connection, but
/// not a live one whose stream stopped moving (a stuck disk on the source, a proxy or
/// load balancer that lost the stream).
const STALL_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(15);

/// How one stream from a source ended.
enum StreamEnd {
    /// The source sent its last byte, stalled, broke, or sent too much: go on to the
    /// next holder (when bytes are still missing).
    Ended,
    /// A background stream stepped aside for a client's fetch from the same source.
    Yielded,
}

/// Fetches `digest` (of `size` bytes) into `sink`, trying `holders` in order. `channel`
/// gives the connection to a holder for a background fetch (`true`) or for one a client
/// waits for (`false`). A background fetch steps aside while `clients` has a client's
/// fetch in flight from its source, and goes on from the same byte afterwards.
#[allow(clippy::too_many_arguments)]
pub async fn fetch_verified<S: ChunkSink>(
    channel: &(dyn Fn(&str, bool) -> Result<Channel, tonic::Status> + Sync),
    holders: &[Holder],
    digest: &Digest,
    size: u64,
    priority: &FetchPriority,
    clients: &ClientFetches,
    throttle: &RegionThrottle,
    sink: &mut S,
) -> Result<FetchReport, FetchError> {
    let mut report = FetchReport::default();
    // Sources excluded after serving bytes of a copy that failed verification.
    let mut suspects: Vec<String> = Vec::new();
    loop {
        let candidates: Vec<&Holder> = holders.iter().filter(|h| !suspects.contains(&h.region)).collect();
        if candidates.is_empty() {
            return Err(match report.mismatches {
                0 => FetchError::NoSource(digest.to_string()),
                _ => FetchError::DigestMismatch {
                    digest: digest.to_string(),
                    region: report.sources.last().cloned().unwrap_or_default(),
                },
            });
        }
        let mut hasher = digest.algorithm().hasher();
        let mut received = 0u64;
        let mut used: Vec<String> = Vec::new();
        for holder in candidates {
            if received >= size {
                break;
            }
            let addr = holder.grpc_addr.as_str();
            // Streams from this holder: again from the byte reached after stepping aside
            // for a client (on a client's lane if one joined meanwhile).
            let mut asked_again = false;
            // Set once a wait for clients' fetches from this source ran out: this transfer
            // then goes on beside them instead of stepping aside again at once.
            let mut beside_clients = false;
            loop {
                if priority.is_background() && !beside_clients {
                    // A client's fetch from this source goes first, unless a client joins
                    // this one meanwhile.
                    let wait = async {
                        tokio::select! {
                            freed = clients.until_none_waiting_on(addr, MAX_YIELD) => !freed,
                            _ = priority.until_promoted() => false,
                        }
                    };
                    tokio::pin!(wait);
                    let mut fresh = tokio::time::interval(KEEP_FRESH_EVERY);
                    beside_clients = loop {
                        tokio::select! {
                            timed_out = &mut wait => break timed_out,
                            _ = fresh.tick() => sink.keep_fresh()?,
                        }
                    };
                }
                let background = priority.is_background();
                let _client_fetch = (!background).then(|| clients.begin(addr));
                let _background_stream = background.then(|| clients.background(addr));
                let Ok(ch) = channel(addr, background) else { break };
                let mut client = BlobTransferClient::new(ch).max_decoding_message_size(16 << 20);
                let request = FetchBlobRequest {
                    digest: digest.to_string(),
                    offset: received,
                    for_region_peer: false,
                    background,
                    requester: priority.requester,
                };
                let mut stream = match tokio::time::timeout(STALL_TIMEOUT, client.fetch_blob(request)).await {
                    Ok(Ok(r)) => r.into_inner(),
                    Ok(Err(s)) => {
                        tracing::debug!(region = %holder.region, error = %s.message(), "source refused the fetch");
                        break;
                    }
                    Err(_) => {
                        tracing::info!(region = %holder.region, "source did not answer the fetch; trying another");
                        break;
                    }
                };
                if received > 0 && !asked_again {
                    report.resumes += 1;
                }
                if used.last() != Some(&holder.region) {
                    used.push(holder.region.clone());
                    report.sources.push(holder.region.clone());
                }
                // Set when a client joins this stream: it goes on where it is (its bytes
                // are already on the way) and now counts as a client's fetch.
                let mut joined = None;
                let end = loop {
                    let steps_aside = background && joined.is_none() && !beside_clients;
                    let next = tokio::select! {
                        biased;
                        _ = priority.until_promoted(), if steps_aside => {
                            joined = Some(clients.begin(addr));
                            continue;
                        }
                        _ = clients.until_waiting_on(addr), if steps_aside => break StreamEnd::Yielded,
                        next = tokio::time::timeout(STALL_TIMEOUT, stream.next()) => next,
                    };
                    let item = match next {
                        Ok(Some(item)) => item,
                        Ok(None) => break StreamEnd::Ended,
                        Err(_) => {
                            tracing::info!(region = %holder.region, offset = received, "transfer stalled; resuming elsewhere");
                            break StreamEnd::Ended;
                        }
                    };
                    match item {
                        Ok(chunk) => {
                            // Empty: a keep-alive from a source holding a background stream back.
                            if chunk.data.is_empty() {
                                sink.keep_fresh()?;
                                continue;
                            }
                            if received + chunk.data.len() as u64 > size {
                                // More bytes than the blob has: this source is wrong.
                                break StreamEnd::Ended;
                            }
                            throttle.consume(&holder.region, chunk.data.len()).await;
                            hasher.update(&chunk.data);
                            received += chunk.data.len() as u64;
                            sink.write(Bytes::from(chunk.data)).await?;
                        }
                        Err(s) => {
                            tracing::info!(region = %holder.region, offset = received, error = %s.message(), "transfer broke; resuming elsewhere");
                            break StreamEnd::Ended;
                        }
                    }
                };
                // The stream and its connection handle go before any wait, so a dropped
                // background connection can close.
                drop(stream);
                drop(client);
                drop(joined);
                if matches!(end, StreamEnd::Ended) || received >= size {
                    break;
                }
                report.yields += 1;
                asked_again = true;
            }
        }
        if received < size {
            // Every candidate failed before the end.
            return Err(FetchError::NoSource(digest.to_string()));
        }
        let actual = hasher.finish();
        if &actual == digest {
            report.bytes = received;
            return Ok(report);
        }
        tracing::warn!(%digest, %actual, sources = ?used, "fetched copy does not match its digest; discarding it");
        report.mismatches += 1;
        sink.reset().await?;
        suspects.extend(used);
    }
}

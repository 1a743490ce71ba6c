//! Fetching a blob from the regions that hold it: nearest first, resuming from the last
//! byte received when a source fails mid-stream, hashing every byte, and keeping nothing
//! that does not match the digest.

use crate::digest::Digest;
use crate::throttle::RegionThrottle;
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
}

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
}

impl FetchPriority {
    pub fn new(background: bool, requester: u64) -> FetchPriority {
        FetchPriority { background: AtomicBool::new(background), requester }
    }

    /// A client now waits for this fetch; `false` when one already did.
    pub fn promote(&self) -> bool {
        self.background.swap(false, Ordering::Relaxed)
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

/// Fetches `digest` (of `size` bytes) into `sink`, trying `holders` in order. `channel`
/// gives the connection to a holder for a background fetch (`true`) or for one a client
/// waits for (`false`).
pub async fn fetch_verified<S: ChunkSink>(
    channel: &(dyn Fn(&str, bool) -> Result<Channel, tonic::Status> + Sync),
    holders: &[Holder],
    digest: &Digest,
    size: u64,
    priority: &FetchPriority,
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
            let background = priority.is_background();
            let Ok(ch) = channel(&holder.grpc_addr, background) else { continue };
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
                    continue;
                }
                Err(_) => {
                    tracing::info!(region = %holder.region, "source did not answer the fetch; trying another");
                    continue;
                }
            };
            if received > 0 {
                report.resumes += 1;
            }
            used.push(holder.region.clone());
            report.sources.push(holder.region.clone());
            loop {
                let item = match tokio::time::timeout(STALL_TIMEOUT, stream.next()).await {
                    Ok(Some(item)) => item,
                    Ok(None) => break,
                    Err(_) => {
                        tracing::info!(region = %holder.region, offset = received, "transfer stalled; resuming elsewhere");
                        break;
                    }
                };
                match item {
                    Ok(chunk) => {
                        // Empty: a keep-alive from a source holding a background stream back.
                        if chunk.data.is_empty() {
                            continue;
                        }
                        if received + chunk.data.len() as u64 > size {
                            // More bytes than the blob has: this source is wrong.
                            break;
                        }
                        throttle.consume(&holder.region, chunk.data.len()).await;
                        hasher.update(&chunk.data);
                        received += chunk.data.len() as u64;
                        sink.write(Bytes::from(chunk.data)).await?;
                    }
                    Err(s) => {
                        tracing::info!(region = %holder.region, offset = received, error = %s.message(), "transfer broke; resuming elsewhere");
                        break;
                    }
                }
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

//! Fetch-through by way of another node of this region. A region of several nodes copies
//! each missing blob once: a client asking this node for a blob the region lacks is served
//! from the node that fetches that blob for the region (`Replicator::region_fetcher`),
//! which starts or joins its own transfer and streams the bytes as they land. Nothing is
//! written here: the fetching node stores the copy in the region's shared store.
//!
//! That node holds back a blob's last byte until the whole copy matched its digest, and
//! cuts the stream on failure, so a client here never receives a complete wrong body.

use bytes::Bytes;
use futures::stream::BoxStream;
use futures::StreamExt;
use meridian_proto::replication::blob_transfer_client::BlobTransferClient;
use meridian_proto::replication::{BlobChunk, FetchBlobRequest};
use meridian_replication::Digest;

/// A stream of a blob from a node of this region, its first chunk already in hand.
pub struct Relay {
    /// The whole blob's size.
    pub size: u64,
    first: Bytes,
    rest: tonic::Streaming<BlobChunk>,
    /// Where to ask again for a range that starts later (`into_stream`).
    peers: crate::peers::Peers,
    addr: String,
    digest: Digest,
}

async fn request(
    peers: &crate::peers::Peers,
    addr: &str,
    digest: &Digest,
    offset: u64,
) -> Result<tonic::Streaming<BlobChunk>, tonic::Status> {
    // A client waits: the priority connection, not behind the background queue's bytes.
    let channel = peers.priority_channel(addr)?;
    let req = FetchBlobRequest { digest: digest.to_string(), offset, for_region_peer: true, background: false, requester: 0 };
    Ok(BlobTransferClient::new(channel)
        .max_decoding_message_size(crate::peers::MAX_MESSAGE_BYTES)
        .fetch_blob(req)
        .await?
        .into_inner())
}

impl Relay {
    /// Asks the node at `addr` for the blob and waits for its first bytes.
    pub async fn open(peers: &crate::peers::Peers, addr: &str, digest: &Digest) -> Result<Relay, tonic::Status> {
        let mut rest = request(peers, addr, digest, 0).await?;
        let first = rest
            .message()
            .await?
            .ok_or_else(|| tonic::Status::unavailable("the region's fetching node sent nothing"))?;
        metrics::counter!("meridian_replication_region_relays_total").increment(1);
        Ok(Relay {
            size: first.total_size,
            first: Bytes::from(first.data),
            rest,
            peers: peers.clone(),
            addr: addr.to_string(),
            digest: digest.clone(),
        })
    }

    /// Bytes `start..start+len`. A range further in is asked for anew from its start
    /// rather than read through.
    pub fn into_stream(self, start: u64, len: u64) -> BoxStream<'static, std::io::Result<Bytes>> {
        let to_io = |r: Result<BlobChunk, tonic::Status>| {
            r.map(|c| Bytes::from(c.data)).map_err(|s| std::io::Error::other(s.message().to_string()))
        };
        let chunks: BoxStream<'static, std::io::Result<Bytes>> = if start == 0 {
            futures::stream::once(async move { Ok(self.first) }).chain(self.rest.map(to_io)).boxed()
        } else {
            let Relay { peers, addr, digest, .. } = self;
            futures::stream::once(async move { request(&peers, &addr, &digest, start).await })
                .map(move |opened| match opened {
                    Ok(stream) => stream.map(to_io).boxed(),
                    Err(s) => futures::stream::once(async move { Err(std::io::Error::other(s.message().to_string())) }).boxed(),
                })
                .flatten()
                .boxed()
        };
        take_bytes(chunks, len)
    }
}

/// The first `len` bytes of `chunks`.
fn take_bytes(chunks: BoxStream<'static, std::io::Result<Bytes>>, len: u64) -> BoxStream<'static, std::io::Result<Bytes>> {
    futures::stream::unfold((chunks, len), |(mut chunks, left)| async move {
        if left == 0 {
            return None;
        }
        match chunks.next().await? {
            Ok(mut chunk) => {
                if chunk.len() as u64 > left {
                    chunk.truncate(left as usize);
                }
                let left = left - chunk.len() as u64;
                Some((Ok(chunk), (chunks, left)))
            }
            Err(e) => Some((Err(e), (chunks, 0))),
        }
    })
    .boxed()
}

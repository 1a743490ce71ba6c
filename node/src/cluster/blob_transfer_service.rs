//! Serves this region's blobs to other regions, from any offset, in 1 MiB chunks; and, to
//! another node of this region with a client waiting, a blob the region is fetching (see
//! `replicas::relay`).

use crate::blobs::Blobs;
use bytes::{Bytes, BytesMut};
use futures::stream::BoxStream;
use futures::StreamExt;
use meridian_proto::replication::blob_transfer_server::BlobTransfer;
use meridian_proto::replication::{BlobChunk, FetchBlobRequest};
use meridian_replication::Digest;
use std::pin::Pin;
use tokio_stream::Stream;
use tonic::{Request, Response, Status};

const CHUNK: usize = 1 << 20;

pub struct BlobTransferImpl {
    pub blobs: Blobs,
    pub meta: crate::meta::Meta,
    pub replicator: std::sync::Arc<crate::replicas::Replicator>,
}

type ChunkStream = Pin<Box<dyn Stream<Item = Result<BlobChunk, Status>> + Send>>;

#[tonic::async_trait]
impl BlobTransfer for BlobTransferImpl {
    type FetchBlobStream = ChunkStream;

    async fn fetch_blob(&self, request: Request<FetchBlobRequest>) -> Result<Response<ChunkStream>, Status> {
        let req = request.into_inner();
        let digest = Digest::parse(&req.digest).map_err(|e| Status::invalid_argument(e.to_string()))?;
        let Some(reader) = self.blobs.open(&digest).await.map_err(|e| Status::internal(e.to_string()))? else {
            if req.for_region_peer {
                return self.relay_transfer(&digest, req.offset);
            }
            return Err(Status::not_found(format!("{digest} is not held by this region")));
        };
        let size = reader.size();
        if req.offset > size {
            return Err(Status::out_of_range(format!("offset {} past the end ({size})", req.offset)));
        }
        let mut bytes = reader.stream(req.offset, size - req.offset);
        let (tx, rx) = tokio::sync::mpsc::channel::<Result<BlobChunk, Status>>(4);
        let blobs = self.blobs.clone();
        let meta = self.meta.clone();
        tokio::spawn(async move {
            let mut first = true;
            // A whole-blob read doubles as a check of this region's own copy.
            let mut check = (req.offset == 0).then(|| digest.algorithm().hasher());
            loop {
                let buf = match next_chunk(&mut bytes).await {
                    Ok(None) => {
                        if let Some(hasher) = check.take() {
                            let actual = hasher.finish();
                            if actual != digest {
                                metrics::counter!("meridian_blob_corrupt_local_copies_total").increment(1);
                                tracing::error!(%digest, %actual, "stored copy does not match its digest; quarantining it");
                                match blobs.quarantine(&digest).await {
                                    Ok(()) => {
                                        let region = meta.me().region.clone();
                                        let cmd = crate::meta::command::Command::DropReplica { region, digest: digest.clone() };
                                        if let Err(e) = meta.propose(cmd).await {
                                            tracing::warn!(%digest, error = %e, "could not record the lost copy");
                                        }
                                    }
                                    Err(e) => tracing::error!(%digest, error = %e, "could not quarantine a corrupt copy"),
                                }
                            }
                        }
                        return;
                    }
                    Ok(Some(buf)) => buf,
                    Err(e) => {
                        let _ = tx.send(Err(Status::internal(e.to_string()))).await;
                        return;
                    }
                };
                let n = buf.len();
                if let Some(hasher) = check.as_mut() {
                    hasher.update(&buf);
                }
                metrics::counter!("meridian_replication_bytes_served_total").increment(n as u64);
                let chunk = BlobChunk { data: Vec::from(buf), total_size: if first { size } else { 0 } };
                let was_first = std::mem::replace(&mut first, false);
                if tx.send(Ok(chunk)).await.is_err() {
                    return; // the receiver went away
                }
                if was_first {
                    crate::failpoints::stall("blob-serve-stall").await;
                }
            }
        });
        Ok(Response::new(Box::pin(tokio_stream::wrappers::ReceiverStream::new(rx))))
    }
}

impl BlobTransferImpl {
    /// A blob this region lacks, for another node of the region: this node's transfer of
    /// it (started, or joined) as bytes land. The transfer holds back the last byte until
    /// the copy is verified and fails the stream otherwise.
    fn relay_transfer(&self, digest: &Digest, offset: u64) -> Result<Response<ChunkStream>, Status> {
        let size = self
            .replicator
            .store()
            .blob_location(digest)
            .map_err(|e| Status::internal(e.to_string()))?
            .map(|l| l.size)
            .ok_or_else(|| Status::not_found(format!("{digest} is not known to the cluster")))?;
        if offset > size {
            return Err(Status::out_of_range(format!("offset {offset} past the end ({size})")));
        }
        let transfer = self
            .replicator
            .fetch(digest, size, crate::replicas::Reason::ClientWaiting)
            .map_err(|e| Status::internal(e.to_string()))?;
        let mut bytes = crate::replicas::transfer::read_stream(transfer, offset, size - offset).boxed();
        let (tx, rx) = tokio::sync::mpsc::channel::<Result<BlobChunk, Status>>(4);
        tokio::spawn(async move {
            let mut first = true;
            loop {
                let chunk = match next_chunk(&mut bytes).await {
                    Ok(None) => return,
                    Ok(Some(buf)) => BlobChunk { data: Vec::from(buf), total_size: if first { size } else { 0 } },
                    Err(e) => {
                        let _ = tx.send(Err(Status::unavailable(e.to_string()))).await;
                        return;
                    }
                };
                first = false;
                if tx.send(Ok(chunk)).await.is_err() {
                    return;
                }
            }
        });
        Ok(Response::new(Box::pin(tokio_stream::wrappers::ReceiverStream::new(rx))))
    }
}

/// The next chunk of about `CHUNK` bytes: a file's reads already are; an object store's
/// smaller network reads are gathered, so a transfer is not thousands of tiny messages.
async fn next_chunk(bytes: &mut BoxStream<'static, std::io::Result<Bytes>>) -> std::io::Result<Option<Bytes>> {
    let mut gathered = BytesMut::new();
    while gathered.len() < CHUNK {
        match bytes.next().await {
            Some(Ok(read)) if gathered.is_empty() && read.len() >= CHUNK => return Ok(Some(read)),
            Some(Ok(read)) => gathered.extend_from_slice(&read),
            Some(Err(e)) => return Err(e),
            None => break,
        }
    }
    Ok((!gathered.is_empty()).then(|| gathered.freeze()))
}

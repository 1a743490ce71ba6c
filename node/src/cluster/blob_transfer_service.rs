//! Serves this region's blobs to other regions, from any offset, in 1 MiB chunks; and, to
//! another node of this region with a client waiting, a blob the region is fetching (see
//! `replicas::relay`).
//!
//! A waiting client comes first on the wire: while a node has a fetch in flight here that
//! a client waits for, its background fetches hold their next chunk (so the link carries
//! the client's bytes, not the backlog's) and send an empty keep-alive chunk now and then.

use crate::blobs::Blobs;
use bytes::{Bytes, BytesMut};
use futures::stream::BoxStream;
use futures::StreamExt;
use meridian_proto::replication::blob_transfer_server::BlobTransfer;
use meridian_proto::replication::{
    BlobChunk, ClientFetchDoneReply, ClientFetchDoneRequest, FetchBlobRequest, PromoteFetchReply, PromoteFetchRequest,
};
use meridian_replication::Digest;
use std::collections::HashMap;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::Notify;
use tokio_stream::Stream;
use tonic::{Request, Response, Status};

const CHUNK: usize = 1 << 20;
/// A held-back background stream sends an empty chunk this often (well inside the
/// receiver's stall timeout, 15 s).
const KEEP_ALIVE: Duration = Duration::from_secs(5);
/// How long a client's stream, handed on in full, keeps holding its requester's
/// background streams back at most, when the requester does not say it arrived
/// (`ClientFetchDone`: a node of an older version, or a lost message).
const LINGER: Duration = Duration::from_secs(10);

pub struct BlobTransferImpl {
    pub blobs: Blobs,
    pub meta: crate::meta::Meta,
    pub replicator: std::sync::Arc<crate::replicas::Replicator>,
    pub waiting: Arc<WaitingClients>,
}

/// A node's fetches in flight here: how many a client waits for, and its background ones
/// (which a client may join: `PromoteFetch`).
#[derive(Default)]
pub struct WaitingClients {
    state: Mutex<Waiting>,
    /// Told when a node's last fetch with a client waiting ends, and on every promotion.
    changed: Notify,
}

#[derive(Default)]
struct Waiting {
    clients: HashMap<u64, usize>,
    /// By (requester, digest): set when a client joins that background stream.
    background: HashMap<(u64, String), Vec<Arc<AtomicBool>>>,
    /// By (requester, digest): clients' streams handed on in full, whose last bytes may
    /// still be on the wire (how many).
    lingering: HashMap<(u64, String), usize>,
}

/// One fetch a client waits for, counted while it lives.
struct ClientWaiting {
    all: Arc<WaitingClients>,
    requester: u64,
}

/// One background stream, listed while it lives.
struct BackgroundStream {
    all: Arc<WaitingClients>,
    key: (u64, String),
    promoted: Arc<AtomicBool>,
}

impl WaitingClients {
    fn state(&self) -> std::sync::MutexGuard<'_, Waiting> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn client_waiting(self: &Arc<Self>, requester: u64) -> ClientWaiting {
        *self.state().clients.entry(requester).or_default() += 1;
        ClientWaiting { all: self.clone(), requester }
    }

    fn background(self: &Arc<Self>, requester: u64, digest: &Digest) -> BackgroundStream {
        let key = (requester, digest.to_string());
        let promoted = Arc::new(AtomicBool::new(false));
        self.state().background.entry(key.clone()).or_default().push(promoted.clone());
        BackgroundStream { all: self.clone(), key, promoted }
    }

    /// A client of `requester` joined its background fetch of `digest`: whether one was
    /// in flight here.
    pub fn promote(&self, requester: u64, digest: &str) -> bool {
        let found = match self.state().background.get(&(requester, digest.to_string())) {
            Some(streams) => {
                streams.iter().for_each(|p| p.store(true, Ordering::Relaxed));
                true
            }
            None => false,
        };
        self.changed.notify_waiters();
        found
    }

    /// Keeps `client` counted until its requester says every byte of `digest` arrived
    /// (`delivered`), or `limit` passes: the stream's last window is still on the wire
    /// when the source has handed it on, and background bytes sent now would go ahead.
    async fn linger(&self, client: ClientWaiting, digest: &Digest, limit: Duration) {
        let key = (client.requester, digest.to_string());
        *self.state().lingering.entry(key.clone()).or_default() += 1;
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            let changed = self.changed.notified();
            tokio::pin!(changed);
            changed.as_mut().enable();
            if !self.state().lingering.contains_key(&key) {
                break; // delivered
            }
            if tokio::time::timeout_at(deadline, changed).await.is_err() {
                let mut state = self.state();
                if let Some(n) = state.lingering.get_mut(&key) {
                    *n -= 1;
                    if *n == 0 {
                        state.lingering.remove(&key);
                    }
                }
                break;
            }
        }
        drop(client);
    }

    /// A requester has every byte of its client's fetch of `digest`.
    pub fn delivered(&self, requester: u64, digest: &str) {
        if self.state().lingering.remove(&(requester, digest.to_string())).is_some() {
            self.changed.notify_waiters();
        }
    }

    fn has_clients(&self, requester: u64) -> bool {
        self.state().clients.contains_key(&requester)
    }

    /// Waits, at most `limit`, until `stream` may send: its requester has no fetch a client
    /// waits for, or a client joined this stream. Whether it may.
    async fn may_send(&self, stream: &BackgroundStream, limit: Duration) -> bool {
        let changed = self.changed.notified();
        tokio::pin!(changed);
        // Registered before looking, so a change in between is not missed.
        changed.as_mut().enable();
        if stream.may_send() {
            return true;
        }
        let _ = tokio::time::timeout(limit, changed).await;
        stream.may_send()
    }
}

impl BackgroundStream {
    fn promoted(&self) -> bool {
        self.promoted.load(Ordering::Relaxed)
    }

    fn may_send(&self) -> bool {
        self.promoted() || !self.all.has_clients(self.key.0)
    }
}

impl Drop for ClientWaiting {
    fn drop(&mut self) {
        let mut state = self.all.state();
        if let Some(n) = state.clients.get_mut(&self.requester) {
            *n -= 1;
            if *n == 0 {
                state.clients.remove(&self.requester);
                drop(state);
                self.all.changed.notify_waiters();
            }
        }
    }
}

impl Drop for BackgroundStream {
    fn drop(&mut self) {
        let mut state = self.all.state();
        if let Some(streams) = state.background.get_mut(&self.key) {
            streams.retain(|p| !Arc::ptr_eq(p, &self.promoted));
            if streams.is_empty() {
                state.background.remove(&self.key);
            }
        }
    }
}

type ChunkStream = Pin<Box<dyn Stream<Item = Result<BlobChunk, Status>> + Send>>;

#[tonic::async_trait]
impl BlobTransfer for BlobTransferImpl {
    type FetchBlobStream = ChunkStream;

    async fn promote_fetch(&self, request: Request<PromoteFetchRequest>) -> Result<Response<PromoteFetchReply>, Status> {
        let req = request.into_inner();
        let found = self.waiting.promote(req.requester, &req.digest);
        Ok(Response::new(PromoteFetchReply { found }))
    }

    async fn client_fetch_done(&self, request: Request<ClientFetchDoneRequest>) -> Result<Response<ClientFetchDoneReply>, Status> {
        let req = request.into_inner();
        self.waiting.delivered(req.requester, &req.digest);
        Ok(Response::new(ClientFetchDoneReply {}))
    }

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
        let requester = req.requester;
        let mut background = (req.background && requester != 0).then(|| self.waiting.background(requester, &digest));
        // Held by the sending task for as long as it runs.
        let mut _client_waiting = (!req.background && requester != 0).then(|| self.waiting.client_waiting(requester));
        // A background stream keeps one chunk ready, not four: what it has handed on
        // before it holds back still goes out ahead of a client's bytes.
        let (tx, rx) = tokio::sync::mpsc::channel::<Result<BlobChunk, Status>>(if background.is_some() { 1 } else { 4 });
        let blobs = self.blobs.clone();
        let meta = self.meta.clone();
        let waiting = self.waiting.clone();
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
                        if let Some(client) = _client_waiting.take() {
                            drop(tx); // ends the stream; its last bytes are on their way
                            waiting.linger(client, &digest, LINGER).await;
                        }
                        return;
                    }
                    Ok(Some(buf)) => buf,
                    Err(e) => {
                        let _ = tx.send(Err(Status::internal(e.to_string()))).await;
                        return;
                    }
                };
                if let Some(stream) = &background {
                    if !hold_back_for_clients(&waiting, stream, &tx).await {
                        return; // the receiver went away
                    }
                    if stream.promoted() {
                        // A client joined: from now on this is a client's stream.
                        _client_waiting = Some(waiting.client_waiting(requester));
                        background = None;
                    }
                }
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

/// Holds a background stream's next chunk while its requester has a fetch a client waits
/// for in flight here (unless a client joined this one), with a keep-alive chunk every
/// `KEEP_ALIVE`: `false` when the receiver went away.
async fn hold_back_for_clients(waiting: &WaitingClients, stream: &BackgroundStream, tx: &tokio::sync::mpsc::Sender<Result<BlobChunk, Status>>) -> bool {
    if stream.may_send() {
        return true;
    }
    let held = Instant::now();
    while !waiting.may_send(stream, KEEP_ALIVE).await {
        if tx.send(Ok(BlobChunk { data: Vec::new(), total_size: 0 })).await.is_err() {
            return false;
        }
    }
    metrics::histogram!("meridian_replication_background_hold_seconds").record(held.elapsed().as_secs_f64());
    true
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

#[cfg(test)]
mod tests {
    use super::*;
    use meridian_replication::Algorithm;

    fn digest(n: u8) -> Digest {
        Digest::of_bytes(Algorithm::Sha256, &[n])
    }

    /// A node's background streams wait while a client of that node waits (not another
    /// node's), a promoted one goes on, and all go on when the client's fetch ends.
    #[tokio::test]
    async fn background_streams_wait_for_their_nodes_clients_only() {
        let all = Arc::new(WaitingClients::default());
        let (a, b) = (all.background(7, &digest(1)), all.background(7, &digest(2)));
        let other_node = all.background(8, &digest(1));
        assert!(a.may_send() && b.may_send(), "no client waits yet");

        let client = all.client_waiting(7);
        assert!(!a.may_send() && !b.may_send(), "node 7's client waits");
        assert!(other_node.may_send(), "node 8 has no client waiting");
        assert!(!all.may_send(&a, Duration::from_millis(20)).await, "still held after the wait");

        assert!(all.promote(7, &digest(1).to_string()), "a's stream is in flight");
        assert!(!all.promote(7, &digest(3).to_string()), "nothing streams digest 3");
        assert!(a.may_send() && !b.may_send(), "a client joined a, not b");

        // The client's fetch ends while b waits: b is told at once.
        let waiter = {
            let all = all.clone();
            tokio::spawn(async move { all.may_send(&b, Duration::from_secs(30)).await })
        };
        tokio::time::sleep(Duration::from_millis(20)).await;
        drop(client);
        let woke = tokio::time::timeout(Duration::from_secs(5), waiter).await.expect("b woken").expect("task");
        assert!(woke);

        drop(a);
        assert!(!all.promote(7, &digest(1).to_string()), "a's stream ended");
    }

    /// A client's stream handed on in full keeps its node's background streams held
    /// until the node says the bytes arrived, or until the time limit passes.
    #[tokio::test]
    async fn a_clients_stream_holds_the_background_until_its_bytes_arrive() {
        let all = Arc::new(WaitingClients::default());
        let background = all.background(7, &digest(2));
        let lingering = |d: Digest| {
            let client = all.client_waiting(7);
            let all = all.clone();
            tokio::spawn(async move { all.linger(client, &d, Duration::from_secs(2)).await })
        };

        let first = lingering(digest(1));
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert!(!background.may_send(), "held while the client's last bytes travel");
        all.delivered(8, &digest(1).to_string());
        all.delivered(7, &digest(3).to_string());
        tokio::time::sleep(Duration::from_millis(10)).await;
        assert!(!background.may_send(), "another node's or blob's arrival releases nothing");
        all.delivered(7, &digest(1).to_string());
        first.await.expect("lingering ends once delivered");
        assert!(background.may_send(), "delivered: the background goes on");

        // Never told (a node of an older version): released after the limit.
        let second = lingering(digest(1));
        tokio::time::sleep(Duration::from_secs(1)).await;
        assert!(!background.may_send(), "still inside the limit");
        let released = tokio::time::timeout(Duration::from_secs(5), second).await;
        released.expect("lingering ends after the limit").expect("task");
        assert!(background.may_send(), "released after the limit");
        assert!(all.state().lingering.is_empty(), "nothing left behind");
    }
}

//! openraft's network over gRPC: each RPC is a `RaftService` call carrying openraft's
//! request as JSON; the reply carries the response or openraft's error. AppendEntries go
//! pipelined, on one `AppendStream` call per follower (a new one after a failure).

use crate::peers::{Peers, MAX_MESSAGE_BYTES};
use crate::meta::types::{NodeId, NodeInfo, TypeConfig};
use meridian_proto::cluster::raft_service_client::RaftServiceClient;
use meridian_proto::cluster::{RaftReply, RaftRequest};
use openraft::error::{InstallSnapshotError, NetworkError, PayloadTooLarge, RPCError, RaftError, RemoteError, Unreachable};
use futures::future::BoxFuture;
use openraft::network::{AppendPipeline, AppendResult, RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse, VoteRequest,
    VoteResponse,
};
use serde::de::DeserializeOwned;
use serde::Serialize;
use futures::{Stream, StreamExt};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, oneshot};
use tokio_stream::wrappers::UnboundedReceiverStream;

/// An AppendEntries message above this size is not sent: openraft is told to retry with
/// proportionally fewer entries (`PayloadTooLarge`). It lets `max_payload_entries` be
/// large — many small entries per message to a far follower, which otherwise falls behind
/// when entries come faster than that many per round trip — while entries of whole
/// manifests or full batches still go in messages well under `MAX_MESSAGE_BYTES`.
const APPEND_SPLIT_BYTES: usize = 32 << 20;

#[derive(Clone)]
pub struct GrpcNetwork {
    peers: Peers,
    without_append_stream: WithoutAppendStream,
}

impl GrpcNetwork {
    pub fn new(peers: Peers) -> GrpcNetwork {
        GrpcNetwork { peers, without_append_stream: WithoutAppendStream::default() }
    }
}

/// Peers that answered `AppendStream` with `UNIMPLEMENTED` (a release before it, during
/// a rolling upgrade or after a rollback), and when: their appends go as ordered unary
/// calls instead, and the stream is tried again after `RETRY_APPEND_STREAM`.
#[derive(Clone, Default)]
struct WithoutAppendStream(Arc<Mutex<HashMap<NodeId, Instant>>>);

const RETRY_APPEND_STREAM: Duration = Duration::from_secs(300);

impl WithoutAppendStream {
    fn note(&self, target: NodeId) {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).insert(target, Instant::now());
    }

    fn has(&self, target: NodeId) -> bool {
        let mut map = self.0.lock().unwrap_or_else(|p| p.into_inner());
        match map.get(&target) {
            Some(since) if since.elapsed() < RETRY_APPEND_STREAM => true,
            Some(_) => {
                map.remove(&target);
                false
            }
            None => false,
        }
    }
}

pub struct GrpcPeer {
    target: NodeId,
    target_node: NodeInfo,
    peers: Peers,
    without_append_stream: WithoutAppendStream,
}

impl RaftNetworkFactory<TypeConfig> for GrpcNetwork {
    type Network = GrpcPeer;
    async fn new_client(&mut self, target: NodeId, node: &NodeInfo) -> GrpcPeer {
        GrpcPeer {
            target,
            target_node: node.clone(),
            peers: self.peers.clone(),
            without_append_stream: self.without_append_stream.clone(),
        }
    }
}

#[derive(Debug, thiserror::Error)]
#[error("{0}")]
struct TransportError(String);

enum Rpc {
    Vote,
    Append,
    Snapshot,
}

impl GrpcPeer {
    async fn call<Req, Resp, E>(
        &self,
        rpc: Rpc,
        req: &Req,
        option: &RPCOption,
    ) -> Result<Resp, RPCError<NodeId, NodeInfo, RaftError<NodeId, E>>>
    where
        Req: Serialize,
        Resp: DeserializeOwned,
        E: std::error::Error + DeserializeOwned,
    {
        self.send(rpc, encode(req)?, option).await
    }

    /// Sends an encoded request and decodes the reply.
    async fn send<Resp, E>(
        &self,
        rpc: Rpc,
        payload: Vec<u8>,
        option: &RPCOption,
    ) -> Result<Resp, RPCError<NodeId, NodeInfo, RaftError<NodeId, E>>>
    where
        Resp: DeserializeOwned,
        E: std::error::Error + DeserializeOwned,
    {
        let channel = self
            .peers
            .channel(&self.target_node.grpc_addr)
            .map_err(|e| RPCError::Unreachable(Unreachable::new(&TransportError(e.to_string()))))?;
        let mut client = RaftServiceClient::new(channel)
            .max_decoding_message_size(MAX_MESSAGE_BYTES)
            .max_encoding_message_size(MAX_MESSAGE_BYTES);
        let mut request = tonic::Request::new(RaftRequest { payload });
        // openraft times the RPC itself (`hard_ttl`) and reports a timeout as such, after
        // which it sends again at once; this is a backstop only. Timing out here first
        // would report the peer `Unreachable`, and openraft would pause replicating to it
        // (its backoff) after what was only a slow answer from a far, busy region.
        request.set_timeout(option.hard_ttl() * 2);
        let reply: Result<tonic::Response<RaftReply>, tonic::Status> = match rpc {
            Rpc::Vote => client.vote(request).await,
            Rpc::Append => client.append_entries(request).await,
            Rpc::Snapshot => client.install_snapshot(request).await,
        };
        let reply = reply.map_err(|s| unreachable(&s))?.into_inner();
        decode_reply(self.target, &self.target_node, reply)
    }
}

fn unreachable<E: std::error::Error>(status: &tonic::Status) -> RPCError<NodeId, NodeInfo, RaftError<NodeId, E>> {
    RPCError::Unreachable(Unreachable::new(&TransportError(status.message().to_string())))
}

/// The response in `reply`, or the error openraft raised on the target.
fn decode_reply<Resp, E>(
    target: NodeId,
    target_node: &NodeInfo,
    reply: RaftReply,
) -> Result<Resp, RPCError<NodeId, NodeInfo, RaftError<NodeId, E>>>
where
    Resp: DeserializeOwned,
    E: std::error::Error + DeserializeOwned,
{
    if !reply.error.is_empty() {
        let err: RaftError<NodeId, E> =
            serde_json::from_slice(&reply.error).map_err(|e| RPCError::Network(NetworkError::new(&e)))?;
        return Err(RPCError::RemoteError(RemoteError::new_with_node(target, target_node.clone(), err)));
    }
    serde_json::from_slice(&reply.payload).map_err(|e| RPCError::Network(NetworkError::new(&e)))
}

/// An encoded AppendEntries, unless it is over the split size with more than one entry:
/// then openraft is asked to send fewer (it keeps the hint for the next few sends).
fn encode_append(
    rpc: &AppendEntriesRequest<TypeConfig>,
) -> Result<Vec<u8>, RPCError<NodeId, NodeInfo, RaftError<NodeId>>> {
    let payload = encode(rpc)?;
    let entries = rpc.entries.len();
    if payload.len() > APPEND_SPLIT_BYTES && entries > 1 {
        let fewer = (entries * APPEND_SPLIT_BYTES / payload.len()).clamp(1, entries - 1);
        return Err(RPCError::PayloadTooLarge(PayloadTooLarge::new_entries_hint(fewer as u64)));
    }
    Ok(payload)
}

/// AppendEntries to one peer on one `AppendStream` call (the patched openraft's
/// pipelining): requests go out as openraft sends them, answers come back in order. The
/// call runs in a task of its own, started at once; whatever ends it (the peer
/// unreachable, the stream reset) is the answer to the oldest request unanswered.
/// Dropping the pipeline ends the call and its request stream at once: requests queued
/// but not yet on the wire are not sent.
struct GrpcAppendPipeline {
    requests: mpsc::UnboundedSender<RaftRequest>,
    answers: mpsc::UnboundedReceiver<AppendResult<TypeConfig>>,
    call: tokio::task::JoinHandle<()>,
    /// Dropped with the pipeline, which ends the request stream.
    _open: oneshot::Sender<()>,
    /// Requests sent and not answered yet: `meridian_raft_appends_in_flight` records it
    /// (this one included) at every send, per follower.
    unanswered: usize,
    in_flight: metrics::Histogram,
}

impl GrpcAppendPipeline {
    fn open(peer: &GrpcPeer) -> GrpcAppendPipeline {
        let (requests, outgoing) = mpsc::unbounded_channel();
        let (answered, answers) = mpsc::unbounded_channel();
        let (open, dropped) = oneshot::channel();
        let outgoing = UnboundedReceiverStream::new(outgoing).take_until(dropped);
        let target = peer.target;
        let without_append_stream = peer.without_append_stream.clone();
        let append = AppendCall { target, target_node: peer.target_node.clone(), peers: peer.peers.clone(), answered };
        let unary = without_append_stream.has(target);
        let call = tokio::spawn(async move {
            let ended =
                if unary { append.run_unary(outgoing).await } else { append.run(outgoing, &without_append_stream).await };
            let _ = append.answered.send(Err(ended));
        });
        let in_flight = metrics::histogram!("meridian_raft_appends_in_flight", "follower" => target.to_string());
        GrpcAppendPipeline { requests, answers, call, _open: open, unanswered: 0, in_flight }
    }
}

/// The task behind a `GrpcAppendPipeline`: sends its requests, hands back the answers.
struct AppendCall {
    target: NodeId,
    target_node: NodeInfo,
    peers: Peers,
    answered: mpsc::UnboundedSender<AppendResult<TypeConfig>>,
}

impl AppendCall {
    fn client(&self) -> Result<RaftServiceClient<tonic::transport::Channel>, tonic::Status> {
        Ok(RaftServiceClient::new(self.peers.channel(&self.target_node.grpc_addr)?)
            .max_decoding_message_size(MAX_MESSAGE_BYTES)
            .max_encoding_message_size(MAX_MESSAGE_BYTES))
    }

    /// Hands back the answer in `reply`; false when nobody waits for answers any more.
    fn answer(&self, reply: RaftReply) -> bool {
        self.answered.send(decode_reply(self.target, &self.target_node, reply)).is_ok()
    }

    /// One `AppendStream` call; returns why it ended.
    async fn run(
        &self,
        outgoing: impl Stream<Item = RaftRequest> + Send + 'static,
        without_append_stream: &WithoutAppendStream,
    ) -> RPCError<NodeId, NodeInfo, RaftError<NodeId>> {
        let mut client = match self.client() {
            Ok(client) => client,
            Err(status) => return unreachable(&status),
        };
        let mut replies = match client.append_stream(outgoing).await {
            Ok(response) => response.into_inner(),
            Err(status) => {
                if status.code() == tonic::Code::Unimplemented {
                    tracing::warn!(target = self.target, "peer has no AppendStream (an older release): appends go one call each");
                    without_append_stream.note(self.target);
                }
                return unreachable(&status);
            }
        };
        loop {
            match replies.message().await {
                Ok(Some(reply)) => {
                    if !self.answer(reply) {
                        return ended("append stream dropped");
                    }
                }
                Ok(None) => return ended("the peer ended the append stream"),
                Err(status) => return unreachable(&status),
            }
        }
    }

    /// For a peer without `AppendStream`: one unary call at a time, in order, answers in
    /// order: the leader still sends without waiting, the peer sees what it always saw.
    async fn run_unary(&self, outgoing: impl Stream<Item = RaftRequest> + Send + 'static) -> RPCError<NodeId, NodeInfo, RaftError<NodeId>> {
        let mut client = match self.client() {
            Ok(client) => client,
            Err(status) => return unreachable(&status),
        };
        let mut outgoing = Box::pin(outgoing);
        while let Some(request) = outgoing.next().await {
            match client.append_entries(request).await {
                Ok(reply) => {
                    if !self.answer(reply.into_inner()) {
                        return ended("append stream dropped");
                    }
                }
                Err(status) => return unreachable(&status),
            }
        }
        ended("append stream dropped")
    }
}

fn ended(why: &str) -> RPCError<NodeId, NodeInfo, RaftError<NodeId>> {
    RPCError::Network(NetworkError::new(&TransportError(why.to_string())))
}

impl Drop for GrpcAppendPipeline {
    fn drop(&mut self) {
        self.call.abort();
    }
}

impl AppendPipeline<TypeConfig> for GrpcAppendPipeline {
    fn send(&mut self, rpc: AppendEntriesRequest<TypeConfig>) -> Result<(), RPCError<NodeId, NodeInfo, RaftError<NodeId>>> {
        let payload = encode_append(&rpc)?;
        self.requests.send(RaftRequest { payload }).map_err(|_| {
            RPCError::Unreachable(Unreachable::new(&TransportError("the append stream has ended".into())))
        })?;
        self.unanswered += 1;
        self.in_flight.record(self.unanswered as f64);
        Ok(())
    }

    fn recv(&mut self) -> BoxFuture<'_, AppendResult<TypeConfig>> {
        Box::pin(async move {
            let answer = match self.answers.recv().await {
                Some(answer) => answer,
                None => Err(ended("the append stream has ended")),
            };
            self.unanswered = self.unanswered.saturating_sub(1);
            answer
        })
    }
}

fn encode<Req: Serialize, E: std::error::Error>(req: &Req) -> Result<Vec<u8>, RPCError<NodeId, NodeInfo, RaftError<NodeId, E>>> {
    serde_json::to_vec(req).map_err(|e| RPCError::Network(NetworkError::new(&e)))
}

impl RaftNetwork<TypeConfig> for GrpcPeer {
    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<NodeId>, RPCError<NodeId, NodeInfo, RaftError<NodeId>>> {
        let payload = encode_append(&rpc)?;
        self.send(Rpc::Append, payload, &option).await
    }

    fn append_pipeline(&mut self) -> Option<Box<dyn AppendPipeline<TypeConfig>>> {
        Some(Box::new(GrpcAppendPipeline::open(self)))
    }

    async fn install_snapshot(
        &mut self,
        rpc: InstallSnapshotRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<InstallSnapshotResponse<NodeId>, RPCError<NodeId, NodeInfo, RaftError<NodeId, InstallSnapshotError>>>
    {
        self.call(Rpc::Snapshot, &rpc, &option).await
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<NodeId>,
        option: RPCOption,
    ) -> Result<VoteResponse<NodeId>, RPCError<NodeId, NodeInfo, RaftError<NodeId>>> {
        self.call(Rpc::Vote, &rpc, &option).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::meta::command::Command;
    use crate::meta::types::{Entry, LogId};
    use openraft::{CommittedLeaderId, EntryPayload, Vote};
    use std::collections::BTreeMap;
    use std::time::Duration;

    /// A peer nobody listens for: what reaches the wire fails as unreachable.
    fn peer() -> GrpcPeer {
        let node = NodeInfo { grpc_addr: "127.0.0.1:9".into(), ..Default::default() };
        GrpcPeer {
            target: 2,
            target_node: node,
            peers: Peers::new(BTreeMap::new(), None),
            without_append_stream: WithoutAppendStream::default(),
        }
    }

    fn append_of(entries: usize, bytes_each: usize) -> AppendEntriesRequest<TypeConfig> {
        let entries = (1..=entries as u64)
            .map(|index| Entry {
                log_id: LogId::new(CommittedLeaderId::new(1, 1), index),
                payload: EntryPayload::Normal(Command::RemoveQuota { pattern: "x".repeat(bytes_each) }),
            })
            .collect();
        AppendEntriesRequest { vote: Vote::new_committed(1, 1), prev_log_id: None, leader_commit: None, entries }
    }

    #[tokio::test]
    async fn an_append_past_the_split_size_asks_openraft_for_fewer_entries() {
        let option = RPCOption::new(Duration::from_secs(1));
        // Three entries of 12 MiB: 36 MiB of JSON, over the 32 MiB split size.
        let err = peer().append_entries(append_of(3, 12 << 20), option.clone()).await.unwrap_err();
        match err {
            RPCError::PayloadTooLarge(too_large) => assert_eq!(too_large.entries_hint(), 2),
            other => panic!("expected PayloadTooLarge, got {other}"),
        }
        // One entry is never split, however large: it goes to the wire (here: nobody).
        let err = peer().append_entries(append_of(1, 40 << 20), option.clone()).await.unwrap_err();
        assert!(matches!(err, RPCError::Unreachable(_)), "got {err}");
        // Under the split size, too.
        let err = peer().append_entries(append_of(3, 1 << 20), option).await.unwrap_err();
        assert!(matches!(err, RPCError::Unreachable(_)), "got {err}");
    }

    /// A node of a release before `AppendStream`: unary AppendEntries only. It records the
    /// `prev_log_id` index of each append in the order they arrive.
    struct OlderRelease {
        seen: Arc<Mutex<Vec<u64>>>,
    }

    #[tonic::async_trait]
    impl meridian_proto::cluster::raft_service_server::RaftService for OlderRelease {
        type AppendStreamStream = tokio_stream::Empty<Result<RaftReply, tonic::Status>>;

        async fn append_stream(
            &self,
            _: tonic::Request<tonic::Streaming<RaftRequest>>,
        ) -> Result<tonic::Response<Self::AppendStreamStream>, tonic::Status> {
            Err(tonic::Status::unimplemented("no AppendStream in this release"))
        }

        async fn append_entries(&self, request: tonic::Request<RaftRequest>) -> Result<tonic::Response<RaftReply>, tonic::Status> {
            let req: AppendEntriesRequest<TypeConfig> = serde_json::from_slice(&request.get_ref().payload).unwrap();
            self.seen.lock().unwrap().push(req.prev_log_id.map(|l| l.index).unwrap_or(0));
            let payload = serde_json::to_vec(&AppendEntriesResponse::<NodeId>::Success).unwrap();
            Ok(tonic::Response::new(RaftReply { payload, error: vec![] }))
        }

        async fn vote(&self, _: tonic::Request<RaftRequest>) -> Result<tonic::Response<RaftReply>, tonic::Status> {
            Err(tonic::Status::unimplemented("not in this test"))
        }

        async fn install_snapshot(&self, _: tonic::Request<RaftRequest>) -> Result<tonic::Response<RaftReply>, tonic::Status> {
            Err(tonic::Status::unimplemented("not in this test"))
        }
    }

    #[tokio::test]
    async fn a_peer_without_the_append_stream_gets_its_appends_in_order_one_call_each() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let server = meridian_proto::cluster::raft_service_server::RaftServiceServer::new(OlderRelease { seen: seen.clone() });
        tokio::spawn(
            tonic::transport::Server::builder()
                .add_service(server)
                .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
        );
        let node = NodeInfo { grpc_addr: addr.to_string(), ..Default::default() };
        let mut peer = GrpcPeer {
            target: 2,
            target_node: node,
            peers: Peers::new(BTreeMap::new(), None),
            without_append_stream: WithoutAppendStream::default(),
        };
        let append_after = |index: u64| {
            let mut rpc = append_of(1, 10);
            rpc.prev_log_id = Some(LogId::new(CommittedLeaderId::new(1, 1), index));
            rpc
        };

        // The stream is refused: the oldest request fails, as when the peer is unreachable.
        let mut pipeline = peer.append_pipeline().expect("a pipeline");
        pipeline.send(append_after(1)).unwrap();
        let err = pipeline.recv().await.unwrap_err();
        assert!(matches!(err, RPCError::Unreachable(_)), "got {err}");
        drop(pipeline);

        // The next pipeline sends unary calls, in the order sent, and answers in order.
        let mut pipeline = peer.append_pipeline().expect("a pipeline");
        for index in [10, 11, 12, 13] {
            pipeline.send(append_after(index)).unwrap();
        }
        for _ in 0..4 {
            assert!(matches!(pipeline.recv().await, Ok(AppendEntriesResponse::Success)));
        }
        assert_eq!(*seen.lock().unwrap(), vec![10, 11, 12, 13]);
    }
}

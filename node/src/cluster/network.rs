//! openraft's network over gRPC: each RPC is a `RaftService` call carrying openraft's
//! request as JSON; the reply carries the response or openraft's error. AppendEntries go
//! pipelined, on one `AppendStream` call per follower and leader term.

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
use tokio::sync::mpsc;
use tokio_stream::wrappers::UnboundedReceiverStream;

/// An AppendEntries message above this size is not sent: openraft is told to retry with
/// proportionally fewer entries (`PayloadTooLarge`). It lets `max_payload_entries` be
/// large — many small entries per message to a far follower, which otherwise falls behind
/// when entries come faster than that many per round trip — while entries of whole
/// manifests or full batches still go in messages well under `MAX_MESSAGE_BYTES`.
const APPEND_SPLIT_BYTES: usize = 32 << 20;

#[derive(Clone)]
pub struct GrpcNetwork {
    pub peers: Peers,
}

pub struct GrpcPeer {
    target: NodeId,
    target_node: NodeInfo,
    peers: Peers,
}

impl RaftNetworkFactory<TypeConfig> for GrpcNetwork {
    type Network = GrpcPeer;
    async fn new_client(&mut self, target: NodeId, node: &NodeInfo) -> GrpcPeer {
        GrpcPeer { target, target_node: node.clone(), peers: self.peers.clone() }
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
/// pipelining): requests go out as openraft sends them, answers come back in order.
/// The call runs in a task of its own, opened on the first request; whatever ends it
/// (the peer unreachable, the stream reset) is the answer to the oldest request.
struct GrpcAppendPipeline {
    requests: mpsc::UnboundedSender<RaftRequest>,
    answers: mpsc::UnboundedReceiver<AppendResult<TypeConfig>>,
    call: tokio::task::JoinHandle<()>,
}

impl GrpcAppendPipeline {
    fn open(peer: &GrpcPeer) -> GrpcAppendPipeline {
        let (requests, outgoing) = mpsc::unbounded_channel();
        let (answered, answers) = mpsc::unbounded_channel();
        let (target, target_node, peers) = (peer.target, peer.target_node.clone(), peer.peers.clone());
        let call = tokio::spawn(async move {
            let ended = Self::run(target, &target_node, &peers, outgoing, &answered).await;
            let _ = answered.send(Err(ended));
        });
        GrpcAppendPipeline { requests, answers, call }
    }

    /// Forwards answers until the call ends; returns why it ended.
    async fn run(
        target: NodeId,
        target_node: &NodeInfo,
        peers: &Peers,
        outgoing: mpsc::UnboundedReceiver<RaftRequest>,
        answered: &mpsc::UnboundedSender<AppendResult<TypeConfig>>,
    ) -> RPCError<NodeId, NodeInfo, RaftError<NodeId>> {
        let channel = match peers.channel(&target_node.grpc_addr) {
            Ok(channel) => channel,
            Err(status) => return unreachable(&status),
        };
        let mut client = RaftServiceClient::new(channel)
            .max_decoding_message_size(MAX_MESSAGE_BYTES)
            .max_encoding_message_size(MAX_MESSAGE_BYTES);
        let mut replies = match client.append_stream(UnboundedReceiverStream::new(outgoing)).await {
            Ok(response) => response.into_inner(),
            Err(status) => return unreachable(&status),
        };
        loop {
            match replies.message().await {
                Ok(Some(reply)) => {
                    if answered.send(decode_reply(target, target_node, reply)).is_err() {
                        return RPCError::Network(NetworkError::new(&TransportError("append stream dropped".into())));
                    }
                }
                Ok(None) => {
                    return RPCError::Network(NetworkError::new(&TransportError("the peer ended the append stream".into())))
                }
                Err(status) => return unreachable(&status),
            }
        }
    }
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
        })
    }

    fn recv(&mut self) -> BoxFuture<'_, AppendResult<TypeConfig>> {
        Box::pin(async move {
            match self.answers.recv().await {
                Some(answer) => answer,
                None => Err(RPCError::Network(NetworkError::new(&TransportError("the append stream has ended".into())))),
            }
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
        GrpcPeer { target: 2, target_node: node, peers: Peers::new(BTreeMap::new(), None) }
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
}

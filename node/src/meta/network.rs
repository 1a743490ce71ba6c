//! Raft transport. A single-region cluster has no peers, so openraft never opens a
//! connection; the gRPC transport between regions replaces this when regions join
//! (see docs/architecture.md, "Regions").

use super::types::{NodeId, NodeInfo, TypeConfig};
use openraft::error::{InstallSnapshotError, RPCError, RaftError, Unreachable};
use openraft::network::{RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse, VoteRequest,
    VoteResponse,
};

#[derive(Debug, thiserror::Error)]
#[error("node {0} is not reachable: this node has no inter-region transport configured")]
pub struct NoTransport(NodeId);

pub struct SingleRegionNetwork;

pub struct NoPeer(NodeId);

impl RaftNetworkFactory<TypeConfig> for SingleRegionNetwork {
    type Network = NoPeer;
    async fn new_client(&mut self, target: NodeId, _node: &NodeInfo) -> NoPeer {
        NoPeer(target)
    }
}

impl RaftNetwork<TypeConfig> for NoPeer {
    async fn append_entries(
        &mut self,
        _rpc: AppendEntriesRequest<TypeConfig>,
        _option: RPCOption,
    ) -> Result<AppendEntriesResponse<NodeId>, RPCError<NodeId, NodeInfo, RaftError<NodeId>>> {
        Err(RPCError::Unreachable(Unreachable::new(&NoTransport(self.0))))
    }

    async fn install_snapshot(
        &mut self,
        _rpc: InstallSnapshotRequest<TypeConfig>,
        _option: RPCOption,
    ) -> Result<InstallSnapshotResponse<NodeId>, RPCError<NodeId, NodeInfo, RaftError<NodeId, InstallSnapshotError>>>
    {
        Err(RPCError::Unreachable(Unreachable::new(&NoTransport(self.0))))
    }

    async fn vote(
        &mut self,
        _rpc: VoteRequest<NodeId>,
        _option: RPCOption,
    ) -> Result<VoteResponse<NodeId>, RPCError<NodeId, NodeInfo, RaftError<NodeId>>> {
        Err(RPCError::Unreachable(Unreachable::new(&NoTransport(self.0))))
    }
}

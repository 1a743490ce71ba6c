//! Writes and read-index requests arriving from followers, and node identity.

use crate::meta::command::Command;
use crate::meta::{Meta, MetaError};
use meridian_proto::cluster::forward_service_server::ForwardService;
use meridian_proto::cluster::{
    CampaignReply, CampaignRequest, HoldElectionsReply, HoldElectionsRequest, IdentifyRequest, NodeReplicationStats,
    ReplicationStatsRequest, NodeIdentity, ProposeReply, ProposeRequest, ReadIndexReply,
    ReadIndexRequest, UploadRequestPart, UploadResponse,
};
use tonic::{Request, Response, Status};

pub struct ForwardServiceImpl {
    pub meta: Meta,
    pub replicator: std::sync::Arc<crate::replicas::Replicator>,
    /// Serves upload requests another node of the region passes on.
    pub uploads: std::sync::Arc<dyn super::upload_forwarding::UploadHandler>,
}

impl ForwardServiceImpl {
    fn leader_addr(&self) -> String {
        self.meta.leader().map(|(_, info)| info.grpc_addr).unwrap_or_default()
    }
}

#[tonic::async_trait]
impl ForwardService for ForwardServiceImpl {
    async fn propose(&self, request: Request<ProposeRequest>) -> Result<Response<ProposeReply>, Status> {
        let cmd: Command = serde_json::from_slice(&request.get_ref().command)
            .map_err(|e| Status::invalid_argument(format!("bad command: {e}")))?;
        if matches!(cmd, Command::Batch(_)) {
            return Err(Status::invalid_argument("a batch is formed by the leader, never proposed"));
        }
        if !self.meta.is_leader() {
            return Ok(Response::new(ProposeReply {
                error: "this node is not the leader".into(),
                leader_grpc_addr: self.leader_addr(),
                ..Default::default()
            }));
        }
        let reply = match self.meta.write_at_leader(cmd).await {
            Ok((result, log_index)) => ProposeReply {
                result: serde_json::to_vec(&result).map_err(|e| Status::internal(e.to_string()))?,
                log_index,
                ..Default::default()
            },
            Err(MetaError::NoQuorum(m)) => {
                ProposeReply { error: m, leader_grpc_addr: self.leader_addr(), ..Default::default() }
            }
            Err(e) => return Err(Status::internal(e.to_string())),
        };
        Ok(Response::new(reply))
    }

    async fn read_index(&self, request: Request<ReadIndexRequest>) -> Result<Response<ReadIndexReply>, Status> {
        if !self.meta.is_leader() {
            return Ok(Response::new(ReadIndexReply {
                error: "this node is not the leader".into(),
                leader_grpc_addr: self.leader_addr(),
                ..Default::default()
            }));
        }
        let index = if request.get_ref().skip_leadership_check {
            self.meta.leader_commit_index().await
        } else {
            self.meta.leader_read_index().await
        };
        let reply = match index {
            Ok(read_index) => ReadIndexReply { read_index, ..Default::default() },
            Err(e) => ReadIndexReply { error: e.to_string(), leader_grpc_addr: self.leader_addr(), ..Default::default() },
        };
        Ok(Response::new(reply))
    }

    async fn identify(&self, _request: Request<IdentifyRequest>) -> Result<Response<NodeIdentity>, Status> {
        let me = self.meta.me();
        let initialized = self.meta.is_initialized().await.map_err(|e| Status::internal(e.to_string()))?;
        Ok(Response::new(NodeIdentity {
            node_id: self.meta.node_id(),
            region: me.region.clone(),
            http_addr: me.http_addr.clone(),
            grpc_addr: me.grpc_addr.clone(),
            initialized,
            last_applied: self.meta.applied_index(),
            shared_store: me.shared_store.clone(),
            public_url: me.public_url.clone(),
            state_version: crate::meta::STATE_VERSION,
        }))
    }

    async fn forward_upload(
        &self,
        request: Request<tonic::Streaming<UploadRequestPart>>,
    ) -> Result<Response<UploadResponse>, Status> {
        super::upload_forwarding::serve(self.uploads.as_ref(), request.into_inner()).await.map(Response::new)
    }

    async fn campaign(&self, _request: Request<CampaignRequest>) -> Result<Response<CampaignReply>, Status> {
        let error = match self.meta.raft().trigger().elect().await {
            Ok(()) => String::new(),
            Err(e) => e.to_string(),
        };
        Ok(Response::new(CampaignReply { error }))
    }

    async fn hold_elections(&self, request: Request<HoldElectionsRequest>) -> Result<Response<HoldElectionsReply>, Status> {
        self.meta.raft().runtime_config().elect(!request.get_ref().hold);
        Ok(Response::new(HoldElectionsReply {}))
    }

    async fn replication_stats(
        &self,
        _request: Request<ReplicationStatsRequest>,
    ) -> Result<Response<NodeReplicationStats>, Status> {
        use std::sync::atomic::Ordering::Relaxed;
        let s = &self.replicator.stats;
        Ok(Response::new(NodeReplicationStats {
            last_applied: self.meta.applied_index(),
            pending_blobs: s.pending_blobs.load(Relaxed),
            pending_bytes: s.pending_bytes.load(Relaxed),
            bytes_received: s.bytes_received.load(Relaxed),
            throughput_bytes_per_sec: f64::from_bits(s.throughput_bits.load(Relaxed)),
            transfers_failed: s.transfers_failed.load(Relaxed),
            digest_mismatches: s.digest_mismatches.load(Relaxed),
        }))
    }
}

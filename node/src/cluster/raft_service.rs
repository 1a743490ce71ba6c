//! The receiving side of the Raft transport: decode, hand to openraft, encode.

use crate::meta::types::Raft;
use meridian_proto::cluster::raft_service_server::RaftService;
use meridian_proto::cluster::{RaftReply, RaftRequest};
use serde::Serialize;
use tonic::{Request, Response, Status};

pub struct RaftServiceImpl {
    pub raft: Raft,
}

fn decode<T: serde::de::DeserializeOwned>(req: &RaftRequest) -> Result<T, Status> {
    serde_json::from_slice(&req.payload).map_err(|e| Status::invalid_argument(format!("bad raft payload: {e}")))
}

fn reply<T: Serialize, E: Serialize>(result: Result<T, E>) -> Result<Response<RaftReply>, Status> {
    let encoded = match result {
        Ok(v) => RaftReply { payload: serde_json::to_vec(&v).map_err(|e| Status::internal(e.to_string()))?, error: vec![] },
        Err(e) => RaftReply { payload: vec![], error: serde_json::to_vec(&e).map_err(|e| Status::internal(e.to_string()))? },
    };
    Ok(Response::new(encoded))
}

#[tonic::async_trait]
impl RaftService for RaftServiceImpl {
    async fn vote(&self, request: Request<RaftRequest>) -> Result<Response<RaftReply>, Status> {
        let req = decode(request.get_ref())?;
        reply(self.raft.vote(req).await)
    }

    async fn append_entries(&self, request: Request<RaftRequest>) -> Result<Response<RaftReply>, Status> {
        let req = decode(request.get_ref())?;
        reply(self.raft.append_entries(req).await)
    }

    async fn install_snapshot(&self, request: Request<RaftRequest>) -> Result<Response<RaftReply>, Status> {
        let req = decode(request.get_ref())?;
        reply(self.raft.install_snapshot(req).await)
    }
}

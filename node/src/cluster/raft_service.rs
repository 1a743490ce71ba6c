//! The receiving side of the Raft transport: decode, hand to openraft, encode.

use crate::meta::types::Raft;
use meridian_proto::cluster::raft_service_server::RaftService;
use meridian_proto::cluster::{RaftReply, RaftRequest};
use serde::Serialize;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};

pub struct RaftServiceImpl {
    pub raft: Raft,
    /// Ends the append streams, which the leader keeps open, so that a graceful shutdown
    /// (it waits for every open call) does not wait for the leader.
    pub shutdown: tokio::sync::watch::Receiver<bool>,
}

fn decode<T: serde::de::DeserializeOwned>(req: &RaftRequest) -> Result<T, Status> {
    serde_json::from_slice(&req.payload).map_err(|e| Status::invalid_argument(format!("bad raft payload: {e}")))
}

fn encode_reply<T: Serialize, E: Serialize>(result: Result<T, E>) -> Result<RaftReply, Status> {
    Ok(match result {
        Ok(v) => RaftReply { payload: serde_json::to_vec(&v).map_err(|e| Status::internal(e.to_string()))?, error: vec![] },
        Err(e) => RaftReply { payload: vec![], error: serde_json::to_vec(&e).map_err(|e| Status::internal(e.to_string()))? },
    })
}

fn reply<T: Serialize, E: Serialize>(result: Result<T, E>) -> Result<Response<RaftReply>, Status> {
    encode_reply(result).map(Response::new)
}

/// Replies a pipelining leader has not read yet, per stream; past this the follower stops
/// reading requests until it does.
const APPEND_STREAM_REPLIES: usize = 64;

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

    type AppendStreamStream = ReceiverStream<Result<RaftReply, Status>>;

    /// One request at a time, in the order sent: each names the one before as its
    /// `prev_log_id`, so handing them to openraft out of order would only make it refuse
    /// them.
    async fn append_stream(
        &self,
        request: Request<Streaming<RaftRequest>>,
    ) -> Result<Response<Self::AppendStreamStream>, Status> {
        let mut requests = request.into_inner();
        let raft = self.raft.clone();
        let mut shutdown = self.shutdown.clone();
        let (replies, stream) = tokio::sync::mpsc::channel(APPEND_STREAM_REPLIES);
        tokio::spawn(async move {
            loop {
                // A transport error, the leader closing the stream or this node shutting
                // down ends it.
                let request = tokio::select! {
                    request = requests.message() => match request {
                        Ok(Some(request)) => request,
                        Ok(None) | Err(_) => break,
                    },
                    _ = shutdown.wait_for(|stop| *stop) => break,
                };
                let reply = match decode(&request) {
                    Ok(req) => encode_reply(raft.append_entries(req).await),
                    Err(status) => Err(status),
                };
                let failed = reply.is_err();
                if replies.send(reply).await.is_err() || failed {
                    break;
                }
            }
        });
        Ok(Response::new(ReceiverStream::new(stream)))
    }

    async fn install_snapshot(&self, request: Request<RaftRequest>) -> Result<Response<RaftReply>, Status> {
        let req = decode(request.get_ref())?;
        reply(self.raft.install_snapshot(req).await)
    }
}

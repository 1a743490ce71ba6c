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
/// appending until it does.
const APPEND_STREAM_REPLIES: usize = 64;

/// Requests read off an append stream ahead of the one being appended.
const APPEND_STREAM_READ_AHEAD: usize = 256;

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
    /// them. A reader takes requests off the wire ahead of the appends (up to
    /// `APPEND_STREAM_READ_AHEAD`), so that requests waiting for their turn do not hold
    /// the connection's flow-control window, which the heartbeats and votes share.
    async fn append_stream(
        &self,
        request: Request<Streaming<RaftRequest>>,
    ) -> Result<Response<Self::AppendStreamStream>, Status> {
        let mut requests = request.into_inner();
        let (queue, mut queued) = tokio::sync::mpsc::channel::<RaftRequest>(APPEND_STREAM_READ_AHEAD);
        let mut shutdown = self.shutdown.clone();
        tokio::spawn(async move {
            // A transport error, the leader closing the stream or this node shutting down
            // ends it.
            loop {
                let request = tokio::select! {
                    request = requests.message() => match request {
                        Ok(Some(request)) => request,
                        Ok(None) | Err(_) => break,
                    },
                    _ = shutdown.wait_for(|stop| *stop) => break,
                };
                if queue.send(request).await.is_err() {
                    break;
                }
            }
        });

        let raft = self.raft.clone();
        let shutdown = self.shutdown.clone();
        let (replies, stream) = tokio::sync::mpsc::channel(APPEND_STREAM_REPLIES);
        tokio::spawn(async move {
            while let Some(request) = queued.recv().await {
                // Nobody reads the answers any more (the leader dropped the stream after
                // a failure and sends these again on a new one), or this node stops.
                if replies.is_closed() || *shutdown.borrow() {
                    break;
                }
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

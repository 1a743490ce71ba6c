//! Everything between nodes: the gRPC server (Raft transport, write forwarding, admin),
//! the Raft network client, and joining a cluster.

pub mod admin_events;
pub mod admin_identities;
pub mod admin_lifecycle;
pub mod admin_membership;
pub mod admin_retention;
pub mod admin_service;
pub mod admin_users;
pub mod blob_transfer_service;
pub mod forward_service;
pub mod identity_admin;
pub mod network;
pub mod raft_service;
pub mod tls;
pub mod upload_forwarding;
pub mod views;

use crate::config::Config;
use crate::meta::Meta;
use meridian_proto::admin::admin_service_client::AdminServiceClient;
use meridian_proto::admin::admin_service_server::AdminServiceServer;
use meridian_proto::admin::AddRegionRequest;
use meridian_proto::cluster::forward_service_server::ForwardServiceServer;
use meridian_proto::cluster::raft_service_server::RaftServiceServer;
pub use network::GrpcNetwork;
use crate::peers::MAX_MESSAGE_BYTES;
use std::time::Duration;

/// Serves the node's gRPC services until `shutdown` fires.
pub async fn serve_grpc(
    config: &Config,
    listener: tokio::net::TcpListener,
    meta: Meta,
    replicator: std::sync::Arc<crate::replicas::Replicator>,
    lifecycle: std::sync::Arc<crate::lifecycle::Lifecycle>,
    uploads: std::sync::Arc<dyn upload_forwarding::UploadHandler>,
    routing: std::sync::Arc<crate::routing::NearestRegion>,
    events: crate::events::Events,
    identities: std::sync::Arc<identity_admin::IdentityAdmin>,
    tls: Option<tls::GrpcTls>,
    mut shutdown: tokio::sync::watch::Receiver<bool>,
) -> Result<(), tonic::transport::Error> {
    let raft = RaftServiceServer::new(raft_service::RaftServiceImpl { raft: meta.raft().clone(), shutdown: shutdown.clone() })
        .max_decoding_message_size(MAX_MESSAGE_BYTES)
        .max_encoding_message_size(MAX_MESSAGE_BYTES);
    let forward =
        ForwardServiceServer::new(forward_service::ForwardServiceImpl { meta: meta.clone(), replicator: replicator.clone(), uploads })
        .max_decoding_message_size(MAX_MESSAGE_BYTES)
        .max_encoding_message_size(MAX_MESSAGE_BYTES);
    let meta_for_blobs = meta.clone();
    let admin = AdminServiceServer::new(admin_service::AdminServiceImpl {
        meta,
        lifecycle,
        replicator: replicator.clone(),
        routing,
        events,
        token: config.admin_token.clone(),
        allow_remote: config.admin_allow_remote,
        election_timeout_max: Duration::from_millis(config.raft.election_timeout_max_ms),
        membership_lock: tokio::sync::Mutex::new(()),
        identities,
    });
    let mut server = tonic::transport::Server::builder();
    if let Some(tls) = tls {
        server = server.tls_config(tls.server())?;
    }
    server
        .tcp_nodelay(true)
        // Receive windows for long links, as `Peers` sets for the streams it receives:
        // a leader's pipelined appends to a far region must not wait for window updates.
        .initial_stream_window_size(crate::peers::BULK_STREAM_WINDOW)
        .initial_connection_window_size(4 * crate::peers::BULK_STREAM_WINDOW)
        .add_service(raft)
        .add_service(forward)
        .add_service(admin)
        .add_service(
            meridian_proto::replication::blob_transfer_server::BlobTransferServer::new(
                blob_transfer_service::BlobTransferImpl {
                    blobs: replicator.blobs().clone(),
                    meta: meta_for_blobs,
                    replicator: replicator.clone(),
                    waiting: Default::default(),
                },
            ),
        )
        .serve_with_incoming_shutdown(tokio_stream::wrappers::TcpListenerStream::new(listener), async move {
            let _ = shutdown.changed().await;
        })
        .await
}

/// Named background task: a node started with `join` and no cluster state asks the
/// listed members, in turn, to add it as a region, until one succeeds.
pub async fn join_cluster(config: Config, meta: Meta, mut shutdown: tokio::sync::watch::Receiver<bool>) {
    let Some(token) = config.admin_token.clone() else {
        tracing::error!("`join` is set but admin_token is not: this node cannot ask to be added; use `meridian admin region add` from a member");
        return;
    };
    let me = config.grpc_addr();
    loop {
        match meta.is_initialized().await {
            Ok(true) => return,
            Ok(false) => {}
            Err(e) => {
                tracing::error!(error = %e, "cannot read raft state");
                return;
            }
        }
        for addr in &config.join {
            let Ok(channel) = meta.peers().channel(addr) else { continue };
            let mut req = tonic::Request::new(AddRegionRequest { grpc_addr: me.clone(), learner: false });
            if let Ok(v) = format!("Bearer {token}").parse() {
                req.metadata_mut().insert("authorization", v);
            }
            req.set_timeout(Duration::from_secs(180));
            match AdminServiceClient::new(channel).add_region(req).await {
                Ok(reply) => {
                    for step in reply.into_inner().steps {
                        tracing::info!(via = %addr, "{step}");
                    }
                    return;
                }
                Err(s) if s.code() == tonic::Code::AlreadyExists => {
                    tracing::info!(via = %addr, reason = %s.message(), "already a member");
                    return;
                }
                Err(s) => tracing::warn!(via = %addr, error = %s.message(), "join attempt failed; retrying"),
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_secs(2)) => {}
            _ = shutdown.changed() => return,
        }
    }
}

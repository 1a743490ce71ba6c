//! Meridian's gRPC services, generated from `proto/meridian/*.proto`.

/// Node-to-node services: Raft transport, write forwarding, identity.
pub mod cluster {
    tonic::include_proto!("meridian.cluster");
}

/// The operator's admin service.
pub mod admin {
    tonic::include_proto!("meridian.admin");
}

/// Blob transfer between regions.
pub mod replication {
    tonic::include_proto!("meridian.replication");
}

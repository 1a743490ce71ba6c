//! Meridian's gRPC services, generated from `proto/meridian/*.proto`.

/// Raft transport between regions (vote, append entries, streamed snapshots).
pub mod raft {
    tonic::include_proto!("meridian.raft");
}

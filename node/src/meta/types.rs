//! openraft's type configuration for Meridian.

use super::command::{Command, CommandResult};
use serde::{Deserialize, Serialize};

/// What the cluster knows about a member node: where to reach it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeInfo {
    pub region: String,
    /// Advertised registry (HTTP) address.
    pub http_addr: String,
    /// Advertised gRPC address (Raft, forwarding, blob transfer).
    pub grpc_addr: String,
    /// The blob store the node writes to when other nodes can share it (`Config::
    /// shared_store`); empty for a node's own disk. Every node of a region has the same.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub shared_store: String,
    /// The registry URL the node's clients reach its region at (`Config::public_url`).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub public_url: String,
}

impl std::fmt::Display for NodeInfo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}@{}", self.region, self.grpc_addr)
    }
}

openraft::declare_raft_types!(
    pub TypeConfig:
        D = Command,
        R = CommandResult,
        NodeId = u64,
        Node = NodeInfo,
        // A file: snapshots are streamed to and from disk, never held whole (see
        // state_machine/snapshot_files.rs).
        SnapshotData = tokio::fs::File,
);

pub type NodeId = u64;
pub type Raft = openraft::Raft<TypeConfig>;
pub type Entry = openraft::Entry<TypeConfig>;
pub type LogId = openraft::LogId<NodeId>;
pub type Vote = openraft::Vote<NodeId>;
pub type StorageError = openraft::StorageError<NodeId>;
pub type StoredMembership = openraft::StoredMembership<NodeId, NodeInfo>;
pub type SnapshotMeta = openraft::SnapshotMeta<NodeId, NodeInfo>;
pub type Snapshot = openraft::Snapshot<TypeConfig>;

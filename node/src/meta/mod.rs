//! Cluster metadata: the Raft group (openraft), its log and its state machine, all in the
//! node's RocksDB. Writes go through [`Meta::propose`]; reads go straight to [`Store`].

pub mod command;
mod log_store;
mod network;
pub mod reads;
pub mod records;
mod state_machine;
pub mod store;
pub mod types;

use crate::config::Config;
use command::{Command, CommandResult};
use openraft::error::{ClientWriteError, RaftError};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;
pub use store::Store;
use types::{NodeInfo, Raft};

#[derive(Debug, thiserror::Error)]
pub enum MetaError {
    #[error("storage: {0}")]
    Store(#[from] store::StoreError),
    #[error("invalid raft configuration: {0}")]
    Config(String),
    #[error("raft stopped: {0}")]
    Fatal(String),
    /// This node cannot commit right now (no leader reachable from here).
    #[error("no quorum reachable from this region: {0}")]
    NoQuorum(String),
}

/// The node's handle on the Raft group.
#[derive(Clone)]
pub struct Meta {
    raft: Raft,
}

impl Meta {
    /// Opens the Raft group on `store`; a node that has never been initialized becomes the
    /// single voter of a new cluster (the first region).
    pub async fn start(config: &Config, store: Store) -> Result<Meta, MetaError> {
        let raft_config = openraft::Config {
            cluster_name: "meridian".to_string(),
            heartbeat_interval: config.raft.heartbeat_ms,
            election_timeout_min: config.raft.election_timeout_min_ms,
            election_timeout_max: config.raft.election_timeout_max_ms,
            snapshot_policy: openraft::SnapshotPolicy::LogsSinceLast(config.raft.snapshot_every),
            max_in_snapshot_log_to_keep: config.raft.max_logs_kept,
            ..Default::default()
        }
        .validate()
        .map_err(|e| MetaError::Config(e.to_string()))?;
        let log_store = log_store::LogStore::new(store.clone());
        let state_machine = state_machine::StateMachine::new(store.clone(), config.data_dir.join("snapshot"));
        let raft = Raft::new(config.node_id, Arc::new(raft_config), network::SingleRegionNetwork, log_store, state_machine)
            .await
            .map_err(|e| MetaError::Fatal(e.to_string()))?;
        if !raft.is_initialized().await.map_err(|e| MetaError::Fatal(e.to_string()))? {
            let me = NodeInfo {
                region: config.region.clone(),
                http_addr: config.listen.to_string(),
                grpc_addr: String::new(),
            };
            raft.initialize(BTreeMap::from([(config.node_id, me)]))
                .await
                .map_err(|e| MetaError::Fatal(e.to_string()))?;
            tracing::info!(node_id = config.node_id, region = %config.region, "initialized a new cluster");
        }
        // A lone voter need not wait out an election timeout after every restart: no
        // other node can hold a newer term, so campaigning at once is safe.
        let voters: Vec<u64> = raft.metrics().borrow().membership_config.membership().voter_ids().collect();
        if voters == [config.node_id] {
            raft.trigger().elect().await.map_err(|e| MetaError::Fatal(e.to_string()))?;
        }
        Ok(Meta { raft })
    }

    /// Commits a command and returns once it is applied on this node (read-your-writes).
    pub async fn propose(&self, cmd: Command) -> Result<CommandResult, MetaError> {
        match self.raft.client_write(cmd).await {
            Ok(resp) => Ok(resp.data),
            Err(RaftError::APIError(ClientWriteError::ForwardToLeader(f))) => {
                Err(MetaError::NoQuorum(format!("this node is not the leader (leader: {:?})", f.leader_id)))
            }
            Err(RaftError::APIError(ClientWriteError::ChangeMembershipError(e))) => {
                Err(MetaError::Fatal(e.to_string()))
            }
            Err(RaftError::Fatal(e)) => Err(MetaError::Fatal(e.to_string())),
        }
    }

    /// Ready to serve writes: a leader is known and the state machine caught up to it.
    pub fn is_ready(&self) -> bool {
        self.raft.metrics().borrow().current_leader.is_some()
    }

    pub fn applied_index(&self) -> u64 {
        self.raft.metrics().borrow().last_applied.map(|l| l.index).unwrap_or(0)
    }

    /// Waits (bounded) until this node leads or follows a leader.
    pub async fn wait_for_leader(&self, timeout: Duration) -> Result<(), MetaError> {
        self.raft
            .wait(Some(timeout))
            .metrics(|m| m.current_leader.is_some(), "leader known")
            .await
            .map(|_| ())
            .map_err(|e| MetaError::NoQuorum(e.to_string()))
    }

    pub async fn shutdown(&self) {
        let _ = self.raft.shutdown().await;
    }
}

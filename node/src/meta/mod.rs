//! Cluster metadata: the Raft group (openraft), its log and its state machine, all in the
//! node's RocksDB. Writes go through [`Meta::propose`] — at the leader directly, from a
//! follower forwarded over gRPC — and return once applied on this node. Reads go
//! straight to [`Store`].

pub mod bases;
mod batching;
pub mod command;
mod completion;
pub mod events;
mod log_store;
pub mod offline;
pub mod patterns;
pub mod quotas;
mod read_index;
pub mod readiness;
pub mod restore;
pub mod retention;
pub mod trash;
pub mod usage;
pub mod reads;
pub mod records;
mod state_machine;
pub mod store;
pub mod summaries;
pub mod types;

use crate::config::Config;
use crate::peers::{Peers, MAX_MESSAGE_BYTES};
use command::{Command, CommandResult};
use meridian_proto::cluster::forward_service_client::ForwardServiceClient;
use meridian_proto::cluster::{ProposeRequest, ReadIndexRequest};
use openraft::ServerState;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};
pub use store::Store;
use types::{NodeId, NodeInfo, Raft};

#[derive(Debug, thiserror::Error)]
pub enum MetaError {
    #[error("storage: {0}")]
    Store(#[from] store::StoreError),
    #[error("invalid raft configuration: {0}")]
    Config(String),
    #[error("raft stopped: {0}")]
    Fatal(String),
    /// This node cannot commit right now (no leader reachable, leader without quorum).
    #[error("no quorum reachable from this region: {0}")]
    NoQuorum(String),
}

impl MetaError {
    /// The same failure for one more of the writes a batch carried.
    fn for_another_waiter(&self) -> MetaError {
        match self {
            MetaError::Store(e) => MetaError::Fatal(e.to_string()),
            MetaError::Config(s) => MetaError::Config(s.clone()),
            MetaError::Fatal(s) => MetaError::Fatal(s.clone()),
            MetaError::NoQuorum(s) => MetaError::NoQuorum(s.clone()),
        }
    }
}

/// Pause between attempts of `catch_up_confirmed` while leadership is moving.
const CONFIRM_RETRY_PAUSE: Duration = Duration::from_millis(100);

/// The node's handle on the Raft group.
#[derive(Clone)]
pub struct Meta {
    raft: Raft,
    inner: Arc<MetaInner>,
}

struct MetaInner {
    node_id: NodeId,
    me: NodeInfo,
    peers: Peers,
    write_timeout: Duration,
    /// The leader's writes, batched (see `batching`).
    batcher: batching::Batcher,
    /// The leader's leadership confirmations, shared by concurrent reads (see `read_index`).
    read_rounds: read_index::ReadIndexRounds,
    /// A leader that has not heard from a quorum for this long refuses writes at once
    /// instead of letting them wait out the write timeout.
    quorum_grace: Duration,
}

/// Which commands this build's state machine understands, reported to the other nodes
/// (`Identify`): 1 before webhooks; 2 with webhooks, the event outbox and base images;
/// 3 with batched writes (`Command::Batch`).
/// A command a member cannot decode would stop it at apply, so the commands a newer
/// version adds are not proposed while a member reports an older one.
pub const STATE_VERSION: u32 = 3;

/// A leader's view of one member, for status and region listings.
#[derive(Debug, Clone)]
pub struct MemberView {
    pub node_id: NodeId,
    pub info: NodeInfo,
    pub voter: bool,
    pub leader: bool,
    /// Last log index the leader knows this member has (leader's view only).
    pub matched: Option<u64>,
}

/// What the cluster is told about this node, from its configuration.
pub fn node_info(config: &crate::config::Config) -> NodeInfo {
    NodeInfo {
        region: config.region.clone(),
        http_addr: config.http_addr(),
        grpc_addr: config.grpc_addr(),
        shared_store: config.shared_store().unwrap_or_default(),
        // Checked when the node starts (`serve`); a node never starts with a bad one.
        public_url: config.public_url().unwrap_or_default(),
    }
}

impl Meta {
    /// Opens the Raft group on `store`. A node without Raft state and without `join`
    /// addresses becomes the single voter of a new cluster (the first region); one with
    /// `join` addresses waits to be added. `network` carries Raft's messages to the other
    /// nodes (the composition root hands in `cluster`'s gRPC one); `peers` are the channels
    /// writes from a follower are forwarded on.
    pub async fn start<N>(config: &Config, store: Store, peers: Peers, network: N) -> Result<Meta, MetaError>
    where
        N: openraft::RaftNetworkFactory<types::TypeConfig>,
    {
        let raft_config = openraft::Config {
            cluster_name: "meridian".to_string(),
            heartbeat_interval: config.raft.heartbeat_ms,
            election_timeout_min: config.raft.election_timeout_min_ms,
            election_timeout_max: config.raft.election_timeout_max_ms,
            snapshot_policy: openraft::SnapshotPolicy::LogsSinceLast(config.raft.snapshot_every),
            max_in_snapshot_log_to_keep: config.raft.max_logs_kept,
            // Up to this many entries per AppendEntries. The message's bytes are bounded
            // by the network, which asks openraft to send fewer when they pass
            // `cluster::network::APPEND_SPLIT_BYTES`.
            max_payload_entries: 1024,
            // Entries go to a follower while earlier ones are unanswered (the patched
            // openraft's pipelining; the network streams them in order), up to 8 × 1024
            // in flight: a write does not wait for the previous one's round trip to a
            // far region before it is sent.
            pipeline_depth: 8,
            install_snapshot_timeout: 10_000,
            ..Default::default()
        }
        .validate()
        .map_err(|e| MetaError::Config(e.to_string()))?;
        // A data directory serves the region it was created for: its local state (blob
        // copies, replication queue) is that region's, whatever the configuration says.
        match store.owner_region()? {
            Some(owner) if owner != config.region => {
                return Err(MetaError::Config(format!(
                    "the data directory {} belongs to region {owner:?}, not {:?}",
                    config.data_dir.display(),
                    config.region
                )))
            }
            Some(_) => {}
            None => store.set_owner_region(&config.region)?,
        }
        let log_store = log_store::LogStore::new(store.clone());
        let state_machine =
            state_machine::StateMachine::new(store.clone(), config.region.clone(), &config.data_dir);
        let raft = Raft::new(config.node_id, Arc::new(raft_config), network, log_store, state_machine)
            .await
            .map_err(|e| MetaError::Fatal(e.to_string()))?;
        let me = node_info(config);
        let batcher = batching::Batcher::start(
            raft.clone(),
            config.node_id,
            Duration::from_millis(config.raft.write_timeout_ms),
            config.raft.batch_writes,
        );
        let read_rounds = read_index::ReadIndexRounds::start(raft.clone(), Duration::from_millis(config.raft.write_timeout_ms));
        let meta = Meta {
            raft,
            inner: Arc::new(MetaInner {
                node_id: config.node_id,
                me,
                peers,
                write_timeout: Duration::from_millis(config.raft.write_timeout_ms),
                batcher,
                read_rounds,
                quorum_grace: Duration::from_millis(config.raft.election_timeout_max_ms),
            }),
        };
        if config.join.is_empty() && !meta.is_initialized().await? {
            meta.initialize().await?;
        }
        // A lone voter need not wait out an election timeout after every restart: no
        // other node can hold a newer term, so campaigning at once is safe.
        let voters: Vec<u64> = meta.raft.metrics().borrow().membership_config.membership().voter_ids().collect();
        if voters == [config.node_id] {
            meta.raft.trigger().elect().await.map_err(|e| MetaError::Fatal(e.to_string()))?;
        }
        Ok(meta)
    }

    /// Resolves when the Raft core has stopped for good (a storage error: the log or state
    /// machine could not be written), with the reason. A node in that state can no longer
    /// take part in the cluster, so the caller shuts it down and lets the supervisor restart
    /// it on its data directory — crash-only, as after a failed fsync nothing written since
    /// the last good one can be trusted to be in the page cache.
    pub async fn stopped(&self) -> String {
        let mut metrics = self.raft.metrics();
        loop {
            if let Err(fatal) = &metrics.borrow_and_update().running_state {
                return fatal.to_string();
            }
            if metrics.changed().await.is_err() {
                return "the Raft core ended".to_string();
            }
        }
    }

    pub fn raft(&self) -> &Raft {
        &self.raft
    }

    pub fn node_id(&self) -> NodeId {
        self.inner.node_id
    }

    pub fn me(&self) -> &NodeInfo {
        &self.inner.me
    }

    pub fn peers(&self) -> &Peers {
        &self.inner.peers
    }

    pub async fn is_initialized(&self) -> Result<bool, MetaError> {
        self.raft.is_initialized().await.map_err(|e| MetaError::Fatal(e.to_string()))
    }

    /// Makes this node the single voter of a new cluster.
    pub async fn initialize(&self) -> Result<(), MetaError> {
        self.raft
            .initialize(BTreeMap::from([(self.inner.node_id, self.inner.me.clone())]))
            .await
            .map_err(|e| MetaError::Fatal(e.to_string()))?;
        tracing::info!(node_id = self.inner.node_id, region = %self.inner.me.region, "initialized a new cluster");
        Ok(())
    }

    /// The leader's id and advertised addresses, when one is known.
    pub fn leader(&self) -> Option<(NodeId, NodeInfo)> {
        let m = self.raft.metrics().borrow().clone();
        let id = m.current_leader?;
        let info = m.membership_config.membership().get_node(&id).cloned()?;
        Some((id, info))
    }

    pub fn is_leader(&self) -> bool {
        self.raft.metrics().borrow().state == ServerState::Leader
    }

    /// Commits a command and returns once it is applied on this node (read-your-writes).
    pub async fn propose(&self, cmd: Command) -> Result<CommandResult, MetaError> {
        let deadline = Instant::now() + self.inner.write_timeout;
        match self.leader() {
            Some((id, _)) if id == self.inner.node_id => Ok(self.write_at_leader(cmd).await?.0),
            Some((_, leader)) => self.forward(&leader.grpc_addr, cmd, deadline).await,
            None => Err(MetaError::NoQuorum("no leader is known to this node".into())),
        }
    }

    /// Writes through the local Raft, which must be the leader. Returns the result and the
    /// entry's log index.
    pub async fn write_at_leader(&self, cmd: Command) -> Result<(CommandResult, u64), MetaError> {
        if matches!(cmd, Command::Batch(_)) {
            return Err(MetaError::Fatal("a batch is formed by the leader, never proposed".into()));
        }
        let m = self.raft.metrics().borrow().clone();
        if let Some(ms) = m.millis_since_quorum_ack {
            if Duration::from_millis(ms) > self.inner.quorum_grace && m.membership_config.membership().voter_ids().count() > 1 {
                return Err(MetaError::NoQuorum(format!("the leader has not heard from a quorum for {ms} ms")));
            }
        }
        self.inner.batcher.write(cmd).await
    }

    /// Notes the `STATE_VERSION` a member reported (its probe's answer); the leader
    /// batches writes only while every member reported `BATCHES_FROM_VERSION` or later.
    pub fn note_state_version(&self, member: NodeId, state_version: u32) {
        self.inner.batcher.note_version(member, state_version);
    }

    /// Sends a write to the leader and waits until this node has applied it.
    async fn forward(&self, leader_addr: &str, cmd: Command, deadline: Instant) -> Result<CommandResult, MetaError> {
        let unreachable = |e: String| MetaError::NoQuorum(format!("leader at {leader_addr} unreachable: {e}"));
        let payload = serde_json::to_vec(&cmd).map_err(|e| MetaError::Fatal(e.to_string()))?;
        let channel = self.inner.peers.channel(leader_addr).map_err(|e| unreachable(e.to_string()))?;
        let mut client = ForwardServiceClient::new(channel)
            .max_decoding_message_size(MAX_MESSAGE_BYTES)
            .max_encoding_message_size(MAX_MESSAGE_BYTES);
        let mut request = tonic::Request::new(ProposeRequest { command: payload });
        request.set_timeout(deadline.saturating_duration_since(Instant::now()));
        let reply = client.propose(request).await.map_err(|s| unreachable(s.message().to_string()))?.into_inner();
        if !reply.error.is_empty() {
            return Err(MetaError::NoQuorum(reply.error));
        }
        let result: CommandResult = serde_json::from_slice(&reply.result).map_err(|e| MetaError::Fatal(e.to_string()))?;
        self.wait_applied(reply.log_index, deadline).await?;
        Ok(result)
    }

    async fn wait_applied(&self, index: u64, deadline: Instant) -> Result<(), MetaError> {
        let wait = deadline.saturating_duration_since(Instant::now()).max(Duration::from_millis(100));
        self.raft
            .wait(Some(wait))
            .applied_index_at_least(Some(index), "forwarded write applied locally")
            .await
            .map(|_| ())
            .map_err(|e| MetaError::NoQuorum(format!("committed but not yet applied here: {e}")))
    }

    /// Linearizable read barrier: returns once this node has applied every write the
    /// leader had committed when the call started.
    pub async fn read_barrier(&self) -> Result<(), MetaError> {
        self.barrier(true, self.inner.write_timeout).await
    }

    /// Catches up with every write the node it believes leads has committed, giving up
    /// after `timeout`. Unlike `read_barrier` the leader does not first confirm its
    /// leadership with a quorum: a follower pays one round trip to the leader, the leader
    /// nothing. Cheap and nearly always enough, but a deposed leader that has not heard of
    /// its successor answers from a stale index: before saying something does not exist,
    /// use `catch_up_confirmed`.
    pub async fn catch_up(&self, timeout: Duration) -> Result<(), MetaError> {
        self.barrier(false, timeout.min(self.inner.write_timeout)).await
    }

    /// Before this node answers "does not exist": waits until it has applied every write
    /// a leader that has just confirmed its leadership with a quorum had committed,
    /// following leadership as it moves, for up to `timeout`.
    ///
    /// Why confirmed, unlike `catch_up`: a node frozen or cut off while it led still
    /// believes it leads when it resumes, and its own commit index is stale until it hears
    /// the new term; asking it (or answering as it) can report acknowledged content
    /// missing. A node that cannot get a confirmed answer in time returns the error, so
    /// the caller can say "cannot tell" instead of "absent".
    pub async fn catch_up_confirmed(&self, timeout: Duration) -> Result<(), MetaError> {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let err = match self.barrier(true, left).await {
                Ok(()) => return Ok(()),
                Err(e) => e,
            };
            // Leadership may be moving (an election, a deposed leader stepping down):
            // look again once this node may have heard of the new leader.
            if deadline.saturating_duration_since(Instant::now()) < CONFIRM_RETRY_PAUSE * 2 {
                return Err(err);
            }
            tokio::time::sleep(CONFIRM_RETRY_PAUSE).await;
        }
    }

    async fn barrier(&self, confirm_leadership: bool, timeout: Duration) -> Result<(), MetaError> {
        let deadline = Instant::now() + timeout;
        match self.leader() {
            Some((id, _)) if id == self.inner.node_id => {
                let index = if confirm_leadership {
                    tokio::time::timeout(timeout, self.leader_read_index())
                        .await
                        .map_err(|_| MetaError::NoQuorum("could not confirm leadership in time".into()))??
                } else {
                    self.leader_commit_index().await?
                };
                self.wait_applied(index, deadline).await
            }
            Some((_, leader)) => {
                let unreachable = |e: String| MetaError::NoQuorum(format!("leader unreachable: {e}"));
                let channel = self.inner.peers.channel(&leader.grpc_addr).map_err(|e| unreachable(e.to_string()))?;
                let mut request = tonic::Request::new(ReadIndexRequest { skip_leadership_check: !confirm_leadership });
                request.set_timeout(timeout);
                let reply = ForwardServiceClient::new(channel)
                    .read_index(request)
                    .await
                    .map_err(|s| unreachable(s.message().to_string()))?
                    .into_inner();
                if !reply.error.is_empty() {
                    return Err(MetaError::NoQuorum(reply.error));
                }
                self.wait_applied(reply.read_index, deadline).await
            }
            None => Err(MetaError::NoQuorum("no leader is known to this node".into())),
        }
    }

    /// At the leader: the commit index as the leader knows it, without a quorum round.
    pub async fn leader_commit_index(&self) -> Result<u64, MetaError> {
        self.raft
            .with_raft_state(|st| st.committed.map(|l| l.index).unwrap_or(0))
            .await
            .map_err(|e| MetaError::Fatal(e.to_string()))
    }

    /// At the leader: confirms leadership with a quorum and returns the read index (one
    /// confirmation serves every read waiting when it starts; see `read_index`).
    pub async fn leader_read_index(&self) -> Result<u64, MetaError> {
        self.inner.read_rounds.read_index().await.map_err(MetaError::NoQuorum)
    }

    /// Ready to serve: a member of a cluster that knows its leader.
    pub fn is_ready(&self) -> bool {
        let m = self.raft.metrics().borrow().clone();
        m.current_leader.is_some() && m.membership_config.membership().get_node(&self.inner.node_id).is_some()
    }

    pub fn applied_index(&self) -> u64 {
        self.raft.metrics().borrow().last_applied.map(|l| l.index).unwrap_or(0)
    }

    /// Every member with its role and, at the leader, replication progress.
    pub fn members(&self) -> Vec<MemberView> {
        let m = self.raft.metrics().borrow().clone();
        let membership = m.membership_config.membership();
        let voters: Vec<NodeId> = membership.voter_ids().collect();
        let replication = m.replication.clone().unwrap_or_default();
        membership
            .nodes()
            .map(|(id, info)| MemberView {
                node_id: *id,
                info: info.clone(),
                voter: voters.contains(id),
                leader: m.current_leader == Some(*id),
                matched: if *id == self.inner.node_id && m.state == ServerState::Leader {
                    m.last_log_index
                } else {
                    replication.get(id).and_then(|l| l.map(|l| l.index))
                },
            })
            .collect()
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

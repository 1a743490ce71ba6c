//! The admin service's membership calls: add, remove and drain a region, and move
//! leadership. The service checks the admin token and, at a follower, passes the call on
//! to the leader; these run at the leader. Membership changes run one at a time through
//! `membership_lock`.

use super::admin_service::{internal, AdminServiceImpl, CATCH_UP_TIMEOUT, IDENTIFY_TIMEOUT};
use crate::peers::grpc_url;
use crate::meta::types::{NodeId, NodeInfo};
use crate::meta::MemberView;
use futures::future::join_all;
use meridian_proto::admin::{AddRegionReply, AddRegionRequest, DrainRegionReply, RemoveRegionReply, TransferLeaderReply};
use meridian_proto::cluster::forward_service_client::ForwardServiceClient;
use meridian_proto::cluster::{CampaignRequest, HoldElectionsRequest};
use meridian_replication::Digest;
use openraft::ChangeMembers;
use std::collections::BTreeSet;
use std::time::{Duration, Instant};
use tonic::{Request, Status};

/// A membership change that cannot commit in this time is reported as failed.
const MEMBERSHIP_CHANGE_TIMEOUT: Duration = Duration::from_secs(20);

/// The nodes of region `name`, by node id.
fn region_nodes(svc: &AdminServiceImpl, name: &str) -> Result<Vec<MemberView>, Status> {
    let mut nodes: Vec<MemberView> = svc.meta.members().into_iter().filter(|m| m.info.region == name).collect();
    if nodes.is_empty() {
        return Err(Status::not_found(format!("no region named {name:?} in the cluster")));
    }
    nodes.sort_by_key(|m| m.node_id);
    Ok(nodes)
}

/// The node of region `name` an operator means: `node_id`, or (0) the region's only node.
fn pick_node(name: &str, nodes: &[MemberView], node_id: NodeId) -> Result<MemberView, Status> {
    if node_id != 0 {
        return nodes.iter().find(|m| m.node_id == node_id).cloned().ok_or_else(|| {
            Status::not_found(format!("region {name:?} has no node {node_id} (its nodes: {})", describe_nodes(nodes)))
        });
    }
    match nodes {
        [only] => Ok(only.clone()),
        _ => Err(Status::invalid_argument(format!(
            "region {name:?} has {} nodes ({}); say which with --node ID",
            nodes.len(),
            describe_nodes(nodes)
        ))),
    }
}

fn describe_nodes(nodes: &[MemberView]) -> String {
    nodes.iter().map(|m| format!("{} at {}", m.node_id, m.info.grpc_addr)).collect::<Vec<_>>().join(", ")
}

/// A node may join a region that already has nodes only when all of them read and write
/// one shared object store: a region is one holder of every blob it stores, so its nodes
/// must see the same blobs.
fn check_same_store(region_nodes: &[&MemberView], identity: &meridian_proto::cluster::NodeIdentity, addr: &str) -> Result<(), Status> {
    let Some(first) = region_nodes.first() else { return Ok(()) };
    if first.info.shared_store.is_empty() || identity.shared_store.is_empty() {
        // Not `already_exists`: a joining node takes that as "I am a member" and stops
        // asking, where this is a configuration to fix.
        return Err(Status::failed_precondition(format!(
            "a region named {:?} already exists (node {}); a region has several nodes only when every node keeps its \
             blobs in one shared object store ([storage] kind = \"s3\" with the same endpoint, bucket and prefix)",
            identity.region, first.node_id
        )));
    }
    if first.info.shared_store != identity.shared_store {
        return Err(Status::failed_precondition(format!(
            "region {:?} keeps its blobs in {}, but the node at {addr} uses {}; every node of a region must use the same store",
            identity.region, first.info.shared_store, identity.shared_store
        )));
    }
    Ok(())
}

async fn hold_elections(svc: &AdminServiceImpl, members: &[MemberView], except: NodeId, hold: bool) {
    for m in members.iter().filter(|m| m.node_id != except && m.node_id != svc.meta.node_id()) {
        if let Ok(channel) = svc.meta.peers().channel(&m.info.grpc_addr) {
            let mut req = Request::new(HoldElectionsRequest { hold });
            req.set_timeout(IDENTIFY_TIMEOUT);
            if let Err(e) = ForwardServiceClient::new(channel).hold_elections(req).await {
                tracing::warn!(region = %m.info.region, error = %e.message(), "could not change election hold");
            }
        }
    }
}

/// Referenced blobs whose only verified copy is in `region`, with their sizes.
fn sole_copies(svc: &AdminServiceImpl, region: &str) -> Result<Vec<(Digest, u64)>, crate::meta::store::StoreError> {
    use crate::meta::records::BlobLocation;
    use crate::meta::store::CF_SM_BLOBS;
    let store = svc.replicator.store();
    let mut out = Vec::new();
    // Streamed past the block cache: only the sole copies are kept, not every record.
    let blobs = store.cf(CF_SM_BLOBS)?;
    let mode = rocksdb::IteratorMode::Start;
    for item in store.db().iterator_cf_opt(blobs, crate::meta::store::Store::bulk_read_options(), mode) {
        let (key, value) = item?;
        let location = BlobLocation::decode(&value)?;
        if location.regions.len() == 1 && location.regions[0] == region {
            if let Ok(d) = Digest::parse(&String::from_utf8_lossy(&key)) {
                out.push((d, location.size));
            }
        }
    }
    Ok(out)
}

fn raft_status(e: impl std::fmt::Display) -> Status {
    Status::failed_precondition(e.to_string())
}

/// A membership change, retried briefly while a previous change is still committing.
async fn change_membership(
    raft: &crate::meta::types::Raft,
    change: ChangeMembers<NodeId, NodeInfo>,
    retain: bool,
) -> Result<(), Status> {
    let mut attempt = 0;
    loop {
        let attempt_result = tokio::time::timeout(MEMBERSHIP_CHANGE_TIMEOUT, raft.change_membership(change.clone(), retain))
            .await
            .map_err(|_| Status::deadline_exceeded("the membership change did not commit in time (is a quorum reachable?)"))?;
        match attempt_result {
            Ok(_) => return Ok(()),
            Err(e) if attempt < 20 && e.to_string().contains("undergoing a configuration change") => {
                attempt += 1;
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(e) => return Err(raft_status(e)),
        }
    }
}

pub async fn add_region(svc: &AdminServiceImpl, req: AddRegionRequest) -> Result<AddRegionReply, Status> {
    let _serialized = svc.membership_lock.lock().await;
    let AddRegionRequest { grpc_addr, learner } = req;
    let addr = grpc_addr.trim_start_matches("http://").trim_start_matches("https://").to_string();
    let identity = svc.identify(&grpc_url(&addr)).await?;
    let members = svc.meta.members();
    let raft = svc.meta.raft();
    if let Some(m) = members.iter().find(|m| m.node_id == identity.node_id) {
        let same = m.info.region == identity.region && m.info.grpc_addr == identity.grpc_addr;
        if !same {
            return Err(Status::already_exists(format!(
                "node id {} is already region {:?} of this cluster",
                identity.node_id, m.info.region
            )));
        }
        // The same node asking again: a join whose promotion did not finish is
        // completed; anything else is a duplicate.
        if !m.voter && !learner {
            change_membership(raft, ChangeMembers::AddVoterIds(BTreeSet::from([m.node_id])), false).await?;
            let steps = vec![format!("promoted {} (already a learner) to voter", m.info.region)];
            let region = svc.regions().await.into_iter().find(|r| r.node_id == m.node_id);
            return Ok(AddRegionReply { region, steps });
        }
        return Err(Status::already_exists(format!(
            "{} (node {}, {}) is already a member of this cluster",
            m.info.region, m.node_id, m.info.grpc_addr
        )));
    }
    let same_region: Vec<&MemberView> = members.iter().filter(|m| m.info.region == identity.region).collect();
    check_same_store(&same_region, &identity, &addr)?;
    if let Some(m) = members
        .iter()
        .find(|m| m.info.grpc_addr == identity.grpc_addr || m.info.grpc_addr == addr)
    {
        return Err(Status::already_exists(format!("address {addr} is already region {:?}", m.info.region)));
    }
    if identity.initialized {
        return Err(Status::failed_precondition(format!(
            "the node at {addr} already belongs to another cluster; start it with an empty data directory and `join`"
        )));
    }
    // The log it would receive may hold entries only newer versions apply (batches,
    // webhooks): an older node would stop at the first one.
    if identity.state_version < crate::meta::STATE_VERSION {
        return Err(Status::failed_precondition(format!(
            "the node at {addr} runs an older version of meridian (state version {}, this cluster {}): upgrade it, then add it",
            identity.state_version,
            crate::meta::STATE_VERSION
        )));
    }
    let info = NodeInfo {
        region: identity.region.clone(),
        http_addr: identity.http_addr,
        grpc_addr: identity.grpc_addr,
        shared_store: identity.shared_store,
        public_url: identity.public_url,
    };
    let mut steps = Vec::new();
    tokio::time::timeout(CATCH_UP_TIMEOUT, raft.add_learner(identity.node_id, info, true))
        .await
        .map_err(|_| Status::deadline_exceeded("the new region did not catch up in time; it stays a learner"))?
        .map_err(raft_status)?;
    steps.push(format!("joined as learner: region {} (node {})", identity.region, identity.node_id));
    let caught_up = raft.metrics().borrow().last_log_index.unwrap_or(0);
    steps.push(format!("caught up to log index {caught_up}"));
    if !learner {
        change_membership(raft, ChangeMembers::AddVoterIds(BTreeSet::from([identity.node_id])), false).await?;
        steps.push(format!("promoted {} to voter", identity.region));
    }
    let region = svc
        .regions()
        .await
        .into_iter()
        .find(|r| r.node_id == identity.node_id)
        .ok_or_else(|| internal("the added region is missing from the membership"))?;
    tracing::info!(region = %identity.region, node_id = identity.node_id, learner, "region added");
    Ok(AddRegionReply { region: Some(region), steps })
}

/// Removes node `node_id` of region `name` (0: the region's only node). The last node of
/// a region takes the region with it, so it keeps the drain-first rule; any other node
/// leaves the region's blobs where they are, in the store its other nodes share.
pub async fn remove_region(svc: &AdminServiceImpl, name: String, node_id: NodeId) -> Result<RemoveRegionReply, Status> {
    let _serialized = svc.membership_lock.lock().await;
    let nodes = region_nodes(svc, &name)?;
    let target = pick_node(&name, &nodes, node_id)?;
    let last_of_region = nodes.len() == 1;
    let voters: Vec<NodeId> = svc.meta.members().iter().filter(|m| m.voter).map(|m| m.node_id).collect();
    if target.leader {
        return Err(Status::failed_precondition(format!(
            "{name} is the leader; move leadership first (meridian admin leader transfer REGION)"
        )));
    }
    let sole = if last_of_region { sole_copies(svc, &name).map_err(internal)? } else { Vec::new() };
    if !sole.is_empty() {
        let bytes: u64 = sole.iter().map(|(_, size)| size).sum();
        return Err(Status::failed_precondition(format!(
            "{name} holds the only copy of {} referenced blob(s) ({bytes} bytes); run `meridian admin region drain {name}` first",
            sole.len()
        )));
    }
    let mut steps = Vec::new();
    let raft = svc.meta.raft();
    if target.voter {
        if voters.len() <= 2 {
            return Err(Status::failed_precondition(format!(
                "removing {name} would leave {} voter(s); the leader needs a peer — add a region first",
                voters.len() - 1
            )));
        }
        // The remaining voters must still form a reachable majority, or the change
        // itself could never commit.
        let remaining: Vec<MemberView> =
            svc.meta.members().into_iter().filter(|m| m.voter && m.node_id != target.node_id).collect();
        let probes = join_all(remaining.iter().map(|m| svc.identify(&m.info.grpc_addr))).await;
        let unreachable: Vec<String> = remaining
            .iter()
            .zip(&probes)
            .filter(|(m, p)| p.is_err() && m.node_id != svc.meta.node_id())
            .map(|(m, _)| m.info.region.clone())
            .collect();
        let reachable = remaining.len() - unreachable.len();
        if reachable * 2 <= remaining.len() {
            return Err(Status::failed_precondition(format!(
                "removing {name} would leave no reachable quorum ({} unreachable); bring them back first",
                unreachable.join(", ")
            )));
        }
        change_membership(raft, ChangeMembers::RemoveVoters(BTreeSet::from([target.node_id])), true).await?;
        steps.push(format!("demoted {name} (node {}) to learner", target.node_id));
    }
    change_membership(raft, ChangeMembers::RemoveNodes(BTreeSet::from([target.node_id])), false).await?;
    if last_of_region {
        steps.push(format!("removed {name} (node {}) from the cluster", target.node_id));
    } else {
        steps.push(format!(
            "removed node {} of {name} from the cluster; {} node(s) of {name} remain",
            target.node_id,
            nodes.len() - 1
        ));
    }
    tracing::info!(region = %name, node_id = target.node_id, "region removed");
    Ok(RemoveRegionReply { steps })
}

pub async fn transfer_leader(svc: &AdminServiceImpl, name: String) -> Result<TransferLeaderReply, Status> {
    let nodes = region_nodes(svc, &name)?;
    if nodes.iter().any(|m| m.leader) {
        return Ok(TransferLeaderReply { leader: name });
    }
    // Any voter of the region will do; the lowest node id, so the choice is predictable.
    let Some(target) = nodes.into_iter().find(|m| m.voter) else {
        return Err(Status::failed_precondition(format!("{name} has only learners; only voters can lead")));
    };
    let raft = svc.meta.raft().clone();
    // openraft 0.9 has no leadership transfer; do it by hand: hold every other
    // node's elections and this leader's heartbeats until followers' leases lapse,
    // then let the (caught-up) target campaign alone.
    let last = raft.metrics().borrow().last_log_index;
    let caught_up = raft
        .wait(Some(Duration::from_secs(10)))
        .metrics(|m| m.replication.as_ref().and_then(|r| r.get(&target.node_id).cloned().flatten()).map(|l| l.index) >= last, "target caught up")
        .await;
    if caught_up.is_err() {
        return Err(Status::failed_precondition(format!("{name} is not caught up with the leader; try again")));
    }
    let members = svc.meta.members();
    hold_elections(svc, &members, target.node_id, true).await;
    raft.runtime_config().elect(false);
    raft.runtime_config().heartbeat(false);
    tokio::time::sleep(svc.election_timeout_max + Duration::from_millis(100)).await;
    let channel = svc.meta.peers().channel(&target.info.grpc_addr)?;
    let campaign = ForwardServiceClient::new(channel).campaign(Request::new(CampaignRequest {})).await;
    let deadline = Instant::now() + svc.election_timeout_max * 3;
    let elected = raft
        .wait(Some(deadline.saturating_duration_since(Instant::now())))
        .metrics(|m| m.current_leader == Some(target.node_id), "target elected")
        .await;
    raft.runtime_config().heartbeat(true);
    raft.runtime_config().elect(true);
    hold_elections(svc, &members, target.node_id, false).await;
    if let Err(s) = campaign {
        return Err(Status::unavailable(format!("could not ask {name} to campaign: {}", s.message())));
    }
    elected.map_err(|_| Status::unavailable(format!("{name} did not win the election; leadership unchanged or moved elsewhere")))?;
    tracing::info!(region = %name, "leadership transferred");
    Ok(TransferLeaderReply { leader: name })
}

pub async fn drain_region(svc: &AdminServiceImpl, name: String) -> Result<DrainRegionReply, Status> {
    region_nodes(svc, &name)?;
    let me = svc.meta.me().region.clone();
    if name == me {
        return Err(Status::failed_precondition(format!(
            "{name} is the leader's region; move leadership first (meridian admin leader transfer REGION)"
        )));
    }
    let sole = sole_copies(svc, &name).map_err(internal)?;
    let mut steps = vec![format!("{name} holds the only copy of {} blob(s)", sole.len())];
    let (mut blobs_copied, mut bytes_copied) = (0u64, 0u64);
    for (digest, size) in sole {
        let transfer = svc
            .replicator
            .fetch(&digest, size, crate::replicas::Reason::Background)
            .map_err(internal)?;
        if transfer.finished().await == crate::replicas::transfer::Progress::Failed {
            return Err(Status::unavailable(format!(
                "could not copy {digest} from {name} (copied {blobs_copied} so far); retry the drain"
            )));
        }
        blobs_copied += 1;
        bytes_copied += size;
    }
    // The replica records are batched; wait until they are applied so a remove right
    // after the drain sees them.
    let deadline = Instant::now() + Duration::from_secs(30);
    while !sole_copies(svc, &name).map_err(internal)?.is_empty() {
        if Instant::now() > deadline {
            return Err(Status::deadline_exceeded("copies landed but their records did not commit in time"));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    steps.push(format!("copied {blobs_copied} blob(s), {bytes_copied} bytes, to {me}"));
    steps.push(format!("{name} can now be removed without losing any blob"));
    Ok(DrainRegionReply { steps, blobs_copied, bytes_copied })
}

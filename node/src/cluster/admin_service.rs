//! The operator's admin service: membership, leadership, snapshots, status, users, and
//! (in [`super::admin_identities`]) scope maps, robot tokens and signing keys. Every call
//! needs the admin token; calls that change membership run at the leader (a follower
//! passes them on with the caller's credentials). Identity changes are proposed from the
//! contacted node (Meta forwards them to the leader) and identities are listed from its store.

use super::admin_identities as identities;
use super::admin_lifecycle as lifecycle;
use super::admin_retention as retention;
use super::peers::grpc_url;
use crate::auth::{now_unix, password};
use crate::meta::command::{Command, CommandResult};
use crate::meta::records::{Role, UserRecord};
use crate::meta::types::{NodeId, NodeInfo};
use crate::meta::{MemberView, Meta, MetaError};
use futures::future::join_all;
use meridian_proto::admin::admin_service_client::AdminServiceClient;
use meridian_proto::admin::admin_service_server::AdminService;
use meridian_proto::admin::*;
use meridian_proto::cluster::forward_service_client::ForwardServiceClient;
use meridian_proto::cluster::{
    CampaignRequest, HoldElectionsRequest, IdentifyRequest, NodeIdentity, NodeReplicationStats, ReplicationStatsRequest,
};
use meridian_replication::Digest;
use openraft::ChangeMembers;
use std::collections::BTreeSet;
use std::time::{Duration, Instant};
use tonic::transport::Channel;
use tonic::{Request, Response, Status};

/// How long a region may take to catch up before `add_region` gives up waiting.
const CATCH_UP_TIMEOUT: Duration = Duration::from_secs(120);
const IDENTIFY_TIMEOUT: Duration = Duration::from_secs(2);
/// How long `region list` and `status` wait for the leader's view before giving their own.
/// The leader probes every member (up to `IDENTIFY_TIMEOUT`), so this leaves it room.
const LEADER_VIEW_TIMEOUT: Duration = Duration::from_secs(3);
/// A membership change that cannot commit in this time is reported as failed.
const MEMBERSHIP_CHANGE_TIMEOUT: Duration = Duration::from_secs(20);
/// How long a user change waits for this node to catch up with the leader before it
/// checks what exists.
pub(super) const USER_CATCH_UP_TIMEOUT: Duration = Duration::from_secs(5);
/// Longest user name.
const MAX_USER_NAME: usize = 64;
/// Shortest password a user may be given.
const MIN_PASSWORD_CHARS: usize = 8;

pub struct AdminServiceImpl {
    pub meta: Meta,
    pub lifecycle: std::sync::Arc<crate::lifecycle::Lifecycle>,
    pub replicator: std::sync::Arc<crate::replicas::Replicator>,
    pub token: Option<String>,
    pub allow_remote: bool,
    /// Longest election timeout: how long followers' leader leases last.
    pub election_timeout_max: Duration,
    /// Membership changes run one at a time: openraft refuses a change while another is
    /// still being committed.
    pub membership_lock: tokio::sync::Mutex<()>,
    /// User changes through this node run one at a time, so "is this the last admin?"
    /// cannot be answered for two removals at once.
    pub users_lock: tokio::sync::Mutex<()>,
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

pub(super) fn internal(e: impl std::fmt::Display) -> Status {
    Status::internal(e.to_string())
}

/// A failed proposal or catch-up: `unavailable` when no quorum is reachable (the caller
/// may retry), `internal` otherwise.
pub(super) fn meta_status(e: MetaError) -> Status {
    match e {
        MetaError::NoQuorum(m) => Status::unavailable(format!("no quorum reachable: {m}")),
        other => internal(other),
    }
}

/// A user name: 1–64 characters of `[a-z0-9._-]`, starting with a letter or digit.
fn check_user_name(name: &str) -> Result<(), Status> {
    check_name("user", name)
}

/// A user, scope map or token name: 1–64 characters of `[a-z0-9._-]`, starting with a
/// letter or digit. `kind` names what it is in the error.
pub(super) fn check_name(kind: &str, name: &str) -> Result<(), Status> {
    let valid = !name.is_empty()
        && name.len() <= MAX_USER_NAME
        && name.starts_with(|c: char| c.is_ascii_lowercase() || c.is_ascii_digit())
        && name.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '.' | '_' | '-'));
    if valid {
        Ok(())
    } else {
        Err(Status::invalid_argument(format!(
            "invalid {kind} name {name:?}: use 1-{MAX_USER_NAME} characters of a-z, 0-9, '.', '_' and '-', \
             starting with a letter or digit"
        )))
    }
}

/// A role name; empty means "not given".
fn check_role(role: &str) -> Result<Option<Role>, Status> {
    if role.is_empty() {
        return Ok(None);
    }
    Role::parse(role)
        .map(Some)
        .ok_or_else(|| Status::invalid_argument(format!("invalid role {role:?}: expected reader, writer or admin")))
}

/// Checks a `PutUser` request's fields; returns the role it names, if any. Never puts the
/// password into a message.
fn check_put_user(req: &PutUserRequest) -> Result<Option<Role>, Status> {
    check_user_name(&req.name)?;
    let role = check_role(&req.role)?;
    if !req.replace {
        if role.is_none() {
            return Err(Status::invalid_argument("a new user needs a role (reader, writer or admin)"));
        }
        if req.password.is_empty() {
            return Err(Status::invalid_argument("a new user needs a password"));
        }
    } else if role.is_none() && req.password.is_empty() {
        return Err(Status::invalid_argument("nothing to change: give a new role, a new password, or both"));
    }
    if !req.password.is_empty() && req.password.chars().count() < MIN_PASSWORD_CHARS {
        return Err(Status::invalid_argument(format!("the password must have at least {MIN_PASSWORD_CHARS} characters")));
    }
    Ok(role)
}

fn user_info(user: &UserRecord) -> UserInfo {
    UserInfo { name: user.name.clone(), role: user.role.as_str().to_string(), created_unix: user.created_unix }
}

/// Hashes off the async runtime (argon2 is deliberately slow).
async fn hash_password(secret: String) -> Result<String, Status> {
    tokio::task::spawn_blocking(move || password::hash(&secret))
        .await
        .map_err(|e| internal(format!("password hashing stopped: {e}")))?
        .map_err(|e| internal(format!("cannot hash the password: {e}")))
}

impl AdminServiceImpl {
    fn authorize<T>(&self, req: &Request<T>) -> Result<(), Status> {
        let Some(token) = &self.token else {
            return Err(Status::permission_denied(
                "the admin API is disabled on this node: set admin_token in its configuration",
            ));
        };
        if !self.allow_remote {
            if let Some(addr) = req.remote_addr() {
                if !addr.ip().is_loopback() {
                    return Err(Status::permission_denied(
                        "admin calls are accepted from loopback only (set admin_allow_remote to change this)",
                    ));
                }
            }
        }
        let given = req.metadata().get("authorization").and_then(|v| v.to_str().ok()).unwrap_or("");
        let expected = format!("Bearer {token}");
        if !constant_time_eq(given.as_bytes(), expected.as_bytes()) {
            return Err(Status::unauthenticated("wrong or missing admin token"));
        }
        Ok(())
    }

    /// A client for the leader's admin service when this node is not the leader.
    fn leader_admin(&self) -> Result<Option<AdminServiceClient<Channel>>, Status> {
        if self.meta.is_leader() {
            return Ok(None);
        }
        let (_, leader) = self
            .meta
            .leader()
            .ok_or_else(|| Status::unavailable("no leader is known to this node; the cluster may have lost quorum"))?;
        let channel = self.meta.peers().channel(&leader.grpc_addr)?;
        Ok(Some(AdminServiceClient::new(channel)))
    }

    fn pass_on<T>(&self, req: &Request<T>, body: T) -> Request<T> {
        let mut forwarded = Request::new(body);
        if let Some(v) = req.metadata().get("authorization") {
            forwarded.metadata_mut().insert("authorization", v.clone());
        }
        forwarded.set_timeout(CATCH_UP_TIMEOUT);
        forwarded
    }

    async fn identify(&self, grpc_addr: &str) -> Result<NodeIdentity, Status> {
        let channel = self.meta.peers().channel(grpc_addr)?;
        let mut req = Request::new(IdentifyRequest {});
        req.set_timeout(IDENTIFY_TIMEOUT);
        ForwardServiceClient::new(channel)
            .identify(req)
            .await
            .map(|r| r.into_inner())
            .map_err(|s| Status::unavailable(format!("cannot reach the node at {grpc_addr}: {}", s.message())))
    }

    /// Regions as the leader sees them, asked with a short deadline; at the leader, or
    /// when the leader does not answer in time, this node's own view. Operators run
    /// `region list` and `status` most when something is cut off: a follower whose leader
    /// is unreachable (or deposed and stalled) must still answer, not wait out a
    /// forwarding deadline meant for membership changes.
    async fn leader_view(&self, request: &Request<Empty>) -> Vec<RegionInfo> {
        if let Ok(Some(mut leader)) = self.leader_admin() {
            let mut fwd = self.pass_on(request, Empty {});
            fwd.set_timeout(LEADER_VIEW_TIMEOUT);
            if let Ok(Ok(reply)) = tokio::time::timeout(LEADER_VIEW_TIMEOUT, leader.list_regions(fwd)).await {
                return reply.into_inner().regions;
            }
        }
        self.regions().await
    }

    /// Regions as this node sees them, probing each member.
    async fn regions(&self) -> Vec<RegionInfo> {
        let members = self.meta.members();
        let leader_last = self.meta.raft().metrics().borrow().last_log_index.unwrap_or(0);
        let probes = members.iter().map(|m| self.identify(&m.info.grpc_addr));
        let identities = join_all(probes).await;
        members
            .iter()
            .zip(identities)
            .map(|(m, id)| {
                let (reachable, last_applied) = match &id {
                    Ok(i) => (true, i.last_applied),
                    Err(_) => (false, m.matched.unwrap_or(0)),
                };
                region_info(m, reachable, last_applied, leader_last.saturating_sub(last_applied))
            })
            .collect()
    }

    fn find_member(&self, name: &str) -> Result<MemberView, Status> {
        self.meta
            .members()
            .into_iter()
            .find(|m| m.info.region == name)
            .ok_or_else(|| Status::not_found(format!("no region named {name:?} in the cluster")))
    }

    async fn hold_elections(&self, members: &[MemberView], except: NodeId, hold: bool) {
        for m in members.iter().filter(|m| m.node_id != except && m.node_id != self.meta.node_id()) {
            if let Ok(channel) = self.meta.peers().channel(&m.info.grpc_addr) {
                let mut req = Request::new(HoldElectionsRequest { hold });
                req.set_timeout(IDENTIFY_TIMEOUT);
                if let Err(e) = ForwardServiceClient::new(channel).hold_elections(req).await {
                    tracing::warn!(region = %m.info.region, error = %e.message(), "could not change election hold");
                }
            }
        }
    }
}

impl AdminServiceImpl {
    /// Users with role admin, from this node's store.
    fn admin_count(&self) -> Result<usize, Status> {
        let users = self.replicator.store().users().map_err(internal)?;
        Ok(users.iter().filter(|u| u.role == Role::Admin).count())
    }

    /// Proposes a user change and turns a refusal into the matching status.
    async fn propose_user(&self, name: &str, cmd: Command) -> Result<(), Status> {
        match self.meta.propose(cmd).await.map_err(meta_status)? {
            CommandResult::Applied => Ok(()),
            CommandResult::AlreadyExists => Err(Status::already_exists(format!("user {name:?} already exists"))),
            CommandResult::UserUnknown => Err(Status::not_found(format!("no user named {name:?}"))),
            other => Err(internal(format!("unexpected result of a user change: {other:?}"))),
        }
    }
}

impl AdminServiceImpl {
    /// Referenced blobs whose only verified copy is in `region`, with their sizes.
    fn sole_copies(&self, region: &str) -> Result<Vec<(Digest, u64)>, crate::meta::store::StoreError> {
        use crate::meta::records::BlobLocation;
        use crate::meta::store::CF_SM_BLOBS;
        let store = self.replicator.store();
        let mut out = Vec::new();
        for (key, value) in store.scan_prefix(CF_SM_BLOBS, b"", None, usize::MAX)? {
            let location = BlobLocation::decode(&value)?;
            if location.regions.len() == 1 && location.regions[0] == region {
                if let Ok(d) = Digest::parse(&String::from_utf8_lossy(&key)) {
                    out.push((d, location.size));
                }
            }
        }
        Ok(out)
    }

    async fn node_stats(&self, grpc_addr: &str) -> Result<NodeReplicationStats, Status> {
        let channel = self.meta.peers().channel(grpc_addr)?;
        let mut req = Request::new(ReplicationStatsRequest {});
        req.set_timeout(IDENTIFY_TIMEOUT);
        ForwardServiceClient::new(channel).replication_stats(req).await.map(|r| r.into_inner())
    }

    /// `repo:tag` or `repo@digest` → the repository and the manifest digest.
    fn resolve_image(&self, reference: &str) -> Result<(String, Digest), Status> {
        let bad = || Status::invalid_argument(format!("{reference:?} is not REPO:TAG or REPO@DIGEST"));
        let store = self.replicator.store();
        if let Some((repo, d)) = reference.split_once('@') {
            let digest = Digest::parse(d).map_err(|_| bad())?;
            return Ok((repo.to_string(), digest));
        }
        let (repo, tag) = reference.rsplit_once(':').ok_or_else(bad)?;
        let digest = store
            .resolve_tag(repo, tag)
            .map_err(internal)?
            .ok_or_else(|| Status::not_found(format!("{repo}:{tag} is not known")))?;
        Ok((repo.to_string(), digest))
    }

    /// Every blob of a manifest, and of an index's child manifests.
    fn image_blobs(&self, repo: &str, digest: &Digest) -> Result<Vec<Digest>, Status> {
        use crate::registry::manifest_parse::parse_manifest;
        let store = self.replicator.store();
        let mut out = Vec::new();
        let mut pending = vec![digest.clone()];
        let mut seen = BTreeSet::new();
        while let Some(d) = pending.pop() {
            if !seen.insert(d.clone()) {
                continue;
            }
            let m = store
                .manifest(repo, &d)
                .map_err(internal)?
                .ok_or_else(|| Status::not_found(format!("{repo}@{d} is not known")))?;
            let parsed = parse_manifest(Some(&m.media_type), &m.body).map_err(internal)?;
            out.extend(parsed.blobs.into_iter().map(|b| b.digest));
            pending.extend(parsed.children.into_iter().map(|c| c.digest));
        }
        out.sort();
        out.dedup();
        Ok(out)
    }
}

fn region_info(m: &MemberView, reachable: bool, last_applied: u64, lag: u64) -> RegionInfo {
    RegionInfo {
        node_id: m.node_id,
        name: m.info.region.clone(),
        http_addr: m.info.http_addr.clone(),
        grpc_addr: m.info.grpc_addr.clone(),
        role: if m.leader { "leader" } else if m.voter { "voter" } else { "learner" }.to_string(),
        last_applied,
        lag,
        reachable,
    }
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

#[tonic::async_trait]
impl AdminService for AdminServiceImpl {
    async fn init(&self, request: Request<Empty>) -> Result<Response<InitReply>, Status> {
        self.authorize(&request)?;
        if self.meta.is_initialized().await.map_err(internal)? {
            return Err(Status::already_exists("this node already belongs to an initialized cluster"));
        }
        self.meta.initialize().await.map_err(internal)?;
        Ok(Response::new(InitReply {
            message: format!("initialized a new cluster with region {} as its only voter", self.meta.me().region),
        }))
    }

    async fn add_region(&self, request: Request<AddRegionRequest>) -> Result<Response<AddRegionReply>, Status> {
        self.authorize(&request)?;
        if let Some(mut leader) = self.leader_admin()? {
            let fwd = self.pass_on(&request, request.get_ref().clone());
            return leader.add_region(fwd).await;
        }
        let _serialized = self.membership_lock.lock().await;
        let AddRegionRequest { grpc_addr, learner } = request.into_inner();
        let addr = grpc_addr.trim_start_matches("http://").trim_start_matches("https://").to_string();
        let identity = self.identify(&grpc_url(&addr)).await?;
        let members = self.meta.members();
        let raft = self.meta.raft();
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
                let region = self.regions().await.into_iter().find(|r| r.node_id == m.node_id);
                return Ok(Response::new(AddRegionReply { region, steps }));
            }
            return Err(Status::already_exists(format!(
                "{} (node {}, {}) is already a member of this cluster",
                m.info.region, m.node_id, m.info.grpc_addr
            )));
        }
        if let Some(m) = members.iter().find(|m| m.info.region == identity.region) {
            return Err(Status::already_exists(format!(
                "a region named {:?} already exists (node {})",
                identity.region, m.node_id
            )));
        }
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
        let info = NodeInfo { region: identity.region.clone(), http_addr: identity.http_addr, grpc_addr: identity.grpc_addr };
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
        let region = self
            .regions()
            .await
            .into_iter()
            .find(|r| r.node_id == identity.node_id)
            .ok_or_else(|| internal("the added region is missing from the membership"))?;
        tracing::info!(region = %identity.region, node_id = identity.node_id, learner, "region added");
        Ok(Response::new(AddRegionReply { region: Some(region), steps }))
    }

    async fn remove_region(&self, request: Request<RemoveRegionRequest>) -> Result<Response<RemoveRegionReply>, Status> {
        self.authorize(&request)?;
        if let Some(mut leader) = self.leader_admin()? {
            let fwd = self.pass_on(&request, request.get_ref().clone());
            return leader.remove_region(fwd).await;
        }
        let _serialized = self.membership_lock.lock().await;
        let name = request.into_inner().name;
        let target = self.find_member(&name)?;
        let voters: Vec<NodeId> = self.meta.members().iter().filter(|m| m.voter).map(|m| m.node_id).collect();
        if target.leader {
            return Err(Status::failed_precondition(format!(
                "{name} is the leader; move leadership first (meridian admin leader transfer REGION)"
            )));
        }
        let sole = self.sole_copies(&name).map_err(internal)?;
        if !sole.is_empty() {
            let bytes: u64 = sole.iter().map(|(_, size)| size).sum();
            return Err(Status::failed_precondition(format!(
                "{name} holds the only copy of {} referenced blob(s) ({bytes} bytes); run `meridian admin region drain {name}` first",
                sole.len()
            )));
        }
        let mut steps = Vec::new();
        let raft = self.meta.raft();
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
                self.meta.members().into_iter().filter(|m| m.voter && m.node_id != target.node_id).collect();
            let probes = join_all(remaining.iter().map(|m| self.identify(&m.info.grpc_addr))).await;
            let unreachable: Vec<String> = remaining
                .iter()
                .zip(&probes)
                .filter(|(m, p)| p.is_err() && m.node_id != self.meta.node_id())
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
            steps.push(format!("demoted {name} to learner"));
        }
        change_membership(raft, ChangeMembers::RemoveNodes(BTreeSet::from([target.node_id])), false).await?;
        steps.push(format!("removed {name} (node {}) from the cluster", target.node_id));
        tracing::info!(region = %name, node_id = target.node_id, "region removed");
        Ok(Response::new(RemoveRegionReply { steps }))
    }

    async fn list_regions(&self, request: Request<Empty>) -> Result<Response<ListRegionsReply>, Status> {
        self.authorize(&request)?;
        Ok(Response::new(ListRegionsReply { regions: self.leader_view(&request).await }))
    }

    async fn transfer_leader(&self, request: Request<TransferLeaderRequest>) -> Result<Response<TransferLeaderReply>, Status> {
        self.authorize(&request)?;
        if let Some(mut leader) = self.leader_admin()? {
            let fwd = self.pass_on(&request, request.get_ref().clone());
            return leader.transfer_leader(fwd).await;
        }
        let name = request.into_inner().name;
        let target = self.find_member(&name)?;
        if target.leader {
            return Ok(Response::new(TransferLeaderReply { leader: name }));
        }
        if !target.voter {
            return Err(Status::failed_precondition(format!("{name} is a learner; only voters can lead")));
        }
        let raft = self.meta.raft().clone();
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
        let members = self.meta.members();
        self.hold_elections(&members, target.node_id, true).await;
        raft.runtime_config().elect(false);
        raft.runtime_config().heartbeat(false);
        tokio::time::sleep(self.election_timeout_max + Duration::from_millis(100)).await;
        let channel = self.meta.peers().channel(&target.info.grpc_addr)?;
        let campaign = ForwardServiceClient::new(channel).campaign(Request::new(CampaignRequest {})).await;
        let deadline = Instant::now() + self.election_timeout_max * 3;
        let elected = raft
            .wait(Some(deadline.saturating_duration_since(Instant::now())))
            .metrics(|m| m.current_leader == Some(target.node_id), "target elected")
            .await;
        raft.runtime_config().heartbeat(true);
        raft.runtime_config().elect(true);
        self.hold_elections(&members, target.node_id, false).await;
        if let Err(s) = campaign {
            return Err(Status::unavailable(format!("could not ask {name} to campaign: {}", s.message())));
        }
        elected.map_err(|_| Status::unavailable(format!("{name} did not win the election; leadership unchanged or moved elsewhere")))?;
        tracing::info!(region = %name, "leadership transferred");
        Ok(Response::new(TransferLeaderReply { leader: name }))
    }

    async fn snapshot(&self, request: Request<Empty>) -> Result<Response<SnapshotReply>, Status> {
        self.authorize(&request)?;
        let raft = self.meta.raft();
        let applied = raft.metrics().borrow().last_applied.map(|l| l.index);
        raft.trigger().snapshot().await.map_err(internal)?;
        let m = raft
            .wait(Some(Duration::from_secs(60)))
            .metrics(|m| m.snapshot.map(|s| s.index) >= applied, "snapshot built")
            .await
            .map_err(|e| Status::deadline_exceeded(e.to_string()))?;
        Ok(Response::new(SnapshotReply { last_included_index: m.snapshot.map(|s| s.index).unwrap_or(0) }))
    }

    async fn status(&self, request: Request<Empty>) -> Result<Response<StatusReply>, Status> {
        self.authorize(&request)?;
        let m = self.meta.raft().metrics().borrow().clone();
        let leader = self.meta.leader().map(|(_, info)| info.region).unwrap_or_default();
        let regions = self.leader_view(&request).await;
        Ok(Response::new(StatusReply {
            cluster: "meridian".into(),
            node_id: self.meta.node_id(),
            region: self.meta.me().region.clone(),
            leader,
            term: m.current_term,
            last_log_index: m.last_log_index.unwrap_or(0),
            last_applied: m.last_applied.map(|l| l.index).unwrap_or(0),
            snapshot_index: m.snapshot.map(|s| s.index).unwrap_or(0),
            regions,
        }))
    }

    async fn replication_status(&self, request: Request<Empty>) -> Result<Response<ReplicationStatusReply>, Status> {
        self.authorize(&request)?;
        // At a follower, its own last log index is what it has received from the leader.
        let leader_last = self.meta.raft().metrics().borrow().last_log_index.unwrap_or(0);
        let members = self.meta.members();
        let probes = join_all(members.iter().map(|m| self.node_stats(&m.info.grpc_addr))).await;
        let regions = members
            .iter()
            .zip(probes)
            .map(|(m, stats)| match stats {
                Ok(s) => RegionReplication {
                    name: m.info.region.clone(),
                    reachable: true,
                    apply_lag: leader_last.saturating_sub(s.last_applied),
                    pending_blobs: s.pending_blobs,
                    pending_bytes: s.pending_bytes,
                    bytes_received: s.bytes_received,
                    throughput_bytes_per_sec: s.throughput_bytes_per_sec,
                    transfers_failed: s.transfers_failed,
                    digest_mismatches: s.digest_mismatches,
                },
                Err(_) => RegionReplication { name: m.info.region.clone(), reachable: false, ..Default::default() },
            })
            .collect();
        Ok(Response::new(ReplicationStatusReply { regions }))
    }

    async fn replication_image(&self, request: Request<ImageRequest>) -> Result<Response<ImageReplicationReply>, Status> {
        self.authorize(&request)?;
        let reference = request.into_inner().reference;
        let (repo, digest) = self.resolve_image(&reference)?;
        let blobs = self.image_blobs(&repo, &digest)?;
        let store = self.replicator.store();
        let mut bytes = 0u64;
        let mut holders: Vec<Vec<String>> = Vec::with_capacity(blobs.len());
        for blob in &blobs {
            let location = store.blob_location(blob).map_err(internal)?;
            bytes += location.as_ref().map(|l| l.size).unwrap_or(0);
            holders.push(location.map(|l| l.regions).unwrap_or_default());
        }
        let regions = self
            .meta
            .members()
            .iter()
            .map(|m| {
                let present = holders.iter().filter(|h| h.contains(&m.info.region)).count() as u64;
                let missing = blobs.len() as u64 - present;
                ImageRegion { name: m.info.region.clone(), present, missing, complete: missing == 0 }
            })
            .collect();
        Ok(Response::new(ImageReplicationReply {
            repository: repo,
            digest: digest.to_string(),
            blobs: blobs.len() as u64,
            bytes,
            regions,
        }))
    }

    async fn drain_region(&self, request: Request<DrainRegionRequest>) -> Result<Response<DrainRegionReply>, Status> {
        self.authorize(&request)?;
        if let Some(mut leader) = self.leader_admin()? {
            let fwd = self.pass_on(&request, request.get_ref().clone());
            return leader.drain_region(fwd).await;
        }
        let name = request.into_inner().name;
        self.find_member(&name)?;
        let me = self.meta.me().region.clone();
        if name == me {
            return Err(Status::failed_precondition(format!(
                "{name} is the leader's region; move leadership first (meridian admin leader transfer REGION)"
            )));
        }
        let sole = self.sole_copies(&name).map_err(internal)?;
        let mut steps = vec![format!("{name} holds the only copy of {} blob(s)", sole.len())];
        let (mut blobs_copied, mut bytes_copied) = (0u64, 0u64);
        for (digest, size) in sole {
            let transfer = self
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
        while !self.sole_copies(&name).map_err(internal)?.is_empty() {
            if Instant::now() > deadline {
                return Err(Status::deadline_exceeded("copies landed but their records did not commit in time"));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        steps.push(format!("copied {blobs_copied} blob(s), {bytes_copied} bytes, to {me}"));
        steps.push(format!("{name} can now be removed without losing any blob"));
        Ok(Response::new(DrainRegionReply { steps, blobs_copied, bytes_copied }))
    }

    async fn put_user(&self, request: Request<PutUserRequest>) -> Result<Response<UserInfo>, Status> {
        self.authorize(&request)?;
        let role = check_put_user(request.get_ref())?;
        let PutUserRequest { name, password: secret, replace, .. } = request.into_inner();
        let _serialized = self.users_lock.lock().await;
        // Answer "exists"/"unknown" from a store that has every acknowledged write.
        self.meta.catch_up(USER_CATCH_UP_TIMEOUT).await.map_err(meta_status)?;
        let existing = self.replicator.store().user(&name).map_err(internal)?;
        let user = match (existing, replace) {
            (Some(_), false) => return Err(Status::already_exists(format!("user {name:?} already exists"))),
            (None, true) => return Err(Status::not_found(format!("no user named {name:?}"))),
            (None, false) => UserRecord {
                name: name.clone(),
                password_hash: hash_password(secret).await?,
                // check_put_user requires a role to create.
                role: role.unwrap_or(Role::Reader),
                created_unix: now_unix(),
            },
            (Some(current), true) => {
                let new_role = role.unwrap_or(current.role);
                if current.role == Role::Admin && new_role != Role::Admin && self.admin_count()? <= 1 {
                    return Err(Status::failed_precondition(format!(
                        "{name} is the last user with role admin; give another user the admin role first"
                    )));
                }
                let password_hash =
                    if secret.is_empty() { current.password_hash.clone() } else { hash_password(secret).await? };
                UserRecord { name: name.clone(), password_hash, role: new_role, created_unix: current.created_unix }
            }
        };
        let info = user_info(&user);
        self.propose_user(&name, Command::PutUser { user, create_only: !replace }).await?;
        tracing::info!(user = %name, role = %info.role, replaced = replace, "user saved");
        Ok(Response::new(info))
    }

    async fn remove_user(&self, request: Request<UserName>) -> Result<Response<Empty>, Status> {
        self.authorize(&request)?;
        let name = request.into_inner().name;
        check_user_name(&name)?;
        let _serialized = self.users_lock.lock().await;
        self.meta.catch_up(USER_CATCH_UP_TIMEOUT).await.map_err(meta_status)?;
        let user = self
            .replicator
            .store()
            .user(&name)
            .map_err(internal)?
            .ok_or_else(|| Status::not_found(format!("no user named {name:?}")))?;
        if user.role == Role::Admin && self.admin_count()? <= 1 {
            return Err(Status::failed_precondition(format!(
                "{name} is the last user with role admin; give another user the admin role first"
            )));
        }
        self.propose_user(&name, Command::RemoveUser { name: name.clone() }).await?;
        tracing::info!(user = %name, "user removed");
        Ok(Response::new(Empty {}))
    }

    async fn list_users(&self, request: Request<Empty>) -> Result<Response<ListUsersReply>, Status> {
        self.authorize(&request)?;
        let mut users: Vec<UserInfo> = self.replicator.store().users().map_err(internal)?.iter().map(user_info).collect();
        users.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(Response::new(ListUsersReply { users }))
    }

    async fn put_scope_map(&self, request: Request<ScopeMapInfo>) -> Result<Response<ScopeMapInfo>, Status> {
        self.authorize(&request)?;
        identities::put_scope_map(self, request.into_inner()).await.map(Response::new)
    }

    async fn remove_scope_map(&self, request: Request<Name>) -> Result<Response<Empty>, Status> {
        self.authorize(&request)?;
        identities::remove_scope_map(self, request.into_inner().name).await?;
        Ok(Response::new(Empty {}))
    }

    async fn list_scope_maps(&self, request: Request<Empty>) -> Result<Response<ListScopeMapsReply>, Status> {
        self.authorize(&request)?;
        identities::list_scope_maps(self).map(Response::new)
    }

    async fn create_token(&self, request: Request<CreateTokenRequest>) -> Result<Response<CreatedToken>, Status> {
        self.authorize(&request)?;
        identities::create_token(self, request.into_inner()).await.map(Response::new)
    }

    async fn revoke_token(&self, request: Request<RevokeTokenRequest>) -> Result<Response<Empty>, Status> {
        self.authorize(&request)?;
        identities::revoke_token(self, request.into_inner()).await?;
        Ok(Response::new(Empty {}))
    }

    async fn list_tokens(&self, request: Request<Empty>) -> Result<Response<ListTokensReply>, Status> {
        self.authorize(&request)?;
        identities::list_tokens(self).map(Response::new)
    }

    async fn rotate_key(&self, request: Request<Empty>) -> Result<Response<KeyInfo>, Status> {
        self.authorize(&request)?;
        identities::rotate_key(self).await.map(Response::new)
    }

    async fn retire_key(&self, request: Request<KeyId>) -> Result<Response<Empty>, Status> {
        self.authorize(&request)?;
        identities::retire_key(self, request.into_inner().kid).await?;
        Ok(Response::new(Empty {}))
    }

    async fn list_keys(&self, request: Request<Empty>) -> Result<Response<ListKeysReply>, Status> {
        self.authorize(&request)?;
        identities::list_keys(self).map(Response::new)
    }

    async fn gc_run(&self, request: Request<GcRunRequest>) -> Result<Response<GcRunReply>, Status> {
        self.authorize(&request)?;
        lifecycle::gc_run(self, request.into_inner().dry_run).await.map(Response::new)
    }

    async fn gc_status(&self, request: Request<Empty>) -> Result<Response<GcStatusReply>, Status> {
        self.authorize(&request)?;
        lifecycle::gc_status(self).map(Response::new)
    }

    async fn set_quota(&self, request: Request<SetQuotaRequest>) -> Result<Response<QuotaInfo>, Status> {
        self.authorize(&request)?;
        let SetQuotaRequest { pattern, limit_bytes } = request.into_inner();
        lifecycle::set_quota(self, pattern, limit_bytes).await.map(Response::new)
    }

    async fn remove_quota(&self, request: Request<Name>) -> Result<Response<Empty>, Status> {
        self.authorize(&request)?;
        lifecycle::remove_quota(self, request.into_inner().name).await?;
        Ok(Response::new(Empty {}))
    }

    async fn list_quotas(&self, request: Request<Empty>) -> Result<Response<ListQuotasReply>, Status> {
        self.authorize(&request)?;
        lifecycle::list_quotas(self).map(Response::new)
    }

    async fn put_retention_policy(&self, request: Request<RetentionPolicyInfo>) -> Result<Response<RetentionPolicyInfo>, Status> {
        self.authorize(&request)?;
        retention::put_policy(self, request.into_inner()).await.map(Response::new)
    }

    async fn remove_retention_policy(&self, request: Request<Name>) -> Result<Response<Empty>, Status> {
        self.authorize(&request)?;
        retention::remove_policy(self, request.into_inner().name).await?;
        Ok(Response::new(Empty {}))
    }

    async fn list_retention_policies(&self, request: Request<Empty>) -> Result<Response<ListRetentionPoliciesReply>, Status> {
        self.authorize(&request)?;
        retention::list_policies(self).map(Response::new)
    }

    async fn run_retention(&self, request: Request<RetentionRunRequest>) -> Result<Response<RetentionRunReply>, Status> {
        self.authorize(&request)?;
        retention::run(self, request.into_inner().dry_run).await.map(Response::new)
    }

    async fn trash_list(&self, request: Request<TrashListRequest>) -> Result<Response<TrashListReply>, Status> {
        self.authorize(&request)?;
        retention::trash_list(self, request.into_inner().repo).map(Response::new)
    }

    async fn trash_restore(&self, request: Request<TrashRestoreRequest>) -> Result<Response<Empty>, Status> {
        self.authorize(&request)?;
        retention::trash_restore(self, request.into_inner()).await?;
        Ok(Response::new(Empty {}))
    }

    async fn trash_purge(&self, request: Request<TrashPurgeRequest>) -> Result<Response<TrashPurgeReply>, Status> {
        self.authorize(&request)?;
        retention::trash_purge(self, request.into_inner().repo).await.map(Response::new)
    }

    async fn usage(&self, request: Request<UsageRequest>) -> Result<Response<UsageReply>, Status> {
        self.authorize(&request)?;
        lifecycle::usage(self, request.into_inner()).map(Response::new)
    }
}

//! The operator's admin service: leadership, snapshots, status and replication, with
//! membership changes in [`super::admin_membership`], users in [`super::admin_users`],
//! scope maps, robot tokens and signing keys in [`super::admin_identities`], garbage
//! collection, quotas and usage in [`super::admin_lifecycle`], retention in
//! [`super::admin_retention`] and webhooks in [`super::admin_events`]. Every call needs the admin token; calls that change
//! membership run at the leader (a follower passes them on with the caller's credentials).
//! Identity changes are proposed from the contacted node (Meta forwards them to the leader)
//! and identities are listed from its store.

use super::admin_events as events;
use super::admin_identities as identities;
use super::admin_lifecycle as lifecycle;
use super::admin_membership as membership;
use super::admin_retention as retention;
use super::admin_users as users;
use crate::meta::{Meta, MetaError};
use meridian_proto::admin::admin_service_client::AdminServiceClient;
use meridian_proto::admin::admin_service_server::AdminService;
use meridian_proto::admin::*;
use meridian_proto::cluster::NodeIdentity;
use meridian_replication::Digest;
use std::time::Duration;
use tonic::transport::Channel;
use tonic::{Request, Response, Status};

/// How long a region may take to catch up before `add_region` gives up waiting.
pub(super) const CATCH_UP_TIMEOUT: Duration = Duration::from_secs(120);
pub(super) const IDENTIFY_TIMEOUT: Duration = Duration::from_secs(2);
/// How long `region list` and `status` wait for the leader's view before giving their own.
/// The leader probes every member (up to `IDENTIFY_TIMEOUT`), so this leaves it room.
const LEADER_VIEW_TIMEOUT: Duration = Duration::from_secs(3);
/// How long a user change waits for this node to catch up with the leader before it
/// checks what exists.
pub(super) const USER_CATCH_UP_TIMEOUT: Duration = Duration::from_secs(5);
/// Longest user name.
const MAX_USER_NAME: usize = 64;

pub struct AdminServiceImpl {
    pub meta: Meta,
    pub lifecycle: std::sync::Arc<crate::lifecycle::Lifecycle>,
    pub replicator: std::sync::Arc<crate::replicas::Replicator>,
    /// Nearest-region routing: what `endpoints` reports.
    pub routing: std::sync::Arc<crate::routing::NearestRegion>,
    /// The webhook deliverer (pings go out from here).
    pub events: crate::events::Events,
    pub token: Option<String>,
    pub allow_remote: bool,
    /// Longest election timeout: how long followers' leader leases last.
    pub election_timeout_max: Duration,
    /// Membership changes run one at a time: openraft refuses a change while another is
    /// still being committed.
    pub membership_lock: tokio::sync::Mutex<()>,
    /// Identity changes (shared with the web console, with their lock).
    pub identities: std::sync::Arc<super::identity_admin::IdentityAdmin>,
}

/// Whether an admin call may come from `peer`: from loopback always; from elsewhere with
/// `admin_allow_remote`, or when the caller presented a certificate the cluster CA signed
/// (mutual TLS on the gRPC links). Other nodes make admin calls too — a joining node asks
/// to be added, a follower passes membership calls on to the leader — and under mutual
/// TLS they are authenticated members. The admin token is required either way.
fn remote_call_allowed(allow_remote: bool, peer: Option<std::net::IpAddr>, has_cluster_cert: bool) -> bool {
    allow_remote || has_cluster_cert || peer.is_none_or(|ip| ip.is_loopback())
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

impl AdminServiceImpl {
    fn authorize<T>(&self, req: &Request<T>) -> Result<(), Status> {
        let Some(token) = &self.token else {
            return Err(Status::permission_denied(
                "the admin API is disabled on this node: set admin_token in its configuration",
            ));
        };
        let has_cluster_cert = req.peer_certs().is_some_and(|certs| !certs.is_empty());
        if !remote_call_allowed(self.allow_remote, req.remote_addr().map(|a| a.ip()), has_cluster_cert) {
            return Err(Status::permission_denied(
                "admin calls are accepted from loopback only (set admin_allow_remote, or use mutual TLS on the gRPC links, to change this)",
            ));
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

    pub(super) async fn identify(&self, grpc_addr: &str) -> Result<NodeIdentity, Status> {
        self.views().identify(grpc_addr).await
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
    pub(super) async fn regions(&self) -> Vec<RegionInfo> {
        self.views().regions().await
    }

    fn views(&self) -> super::views::ClusterViews {
        super::views::ClusterViews { meta: self.meta.clone(), replicator: self.replicator.clone() }
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
        membership::add_region(self, request.into_inner()).await.map(Response::new)
    }

    async fn remove_region(&self, request: Request<RemoveRegionRequest>) -> Result<Response<RemoveRegionReply>, Status> {
        self.authorize(&request)?;
        if let Some(mut leader) = self.leader_admin()? {
            let fwd = self.pass_on(&request, request.get_ref().clone());
            return leader.remove_region(fwd).await;
        }
        let RemoveRegionRequest { name, node_id } = request.into_inner();
        membership::remove_region(self, name, node_id).await.map(Response::new)
    }

    async fn list_regions(&self, request: Request<Empty>) -> Result<Response<ListRegionsReply>, Status> {
        self.authorize(&request)?;
        Ok(Response::new(ListRegionsReply { regions: self.leader_view(&request).await }))
    }

    async fn endpoints(&self, request: Request<Empty>) -> Result<Response<EndpointsReply>, Status> {
        self.authorize(&request)?;
        let endpoints: Vec<EndpointInfo> = self
            .routing
            .endpoints()
            .into_iter()
            .map(|e| EndpointInfo { region: e.region, node_id: e.node_id, public_url: e.public_url, up: e.up, local: e.local })
            .collect();
        let routes = self
            .routing
            .table()
            .rows()
            .iter()
            .map(|(network, region)| RouteInfo {
                network: network.to_string(),
                region: region.clone(),
                unknown_region: !endpoints.iter().any(|e| &e.region == region),
            })
            .collect();
        Ok(Response::new(EndpointsReply { region: self.meta.me().region.clone(), endpoints, routes }))
    }

    async fn transfer_leader(&self, request: Request<TransferLeaderRequest>) -> Result<Response<TransferLeaderReply>, Status> {
        self.authorize(&request)?;
        if let Some(mut leader) = self.leader_admin()? {
            let fwd = self.pass_on(&request, request.get_ref().clone());
            return leader.transfer_leader(fwd).await;
        }
        membership::transfer_leader(self, request.into_inner().name).await.map(Response::new)
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
        Ok(Response::new(ReplicationStatusReply { regions: self.views().replication_status().await }))
    }
    async fn replication_image(&self, request: Request<ImageRequest>) -> Result<Response<ImageReplicationReply>, Status> {
        self.authorize(&request)?;
        let reference = request.into_inner().reference;
        let (repo, digest) = self.resolve_image(&reference)?;
        Ok(Response::new(self.views().image_matrix(&repo, &digest)?.reply()))
    }

    async fn image_dependents(&self, request: Request<ImageRequest>) -> Result<Response<ImageDependentsReply>, Status> {
        self.authorize(&request)?;
        let reference = request.into_inner().reference;
        let (repo, digest) = self.resolve_image(&reference)?;
        let store = self.replicator.store();
        if !store.manifest_exists(&repo, &digest).map_err(internal)? {
            return Err(Status::not_found(format!("{repo}@{digest} is not known")));
        }
        let digest = digest.to_string();
        // Asked by tag: images built on what the tag pointed at before count too (outdated).
        let tag = (!reference.contains('@')).then(|| reference.rsplit_once(':').map(|(_, t)| t)).flatten();
        let dependents = store.dependents(&repo, &digest, tag).map_err(internal)?;
        let own = store.lineage(&repo, &digest).map_err(internal)?.unwrap_or_default();
        Ok(Response::new(ImageDependentsReply {
            repository: repo,
            digest,
            bases: own.bases,
            via: own.via,
            dependents: dependents
                .into_iter()
                .map(|d| Dependent {
                    repository: d.repo,
                    digest: d.digest,
                    tags: d.tags,
                    via: d.via,
                    base_digest: d.base,
                    outdated: d.outdated,
                })
                .collect(),
        }))
    }

    async fn drain_region(&self, request: Request<DrainRegionRequest>) -> Result<Response<DrainRegionReply>, Status> {
        self.authorize(&request)?;
        if let Some(mut leader) = self.leader_admin()? {
            let fwd = self.pass_on(&request, request.get_ref().clone());
            return leader.drain_region(fwd).await;
        }
        membership::drain_region(self, request.into_inner().name).await.map(Response::new)
    }

    async fn put_user(&self, request: Request<PutUserRequest>) -> Result<Response<UserInfo>, Status> {
        self.authorize(&request)?;
        users::put_user(&self.identities, request.into_inner()).await.map(Response::new)
    }

    async fn remove_user(&self, request: Request<UserName>) -> Result<Response<Empty>, Status> {
        self.authorize(&request)?;
        users::remove_user(&self.identities, request.into_inner().name).await?;
        Ok(Response::new(Empty {}))
    }

    async fn list_users(&self, request: Request<Empty>) -> Result<Response<ListUsersReply>, Status> {
        self.authorize(&request)?;
        users::list_users(&self.identities).map(Response::new)
    }

    async fn put_scope_map(&self, request: Request<ScopeMapInfo>) -> Result<Response<ScopeMapInfo>, Status> {
        self.authorize(&request)?;
        identities::put_scope_map(&self.identities, request.into_inner()).await.map(Response::new)
    }

    async fn remove_scope_map(&self, request: Request<Name>) -> Result<Response<Empty>, Status> {
        self.authorize(&request)?;
        identities::remove_scope_map(&self.identities, request.into_inner().name).await?;
        Ok(Response::new(Empty {}))
    }

    async fn list_scope_maps(&self, request: Request<Empty>) -> Result<Response<ListScopeMapsReply>, Status> {
        self.authorize(&request)?;
        identities::list_scope_maps(&self.identities).map(Response::new)
    }

    async fn create_token(&self, request: Request<CreateTokenRequest>) -> Result<Response<CreatedToken>, Status> {
        self.authorize(&request)?;
        identities::create_token(&self.identities, request.into_inner()).await.map(Response::new)
    }

    async fn revoke_token(&self, request: Request<RevokeTokenRequest>) -> Result<Response<Empty>, Status> {
        self.authorize(&request)?;
        identities::revoke_token(&self.identities, request.into_inner()).await?;
        Ok(Response::new(Empty {}))
    }

    async fn list_tokens(&self, request: Request<Empty>) -> Result<Response<ListTokensReply>, Status> {
        self.authorize(&request)?;
        identities::list_tokens(&self.identities).map(Response::new)
    }

    async fn rotate_key(&self, request: Request<Empty>) -> Result<Response<KeyInfo>, Status> {
        self.authorize(&request)?;
        identities::rotate_key(&self.identities).await.map(Response::new)
    }

    async fn retire_key(&self, request: Request<KeyId>) -> Result<Response<Empty>, Status> {
        self.authorize(&request)?;
        identities::retire_key(&self.identities, request.into_inner().kid).await?;
        Ok(Response::new(Empty {}))
    }

    async fn list_keys(&self, request: Request<Empty>) -> Result<Response<ListKeysReply>, Status> {
        self.authorize(&request)?;
        identities::list_keys(&self.identities).map(Response::new)
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

    async fn put_webhook(&self, request: Request<PutWebhookRequest>) -> Result<Response<WebhookInfo>, Status> {
        self.authorize(&request)?;
        events::put(self, request.into_inner()).await.map(Response::new)
    }

    async fn remove_webhook(&self, request: Request<Name>) -> Result<Response<Empty>, Status> {
        self.authorize(&request)?;
        events::remove(self, request.into_inner().name).await?;
        Ok(Response::new(Empty {}))
    }

    async fn list_webhooks(&self, request: Request<Empty>) -> Result<Response<ListWebhooksReply>, Status> {
        self.authorize(&request)?;
        events::list(self).map(Response::new)
    }

    async fn ping_webhook(&self, request: Request<Name>) -> Result<Response<PingReply>, Status> {
        self.authorize(&request)?;
        events::ping(self, request.into_inner().name).await.map(Response::new)
    }

    async fn webhook_deliveries(&self, request: Request<DeliveriesRequest>) -> Result<Response<DeliveriesReply>, Status> {
        self.authorize(&request)?;
        events::deliveries(self, request.into_inner()).map(Response::new)
    }

    async fn resend_deliveries(&self, request: Request<ResendRequest>) -> Result<Response<ResendReply>, Status> {
        self.authorize(&request)?;
        events::resend(self, request.into_inner()).await.map(Response::new)
    }
}

#[cfg(test)]
mod tests {
    use super::remote_call_allowed;

    #[test]
    fn remote_admin_calls_need_the_setting_or_a_cluster_certificate() {
        let remote = Some("10.0.0.7".parse().unwrap());
        let local = Some("127.0.0.1".parse().unwrap());
        assert!(remote_call_allowed(false, local, false));
        assert!(!remote_call_allowed(false, remote, false));
        assert!(remote_call_allowed(true, remote, false));
        assert!(remote_call_allowed(false, remote, true), "a node authenticated by mutual TLS");
    }
}

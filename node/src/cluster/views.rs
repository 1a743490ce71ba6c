//! What the cluster looks like from this node — its regions, their replication queues,
//! where an image's blobs are — answered the same way for `meridian admin` (the admin
//! service) and the web console.

use super::admin_service::{internal, IDENTIFY_TIMEOUT};
use crate::meta::{MemberView, Meta};
use crate::replicas::Replicator;
use futures::future::join_all;
use meridian_proto::admin::{ImageRegion, ImageReplicationReply, RegionInfo, RegionReplication};
use meridian_proto::cluster::forward_service_client::ForwardServiceClient;
use meridian_proto::cluster::{IdentifyRequest, NodeIdentity, NodeReplicationStats, ReplicationStatsRequest};
use meridian_replication::Digest;
use std::collections::BTreeSet;
use std::sync::Arc;
use tonic::{Request, Status};

pub struct ClusterViews {
    pub meta: Meta,
    pub replicator: Arc<Replicator>,
}

/// Where every blob of one image is, region by region.
#[derive(Debug, Clone)]
pub struct ImageMatrix {
    pub repository: String,
    pub digest: Digest,
    /// Every region of the cluster, by name.
    pub regions: Vec<String>,
    /// Each blob: its digest, size and the regions holding a verified copy.
    pub blobs: Vec<(Digest, u64, Vec<String>)>,
}

impl ImageMatrix {
    /// Blobs `region` holds.
    pub fn present_in(&self, region: &str) -> u64 {
        self.blobs.iter().filter(|(_, _, holders)| holders.iter().any(|h| h == region)).count() as u64
    }

    /// The answer to `meridian admin replication image`.
    pub fn reply(&self) -> ImageReplicationReply {
        let regions = self
            .regions
            .iter()
            .map(|name| {
                let present = self.present_in(name);
                let missing = self.blobs.len() as u64 - present;
                ImageRegion { name: name.clone(), present, missing, complete: missing == 0 }
            })
            .collect();
        ImageReplicationReply {
            repository: self.repository.clone(),
            digest: self.digest.to_string(),
            blobs: self.blobs.len() as u64,
            bytes: self.blobs.iter().map(|(_, size, _)| size).sum(),
            regions,
        }
    }
}

impl ClusterViews {
    /// The identity a node reports (its region, applied index, state version).
    pub async fn identify(&self, grpc_addr: &str) -> Result<NodeIdentity, Status> {
        let channel = self.meta.peers().channel(grpc_addr)?;
        let mut req = Request::new(IdentifyRequest {});
        req.set_timeout(IDENTIFY_TIMEOUT);
        ForwardServiceClient::new(channel)
            .identify(req)
            .await
            .map(|r| r.into_inner())
            .map_err(|s| Status::unavailable(format!("cannot reach the node at {grpc_addr}: {}", s.message())))
    }

    /// Regions as this node sees them, probing each member; grouped by region (name,
    /// then node id), so a region's nodes are listed together.
    pub async fn regions(&self) -> Vec<RegionInfo> {
        let mut members = self.meta.members();
        members.sort_by(|a, b| (&a.info.region, a.node_id).cmp(&(&b.info.region, b.node_id)));
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

    async fn node_stats(&self, grpc_addr: &str) -> Result<NodeReplicationStats, Status> {
        let channel = self.meta.peers().channel(grpc_addr)?;
        let mut req = Request::new(ReplicationStatsRequest {});
        req.set_timeout(IDENTIFY_TIMEOUT);
        ForwardServiceClient::new(channel).replication_stats(req).await.map(|r| r.into_inner())
    }

    /// Each member's replication queue and apply lag.
    pub async fn replication_status(&self) -> Vec<RegionReplication> {
        // At a follower, its own last log index is what it has received from the leader.
        let leader_last = self.meta.raft().metrics().borrow().last_log_index.unwrap_or(0);
        let members = self.meta.members();
        let probes = join_all(members.iter().map(|m| self.node_stats(&m.info.grpc_addr))).await;
        members
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
            .collect()
    }

    /// Every blob of a manifest, and of an index's child manifests, sorted.
    pub fn image_blobs(&self, repo: &str, digest: &Digest) -> Result<Vec<Digest>, Status> {
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

    /// Which region holds which blob of an image, from the cluster's records.
    pub fn image_matrix(&self, repo: &str, digest: &Digest) -> Result<ImageMatrix, Status> {
        let store = self.replicator.store();
        let mut blobs = Vec::new();
        for blob in self.image_blobs(repo, digest)? {
            let location = store.blob_location(&blob).map_err(internal)?;
            let (size, holders) = location.map(|l| (l.size, l.regions)).unwrap_or_default();
            blobs.push((blob, size, holders));
        }
        // A region is one holder however many nodes it has.
        let regions: BTreeSet<String> = self.meta.members().into_iter().map(|m| m.info.region).collect();
        Ok(ImageMatrix { repository: repo.to_string(), digest: digest.clone(), regions: regions.into_iter().collect(), blobs })
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
        shared_store: m.info.shared_store.clone(),
    }
}

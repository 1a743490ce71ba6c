//! Blobs this region lacks: fetched from the regions that hold them, either because a
//! client asked (fetch-through, streamed while stored) or because a manifest referenced
//! them (the background queue). One transfer per blob, however many wait for it.

pub mod relay;
pub mod transfer;
mod worker;

use crate::blobs::Blobs;
use crate::meta::command::Command;
use crate::meta::{Meta, Store};
use meridian_proto::replication::blob_transfer_client::BlobTransferClient;
use meridian_replication::{fetch_verified, ClientFetches, Digest, FetchPriority, Holder, RegionThrottle};
use std::sync::atomic::{AtomicU64, Ordering};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{mpsc, watch};
use transfer::{FileSink, Progress, Transfer};
pub use worker::run_replication_worker;

/// Why a transfer started (a metrics label).
#[derive(Debug, Clone, Copy)]
pub enum Reason {
    ClientWaiting,
    Background,
}

pub struct Replicator {
    blobs: Blobs,
    store: Store,
    meta: Meta,
    inflight: Mutex<HashMap<Digest, Arc<Transfer>>>,
    recorder: mpsc::UnboundedSender<Digest>,
    throttle: RegionThrottle,
    /// Fetches a client waits for, per source: this node's background streams from that
    /// source step aside meanwhile (`meridian_replication::yielding`).
    clients: ClientFetches,
    /// What the last answered probe of each peer node said, by its advertised gRPC
    /// address; a node missing here did not answer its last probe.
    probes: Mutex<HashMap<String, Probe>>,
    pub stats: Arc<ReplicationCounters>,
    /// Bytes landed here per source region, for usage metering.
    usage: Arc<crate::usage::UsageRecorder>,
}

/// A peer node as the RTT prober last saw it.
struct Probe {
    /// Smoothed round trip, measured continuously.
    rtt: Duration,
    /// The registry URL it reported (where nearest-region routing sends clients); `None`
    /// from a node of a version that reports none.
    public_url: Option<String>,
    /// The `meta::STATE_VERSION` it reported (0: older than the field).
    state_version: u32,
}

/// This node's replication figures since start (what `replication status` shows).
#[derive(Default)]
pub struct ReplicationCounters {
    pub bytes_received: AtomicU64,
    pub transfers_failed: AtomicU64,
    pub digest_mismatches: AtomicU64,
    pub pending_blobs: AtomicU64,
    pub pending_bytes: AtomicU64,
    /// Bytes per second over the last scan interval, as f64 bits.
    pub throughput_bits: AtomicU64,
}

impl Replicator {
    /// Creates the replicator and the task that records landed replicas in batches.
    pub fn start(
        blobs: Blobs,
        store: Store,
        meta: Meta,
        bandwidth_limit: u64,
        usage: Arc<crate::usage::UsageRecorder>,
    ) -> Arc<Replicator> {
        let (tx, rx) = mpsc::unbounded_channel();
        tokio::spawn(record_replicas(meta.clone(), rx));
        let peers = meta.peers().clone();
        let clients = ClientFetches::new(move |addr| peers.drop_bulk_channel(addr));
        Arc::new(Replicator {
            clients,
            blobs,
            store,
            meta,
            inflight: Mutex::new(HashMap::new()),
            recorder: tx,
            throttle: RegionThrottle::new(bandwidth_limit),
            probes: Mutex::new(HashMap::new()),
            stats: Arc::new(ReplicationCounters::default()),
            usage,
        })
    }

    /// The round trip to the node advertising `grpc_addr`; `None`: not measured, or unreachable.
    pub fn rtt_of(&self, grpc_addr: &str) -> Option<Duration> {
        self.probes().get(grpc_addr).map(|p| p.rtt)
    }

    /// The registry URL the node advertising `grpc_addr` reported in its last probe;
    /// `None`: it did not answer the last one (down or cut off), was not probed yet, or
    /// runs a version that reports none.
    pub fn public_url_of(&self, grpc_addr: &str) -> Option<String> {
        self.probes().get(grpc_addr).and_then(|p| p.public_url.clone())
    }

    /// The `meta::STATE_VERSION` the node advertising `grpc_addr` reported in its last
    /// probe; `None` when it did not answer it.
    pub fn state_version_of(&self, grpc_addr: &str) -> Option<u32> {
        self.probes().get(grpc_addr).map(|p| p.state_version)
    }

    fn probes(&self) -> std::sync::MutexGuard<'_, HashMap<String, Probe>> {
        self.probes.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Notes an answered probe: its round trip, and the URL the node reported (empty from
    /// a node of an older version: it knows no grants, so nothing is routed to it).
    fn record_probe(&self, region: &str, grpc_addr: &str, sample: Duration, public_url: String, state_version: u32) {
        let mut probes = self.probes();
        let smoothed = match probes.get(grpc_addr) {
            // Exponentially weighted: one slow probe does not reorder the sources.
            Some(old) => old.rtt.mul_f64(0.7) + sample.mul_f64(0.3),
            None => sample,
        };
        let public_url = Some(public_url).filter(|u| !u.is_empty());
        probes.insert(grpc_addr.to_string(), Probe { rtt: smoothed, public_url, state_version });
        metrics::gauge!("meridian_region_rtt_seconds", "region" => region.to_string(), "node" => grpc_addr.to_string())
            .set(smoothed.as_secs_f64());
    }

    fn inflight(&self) -> std::sync::MutexGuard<'_, HashMap<Digest, Arc<Transfer>>> {
        self.inflight.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn store(&self) -> &Store {
        &self.store
    }

    pub fn blobs(&self) -> &Blobs {
        &self.blobs
    }

    /// Whether this node fetches `digest` for its region in the background. A region's
    /// nodes share one store, so one copy serves them all: of the region's nodes this node
    /// can reach (its RTT probe answers) and itself, the one whose id hashes highest with
    /// the digest fetches it (rendezvous hashing). Every node of the region comes to the
    /// same choice, so each blob is fetched once per region and the work spreads over its
    /// nodes; a node that stops answering hands its share to the others within a probe
    /// interval. (Until the first probes, each node fetches what it is asked to.)
    /// `members` is the membership as read once by a caller deciding for many digests.
    pub fn fetches_for_region(&self, members: &[crate::meta::MemberView], digest: &Digest) -> bool {
        self.fetcher_among(members, digest).is_none()
    }

    /// The other node of this region that fetches `digest` for it (see
    /// `fetches_for_region`); `None`: this node does.
    pub fn region_fetcher(&self, digest: &Digest) -> Option<crate::meta::types::NodeInfo> {
        self.fetcher_among(&self.meta.members(), digest)
    }

    fn fetcher_among(&self, members: &[crate::meta::MemberView], digest: &Digest) -> Option<crate::meta::types::NodeInfo> {
        let me = self.meta.node_id();
        let region = &self.meta.me().region;
        let key = digest.to_string();
        members
            .iter()
            .filter(|m| m.node_id == me || (&m.info.region == region && self.rtt_of(&m.info.grpc_addr).is_some()))
            .max_by_key(|m| (rendezvous_score(&key, m.node_id), m.node_id))
            .filter(|m| m.node_id != me)
            .map(|m| m.info.clone())
    }

    /// The nodes that can serve `digest`: every node of every other region holding it (a
    /// region's nodes share its store, so any of them serves the region's copy). A
    /// transfer tries them in order and resumes from the next when one fails.
    pub fn holders(&self, digest: &Digest) -> Vec<Holder> {
        let Ok(Some(location)) = self.store.blob_location(digest) else { return Vec::new() };
        let me = &self.meta.me().region;
        let mut holders: Vec<Holder> = self
            .meta
            .members()
            .into_iter()
            .filter(|m| &m.info.region != me && location.regions.contains(&m.info.region))
            .map(|m| Holder { region: m.info.region, grpc_addr: m.info.grpc_addr })
            .collect();
        // Nearest first; nodes not measured yet (or unreachable) last.
        holders.sort_by_key(|h| self.rtt_of(&h.grpc_addr).unwrap_or(Duration::MAX));
        holders
    }

    /// The transfer of `digest` in flight, or a new one. A client joining a background
    /// transfer promotes it: its source is told, and sends it ahead of this node's other
    /// background streams (see `FetchBlobRequest.background`).
    pub fn fetch(self: &Arc<Self>, digest: &Digest, size: u64, reason: Reason) -> std::io::Result<Arc<Transfer>> {
        let mut inflight = self.inflight();
        if let Some(t) = inflight.get(digest) {
            if matches!(reason, Reason::ClientWaiting) && t.priority.promote() {
                metrics::counter!("meridian_replication_transfers_promoted_total").increment(1);
                tokio::spawn(self.clone().tell_sources_of_promotion(digest.clone()));
            }
            return Ok(t.clone());
        }
        let path = self.blobs.staging_path(&format!("fetch-{}-{}", digest.hex(), uuid::Uuid::new_v4()));
        let file = Arc::new(
            std::fs::OpenOptions::new().create_new(true).read(true).write(true).open(&path)?,
        );
        let (tx, rx) = watch::channel(Progress::Running(0));
        let priority = Arc::new(FetchPriority::new(matches!(reason, Reason::Background), self.meta.node_id()));
        let transfer = Arc::new(Transfer { size, file: file.clone(), progress: rx, priority: priority.clone() });
        inflight.insert(digest.clone(), transfer.clone());
        let label = match reason {
            Reason::ClientWaiting => "fetch_through",
            Reason::Background => "background",
        };
        metrics::counter!("meridian_replication_transfers_total", "reason" => label).increment(1);
        let this = self.clone();
        let digest = digest.clone();
        tokio::spawn(async move {
            let sink = FileSink { file, written: 0, progress: tx, stats: this.stats.clone() };
            this.run_transfer(digest, size, path, sink, priority).await;
        });
        Ok(transfer)
    }

    /// Tells the source streaming `digest` here that a client now waits for it (the
    /// holders are asked in turn until one says it is streaming it; a source of an older
    /// version does not know the call, and its streams are never held back anyway).
    async fn tell_sources_of_promotion(self: Arc<Self>, digest: Digest) {
        use meridian_proto::replication::PromoteFetchRequest;
        let msg = PromoteFetchRequest { digest: digest.to_string(), requester: self.meta.node_id() };
        self.tell_holders(self.holders(&digest), &digest, "a client joined its stream", |mut client| {
            let req = within_seconds(msg.clone(), 5);
            async move { client.promote_fetch(req).await.map(|reply| reply.get_ref().found) }
        })
        .await
    }

    /// Tells the holders this fetch was read from that its bytes are all here (or that it
    /// ended), so they stop holding this node's background streams back for it.
    async fn tell_sources_client_fetch_done(self: Arc<Self>, digest: Digest, holders: Vec<Holder>) {
        use meridian_proto::replication::ClientFetchDoneRequest;
        let msg = ClientFetchDoneRequest { digest: digest.to_string(), requester: self.meta.node_id() };
        self.tell_holders(holders, &digest, "a client's fetch arrived", |mut client| {
            let req = within_seconds(msg.clone(), 5);
            // Every holder is told: any of them may have been read from.
            async move { client.client_fetch_done(req).await.map(|_| false) }
        })
        .await
    }

    /// Calls `call` on each holder in turn until one answers `true`. These calls only make
    /// transfers faster, so a holder that cannot be reached is passed over (and logged).
    async fn tell_holders<F, Fut>(&self, holders: Vec<Holder>, digest: &Digest, what: &str, mut call: F)
    where
        F: FnMut(BlobTransferClient<tonic::transport::Channel>) -> Fut,
        Fut: std::future::Future<Output = Result<bool, tonic::Status>>,
    {
        for holder in holders {
            let Ok(channel) = self.meta.peers().channel(&holder.grpc_addr) else { continue };
            match call(BlobTransferClient::new(channel)).await {
                Ok(true) => return,
                Ok(false) => {}
                Err(e) => tracing::debug!(%digest, region = %holder.region, error = %e.message(), "could not tell a source {what}"),
            }
        }
    }

    async fn run_transfer(
        self: Arc<Self>,
        digest: Digest,
        size: u64,
        path: std::path::PathBuf,
        mut sink: FileSink,
        priority: Arc<FetchPriority>,
    ) {
        let started = std::time::Instant::now();
        let holders = self.holders(&digest);
        let peers = self.meta.peers().clone();
        let channel = move |addr: &str, background: bool| {
            if background {
                peers.bulk_channel(addr)
            } else {
                peers.priority_channel(addr)
            }
        };
        let result =
            fetch_verified(&channel, &holders, &digest, size, &priority, &self.clients, &self.throttle, &mut sink).await;
        if !priority.is_background() {
            tokio::spawn(self.clone().tell_sources_client_fetch_done(digest.clone(), holders.clone()));
        }
        let outcome = match result {
            Ok(report) => {
                metrics::counter!("meridian_replication_resumes_total").increment(report.resumes as u64);
                metrics::counter!("meridian_replication_yields_total").increment(report.yields as u64);
                let file = sink.file.clone();
                let synced = tokio::task::spawn_blocking(move || {
                    crate::failpoints::io("blob-fsync")?;
                    file.sync_data()
                })
                .await;
                match synced {
                    Ok(Ok(())) => match self.blobs.commit(&path, &digest).await {
                        Ok(()) => {
                            tracing::info!(
                                %digest,
                                bytes = report.bytes,
                                sources = ?report.sources,
                                resumes = report.resumes,
                                yields = report.yields,
                                client_waited = !priority.is_background(),
                                ms = started.elapsed().as_millis() as u64,
                                "replica landed"
                            );
                            let _ = self.recorder.send(digest.clone());
                            // The copy came from the last region it was read from (a
                            // transfer that resumed elsewhere is counted there in full).
                            if let Some(from) = report.sources.last() {
                                self.usage.replicated(from, size);
                            }
                            Progress::Done(size)
                        }
                        Err(e) => {
                            tracing::error!(%digest, error = %e, "could not store a fetched blob");
                            Progress::Failed
                        }
                    },
                    _ => Progress::Failed,
                }
            }
            Err(e) => {
                metrics::counter!("meridian_replication_failures_total").increment(1);
                self.stats.transfers_failed.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(%digest, error = %e, "blob fetch failed");
                Progress::Failed
            }
        };
        if outcome == Progress::Failed {
            self.blobs.discard(&path).await;
        }
        let _ = sink.progress.send(outcome);
        self.inflight().remove(&digest);
    }
}

/// Named background task: records landed replicas, many per Raft entry.
async fn record_replicas(meta: Meta, mut rx: mpsc::UnboundedReceiver<Digest>) {
    let region = meta.me().region.clone();
    let mut pending: Vec<Digest> = Vec::new();
    loop {
        if pending.is_empty() {
            match rx.recv().await {
                Some(d) => pending.push(d),
                None => return,
            }
        }
        // Gather whatever else landed meanwhile (bounded wait), then one entry for all.
        tokio::time::sleep(Duration::from_millis(20)).await;
        while let Ok(d) = rx.try_recv() {
            pending.push(d);
        }
        pending.sort();
        pending.dedup();
        let cmd = Command::AddReplicas { region: region.clone(), digests: pending.clone(), at_ms: crate::meta::events::now_ms() };
        match meta.propose(cmd).await {
            Ok(_) => {
                metrics::counter!("meridian_replication_replicas_recorded_total").increment(pending.len() as u64);
                pending.clear();
            }
            Err(e) => {
                tracing::warn!(error = %e, count = pending.len(), "could not record replicas; retrying");
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
    }
}

/// Named background task: measures the round trip to every other node every few
/// seconds (an `Identify` call), which orders fetch sources nearest first, and notes the
/// registry URL each one reports (nearest-region routing redirects only to nodes that
/// answered their last probe).
pub async fn measure_rtt(rep: Arc<Replicator>, mut shutdown: tokio::sync::watch::Receiver<bool>) {
    use meridian_proto::cluster::forward_service_client::ForwardServiceClient;
    use meridian_proto::cluster::IdentifyRequest;
    loop {
        for m in rep.meta.members() {
            if m.node_id == rep.meta.node_id() {
                continue;
            }
            let Ok(channel) = rep.meta.peers().channel(&m.info.grpc_addr) else { continue };
            let mut req = tonic::Request::new(IdentifyRequest {});
            req.set_timeout(Duration::from_secs(2));
            let start = std::time::Instant::now();
            match ForwardServiceClient::new(channel).identify(req).await {
                Ok(identity) => {
                    let elapsed = start.elapsed();
                    let identity = identity.into_inner();
                    rep.meta.note_state_version(m.node_id, identity.state_version);
                    rep.record_probe(&m.info.region, &m.info.grpc_addr, elapsed, identity.public_url, identity.state_version);
                }
                Err(_) => {
                    rep.probes().remove(&m.info.grpc_addr);
                }
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_secs(2)) => {}
            _ = shutdown.changed() => return,
        }
    }
}

/// FNV-1a over the digest and a node id: stable across processes and versions, so every
/// node of a region ranks the same way.
fn rendezvous_score(digest: &str, node: u64) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in digest.bytes().chain(node.to_be_bytes()) {
        hash ^= byte as u64;
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    // FNV's low bits mix poorly for inputs that differ only at the end: finish with a
    // multiply-xorshift so node ids 1, 2, 3 do not rank in one fixed order.
    hash ^= hash >> 33;
    hash = hash.wrapping_mul(0xff51_afd7_ed55_8ccd);
    hash ^ (hash >> 33)
}

/// A gRPC request that gives up after `secs`.
fn within_seconds<T>(msg: T, secs: u64) -> tonic::Request<T> {
    let mut req = tonic::Request::new(msg);
    req.set_timeout(Duration::from_secs(secs));
    req
}

#[cfg(test)]
mod tests {
    use super::rendezvous_score;

    /// Each of a region's nodes fetches a fair share, and the choice among the others
    /// stays put when one node leaves (only the leaver's share moves).
    #[test]
    fn rendezvous_spreads_blobs_and_moves_only_a_leavers_share() {
        let digests: Vec<String> = (0..3000).map(|i| format!("sha256:{i:064x}")).collect();
        let owner = |d: &str, nodes: &[u64]| *nodes.iter().max_by_key(|&&n| (rendezvous_score(d, n), n)).unwrap();
        let three = [4u64, 5, 6];
        for node in three {
            let share = digests.iter().filter(|d| owner(d, &three) == node).count();
            assert!((800..1200).contains(&share), "node {node} fetches {share} of 3000");
        }
        for d in &digests {
            let before = owner(d, &three);
            let after = owner(d, &[4, 6]);
            if before != 5 {
                assert_eq!(before, after, "{d} moved though its node stayed");
            }
        }
    }
}

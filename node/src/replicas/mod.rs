//! Blobs this region lacks: fetched from the regions that hold them, either because a
//! client asked (fetch-through, streamed while stored) or because a manifest referenced
//! them (the background queue). One transfer per blob, however many wait for it.

pub mod transfer;
mod worker;

use crate::blobs::Blobs;
use crate::meta::command::Command;
use crate::meta::{Meta, Store};
use meridian_replication::{fetch_verified, Digest, Holder, RegionThrottle};
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
    /// Smoothed round-trip time to each region, measured continuously.
    rtt: Mutex<HashMap<String, Duration>>,
    pub stats: Arc<ReplicationCounters>,
    /// Bytes landed here per source region, for usage metering.
    usage: Arc<crate::usage::UsageRecorder>,
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
        Arc::new(Replicator {
            blobs,
            store,
            meta,
            inflight: Mutex::new(HashMap::new()),
            recorder: tx,
            throttle: RegionThrottle::new(bandwidth_limit),
            rtt: Mutex::new(HashMap::new()),
            stats: Arc::new(ReplicationCounters::default()),
            usage,
        })
    }

    pub fn rtt_of(&self, region: &str) -> Option<Duration> {
        self.rtt.lock().unwrap_or_else(|p| p.into_inner()).get(region).copied()
    }

    fn record_rtt(&self, region: &str, sample: Duration) {
        let mut rtt = self.rtt.lock().unwrap_or_else(|p| p.into_inner());
        let smoothed = match rtt.get(region) {
            // Exponentially weighted: one slow probe does not reorder the sources.
            Some(old) => old.mul_f64(0.7) + sample.mul_f64(0.3),
            None => sample,
        };
        rtt.insert(region.to_string(), smoothed);
        metrics::gauge!("meridian_region_rtt_seconds", "region" => region.to_string()).set(smoothed.as_secs_f64());
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

    /// Regions holding `digest`, other than this one, with their gRPC addresses.
    pub fn holders(&self, digest: &Digest) -> Vec<Holder> {
        let Ok(Some(location)) = self.store.blob_location(digest) else { return Vec::new() };
        let me = &self.meta.me().region;
        let members = self.meta.members();
        let mut holders: Vec<Holder> = location
            .regions
            .iter()
            .filter(|r| *r != me)
            .filter_map(|r| members.iter().find(|m| &m.info.region == r))
            .map(|m| Holder { region: m.info.region.clone(), grpc_addr: m.info.grpc_addr.clone() })
            .collect();
        // Nearest first; regions not measured yet (or unreachable) last.
        holders.sort_by_key(|h| self.rtt_of(&h.region).unwrap_or(Duration::MAX));
        holders
    }

    /// The transfer of `digest` in flight, or a new one.
    pub fn fetch(self: &Arc<Self>, digest: &Digest, size: u64, reason: Reason) -> std::io::Result<Arc<Transfer>> {
        let mut inflight = self.inflight();
        if let Some(t) = inflight.get(digest) {
            return Ok(t.clone());
        }
        let path = self.blobs.staging_path(&format!("fetch-{}-{}", digest.hex(), uuid::Uuid::new_v4()));
        let file = Arc::new(
            std::fs::OpenOptions::new().create_new(true).read(true).write(true).open(&path)?,
        );
        let (tx, rx) = watch::channel(Progress::Running(0));
        let transfer = Arc::new(Transfer { size, file: file.clone(), progress: rx });
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
            this.run_transfer(digest, size, path, sink).await;
        });
        Ok(transfer)
    }

    async fn run_transfer(self: Arc<Self>, digest: Digest, size: u64, path: std::path::PathBuf, mut sink: FileSink) {
        let holders = self.holders(&digest);
        let peers = self.meta.peers().clone();
        let channel = move |addr: &str| peers.bulk_channel(addr);
        let result = fetch_verified(&channel, &holders, &digest, size, &self.throttle, &mut sink).await;
        let outcome = match result {
            Ok(report) => {
                metrics::counter!("meridian_replication_resumes_total").increment(report.resumes as u64);
                let file = sink.file.clone();
                let synced = tokio::task::spawn_blocking(move || {
                    crate::failpoints::io("blob-fsync")?;
                    file.sync_data()
                })
                .await;
                match synced {
                    Ok(Ok(())) => match self.blobs.commit(&path, &digest).await {
                        Ok(()) => {
                            tracing::info!(%digest, bytes = report.bytes, sources = ?report.sources, resumes = report.resumes, "replica landed");
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
        let cmd = Command::AddReplicas { region: region.clone(), digests: pending.clone() };
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

/// Named background task: measures the round trip to every other region every few
/// seconds (an `Identify` call), which orders fetch sources nearest first.
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
            if ForwardServiceClient::new(channel).identify(req).await.is_ok() {
                rep.record_rtt(&m.info.region, start.elapsed());
            } else {
                rep.rtt.lock().unwrap_or_else(|p| p.into_inner()).remove(&m.info.region);
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_secs(2)) => {}
            _ = shutdown.changed() => return,
        }
    }
}

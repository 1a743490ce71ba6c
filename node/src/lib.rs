//! Meridian node: a geo-replicated OCI registry.
//!
//! - [`api`]: the OCI Distribution API over HTTP (axum).
//! - [`registry`]: the registry's operations, independent of transport.
//! - [`meta`]: cluster metadata in one Raft history (openraft on RocksDB).
//! - [`blobs`]: the region's content-addressed blob store and upload sessions.
//! - [`auth`]: identities, tokens and who may do what.
//! - [`cluster`]: the gRPC services between nodes and the Raft network over them.
//! - [`peers`]: the gRPC channels to other nodes, shared by everything that dials one.
//! - [`config`], [`observability`]: configuration and logs/metrics/traces.

pub mod api;
pub mod auth;
pub mod blobs;
pub mod cluster;
pub mod cli;
pub mod config;
pub mod console;
pub mod events;
pub mod failpoints;
pub mod lifecycle;
pub mod meta;
pub mod observability;
pub mod peers;
pub mod registry;
pub mod replicas;
pub mod routing;
pub mod usage;

use crate::blobs::uploads::UploadSessions;
use crate::blobs::{Blobs, FsBlobStore, S3BlobStore};
use crate::config::Config;
use crate::meta::{Meta, Store};
use crate::registry::Registry;
use anyhow::Context;
use std::sync::Arc;
use std::time::Duration;

/// How often idle upload sessions are looked for.
const UPLOAD_SWEEP_INTERVAL: Duration = Duration::from_secs(600);

/// Runs a node until SIGINT/SIGTERM.
pub async fn serve(config: Config) -> anyhow::Result<()> {
    // Taken first: from here on SIGHUP no longer ends the process (see RegistryListener).
    let hup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()).ok();
    let metrics = observability::init_metrics()?;
    let tls_files = config.tls_files()?;
    // Checked before anything starts: a bad URL or CIDR is a configuration error, not a
    // surprise on the first routed pull.
    let public_url = config.public_url()?;
    let routing_table = routing::RoutingTable::new(config.routing_table()?);
    let grpc_tls = match config.grpc_tls_files()? {
        Some((cert, key, ca)) => Some(cluster::tls::GrpcTls::load(&cert, &key, &ca).context("loading gRPC TLS files")?),
        None => None,
    };
    std::fs::create_dir_all(&config.data_dir)
        .with_context(|| format!("creating data directory {}", config.data_dir.display()))?;
    let store = Store::open(&config.data_dir.join("db")).context("opening RocksDB")?;
    let blobs: Blobs = match config.storage.kind {
        config::StorageKind::Fs => Arc::new(FsBlobStore::open(&config.data_dir).context("opening blob store")?),
        config::StorageKind::S3 => Arc::new(S3BlobStore::open(&config.storage, &config.data_dir).await.with_context(|| {
            format!("opening the S3 blob store (bucket {:?}, endpoint {:?})", config.storage.bucket, config.storage.endpoint)
        })?),
    };
    let peers = peers::Peers::new(config.dial_via.clone(), grpc_tls.as_ref().map(|t| t.client()))
        .with_replication_window(config.replication_window_bytes()?);
    let meta = Meta::start(&config, store.clone(), peers.clone(), cluster::GrpcNetwork::new(peers)).await.context("starting raft")?;
    let sessions = Arc::new(
        UploadSessions::new(store.clone(), blobs.clone(), config.node_id, config.max_upload_sessions_per_identity)
            .context("loading upload sessions")?,
    );
    let usage = Arc::new(usage::UsageRecorder::new(
        config.region.clone(),
        Duration::from_secs(config.usage.keep_days.saturating_mul(86_400)),
    ));
    for (region, stored) in store.stored_by_region().context("reading usage")? {
        observability::record_region_storage(&region, stored.bytes, stored.blobs);
    }
    let replicator = replicas::Replicator::start(
        blobs.clone(),
        store.clone(),
        meta.clone(),
        config.replication_bandwidth_limit,
        usage.clone(),
    );
    let routing = Arc::new(routing::NearestRegion::new(routing_table, meta.clone(), store.clone(), replicator.clone()));
    let (shutdown_tx, shutdown_rx) = tokio::sync::watch::channel(false);
    let auth = auth::Auth::new(config.auth.clone(), store.clone(), tls_files.is_some());
    let bootstrap = tokio::spawn(auth::bootstrap::ensure_identities(
        meta.clone(),
        store.clone(),
        config.data_dir.clone(),
        shutdown_rx.clone(),
    ));
    let (started_tx, started) = tokio::sync::watch::channel(false);
    let startup = tokio::spawn(meta::readiness::track_startup(meta.clone(), store.clone(), started_tx, shutdown_rx.clone()));
    let usage_recorder = tokio::spawn(usage::run_usage_recorder(
        usage.clone(),
        meta.clone(),
        Duration::from_secs(config.usage.record_secs.max(1)),
        shutdown_rx.clone(),
    ));
    let pulls = Arc::new(lifecycle::PullRecorder::default());
    let pull_recorder = tokio::spawn(lifecycle::run_pull_recorder(
        pulls.clone(),
        meta.clone(),
        Duration::from_secs(config.retention.pull_record_secs.max(1)),
        shutdown_rx.clone(),
    ));
    let registry = Registry {
        store: store.clone(),
        meta: meta.clone(),
        blobs: blobs.clone(),
        replicator: replicator.clone(),
        sessions: sessions.clone(),
        region: config.region.clone(),
        max_manifest_bytes: config.max_manifest_bytes,
        max_blob_bytes: config.max_blob_bytes,
        body_idle_timeout: Duration::from_secs(config.body_idle_timeout_secs.max(1)),
        trash_for: config.retention.trash_for(),
        pulls,
        usage,
    };

    let sweeper =
        tokio::spawn(sweep_idle_uploads(sessions, Duration::from_secs(config.upload_timeout_secs), shutdown_rx.clone()));
    // Bound before anything is served: a node that cannot take Raft traffic must not
    // pretend to be a member.
    let grpc_listener = tokio::net::TcpListener::bind(config.grpc_listen)
        .await
        .with_context(|| format!("binding gRPC {}", config.grpc_listen))?;
    let lifecycle =
        lifecycle::Lifecycle::new(
        meta.clone(),
        store.clone(),
        blobs.clone(),
        config.region.clone(),
        config.gc.clone(),
        config.retention.clone(),
    );
    let gc_schedule = tokio::spawn(lifecycle::run_gc_schedule(lifecycle.clone(), shutdown_rx.clone()));
    let registry = Arc::new(registry);
    let peer_up: events::PeerUp = {
        let replicator = replicator.clone();
        Arc::new(move |grpc_addr: &str| replicator.rtt_of(grpc_addr).is_some())
    };
    let events = events::Events::new(meta.clone(), store.clone(), config.events.clone(), peer_up).context("setting up webhook delivery")?;
    let event_delivery = events::start_delivery(events.clone(), shutdown_rx.clone()).context("starting webhook delivery")?;
    let identities = Arc::new(cluster::identity_admin::IdentityAdmin::new(meta.clone(), store.clone()));
    let grpc = {
        let (config, meta, shutdown) = (config.clone(), meta.clone(), shutdown_rx.clone());
        let identities = identities.clone();
        let grpc_replicator = replicator.clone();
        let uploads = Arc::new(api::upload_forward::ForwardedUploads { registry: registry.clone() });
        let routing = routing.clone();
        tokio::spawn(async move {
            if let Err(e) =
                cluster::serve_grpc(&config, grpc_listener, meta, grpc_replicator, lifecycle, uploads, routing, events, identities, grpc_tls, shutdown)
                    .await
            {
                tracing::error!(error = %e, listen = %config.grpc_listen, "gRPC server failed");
            }
        })
    };
    let replication = tokio::spawn(replicas::run_replication_worker(replicator.clone(), shutdown_rx.clone()));
    let rtt_prober = tokio::spawn(replicas::measure_rtt(replicator.clone(), shutdown_rx.clone()));
    let joiner = (!config.join.is_empty()).then(|| tokio::spawn(cluster::join_cluster(config.clone(), meta.clone(), shutdown_rx.clone())));

    let ui = config.console.enabled.then(|| {
        console::routes(console::Console {
            auth: auth.clone(),
            store: store.clone(),
            meta: meta.clone(),
            registry: registry.clone(),
            views: cluster::views::ClusterViews { meta: meta.clone(), replicator: replicator.clone() },
            identities: identities.clone(),
            regions_cache: Default::default(),
            cfg: config.console.clone(),
            secure: tls_files.is_some() || public_url.starts_with("https://"),
            tls: tls_files.is_some(),
            public_origin: console::origin_of(&public_url),
        })
    });
    let app = api::app(api::AppState { registry, auth, meta: meta.clone(), metrics, started, routing }, ui);
    let tcp = tokio::net::TcpListener::bind(config.listen)
        .await
        .with_context(|| format!("binding {}", config.listen))?;
    let tls = tls_files.is_some();
    let listener = api::listener::RegistryListener::new(tcp, tls_files, hup).context("setting up TLS")?;
    tracing::info!(
        listen = %config.listen,
        grpc_listen = %config.grpc_listen,
        data_dir = %config.data_dir.display(),
        region = %config.region,
        tls,
        "meridian serving"
    );
    // Stop serving on SIGINT/SIGTERM, or when Raft has stopped on a storage error (then the
    // process exits non-zero so a supervisor restarts it; a restart recovers from disk).
    let raft_failure = Arc::new(std::sync::Mutex::new(None::<String>));
    let stop = {
        let (meta, raft_failure) = (meta.clone(), raft_failure.clone());
        async move {
            tokio::select! {
                _ = shutdown_signal() => {}
                reason = meta.stopped() => {
                    tracing::error!(%reason, "Raft stopped on a storage error; shutting down so the node restarts from disk");
                    *raft_failure.lock().unwrap_or_else(|p| p.into_inner()) = Some(reason);
                }
            }
        }
    };
    api::server::serve(listener, app, Duration::from_secs(config.header_read_timeout_secs.max(1)), stop).await;
    let _ = shutdown_tx.send(true);
    let _ = sweeper.await;
    let _ = grpc.await;
    let _ = replication.await;
    let _ = rtt_prober.await;
    let _ = bootstrap.await;
    let _ = startup.await;
    let _ = gc_schedule.await;
    let _ = pull_recorder.await;
    let _ = usage_recorder.await;
    let _ = event_delivery.await;
    if let Some(j) = joiner {
        let _ = j.await;
    }
    meta.shutdown().await;
    if let Some(reason) = raft_failure.lock().unwrap_or_else(|p| p.into_inner()).take() {
        anyhow::bail!("Raft stopped: {reason}");
    }
    tracing::info!("meridian stopped");
    Ok(())
}

/// Named background task: removes upload sessions idle longer than the configured timeout.
async fn sweep_idle_uploads(
    sessions: Arc<UploadSessions>,
    max_idle: Duration,
    mut shutdown: tokio::sync::watch::Receiver<bool>,
) {
    loop {
        tokio::select! {
            _ = tokio::time::sleep(UPLOAD_SWEEP_INTERVAL) => {}
            _ = shutdown.changed() => return,
        }
        match sessions.expire_idle(max_idle).await {
            Ok(0) => {}
            Ok(n) => {
                metrics::counter!("meridian_upload_sessions_expired_total").increment(n as u64);
                tracing::info!(expired = n, "removed idle upload sessions");
            }
            Err(e) => tracing::warn!(error = %e, "upload session sweep failed"),
        }
    }
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
    }
}

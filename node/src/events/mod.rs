//! Delivering webhook events from the replicated outbox (`meta::events`).
//!
//! Each region delivers its own lane of `replicated` events (the region's member with the
//! lowest node id among those up; the leader, for a region that is down or no longer in
//! the membership), so "complete in X" comes from X while X is there. The leader delivers the cluster-wide lane: Raft already elects exactly one, it has the
//! newest applied state, and when its region goes down the next leader — elected within
//! an election timeout — resumes from the cursors in the cluster state, since every
//! voter holds the events. Each webhook is served by one task, strictly in order: a batch
//! is posted, and the next only after it was delivered or parked. Progress goes back into
//! the log in batches (`AckEvents`, every `events.ack_interval_ms`), so a new leader sends
//! again at most what was delivered since the last batch, with the same event ids.
//!
//! The guarantee: at least once, in order per webhook (parked and re-sent ranges aside).
//! A receiver that keeps failing is parked after `max_attempts` and then, while it keeps
//! failing, whatever is pending is parked at the first failed attempt, so a dead receiver
//! neither holds the outbox nor slows anything else: pushes never wait for deliveries.

mod deliver;
pub mod envelope;
mod tail;

use crate::config::EventsConfig;
use crate::meta::command::Command;
use crate::meta::events::{DeliveryUpdate, WebhookRecord, CLUSTER_LANE};
use crate::meta::{Meta, Store};
use std::collections::{BTreeMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use reqwest_for_object_store as http;

/// How often the supervisor looks for webhooks to serve when nothing wakes it.
const IDLE_LOOK: Duration = Duration::from_millis(250);
/// How often the outbox depth gauge is refreshed.
const DEPTH_EVERY: Duration = Duration::from_secs(2);
/// Events posted in one envelope at most.
const BATCH: usize = 64;
/// After a batch that was not full, a webhook's next POST waits this long, so while
/// pushes keep coming their events travel together (up to `BATCH` a POST) instead of one
/// POST each: nine webhooks at 300 pushes a second would otherwise cost the node a
/// quarter of a core. An event after a quiet spell goes at once.
const COALESCE: Duration = Duration::from_millis(100);
/// The least time between two passes of the supervisor (which starts a task per webhook
/// and lane): a new webhook or lane waits at most this long.
const SUPERVISE_EVERY: Duration = Duration::from_millis(100);
/// Webhook requests in flight across all webhooks.
const MAX_IN_FLIGHT: usize = 32;
/// Waiting for a TCP connection to a receiver.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// Peers are probed every 2 s (`replicas`): until a node has had time to hear from its
/// region's other nodes, it takes them all to be up, so a restart does not send a region's
/// events twice.
const PEER_PROBE_GRACE: Duration = Duration::from_secs(10);

/// Whether the node advertising this gRPC address answered its last liveness probe
/// (handed in by the composition root: `replicas` probes every member).
pub type PeerUp = Arc<dyn Fn(&str) -> bool + Send + Sync>;

/// The deliverer: one per node, active while the node leads.
#[derive(Clone)]
pub struct Events {
    inner: Arc<Inner>,
}

struct Inner {
    meta: Meta,
    /// The node's main runtime: proposals go through it, so the gRPC channel to the
    /// leader a proposal may open lives there, not on delivery's low-priority thread.
    main: tokio::runtime::Handle,
    store: Store,
    config: EventsConfig,
    peer_up: PeerUp,
    started: Instant,
    client: http::Client,
    in_flight: tokio::sync::Semaphore,
    /// (webhook, lane) pairs a task serves now.
    serving: Mutex<HashSet<(String, String)>>,
    /// Progress not yet recorded in the log: lane → webhook → update.
    acks: Mutex<BTreeMap<String, BTreeMap<String, DeliveryUpdate>>>,
    /// The newest events of each lane, read and serialized once for every webhook.
    tail: tail::Tail,
}

#[derive(Debug, thiserror::Error)]
pub enum EventsError {
    #[error("no webhook named {0:?}")]
    UnknownWebhook(String),
    #[error("storage: {0}")]
    Store(#[from] crate::meta::store::StoreError),
}

/// What a ping got.
#[derive(Debug, Clone)]
pub struct PingOutcome {
    pub status: u16,
    pub error: String,
    pub millis: u64,
    pub event_id: String,
}

impl Events {
    pub fn new(meta: Meta, store: Store, config: EventsConfig, peer_up: PeerUp) -> anyhow::Result<Events> {
        // reqwest here is built without a default TLS provider: use ring, as the node does.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let client = http::Client::builder()
            .connect_timeout(CONNECT_TIMEOUT)
            // A receiver's redirect is an answer, not a place to send the body again
            // (Distribution counts 3xx as delivered as well).
            .redirect(http::redirect::Policy::none())
            .user_agent(concat!("meridian/", env!("CARGO_PKG_VERSION")))
            .build()?;
        Ok(Events {
            inner: Arc::new(Inner {
                meta,
                main: tokio::runtime::Handle::current(),
                store,
                config,
                peer_up,
                started: Instant::now(),
                client,
                in_flight: tokio::sync::Semaphore::new(MAX_IN_FLIGHT),
                serving: Mutex::default(),
                acks: Mutex::default(),
                tail: tail::Tail::default(),
            }),
        })
    }

    /// Posts one signed `ping` event to a webhook now, from this node (not queued).
    pub async fn ping(&self, name: &str) -> Result<PingOutcome, EventsError> {
        let hook = self.inner.store.webhook(name)?.ok_or_else(|| EventsError::UnknownWebhook(name.to_string()))?;
        let me = self.inner.meta.me();
        let id = uuid::Uuid::new_v4().to_string();
        let event = serde_json::json!({
            "id": id,
            "timestamp": envelope::timestamp(crate::meta::events::now_ms()),
            "action": "ping",
            "target": {},
            "request": {},
            "actor": {},
            "source": { "addr": me.http_addr, "instanceID": format!("{}-{}", me.region, self.inner.meta.node_id()) },
            "region": me.region,
        });
        let started = Instant::now();
        let result = deliver::post(&self.inner.client, &hook, envelope::envelope(&[serde_json::to_vec(&event).unwrap_or_default()])).await;
        let millis = started.elapsed().as_millis() as u64;
        Ok(match result {
            Ok(status) => PingOutcome { status, error: String::new(), millis, event_id: id },
            Err(f) => PingOutcome { status: f.status, error: f.error, millis, event_id: id },
        })
    }
}

/// How much lower than the node's other threads delivery runs (a nice value).
const DELIVERY_NICE: libc::c_int = 10;

/// Starts delivery on a thread of its own, at a lower CPU priority: receivers are
/// background work, and on a busy node the requests that produce events come first (the
/// ten-webhook benchmark in `benches/RESULTS.md`). The receiver says when it has stopped.
pub fn start_delivery(events: Events, shutdown: tokio::sync::watch::Receiver<bool>) -> std::io::Result<tokio::sync::oneshot::Receiver<()>> {
    let (done_tx, done_rx) = tokio::sync::oneshot::channel();
    std::thread::Builder::new().name("meridian-events".into()).spawn(move || {
        lower_priority();
        match tokio::runtime::Builder::new_current_thread().enable_all().build() {
            Ok(rt) => rt.block_on(run_events(events, shutdown)),
            Err(e) => tracing::error!(error = %e, "cannot start the webhook delivery runtime; no events are delivered"),
        }
        let _ = done_tx.send(());
    })?;
    Ok(done_rx)
}

/// Lowers this thread's scheduling priority (Linux keeps a nice value per thread; threads
/// it starts inherit it).
fn lower_priority() {
    // SAFETY: plain system calls about this thread itself; no memory is passed.
    let result = unsafe {
        let tid = libc::syscall(libc::SYS_gettid) as libc::id_t;
        libc::setpriority(libc::PRIO_PROCESS, tid, DELIVERY_NICE)
    };
    if result != 0 {
        tracing::warn!(error = %std::io::Error::last_os_error(), "webhook delivery runs at the node's priority");
    }
}

/// Serves every enabled webhook while this node leads, and records progress.
async fn run_events(events: Events, mut shutdown: tokio::sync::watch::Receiver<bool>) {
    let inner = events.inner.clone();
    let acks = tokio::spawn(record_progress(inner.clone(), shutdown.clone()));
    let mut changed = inner.store.events_changed();
    let mut depth_at = Instant::now();
    loop {
        let lanes = inner.lanes_delivered_here();
        if !lanes.is_empty() {
            match inner.store.webhooks() {
                Ok(hooks) => {
                    for hook in hooks.iter().filter(|h| h.enabled) {
                        for lane in &lanes {
                            let key = (hook.name.clone(), lane.clone());
                            let fresh = inner.serving.lock().unwrap_or_else(|p| p.into_inner()).insert(key);
                            if fresh {
                                tokio::spawn(deliver::serve_webhook(inner.clone(), hook.name.clone(), lane.clone(), shutdown.clone()));
                            }
                        }
                    }
                }
                Err(e) => tracing::warn!(error = %e, "reading webhooks"),
            }
            if depth_at.elapsed() >= DEPTH_EVERY {
                depth_at = Instant::now();
                record_depth(&inner, &lanes);
            }
        }
        // At most one pass per `SUPERVISE_EVERY` however fast events come: a pass reads
        // every webhook and lane, and the tasks it starts read their events themselves.
        tokio::select! {
            _ = tokio::time::sleep(SUPERVISE_EVERY) => {}
            _ = shutdown.changed() => break,
        }
        tokio::select! {
            _ = changed.changed() => {}
            _ = tokio::time::sleep(IDLE_LOOK) => {}
            _ = shutdown.changed() => break,
        }
    }
    let _ = acks.await;
}

/// `meridian_events_outbox_depth{webhook,lane}`: events waiting for each webhook in the
/// lanes this node delivers (at most 100k counted; lane `cluster` is the cluster-wide one).
fn record_depth(inner: &Inner, lanes: &[String]) {
    let Ok(hooks) = inner.store.webhooks() else { return };
    for hook in hooks {
        for lane in lanes {
            let cursor = inner.store.event_cursor(&hook, lane).unwrap_or_default();
            let depth = inner.store.events_pending(lane, cursor, 100_000).unwrap_or(0);
            let label = if lane.is_empty() { "cluster".to_string() } else { lane.clone() };
            metrics::gauge!("meridian_events_outbox_depth", "webhook" => hook.name.clone(), "lane" => label).set(depth as f64);
        }
    }
}

impl Inner {
    /// Proposes `cmd` from the node's main runtime (see `main`).
    async fn propose(&self, cmd: Command) -> Result<crate::meta::command::CommandResult, anyhow::Error> {
        let meta = self.meta.clone();
        Ok(self.main.spawn(async move { meta.propose(cmd).await }).await??)
    }

    /// How often the leader looks for parked ranges past `events.parked_keep_secs`: a
    /// quarter of it, between a second and a minute.
    fn expire_every(&self) -> Duration {
        Duration::from_secs((self.config.parked_keep_secs / 4).clamp(1, 60))
    }

    /// At the leader: drops parked ranges older than `events.parked_keep_secs`, when there
    /// are any (one entry then, none otherwise).
    async fn expire_parked(&self) {
        let keep = self.config.parked_keep_secs;
        if keep == 0 || !self.meta.is_leader() {
            return;
        }
        let before_unix = crate::meta::command::proposer_clock().saturating_sub(keep);
        match self.store.oldest_parked_unix() {
            Ok(Some(oldest)) if oldest < before_unix => {
                if let Err(e) = self.propose(Command::ExpireParked { before_unix }).await {
                    tracing::debug!(error = %e, "dropping expired parked events");
                }
            }
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "reading parked events"),
        }
    }

    /// Queues a webhook's progress for the next `AckEvents`.
    fn report(&self, lane: &str, update: DeliveryUpdate) {
        let mut acks = self.acks.lock().unwrap_or_else(|p| p.into_inner());
        let lane = acks.entry(lane.to_string()).or_default();
        match lane.get_mut(&update.name) {
            Some(u) => {
                u.through = u.through.max(update.through);
                u.delivered += update.delivered;
                if update.status.is_some() {
                    u.status = update.status;
                }
            }
            None => {
                lane.insert(update.name.clone(), update);
            }
        }
    }

    /// Backoff before attempt `attempts + 1`: doubling from the initial wait up to the
    /// maximum, with jitter (half to all of it) so receivers coming back are not hit by
    /// every webhook at once.
    fn backoff(&self, attempts: u32) -> Duration {
        let initial = self.config.backoff_initial_ms.max(1);
        let ms = initial.saturating_mul(1u64 << attempts.saturating_sub(1).min(30)).min(self.config.backoff_max_ms.max(initial));
        let jitter = 0.5 + rand::random::<f64>() * 0.5;
        Duration::from_millis((ms as f64 * jitter) as u64)
    }

    fn stop_serving(&self, name: &str, lane: &str) {
        self.serving.lock().unwrap_or_else(|p| p.into_inner()).remove(&(name.to_string(), lane.to_string()));
    }

    /// Whether this node delivers `lane`: the cluster lane at the leader; a region's lane
    /// at that region's member with the lowest node id that is up (it answered its last
    /// probe; this node is up), or at the leader when no member of the region is (a
    /// region that is down, or gone). Two nodes may both think they deliver a lane for a
    /// moment (a probe lost): receivers get an event twice then, with the same id.
    fn delivers(&self, lane: &str) -> bool {
        if lane == CLUSTER_LANE {
            return self.meta.is_leader();
        }
        let me = self.meta.node_id();
        let settling = self.started.elapsed() < PEER_PROBE_GRACE;
        let mut members: Vec<_> = self.meta.members().into_iter().filter(|m| m.info.region == lane).collect();
        members.sort_by_key(|m| m.node_id);
        match members.iter().find(|m| m.node_id == me || settling || (self.peer_up)(&m.info.grpc_addr)) {
            Some(m) => m.node_id == me,
            None => self.meta.is_leader(),
        }
    }

    /// The lanes this node delivers now.
    fn lanes_delivered_here(&self) -> Vec<String> {
        let mut lanes: std::collections::BTreeSet<String> = crate::meta::events::known_lanes(&self.store).unwrap_or_default().into_iter().collect();
        lanes.insert(CLUSTER_LANE.to_string());
        lanes.insert(self.meta.me().region.clone());
        lanes.into_iter().filter(|l| self.delivers(l)).collect()
    }

    fn webhook(&self, name: &str) -> Option<WebhookRecord> {
        self.store.webhook(name).ok().flatten().filter(|h| h.enabled)
    }
}

/// Records queued progress every `ack_interval_ms`, one `AckEvents` per lane. A node that
/// no longer leads drops it: the next leader sends those events again.
async fn record_progress(inner: Arc<Inner>, mut shutdown: tokio::sync::watch::Receiver<bool>) {
    let every = Duration::from_millis(inner.config.ack_interval_ms.max(10));
    let mut expired_at = Instant::now();
    loop {
        if expired_at.elapsed() >= inner.expire_every() {
            expired_at = Instant::now();
            inner.expire_parked().await;
        }
        let stopping = tokio::select! {
            _ = tokio::time::sleep(every) => false,
            _ = shutdown.changed() => true,
        };
        let pending = std::mem::take(&mut *inner.acks.lock().unwrap_or_else(|p| p.into_inner()));
        for (lane, updates) in pending {
            let updates: Vec<DeliveryUpdate> = updates.into_values().collect();
            let cmd = Command::AckEvents { lane: lane.clone(), updates: updates.clone() };
            if let Err(e) = inner.propose(cmd).await {
                // Still leading: try again with the next batch. Otherwise the next leader
                // sends these events again.
                tracing::debug!(error = %e, "recording event deliveries");
                if inner.delivers(&lane) {
                    for u in updates {
                        inner.report(&lane, u);
                    }
                }
            }
        }
        if stopping {
            return;
        }
    }
}

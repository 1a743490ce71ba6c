//! One webhook's delivery task, and the HTTP request that delivers.

use super::envelope::{self, DELIVERY_HEADER, MEDIA_TYPE, SIGNATURE_HEADER};
use super::tail::Cached;
use super::{http, Inner, BATCH, COALESCE};
use crate::meta::command::Command;
use crate::meta::events::{
    now_ms, DeliveryStatus, DeliveryUpdate, EventRecord, Parked, ParkedRange, Seq, WebhookRecord, CLUSTER_LANE,
};
use std::sync::Arc;
use std::time::Duration;

/// Events looked at per step, matching or not (non-matching ones only move the cursor).
const SCAN: usize = 256;
/// While a webhook keeps failing, one failed attempt parks up to this many events.
const PARK_ALL_UP_TO: usize = 10_000;

/// Why a delivery attempt failed.
#[derive(Debug)]
pub struct Failure {
    /// The receiver's status, 0 when it gave none.
    pub status: u16,
    pub error: String,
    /// For `meridian_events_delivery_attempts_total{outcome}`.
    pub outcome: &'static str,
}

/// Posts one envelope. 2xx and 3xx are delivered; anything else, a timeout or a
/// connection error is a failure.
pub async fn post(client: &http::Client, hook: &WebhookRecord, body: Vec<u8>) -> Result<u16, Failure> {
    let mut request = client
        .post(&hook.url)
        .timeout(Duration::from_millis(hook.timeout_ms.max(1)))
        .header("content-type", MEDIA_TYPE)
        .header(DELIVERY_HEADER, uuid::Uuid::new_v4().to_string());
    for (name, value) in &hook.headers {
        request = request.header(name.as_str(), value.expose());
    }
    if let Some(secret) = &hook.secret {
        request = request.header(SIGNATURE_HEADER, envelope::signature(secret.expose(), &body));
    }
    match request.body(body).send().await {
        Ok(resp) if resp.status().is_success() || resp.status().is_redirection() => Ok(resp.status().as_u16()),
        Ok(resp) => {
            let status = resp.status().as_u16();
            Err(Failure { status, error: format!("the receiver answered {status}"), outcome: "http_error" })
        }
        Err(e) if e.is_timeout() => {
            Err(Failure { status: 0, error: format!("no answer within {} ms", hook.timeout_ms), outcome: "timeout" })
        }
        Err(e) if e.is_connect() => Err(Failure { status: 0, error: format!("cannot connect: {}", error_chain(&e)), outcome: "connect_error" }),
        Err(e) => Err(Failure { status: 0, error: error_chain(&e), outcome: "error" }),
    }
}

/// An error with its causes (reqwest's own text says little: "error sending request").
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

/// Serves one webhook in one lane until this node stops delivering it, the webhook goes or is disabled, or
/// the node shuts down.
pub async fn serve_webhook(inner: Arc<Inner>, name: String, lane: String, mut shutdown: tokio::sync::watch::Receiver<bool>) {
    let mut task =
        Task { inner: inner.clone(), name: name.clone(), lane: lane.clone(), delivered_through: None, attempts: 0, failing: false };
    let mut changed = inner.store.events_changed();
    loop {
        if *shutdown.borrow() || !inner.delivers(&lane) {
            break;
        }
        let Some(hook) = inner.webhook(&name) else { break };
        let wait = match task.step(&hook).await {
            Ok(Step::More) => None,
            Ok(Step::Sent { full: true }) => None,
            Ok(Step::Sent { full: false }) => {
                // Let the next events gather (see `COALESCE`); new events do not cut this short.
                tokio::select! {
                    _ = tokio::time::sleep(COALESCE) => {}
                    _ = shutdown.changed() => break,
                }
                None
            }
            Ok(Step::Idle) => Some(super::IDLE_LOOK),
            Ok(Step::Backoff(d)) => Some(d),
            Err(e) => {
                tracing::warn!(webhook = %name, error = %e, "event delivery step failed");
                Some(Duration::from_secs(1))
            }
        };
        if let Some(wait) = wait {
            tokio::select! {
                // New events end an idle wait, never a backoff.
                _ = changed.changed(), if task.attempts == 0 => {}
                _ = tokio::time::sleep(wait) => {}
                _ = shutdown.changed() => break,
            }
        }
    }
    inner.stop_serving(&name, &lane);
}

enum Step {
    /// Go on at once.
    More,
    /// A batch was delivered; a full one means more may be waiting.
    Sent { full: bool },
    /// Nothing to send.
    Idle,
    /// The receiver failed: wait this long.
    Backoff(Duration),
}

struct Task {
    inner: Arc<Inner>,
    name: String,
    lane: String,
    /// Delivered here, maybe not yet recorded in the log.
    delivered_through: Option<Seq>,
    /// Failed attempts in a row at the current batch.
    attempts: u32,
    /// Parked since the last success: the next failure parks at once.
    failing: bool,
}

impl Task {
    async fn step(&mut self, hook: &WebhookRecord) -> anyhow::Result<Step> {
        let store = &self.inner.store;
        let lane = self.lane.clone();
        if let Some(parked) = store.parked(&hook.name)?.into_iter().find(|p| p.range.resend && p.lane == lane) {
            return self.resend(hook, parked).await;
        }
        let cursor = store.event_cursor(hook, &lane)?.max(self.delivered_through.unwrap_or_default());
        let scanned = self.inner.tail.after(store, &lane, cursor, SCAN)?;
        // A scan that filled up may have left events behind: no pause before the next.
        let more_waiting = scanned.len() == SCAN;
        let mut batch: Vec<(Seq, Arc<Cached>)> = Vec::new();
        let mut through = cursor;
        for (seq, cached) in scanned {
            if batch.len() == BATCH {
                break;
            }
            let event = &cached.event;
            if hook.wants(&event.action, &event.repo, &event.region) {
                if !self.push_delivered(hook, event)? {
                    break;
                }
                batch.push((seq, cached));
            }
            through = seq;
        }
        if through == cursor {
            // Delivered here but not (yet) recorded — a report lost to a failed proposal:
            // say it again, or the lane is never trimmed and gated events wait forever.
            if self.delivered_through.is_some_and(|d| d > store.event_cursor(hook, &lane).unwrap_or_default()) {
                self.report(self.delivered_through, 0, None);
            }
            return Ok(Step::Idle);
        }
        if batch.is_empty() {
            // Nothing here is for this webhook: move past it.
            self.delivered_through = Some(through);
            self.report(Some(through), 0, None);
            return Ok(Step::More);
        }
        match self.send(hook, &batch).await {
            Ok(status) => {
                self.delivered_through = Some(through);
                self.attempts = 0;
                self.failing = false;
                self.report(Some(through), batch.len() as u64, Some(self.status(status, String::new())));
                Ok(Step::Sent { full: batch.len() == BATCH || more_waiting })
            }
            Err(failure) => {
                self.attempts += 1;
                if self.failing || self.attempts >= hook.max_attempts {
                    let from = batch[0].0;
                    let through = if self.failing { self.last_pending(through)? } else { through };
                    self.park(hook, from, through, &failure).await?;
                    return Ok(Step::More);
                }
                metrics::counter!("meridian_events_retried_total", "webhook" => hook.name.clone()).increment(1);
                self.report(None, 0, Some(self.status(failure.status, failure.error)));
                Ok(Step::Backoff(self.inner.backoff(self.attempts)))
            }
        }
    }

    /// Posts a batch (at most `MAX_IN_FLIGHT` across webhooks), counting the outcome.
    async fn send(&self, hook: &WebhookRecord, batch: &[(Seq, Arc<Cached>)]) -> Result<u16, Failure> {
        let parts: Vec<&[u8]> = batch.iter().map(|(_, c)| c.bytes.as_slice()).collect();
        let body = envelope::envelope(&parts);
        let _permit = self.inner.in_flight.acquire().await;
        let result = post(&self.inner.client, hook, body).await;
        let outcome = match &result {
            Ok(_) => "ok",
            Err(f) => f.outcome,
        };
        let labels = [("webhook", hook.name.clone()), ("outcome", outcome.to_string())];
        metrics::counter!("meridian_events_delivery_attempts_total", &labels).increment(1);
        if result.is_ok() {
            metrics::counter!("meridian_events_delivered_total", "webhook" => hook.name.clone()).increment(batch.len() as u64);
            let now = now_ms();
            let latency = metrics::histogram!("meridian_events_delivery_latency_seconds", "webhook" => hook.name.clone());
            for (_, c) in batch {
                latency.record(now.saturating_sub(c.event.at_ms) as f64 / 1000.0);
            }
        } else if let Err(f) = &result {
            tracing::info!(webhook = %hook.name, events = batch.len(), attempt = self.attempts + 1, error = %f.error, "event delivery failed");
        }
        result
    }

    /// Whether the webhook is done with the `push` events of the entry that pushed the
    /// image this `replicated` event is about (or never gets them): "complete in X" never
    /// reaches a receiver before "pushed". Other events need nothing first.
    fn push_delivered(&self, hook: &WebhookRecord, event: &EventRecord) -> anyhow::Result<bool> {
        let (Some(index), Some(pushed_in)) = (event.push_index, event.push_region.as_deref()) else { return Ok(true) };
        if !hook.wants("push", &event.repo, pushed_in) {
            return Ok(true);
        }
        let store = &self.inner.store;
        let cursor = store.event_cursor(hook, CLUSTER_LANE)?;
        Ok(store.events_after(CLUSTER_LANE, cursor, 1)?.first().is_none_or(|(next, _)| next.index > index))
    }

    /// The last event of the lane now, up to `PARK_ALL_UP_TO` past `through`.
    fn last_pending(&self, through: Seq) -> anyhow::Result<Seq> {
        let rest = self.inner.store.events_after(&self.lane, through, PARK_ALL_UP_TO)?;
        Ok(rest.last().map(|(s, _)| *s).unwrap_or(through))
    }

    /// Parks `from..=through` in the log, and moves on.
    async fn park(&mut self, hook: &WebhookRecord, from: Seq, through: Seq, failure: &Failure) -> anyhow::Result<()> {
        let range = ParkedRange {
            through,
            attempts: self.attempts,
            last_status: failure.status,
            last_error: failure.error.clone(),
            parked_unix: now_ms() / 1000,
            resend: false,
        };
        let cmd = Command::ParkEvents { name: hook.name.clone(), lane: self.lane.clone(), from, range };
        self.inner.propose(cmd).await?;
        tracing::warn!(webhook = %hook.name, attempts = self.attempts, error = %failure.error, "parked event deliveries");
        metrics::counter!("meridian_events_parked_total", "webhook" => hook.name.clone()).increment(1);
        self.delivered_through = Some(through);
        self.attempts = 0;
        self.failing = true;
        self.report(None, 0, Some(self.status(failure.status, failure.error.clone())));
        Ok(())
    }

    /// Sends a parked range again, batch by batch; delivered, it goes; failing
    /// `max_attempts` times, it stays parked with the new status.
    async fn resend(&mut self, hook: &WebhookRecord, parked: Parked) -> anyhow::Result<Step> {
        let store = &self.inner.store;
        let events: Vec<(Seq, Arc<Cached>)> = store
            .parked_events(&parked)?
            .into_iter()
            .filter(|(_, e)| hook.wants(&e.action, &e.repo, &e.region))
            .map(|(seq, e)| (seq, Cached::new(&parked.lane, seq, e)))
            .collect();
        let mut attempts = 0;
        let mut chunks = events.chunks(BATCH);
        let mut next = chunks.next();
        let result = loop {
            let Some(chunk) = next else { break Ok(0) };
            if !self.inner.delivers(&self.lane) || self.inner.webhook(&hook.name).is_none() {
                return Ok(Step::Idle);
            }
            match self.send(hook, chunk).await {
                Ok(_) => {
                    attempts = 0;
                    next = chunks.next();
                }
                Err(f) => {
                    attempts += 1;
                    if attempts >= hook.max_attempts {
                        break Err(f);
                    }
                    tokio::time::sleep(self.inner.backoff(attempts)).await;
                }
            }
        };
        let (delivered, status) = match result {
            Ok(_) => (true, DeliveryStatus { delivered: events.len() as u64, ..self.status(200, String::new()) }),
            Err(f) => (false, DeliveryStatus { attempts, ..self.status(f.status, f.error) }),
        };
        let cmd = Command::ParkedDone { name: hook.name.clone(), lane: parked.lane, from: parked.from, delivered, status };
        self.inner.propose(cmd).await?;
        Ok(Step::More)
    }

    fn status(&self, last_status: u16, last_error: String) -> DeliveryStatus {
        DeliveryStatus { last_status, last_error, attempts: self.attempts, last_attempt_unix: now_ms() / 1000, delivered: 0 }
    }

    /// Queues progress in this task's lane for the next `AckEvents`.
    fn report(&self, through: Option<Seq>, delivered: u64, status: Option<DeliveryStatus>) {
        let update = DeliveryUpdate { name: self.name.clone(), through, delivered, status };
        self.inner.report(&self.lane, update);
    }
}

//! The admin service's webhook calls: webhooks as cluster state, their deliveries, pings
//! and re-sends. Delivery itself is `crate::events`'; this checks input and maps onto the
//! API.

use super::admin_service::{check_name, internal, meta_status, AdminServiceImpl, USER_CATCH_UP_TIMEOUT};
use crate::config::Secret;
use crate::meta::command::{Command, CommandResult};
use crate::meta::events::{event_id, known_lanes, url_problem, DeliveryStatus, Seq, WebhookRecord, ACTIONS, CLUSTER_LANE};
use crate::meta::{MemberView, STATE_VERSION};
use meridian_proto::admin::*;
use tonic::Status;

/// The actions a webhook gets when none are named.
const DEFAULT_ACTIONS: [&str; 2] = ["push", "delete"];
const DEFAULT_TIMEOUT_MS: u32 = 5_000;
const DEFAULT_MAX_ATTEMPTS: u32 = 10;
const MAX_SECRET_BYTES: usize = 256;
/// Events `deliveries` lists when no limit is given.
const DEFAULT_LIMIT: usize = 50;

/// Header values may be credentials: shown masked.
const MASK: &str = "***";

fn info(hook: &WebhookRecord) -> WebhookInfo {
    WebhookInfo {
        name: hook.name.clone(),
        url: hook.url.clone(),
        actions: hook.actions.clone(),
        repos: hook.repos.clone(),
        region: hook.region.clone().unwrap_or_default(),
        headers: hook.headers.iter().map(|(k, _)| (k.clone(), MASK.to_string())).collect(),
        secret: String::new(),
        has_secret: hook.secret.is_some(),
        enabled: hook.enabled,
        timeout_ms: hook.timeout_ms as u32,
        max_attempts: hook.max_attempts,
    }
}

fn check_url(url: &str) -> Result<(), Status> {
    match url_problem(url) {
        Some(why) => Err(Status::invalid_argument(format!("--url {url:?}: {why}"))),
        None => Ok(()),
    }
}

/// Checks a webhook as it would be stored.
fn check(hook: &WebhookRecord) -> Result<(), Status> {
    check_name("webhook", &hook.name)?;
    check_url(&hook.url)?;
    if hook.actions.is_empty() {
        return Err(Status::invalid_argument("--actions: name at least one of push, delete, replicated, base_updated"));
    }
    if let Some(bad) = hook.actions.iter().find(|a| !ACTIONS.contains(&a.as_str())) {
        return Err(Status::invalid_argument(format!("--actions: {bad:?} is not one of push, delete, replicated, base_updated")));
    }
    if let Some(bad) = hook.repos.iter().find(|p| !crate::registry::names::is_repository_pattern(p)) {
        return Err(Status::invalid_argument(format!("--repos {bad:?} is not `*`, a repository name or NAME/*")));
    }
    if hook.region.as_deref().is_some_and(|r| r.is_empty() || r.contains('\0')) {
        return Err(Status::invalid_argument("--region: not a region name"));
    }
    for (name, value) in &hook.headers {
        let valid_name = axum::http::HeaderName::from_bytes(name.as_bytes()).is_ok();
        if !valid_name || axum::http::HeaderValue::from_str(value.expose()).is_err() {
            return Err(Status::invalid_argument(format!("--header {name:?}: not a valid HTTP header")));
        }
    }
    if !(100..=60_000).contains(&hook.timeout_ms) {
        return Err(Status::invalid_argument("--timeout must be between 100ms and 60s"));
    }
    if !(1..=100).contains(&hook.max_attempts) {
        return Err(Status::invalid_argument("--max-attempts must be between 1 and 100"));
    }
    if hook.secret.as_ref().is_some_and(|s| s.expose().is_empty() || s.expose().len() > MAX_SECRET_BYTES) {
        return Err(Status::invalid_argument(format!("--secret must be 1-{MAX_SECRET_BYTES} bytes")));
    }
    Ok(())
}

/// The webhook a create makes from the request (defaults for what it leaves out).
fn created(w: WebhookInfo) -> WebhookRecord {
    WebhookRecord {
        name: w.name,
        url: w.url,
        actions: if w.actions.is_empty() { DEFAULT_ACTIONS.iter().map(|a| a.to_string()).collect() } else { w.actions },
        repos: w.repos,
        region: Some(w.region).filter(|r| !r.is_empty()),
        headers: w.headers.into_iter().map(|(k, v)| (k, Secret::new(v))).collect(),
        secret: Some(w.secret).filter(|s| !s.is_empty()).map(Secret::new),
        enabled: w.enabled,
        timeout_ms: if w.timeout_ms == 0 { DEFAULT_TIMEOUT_MS } else { w.timeout_ms } as u64,
        max_attempts: if w.max_attempts == 0 { DEFAULT_MAX_ATTEMPTS } else { w.max_attempts },
        since: Seq::default(),
    }
}

/// `old` with the fields named in `set` taken from `w`.
fn updated(mut old: WebhookRecord, w: WebhookInfo, set: &[String]) -> Result<WebhookRecord, Status> {
    for field in set {
        match field.as_str() {
            "url" => old.url = w.url.clone(),
            "actions" => old.actions = w.actions.clone(),
            "repos" => old.repos = w.repos.clone(),
            "region" => old.region = Some(w.region.clone()).filter(|r| !r.is_empty()),
            "headers" => old.headers = w.headers.iter().map(|(k, v)| (k.clone(), Secret::new(v.clone()))).collect(),
            "secret" => old.secret = Some(w.secret.clone()).filter(|s| !s.is_empty()).map(Secret::new),
            "enabled" => old.enabled = w.enabled,
            "timeout_ms" => old.timeout_ms = w.timeout_ms as u64,
            "max_attempts" => old.max_attempts = w.max_attempts,
            other => return Err(Status::invalid_argument(format!("unknown webhook field {other:?}"))),
        }
    }
    Ok(old)
}

pub async fn put(svc: &AdminServiceImpl, req: PutWebhookRequest) -> Result<WebhookInfo, Status> {
    let w = req.webhook.ok_or_else(|| Status::invalid_argument("no webhook given"))?;
    check_name("webhook", &w.name)?;
    let name = w.name.clone();
    let hook = if req.create {
        created(w)
    } else {
        // Fields left out keep their value: read the webhook as the leader has it.
        let _ = svc.meta.catch_up(USER_CATCH_UP_TIMEOUT).await;
        let old = store(svc).webhook(&name).map_err(internal)?.ok_or_else(|| unknown(&name))?;
        updated(old, w, &req.set_fields)?
    };
    check(&hook)?;
    let behind = members_behind(&svc.meta.members(), svc.meta.node_id(), |addr| svc.replicator.state_version_of(addr));
    if !behind.is_empty() {
        return Err(Status::failed_precondition(format!(
            "webhooks need every node on this version or newer, and {} runs an older one: upgrade it first",
            behind.join(", ")
        )));
    }
    let cmd = Command::PutWebhook { webhook: hook.clone(), create_only: req.create };
    match svc.meta.propose(cmd).await.map_err(meta_status)? {
        CommandResult::Applied => Ok(info(&hook)),
        CommandResult::AlreadyExists => Err(Status::already_exists(format!("a webhook named {name:?} exists; use `webhook update`"))),
        CommandResult::NotFound => Err(unknown(&name)),
        other => Err(Status::internal(format!("unexpected result of a webhook change: {other:?}"))),
    }
}

/// Members whose last answer to this node's probes reported a state machine older than
/// this one's: they could not apply the entries a webhook brings. A member that did not
/// answer is not counted: in a rolling upgrade it is down to come back upgraded.
fn members_behind(members: &[MemberView], me: u64, version_of: impl Fn(&str) -> Option<u32>) -> Vec<String> {
    members
        .iter()
        .filter(|m| m.node_id != me && version_of(&m.info.grpc_addr).is_some_and(|v| v < STATE_VERSION))
        .map(|m| format!("{} (node {})", m.info.region, m.node_id))
        .collect()
}

fn unknown(name: &str) -> Status {
    Status::not_found(format!("no webhook named {name:?}"))
}

fn store(svc: &AdminServiceImpl) -> &crate::meta::Store {
    svc.replicator.store()
}

pub async fn remove(svc: &AdminServiceImpl, name: String) -> Result<(), Status> {
    match svc.meta.propose(Command::RemoveWebhook { name: name.clone() }).await.map_err(meta_status)? {
        CommandResult::Applied => Ok(()),
        CommandResult::NotFound => Err(unknown(&name)),
        other => Err(Status::internal(format!("unexpected result of a webhook change: {other:?}"))),
    }
}

/// Every lane: the cluster-wide one first, then each region's.
fn lanes(svc: &AdminServiceImpl) -> Result<Vec<String>, Status> {
    let mut lanes = vec![CLUSTER_LANE.to_string()];
    lanes.extend(known_lanes(store(svc)).map_err(internal)?.into_iter().filter(|l| !l.is_empty()));
    Ok(lanes)
}

/// A webhook with how its deliveries go (every lane), from this node's applied state.
fn status(svc: &AdminServiceImpl, hook: &WebhookRecord) -> Result<WebhookStatus, Status> {
    let store = store(svc);
    let mut pending = 0;
    let mut last = DeliveryStatus::default();
    let mut delivered = 0;
    for lane in lanes(svc)? {
        if hook.enabled {
            let cursor = store.event_cursor(hook, &lane).map_err(internal)?;
            pending += store
                .events_after(&lane, cursor, 100_000)
                .map_err(internal)?
                .iter()
                .filter(|(_, e)| hook.wants(&e.action, &e.repo, &e.region))
                .count() as u64;
        }
        if let Some(s) = store.delivery_status(&hook.name, &lane).map_err(internal)? {
            delivered += s.delivered;
            if s.last_attempt_unix >= last.last_attempt_unix {
                last = s;
            }
        }
    }
    let mut parked = 0;
    for p in store.parked(&hook.name).map_err(internal)? {
        parked += store
            .parked_events(&p)
            .map_err(internal)?
            .iter()
            .filter(|(_, e)| hook.wants(&e.action, &e.repo, &e.region) || !hook.enabled)
            .count() as u64;
    }
    Ok(WebhookStatus {
        webhook: Some(info(hook)),
        pending,
        parked,
        last_status: last.last_status as u32,
        last_error: last.last_error,
        attempts: last.attempts,
        last_attempt_unix: last.last_attempt_unix,
        delivered,
    })
}

pub fn list(svc: &AdminServiceImpl) -> Result<ListWebhooksReply, Status> {
    let hooks = store(svc).webhooks().map_err(internal)?;
    Ok(ListWebhooksReply { webhooks: hooks.iter().map(|h| status(svc, h)).collect::<Result<_, _>>()? })
}

pub async fn ping(svc: &AdminServiceImpl, name: String) -> Result<PingReply, Status> {
    let outcome = svc.events.ping(&name).await.map_err(|e| match e {
        crate::events::EventsError::UnknownWebhook(n) => unknown(&n),
        other => internal(other),
    })?;
    Ok(PingReply { status: outcome.status as u32, error: outcome.error, millis: outcome.millis, event_id: outcome.event_id })
}

pub fn deliveries(svc: &AdminServiceImpl, req: DeliveriesRequest) -> Result<DeliveriesReply, Status> {
    let store = store(svc);
    let hook = store.webhook(&req.name).map_err(internal)?.ok_or_else(|| unknown(&req.name))?;
    let limit = if req.limit == 0 { DEFAULT_LIMIT } else { req.limit as usize };
    let summary = status(svc, &hook)?;
    let delivery = |lane: &str, seq: Seq, e: &crate::meta::events::EventRecord, state: &str| Delivery {
        event_id: event_id(lane, seq),
        action: e.action.clone(),
        repository: e.repo.clone(),
        digest: e.digest.clone(),
        tag: e.tag.clone().unwrap_or_default(),
        region: e.region.clone(),
        state: state.to_string(),
        attempts: 0,
        last_status: 0,
        last_error: String::new(),
        last_attempt_unix: 0,
        timestamp: crate::events::envelope::timestamp(e.at_ms),
    };
    let mut out = Vec::new();
    for p in store.parked(&hook.name).map_err(internal)? {
        let state = if p.range.resend { "resending" } else { "parked" };
        for (seq, e) in store.parked_events(&p).map_err(internal)? {
            if out.len() >= limit {
                break;
            }
            if hook.wants(&e.action, &e.repo, &e.region) || !hook.enabled {
                out.push(Delivery {
                    attempts: p.range.attempts,
                    last_status: p.range.last_status as u32,
                    last_error: p.range.last_error.clone(),
                    last_attempt_unix: p.range.parked_unix,
                    ..delivery(&p.lane, seq, &e, state)
                });
            }
        }
    }
    for lane in lanes(svc)? {
        if req.parked_only || !hook.enabled {
            break;
        }
        let cursor = store.event_cursor(&hook, &lane).map_err(internal)?;
        let last = store.delivery_status(&hook.name, &lane).map_err(internal)?.unwrap_or_default();
        let mut first = true;
        for (seq, e) in store.events_after(&lane, cursor, 100_000).map_err(internal)? {
            if out.len() >= limit {
                break;
            }
            if !hook.wants(&e.action, &e.repo, &e.region) {
                continue;
            }
            let mut d = delivery(&lane, seq, &e, "pending");
            if std::mem::take(&mut first) {
                // The batch being tried now carries its lane's last attempt.
                d.attempts = last.attempts;
                d.last_status = last.last_status as u32;
                d.last_error = last.last_error.clone();
                d.last_attempt_unix = last.last_attempt_unix;
            }
            out.push(d);
        }
    }
    Ok(DeliveriesReply { status: Some(summary), deliveries: out })
}

pub async fn resend(svc: &AdminServiceImpl, req: ResendRequest) -> Result<ResendReply, Status> {
    let store = store(svc);
    let hook = store.webhook(&req.name).map_err(internal)?.ok_or_else(|| unknown(&req.name))?;
    if !req.all_parked && req.event_ids.is_empty() {
        return Err(Status::invalid_argument("name the parked events to send again, or all"));
    }
    let mut wanted: std::collections::BTreeSet<&str> = req.event_ids.iter().map(String::as_str).collect();
    let mut ranges = Vec::new();
    let mut events = 0u64;
    for p in store.parked(&hook.name).map_err(internal)? {
        let in_range: Vec<Seq> = store.parked_events(&p).map_err(internal)?.into_iter().map(|(s, _)| s).collect();
        // Every id this range holds is taken off (not just the first).
        let named = in_range.iter().fold(false, |named, s| wanted.remove(event_id(&p.lane, *s).as_str()) | named);
        if req.all_parked || named {
            events += in_range.len() as u64;
            ranges.push((p.lane, p.from));
        }
    }
    if let Some(id) = wanted.into_iter().next() {
        return Err(Status::not_found(format!("event {id} is not parked for webhook {:?}", req.name)));
    }
    for (lane, from) in ranges {
        let cmd = Command::ResendParked { name: hook.name.clone(), only: Some((lane, from)) };
        svc.meta.propose(cmd).await.map_err(meta_status)?;
    }
    Ok(ResendReply { events })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::meta::types::NodeInfo;

    #[test]
    fn a_member_reporting_an_older_state_machine_holds_webhooks_back() {
        let member = |id: u64, region: &str| MemberView {
            node_id: id,
            info: NodeInfo { region: region.into(), grpc_addr: format!("10.0.0.{id}:6000"), ..NodeInfo::default() },
            voter: true,
            leader: id == 1,
            matched: None,
        };
        let members = [member(1, "us"), member(2, "eu"), member(3, "ap")];
        let versions = |old: Option<u32>| {
            move |addr: &str| match addr {
                "10.0.0.2:6000" => Some(STATE_VERSION),
                "10.0.0.3:6000" => old,
                _ => Some(0),
            }
        };
        assert_eq!(members_behind(&members, 1, versions(Some(0))), ["ap (node 3)"], "0: a node older than the field");
        assert!(members_behind(&members, 1, versions(Some(STATE_VERSION))).is_empty());
        assert!(members_behind(&members, 1, versions(None)).is_empty(), "down, to come back upgraded");
        assert!(members_behind(&members, 1, versions(Some(STATE_VERSION + 1))).is_empty());
    }
}

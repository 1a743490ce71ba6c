//! `meridian admin webhook …`: webhooks, their deliveries, pings and re-sends.
//!
//! What can be checked without the service (the URL's scheme and host, actions, headers,
//! durations) is checked first, so a typo is a usage error (exit 2) and nothing is sent.

use super::units::duration_secs;
use super::{call, pretty, rfc3339_utc, Admin, CliError, SHORT_CALL_TIMEOUT};
use crate::cli::table::{Align, Table};
use clap::{Args, Subcommand};
use meridian_proto::admin::{
    DeliveriesReply, DeliveriesRequest, Delivery, Empty, Name, PutWebhookRequest, ResendRequest, WebhookInfo, WebhookStatus,
};
use serde_json::{json, Value};
use std::collections::HashMap;

use crate::meta::events::ACTIONS;

/// `meridian admin webhook …`
#[derive(Subcommand, Debug)]
pub enum WebhookCommand {
    /// Create a webhook: every matching event is POSTed to URL in CNCF Distribution's
    /// notification format, at least once, in order, signed when it has a secret.
    Add {
        name: String,
        #[command(flatten)]
        settings: WebhookSettings,
        /// Create it disabled.
        #[arg(long)]
        disabled: bool,
    },
    /// Change a webhook; what is not given stays as it is.
    Update {
        name: String,
        #[command(flatten)]
        settings: WebhookSettings,
        #[arg(long, conflicts_with = "disable")]
        enable: bool,
        /// Stop delivering (events meanwhile are not kept for it).
        #[arg(long)]
        disable: bool,
        /// Events of every region again.
        #[arg(long, conflicts_with = "region")]
        all_regions: bool,
        /// Drop every custom header.
        #[arg(long)]
        clear_headers: bool,
        /// Stop signing.
        #[arg(long, conflicts_with_all = ["secret", "secret_stdin"])]
        no_secret: bool,
    },
    /// Every webhook with how its deliveries go.
    List,
    /// Remove a webhook with its pending and parked deliveries.
    Remove { name: String },
    /// POST one signed `ping` event now and show the answer.
    Ping { name: String },
    /// Parked and pending events of a webhook; re-send parked ones.
    Deliveries {
        name: String,
        /// Parked events only.
        #[arg(long)]
        parked: bool,
        #[arg(long, default_value_t = 50)]
        limit: u32,
        /// Send parked events again: an event id (the rest of its range goes too), or `all`.
        #[arg(long, value_name = "ID|all")]
        resend: Vec<String>,
    },
}

/// A webhook's settings, as flags.
#[derive(Args, Debug)]
pub struct WebhookSettings {
    /// The receiver: http:// or https://.
    #[arg(long)]
    url: Option<String>,
    /// Comma-separated: push, delete, replicated, base_updated (default push,delete).
    #[arg(long, value_delimiter = ',')]
    actions: Vec<String>,
    /// Repository patterns (`*`, `team/*`, a name); repeatable; default every repository.
    #[arg(long = "repos", value_delimiter = ',')]
    repos: Vec<String>,
    /// Only events of this region.
    #[arg(long)]
    region: Option<String>,
    /// Signs each body: `Meridian-Signature: sha256=<hex HMAC-SHA256>`.
    #[arg(long, conflicts_with = "secret_stdin")]
    secret: Option<String>,
    /// Read the secret from the first line of stdin.
    #[arg(long)]
    secret_stdin: bool,
    /// A header sent with every delivery, `Name=value`; repeatable.
    #[arg(long = "header", value_name = "NAME=VALUE")]
    headers: Vec<String>,
    /// How long a receiver may take to answer (500ms, 5s; at most 60s).
    #[arg(long, value_parser = duration_ms)]
    timeout: Option<u32>,
    /// Failed attempts before a delivery is parked (1-100).
    #[arg(long)]
    max_attempts: Option<u32>,
}

/// `500ms`, `5s`, `1m` as milliseconds.
fn duration_ms(raw: &str) -> Result<u32, String> {
    let ms = match raw.trim().strip_suffix("ms") {
        Some(n) => n.trim().parse::<u64>().map_err(|_| format!("{raw:?}: expected a duration like 500ms or 5s"))?,
        None => duration_secs(raw)?.saturating_mul(1000),
    };
    u32::try_from(ms).map_err(|_| format!("{raw:?} is too long"))
}

/// The settings as a `WebhookInfo`, and the fields they set, checked.
fn prepare(name: &str, s: WebhookSettings) -> Result<(WebhookInfo, Vec<String>), CliError> {
    let mut set = Vec::new();
    let mut w = WebhookInfo { name: name.to_string(), ..WebhookInfo::default() };
    if let Some(url) = s.url {
        check_url(&url)?;
        w.url = url;
        set.push("url");
    }
    if !s.actions.is_empty() {
        let actions: Vec<String> = s.actions.iter().map(|a| a.trim().to_string()).filter(|a| !a.is_empty()).collect();
        if let Some(bad) = actions.iter().find(|a| !ACTIONS.contains(&a.as_str())) {
            return Err(CliError::Usage(format!("--actions: {bad:?} is not one of {}", ACTIONS.join(", "))));
        }
        w.actions = actions;
        set.push("actions");
    }
    if !s.repos.is_empty() {
        w.repos = s.repos.iter().map(|r| r.trim().to_string()).filter(|r| !r.is_empty()).collect();
        set.push("repos");
    }
    if let Some(region) = s.region {
        w.region = region;
        set.push("region");
    }
    if s.secret_stdin {
        let mut line = String::new();
        std::io::stdin().read_line(&mut line).map_err(|e| CliError::Usage(format!("reading the secret from stdin: {e}")))?;
        w.secret = line.trim_end_matches(['\r', '\n']).to_string();
        if w.secret.is_empty() {
            return Err(CliError::Usage("--secret-stdin: stdin gave no secret".into()));
        }
        set.push("secret");
    } else if let Some(secret) = s.secret {
        w.secret = secret;
        set.push("secret");
    }
    if !s.headers.is_empty() {
        let mut headers = HashMap::new();
        for h in &s.headers {
            let (k, v) = h.split_once('=').ok_or_else(|| CliError::Usage(format!("--header {h:?}: expected NAME=VALUE")))?;
            headers.insert(k.trim().to_string(), v.to_string());
        }
        w.headers = headers;
        set.push("headers");
    }
    if let Some(ms) = s.timeout {
        if !(100..=60_000).contains(&ms) {
            return Err(CliError::Usage("--timeout must be between 100ms and 60s".into()));
        }
        w.timeout_ms = ms;
        set.push("timeout_ms");
    }
    if let Some(n) = s.max_attempts {
        if !(1..=100).contains(&n) {
            return Err(CliError::Usage("--max-attempts must be between 1 and 100".into()));
        }
        w.max_attempts = n;
        set.push("max_attempts");
    }
    Ok((w, set.into_iter().map(String::from).collect()))
}

fn check_url(url: &str) -> Result<(), CliError> {
    match crate::meta::events::url_problem(url) {
        Some(why) => Err(CliError::Usage(format!("--url {url:?}: {why}"))),
        None => Ok(()),
    }
}

/// What a webhook command will send, prepared (and checked) before connecting: a change
/// as its request, anything else as given.
pub enum PreparedWebhook {
    Put(PutWebhookRequest),
    Other(WebhookCommand),
}

pub fn prepare_webhook(cmd: WebhookCommand) -> Result<PreparedWebhook, CliError> {
    match cmd {
        WebhookCommand::Add { name, settings, disabled } => {
            let (mut w, _) = prepare(&name, settings)?;
            if w.url.is_empty() {
                return Err(CliError::Usage("--url is required".into()));
            }
            w.enabled = !disabled;
            Ok(PreparedWebhook::Put(PutWebhookRequest { webhook: Some(w), create: true, set_fields: Vec::new() }))
        }
        WebhookCommand::Update { name, settings, enable, disable, all_regions, clear_headers, no_secret } => {
            let (mut w, mut set) = prepare(&name, settings)?;
            if enable || disable {
                w.enabled = enable;
                set.push("enabled".into());
            }
            let mut also = |field: &str, when: bool| {
                if when && !set.iter().any(|f| f == field) {
                    set.push(field.into());
                }
            };
            also("region", all_regions);
            also("headers", clear_headers);
            also("secret", no_secret);
            if set.is_empty() {
                return Err(CliError::Usage("nothing to change: give the settings to update".into()));
            }
            Ok(PreparedWebhook::Put(PutWebhookRequest { webhook: Some(w), create: false, set_fields: set }))
        }
        WebhookCommand::Deliveries { resend, .. } if resend.iter().any(|r| r.is_empty()) => {
            Err(CliError::Usage("--resend: an event id or all".into()))
        }
        other => Ok(PreparedWebhook::Other(other)),
    }
}

pub async fn run_webhook(admin: &Admin, prepared: PreparedWebhook, json: bool) -> Result<String, CliError> {
    let mut client = admin.client.clone();
    let cmd = match prepared {
        PreparedWebhook::Put(put) => {
            let create = put.create;
            let saved = call(SHORT_CALL_TIMEOUT, client.put_webhook(admin.request(put))).await?;
            return Ok(if json {
                pretty(&info_json(&saved))
            } else {
                format!("webhook {} {}: {}", saved.name, if create { "added" } else { "updated" }, summary(&saved))
            });
        }
        PreparedWebhook::Other(cmd) => cmd,
    };
    match cmd {
        WebhookCommand::Add { .. } | WebhookCommand::Update { .. } => Err(CliError::Usage("nothing to send".into())),
        WebhookCommand::List => {
            let reply = call(SHORT_CALL_TIMEOUT, client.list_webhooks(admin.request(Empty {}))).await?;
            Ok(if json {
                pretty(&json!({ "webhooks": reply.webhooks.iter().map(status_json).collect::<Vec<_>>() }))
            } else {
                render_list(&reply.webhooks)
            })
        }
        WebhookCommand::Remove { name } => {
            call(SHORT_CALL_TIMEOUT, client.remove_webhook(admin.request(Name { name: name.clone() }))).await?;
            Ok(if json { pretty(&json!({ "removed": name })) } else { format!("webhook {name} removed") })
        }
        WebhookCommand::Ping { name } => {
            let reply = call(SHORT_CALL_TIMEOUT, client.ping_webhook(admin.request(Name { name: name.clone() }))).await?;
            let ok = (200..400).contains(&reply.status);
            if json {
                return Ok(pretty(&json!({
                    "webhook": name, "status": reply.status, "error": reply.error, "millis": reply.millis, "eventId": reply.event_id,
                })));
            }
            if ok {
                Ok(format!("ping {name}: {} in {} ms (event {})", reply.status, reply.millis, reply.event_id))
            } else {
                Err(CliError::Status(tonic::Status::unavailable(format!("ping {name} failed after {} ms: {}", reply.millis, reply.error))))
            }
        }
        WebhookCommand::Deliveries { name, parked, limit, resend } => {
            if !resend.is_empty() {
                let all_parked = resend.iter().any(|r| r == "all");
                let event_ids = resend.into_iter().filter(|r| r != "all").collect();
                let req = ResendRequest { name: name.clone(), event_ids, all_parked };
                let reply = call(SHORT_CALL_TIMEOUT, client.resend_deliveries(admin.request(req))).await?;
                return Ok(if json {
                    pretty(&json!({ "webhook": name, "resending": reply.events }))
                } else {
                    format!("webhook {name}: {} parked events queued to be sent again", reply.events)
                });
            }
            let req = DeliveriesRequest { name, limit, parked_only: parked };
            let reply = call(SHORT_CALL_TIMEOUT, client.webhook_deliveries(admin.request(req))).await?;
            Ok(if json { pretty(&deliveries_json(&reply)) } else { render_deliveries(&reply) })
        }
    }
}

fn summary(w: &WebhookInfo) -> String {
    let mut parts = vec![w.url.clone(), format!("actions {}", w.actions.join(","))];
    if !w.repos.is_empty() {
        parts.push(format!("repos {}", w.repos.join(",")));
    }
    if !w.region.is_empty() {
        parts.push(format!("region {}", w.region));
    }
    if w.has_secret {
        parts.push("signed".into());
    }
    if !w.enabled {
        parts.push("disabled".into());
    }
    parts.join(", ")
}

fn info_json(w: &WebhookInfo) -> Value {
    json!({
        "name": w.name, "url": w.url, "actions": w.actions, "repos": w.repos,
        "region": if w.region.is_empty() { Value::Null } else { json!(w.region) },
        "headers": w.headers.keys().collect::<Vec<_>>(), "signed": w.has_secret, "enabled": w.enabled,
        "timeoutMs": w.timeout_ms, "maxAttempts": w.max_attempts,
    })
}

fn status_json(s: &WebhookStatus) -> Value {
    let mut v = s.webhook.as_ref().map(info_json).unwrap_or_else(|| json!({}));
    v["pending"] = json!(s.pending);
    v["parked"] = json!(s.parked);
    v["delivered"] = json!(s.delivered);
    v["lastStatus"] = json!(s.last_status);
    v["lastError"] = json!(s.last_error);
    v["attempts"] = json!(s.attempts);
    v["lastAttempt"] = if s.last_attempt_unix == 0 { Value::Null } else { json!(rfc3339_utc(s.last_attempt_unix)) };
    v
}

fn last_text(status: u32, error: &str) -> String {
    match (status, error.is_empty()) {
        (0, true) => "-".into(),
        (s, true) => s.to_string(),
        (_, false) => error.to_string(),
    }
}

fn render_list(hooks: &[WebhookStatus]) -> String {
    if hooks.is_empty() {
        return "no webhooks (add one with `meridian admin webhook add NAME --url URL`)\n".into();
    }
    let mut t = Table::new(&[
        ("NAME", Align::Left),
        ("URL", Align::Left),
        ("ACTIONS", Align::Left),
        ("REGION", Align::Left),
        ("ENABLED", Align::Left),
        ("PENDING", Align::Right),
        ("PARKED", Align::Right),
        ("DELIVERED", Align::Right),
        ("LAST", Align::Left),
    ]);
    for s in hooks {
        let Some(w) = &s.webhook else { continue };
        t.row(vec![
            w.name.clone(),
            w.url.clone(),
            w.actions.join(","),
            if w.region.is_empty() { "*".into() } else { w.region.clone() },
            if w.enabled { "yes".into() } else { "no".into() },
            s.pending.to_string(),
            s.parked.to_string(),
            s.delivered.to_string(),
            last_text(s.last_status, &s.last_error),
        ]);
    }
    t.render()
}

fn delivery_json(d: &Delivery) -> Value {
    json!({
        "id": d.event_id, "action": d.action, "repository": d.repository, "digest": d.digest,
        "tag": if d.tag.is_empty() { Value::Null } else { json!(d.tag) }, "region": d.region, "state": d.state,
        "attempts": d.attempts, "lastStatus": d.last_status, "lastError": d.last_error, "timestamp": d.timestamp,
    })
}

fn deliveries_json(r: &DeliveriesReply) -> Value {
    json!({
        "webhook": r.status.as_ref().map(status_json),
        "deliveries": r.deliveries.iter().map(delivery_json).collect::<Vec<_>>(),
    })
}

fn render_deliveries(r: &DeliveriesReply) -> String {
    let mut out = String::new();
    if let Some(s) = &r.status {
        let name = s.webhook.as_ref().map(|w| w.name.as_str()).unwrap_or_default();
        out.push_str(&format!(
            "webhook {name}: {} pending, {} parked, {} delivered; last attempt: {}\n",
            s.pending,
            s.parked,
            s.delivered,
            last_text(s.last_status, &s.last_error)
        ));
    }
    if r.deliveries.is_empty() {
        return out;
    }
    let mut t = Table::new(&[
        ("EVENT", Align::Left),
        ("STATE", Align::Left),
        ("ACTION", Align::Left),
        ("IMAGE", Align::Left),
        ("ATTEMPTS", Align::Right),
        ("LAST", Align::Left),
        ("TIME", Align::Left),
    ]);
    for d in &r.deliveries {
        let image = match (d.tag.is_empty(), d.digest.is_empty()) {
            (false, _) => format!("{}:{}", d.repository, d.tag),
            (true, false) => format!("{}@{}", d.repository, d.digest),
            _ => d.repository.clone(),
        };
        t.row(vec![
            d.event_id.clone(),
            d.state.clone(),
            d.action.clone(),
            image,
            d.attempts.to_string(),
            last_text(d.last_status, &d.last_error),
            d.timestamp.clone(),
        ]);
    }
    out.push_str(&t.render());
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_take_milliseconds_or_longer_units() {
        assert_eq!(duration_ms("500ms"), Ok(500));
        assert_eq!(duration_ms("5s"), Ok(5000));
        assert_eq!(duration_ms("1m"), Ok(60_000));
        assert!(duration_ms("fast").is_err());
    }

    #[test]
    fn only_http_urls_with_a_host_and_no_credentials() {
        assert!(check_url("http://127.0.0.1:9000/hook").is_ok());
        assert!(check_url("https://ci.example.com/x").is_ok());
        for bad in ["ftp://ci.example.com/x", "ci.example.com/x", "http://", "https://user:pw@ci.example.com/", "not a url"] {
            assert!(check_url(bad).is_err(), "{bad}");
        }
    }
}

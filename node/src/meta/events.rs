//! Webhook events in the cluster state: the webhooks, the outbox of events waiting to be
//! delivered, and how far each webhook has been served.
//!
//! An event is written in the same batch as the change that caused it (the entry's apply),
//! so there is no change without its event and no event without its change; the outbox is
//! replicated like the rest of the state, so whichever node delivers next finds every
//! event. The delivering node (`crate::events`) reports progress back through the log
//! (`AckEvents`, `ParkEvents`), and events every webhook is done with are dropped then.
//!
//! Events sit in lanes: `""` holds the cluster-wide ones (`push`, `delete`, `base_updated`), delivered by
//! the leader. A lane's events are ordered by `Seq`: the log index of the entry that
//! produced them, then their place in that entry — the same on every node.
//!
//! `sm_webhooks` keys: `w\0name` → `WebhookRecord` (JSON); `c\0name\0lane` → the `Seq` of
//! the last event handled (delivered, skipped as not matching, or parked); `s\0name\0lane`
//! → `DeliveryStatus` (JSON); `k\0name\0lane\0from` → `ParkedRange` (JSON).
//! `sm_events` keys: `lane\0seq` → `EventRecord` (JSON).

pub use super::bases::BaseChange;
use super::patterns::pattern_matches;
use super::records::encode_json;
use super::store::{Store, StoreError, CF_SM_EVENTS, CF_SM_WEBHOOKS};
use crate::config::Secret;
use rocksdb::WriteBatch;
use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};
use std::collections::BTreeMap;

/// The actions a webhook can subscribe to.
pub const ACTIONS: [&str; 4] = ["push", "delete", "replicated", "base_updated"];
/// The lane of cluster-wide events.
pub const CLUSTER_LANE: &str = "";

/// An event's place in its lane: the log index of the entry that produced it, then its
/// place among that entry's events.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize, Deserialize)]
pub struct Seq {
    pub index: u64,
    pub ordinal: u32,
}

impl Seq {
    pub const fn new(index: u64, ordinal: u32) -> Seq {
        Seq { index, ordinal }
    }

    /// Big-endian, so keys sort in event order.
    pub fn encode(&self) -> [u8; 12] {
        let mut out = [0u8; 12];
        out[..8].copy_from_slice(&self.index.to_be_bytes());
        out[8..].copy_from_slice(&self.ordinal.to_be_bytes());
        out
    }

    /// The place just before this one.
    pub fn prev(&self) -> Seq {
        match self.ordinal {
            0 => Seq::new(self.index.saturating_sub(1), u32::MAX),
            n => Seq::new(self.index, n - 1),
        }
    }

    pub fn decode(raw: &[u8]) -> Option<Seq> {
        let index = u64::from_be_bytes(raw.get(..8)?.try_into().ok()?);
        let ordinal = u32::from_be_bytes(raw.get(8..12)?.try_into().ok()?);
        Some(Seq { index, ordinal })
    }
}

/// A webhook: where events go and which ones. The same in every region.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WebhookRecord {
    pub name: String,
    pub url: String,
    /// Among `ACTIONS`.
    pub actions: Vec<String>,
    /// Repository patterns (`*`, `team/*`, a name); empty: every repository.
    #[serde(default)]
    pub repos: Vec<String>,
    /// Only events of this region (where the change happened, or the region that
    /// completed an image).
    #[serde(default)]
    pub region: Option<String>,
    /// Sent with every delivery; values may be credentials, so they are kept out of logs.
    #[serde(default)]
    pub headers: Vec<(String, Secret)>,
    /// Signs each body: `Meridian-Signature: sha256=<hex HMAC-SHA256>`.
    #[serde(default)]
    pub secret: Option<Secret>,
    pub enabled: bool,
    pub timeout_ms: u64,
    /// Failed attempts before a delivery is parked.
    pub max_attempts: u32,
    /// Events before this one are not for the webhook (set when it is created or enabled
    /// again, by the apply).
    #[serde(default)]
    pub since: Seq,
}

impl WebhookRecord {
    /// Whether an event of `action` on `repo` in `region` is for this webhook.
    pub fn wants(&self, action: &str, repo: &str, region: &str) -> bool {
        self.enabled
            && self.actions.iter().any(|a| a == action)
            && (self.repos.is_empty() || self.repos.iter().any(|p| pattern_matches(p, repo)))
            && self.region.as_deref().is_none_or(|r| r == region)
    }
}

/// What is wrong with a receiver URL, if anything: it must be http or https, with a host,
/// and carry no credentials (they would be shown by `list`; headers are the place).
pub fn url_problem(url: &str) -> Option<&'static str> {
    let Ok(uri) = url.parse::<axum::http::Uri>() else { return Some("not a URL") };
    if !matches!(uri.scheme_str(), Some("http" | "https")) {
        return Some("must be http:// or https://");
    }
    match uri.authority() {
        Some(a) if a.as_str().contains('@') => Some("must not carry credentials; use --header"),
        Some(a) if !a.host().is_empty() => None,
        _ => Some("has no host"),
    }
}

/// Who and what caused a change, for the event's `request`, `actor` and `source`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Origin {
    /// The request's id (a UUID), or empty for a change Meridian made on its own.
    #[serde(default)]
    pub request_id: String,
    /// The client's address and port.
    #[serde(default)]
    pub addr: String,
    /// The host the client addressed.
    #[serde(default)]
    pub host: String,
    #[serde(default)]
    pub method: String,
    #[serde(default)]
    pub user_agent: String,
    /// The authenticated caller (`meridian/retention` for a policy's delete).
    #[serde(default)]
    pub actor: String,
    /// The node that took the request: its HTTP address, id and region.
    #[serde(default)]
    pub source_addr: String,
    #[serde(default)]
    pub instance_id: String,
    #[serde(default)]
    pub region: String,
    /// The public URL of that node (event `url`s point there).
    #[serde(default)]
    pub url_base: String,
    /// When the request was taken (milliseconds since the epoch, the proposer's clock).
    #[serde(default)]
    pub at_ms: u64,
}

impl Origin {
    /// A change Meridian makes on its own (a retention policy's delete, an operator's
    /// restore), taken on this node.
    pub fn internal(actor: &str, meta: &super::Meta) -> Origin {
        let me = meta.me();
        Origin {
            actor: actor.to_string(),
            source_addr: me.http_addr.clone(),
            instance_id: format!("{}-{}", me.region, meta.node_id()),
            region: me.region.clone(),
            url_base: me.public_url.clone(),
            at_ms: now_ms(),
            ..Origin::default()
        }
    }
}

/// Milliseconds since the epoch (the proposer's clock, like `command::proposer_clock`).
pub fn now_ms() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
}

/// One event in the outbox.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EventRecord {
    pub action: String,
    pub repo: String,
    #[serde(default)]
    pub digest: String,
    #[serde(default)]
    pub media_type: String,
    #[serde(default)]
    pub size: u64,
    #[serde(default)]
    pub tag: Option<String>,
    /// The region the event belongs to (the webhook region filter matches it).
    pub region: String,
    pub at_ms: u64,
    #[serde(default)]
    pub origin: Option<Origin>,
    /// For `replicated`: where the image was pushed (`region` is where it is complete).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub push_region: Option<String>,
    /// For `replicated`: the log index of the push (its `push` events come first).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub push_index: Option<u64>,
    /// For `base_updated`: the base tag that moved.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub base: Option<BaseChange>,
}

/// How delivering to one webhook goes, as the deliverer last reported it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct DeliveryStatus {
    /// HTTP status of the last attempt; 0 when it got no answer.
    pub last_status: u16,
    /// Why the last attempt failed; empty after a success.
    pub last_error: String,
    /// Failed attempts in a row.
    pub attempts: u32,
    pub last_attempt_unix: u64,
    /// Events delivered so far.
    pub delivered: u64,
}

/// Events a webhook gave up on after its attempts: kept until re-sent or removed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ParkedRange {
    pub through: Seq,
    pub attempts: u32,
    pub last_status: u16,
    pub last_error: String,
    pub parked_unix: u64,
    /// An operator asked to send these again.
    #[serde(default)]
    pub resend: bool,
}

/// One webhook's progress in a lane, as reported by its deliverer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DeliveryUpdate {
    pub name: String,
    /// Every event up to here is handled.
    pub through: Option<Seq>,
    /// Events delivered since the last update.
    pub delivered: u64,
    /// How the last attempt went (`None`: no attempt since the last update).
    pub status: Option<DeliveryStatus>,
}

/// A parked range of one webhook in one lane.
#[derive(Debug, Clone, PartialEq)]
pub struct Parked {
    pub lane: String,
    pub from: Seq,
    pub range: ParkedRange,
}

fn corrupt(cf: &'static str, reason: impl Into<String>) -> StoreError {
    StoreError::Corrupt { cf, reason: reason.into() }
}

fn decode<T: serde::de::DeserializeOwned>(cf: &'static str, raw: &[u8]) -> Result<T, StoreError> {
    serde_json::from_slice(raw).map_err(|e| corrupt(cf, e.to_string()))
}

fn webhook_key(name: &str) -> Vec<u8> {
    format!("w\0{name}").into_bytes()
}

fn cursor_key(name: &str, lane: &str) -> Vec<u8> {
    format!("c\0{name}\0{lane}").into_bytes()
}

fn status_key(name: &str, lane: &str) -> Vec<u8> {
    format!("s\0{name}\0{lane}").into_bytes()
}

fn parked_prefix(name: &str) -> Vec<u8> {
    format!("k\0{name}\0").into_bytes()
}

fn parked_key(name: &str, lane: &str, from: Seq) -> Vec<u8> {
    let mut k = format!("k\0{name}\0{lane}\0").into_bytes();
    k.extend_from_slice(&from.encode());
    k
}

fn lane_prefix(lane: &str) -> Vec<u8> {
    let mut k = lane.as_bytes().to_vec();
    k.push(0);
    k
}

fn event_key(lane: &str, seq: Seq) -> Vec<u8> {
    let mut k = lane_prefix(lane);
    k.extend_from_slice(&seq.encode());
    k
}

/// An event's id: the same on every node and on every re-delivery, so receivers can
/// drop duplicates by it. A UUID (version 8: custom) made of a SHA-256 of lane and seq.
pub fn event_id(lane: &str, seq: Seq) -> String {
    let mut h = Sha256::new();
    h.update(b"meridian-event\0");
    h.update(lane.as_bytes());
    h.update([0]);
    h.update(seq.encode());
    let mut b: [u8; 16] = h.finalize()[..16].try_into().unwrap_or_default();
    b[6] = (b[6] & 0x0f) | 0x80;
    b[8] = (b[8] & 0x3f) | 0x80;
    let hex: String = b.iter().map(|x| format!("{x:02x}")).collect();
    format!("{}-{}-{}-{}-{}", &hex[..8], &hex[8..12], &hex[12..16], &hex[16..20], &hex[20..])
}

/// Reads of the events state, for the deliverer and the admin service.
impl Store {
    pub fn webhooks(&self) -> Result<Vec<WebhookRecord>, StoreError> {
        self.scan_prefix(CF_SM_WEBHOOKS, b"w\0", None, usize::MAX)?
            .into_iter()
            .map(|(_, v)| decode(CF_SM_WEBHOOKS, &v))
            .collect()
    }

    pub fn webhook(&self, name: &str) -> Result<Option<WebhookRecord>, StoreError> {
        self.get(CF_SM_WEBHOOKS, &webhook_key(name))?.map(|v| decode(CF_SM_WEBHOOKS, &v)).transpose()
    }

    /// The last event of `lane` the webhook is done with.
    pub fn event_cursor(&self, hook: &WebhookRecord, lane: &str) -> Result<Seq, StoreError> {
        let stored = match self.get(CF_SM_WEBHOOKS, &cursor_key(&hook.name, lane))? {
            Some(raw) => Seq::decode(&raw).ok_or_else(|| corrupt(CF_SM_WEBHOOKS, "cursor"))?,
            None => Seq::default(),
        };
        Ok(stored.max(hook.since))
    }

    pub fn delivery_status(&self, name: &str, lane: &str) -> Result<Option<DeliveryStatus>, StoreError> {
        self.get(CF_SM_WEBHOOKS, &status_key(name, lane))?.map(|v| decode(CF_SM_WEBHOOKS, &v)).transpose()
    }

    /// Events of `lane` after `after`, in order, at most `limit`.
    pub fn events_after(&self, lane: &str, after: Seq, limit: usize) -> Result<Vec<(Seq, EventRecord)>, StoreError> {
        let prefix = lane_prefix(lane);
        let rows = self.scan_prefix(CF_SM_EVENTS, &prefix, Some(&event_key(lane, after)), limit)?;
        rows.into_iter()
            .map(|(k, v)| {
                let seq = Seq::decode(&k[prefix.len()..]).ok_or_else(|| corrupt(CF_SM_EVENTS, "key"))?;
                Ok((seq, decode(CF_SM_EVENTS, &v)?))
            })
            .collect()
    }

    /// The events a parked range holds, in order. Read a page at a time and stopped at the
    /// range's end: later events of the lane are never loaded.
    pub fn parked_events(&self, parked: &Parked) -> Result<Vec<(Seq, EventRecord)>, StoreError> {
        const PAGE: usize = 256;
        let mut out = Vec::new();
        let mut after = parked.from.prev();
        loop {
            let page = self.events_after(&parked.lane, after, PAGE)?;
            let full = page.len() == PAGE;
            for (seq, event) in page {
                if seq > parked.range.through {
                    return Ok(out);
                }
                after = seq;
                out.push((seq, event));
            }
            if !full {
                return Ok(out);
            }
        }
    }

    /// How many events of `lane` come after `after` (counting at most `cap`).
    pub fn events_pending(&self, lane: &str, after: Seq, cap: usize) -> Result<u64, StoreError> {
        let prefix = lane_prefix(lane);
        let cf = self.cf(CF_SM_EVENTS)?;
        let mut start = event_key(lane, after);
        start.push(0);
        let mut iter = self.db().raw_iterator_cf(cf);
        iter.seek(&start);
        let mut n = 0u64;
        while iter.valid() && iter.key().is_some_and(|k| k.starts_with(&prefix)) && (n as usize) < cap {
            n += 1;
            iter.next();
        }
        iter.status()?;
        Ok(n)
    }

    /// A webhook's parked ranges, every lane.
    pub fn parked(&self, name: &str) -> Result<Vec<Parked>, StoreError> {
        let prefix = parked_prefix(name);
        self.scan_prefix(CF_SM_WEBHOOKS, &prefix, None, usize::MAX)?
            .into_iter()
            .map(|(k, v)| {
                let rest = &k[prefix.len()..];
                let cut = rest.len().checked_sub(13).ok_or_else(|| corrupt(CF_SM_WEBHOOKS, "parked key"))?;
                let lane = String::from_utf8_lossy(&rest[..cut]).into_owned();
                let from = Seq::decode(&rest[cut + 1..]).ok_or_else(|| corrupt(CF_SM_WEBHOOKS, "parked key"))?;
                Ok(Parked { lane, from, range: decode(CF_SM_WEBHOOKS, &v)? })
            })
            .collect()
    }
}

/// Writes events as an entry is applied: one book per entry, numbering its events.
pub(super) struct EventBook<'a> {
    pub store: &'a Store,
    pub index: u64,
    /// Events this entry wrote so far.
    pub written: u32,
    /// The entry is a `Batch`: commands before this one may have written events.
    pub batched: bool,
    /// The webhooks, read once per entry when an event is first offered.
    hooks: Option<Vec<WebhookRecord>>,
}

impl<'a> EventBook<'a> {
    pub fn new(store: &'a Store, index: u64) -> EventBook<'a> {
        EventBook { store, index, written: 0, batched: false, hooks: None }
    }

    /// Where a webhook created now starts (its cursor, "done up to"): after every event
    /// written before this point and before every one written after it. In a plain entry
    /// `(index, 0)`, as it always was — nothing in the entry before it writes events —
    /// so every version writes the same bytes; in a batch, just before this entry's next
    /// event.
    pub fn cursor_here(&self) -> Seq {
        match (self.batched, self.written) {
            (false, _) => Seq::new(self.index, 0),
            (true, 0) => Seq::new(self.index.saturating_sub(1), u32::MAX),
            (true, n) => Seq::new(self.index, n - 1),
        }
    }

    /// Whether some enabled webhook subscribes to `action` (for any repository).
    pub fn wants_action(&mut self, action: &str) -> Result<bool, StoreError> {
        if self.hooks.is_none() {
            self.hooks = Some(self.store.webhooks()?);
        }
        Ok(self.hooks.iter().flatten().any(|h| h.enabled && h.actions.iter().any(|a| a == action)))
    }

    /// Records `event` in `lane` if some webhook wants it: with no webhook for it, an event
    /// costs one read of the (small) webhook list.
    pub fn emit(&mut self, batch: &mut WriteBatch, lane: &str, event: &EventRecord) -> Result<(), StoreError> {
        if self.hooks.is_none() {
            self.hooks = Some(self.store.webhooks()?);
        }
        let wanted = self.hooks.iter().flatten().any(|h| h.wants(&event.action, &event.repo, &event.region));
        if !wanted {
            return Ok(());
        }
        let seq = Seq::new(self.index, self.written);
        batch.put_cf(self.store.cf(CF_SM_EVENTS)?, event_key(lane, seq), encode_json(event));
        self.written += 1;
        metrics::counter!("meridian_events_produced_total", "action" => event.action.clone()).increment(1);
        Ok(())
    }
}

/// What the apply of a webhook or progress command found.
pub(super) enum Outcome {
    Done,
    AlreadyExists,
    NotFound,
}

/// Creates (`create_only`) or replaces a webhook. A new webhook, or one enabled again,
/// starts with the events after `since` (`EventBook::cursor_here`).
pub(super) fn apply_put(store: &Store, batch: &mut WriteBatch, since: Seq, hook: &WebhookRecord, create_only: bool) -> Result<Outcome, StoreError> {
    let old = store.webhook(&hook.name)?;
    let mut hook = hook.clone();
    match (&old, create_only) {
        (Some(_), true) => return Ok(Outcome::AlreadyExists),
        (None, false) => return Ok(Outcome::NotFound),
        (Some(old), false) if old.enabled || !hook.enabled => hook.since = old.since,
        _ => {
            hook.since = since;
            for lane in lanes_of(store, &hook.name)? {
                batch.delete_cf(store.cf(CF_SM_WEBHOOKS)?, cursor_key(&hook.name, &lane));
            }
        }
    }
    batch.put_cf(store.cf(CF_SM_WEBHOOKS)?, webhook_key(&hook.name), encode_json(&hook));
    let overlay = Overlay { hook: Some(hook), ..Overlay::default() };
    for lane in known_lanes(store)? {
        trim(store, batch, &lane, &overlay)?;
    }
    Ok(Outcome::Done)
}

/// Removes a webhook with its cursors, status and parked ranges.
pub(super) fn apply_remove(store: &Store, batch: &mut WriteBatch, name: &str) -> Result<Outcome, StoreError> {
    if store.webhook(name)?.is_none() {
        return Ok(Outcome::NotFound);
    }
    let cf = store.cf(CF_SM_WEBHOOKS)?;
    batch.delete_cf(cf, webhook_key(name));
    for prefix in [format!("c\0{name}\0"), format!("s\0{name}\0"), format!("k\0{name}\0")] {
        for (k, _) in store.scan_prefix(CF_SM_WEBHOOKS, prefix.as_bytes(), None, usize::MAX)? {
            batch.delete_cf(cf, k);
        }
    }
    let overlay = Overlay { removed: Some(name.to_string()), ..Overlay::default() };
    for lane in known_lanes(store)? {
        trim(store, batch, &lane, &overlay)?;
    }
    Ok(Outcome::Done)
}

/// A deliverer's progress: cursors only move forward (a late report from a deposed
/// deliverer changes nothing).
pub(super) fn apply_ack(store: &Store, batch: &mut WriteBatch, lane: &str, updates: &[DeliveryUpdate]) -> Result<(), StoreError> {
    let cf = store.cf(CF_SM_WEBHOOKS)?;
    let mut overlay = Overlay::default();
    for u in updates {
        let Some(hook) = store.webhook(&u.name)? else { continue };
        let old = store.delivery_status(&u.name, lane)?.unwrap_or_default();
        let mut status = u.status.clone().unwrap_or_else(|| old.clone());
        status.delivered = old.delivered.saturating_add(u.delivered);
        batch.put_cf(cf, status_key(&u.name, lane), encode_json(&status));
        if let Some(through) = u.through {
            if through > store.event_cursor(&hook, lane)? {
                batch.put_cf(cf, cursor_key(&u.name, lane), through.encode());
                overlay.cursors.insert(u.name.clone(), through);
            }
        }
    }
    trim(store, batch, lane, &overlay)
}

/// Parks `from..=through` of a webhook's lane (unless its cursor is already past it).
pub(super) fn apply_park(store: &Store, batch: &mut WriteBatch, name: &str, lane: &str, from: Seq, range: &ParkedRange) -> Result<Outcome, StoreError> {
    let Some(hook) = store.webhook(name)? else { return Ok(Outcome::NotFound) };
    if store.event_cursor(&hook, lane)? >= range.through {
        return Ok(Outcome::Done);
    }
    let cf = store.cf(CF_SM_WEBHOOKS)?;
    batch.put_cf(cf, parked_key(name, lane, from), encode_json(range));
    batch.put_cf(cf, cursor_key(name, lane), range.through.encode());
    let mut overlay = Overlay { parked_added: vec![from], ..Overlay::default() };
    overlay.cursors.insert(name.to_string(), range.through);
    trim(store, batch, lane, &overlay)?;
    Ok(Outcome::Done)
}

/// Marks a webhook's parked ranges (all, or the one starting at `from`) to be sent again.
pub(super) fn apply_resend(store: &Store, batch: &mut WriteBatch, name: &str, only: Option<(&str, Seq)>) -> Result<Outcome, StoreError> {
    let cf = store.cf(CF_SM_WEBHOOKS)?;
    let mut found = false;
    for p in store.parked(name)? {
        if only.is_some_and(|(lane, from)| lane != p.lane || from != p.from) {
            continue;
        }
        found = true;
        let range = ParkedRange { resend: true, ..p.range };
        batch.put_cf(cf, parked_key(name, &p.lane, p.from), encode_json(&range));
    }
    Ok(if found { Outcome::Done } else { Outcome::NotFound })
}

/// A re-send of a parked range ended: delivered (the range goes) or failed again (it
/// stays parked, with the new status).
pub(super) fn apply_parked_done(
    store: &Store,
    batch: &mut WriteBatch,
    name: &str,
    lane: &str,
    from: Seq,
    delivered: bool,
    status: &DeliveryStatus,
) -> Result<(), StoreError> {
    let key = parked_key(name, lane, from);
    let Some(raw) = store.get(CF_SM_WEBHOOKS, &key)? else { return Ok(()) };
    let cf = store.cf(CF_SM_WEBHOOKS)?;
    if delivered {
        batch.delete_cf(cf, key);
        let overlay = Overlay { parked_removed: vec![(name.to_string(), from)], ..Overlay::default() };
        trim(store, batch, lane, &overlay)
    } else {
        let old: ParkedRange = decode(CF_SM_WEBHOOKS, &raw)?;
        let range = ParkedRange {
            attempts: status.attempts,
            last_status: status.last_status,
            last_error: status.last_error.clone(),
            resend: false,
            ..old
        };
        batch.put_cf(cf, key, encode_json(&range));
        Ok(())
    }
}

/// Drops every parked range parked before `before_unix`, and the events only they held.
/// Returns how many ranges went.
pub(super) fn apply_expire_parked(store: &Store, batch: &mut WriteBatch, before_unix: u64) -> Result<usize, StoreError> {
    let cf = store.cf(CF_SM_WEBHOOKS)?;
    let mut by_lane: BTreeMap<String, Overlay> = BTreeMap::new();
    for hook in store.webhooks()? {
        for p in store.parked(&hook.name)? {
            // A range being sent again is left to its re-send.
            if p.range.parked_unix >= before_unix || p.range.resend {
                continue;
            }
            batch.delete_cf(cf, parked_key(&hook.name, &p.lane, p.from));
            by_lane.entry(p.lane.clone()).or_default().parked_removed.push((hook.name.clone(), p.from));
        }
    }
    let expired = by_lane.values().map(|o| o.parked_removed.len()).sum();
    for (lane, overlay) in &by_lane {
        trim(store, batch, lane, overlay)?;
    }
    if expired > 0 {
        metrics::counter!("meridian_events_parked_expired_total").increment(expired as u64);
    }
    Ok(expired)
}

impl Store {
    /// The oldest parked range's parking time (Unix seconds), if any range is parked.
    pub fn oldest_parked_unix(&self) -> Result<Option<u64>, StoreError> {
        let mut oldest = None;
        for hook in self.webhooks()? {
            for p in self.parked(&hook.name)? {
                oldest = Some(oldest.map_or(p.range.parked_unix, |o: u64| o.min(p.range.parked_unix)));
            }
        }
        Ok(oldest)
    }
}

/// Changes of the entry being applied that `trim` must see (reads see the state before it).
#[derive(Default)]
struct Overlay {
    cursors: BTreeMap<String, Seq>,
    hook: Option<WebhookRecord>,
    removed: Option<String>,
    parked_added: Vec<Seq>,
    parked_removed: Vec<(String, Seq)>,
}

/// Drops the events of `lane` that every enabled webhook is done with and no parked range
/// holds. Decided from the state alone, so every node drops the same.
fn trim(store: &Store, batch: &mut WriteBatch, lane: &str, overlay: &Overlay) -> Result<(), StoreError> {
    let mut hooks: BTreeMap<String, WebhookRecord> = store.webhooks()?.into_iter().map(|h| (h.name.clone(), h)).collect();
    if let Some(h) = &overlay.hook {
        hooks.insert(h.name.clone(), h.clone());
    }
    if let Some(name) = &overlay.removed {
        hooks.remove(name);
    }
    // Exclusive end of what goes: everything when no webhook is enabled.
    let mut end = lane_prefix(lane);
    if let Some(last) = end.last_mut() {
        *last = 1;
    }
    for hook in hooks.values() {
        for p in store.parked(&hook.name)? {
            if p.lane == lane && !overlay.parked_removed.contains(&(hook.name.clone(), p.from)) {
                end = end.min(event_key(lane, p.from));
            }
        }
        if !hook.enabled {
            continue;
        }
        let cursor = match overlay.cursors.get(&hook.name) {
            Some(c) => *c,
            None => store.event_cursor(hook, lane)?,
        };
        let mut past = event_key(lane, cursor);
        past.push(0);
        end = end.min(past);
    }
    for from in &overlay.parked_added {
        end = end.min(event_key(lane, *from));
    }
    batch.delete_range_cf(store.cf(CF_SM_EVENTS)?, lane_prefix(lane), end);
    Ok(())
}

/// Lanes a webhook has a cursor in.
fn lanes_of(store: &Store, name: &str) -> Result<Vec<String>, StoreError> {
    let prefix = format!("c\0{name}\0");
    Ok(store
        .scan_prefix(CF_SM_WEBHOOKS, prefix.as_bytes(), None, usize::MAX)?
        .into_iter()
        .map(|(k, _)| String::from_utf8_lossy(&k[prefix.len()..]).into_owned())
        .collect())
}

/// Every lane that holds events (a handful: the cluster lane and one per region).
pub fn known_lanes(store: &Store) -> Result<Vec<String>, StoreError> {
    let mut lanes = Vec::new();
    let cf = store.cf(CF_SM_EVENTS)?;
    let mut iter = store.db().raw_iterator_cf(cf);
    iter.seek_to_first();
    while let Some(key) = iter.key() {
        let Some(cut) = key.iter().position(|b| *b == 0) else { break };
        let lane = String::from_utf8_lossy(&key[..cut]).into_owned();
        // Next lane: the first key after every `lane\0…` key.
        let mut next = key[..cut].to_vec();
        next.push(1);
        lanes.push(lane);
        iter.seek(&next);
    }
    iter.status()?;
    Ok(lanes)
}

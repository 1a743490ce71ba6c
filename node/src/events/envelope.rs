//! What a receiver gets: CNCF Distribution's notification envelope (`events[]` with `id`,
//! `timestamp`, `action`, `target`, `request`, `actor`, `source`), so a receiver written
//! for Distribution or ACR works unchanged, plus `region`; and the signature over it.

use crate::meta::events::{event_id, EventRecord, Origin, Seq};
use hmac::{Hmac, Mac};
use serde::Serialize;
use sha2::Sha256;

/// The envelope's media type (Distribution's).
pub const MEDIA_TYPE: &str = "application/vnd.docker.distribution.events.v2+json";
/// The header carrying `sha256=<hex HMAC-SHA256 of the body with the webhook's secret>`.
pub const SIGNATURE_HEADER: &str = "Meridian-Signature";
/// A fresh id per attempt, for the receiver's logs (the event ids repeat on re-delivery).
pub const DELIVERY_HEADER: &str = "Meridian-Delivery";

/// `2026-12-01T10:00:00.123Z`.
pub fn timestamp(at_ms: u64) -> String {
    let secs = crate::auth::rfc3339(at_ms / 1000);
    match secs.strip_suffix('Z') {
        Some(base) => format!("{base}.{:03}Z", at_ms % 1000),
        None => secs,
    }
}

#[derive(Serialize)]
struct Target<'a> {
    #[serde(rename = "mediaType", skip_serializing_if = "Option::is_none")]
    media_type: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    size: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    length: Option<u64>,
    #[serde(skip_serializing_if = "str::is_empty")]
    digest: &'a str,
    repository: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    url: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    tag: Option<&'a str>,
}

#[derive(Serialize)]
struct Request<'a> {
    #[serde(skip_serializing_if = "str::is_empty")]
    id: &'a str,
    #[serde(skip_serializing_if = "str::is_empty")]
    addr: &'a str,
    #[serde(skip_serializing_if = "str::is_empty")]
    host: &'a str,
    #[serde(skip_serializing_if = "str::is_empty")]
    method: &'a str,
    #[serde(skip_serializing_if = "str::is_empty")]
    useragent: &'a str,
}

#[derive(Serialize)]
struct Actor<'a> {
    #[serde(skip_serializing_if = "str::is_empty")]
    name: &'a str,
}

#[derive(Serialize)]
struct Source<'a> {
    addr: &'a str,
    #[serde(rename = "instanceID")]
    instance_id: &'a str,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Base<'a> {
    repository: &'a str,
    tag: &'a str,
    old_digest: &'a str,
    new_digest: &'a str,
}

#[derive(Serialize)]
struct Event<'a> {
    id: String,
    timestamp: String,
    action: &'a str,
    target: Target<'a>,
    request: Request<'a>,
    actor: Actor<'a>,
    source: Source<'a>,
    region: &'a str,
    #[serde(rename = "pushRegion", skip_serializing_if = "Option::is_none")]
    push_region: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    base: Option<Base<'a>>,
}

/// One event as Distribution shapes it, serialized. A delete's target holds only what
/// identifies what went (repository, digest, tag), as in Distribution. Typed rather than
/// built as a `serde_json::Value`: delivery serializes every event once per webhook.
pub fn event_bytes(lane: &str, seq: Seq, e: &EventRecord) -> Vec<u8> {
    let origin = e.origin.as_ref();
    let field = |f: fn(&Origin) -> &str| origin.map(f).unwrap_or_default();
    let removed = e.action == "delete";
    let url_base = field(|o| &o.url_base);
    let event = Event {
        id: event_id(lane, seq),
        timestamp: timestamp(e.at_ms),
        action: &e.action,
        target: Target {
            media_type: (!removed && !e.media_type.is_empty()).then_some(e.media_type.as_str()),
            size: (!removed).then_some(e.size),
            length: (!removed).then_some(e.size),
            digest: &e.digest,
            repository: &e.repo,
            url: (!removed && !url_base.is_empty() && !e.digest.is_empty())
                .then(|| format!("{}/v2/{}/manifests/{}", url_base.trim_end_matches('/'), e.repo, e.digest)),
            tag: e.tag.as_deref(),
        },
        request: Request {
            id: field(|o| &o.request_id),
            addr: field(|o| &o.addr),
            host: field(|o| &o.host),
            method: field(|o| &o.method),
            useragent: field(|o| &o.user_agent),
        },
        actor: Actor { name: field(|o| &o.actor) },
        source: Source { addr: field(|o| &o.source_addr), instance_id: field(|o| &o.instance_id) },
        region: &e.region,
        push_region: e.push_region.as_deref(),
        base: e.base.as_ref().map(|b| Base {
            repository: &b.repository,
            tag: &b.tag,
            old_digest: &b.old_digest,
            new_digest: &b.new_digest,
        }),
    };
    serde_json::to_vec(&event).unwrap_or_default()
}

/// `{"events":[…]}` from events already serialized.
pub fn envelope<B: AsRef<[u8]>>(events: &[B]) -> Vec<u8> {
    let mut body = Vec::with_capacity(events.iter().map(|e| e.as_ref().len() + 1).sum::<usize>() + 12);
    body.extend_from_slice(b"{\"events\":[");
    for (i, e) in events.iter().enumerate() {
        if i > 0 {
            body.push(b',');
        }
        body.extend_from_slice(e.as_ref());
    }
    body.extend_from_slice(b"]}");
    body
}

/// `sha256=<hex>` of the body under `secret`.
pub fn signature(secret: &str, body: &[u8]) -> String {
    // HMAC takes a key of any length; `new_from_slice` cannot fail for it.
    let mut mac = match Hmac::<Sha256>::new_from_slice(secret.as_bytes()) {
        Ok(mac) => mac,
        Err(_) => return String::new(),
    };
    mac.update(body);
    let hex: String = mac.finalize().into_bytes().iter().map(|b| format!("{b:02x}")).collect();
    format!("sha256={hex}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Value;

    fn event_json(lane: &str, seq: Seq, e: &EventRecord) -> Value {
        let body = envelope(&[event_bytes(lane, seq, e)]);
        let mut v: Value = serde_json::from_slice(&body).unwrap();
        v["events"][0].take()
    }

    #[test]
    fn a_push_event_has_distributions_fields_and_a_delete_only_what_went() {
        let origin = Origin {
            request_id: "r-1".into(),
            addr: "10.0.0.1:5000".into(),
            host: "reg.example".into(),
            method: "PUT".into(),
            user_agent: "skopeo".into(),
            actor: "ci".into(),
            source_addr: "127.0.0.1:5000".into(),
            instance_id: "us-1".into(),
            region: "us".into(),
            url_base: "http://127.0.0.1:5000/".into(),
            at_ms: 1_764_583_200_123,
        };
        let push = EventRecord {
            action: "push".into(),
            repo: "team/app".into(),
            digest: "sha256:ab".into(),
            media_type: "application/vnd.oci.image.manifest.v1+json".into(),
            size: 42,
            tag: Some("v1".into()),
            region: "us".into(),
            at_ms: origin.at_ms,
            origin: Some(origin),
            push_region: None,
            push_index: None,
            base: None,
        };
        let v = event_json("", Seq::new(7, 0), &push);
        assert_eq!(v["timestamp"], "2025-12-01T10:00:00.123Z");
        assert_eq!(v["target"]["url"], "http://127.0.0.1:5000/v2/team/app/manifests/sha256:ab");
        assert_eq!(v["target"]["length"], 42);
        assert_eq!(v["request"]["useragent"], "skopeo");
        assert_eq!(v["actor"]["name"], "ci");
        assert_eq!(v["source"]["instanceID"], "us-1");
        assert_eq!(v["region"], "us");
        // The same event has the same id wherever and whenever it is sent.
        assert_eq!(v["id"], event_json("", Seq::new(7, 0), &push)["id"]);
        assert_ne!(v["id"], event_json("", Seq::new(7, 1), &push)["id"]);
        let delete = EventRecord { action: "delete".into(), tag: None, ..push };
        let v = event_json("", Seq::new(8, 0), &delete);
        let keys: Vec<&String> = v["target"].as_object().unwrap().keys().collect();
        assert_eq!(keys, ["digest", "repository"]);
    }

    #[test]
    fn the_signature_is_hmac_sha256_of_the_body() {
        // RFC 4231 test case 2.
        assert_eq!(
            signature("Jefe", b"what do ya want for nothing?"),
            "sha256=5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }
}

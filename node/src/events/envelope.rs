//! What a receiver gets: CNCF Distribution's notification envelope (`events[]` with `id`,
//! `timestamp`, `action`, `target`, `request`, `actor`, `source`), so a receiver written
//! for Distribution or ACR works unchanged, plus `region`; and the signature over it.

use crate::meta::events::{event_id, EventRecord, Seq};
use hmac::{Hmac, Mac};
use serde_json::{json, Map, Value};
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

/// One event as Distribution shapes it. A delete's target holds only what identifies what
/// went (repository, digest, tag), as in Distribution.
pub fn event_json(lane: &str, seq: Seq, e: &EventRecord) -> Value {
    let mut target = Map::new();
    if e.action != "delete" {
        if !e.media_type.is_empty() {
            target.insert("mediaType".into(), json!(e.media_type));
        }
        target.insert("size".into(), json!(e.size));
        target.insert("length".into(), json!(e.size));
    }
    if !e.digest.is_empty() {
        target.insert("digest".into(), json!(e.digest));
    }
    target.insert("repository".into(), json!(e.repo));
    let url_base = e.origin.as_ref().map(|o| o.url_base.as_str()).unwrap_or_default();
    if e.action != "delete" && !url_base.is_empty() && !e.digest.is_empty() {
        target.insert("url".into(), json!(format!("{}/v2/{}/manifests/{}", url_base.trim_end_matches('/'), e.repo, e.digest)));
    }
    if let Some(tag) = &e.tag {
        target.insert("tag".into(), json!(tag));
    }
    let origin = e.origin.clone().unwrap_or_default();
    let mut request = Map::new();
    for (k, v) in [
        ("id", &origin.request_id),
        ("addr", &origin.addr),
        ("host", &origin.host),
        ("method", &origin.method),
        ("useragent", &origin.user_agent),
    ] {
        if !v.is_empty() {
            request.insert(k.into(), json!(v));
        }
    }
    let actor = if origin.actor.is_empty() { json!({}) } else { json!({ "name": origin.actor }) };
    let mut event = json!({
        "id": event_id(lane, seq),
        "timestamp": timestamp(e.at_ms),
        "action": e.action,
        "target": target,
        "request": request,
        "actor": actor,
        "source": { "addr": origin.source_addr, "instanceID": origin.instance_id },
        "region": e.region,
    });
    if let Some(from) = &e.push_region {
        event["pushRegion"] = json!(from);
    }
    if let Some(base) = &e.base {
        event["base"] = json!({
            "repository": base.repository,
            "tag": base.tag,
            "oldDigest": base.old_digest,
            "newDigest": base.new_digest,
        });
    }
    event
}

/// `{"events":[…]}` from events already serialized.
pub fn envelope(events: &[Value]) -> Vec<u8> {
    serde_json::to_vec(&json!({ "events": events })).unwrap_or_default()
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
    use crate::meta::events::Origin;

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

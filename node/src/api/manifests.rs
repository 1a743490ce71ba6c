//! Manifest endpoints: GET/HEAD with `Accept` negotiation, PUT, DELETE.

use super::listener::PeerAddr;
use super::query::Query;
use super::{empty, hv, ApiResult};
use crate::meta::events::Origin;
use crate::registry::manifest_parse::bare_media_type;
use crate::registry::{Reference, Registry, RegistryError};
use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::http::request::Parts;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::Response;

/// True when the client's `Accept` headers allow `media_type`. No `Accept` (or a
/// wildcard) accepts anything; a list that names other types only does not.
fn accepts(headers: &HeaderMap, media_type: &str) -> bool {
    let mut any = false;
    for value in headers.get_all(header::ACCEPT) {
        let Ok(value) = value.to_str() else { continue };
        for item in value.split(',') {
            let t = bare_media_type(item);
            if t.is_empty() {
                continue;
            }
            any = true;
            if t == media_type || t == "*/*" || t == "application/*" {
                return true;
            }
        }
    }
    !any
}

pub fn get(registry: &Registry, name: &str, reference: &str, headers: &HeaderMap, with_body: bool) -> ApiResult {
    let reference = existing_reference(reference)?;
    let read = registry.get_manifest(name, &reference)?;
    if !accepts(headers, &read.manifest.media_type) {
        return Err(RegistryError::ManifestUnknown(format!(
            "{name}: stored as {}, which the Accept header excludes",
            read.manifest.media_type
        ))
        .into());
    }
    let len = read.manifest.body.len();
    if with_body {
        registry.usage.pulled(name, len as u64, true);
    }
    let mut resp = if with_body { Response::new(Body::from(read.manifest.body)) } else { empty(StatusCode::OK) };
    let h = resp.headers_mut();
    h.insert(header::CONTENT_TYPE, hv(&read.manifest.media_type));
    h.insert(header::CONTENT_LENGTH, HeaderValue::from(len));
    h.insert("docker-content-digest", hv(&read.digest.to_string()));
    h.insert(header::ETAG, hv(&format!("\"{}\"", read.digest)));
    Ok(resp)
}

pub async fn put(
    registry: &Registry,
    name: &str,
    reference: &str,
    parts: &Parts,
    query: Option<&str>,
    body: Body,
    actor: Option<&str>,
) -> ApiResult {
    let headers = &parts.headers;
    let reference = Reference::parse(reference)?;
    let query = Query::parse(query);
    let tags = query.all("tag");
    let content_type = headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).map(str::to_string);
    let body = read_manifest_body(body, registry.max_manifest_bytes, registry.body_idle_timeout).await?;
    let origin = origin(registry, parts, actor);
    let pushed = registry.put_manifest(name, &reference, content_type.as_deref(), body, tags, origin).await?;
    let mut resp = empty(StatusCode::CREATED);
    let h = resp.headers_mut();
    h.insert(header::LOCATION, hv(&format!("/v2/{name}/manifests/{}", pushed.digest)));
    h.insert("docker-content-digest", hv(&pushed.digest.to_string()));
    h.insert(header::CONTENT_LENGTH, HeaderValue::from(0));
    if let Some(subject) = &pushed.subject {
        h.insert("oci-subject", hv(&subject.to_string()));
    }
    for tag in &pushed.query_tags {
        h.append("oci-tag", hv(tag));
    }
    Ok(resp)
}

pub async fn delete(registry: &Registry, name: &str, reference: &str, parts: &Parts, actor: Option<&str>) -> ApiResult {
    let reference = existing_reference(reference)?;
    registry.delete_manifest(name, &reference, origin(registry, parts, actor)).await?;
    Ok(empty(StatusCode::ACCEPTED))
}

/// Who asked for a change, for the events it causes (Distribution's `request` and
/// `actor`, and the node as `source`).
pub(crate) fn origin(registry: &Registry, parts: &Parts, actor: Option<&str>) -> Origin {
    let header = |name: header::HeaderName| parts.headers.get(name).and_then(|v| v.to_str().ok()).unwrap_or_default().to_string();
    Origin {
        request_id: uuid::Uuid::new_v4().to_string(),
        addr: parts.extensions.get::<ConnectInfo<PeerAddr>>().map(|c| c.0 .0.to_string()).unwrap_or_default(),
        host: super::request_host(&parts.headers, &parts.uri).unwrap_or_default().to_string(),
        method: parts.method.to_string(),
        user_agent: header(header::USER_AGENT),
        ..Origin::internal(actor.unwrap_or_default(), &registry.meta)
    }
}

/// The reference of a manifest to read or delete: one that cannot name anything is
/// simply not there.
fn existing_reference(reference: &str) -> Result<Reference, RegistryError> {
    Reference::parse(reference).map_err(|_| RegistryError::ReferenceUnknown(reference.chars().take(200).collect()))
}

/// Bytes of an oversized body we still read (and drop) before answering 413, so that
/// clients which write the whole body before reading the response see the 413 rather
/// than a broken pipe. Past this, the connection is closed on them.
const OVERSIZE_DRAIN: usize = 64 << 20;

/// Reads a manifest body of at most `limit` bytes without ever buffering more.
async fn read_manifest_body(body: Body, limit: usize, idle: std::time::Duration) -> Result<bytes::Bytes, RegistryError> {
    use futures::StreamExt;
    let mut stream = super::uploads::body_stream(body, idle);
    let mut buf = bytes::BytesMut::new();
    let mut seen = 0usize;
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(RegistryError::BodyFailed)?;
        seen += chunk.len();
        if seen > limit {
            if seen > OVERSIZE_DRAIN {
                break;
            }
            continue;
        }
        buf.extend_from_slice(&chunk);
    }
    if seen > limit {
        return Err(RegistryError::ManifestTooLarge { limit });
    }
    Ok(buf.freeze())
}

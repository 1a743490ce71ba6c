//! Upload endpoints: POST (start, single-request, mount), PATCH, PUT, GET, DELETE.

use super::query::Query;
use super::{empty, hv, ApiResult};
use crate::registry::names::{parse_digest, validate_name};
use crate::registry::uploads::{ChunkHeaders, UploadStatus};
use crate::registry::{Registry, RegistryError};
use axum::body::Body;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::Response;
use meridian_replication::Algorithm;

/// Session ids are ones we generated (`SessionId`); anything else is unknown (and never
/// touches a path).
fn session_id(id: &str) -> Result<&str, RegistryError> {
    crate::blobs::uploads::SessionId::parse(id).map(|_| id).ok_or(RegistryError::BlobUploadUnknown)
}

fn content_length(headers: &HeaderMap) -> Result<Option<u64>, RegistryError> {
    match headers.get(header::CONTENT_LENGTH) {
        None => Ok(None),
        Some(v) => v
            .to_str()
            .ok()
            .and_then(|s| s.parse::<u64>().ok())
            .map(Some)
            .ok_or_else(|| RegistryError::SizeInvalid("Content-Length is not a number".into())),
    }
}

fn chunk_headers(headers: &HeaderMap) -> Result<ChunkHeaders, RegistryError> {
    let range = match headers.get(header::CONTENT_RANGE) {
        None => None,
        Some(v) => {
            let s = v.to_str().unwrap_or("");
            // The spec's form is `start-end`; accept the RFC form `bytes start-end/*` too.
            let s = s.strip_prefix("bytes ").unwrap_or(s);
            let s = s.split('/').next().unwrap_or("");
            let (a, b) = s
                .split_once('-')
                .ok_or_else(|| RegistryError::BlobUploadInvalid(format!("bad Content-Range {s:?}")))?;
            let parse = |x: &str| {
                x.parse::<u64>().map_err(|_| RegistryError::BlobUploadInvalid(format!("bad Content-Range {s:?}")))
            };
            Some((parse(a)?, parse(b)?))
        }
    };
    Ok(ChunkHeaders { range, content_length: content_length(headers)? })
}

fn session_response(status: StatusCode, name: &str, s: &UploadStatus) -> Response {
    let mut resp = empty(status);
    let h = resp.headers_mut();
    h.insert(header::LOCATION, hv(&format!("/v2/{name}/blobs/uploads/{}", s.id)));
    h.insert(header::RANGE, hv(&format!("0-{}", s.offset.saturating_sub(1))));
    h.insert("docker-upload-uuid", hv(&s.id));
    h.insert(header::CONTENT_LENGTH, HeaderValue::from(0));
    resp
}

fn created(name: &str, digest: &str) -> Response {
    let mut resp = empty(StatusCode::CREATED);
    let h = resp.headers_mut();
    h.insert(header::LOCATION, hv(&format!("/v2/{name}/blobs/{digest}")));
    h.insert("docker-content-digest", hv(digest));
    h.insert(header::CONTENT_LENGTH, HeaderValue::from(0));
    resp
}

pub async fn start(
    registry: &Registry,
    name: &str,
    headers: &HeaderMap,
    query: Option<&str>,
    owner: &str,
    body: Body,
) -> ApiResult {
    let query = Query::parse(query);
    if let Some(mount) = query.get("mount") {
        let digest = parse_digest(mount)?;
        let from = query.get("from").filter(|f| !f.is_empty());
        if let Some(from) = from {
            validate_name(from)?;
        }
        if registry.mount_blob(name, &digest, from).await? {
            return Ok(created(name, &digest.to_string()));
        }
        // Not mountable: fall through to an ordinary session, as the spec asks.
    }
    if let Some(d) = query.get("digest") {
        let digest = parse_digest(d)?;
        let length = content_length(headers)?;
        let body = body_stream(body, registry.body_idle_timeout);
        registry.upload_whole(name, &digest, length, body).await?;
        return Ok(created(name, &digest.to_string()));
    }
    let algorithm = match query.get("digest-algorithm") {
        None => Algorithm::Sha256,
        Some(a) => a
            .parse::<Algorithm>()
            .map_err(|_| RegistryError::DigestInvalid(format!("unsupported digest algorithm {a:?}")))?,
    };
    let status = registry.start_upload(name, algorithm, owner).await?;
    Ok(session_response(StatusCode::ACCEPTED, name, &status))
}

/// The request body as a stream that fails when the client sends nothing for `idle`:
/// the upload then ends like any broken body (nothing kept, the session where it was).
pub(super) fn body_stream(
    body: Body,
    idle: std::time::Duration,
) -> impl futures::Stream<Item = Result<bytes::Bytes, String>> + Unpin {
    use futures::StreamExt;
    Box::pin(tokio_stream::StreamExt::timeout(body.into_data_stream(), idle).map(move |item| match item {
        Ok(Ok(bytes)) => Ok(bytes),
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err(format!("the client sent nothing for {} s", idle.as_secs())),
    }))
}

pub async fn status(registry: &Registry, name: &str, id: &str) -> ApiResult {
    let s = registry.upload_status(name, session_id(id)?).await?;
    Ok(session_response(StatusCode::NO_CONTENT, name, &s))
}

pub async fn patch(registry: &Registry, name: &str, id: &str, headers: &HeaderMap, body: Body) -> ApiResult {
    let id = session_id(id)?;
    let chunk = chunk_headers(headers)?;
    let body = body_stream(body, registry.body_idle_timeout);
    let s = registry.append_chunk(name, id, chunk, body).await?;
    Ok(session_response(StatusCode::ACCEPTED, name, &s))
}

pub async fn put(
    registry: &Registry,
    name: &str,
    id: &str,
    headers: &HeaderMap,
    query: Option<&str>,
    body: Body,
) -> ApiResult {
    let id = session_id(id)?;
    let query = Query::parse(query);
    let digest = parse_digest(
        query.get("digest").ok_or_else(|| RegistryError::DigestInvalid("the closing PUT needs ?digest=".into()))?,
    )?;
    let chunk = chunk_headers(headers)?;
    let body = body_stream(body, registry.body_idle_timeout);
    registry.finish_upload(name, id, &digest, chunk, body).await?;
    Ok(created(name, &digest.to_string()))
}

pub async fn cancel(registry: &Registry, name: &str, id: &str) -> ApiResult {
    registry.cancel_upload(name, session_id(id)?).await?;
    Ok(empty(StatusCode::NO_CONTENT))
}

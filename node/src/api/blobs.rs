//! Blob GET/HEAD (with single `Range`) and DELETE.

use super::{empty, hv, ApiResult};
use crate::registry::names::parse_digest;
use crate::registry::{Registry, RegistryError};
use axum::body::Body;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::Response;

/// Parses a single `bytes=` range against `size`. `Ok(None)`: serve the whole blob.
fn parse_range(value: &str, size: u64) -> Result<Option<(u64, u64)>, RegistryError> {
    let unsatisfiable = RegistryError::RangeNotSatisfiable { size };
    let Some(spec) = value.trim().strip_prefix("bytes=") else {
        // Other units are ignored, as RFC 9110 allows.
        return Ok(None);
    };
    if spec.contains(',') {
        // Multiple ranges: serve the whole representation (allowed by RFC 9110).
        return Ok(None);
    }
    let (start, end) = spec.split_once('-').ok_or(RegistryError::RangeNotSatisfiable { size })?;
    let (start, end) = (start.trim(), end.trim());
    let parse = |s: &str| s.parse::<u64>().map_err(|_| RegistryError::RangeNotSatisfiable { size });
    let range = if start.is_empty() {
        let suffix = parse(end)?;
        if suffix == 0 || size == 0 {
            return Err(unsatisfiable);
        }
        (size.saturating_sub(suffix), size - 1)
    } else {
        let first = parse(start)?;
        let last = if end.is_empty() { size.saturating_sub(1) } else { parse(end)?.min(size.saturating_sub(1)) };
        if first >= size || (!end.is_empty() && parse(end)? < first) {
            return Err(unsatisfiable);
        }
        (first, last)
    };
    Ok(Some(range))
}

pub async fn get(registry: &Registry, name: &str, digest: &str, headers: &HeaderMap, with_body: bool) -> ApiResult {
    let digest = parse_digest(digest)?;
    let range_header = headers.get(header::RANGE).and_then(|v| v.to_str().ok()).map(str::to_string);
    if !with_body {
        let size = registry.blob_size(name, &digest).await?;
        let mut resp = empty(StatusCode::OK);
        blob_headers(resp.headers_mut(), &digest, size);
        return Ok(resp);
    }
    if let Some((url, size)) = registry.blob_redirect(name, &digest).await? {
        // Counted as a whole pull: the store, not this node, answers any range.
        registry.usage.pulled(name, size, false);
        let mut resp = empty(StatusCode::TEMPORARY_REDIRECT);
        resp.headers_mut().insert(header::LOCATION, hv(&url));
        resp.headers_mut().insert("docker-content-digest", hv(&digest.to_string()));
        return Ok(resp);
    }
    let source = registry.open_blob(name, &digest).await?;
    let size = source.size();
    let range = match &range_header {
        Some(v) => parse_range(v, size)?,
        None => None,
    };
    let (status, start, len) = match range {
        Some((a, b)) => (StatusCode::PARTIAL_CONTENT, a, b - a + 1),
        None => (StatusCode::OK, 0, size),
    };
    registry.usage.pulled(name, len, false);
    let body = Body::from_stream(source.into_stream(start, len));
    let mut resp = Response::new(body);
    *resp.status_mut() = status;
    let h = resp.headers_mut();
    blob_headers(h, &digest, len);
    if status == StatusCode::PARTIAL_CONTENT {
        h.insert(header::CONTENT_RANGE, hv(&format!("bytes {}-{}/{}", start, start + len - 1, size)));
    }
    Ok(resp)
}

/// What deciding a nearest-region redirect needs besides the registry.
pub struct Routed<'a> {
    pub routing: &'a crate::routing::NearestRegion,
    pub auth: &'a crate::auth::Auth,
    /// The authorized caller, for whom the redirect's grant is signed.
    pub caller: Option<&'a crate::auth::Caller>,
}

/// Marks a redirect's URL when it carries no grant (auth off, anonymous pulls).
const ROUTED_PARAM: &str = "routed";

/// Whether a blob `GET` came by a nearest-region redirect (its URL carries a grant or the
/// routed mark).
pub fn arrived_by_redirect(query: Option<&str>) -> bool {
    let query = super::query::Query::parse(query);
    query.get(crate::auth::blob_grant::GRANT_PARAM).is_some() || query.get(ROUTED_PARAM).is_some()
}

/// The redirect to the region nearest `client` for a blob `GET`, when the routing table
/// maps the client to another region that is up and holds the blob (see `routing`).
/// `None` — serve here — for everything else, including a blob this repository does not
/// have in the cluster's records (the normal path answers that with its own error; a
/// blob only uploaded here, in no manifest yet, is not known to other regions).
pub async fn to_nearest_region(
    registry: &Registry,
    routed: Routed<'_>,
    name: &str,
    digest: &str,
    client: Option<std::net::IpAddr>,
) -> Option<Response> {
    let digest = parse_digest(digest).ok()?;
    let target = routed.routing.redirect(client, &digest)?;
    registry.store.referenced_blob_size(name, &digest).ok()??;
    metrics::counter!("meridian_routing_redirects_total", "region" => target.region.clone()).increment(1);
    let mut resp = empty(StatusCode::TEMPORARY_REDIRECT);
    // The client's credentials do not follow it to another host; the grant does.
    let grant = routed.caller.and_then(|caller| routed.auth.blob_grant(caller, name, &digest.to_string()));
    let query = match grant {
        Some(grant) => format!("{}={grant}", crate::auth::blob_grant::GRANT_PARAM),
        None => format!("{ROUTED_PARAM}=1"),
    };
    resp.headers_mut().insert(header::LOCATION, hv(&format!("{}/v2/{name}/blobs/{digest}?{query}", target.base_url)));
    resp.headers_mut().insert("docker-content-digest", hv(&digest.to_string()));
    Some(resp)
}

fn blob_headers(h: &mut HeaderMap, digest: &meridian_replication::Digest, len: u64) {
    h.insert(header::CONTENT_LENGTH, HeaderValue::from(len));
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/octet-stream"));
    h.insert("docker-content-digest", hv(&digest.to_string()));
    h.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
    h.insert(header::ETAG, hv(&format!("\"{digest}\"")));
}

pub async fn delete(registry: &Registry, name: &str, digest: &str) -> ApiResult {
    let digest = parse_digest(digest)?;
    registry.delete_blob(name, &digest).await?;
    Ok(empty(StatusCode::ACCEPTED))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_redirected_request_is_recognised_by_its_grant_or_mark() {
        assert!(arrived_by_redirect(Some("grant=abc.def.ghi")));
        assert!(arrived_by_redirect(Some("x=1&routed=1")));
        assert!(!arrived_by_redirect(Some("granted=1&grant_x=2")));
        assert!(!arrived_by_redirect(None));
    }

    #[test]
    fn ranges() {
        assert_eq!(parse_range("bytes=0-9", 100).unwrap(), Some((0, 9)));
        assert_eq!(parse_range("bytes=90-", 100).unwrap(), Some((90, 99)));
        assert_eq!(parse_range("bytes=-10", 100).unwrap(), Some((90, 99)));
        assert_eq!(parse_range("bytes=50-500", 100).unwrap(), Some((50, 99)));
        assert!(parse_range("bytes=100-", 100).is_err());
        assert!(parse_range("bytes=9-3", 100).is_err());
        assert!(parse_range("bytes=x-3", 100).is_err());
        assert_eq!(parse_range("items=0-1", 100).unwrap(), None);
    }
}

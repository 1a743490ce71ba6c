//! Tags list, catalog and referrers.

use super::query::Query;
use super::{hv, ApiResult, AppState};
use crate::auth::{Caller, Need};
use crate::registry::discovery::Page;
use crate::registry::names::{parse_digest, validate_name};
use crate::registry::{Registry, RegistryError};
use axum::extract::{Request, State};
use axum::http::{header, HeaderValue};
use axum::response::{IntoResponse, Response};
use serde_json::json;

fn pagination(query: &Query) -> Result<(Option<usize>, Option<String>), RegistryError> {
    let n = match query.get("n") {
        None | Some("") => None,
        Some(s) => Some(
            s.parse::<usize>()
                .map_err(|_| RegistryError::Unsupported(format!("pagination n={s:?} is not a non-negative integer")))?,
        ),
    };
    Ok((n, query.get("last").filter(|l| !l.is_empty()).map(str::to_string)))
}

fn with_link(mut resp: Response, base: &str, page: &Page, n: Option<usize>) -> Response {
    if let (true, Some(n), Some(last)) = (page.more, n, page.items.last()) {
        let last: String = form_urlencoded::byte_serialize(last.as_bytes()).collect();
        resp.headers_mut().insert(header::LINK, hv(&format!("<{base}?n={n}&last={last}>; rel=\"next\"")));
    }
    resp
}

pub fn tags(registry: &Registry, name: &str, query: Option<&str>) -> ApiResult {
    let (n, last) = pagination(&Query::parse(query))?;
    let page = registry.list_tags(name, n, last.as_deref())?;
    let resp = axum::Json(json!({ "name": name, "tags": page.items })).into_response();
    Ok(with_link(resp, &format!("/v2/{name}/tags/list"), &page, n))
}

/// `GET /v2/_catalog`: any identified caller, listing only what it may pull.
pub async fn catalog(State(state): State<AppState>, req: Request) -> Response {
    crate::observability::http::label_request("catalog", "");
    let result = (|| -> ApiResult {
        let headers = req.headers();
        let host = super::request_host(headers, req.uri());
        let authorization = headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok());
        let caller = state.auth.identify(authorization, host, super::peer_ip(&req)).map_err(RegistryError::from)?;
        if matches!(caller, Caller::Anonymous) {
            state.auth.authorize(&caller, Need::Catalog, host, "GET", "/v2/_catalog").map_err(RegistryError::from)?;
        }
        let (n, last) = pagination(&Query::parse(req.uri().query()))?;
        if let Some(l) = &last {
            validate_name(l)?;
        }
        let page = state.registry.catalog(n, last.as_deref(), |repo| state.auth.may_list(&caller, repo))?;
        let resp = axum::Json(json!({ "repositories": page.items })).into_response();
        Ok(with_link(resp, "/v2/_catalog", &page, n))
    })();
    result.unwrap_or_else(|e| e.into_response())
}

pub fn referrers(registry: &Registry, name: &str, digest: &str, query: Option<&str>) -> ApiResult {
    let subject = parse_digest(digest)?;
    let query = Query::parse(query);
    let filter = query.get("artifactType").filter(|t| !t.is_empty());
    let list = registry.referrers(name, &subject, filter)?;
    let body = json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": list,
    });
    let mut resp = axum::Json(body).into_response();
    let h = resp.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/vnd.oci.image.index.v1+json"));
    if filter.is_some() {
        h.insert("oci-filters-applied", HeaderValue::from_static("artifactType"));
    }
    Ok(resp)
}

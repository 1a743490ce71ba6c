//! The OCI Distribution API over HTTP (axum). Handlers parse, call a `Registry`
//! operation, and render; they hold no business logic.

mod blobs;
mod discovery;
pub mod listener;
pub mod server;
mod token;
pub mod errors;
mod manifests;
pub(crate) use manifests::origin as change_origin;
pub mod query;
pub mod route;
mod uploads;
pub mod upload_forward;

use crate::meta::Meta;
use crate::observability;
use crate::registry::{Registry, RegistryError};
use axum::body::Body;
use axum::extract::{ConnectInfo, Request, State};
use listener::PeerAddr;
use axum::http::{header, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use crate::auth::scope::Action;
use crate::auth::{Auth, AuthError, Need};
use errors::ApiError;
use query::Query;
use std::sync::Arc;
use metrics_exporter_prometheus::PrometheusHandle;
use route::Endpoint;

#[derive(Clone)]
pub struct AppState {
    /// Shared: the state is cloned for every request, the registry is not.
    pub registry: Arc<Registry>,
    pub auth: Arc<Auth>,
    pub meta: Meta,
    pub metrics: PrometheusHandle,
    /// Set once this node has caught up with the cluster after starting
    /// (`meta::readiness::track_startup`).
    pub started: tokio::sync::watch::Receiver<bool>,
    /// Nearest-region routing of blob pulls (`[routing]`).
    pub routing: Arc<crate::routing::NearestRegion>,
}

pub type ApiResult = Result<Response, ApiError>;

/// How long a request with credentials waits, on a cluster's first start, for the
/// bootstrap signing key and `admin` user to be applied here (see
/// `Auth::wait_for_identities`). An election and one commit take well under this.
pub(crate) const IDENTITIES_WAIT: std::time::Duration = std::time::Duration::from_secs(10);

/// The registry's HTTP application; `ui`, the web console's router (handed in by the
/// composition root, so this module names nothing of it), is nested at `/ui`.
pub fn app(state: AppState, ui: Option<Router>) -> Router {
    let router = match ui {
        Some(ui) => Router::new().nest_service("/ui", ui),
        None => Router::new(),
    };
    crate::failpoints::routes(router)
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(render_metrics))
        .route("/v2", get(api_version))
        .route("/v2/", get(api_version))
        .route("/token", get(token::get).post(token::post))
        .route("/v2/_catalog", get(discovery::catalog))
        .fallback(dispatch)
        .layer(axum::middleware::from_fn_with_state(state.clone(), wait_for_identities))
        .layer(axum::middleware::from_fn(observability::http::track_request))
        .with_state(state)
}

/// A request that will need the cluster's identities — one with credentials, or any
/// `/token` request — waits for them on a cluster's first start (`IDENTITIES_WAIT` at
/// most; nothing once they have been seen, or with auth off). Credentials naming an
/// identity this node has not heard of catch it up first (`catch_up_for_identity`).
async fn wait_for_identities(State(state): State<AppState>, req: Request, next: axum::middleware::Next) -> Response {
    let authorization = req.headers().get(header::AUTHORIZATION);
    if authorization.is_some() || req.uri().path() == "/token" {
        state.auth.wait_for_identities(IDENTITIES_WAIT).await;
    }
    if let Some(value) = authorization.and_then(|v| v.to_str().ok()) {
        catch_up_for_identity(&state.meta, state.auth.names_unheard_identity(value)).await;
    }
    next.run(req).await
}

/// A user, robot, robot secret or signing key created in another region a moment ago
/// may not be applied here yet: before refusing credentials that name one, the node
/// catches up with the leader's commit index (one round trip; the leader pays nothing).
/// Unknown names stay refused after that, they only wait for the round trip.
pub(crate) async fn catch_up_for_identity(meta: &Meta, unheard: bool) {
    if unheard {
        let _ = meta.catch_up(IDENTITY_CATCH_UP).await;
    }
}

/// How long credentials naming an unheard-of identity wait for this node to catch up.
const IDENTITY_CATCH_UP: std::time::Duration = std::time::Duration::from_secs(2);

/// `GET /v2/`: the API version check, and where clients learn how to authenticate.
async fn api_version(State(state): State<AppState>, req: Request) -> Response {
    let headers = req.headers();
    let host = request_host(headers, req.uri());
    let authorization = headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok());
    let checked =
        state.auth.identify(authorization, host, peer_ip(&req)).and_then(|c| state.auth.authorize(&c, Need::Base, host, "GET", "/v2/"));
    let mut resp = match checked {
        Ok(()) => axum::Json(serde_json::json!({})).into_response(),
        Err(e) => ApiError(e.into()).into_response(),
    };
    resp.headers_mut()
        .insert("docker-distribution-api-version", HeaderValue::from_static("registry/2.0"));
    resp
}

async fn readyz(State(state): State<AppState>) -> Response {
    match crate::meta::readiness::not_ready_reason(&state.meta, *state.started.borrow()) {
        None => (StatusCode::OK, "ready").into_response(),
        Some(reason) => (StatusCode::SERVICE_UNAVAILABLE, reason).into_response(),
    }
}

async fn render_metrics(State(state): State<AppState>) -> Response {
    observability::record_raft_applied(state.meta.applied_index());
    let mut resp = state.metrics.render().into_response();
    resp.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain; version=0.0.4"));
    resp
}

/// Every `/v2/<name>/...` route. Names contain slashes, so routing is done by hand.
async fn dispatch(State(state): State<AppState>, req: Request) -> Response {
    let path = req.uri().path().to_string();
    let Some(rest) = path.strip_prefix("/v2/") else {
        return not_found();
    };
    let endpoint = match route::parse(rest) {
        Ok(Some(e)) => e,
        Ok(None) => return not_found(),
        Err(e) => return ApiError(e).into_response(),
    };
    observability::http::label_request(endpoint.label(), endpoint.name());
    let (parts, body) = req.into_parts();
    let headers = &parts.headers;
    let registry = &state.registry;
    // Authorization comes first: a refused request reads no body and touches nothing.
    let allowed = match authorize(&state.auth, &endpoint, &parts) {
        Ok(allowed) => allowed,
        Err(e) => return ApiError(e.into()).into_response(),
    };
    // An upload session another node of the region holds: its bytes and running hash
    // are there, so the request goes there.
    if let Endpoint::Upload { id, .. } = &endpoint {
        if let Some(owner) = upload_forward::owner_elsewhere(&state.meta, id) {
            return upload_forward::forward(registry, &owner, parts, body).await;
        }
    }
    // Layer bytes for a client nearer another region come from that region's copy — once:
    // a request that arrived by such a redirect is served here, whatever this node's
    // table says (two regions whose tables disagree must not bounce a client between them).
    if let (Endpoint::Blob { name, digest }, &Method::GET) = (&endpoint, &parts.method) {
        if !blobs::arrived_by_redirect(parts.uri.query()) {
            let client = parts.extensions.get::<ConnectInfo<PeerAddr>>().map(|c| c.0 .0.ip());
            let routed = blobs::Routed { routing: &state.routing, auth: &state.auth, caller: allowed.caller.as_ref() };
            if let Some(redirect) = blobs::to_nearest_region(registry, routed, name, digest, client).await {
                return redirect;
            }
        }
    }
    let query = allowed.query.as_deref().or(parts.uri.query());
    let linearizable = wants_linearizable(headers);
    if linearizable && matches!(endpoint, Endpoint::Manifest { .. } | Endpoint::Tags { .. }) {
        if let Err(e) = registry.meta.read_barrier().await {
            return ApiError(e.into()).into_response();
        }
    }
    let result = serve(registry, &endpoint, &parts, query, &allowed, body).await;
    // Promise 4: never MANIFEST_UNKNOWN / BLOB_UNKNOWN for acknowledged content. A pull
    // that misses here may have outrun this region's copy of the Raft log (the push was
    // acknowledged elsewhere moments ago): catch up and look again, see `look_again`.
    // Blob HEAD is left out: pushers probe with it, and a stale "no" costs them one upload.
    let pull = matches!(
        (&endpoint, &parts.method),
        (Endpoint::Manifest { .. }, &Method::GET | &Method::HEAD) | (Endpoint::Blob { .. }, &Method::GET)
    );
    let result = if pull && is_miss(&result) && !linearizable {
        look_again(registry, &endpoint, &parts, query, &allowed).await
    } else {
        result
    };
    result.unwrap_or_else(|e| e.into_response())
}

fn is_miss(result: &ApiResult) -> bool {
    matches!(result, Err(ApiError(RegistryError::ManifestUnknown(_) | RegistryError::BlobUnknown(_))))
}

/// A pull that missed locally, served again once this region has caught up.
///
/// First the cheap catch-up (the leader's commit index, one round trip): it finds what
/// a lagging region had not applied yet, which is nearly every miss of acknowledged
/// content, at no extra cost to the visibility lag. Only if the pull still misses does
/// the node catch up with a leader that confirms it still leads (one more quorum round):
/// the leader it asked may be a deposed one, frozen or cut off, answering from a stale
/// commit index. Only then is "unknown" an answer it can stand behind. A region that
/// gets no confirmed answer in time (cut off, mid-election) cannot tell "absent" from
/// "not heard of yet" and says 503 UNAVAILABLE instead of a 404.
async fn look_again(
    registry: &Registry,
    endpoint: &Endpoint<'_>,
    parts: &axum::http::request::Parts,
    query: Option<&str>,
    allowed: &Allowed,
) -> ApiResult {
    if registry.meta.catch_up(MISS_CATCH_UP).await.is_ok() {
        let result = serve(registry, endpoint, parts, query, allowed, Body::empty()).await;
        if !is_miss(&result) {
            return result;
        }
    }
    match registry.meta.catch_up_confirmed(MISS_CONFIRM).await {
        Ok(()) => serve(registry, endpoint, parts, query, allowed, Body::empty()).await,
        Err(e) => Err(ApiError(RegistryError::NoQuorum(format!(
            "not found in this region, which cannot confirm with the leader that nothing was pushed: {e}"
        )))),
    }
}

/// How long a pull that missed locally may wait for the cheap catch-up.
const MISS_CATCH_UP: std::time::Duration = std::time::Duration::from_secs(2);
/// How long it may then wait for a leader that confirms its leadership.
const MISS_CONFIRM: std::time::Duration = std::time::Duration::from_secs(2);

/// What an authorized request is served with. Only an upload start needs more than the
/// request itself, so everything else pays nothing here.
#[derive(Default)]
struct Allowed {
    /// The query without a cross-repository mount the caller may not read from (the
    /// request becomes a plain upload, as the spec allows); `None`: the query as sent.
    query: Option<String>,
    /// The caller's name for per-identity limits (`addr:<ip>` for callers without one).
    owner: String,
    /// Who is calling (`None` for routes that need no authorization).
    caller: Option<crate::auth::Caller>,
}

/// Checks the caller may do what `endpoint` asks.
fn authorize(auth: &Auth, endpoint: &Endpoint<'_>, parts: &axum::http::request::Parts) -> Result<Allowed, AuthError> {
    let Some(actions) = required_actions(endpoint, &parts.method) else { return Ok(Allowed::default()) };
    let peer = parts.extensions.get::<ConnectInfo<PeerAddr>>().map(|c| c.0 .0.ip());
    let host = request_host(&parts.headers, &parts.uri);
    let authorization = parts.headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok());
    let caller = match (blob_grant(endpoint, parts), authorization) {
        // A redirected blob read: the grant in the URL stands for the caller's token.
        // A grant that no longer holds (expired, its user removed) makes the request
        // anonymous: a repository open to anonymous pulls still serves it, any other
        // answers with the usual challenge.
        (Some((grant, digest)), None) => auth.identify_grant(&grant, digest, host).unwrap_or(crate::auth::Caller::Anonymous),
        _ => auth.identify(authorization, host, peer)?,
    };
    auth.authorize(&caller, Need::Repo { name: endpoint.name(), actions }, host, parts.method.as_str(), parts.uri.path())?;
    if !matches!(endpoint, Endpoint::UploadStart { .. }) {
        return Ok(Allowed { caller: Some(caller), ..Allowed::default() });
    }
    let owner = match caller.subject() {
        Some(subject) => subject.to_string(),
        None => peer.map(|ip| format!("addr:{ip}")).unwrap_or_default(),
    };
    let mut allowed = Allowed { query: None, owner, caller: Some(caller.clone()) };
    if let Some(q) = parts.uri.query() {
        let from = Query::parse(Some(q)).get("from").map(str::to_string);
        if from.is_some_and(|from| !auth.allows(&caller, Need::Repo { name: &from, actions: &[Action::Pull] })) {
            let kept: Vec<(String, String)> = form_urlencoded::parse(q.as_bytes())
                .filter(|(k, _)| k != "mount" && k != "from")
                .map(|(k, v)| (k.into_owned(), v.into_owned()))
                .collect();
            allowed.query = Some(form_urlencoded::Serializer::new(String::new()).extend_pairs(kept).finish());
        }
    }
    Ok(allowed)
}

/// The grant (`?grant=`) of a blob `GET`/`HEAD` that followed a nearest-region redirect,
/// and the digest it must be for (see `auth::blob_grant`).
fn blob_grant<'a>(endpoint: &Endpoint<'a>, parts: &axum::http::request::Parts) -> Option<(String, &'a str)> {
    let Endpoint::Blob { digest, .. } = endpoint else { return None };
    if !matches!(parts.method, Method::GET | Method::HEAD) {
        return None;
    }
    let grant = Query::parse(parts.uri.query()).get(crate::auth::blob_grant::GRANT_PARAM)?.to_string();
    Some((grant, digest))
}

/// The actions a route needs on its repository (`None`: not a registry operation). As in
/// CNCF Distribution, whose behaviour the Go clients are built against, the method decides:
/// reading needs `pull`; writing needs `pull` and `push` (a push reads back what it
/// wrote); deleting a manifest or blob needs `delete`; cancelling an upload needs `push`.
pub(crate) fn required_actions(endpoint: &Endpoint<'_>, method: &Method) -> Option<&'static [Action]> {
    const PULL: &[Action] = &[Action::Pull];
    const PULL_PUSH: &[Action] = &[Action::Pull, Action::Push];
    match (endpoint, method) {
        (
            Endpoint::Manifest { .. } | Endpoint::Blob { .. } | Endpoint::Upload { .. },
            &Method::GET | &Method::HEAD,
        ) => Some(PULL),
        (Endpoint::Tags { .. } | Endpoint::Referrers { .. }, &Method::GET) => Some(PULL),
        (Endpoint::Manifest { .. } | Endpoint::Blob { .. }, &Method::DELETE) => Some(&[Action::Delete]),
        (Endpoint::Manifest { .. }, &Method::PUT) | (Endpoint::UploadStart { .. }, &Method::POST) => Some(PULL_PUSH),
        (Endpoint::Upload { .. }, &Method::PATCH | &Method::PUT) => Some(PULL_PUSH),
        (Endpoint::Upload { .. }, &Method::DELETE) => Some(&[Action::Push]),
        _ => None,
    }
}

/// One registry operation.
async fn serve(
    registry: &Registry,
    endpoint: &Endpoint<'_>,
    parts: &axum::http::request::Parts,
    query: Option<&str>,
    allowed: &Allowed,
    body: Body,
) -> ApiResult {
    let headers = &parts.headers;
    let owner = allowed.owner.as_str();
    let actor = allowed.caller.as_ref().and_then(|c| c.subject());
    match (endpoint, &parts.method) {
        (Endpoint::Manifest { name, reference }, &Method::GET) => manifests::get(registry, name, reference, headers, true),
        (Endpoint::Manifest { name, reference }, &Method::HEAD) => manifests::get(registry, name, reference, headers, false),
        (Endpoint::Manifest { name, reference }, &Method::PUT) => {
            manifests::put(registry, name, reference, parts, query, body, actor).await
        }
        (Endpoint::Manifest { name, reference }, &Method::DELETE) => manifests::delete(registry, name, reference, parts, actor).await,
        (Endpoint::Blob { name, digest }, &Method::GET) => blobs::get(registry, name, digest, headers, true).await,
        (Endpoint::Blob { name, digest }, &Method::HEAD) => blobs::get(registry, name, digest, headers, false).await,
        (Endpoint::Blob { name, digest }, &Method::DELETE) => blobs::delete(registry, name, digest).await,
        (Endpoint::UploadStart { name }, &Method::POST) => uploads::start(registry, name, headers, query, owner, body).await,
        (Endpoint::Upload { name, id }, &Method::GET) => uploads::status(registry, name, id).await,
        (Endpoint::Upload { name, id }, &Method::PATCH) => uploads::patch(registry, name, id, headers, body).await,
        (Endpoint::Upload { name, id }, &Method::PUT) => uploads::put(registry, name, id, headers, query, body).await,
        (Endpoint::Upload { name, id }, &Method::DELETE) => uploads::cancel(registry, name, id).await,
        (Endpoint::Tags { name }, &Method::GET) => discovery::tags(registry, name, query),
        (Endpoint::Referrers { name, digest }, &Method::GET) => discovery::referrers(registry, name, digest, query),
        _ => Ok(method_not_allowed()),
    }
}

/// The host the client addressed: `Host` (HTTP/1.1) or the URI authority (HTTP/2's
/// `:authority`), for the token realm in challenges.
pub(crate) fn request_host<'a>(headers: &'a axum::http::HeaderMap, uri: &'a axum::http::Uri) -> Option<&'a str> {
    headers.get(header::HOST).and_then(|v| v.to_str().ok()).or_else(|| uri.authority().map(|a| a.as_str()))
}

/// The client's address (the server runs with connect info).
pub(crate) fn peer_ip(req: &Request) -> Option<std::net::IpAddr> {
    req.extensions().get::<ConnectInfo<PeerAddr>>().map(|c| c.0 .0.ip())
}

/// `Meridian-Consistency: linearizable` asks for a read that reflects every write the
/// cluster committed before the request (the node checks with the leader first).
fn wants_linearizable(headers: &axum::http::HeaderMap) -> bool {
    headers
        .get("meridian-consistency")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.trim().eq_ignore_ascii_case("linearizable"))
}

fn not_found() -> Response {
    ApiError(RegistryError::Unsupported("no such endpoint".into())).into_response().map_status(StatusCode::NOT_FOUND)
}

fn method_not_allowed() -> Response {
    ApiError(RegistryError::Unsupported("method not allowed on this endpoint".into()))
        .into_response()
        .map_status(StatusCode::METHOD_NOT_ALLOWED)
}

trait MapStatus {
    fn map_status(self, status: StatusCode) -> Self;
}

impl MapStatus for Response {
    fn map_status(mut self, status: StatusCode) -> Self {
        *self.status_mut() = status;
        self
    }
}

/// A header value from a string we built (digests, paths of validated names).
pub(crate) fn hv(s: &str) -> HeaderValue {
    HeaderValue::from_str(s).unwrap_or_else(|_| HeaderValue::from_static(""))
}

pub(crate) fn empty(status: StatusCode) -> Response {
    let mut resp = Response::new(Body::empty());
    *resp.status_mut() = status;
    resp
}

//! `/token`: the Docker registry token endpoint (docker-token-auth.md). `GET` with basic
//! credentials (or none, for anonymous access) and `service` / `scope` parameters; `POST`
//! with the OAuth2 password grant form. Either way the token holds the intersection of
//! the requested scopes with what the identity may do — asking for more is not an error.

use super::errors::ApiError;
use super::query::Query;
use super::{peer_ip, AppState};
use crate::auth::scope::{parse_scope, RequestedScope};
use crate::auth::{decode_basic, AuthError, Caller};
use crate::registry::RegistryError;
use axum::extract::{Request, State};
use axum::http::header;
use axum::response::{IntoResponse, Response};

/// The largest token request form accepted.
const MAX_FORM_BYTES: usize = 64 * 1024;

pub async fn get(State(state): State<AppState>, req: Request) -> Response {
    crate::observability::http::label_request("token", "");
    let peer = peer_ip(&req);
    let (headers, uri) = (req.headers(), req.uri());
    let query = Query::parse(uri.query());
    let scopes: Vec<RequestedScope> = query.all("scope").iter().flat_map(|s| parse_scope(s)).collect();
    let authorization = headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok());
    let credentials = match authorization {
        None => None,
        Some(value) => match value.split_once(' ') {
            Some((scheme, encoded)) if scheme.eq_ignore_ascii_case("basic") => match decode_basic(encoded.trim()) {
                Some(c) => Some(c),
                None => return refuse(AuthError::BadCredentials),
            },
            _ => return refuse(AuthError::BadCredentials),
        },
    };
    respond(&state, credentials, peer, query.get("service"), &scopes, false).await
}

pub async fn post(State(state): State<AppState>, req: Request) -> Response {
    crate::observability::http::label_request("token", "");
    let peer = peer_ip(&req);
    let Ok(body) = axum::body::to_bytes(req.into_body(), MAX_FORM_BYTES).await else {
        return refuse(AuthError::BadRequest("token request form too large or broken".into()));
    };
    let form = Query::parse(std::str::from_utf8(&body).ok());
    if form.get("grant_type") != Some("password") {
        return refuse(AuthError::BadRequest("only grant_type=password is supported".into()));
    }
    let (Some(user), Some(password)) = (form.get("username"), form.get("password")) else {
        return refuse(AuthError::BadRequest("username and password are required".into()));
    };
    let scopes: Vec<RequestedScope> = form.all("scope").iter().flat_map(|s| parse_scope(s)).collect();
    super::catch_up_for_identity(&state.meta, state.auth.names_unheard_login(user, password)).await;
    let credentials = Some((user.to_string(), password.to_string()));
    respond(&state, credentials, peer, form.get("service"), &scopes, true).await
}

async fn respond(
    state: &AppState,
    credentials: Option<(String, String)>,
    peer: Option<std::net::IpAddr>,
    service: Option<&str>,
    scopes: &[RequestedScope],
    oauth: bool,
) -> Response {
    let caller = match credentials {
        None => Caller::Anonymous,
        Some((user, password)) => {
            // argon2 takes tens of milliseconds: off the async workers.
            let auth = state.auth.clone();
            match tokio::task::spawn_blocking(move || auth.verify_password(&user, &password, peer)).await {
                Ok(Ok(caller)) => caller,
                Ok(Err(e)) => return refuse(e),
                Err(e) => return refuse(AuthError::Internal(e.to_string())),
            }
        }
    };
    match state.auth.issue(&caller, service, scopes) {
        Ok(issued) => {
            let mut body = serde_json::to_value(&issued).unwrap_or_default();
            if oauth {
                body["scope"] = serde_json::Value::String(
                    scopes.iter().map(|s| format!("{}:{}:{}", s.kind, s.name, s.actions.join(","))).collect::<Vec<_>>().join(" "),
                );
            }
            axum::Json(body).into_response()
        }
        Err(e) => refuse(e),
    }
}

fn refuse(e: AuthError) -> Response {
    ApiError(RegistryError::from(e)).into_response()
}

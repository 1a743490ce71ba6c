//! Logging in and out.
//!
//! A login is a registry user's name and password, checked exactly as `/token` checks
//! them (argon2 off the async workers, the failed-login limit, a catch-up with the
//! leader for a user created in another region a moment ago). Robot tokens cannot log
//! in. Success sets the session cookie and goes where the visitor was headed.

use super::super::html::{self, Section};
use super::super::{csrf, now_unix, see_other, session, with_cookies, Console};
use crate::api::query::Query;
use crate::auth::AuthError;
use axum::body::Body;
use crate::api::listener::PeerAddr;
use axum::extract::{ConnectInfo, RawQuery, Request, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{Html, IntoResponse, Response};
use maud::html;
use std::sync::Arc;


/// Where to go after logging in: a console path, never another site (`//evil`, `/\evil`).
fn destination(next: Option<&str>) -> &str {
    match next {
        Some(n) if n.starts_with("/ui/") && !n.contains("//") && !n.contains('\\') => n,
        _ => "/ui/repos",
    }
}

/// `GET /ui/login[?next=…]`.
pub async fn show(State(console): State<Arc<Console>>, headers: HeaderMap, RawQuery(query): RawQuery) -> Response {
    let query = Query::parse(query.as_deref());
    let next = destination(query.get("next"));
    if console.visitor(&headers).is_some() {
        return see_other(next);
    }
    let (nonce, cookies) = console.pre_session(&headers);
    with_cookies(form(&console, &nonce, next, StatusCode::OK, None), &cookies)
}

fn form(console: &Console, nonce: &str, next: &str, status: StatusCode, error: Option<&str>) -> Response {
    let token = csrf::token(&console.store.signing_keys().unwrap_or_default(), nonce);
    let body = html! {
        form.login method="post" action="/ui/login" {
            h1 { "Log in" }
            @if let Some(e) = error { p.error #error { (e) } }
            input type="hidden" name=(csrf::FIELD) value=(token);
            input type="hidden" name="next" value=(next);
            label for="user" { "User name" }
            input #user type="text" name="user" autocomplete="username" required autofocus;
            label for="password" { "Password" }
            input #password type="password" name="password" autocomplete="current-password" required;
            button.primary #login type="submit" { "Log in" }
            p.muted { "Robot tokens are for machines: log in as a registry user." }
        }
    };
    (status, Html(html::page("Log in", Section::Login, None, body).into_string())).into_response()
}

/// `POST /ui/login`.
pub async fn submit(State(console): State<Arc<Console>>, req: Request) -> Response {
    let peer = req.extensions().get::<ConnectInfo<PeerAddr>>().map(|c| c.0 .0.ip());
    let (parts, body) = req.into_parts();
    let headers = parts.headers;
    let fields = match super::read_form(body).await {
        Ok(f) => f,
        Err(too_large) => return too_large,
    };
    let next = destination(fields.get("next")).to_string();
    let (nonce, cookies) = console.pre_session(&headers);
    if !console.form_is_genuine(&headers, &nonce, fields.get(csrf::FIELD)) {
        let again = "This form expired or was sent from another site: log in again.";
        return with_cookies(form(&console, &nonce, &next, StatusCode::FORBIDDEN, Some(again)), &cookies);
    }
    let (Some(user), Some(password)) = (fields.get("user"), fields.get("password")) else {
        return form(&console, &nonce, &next, StatusCode::BAD_REQUEST, Some("Enter a user name and a password."));
    };
    let (user, password) = (user.to_string(), password.to_string());
    // A login POST carries no `Authorization` header for the API's layer to see: it
    // waits for the first start's identities, and catches up for a new user, itself.
    console.auth.wait_for_identities(crate::api::IDENTITIES_WAIT).await;
    crate::api::catch_up_for_identity(&console.meta, console.auth.names_unheard_login(&user, &password)).await;
    let auth = console.auth.clone();
    let checked = {
        let user = user.clone();
        tokio::task::spawn_blocking(move || auth.console_login(&user, &password, peer)).await
    };
    let refused = |status, msg: &str| form(&console, &nonce, &next, status, Some(msg));
    match checked {
        Ok(Ok(_)) => {}
        Ok(Err(AuthError::BadCredentials)) => return refused(StatusCode::UNAUTHORIZED, "Invalid user name or password."),
        Ok(Err(AuthError::TooManyRequests(secs))) => {
            let mut resp = refused(StatusCode::TOO_MANY_REQUESTS, &format!("Too many failed logins: try again in {secs} s."));
            resp.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(secs));
            return resp;
        }
        Ok(Err(e)) => return refused(StatusCode::SERVICE_UNAVAILABLE, &format!("Cannot log in right now: {e}")),
        Err(_) => return refused(StatusCode::INTERNAL_SERVER_ERROR, "Cannot log in right now."),
    }
    let keys = console.store.signing_keys().unwrap_or_default();
    let record = console.store.user(&user).ok().flatten();
    let (Some(key), Some(record)) = (keys.last(), record) else {
        return refused(StatusCode::SERVICE_UNAVAILABLE, "Cannot log in right now: the cluster is still starting.");
    };
    let Some((_, cookie)) = session::start(key, &record, now_unix(), console.cfg.session_ttl_secs) else {
        return refused(StatusCode::INTERNAL_SERVER_ERROR, "Cannot log in right now.");
    };
    tracing::info!(user = %record.name, "console login");
    let set = [
        console.cookie(console.session_cookie(), &cookie, console.cfg.session_ttl_secs.max(1)),
        console.cookie(console.login_cookie(), "", 0),
    ];
    with_cookies(see_other(&next), &set)
}

/// `POST /ui/logout`: the session cookie is deleted. Without a valid session there is nothing to forge, so only a
/// session's logout needs its CSRF token.
pub async fn logout(State(console): State<Arc<Console>>, headers: HeaderMap, body: Body) -> Response {
    let fields = match super::read_form(body).await {
        Ok(f) => f,
        Err(too_large) => return too_large,
    };
    if let Some(visitor) = console.visitor(&headers) {
        if !console.form_is_genuine(&headers, &visitor.nonce, fields.get(csrf::FIELD)) {
            return super::forged();
        }
        if let Some(user) = &visitor.user {
            tracing::info!(user = %user, "console logout");
        }
    }
    // Only the session cookie goes: `Clear-Site-Data` would clear every cookie of the
    // whole site (other applications on the same domain).
    with_cookies(see_other("/ui/login"), &[console.cookie(console.session_cookie(), "", 0)])
}

#[cfg(test)]
mod tests {
    #[test]
    fn only_console_paths_are_destinations() {
        for (next, want) in [
            (Some("/ui/repos?q=a"), "/ui/repos?q=a"),
            (Some("//evil.example/ui/"), "/ui/repos"),
            (Some("/ui//evil.example"), "/ui/repos"),
            (Some("/ui/\\evil"), "/ui/repos"),
            (Some("https://evil.example/ui/"), "/ui/repos"),
            (Some("/v2/_catalog"), "/ui/repos"),
            (None, "/ui/repos"),
        ] {
            assert_eq!(super::destination(next), want, "{next:?}");
        }
    }
}
